//! Latency histograms, per-worker recorders and the report a run produces.
//!
//! Every worker records into its own [`Recorder`] (no sharing, no locks on the hot path); the
//! driver merges them when the run is over. Latencies are kept in nanoseconds in HDR
//! histograms with 3 significant digits, so any percentile is within 0.1% of the exact one and
//! merging is exact. A [`Report`] carries, per operation, the count, errors, rate and latency
//! percentiles, plus free-form scalar figures (conflicts, events/s, …) and the list of
//! problems found; a report with any problem is not `ok`.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency histogram in nanoseconds.
#[derive(Clone)]
pub(crate) struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        // Auto-resizing: starts small and grows to cover whatever the slowest sample was.
        Hist(Histogram::new(3).expect("3 significant digits is valid"))
    }
}

impl Hist {
    pub(crate) fn record(&mut self, d: Duration) {
        // `record`, not `saturating_record`: the latter clamps instead of growing.
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        let _ = self.0.record(ns);
    }

    pub(crate) fn merge(&mut self, other: &Hist) {
        self.0
            .add(&other.0)
            .expect("auto-resizing histograms always add");
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    pub(crate) fn latency(&self) -> Latency {
        if self.0.is_empty() {
            return Latency::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Latency {
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
            mean_ms: self.0.mean() / 1e6,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// One operation's figures in a report.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct OpStats {
    pub name: String,
    pub count: u64,
    pub errors: u64,
    pub per_sec: f64,
    pub latency: Latency,
}

/// What one worker (or a merge of workers) saw.
#[derive(Default)]
pub(crate) struct Recorder {
    hists: BTreeMap<&'static str, Hist>,
    errors: BTreeMap<&'static str, u64>,
    first_error: Option<String>,
    counters: BTreeMap<&'static str, u64>,
}

impl Recorder {
    pub(crate) fn record(&mut self, op: &'static str, d: Duration) {
        self.hists.entry(op).or_default().record(d);
    }

    /// Records the time since `start` for `op`.
    pub(crate) fn since(&mut self, op: &'static str, start: Instant) {
        self.record(op, start.elapsed());
    }

    pub(crate) fn error(&mut self, op: &'static str, e: impl Display) {
        *self.errors.entry(op).or_default() += 1;
        self.first_error.get_or_insert_with(|| format!("{op}: {e}"));
    }

    pub(crate) fn count(&mut self, name: &'static str, n: u64) {
        *self.counters.entry(name).or_default() += n;
    }

    pub(crate) fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    pub(crate) fn hist(&self, op: &str) -> Option<&Hist> {
        self.hists.get(op)
    }

    pub(crate) fn merge(&mut self, other: Recorder) {
        for (op, h) in other.hists {
            self.hists.entry(op).or_default().merge(&h);
        }
        for (op, n) in other.errors {
            *self.errors.entry(op).or_default() += n;
        }
        for (c, n) in other.counters {
            *self.counters.entry(c).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// The figures of `op`, its rate taken over `elapsed`.
    pub(crate) fn op_stats(&self, op: &str, elapsed: Duration) -> OpStats {
        let (count, latency) = match self.hists.get(op) {
            Some(h) => (h.count(), h.latency()),
            None => (0, Latency::default()),
        };
        OpStats {
            name: op.to_string(),
            count,
            errors: self.errors.get(op).copied().unwrap_or(0),
            per_sec: rate(count, elapsed),
            latency,
        }
    }

    /// Every operation recorded or failed, in name order.
    pub(crate) fn ops(&self) -> Vec<&'static str> {
        let mut ops: Vec<_> = self
            .hists
            .keys()
            .chain(self.errors.keys())
            .copied()
            .collect();
        ops.sort_unstable();
        ops.dedup();
        ops
    }
}

pub(crate) fn rate(count: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        count as f64 / elapsed.as_secs_f64()
    }
}

/// The result of one workload run.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Report {
    pub workload: String,
    /// No request failed and every check passed.
    pub ok: bool,
    /// Wall time of the measured phase.
    pub elapsed_s: f64,
    pub ops: Vec<OpStats>,
    /// Scalar figures; a name ending in `_per_s` is better higher, `_ms`/`_s`/`_b`/`_mib` lower.
    pub figures: BTreeMap<String, f64>,
    pub problems: Vec<String>,
}

impl Report {
    /// Adds every operation of `rec`, rates over `elapsed`, and the first error as a problem.
    pub(crate) fn add_ops(&mut self, rec: &Recorder, elapsed: Duration) {
        for op in rec.ops() {
            self.ops.push(rec.op_stats(op, elapsed));
        }
        if let Some(e) = &rec.first_error {
            self.problem(format!("requests failed; first: {e}"));
        }
    }

    pub(crate) fn add_op(&mut self, stats: OpStats) {
        self.ops.push(stats);
    }

    pub(crate) fn figure(&mut self, name: &str, v: f64) {
        self.figures.insert(name.to_string(), v);
    }

    pub(crate) fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
    }

    /// Settles `ok` once the workload has said everything.
    pub(crate) fn finish(&mut self) {
        let failed: u64 = self.ops.iter().map(|o| o.errors).sum();
        self.ok = self.problems.is_empty() && failed == 0;
    }

    /// Every figure as (name, value): per op its rate and p50/p99/p999, then the scalars.
    pub fn flat(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for o in &self.ops {
            out.push((format!("{}.ops_per_s", o.name), o.per_sec));
            out.push((format!("{}.p50_ms", o.name), o.latency.p50_ms));
            out.push((format!("{}.p99_ms", o.name), o.latency.p99_ms));
            out.push((format!("{}.p999_ms", o.name), o.latency.p999_ms));
        }
        out.extend(self.figures.iter().map(|(k, v)| (k.clone(), *v)));
        out
    }

    /// The human summary.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let status = if self.ok { "ok" } else { "FAILED" };
        let _ = writeln!(s, "{}: {status}, {:.2} s", self.workload, self.elapsed_s);
        let _ = writeln!(
            s,
            "{:<12} {:>9} {:>7} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "count", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p999 ms", "max ms"
        );
        for o in &self.ops {
            let l = &o.latency;
            let _ = writeln!(
                s,
                "{:<12} {:>9} {:>7} {:>11.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                o.name,
                o.count,
                o.errors,
                o.per_sec,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.p999_ms,
                l.max_ms
            );
        }
        for (k, v) in &self.figures {
            let _ = writeln!(s, "  {k:<28} {}", fmt_num(*v));
        }
        for p in &self.problems {
            let _ = writeln!(s, "  PROBLEM: {p}");
        }
        s
    }
}

/// Whether a larger value of the figure `name` is better (`None`: neither, e.g. a count):
/// rates (`_per_s`) are better higher; times (`_ms`, `_s`) and memory (`_b`, `_mib`) lower.
pub(crate) fn higher_is_better(name: &str) -> Option<bool> {
    if name.ends_with("_per_s") {
        Some(true)
    } else if ["_ms", "_s", "_b", "_mib"]
        .iter()
        .any(|u| name.ends_with(u))
    {
        Some(false)
    } else {
        None
    }
}

pub(crate) fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b * 0.001 + 1e-9
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = Hist::default();
        for i in 1..=1000 {
            h.record(ms(i));
        }
        let l = h.latency();
        assert_eq!(h.count(), 1000);
        assert!(close(l.p50_ms, 500.0), "{l:?}");
        assert!(close(l.p90_ms, 900.0), "{l:?}");
        assert!(close(l.p99_ms, 990.0), "{l:?}");
        assert!(close(l.p999_ms, 999.0), "{l:?}");
        assert!(close(l.max_ms, 1000.0), "{l:?}");
        assert!(close(l.mean_ms, 500.5), "{l:?}");
    }

    #[test]
    fn a_tail_shows_only_in_the_high_percentiles() {
        let mut h = Hist::default();
        for _ in 0..9990 {
            h.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            h.record(ms(50));
        }
        let l = h.latency();
        assert!(close(l.p50_ms, 0.1) && close(l.p99_ms, 0.1), "{l:?}");
        assert!(close(l.p999_ms, 0.1), "exactly 0.1% is slow: {l:?}");
        assert!(close(l.max_ms, 50.0), "{l:?}");
    }

    #[test]
    fn merged_recorders_equal_one_recorder() {
        let (mut a, mut b, mut all) = (
            Recorder::default(),
            Recorder::default(),
            Recorder::default(),
        );
        for i in 1..=100 {
            let r = if i % 2 == 0 { &mut a } else { &mut b };
            r.record("put", ms(i));
            all.record("put", ms(i));
        }
        b.error("put", "boom");
        b.count("conflicts", 3);
        a.merge(b);
        assert_eq!(
            a.hist("put").unwrap().latency(),
            all.hist("put").unwrap().latency()
        );
        assert_eq!(a.counter("conflicts"), 3);
        let s = a.op_stats("put", Duration::from_secs(2));
        assert_eq!((s.count, s.errors, s.per_sec), (100, 1, 50.0));
        let mut r = Report::default();
        r.add_ops(&a, Duration::from_secs(2));
        r.finish();
        assert!(!r.ok, "an error makes a report fail");
        assert_eq!(
            r.problems,
            vec!["requests failed; first: put: boom".to_string()]
        );
    }

    #[test]
    fn figure_directions() {
        assert_eq!(higher_is_better("put.ops_per_s"), Some(true));
        assert_eq!(higher_is_better("put.p99_ms"), Some(false));
        assert_eq!(higher_is_better("catchup_s"), Some(false));
        assert_eq!(higher_is_better("conflicts"), None);
        assert_eq!(higher_is_better("accept_watchers_per_s"), Some(true));
        assert_eq!(higher_is_better("rss_per_watcher_b"), Some(false));
        assert_eq!(higher_is_better("member0.rss_after_mib"), Some(false));
        assert_eq!(higher_is_better("watchers"), None);
    }
}
