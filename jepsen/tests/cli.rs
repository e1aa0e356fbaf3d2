//! The `jepsen check` command end to end: a history file in, a JSON result and exit code out.

use std::path::{Path, PathBuf};
use std::process::Command;

use jepsen::history::{Func, History, Op, OpType};

fn history_file(name: &str, ops: Vec<Op>) -> PathBuf {
    let path = std::env::temp_dir().join(format!("jepsen-cli-{}-{name}.jsonl", std::process::id()));
    History::new(ops).save(&path).unwrap();
    path
}

fn check(path: &Path, checker: &str) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_jepsen"))
        .args([
            "check",
            "--history",
            path.to_str().unwrap(),
            "--checker",
            checker,
        ])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json)
}

fn write(value: &str, t: u64) -> Op {
    Op::new(
        1,
        OpType::Ok,
        Func::Write {
            key: "x".into(),
            value: value.into(),
            lease: None,
        },
        t,
        t + 1,
    )
}

fn read(value: &str, t: u64) -> Op {
    Op::new(
        2,
        OpType::Ok,
        Func::Read {
            key: "x".into(),
            value: Some(value.into()),
        },
        t,
        t + 1,
    )
}

#[test]
fn check_reports_valid_and_invalid_histories_by_exit_code() {
    let good = history_file("good", vec![write("1", 0), read("1", 10)]);
    let (code, json) = check(&good, "linearizable");
    assert_eq!(code, Some(0));
    assert_eq!(json["valid"], "valid");

    let bad = history_file("bad", vec![write("1", 0), write("2", 10), read("1", 20)]);
    let (code, json) = check(&bad, "linearizable");
    assert_eq!(code, Some(1));
    assert_eq!(json["anomalies"][0]["kind"], "nonlinearizable");
    assert_eq!(json["anomalies"][0]["detail"]["blocking_op"], 2);

    // Other checkers run on the same file; it holds nothing they judge.
    for checker in ["append", "watch", "lease"] {
        assert_eq!(check(&bad, checker).0, Some(0), "{checker}");
    }
    let (code, _) = check(&bad, "nonsense");
    assert_eq!(code, Some(64));
    std::fs::remove_file(good).unwrap();
    std::fs::remove_file(bad).unwrap();
}
