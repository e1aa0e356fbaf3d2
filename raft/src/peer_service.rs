//! The receiving side of the peer transport: the `RaftPeer` gRPC service a member serves on its
//! peer URLs, handing each message to its own openraft instance.
//!
//! - Every call must name this member as its target (metadata `keelson-raft-target`), or it is
//!   refused with `FAILED_PRECONDITION` before anything is decoded: see `network/mod.rs`.
//! - `AppendStream` is pipelined replication: a stream of appends answered in order
//!   (`network/stream.rs`); `AppendEntries` stays for single appends.
//! - A call naming (metadata `keelson-raft-from`) a member that a membership entry applied here
//!   removed is refused with `FAILED_PRECONDITION` "the member has been permanently removed
//!   from the cluster" (etcd's peers answer its `errMemberRemoved`), so a removed member cannot
//!   disturb the cluster (votes, appends as a stale leader, forwarded writes).
//! - Messages are decoded with the same codec the sender used (`network/codec.rs`); an
//!   undecodable one is refused with `INVALID_ARGUMENT` and never reaches openraft.
//! - `SnapshotResume` answers how much of a snapshot an interrupted transfer left here, so the
//!   leader's next transfer of it goes on from there (`network/snapshot.rs`).
//! - A snapshot is reassembled and verified in full (`network/snapshot.rs`) before
//!   `Raft::install_full_snapshot` sees it; a refused one answers with the check that failed.
//! - `Forward` carries a follower's client write to this member (`forward.rs`); it answers
//!   in its payload whether it proposed it, so only transport failures are gRPC errors.
//! - `ReadIndex`, `LeaseRenew` and `LeaseTimeToLive` ask this member, as leader, for a read
//!   index or its lease clock (`leader.rs`); a member that does not lead says whom it believes
//!   leads, in the payload. A service without a lease clock answers the lease calls
//!   `UNIMPLEMENTED`.
//! - `Members` answers the cluster ID and the membership; it is the one call that names no
//!   target, since its caller is a member joining the cluster that knows no IDs yet (`join.rs`).
//! - When the local raft has stopped, calls answer `UNAVAILABLE`, which the sender treats as an
//!   unreachable member and backs off from.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use keelson_proto::keelsonraftpb::raft_peer_server::{RaftPeer, RaftPeerServer};
use keelson_proto::keelsonraftpb::{RaftMessage, SnapshotChunk};
use openraft::raft::AppendEntriesRequest;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::Raft;
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use crate::leader::{
    on_lease_clock, read_index_here, LeaseClock, LeaseRequest, LeaseTtl, ReadIndexRequest,
};
use crate::network::{
    decode, encode, snapshot, PeerConfig, FROM_HEADER, REMOVED_MESSAGE, TARGET_HEADER,
};
use crate::types::TypeConfig;

/// The `RaftPeer` service of one member.
pub struct PeerService<SM: RaftStateMachine<TypeConfig>> {
    raft: Raft<TypeConfig, SM>,
    me: u64,
    cfg: Arc<PeerConfig>,
    leases: Option<Arc<dyn LeaseClock>>,
    cluster_id: u64,
    /// Set when the server shuts down: open append streams end then, so the graceful shutdown
    /// does not wait on replication sessions that would otherwise last as long as the leader.
    closing: tokio::sync::watch::Sender<bool>,
    /// Members removed from the cluster, whose calls are refused (the state machine's).
    removed: Arc<RwLock<BTreeSet<u64>>>,
    /// What an interrupted snapshot transfer left, for the next one to resume.
    partial: Arc<snapshot::Kept>,
}

impl<SM> PeerService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = Bytes>,
{
    /// The service of member `me`, whose raft is `raft`.
    pub fn new(raft: Raft<TypeConfig, SM>, me: u64, cfg: PeerConfig) -> PeerService<SM> {
        PeerService {
            raft,
            me,
            cfg: Arc::new(cfg),
            leases: None,
            cluster_id: 0,
            closing: tokio::sync::watch::Sender::new(false),
            removed: Arc::default(),
            partial: Arc::default(),
        }
    }

    /// Refuses calls from the members in `removed` (kept current by the state machine).
    pub fn with_removed(mut self, removed: Arc<RwLock<BTreeSet<u64>>>) -> PeerService<SM> {
        self.removed = removed;
        self
    }

    /// Answers the `Members` call with cluster ID `id`.
    pub fn with_cluster_id(mut self, id: u64) -> PeerService<SM> {
        self.cluster_id = id;
        self
    }

    /// Serves the lease calls from `leases`, this member's lease clock.
    pub fn with_leases(mut self, leases: Arc<dyn LeaseClock>) -> PeerService<SM> {
        self.leases = Some(leases);
        self
    }

    fn lease_clock(&self) -> Result<Arc<dyn LeaseClock>, Status> {
        self.leases.clone().ok_or_else(|| {
            Status::unimplemented(format!("member {:x} serves no lease calls", self.me))
        })
    }

    /// The tonic service, with the message size limit applied.
    pub fn into_server(self) -> RaftPeerServer<PeerService<SM>> {
        let max = self.cfg.max_frame_bytes();
        RaftPeerServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// Refuses a call not meant for this member, or from a member removed from the cluster.
    fn check_target<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let from = req
            .metadata()
            .get(FROM_HEADER)
            .and_then(|v| v.to_str().ok());
        if let Some(from) = from.and_then(|f| u64::from_str_radix(f, 16).ok()) {
            if self.removed.read().contains(&from) {
                return Err(Status::failed_precondition(REMOVED_MESSAGE));
            }
        }
        let me = format!("{:x}", self.me);
        match req.metadata().get(TARGET_HEADER).map(|v| v.to_str()) {
            Some(Ok(target)) if target == me => Ok(()),
            Some(Ok(target)) => Err(Status::failed_precondition(format!(
                "this is member {me}, not member {target}: the peer URL reaches another member"
            ))),
            _ => Err(Status::failed_precondition(format!(
                "raft call to member {me} without a valid {TARGET_HEADER} header"
            ))),
        }
    }

    fn stopped(&self, e: impl std::fmt::Display) -> Status {
        Status::unavailable(format!("raft on member {:x} is not running: {e}", self.me))
    }

    /// Decodes a unary request, runs `handle` on it, encodes the answer.
    async fn unary<Req, Resp, E, F, Fut>(
        &self,
        req: Request<RaftMessage>,
        what: &str,
        handle: F,
    ) -> Result<Response<RaftMessage>, Status>
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        E: std::fmt::Display,
        F: FnOnce(Raft<TypeConfig, SM>, Req) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        self.check_target(&req)?;
        let msg: Req = decode(&req.into_inner().payload, what).map_err(Status::invalid_argument)?;
        let answer = handle(self.raft.clone(), msg)
            .await
            .map_err(|e| self.stopped(e))?;
        let payload = encode(&answer).map_err(Status::internal)?;
        Ok(Response::new(RaftMessage { payload }))
    }
}

#[tonic::async_trait]
impl<SM> RaftPeer for PeerService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = Bytes>,
{
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.unary(req, "append request", |raft, m| async move {
            raft.append_entries(m).await
        })
        .await
    }

    type AppendStreamStream =
        std::pin::Pin<Box<dyn Stream<Item = Result<RaftMessage, Status>> + Send + 'static>>;

    /// Pipelined replication (`network/stream.rs`): requests go to openraft as they arrive and
    /// its answers go back in order. An undecodable request ends the request stream there, so
    /// the sender sees the answers stop short and starts a new session.
    async fn append_stream(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        self.check_target(&req)?;
        let me = self.me;
        let requests = req.into_inner().map_while(move |msg| {
            let decoded = msg.map_err(|s| s.to_string()).and_then(|m| {
                decode::<AppendEntriesRequest<TypeConfig>>(&m.payload, "append request")
            });
            decoded
                .inspect_err(|e| tracing::warn!(member = me, "append stream ends: {e}"))
                .ok()
        });
        let mut closing = self.closing.subscribe();
        let closed = async move {
            closing.wait_for(|c| *c).await.ok();
        };
        let answers = self
            .raft
            .stream_append(requests)
            .map(move |answer| match answer {
                Ok(answer) => encode(&answer)
                    .map(|payload| RaftMessage { payload })
                    .map_err(Status::internal),
                Err(fatal) => Err(Status::unavailable(format!(
                    "raft on member {me:x} is not running: {fatal}"
                ))),
            });
        Ok(Response::new(Box::pin(futures::StreamExt::take_until(
            answers, closed,
        ))))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.unary(
            req,
            "vote request",
            |raft, m| async move { raft.vote(m).await },
        )
        .await
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.unary(req, "pre-vote request", |raft, m| async move {
            raft.pre_vote(m).await
        })
        .await
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.unary(req, "transfer-leader request", |raft, m| async move {
            raft.handle_transfer_leader(m).await
        })
        .await
    }

    async fn forward(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        // A batch of a follower's writes (`forward_batch.rs`), proposed concurrently so they
        // share log appends, answered in order.
        self.unary(req, "forward request", |raft, batch: Vec<_>| async move {
            let replies = batch
                .into_iter()
                .map(|m| crate::forward::propose_here(&raft, m));
            Ok::<_, Infallible>(futures::future::join_all(replies).await)
        })
        .await
    }

    async fn read_index(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.unary(
            req,
            "read-index request",
            |raft, m: ReadIndexRequest| async move {
                Ok::<_, Infallible>(read_index_here(&raft, m.lease_read).await)
            },
        )
        .await
    }

    async fn lease_renew(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let leases = self.lease_clock()?;
        self.unary(
            req,
            "lease renew request",
            |raft, m: LeaseRequest| async move {
                Ok::<_, Infallible>(on_lease_clock(&raft, || leases.renew(m.id)))
            },
        )
        .await
    }

    async fn lease_time_to_live(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let leases = self.lease_clock()?;
        self.unary(
            req,
            "lease time-to-live request",
            |raft, m: LeaseRequest| async move {
                Ok::<_, Infallible>(on_lease_clock(&raft, || {
                    leases.time_to_live(m.id).map(LeaseTtl::from)
                }))
            },
        )
        .await
    }

    async fn members(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        // No target check: the asking member is joining and knows no member's ID yet.
        let _: () = decode(&req.into_inner().payload, "members request")
            .map_err(Status::invalid_argument)?;
        let answer = crate::join::members_here(&self.raft, self.cluster_id);
        let payload = encode(&answer).map_err(Status::internal)?;
        Ok(Response::new(RaftMessage { payload }))
    }

    async fn snapshot_resume(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.check_target(&req)?;
        let key: snapshot::Key = decode(&req.into_inner().payload, "snapshot resume request")
            .map_err(Status::invalid_argument)?;
        let offset = snapshot::resume_offset(&self.partial, &key);
        let payload = encode(&offset).map_err(Status::internal)?;
        Ok(Response::new(RaftMessage { payload }))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.check_target(&req)?;
        let (vote, meta, data) = snapshot::receive(
            req.into_inner(),
            self.cfg.max_snapshot_bytes,
            self.cfg.snapshot_timeout,
            &self.partial,
        )
        .await
        .map_err(|refused| {
            tracing::warn!(member = self.me, "snapshot transfer refused: {refused}");
            Status::from(refused)
        })?;
        tracing::info!(
            member = self.me,
            "received snapshot {meta} ({} bytes) from leader {vote}",
            data.len()
        );
        let answer = self
            .raft
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: data,
                },
            )
            .await
            .map_err(|e| self.stopped(e))?;
        let payload = encode(&answer).map_err(Status::internal)?;
        Ok(Response::new(RaftMessage { payload }))
    }
}

/// Serves `service` on `listener` (a member's peer URL) until `shutdown` completes.
pub async fn serve_peers<SM>(
    service: PeerService<SM>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = Bytes>,
{
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let closing = service.closing.clone();
    let shutdown = async move {
        shutdown.await;
        closing.send_replace(true);
    };
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
