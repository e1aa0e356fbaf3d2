//! Auto-compaction, as etcd 3.4's `v3compactor` does it. Only the leader runs it (this member,
//! while it is the only one), and it compacts by *proposing* a Compact, so every replica
//! compacts at the same point of the log.
//!
//! `--auto-compaction-mode periodic` with `--auto-compaction-retention` R (an integer counts
//! hours, otherwise a Go duration such as `30m`): every min(R, 1h)/10 the current revision is
//! recorded, keeping those of the last R; nothing is compacted during the first R; after that
//! it compacts at the oldest recorded revision (the one from R ago) every min(R, 1h),
//! retrying at the next recording after a failure. `revision` mode: every 5 minutes it compacts at current − R.
//! "Already compacted" counts as success, and a revision already compacted is not proposed
//! again.
//!
//! The decisions are a plain state machine over an injected clock (a [`Duration`] since the
//! compactor started), so they are tested without waiting; [`spawn`] drives it with tokio's
//! timer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use keelson_proto::etcdserverpb::CompactionRequest;

use crate::apply::Command;
use crate::config::{CompactionMode, StoreConfig};
use crate::core::Core;
use crate::error::{Error, Result};

/// etcd's revision-mode interval (`revInterval`).
const REVISION_INTERVAL: Duration = Duration::from_secs(5 * 60);
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Policy {
    Periodic(Periodic),
    Revision { retention: i64, last: i64 },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Periodic {
    period: Duration,
    /// Revisions recorded every `retry_interval`; the front one is from `period` ago.
    revs: VecDeque<i64>,
    last_success: Duration,
    /// `period` until the first compaction, then the compaction interval.
    base_interval: Duration,
    last_revision: i64,
}

impl Periodic {
    fn new(period: Duration) -> Periodic {
        Periodic {
            period,
            revs: VecDeque::new(),
            last_success: Duration::ZERO,
            base_interval: period,
            last_revision: 0,
        }
    }

    fn compact_interval(&self) -> Duration {
        self.period.min(HOUR)
    }

    fn retry_interval(&self) -> Duration {
        self.compact_interval() / 10
    }

    fn retentions(&self) -> usize {
        (self.period.as_nanos() / self.retry_interval().as_nanos().max(1)) as usize + 1
    }
}

impl Policy {
    /// The policy the configuration asks for; `None` when auto-compaction is off.
    pub(crate) fn from_config(cfg: &StoreConfig) -> Result<Option<Policy>> {
        let r = cfg.auto_compaction_retention.trim();
        let bad = || Error::InvalidArgument(format!("invalid --auto-compaction-retention {r:?}"));
        match cfg.auto_compaction_mode {
            CompactionMode::Revision => {
                let n: i64 = r.parse().map_err(|_| bad())?;
                if n < 0 {
                    return Err(bad());
                }
                Ok((n > 0).then_some(Policy::Revision {
                    retention: n,
                    last: 0,
                }))
            }
            CompactionMode::Periodic => {
                let period = match r.parse::<u64>() {
                    Ok(hours) => HOUR * hours as u32,
                    Err(_) => parse_go_duration(r).ok_or_else(bad)?,
                };
                Ok((!period.is_zero()).then(|| Policy::Periodic(Periodic::new(period))))
            }
        }
    }

    /// How long to wait between decisions.
    pub(crate) fn interval(&self) -> Duration {
        match self {
            Policy::Periodic(p) => p.retry_interval(),
            Policy::Revision { .. } => REVISION_INTERVAL,
        }
    }

    /// Records the current revision; called before each wait.
    pub(crate) fn observe(&mut self, current: i64) {
        if let Policy::Periodic(p) = self {
            p.revs.push_back(current);
            if p.revs.len() > p.retentions() {
                p.revs.pop_front();
            }
        }
    }

    /// After a wait: the revision to compact now, if any.
    pub(crate) fn due(&mut self, now: Duration, current: i64) -> Option<i64> {
        match self {
            Policy::Periodic(p) => {
                let rev = *p.revs.front()?;
                if now.saturating_sub(p.last_success) < p.base_interval || rev == p.last_revision {
                    return None;
                }
                // The first window is waited in full; after it, compact every interval.
                p.base_interval = p.compact_interval();
                Some(rev)
            }
            Policy::Revision { retention, last } => {
                let rev = current - *retention;
                (rev > 0 && rev != *last).then_some(rev)
            }
        }
    }

    /// Records that compacting at `rev` succeeded (or had already happened).
    pub(crate) fn succeeded(&mut self, rev: i64, now: Duration) {
        match self {
            Policy::Periodic(p) => {
                p.last_revision = rev;
                p.last_success = now;
            }
            Policy::Revision { last, .. } => *last = rev,
        }
    }
}

/// Parses a Go `time.ParseDuration` string ("1h30m", "2.5s", "300ms").
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() || rest.starts_with('-') {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += num * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Runs the configured policy until the core is dropped.
pub(crate) fn spawn(core: &Arc<Core>) -> Result<()> {
    let Some(mut policy) = Policy::from_config(&core.cfg)? else {
        return Ok(());
    };
    let weak = Arc::downgrade(core);
    let retention = core.cfg.auto_compaction_retention.clone();
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        loop {
            {
                let Some(core) = weak.upgrade() else { return };
                policy.observe(core.mvcc.current_revision());
            }
            tokio::time::sleep(policy.interval()).await;
            let Some(core) = weak.upgrade() else { return };
            let Some(rev) = policy.due(start.elapsed(), core.mvcc.current_revision()) else {
                continue;
            };
            tracing::info!(revision = rev, retention = %retention, "starting auto compaction");
            let cmd = Command::Compact(CompactionRequest {
                revision: rev,
                physical: false,
            });
            match core.propose(cmd).await {
                Ok(_) | Err(Error::Compacted) => {
                    policy.succeeded(rev, start.elapsed());
                    tracing::info!(revision = rev, "completed auto compaction");
                }
                Err(e) => tracing::warn!(revision = rev, "auto compaction failed, will retry: {e}"),
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: CompactionMode, retention: &str) -> StoreConfig {
        StoreConfig {
            auto_compaction_mode: mode,
            auto_compaction_retention: retention.into(),
            ..Default::default()
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn retention_parses_like_etcd() {
        let p = |r| Policy::from_config(&cfg(CompactionMode::Periodic, r));
        assert_eq!(p("0").unwrap(), None);
        assert_eq!(p("1").unwrap().unwrap().interval(), 6 * MIN);
        assert_eq!(p("30m").unwrap().unwrap().interval(), 3 * MIN);
        assert_eq!(p("72h").unwrap().unwrap().interval(), 6 * MIN);
        assert!(p("ten").is_err());
        let r = Policy::from_config(&cfg(CompactionMode::Revision, "1000"))
            .unwrap()
            .unwrap();
        assert_eq!(r.interval(), 5 * MIN);
        assert!(Policy::from_config(&cfg(CompactionMode::Revision, "1h")).is_err());
        assert_eq!(parse_go_duration("1h30m"), Some(90 * MIN));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration("-1s"), None);
    }

    /// Drives a policy the way `spawn` does, with revision growing by `per_tick` each wait.
    fn run(mut p: Policy, ticks: usize, per_tick: i64) -> Vec<(Duration, i64)> {
        let mut now = Duration::ZERO;
        let mut rev = 1;
        let mut compacted = Vec::new();
        for _ in 0..ticks {
            p.observe(rev);
            now += p.interval();
            rev += per_tick;
            if let Some(r) = p.due(now, rev) {
                p.succeeded(r, now);
                compacted.push((now, r));
            }
        }
        compacted
    }

    #[test]
    fn periodic_waits_one_window_then_compacts_what_was_current_a_window_ago() {
        let p = Policy::from_config(&cfg(CompactionMode::Periodic, "10m"))
            .unwrap()
            .unwrap();
        // A tick is 1 minute; the revision grows by 10 a minute.
        let got = run(p, 35, 10);
        // Nothing before the first 10 minutes; then every 10 minutes, at the oldest revision
        // recorded in the window (recorded at the start of the tick 10 ticks back).
        assert_eq!(got, vec![(10 * MIN, 1), (20 * MIN, 91), (30 * MIN, 191)]);
    }

    #[test]
    fn periodic_with_long_retention_compacts_hourly() {
        let p = Policy::from_config(&cfg(CompactionMode::Periodic, "2"))
            .unwrap()
            .unwrap();
        let got = run(p, 50, 1);
        let times: Vec<Duration> = got.iter().map(|g| g.0).collect();
        assert_eq!(times, vec![120 * MIN, 180 * MIN, 240 * MIN, 300 * MIN]);
        // Each compaction keeps two hours: the revision recorded 20 ticks (of 6 min) earlier.
        assert_eq!(got[0].1, 1);
        assert_eq!(got[1].1, 10);
    }

    #[test]
    fn periodic_retries_after_failure_and_skips_an_idle_store() {
        let mut p = Policy::from_config(&cfg(CompactionMode::Periodic, "10m"))
            .unwrap()
            .unwrap();
        for _ in 0..10 {
            p.observe(5);
        }
        assert_eq!(p.due(10 * MIN, 5), Some(5));
        // Not marked successful: it is due again at the next tick.
        p.observe(5);
        assert_eq!(p.due(11 * MIN, 5), Some(5));
        p.succeeded(5, 11 * MIN);
        // The store has not moved: the same revision is not proposed again.
        for i in 0..20 {
            p.observe(5);
            assert_eq!(p.due((12 + i) * MIN, 5), None);
        }
    }

    #[test]
    fn revision_mode_keeps_the_last_n_revisions() {
        let mut p = Policy::from_config(&cfg(CompactionMode::Revision, "100"))
            .unwrap()
            .unwrap();
        assert_eq!(p.due(5 * MIN, 50), None);
        assert_eq!(p.due(10 * MIN, 350), Some(250));
        p.succeeded(250, 10 * MIN);
        assert_eq!(p.due(15 * MIN, 350), None);
        assert_eq!(p.due(20 * MIN, 351), Some(251));
    }
}
