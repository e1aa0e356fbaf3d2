//! Watches: a stream of `{"type":…,"object":…}` lines from an etcd watch on the resource's
//! key prefix.
//!
//! Invariants (reference/apiserver.md §2, upstream `etcd3/watcher.go`):
//! - resourceVersion unset or "0": first the current objects as ADDED (a list at the latest
//!   revision R), then every change after R. A revision X: every change after X, nothing
//!   synthetic. So a client that lists at R and watches from R sees each change exactly once.
//! - With selectors, an object that starts matching is ADDED, one that stops is DELETED.
//! - DELETED carries the object as it was, with the deletion's revision as resourceVersion.
//! - Once the request is accepted, failures (a compacted start revision → 410 Expired) are an
//!   ERROR event inside the 200 stream, then the stream ends.
//! - BOOKMARK events (only with `allowWatchBookmarks`) carry a revision every earlier event
//!   is at or below: the header revision of an etcd progress response, requested every
//!   minute. With `sendInitialEvents` the initial ADDEDs end with a bookmark annotated
//!   `k8s.io/initial-events-end`.
//! - The stream ends at `timeoutSeconds`, when the client goes away, or at server shutdown.

use std::time::Duration;

use bytes::Bytes;
use keelson_proto::etcdserverpb::{
    watch_request::RequestUnion, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use keelson_proto::mvccpb::event::EventType;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::{Cause, Error, Result};
use crate::keys;
use crate::object;
use crate::registry::{ListOptions, Registry};
use crate::resources::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::table::{self, Include};

const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// A validated watch request.
pub(crate) struct WatchRequestSpec {
    pub(crate) def: &'static ResourceDef,
    pub(crate) namespace: Option<String>,
    /// None: unset; Some(0): "0"; Some(x): from revision x.
    pub(crate) resource_version: Option<i64>,
    pub(crate) send_initial_events: bool,
    pub(crate) allow_bookmarks: bool,
    pub(crate) timeout: Duration,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    /// Some(table apiVersion) when each object is sent as a one-row Table.
    pub(crate) table: Option<&'static str>,
    pub(crate) include: Include,
}

fn watch_invalid(field: &str, detail: &str) -> Error {
    Error::Invalid {
        group: "meta.k8s.io".into(),
        kind: "ListOptions".into(),
        name: String::new(),
        causes: vec![Cause::forbidden(field, detail)],
    }
}

/// apimachinery's `ValidateListOptions` rules for a watch.
pub(crate) fn validate(
    send_initial_events: Option<bool>,
    rv_match: Option<&str>,
    allow_bookmarks: bool,
) -> Result<()> {
    match send_initial_events {
        Some(_) => {
            if rv_match != Some("NotOlderThan") {
                return Err(watch_invalid(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if !allow_bookmarks {
                return Err(watch_invalid(
                    "allowWatchBookmarks",
                    "sendInitialEvents requires setting allowWatchBookmarks to true",
                ));
            }
        }
        None if rv_match.is_some() => {
            return Err(watch_invalid(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ))
        }
        None => {}
    }
    Ok(())
}

/// Starts the watch; its lines arrive on the returned channel, which closes when it ends.
pub(crate) fn start(
    registry: Registry,
    spec: WatchRequestSpec,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let out = Out {
            tx: tx.clone(),
            spec: &spec,
        };
        tokio::select! {
            r = run(&registry, &out) => {
                if let Err(e) = r {
                    let _ = out.send("ERROR", e.status()).await;
                }
            }
            _ = tokio::time::sleep(spec.timeout) => {}
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {}
            _ = tx.closed() => {}
        }
    });
    rx
}

struct Out<'a> {
    tx: mpsc::Sender<Bytes>,
    spec: &'a WatchRequestSpec,
}

impl Out<'_> {
    /// Sends one event; Err when the client has gone.
    async fn send(&self, ty: &str, object: Value) -> Result<(), ()> {
        let object = match (self.spec.table, ty) {
            (Some(av), "ADDED" | "MODIFIED" | "DELETED") => {
                table::watch_row(self.spec.def, &object, av, self.spec.include)
            }
            _ => object,
        };
        let mut line =
            serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
        line.push(b'\n');
        self.tx.send(Bytes::from(line)).await.map_err(|_| ())
    }

    async fn bookmark(&self, rev: i64, initial_end: bool) -> Result<(), ()> {
        let mut metadata = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.spec.def.kind, "apiVersion": self.spec.def.api_version(), "metadata": metadata});
        self.send("BOOKMARK", obj).await
    }

    fn matches(&self, obj: &Value) -> bool {
        self.spec.labels.matches(obj) && self.spec.fields.matches(self.spec.def, obj)
    }
}

/// The watch proper; returns Err for an error to report as an ERROR event, Ok when the
/// stream should just end.
async fn run(registry: &Registry, out: &Out<'_>) -> Result<()> {
    let spec = out.spec;
    let ns = if spec.def.namespaced {
        spec.namespace.as_deref()
    } else {
        None
    };
    let initial = spec.send_initial_events || matches!(spec.resource_version, None | Some(0));
    let mut from = spec.resource_version.unwrap_or(0);
    if initial {
        let opts = ListOptions {
            labels: LabelSelector::parse(None)?,
            ..Default::default()
        };
        let page = registry.list(spec.def, ns, &opts).await?;
        if let Some(min) = spec.resource_version.filter(|m| *m > page.revision) {
            return Err(Error::TooLargeResourceVersion {
                requested: min,
                current: page.revision,
            });
        }
        for obj in page.items.into_iter().filter(|o| out.matches(o)) {
            if out.send("ADDED", obj).await.is_err() {
                return Ok(());
            }
        }
        from = page.revision;
        if spec.send_initial_events && out.bookmark(from, true).await.is_err() {
            return Ok(());
        }
    }
    let prefix = keys::list_prefix(spec.def.resource, ns);
    let (req_tx, req_rx) = mpsc::channel(4);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::from(prefix.clone().into_bytes()),
            range_end: keys::prefix_end(prefix.as_bytes()).into(),
            start_revision: from + 1,
            prev_kv: true,
            ..Default::default()
        })),
    };
    req_tx
        .send(create)
        .await
        .map_err(|_| Error::Internal("watch request".into()))?;
    let mut stream = registry
        .etcd
        .watch_client()
        .watch(tokio_stream::wrappers::ReceiverStream::new(req_rx))
        .await?
        .into_inner();
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
    loop {
        let resp = tokio::select! {
            r = stream.message() => match r? {
                Some(r) => r,
                None => return Err(Error::Storage("the store closed the watch".into())),
            },
            _ = ticker.tick(), if spec.allow_bookmarks => {
                let progress = WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
                let _ = req_tx.send(progress).await;
                continue;
            }
        };
        if resp.canceled {
            if resp.compact_revision > 0 {
                return Err(Error::Expired {
                    message: "The resourceVersion for the provided watch is too old.".into(),
                    continue_token: None,
                });
            }
            return Err(Error::Storage(format!(
                "watch canceled: {}",
                resp.cancel_reason
            )));
        }
        if resp.created {
            continue;
        }
        if resp.events.is_empty() {
            let rev = resp.header.map(|h| h.revision).unwrap_or(0);
            if spec.allow_bookmarks && rev > 0 && out.bookmark(rev, false).await.is_err() {
                return Ok(());
            }
            continue;
        }
        for ev in resp.events {
            let Some(kv) = ev.kv else { continue };
            let rev = kv.mod_revision;
            let old = match &ev.prev_kv {
                Some(p) => Some(object::decode_stored(&p.value, rev)?),
                None => None,
            };
            let sent = if ev.r#type == EventType::Delete as i32 {
                match old {
                    Some(o) if out.matches(&o) => out.send("DELETED", o).await,
                    _ => Ok(()),
                }
            } else {
                let cur = object::decode_stored(&kv.value, rev)?;
                let was = old.as_ref().is_some_and(|o| out.matches(o));
                match (out.matches(&cur), was) {
                    (true, true) => out.send("MODIFIED", cur).await,
                    (true, false) => out.send("ADDED", cur).await,
                    (false, true) => out.send("DELETED", old.unwrap_or(cur)).await,
                    (false, false) => Ok(()),
                }
            };
            if sent.is_err() {
                return Ok(());
            }
        }
    }
}
