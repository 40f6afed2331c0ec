#!/usr/bin/env bash
# Benchmark: what a staged rollout over a whole fleet costs the check-in path. DEVICES devices are
# registered (bench/enroll.py); wrk (bench/checkin.lua, one device token per request) measures
# check-ins against otterd (SQLite) three times in the same run:
#   1. no deployment at all (the reference: every answer is "nothing to do");
#   2. a staged rollout over every device, paused after its first minute (MAX_PER_MINUTE devices
#      released): every device has a row in an active deployment, but only those may start.
#      Measured twice: the first pass looks up each device's next action once (any new
#      deployment costs that), the second is the steady state;
#   3. the same rollout running, releasing MAX_PER_MINUTE devices per minute while wrk runs;
#   4. the fleet as a dynamic group: a continuous deployment on a query matching every device.
# A rollout must add no database work per check-in: (2) and (3) should answer about as fast as (1).
# Also reports how long the engine's tick takes over the deployment's rows (from its decisions).
#
# Usage: bench/rollout.sh [BUILD_DIR]
#   env: DEVICES (100000), DURATION seconds (15), CONNECTIONS (64), MAX_PER_MINUTE (6000)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
B=$PWD/$BUILD
DEVICES=${DEVICES:-100000}
DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-64}
MAX_PER_MINUTE=${MAX_PER_MINUTE:-6000}
for t in wrk curl python3; do command -v $t >/dev/null || { echo "missing $t (scripts/bootstrap.sh)"; exit 1; }; done
W=$(mktemp -d /dev/shm/otter-rollout-bench.XXXXXX)
cleanup() { [ -n "${OPID:-}" ] && kill "$OPID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
printf 'threads = 2\nconnection_limit = 4096\npoll_interval = 5m\n' > "$W/otterd.conf"
"$B/src/server/otterd" --config "$W/otterd.conf" --data "$W/data" --listen "127.0.0.1:$PORT" \
  > "$W/otterd.out" 2> "$W/otterd.log" &
OPID=$!
for _ in $(seq 200); do grep -q "listening on" "$W/otterd.out" 2>/dev/null && break; sleep 0.05; done
ADMIN=$(sed -n 's/^  \(otr_.*\)$/\1/p' "$W/otterd.out")
api() { curl -sS --fail-with-body -H "Authorization: Bearer $ADMIN" "$@"; }
export OTTER_SERVER=$URL OTTER_TOKEN=$ADMIN

echo "== $DEVICES devices registered, wrk -t2 -c$CONNECTIONS -d${DURATION}s, one device token per request"
python3 bench/enroll.py "$URL" "$ADMIN" "$DEVICES" "$W/tokens" > /dev/null
measure() { # label
  TOKENS="$W/tokens" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/checkin.lua "$URL" > "$W/wrk.txt"
  local rps p99 errors
  rps=$(awk '/^Requests\/sec/ {print int($2)}' "$W/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$W/wrk.txt")
  errors=$( (grep -E "Non-2xx|Socket errors" "$W/wrk.txt" || echo "no errors") | tr '\n' ' ')
  printf '  %-58s %7s req/s   p99 %8s   %s\n' "$1" "$rps" "$p99" "$errors"
  eval "RPS_$2=$rps"
}
measure "1. no deployment (reference)" none

"$B/src/tool/otter" keygen -q --name bench "$W/release"
"$B/src/tool/otter" trust -q -o "$W/trust.json" --threshold 1 "$W/release.pub"
api -X PUT --data-binary @"$W/trust.json" "$URL/api/v1/trust" > /dev/null
head -c 4096 /dev/urandom > "$W/rootfs.img"
"$B/src/tool/otter" pack -q -o "$W/os.otter" --name os --version 2.0 -T gw-1 \
  -p "name=rootfs,file=$W/rootfs.img,type=raw,target=/dev/null" -k "$W/release.key"
"$B/src/tool/otter" push -q "$W/os.otter"
# every accepted device, in one deployment with a policy that paces it
python3 - "$URL" "$ADMIN" "$MAX_PER_MINUTE" > "$W/deployment.json" <<'EOF'
import http.client, json, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1]); h = {"Authorization": "Bearer " + sys.argv[2]}
c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
after, ids = 0, []
while True:
    c.request("GET", f"/api/v1/devices?status=accepted&limit=1000&after={after}", headers=h)
    j = json.loads(c.getresponse().read())
    ids += [d["id"] for d in j["devices"]]
    if not j["devices"] or not j.get("next_after"): break
    after = j["next_after"]
print(json.dumps({"name": "rollout", "artifact_id": 1, "devices": ids,
                  "policy": {"max_per_minute": int(sys.argv[3])}}))
EOF
t0=$(date +%s.%N)
api -X POST -H 'Content-Type: application/json' --data-binary @"$W/deployment.json" \
  "$URL/api/v1/deployments" > /dev/null
printf '  creating the rollout over %s devices took %.2f s\n' "$DEVICES" "$(echo "$(date +%s.%N) - $t0" | bc -l)"
sleep 1
api -X POST "$URL/api/v1/deployments/1/pause" > /dev/null || echo "  (could not pause: every device released already?)"
released() { api "$URL/api/v1/deployments/1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rollout"]["released"])'; }
# the first pass after a deployment is created: each device's next action is looked up once
measure "2a. first pass after the creation (one lookup per device)" first
measure "2b. rollout paused after its first minute ($(released) released)" paused
api -X POST "$URL/api/v1/deployments/1/resume" > /dev/null
r0=$(released)
measure "3. rollout releasing (max_per_minute $MAX_PER_MINUTE) during the run" running
r1=$(released)
printf '  released during run 3: %s -> %s devices\n' "$r0" "$r1"
printf '  throughput with a rollout vs without: paused %s, running %s\n' \
  "$(echo "scale=2; $RPS_paused / $RPS_none" | bc -l)" "$(echo "scale=2; $RPS_running / $RPS_none" | bc -l)"
# 4. the same fleet as a dynamic group: a continuous deployment on a query that matches every
#    device (each one's reported version is read at creation). Membership is matched when what a
#    device reports changes, never per plain check-in, so the steady state must stay as in (2b).
api -X POST "$URL/api/v1/deployments/1/cancel" > /dev/null
printf '{"name":"group","artifact_id":1,"query":"device_type = \\"gw-1\\" and version(\\"rootfs\\") < \\"2.0\\"","policy":{"max_per_minute":%s}}' \
  "$MAX_PER_MINUTE" > "$W/group.json"
t0=$(date +%s.%N)
api -X POST -H 'Content-Type: application/json' --data-binary @"$W/group.json" \
  "$URL/api/v1/deployments" > "$W/group.out"
printf '  creating the dynamic-group rollout (query matched against %s devices) took %.2f s: %s devices\n' \
  "$DEVICES" "$(echo "$(date +%s.%N) - $t0" | bc -l)" \
  "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["device_count"])' "$W/group.out")"
sleep 1
api -X POST "$URL/api/v1/deployments/2/pause" > /dev/null || true
measure "4a. dynamic group: first pass after the creation" groupfirst
measure "4b. dynamic group, continuous, paused (steady state)" group
printf '  throughput with a continuous dynamic group vs without: %s\n' \
  "$(echo "scale=2; $RPS_group / $RPS_none" | bc -l)"
printf '  otterd peak RSS %s MiB\n' "$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$OPID/status")"
