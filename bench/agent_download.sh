#!/usr/bin/env bash
# Benchmark: what `download_block` costs otter-agent in a stored-mode download (issue #4: downloads
# that resume across power cuts). Every download_block bytes the agent syncs download.part
# (fdatasync) and writes state.json atomically (write, fsync, rename, fsync of the directory), so
# that a power cut costs at most one block; this measures the price of that on this machine's
# disk, against a reference that writes the same bytes with one fsync at the end.
#
# Setup: a real otterd on 127.0.0.1 (plain http, SQLite), a SIZE_MIB artifact of random bytes
# (incompressible: the network and the disk are what is measured, not zstd), and for each round a
# freshly enrolled agent (its own state directory on the disk under WORK_DIR) given a deployment.
# The time measured is from the first moment its state.json says "download" to the first moment
# it says anything else (the download is complete and synced), sampled every 5 ms.
#   reference   curl of the same artifact from otterd's management API into `dd conv=fsync`
#               (the bytes over loopback HTTP, written, one fsync at the end);
#   otter-agent with download_block = each of BLOCKS (1G: in effect one sync at the end, as
#               before download_block existed).
# RUNS interleaved rounds, median per variant. Prints the figures; exit 0 unless something broke.
#
# Usage: bench/agent_download.sh [BUILD_DIR]   (env: SIZE_MIB (256), RUNS (3),
#        BLOCKS ("64K 256K 1M 4M 16M 1G"), WORK_DIR (/var/tmp: a real disk, not tmpfs))
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
ROOT=$PWD
AGENT=$ROOT/$BUILD/src/agent/otter-agent
OTTERD=$ROOT/$BUILD/src/server/otterd
OTTER=$ROOT/$BUILD/src/tool/otter
SIZE_MIB=${SIZE_MIB:-256}
RUNS=${RUNS:-3}
BLOCKS=${BLOCKS:-"64K 256K 1M 4M 16M 1G"}
for f in "$AGENT" "$OTTERD" "$OTTER"; do [ -x "$f" ] || { echo "build first: $f missing" >&2; exit 1; }; done
for t in curl python3 dd; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done

W=$(mktemp -d "${WORK_DIR:-/var/tmp}/otter-agent-download.XXXXXX")
OTTERD_PID=
cleanup() {
  [ -n "$OTTERD_PID" ] && kill "$OTTERD_PID" 2>/dev/null || true
  pkill -f "otter-agent -c $W/" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
cd "$W"
echo "otter-agent stored-mode downloads: $SIZE_MIB MiB over loopback http; work directory $W" \
     "($(df -h --output=source,fstype . | tail -1 | tr -s ' '))"

mkdir -p keys otterd
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > blob.bin
"$OTTER" keygen -q keys/release
"$OTTER" trust -q -o keys/trust.json keys/release.pub
"$OTTER" pack -q -o blob.otter --name blob --version 1 -T bench -k keys/release.key \
  -p "name=blob,file=$W/blob.bin,type=file,target=/blob.bin"
rm blob.bin
printf 'database = sqlite:%s/otterd/otter.db\npoll_interval = 1s\npoll_jitter = 0s\n' "$W" > otterd.conf
"$OTTERD" --config otterd.conf --data "$W/otterd" --listen 127.0.0.1:0 > otterd.out 2> otterd.log &
OTTERD_PID=$!
for _ in $(seq 200); do grep -q "listening on" otterd.out 2>/dev/null && break; sleep 0.05; done
OPORT=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' otterd.out)
ADMIN=$(sed -n 's/^  \(otr_.*\)$/\1/p' otterd.out)
[ -n "$OPORT" ] && [ -n "$ADMIN" ] || { echo "otterd did not start"; cat otterd.log; exit 1; }
BASE=http://127.0.0.1:$OPORT
api() { curl -sf -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' "$@"; }
ENROLL=$(api -X POST -d '{"name":"bench","scopes":["devices:enroll"]}' "$BASE/api/v1/tokens" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
api -X PUT --data-binary @keys/trust.json "$BASE/api/v1/trust" > /dev/null
ART=$(curl -sf -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/octet-stream' \
  --data-binary @blob.otter "$BASE/api/v1/artifacts" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
ART_BYTES=$(stat -c %s blob.otter)

# One agent round: prints the download's seconds.
agent_round() { # NAME BLOCK
  local name=$1 block=$2 d=$W/dev-$1
  mkdir -p "$d/state" "$d/root" "$d/inv" "$d/mod"
  cat > "$d/agent.conf" <<EOF
servers = $BASE
allow_http = true
device_type = bench
identity = name=$name
enrollment_token = $ENROLL
trust = $W/keys/trust.json
state_dir = $d/state
root = $d/root
poll_interval = 1s
download_block = $block
control_socket = $d/control.sock
inventory_dir = $d/inv
modules_dir = $d/mod
EOF
  python3 - "$AGENT" "$d" "$name" "$BASE" "$ADMIN" "$ART" <<'PY'
import json, subprocess, sys, time, urllib.request
agent, d, name, base, admin, art = sys.argv[1:]
def api(method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + admin,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")
p = subprocess.Popen([agent, "-c", f"{d}/agent.conf", "daemon"], stdout=open(f"{d}/agent.log", "w"),
                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
try:
    dev, deadline = None, time.monotonic() + 30
    while dev is None and time.monotonic() < deadline:
        mine = [x for x in api("GET", "/api/v1/devices?limit=1000")["devices"]
                if x["identity"].get("name") == name and x["last_seen"]]
        dev = mine[0]["id"] if mine else None
        time.sleep(0.05)
    assert dev, "the agent did not enrol"
    api("POST", "/api/v1/deployments", {"name": name, "artifact_id": int(art), "devices": [dev]})
    t0 = t1 = None
    deadline = time.monotonic() + 600
    while t1 is None and time.monotonic() < deadline:
        try:
            phase = json.load(open(f"{d}/state/state.json"))["phase"]
        except (OSError, ValueError, KeyError):
            phase = None
        now = time.monotonic()
        if phase == "download" and t0 is None:
            t0 = now
        elif t0 is not None and phase not in (None, "download"):
            t1 = now
        time.sleep(0.005)
    assert t1 is not None, "the download did not end"
    print(f"{t1 - t0:.3f}")
finally:
    p.terminate()
    p.wait(30)
PY
  rm -rf "$d"
}

ref_round() {
  local t0 t1
  t0=$(date +%s.%N)
  curl -sf -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/artifacts/$ART/download" |
    dd of="$W/ref.bin" bs=1M conv=fsync status=none
  t1=$(date +%s.%N)
  [ "$(stat -c %s "$W/ref.bin")" = "$ART_BYTES" ] || { echo "reference download incomplete" >&2; exit 1; }
  rm -f "$W/ref.bin"
  echo "$t1 - $t0" | bc
}

declare -A TIMES
for r in $(seq "$RUNS"); do
  TIMES[ref]+="$(ref_round) "
  for b in $BLOCKS; do
    TIMES[$b]+="$(agent_round "r$r-$b" "$b") "
  done
  echo "  round $r: reference ${TIMES[ref]##* }" >/dev/null
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
REF=$(echo "${TIMES[ref]}" | median)
echo
printf '  %-36s %10s %10s %8s   %s\n' "variant" "median s" "MB/s" "vs ref" "all runs (s)"
printf '  %-36s %10.3f %10.1f %8s   %s\n' "reference (curl | dd fsync)" "$REF" \
  "$(echo "$ART_BYTES / 1000000 / $REF" | bc -l)" "1.00" "${TIMES[ref]}"
for b in $BLOCKS; do
  m=$(echo "${TIMES[$b]}" | median)
  syncs=$(( ART_BYTES / $(numfmt --from=iec "$b") + 1 ))   # and the one at the end
  printf '  %-36s %10.3f %10.1f %8.2f   %s\n' "otter-agent, block $b ($syncs syncs)" "$m" \
    "$(echo "$ART_BYTES / 1000000 / $m" | bc -l)" "$(echo "$m / $REF" | bc -l)" "${TIMES[$b]}"
done
