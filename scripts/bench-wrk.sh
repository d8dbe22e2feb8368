#!/usr/bin/env bash
# What the load generator costs, against wrk: the place-only mix on a fresh service, driven once by
# orderflow-bench and once by wrk (scripts/wrk-place.lua: the same kind of place body, a customer's bearer
# token), with the same connections, warmup and window. Prints, for each, the rate and the CPU per request of
# the generator and of the service, and the machine's load around the runs. Short on purpose: take it on a
# quiet machine, and compare the CPU per request rather than the rates (the generator and the service share
# the cores).
#
#   scripts/bench-wrk.sh    # builds --release (both binaries), about 30 s of load in all
#
# Knobs: BENCH_CLIENTS (256 connections), BENCH_WARMUP (2, seconds), BENCH_DURATION (8, seconds), WRK_THREADS
# (1, like orderflow-bench's one load thread), BENCH_OUT (target/bench), BENCH_BIN (an already built orderflow
# binary; the load generator is the orderflow-bench beside it).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${BENCH_OUT:-target/bench}
clients=${BENCH_CLIENTS:-256}
warmup=${BENCH_WARMUP:-2}
duration=${BENCH_DURATION:-8}
wrk_threads=${WRK_THREADS:-1}
if [[ -n "${BENCH_BIN:-}" ]]; then
    bin=$BENCH_BIN
else
    cargo build --release --workspace
    bin=target/release/orderflow
fi
generator=$(dirname "$bin")/orderflow-bench
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq not found (apt-get install jq)" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/orderflow-wrk.XXXXXX")
service_pid=
cleanup() {
    if [[ -n "$service_pid" ]]; then kill "$service_pid" 2>/dev/null || true; wait "$service_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }              # user + system CPU ticks of a process
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; } # machine busy ticks (all cores)
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
threads() { # name|ticks of each thread of a process
    for t in /proc/"$1"/task/*; do echo "$(cat "$t/comm" 2>/dev/null)|$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null)"; done
}

echo "== orderflow-bench, place only ($clients clients, ${warmup} s warmup, ${duration} s measured; load average $(loadavg))"
"$generator" --service-bin "$bin" --mix place=100 --clients "$clients" --warmup "${warmup}s" --duration "${duration}s" \
    --no-baseline --no-rebuild --lag-sample 0 --data-dir "$tmp" --json "$out/wrk-compare-bench.json" \
    > "$out/wrk-compare-bench.txt"
jq -r '.mixed.orderflow | "orderflow-bench: \(.requestsPerS) requests/s (\(.statuses.place | to_entries | map("\(.key):\(.value)") | join(" "))), p99 \(.latency.all.p99Ms) ms; CPU per request: load generator \(.cpuPerRequestUs.loadGenerator) µs (\(.cpu.loadGeneratorCores) cores), whole bench process \(.cpuPerRequestUs.benchProcess) µs, service \(.cpuPerRequestUs.service) µs (\(.cpu.serviceCores) cores); machine busy \(.cpu.machineBusyCores) of \(.cpu.machineCores) cores, everything else (other processes, interrupts) \(.cpu.otherCores + .cpu.irqCores + .cpu.benchCores - .cpu.loadGeneratorCores | . * 100 | round / 100); load average at the window \(.loadAverageAtWindowStart)"' \
    "$out/wrk-compare-bench.json" | tee "$out/wrk-compare.txt"

echo "== wrk, place only ($clients connections, $wrk_threads thread(s), ${warmup} s warmup, ${duration} s measured; load average $(loadavg))"
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export ORDERFLOW__DATA_DIR="$tmp/wrk-service" ORDERFLOW__SERVER__HOST=127.0.0.1 ORDERFLOW__SERVER__PORT=0 \
    ORDERFLOW__AUTH__ENABLED=true ORDERFLOW__AUTH__JWT_SECRET="$secret" ORDERFLOW__LOG__LEVEL=warn
mkdir -p "$ORDERFLOW__DATA_DIR"
"$bin" serve > "$tmp/serve.log" &
service_pid=$!
url=
for _ in $(seq 1 200); do
    url=$(sed -n 's/^orderflow listening on //p' "$tmp/serve.log")
    [[ -n "$url" ]] && break
    sleep 0.1
done
[[ -n "$url" ]] || { echo "the service did not start" >&2; exit 1; }
for _ in $(seq 1 600); do curl -fsS "$url/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done
export WRK_TOKEN WRK_RUN
WRK_TOKEN=$("$bin" token --role customer --sub cust-0)
WRK_RUN="w$(date +%s)"
wrk -t "$wrk_threads" -c "$clients" -d "${warmup}s" -s scripts/wrk-place.lua "$url" > "$tmp/wrk-warmup.txt"
WRK_RUN="${WRK_RUN}m"
load_at_window=$(loadavg)
service_before=$(ticks "$service_pid")
threads "$service_pid" > "$tmp/threads-before"
busy_before=$(busy)
started=$(date +%s.%N)
# `times` after wrk prints the CPU time of this subshell's children: wrk's.
( wrk -t "$wrk_threads" -c "$clients" -d "${duration}s" --latency -s scripts/wrk-place.lua "$url"; times ) \
    > "$out/wrk-compare-wrk.txt"
ended=$(date +%s.%N)
service_after=$(ticks "$service_pid")
threads "$service_pid" > "$tmp/threads-after"
busy_after=$(busy)
python3 - "$out/wrk-compare-wrk.txt" "$started" "$ended" "$hz" "$service_before" "$service_after" \
    "$busy_before" "$busy_after" "$(nproc)" "$load_at_window" "$tmp/threads-before" "$tmp/threads-after" \
    <<'PY' | tee -a "$out/wrk-compare.txt"
import re, sys
path, started, ended, hz, s0, s1, b0, b1, cores, load, t0, t1 = sys.argv[1:]
text = open(path).read()
secs = float(ended) - float(started)
hz = float(hz)
rate = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
requests = int(re.search(r"(\d+) requests in", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
p99 = re.search(r"^\s*99%\s+(\S+)", text, re.M)
def seconds(t):  # `times` prints e.g. 0m1.234s
    m, s = re.fullmatch(r"(\d+)m([\d.]+)s", t).groups()
    return int(m) * 60 + float(s)
user, system = (seconds(t) for t in text.strip().splitlines()[-1].split())
wrk_cpu = user + system
service_cpu = (float(s1) - float(s0)) / hz
busy = (float(b1) - float(b0)) / hz / secs
us = lambda cpu: round(cpu / max(requests, 1) * 1e6, 1)
print(f"wrk: {rate:.0f} requests/s (non-2xx: {non2xx.group(1) if non2xx else 0}), p99 {p99.group(1) if p99 else 'n/a'}; "
      f"CPU per request: wrk {us(wrk_cpu)} µs ({wrk_cpu / secs:.2f} cores), service {us(service_cpu)} µs "
      f"({service_cpu / secs:.2f} cores); machine busy {busy:.2f} of {cores} cores, everything else (other processes, "
      f"interrupts) {max(busy - (wrk_cpu + service_cpu) / secs, 0):.2f}; load average at the window {load}")
def groups(file):  # ticks by thread name, digits folded (as orderflow-bench reports them)
    out = {}
    for line in open(file):
        name, _, ticks = line.strip().rpartition("|")
        if ticks:
            key = re.sub(r"\d", "#", name)
            out[key] = out.get(key, 0) + int(ticks)
    return out
before, after = groups(t0), groups(t1)
split = sorted(((k, (v - before.get(k, 0)) / hz / secs) for k, v in after.items()), key=lambda kv: -kv[1])
print("  service threads (cores): " + ", ".join(f"{k} {c:.2f}" for k, c in split if c >= 0.005))
PY
echo "== written: $out/wrk-compare.txt (and wrk-compare-{bench,wrk}.txt, wrk-compare-bench.json)"
