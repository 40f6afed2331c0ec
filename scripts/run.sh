#!/usr/bin/env bash
# `make run`: the artifact tool-chain demo, then otterd in the foreground with embedded defaults
# (SQLite and the blob store under build/demo-data). Ctrl-C stops it.
# The simulated demo fleet and release come with otter-sim (issue #5).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
PORT=${OTTER_PORT:-8080}
DATA=$PWD/$BUILD/demo-data

scripts/demo.sh "$BUILD"

echo
echo "== otterd: the update server, with embedded defaults"
# otterd creates the data directory itself (mode 0700). Ctrl-C stops it gracefully: a clean end.
trap 'echo "otterd stopped."; exit 0' INT TERM
hints() {
  local token="<your admin token>"
  [ -s "$DATA/admin.token" ] && token="\$(cat $DATA/admin.token)"
  cat <<EOT

  Try, from another terminal:
    curl -s http://127.0.0.1:$PORT/api/v1/health
    curl -s -H "Authorization: Bearer $token" http://127.0.0.1:$PORT/api/v1/audit
    curl -s -H "Authorization: Bearer $token" -d '{"name":"ci","scopes":["artifacts:write"]}' \\
         http://127.0.0.1:$PORT/api/v1/tokens
  The API: docs/api/openapi.yaml; running otterd: docs/otterd.md. Ctrl-C stops the server.
EOT
}
# otterd prints the admin token once, on the first start of a data directory; this demo keeps it
# in $DATA/admin.token (mode 0600) so the next `make run` can still show working commands.
"$BUILD/src/server/otterd" --data "$DATA" --listen "127.0.0.1:$PORT" | while IFS= read -r line; do
  printf '%s\n' "$line"
  case "$line" in
    "  otr_"*) (umask 077; printf '%s\n' "${line#  }" > "$DATA/admin.token") ;;
    "otterd: listening on "*) hints ;;
  esac
done
