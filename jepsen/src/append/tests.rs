use std::collections::HashMap;

use super::check;
use crate::history::{History, MicroOp, Op, OpType};
use crate::result::{CheckResult, Validity};
use crate::testkit::{append, r, txn, Lcg};

fn run(ops: Vec<Op>) -> CheckResult {
    check(&History::new(ops))
}

fn ok(p: u64, ops: Vec<MicroOp>, t: u64) -> Op {
    txn(p, OpType::Ok, ops, t, t + 1)
}

fn kinds(result: &CheckResult) -> Vec<&str> {
    result.counts.keys().map(String::as_str).collect()
}

#[test]
fn serial_history_is_valid() {
    let result = run(vec![
        ok(1, vec![r("x", &[]), append("x", 1)], 0),
        ok(2, vec![r("x", &[1]), append("x", 2), append("y", 1)], 10),
        ok(1, vec![r("x", &[1, 2]), r("y", &[1])], 20),
    ]);
    assert_eq!(result.valid, Validity::Valid, "{result:#?}");
    assert_eq!(result.stats["txns"], 3);
}

#[test]
fn write_cycle_is_g0() {
    // T0 and T1 both append to x and y; reads show x: T0 before T1, y: T1 before T0.
    let result = run(vec![
        ok(1, vec![append("x", 1), append("y", 1)], 0),
        ok(2, vec![append("x", 2), append("y", 2)], 0),
        ok(3, vec![r("x", &[1, 2]), r("y", &[2, 1])], 10),
    ]);
    assert_eq!(kinds(&result), vec!["G0"], "{result:#?}");
    let anomaly = &result.anomalies[0];
    let cycle = anomaly.detail["cycle"].as_array().unwrap();
    assert_eq!(cycle.len(), 2);
    assert!(cycle.iter().all(|step| step["kind"] == "ww"));
    let mut txns: Vec<usize> = anomaly.ops.iter().map(|op| op.index).collect();
    txns.sort();
    assert_eq!(txns, vec![0, 1]);
}

#[test]
fn circular_information_flow_is_g1c() {
    // Each txn read the other's append.
    let result = run(vec![
        ok(1, vec![append("x", 1), r("y", &[1])], 0),
        ok(2, vec![append("y", 1), r("x", &[1])], 0),
    ]);
    assert_eq!(kinds(&result), vec!["G1c"], "{result:#?}");
    let cycle = result.anomalies[0].detail["cycle"]
        .as_array()
        .unwrap()
        .clone();
    assert!(cycle.iter().all(|step| step["kind"] == "wr"));
}

#[test]
fn write_skew_is_g2_item() {
    let result = run(vec![
        ok(1, vec![r("x", &[]), append("y", 1)], 0),
        ok(2, vec![r("y", &[]), append("x", 1)], 0),
        ok(3, vec![r("x", &[1]), r("y", &[1])], 10),
    ]);
    assert_eq!(kinds(&result), vec!["G2"], "{result:#?}");
    assert_eq!(result.anomalies[0].detail["subtype"], "G2-item");
}

#[test]
fn read_skew_is_g_single() {
    // T0 saw T1's append to z but not its append to x.
    let result = run(vec![
        ok(1, vec![r("x", &[]), r("z", &[5])], 10),
        ok(2, vec![append("x", 1), append("z", 5)], 0),
        ok(3, vec![r("x", &[1])], 20),
    ]);
    assert_eq!(kinds(&result), vec!["G2"], "{result:#?}");
    let anomaly = &result.anomalies[0];
    assert_eq!(anomaly.detail["subtype"], "G-single");
    let kinds: Vec<&str> = anomaly.detail["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["rw", "wr"]);
}

#[test]
fn reading_a_failed_append_is_g1a() {
    let result = run(vec![
        txn(1, OpType::Fail, vec![append("x", 1)], 0, 5),
        ok(2, vec![r("x", &[1])], 10),
    ]);
    assert_eq!(kinds(&result), vec!["G1a"]);
    let involved: Vec<usize> = result.anomalies[0].ops.iter().map(|op| op.index).collect();
    assert_eq!(involved, vec![0, 1]);
}

#[test]
fn reading_an_indeterminate_append_is_fine() {
    let result = run(vec![
        txn(
            1,
            OpType::Info,
            vec![
                append("x", 1),
                MicroOp::R {
                    key: "y".into(),
                    value: None,
                },
            ],
            0,
            5,
        ),
        ok(2, vec![r("x", &[1])], 10),
    ]);
    assert_eq!(result.valid, Validity::Valid, "{result:#?}");
}

#[test]
fn reading_a_txns_middle_state_is_g1b() {
    let result = run(vec![
        ok(1, vec![append("x", 1), append("x", 2)], 0),
        ok(2, vec![r("x", &[1])], 10),
    ]);
    assert_eq!(kinds(&result), vec!["G1b"], "{result:#?}");
}

#[test]
fn forked_lists_are_incompatible_orders() {
    let result = run(vec![
        ok(1, vec![append("x", 1)], 0),
        ok(2, vec![append("x", 2)], 0),
        ok(3, vec![r("x", &[1, 2])], 10),
        ok(4, vec![r("x", &[2, 1])], 10),
    ]);
    assert!(result.has("incompatible-order"), "{result:#?}");
    assert_eq!(result.valid, Validity::Invalid);
}

#[test]
fn duplicates_garbage_and_internal_inconsistency_are_reported() {
    let result = run(vec![
        ok(1, vec![append("x", 1)], 0),
        ok(2, vec![append("x", 1)], 5),
        ok(3, vec![r("x", &[1, 1, 9])], 10),
        ok(4, vec![append("y", 3), r("y", &[])], 20),
    ]);
    for kind in [
        "duplicate-append",
        "duplicate-elements",
        "garbage-read",
        "internal",
    ] {
        assert!(result.has(kind), "{kind} missing: {:?}", result.counts);
    }
}

#[test]
fn generated_serial_history_is_valid_and_fast() {
    // 3000 txns run one at a time against a model of the lists.
    let mut rng = Lcg(42);
    let mut lists: HashMap<String, Vec<i64>> = HashMap::new();
    let mut ops = Vec::new();
    let mut next = 0;
    for t in 0..3000u64 {
        let mut micro = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let key = format!("k{}", rng.below(8));
            let list = lists.entry(key.clone()).or_default();
            if rng.below(2) == 0 {
                next += 1;
                list.push(next);
                micro.push(append(&key, next));
            } else {
                micro.push(r(&key, list));
            }
        }
        ops.push(ok(t % 7, micro, 10 * t));
    }
    let started = std::time::Instant::now();
    let result = run(ops);
    assert_eq!(
        result.valid,
        Validity::Valid,
        "{:?}",
        result.anomalies.first()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
