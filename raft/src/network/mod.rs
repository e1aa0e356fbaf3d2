//! The peer transport: how members exchange raft messages, over gRPC on their peer URLs.
//!
//! Each member serves the `RaftPeer` service (`proto/protos/raft.proto`, served by
//! `peer_service.rs`) and reaches the others through [`PeerNetwork`], openraft's network factory
//! (`client.rs`). The schema is small on purpose: openraft's requests and responses travel as
//! opaque bytes (`codec.rs`, postcard); only the snapshot stream has structure (`snapshot.rs`).
//!
//! ## Invariants
//! - **A message reaches the member it was meant for, or nobody.** Every call names its target
//!   member ID (metadata `keelson-raft-target`) and the receiver refuses a call meant for another
//!   member: a peer URL that now points at a different member (a replaced machine, a reused port)
//!   must not receive votes or entries addressed to the old one.
//! - **No snapshot is installed unless it arrived whole and intact**: per-chunk crc32, offsets,
//!   announced size, whole-snapshot crc32, a size bound and a time bound (`snapshot.rs`). A
//!   failed transfer is retried by openraft from scratch.
//! - **Every call is bounded in time.** Unary calls use openraft's `RPCOption::soft_ttl`, so they
//!   fail before openraft abandons them; a snapshot must make progress within `soft_ttl` per chunk
//!   and finish (install included) within [`PeerConfig::snapshot_timeout`].
//! - **Failures are classified for openraft's retry policy**: a peer that cannot be reached or
//!   refuses us is `Unreachable` (openraft backs off before retrying); a call that ran out of time
//!   is `Timeout`; a transient break of a working connection is `NetworkError` (openraft retries
//!   at once, then backs off after repeated ones). See `client.rs` for the table.
//! - **One connection per peer and purpose**, created lazily and re-established by tonic when it
//!   breaks: replication and heartbeats share one HTTP/2 connection (multiplexed, so a large
//!   append does not block a heartbeat's stream), snapshots use a second one so a long transfer
//!   does not compete with replication on one TCP connection.
//! - **No message exceeds [`PeerConfig::max_message_bytes`]**: the receiver refuses larger ones,
//!   and the sender sends a shorter prefix of a too-large append (answering openraft with a
//!   partial success, which makes it send the rest next). Every member must use the same limit.
//!
//! Not done here: TLS on peer URLs (`https://` peers are refused as unreachable), a cluster ID
//! check between members, and pipelined (streaming) AppendEntries: openraft sends appends one at
//! a time over the unary call.

mod client;
mod codec;
pub(crate) mod snapshot;
mod stream;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use client::{PeerClient, PeerNetwork};
pub(crate) use codec::{decode, encode};

/// Limits of the peer transport. Every member of a cluster must use the same values.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The largest encoded raft message a member sends or accepts (an AppendEntries batch, a
    /// snapshot chunk). Must exceed the largest single entry (etcd's `--max-request-bytes` plus
    /// framing) or replication to a follower stops at that entry.
    pub max_message_bytes: usize,
    /// The largest snapshot a member accepts.
    pub max_snapshot_bytes: u64,
    /// How long one snapshot transfer may take: receiving it (on the follower) and sending it
    /// until the follower answered that it installed it (on the leader).
    pub snapshot_timeout: Duration,
    /// How long connecting to a peer may take.
    pub connect_timeout: Duration,
}

impl Default for PeerConfig {
    fn default() -> PeerConfig {
        PeerConfig {
            max_message_bytes: 64 << 20,
            max_snapshot_bytes: 1 << 30,
            snapshot_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

impl PeerConfig {
    /// The gRPC decoding limit: a message plus its protobuf framing.
    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.max_message_bytes + 4096
    }
}

/// The metadata key naming the member a call is meant for (hex member ID, as etcd prints it).
pub(crate) const TARGET_HEADER: &str = "keelson-raft-target";

/// The metadata key naming the member a call comes from (hex member ID), so that a member's
/// peers can refuse it once it has been removed from the cluster.
pub(crate) const FROM_HEADER: &str = "keelson-raft-from";

/// What a removed member's raft calls are refused with (etcd's `errMemberRemoved`).
pub(crate) const REMOVED_MESSAGE: &str = "the member has been permanently removed from the cluster";
