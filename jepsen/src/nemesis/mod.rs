//! Nemeses: faults injected into a running cluster while clients work, in Jepsen's rhythm —
//! a healthy stretch, a fault, its heal, again — until the run ends.
//!
//! Invariants:
//! - One fault at a time, and the next begins only after the last was healed and every member
//!   serves again. So a member fault never meets another member down: a majority always
//!   survives, and the "member" nemesis never removes a member while another is missing.
//! - Every fault is recorded as a [`NemesisEvent`] from just before it was injected to just
//!   after its heal was carried out, with what was done to whom (members, shape, bytes) and
//!   how the cluster took it (a member refusing to start on damaged files, and its
//!   replacement). The plot shades these intervals.
//! - The schedule (durations, kinds, victims, shapes, bytes) comes from one seeded generator;
//!   the cluster's answers (who leads, how a restart went) feed into it, so a seed reproduces
//!   the schedule as far as the cluster behaves the same.
//! - When `stop` turns true the current fault is healed at once, then everything is healed
//!   ([`Cluster::heal`]: network, paused, dead and removed members) and `run` returns only
//!   when all members serve.

mod faults;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::error::HarnessError;
use faults::Fault;

/// How long the cluster may take to serve again after a heal, before the run is abandoned.
const RECOVERY: Duration = Duration::from_secs(120);

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NemesisKind {
    None,
    /// kill -9 a member (a random one or the leader), restart it later.
    Kill,
    /// SIGSTOP a member (a random one or the leader), SIGCONT it later.
    Pause,
    /// Cut links: isolate a member or the leader, minority / majority, bridge.
    Partition,
    /// Remove a member, wipe it, add it back as a new member in the same slot.
    Member,
    /// Damage a stopped member's log tail or snapshot, restart it (replace it if it refuses).
    Corrupt,
    /// A seeded random mix of all of the above.
    All,
}

impl NemesisKind {
    pub const NAMES: [&'static str; 7] = [
        "none",
        "kill",
        "pause",
        "partition",
        "member",
        "corrupt",
        "all",
    ];

    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::None => "none",
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Partition => "partition",
            NemesisKind::Member => "member",
            NemesisKind::Corrupt => "corrupt",
            NemesisKind::All => "all",
        }
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NemesisKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "none" => NemesisKind::None,
            "kill" => NemesisKind::Kill,
            "pause" => NemesisKind::Pause,
            "partition" => NemesisKind::Partition,
            "member" => NemesisKind::Member,
            "corrupt" => NemesisKind::Corrupt,
            "all" => NemesisKind::All,
            _ => {
                return Err(format!(
                    "unknown nemesis {s:?} ({})",
                    NemesisKind::NAMES.join(", ")
                ))
            }
        })
    }
}

/// One fault, from injection to heal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NemesisEvent {
    /// Nanoseconds since the run's start instant.
    pub start_ns: u64,
    pub end_ns: u64,
    /// kill, pause, partition, member or corrupt.
    pub kind: String,
    /// Who and what, and how the cluster took it.
    pub detail: String,
}

/// How long faults and the healthy stretches between them last (each drawn uniformly).
#[derive(Clone, Debug)]
pub struct Timing {
    pub fault: Range<Duration>,
    pub healthy: Range<Duration>,
}

impl Default for Timing {
    /// 5–10 s of fault, 5–10 s healthy.
    fn default() -> Self {
        Timing {
            fault: Duration::from_secs(5)..Duration::from_secs(10),
            healthy: Duration::from_secs(5)..Duration::from_secs(10),
        }
    }
}

fn draw(rng: &mut impl Rng, r: &Range<Duration>) -> Duration {
    if r.is_empty() {
        r.start
    } else {
        rng.random_range(r.clone())
    }
}

/// Sleeps for `d` unless `stop` turns true first (or its sender goes): whether it stopped.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

fn ns_since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// Runs `kind` against `cluster` until `*stop` is true (see the module docs) with the default
/// [`Timing`]; the fault intervals, in order.
pub async fn run(
    kind: NemesisKind,
    cluster: Arc<Cluster>,
    seed: u64,
    start: Instant,
    stop: watch::Receiver<bool>,
) -> Result<Vec<NemesisEvent>, HarnessError> {
    run_with(kind, cluster, seed, start, stop, Timing::default()).await
}

/// [`run`] with the given timing.
pub async fn run_with(
    kind: NemesisKind,
    cluster: Arc<Cluster>,
    seed: u64,
    start: Instant,
    mut stop: watch::Receiver<bool>,
    timing: Timing,
) -> Result<Vec<NemesisEvent>, HarnessError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    if kind == NemesisKind::None {
        let _ = stop.wait_for(|s| *s).await;
        return Ok(events);
    }
    let outcome = faults_until_stopped(
        kind,
        &cluster,
        &mut rng,
        start,
        &mut stop,
        &timing,
        &mut events,
    )
    .await;
    // Whatever happened, leave every member running and connected.
    let healed = cluster.heal().await;
    outcome?;
    healed?;
    cluster.wait_healthy(RECOVERY).await?;
    Ok(events)
}

async fn faults_until_stopped(
    kind: NemesisKind,
    cluster: &Cluster,
    rng: &mut StdRng,
    start: Instant,
    stop: &mut watch::Receiver<bool>,
    timing: &Timing,
    events: &mut Vec<NemesisEvent>,
) -> Result<(), HarnessError> {
    loop {
        if sleep_or_stop(stop, draw(rng, &timing.healthy)).await {
            return Ok(());
        }
        let fault = Fault::choose(kind, cluster, rng).await;
        let start_ns = ns_since(start);
        let active = fault.inject(cluster, rng).await?;
        cluster.note(&format!("nemesis {}: {}", active.kind(), active.detail()));
        let stopped = sleep_or_stop(stop, draw(rng, &timing.fault)).await;
        let kind = active.kind().to_string();
        let detail = active.heal(cluster).await?;
        cluster.note(&format!("nemesis {kind} healed: {detail}"));
        events.push(NemesisEvent {
            start_ns,
            end_ns: ns_since(start),
            kind,
            detail,
        });
        cluster.wait_healthy(RECOVERY).await?;
        if stopped {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_their_cli_names_and_back() {
        for name in NemesisKind::NAMES {
            let k: NemesisKind = name.parse().unwrap();
            assert_eq!(k.to_string(), name);
        }
        assert!("chaos".parse::<NemesisKind>().is_err());
    }

    #[test]
    fn events_serialize_with_their_field_names() {
        let e = NemesisEvent {
            start_ns: 1,
            end_ns: 2,
            kind: "kill".into(),
            detail: "kill -9 m0".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"start_ns":1,"end_ns":2,"kind":"kill","detail":"kill -9 m0"}"#
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_interrupts_a_sleep_and_is_seen_at_once_afterwards() {
        let (tx, mut rx) = watch::channel(false);
        let sleeper = tokio::spawn(async move {
            let first = sleep_or_stop(&mut rx, Duration::from_secs(3600)).await;
            let second = sleep_or_stop(&mut rx, Duration::from_secs(3600)).await;
            (first, second)
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send_replace(true);
        assert_eq!(sleeper.await.unwrap(), (true, true));
        let (_tx, mut rx) = watch::channel(false);
        assert!(!sleep_or_stop(&mut rx, Duration::from_secs(1)).await);
    }
}
