//! Watches: a stream of `{"type":…,"object":…}` lines, served from the resource's watch
//! cache (`cache`) and, where the cache cannot answer, from an etcd watch on the resource's
//! key prefix.
//!
//! Which one: the cache, once it is listed, serves watches from "0", from a revision, and
//! with `sendInitialEvents` (after reaching the requested revision); a watch with
//! resourceVersion unset needs the state as of now, so the cache serves it only when it can
//! prove freshness with the store's progress responses (see `cache`), and the store does
//! otherwise. A watch from a revision the store has compacted answers 410 even when the
//! cache still holds that history, as the store would.
//!
//! Invariants (reference/apiserver.md §2, upstream `etcd3/watcher.go`, `cacher.go`):
//! - resourceVersion unset or "0": first the current objects as ADDED (the state at a
//!   revision R: the latest for unset, any the cache has reached for "0"), then every change
//!   after R. A revision X: every change after X, nothing synthetic. So a client that lists
//!   at R and watches from R sees each change exactly once.
//! - With selectors, an object that starts matching is ADDED, one that stops is DELETED.
//! - DELETED carries the object as it was, with the deletion's revision as resourceVersion.
//! - Once the request is accepted, failures are an ERROR event inside the 200 stream, then
//!   the stream ends: a start revision older than the cache's history is 410 "too old
//!   resource version: X (oldest-1)" (upstream's cacher), one the store compacted is 410
//!   "The resourceVersion for the provided watch is too old." (upstream's etcd3 watcher).
//! - BOOKMARK events (only with `allowWatchBookmarks`) carry a revision every earlier event
//!   is at or below: from the cache about every minute and 2 s before `timeoutSeconds`;
//!   from the store the header revision of a progress response, requested every minute.
//!   With `sendInitialEvents` the initial ADDEDs end with a bookmark annotated
//!   `k8s.io/initial-events-end` carrying the revision of that initial state.
//! - A cache watcher that falls behind (its bounded queue full past the dispatch budget) is
//!   closed: the stream just ends and the client re-watches or re-lists, as upstream.
//! - The stream ends at `timeoutSeconds`, when the client goes away, or at server shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keelson_proto::etcdserverpb::{
    watch_request::RequestUnion, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use keelson_proto::mvccpb::event::EventType;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::cache::{Cacher, Entry, Event, Initial, Kind, Msg, Registration, Want};
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
    /// The value of an exact `spec.nodeName=` term (pods; the cache's index).
    pub(crate) node_name: Option<String>,
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
            r = serve(&registry, &out) => {
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

    /// `e` is in the watched namespace and passes the selectors.
    fn passes(&self, prefix: &str, e: &Entry) -> bool {
        e.key.starts_with(prefix) && self.matches(&e.object)
    }

    /// Sends a cached object: its shared line, or a per-watcher Table row.
    async fn entry(&self, e: &Entry, kind: Kind) -> Result<(), ()> {
        if self.spec.table.is_some() {
            return self.send(kind.as_str(), e.object.clone()).await;
        }
        self.tx.send(e.line(kind)).await.map_err(|_| ())
    }

    /// Sends what `ev` means to this watcher (upstream `convertToWatchEvent`): ADDED when
    /// the object starts passing the filter, MODIFIED while it passes, DELETED (the
    /// previous state at the event's revision) when it stops.
    async fn event(&self, prefix: &str, ev: &Event) -> Result<(), ()> {
        let now = ev.kind != Kind::Deleted && self.passes(prefix, &ev.object);
        let before = ev.prev.as_ref().is_some_and(|p| self.passes(prefix, p));
        match (now, before) {
            (true, false) => self.entry(&ev.object, Kind::Added).await,
            (true, true) => self.entry(&ev.object, Kind::Modified).await,
            (false, true) => self.entry(&ev.prev_at_rev(), Kind::Deleted).await,
            (false, false) => Ok(()),
        }
    }
}

fn watched_prefix(spec: &WatchRequestSpec) -> String {
    let ns = if spec.def.namespaced {
        spec.namespace.as_deref()
    } else {
        None
    };
    keys::list_prefix(spec.def.resource, ns)
}

/// Serves the watch from the cache when it can, else from the store.
async fn serve(registry: &Registry, out: &Out<'_>) -> Result<()> {
    if let Some(cacher) = registry.cache.get(out.spec.def) {
        if let Some(reg) = register(registry, cacher, out.spec).await? {
            return run_cached(reg, out).await;
        }
    }
    run(registry, out).await
}

/// Registers with the cache; None when the store must serve the watch.
async fn register(
    registry: &Registry,
    cacher: &Arc<Cacher>,
    spec: &WatchRequestSpec,
) -> Result<Option<Registration>> {
    if !cacher.is_ready() {
        return Ok(None);
    }
    let initial = spec.send_initial_events || matches!(spec.resource_version, None | Some(0));
    let after = match spec.resource_version {
        None => {
            if !cacher.reliable() {
                return Ok(None);
            }
            let current = registry.etcd.current_revision().await?;
            if cacher.wait_fresh(current).await.is_err() {
                return Ok(None);
            }
            None
        }
        Some(0) => None,
        Some(x) if initial => {
            if cacher.reliable() {
                cacher.wait_fresh(x).await?;
            } else if cacher.revision() < x {
                return Ok(None);
            }
            None
        }
        Some(x) => {
            let from_history = x >= cacher.floor() && x < cacher.revision();
            if from_history && registry.etcd.compacted(x + 1).await? {
                return Err(Error::Expired {
                    message: "The resourceVersion for the provided watch is too old.".into(),
                    continue_token: None,
                });
            }
            Some(x)
        }
    };
    let prefix = watched_prefix(spec);
    cacher.register(&Want {
        prefix: &prefix,
        node: spec.node_name.as_deref(),
        after,
        bookmarks: spec.allow_bookmarks,
        deadline: tokio::time::Instant::now() + spec.timeout,
    })
}

/// A watch served by the cache: the initial state or history, then the queue.
async fn run_cached(mut reg: Registration, out: &Out<'_>) -> Result<()> {
    let spec = out.spec;
    let prefix = watched_prefix(spec);
    match std::mem::replace(&mut reg.initial, Initial::Events(Vec::new())) {
        Initial::Objects(objects) => {
            for e in objects.iter().filter(|e| out.passes(&prefix, e)) {
                if out.entry(e, Kind::Added).await.is_err() {
                    return Ok(());
                }
            }
        }
        Initial::Events(events) => {
            for ev in &events {
                if out.event(&prefix, ev).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    if spec.send_initial_events && out.bookmark(reg.snapshot_rev, true).await.is_err() {
        return Ok(());
    }
    while let Some(msg) = reg.rx.recv().await {
        let sent = match msg {
            Msg::Event(ev) if ev.rev > reg.from_rev => out.event(&prefix, &ev).await,
            Msg::Event(_) => Ok(()),
            Msg::Bookmark(rev) if spec.allow_bookmarks => out.bookmark(rev, false).await,
            Msg::Bookmark(_) => Ok(()),
        };
        if sent.is_err() {
            return Ok(());
        }
    }
    // Closed: the watcher fell behind or the cache is relisting; the client starts over.
    Ok(())
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
        let page = registry.list_from_store(spec.def, ns, &opts).await?;
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
