#!/usr/bin/env bash
# A MongoDB-wire server for sesame-mongodb's tests: SecantusDB (MongoDB itself is not installable
# here). `start` installs it if missing and runs it in the background on 127.0.0.1:27017, in memory,
# with a 1 s TTL sweep (mongod's TTL monitor runs every 60 s; the tests wait for a sweep). `stop`
# ends it. Idempotent: `start` does nothing when a server already answers on the port.
set -euo pipefail

HOST=127.0.0.1
PORT="${MONGODB_PORT:-27017}"
PYTHON="${PYTHON:-python3}"
# The version the tests were written against; override to try another.
SECANTUSDB="${SECANTUSDB:-SecantusDB==0.7.0b3}"
STATE_DIR="${TMPDIR:-/tmp}/sesame-secantusdb-$PORT"
PID_FILE="$STATE_DIR/pid"
LOG_FILE="$STATE_DIR/log"

ping() {
  "$PYTHON" - "$HOST" "$PORT" <<'PY' >/dev/null 2>&1
import sys
import pymongo
client = pymongo.MongoClient(host=sys.argv[1], port=int(sys.argv[2]), directConnection=True,
                             serverSelectionTimeoutMS=500, connectTimeoutMS=500)
client.admin.command("ping")
PY
}

start() {
  if ping; then
    echo "MongoDB-wire server is up on $HOST:$PORT"
    return 0
  fi
  if ! "$PYTHON" -c 'import secantus.server' >/dev/null 2>&1; then
    echo "installing $SECANTUSDB"
    "$PYTHON" -m pip install --quiet --pre "$SECANTUSDB"
  fi
  mkdir -p "$STATE_DIR"
  nohup "$PYTHON" - "$HOST" "$PORT" >"$LOG_FILE" 2>&1 <<'PY' &
import sys
from secantus.server import SecantusDBServer

server = SecantusDBServer(host=sys.argv[1], port=int(sys.argv[2]), storage_path=":memory:",
                          ttl_sweep_seconds=1)
server.start()
print(f"SecantusDB listening on {server.host}:{server.port}", flush=True)
server.wait()
PY
  echo $! >"$PID_FILE"
  for _ in $(seq 120); do
    if ping; then
      echo "MongoDB-wire server (SecantusDB) is up on $HOST:$PORT"
      return 0
    fi
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
  echo "SecantusDB did not come up on $HOST:$PORT; its log:" >&2
  cat "$LOG_FILE" >&2 || true
  return 1
}

stop() {
  if [ -f "$PID_FILE" ]; then
    local pid
    pid=$(cat "$PID_FILE")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
      done
      # Still there after 5 s: it is ours (the pid file says so), end it.
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$PID_FILE"
    echo "SecantusDB stopped"
  else
    echo "no SecantusDB started by this script on port $PORT"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
