//! `orderflow-bench`: the load generator behind BENCHMARKS.md.
//!
//! It drives orderflow's HTTP API with `--clients` concurrent clients over a mixed workload (place, pay, ship,
//! cancel, `GET /orders/{id}`, `GET /orders?q=`) and reports throughput, latency percentiles (HDR histograms),
//! answers by status, where the CPU went (the service, the load generator, everything else) and per request,
//! end-to-end projection lag (search view and revenue view), whether the revenue view holds exactly what was
//! paid, rebuild speed and the service's peak RSS. In the same run it drives a baseline server that only parses
//! the JSON and answers, so orderflow shows as a ratio of what HTTP + JSON alone reach on this machine.
//!
//! It is a program of its own, not a subcommand of the service, so that the service carries none of its
//! dependencies. By default it starts the service itself (`orderflow serve` from the same build folder, or
//! `--service-bin`; embedded profile unless `--config` says otherwise; a fresh data folder; port 0) so it knows
//! its pid; `--url` targets a running one instead. Every loop is bounded by a duration or a count, and only
//! loopback addresses are accepted.
//!
//! Scenarios: `mixed` (baseline, then orderflow under the mix, lag, rebuild, RSS), `memory` (place `--orders`
//! orders and watch RSS and live actors), `all` (both, each on a fresh service).
#![forbid(unsafe_code)]

mod baseline;
mod http1;
mod load;
mod observe;
mod rebuild;
mod report;
mod service;
mod stats;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use orderflow::auth::{Authenticator, Role};
use orderflow::config::{AuthSettings, Settings};
use serde::Serialize;

use load::{Observers, Plan, Stop, Target};
use observe::{LagMethod, LagProbes, Monitor, RevenueLedger, RevenueWatcher};
use report::{LoadReport, MemoryReport, MixedReport, Results};
use workload::{DEFAULT_MIX, Mix, Op};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Baseline, then orderflow under the mixed workload: throughput, latency, lag, rebuild, RSS.
    Mixed,
    /// Place `--orders` orders (place only) and follow RSS and live actors.
    Memory,
    /// `mixed`, then `memory`, each on a fresh service.
    All,
}

/// Load-test orderflow's HTTP API: throughput, latency, CPU per request, projection lag, rebuild speed and RSS,
/// with a bare HTTP + JSON server as the baseline. Starts its own service unless given `--url`.
#[derive(Debug, Clone, Parser)]
#[command(name = "orderflow-bench", version)]
pub struct BenchArgs {
    /// A TOML config file for the spawned service (`orderflow --config FILE serve`); with `--url`, where to find
    /// the running service's secret to mint tokens.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The service binary to spawn (default: `orderflow` next to this executable).
    #[arg(long, value_name = "PATH")]
    pub service_bin: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Scenario::Mixed)]
    pub scenario: Scenario,
    /// Concurrent clients (one keep-alive HTTP/1.1 connection each).
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Measured time after the warmup (`30s`, `2m`, `1500ms`). Ignored with `--count`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Measure this many requests instead of a duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Load sent before the measured window opens (not counted).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Open loop at this many requests/s over all clients (latency counted from the intended send time).
    /// Default: closed loop, each client sends its next request when the last one is answered.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Request mix weights.
    #[arg(long, default_value = DEFAULT_MIX)]
    pub mix: Mix,
    /// Orders the memory scenario places.
    #[arg(long, default_value_t = 1_000_000)]
    pub orders: u64,
    /// Memory scenario: how long to keep watching after the last order (actors passivate when idle).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub settle: Duration,
    /// A running service (loopback only) instead of spawning one.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// With `--url`: the service's pid, for RSS and CPU figures.
    #[arg(long)]
    pub pid: Option<u32>,
    /// With `--url`: an admin token (default: the environment's ORDERFLOW_BENCH_TOKEN, else minted from the
    /// configured or the data folder's secret).
    #[arg(long)]
    pub token: Option<String>,
    /// Fraction of acknowledged commands whose search-view lag is probed.
    #[arg(long, default_value_t = 0.01)]
    pub lag_sample: f64,
    #[arg(long, value_enum, default_value_t = LagMethod::LongPoll)]
    pub lag_method: LagMethod,
    /// How often the revenue watcher polls `GET /revenue/daily`, in ms.
    #[arg(long, default_value_t = 20)]
    pub revenue_poll_ms: u64,
    /// Skip the baseline server.
    #[arg(long)]
    pub no_baseline: bool,
    /// Skip the rebuild measurement.
    #[arg(long)]
    pub no_rebuild: bool,
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub rebuild_timeout: Duration,
    /// Threads of the load generator (each runs its share of the clients). One is the default: on a small
    /// machine it leaves the most to the service.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Where spawned services keep their data (a fresh folder inside it; default: the temp folder).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep the spawned services' data folders.
    #[arg(long)]
    pub keep_data: bool,
    /// Run a command over the measured window of the orderflow run (`{pid}` = the service's pid); it gets
    /// SIGINT when the window closes. E.g. `perf stat -e task-clock -p {pid}`. Repeatable.
    #[arg(long, value_name = "CMD")]
    pub attach: Vec<String>,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also print the results as a markdown table (figure, target, measured), as BENCHMARKS.md shows them.
    #[arg(long)]
    pub markdown: bool,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `30s`, `2m`, `1500ms`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number.parse().map_err(|_| format!("`{s}` is not a duration (30s, 2m, 1500ms)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown unit `{other}` (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let mut args = BenchArgs::parse();
    if args.token.is_none() {
        args.token = std::env::var("ORDERFLOW_BENCH_TOKEN").ok().filter(|t| !t.is_empty());
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orderflow-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the bench: the observers and the scenario's steps on this thread, the load on its own threads.
fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.lag_sample) {
        bail!("--lag-sample is a fraction from 0 to 1");
    }
    let settings = Settings::load(args.config.as_deref()).context("the configuration")?;
    let service_bin = match &args.url {
        Some(url) => {
            service::check_loopback(url)?;
            None
        }
        None => Some(service::service_bin(args.service_bin.as_deref())?),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the observers' runtime")?;
    let results = runtime.block_on(run_all(&args, service_bin.as_deref(), &settings))?;
    let text = report::human(&results);
    println!("{text}");
    if args.markdown {
        println!("{}", report::markdown(&results));
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&results)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: results written to {}", path.display());
    }
    Ok(())
}

async fn run_all(args: &BenchArgs, service_bin: Option<&Path>, settings: &Settings) -> anyhow::Result<Results> {
    let mut results = Results::new(args, service_bin);
    if matches!(args.scenario, Scenario::Mixed | Scenario::All) {
        results.mixed = Some(mixed(args, service_bin, settings).await?);
    }
    if matches!(args.scenario, Scenario::Memory | Scenario::All) {
        results.memory = Some(memory(args, service_bin, settings).await?);
    }
    Ok(results)
}

/// The observers' HTTP client (lag probes, revenue watcher, monitor, rebuild): its own pooled connections.
fn http_client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// The service under test: spawned (and stopped on drop) or at `--url`.
struct Service {
    target: Target,
    spawned: Option<service::Spawned>,
}

impl Service {
    /// `service_bin`: spawn this binary; `None`: the service at `--url`.
    fn open(args: &BenchArgs, service_bin: Option<&Path>, settings: &Settings, tag: &str) -> anyhow::Result<Self> {
        match (service_bin, &args.url) {
            (_, Some(url)) => {
                let base = service::check_loopback(url)?;
                let secret = url_mode_secret(settings);
                let token = match &args.token {
                    Some(token) => Some(token.clone()),
                    None => secret.as_deref().map(|secret| mint(&settings.auth, secret)).transpose()?,
                };
                let customers = match &secret {
                    Some(secret) => customer_tokens(&settings.auth, secret)?,
                    None => Vec::new(),
                };
                Ok(Self { target: Target::new(base, token, customers, args.pid)?, spawned: None })
            }
            (Some(bin), None) => {
                let secret = service::random_secret();
                let dir = service::fresh_data_dir(args.data_dir.as_deref(), tag);
                let spawned = service::Spawned::start(bin, args.config.as_deref(), dir, &secret, args.keep_data)?;
                let auth = AuthSettings { jwt_secret: secret.clone(), ..AuthSettings::default() };
                let token = mint(&auth, &secret)?;
                let customers = customer_tokens(&auth, &secret)?;
                eprintln!("bench: started {} (pid {}) at {}", bin.display(), spawned.pid, spawned.url);
                let target = Target::new(spawned.url.clone(), Some(token), customers, Some(spawned.pid))?;
                Ok(Self { target, spawned: Some(spawned) })
            }
            (None, None) => bail!("no service: give --url or a service binary"),
        }
    }

    fn stop(mut self) {
        if let Some(mut spawned) = self.spawned.take() {
            spawned.stop();
        }
    }
}

/// The configured secret, or the data folder's generated one if it exists (never creates one).
fn url_mode_secret(settings: &Settings) -> Option<String> {
    if !settings.auth.jwt_secret.is_empty() {
        return Some(settings.auth.jwt_secret.clone());
    }
    let secret = std::fs::read_to_string(settings.data_dir.join("jwt_secret")).ok()?;
    Some(secret.trim().to_owned()).filter(|s| !s.is_empty())
}

fn mint(auth: &AuthSettings, secret: &str) -> anyhow::Result<String> {
    Ok(Authenticator::new(auth, secret).mint("bench", Role::Admin, 24 * 3600)?)
}

/// A token per workload customer, `cust-0` … (their `sub` is their customer id).
fn customer_tokens(auth: &AuthSettings, secret: &str) -> anyhow::Result<Vec<String>> {
    let authenticator = Authenticator::new(auth, secret);
    (0..workload::CUSTOMERS).map(|i| Ok(authenticator.mint(&format!("cust-{i}"), Role::Customer, 24 * 3600)?)).collect()
}

/// Waits until `/health/ready` answers 200 (bounded).
async fn wait_ready(http: &reqwest::Client, target: &Target) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(r) = target.get(http, "/health/ready").send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{} did not become ready within 120 s", target.base)
}

fn plan(args: &BenchArgs, mix: Mix, warmup: Duration, stop: Stop) -> Plan {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    Plan {
        clients: args.clients,
        warmup,
        stop,
        rate: args.rate,
        mix,
        threads: args.threads.max(1),
        run_id: format!("{:x}", (nanos as u64) & 0xff_ffff_ffff),
        seed: args.seed,
    }
}

fn stop_rule(args: &BenchArgs) -> Stop {
    match args.count {
        Some(n) => Stop::Requests(n),
        None => Stop::After(args.duration),
    }
}

async fn mixed(args: &BenchArgs, service_bin: Option<&Path>, settings: &Settings) -> anyhow::Result<MixedReport> {
    let side = http_client(32)?;

    let baseline = if args.no_baseline {
        None
    } else {
        eprintln!("bench: baseline (parse JSON and answer), {} clients …", args.clients);
        let server = baseline::Baseline::start()?;
        let target = Target::new(server.url.clone(), None, Vec::new(), None)?;
        let plan = plan(args, args.mix.clone(), args.warmup, stop_rule(args));
        let outcome = load::run(&target, &plan, &Observers::default()).await;
        server.stop().await;
        let mut outcome = outcome?;
        // The baseline server runs in this process: its threads are the "service".
        outcome.cpu.count_in_process_server(&baseline::THREAD_PREFIXES);
        Some(LoadReport::of(&outcome))
    };

    let service = Service::open(args, service_bin, settings, "mixed")?;
    let target = service.target.clone();
    let result = measure_mixed(args, &target, &side).await;
    service.stop();
    let mut report = result?;
    if let Some(baseline) = baseline {
        report.ratio_to_baseline =
            Some(load::round2(report.orderflow.requests_per_s / baseline.requests_per_s.max(1e-9)));
        report.service_cpu_ratio_to_baseline =
            match (report.orderflow.cpu_per_request_us.service, baseline.cpu_per_request_us.service) {
                (Some(o), Some(b)) if b > 0.0 => Some(load::round2(o / b)),
                _ => None,
            };
        report.baseline = Some(baseline);
    }
    Ok(report)
}

fn outcome_placed(outcome: &load::LoadOutcome) -> u64 {
    outcome.stats.op(Op::Place).statuses.get(&201).copied().unwrap_or(0)
}

/// `estimatedTotal` of `GET /orders` with no filter: the documents in the search view.
async fn search_total(http: &reqwest::Client, target: &Target) -> Option<u64> {
    let response = target.get(http, "/orders?limit=1").send().await.ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    body["estimatedTotal"].as_u64()
}

fn mib(kib: u64) -> f64 {
    load::round2(kib as f64 / 1024.0)
}

async fn memory(args: &BenchArgs, service_bin: Option<&Path>, settings: &Settings) -> anyhow::Result<MemoryReport> {
    let side = http_client(8)?;
    let service = Service::open(args, service_bin, settings, "memory")?;
    let target = service.target.clone();
    let result = measure_memory(args, &target, &side).await;
    service.stop();
    result
}

/// The orderflow half of the mixed scenario: load with lag probes and revenue watcher, drain, rebuild.
async fn measure_mixed(args: &BenchArgs, target: &Target, side: &reqwest::Client) -> anyhow::Result<MixedReport> {
    wait_ready(side, target).await?;
    let load_average_before = service::load_average();
    let ledger = std::sync::Arc::new(RevenueLedger::default());
    let watcher =
        RevenueWatcher::start(side.clone(), target.clone(), Duration::from_millis(args.revenue_poll_ms.max(1))).await;
    let monitor = Monitor::start(side.clone(), target.clone(), Duration::from_secs(1));
    let probes =
        (args.lag_sample > 0.0).then(|| LagProbes::new(args.lag_sample, args.lag_method, side.clone(), target.clone()));
    let observers = Observers { lag: probes.clone(), revenue: Some(ledger.clone()), attach: args.attach.clone() };
    let plan = plan(args, args.mix.clone(), args.warmup, stop_rule(args));
    eprintln!(
        "bench: orderflow, {} clients, {:?} warmup, {} …",
        args.clients,
        args.warmup,
        match plan.stop {
            Stop::After(d) => format!("{d:?} measured"),
            Stop::Requests(n) => format!("{n} requests measured"),
        }
    );
    let outcome = load::run(target, &plan, &observers).await?;
    let load_stopped = Instant::now();

    // Drain: how long until the revenue view holds every acknowledged payment.
    let expected = ledger.total();
    let drain_deadline = load_stopped + Duration::from_secs(120);
    let mut revenue_caught_up_ms = None;
    while Instant::now() < drain_deadline {
        if watcher.latest().is_some_and(|g| g >= expected) {
            revenue_caught_up_ms = Some(load_stopped.elapsed().as_secs_f64() * 1000.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let search_lag = match &probes {
        Some(p) => p.finish().await,
        None => Default::default(),
    };
    let revenue_seen = watcher.latest();
    let revenue_errors = watcher.errors.load(std::sync::atomic::Ordering::Relaxed);
    let polls = watcher.stop().await;
    let acks = ledger.snapshot();
    let (lags, not_visible) = observe::revenue_lags(&acks, &polls, outcome.measure_start, outcome.measure_end);
    let revenue_lag = observe::RevenueLagReport {
        poll_ms: args.revenue_poll_ms,
        payments: lags.len() + not_visible,
        not_visible,
        lag: stats::Percentiles::of(&lags),
    };
    let placed_ok = outcome_placed(&outcome);
    let search_total = search_total(side, target).await;
    let samples = monitor.stop().await;
    let rebuild = if args.no_rebuild {
        rebuild::RebuildReport { available: false, note: Some("skipped (--no-rebuild)".into()), views: vec![] }
    } else {
        eprintln!("bench: rebuilding the views …");
        rebuild::run(side, target, args.rebuild_timeout).await
    };
    let memory = target.pid.and_then(service::memory);
    Ok(MixedReport {
        load_average_before,
        orderflow: LoadReport::of(&outcome),
        baseline: None,
        ratio_to_baseline: None,
        service_cpu_ratio_to_baseline: None,
        search_lag,
        revenue_lag,
        lag_gauge_max_s: [
            ("search", samples.iter().filter_map(|s| s.lag_search_s).fold(0.0, f64::max)),
            ("revenue", samples.iter().filter_map(|s| s.lag_revenue_s).fold(0.0, f64::max)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), (v * 1000.0).round() / 1000.0))
        .collect(),
        drain: report::Drain {
            revenue_expected: expected,
            revenue_seen,
            revenue_exact: revenue_seen == Some(expected),
            revenue_caught_up_ms: revenue_caught_up_ms.map(load::round2),
            revenue_poll_errors: revenue_errors,
            orders_placed_in_window: placed_ok,
            search_estimated_total: search_total,
        },
        rebuild,
        peak_rss_mib: memory.map(|m| mib(m.hwm_kib)),
        end_rss_mib: memory.map(|m| mib(m.rss_kib)),
        samples,
    })
}

/// Places `--orders` orders and follows RSS and live actors, then rebuilds over the log.
async fn measure_memory(args: &BenchArgs, target: &Target, side: &reqwest::Client) -> anyhow::Result<MemoryReport> {
    wait_ready(side, target).await?;
    let load_average_before = service::load_average();
    let started = Instant::now();
    let monitor = Monitor::start(side.clone(), target.clone(), Duration::from_secs(1));
    let plan = plan(args, Mix::place_only(), Duration::ZERO, Stop::Requests(args.orders));
    eprintln!("bench: memory, placing {} orders with {} clients …", args.orders, args.clients);
    let outcome = load::run(target, &plan, &Observers::default()).await?;
    let placed = outcome_placed(&outcome);
    let at_end = observe::sample(side, target, started).await;
    eprintln!("bench: placed {placed}; watching for {:?} while idle actors passivate …", args.settle);
    tokio::time::sleep(args.settle).await;
    let after_settle = observe::sample(side, target, started).await;
    let samples = monitor.stop().await;
    let peak = target.pid.and_then(service::memory).map(|m| mib(m.hwm_kib));
    let rebuild = if args.no_rebuild {
        rebuild::RebuildReport { available: false, note: Some("skipped (--no-rebuild)".into()), views: vec![] }
    } else {
        eprintln!("bench: rebuilding the views over {placed} events …");
        rebuild::run(side, target, args.rebuild_timeout).await
    };
    Ok(MemoryReport {
        load_average_before,
        orders_placed: placed,
        load: LoadReport::of(&outcome),
        rss_end_of_placing_mib: at_end.rss_mib,
        live_aggregates_end_of_placing: at_end.live_aggregates,
        rss_after_settle_mib: after_settle.rss_mib,
        live_aggregates_after_settle: after_settle.live_aggregates,
        settle_s: args.settle.as_secs_f64(),
        peak_rss_mib: peak,
        rebuild,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }
}
