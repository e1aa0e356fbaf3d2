//! The revision layer (`store/src/mvcc/`): key-index insert, range at a revision and compaction
//! over trees of 10k, 100k and 1M keys.
//!
//! Every tree holds each key at two versions (two full passes of puts, 1000 keys per revision),
//! so a read at the older revision has to pick the right version out of each key's history.
//! Puts go through the write txn exactly as apply does (records included, backend not
//! written). Reads are measured before the put benches, whose puts add history to the tree.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use keelson_proto::etcdserverpb::RangeRequest;
use keelson_store::bench_internals::Revisions;

use common::{flat_key, measuring, prefix_end, sizes, Rng};

const CHUNK: usize = 1000;

/// A tree of `n` keys, each put twice. Returns it with the revision after the first pass.
fn tree(n: usize) -> (Revisions, i64) {
    let store = Revisions::new();
    let keys: Vec<Bytes> = (0..n).map(flat_key).collect();
    let value = Bytes::from(vec![b'v'; 256]);
    let mut first = 0;
    for pass in 0..2 {
        for chunk in keys.chunks(CHUNK) {
            store.put_all(chunk, &value);
        }
        if pass == 0 {
            first = store.revision();
        }
    }
    (store, first)
}

/// The store and the revision a read named `name` reads at: the head (0) or the revision after
/// the first pass (`"old"`).
fn read_at<'a>((store, old): &'a (Revisions, i64), name: &str) -> (&'a Revisions, i64) {
    (store, if name == "old" { *old } else { 0 })
}

fn range(key: &[u8], end: &[u8], revision: i64, limit: i64) -> RangeRequest {
    RangeRequest {
        key: key.to_vec().into(),
        range_end: end.to_vec().into(),
        revision,
        limit,
        ..Default::default()
    }
}

fn key_index(c: &mut Criterion) {
    let ns = sizes(&[10_000, 100_000, 1_000_000], &[1000]);
    let value = Bytes::from(vec![b'v'; 256]);
    let mut g = c.benchmark_group("revisions");
    g.sampling_mode(SamplingMode::Flat);
    for &n in &ns {
        // Built on first use, so filtering these benches out skips building the tree.
        let mut built: Option<(Revisions, i64)> = None;
        let mut rng = Rng::new(n as u64);
        let span = 100.min(n - 1);
        for name in ["head", "old"] {
            g.bench_function(BenchmarkId::new(format!("range_100_at_{name}"), n), |b| {
                let (store, at) = read_at(built.get_or_insert_with(|| tree(n)), name);
                b.iter_batched(
                    || {
                        let i = rng.below(n - span);
                        range(&flat_key(i), &flat_key(i + span), at, 0)
                    },
                    |r| black_box(store.range(&r)),
                    criterion::BatchSize::SmallInput,
                )
            });
            g.bench_function(BenchmarkId::new(format!("get_at_{name}"), n), |b| {
                let (store, at) = read_at(built.get_or_insert_with(|| tree(n)), name);
                b.iter_batched(
                    || range(&flat_key(rng.below(n)), b"", at, 0),
                    |r| black_box(store.range(&r)),
                    criterion::BatchSize::SmallInput,
                )
            });
        }
        // A Kubernetes list page: the whole prefix with a limit. etcd 3.4 counts every key in
        // the range (the response's `count`), so this walks the whole tree.
        g.bench_function(BenchmarkId::new("list_limit_500_at_old", n), |b| {
            let (store, old) = built.get_or_insert_with(|| tree(n));
            let list = range(b"/bench/", &prefix_end(b"/bench/"), *old, 500);
            b.iter(|| black_box(store.range(&list)))
        });
        // Puts last: each adds history, which the reads above must not see.
        let mut fresh = 0usize;
        g.bench_function(BenchmarkId::new("put_new_key", n), |b| {
            let (store, _) = built.get_or_insert_with(|| tree(n));
            b.iter_batched(
                || {
                    fresh += 1;
                    [Bytes::from(format!("/bench-new/{fresh:08}"))]
                },
                |k| store.put_all(&k, &value),
                criterion::BatchSize::SmallInput,
            )
        });
        g.bench_function(BenchmarkId::new("put_existing_key", n), |b| {
            let (store, _) = built.get_or_insert_with(|| tree(n));
            b.iter_batched(
                || [flat_key(rng.below(n))],
                |k| store.put_all(&k, &value),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Compaction, the way a periodic compactor meets it: `changed` of the tree's keys got a new
/// version since the last compaction, which drops exactly their previous one. The rewrite is
/// set-up, only `compact` is timed.
fn compaction(c: &mut Criterion) {
    let ns = sizes(&[10_000, 100_000, 1_000_000], &[1000]);
    let value = Bytes::from(vec![b'v'; 256]);
    let mut g = c.benchmark_group("compaction");
    g.sampling_mode(SamplingMode::Flat);
    if measuring() {
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(5));
    }
    for &n in &ns {
        let mut built: Option<Revisions> = None;
        let keys: Vec<Bytes> = (0..n).map(flat_key).collect();
        for (name, every) in [("all_keys_changed", 1), ("1pct_keys_changed", 100)] {
            let changed: Vec<Bytes> = keys.iter().step_by(every).cloned().collect();
            g.bench_function(BenchmarkId::new(name, n), |b| {
                let store = built.get_or_insert_with(|| {
                    let (store, _) = tree(n);
                    store.compact(store.revision());
                    store
                });
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        for chunk in changed.chunks(CHUNK) {
                            store.put_all(chunk, &value);
                        }
                        let at = store.revision();
                        let t = Instant::now();
                        let dropped = store.compact(at);
                        timed += t.elapsed();
                        assert_eq!(dropped, changed.len(), "one old version per changed key");
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
    targets = key_index, compaction
}
criterion_main!(benches);
