//! etcd's `hasleader` metadata: a request carrying `hasleader: true` wants an answer only from
//! a member that has a leader, and fails at once with Unavailable `etcdserver: no leader`
//! instead of waiting for the request deadline (etcd's `v3rpc/interceptor.go`; clientv3's
//! `WithRequireLeader`, which etcdctl watch and kube-apiserver's watches use).
//!
//! A tower layer over every service, so unary calls and streams are checked alike before the
//! service sees the request. Whether a leader is known is the proposer's call
//! ([`crate::Propose::has_leader`]); requests without the metadata pass untouched.
//!
//! The same layer refuses what a learner does not serve (etcd 3.4's `isRPCSupportedForLearner`
//! in the same interceptors): on a learner every gRPC call but Status and Range answers
//! Unavailable `etcdserver: rpc not supported for learner`, streams included; a Range is let
//! through to `kv.rs`, which refuses it unless it is serializable (the flag is in the body,
//! which this layer does not decode). HTTP endpoints (`/health`, `/metrics`) are not gRPC and
//! pass.
//!
//! Streams already open are watched too, as etcd's `monitorLeader` does: [`monitor`] checks
//! for a leader every election timeout, and after three checks in a row without one it ends
//! every watch stream that was opened with `hasleader: true` (`watch.rs`) with the same
//! Unavailable `etcdserver: no leader`; the client's watch then retries elsewhere.

use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use tonic::codegen::{http, BoxFuture, Service};

use crate::core::Core;
use crate::error::Error;

/// etcd's `rpctypes.MetadataRequireLeaderKey` and `MetadataHasLeader`.
const KEY: &str = "hasleader";
const VALUE: &str = "true";

/// etcd's `maxNoLeaderCnt`: leaderless checks in a row before `hasleader` streams end.
const MAX_NO_LEADER_CHECKS: u32 = 3;

/// Whether a request's metadata asks for a member with a leader.
pub(crate) fn requires_leader(headers: &http::HeaderMap) -> bool {
    headers.get(KEY).is_some_and(|v| v == VALUE)
}

/// Starts etcd's `monitorLeader` for `core` (module docs): the returned counter moves each time
/// the member has gone [`MAX_NO_LEADER_CHECKS`] election timeouts without a leader, and
/// `hasleader` streams end when it does. The task ends with the core or with every receiver.
pub(crate) fn monitor(core: &Arc<Core>) -> tokio::sync::watch::Receiver<u64> {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let every = core.cfg.election_timeout;
    tokio::spawn(monitor_leader(Arc::downgrade(core), tx, every));
    rx
}

async fn monitor_leader(
    core: Weak<Core>,
    lost: tokio::sync::watch::Sender<u64>,
    every: std::time::Duration,
) {
    let mut misses = 0;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = lost.closed() => return,
        }
        let Some(core) = core.upgrade() else { return };
        let has_leader = core.proposer().has_leader();
        drop(core);
        if has_leader.await {
            misses = 0;
            continue;
        }
        misses += 1;
        if misses >= MAX_NO_LEADER_CHECKS {
            tracing::warn!(
                "no leader for {misses} election timeouts: ending hasleader watch streams"
            );
            lost.send_modify(|n| *n += 1);
            misses = 0;
        }
    }
}

/// The calls a learner serves (Range only when serializable, checked in `kv.rs`).
const LEARNER_CALLS: [&str; 2] = ["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

/// Whether a learner refuses `req`: a gRPC call other than [`LEARNER_CALLS`].
fn refused_on_learner<B>(req: &http::Request<B>) -> bool {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    grpc && !LEARNER_CALLS.contains(&req.uri().path())
}

/// Wraps each service in [`RequireLeader`].
#[derive(Clone)]
pub(crate) struct RequireLeaderLayer {
    pub(crate) core: Arc<Core>,
}

impl<S> tower_layer::Layer<S> for RequireLeaderLayer {
    type Service = RequireLeader<S>;

    fn layer(&self, inner: S) -> RequireLeader<S> {
        RequireLeader {
            inner,
            core: self.core.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct RequireLeader<S> {
    inner: S,
    core: Arc<Core>,
}

impl<S, B, R> Service<http::Request<B>> for RequireLeader<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if refused_on_learner(&req) && self.core.proposer().status().is_some_and(|s| s.is_learner) {
            return Box::pin(async {
                Ok(tonic::Status::from(Error::NotSupportedForLearner).into_http())
            });
        }
        let required = requires_leader(req.headers());
        if !required {
            return Box::pin(self.inner.call(req));
        }
        // The service polled ready is `self.inner`; keep it for this call, leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let has_leader = self.core.proposer().has_leader();
        Box::pin(async move {
            if !has_leader.await {
                return Ok(tonic::Status::from(Error::NoLeader).into_http());
            }
            inner.call(req).await
        })
    }
}
