//! What a load run counts: per request kind an HDR histogram of latencies (microseconds), answers by status,
//! and completions per second. Each client keeps its own and they are merged at the end, so recording never
//! contends.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::Op;

/// Latencies are recorded in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("3 sigfig is valid"))
}

/// Records one latency, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, micros: u64) {
    let _ = h.record(micros.clamp(1, h.high()));
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One request kind's counts.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Latency of every answered request (whatever its status).
    pub latency: Histogram<u64>,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer (connection refused / reset, timeout).
    pub transport_errors: u64,
}

impl Default for OpStats {
    fn default() -> Self {
        Self { latency: histogram(), statuses: BTreeMap::new(), transport_errors: 0 }
    }
}

impl OpStats {
    pub fn merge(&mut self, other: &OpStats) {
        let _ = self.latency.add(&other.latency);
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
    }

    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// Everything one load run (all clients) counted inside the measured window.
#[derive(Debug, Clone, Default)]
pub struct LoadStats {
    pub ops: [OpStats; 6],
    /// Commands (any status) completed in each second of the measured window.
    pub commands_per_second: Vec<u64>,
    /// Requests of any kind completed in each second of the measured window.
    pub requests_per_second: Vec<u64>,
    /// Measured requests answered (or failed) before the window closed: what the CPU read over the window
    /// paid for. (In an overloaded open loop, many requests sent in the window are answered after it.)
    pub completed_in_window: u64,
}

impl LoadStats {
    pub fn op(&self, op: Op) -> &OpStats {
        &self.ops[op.index()]
    }

    pub fn op_mut(&mut self, op: Op) -> &mut OpStats {
        &mut self.ops[op.index()]
    }

    /// Counts a completion at `second` of the measured window.
    pub fn tick(&mut self, second: usize, command: bool) {
        bump(&mut self.requests_per_second, second);
        if command {
            bump(&mut self.commands_per_second, second);
        }
    }

    pub fn merge(&mut self, other: &LoadStats) {
        for (mine, theirs) in self.ops.iter_mut().zip(&other.ops) {
            mine.merge(theirs);
        }
        self.completed_in_window += other.completed_in_window;
        add_series(&mut self.commands_per_second, &other.commands_per_second);
        add_series(&mut self.requests_per_second, &other.requests_per_second);
    }

    /// The union of the kinds that `pick` selects.
    pub fn combined(&self, pick: impl Fn(Op) -> bool) -> OpStats {
        let mut all = OpStats::default();
        for op in Op::ALL.into_iter().filter(|op| pick(*op)) {
            all.merge(self.op(op));
        }
        all
    }
}

fn bump(series: &mut Vec<u64>, at: usize) {
    if series.len() <= at {
        series.resize(at + 1, 0);
    }
    series[at] += 1;
}

fn add_series(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// Min / median / max of a per-second series, over whole seconds only (`whole` of them).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeriesSummary {
    pub min: u64,
    pub median: u64,
    pub max: u64,
}

impl SeriesSummary {
    pub fn of(series: &[u64], whole: usize) -> Self {
        let mut s: Vec<u64> = series.iter().copied().take(whole).collect();
        s.resize(whole, 0);
        if s.is_empty() {
            return Self::default();
        }
        s.sort_unstable();
        Self { min: s[0], median: s[s.len() / 2], max: s[s.len() - 1] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = histogram();
        for us in 1..=10_000u64 {
            record(&mut h, us);
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 10_000);
        // 3 significant digits: within 0.1 % of the exact value.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(close(p.p50_ms, 5.0), "{p:?}");
        assert!(close(p.p99_ms, 9.9), "{p:?}");
        assert!(close(p.p999_ms, 9.99), "{p:?}");
        assert!(close(p.max_ms, 10.0), "{p:?}");
        assert!(close(p.mean_ms, 5.0005), "{p:?}");
    }

    #[test]
    fn empty_and_out_of_range_values() {
        assert_eq!(Percentiles::of(&histogram()), Percentiles::default());
        let mut h = histogram();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn merging_adds_counts_and_series() {
        let mut a = LoadStats::default();
        let mut b = LoadStats::default();
        record(&mut a.op_mut(Op::Place).latency, 100);
        *a.op_mut(Op::Place).statuses.entry(201).or_default() += 1;
        record(&mut b.op_mut(Op::Place).latency, 300);
        *b.op_mut(Op::Place).statuses.entry(503).or_default() += 1;
        a.tick(0, true);
        b.tick(2, false);
        a.completed_in_window = 1;
        b.completed_in_window = 2;
        a.merge(&b);
        assert_eq!(a.completed_in_window, 3);
        assert_eq!(a.op(Op::Place).latency.len(), 2);
        assert_eq!(a.op(Op::Place).answered(), 2);
        assert_eq!(a.commands_per_second, vec![1]);
        assert_eq!(a.requests_per_second, vec![1, 0, 1]);
        assert_eq!(a.combined(Op::is_command).latency.len(), 2);
    }

    #[test]
    fn series_summary_counts_missing_seconds_as_zero() {
        assert_eq!(SeriesSummary::of(&[5, 1, 3], 4), SeriesSummary { min: 0, median: 3, max: 5 });
        assert_eq!(SeriesSummary::of(&[], 0), SeriesSummary::default());
    }
}
