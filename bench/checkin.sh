#!/usr/bin/env bash
# Benchmark: authenticated device check-ins against otterd with DEVICES devices registered, on
# SQLite and on PostgreSQL, against nginx serving a static file of the same size as the check-in
# answer, all measured by wrk with the same Lua script (one device token per request, in turn) in
# the same run on the same 2 cores. Reports requests/s, p50/p99 latency, otterd's peak RSS, and
# that the database saw no write per check-in (last-seen times are batched).
#
# Usage: bench/checkin.sh [BUILD_DIR]
#   env: DEVICES (100000), DURATION seconds (15), CONNECTIONS (64), BACKENDS ("sqlite postgresql")
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OTTERD=$PWD/$BUILD/src/server/otterd
DEVICES=${DEVICES:-100000}
DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-64}
BACKENDS=${BACKENDS:-sqlite postgresql}
for t in wrk nginx curl; do command -v $t >/dev/null || { echo "missing $t (scripts/bootstrap.sh)"; exit 1; }; done
W=$(mktemp -d /dev/shm/otter-checkin-bench.XXXXXX)   # tmpfs: CPU and protocol, not the disk
PG_DIR=""; PG_AS=(); PG_BIN=""
cleanup() {
  [ -n "${OPID:-}" ] && kill "$OPID" 2>/dev/null || true
  [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
  [ -n "$PG_DIR" ] && "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
  rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pg_start() { # a throwaway PostgreSQL on a unix socket (like scripts/test.sh), fsync on
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  PG_DIR=$(mktemp -d /tmp/otter-bpg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_DIR"; PG_AS=(runuser -u postgres --); fi
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --locale=C >/dev/null
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
    -o "-c listen_addresses='' -c unix_socket_directories='$PG_DIR'" start >/dev/null
  echo "postgresql:///postgres?host=$PG_DIR&user=postgres"
}

start_otterd() { # data_dir database_url
  OPORT=$(free_port)
  printf 'database = %s\nthreads = 2\nconnection_limit = 4096\n' "$2" > "$W/otterd.conf"
  "$OTTERD" --config "$W/otterd.conf" --data "$1" --listen "127.0.0.1:$OPORT" \
    > "$W/otterd.out" 2> "$W/otterd.log" &
  OPID=$!
  for _ in $(seq 200); do grep -q "listening on" "$W/otterd.out" 2>/dev/null && break; sleep 0.05; done
  ADMIN=$(sed -n 's/^  \(otr_.*\)$/\1/p' "$W/otterd.out")
}

measure() { # name url [env...]
  local name=$1 url=$2; shift 2
  env TOKENS="$W/tokens" "$@" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -s bench/checkin.lua "$url" > "$W/$name.wrk"
  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec/ {print $2}' "$W/$name.wrk")
  p50=$(awk '$1 == "50%" {print $2}' "$W/$name.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$W/$name.wrk")
  errors=$(grep -E "Non-2xx|Socket errors" "$W/$name.wrk" | tr '\n' ' ' || true)
  printf '  %-18s %10s req/s   p50 %8s   p99 %8s   %s\n' "$name" "$rps" "$p50" "$p99" "${errors:-no errors}"
  eval "RPS_${name//-/_}=$rps"
}

echo "Check-ins with $DEVICES registered devices, wrk -t2 -c$CONNECTIONS -d${DURATION}s, one device token per request:"
for backend in $BACKENDS; do
  case $backend in
    sqlite) url="sqlite:$W/$backend/otter.db" ;;
    postgresql) url=$(pg_start) ;;
  esac
  start_otterd "$W/$backend" "$url"
  python3 bench/enroll.py "http://127.0.0.1:$OPORT" "$ADMIN" "$DEVICES" "$W/tokens"
  if [ ! -f "$W/www/checkin.json" ]; then
    # nginx: the same answer bytes as a static file, 2 workers like otterd's 2 threads, no log
    mkdir -p "$W/www" "$W/tmp"; chmod 755 "$W" "$W/www"
    curl -s -X POST -H "Authorization: Bearer $(head -n 1 "$W/tokens")" \
      --data-binary @- "http://127.0.0.1:$OPORT/api/device/v1/checkin" > "$W/www/checkin.json" <<<'{"device_type":"gw-1","installed":{"rootfs":{"sha256":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","version":"1.0"}},"provides":{}}'
    chmod 644 "$W/www/checkin.json"
    NPORT=$(free_port)
    cat > "$W/nginx.conf" <<EON
worker_processes 2;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $W/tmp; proxy_temp_path $W/tmp; fastcgi_temp_path $W/tmp;
  uwsgi_temp_path $W/tmp; scgi_temp_path $W/tmp;
  server { listen 127.0.0.1:$NPORT; root $W/www; location / { default_type application/json; } }
}
EON
    nginx -c "$W/nginx.conf" -p "$W"; sleep 0.3
    echo "  answer: $(stat -c %s "$W/www/checkin.json") bytes: $(cat "$W/www/checkin.json")"
    measure nginx "http://127.0.0.1:$NPORT" METHOD=GET URLPATH=/checkin.json
  fi
  measure "otterd-$backend" "http://127.0.0.1:$OPORT"
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$OPID/status")
  rps_var="RPS_otterd_$backend"
  printf '  %-18s peak RSS %.1f MiB; throughput vs nginx %s\n' "" "$(echo "$hwm/1024" | bc -l)" \
    "$(echo "scale=2; ${!rps_var} / $RPS_nginx" | bc -l)"
  kill "$OPID"; wait "$OPID" 2>/dev/null || true; OPID=""
done
