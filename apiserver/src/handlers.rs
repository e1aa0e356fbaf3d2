//! Request dispatch: route, negotiate, call the verb, and turn every `Err` into its `Status`
//! reply in exactly one place ([`handle`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::discovery;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::request::{self, negotiate, Query, Route, Wants};
use crate::server::Body;

/// Upstream's limit on a request body (3 MiB, `MaxRequestBodyBytes`).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// What every request handler shares.
pub(crate) struct State {
    pub(crate) registry: Registry,
    /// Flips to true at shutdown; watch streams end on it.
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
    /// `host:port` clients reach us at (for `/api`'s serverAddressByClientCIDRs).
    pub(crate) address: String,
    /// The bootstrap (default namespaces) has completed.
    pub(crate) bootstrapped: AtomicBool,
}

/// A request, read and parsed as far as every verb needs.
pub(crate) struct Call {
    pub(crate) method: Method,
    pub(crate) query: Query,
    pub(crate) wants: Wants,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Bytes,
}

pub(crate) fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn json_reply(status: u16, v: &Value) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// A streaming `application/json` reply fed by `rx` (watches).
pub(crate) fn stream_reply(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok(Frame::data(b)));
    let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Handles one request; never fails (errors become `Status` replies).
pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let reply = match dispatch(&state, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.code() >= 500 {
                tracing::warn!("{method} {path}: {e}");
            }
            json_reply(e.code(), &e.status())
        }
    };
    tracing::debug!("{method} {path} → {}", reply.status());
    reply
}

async fn dispatch(state: &State, req: Request<Incoming>) -> Result<Response<Body>> {
    let route = request::route(req.uri().path())?;
    let header = |h: header::HeaderName| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let accept = header(header::ACCEPT);
    let content_type = header(header::CONTENT_TYPE);
    let if_none_match = header(header::IF_NONE_MATCH);
    let method = req.method().clone();
    let query = Query::parse(req.uri().query());
    // Who sent it (`server` authenticated the request before handing it over).
    let user = req.extensions().get::<crate::auth::UserInfo>().cloned();
    let body = match method {
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => read_body(req).await?,
        _ => Bytes::new(),
    };
    let call = Call {
        method,
        query,
        wants: negotiate(accept.as_deref()),
        content_type,
        body,
    };
    if !matches!(route, Route::Resource(_))
        && call.method != Method::GET
        && call.method != Method::HEAD
    {
        return Err(Error::MethodNotAllowed);
    }
    match route {
        Route::Version => Ok(json_reply(200, &version())),
        Route::Health(which) => health(state, which, call.query.has("verbose")).await,
        Route::CoreVersions => Ok(discovery_reply(
            &call,
            if_none_match,
            discovery::core_versions(&state.address),
            discovery::aggregated_core,
        )),
        Route::Groups => Ok(discovery_reply(
            &call,
            if_none_match,
            discovery::groups(),
            discovery::aggregated_groups,
        )),
        Route::Group(g) => Ok(json_reply(200, &discovery::group(&g))),
        Route::Resources { group, version } => {
            Ok(json_reply(200, &discovery::resource_list(&group, &version)))
        }
        // Probed on every request, never stored.
        Route::Resource(r) if r.def.group.is_empty() && r.def.resource == "componentstatuses" => {
            crate::componentstatus::serve(state, r, call).await
        }
        // The caller's own identity (`kubectl auth whoami`), never stored.
        Route::Resource(r) if r.def.group == "authentication.k8s.io" => {
            crate::auth::serve_self_subject_review(r, call, user)
        }
        Route::Resource(r) => crate::crud::serve(state, r, call).await,
        Route::OpenApiIndex => Ok(crate::openapi::serve_index(if_none_match.as_deref())),
        Route::OpenApiDocument(gv) => {
            crate::openapi::serve_document(&gv, call.query.get("hash"), if_none_match.as_deref())
        }
        Route::OpenApiV2 => Ok(crate::openapi::serve_v2(
            accept.as_deref(),
            if_none_match.as_deref(),
        )),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::BadRequest(
            "the request body is larger than the allowed size".into(),
        )),
        Err(e) => Err(Error::BadRequest(format!("reading the request body: {e}"))),
    }
}

/// `/version`: minor "32", which also makes the machine's kubectl dispatcher pick 1.32.
fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-keelson",
        "gitCommit": "keelson",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": concat!("keelson-", env!("CARGO_PKG_VERSION")),
        "compiler": "rustc",
        "platform": concat!("linux/", "amd64"),
    })
}

/// `/healthz`, `/livez`, `/readyz`: "ok", or the per-check lines with `?verbose`. Readiness
/// needs the store reachable, the default namespaces in place and every watch cache listed.
async fn health(state: &State, which: &str, verbose: bool) -> Result<Response<Body>> {
    let mut checks: Vec<(&str, bool)> = vec![("ping", true)];
    if which != "livez" {
        let store = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            state.registry.etcd.current_revision(),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        checks.push(("etcd", store));
    }
    if which == "readyz" {
        checks.push((
            "poststarthook/bootstrap-namespaces",
            state.bootstrapped.load(Ordering::Acquire),
        ));
        // Every resource's watch cache has listed (upstream's storage readiness check).
        checks.push(("watch-cache", state.registry.cache.ready()));
    }
    let ok = checks.iter().all(|(_, ok)| *ok);
    let mut text = String::new();
    if verbose || !ok {
        for (name, good) in &checks {
            if *good {
                text.push_str(&format!("[+]{name} ok\n"));
            } else {
                text.push_str(&format!("[-]{name} failed: reason withheld\n"));
            }
        }
        text.push_str(&format!(
            "{which} check {}",
            if ok { "passed" } else { "failed" }
        ));
    } else {
        text.push_str("ok");
    }
    Ok(full(
        if ok { 200 } else { 500 },
        "text/plain; charset=utf-8",
        text,
    ))
}

/// A discovery document in the form the client asked for, with an ETag (aggregated form).
fn discovery_reply(
    call: &Call,
    if_none_match: Option<String>,
    legacy: Value,
    aggregated: fn() -> Value,
) -> Response<Body> {
    if call.wants != Wants::AggregatedDiscovery {
        return json_reply(200, &legacy);
    }
    let body = serde_json::to_vec(&aggregated()).unwrap_or_default();
    let etag = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        format!("\"{:016X}\"", h.finish())
    };
    let mut r = if if_none_match.as_deref() == Some(etag.as_str()) {
        full(304, discovery::AGGREGATED_CONTENT_TYPE, Bytes::new())
    } else {
        full(200, discovery::AGGREGATED_CONTENT_TYPE, body)
    };
    if let Ok(v) = etag.parse() {
        r.headers_mut().insert(header::ETAG, v);
    }
    r.headers_mut()
        .insert(header::VARY, header::HeaderValue::from_static("Accept"));
    r
}
