#!/usr/bin/env bash
# Benchmark: whole fleets of simulated devices (otter-sim: the agent's own engine per device)
# against one otterd with its embedded defaults (SQLite), on this machine's 2 cores.
#
#  1. DEVICES devices polling every second for DURATION seconds: check-ins/s, failures (must be
#     0), p50/p99 latency as the devices see it, otterd's RSS and CPU. Reference in the same run:
#     wrk (bench/checkin.lua, one device token per request) at full speed against the same otterd,
#     i.e. the most check-ins it can answer.
#  2. A deployment (A/B, 64 KiB rootfs) to the same DEVICES devices: time from the deployment's
#     creation until every device has reported its final state, and the server's rollup.
#  3. BIG devices in one otter-sim process at a realistic poll interval (BIG_POLL, default 60s):
#     after the ramp, every device must check in on time (no stale device, no failure); the
#     simulator's RSS and CPU. Reference: Mender's stress client runs 10,000 devices per machine.
#
# Usage: bench/fleet.sh [BUILD_DIR]
#   env: DEVICES (10000), DURATION (60), BIG (100000), BIG_POLL seconds (60), STEPS ("1 2 3")
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
B=$PWD/$BUILD
DEVICES=${DEVICES:-10000}
DURATION=${DURATION:-60}
BIG=${BIG:-100000}
BIG_POLL=${BIG_POLL:-60}
STEPS=${STEPS:-1 2 3}
for t in wrk curl python3; do command -v $t >/dev/null || { echo "missing $t (scripts/bootstrap.sh)"; exit 1; }; done
W=$(mktemp -d /dev/shm/otter-fleet-bench.XXXXXX)   # tmpfs: CPU and protocol, not the disk
cleanup() {
  [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null || true
  [ -n "${OPID:-}" ] && kill "$OPID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json() { python3 -c "import json,sys; j=json.load(open('$1')); print($2)"; }
cpu_s() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }   # user+system seconds (100 Hz)

start_otterd() { # name poll jitter
  OPORT=$(free_port)
  mkdir -p "$W/$1"
  printf 'poll_interval = %s\npoll_jitter = %s\n' "$2" "$3" > "$W/$1/otterd.conf"
  "$B/src/server/otterd" --config "$W/$1/otterd.conf" --data "$W/$1/data" \
    --listen "127.0.0.1:$OPORT" > "$W/$1/otterd.out" 2> "$W/$1/otterd.log" &
  OPID=$!
  for _ in $(seq 200); do grep -q "listening on" "$W/$1/otterd.out" 2>/dev/null && break; sleep 0.05; done
  URL=http://127.0.0.1:$OPORT
  ADMIN=$(sed -n 's/^  \(otr_.*\)$/\1/p' "$W/$1/otterd.out")
  "$B/src/tool/otter" keygen -q --name bench "$W/$1/release"
  "$B/src/tool/otter" trust -q -o "$W/$1/trust.json" --threshold 1 "$W/$1/release.pub"
  curl -sf -H "Authorization: Bearer $ADMIN" -X PUT --data-binary @"$W/$1/trust.json" \
    "$URL/api/v1/trust" > /dev/null
  ENROLL=$(curl -sf -H "Authorization: Bearer $ADMIN" -d '{"name":"fleet","scopes":["devices:enroll"]}' \
    "$URL/api/v1/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
}

count_devices() { # type: accepted devices of that type
  python3 - "$URL" "$ADMIN" "$1" <<'EOF'
import http.client, json, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1]); h = {"Authorization": "Bearer " + sys.argv[2]}
c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
after, n = 0, 0
while True:
    c.request("GET", f"/api/v1/devices?status=accepted&device_type={sys.argv[3]}&limit=1000&after={after}", headers=h)
    j = json.loads(c.getresponse().read())
    n += len(j["devices"])
    if not j["devices"] or not j.get("next_after"): break
    after = j["next_after"]
print(n)
EOF
}

stop_otterd() { kill "$OPID"; wait "$OPID" 2>/dev/null || true; OPID=""; }

sim() ( # name out.json args...: otter-sim (in a subshell it replaces: $! is otter-sim's pid)
  name=$1 out=$2; shift 2
  exec "$B/src/sim/otter-sim" --server "$URL" --trust "$W/$name/trust.json" --enroll-token "$ENROLL" \
    --dir "$W/$name/devices" --quiet --json "$@" > "$out" 2> "$W/$name/sim.log"
)

if [[ " $STEPS " == *" 1 "* || " $STEPS " == *" 2 "* ]]; then
  start_otterd small 1s 0s
  echo "== $DEVICES devices polling every second (otterd: SQLite, 2 cores shared with otter-sim)"
  # Enrollment: every device registers (Ed25519 identity, enrollment token) and checks in.
  t0=$(date +%s.%N)
  sim small "$W/enroll.json" -n "$DEVICES" --poll 1s --ramp 20s --duration 30s
  printf '  enrollment: %s devices accepted after a 20 s ramp (%.0f s), %s failed check-ins\n' \
    "$(count_devices sim-device)" "$(echo "$(date +%s.%N) - $t0" | bc -l)" \
    "$(json "$W/enroll.json" 'j["checkins"]["failed"]')"
fi

if [[ " $STEPS " == *" 1 "* ]]; then
  c0=$(cpu_s "$OPID")
  sim small "$W/steady.json" -n "$DEVICES" --poll 1s --ramp 1s --duration "${DURATION}s" \
    --expect-interval 3s
  c1=$(cpu_s "$OPID")
  printf '  otter-sim %ss: %s check-ins/s, %s failed, p50 %s ms, p99 %s ms, stale devices %s; otter-sim RSS %s MiB\n' \
    "$DURATION" "$(json "$W/steady.json" 'round(j["checkins"]["per_s"])')" \
    "$(json "$W/steady.json" 'j["checkins"]["failed"]')" \
    "$(json "$W/steady.json" 'j["checkins"]["p50_ms"]')" "$(json "$W/steady.json" 'j["checkins"]["p99_ms"]')" \
    "$(json "$W/steady.json" 'j["stale_devices"]')" "$(json "$W/steady.json" 'j["rss_kib"] // 1024')"
  printf '  otterd: RSS %s MiB (peak %s MiB), CPU %.0f%% of one core\n' \
    "$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$OPID/status")" \
    "$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$OPID/status")" \
    "$(echo "($c1 - $c0) * 100 / $DURATION" | bc -l)"
  # Reference: wrk at full speed, device tokens of as many devices registered by bench/enroll.py.
  python3 bench/enroll.py "$URL" "$ADMIN" "$DEVICES" "$W/tokens" > /dev/null
  TOKENS="$W/tokens" wrk -t2 -c64 -d15s --latency -s bench/checkin.lua "$URL" > "$W/wrk.txt"
  printf '  reference, wrk -c64 at full speed on the same otterd: %s req/s, p50 %s, p99 %s (%s)\n' \
    "$(awk '/^Requests\/sec/ {print int($2)}' "$W/wrk.txt")" "$(awk '$1 == "50%" {print $2}' "$W/wrk.txt")" \
    "$(awk '$1 == "99%" {print $2}' "$W/wrk.txt")" \
    "$( (grep -E "Non-2xx|Socket errors" "$W/wrk.txt" || echo "no errors") | tr '\n' ' ')"
fi

if [[ " $STEPS " == *" 2 "* ]]; then
  echo "== a deployment to $DEVICES devices (A/B rootfs of 64 KiB, poll 1 s)"
  python3 - "$URL" "$ADMIN" <<'EOF'
import http.client, json, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1]); h = {"Authorization": "Bearer " + sys.argv[2], "Content-Type": "application/json"}
c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
after, ids = 0, []
while True:
    c.request("GET", f"/api/v1/devices?status=accepted&device_type=sim-device&limit=1000&after={after}", headers=h)
    j = json.loads(c.getresponse().read())
    ids += [d["id"] for d in j["devices"]]
    if not j["devices"] or not j.get("next_after"): break
    after = j["next_after"]
for i in ids:
    c.request("PUT", f"/api/v1/devices/{i}/tags", json.dumps({"tags": ["fleet"]}), headers=h)
    r = c.getresponse(); r.read(); assert r.status == 200, r.status
print(f"  tagged {len(ids)} devices 'fleet'")
EOF
  head -c 65536 /dev/urandom > "$W/rootfs.img"
  "$B/src/tool/otter" pack -q -o "$W/os.otter" --name os --version 2.0 -T sim-device \
    -p "name=rootfs,file=$W/rootfs.img,type=raw,target=slot" -k "$W/small/release.key"
  OTTER_SERVER=$URL OTTER_TOKEN=$ADMIN "$B/src/tool/otter" push -q "$W/os.otter"
  s0=$(date +%s.%N)
  sim small "$W/deploy.json" -n "$DEVICES" --poll 1s --ramp 1s --until-done 1 --duration 600s \
    --boot-time 1s &
  SPID=$!
  sleep 5   # the fleet is up and polling
  d0=$(date +%s.%N)
  OTTER_SERVER=$URL OTTER_TOKEN=$ADMIN "$B/src/tool/otter" deploy -q --artifact os@2.0 --tag fleet
  wait "$SPID"; SPID=""
  printf '  all %s devices final %.1f s after the deployment was created (first result after %.1f s); results: %s\n' \
    "$DEVICES" "$(echo "$s0 + $(json "$W/deploy.json" 'j["last_result_s"]') - $d0" | bc -l)" \
    "$(echo "$s0 + $(json "$W/deploy.json" 'j["first_result_s"]') - $d0" | bc -l)" \
    "$(json "$W/deploy.json" 'j["results"]')"
  dep=$(curl -sf -H "Authorization: Bearer $ADMIN" "$URL/api/v1/deployments?limit=1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["deployments"][0]["id"])')
  printf '  server: deployment %s\n' "$(curl -sf -H "Authorization: Bearer $ADMIN" "$URL/api/v1/deployments/$dep" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["status"], {k: v for k, v in d["rollup"].items() if v})')"
  printf '  otterd peak RSS %s MiB; %s reboots simulated\n' "$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$OPID/status")" \
    "$(json "$W/deploy.json" 'j["reboots"]')"
fi
[ -n "${OPID:-}" ] && stop_otterd

if [[ " $STEPS " == *" 3 "* ]]; then
  echo "== $BIG devices in one otter-sim process, polling every ${BIG_POLL}s (jitter 10%)"
  start_otterd big "${BIG_POLL}s" "$((BIG_POLL / 10))s"
  ramp=$BIG_POLL
  run=$((ramp + 2 * BIG_POLL + 10))
  s0=$(date +%s)
  sim big "$W/big.json" -n "$BIG" --poll "${BIG_POLL}s" --ramp "${ramp}s" --duration "${run}s" \
    --expect-interval "$((BIG_POLL + BIG_POLL / 10 + 5))s" &
  SPID=$!
  sleep "$((ramp + BIG_POLL))"
  SIMPID=$(pgrep -P "$SPID" -x otter-sim || echo "$SPID")   # $! may be the subshell around it
  c0=$(cpu_s "$SIMPID")
  sleep "$BIG_POLL"
  c1=$(cpu_s "$SIMPID")
  wait "$SPID"; SPID=""
  printf '  %s s run (ramp %s s): %s check-ins, %s failed, %s stale devices at the end (silent > %s s), p50 %s ms, p99 %s ms\n' \
    "$run" "$ramp" "$(json "$W/big.json" 'j["checkins"]["ok"]')" "$(json "$W/big.json" 'j["checkins"]["failed"]')" \
    "$(json "$W/big.json" 'j["stale_devices"]')" "$((BIG_POLL + BIG_POLL / 10 + 5))" \
    "$(json "$W/big.json" 'j["checkins"]["p50_ms"]')" "$(json "$W/big.json" 'j["checkins"]["p99_ms"]')"
  printf '  otter-sim: RSS %s MiB (%s KiB per device), CPU in the last poll interval %.1f%% of one core\n' \
    "$(json "$W/big.json" 'j["rss_kib"] // 1024')" "$(json "$W/big.json" "round(j['rss_kib'] / $BIG, 1)")" \
    "$(echo "($c1 - $c0) * 100 / $BIG_POLL" | bc -l)"
  printf '  otterd: peak RSS %s MiB\n' "$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$OPID/status")"
  echo "  reference: Mender's stress client runs 10,000 devices per machine"
  stop_otterd
fi
