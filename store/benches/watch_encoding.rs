//! Event encoding on the watch send path (`store/src/watch/batch.rs`, `stream.rs`): one revision
//! of one put (256-byte value) delivered to W watchers of one stream, rendered to wire bytes.
//!
//! - `encode_shared`: what the hub writes per watcher — each event is protobuf-encoded once
//!   (lazily, by the first sender) into `Bytes` shared by every watcher, so a watcher's response
//!   is its own small head followed by a copy of those bytes. Frames are rendered beforehand;
//!   only the writing is timed.
//! - `encode_per_watcher`: the baseline the hub avoids — a whole `WatchResponse` with its own
//!   copy of the events, encoded by prost for every watcher.
//! - `send_path`: the whole sender per watcher — take the delivery off the stream's queue,
//!   render its frame over the shared encoding (the first one encodes), and write it.
//!
//! All three write exactly the same bytes (checked once per size). The publish that queues the
//! deliveries is set-up.

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keelson_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use keelson_proto::mvccpb::Event;
use keelson_store::bench_internals::Dispatch;
use prost::Message;

use common::{object_key, sizes};

/// The stream header `Dispatch` gives its streams.
const HEADER: ResponseHeader = ResponseHeader {
    cluster_id: 1,
    member_id: 2,
    revision: 0,
    raft_term: 3,
};

/// The baseline: for each of `w` watchers a whole response with its own copy of the events,
/// encoded by prost into `wire` (cleared first).
fn per_watcher(events: &[Event], w: usize, prev_kv: bool, wire: &mut BytesMut) {
    let revision = events[0].kv.as_ref().map_or(0, |kv| kv.mod_revision);
    let mut events = events.to_vec();
    if !prev_kv {
        events.iter_mut().for_each(|e| e.prev_kv = None);
    }
    wire.clear();
    for id in 0..w {
        let r = WatchResponse {
            header: Some(ResponseHeader { revision, ..HEADER }),
            watch_id: id as i64,
            events: events.clone(),
            ..Default::default()
        };
        r.encode(wire).expect("a BytesMut grows");
    }
}

fn encoding(c: &mut Criterion) {
    let ws = sizes(&[1, 100, 1000, 10_000], &[1, 100]);
    let value = Bytes::from(vec![b'v'; 256]);
    let key = object_key("pods", 1);
    let one = std::slice::from_ref(&key);
    let mut g = c.benchmark_group("watch_encoding");
    for prev_kv in [false, true] {
        let suffix = if prev_kv { "_prev_kv" } else { "" };
        for &w in &ws {
            g.throughput(Throughput::Elements(w as u64));
            let mut hub = Dispatch::new(1, w + 16);
            for _ in 0..w {
                hub.watch(0, &key, b"", prev_kv);
            }
            let mut wire = BytesMut::new();
            hub.drain(&mut wire);

            // The three paths write the same bytes for the same revision.
            let events = hub.next_events(one, &value);
            per_watcher(&events, w, prev_kv, &mut wire);
            let want = wire.to_vec();
            hub.publish(events.clone());
            hub.drain(&mut wire);
            assert_eq!(&wire[..], &want[..], "the send path writes prost's bytes");
            let mut frames = hub.drain_frames();
            assert!(frames.is_empty());

            g.bench_function(BenchmarkId::new(format!("encode_shared{suffix}"), w), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let events = hub.next_events(one, &value);
                        hub.publish(events);
                        frames = hub.drain_frames();
                        let t = Instant::now();
                        frames.encode(&mut wire);
                        timed += t.elapsed();
                        assert_eq!(frames.len(), w);
                    }
                    timed
                })
            });
            g.bench_function(
                BenchmarkId::new(format!("encode_per_watcher{suffix}"), w),
                |b| {
                    b.iter_custom(|iters| {
                        let mut timed = Duration::ZERO;
                        for _ in 0..iters {
                            let events = hub.next_events(one, &value);
                            let t = Instant::now();
                            per_watcher(&events, w, prev_kv, &mut wire);
                            timed += t.elapsed();
                        }
                        timed
                    })
                },
            );
            g.bench_function(BenchmarkId::new(format!("send_path{suffix}"), w), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let events = hub.next_events(one, &value);
                        hub.publish(events);
                        let t = Instant::now();
                        let n = hub.drain(&mut wire);
                        timed += t.elapsed();
                        assert_eq!(n, w);
                    }
                    timed
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = encoding
}
criterion_main!(benches);
