//! Feeding one cache from the store (upstream's reflector over `cacherListerWatcher`): list,
//! then watch from the list's revision, apply each watch response under the cache's lock,
//! then offer its events to the watchers.
//!
//! Invariants:
//! - A watch response is applied whole (a Txn's events arrive together), then the cache's
//!   revision is published; readers waiting for a revision wake only after the state holds it.
//! - Watchers registered after a response was applied get its events from the history (their
//!   `from_rev` covers them); those registered before get them from dispatch.
//! - On any failure (stream error, cancel, compaction of the watch's start, an event out of
//!   order) the cache is marked unlisted, its watchers are closed, and it lists again with
//!   a backoff; meanwhile every read goes to the store.
//! - From a store whose progress responses are trusted, progress is requested every 100 ms
//!   while readers wait and every 5 s otherwise, so bookmarks and freshness checks see an
//!   idle resource's revision advance. Other stores only send the watch's own periodic
//!   `progress_notify`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keelson_proto::etcdserverpb::{
    watch_request::RequestUnion, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use keelson_proto::mvccpb::event::EventType;
use tokio::sync::{mpsc, watch};

use super::event::{Entry, Event, Kind};
use super::watchers::{self, Budget, Watcher};
use super::{Cacher, PROGRESS_WHILE_WAITING};
use crate::error::{Error, Result};
use crate::etcd::{Etcd, ReadError};
use crate::keys;
use crate::object;

/// Upstream's page size for the cache's own lists (`storageWatchListPageSize`).
const LIST_PAGE: i64 = 10_000;
/// Idle progress requests: one per this many 100 ms ticks.
const IDLE_PROGRESS_TICKS: u32 = 50;
const BOOKMARK_TICK: Duration = Duration::from_secs(1);

/// Keeps `cacher` fed until `stop` changes or its sender goes away.
pub(crate) async fn run(cacher: Arc<Cacher>, etcd: Etcd, mut stop: watch::Receiver<bool>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let r = tokio::select! {
            r = list_and_watch(&cacher, &etcd) => r,
            _ = stop.changed() => return,
        };
        {
            let mut st = cacher.write();
            st.ready = false;
            st.watchers.terminate_all();
        }
        if let Err(e) = r {
            tracing::warn!("watch cache of {}: {e}; listing again", cacher.resource);
        }
        if started.elapsed() > Duration::from_secs(30) {
            delay = Duration::from_millis(100);
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Every object under the prefix at one revision, in pages.
async fn list(cacher: &Cacher, etcd: &Etcd) -> Result<(Vec<Arc<Entry>>, i64)> {
    let end = keys::prefix_end(cacher.prefix.as_bytes());
    let mut start = cacher.prefix.as_bytes().to_vec();
    let mut rev = 0;
    let mut out = Vec::new();
    loop {
        let resp = etcd
            .range(&start, &end, LIST_PAGE, rev)
            .await
            .map_err(|e| match e {
                ReadError::Other(e) => e,
                other => Error::Storage(format!("listing: {other:?}")),
            })?;
        if rev == 0 {
            rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        }
        for kv in &resp.kvs {
            match object::decode_stored(&kv.value, kv.mod_revision) {
                Ok(obj) => {
                    let key: Arc<str> = Arc::from(String::from_utf8_lossy(&kv.key).as_ref());
                    out.push(Arc::new(Entry::new(cacher.resource, key, obj)))
                }
                Err(e) => tracing::warn!("watch cache: skipping {:?}: {e}", kv.key),
            }
        }
        match resp.kvs.last() {
            Some(last) if resp.more => {
                start = last.key.to_vec();
                start.push(0);
            }
            _ => return Ok((out, rev)),
        }
    }
}

fn progress_request() -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    }
}

async fn list_and_watch(cacher: &Cacher, etcd: &Etcd) -> Result<()> {
    let (entries, rev) = list(cacher, etcd).await?;
    {
        let mut st = cacher.write();
        st.watchers.terminate_all();
        st.store.replace(entries);
        st.ring.reset(rev);
        st.rev = rev;
        st.rev_from_progress = false;
        st.ready = true;
    }
    cacher.publish(rev);
    tracing::debug!("watch cache of {} listed at {rev}", cacher.resource);

    let (req_tx, req_rx) = mpsc::channel(8);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::from(cacher.prefix.clone().into_bytes()),
            range_end: keys::prefix_end(cacher.prefix.as_bytes()).into(),
            start_revision: rev + 1,
            progress_notify: true,
            ..Default::default()
        })),
    };
    let closed = || Error::Storage("watch request stream closed".into());
    req_tx.send(create).await.map_err(|_| closed())?;
    let mut stream = etcd
        .watch_client()
        .watch(tokio_stream::wrappers::ReceiverStream::new(req_rx))
        .await?
        .into_inner();
    let mut watch_id = None;
    let mut ticks = tokio::time::interval(PROGRESS_WHILE_WAITING);
    let mut idle_ticks = 0u32;
    let mut bookmark_tick = tokio::time::interval(BOOKMARK_TICK);
    // After a long dispatch, carry on rather than fire the missed ticks in a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    bookmark_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut budget = Budget::new();
    loop {
        tokio::select! {
            r = stream.message() => {
                let resp = r?.ok_or_else(|| Error::Storage("the store closed the watch".into()))?;
                if resp.created {
                    watch_id = Some(resp.watch_id);
                    continue;
                }
                apply(cacher, resp, watch_id, &mut budget).await?;
            }
            _ = ticks.tick() => {
                idle_ticks += 1;
                let wanted = cacher.waiting.load(Ordering::Acquire) > 0 || idle_ticks >= IDLE_PROGRESS_TICKS;
                // Answers to requests are ignored from a store that may send them early.
                if wanted && cacher.reliable() {
                    idle_ticks = 0;
                    req_tx.send(progress_request()).await.map_err(|_| closed())?;
                }
            }
            _ = cacher.progress_wanted.notified(), if cacher.reliable() => {
                req_tx.send(progress_request()).await.map_err(|_| closed())?;
            }
            _ = bookmark_tick.tick() => {
                let st = cacher.read();
                st.watchers.bookmarks(st.rev, tokio::time::Instant::now());
            }
        }
    }
}

/// Applies one watch response and offers its events.
async fn apply(
    cacher: &Cacher,
    resp: WatchResponse,
    watch_id: Option<i64>,
    budget: &mut Budget,
) -> Result<()> {
    if resp.canceled {
        return Err(Error::Storage(if resp.compact_revision > 0 {
            format!("watch compacted at {}", resp.compact_revision)
        } else {
            format!("watch canceled: {}", resp.cancel_reason)
        }));
    }
    if resp.events.is_empty() {
        let header_rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        // A progress response. One answering a request (watch ID -1 on etcd) may overtake
        // pending events on old etcd; the periodic one for our watch never does.
        let trusted = cacher.reliable() || Some(resp.watch_id) == watch_id;
        let advanced = trusted && {
            let mut st = cacher.write();
            let newer = header_rev > st.rev;
            if newer {
                st.rev = header_rev;
                st.rev_from_progress = true;
            }
            newer
        };
        if advanced {
            cacher.publish(header_rev);
        }
        return Ok(());
    }
    let now = Instant::now();
    let mut batch: Vec<(Arc<Event>, Vec<Arc<Watcher>>)> = Vec::with_capacity(resp.events.len());
    let rev = {
        let mut st = cacher.write();
        let last = st.rev;
        for ev in resp.events {
            let Some(kv) = ev.kv else { continue };
            let rev = kv.mod_revision;
            if rev <= last {
                return Err(Error::Storage(format!(
                    "event at revision {rev} after the cache reached {last}{}",
                    if st.rev_from_progress {
                        " by a progress response"
                    } else {
                        ""
                    }
                )));
            }
            let key: Arc<str> = Arc::from(String::from_utf8_lossy(&kv.key).as_ref());
            let event = if ev.r#type == EventType::Delete as i32 {
                let Some(prev) = st.store.remove(&key) else {
                    continue;
                };
                let gone = Arc::new(prev.at_revision(rev));
                Event::new(Kind::Deleted, rev, gone, Some(prev), now)
            } else {
                let obj = match object::decode_stored(&kv.value, rev) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!("watch cache: skipping {key}: {e}");
                        continue;
                    }
                };
                let entry = Arc::new(Entry::new(cacher.resource, key, obj));
                let prev = st.store.upsert(entry.clone());
                let kind = if prev.is_some() {
                    Kind::Modified
                } else {
                    Kind::Added
                };
                Event::new(kind, rev, entry, prev, now)
            };
            let event = Arc::new(event);
            st.ring.push(event.clone());
            let interested = st.watchers.interested(&event);
            batch.push((event, interested));
        }
        st.rev = batch.last().map(|(e, _)| e.rev).unwrap_or(last).max(last);
        st.rev_from_progress = false;
        st.rev
    };
    cacher.publish(rev);
    for (event, interested) in &batch {
        watchers::dispatch(event, interested, budget).await;
    }
    Ok(())
}
