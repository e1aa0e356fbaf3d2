//! What the store's criterion benches share: their sizes and their keys.
//!
//! `cargo test --all-targets` builds every bench and runs it once in criterion's test mode (no
//! `--bench` flag, or `--test`), in a debug build on CI's two cores. Building a 1M-key tree or
//! 100k watchers there would cost minutes, so in test mode every bench runs at its smallest
//! sizes only: the run proves the bench works, `cargo bench` measures.

#![allow(dead_code)] // each bench target uses its own part of this module

use std::time::Duration;

use bytes::Bytes;
use criterion::Criterion;

/// Whether this run measures (`cargo bench`) rather than checks that the benches run.
pub fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

/// `full` when measuring, else `small`.
pub fn sizes(full: &[usize], small: &[usize]) -> Vec<usize> {
    if measuring() {
        full.to_vec()
    } else {
        small.to_vec()
    }
}

/// Criterion tuned for a shared two-core machine: short warm-up and measurement, 20 samples.
/// Figures are for same-run comparisons only.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args()
}

/// A Kubernetes-shaped key: `/registry/<kind>/ns-<i % 100>/obj-<i>`, fixed width so key order
/// is index order within one namespace.
pub fn object_key(kind: &str, i: usize) -> Bytes {
    Bytes::from(format!("/registry/{kind}/ns-{:03}/obj-{i:08}", i % 100))
}

/// A flat key: `/bench/<i>`, fixed width so key order is index order.
pub fn flat_key(i: usize) -> Bytes {
    Bytes::from(format!("/bench/{i:08}"))
}

/// etcd's prefix end (clientv3 `GetPrefixRangeEnd`): the prefix with its last byte below 0xff
/// incremented and what follows dropped; `"\0"` (every key on) if there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("non-empty") += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// A cheap deterministic generator (splitmix64), so every run picks the same keys.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
