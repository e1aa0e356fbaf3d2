//! The openraft type configuration: what a log entry carries, who the members are, and what
//! applying an entry answers.
//!
//! - A member is named by its etcd member ID (`u64`) and described by [`Member`]: the name and
//!   URLs `etcdctl member list` shows. Membership entries carry these, so every member learns the
//!   peers' addresses from the replicated log itself.
//! - A normal entry carries a [`Proposal`]: the bytes of one [`keelson_store::Command`], in the
//!   store's own encoding (`Command::encode`). The log never interprets them; only the state
//!   machine decodes them, so the log format does not change when a command gains a field.
//! - Applying an entry answers an [`Outcome`] (see `outcome.rs`).

use std::fmt;

use bytes::Bytes;
use keelson_store::Command;
use serde::{Deserialize, Serialize};

pub use crate::outcome::Outcome;

openraft::declare_raft_types!(
    /// Keelson's raft types: etcd member IDs, [`Member`] descriptions, [`Proposal`] payloads and
    /// [`Outcome`] responses; everything else is openraft's default (terms are `u64`, a leader
    /// is `(term, node)`, tokio runtime).
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = u64,
        Node = Member,
);

/// A log id of this configuration: `(term, leader node, index)`.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote of this configuration.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A log entry of this configuration.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A membership config of this configuration.
pub type Membership = openraft::Membership<u64, Member>;
/// A membership config with the log id that introduced it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;

/// What the cluster knows about one member besides its ID: what etcd's `Member` message holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's `--name`.
    pub name: String,
    /// URLs the other members reach it on (raft traffic).
    pub peer_urls: Vec<String>,
    /// URLs clients reach it on (etcd gRPC).
    pub client_urls: Vec<String>,
}

/// The payload of a normal log entry: one encoded [`Command`].
///
/// Kept as bytes so replicating and storing an entry never re-encodes it; `Bytes` makes the
/// clones that replication does (one per follower) free.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    command: Bytes,
}

impl Proposal {
    /// Encodes `cmd` for the log.
    pub fn new(cmd: &Command) -> Proposal {
        Proposal {
            command: Bytes::from(cmd.encode()),
        }
    }

    /// Wraps bytes that already hold an encoded command (read back from the log).
    pub fn from_bytes(command: Bytes) -> Proposal {
        Proposal { command }
    }

    /// The encoded command.
    pub fn as_bytes(&self) -> &Bytes {
        &self.command
    }

    /// Decodes the command. Fails only if the bytes are not a command this version knows.
    pub fn command(&self) -> keelson_store::Result<Command> {
        Command::decode(&self.command)
    }
}

// Entries are logged at debug level on every append; print the command's tag and size, not a
// possibly large value.
impl fmt::Debug for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.command.first() {
            Some(tag) => write!(f, "command(tag {tag}, {} bytes)", self.command.len()),
            None => write!(f, "command(empty)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use keelson_proto::etcdserverpb::PutRequest;

    use super::*;

    #[test]
    fn proposal_round_trips_its_command() {
        let cmd = Command::Put(PutRequest {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        });
        let p = Proposal::new(&cmd);
        assert_eq!(p.command().unwrap(), cmd);
        assert_eq!(Proposal::from_bytes(p.as_bytes().clone()), p);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Proposal>(&json).unwrap(), p);
        assert_eq!(
            p.to_string(),
            format!("command(tag 1, {} bytes)", cmd.encode().len())
        );
    }

    #[test]
    fn member_serializes() {
        let m = Member {
            name: "infra1".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec!["http://127.0.0.1:2379".into()],
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Member>(&json).unwrap(), m);
    }
}
