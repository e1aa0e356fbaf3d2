//! Hub tests: a miniature apply path (MVCC over a MemBackend, commit, publish) drives the hub
//! directly, and the tests read the frames a stream would send.
//!
//! No test sleeps to wait for "nothing more": a progress request is answered only after
//! everything queued before it, so receiving it proves nothing else was pending.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keelson_proto::etcdserverpb::watch_create_request::FilterType;
use keelson_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use keelson_proto::mvccpb::event::EventType;

use super::batch::Ring;
use super::queue::{Item, StreamShared};
use super::registry::{CatchUp, Registry, DUPLICATE_ID};
use super::*;
use crate::backend::{MemBackend, WriteBatch};
use crate::keys;

struct Harness {
    mvcc: Arc<Mvcc>,
    backend: Arc<MemBackend>,
    hub: Arc<WatchHub>,
}

fn hub_config() -> HubConfig {
    HubConfig {
        queue_cap: 4,
        ring_revs: 8,
        ..HubConfig::default()
    }
}

impl Harness {
    fn new(cfg: HubConfig) -> Harness {
        let backend = Arc::new(MemBackend::default());
        let mvcc = Arc::new(Mvcc::open(&*backend).unwrap());
        let hub = WatchHub::with_config(mvcc.clone(), backend.clone(), cfg);
        Harness { mvcc, backend, hub }
    }

    /// Applies one revision (puts of `kvs`, deletes of keys with value `None`), commits it and
    /// publishes it, as the apply thread does. Returns the revision.
    fn write(&self, kvs: &[(&str, Option<&str>)]) -> i64 {
        let mut batch = WriteBatch::default();
        let mut txn = self.mvcc.write();
        for (k, v) in kvs {
            match v {
                Some(v) => {
                    txn.put(
                        Bytes::copy_from_slice(k.as_bytes()),
                        Bytes::copy_from_slice(v.as_bytes()),
                        0,
                    );
                }
                None => {
                    txn.delete_range(k.as_bytes(), &[]);
                }
            }
        }
        let ev = txn.finish(&mut batch).expect("the write changes something");
        self.backend.write(batch).unwrap();
        self.mvcc.publish();
        let rev = ev.revision;
        self.hub.publish(vec![ev]);
        rev
    }

    fn put(&self, k: &str, v: &str) -> i64 {
        self.write(&[(k, Some(v))])
    }

    fn compact(&self, rev: i64) {
        let doomed = self.mvcc.compact(rev).unwrap();
        let mut batch = WriteBatch::default();
        doomed.into_iter().for_each(|k| batch.delete(k));
        batch.put(keys::meta_key(keys::META_COMPACTED), keys::frame_i64(rev));
        self.backend.write(batch).unwrap();
    }

    fn open(&self) -> (StreamHandle, WatchStream) {
        let header = ResponseHeader {
            cluster_id: 11,
            member_id: 22,
            revision: 0,
            raft_term: 2,
        };
        self.hub.open_stream(header, 1 << 20)
    }
}

fn watch(key: &str, end: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(end.as_bytes()),
        start_revision: start,
        ..Default::default()
    }
}

async fn recv(s: &mut WatchStream) -> WatchResponse {
    let f = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("a response within 10 s")
        .expect("the stream is open")
        .expect("no error");
    f.to_response()
}

/// Asserts nothing is pending on the stream, using a progress request as a barrier.
async fn assert_quiet(h: &StreamHandle, s: &mut WatchStream) {
    h.request_progress();
    let r = recv(s).await;
    assert_eq!(
        (r.watch_id, r.events.len(), r.created, r.canceled),
        (-1, 0, false, false),
        "unexpected {r:?}"
    );
}

/// (key, value, type, revision) of each event.
fn evs(r: &WatchResponse) -> Vec<(String, String, EventType, i64)> {
    r.events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            let s = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
            (
                s(&kv.key),
                s(&kv.value),
                EventType::try_from(e.r#type).unwrap(),
                kv.mod_revision,
            )
        })
        .collect()
}

#[tokio::test]
async fn created_then_events_with_header_and_prev_kv_only_on_request() {
    let h = Harness::new(hub_config());
    h.put("a", "0");
    let (req, mut s) = h.open();
    req.create(&watch("a", "", 0));
    let c = recv(&mut s).await;
    assert!(c.created && !c.canceled && c.watch_id == 0);
    assert_eq!(
        c.header,
        Some(ResponseHeader {
            cluster_id: 11,
            member_id: 22,
            revision: 2,
            raft_term: 2
        })
    );
    let r3 = h.put("a", "1");
    h.put("b", "x");
    let r = recv(&mut s).await;
    assert_eq!(r.header.as_ref().unwrap().revision, r3);
    assert_eq!(evs(&r), vec![("a".into(), "1".into(), EventType::Put, r3)]);
    assert!(r.events[0].prev_kv.is_none(), "prev_kv only when asked");
    req.create(&WatchCreateRequest {
        prev_kv: true,
        ..watch("a", "", 0)
    });
    assert_eq!(recv(&mut s).await.watch_id, 1);
    h.write(&[("a", None)]);
    let mut rs = [recv(&mut s).await, recv(&mut s).await];
    rs.sort_by_key(|r| r.watch_id);
    assert_eq!(rs[0].events[0].r#type, EventType::Delete as i32);
    assert!(rs[0].events[0].prev_kv.is_none());
    assert_eq!(
        rs[1].events[0].prev_kv.as_ref().unwrap().value.as_ref(),
        b"1"
    );
    assert_quiet(&req, &mut s).await;
}

#[tokio::test]
async fn ids_duplicates_empty_ranges_and_cancel_follow_etcd() {
    let h = Harness::new(hub_config());
    let (req, mut s) = h.open();
    req.create(&WatchCreateRequest {
        watch_id: 1,
        ..watch("k", "", 0)
    });
    req.create(&watch("k", "", 0));
    req.create(&watch("k", "", 0));
    let ids: Vec<i64> = [recv(&mut s).await, recv(&mut s).await, recv(&mut s).await]
        .iter()
        .map(|r| r.watch_id)
        .collect();
    assert_eq!(
        ids,
        vec![1, 0, 2],
        "auto IDs start at 0 and skip IDs in use"
    );
    req.create(&WatchCreateRequest {
        watch_id: 2,
        ..watch("k", "", 0)
    });
    let d = recv(&mut s).await;
    assert!(d.created && d.canceled && d.watch_id == -1 && d.cancel_reason == DUPLICATE_ID);
    req.create(&watch("b", "a", 0));
    let e = recv(&mut s).await;
    assert!(
        e.created
            && e.canceled
            && e.watch_id == -1
            && e.cancel_reason == "mvcc: watcher range is empty"
    );
    req.cancel(0);
    let c = recv(&mut s).await;
    assert!(c.canceled && !c.created && c.watch_id == 0);
    req.cancel(42);
    assert_quiet(&req, &mut s).await;
    let rev = h.put("k", "v");
    let mut got: Vec<i64> = vec![recv(&mut s).await.watch_id, recv(&mut s).await.watch_id];
    got.sort();
    assert_eq!(got, vec![1, 2], "the canceled watcher gets nothing");
    assert!(rev > 1);
}

#[tokio::test]
async fn past_start_catches_up_from_ring_and_backend_then_goes_live() {
    let h = Harness::new(hub_config());
    let mut revs = vec![];
    for i in 0..20 {
        revs.push(h.put(&format!("p/{}", i % 3), &i.to_string()));
        h.put("other", "x");
    }
    let (req, mut s) = h.open();
    // From the backend (the ring holds only 8 revisions) and from the ring.
    req.create(&WatchCreateRequest {
        prev_kv: true,
        ..watch("p/", "p0", 2)
    });
    req.create(&watch("p/", "p0", revs[17]));
    let mut seen: std::collections::HashMap<i64, Vec<i64>> = Default::default();
    let mut prevs = vec![];
    let mut created = 0;
    while created < 2 || seen.values().map(Vec::len).sum::<usize>() < 23 {
        let r = recv(&mut s).await;
        if r.created {
            created += 1;
            continue;
        }
        assert_eq!(
            r.header.as_ref().unwrap().revision,
            h.mvcc.current_revision(),
            "catch-up reports the store's revision"
        );
        seen.entry(r.watch_id)
            .or_default()
            .extend(evs(&r).iter().map(|e| e.3));
        if r.watch_id == 0 {
            prevs.extend(
                r.events
                    .iter()
                    .map(|e| e.prev_kv.as_ref().map(|p| p.value.clone())),
            );
        }
    }
    // Read back from the backend, prev_kv comes from the key index at mod_revision - 1.
    assert_eq!(
        prevs[..4],
        [None, None, None, Some(Bytes::from_static(b"0"))]
    );
    assert_eq!(seen[&0], revs);
    assert_eq!(seen[&1], revs[17..].to_vec());
    let live = h.put("p/9", "live");
    let mut ids = vec![];
    for _ in 0..2 {
        let r = recv(&mut s).await;
        assert_eq!(evs(&r)[0].3, live);
        ids.push(r.watch_id);
    }
    ids.sort();
    assert_eq!(ids, vec![0, 1]);
    assert_quiet(&req, &mut s).await;
}

#[tokio::test]
async fn compacted_start_gets_created_then_compact_revision() {
    let h = Harness::new(hub_config());
    for i in 0..10 {
        h.put("k", &i.to_string());
    }
    h.compact(6);
    let (req, mut s) = h.open();
    req.create(&watch("k", "", 5));
    let c = recv(&mut s).await;
    assert!(c.created && !c.canceled);
    let r = recv(&mut s).await;
    assert_eq!(
        (
            r.watch_id,
            r.compact_revision,
            r.canceled,
            r.cancel_reason.as_str()
        ),
        (0, 6, true, "")
    );
    // Start at the compacted revision itself is served (etcd: only start < compacted fails).
    req.create(&watch("k", "", 6));
    assert!(recv(&mut s).await.created);
    let r = recv(&mut s).await;
    assert_eq!(
        evs(&r).iter().map(|e| e.3).collect::<Vec<_>>(),
        (6..=11).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn compaction_racing_a_backend_read_cancels_instead_of_leaving_a_gap() {
    let h = Harness::new(hub_config());
    for i in 0..30 {
        h.put(&format!("k{}", i % 4), "v");
    }
    let mut reg = Registry::new(h.mvcc.current_revision(), Ring::new(1, usize::MAX));
    let shared = Arc::new(StreamShared::new(16));
    let sid = reg.add_stream(shared.clone());
    reg.create(sid, &watch("k", "l", 3), h.mvcc.current_revision());
    assert!(matches!(shared.pop(), Some(Item::Control(r)) if r.created));
    let CatchUp::Work(plan) = reg.plan_catch_up(sid, h.mvcc.compacted_revision(), 1000) else {
        panic!("the watcher needs history")
    };
    assert!(plan.ring.is_none() && plan.from == 3);
    h.compact(20);
    let batches = history::read(&*h.backend, &h.mvcc, plan.from, plan.to, plan.need_prev).unwrap();
    let items = reg.finish_catch_up(sid, &plan, &batches, Some(h.mvcc.compacted_revision()));
    match &items[..] {
        [Item::Control(r)] => assert_eq!((r.compact_revision, r.canceled), (20, true)),
        _ => panic!("expected only the compacted cancel"),
    }
}

#[tokio::test]
async fn filters_ranges_and_one_response_per_revision() {
    let h = Harness::new(hub_config());
    let (req, mut s) = h.open();
    req.create(&WatchCreateRequest {
        filters: vec![FilterType::Noput as i32],
        ..watch("a", "\0", 0)
    });
    req.create(&WatchCreateRequest {
        filters: vec![FilterType::Nodelete as i32],
        ..watch("b", "c", 0)
    });
    recv(&mut s).await;
    recv(&mut s).await;
    let r1 = h.write(&[
        ("a", Some("1")),
        ("b1", Some("1")),
        ("b2", Some("2")),
        ("c", Some("3")),
    ]);
    let r = recv(&mut s).await;
    assert_eq!(
        r.watch_id, 1,
        "NOPUT drops the whole revision for watcher 0"
    );
    assert_eq!(
        evs(&r)
            .iter()
            .map(|e| (e.0.as_str(), e.3))
            .collect::<Vec<_>>(),
        vec![("b1", r1), ("b2", r1)]
    );
    let r2 = h.write(&[("b1", None), ("c", None)]);
    let r = recv(&mut s).await;
    assert_eq!(
        (r.watch_id, evs(&r).len()),
        (0, 2),
        "watcher 0 sees both deletes in one response"
    );
    assert_eq!(r.header.unwrap().revision, r2);
    assert_quiet(&req, &mut s).await;
}

#[tokio::test]
async fn future_start_waits_for_its_revision() {
    let h = Harness::new(hub_config());
    let (req, mut s) = h.open();
    let now = h.mvcc.current_revision();
    req.create(&watch("f", "", now + 3));
    recv(&mut s).await;
    for i in 0..5 {
        h.put("f", &i.to_string());
    }
    let got: Vec<i64> = [recv(&mut s).await, recv(&mut s).await, recv(&mut s).await]
        .iter()
        .map(|r| evs(r)[0].3)
        .collect();
    assert_eq!(got, vec![now + 3, now + 4, now + 5]);
    assert_quiet(&req, &mut s).await;
}

#[tokio::test]
async fn slow_stream_never_blocks_publish_and_loses_nothing() {
    let h = Harness::new(HubConfig {
        queue_cap: 2,
        ring_revs: 16,
        catch_up_revs: 50,
        ..HubConfig::default()
    });
    let (req, mut s) = h.open();
    req.create(&watch("", "\0", 0));
    req.create(&watch("k1", "", 0));
    recv(&mut s).await;
    recv(&mut s).await;
    // 600 revisions while nobody reads: publish must return every time.
    let first = h.mvcc.current_revision() + 1;
    for i in 0..600 {
        h.put(&format!("k{}", i % 3), &i.to_string());
    }
    assert!(
        s.shared_is_lagging(),
        "the full queue made the watchers lag"
    );
    let mut all = vec![];
    let mut k1 = vec![];
    while all.len() < 600 || k1.len() < 200 {
        let r = recv(&mut s).await;
        let revs = evs(&r).into_iter().map(|e| e.3);
        if r.watch_id == 0 {
            all.extend(revs)
        } else {
            k1.extend(revs)
        }
    }
    assert_eq!(
        all,
        (first..first + 600).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(k1, (first + 1..first + 600).step_by(3).collect::<Vec<_>>());
    let live = h.put("k1", "live");
    let mut got = [recv(&mut s).await, recv(&mut s).await];
    got.sort_by_key(|r| r.watch_id);
    assert!(got
        .iter()
        .all(|r| evs(r)[0].3 == live && r.header.as_ref().unwrap().revision == live));
    assert_quiet(&req, &mut s).await;
}

#[tokio::test]
async fn progress_request_waits_for_lagging_watchers() {
    let h = Harness::new(HubConfig {
        queue_cap: 1,
        ..hub_config()
    });
    let (req, mut s) = h.open();
    assert_quiet(&req, &mut s).await;
    req.create(&watch("x", "", 0));
    recv(&mut s).await;
    for i in 0..5 {
        h.put("x", &i.to_string());
    }
    req.request_progress();
    let mut last = 0;
    loop {
        let r = recv(&mut s).await;
        if r.watch_id == -1 {
            assert_eq!(r.header.unwrap().revision, h.mvcc.current_revision());
            assert_eq!(
                last,
                h.mvcc.current_revision(),
                "progress comes after every event at or below it"
            );
            break;
        }
        last = evs(&r).last().unwrap().3;
    }
}

#[tokio::test]
async fn progress_notify_reports_idle_watchers() {
    let h = Harness::new(HubConfig {
        progress_interval: Duration::from_millis(100),
        ..hub_config()
    });
    let (req, mut s) = h.open();
    req.create(&WatchCreateRequest {
        progress_notify: true,
        ..watch("p", "", 0)
    });
    req.create(&watch("q", "", 0));
    recv(&mut s).await;
    recv(&mut s).await;
    let t0 = tokio::time::Instant::now();
    let r = recv(&mut s).await;
    assert!(t0.elapsed() >= Duration::from_millis(100));
    assert_eq!((r.watch_id, r.events.len()), (0, 0));
    assert_eq!(r.header.unwrap().revision, h.mvcc.current_revision());
}

#[tokio::test]
async fn fragments_split_large_revisions_only_for_watchers_that_ask() {
    let h = Harness::new(hub_config());
    let header = ResponseHeader::default();
    let (req, mut s) = h.hub.open_stream(header, 300);
    req.create(&WatchCreateRequest {
        fragment: true,
        ..watch("f", "g", 0)
    });
    req.create(&watch("f", "g", 0));
    recv(&mut s).await;
    recv(&mut s).await;
    let big = "v".repeat(100);
    let kvs: Vec<(String, Option<&str>)> = (0..6)
        .map(|i| (format!("f{i}"), Some(big.as_str())))
        .collect();
    let kvs: Vec<(&str, Option<&str>)> = kvs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    h.write(&kvs);
    let (mut whole, mut parts) = (vec![], vec![]);
    while whole.is_empty() || parts.last().is_none_or(|r: &WatchResponse| r.fragment) {
        let r = recv(&mut s).await;
        if r.watch_id == 0 {
            parts.push(r)
        } else {
            whole.push(r)
        }
    }
    assert_eq!(whole.len(), 1);
    assert!(parts.len() > 1);
    assert_eq!(parts.iter().map(|r| r.events.len()).sum::<usize>(), 6);
}

#[tokio::test]
async fn fan_out_shares_one_encoding_and_stream_end_removes_watchers() {
    let h = Harness::new(HubConfig {
        queue_cap: 64,
        ..hub_config()
    });
    let (req, mut s) = h.open();
    for _ in 0..10 {
        req.create(&watch("shared", "", 0));
    }
    for _ in 0..10 {
        recv(&mut s).await;
    }
    h.put("shared", "v");
    let mut ptrs = std::collections::HashSet::new();
    for _ in 0..10 {
        let f = s.next().await.unwrap().unwrap();
        ptrs.insert(f.events()[0].as_ptr());
    }
    assert_eq!(ptrs.len(), 1, "ten watchers, one encoded event");
    drop(s);
    assert_eq!(h.hub.reg.lock().watcher_count(), 0);
    req.create(&watch("shared", "", 0));
    assert_eq!(
        h.hub.reg.lock().watcher_count(),
        0,
        "a closed stream takes no watchers"
    );
}

#[tokio::test]
async fn shutdown_ends_streams_with_server_stopped() {
    let h = Harness::new(hub_config());
    let (req, mut s) = h.open();
    req.create(&watch("z", "", 0));
    recv(&mut s).await;
    h.hub.shutdown();
    match s.next().await {
        Some(Err(crate::error::Error::Stopped)) => {}
        other => panic!(
            "expected server stopped, got {:?}",
            other.map(|r| r.map(|f| f.to_response()))
        ),
    }
    assert!(s.next().await.is_none());
}
