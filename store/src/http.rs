//! The HTTP endpoints etcd serves beside gRPC on its client port: `/health`, `/version` and
//! `/metrics` (also served alone on `--listen-metrics-urls`).
//!
//! One port carries both, as etcd's does: the gRPC services become routes of one axum router
//! (tonic's `Routes`), these paths are merged into it, and the server accepts HTTP/1.1 as well
//! as HTTP/2 (gRPC clients speak h2c with prior knowledge; curl and Prometheus speak
//! HTTP/1.1). Unknown paths answer 404 to plain HTTP and gRPC's Unimplemented to gRPC.
//!
//! Bodies match etcd 3.4 byte for byte where etcd has them: `/health` is `{"health":"true"}`
//! (200) or `{"health":"false"}` plus a newline (503, Go's `http.Error`); `/version` is
//! `{"etcdserver":…,"etcdcluster":…}`, plus a `keelson` field with this build's version.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keelson_proto::etcdserverpb::{AlarmType, TxnRequest};

use crate::apply::Command;
use crate::core::Core;
use crate::server::maintenance::{CLUSTER_VERSION, SERVER_VERSION};

/// How long `/health` waits for its probe through the log (etcd: 1 s).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// The HTTP routes of the client port (and of metrics URLs).
pub(crate) fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(core)
}

/// The HTTP routes as tonic routes, onto which the gRPC services are added.
pub(crate) fn routes(core: Arc<Core>) -> tonic::service::Routes {
    tonic::service::Routes::from(router(core).fallback(fallback))
}

/// Answers paths no route claims: gRPC's Unimplemented to gRPC, 404 to everyone else.
pub(crate) async fn fallback(headers: HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        let (parts, ()) = tonic::Status::unimplemented("")
            .into_http::<()>()
            .into_parts();
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

/// etcd's `checkHealth`: unhealthy while an alarm (not excluded by `?exclude=NAME`) is
/// raised, or when a request cannot get through the log within a second.
async fn health(State(core): State<Arc<Core>>, RawQuery(query): RawQuery) -> Response {
    let excluded: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("exclude="))
        .map(str::to_string)
        .collect();
    let alarmed = core.alarms.list().iter().any(|a| {
        let name = AlarmType::try_from(a.alarm).map_or("", |t| t.as_str_name());
        !excluded.iter().any(|e| e == name)
    });
    // The probe is an empty txn: it goes through the log and a commit like etcd's QGET, but
    // changes nothing and is not subject to the quota.
    let healthy = !alarmed
        && matches!(
            tokio::time::timeout(
                HEALTH_TIMEOUT,
                core.proposer().propose(Command::Txn(TxnRequest::default()))
            )
            .await,
            Ok(Ok(_))
        );
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if healthy {
        (StatusCode::OK, text, r#"{"health":"true"}"#).into_response()
    } else {
        let nosniff = [(header::X_CONTENT_TYPE_OPTIONS, "nosniff")];
        (
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            nosniff,
            "{\"health\":\"false\"}\n",
        )
            .into_response()
    }
}

async fn version() -> Response {
    // Written by hand to keep etcd's field order (serde_json's map sorts keys).
    let body = format!(
        r#"{{"etcdserver":"{SERVER_VERSION}","etcdcluster":"{CLUSTER_VERSION}","keelson":"{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics(State(core): State<Arc<Core>>) -> Response {
    let body = tokio::task::spawn_blocking(move || crate::metrics::render(&core))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
