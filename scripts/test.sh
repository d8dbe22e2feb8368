#!/usr/bin/env bash
# Runs every test of orderflow, both profiles:
#   1. unit tests, adapter conformance tests and the black-box API suite on the embedded profile;
#   2. a bounded schemathesis fuzz run against /openapi.json (scripts/fuzz.sh);
#   3. the same black-box API suite again on the distributed profile
#      (DynamoDB Local + the tansu Kafka broker, started here; Meilisearch: MEILI_URL if set, else the
#      in-process contract mock).
# Services are installed and started by scripts/services.sh and stopped on exit, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
# The OpenAPI validator that scripts/services.sh installs (tests/api/openapi.rs skips its check without it).
export OPENAPI_VALIDATOR_PYTHON="$PWD/.services/pytools/bin/python"

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# Build first, so that service start-up does not compete with the compiler for the two cores.
cargo nextest run --all-targets --no-run

scripts/services.sh start
trap 'scripts/services.sh stop' EXIT

status=0
echo "== embedded profile (all targets) =="
cargo nextest run --all-targets --no-fail-fast || status=1
echo "== bounded fuzz of the HTTP API (schemathesis, no 5xx allowed) =="
scripts/fuzz.sh 60 || status=1
echo "== distributed profile (black-box API suite) =="
ORDERFLOW_TEST_PROFILE=distributed cargo nextest run --test api --no-fail-fast || status=1
exit $status
