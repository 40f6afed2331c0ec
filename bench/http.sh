#!/usr/bin/env bash
# Benchmark: otterd's HTTP layer (GET /api/v1/health: routing, JSON reply, request log, keep-alive)
# against nginx serving the same bytes as a static file, both measured by wrk in the same run on
# the same 2 cores. This is the ceiling of every otterd route; the authenticated check-in with a
# database behind it (issue #3) is measured by its own script once it exists.
#
# Usage: bench/http.sh [BUILD_DIR]   (env: DURATION seconds, default 10; CONNECTIONS, default 100)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OTTERD=$PWD/$BUILD/src/server/otterd
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-100}
for t in wrk nginx; do command -v $t >/dev/null || { echo "missing $t (scripts/bootstrap.sh)"; exit 1; }; done
W=$(mktemp -d /tmp/otter-http-bench.XXXXXX)
cleanup() { [ -n "${OPID:-}" ] && kill "$OPID" 2>/dev/null; [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# otterd, quiet log (the request log line is part of the cost measured: level info keeps it on).
OPORT=$(free_port)
"$OTTERD" --data "$W/data" --listen "127.0.0.1:$OPORT" > "$W/otterd.out" 2> "$W/otterd.log" &
OPID=$!
for _ in $(seq 100); do grep -q "listening on" "$W/otterd.out" 2>/dev/null && break; sleep 0.05; done
curl -s "http://127.0.0.1:$OPORT/api/v1/health" > "$W/health.json"

# nginx: the same body as a static file, 2 workers like otterd's 2 threads, no access log.
NPORT=$(free_port)
mkdir -p "$W/www"
chmod 755 "$W" "$W/www"  # nginx workers run as www-data
cp "$W/health.json" "$W/www/health.json"
chmod 644 "$W/www/health.json"
cat > "$W/nginx.conf" <<EON
worker_processes 2;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/tmp; proxy_temp_path $W/tmp; fastcgi_temp_path $W/tmp;
  uwsgi_temp_path $W/tmp; scgi_temp_path $W/tmp;
  server { listen 127.0.0.1:$NPORT; root $W/www; location / { default_type application/json; } }
}
EON
mkdir -p "$W/tmp"
nginx -c "$W/nginx.conf" -p "$W"
sleep 0.3

measure() { # name url
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$2" > "$W/$1.wrk"
  local rps p99 errors
  rps=$(awk '/^Requests\/sec/ {print $2}' "$W/$1.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$W/$1.wrk")
  errors=$(grep -E "Non-2xx|Socket errors" "$W/$1.wrk" | tr '\n' ' ' || true)
  printf '  %-8s %10s req/s   p99 %8s   %s\n' "$1" "$rps" "$p99" "${errors:-no errors}"
  eval "RPS_$1=$rps"
}
echo "GET of a $(stat -c %s "$W/health.json")-byte JSON document, wrk -t2 -c$CONNECTIONS -d${DURATION}s:"
measure nginx "http://127.0.0.1:$NPORT/health.json"
measure otterd "http://127.0.0.1:$OPORT/api/v1/health"
rss=$(awk '/VmRSS/ {print $2}' "/proc/$OPID/status")
printf '  otterd RSS after the run: %.1f MiB; otterd/nginx throughput: %s\n' \
  "$(echo "$rss/1024" | bc -l)" "$(echo "scale=2; $RPS_otterd / $RPS_nginx" | bc -l)"
