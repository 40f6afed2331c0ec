#!/usr/bin/env bash
# Builds and runs the whole suite: unit tests (cmocka), fuzz-corpus replays, the layering check and
# the integration tests (pytest driving the real otter and otterd binaries), once in a normal
# -Werror build and once in an ASan+UBSan build. Prints one summary line at the end: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

builds="${OTTER_TEST_BUILDS:-normal asan}"
results_dir=$(mktemp -d "${TMPDIR:-/tmp}/otter-test.XXXXXX")
trap 'rm -rf "$results_dir"' EXIT
status=0

setup() { # dir, extra meson args...
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >"$results_dir/setup-$(basename "$dir").log" 2>&1 || {
      cat "$results_dir/setup-$(basename "$dir").log"; return 1; }
  fi
}

run_build() { # name, dir, meson args...
  local name=$1 dir=$2; shift 2
  echo "=== $name build ($dir)"
  setup "$dir" "$@" || { echo "build setup failed" >"$results_dir/$name.fail"; status=1; return; }
  if ! ninja -C "$dir" >"$results_dir/ninja-$name.log" 2>&1; then
    cat "$results_dir/ninja-$name.log"
    echo "build failed" >"$results_dir/$name.fail"; status=1; return
  fi
  if ! meson test -C "$dir" --print-errorlogs --num-processes 2; then
    status=1
  fi
  cp "$dir/meson-logs/testlog.json" "$results_dir/meson-$name.json" 2>/dev/null
  echo "=== $name integration tests"
  if ! OTTER_BUILD_DIR="$PWD/$dir" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
        --junitxml="$results_dir/pytest-$name.xml" tests/integration tests/server; then
    status=1
  fi
}

for b in $builds; do
  case $b in
    normal) run_build normal build ;;
    asan) ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
            run_build asan build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug ;;
    *) echo "unknown build '$b'"; exit 2 ;;
  esac
done

/usr/bin/python3 scripts/test_summary.py "$results_dir"
sum_status=$?
[ $status -eq 0 ] && [ $sum_status -eq 0 ]
