//! The watch hub's publish (`store/src/watch/`): one revision handed to 1, 100, 10k and 100k
//! watchers, as the apply thread does after a commit — find the synced watchers whose range
//! holds an event (`index.rs`), select their events and queue one shared reference per watcher
//! (`registry.rs`, `queue.rs`).
//!
//! Watchers are spread over up to 100 streams (etcd's figures here are for 100k watchers over
//! 100 streams). Only `publish` is timed; the streams' senders then drain their queues
//! untimed, so no queue fills and every watcher stays synced.
//!
//! Workloads:
//! - `fanout_key` / `fanout_prefix`: every watcher on one key / one prefix, and the revision
//!   puts that key / a key under it: the cost of delivering to everyone.
//! - `keys` / `prefixes`: each watcher on its own key / its own prefix, and the revision puts
//!   10 watched keys: the cost of finding the few watchers concerned among many.
//! - `mixed`: a quarter each of single keys, prefixes of 100 keys, ranges of 5 keys, and
//!   overlapping ranges of 1 to 100 keys, with one in a thousand watching every key from some
//!   key on; 10 puts at random keys of the watched space. Each put hits about 43 watchers at
//!   10k and 85 at 100k (about 50 of those are "from key on" ones).

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use keelson_store::bench_internals::Dispatch;

use common::{object_key, prefix_end, sizes, Rng};

const EVENTS: usize = 10;

/// A watcher's `(key, range_end)` and, for the selective workloads, a key it watches.
struct Workload {
    watches: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys the revision's puts pick from.
    targets: Vec<Bytes>,
    events: usize,
}

fn workload(name: &str, w: usize) -> Workload {
    let pod = |i| object_key("pods", i);
    match name {
        "fanout_key" => Workload {
            watches: vec![(pod(0).to_vec(), vec![]); w],
            targets: vec![pod(0)],
            events: 1,
        },
        "fanout_prefix" => Workload {
            watches: vec![(b"/registry/pods/".to_vec(), prefix_end(b"/registry/pods/")); w],
            targets: vec![pod(7)],
            events: 1,
        },
        "keys" => Workload {
            watches: (0..w).map(|i| (pod(i).to_vec(), vec![])).collect(),
            targets: (0..w).map(pod).collect(),
            events: EVENTS,
        },
        "prefixes" => {
            let dir = |i: usize| format!("/registry/configmaps/dir-{i:08}/").into_bytes();
            Workload {
                watches: (0..w).map(|i| (dir(i), prefix_end(&dir(i)))).collect(),
                targets: (0..w)
                    .map(|i| Bytes::from([dir(i), b"cm".to_vec()].concat()))
                    .collect(),
                events: EVENTS,
            }
        }
        "mixed" => {
            // Keys in index order, so ranges over them are as narrow as they look.
            let key = |i: usize| format!("/registry/leases/l-{i:08}").into_bytes();
            let mut rng = Rng::new(w as u64);
            let watches = (0..w)
                .map(|i| {
                    if i % 1000 == 999 {
                        return (key(rng.below(w)), vec![0]);
                    }
                    match i % 4 {
                        0 => (key(i), vec![]),
                        1 => {
                            // 100 keys under each prefix, so prefixes are shared by watchers.
                            let p = format!("/registry/leases/l-{:06}", i / 100).into_bytes();
                            let end = prefix_end(&p);
                            (p, end)
                        }
                        2 => (key(i), key(i + 5)),
                        _ => {
                            let from = rng.below(w);
                            (key(from), key(from + 1 + rng.below(100)))
                        }
                    }
                })
                .collect();
            Workload {
                watches,
                targets: (0..w).map(|i| Bytes::from(key(i))).collect(),
                events: EVENTS,
            }
        }
        _ => unreachable!("unknown workload {name}"),
    }
}

fn dispatch(c: &mut Criterion) {
    let ws = sizes(&[1, 100, 10_000, 100_000], &[1, 100]);
    let value = Bytes::from(vec![b'v'; 256]);
    let mut g = c.benchmark_group("watch_dispatch");
    g.sampling_mode(SamplingMode::Flat);
    for name in ["fanout_key", "fanout_prefix", "keys", "prefixes", "mixed"] {
        for &w in &ws {
            // Built on first use, so a filtered-out bench costs nothing.
            let mut setup = None;
            let mut wire = BytesMut::new();
            let mut rng = Rng::new(42);
            g.bench_function(BenchmarkId::new(name, w), |b| {
                let (wl, hub) = setup.get_or_insert_with(|| {
                    let wl = workload(name, w);
                    let streams = w.min(100);
                    // Room for one revision's deliveries (at most one per watcher) and the
                    // created responses, so no watcher ever lags.
                    let mut hub = Dispatch::new(streams, w / streams + 16);
                    for (i, (key, end)) in wl.watches.iter().enumerate() {
                        hub.watch(i, key, end, false);
                    }
                    hub.drain(&mut wire);
                    (wl, hub)
                });
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let keys: Vec<Bytes> = (0..wl.events)
                            .map(|_| wl.targets[rng.below(wl.targets.len())].clone())
                            .collect();
                        let events = hub.next_events(&keys, &value);
                        let t = Instant::now();
                        hub.publish(events);
                        timed += t.elapsed();
                        hub.drain(&mut wire);
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
    targets = dispatch
}
criterion_main!(benches);
