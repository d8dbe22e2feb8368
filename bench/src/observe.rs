//! Watching the read side while the load runs.
//!
//! - **Search view lag**, per command: a sampled fraction of acknowledged commands gets a probe that asks
//!   `GET /orders/{id}?minVersion=N` (the service answers from the view as soon as it reaches N, or after its
//!   wait from the write model with `X-Consistency: strong`; then the probe asks again) or, with
//!   `--lag-method poll`, polls `GET /orders/{id}` every 5 ms. Lag = view shows version ≥ N − command acked.
//! - **Revenue view lag**, in aggregate: every acknowledged payment adds its amount to a running sum (with the
//!   time of its ack), and a watcher polls `GET /revenue/daily` for the gross revenue. A payment's lag is the
//!   time until the first poll whose gross reaches the running sum at that payment's ack: i.e. until the view
//!   holds *every* payment acknowledged so far. (A payment committed but not yet acknowledged can make this
//!   look up to one response-time early; the poll period makes it look up to one period late.)
//! - **Monitor**: once a second, the service's RSS (`/proc/<pid>/status`) and, from `/metrics`,
//!   `orderflow_live_aggregates` and `orderflow_projection_lag_seconds`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::load::{Target, etag_version, round2};
use crate::service;
use crate::stats::{Percentiles, histogram, record};

/// How long a probe looks for its version before counting it as not visible.
const PROBE_DEADLINE: Duration = Duration::from_secs(30);
/// Probes in flight at once; a command sampled while all are busy is counted as skipped.
const MAX_PROBES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LagMethod {
    /// `GET /orders/{id}?minVersion=N`: the service answers when its view reaches N (one request per probe).
    LongPoll,
    /// `GET /orders/{id}` every 5 ms until the ETag reaches N.
    Poll,
}

#[derive(Debug, Default)]
struct ProbeCounts {
    latency: Option<Histogram<u64>>,
    visible: u64,
    not_visible: u64,
    errors: u64,
    skipped: u64,
}

/// The search-view lag probes.
pub struct LagProbes {
    pub sample: f64,
    method: LagMethod,
    http: reqwest::Client,
    target: Target,
    /// The observers' runtime: `submit` is called from the load threads, the probes run here.
    runtime: tokio::runtime::Handle,
    permits: Arc<Semaphore>,
    counts: Arc<Mutex<ProbeCounts>>,
}

/// What the probes saw.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LagReport {
    pub method: Option<LagMethod>,
    /// Probes that saw their version in the view.
    pub visible: u64,
    /// Probes whose version did not show within 30 s.
    pub not_visible: u64,
    /// Failed probe requests (each probe retries until its deadline).
    pub errors: u64,
    /// Sampled commands not probed because `MAX_PROBES` were in flight.
    pub skipped: u64,
    pub lag: Percentiles,
}

impl LagProbes {
    /// Call on the observers' runtime: the probes run on it.
    pub fn new(sample: f64, method: LagMethod, http: reqwest::Client, target: Target) -> Arc<Self> {
        Arc::new(Self {
            sample,
            method,
            http,
            target,
            runtime: tokio::runtime::Handle::current(),
            permits: Arc::new(Semaphore::new(MAX_PROBES)),
            counts: Arc::new(Mutex::new(ProbeCounts { latency: Some(histogram()), ..Default::default() })),
        })
    }

    /// Watches for `order_id` at `version` in the view, acknowledged at `acked`.
    pub fn submit(&self, order_id: String, version: u64, acked: Instant) {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            lock(&self.counts).skipped += 1;
            return;
        };
        let (http, target, counts, method) =
            (self.http.clone(), self.target.clone(), Arc::clone(&self.counts), self.method);
        self.runtime.spawn(async move {
            let (seen, errors) = probe(&http, &target, method, &order_id, version, acked).await;
            let mut c = lock(&counts);
            c.errors += errors;
            match seen {
                Some(at) => {
                    c.visible += 1;
                    if let Some(h) = c.latency.as_mut() {
                        record(h, at.duration_since(acked).as_micros() as u64);
                    }
                }
                None => c.not_visible += 1,
            }
            drop(permit);
        });
    }

    /// Waits (at most the probe deadline and a bit) for the probes in flight, then reports.
    pub async fn finish(&self) -> LagReport {
        let wait = self.permits.acquire_many(MAX_PROBES as u32);
        let _ = tokio::time::timeout(PROBE_DEADLINE + Duration::from_secs(5), wait).await;
        let c = lock(&self.counts);
        LagReport {
            method: Some(self.method),
            visible: c.visible,
            not_visible: c.not_visible,
            errors: c.errors,
            skipped: c.skipped,
            lag: c.latency.as_ref().map(Percentiles::of).unwrap_or_default(),
        }
    }
}

/// Looks until the view shows `version`: when it did, and how many requests failed on the way.
async fn probe(
    http: &reqwest::Client,
    target: &Target,
    method: LagMethod,
    id: &str,
    version: u64,
    acked: Instant,
) -> (Option<Instant>, u64) {
    let deadline = acked + PROBE_DEADLINE;
    let mut errors = 0;
    let path = match method {
        LagMethod::LongPoll => format!("/orders/{id}?minVersion={version}"),
        LagMethod::Poll => format!("/orders/{id}"),
    };
    while Instant::now() < deadline {
        match target.get(http, &path).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let seen = etag_version(response.headers()).unwrap_or(0);
                let from_view = response.headers().get("x-consistency").is_none_or(|v| v.as_bytes() != b"strong");
                let body = response.bytes().await;
                let now = Instant::now();
                match status {
                    200 if seen >= version && from_view && body.is_ok() => return (Some(now), errors),
                    200 | 404 => {}
                    _ => errors += 1,
                }
            }
            Err(_) => errors += 1,
        }
        if method == LagMethod::Poll || errors > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    (None, errors)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every acknowledged payment: (ack time, running sum of amounts acknowledged up to it).
#[derive(Default)]
pub struct RevenueLedger {
    acks: Mutex<Vec<(Instant, u64)>>,
}

impl RevenueLedger {
    pub fn paid(&self, amount: u64) {
        let mut acks = lock(&self.acks);
        // Time taken under the lock: both columns grow together.
        let sum = acks.last().map_or(0, |(_, s)| *s) + amount;
        acks.push((Instant::now(), sum));
    }

    /// Every (ack time, running sum) so far.
    pub fn snapshot(&self) -> Vec<(Instant, u64)> {
        lock(&self.acks).clone()
    }

    pub fn total(&self) -> u64 {
        lock(&self.acks).last().map_or(0, |(_, s)| *s)
    }
}

/// Polls the revenue view's gross total (all currencies, yesterday to tomorrow, UTC).
pub struct RevenueWatcher {
    stop: Arc<AtomicBool>,
    polls: Arc<Mutex<Vec<(Instant, u64)>>>,
    task: tokio::task::JoinHandle<()>,
    pub errors: Arc<AtomicU64>,
}

/// The gross revenue the view holds now, over every currency, yesterday through tomorrow (UTC).
pub async fn gross_revenue(http: &reqwest::Client, target: &Target) -> Option<u64> {
    let today = Utc::now().date_naive();
    let from = today.checked_sub_days(Days::new(1))?;
    let to = today.checked_add_days(Days::new(1))?;
    let response = target.get(http, &format!("/revenue/daily?from={from}&to={to}")).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: serde_json::Value = response.json().await.ok()?;
    Some(body["days"].as_array()?.iter().filter_map(|d| d["grossRevenue"].as_u64()).sum())
}

impl RevenueWatcher {
    /// Starts polling; what the view holds already (a reused service) is subtracted from every poll.
    pub async fn start(http: reqwest::Client, target: Target, every: Duration) -> Self {
        let initial = gross_revenue(&http, &target).await.unwrap_or(0);
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, polls, errors) = (Arc::clone(&stop), Arc::clone(&polls), Arc::clone(&errors));
            async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    match gross_revenue(&http, &target).await {
                        Some(gross) => lock(&polls).push((Instant::now(), gross.saturating_sub(initial))),
                        None => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        Self { stop, polls, task, errors }
    }

    /// The latest gross revenue seen (minus what was there before).
    pub fn latest(&self) -> Option<u64> {
        lock(&self.polls).last().map(|(_, g)| *g)
    }

    pub async fn stop(self) -> Vec<(Instant, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        std::mem::take(&mut *lock(&self.polls))
    }
}

/// Revenue lag figures.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevenueLagReport {
    pub poll_ms: u64,
    pub payments: u64,
    /// Payments whose amount never showed in the view's total before the watcher stopped.
    pub not_visible: u64,
    pub lag: Percentiles,
}

/// For each payment acknowledged in `[from, to)`: the time from its ack to the first poll whose gross reached
/// the running sum at its ack. Both lists are in time order and their sums never decrease, so one sweep does.
pub fn revenue_lags(
    acks: &[(Instant, u64)],
    polls: &[(Instant, u64)],
    from: Instant,
    to: Instant,
) -> (Histogram<u64>, u64) {
    let mut h = histogram();
    let mut not_visible = 0;
    let mut p = 0;
    for &(acked, sum) in acks.iter().filter(|(t, _)| *t >= from && *t < to) {
        while p < polls.len() && (polls[p].0 < acked || polls[p].1 < sum) {
            p += 1;
        }
        match polls.get(p) {
            Some((seen, _)) => record(&mut h, seen.duration_since(acked).as_micros() as u64),
            None => not_visible += 1,
        }
    }
    (h, not_visible)
}

/// One monitor sample.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Seconds since the monitor started.
    pub t: f64,
    pub rss_mib: Option<f64>,
    pub live_aggregates: Option<f64>,
    pub lag_search_s: Option<f64>,
    pub lag_revenue_s: Option<f64>,
}

/// Samples RSS and a few gauges from `/metrics` once a second.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Monitor {
    pub fn start(http: reqwest::Client, target: Target, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let started = Instant::now();
                let mut samples = Vec::new();
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    samples.push(sample(&http, &target, started).await);
                }
                samples
            }
        });
        Self { stop, task }
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

pub async fn metrics_text(http: &reqwest::Client, target: &Target) -> Option<String> {
    let response = target.get(http, "/metrics").send().await.ok()?;
    response.text().await.ok()
}

pub async fn sample(http: &reqwest::Client, target: &Target, started: Instant) -> Sample {
    let rss = target.pid.and_then(service::memory).map(|m| round2(m.rss_kib as f64 / 1024.0));
    let text = metrics_text(http, target).await.unwrap_or_default();
    let lag = |p: &str| service::metric(&text, "orderflow_projection_lag_seconds", &format!("projection=\"{p}\""));
    Sample {
        t: round2(started.elapsed().as_secs_f64()),
        rss_mib: rss,
        live_aggregates: service::metric(&text, "orderflow_live_aggregates", ""),
        lag_search_s: lag("search"),
        lag_revenue_s: lag("revenue"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revenue_lag_is_time_to_the_first_poll_that_holds_the_running_sum() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let acks = [(ms(10), 100), (ms(20), 150), (ms(30), 400), (ms(500), 450)];
        let polls = [(ms(5), 0), (ms(15), 100), (ms(40), 150), (ms(60), 400)];
        let (h, missing) = revenue_lags(&acks, &polls, t0, ms(1000));
        assert_eq!(missing, 1, "the last payment never shows");
        assert_eq!(h.len(), 3);
        // 10 → 15 (5 ms), 20 → 40 (20 ms), 30 → 60 (30 ms).
        assert_eq!(h.min() / 1000, 5);
        assert_eq!(h.max() / 1000, 30);
        // Only acks inside the window count.
        let (h, missing) = revenue_lags(&acks, &polls, ms(15), ms(100));
        assert_eq!((h.len(), missing), (2, 0));
    }
}
