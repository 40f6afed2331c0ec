#!/usr/bin/env bash
# Builds and runs the whole suite: unit tests (cmocka), fuzz-corpus replays, the layering check and
# the integration tests (pytest driving the real otter and otterd binaries), once in a normal
# -Werror build and once in an ASan+UBSan build. Prints one summary line at the end: "N passed, N failed".
# The store's contract tests also run against a real PostgreSQL: a throwaway server started here
# (or the one OTTER_TEST_PG_URL already names).
set -uo pipefail
cd "$(dirname "$0")/.."

builds="${OTTER_TEST_BUILDS:-normal asan}"
results_dir=$(mktemp -d "${TMPDIR:-/tmp}/otter-test.XXXXXX")
pg_dir=""
pg_bin=""
pg_as=()
trap 'pg_stop; rm -rf "$results_dir"' EXIT
trap 'exit 130' INT TERM # so that the EXIT trap runs
status=0

# A throwaway PostgreSQL cluster in a temp dir for the store tests (test_store.c makes a database
# per case in it). Unix socket only, in that dir: no TCP port, so nothing to collide with. fsync is
# off because nothing here must survive a power cut; the durability case kills the client, not the
# server, and commits stay synchronous. initdb refuses to run as root: then it runs as postgres.
pg_start() {
  if [ -n "${OTTER_TEST_PG_URL:-}" ]; then
    echo "=== PostgreSQL: the server OTTER_TEST_PG_URL names"; return 0
  fi
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ ! -x "$bin/initdb" ]; then
    echo "PostgreSQL server binaries not found (scripts/bootstrap.sh installs them)"; return 1
  fi
  pg_dir=$(mktemp -d /tmp/otter-pg.XXXXXX) # /tmp: the socket path must stay short
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$pg_dir"; pg_as=(runuser -u postgres --)
  fi
  pg_bin=$bin
  if ! "${pg_as[@]}" "$bin/initdb" -D "$pg_dir/data" -U postgres -A trust -E UTF8 --locale=C \
        --no-sync >"$pg_dir/initdb.log" 2>&1; then
    cat "$pg_dir/initdb.log"; return 1
  fi
  if ! "${pg_as[@]}" "$bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 30 \
        -o "-c listen_addresses='' -c unix_socket_directories='$pg_dir' -c fsync=off" \
        start >/dev/null; then
    cat "$pg_dir/server.log"; return 1
  fi
  export OTTER_TEST_PG_URL="postgresql:///postgres?host=$pg_dir&user=postgres"
  echo "=== PostgreSQL: throwaway server in $pg_dir"
}

pg_stop() {
  [ -n "$pg_dir" ] || return 0
  "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1
  rm -rf "$pg_dir"
  pg_dir=""
}

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
        --junitxml="$results_dir/pytest-$name.xml" tests/integration tests/server tests/agent tests/e2e; then
    status=1
  fi
}

if ! pg_start; then
  echo "PostgreSQL: could not start a server for the tests" >"$results_dir/postgresql.fail"; status=1
fi

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
