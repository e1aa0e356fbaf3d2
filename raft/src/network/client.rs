//! The sending side: openraft's network factory and one client per peer.
//!
//! [`PeerNetwork`] keeps one tonic `Channel` per (peer, lane) for the life of the member.
//! openraft asks for a new client whenever it (re)starts replicating to a peer, and each gets a
//! clone of the cached channel, so connections are reused rather than opened per call. A
//! channel is lazy (it connects on first use) and reconnects by itself after the connection
//! breaks; a peer whose URL changed (a membership change re-describing it) gets a new one.
//!
//! How failures are reported to openraft, which decides how soon to retry:
//!
//! | what happened                                               | openraft error |
//! |-------------------------------------------------------------|----------------|
//! | our deadline (`soft_ttl`) passed, or the peer's (`DEADLINE_EXCEEDED`) | `Timeout` |
//! | the call broke off (`CANCELLED`, `ABORTED`) or a snapshot arrived damaged (`DATA_LOSS`) | `NetworkError`: retried at once |
//! | anything else: connection refused, peer down or stopping, wrong member at that URL, bad URL, undecodable answer, message too large | `Unreachable`: retried after a backoff |

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use keelson_proto::keelsonraftpb::raft_peer_client::RaftPeerClient;
use keelson_proto::keelsonraftpb::{RaftMessage, SnapshotChunk};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::{codec, snapshot, PeerConfig, FROM_HEADER, TARGET_HEADER};
use crate::types::{LogId, Member, TypeConfig, Vote};

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Bytes>;
pub(super) type Rpc<T> = Result<T, RPCError<TypeConfig>>;

/// Which connection to a peer a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    /// Replication and heartbeats, votes, leader transfer.
    Raft,
    /// Snapshot transfers.
    Snapshot,
}

/// The URL a channel was made for, and the channel (or why none could be).
type Cached = (String, Result<Channel, String>);

/// openraft's network factory: builds [`PeerClient`]s over cached per-peer connections.
pub struct PeerNetwork {
    me: u64,
    cfg: Arc<PeerConfig>,
    channels: Mutex<HashMap<(u64, Lane), Cached>>,
}

impl PeerNetwork {
    /// The network of member `me`.
    pub fn new(me: u64, cfg: PeerConfig) -> PeerNetwork {
        PeerNetwork {
            me,
            cfg: Arc::new(cfg),
            channels: Mutex::default(),
        }
    }

    fn client(&self, target: u64, node: &Member, lane: Lane) -> PeerClient {
        // etcd members list their peer URLs in order of preference; we use the first.
        let url = node.peer_urls.first().cloned().unwrap_or_default();
        let mut channels = self.channels.lock();
        let cached = channels.get(&(target, lane)).filter(|(u, _)| *u == url);
        let channel = match cached {
            Some((_, ch)) => ch.clone(),
            None => {
                let ch = connect(&url, &self.cfg);
                channels.insert((target, lane), (url.clone(), ch.clone()));
                ch
            }
        };
        PeerClient {
            me: self.me,
            target,
            url,
            cfg: Arc::clone(&self.cfg),
            channel,
        }
    }
}

/// A lazily connecting channel to `url`.
fn connect(url: &str, cfg: &PeerConfig) -> Result<Channel, String> {
    if url.is_empty() {
        return Err("the member has no peer URL".into());
    }
    if !url.starts_with("http://") {
        return Err(format!(
            "peer URL {url}: only http:// peer URLs are supported"
        ));
    }
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("peer URL {url}: {e}"))?
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &Member) -> PeerClient {
        self.client(target, node, Lane::Raft)
    }

    async fn new_snapshot_client(&mut self, target: u64, node: &Member) -> PeerClient {
        self.client(target, node, Lane::Snapshot)
    }
}

/// Sends raft messages to one peer.
pub struct PeerClient {
    me: u64,
    pub(super) target: u64,
    url: String,
    pub(super) cfg: Arc<PeerConfig>,
    channel: Result<Channel, String>,
}

impl PeerClient {
    pub(super) fn rpc(&self) -> Result<RaftPeerClient<Channel>, Unreachable<TypeConfig>> {
        match &self.channel {
            Ok(ch) => Ok(RaftPeerClient::new(ch.clone())
                .max_decoding_message_size(self.cfg.max_frame_bytes())),
            Err(e) => Err(self.unreachable(e)),
        }
    }

    pub(super) fn unreachable(&self, why: impl std::fmt::Display) -> Unreachable<TypeConfig> {
        Unreachable::from_string(format!("member {:x} at {}: {why}", self.target, self.url))
    }

    pub(super) fn timeout(&self, action: RPCTypes, timeout: Duration) -> Timeout<TypeConfig> {
        Timeout {
            action,
            id: self.me,
            target: self.target,
            timeout,
        }
    }

    /// The openraft error for a failed call (see the table in the module essay).
    pub(super) fn error(
        &self,
        action: RPCTypes,
        ttl: Duration,
        status: Status,
    ) -> RPCError<TypeConfig> {
        let why = format!(
            "member {:x} at {}: {:?}: {}",
            self.target,
            self.url,
            status.code(),
            status.message()
        );
        match status.code() {
            Code::DeadlineExceeded => self.timeout(action, ttl).into(),
            Code::Cancelled | Code::Aborted | Code::DataLoss => {
                NetworkError::from_string(why).into()
            }
            _ => Unreachable::from_string(why).into(),
        }
    }

    /// Names the target member on a request (the receiver checks it).
    pub(super) fn addressed<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        let hex = |id: u64| {
            MetadataValue::try_from(format!("{id:x}"))
                .expect("a hex number is a valid header value")
        };
        req.metadata_mut().insert(TARGET_HEADER, hex(self.target));
        req.metadata_mut().insert(FROM_HEADER, hex(self.me));
        req
    }

    /// One unary call: sends `payload`, waits at most `soft_ttl`, decodes the answer.
    async fn unary<T, F, Fut>(
        &self,
        action: RPCTypes,
        payload: Bytes,
        option: &RPCOption,
        call: F,
    ) -> Rpc<T>
    where
        T: DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<Response<RaftMessage>, Status>>,
    {
        let client = self.rpc()?;
        let ttl = option.soft_ttl();
        let mut req = self.addressed(RaftMessage { payload });
        req.set_timeout(ttl);
        let answer = match tokio::time::timeout(ttl, call(client, req)).await {
            Err(_) => return Err(self.timeout(action, ttl).into()),
            Ok(r) => r.map_err(|s| self.error(action, ttl, s))?,
        };
        let what = format!("{action} answer");
        codec::decode(&answer.into_inner().payload, &what).map_err(|e| self.unreachable(e).into())
    }

    /// Where a transfer of the snapshot `key` may start on the target: what an interrupted
    /// transfer left there, or 0 when it kept nothing or cannot tell.
    async fn resume_offset(&self, key: &snapshot::Key, ttl: Duration) -> u64 {
        let Ok(payload) = codec::encode(key) else {
            return 0;
        };
        self.unary::<u64, _, _>(
            RPCTypes::InstallSnapshot,
            payload,
            &RPCOption::new(ttl),
            |mut c, r| async move { c.snapshot_resume(r).await },
        )
        .await
        .unwrap_or(0)
    }

    /// Streams a snapshot's chunks and waits for the install's answer (see `full_snapshot`).
    async fn send_snapshot(
        &self,
        chunks: Vec<SnapshotChunk>,
        stall: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let action = RPCTypes::InstallSnapshot;
        let mut client = self.rpc()?;
        // One chunk in flight beyond what the transport holds: memory stays bounded by the
        // chunks already cut (which share the snapshot's buffer).
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let call = client.install_snapshot(self.addressed(ReceiverStream::new(rx)));
        let feed = async move {
            for chunk in chunks {
                match tokio::time::timeout(stall, tx.send(chunk)).await {
                    Err(_) => return Err(self.timeout(action, stall)),
                    // The call ended early; its answer says why.
                    Ok(Err(_)) => return Ok(()),
                    Ok(Ok(())) => {}
                }
            }
            Ok(())
        };
        tokio::pin!(call, feed);
        let answer = tokio::select! {
            answer = &mut call => answer,
            fed = &mut feed => {
                fed?;
                // Installing may take long for a big store; `full_snapshot` bounds the total.
                call.await
            }
        };
        let answer = answer.map_err(|s| self.error(action, stall, s))?;
        codec::decode(&answer.into_inner().payload, "snapshot answer")
            .map_err(|e| self.unreachable(e).into())
    }
}

/// An append encoded within `max` bytes: the whole request, or (if too large) a prefix of its
/// entries with the log id of the last one sent.
pub(super) fn fit_append(
    mut rpc: AppendEntriesRequest<TypeConfig>,
    max: usize,
) -> Result<(Bytes, Option<LogId>), String> {
    let mut cut = None;
    loop {
        let bytes = codec::encode(&rpc)?;
        if bytes.len() <= max {
            return Ok((bytes, cut));
        }
        if rpc.entries.len() <= 1 {
            let what = match rpc.entries.first() {
                Some(e) => format!("entry {}", e.log_id),
                None => "an append without entries".into(),
            };
            return Err(format!(
                "{what} encodes to {} bytes, over the peer message limit of {max} bytes",
                bytes.len()
            ));
        }
        rpc.entries.truncate(rpc.entries.len() / 2);
        cut = rpc.entries.last().map(|e| e.log_id);
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Bytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<TypeConfig>> {
        let (payload, cut) = fit_append(rpc, self.cfg.max_message_bytes).map_err(|e| {
            tracing::error!(target = self.target, "cannot replicate: {e}");
            self.unreachable(e)
        })?;
        let answer = self
            .unary(
                RPCTypes::AppendEntries,
                payload,
                &option,
                |mut c, r| async move { c.append_entries(r).await },
            )
            .await?;
        Ok(match (answer, cut) {
            // The follower took all we sent, which was less than asked: openraft sends the rest.
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (answer, _) => answer,
        })
    }

    /// Pipelined: see `stream.rs`.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Rpc<BoxStream<'s, Rpc<StreamAppendResult<TypeConfig>>>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        self.append_stream(input, option)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<TypeConfig>> {
        let payload = codec::encode(&rpc).map_err(|e| self.unreachable(e))?;
        self.unary(RPCTypes::Vote, payload, &option, |mut c, r| async move {
            c.vote(r).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<TypeConfig>> {
        let payload = codec::encode(&rpc).map_err(|e| self.unreachable(e))?;
        self.unary(RPCTypes::Vote, payload, &option, |mut c, r| async move {
            c.pre_vote(r).await
        })
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<TransferLeaderResponse<TypeConfig>> {
        let payload = codec::encode(&req).map_err(|e| self.unreachable(e))?;
        self.unary(
            RPCTypes::TransferLeader,
            payload,
            &option,
            |mut c, r| async move { c.transfer_leader(r).await },
        )
        .await
    }

    /// Sends the snapshot in chunks of at most openraft's `snapshot_max_chunk_size` (and the
    /// message limit), each of which must be taken by the transport within `soft_ttl`; the
    /// whole transfer, the follower's install included, within `snapshot_timeout`. Ends early,
    /// as `Closed`, when openraft cancels it.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let chunk_size = option
            .snapshot_chunk_size()
            .unwrap_or(1 << 20)
            .min(self.cfg.max_message_bytes);
        let limit = self.cfg.snapshot_timeout;
        let send = async {
            let key = snapshot::Key::of(&snapshot.meta, &snapshot.snapshot);
            let start = self.resume_offset(&key, option.soft_ttl()).await;
            if start > 0 {
                tracing::info!(
                    target = self.target,
                    "resuming the transfer of snapshot {} at byte {start} of {}",
                    snapshot.meta,
                    key.total_size
                );
            }
            let chunks = snapshot::chunks_from(
                &vote,
                &snapshot.meta,
                &snapshot.snapshot,
                chunk_size,
                &key,
                start,
            )
            .map_err(|e| self.unreachable(e))?;
            self.send_snapshot(chunks, option.soft_ttl()).await
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            _ = tokio::time::sleep(limit) => {
                Err(self.timeout(RPCTypes::InstallSnapshot, limit).into())
            }
            answer = send => answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use keelson_proto::etcdserverpb::PutRequest;
    use keelson_store::Command;
    use openraft::entry::RaftEntry;

    use super::*;
    use crate::types::{Entry, Proposal};

    fn append_of(n: u64, value_bytes: usize) -> AppendEntriesRequest<TypeConfig> {
        let log_id = |i| openraft::testing::log_id::<TypeConfig>(1, 1, i);
        let put = Command::Put(PutRequest {
            key: "k".into(),
            value: vec![7u8; value_bytes].into(),
            ..Default::default()
        });
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(0)),
            entries: (1..=n)
                .map(|i| Entry::new_normal(log_id(i), Proposal::new(&put)))
                .collect(),
            leader_commit: None,
        }
    }

    #[test]
    fn a_large_append_is_cut_to_a_prefix_that_fits() {
        let (bytes, cut) = fit_append(append_of(10, 100), 1 << 20).unwrap();
        assert_eq!(cut, None, "fits whole");
        let whole: AppendEntriesRequest<TypeConfig> = codec::decode(&bytes, "append").unwrap();
        assert_eq!(whole.entries.len(), 10);

        let (bytes, cut) = fit_append(append_of(10, 100), 700).unwrap();
        assert!(bytes.len() <= 700);
        let part: AppendEntriesRequest<TypeConfig> = codec::decode(&bytes, "append").unwrap();
        assert!(!part.entries.is_empty() && part.entries.len() < 10);
        assert_eq!(cut, part.entries.last().map(|e| e.log_id));

        let err = fit_append(append_of(3, 1000), 700).unwrap_err();
        assert!(
            err.contains("over the peer message limit of 700 bytes"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_peer_nobody_listens_on_is_unreachable() {
        // Bind then drop: a port nothing listens on.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut net = PeerNetwork::new(1, PeerConfig::default());
        let member = Member {
            peer_urls: vec![format!("http://{addr}")],
            ..Default::default()
        };
        let mut client = net.new_client(2, &member).await;
        let option = RPCOption::new(Duration::from_secs(2));
        let vote = VoteRequest::new(Vote::new(1, 1), None);
        let err = client.vote(vote.clone(), option.clone()).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err}");

        let https = Member {
            peer_urls: vec!["https://127.0.0.1:1".into()],
            ..Default::default()
        };
        let mut client = net.new_client(3, &https).await;
        let err = client.vote(vote, option).await.unwrap_err();
        assert!(err.to_string().contains("only http:// peer URLs"), "{err}");
    }
}
