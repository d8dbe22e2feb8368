#!/usr/bin/env bash
# The distributed profile's figures for BENCHMARKS.md, in one command:
#
#   scripts/bench-distributed.sh                  # about 10 minutes on 2 cores, after the build
#   BENCH_QUICK=1 scripts/bench-distributed.sh    # the same steps, short (a smoke test of the tooling)
#
# Starts the real services of scripts/services.sh (DynamoDB Local with Streams, the tansu Kafka broker, and
# kinesalite for the Kinesis run), fresh for each run and stopped on exit, and a Meilisearch: MEILI_URL
# (+ MEILI_MASTER_KEY) if set, else the tests' contract mock as a process (crates/meili-mock, its example meili_mock: no registry ships a Meilisearch server).
# With the mock, search figures would describe the mock, so the mix leaves `GET /orders?q=` out unless
# MEILI_URL is set, and the search view's lag and rebuild rate include the mock's indexing (cheaper than
# Meilisearch's); every other figure (commands through DynamoDB, the bridge → broker → projector path, the
# revenue table's lag and rebuild, RSS) is the distributed path's own.
#
# Runs `orderflow-bench --config config/distributed.toml` (it spawns `orderflow --config … serve`) three times,
# on fresh tables, topic, stream and index each: the mix with the projectors on Kafka; the mix with the bridge
# fanning out to Kafka and Kinesis and the projectors on Kinesis; the memory scenario (place only). Writes
# target/bench/distributed-{kafka,kinesis,memory}.{json,txt} (BENCH_OUT). Knobs: BENCH_DURATION (60s),
# BENCH_CLIENTS (64), BENCH_ORDERS (20000, the memory run), BENCH_RUNS (some of `kafka kinesis memory`),
# BENCH_BIN (an already built orderflow binary; the load generator is the orderflow-bench beside it).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${BENCH_OUT:-target/bench}
duration=${BENCH_DURATION:-60s}
clients=${BENCH_CLIENTS:-64}
orders=${BENCH_ORDERS:-20000}
settle=20s
if [[ -n "${BENCH_QUICK:-}" ]]; then
    duration=5s orders=2000 settle=2s
fi

if [[ -n "${BENCH_BIN:-}" ]]; then
    bin=$BENCH_BIN
else
    cargo build --release --workspace
    bin=target/release/orderflow
fi
mkdir -p "$out"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    scripts/services.sh stop >/dev/null
}
trap cleanup EXIT

mix=place=30,pay=25,ship=15,cancel=5,get=20,search=5
if [[ -n "${MEILI_URL:-}" ]]; then
    meili=$MEILI_URL key=${MEILI_MASTER_KEY:-}
else
    cargo build --release -p meili-mock --example meili_mock
    key=bench-master-key
    target/release/examples/meili_mock "$key" > "$out/meili-mock.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        meili=$(sed -n 's/^meilisearch mock on //p' "$out/meili-mock.log")
        [[ -n "$meili" ]] && break
        sleep 0.1
    done
    [[ -n "$meili" ]] || { echo "the Meilisearch mock did not start" >&2; exit 1; }
    mix=place=30,pay=25,ship=15,cancel=5,get=20
    echo "Meilisearch: the contract mock at $meili (searches left out of the mix)"
fi

run() { # name sinks source, then bench flags
    local name=$1 sinks=$2 source=$3 run_id
    shift 3
    run_id="b$(date +%s)"
    # Fresh services for each run: one in-memory DynamoDB Local that already holds earlier runs' tables and
    # streams was seen to slow down until every write timed out.
    scripts/services.sh stop >/dev/null
    scripts/services.sh start
    echo "== distributed profile, $name: bridge → $sinks, projectors on $source (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    ORDERFLOW__DYNAMODB__TABLE_PREFIX="$run_id" \
    ORDERFLOW__KAFKA__TOPIC="orders.events.$run_id" \
    ORDERFLOW__KAFKA__GROUP_PREFIX="$run_id" \
    ORDERFLOW__KINESIS__STREAM="orders-events-$run_id" \
    ORDERFLOW__KINESIS__SHARDS=2 \
    ORDERFLOW__BRIDGE__SINKS="$sinks" \
    ORDERFLOW__PROJECTIONS__SOURCE="$source" \
    ORDERFLOW__MEILISEARCH__URL="$meili" \
    ORDERFLOW__MEILISEARCH__API_KEY="$key" \
    ORDERFLOW__MEILISEARCH__INDEX="orders_$run_id" \
        "$(dirname "$bin")/orderflow-bench" --service-bin "$bin" --config config/distributed.toml --no-baseline \
        --clients "$clients" "$@" \
        --json "$out/distributed-$name.json" | tee "$out/distributed-$name.txt"
}
for name in ${BENCH_RUNS:-kafka kinesis memory}; do
    case $name in
        kafka) run kafka kafka kafka --scenario mixed --duration "$duration" --mix "$mix" ;;
        kinesis) run kinesis kafka,kinesis kinesis --scenario mixed --duration "$duration" --mix "$mix" ;;
        memory) run memory kafka kafka --scenario memory --orders "$orders" --settle "$settle" ;;
        *) echo "unknown run $name (kafka, kinesis, memory)" >&2; exit 2 ;;
    esac
done
