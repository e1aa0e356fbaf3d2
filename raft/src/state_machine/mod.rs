//! openraft's state machine, over the store.
//!
//! The store is reached through the [`Apply`] trait: the contract this crate needs from
//! keelson-store (which implements it over its `Applier`). The adapter turns openraft's entry
//! stream into store batches and answers the clients waiting on them.
//!
//! Invariants:
//! - **The store is the state machine's only durable state.** Each batch of commands is applied
//!   by the store in one atomic write together with an opaque blob, [`AppliedState`]: the log id
//!   of the batch's last entry and the membership in force. So after a crash the store is
//!   exactly the state after some prefix of the log and knows which prefix; openraft re-applies
//!   from there. Blank and membership entries move the blob too (a batch with no commands).
//! - **The log is the durable record; the store is fsynced lazily**, as etcd's backend is: an
//!   entry is applied only once committed, i.e. fsynced in the logs of a quorum, so the store's
//!   batch need not be fsynced before clients are answered. The store is fsynced every
//!   [`FLUSH_EVERY`] and before a snapshot is handed to openraft ([`Apply::flush`]), and
//!   openraft purges the log only behind a snapshot: so every entry after what the store holds
//!   durably is still in the log after a crash.
//! - **Clients are answered after the batch is applied**, each with the outcome of its own
//!   command. A command that fails deterministically (same on every member) is answered with
//!   its error and changes nothing. A non-deterministic failure (I/O) or a command this version
//!   cannot decode stops the member rather than letting members diverge.
//! - **A snapshot is the store's state and its blob, taken atomically** ([`Apply::snapshot`]),
//!   so its metadata always describes exactly its data. Installing one replaces the store
//!   (blob included), then checks the blob matches the metadata the leader sent; if not, the
//!   install fails and openraft stops the member.
//! - The store's `apply` and `snapshot` may be called concurrently (snapshots are built on their
//!   own task); `snapshot` must see a state between two batches, never inside one.
//! - The current snapshot is kept in memory only: the store itself is durable, and after a
//!   restart openraft builds a new snapshot when a follower needs one.

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use keelson_store::{ApplyResponse, Command};
use openraft::storage::{
    EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta,
};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::applied::AppliedIndex;
use crate::outcome::Outcome;
use crate::types::{LogId, StoredMembership, TypeConfig};

/// Most entries given to the store as one batch (one atomic write).
const MAX_BATCH: usize = 1024;

/// How often the store's applied batches are fsynced (etcd's backend commits every 100 ms;
/// here the interval only bounds how much log a restarted member re-applies).
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// What the raft state machine needs from the store. All methods block (they do disk I/O); the
/// adapter calls them on tokio's blocking pool, one at a time.
pub trait Apply: Send + Sync + 'static {
    /// Applies `commands` (each with its raft log index, ascending) in order, and stores
    /// `applied` (opaque to the store) — all in one atomic backend batch, durable after the
    /// next [`Apply::flush`], then published to readers and watchers. `commands` may be empty: then only
    /// `applied` is stored. Returns one result per command: its response, or a deterministic
    /// error, in which case that command changed nothing. `Err` means a non-deterministic
    /// failure: nothing can be assumed about the batch and the member stops.
    fn apply(
        &self,
        commands: Vec<(u64, Command)>,
        applied: Vec<u8>,
    ) -> keelson_store::Result<Vec<keelson_store::Result<ApplyResponse>>>;

    /// The `applied` blob of the last `apply` or `restore`; `None` for a new store.
    fn applied(&self) -> keelson_store::Result<Option<Vec<u8>>>;

    /// A consistent copy of the whole store (keys, leases, auth, alarms, the blob) as of the
    /// last `apply`, and that `applied` blob, taken atomically.
    fn snapshot(&self) -> keelson_store::Result<(Option<Vec<u8>>, Vec<u8>)>;

    /// Replaces the whole store with a `snapshot` (from any member), durably, blob included.
    fn restore(&self, snapshot: &[u8]) -> keelson_store::Result<()>;

    /// Makes every batch applied so far durable (fsync).
    fn flush(&self) -> keelson_store::Result<()>;
}

/// What the store keeps for raft with every batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Members a membership entry removed (etcd's `members_removed`): peers refuse their raft
    /// messages. A member that a later entry lists again leaves the set.
    #[serde(default)]
    pub removed: BTreeSet<u64>,
}

impl AppliedState {
    /// Moves to membership `m` (entry `log_id`), recording who it removed.
    fn change_membership(&mut self, log_id: LogId, m: &crate::types::Membership) {
        let new: BTreeSet<u64> = m.nodes().map(|(id, _)| *id).collect();
        self.removed.extend(
            self.membership
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| !new.contains(id)),
        );
        self.removed.retain(|id| !new.contains(id));
        self.membership = StoredMembership::new(Some(log_id), m.clone());
    }
}

impl AppliedState {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("applied state serializes")
    }

    fn decode(blob: Option<Vec<u8>>) -> io::Result<AppliedState> {
        match blob {
            None => Ok(AppliedState::default()),
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| io::Error::other(format!("raft applied state in the store: {e}"))),
        }
    }
}

type SnapshotOf =
    Snapshot<<TypeConfig as openraft::RaftTypeConfig>::LeaderId, u64, crate::Member, Bytes>;
type Meta = SnapshotMeta<<TypeConfig as openraft::RaftTypeConfig>::LeaderId, u64, crate::Member>;

/// openraft's [`RaftStateMachine`] over a store.
pub struct StateMachine<A> {
    store: Arc<A>,
    /// The applied state as of the last batch, so `apply` need not read it back.
    state: AppliedState,
    current: Arc<Mutex<Option<SnapshotOf>>>,
    /// The last applied index, for requests waiting to see an entry applied here.
    applied: Arc<AppliedIndex>,
    /// `state.removed`, shared with the peer service, which refuses their messages.
    removed: Arc<RwLock<BTreeSet<u64>>>,
}

impl<A> Drop for StateMachine<A> {
    fn drop(&mut self) {
        self.applied.stop();
    }
}

impl<A: Apply> StateMachine<A> {
    /// Wraps `store`, reading where it is in the log.
    pub async fn new(store: Arc<A>) -> io::Result<StateMachine<A>> {
        let state = blocking(&store, |s| s.applied()).await?;
        tokio::spawn(flush_periodically(Arc::downgrade(&store)));
        let state = AppliedState::decode(state)?;
        let applied = Arc::new(AppliedIndex::default());
        applied.advance(state.last_applied.map_or(0, |l| l.index));
        let removed = Arc::new(RwLock::new(state.removed.clone()));
        Ok(StateMachine {
            store,
            state,
            current: Arc::default(),
            applied,
            removed,
        })
    }

    /// The members removed from the cluster, as applied here (shared with the peer service).
    pub(crate) fn removed_members(&self) -> Arc<RwLock<BTreeSet<u64>>> {
        Arc::clone(&self.removed)
    }

    /// This member's last applied index, to wait on (shared with the proposer).
    pub(crate) fn applied_index(&self) -> Arc<AppliedIndex> {
        Arc::clone(&self.applied)
    }

    async fn apply_batch(&mut self, batch: Vec<EntryResponder<TypeConfig>>) -> io::Result<()> {
        let Some((last, _)) = batch.last() else {
            return Ok(());
        };
        let mut next = self.state.clone();
        next.last_applied = Some(last.log_id);
        let mut commands = Vec::new();
        for (entry, _) in &batch {
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(p) => {
                    // Every member holds the same bytes; one that cannot read them must stop
                    // rather than skip the command and diverge.
                    let cmd = p.command().map_err(|e| {
                        io::Error::other(format!(
                            "entry {}: undecodable command: {e}",
                            entry.log_id
                        ))
                    })?;
                    commands.push((entry.log_id.index, cmd));
                }
                EntryPayload::Membership(m) => next.change_membership(entry.log_id, m),
            }
        }
        let blob = next.encode();
        let sent = commands.len();
        let results = applying(&self.store, move |s| s.apply(commands, blob)).await?;
        if results.len() != sent {
            return Err(io::Error::other(format!(
                "the store answered {} of {sent} commands",
                results.len()
            )));
        }
        let mut results = results.into_iter();
        *self.removed.write() = next.removed.clone();
        self.state = next;
        self.applied.advance(last.log_id.index);
        for (entry, responder) in batch {
            let outcome = match entry.payload {
                EntryPayload::Normal(_) => results.next().map_or(Outcome::Done, Outcome::of),
                _ => Outcome::Done,
            };
            if let Some(r) = responder {
                r.send(outcome);
            }
        }
        Ok(())
    }
}

impl<A: Apply> RaftStateMachine<TypeConfig> for StateMachine<A> {
    type SnapshotData = Bytes;
    type SnapshotBuilder = SnapshotBuilder<A>;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<S>(&mut self, entries: S) -> io::Result<()>
    where
        S: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut entries = entries;
        let mut batch = Vec::new();
        while let Some(item) = entries.next().await {
            batch.push(item?);
            if batch.len() == MAX_BATCH {
                self.apply_batch(std::mem::take(&mut batch)).await?;
            }
        }
        self.apply_batch(batch).await
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder<A> {
        SnapshotBuilder {
            store: Arc::clone(&self.store),
            current: Arc::clone(&self.current),
        }
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Bytes) -> io::Result<()> {
        let data = snapshot.clone();
        blocking(&self.store, move |s| s.restore(&data)).await?;
        let state = AppliedState::decode(blocking(&self.store, |s| s.applied()).await?)?;
        if state.last_applied != meta.last_log_id || state.membership != meta.last_membership {
            return Err(io::Error::other(format!(
                "installed snapshot holds state up to {:?}, its metadata says {:?}",
                state.last_applied, meta.last_log_id
            )));
        }
        self.applied
            .advance(state.last_applied.map_or(0, |l| l.index));
        *self.removed.write() = state.removed.clone();
        self.state = state;
        *self.current.lock() = Some(Snapshot {
            meta: meta.clone(),
            snapshot,
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<SnapshotOf>> {
        Ok(self.current.lock().clone())
    }
}

/// Builds a snapshot from the store, concurrently with apply.
pub struct SnapshotBuilder<A> {
    store: Arc<A>,
    current: Arc<Mutex<Option<SnapshotOf>>>,
}

impl<A: Apply> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<A> {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf> {
        let (blob, data) = blocking(&self.store, |s| s.snapshot()).await?;
        // openraft may purge the log up to this snapshot once it is returned: what the store
        // applied up to here must be durable first (module docs).
        blocking(&self.store, |s| s.flush()).await?;
        let state = AppliedState::decode(blob)?;
        let snap = Snapshot {
            meta: SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership,
            },
            snapshot: Bytes::from(data),
        };
        *self.current.lock() = Some(snap.clone());
        Ok(snap)
    }
}

/// Fsyncs the store every [`FLUSH_EVERY`] until it is dropped. A failed fsync is logged and
/// retried: nothing waits on it, and the store refuses further batches itself if its disk fails.
async fn flush_periodically<A: Apply>(store: std::sync::Weak<A>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        if let Err(e) = blocking(&store, |s| s.flush()).await {
            tracing::error!("fsyncing the applied state: {e}");
        }
    }
}

/// Runs an apply: in place on this worker thread when the runtime has others to take over its
/// tasks (`block_in_place`), else on the blocking pool. An apply no longer waits for the disk
/// (the store is fsynced lazily, module docs), so it is short CPU work, and running it here
/// saves a thread hand-off per batch on every write's path.
async fn applying<A: Apply, T: Send + 'static>(
    store: &Arc<A>,
    f: impl FnOnce(&A) -> keelson_store::Result<T> + Send + 'static,
) -> io::Result<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| f(store)).map_err(io::Error::other)
    } else {
        blocking(store, f).await
    }
}

/// Runs a store call on the blocking pool; a store error becomes an I/O error for openraft.
async fn blocking<A: Apply, T: Send + 'static>(
    store: &Arc<A>,
    f: impl FnOnce(&A) -> keelson_store::Result<T> + Send + 'static,
) -> io::Result<T> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(io::Error::other)?
        .map_err(io::Error::other)
}
