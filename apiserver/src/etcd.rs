//! The storage client: the handful of etcd v3 operations kube-apiserver uses (kine's
//! `limited.go` list), over the gRPC API only, so the same code runs on `keelson store` and
//! on a real etcd 3.4.
//!
//! Invariants:
//! - Every write is one Txn guarded on the key's `mod_revision`: create `== 0`, update and
//!   delete `== <revision the caller read>`. A failed guard is reported, never retried here:
//!   the caller decides between Conflict and a fresh read.
//! - Every response carries the store's revision at the time of the operation (the header
//!   revision); an object's resourceVersion is its `mod_revision`.
//! - Connections are lazy and shared (one HTTP/2 channel balanced over `--etcd-servers`), so
//!   the apiserver starts while the store is still coming up and recovers when it returns.
//!   Only the version check (`server_versions`, which decides whether the watch cache may
//!   trust progress responses) dials each server on its own.

use std::time::Duration;

use bytes::Bytes;
use keelson_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    maintenance_client::MaintenanceClient,
    request_op::Request,
    response_op::Response,
    watch_client::WatchClient,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, StatusRequest,
    TxnRequest,
};
use keelson_proto::mvccpb::KeyValue;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// etcd's message for a read or watch below the compacted revision.
const COMPACTED: &str = "required revision has been compacted";
/// etcd's message for a read above the current revision.
const FUTURE: &str = "required revision is a future revision";

/// Why a storage read at a revision failed, when that matters to the caller.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The revision has been compacted away (etcd `ErrCompacted`).
    Compacted,
    /// The revision is newer than the store's (etcd `ErrFutureRev`).
    Future,
    Other(Error),
}

impl From<tonic::Status> for ReadError {
    fn from(s: tonic::Status) -> ReadError {
        if s.message().contains(COMPACTED) {
            ReadError::Compacted
        } else if s.message().contains(FUTURE) {
            ReadError::Future
        } else {
            ReadError::Other(s.into())
        }
    }
}

/// The outcome of a guarded write.
pub(crate) enum Written {
    /// Done, at this store revision.
    At(i64),
    /// The guard failed; this is the key's current value (None: absent).
    Stale(Option<KeyValue>),
}

#[derive(Clone)]
pub(crate) struct Etcd {
    channel: Channel,
    /// Each server on its own, for per-member questions (versions).
    endpoints: Vec<Endpoint>,
}

impl Etcd {
    /// A lazily connected client for `servers` (`http://host:port` URLs or `host:port`).
    pub(crate) fn new(servers: &[String]) -> Result<Etcd> {
        let mut endpoints = Vec::new();
        for s in servers {
            let url = if s.contains("://") {
                s.clone()
            } else {
                format!("http://{s}")
            };
            let ep = Endpoint::from_shared(url.clone())
                .map_err(|e| Error::Internal(format!("--etcd-servers {url}: {e}")))?
                .connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true)
                // Fixed large windows, not hyper's adaptive one: its BDP pings make etcd 3.4
                // (grpc-go) drop the connection under watch load (see bench/src/conn.rs).
                .initial_stream_window_size(2 << 20)
                .initial_connection_window_size(16 << 20);
            endpoints.push(ep);
        }
        if endpoints.is_empty() {
            return Err(Error::Internal("no --etcd-servers given".into()));
        }
        Ok(Etcd {
            channel: Channel::balance_list(endpoints.clone().into_iter()),
            endpoints,
        })
    }

    pub(crate) fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    pub(crate) fn watch_client(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    /// One key (linearizable read): its value and the store revision.
    pub(crate) async fn get(&self, key: &str) -> Result<(Option<KeyValue>, i64)> {
        let r = self
            .kv()
            .range(RangeRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                ..Default::default()
            })
            .await?
            .into_inner();
        let rev = r.header.map(|h| h.revision).unwrap_or(0);
        Ok((r.kvs.into_iter().next(), rev))
    }

    /// Keys in `[start, end)` at `revision` (0: latest), at most `limit` (0: all), in key
    /// order.
    pub(crate) async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: i64,
        revision: i64,
    ) -> std::result::Result<RangeResponse, ReadError> {
        Ok(self
            .kv()
            .range(RangeRequest {
                key: Bytes::copy_from_slice(start),
                range_end: Bytes::copy_from_slice(end),
                limit,
                revision,
                ..Default::default()
            })
            .await?
            .into_inner())
    }

    /// The store's current revision (a quorum read of no data).
    pub(crate) async fn current_revision(&self) -> Result<i64> {
        let r = self
            .kv()
            .range(RangeRequest {
                key: Bytes::from_static(b"/registry/health"),
                count_only: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(r.header.map(|h| h.revision).unwrap_or(0))
    }

    /// Whether the store has compacted `revision` away (a read at it fails with etcd's
    /// `ErrCompacted`); a revision in the future is not compacted.
    pub(crate) async fn compacted(&self, revision: i64) -> Result<bool> {
        let r = self
            .kv()
            .range(RangeRequest {
                key: Bytes::from_static(b"/registry/health"),
                count_only: true,
                revision,
                ..Default::default()
            })
            .await;
        match r.map_err(ReadError::from) {
            Ok(_) | Err(ReadError::Future) => Ok(false),
            Err(ReadError::Compacted) => Ok(true),
            Err(ReadError::Other(e)) => Err(e),
        }
    }

    /// The version every server reports in `Status` (connecting to each one).
    pub(crate) async fn server_versions(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for ep in &self.endpoints {
            let channel = ep.connect().await?;
            let status = MaintenanceClient::new(channel)
                .status(StatusRequest {})
                .await?
                .into_inner();
            out.push(status.version);
        }
        Ok(out)
    }

    /// Writes `value` at `key` if its mod_revision is `expect` (0: the key must not exist).
    pub(crate) async fn put_if(&self, key: &str, value: Vec<u8>, expect: i64) -> Result<Written> {
        let put = Request::RequestPut(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: value.into(),
            ..Default::default()
        });
        self.guarded(key, expect, put).await
    }

    /// Deletes `key` if its mod_revision is `expect`.
    pub(crate) async fn delete_if(&self, key: &str, expect: i64) -> Result<Written> {
        let del = Request::RequestDeleteRange(DeleteRangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        });
        self.guarded(key, expect, del).await
    }

    async fn guarded(&self, key: &str, expect: i64, then: Request) -> Result<Written> {
        let key_bytes = Bytes::copy_from_slice(key.as_bytes());
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key_bytes.clone(),
                range_end: Bytes::new(),
                target_union: Some(TargetUnion::ModRevision(expect)),
            }],
            success: vec![RequestOp {
                request: Some(then),
            }],
            failure: vec![RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: key_bytes,
                    ..Default::default()
                })),
            }],
        };
        let r = self.kv().txn(txn).await?.into_inner();
        if r.succeeded {
            return Ok(Written::At(r.header.map(|h| h.revision).unwrap_or(0)));
        }
        let current = r.responses.into_iter().find_map(|op| match op.response {
            Some(Response::ResponseRange(rr)) => Some(rr.kvs.into_iter().next()),
            _ => None,
        });
        Ok(Written::Stale(current.flatten()))
    }
}
