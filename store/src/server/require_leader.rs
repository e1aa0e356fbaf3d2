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
//! Not done: etcd also cancels such streams once the member has had no leader for three
//! election timeouts (`monitorLeader`).

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{http, BoxFuture, Service};

use crate::core::Core;
use crate::error::Error;

/// etcd's `rpctypes.MetadataRequireLeaderKey` and `MetadataHasLeader`.
const KEY: &str = "hasleader";
const VALUE: &str = "true";

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
        let required = req.headers().get(KEY).is_some_and(|v| v == VALUE);
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
