#!/usr/bin/env bash
# The artifact tool chain end to end, in a temporary directory (what `make run` shows until otterd
# exists): two release keys and a device key, a 2-of-2 trust file, a multi-file release packed from
# a spec file, signed by both key holders, inspected, verified, unpacked, and a tampered copy
# rejected. Every command is printed before it runs.
#
# Usage: scripts/demo.sh [BUILD_DIR]     (default: build)
set -euo pipefail

build=${1:-build}
OTTER="$(cd "$build" && pwd)/src/tool/otter"
if [ ! -x "$OTTER" ]; then
  echo "demo: $OTTER not found: build first (make build)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/otter-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

otter() { "$OTTER" "$@"; }

# Prints a command like a shell transcript (arguments quoted where the shell needs it).
show() {
  local out="$" a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9._/=:,@%+-]+$ ]]; then out+=" $a"; else out+=" $(printf '%q' "$a")"; fi
  done
  printf '\n\033[1m%s\033[0m\n' "$out"
}

run() {
  show "$@"
  "$@"
}

# Runs a command that must fail with the given exit status.
run_rejected() {
  local want=$1 rc=0
  shift
  show "$@"
  "$@" || rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "demo: expected exit status $want, got $rc" >&2
    exit 1
  fi
  echo "(exit status $rc: rejected, as it should be)"
}

echo "== A release: three generated files"
mkdir release
head -c 3145728 /dev/urandom >release/rootfs.img
head -c 1048576 < <(yes 'otter demo application') >release/app.tar
printf 'setenv bootargs console=ttyS0,115200 root=/dev/mmcblk0p2\n' >release/boot.scr
cat >release/demo.spec <<'EOF'
# The demo release (docs/otter.md describes the spec format).
name = demo-firmware
version = 1.2.0
device_types = gw-2, gw-3
security_version = 3

[provides]
rootfs.version = 1.2.0

[depends]
bootloader.version = 2023.01|2023.04

[payload "rootfs.img"]
file = rootfs.img
type = raw
target = rootfs

[payload "app.tar"]
file = app.tar
type = archive
target = /opt/app
version = 4.1
arg.owner = app

[payload "boot.scr"]
file = boot.scr
type = script
compression = none
EOF
run ls -l release

echo
echo "== Keys: two release keys (two people) and a device-class key"
run otter keygen --name "Alice (release)" alice
run otter keygen --name "Bob (QA)" bob
run otter keygen --type device --name "gw fleet" gw
run otter trust -o trust.json --threshold 2 alice.pub bob.pub

echo
echo "== Pack (signed by Alice), then Bob adds his signature"
run otter pack -o demo.otter release/demo.spec --key alice.key --encrypt-to gw.pub
run_rejected 3 otter verify --trust trust.json --device-key gw.key demo.otter
run otter sign --key bob.key demo.otter

echo
echo "== Inspect (nothing verified) and verify (everything)"
run otter inspect demo.otter
run tar tvf demo.otter
run otter verify --trust trust.json demo.otter
run otter verify --trust trust.json --device-key gw.key --device-type gw-2 \
  --provides bootloader.version=2023.04 --min-security-version 3 demo.otter

echo
echo "== Unpack: all or nothing"
run otter unpack --trust trust.json --device-key gw.key -C unpacked demo.otter
run ls -l unpacked
run cmp release/rootfs.img unpacked/rootfs.img

echo
echo "== A tampered copy: one byte of rootfs.img's stored bytes changed"
cp demo.otter tampered.otter
# GNU tar -R prints each member's header block number; its data starts one block later.
block=$(tar -tRvf demo.otter | awk '/payload\/rootfs.img/ { sub(":", "", $2); print $2 }')
offset=$(( (block + 1) * 512 + 100000 ))
byte=$(dd if=demo.otter bs=1 skip="$offset" count=1 status=none | od -An -tu1)
printf '%b' "\\0$(printf '%03o' $(( byte ^ 0xff )))" | dd of=tampered.otter bs=1 seek="$offset" conv=notrunc status=none
cmp -s demo.otter tampered.otter && { echo "demo: tampering failed" >&2; exit 1; }
run_rejected 3 otter verify --trust trust.json --device-key gw.key tampered.otter
run_rejected 3 otter unpack --trust trust.json --device-key gw.key -C from-tampered tampered.otter
run ls

echo
echo "demo: done"
