//! The results: a JSON document (`--json`), a table for people, and a markdown table of each figure against
//! its target (`--markdown`, what BENCHMARKS.md shows).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::load::{CpuSplit, LoadOutcome, round2};
use crate::observe::{LagMethod, LagReport, RevenueLagReport, Sample};
use crate::rebuild::RebuildReport;
use crate::service::{self, Machine};
use crate::stats::{Percentiles, SeriesSummary};
use crate::workload::Op;
use crate::{BenchArgs, Scenario};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Results {
    /// The version of this load generator (the service's is its binary's).
    pub bench_version: &'static str,
    pub generated_at: String,
    pub machine: Machine,
    pub settings: RunSettings,
    pub mixed: Option<MixedReport>,
    pub memory: Option<MemoryReport>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSettings {
    pub scenario: Scenario,
    pub clients: usize,
    pub warmup_s: f64,
    pub duration_s: Option<f64>,
    pub count: Option<u64>,
    pub rate: Option<f64>,
    pub mix: String,
    pub lag_sample: f64,
    pub orders: u64,
    pub load_generator_threads: usize,
    /// A service at `--url`, or the binary the bench spawned.
    pub service: String,
    /// `ORDERFLOW__*` settings in the environment, passed on to the spawned service (secrets left out).
    pub service_env: BTreeMap<String, String>,
}

impl Results {
    pub fn new(args: &BenchArgs, service_bin: Option<&Path>) -> Self {
        let service_env = std::env::vars()
            .filter(|(k, _)| k.starts_with("ORDERFLOW__"))
            .filter(|(k, _)| !["SECRET", "KEY", "PASSWORD", "TOKEN"].iter().any(|s| k.contains(s)))
            .collect();
        Self {
            bench_version: env!("CARGO_PKG_VERSION"),
            generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            machine: service::machine(),
            settings: RunSettings {
                scenario: args.scenario,
                clients: args.clients,
                warmup_s: args.warmup.as_secs_f64(),
                duration_s: args.count.is_none().then_some(args.duration.as_secs_f64()),
                count: args.count,
                rate: args.rate,
                mix: args.mix.to_string(),
                lag_sample: args.lag_sample,
                orders: args.orders,
                load_generator_threads: args.threads.max(1),
                service: match (&args.url, service_bin) {
                    (Some(url), _) => url.clone(),
                    (None, Some(bin)) => format!("spawned: {} serve (fresh data folder)", bin.display()),
                    (None, None) => "none".into(),
                },
                service_env,
            },
            mixed: None,
            memory: None,
        }
    }
}

/// One load run's figures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    pub window_s: f64,
    pub requests: u64,
    pub requests_per_s: f64,
    pub commands: u64,
    pub commands_per_s: f64,
    /// Commands answered with their success status (201 place, 200 others), per second.
    pub commands_ok_per_s: f64,
    /// Commands completed in each whole second of the window: min / median / max.
    pub commands_per_second: SeriesSummary,
    /// Commands completed in each second of the window, in order.
    pub commands_per_second_series: Vec<u64>,
    /// By request kind, plus `commands`, `queries` and `all`.
    pub latency: BTreeMap<String, Percentiles>,
    /// By request kind: answers by HTTP status, and `transport` for requests with no answer.
    pub statuses: BTreeMap<String, BTreeMap<String, u64>>,
    /// Answers other than the expected one (a 404 on `get` is the view not having the order yet and is not
    /// counted), plus transport errors.
    pub errors: u64,
    pub cpu: CpuSplit,
    /// CPU time per request answered within the window, in µs.
    pub cpu_per_request_us: CpuPerRequest,
    pub load_average_at_window_start: String,
}

/// CPU time per request, in µs: cores ÷ requests answered per second, both over the window.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuPerRequest {
    /// The service (or the baseline server); `null` without its pid.
    pub service: Option<f64>,
    /// The load generator's threads alone.
    pub load_generator: f64,
    /// The whole bench process (load generator, observers, and in the baseline run the baseline server).
    pub bench_process: f64,
}

impl CpuPerRequest {
    fn of(cpu: &CpuSplit, requests_per_s: f64) -> Self {
        let per =
            |cores: f64| if requests_per_s > 0.0 { (cores * 1e6 / requests_per_s * 10.0).round() / 10.0 } else { 0.0 };
        Self {
            service: cpu.service_cores.map(per),
            load_generator: per(cpu.load_generator_cores),
            bench_process: per(cpu.bench_cores),
        }
    }
}

impl LoadReport {
    pub fn of(outcome: &LoadOutcome) -> Self {
        let s = &outcome.stats;
        let secs = outcome.window.as_secs_f64().max(1e-3);
        let commands = s.combined(Op::is_command);
        let all = s.combined(|_| true);
        let requests = all.answered() + all.transport_errors;
        let command_count = commands.answered() + commands.transport_errors;
        let ok: u64 = Op::ALL
            .into_iter()
            .filter(|op| op.is_command())
            .map(|op| s.op(op).statuses.get(&op.expected_status()).copied().unwrap_or(0))
            .sum();
        let mut latency = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        let mut errors = 0;
        for op in Op::ALL {
            let o = s.op(op);
            if o.answered() + o.transport_errors == 0 {
                continue;
            }
            latency.insert(op.name().to_owned(), Percentiles::of(&o.latency));
            let mut by = BTreeMap::new();
            for (status, n) in &o.statuses {
                by.insert(status.to_string(), *n);
                if *status != op.expected_status() && !(op == Op::Get && *status == 404) {
                    errors += n;
                }
            }
            if o.transport_errors > 0 {
                by.insert("transport".into(), o.transport_errors);
                errors += o.transport_errors;
            }
            statuses.insert(op.name().to_owned(), by);
        }
        latency.insert("commands".into(), Percentiles::of(&commands.latency));
        latency.insert("queries".into(), Percentiles::of(&s.combined(|op| !op.is_command()).latency));
        latency.insert("all".into(), Percentiles::of(&all.latency));
        let requests_per_s = requests as f64 / secs;
        Self {
            window_s: round2(secs),
            requests,
            requests_per_s: requests_per_s.round(),
            commands: command_count,
            commands_per_s: (command_count as f64 / secs).round(),
            commands_ok_per_s: (ok as f64 / secs).round(),
            commands_per_second: SeriesSummary::of(&s.commands_per_second, outcome.window.as_secs() as usize),
            commands_per_second_series: s.commands_per_second.clone(),
            latency,
            statuses,
            errors,
            cpu: outcome.cpu.clone(),
            cpu_per_request_us: CpuPerRequest::of(&outcome.cpu, s.completed_in_window as f64 / secs),
            load_average_at_window_start: outcome.load_average.clone(),
        }
    }

    fn p(&self, key: &str) -> Percentiles {
        self.latency.get(key).cloned().unwrap_or_default()
    }
}

/// After the load stopped.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    /// Sum of every payment the bench had acknowledged (minor units, all currencies).
    pub revenue_expected: u64,
    /// Gross revenue the view showed last (minus what it held before the run).
    pub revenue_seen: Option<u64>,
    /// The revenue view's total equals the acknowledged payments' sum, to the cent (nothing lost, nothing counted
    /// twice).
    pub revenue_exact: bool,
    /// Time from the end of the load until the revenue view held every acknowledged payment.
    pub revenue_caught_up_ms: Option<f64>,
    pub revenue_poll_errors: u64,
    pub orders_placed_in_window: u64,
    /// `estimatedTotal` of `GET /orders` after the run (every order the view holds).
    pub search_estimated_total: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MixedReport {
    pub load_average_before: String,
    pub baseline: Option<LoadReport>,
    pub orderflow: LoadReport,
    /// orderflow's requests/s over the baseline's.
    pub ratio_to_baseline: Option<f64>,
    /// orderflow's service CPU per request over the baseline server's.
    pub service_cpu_ratio_to_baseline: Option<f64>,
    pub search_lag: LagReport,
    pub revenue_lag: RevenueLagReport,
    /// The service's own `orderflow_projection_lag_seconds` (age of the newest event applied, per batch),
    /// highest value seen by the 1 s monitor: the projector's lag alone, without the read path.
    pub lag_gauge_max_s: BTreeMap<String, f64>,
    pub drain: Drain,
    pub rebuild: RebuildReport,
    /// VmHWM of the service at the end (the whole run, rebuild included).
    pub peak_rss_mib: Option<f64>,
    pub end_rss_mib: Option<f64>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryReport {
    pub load_average_before: String,
    pub orders_placed: u64,
    pub load: LoadReport,
    pub rss_end_of_placing_mib: Option<f64>,
    pub live_aggregates_end_of_placing: Option<f64>,
    pub rss_after_settle_mib: Option<f64>,
    pub live_aggregates_after_settle: Option<f64>,
    pub settle_s: f64,
    /// VmHWM after placing and settling (before the rebuild).
    pub peak_rss_mib: Option<f64>,
    pub rebuild: RebuildReport,
    pub samples: Vec<Sample>,
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v}{unit}"))
}

fn thousands(n: f64) -> String {
    let n = n.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cpu_line(cpu: &CpuSplit) -> String {
    let mut line = format!(
        "CPU during the window (cores busy, of {}): service {}, bench process {} (load generator {}), irq/softirq {}, steal {}, other processes {} (machine {})",
        cpu.machine_cores,
        cpu.service_cores.map_or("n/a".into(), |c| c.to_string()),
        cpu.bench_cores,
        cpu.load_generator_cores,
        cpu.irq_cores,
        cpu.steal_cores,
        cpu.other_cores,
        cpu.machine_busy_cores
    );
    if !cpu.other_top.is_empty() {
        let top: Vec<String> = cpu.other_top.iter().map(|(name, c)| format!("{name} {c}")).collect();
        let _ = write!(line, "\n  other processes (cores): {}", top.join(", "));
    }
    for (what, threads) in [("service", &cpu.service_threads), ("bench", &cpu.bench_threads)] {
        if threads.is_empty() {
            continue;
        }
        let mut threads: Vec<_> = threads.iter().collect();
        threads.sort_by(|a, b| b.1.total_cmp(a.1));
        let threads: Vec<String> = threads.iter().map(|(name, c)| format!("{name} {c}")).collect();
        let _ = write!(line, "\n  {what} threads (cores): {}", threads.join(", "));
    }
    line
}

fn load_table(out: &mut String, title: &str, r: &LoadReport) {
    let _ = writeln!(
        out,
        "{title}: {} requests/s, {} commands/s ({} ok/s; per second min {} / median {} / max {}), {} errors, window {} s",
        thousands(r.requests_per_s),
        thousands(r.commands_per_s),
        thousands(r.commands_ok_per_s),
        thousands(r.commands_per_second.min as f64),
        thousands(r.commands_per_second.median as f64),
        thousands(r.commands_per_second.max as f64),
        r.errors,
        r.window_s
    );
    let _ = writeln!(
        out,
        "  {:<9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}  statuses",
        "kind", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    let names = Op::ALL.iter().map(|o| o.name()).chain(["commands", "queries", "all"]);
    for name in names {
        let Some(p) = r.latency.get(name) else { continue };
        if p.count == 0 && !r.statuses.contains_key(name) {
            continue;
        }
        let statuses = r
            .statuses
            .get(name)
            .map(|s| s.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}  {statuses}",
            name,
            p.count,
            ms(p.p50_ms),
            ms(p.p90_ms),
            ms(p.p99_ms),
            ms(p.p999_ms),
            ms(p.max_ms)
        );
    }
    let _ = writeln!(out, "  {}", cpu_line(&r.cpu));
    let c = &r.cpu_per_request_us;
    let _ = writeln!(
        out,
        "  CPU per request: service {}, load generator {} µs (whole bench process {} µs)",
        opt(c.service, " µs"),
        c.load_generator,
        c.bench_process
    );
    let _ = writeln!(out, "  load average when the window opened: {}", r.load_average_at_window_start);
}

fn rebuild_lines(out: &mut String, r: &RebuildReport) {
    if !r.available {
        let _ = writeln!(out, "{}", r.note.as_deref().unwrap_or("rebuild: not available"));
        return;
    }
    for v in &r.views {
        let _ = writeln!(
            out,
            "rebuild {}: {} events in {} s = {} events/s{} (queries meanwhile: {} of {} failed)",
            v.name,
            thousands(v.events as f64),
            v.seconds,
            thousands(v.events_per_s),
            if v.finished { "" } else { " — did not finish" },
            v.query_errors,
            v.queries
        );
    }
    if let Some(note) = &r.note {
        let _ = writeln!(out, "rebuild: {note}");
    }
}

/// The table for people.
pub fn human(results: &Results) -> String {
    let mut out = String::new();
    let m = &results.machine;
    let s = &results.settings;
    let _ = writeln!(
        out,
        "\norderflow-bench {} — {} cores ({}), {} GiB, kernel {}",
        results.generated_at, m.cores, m.cpu_model, m.memory_gib, m.kernel
    );
    let mode = match s.rate {
        Some(rate) => format!("open loop at {rate} requests/s"),
        None => "closed loop".into(),
    };
    let _ = writeln!(
        out,
        "{} clients, {mode}, mix {}, load generator threads {}",
        s.clients, s.mix, s.load_generator_threads
    );
    if let Some(r) = &results.mixed {
        let _ = writeln!(out, "\n== mixed workload (load average before: {})", r.load_average_before);
        if let Some(b) = &r.baseline {
            load_table(&mut out, "baseline (actix-web, parse JSON + answer)", b);
        }
        load_table(&mut out, "orderflow", &r.orderflow);
        if let Some(ratio) = r.ratio_to_baseline {
            let _ = writeln!(out, "orderflow / baseline (requests/s): {ratio}");
        }
        if let Some(ratio) = r.service_cpu_ratio_to_baseline {
            let _ = writeln!(out, "orderflow / baseline (service CPU per request): {ratio}");
        }
        let l = &r.search_lag;
        let _ = writeln!(
            out,
            "search view lag (ack → GET /orders/{{id}} shows it; {}, {} sampled): p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms; not visible {}, skipped {}, probe errors {}",
            match l.method {
                Some(LagMethod::LongPoll) => "minVersion long-poll",
                Some(LagMethod::Poll) => "5 ms polls",
                None => "off",
            },
            l.visible + l.not_visible,
            ms(l.lag.p50_ms),
            ms(l.lag.p99_ms),
            ms(l.lag.p999_ms),
            ms(l.lag.max_ms),
            l.not_visible,
            l.skipped,
            l.errors
        );
        let v = &r.revenue_lag;
        let _ = writeln!(
            out,
            "revenue view lag (ack → /revenue/daily gross holds it; {} payments, {} ms polls): p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms; not visible {}",
            v.payments,
            v.poll_ms,
            ms(v.lag.p50_ms),
            ms(v.lag.p99_ms),
            ms(v.lag.p999_ms),
            ms(v.lag.max_ms),
            v.not_visible
        );
        let d = &r.drain;
        let _ = writeln!(
            out,
            "after the load: revenue view caught up in {} (expected {} got {}: {}); search view estimatedTotal {} (counts up to 10,000)",
            opt(d.revenue_caught_up_ms, " ms"),
            d.revenue_expected,
            d.revenue_seen.map_or("n/a".into(), |g| g.to_string()),
            if d.revenue_exact { "exact" } else { "NOT EXACT" },
            d.search_estimated_total.map_or("n/a".into(), |n| n.to_string()),
        );
        let gauges: Vec<String> = r.lag_gauge_max_s.iter().map(|(k, v)| format!("{k} {v} s")).collect();
        let _ = writeln!(out, "orderflow_projection_lag_seconds, highest seen (1 s samples): {}", gauges.join(", "));
        rebuild_lines(&mut out, &r.rebuild);
        let _ = writeln!(
            out,
            "service RSS: peak (VmHWM) {}, at the end {}",
            opt(r.peak_rss_mib, " MiB"),
            opt(r.end_rss_mib, " MiB")
        );
    }
    if let Some(r) = &results.memory {
        let _ = writeln!(
            out,
            "\n== memory: {} orders placed (load average before: {})",
            r.orders_placed, r.load_average_before
        );
        load_table(&mut out, "placing", &r.load);
        let _ = writeln!(
            out,
            "RSS at the last order {} with {} live actors; after {} s idle {} with {} live actors; peak (VmHWM) {}",
            opt(r.rss_end_of_placing_mib, " MiB"),
            opt(r.live_aggregates_end_of_placing, ""),
            r.settle_s,
            opt(r.rss_after_settle_mib, " MiB"),
            opt(r.live_aggregates_after_settle, ""),
            opt(r.peak_rss_mib, " MiB")
        );
        let step = (r.samples.len() / 12).max(1);
        let line: Vec<String> = r
            .samples
            .iter()
            .step_by(step)
            .map(|s| {
                format!(
                    "{}s:{}MiB/{}",
                    s.t.round(),
                    s.rss_mib.map_or(0.0, f64::round),
                    s.live_aggregates.unwrap_or(0.0)
                )
            })
            .collect();
        let _ = writeln!(out, "RSS / live actors over time: {}", line.join("  "));
        rebuild_lines(&mut out, &r.rebuild);
    }
    out
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "n/a",
    }
}

/// The results against the project's targets, as markdown.
pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| figure | target | measured | |");
    let _ = writeln!(out, "|---|---|---|---|");
    let mut row = |figure: &str, target: &str, measured: String, ok: Option<bool>| {
        let _ = writeln!(out, "| {figure} | {target} | {measured} | {} |", verdict(ok));
    };
    let clients = results.settings.clients;
    if let Some(r) = &results.mixed {
        let o = &r.orderflow;
        row(
            &format!("commands/s, mixed workload, {clients} clients, durable acks"),
            "≥ 25,000",
            format!(
                "{} (per-second min {} / max {}; {} requests/s with queries)",
                thousands(o.commands_ok_per_s),
                thousands(o.commands_per_second.min as f64),
                thousands(o.commands_per_second.max as f64),
                thousands(o.requests_per_s)
            ),
            Some(o.commands_ok_per_s >= 25_000.0),
        );
        let c = o.p("commands");
        row(
            "command latency p99",
            "≤ 20 ms",
            format!("{} ms (p50 {} ms, p99.9 {} ms)", ms(c.p99_ms), ms(c.p50_ms), ms(c.p999_ms)),
            (c.count > 0).then_some(c.p99_ms <= 20.0),
        );
        row(
            "errors (non-2xx answers, transport)",
            "0",
            format!("{} of {}", o.errors, thousands(o.requests as f64)),
            Some(o.errors == 0),
        );
        let l = &r.search_lag.lag;
        row(
            "projection lag p99, search view (ack → visible)",
            "≤ 100 ms",
            format!(
                "{} ms (p50 {} ms, max {} ms; {} samples); service gauge max {} s",
                ms(l.p99_ms),
                ms(l.p50_ms),
                ms(l.max_ms),
                l.count,
                r.lag_gauge_max_s.get("search").copied().unwrap_or(0.0)
            ),
            (l.count > 0).then_some(l.p99_ms <= 100.0 && r.search_lag.not_visible == 0),
        );
        let v = &r.revenue_lag.lag;
        row(
            "projection lag p99, revenue view (ack → in the daily total)",
            "≤ 100 ms",
            format!(
                "{} ms (p50 {} ms, max {} ms; {} payments); service gauge max {} s",
                ms(v.p99_ms),
                ms(v.p50_ms),
                ms(v.max_ms),
                v.count,
                r.lag_gauge_max_s.get("revenue").copied().unwrap_or(0.0)
            ),
            (v.count > 0).then_some(v.p99_ms <= 100.0 && r.revenue_lag.not_visible == 0),
        );
        let d = &r.drain;
        row(
            "revenue view after the run (its total against the acknowledged payments)",
            "exact",
            format!("{} of {}", d.revenue_seen.map_or("n/a".into(), |g| g.to_string()), d.revenue_expected),
            Some(d.revenue_exact),
        );
        let c = &o.cpu_per_request_us;
        if let (Some(ratio), Some(b)) = (r.service_cpu_ratio_to_baseline, &r.baseline) {
            row(
                "service CPU per request, orderflow / baseline server",
                "≤ 4",
                format!("{ratio} ({} vs {} µs)", opt(c.service, ""), opt(b.cpu_per_request_us.service, "")),
                Some(ratio <= 4.0),
            );
        } else {
            row("service CPU per request", "—", opt(c.service, " µs"), None);
        }
        row(
            "load generator CPU per request",
            "≤ 20 µs",
            format!("{} µs ({} cores)", c.load_generator, o.cpu.load_generator_cores),
            Some(c.load_generator <= 20.0),
        );
        if let (Some(ratio), Some(b)) = (r.ratio_to_baseline, &r.baseline) {
            row(
                "orderflow / baseline (actix-web parse + answer), requests/s",
                "—",
                format!("{ratio} ({} vs {} requests/s)", thousands(o.requests_per_s), thousands(b.requests_per_s)),
                None,
            );
        }
        rebuild_rows(&mut row, &r.rebuild, "mixed run's log");
        row("service peak RSS, mixed run", "—", opt(r.peak_rss_mib, " MiB"), None);
    }
    if let Some(r) = &results.memory {
        let mb = |mib: Option<f64>| mib.map(|m| m * 1024.0 * 1024.0 / 1e6);
        let peak_mb = mb(r.peak_rss_mib);
        row(
            &format!("RSS with {} orders placed", thousands(r.orders_placed as f64)),
            "< 512 MB",
            format!(
                "peak {} MB; {} MB at the last order ({} live actors); {} MB after {} s idle ({} live)",
                opt(peak_mb.map(f64::round), ""),
                opt(mb(r.rss_end_of_placing_mib).map(f64::round), ""),
                opt(r.live_aggregates_end_of_placing, ""),
                opt(mb(r.rss_after_settle_mib).map(f64::round), ""),
                r.settle_s,
                opt(r.live_aggregates_after_settle, "")
            ),
            peak_mb.map(|p| p < 512.0),
        );
        row(
            "place-only throughput while placing them",
            "≥ 40,000 orders/s",
            format!("{} orders/s, p99 {} ms", thousands(r.load.commands_ok_per_s), ms(r.load.p("commands").p99_ms)),
            Some(r.load.commands_ok_per_s >= 40_000.0),
        );
        rebuild_rows(&mut row, &r.rebuild, &format!("{} events", thousands(r.orders_placed as f64)));
    }
    out
}

/// Rebuild speed each view must reach.
fn rebuild_target(view: &str) -> f64 {
    if view == "revenue" { 300_000.0 } else { 200_000.0 }
}

fn rebuild_rows(row: &mut impl FnMut(&str, &str, String, Option<bool>), r: &RebuildReport, what: &str) {
    if !r.available {
        row(&format!("rebuild ({what})"), "—", r.note.clone().unwrap_or_else(|| "not available".into()), None);
        return;
    }
    for v in &r.views {
        let target = rebuild_target(&v.name);
        row(
            &format!("rebuild of the {} view ({what})", v.name),
            &format!("≥ {} events/s", thousands(target)),
            format!(
                "{} events/s ({} events in {} s)",
                thousands(v.events_per_s),
                thousands(v.events as f64),
                v.seconds
            ),
            Some(v.finished && v.events_per_s >= target),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(25_000.0), "25,000");
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(-1000.0), "-1,000");
    }
}
