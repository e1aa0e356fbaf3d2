use std::time::Duration;

use super::check;
use crate::history::{Func, History, Op, OpType};
use crate::result::{CheckResult, Validity};
use crate::testkit::{delete, op, read, write, write_lease};

/// Milliseconds as nanoseconds, so the scenarios read in ms.
const MS: u64 = 1_000_000;

fn grant(lease: i64, ttl: i64, t0: u64) -> Op {
    op(
        1,
        OpType::Ok,
        Func::LeaseGrant { lease, ttl },
        t0 * MS,
        (t0 + 1) * MS,
    )
}

fn keep_alive(lease: i64, ttl: i64, t0: u64) -> Op {
    op(
        1,
        OpType::Ok,
        Func::LeaseKeepAlive {
            lease,
            ttl: Some(ttl),
        },
        t0 * MS,
        (t0 + 1) * MS,
    )
}

fn revoke(kind: OpType, lease: i64, t0: u64, t1: u64) -> Op {
    op(1, kind, Func::LeaseRevoke { lease }, t0 * MS, t1 * MS)
}

fn get(key: &str, value: Option<&str>, t0: u64) -> Op {
    read(2, key, value, t0 * MS, (t0 + 1) * MS)
}

/// Lease 7 (TTL 5 s) granted at 0, `k` attached at 100 ms, kept alive at 3000 ms: provably
/// alive until 8000 ms.
fn base() -> Vec<Op> {
    vec![
        grant(7, 5, 0),
        write_lease(1, "k", "v", 7, 100 * MS, 110 * MS),
        get("k", Some("v"), 1000),
        keep_alive(7, 5, 3000),
        get("k", Some("v"), 6000),
    ]
}

fn run(ops: Vec<Op>) -> CheckResult {
    check(&History::new(ops), Duration::ZERO)
}

#[test]
fn a_key_that_vanishes_after_expiry_is_fine() {
    let mut ops = base();
    ops.push(get("k", None, 9000));
    ops.push(get("k", None, 10_000));
    let result = run(ops);
    assert_eq!(result.valid, Validity::Valid, "{result:#?}");
    assert_eq!(result.stats["leased_keys"], 1);
}

#[test]
fn a_key_that_vanishes_before_its_lease_could_expire_is_reported() {
    let mut ops = base();
    ops.push(get("k", None, 7000));
    let result = run(ops);
    assert_eq!(
        result.counts.keys().collect::<Vec<_>>(),
        vec!["lease-key-vanished-early"],
        "{result:#?}"
    );
    let anomaly = &result.anomalies[0];
    assert_eq!(anomaly.detail["early_ms"], 999);
    // The keep-alive that proves the lease alive is named with the write and the read.
    let named: Vec<usize> = anomaly.ops.iter().map(|op| op.index).collect();
    assert_eq!(named, vec![1, 5, 3]);
    // Slack covering the difference makes it acceptable.
    let mut ops = base();
    ops.push(get("k", None, 7000));
    assert_eq!(
        check(&History::new(ops), Duration::from_secs(1)).valid,
        Validity::Valid
    );
}

#[test]
fn a_later_keep_alive_proves_the_lease_was_alive() {
    // Read absent at 2000 ms, but a keep-alive invoked at 2500 ms succeeded.
    let ops = vec![
        grant(7, 5, 0),
        write_lease(1, "k", "v", 7, 100 * MS, 110 * MS),
        get("k", None, 2000),
        keep_alive(7, 5, 2500),
    ];
    assert!(run(ops).has("lease-key-vanished-early"));
}

#[test]
fn a_revoke_or_delete_explains_the_vanishing() {
    let mut ops = base();
    ops.push(revoke(OpType::Info, 7, 6500, 6600));
    ops.push(get("k", None, 6700));
    assert_eq!(run(ops).valid, Validity::Valid);
    let mut ops = base();
    ops.push(delete(1, "k", 6500 * MS, 6600 * MS));
    ops.push(get("k", None, 6700));
    assert_eq!(run(ops).valid, Validity::Valid);
    // A revoke that failed explains nothing.
    let mut ops = base();
    ops.push(revoke(OpType::Fail, 7, 6500, 6600));
    ops.push(get("k", None, 6700));
    assert!(run(ops).has("lease-key-vanished-early"));
}

#[test]
fn a_vanished_key_that_comes_back_is_reported() {
    let mut ops = base();
    ops.push(get("k", None, 9000));
    ops.push(get("k", Some("v"), 9500));
    let result = run(ops);
    assert_eq!(
        result.counts.keys().collect::<Vec<_>>(),
        vec!["lease-key-reappeared"],
        "{result:#?}"
    );
    // Unless someone put it back.
    let mut ops = base();
    ops.push(get("k", None, 9000));
    ops.push(write(3, "k", "v", 9200 * MS, 9300 * MS));
    ops.push(get("k", Some("v"), 9500));
    assert_eq!(run(ops).valid, Validity::Valid);
}

#[test]
fn a_key_read_after_its_lease_was_revoked_is_reported() {
    let mut ops = base();
    ops.push(revoke(OpType::Ok, 7, 6500, 6600));
    ops.push(get("k", Some("v"), 6700));
    let result = run(ops);
    assert_eq!(
        result.counts.keys().collect::<Vec<_>>(),
        vec!["lease-key-outlived-revoke"],
        "{result:#?}"
    );
}
