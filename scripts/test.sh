#!/usr/bin/env bash
# Runs every test of orderflow, both profiles:
#   0. the migration test (embedded data folder → DynamoDB), alone while DynamoDB Local is fresh;
#   1. unit tests (the load generator's in bench/ too: `--workspace`), adapter conformance tests and the black-box
#      API suite on the embedded profile;
#   2. a bounded schemathesis fuzz run against /openapi.json (scripts/fuzz.sh);
#   3. the same black-box API suite again on the distributed profile
#      (DynamoDB Local + the tansu Kafka broker, started here; Meilisearch: MEILI_URL if set, else the
#      in-process contract mock), then once more with the bridge fanning out to Kafka and Kinesis (kinesalite)
#      and the projectors reading Kinesis;
#   4. the dependency-outage tests (tests/api/outage.rs), after the distributed suites, alone and one at a time:
#      each freezes the broker, DynamoDB Local or the Meilisearch mock for 10 s under load, which would break
#      any test running beside it (about 80 s in all).
# Services are installed and started by scripts/services.sh and stopped on exit, pass or fail. Their ports are
# ORDERFLOW_SERVICES_{DYNAMODB,KAFKA,KINESIS}_PORT (defaults 8000 / 9092 / 4567); the tests follow.
set -euo pipefail
cd "$(dirname "$0")/.."
# Only step 4 may freeze services: an ORDERFLOW_TEST_OUTAGES left in the caller's environment must not make the
# outage tests run inside the parallel suites of steps 1 and 3 (without it they print "skipped" and pass).
unset ORDERFLOW_TEST_OUTAGES
# The tests talk to the services this script starts, on the ports it starts them on.
export ORDERFLOW_TEST_DYNAMODB="http://127.0.0.1:${ORDERFLOW_SERVICES_DYNAMODB_PORT:-8000}"
export ORDERFLOW_TEST_KAFKA="127.0.0.1:${ORDERFLOW_SERVICES_KAFKA_PORT:-9092}"
export ORDERFLOW_TEST_KINESIS="http://127.0.0.1:${ORDERFLOW_SERVICES_KINESIS_PORT:-4567}"
# The OpenAPI validator that scripts/services.sh installs (tests/api/openapi.rs skips its check without it).
export OPENAPI_VALIDATOR_PYTHON="$PWD/.services/pytools/bin/python"
# The Prometheus exposition parser it installs beside it (tests/api/metrics.rs falls back to its own without).
export PROMETHEUS_PARSER_PYTHON="$PWD/.services/pytools/bin/python"
# playwright-core for the console's headless-Chromium test (tests/api/console.rs skips it without this).
export PLAYWRIGHT_PREFIX="$PWD/.services/console"
# The AsyncAPI parser and the compose-spec schema (tests/api/asyncapi.rs and deploy.rs skip their checks without).
export ASYNCAPI_PARSER_PREFIX="$PWD/.services/specs"
export COMPOSE_SCHEMA_PREFIX="$PWD/.services/specs"

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# Build first, so that service start-up does not compete with the compiler for the two cores.
cargo nextest run --workspace --all-targets --no-run
# The optional OTLP exporter (feature `otlp`) at least compiles.
cargo check --features otlp

scripts/services.sh start
# Quietly, so that the last line this script prints is the last nextest summary.
trap 'scripts/services.sh stop >/dev/null' EXIT

status=0
# The migration test copies 10,000 orders into DynamoDB Local one conditional write at a time: it runs first and
# alone, while DynamoDB Local is fresh (it slows down as the suites' tables pile up in its memory), and the
# distributed runs below leave it out.
MIGRATE='test(/^lifecycle::migrate_/)'
echo "== migration into the distributed profile (alone, on a fresh DynamoDB Local) =="
ORDERFLOW_TEST_PROFILE=distributed cargo nextest run --test api --no-fail-fast -E "$MIGRATE" || status=1
echo "== embedded profile (all targets) =="
cargo nextest run --workspace --all-targets --no-fail-fast || status=1
echo "== bounded fuzz of the HTTP API (schemathesis, no 5xx allowed) =="
scripts/fuzz.sh 60 || status=1
echo "== distributed profile (black-box API suite) =="
ORDERFLOW_TEST_PROFILE=distributed cargo nextest run --test api --no-fail-fast -E "not $MIGRATE" || status=1
echo "== distributed profile, bridge → Kafka + Kinesis, projectors on Kinesis (black-box API suite) =="
ORDERFLOW_TEST_PROFILE=distributed ORDERFLOW_TEST_SINKS=kafka,kinesis ORDERFLOW_TEST_SOURCE=kinesis \
  cargo nextest run --test api --no-fail-fast -E "not $MIGRATE" || status=1
echo "== dependency outages (distributed profile, serial: each test freezes a shared service for 10 s) =="
ORDERFLOW_TEST_PROFILE=distributed ORDERFLOW_TEST_OUTAGES=1 \
  cargo nextest run --test api --test-threads 1 --no-fail-fast -E 'test(/^outage::/)' || status=1
exit $status
