//! What only the leader can answer: the read index of a linearizable read, and the lease clock.
//!
//! Any member may be asked; each answers here what it can. A member that leads answers itself;
//! one that does not answers `NotLeader` with whom it believes leads, and the asking proposer
//! (`proposer.rs`) then makes the same request on that member over the peer transport
//! (`ReadIndex`, `LeaseRenew`, `LeaseTimeToLive`). Every request here is safe to repeat (a read
//! index, a renewal, a lookup), so unlike forwarded writes they are retried after any failure
//! until the request's deadline.
//!
//! Invariants:
//! - **A read index is handed out only after the leader confirmed it still leads**: openraft's
//!   `get_read_linearizer` with `ReadIndex` waits for a quorum to acknowledge a heartbeat sent
//!   after the request arrived, and answers the larger of the leader's committed index and its
//!   own first (no-op) entry. Everything committed before the read arrived is at or below it,
//!   so a member that has applied up to it may read locally (Raft §6.4).
//! - With `--experimental-lease-read` the leader skips the round while a quorum acknowledged it
//!   within its leader lease (openraft's `LeaseRead`), and falls back to a round when the lease
//!   has lapsed. Correct only while clocks run at about the same rate everywhere.
//! - Lease time is kept by the leader's lessor alone: a renewal or a TimeToLive reaching a
//!   member that does not lead is answered by the leader, so keep-alives through any member
//!   keep a lease alive (etcd's followers forward `LeaseRenew` and `LeaseTimeToLive` too).

use bytes::Bytes;
use keelson_store::{Error, LeaseStatus};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{LinearizableReadError, RaftError};
use openraft::storage::RaftStateMachine;
use openraft::Instant as _;
use openraft::{Raft, ReadPolicy};
use serde::{Deserialize, Serialize};

use crate::types::TypeConfig;

/// The leader's lease clock: the store's lessor (`keelson_store::Replica` implements it).
pub trait LeaseClock: Send + Sync + 'static {
    /// Renews lease `id` for its full TTL: the TTL, or `LeaseNotFound` (unknown or expired).
    fn renew(&self, id: i64) -> keelson_store::Result<i64>;
    /// Lease `id`'s remaining and granted TTL and its keys, or `LeaseNotFound`.
    fn time_to_live(&self, id: i64) -> keelson_store::Result<LeaseStatus>;
}

/// What a member answers a request only the leader can serve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum LeaderReply<T> {
    Done(T),
    /// This member does not lead (or cannot confirm that it does); `leader` is whom it
    /// believes leads.
    NotLeader {
        leader: Option<u64>,
    },
    /// A definite answer that is an error (`LeaseNotFound`, `Stopped`).
    Failed(Error),
}

/// A follower's request for the leader's read index.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct ReadIndexRequest {
    /// Whether the leader may answer from its leader lease (`--experimental-lease-read`).
    pub(crate) lease_read: bool,
}

/// A lease call made on the leader.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct LeaseRequest {
    pub(crate) id: i64,
}

/// [`LeaseStatus`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseTtl {
    remaining: i64,
    granted: i64,
    keys: Vec<Bytes>,
}

impl From<LeaseStatus> for LeaseTtl {
    fn from(s: LeaseStatus) -> LeaseTtl {
        LeaseTtl {
            remaining: s.remaining,
            granted: s.granted,
            keys: s.keys,
        }
    }
}

impl From<LeaseTtl> for LeaseStatus {
    fn from(t: LeaseTtl) -> LeaseStatus {
        LeaseStatus {
            remaining: t.remaining,
            granted: t.granted,
            keys: t.keys,
        }
    }
}

/// The read index, if this member leads and confirms it (see the module docs).
pub(crate) async fn read_index_here<SM>(
    raft: &Raft<TypeConfig, SM>,
    lease_read: bool,
) -> LeaderReply<u64>
where
    SM: RaftStateMachine<TypeConfig>,
{
    if lease_read {
        match raft.get_read_linearizer(ReadPolicy::LeaseRead).await {
            Ok(l) => return LeaderReply::Done(l.read_log_id().index()),
            // The lease lapsed: confirm with a round instead.
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {}
            Err(e) => return reply_of(e),
        }
    }
    match raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
        Ok(l) => LeaderReply::Done(l.read_log_id().index()),
        Err(e) => reply_of(e),
    }
}

fn reply_of<T>(e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> LeaderReply<T> {
    match e {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => LeaderReply::NotLeader {
            leader: f.leader_id,
        },
        // A leader that cannot reach a quorum may be deposed already; ask again later.
        RaftError::APIError(LinearizableReadError::QuorumNotEnough(_)) => {
            LeaderReply::NotLeader { leader: None }
        }
        RaftError::Fatal(_) => LeaderReply::Failed(Error::Stopped),
    }
}

/// Runs `f` on the lease clock if this member leads, with a quorum behind it (below).
pub(crate) fn on_lease_clock<SM, T>(
    raft: &Raft<TypeConfig, SM>,
    f: impl FnOnce() -> keelson_store::Result<T>,
) -> LeaderReply<T>
where
    SM: RaftStateMachine<TypeConfig>,
{
    if !raft.is_leader() {
        let leader = raft.metrics().borrow_watched().current_leader;
        return LeaderReply::NotLeader { leader };
    }
    // A leader cut off from its quorum still believes it leads (openraft does not step down by
    // itself), while the others may elect a new leader, which keeps lease time from then on. It
    // must stop renewing before that can happen: only while a quorum acknowledged it within
    // the shortest election timeout, before which no follower grants a vote.
    let lease = std::time::Duration::from_millis(raft.config().election_timeout_min);
    let fresh = {
        let m = raft.metrics();
        let m = m.borrow_watched();
        let alone = m.membership_config.membership().voter_ids().eq([m.id]);
        alone || m.last_quorum_acked.is_some_and(|t| t.elapsed() < lease)
    };
    if !fresh {
        return LeaderReply::NotLeader { leader: None };
    }
    match f() {
        Ok(v) => LeaderReply::Done(v),
        Err(e) => LeaderReply::Failed(e),
    }
}
