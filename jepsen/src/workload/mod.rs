//! # Workloads: what the clients do, and what they write down
//!
//! Each workload runs a handful of logical clients (one task each, one request at a time,
//! bound to one member, see [`crate::client`]) against its own key prefix, so several
//! workloads can share one cluster and each checker judges only its workload's operations.
//!
//! - `register` (`r/`): per-key read / write / compare-and-set → the linearizable checker;
//! - `append` (`a/`): multi-key list-append transactions guarded by mod_revision → append;
//! - `watch` (`w/`): writers put and delete, observers watch the prefix and resume → watch;
//! - `lease` (`l/`): keys attached to leases that are kept alive, revoked or left to expire
//!   → lease.
//!
//! Invariants every workload keeps:
//! - one clock: times are nanoseconds since the test's start `Instant`, shared with the
//!   nemesis, so operations and faults line up;
//! - an operation is recorded once, when it completes, with the outcome rules of
//!   [`crate::client`]; an op is never left half-recorded;
//! - a client whose op ended `info` continues as a new process (Jepsen's rule: the old one
//!   may still have that op in flight), so a process never has two ops pending;
//! - process ids of workload `w` lie in `[w.process_base(), w.process_base() + PROCESS_SPAN)`,
//!   so a merged history can be split again;
//! - the generators are seeded from the run's seed: a run's op sequence is reproducible up to
//!   the timing of the answers;
//! - no new operation starts once the phase leaves [`Phase::Running`]; the watch observers
//!   then wait for [`Phase::Healed`] to catch up with the final revision before they stop.

mod append;
mod lease;
mod register;
mod watch;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch as signal;

use crate::history::Op;

/// Process ids each workload may use.
pub(crate) const PROCESS_SPAN: u64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Register,
    Append,
    Watch,
    Lease,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 4] = [
        WorkloadKind::Register,
        WorkloadKind::Append,
        WorkloadKind::Watch,
        WorkloadKind::Lease,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Append => "append",
            WorkloadKind::Watch => "watch",
            WorkloadKind::Lease => "lease",
        }
    }

    /// The checker that judges this workload's history.
    pub fn checker(self) -> &'static str {
        match self {
            WorkloadKind::Register => "linearizable",
            WorkloadKind::Append => "append",
            WorkloadKind::Watch => "watch",
            WorkloadKind::Lease => "lease",
        }
    }

    /// The key prefix the workload owns.
    pub fn prefix(self) -> &'static str {
        match self {
            WorkloadKind::Register => "r/",
            WorkloadKind::Append => "a/",
            WorkloadKind::Watch => "w/",
            WorkloadKind::Lease => "l/",
        }
    }

    /// The first process id of the workload.
    pub fn process_base(self) -> u64 {
        self as u64 * PROCESS_SPAN
    }

    /// The workload whose process range holds `process`.
    pub fn of_process(process: u64) -> Option<WorkloadKind> {
        WorkloadKind::ALL
            .into_iter()
            .find(|w| (w.process_base()..w.process_base() + PROCESS_SPAN).contains(&process))
    }

    /// "all", one name, or a comma list; sorted, without duplicates.
    pub fn parse_list(s: &str) -> Result<Vec<WorkloadKind>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim) {
            if part == "all" {
                out.extend(WorkloadKind::ALL);
            } else {
                out.push(part.parse()?);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl FromStr for WorkloadKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        WorkloadKind::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| format!("unknown workload {s:?} (register, append, watch, lease, all)"))
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the register workload reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// Through the leader's read index: must be linearizable.
    #[default]
    Linearizable,
    /// From the member's local state (`serializable: true`): may be stale, so the
    /// linearizable checker is expected to reject the history under partitions.
    Serializable,
}

impl ReadMode {
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Linearizable => "linearizable",
            ReadMode::Serializable => "serializable",
        }
    }
}

impl FromStr for ReadMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "linearizable" => Ok(ReadMode::Linearizable),
            "serializable" => Ok(ReadMode::Serializable),
            _ => Err(format!(
                "unknown read mode {s:?} (linearizable, serializable)"
            )),
        }
    }
}

/// Where the run is; workloads watch it change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Faults may happen; clients issue operations.
    Running,
    /// The time limit passed: no new operations; the nemesis heals the cluster.
    Stopping,
    /// The cluster is whole again: watchers catch up, then everyone stops.
    Healed,
}

/// The test's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    pub(crate) fn new(start: Instant) -> Clock {
        Clock { start }
    }

    /// Nanoseconds since the start of the test.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What every workload gets from the runner.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// One client URL per member.
    pub(crate) endpoints: Vec<String>,
    pub(crate) clock: Clock,
    pub(crate) phase: signal::Receiver<Phase>,
    pub(crate) seed: u64,
    pub(crate) timeout: Duration,
    pub(crate) read_mode: ReadMode,
    /// Whether watch observers request progress notifications (see `watch.rs`).
    pub(crate) watch_progress: bool,
}

impl Ctx {
    /// The endpoint client `i` is bound to.
    pub(crate) fn endpoint(&self, i: usize) -> &str {
        &self.endpoints[i % self.endpoints.len()]
    }

    /// A generator for client `i` of `kind`, derived from the run's seed.
    pub(crate) fn rng(&self, kind: WorkloadKind, i: usize) -> StdRng {
        let mix = (kind as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64 + 1) << 32;
        StdRng::seed_from_u64(self.seed ^ mix)
    }

    pub(crate) fn running(&self) -> bool {
        *self.phase.borrow() == Phase::Running
    }

    /// Sleeps about `mean` (uniform in 0..2·mean) unless the phase changes first; returns
    /// whether the run is still in its running phase.
    pub(crate) async fn pause(&mut self, rng: &mut StdRng, mean: Duration) -> bool {
        let nanos = u64::try_from(mean.as_nanos()).unwrap_or(u64::MAX);
        let wait = Duration::from_nanos(rng.random_range(0..=nanos.saturating_mul(2)));
        self.sleep(wait).await
    }

    /// Sleeps `wait` unless the phase changes first; returns whether the run is still
    /// running.
    pub(crate) async fn sleep(&mut self, wait: Duration) -> bool {
        if !self.running() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.phase.changed() => {}
        }
        self.running()
    }
}

/// A client's process id: renewed after each indeterminate op.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Process {
    id: u64,
    base: u64,
    first: u64,
    stride: u64,
}

impl Process {
    /// Client `client` of `clients` in `kind`.
    pub(crate) fn new(kind: WorkloadKind, client: usize, clients: usize) -> Process {
        let base = kind.process_base();
        Process {
            id: base + client as u64,
            base,
            first: client as u64,
            stride: clients.max(1) as u64,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The op just recorded may still be in flight: continue under a fresh id.
    pub(crate) fn crashed(&mut self) {
        let next = self.id - self.base + self.stride;
        self.id = self.base
            + if next < PROCESS_SPAN {
                next
            } else {
                self.first
            };
    }

    /// Renews the id when `op` ended indeterminate.
    pub(crate) fn after(&mut self, op: &Op) {
        if op.kind.is_indeterminate() {
            self.crashed();
        }
    }
}

/// A sliding window of keys: op `n` uses one of `active` keys starting at `n / per_key`, so
/// each key gets about `per_key` ops and then retires. Short per-key histories keep the
/// checkers' searches small however long the run is (Jepsen's independent keys).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyWindow {
    pub(crate) active: u64,
    pub(crate) per_key: u64,
}

impl KeyWindow {
    pub(crate) fn key(&self, n: u64, rng: &mut StdRng) -> u64 {
        n / self.per_key.max(1) + rng.random_range(0..self.active.max(1))
    }
}

/// Runs `kind` until the phase says stop; returns every op its clients recorded.
pub(crate) async fn run(kind: WorkloadKind, ctx: Ctx) -> Vec<Op> {
    match kind {
        WorkloadKind::Register => register::run(ctx).await,
        WorkloadKind::Append => append::run(ctx).await,
        WorkloadKind::Watch => watch::run(ctx).await,
        WorkloadKind::Lease => lease::run(ctx).await,
    }
}

/// Spawns `clients` copies of `client` and gathers their ops.
pub(crate) async fn spawn_clients<F, Fut>(clients: usize, client: F) -> Vec<Op>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Vec<Op>> + Send + 'static,
{
    let tasks: Vec<_> = (0..clients).map(|i| tokio::spawn(client(i))).collect();
    let mut ops = Vec::new();
    for task in tasks {
        ops.extend(task.await.expect("workload clients do not panic"));
    }
    ops
}
