#!/usr/bin/env bash
# Regenerates every figure in BENCHMARKS.md, in one command:
#
#   scripts/bench.sh                  # the full run (about 25 minutes on 2 cores)
#   BENCH_QUICK=1 scripts/bench.sh    # the same steps, short (a smoke test of the tooling, not figures)
#
# Builds --release, then writes into target/bench/ (BENCH_OUT):
#   machine.txt        nproc, CPU model, RAM, disk, load average
#   fsync.txt          cost of one durable SQLite commit on the data folder's disk (WAL, synchronous=FULL)
#   results.json/.txt  `orderflow-bench --scenario all`: baseline + mixed workload (throughput, latency, CPU per
#                      request, lag, rebuild, RSS) and the 1,000,000-order memory run; results.md is its markdown
#                      table
#   perf-stat.txt      syscalls, fsyncs and context switches of the service over a mixed window
#   profile.txt        where the service's CPU goes (perf record: by thread and library, top symbols)
#   ablation.md        the mixed workload with one thing changed at a time (what limits the figure)
#   distributed-*      the distributed profile (scripts/bench-distributed.sh; BENCH_NO_DISTRIBUTED=1 skips it)
# and prints the markdown tables. Knobs: BENCH_DURATION (60s), BENCH_ORDERS (1000000), BENCH_CLIENTS (256),
# BENCH_OUT (target/bench), BENCH_BIN (an already built orderflow binary: skips the build; the load generator is
# the orderflow-bench beside it).
# Take figures on a quiet machine: the load average is printed before each run and stored in the results.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${BENCH_OUT:-target/bench}
duration=${BENCH_DURATION:-60s}
orders=${BENCH_ORDERS:-1000000}
clients=${BENCH_CLIENTS:-256}
settle=40s
side=20s
if [[ -n "${BENCH_QUICK:-}" ]]; then
    duration=5s orders=20000 side=5s settle=2s
fi

# BENCH_BIN: measure an already built binary instead of building this checkout.
if [[ -n "${BENCH_BIN:-}" ]]; then
    bin=$BENCH_BIN
else
    cargo build --release --workspace
    bin=target/release/orderflow
fi
# The load generator (bench/), which spawns the service binary.
bench() { "$(dirname "$bin")/orderflow-bench" --service-bin "$bin" "$@"; }
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/orderflow-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
have() { command -v "$1" >/dev/null 2>&1; }
# perf with a software clock and syscall tracepoints (hardware counters are often missing in VMs).
perf_ok=
if have perf && perf stat -e task-clock,syscalls:sys_enter_fsync true >/dev/null 2>&1; then perf_ok=1; fi

echo "== machine"
{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
    echo "binary: $bin (built $(date -u -r "$bin" +%FT%TZ)), load generator $(dirname "$bin")/orderflow-bench"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
    echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
    echo "disk (data folders in ${TMPDIR:-/tmp}): $(df -h "${TMPDIR:-/tmp}" | awk 'NR==2 {print $1 ", " $2 " total, " $4 " free"}')"
    echo "kernel: $(uname -r)"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/machine.txt"

echo "== one durable commit on this disk"
if have python3; then
    python3 - "$tmp" <<'EOF' | tee "$out/fsync.txt"
import os, sqlite3, sys, time
db = sqlite3.connect(os.path.join(sys.argv[1], "fsync.db"), isolation_level=None)
db.execute("pragma journal_mode=wal")
db.execute("create table t (x)")
for mode in ("full", "normal"):
    db.execute(f"pragma synchronous={mode}")
    n = 2000
    start = time.perf_counter()
    for i in range(n):
        db.execute("begin immediate")
        db.execute("insert into t values (?)", (i,))
        db.execute("commit")
    took = time.perf_counter() - start
    print(f"sqlite WAL synchronous={mode}: {n / took:,.0f} commits/s, {took / n * 1e6:.0f} us per commit (1 row each)")
EOF
else
    echo "python3 not found: skipped" | tee "$out/fsync.txt"
fi

echo "== headline: baseline + mixed workload, then ${orders} orders (load average $(cut -d' ' -f1-3 /proc/loadavg))"
bench --scenario all --clients "$clients" --duration "$duration" --orders "$orders" --settle "$settle" \
    --json "$out/results.json" --markdown | tee "$out/results.txt"
# The markdown table is the part of the output after the human one.
sed -n '/^| figure/,$p' "$out/results.txt" > "$out/results.md"

if [[ -n "$perf_ok" ]]; then
    echo "== perf stat over a mixed window (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    events=task-clock,context-switches,cpu-migrations,page-faults
    for s in fsync fdatasync pwrite64 pread64 futex sendto recvfrom epoll_wait; do events+=",syscalls:sys_enter_$s"; done
    bench --no-baseline --no-rebuild --clients "$clients" --duration "$side" --json "$out/perf-stat-run.json" \
        --attach "perf stat -e $events -o $out/perf-stat.txt -p {pid}" > "$out/perf-stat-run.txt"
    grep -E "^orderflow:" "$out/perf-stat-run.txt"
    cat "$out/perf-stat.txt"

    echo "== CPU profile of the service over a mixed window"
    bench --no-baseline --no-rebuild --clients "$clients" --duration "$side" --json "$out/profile-run.json" \
        --attach "perf record -F 499 -o $out/perf.data -p {pid}" > "$out/profile-run.txt" 2>/dev/null
    {
        grep -E "^orderflow:|service threads" "$out/profile-run.txt"
        echo "-- by thread and library"
        perf report -i "$out/perf.data" --no-children --sort comm,dso --stdio 2>/dev/null > "$tmp/by-dso.txt" || true
        grep -v '^#' "$tmp/by-dso.txt" | grep -v '^$' | sed -n 1,15p
        echo "-- top symbols"
        perf report -i "$out/perf.data" --no-children --sort sym --stdio 2>/dev/null > "$tmp/by-sym.txt" || true
        grep -v '^#' "$tmp/by-sym.txt" | grep -v '^$' | sed -n 1,40p
    } | tee "$out/profile.txt"
else
    echo "perf (with syscall tracepoints) not available: skipped perf stat and the profile" | tee "$out/profile.txt"
fi

echo "== ablation: one change at a time, ${side} each"
ablate() { # name, then env assignments and bench flags
    local name=$1; shift
    local envs=()
    while [[ $# -gt 0 && $1 == *=* && $1 != --* ]]; do envs+=("$1"); shift; done
    echo "-- $name (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    env "${envs[@]}" "$(dirname "$bin")/orderflow-bench" --service-bin "$bin" --no-baseline --no-rebuild \
        --duration "$side" --json "$out/ablation-$name.json" "$@" \
        > "$out/ablation-$name.txt"
}
ablate default --clients "$clients"
ablate no-search --clients "$clients" --mix place=30,pay=25,ship=15,cancel=5,get=20
ablate commands-only --clients "$clients" --mix place=40,pay=35,ship=20,cancel=5
ablate place-only --clients "$clients" --mix place=1
ablate no-fsync ORDERFLOW__STORE__SYNCHRONOUS=normal --clients "$clients" --mix place=40,pay=35,ship=20,cancel=5
ablate 64-clients --clients 64 --mix place=40,pay=35,ship=20,cancel=5
if have jq; then
    {
        echo "| run | requests/s | commands/s | command p50 / p99 ms | search-view lag p99 ms | service / load generator / other cores | service / load generator µs per request |"
        echo "|---|---|---|---|---|---|---|"
        for name in default no-search commands-only place-only no-fsync 64-clients; do
            jq -r --arg n "$name" 'def r: (. * 10 | round) / 10; .mixed as $m | $m.orderflow as $o |
                "| \($n) | \($o.requestsPerS) | \($o.commandsOkPerS) | \($o.latency.commands.p50Ms | r) / \($o.latency.commands.p99Ms | r) | \($m.searchLag.lag.p99Ms | r) | \($o.cpu.serviceCores) / \($o.cpu.loadGeneratorCores) / \($o.cpu.otherCores + $o.cpu.irqCores | r) | \($o.cpuPerRequestUs.service) / \($o.cpuPerRequestUs.loadGenerator) |"' \
                "$out/ablation-$name.json"
        done
    } | tee "$out/ablation.md"
else
    echo "jq not found: see $out/ablation-*.txt"
fi

# The distributed profile's figures (starts and stops its own services; BENCH_NO_DISTRIBUTED=1 skips them).
if [[ -z "${BENCH_NO_DISTRIBUTED:-}" ]]; then
    echo "== distributed profile (scripts/bench-distributed.sh)"
    BENCH_BIN="$bin" BENCH_OUT="$out" scripts/bench-distributed.sh
fi

echo
echo "== results ($out/results.md)"
cat "$out/results.md"
