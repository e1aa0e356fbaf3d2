use std::time::{Duration, Instant};

use super::check;
use crate::history::{Func, History, Op, OpType};
use crate::result::Validity;
use crate::testkit::{as_kind, cas, delete, read, write, Lcg};

const BUDGET: Duration = Duration::from_secs(30);

fn run(ops: Vec<Op>) -> crate::result::CheckResult {
    check(&History::new(ops), BUDGET)
}

#[test]
fn sequential_history_is_linearizable() {
    let result = run(vec![
        read(1, "x", None, 0, 1),
        write(1, "x", "1", 2, 3),
        read(2, "x", Some("1"), 4, 5),
        cas(1, OpType::Ok, "x", Some("1"), "2", 6, 7),
        cas(2, OpType::Fail, "x", Some("1"), "3", 8, 9),
        read(2, "x", Some("2"), 10, 11),
        delete(1, "x", 12, 13),
        read(2, "x", None, 14, 15),
    ]);
    assert_eq!(result.valid, Validity::Valid, "{result:#?}");
    assert_eq!(result.stats["ops_checked"], 7, "the failed CAS is dropped");
}

#[test]
fn stale_read_is_rejected_and_named() {
    let result = run(vec![
        write(1, "x", "1", 0, 10),
        write(1, "x", "2", 20, 30),
        read(2, "x", Some("1"), 40, 50),
    ]);
    assert_eq!(result.valid, Validity::Invalid);
    let anomaly = &result.anomalies[0];
    assert_eq!(anomaly.kind, "nonlinearizable");
    assert_eq!(anomaly.detail["blocking_op"], 2, "{anomaly:#?}");
    assert_eq!(anomaly.detail["longest_prefix"], serde_json::json!([0, 1]));
    assert_eq!(anomaly.detail["value_after_prefix"], "2");
    assert!(anomaly.ops.iter().any(|op| op.index == 2));
}

#[test]
fn concurrent_writes_linearize_in_the_only_order_reads_allow() {
    // w1 and w2 overlap; the read of 1 forces w2 before w1.
    let base = vec![
        write(1, "x", "1", 0, 50),
        write(2, "x", "2", 10, 60),
        read(3, "x", Some("1"), 70, 80),
    ];
    assert_eq!(run(base.clone()).valid, Validity::Valid);
    // A later read of 2 would need w2 after w1 as well: no order satisfies both.
    let mut both = base;
    both.push(read(3, "x", Some("2"), 90, 100));
    let result = run(both);
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!(result.anomalies[0].detail["blocking_op"], 3);
}

#[test]
fn read_concurrent_with_a_write_may_see_either_value() {
    let ops = |seen| {
        vec![
            write(1, "x", "1", 0, 10),
            write(1, "x", "2", 20, 40),
            read(2, "x", Some(seen), 25, 35),
        ]
    };
    assert_eq!(run(ops("1")).valid, Validity::Valid);
    assert_eq!(run(ops("2")).valid, Validity::Valid);
}

#[test]
fn indeterminate_write_may_apply_late_or_never() {
    let info = as_kind(write(1, "x", "1", 0, 10), OpType::Info);
    // Applied long after the client gave up on it.
    assert_eq!(
        run(vec![
            info.clone(),
            read(2, "x", None, 20, 30),
            read(2, "x", Some("1"), 40, 50)
        ])
        .valid,
        Validity::Valid
    );
    // Never applied.
    assert_eq!(
        run(vec![info.clone(), read(2, "x", None, 20, 30)]).valid,
        Validity::Valid
    );
    // Applied, then undone by nothing: illegal.
    let result = run(vec![
        info,
        read(2, "x", Some("1"), 20, 30),
        read(2, "x", None, 40, 50),
    ]);
    assert_eq!(result.valid, Validity::Invalid);
    // An info op is never the blocking op: it may always be postponed.
    assert_eq!(result.anomalies[0].detail["blocking_op"], 2);
}

#[test]
fn a_determinate_write_must_apply_before_it_returns() {
    let result = run(vec![write(1, "x", "1", 0, 10), read(2, "x", None, 20, 30)]);
    assert_eq!(result.valid, Validity::Invalid);
}

#[test]
fn indeterminate_cas_applies_only_where_its_compare_holds() {
    let info_cas = cas(2, OpType::Info, "x", Some("1"), "2", 20, 30);
    let ok = vec![
        write(1, "x", "1", 0, 10),
        info_cas.clone(),
        read(1, "x", Some("2"), 100, 110),
    ];
    assert_eq!(run(ok).valid, Validity::Valid);
    // The register never holds 1, so the CAS cannot have produced 2.
    let bad = vec![
        write(1, "x", "0", 0, 10),
        info_cas,
        read(1, "x", Some("2"), 100, 110),
    ];
    assert_eq!(run(bad).valid, Validity::Invalid);
}

#[test]
fn ok_cas_whose_compare_cannot_hold_is_rejected() {
    let result = run(vec![
        write(1, "x", "1", 0, 10),
        cas(1, OpType::Ok, "x", Some("2"), "3", 20, 30),
    ]);
    assert_eq!(result.valid, Validity::Invalid);
    // Create-if-absent on an existing key is just as impossible.
    let result = run(vec![
        write(1, "x", "1", 0, 10),
        cas(1, OpType::Ok, "x", None, "3", 20, 30),
    ]);
    assert_eq!(result.valid, Validity::Invalid);
}

#[test]
fn keys_are_checked_independently_and_the_bad_one_is_named() {
    let result = run(vec![
        write(1, "a", "1", 0, 10),
        write(2, "b", "1", 0, 10),
        read(1, "a", Some("1"), 20, 30),
        read(2, "b", Some("9"), 20, 30),
    ]);
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!(result.counts["nonlinearizable"], 1);
    assert_eq!(result.anomalies[0].detail["key"], "b");
    assert_eq!(result.stats["keys"], 2);
}

#[test]
fn running_out_of_time_is_unknown_not_valid() {
    let ops: Vec<Op> = (0..3000)
        .map(|i| write(1, "x", &i.to_string(), 2 * i, 2 * i + 1))
        .collect();
    let result = check(&History::new(ops), Duration::ZERO);
    assert_eq!(result.valid, Validity::Unknown);
    assert!(result.unknown_reason.unwrap().contains("\"x\""));
}

#[test]
fn thousands_of_sequential_ops_check_fast() {
    let mut ops = Vec::new();
    for i in 0..5000u64 {
        let t = 10 * i;
        ops.push(if i % 2 == 0 {
            write(i % 3, "x", &i.to_string(), t, t + 5)
        } else {
            read(i % 3, "x", Some(&(i - 1).to_string()), t, t + 5)
        });
    }
    let started = Instant::now();
    let result = run(ops);
    assert_eq!(result.valid, Validity::Valid);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// A register run by `clients` concurrent clients, valid by construction: each op takes
/// effect at a random instant inside its interval, and the reads report what the register
/// held at theirs. Some writes are recorded `info`, and half of those never apply.
fn generated(clients: u64, per_client: u64, seed: u64) -> Vec<Op> {
    let mut rng = Lcg(seed);
    let mut planned: Vec<(u64, Op, bool)> = Vec::new(); // (effect instant, op, applies)
    let mut next_value = 0u64;
    for p in 0..clients {
        let mut t = rng.below(10);
        for _ in 0..per_client {
            let invoke = t;
            let effect = invoke + rng.below(20);
            let complete = effect + rng.below(20);
            t = complete + 1 + rng.below(10);
            next_value += 1;
            let v = next_value.to_string();
            let (op, applies) = match rng.below(10) {
                0..=4 => (read(p, "x", None, invoke, complete), true),
                5..=7 => (write(p, "x", &v, invoke, complete), true),
                8 => (cas(p, OpType::Ok, "x", None, &v, invoke, complete), true),
                _ => (
                    as_kind(write(p, "x", &v, invoke, complete), OpType::Info),
                    rng.below(2) == 0,
                ),
            };
            planned.push((effect, op, applies));
        }
    }
    planned.sort_by_key(|(effect, op, _)| (*effect, op.process));
    let mut register: Option<String> = None;
    let mut ops = Vec::new();
    for (_, mut op, applies) in planned {
        match &mut op.f {
            Func::Read { value, .. } => *value = register.clone(),
            Func::Write { value, .. } if applies => register = Some(value.clone()),
            Func::Cas {
                expected, value, ..
            } => {
                // Compare against the current value: the CAS succeeds as recorded.
                *expected = register.clone();
                register = Some(value.clone());
            }
            _ => {}
        }
        ops.push(op);
    }
    ops.sort_by_key(|op| op.invoke_ns);
    ops
}

#[test]
fn generated_concurrent_history_is_linearizable_and_a_corrupted_read_is_not() {
    let ops = generated(5, 2000, 7);
    let started = Instant::now();
    let result = run(ops.clone());
    assert_eq!(
        result.valid,
        Validity::Valid,
        "{:#?}",
        result.anomalies.first()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    // Make a late read return a value written long before: a stale read.
    let mut bad = ops;
    let late = (bad.len() * 3 / 4..bad.len())
        .find(|&i| matches!(bad[i].f, Func::Read { .. }) && bad[i].kind == OpType::Ok)
        .unwrap();
    let early = bad
        .iter()
        .position(|op| matches!(op.f, Func::Write { .. }) && op.kind == OpType::Ok)
        .unwrap();
    let Func::Write { value: stale, .. } = bad[early].f.clone() else {
        unreachable!()
    };
    bad[late].f = Func::Read {
        key: "x".into(),
        value: Some(stale),
    };
    let result = run(bad);
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!(result.anomalies[0].detail["blocking_op"], late);
}

#[test]
fn many_unobserved_indeterminate_writes_do_not_blow_up_the_search() {
    // 40 timed-out writes that never completed, concurrent with everything: 2^40 subsets if
    // the search had to consider applying each. Nobody reads their values, so they drop out.
    let mut ops: Vec<Op> = (0..40)
        .map(|p| {
            as_kind(
                write(100 + p, "x", &format!("lost{p}"), p, p + 1),
                OpType::Info,
            )
        })
        .collect();
    for i in 0..200u64 {
        let t = 1000 + 10 * i;
        ops.push(write(1, "x", &i.to_string(), t, t + 2));
        ops.push(read(2, "x", Some(&i.to_string()), t + 4, t + 6));
    }
    ops.push(read(2, "x", Some("3"), 5000, 5001));
    let started = Instant::now();
    let result = run(ops);
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!(result.anomalies[0].detail["blocking_op"], 440);
    assert_eq!(
        result.stats["ops_checked"], 401,
        "the 40 unobserved info writes are dropped"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
