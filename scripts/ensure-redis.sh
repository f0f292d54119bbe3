#!/usr/bin/env bash
# The Redis-backed tests need a Redis at 127.0.0.1:6379: start one (nothing kept on disk) if none answers.
set -euo pipefail
# The Cluster and Sentinel tests start their own redis-server processes and use redis-cli: install both
# (redis-server depends on redis-tools) even when something already answers on 6379.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  "$(dirname "$0")/apt-install.sh" redis-server
fi
if python3 - <<'PY'
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
        s.sendall(b"PING\r\n")
        sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
then
  exit 0
fi
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp
for _ in $(seq 50); do
  redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && exit 0
  sleep 0.1
done
echo "redis-server did not start" >&2
exit 1
