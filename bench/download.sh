#!/usr/bin/env bash
# Benchmark: a SIZE_MB artifact downloaded by CLIENTS concurrent devices from otterd (device API,
# device token, sendfile) against nginx serving the same file (sendfile on), measured by wrk in
# the same run on the same 2 cores. Data on tmpfs, so the figure is the servers', not the disk's.
#
# Usage: bench/download.sh [BUILD_DIR]   env: SIZE_MB (100), CLIENTS (16), DURATION seconds (10)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OTTERD=$PWD/$BUILD/src/server/otterd
OTTER=$PWD/$BUILD/src/tool/otter
SIZE_MB=${SIZE_MB:-100}
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-10}
for t in wrk nginx curl; do command -v $t >/dev/null || { echo "missing $t (scripts/bootstrap.sh)"; exit 1; }; done
W=$(mktemp -d /dev/shm/otter-download-bench.XXXXXX)
cleanup() {
  [ -n "${OPID:-}" ] && kill "$OPID" 2>/dev/null || true
  [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# otterd, a release key it trusts, a SIZE_MB artifact (incompressible payload, stored as is)
OPORT=$(free_port)
"$OTTERD" --data "$W/data" --listen "127.0.0.1:$OPORT" > "$W/otterd.out" 2> "$W/otterd.log" &
OPID=$!
for _ in $(seq 200); do grep -q "listening on" "$W/otterd.out" 2>/dev/null && break; sleep 0.05; done
ADMIN=$(sed -n 's/^  \(otr_.*\)$/\1/p' "$W/otterd.out")
"$OTTER" keygen -q "$W/rel"
"$OTTER" trust -q -o "$W/trust.json" --threshold 1 "$W/rel.pub"
curl -sf -X PUT -H "Authorization: Bearer $ADMIN" --data-binary @"$W/trust.json" \
  "http://127.0.0.1:$OPORT/api/v1/trust" >/dev/null
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$W/image.bin"
"$OTTER" pack -q -o "$W/big.otter" --name big --version 1 -T gw-1 \
  -p "name=rootfs,file=$W/image.bin,type=raw,target=/dev/null,compression=none" -k "$W/rel.key"
rm "$W/image.bin"
ART=$(curl -sf -X POST -H "Authorization: Bearer $ADMIN" -H "Content-Type: application/octet-stream" \
  --data-binary @"$W/big.otter" "http://127.0.0.1:$OPORT/api/v1/artifacts" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
# one enrolled device with a deployment of it
python3 bench/enroll.py "http://127.0.0.1:$OPORT" "$ADMIN" 1 "$W/tokens" 1 >/dev/null
TOKEN=$(head -n 1 "$W/tokens")
DEV=$(curl -sf -H "Authorization: Bearer $ADMIN" "http://127.0.0.1:$OPORT/api/v1/devices" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["devices"][0]["id"])')
DEP=$(curl -sf -X POST -H "Authorization: Bearer $ADMIN" \
  -d "{\"name\":\"bench\",\"artifact_id\":$ART,\"devices\":[$DEV]}" \
  "http://127.0.0.1:$OPORT/api/v1/deployments" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

# nginx: the same file, sendfile on, 2 workers
NPORT=$(free_port)
mkdir -p "$W/www" "$W/tmp"; chmod 755 "$W" "$W/www"
cp "$W/big.otter" "$W/www/big.otter"; chmod 644 "$W/www/big.otter"
cat > "$W/nginx.conf" <<EON
worker_processes 2;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path $W/tmp; proxy_temp_path $W/tmp; fastcgi_temp_path $W/tmp;
  uwsgi_temp_path $W/tmp; scgi_temp_path $W/tmp;
  server { listen 127.0.0.1:$NPORT; root $W/www; }
}
EON
nginx -c "$W/nginx.conf" -p "$W"; sleep 0.3

to_mib() { # wrk's "Transfer/sec: 1.23GB" -> MiB/s
  awk '/^Transfer\/sec/ { v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
    f = (u=="GB") ? 1024 : (u=="MB") ? 1 : (u=="KB") ? 1/1024 : 1/1048576; printf "%.0f", n*f }' "$1"
}
measure() { # name url [header]
  wrk -t2 -c"$CLIENTS" -d"${DURATION}s" --timeout 60s ${3:+-H "$3"} "$2" > "$W/$1.wrk"
  local mib reqs errors
  mib=$(to_mib "$W/$1.wrk")
  reqs=$(awk '/requests in/ {print $1}' "$W/$1.wrk")
  errors=$(grep -E "Non-2xx|Socket errors" "$W/$1.wrk" | tr '\n' ' ' || true)
  printf '  %-8s %8s MiB/s  (%s whole downloads)  %s\n' "$1" "$mib" "$reqs" "${errors:-no errors}"
  eval "MIB_$1=$mib"
}
echo "$(stat -c %s "$W/big.otter")-byte artifact, $CLIENTS concurrent downloads, wrk -t2 -d${DURATION}s:"
measure nginx "http://127.0.0.1:$NPORT/big.otter"
measure otterd "http://127.0.0.1:$OPORT/api/device/v1/deployments/$DEP/artifact" "Authorization: Bearer $TOKEN"
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$OPID/status")
printf '  otterd peak RSS %.1f MiB; throughput vs nginx %s\n' "$(echo "$hwm/1024" | bc -l)" \
  "$(echo "scale=2; $MIB_otterd / $MIB_nginx" | bc -l)"
