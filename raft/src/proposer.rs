//! [`RaftProposer`]: the store's `Propose` over the replicated log.
//!
//! A write is proposed on this member's raft; if this member does not lead, it is forwarded to
//! the leader (`forward.rs`), and once the leader answers, this member waits until it has
//! applied the entry itself, so a client reading here afterwards sees its write. Clients never
//! need to know who leads.
//!
//! While there is no usable leader (an election, a leader whose quorum lease lapsed, a leader
//! transfer, the leader unreachable) the write is retried every backoff until the request's
//! deadline (etcd's request timeout: 5 s plus two election timeouts). Then it fails as etcd's
//! would: `NoLeader` when no leader is known, `Timeout` otherwise; a write whose entry a new
//! leader overwrote fails with `LeaderChanged`.
//!
//! MoveLeader (etcd's) asks openraft's leader transfer and waits until the target leads.
//!
//! A linearizable read's barrier gets the leader's read index (here or from the leader,
//! `leader.rs`), in rounds shared by concurrent readers (`read.rs`), then waits until this
//! member has applied that index. Lease renewals and TimeToLive are answered by the leader's
//! lease clock the same way. These requests are safe to repeat, so any failure is retried
//! until the deadline, with the same errors at the end.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use keelson_store::{
    ApplyResponse, Command, Error, LeaseStatus, MemberChange, MemberInfo, Propose, RaftStatus,
};
use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use openraft::Instant as _;
use openraft::Raft;
use tokio::time::Instant;

use crate::applied::{AppliedIndex, Stopped};
use crate::forward::{propose_here, ForwardReply, ForwardRequest, Forwarder, Rpc, SendError};
use crate::forward_batch::Batcher;
use crate::leader::{
    on_lease_clock, read_index_here, LeaderReply, LeaseClock, LeaseRequest, LeaseTtl,
    ReadIndexRequest,
};
use crate::network::PeerConfig;
use crate::read::ReadRounds;
use crate::types::{Member, Outcome, TypeConfig};

/// The proposer of a replicated member. Cheap to clone.
pub struct RaftProposer<SM: RaftStateMachine<TypeConfig>> {
    inner: Arc<Inner<SM>>,
}

impl<SM: RaftStateMachine<TypeConfig>> Clone for RaftProposer<SM> {
    fn clone(&self) -> Self {
        RaftProposer {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<SM: RaftStateMachine<TypeConfig>> {
    raft: Raft<TypeConfig, SM>,
    /// This member's applied index (the state machine's), to wait on.
    applied: Arc<AppliedIndex>,
    me: u64,
    forwarder: Arc<Forwarder>,
    /// Forwarded writes, batched per leader.
    batcher: Batcher,
    request_timeout: Duration,
    /// How long one attempt of a repeatable request on the leader (a read index, a lease call)
    /// may take before it is sent again, to the newest leader: a leader that stopped answering
    /// (paused, cut off) must not hold a keep-alive until the request's deadline, by which time
    /// the lease would have run out on the new leader.
    leader_attempt: Duration,
    backoff: Duration,
    leases: Arc<dyn LeaseClock>,
    /// `--experimental-lease-read`
    lease_read: bool,
    reads: Arc<ReadRounds>,
}

/// How a [`RaftProposer`] reads and keeps lease time.
pub struct ReadOptions {
    /// This member's lease clock (used while it leads).
    pub leases: Arc<dyn LeaseClock>,
    /// `--experimental-lease-read`: see `leader.rs`.
    pub lease_read: bool,
}

impl<SM: RaftStateMachine<TypeConfig>> RaftProposer<SM> {
    /// The proposer of member `me`. `election_timeout` and `heartbeat` are the member's raft
    /// timing; `peer` the transport limits (forwarded requests obey them too).
    pub(crate) fn new(
        raft: Raft<TypeConfig, SM>,
        applied: Arc<AppliedIndex>,
        me: u64,
        peer: PeerConfig,
        election_timeout: Duration,
        heartbeat: Duration,
        read: ReadOptions,
    ) -> RaftProposer<SM> {
        let forwarder = Arc::new(Forwarder::new(peer).from(me));
        RaftProposer {
            inner: Arc::new(Inner {
                raft,
                applied,
                me,
                forwarder: Arc::clone(&forwarder),
                batcher: Batcher::new(forwarder),
                // etcd's ReqTimeout: 5 s plus two election timeouts.
                request_timeout: Duration::from_secs(5) + 2 * election_timeout,
                leader_attempt: 2 * election_timeout,
                backoff: heartbeat.max(Duration::from_millis(10)),
                leases: read.leases,
                lease_read: read.lease_read,
                reads: Arc::default(),
            }),
        }
    }

    /// Describes this member (`member`: its name and URLs) in the replicated membership,
    /// retrying until it is or raft stops. Run it once after start: `--initial-cluster` carries
    /// only peer URLs, so the others learn this member's client URLs from this entry.
    pub async fn publish(&self, member: Member) {
        let inner = &self.inner;
        loop {
            let req = ForwardRequest::Publish {
                id: inner.me,
                member: member.clone(),
            };
            match inner.write(req).await {
                Ok(Outcome::Done) => {
                    let m = inner.raft.metrics();
                    let m = m.borrow_watched();
                    if m.membership_config.membership().get_node(&inner.me) == Some(&member) {
                        tracing::info!(member = inner.me, "published {member:?}");
                        return;
                    }
                }
                Ok(_) => {}
                Err(Error::Stopped) => return,
                Err(e) => tracing::debug!("publishing this member: {e}; retrying"),
            }
            tokio::time::sleep(inner.backoff).await;
        }
    }
}

impl<SM: RaftStateMachine<TypeConfig>> Inner<SM> {
    /// Proposes `req` here or on the leader, retrying while that is safe (see `forward.rs`),
    /// and waits until this member applied it.
    async fn write(&self, req: ForwardRequest) -> Result<Outcome, Error> {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            // A leader cut off from its quorum accepts the entry while its lease lasts, and
            // openraft then waits for the commit without end: the deadline bounds it, and the
            // outcome is unknown (the entry may yet commit), as etcd's `request timed out`.
            // A follower that knows its leader forwards at once; asking its own raft first
            // would only cost a round through its core to learn the same thing.
            let leader = self.raft.metrics().borrow_watched().current_leader;
            let here = match leader {
                Some(leader) if leader != self.me => ForwardReply::NotLeader {
                    leader: Some(leader),
                },
                _ => tokio::time::timeout_at(deadline, propose_here(&self.raft, req.clone()))
                    .await
                    .map_err(|_| Error::Timeout)?,
            };
            let reply = match here {
                ForwardReply::NotLeader {
                    leader: Some(leader),
                } if leader != self.me => self.forward(leader, &req, deadline).await?,
                other => other,
            };
            match reply {
                ForwardReply::Applied { index, outcome } => {
                    self.applied_here(index, deadline).await?;
                    return Ok(outcome);
                }
                ForwardReply::Failed(e) => return Err(e),
                ForwardReply::NotLeader { .. } => {
                    if Instant::now() + self.backoff >= deadline {
                        return Err(self.deadline_error());
                    }
                    tokio::time::sleep(self.backoff).await;
                }
            }
        }
    }

    /// Waits until this member has applied `index` (a write proposed here was, before its
    /// outcome came back; one forwarded to the leader, or a read index, may not be yet).
    async fn applied_here(&self, index: u64, deadline: Instant) -> Result<(), Error> {
        match tokio::time::timeout_at(deadline, self.applied.wait(index)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Stopped)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Answers a request only the leader can serve: `here` on this member, else `rpc` with
    /// `req` on the member believed to lead, retried after any failure until `deadline`.
    async fn ask_leader<T, Req, F, Fut>(
        &self,
        rpc: Rpc,
        req: &Req,
        deadline: Instant,
        here: F,
    ) -> Result<T, Error>
    where
        T: serde::de::DeserializeOwned,
        Req: serde::Serialize,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = LeaderReply<T>>,
    {
        loop {
            let reply = match here().await {
                LeaderReply::NotLeader {
                    leader: Some(leader),
                } if leader != self.me => self.call_leader(rpc, leader, req, deadline).await,
                other => other,
            };
            match reply {
                LeaderReply::Done(v) => return Ok(v),
                LeaderReply::Failed(e) => return Err(e),
                LeaderReply::NotLeader { .. } => {
                    if Instant::now() + self.backoff >= deadline {
                        return Err(self.deadline_error());
                    }
                    tokio::time::sleep(self.backoff).await;
                }
            }
        }
    }

    /// `rpc` on member `leader`; any failure is `NotLeader`, for the caller to retry.
    async fn call_leader<T, Req>(
        &self,
        rpc: Rpc,
        leader: u64,
        req: &Req,
        deadline: Instant,
    ) -> LeaderReply<T>
    where
        T: serde::de::DeserializeOwned,
        Req: serde::Serialize,
    {
        let Some(node) = self.node(leader) else {
            return LeaderReply::NotLeader { leader: None };
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = left.min(self.leader_attempt);
        match self.forwarder.call(rpc, leader, &node, req, attempt).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!("{rpc:?} on leader {leader:x}: {e:?}; retrying");
                LeaderReply::NotLeader { leader: None }
            }
        }
    }

    /// The error of a request whose deadline passed without a usable leader (etcd's).
    fn deadline_error(&self) -> Error {
        match self.raft.metrics().borrow_watched().current_leader {
            Some(_) => Error::Timeout,
            None => Error::NoLeader,
        }
    }

    fn node(&self, id: u64) -> Option<Member> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// One read-index round (`read.rs`): the leader's read index.
    async fn read_index(&self) -> Result<u64, Error> {
        let deadline = Instant::now() + self.request_timeout;
        let req = ReadIndexRequest {
            lease_read: self.lease_read,
        };
        self.ask_leader(Rpc::ReadIndex, &req, deadline, || {
            read_index_here(&self.raft, self.lease_read)
        })
        .await
    }

    /// Sends `req` to `leader`; a request the leader never saw comes back as `NotLeader`, so
    /// the caller retries it.
    async fn forward(
        &self,
        leader: u64,
        req: &ForwardRequest,
        deadline: Instant,
    ) -> Result<ForwardReply, Error> {
        let Some(node) = self.node(leader) else {
            return Ok(ForwardReply::NotLeader { leader: None });
        };
        match self
            .batcher
            .send(leader, &node, req.clone(), deadline)
            .await
        {
            Ok(reply) => Ok(reply),
            Err(SendError::NotSent(why)) => {
                tracing::debug!("forwarding to leader {leader:x}: {why}; retrying");
                Ok(ForwardReply::NotLeader { leader: None })
            }
            Err(SendError::Unknown(why)) => {
                tracing::warn!("forwarding to leader {leader:x}: {why}");
                Err(Error::Timeout)
            }
        }
    }
}

impl<SM: RaftStateMachine<TypeConfig>> Propose for RaftProposer<SM> {
    fn propose(&self, cmd: Command) -> BoxFuture<'static, keelson_store::Result<ApplyResponse>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let req = ForwardRequest::Command(Bytes::from(cmd.encode()));
            match inner.write(req).await? {
                Outcome::Applied(r) => Ok(r),
                Outcome::Rejected(e) => Err(e),
                Outcome::Done => Err(Error::InvalidArgument(
                    "a command's entry answered without a response".into(),
                )),
            }
        })
    }

    fn is_leader(&self) -> bool {
        self.inner.raft.is_leader()
    }

    fn propose_as_leader(
        &self,
        cmd: Command,
    ) -> BoxFuture<'static, keelson_store::Result<ApplyResponse>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let req = ForwardRequest::Command(Bytes::from(cmd.encode()));
            let deadline = Instant::now() + inner.request_timeout;
            let reply = tokio::time::timeout_at(deadline, propose_here(&inner.raft, req))
                .await
                .map_err(|_| Error::Timeout)?;
            match reply {
                ForwardReply::Applied { outcome, .. } => match outcome {
                    Outcome::Applied(r) => Ok(r),
                    Outcome::Rejected(e) => Err(e),
                    Outcome::Done => Err(Error::InvalidArgument(
                        "a command's entry answered without a response".into(),
                    )),
                },
                ForwardReply::NotLeader { .. } => Err(Error::LeaderChanged),
                ForwardReply::Failed(e) => Err(e),
            }
        })
    }

    fn read_barrier(&self) -> BoxFuture<'static, keelson_store::Result<()>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let deadline = Instant::now() + inner.request_timeout;
            let round = {
                let inner = Arc::clone(&inner);
                move || {
                    let inner = Arc::clone(&inner);
                    async move { inner.read_index().await }
                }
            };
            let index = match tokio::time::timeout_at(deadline, inner.reads.join(round)).await {
                Ok(r) => r?,
                Err(_) => return Err(inner.deadline_error()),
            };
            inner.applied_here(index, deadline).await
        })
    }

    fn renew_lease(&self, id: i64) -> Option<BoxFuture<'static, keelson_store::Result<i64>>> {
        let inner = Arc::clone(&self.inner);
        Some(Box::pin(async move {
            let deadline = Instant::now() + inner.request_timeout;
            inner
                .ask_leader(Rpc::LeaseRenew, &LeaseRequest { id }, deadline, || {
                    std::future::ready(on_lease_clock(&inner.raft, || inner.leases.renew(id)))
                })
                .await
        }))
    }

    fn lease_time_to_live(
        &self,
        id: i64,
    ) -> Option<BoxFuture<'static, keelson_store::Result<LeaseStatus>>> {
        let inner = Arc::clone(&self.inner);
        Some(Box::pin(async move {
            let deadline = Instant::now() + inner.request_timeout;
            let ttl: LeaseTtl = inner
                .ask_leader(Rpc::LeaseTimeToLive, &LeaseRequest { id }, deadline, || {
                    std::future::ready(on_lease_clock(&inner.raft, || {
                        inner.leases.time_to_live(id).map(LeaseTtl::from)
                    }))
                })
                .await?;
            Ok(ttl.into())
        }))
    }

    fn status(&self) -> Option<RaftStatus> {
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        Some(RaftStatus {
            leader: m.current_leader.unwrap_or(0),
            term: m.current_term,
            commit_index: m.local_committed.map_or(0, |c| c.index),
            applied_index: m.last_applied.map_or(0, |a| a.index),
            is_learner: {
                let ms = m.membership_config.membership();
                ms.get_node(&self.inner.me).is_some() && !ms.voter_ids().any(|v| v == self.inner.me)
            },
        })
    }

    fn has_leader(&self) -> BoxFuture<'static, bool> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            // openraft keeps a leader known until a higher vote replaces it (with pre-vote an
            // isolated follower never votes; an isolated leader never steps down), so liveness
            // is judged by the leader lease, `election_timeout_max`: how long a follower trusts
            // the leader it last heard from and a leader its quorum's last acknowledgement.
            let lease = Duration::from_millis(inner.raft.config().election_timeout_max);
            let (leader, acked, alone) = {
                let m = inner.raft.metrics();
                let m = m.borrow_watched();
                let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
                (m.current_leader, m.last_quorum_acked, voters == [inner.me])
            };
            match leader {
                None => false,
                Some(l) if l == inner.me => alone || acked.is_some_and(|t| t.elapsed() < lease),
                Some(_) => inner
                    .raft
                    .with_raft_state(move |st| {
                        st.vote_last_modified().is_some_and(|t| t.elapsed() < lease)
                    })
                    .await
                    .unwrap_or(false),
            }
        })
    }

    fn change_members(
        &self,
        change: MemberChange,
    ) -> Option<BoxFuture<'static, keelson_store::Result<()>>> {
        let inner = Arc::clone(&self.inner);
        Some(Box::pin(async move {
            match inner.write(ForwardRequest::Members(change.into())).await? {
                Outcome::Rejected(e) => Err(e),
                _ => Ok(()),
            }
        }))
    }

    fn move_leader(&self, target: u64) -> Option<BoxFuture<'static, keelson_store::Result<()>>> {
        let inner = Arc::clone(&self.inner);
        Some(Box::pin(async move {
            // etcd's order: a member that does not lead refuses first, then a target that is
            // not a voter (a learner cannot lead).
            let (leads, voter) = {
                let m = inner.raft.metrics();
                let m = m.borrow_watched();
                let voter = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == target);
                (m.current_leader == Some(inner.me), voter)
            };
            if !leads {
                return Err(Error::NotLeader);
            }
            if !voter {
                return Err(Error::BadLeaderTransferee);
            }
            if target == inner.me {
                return Ok(());
            }
            inner
                .raft
                .trigger()
                .transfer_leader(target)
                .await
                .map_err(|_| Error::Stopped)?;
            // As etcd's, the old leader answers once it sees the target lead, within the
            // request timeout.
            inner
                .raft
                .wait(Some(inner.request_timeout))
                .metrics(|m| m.current_leader == Some(target), "leadership moved")
                .await
                .map_err(|e| match e {
                    openraft::metrics::WaitError::Timeout(..) => Error::TimeoutLeaderTransfer,
                    openraft::metrics::WaitError::ShuttingDown => Error::Stopped,
                })?;
            Ok(())
        }))
    }

    fn members(&self) -> Option<Vec<MemberInfo>> {
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        Some(
            membership
                .nodes()
                .map(|(id, node)| MemberInfo {
                    id: *id,
                    name: node.name.clone(),
                    peer_urls: node.peer_urls.clone(),
                    client_urls: node.client_urls.clone(),
                    is_learner: !voters.contains(id),
                })
                .collect(),
        )
    }
}
