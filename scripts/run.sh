#!/usr/bin/env bash
# `make run`: the artifact tool chain demo, then otterd with embedded defaults (SQLite and the blob
# store under build/demo-data), a demo fleet of simulated devices (real otter-agent processes with
# file-backed A/B slots and the simulated bootloader), a signed release pushed with the CLI, and a
# deployment to the fleet that you can watch update, and a hundred more devices in one otter-sim
# process (some of which lose power mid-update or roll back). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
PORT=${OTTER_PORT:-8080}
DEVICES=${OTTER_DEMO_DEVICES:-5}
SIM_DEVICES=${OTTER_DEMO_SIM_DEVICES:-100}
DATA=$PWD/$BUILD/demo-data
OTTER=$PWD/$BUILD/src/tool/otter
AGENT=$PWD/$BUILD/src/agent/otter-agent
SIM=$PWD/$BUILD/src/sim/otter-sim
URL=http://127.0.0.1:$PORT

scripts/demo.sh "$BUILD"

echo
echo "== otterd: the update server, with embedded defaults ($DATA)"
mkdir -p "$DATA"
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping the demo fleet and otterd..."
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped."
  exit 0
}
trap stop INT TERM
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
# A demo fleet should not wait the default 5 minutes between check-ins.
printf 'poll_interval = 3s\npoll_jitter = 1s\n' > "$DATA/otterd.conf"
"$BUILD/src/server/otterd" --config "$DATA/otterd.conf" --data "$DATA/server" \
  --listen "127.0.0.1:$PORT" > "$DATA/otterd.out" 2> "$DATA/otterd.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$DATA/otterd.out" 2>/dev/null && break; sleep 0.1; done
if ! grep -q "listening on" "$DATA/otterd.out"; then
  echo "otterd did not start:"; cat "$DATA/otterd.out" "$DATA/otterd.log"; exit 1
fi
# otterd prints the admin token once, on the first start of a data directory: keep it (0600).
if grep -q '^  otr_' "$DATA/otterd.out"; then
  (umask 077; sed -n 's/^  \(otr_.*\)$/\1/p' "$DATA/otterd.out" > "$DATA/admin.token")
fi
TOKEN=$(cat "$DATA/admin.token")
export OTTER_SERVER=$URL OTTER_TOKEN=$TOKEN
echo "otterd listens on $URL; admin token in $DATA/admin.token; log in $DATA/otterd.log"

api() { curl -sf -H "Authorization: Bearer $TOKEN" "$@"; }

# The release key and the trust file the server and the devices check against.
mkdir -p "$DATA/keys"
[ -f "$DATA/keys/release.key" ] || "$OTTER" keygen -q --name demo-release "$DATA/keys/release"
"$OTTER" trust -q -o "$DATA/keys/trust.json" --threshold 1 "$DATA/keys/release.pub" 2>/dev/null || true
api -X PUT --data-binary @"$DATA/keys/trust.json" "$URL/api/v1/trust" > /dev/null
ENROLL=$(api -d '{"name":"demo-fleet","scopes":["devices:enroll"]}' "$URL/api/v1/tokens" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

echo
echo "== the demo fleet: $DEVICES simulated devices (otter-agent, A/B slots in files)"
run_device() { # name: the agent, and the "reboot" it asks for (exit 75: power-on, start again)
  local dir=$DATA/devices/$1
  while true; do
    set +e
    "$AGENT" -c "$dir/agent.conf" daemon >> "$dir/agent.log" 2>&1
    local rc=$?
    set -e
    [ $rc -eq 75 ] || return 0
    echo "  $1: rebooting into slot $("$AGENT" sim-boot "$dir/boot.env")"
  done
}
for i in $(seq 1 "$DEVICES"); do
  name=demo-$i dir=$DATA/devices/demo-$i
  mkdir -p "$dir"
  [ -f "$dir/slot-a.img" ] || head -c 1048576 /dev/zero | tr '\0' 'A' > "$dir/slot-a.img"
  [ -f "$dir/slot-b.img" ] || : > "$dir/slot-b.img"
  cat > "$dir/agent.conf" <<EOC
servers = $URL
allow_http = true
device_type = demo-board
identity = name=$name
enrollment_token = $ENROLL
trust = $DATA/keys/trust.json
state_dir = $dir/state
boot = sim
boot_env = $dir/boot.env
slot_a = $dir/slot-a.img
slot_b = $dir/slot-b.img
reboot_command =
poll_interval = 3s
control_socket = $dir/control.sock
inventory_dir = $dir/inventory.d
modules_dir = $dir/modules
EOC
  [ -f "$dir/boot.env" ] || "$AGENT" sim-boot "$dir/boot.env" > /dev/null
  run_device "$name" &
  pids+=($!)
done
echo
echo "== and $SIM_DEVICES more in one otter-sim process (the agent's own engine per device; log in"
echo "   $DATA/otter-sim.log): most install in 1-4 s, some lose power or downloads mid-update,"
echo "   and a few fail their health check after the reboot, so they roll back"
if [ "$SIM_DEVICES" -gt 0 ]; then
  "$SIM" --server "$URL" --trust "$DATA/keys/trust.json" --enroll-token "$ENROLL" \
    --devices "$SIM_DEVICES" --dir "$DATA/otter-sim" --prefix demo-sim --device-type demo-board \
    --poll 3s --ramp 2s --progress 5s --boot-time 2s \
    --profile ok:85:install_time=1s-4s \
    --profile flaky:12:install_time=1s-4s,download_fail=0.3,power_cut=0.5 \
    --profile sick:3:health_fail=1 2> "$DATA/otter-sim.log" > /dev/null &
  pids+=($!)
fi
want=$((DEVICES + SIM_DEVICES))
for _ in $(seq 100); do
  n=$(api "$URL/api/v1/devices?status=accepted&limit=1000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["devices"]))')
  [ "$n" -ge "$want" ] && break; sleep 0.2
done
ids=$(api "$URL/api/v1/devices?status=accepted&limit=1000" | python3 -c 'import json,sys; print(" ".join(str(d["id"]) for d in json.load(sys.stdin)["devices"]))')
for id in $ids; do "$OTTER" devices tag "$id" demo > /dev/null; done
echo "  enrolled and tagged 'demo': $(echo $ids | wc -w) devices"

echo
echo "== a release: pack, sign, push, deploy to the tag 'demo'"
VERSION=$(date +%Y%m%d.%H%M%S)
head -c 1048576 /dev/zero | tr '\0' 'B' > "$DATA/rootfs-$VERSION.img"
set -x
"$OTTER" pack -q -o "$DATA/demo-$VERSION.otter" --name demo-os --version "$VERSION" -T demo-board \
  -p "name=rootfs,file=$DATA/rootfs-$VERSION.img,type=raw,target=slot" -k "$DATA/keys/release.key"
"$OTTER" push "$DATA/demo-$VERSION.otter"
"$OTTER" deploy --artifact "demo-os@$VERSION" --tag demo
{ set +x; } 2>/dev/null
rm -f "$DATA/rootfs-$VERSION.img"
DEP=$(api "$URL/api/v1/deployments?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["deployments"][0]["id"])')

cat <<EOT

== watching deployment $DEP (the devices download, reboot into slot b, check their health and
   commit). From another terminal:
     export OTTER_SERVER=$URL OTTER_TOKEN=\$(cat $DATA/admin.token)
     $BUILD/src/tool/otter deployments show $DEP
     $BUILD/src/tool/otter devices list
     curl -s -H "Authorization: Bearer \$OTTER_TOKEN" $URL/api/v1/audit
   The API: docs/api/openapi.yaml; the server: docs/otterd.md; the agent: docs/agent.md.
EOT
for _ in $(seq 120); do
  line=$(api "$URL/api/v1/deployments/$DEP" | python3 -c '
import json,sys
d = json.load(sys.stdin)
r = {k: v for k, v in d["rollup"].items() if v}
print(d["status"], " ".join(f"{k}={v}" for k, v in sorted(r.items())))')
  echo "  $(date +%T) deployment $DEP: $line"
  case "$line" in finished*|cancelled*) break ;; esac
  sleep 2
done
echo
echo "The fleet keeps polling otterd. Ctrl-C stops everything."
wait
