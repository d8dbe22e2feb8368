#!/usr/bin/env bash
# A bounded fuzz run of the HTTP API: schemathesis (PyPI) generates requests from /openapi.json, valid and
# invalid, as an admin, against a fresh embedded orderflow, and fails on any 5xx.
# Usage: scripts/fuzz.sh [seconds]   (uses .services/pytools from scripts/services.sh, or makes it; builds debug)
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-60}"
st=".services/pytools/bin/st"
if [ ! -x "$st" ]; then
  python3 -m venv .services/pytools
  .services/pytools/bin/pip install -q schemathesis
fi
cargo build -q --bin orderflow
dir=$(mktemp -d)
secret="fuzz-secret-$(date +%s%N)-0123456789abcdef"
export ORDERFLOW__DATA_DIR="$dir" ORDERFLOW__SERVER__PORT=0 ORDERFLOW__AUTH__JWT_SECRET="$secret" ORDERFLOW__LOG__LEVEL=error
target/debug/orderflow serve >"$dir/stdout" 2>"$dir/stderr" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
  url=$(sed -n 's/^orderflow listening on //p' "$dir/stdout")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "orderflow did not start" >&2; cat "$dir/stderr" >&2; exit 1; }
token=$(target/debug/orderflow token --role admin --sub fuzz)
"$st" run "$url/openapi.json" --checks not_a_server_error --max-time "$budget" --workers 1 \
  -H "Authorization: Bearer $token" --suppress-health-check all --warnings off
