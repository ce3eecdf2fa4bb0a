#!/usr/bin/env bash
# A local 3-master Redis Cluster for sesame-redis's cluster tests.
#
#   .ci/redis-cluster.sh start    start it (idempotent: a running, healthy cluster is left alone)
#   .ci/redis-cluster.sh stop     shut the nodes down and delete their state
#   .ci/redis-cluster.sh status   exit 0 when the cluster is up and healthy
#
# Nodes listen on 127.0.0.1, ports $REDIS_CLUSTER_PORTS (default "7000 7001 7002"; the cluster bus
# uses port + 10000), keep nothing on disk but their nodes.conf, and live in $REDIS_CLUSTER_DIR
# (default /tmp/sesame-redis-cluster). The tests find them through REDIS_CLUSTER_URLS, whose default
# is these three ports.
set -euo pipefail

PORTS=(${REDIS_CLUSTER_PORTS:-7000 7001 7002})
DIR="${REDIS_CLUSTER_DIR:-/tmp/sesame-redis-cluster}"
HOST=127.0.0.1

cli() { # port, args...
  local port=$1; shift
  redis-cli -h "$HOST" -p "$port" "$@"
}

node_up() { cli "$1" ping 2>/dev/null | grep -q PONG; }

# Healthy: every node answers, sees the cluster as ok, and all 16384 slots are assigned.
healthy() {
  local port info
  for port in "${PORTS[@]}"; do
    info=$(cli "$port" cluster info 2>/dev/null) || return 1
    grep -q 'cluster_state:ok' <<<"$info" || return 1
    grep -q 'cluster_slots_assigned:16384' <<<"$info" || return 1
    grep -q "cluster_known_nodes:${#PORTS[@]}" <<<"$info" || return 1
  done
}

# Fresh: no node has a slot yet (nothing to wait for, the cluster must be created).
fresh() {
  local port
  for port in "${PORTS[@]}"; do
    cli "$port" cluster info 2>/dev/null | grep -q 'cluster_slots_assigned:0' || return 1
  done
}

wait_until() { # tries (x0.2s), command...
  local tries=$1; shift
  for _ in $(seq "$tries"); do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  return 1
}

start_node() {
  local port=$1 dir="$DIR/$1"
  mkdir -p "$dir"
  redis-server --daemonize yes --bind "$HOST" --port "$port" --dir "$dir" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
    --save "" --appendonly no --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
}

start() {
  command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
  if healthy; then
    echo "Redis Cluster is up on ports ${PORTS[*]}"
    return 0
  fi
  local port
  for port in "${PORTS[@]}"; do
    node_up "$port" || start_node "$port"
  done
  for port in "${PORTS[@]}"; do
    wait_until 50 node_up "$port" || { echo "Redis node $port did not start" >&2; exit 1; }
  done
  # Nodes restarted from an existing nodes.conf re-form the cluster by themselves.
  if ! fresh && wait_until 50 healthy; then
    echo "Redis Cluster is up on ports ${PORTS[*]}"
    return 0
  fi
  # A fresh (or broken) set of nodes: wipe them and create the cluster.
  for port in "${PORTS[@]}"; do
    cli "$port" flushall >/dev/null
    cli "$port" cluster reset hard >/dev/null
  done
  local nodes=()
  for port in "${PORTS[@]}"; do nodes+=("$HOST:$port"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  if wait_until 100 healthy; then
    echo "Redis Cluster is up on ports ${PORTS[*]}"
  else
    echo "Redis Cluster did not become healthy" >&2
    for port in "${PORTS[@]}"; do cli "$port" cluster info >&2 || true; done
    exit 1
  fi
}

stop() {
  local port
  for port in "${PORTS[@]}"; do
    if node_up "$port"; then cli "$port" shutdown nosave >/dev/null 2>&1 || true; fi
  done
  for port in "${PORTS[@]}"; do
    wait_until 50 bash -c "! redis-cli -h $HOST -p $port ping >/dev/null 2>&1" || true
  done
  rm -rf "$DIR"
  echo "Redis Cluster stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) healthy ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
