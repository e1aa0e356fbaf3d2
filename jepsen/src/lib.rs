//! # jepsen: clusters under faults, recorded histories and the checkers that judge them
//!
//! Keelson claims what etcd claims: single-key operations are linearizable, multi-key
//! transactions are strictly serializable, watches deliver every change in revision order,
//! and leased keys live exactly as long as their lease. This crate holds the oracle for
//! those claims, in the manner of Jepsen: clients record what they did and saw, and checkers
//! decide, from the record alone, whether any correct store could have produced it.
//!
//! - [`history`]: one operation per JSON line — client, outcome (`ok` / `fail` / `info` =
//!   indeterminate), what it did, when (monotonic ns), the revision it saw.
//! - [`linearizable`]: per-key registers (read / write / delete / CAS), a Wing–Gong /
//!   porcupine search with memoization, partitioned by key; `unknown` on timeout.
//! - [`append`]: Elle's list-append inference for transactions: ww / wr / rw dependency
//!   graph, cycles classified G0 / G1c / G2, plus G1a, G1b and list-shape anomalies.
//! - [`watch`]: the watch guarantees etcd's robustness suite checks (ordered, unique, atomic,
//!   bookmarkable, reliable, resumable, prev_kv, is_create, filters).
//! - [`lease`]: leased keys vanish only after a revoke or a possible expiry, and never return.
//!
//! Every checker returns a [`CheckResult`]: `valid`, `invalid` with each anomaly spelled out
//! with the operations involved, or `unknown`. A checker must never pass a history it could
//! not decide; anomalies are proofs, not suspicions, so each one names its evidence.
//!
//! What is not checked yet: real-time (strict) order between transactions in [`append`]
//! (serializability only); the watch checks trust a store history rebuilt from what watchers
//! and ok writes reported, so a write nobody observed and whose revision is unknown cannot be
//! missed by anyone.
//!
//! The harness that produces the histories:
//! - [`cluster`]: three members of Keelson or of etcd 3.4 (the control) as real processes:
//!   start, kill -9, pause, restart, damage a log or snapshot, wipe and re-add through the
//!   Cluster API; [`net`]: partitions that cut real traffic (network namespaces as root, else
//!   proxies on the peer URLs); [`nemesis`]: the fault schedules, recorded as intervals.
//! - `client` and [`workload`]: clients bound to members, recording every operation with its
//!   outcome (a write whose fate is unknown is `info`, never `fail`); the register, append,
//!   watch and lease workloads.
//! - [`run`]: `jepsen test` — the run folder, the checks, the verdict (exit 0 / 1 / 2), and
//!   [`plot`]'s latency and throughput over time with the faults shaded.

pub mod append;
mod client;
pub mod cluster;
pub mod error;
pub mod history;
pub mod lease;
pub mod linearizable;
pub mod nemesis;
pub mod net;
pub mod plot;
pub mod result;
pub mod run;
#[cfg(test)]
mod testkit;
pub mod watch;
pub mod workload;

pub use history::{Func, History, MicroOp, Op, OpType};
pub use result::{Anomaly, CheckResult, Validity};
