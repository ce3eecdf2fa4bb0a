#!/usr/bin/env bash
# Makes sure every server the tests use is up on 127.0.0.1, starting the ones that are down.
# Idempotent: safe to run again while they run.
set -euo pipefail
cd "$(dirname "$0")/.."

wait_for() { # name, command
  local name=$1; shift
  for _ in $(seq 60); do
    if "$@" >/dev/null 2>&1; then echo "$name is up"; return 0; fi
    sleep 0.5
  done
  echo "$name did not come up" >&2
  return 1
}

# PostgreSQL (installed on the machine, trust auth).
if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432

# Redis (installed on the machine, nothing kept on disk).
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
fi
wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping

# Redis Cluster (three local masters) for sesame-redis's cluster tests.
if [ -f .ci/redis-cluster.sh ]; then bash .ci/redis-cluster.sh start; fi

# A MongoDB-wire server for sesame-mongodb's tests.
if [ -f .ci/mongodb.sh ]; then bash .ci/mongodb.sh start; fi

# Chromium and chromedriver for the login example's browser test.
if [ -f .ci/browser.sh ]; then bash .ci/browser.sh; fi
