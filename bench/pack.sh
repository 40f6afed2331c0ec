#!/usr/bin/env bash
# Benchmark: otter pack / verify / unpack on a 512 MiB image against the standard tools doing the
# same work, in the same run, on the same files:
#   pack   vs  zstd -3 -T1 -c IMAGE > IMAGE.zst ; openssl dgst -sha256 IMAGE
#   verify vs  zstd -d IMAGE.zst -o OUT ; openssl dgst -sha256 OUT
#   unpack vs  the same reference (unpack decompresses, hashes and writes, like the reference)
# Each command runs RUNS times (default 5), interleaved with its reference; the median wall time
# and the peak RSS are reported.
# Targets (issue #2): each otter time within 1.1x of its reference; peak RSS < 32 MiB.
#
# Usage: bench/pack.sh [BUILD_DIR]   (env: RUNS, SIZE_MIB, BENCH_DIR)
# BENCH_DIR defaults to a directory on /dev/shm so both sides measure CPU work rather than this
# machine's disk; set BENCH_DIR to a disk path to include I/O (otter fsyncs what it writes, the
# reference tools do not).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OTTER=$PWD/$BUILD/src/tool/otter
RUNS=${RUNS:-5}
SIZE_MIB=${SIZE_MIB:-512}
BENCH_DIR=${BENCH_DIR:-/dev/shm/otter-bench}
[ -x "$OTTER" ] || { echo "build first: $OTTER missing" >&2; exit 1; }
for t in zstd openssl /usr/bin/time; do command -v "$t" >/dev/null || { echo "missing $t (scripts/bootstrap.sh)"; exit 1; }; done
mkdir -p "$BENCH_DIR"
W=$BENCH_DIR
IMAGE=$W/rootfs-${SIZE_MIB}.img

# A deterministic, realistic root file system image: the bytes of this machine's /usr/lib and
# /usr/share files in sorted order (libraries, data, text), with 25% left as zeros like the free
# space of a real image. Rebuilt only if missing.
make_image() {
  local used=$((SIZE_MIB * 3 / 4))
  echo "making $IMAGE ($SIZE_MIB MiB, $used MiB of file content)"
  { find /usr/lib /usr/share -xdev -type f -size +0 2>/dev/null | LC_ALL=C sort | \
      xargs -d '\n' cat 2>/dev/null || true; } | head -c $((used * 1024 * 1024)) > "$IMAGE.tmp"
  truncate -s $((SIZE_MIB * 1024 * 1024)) "$IMAGE.tmp"
  mv "$IMAGE.tmp" "$IMAGE"
}
[ -f "$IMAGE" ] || make_image

# pair NAME_A CMD_A NAME_B CMD_B: RUNS rounds, each running A then B, so that a noisy period of
# this shared machine hits both sides alike. Records the median seconds and the max RSS (KiB).
declare -A T RSS
declare -A TIMES
once() { # name cmd
  /usr/bin/time -f '%e %M' -o "$W/time.out" bash -c "$2" >/dev/null
  read -r t r < "$W/time.out"
  TIMES[$1]="${TIMES[$1]:-} $t"
  [ "$r" -gt "${RSS[$1]:-0}" ] && RSS[$1]=$r
  return 0
}
report() { # name
  T[$1]=$(printf '%s\n' ${TIMES[$1]} | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '  %-28s %6.2f s   peak RSS %6.1f MiB   (runs:%s)\n' "$1" "${T[$1]}" \
    "$(echo "${RSS[$1]}/1024" | bc -l)" "${TIMES[$1]}"
}
pair() {
  for _ in $(seq "$RUNS"); do once "$1" "$2"; once "$3" "$4"; done
  report "$1"; report "$3"
}

cd "$W"
"$OTTER" keygen --name bench -q --force bench >/dev/null 2>&1 || "$OTTER" keygen --name bench --force bench >/dev/null
"$OTTER" trust -o trust.json bench.pub >/dev/null
cat "$IMAGE" > /dev/null  # warm the page cache for both sides alike

echo "pack ($SIZE_MIB MiB image, zstd level 3, SHA-256, Ed25519 signature); $RUNS runs, median:"
pair ref_pack "zstd -q -3 -T1 -c '$IMAGE' > ref.zst && openssl dgst -sha256 '$IMAGE'" \
     otter_pack "'$OTTER' pack -q -o bench.otter --name bench --version 1 --device-type bench --key bench.key --level 3 --payload 'name=rootfs.img,file=$IMAGE,type=raw,target=rootfs,version=1'"

echo "verify / unpack:"
pair ref_decode "zstd -q -d -f ref.zst -o ref.out && openssl dgst -sha256 ref.out" \
     otter_verify "'$OTTER' verify -q --trust trust.json bench.otter"
pair ref_decode2 "rm -f ref.out && zstd -q -d ref.zst -o ref.out && openssl dgst -sha256 ref.out" \
     otter_unpack "rm -rf out && '$OTTER' unpack -q --trust trust.json -C out bench.otter"

ratio() { echo "scale=3; $1 / $2" | bc -l; }
pack_r=$(ratio "${T[otter_pack]}" "${T[ref_pack]}")
verify_r=$(ratio "${T[otter_verify]}" "${T[ref_decode]}")
unpack_r=$(ratio "${T[otter_unpack]}" "${T[ref_decode2]}")
max_rss=0
for k in otter_pack otter_verify otter_unpack; do [ "${RSS[$k]}" -gt $max_rss ] && max_rss=${RSS[$k]}; done
art=$(stat -c %s bench.otter); ref=$(stat -c %s ref.zst)
cmp -s out/rootfs.img "$IMAGE" && same=yes || same=NO

echo
echo "results (target: ratio <= 1.10, peak RSS < 32 MiB):"
printf '  pack   / reference  %s\n' "$pack_r"
printf '  verify / reference  %s\n' "$verify_r"
printf '  unpack / reference  %s\n' "$unpack_r"
printf '  peak RSS of otter   %.1f MiB\n' "$(echo "$max_rss/1024" | bc -l)"
printf '  artifact %d bytes, zstd -3 alone %d bytes (overhead %d bytes); unpacked image identical: %s\n' \
  "$art" "$ref" $((art - ref)) "$same"
ok=1
for r in "$pack_r" "$verify_r" "$unpack_r"; do [ "$(echo "$r <= 1.10" | bc)" = 1 ] || ok=0; done
[ "$max_rss" -lt $((32 * 1024)) ] || ok=0
[ "$same" = yes ] || ok=0
rm -rf out ref.out
[ $ok = 1 ] && echo "PASS" || { echo "FAIL"; exit 1; }
