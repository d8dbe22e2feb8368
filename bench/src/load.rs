//! The load engine: `clients` simulated clients, each one HTTP/1.1 keep-alive connection (`http1`), each
//! sending its next request when the last one is answered (closed loop), or at fixed intended times (`rate`,
//! open loop: latency is then counted from the intended send time, so a slow answer is not hidden by the
//! requests it delayed). Only requests *sent* inside the measured window count; the warmup before it opens the
//! connections and fills the actors and SQLite's caches.
//!
//! The clients run on `threads` threads named `bench-load`, each with a single-threaded tokio runtime (a task
//! per client, no work stealing, no cross-thread wake-ups), so the CPU split can tell the load generator's own
//! cost apart from the observers', which stay on the main runtime with reqwest: they send few requests.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{self, HeaderValue};
use serde::Serialize;

use crate::http1::{Conn, Method};
use crate::observe::{LagProbes, RevenueLedger};
use crate::service;
use crate::stats::{LoadStats, record};
use crate::workload::{ClientState, Mix, Op};

/// The name of the load generator's threads (the CPU split counts them apart).
pub const LOAD_THREAD: &str = "bench-load";
/// A request with no answer after this long counts as a transport error (and its connection is reopened).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// When the measured window ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    After(Duration),
    Requests(u64),
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    pub clients: usize,
    pub warmup: Duration,
    pub stop: Stop,
    /// Open loop: requests per second over all clients.
    pub rate: Option<f64>,
    pub mix: Mix,
    /// Threads the clients run on.
    pub threads: usize,
    /// Tells this run's order ids apart from other runs' on the same service.
    pub run_id: String,
    pub seed: u64,
}

/// Where to send it.
#[derive(Clone)]
pub struct Target {
    /// `http://host:port`.
    pub base: String,
    /// Where the load connects, and the `Host` it names.
    pub addr: SocketAddr,
    pub host: String,
    /// An admin token: observers, probes, rebuilds.
    pub token: Option<String>,
    auth: Option<HeaderValue>,
    /// The workload's tokens, one per customer `cust-<i>` (see `workload::CUSTOMERS`): clients act as the
    /// customers they are, as real ones would (an admin's command on a customer's order is audited). Empty:
    /// the admin token (`--url` with `--token` and no secret to mint them).
    pub customers: Arc<Vec<String>>,
    pub pid: Option<u32>,
}

impl Target {
    /// `base` is a loopback `http://host:port` URL (see `service::check_loopback`).
    pub fn new(base: String, token: Option<String>, customers: Vec<String>, pid: Option<u32>) -> anyhow::Result<Self> {
        let (addr, host) = service::socket_addr(&base)?;
        let auth = token
            .as_deref()
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| anyhow::anyhow!("the token is not a valid header value"))?;
        Ok(Self { base, addr, host, token, auth, customers: Arc::new(customers), pid })
    }

    pub fn get(&self, http: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        self.with_auth(http.get(format!("{}{path}", self.base)))
    }

    pub fn post(&self, http: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        self.with_auth(http.post(format!("{}{path}", self.base)))
    }

    fn with_auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(auth) => rb.header(header::AUTHORIZATION, auth.clone()),
            None => rb,
        }
    }

    /// The bearer token of workload client `client`: its customer's token, else the admin one.
    fn client_token(&self, client: usize) -> Option<&str> {
        match self.customers.len() {
            0 => self.token.as_deref(),
            n => self.customers.get(crate::workload::customer_of(client) % n).map(String::as_str),
        }
    }
}

/// What watches the run besides the clients.
#[derive(Clone, Default)]
pub struct Observers {
    pub lag: Option<Arc<LagProbes>>,
    pub revenue: Option<Arc<RevenueLedger>>,
    /// Commands started (`{pid}` = the service's pid) when the window opens, sent SIGINT when it closes.
    pub attach: Vec<String>,
}

/// CPU used during the measured window, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuSplit {
    /// The service process (all its threads); `null` without a pid.
    pub service_cores: Option<f64>,
    /// This bench process: load generator, observers, and in the baseline run the baseline server too.
    pub bench_cores: f64,
    /// The load generator alone: this process's `bench-load` threads.
    pub load_generator_cores: f64,
    /// Interrupts and softirqs (the loopback TCP stack, mostly), charged to no process.
    pub irq_cores: f64,
    /// Time the hypervisor took from this machine's virtual CPUs.
    pub steal_cores: f64,
    /// Every other process on the machine (other users, kernel threads).
    pub other_cores: f64,
    /// The busiest of those other processes (name, cores), to tell whose load it was.
    pub other_top: Vec<(String, f64)>,
    /// The whole machine, busy.
    pub machine_busy_cores: f64,
    pub machine_cores: usize,
    /// The service's CPU by thread name (cores): HTTP workers, the event-store writer, the blocking pool that
    /// runs SQLite reads and view writes, ….
    pub service_threads: BTreeMap<String, f64>,
    /// This bench process's CPU by thread name: `bench-load` is the load generator, `orderflow-bench` (the
    /// main thread) the lag probes, revenue watcher and monitor; in the baseline run the `actix-rt…` threads
    /// are the baseline server.
    pub bench_threads: BTreeMap<String, f64>,
}

#[derive(Debug, Clone)]
struct CpuSnapshot {
    at: Instant,
    pid: Option<u32>,
    service: Option<u64>,
    bench: u64,
    machine: service::MachineTicks,
    threads: BTreeMap<String, u64>,
    own_threads: BTreeMap<String, u64>,
    processes: BTreeMap<u32, (String, u64)>,
}

impl CpuSnapshot {
    fn take(pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            pid,
            service: pid.and_then(|pid| service::process_ticks(Some(pid))),
            bench: service::process_ticks(None).unwrap_or(0),
            machine: service::machine_ticks().unwrap_or_default(),
            threads: pid.map(service::thread_ticks).unwrap_or_default(),
            own_threads: service::thread_ticks(std::process::id()),
            processes: service::all_process_ticks(),
        }
    }

    fn split(&self, end: &CpuSnapshot) -> CpuSplit {
        let hz = service::clock_ticks();
        let secs = end.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let cores = |ticks: u64| ticks as f64 / hz / secs;
        let service = match (self.service, end.service) {
            (Some(a), Some(b)) => Some(cores(b.saturating_sub(a))),
            _ => None,
        };
        let bench = cores(end.bench.saturating_sub(self.bench));
        let busy = cores(end.machine.busy.saturating_sub(self.machine.busy));
        let irq = cores(end.machine.irq.saturating_sub(self.machine.irq));
        let steal = cores(end.machine.steal.saturating_sub(self.machine.steal));
        let me = std::process::id();
        let mut others: BTreeMap<String, f64> = BTreeMap::new();
        for (p, (name, t)) in &end.processes {
            if Some(*p) == self.pid || *p == me {
                continue;
            }
            let before = self.processes.get(p).map_or(0, |(_, t)| *t);
            *others.entry(name.clone()).or_default() += cores(t.saturating_sub(before));
        }
        let mut other_top: Vec<(String, f64)> =
            others.into_iter().map(|(n, c)| (n, round2(c))).filter(|(_, c)| *c >= 0.01).collect();
        other_top.sort_by(|a, b| b.1.total_cmp(&a.1));
        other_top.truncate(5);
        let bench_threads = by_thread(&self.own_threads, &end.own_threads, cores);
        CpuSplit {
            other_top,
            load_generator_cores: bench_threads.get(LOAD_THREAD).copied().unwrap_or(0.0),
            service_cores: service.map(round2),
            bench_cores: round2(bench),
            irq_cores: round2(irq),
            steal_cores: round2(steal),
            other_cores: round2((busy - bench - service.unwrap_or(0.0) - irq - steal).max(0.0)),
            machine_busy_cores: round2(busy),
            machine_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            service_threads: by_thread(&self.threads, &end.threads, cores),
            bench_threads,
        }
    }
}

impl CpuSplit {
    /// Counts this process's threads whose names start with one of `prefixes` as the service: the baseline
    /// server, which runs inside the bench.
    pub fn count_in_process_server(&mut self, prefixes: &[&str]) {
        let server: f64 = self
            .bench_threads
            .iter()
            .filter(|(name, _)| prefixes.iter().any(|p| name.starts_with(p)))
            .map(|(_, c)| c)
            .sum();
        self.service_cores = Some(round2(server));
    }
}

/// Cores used per thread group between two readings.
fn by_thread(
    start: &BTreeMap<String, u64>,
    end: &BTreeMap<String, u64>,
    cores: impl Fn(u64) -> f64,
) -> BTreeMap<String, f64> {
    end.iter()
        .map(|(name, t)| (name.clone(), round2(cores(t.saturating_sub(*start.get(name).unwrap_or(&0))))))
        .filter(|(_, c)| *c > 0.0)
        .collect()
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The result of one load run.
pub struct LoadOutcome {
    pub stats: LoadStats,
    /// Length of the measured window.
    pub window: Duration,
    pub cpu: CpuSplit,
    pub measure_start: Instant,
    pub measure_end: Instant,
    /// Load average when the window opened.
    pub load_average: String,
}

struct Shared {
    target: Target,
    plan: Plan,
    observers: Observers,
    start: Instant,
    measure_start: Instant,
    /// Measured requests handed out (count mode).
    issued: AtomicU64,
    stopped: AtomicBool,
}

/// Runs the plan against the target and returns what the clients counted.
pub async fn run(target: &Target, plan: &Plan, observers: &Observers) -> anyhow::Result<LoadOutcome> {
    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let shared = Arc::new(Shared {
        target: target.clone(),
        plan: plan.clone(),
        observers: observers.clone(),
        start,
        measure_start,
        issued: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
    });
    // The window opens: CPU counters, load average and attached tools start from here.
    let opener = tokio::spawn({
        let attach = observers.attach.clone();
        let pid = target.pid;
        async move {
            tokio::time::sleep_until(measure_start.into()).await;
            let load = service::load_average();
            let cpu = CpuSnapshot::take(pid);
            let tools: Vec<Child> = attach.iter().filter_map(|cmd| start_tool(cmd, pid)).collect();
            (cpu, load, tools)
        }
    });
    let threads = plan.threads.clamp(1, plan.clients.max(1));
    let mut results = Vec::with_capacity(threads);
    // Each load thread waits for `release` after handing in its counts, so that its CPU time is still in
    // `/proc` when the window's last reading is taken.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Arc::new(std::sync::Mutex::new(released));
    for t in 0..threads {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = Arc::clone(&shared);
        let released = Arc::clone(&released);
        std::thread::Builder::new().name(LOAD_THREAD.into()).spawn(move || {
            let _ = tx.send(load_thread(t, threads, &shared));
            let _ = released.lock().map(|r| r.recv());
        })?;
        results.push(rx);
    }
    let mut stats = LoadStats::default();
    let mut last_done = measure_start;
    let mut failed = None;
    for rx in results {
        match rx.await {
            Ok(Ok((thread_stats, done))) => {
                stats.merge(&thread_stats);
                last_done = last_done.max(done);
            }
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(anyhow::anyhow!("a load thread panicked")),
        }
    }
    let end_cpu = CpuSnapshot::take(target.pid);
    drop(release);
    if let Some(e) = failed {
        opener.abort();
        return Err(e);
    }
    let (start_cpu, load_average, tools) = match opener.await {
        Ok(opened) => opened,
        Err(_) => (end_cpu.clone(), service::load_average(), Vec::new()),
    };
    for tool in tools {
        stop_tool(tool).await;
    }
    let measure_end = match plan.stop {
        Stop::After(d) => measure_start + d,
        Stop::Requests(_) => last_done,
    };
    Ok(LoadOutcome {
        stats,
        window: measure_end.saturating_duration_since(measure_start),
        cpu: start_cpu.split(&end_cpu),
        measure_start,
        measure_end,
        load_average,
    })
}

/// One load thread: clients `t`, `t + threads`, … as tasks on a single-threaded runtime, counting into one
/// `LoadStats` (one set of histograms per thread, not per client: they are large, and recording stays in cache).
fn load_thread(t: usize, threads: usize, shared: &Arc<Shared>) -> anyhow::Result<(LoadStats, Instant)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stats = Rc::new(RefCell::new(LoadStats::default()));
    let last_done = tokio::task::LocalSet::new().block_on(&runtime, async {
        let clients: Vec<_> = (t..shared.plan.clients)
            .step_by(threads)
            .map(|i| tokio::task::spawn_local(client(i, Arc::clone(shared), Rc::clone(&stats))))
            .collect();
        let mut last_done = shared.measure_start;
        for handle in clients {
            if let Ok(done) = handle.await {
                last_done = last_done.max(done);
            }
        }
        last_done
    });
    Ok((stats.take(), last_done))
}

/// One client: counts into `stats`; returns when its last measured request completed.
async fn client(index: usize, shared: Arc<Shared>, stats: Rc<RefCell<LoadStats>>) -> Instant {
    let plan = &shared.plan;
    let mut state = ClientState::new(&plan.run_id, index, plan.seed);
    let mut conn = Conn::new(shared.target.addr, &shared.target.host, shared.target.client_token(index));
    let mut last_done = shared.measure_start;
    let interval = plan.rate.map(|rate| Duration::from_secs_f64(plan.clients as f64 / rate.max(1e-3)));
    // Open loop: clients' schedules are spread evenly over one interval.
    let mut next_at =
        shared.start + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(index as f64 / plan.clients as f64));
    let end = match plan.stop {
        Stop::After(d) => Some(shared.measure_start + d),
        Stop::Requests(_) => None,
    };
    loop {
        let intended = match interval {
            Some(iv) => {
                let at = next_at;
                next_at += iv;
                if end.is_some_and(|end| at >= end) {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        let measuring = intended >= shared.measure_start;
        if end.is_some_and(|end| intended >= end) || shared.stopped.load(Ordering::Relaxed) {
            break;
        }
        if let Stop::Requests(n) = plan.stop
            && measuring
            && shared.issued.fetch_add(1, Ordering::Relaxed) >= n
        {
            shared.stopped.store(true, Ordering::Relaxed);
            break;
        }
        let request = state.next_request(&plan.mix);
        let op = request.op;
        let sent = match &request.body {
            Some(body) => conn.send(Method::Post, &request.path, Some(body.as_bytes())),
            None => conn.send(Method::Get, &request.path, None),
        };
        let (status, version) = match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
            Ok(Ok(answer)) => (Some(answer.status), answer.version),
            Ok(Err(_)) => (None, None),
            Err(_) => {
                conn.reset();
                (None, None)
            }
        };
        let done = Instant::now();
        let ok = status == Some(op.expected_status());
        if ok
            && op == Op::Pay
            && let (Some(ledger), Some(order)) = (&shared.observers.revenue, &request.order)
        {
            ledger.paid(order.total);
        }
        if measuring {
            let mut stats = stats.borrow_mut();
            let s = stats.op_mut(op);
            match status {
                Some(code) => {
                    *s.statuses.entry(code).or_default() += 1;
                    record(&mut s.latency, done.duration_since(intended).as_micros() as u64);
                }
                None => s.transport_errors += 1,
            }
            stats.tick(done.duration_since(shared.measure_start).as_secs() as usize, op.is_command());
            if end.is_none_or(|end| done < end) {
                stats.completed_in_window += 1;
            }
            last_done = done;
            if ok
                && op.is_command()
                && let (Some(probes), Some(order), Some(version)) = (&shared.observers.lag, &request.order, version)
                && state.rng.chance(probes.sample)
            {
                probes.submit(order.id.clone(), version, done);
            }
        }
        state.settle(request, status, version);
    }
    last_done
}

/// The version in a strong ETag `"N"` (the observers' answers).
pub fn etag_version(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let value = headers.get(header::ETAG)?.to_str().ok()?;
    value.trim().strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// Starts an attached tool (`{pid}` replaced by the service's pid), e.g. `perf stat -p {pid}`.
fn start_tool(cmd: &str, pid: Option<u32>) -> Option<Child> {
    let cmd = match pid {
        Some(pid) => cmd.replace("{pid}", &pid.to_string()),
        None if cmd.contains("{pid}") => {
            eprintln!("bench: not attaching `{cmd}`: the service's pid is unknown (--pid)");
            return None;
        }
        None => cmd.to_owned(),
    };
    match Command::new("sh").arg("-c").arg(format!("exec {cmd}")).spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!("bench: could not start `{cmd}`: {e}");
            None
        }
    }
}

/// SIGINT (perf and friends then write their report), SIGKILL after 60 s.
async fn stop_tool(mut child: Child) {
    let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    #[test]
    fn reads_strong_etags_only() {
        let mut h = HeaderMap::new();
        assert_eq!(etag_version(&h), None);
        h.insert(header::ETAG, HeaderValue::from_static("\"12\""));
        assert_eq!(etag_version(&h), Some(12));
        h.insert(header::ETAG, HeaderValue::from_static("W/\"12\""));
        assert_eq!(etag_version(&h), None);
    }
}
