#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the benchmarks need. Idempotent: when all
# are present it does nothing (and needs no network). Run by `make run`, `make test` and .ci/run.
set -euo pipefail

PACKAGES=(
  # build
  build-essential meson ninja-build pkg-config clang
  # core library
  libsodium-dev libssl-dev libjansson-dev libzstd-dev libarchive-dev
  # otterd: HTTP server, embedded database (sqlite3: the shell, for operators and tests)
  libmicrohttpd-dev libsqlite3-dev sqlite3 libcurl4-openssl-dev libubootenv-dev libubootenv-tool grub-common swupdate rauc
  # otterd's maintenance windows read time zones from /usr/share/zoneinfo (src/server/window.c)
  tzdata
  # otterd's PostgreSQL back end (libpq), and a server for its tests (scripts/test.sh starts a
  # throwaway cluster; postgresql-common has pg_createcluster and pg_virtualenv)
  libpq-dev postgresql postgresql-common
  # tests: cmocka unit tests, pytest integration tests, libFuzzer/ASan runtimes for clang, GNU tar
  libcmocka-dev python3 python3-pytest python3-yaml libclang-rt-14-dev tar
  # benchmarks: the reference tools and timing
  zstd openssl time bc hyperfine wrk nginx-light
  # bench/agent.sh: RAUC bundles are squashfs images (rauc bundle runs mksquashfs)
  squashfs-tools
  # tests/server/test_ddi.py: .swu images for the real swupdate client are cpio archives
  cpio
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "bootstrap: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
