//! # keelson-raft: replicating the store's command log with openraft
//!
//! A write becomes a [`Proposal`] (one encoded `keelson_store::Command`), is appended to the
//! leader's raft log, replicated to a quorum, committed, and applied in log order on every member
//! through the [`StateMachine`] adapter into the store, which answers with an [`Outcome`].
//!
//! - `types.rs`: the openraft type configuration ([`TypeConfig`]): member IDs are etcd's `u64`
//!   member IDs, a [`Member`] carries the name and URLs, entries carry [`Proposal`] bytes.
//! - `log/`: [`LogStore`], openraft's `RaftLogStorage`: the vote and the entries, in memory for
//!   reading and in our own segmented write-ahead log for durability (`log/wal/` alone knows the
//!   on-disk layout), with group fsync (`log/flush.rs`).
//! - `state_machine/`: [`StateMachine`], openraft's `RaftStateMachine`, over any store that
//!   implements [`Apply`] (the contract keelson-store implements).
//! - `outcome.rs`: what applying an entry answers, and its lossless wire form.
//! - `proposer.rs`, `forward.rs`: [`RaftProposer`], the store's `Propose` over raft; writes
//!   reaching a follower are forwarded to the leader over the peer transport.
//! - `leader.rs`, `read.rs`: linearizable reads on any member (the leader's read index, in
//!   rounds shared by concurrent readers) and the leader's lease clock reached from any member.
//! - `member.rs`: [`start`]: a replicated member from etcd's flags (the store's `Replica` as
//!   the state machine, bootstrap from `--initial-cluster`, peer server, proposer).
//! - `membership.rs`, `join.rs`: membership changes on the leader (MemberAdd, MemberPromote,
//!   MemberRemove, MemberUpdate) and how an added member learns its [`identity`].
//!
//! ## Durability: what is fsynced when
//! openraft's safety rests on the log and the vote surviving a crash exactly as acknowledged:
//! - **vote**: `save_vote` returns only after the vote record is fsynced. A vote that could be
//!   lost lets a member vote twice in one term.
//! - **append**: entries are readable when `append` returns; its `IOFlushed` callback fires only
//!   after an fsync covering them. openraft counts an entry toward the commit quorum only once
//!   it is flushed, so nothing is committed on the strength of a copy that a crash could lose.
//!   Callbacks fire in write order (openraft's debug builds assert that).
//! - **truncate_after / purge**: return only after their record is fsynced; purge deletes old
//!   segment files only after that.
//! - fsyncs happen on tokio's blocking pool, never on the executor, and writes that arrive while
//!   one is running share the next (group commit). Every write goes to the file in the order
//!   openraft issued it and one fsync covers everything written before it, so no notification
//!   overtakes an earlier write. A failed write or fsync stops the log for good.
//! - **apply**: the store applies a batch of commands and records the raft position
//!   ([`AppliedState`]: last applied log id and membership) in the same atomic, fsynced backend
//!   batch, before any client is answered; so the committed index need not be persisted.
//!
//! ## Integrity: crc32 on every record
//! Every WAL frame carries a crc32 of its payload and one of its header (length included), checked
//! when the log is read at startup. A damaged frame at the very end of the newest segment is a
//! torn write from a crash (never acknowledged) and is cut off; damage anywhere else, or an
//! entry missing after replay, is loss of acknowledged data and opening fails with
//! [`LogError::Corrupt`]: the member refuses to start rather than forget what it promised.

mod applied;
mod corrupt;
mod forward;
mod forward_batch;
mod join;
mod leader;
mod log;
#[cfg(test)]
mod mem_store;
mod member;
mod membership;
mod network;
mod outcome;
mod peer_service;
mod proposer;
mod read;
mod removed;
mod state_machine;
mod types;

pub use join::identity;
pub use leader::LeaseClock;
pub use log::{LogError, LogReader, LogStore, DEFAULT_SEGMENT_BYTES};
pub use member::{initial_members, start, MemberOptions, RaftHandle, StoreRaft};
pub use network::{PeerClient, PeerConfig, PeerNetwork};
pub use peer_service::{serve_peers, PeerService};
pub use proposer::{RaftProposer, ReadOptions};
pub use state_machine::{AppliedState, Apply, SnapshotBuilder, StateMachine};
pub use types::{
    Entry, LogId, Member, Membership, Outcome, Proposal, StoredMembership, TypeConfig, Vote,
};
