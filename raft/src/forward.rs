//! Forwarding: how a write that reaches a follower gets into the leader's log.
//!
//! Clients may write to any member. A member that does not lead hands the write to the member
//! it believes leads, over the peer transport's `Forward` call; the leader proposes it as if a
//! client had sent it there and answers with the outcome and the entry's log index. The
//! follower then waits until it has applied that index itself before answering, so a client
//! that reads from the member it wrote to sees its own write (the `Propose` contract).
//!
//! Invariants:
//! - **A write is retried only when it is known not to be in the log.** openraft's
//!   `ForwardToLeader` is returned before anything is appended, and a call the peer refused
//!   before it reached raft (unreachable, wrong member, raft stopped) never proposed anything:
//!   both are retried against the newest leader until the deadline. A call that may have
//!   reached the leader and then failed (timeout, broken connection) is *not* retried, since
//!   the entry may still commit; the client gets `Timeout`, as etcd answers then.
//! - The leader answers with deterministic outcomes only; `LogEntryDiscarded` (its entry was
//!   overwritten by a new leader's log) becomes `LeaderChanged`, a stopped raft `Stopped`.
//! - A member's published description (its client URLs, which `--initial-cluster` does not
//!   carry) travels the same way and becomes a membership entry that re-describes only that
//!   member (`ChangeMembers::SetNodes`), so every member's MemberList lists them all.
//! - Membership changes (MemberAdd and the like) travel the same way too and are carried out
//!   by the leader (`membership.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keelson_proto::keelsonraftpb::raft_peer_client::RaftPeerClient;
use keelson_proto::keelsonraftpb::RaftMessage;
use keelson_store::Error;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::storage::RaftStateMachine;
use openraft::{ChangeMembers, Raft};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::membership::MemberOp;
use crate::network::{decode, encode, PeerConfig, FROM_HEADER, TARGET_HEADER};
use crate::types::{Member, Outcome, Proposal, TypeConfig};

/// What a follower hands the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ForwardRequest {
    /// One encoded `keelson_store::Command`.
    Command(Bytes),
    /// Member `id` describes itself (name and URLs) for the membership.
    Publish { id: u64, member: Member },
    /// A membership change (`membership.rs`).
    Members(MemberOp),
}

/// What the leader answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ForwardReply {
    /// Committed and applied on the leader at log `index`.
    Applied { index: u64, outcome: Outcome },
    /// Not proposed: the receiver does not lead (`leader` is whom it believes leads).
    NotLeader { leader: Option<u64> },
    /// Not known to be applied, for the reason given.
    Failed(Error),
}

type WriteResult =
    Result<ClientWriteResponse<TypeConfig>, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>;

/// Proposes `req` on this member's raft: what the leader does with a forwarded request, and
/// what every member tries first with its own clients' writes.
pub(crate) async fn propose_here<SM>(
    raft: &Raft<TypeConfig, SM>,
    req: ForwardRequest,
) -> ForwardReply
where
    SM: RaftStateMachine<TypeConfig>,
{
    let r = match req {
        ForwardRequest::Command(b) => raft.client_write(Proposal::from_bytes(b)).await,
        ForwardRequest::Publish { id, member } => {
            let known = {
                let m = raft.metrics();
                let m = m.borrow_watched();
                m.membership_config.membership().get_node(&id).cloned()
            };
            match known {
                // Nothing to change (and nothing to wait for: the entry that described it so
                // is applied here, since the membership in the metrics is the applied one or
                // newer; an index of 0 is always reached).
                Some(k) if k == member => {
                    return ForwardReply::Applied {
                        index: 0,
                        outcome: Outcome::Done,
                    }
                }
                Some(_) => {
                    raft.change_membership(
                        ChangeMembers::SetNodes(BTreeMap::from([(id, member)])),
                        true,
                    )
                    .await
                }
                None => return ForwardReply::Failed(Error::MemberNotFound),
            }
        }
        ForwardRequest::Members(op) => return crate::membership::change_here(raft, op).await,
    };
    reply_of(r)
}

pub(crate) fn reply_of(r: WriteResult) -> ForwardReply {
    match r {
        Ok(resp) => ForwardReply::Applied {
            index: resp.log_id.index,
            outcome: resp.data,
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => ForwardReply::NotLeader {
            leader: f.leader_id,
        },
        Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
            ForwardReply::Failed(Error::LeaderChanged)
        }
        Err(RaftError::APIError(e)) => ForwardReply::Failed(Error::InvalidArgument(e.to_string())),
        Err(RaftError::Fatal(_)) => ForwardReply::Failed(Error::Stopped),
    }
}

/// Why a forwarded request got no answer.
#[derive(Debug, Clone)]
pub(crate) enum SendError {
    /// The peer refused it before raft saw it: safe to retry.
    NotSent(String),
    /// It may have been proposed.
    Unknown(String),
}

/// Sends forwarded requests (writes, read-index and lease calls) to the leader, over one cached
/// connection per member (separate from the replication connections, so a burst of forwarded
/// requests does not delay heartbeats).
pub(crate) struct Forwarder {
    cfg: Arc<PeerConfig>,
    channels: Mutex<HashMap<u64, (String, Channel)>>,
    /// The member sending, named on every call (`FROM_HEADER`); none for a joining member.
    from: Option<u64>,
}

impl Forwarder {
    pub(crate) fn new(cfg: PeerConfig) -> Forwarder {
        Forwarder {
            cfg: Arc::new(cfg),
            channels: Mutex::default(),
            from: None,
        }
    }

    /// Names member `me` as the sender of every call.
    pub(crate) fn from(mut self, me: u64) -> Forwarder {
        self.from = Some(me);
        self
    }

    fn channel(&self, target: u64, node: &Member) -> Result<Channel, SendError> {
        let url = node.peer_urls.first().cloned().unwrap_or_default();
        let mut channels = self.channels.lock();
        if let Some((u, ch)) = channels.get(&target) {
            if *u == url {
                return Ok(ch.clone());
            }
        }
        if !url.starts_with("http://") {
            return Err(SendError::NotSent(format!(
                "member {target:x}: unusable peer URL {url:?}"
            )));
        }
        let ch = Endpoint::from_shared(url.clone())
            .map_err(|e| SendError::NotSent(format!("peer URL {url}: {e}")))?
            .connect_timeout(self.cfg.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(target, (url, ch.clone()));
        Ok(ch)
    }

    /// Makes call `rpc` with `req` on member `target`, waiting at most `timeout` for the answer.
    pub(crate) async fn call<Req, Resp>(
        &self,
        rpc: Rpc,
        target: u64,
        node: &Member,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, SendError>
    where
        Req: Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let channel = self.channel(target, node)?;
        let max = self.cfg.max_frame_bytes();
        let mut client = RaftPeerClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let payload = encode(req).map_err(SendError::NotSent)?;
        let mut call = tonic::Request::new(RaftMessage { payload });
        call.set_timeout(timeout);
        let id = MetadataValue::try_from(format!("{target:x}"))
            .expect("a hex number is a valid header value");
        call.metadata_mut().insert(TARGET_HEADER, id);
        if let Some(me) = self.from {
            let me = MetadataValue::try_from(format!("{me:x}"))
                .expect("a hex number is a valid header value");
            call.metadata_mut().insert(FROM_HEADER, me);
        }
        let answer = match rpc {
            Rpc::Forward => tokio::time::timeout(timeout, client.forward(call)).await,
            Rpc::ReadIndex => tokio::time::timeout(timeout, client.read_index(call)).await,
            Rpc::LeaseRenew => tokio::time::timeout(timeout, client.lease_renew(call)).await,
            Rpc::LeaseTimeToLive => {
                tokio::time::timeout(timeout, client.lease_time_to_live(call)).await
            }
            Rpc::Members => tokio::time::timeout(timeout, client.members(call)).await,
        };
        let answer = match answer {
            Err(_) => return Err(SendError::Unknown(format!("{rpc:?} timed out"))),
            Ok(Ok(a)) => a,
            Ok(Err(s)) => {
                let why = format!("member {target:x}: {:?}: {}", s.code(), s.message());
                return Err(match s.code() {
                    // Refused before the call reached raft: nothing was proposed.
                    Code::Unavailable
                    | Code::FailedPrecondition
                    | Code::InvalidArgument
                    | Code::Unimplemented => SendError::NotSent(why),
                    _ => SendError::Unknown(why),
                });
            }
        };
        decode(&answer.into_inner().payload, "forward answer").map_err(SendError::Unknown)
    }
}

/// The peer calls a [`Forwarder`] makes on the leader.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rpc {
    Forward,
    ReadIndex,
    LeaseRenew,
    LeaseTimeToLive,
    /// The membership as a member sees it (`join.rs`); asked of any member.
    Members,
}
