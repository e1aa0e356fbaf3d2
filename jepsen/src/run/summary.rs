//! # What a run found, in one page
//!
//! The verdict of a run combines its checkers': any `invalid` makes it `invalid` (exit 1);
//! otherwise any `unknown` makes it `unknown`. A workload that completed no operation ok
//! makes the run `unknown` too: a checker handed an empty history passes it, and an empty
//! pass is not a pass. `unknown` exits 2, like a harness failure, with its own line on stdout
//! (`UNKNOWN: ...`), so no script mistakes it for success.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::history::{Func, Op, OpType};
use crate::result::{CheckResult, Validity};

/// Outcome counts of a set of ops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
    /// Still in flight when the run ended.
    pub invoke: usize,
}

impl Counts {
    fn add(&mut self, kind: OpType) {
        match kind {
            OpType::Ok => self.ok += 1,
            OpType::Fail => self.fail += 1,
            OpType::Info => self.info += 1,
            OpType::Invoke => self.invoke += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.ok + self.fail + self.info + self.invoke
    }
}

/// One workload's ops: all of them, and by function.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkloadCounts {
    #[serde(flatten)]
    pub all: Counts,
    pub by_f: BTreeMap<String, Counts>,
}

pub(crate) fn f_name(f: &Func) -> &'static str {
    match f {
        Func::Read { .. } => "read",
        Func::Write { .. } => "write",
        Func::Delete { .. } => "delete",
        Func::Cas { .. } => "cas",
        Func::Txn { .. } => "txn",
        Func::Watch { .. } => "watch",
        Func::LeaseGrant { .. } => "lease-grant",
        Func::LeaseKeepAlive { .. } => "lease-keep-alive",
        Func::LeaseRevoke { .. } => "lease-revoke",
    }
}

pub(crate) fn count(ops: &[Op]) -> WorkloadCounts {
    let mut c = WorkloadCounts::default();
    for op in ops {
        c.all.add(op.kind);
        c.by_f
            .entry(f_name(&op.f).to_string())
            .or_default()
            .add(op.kind);
    }
    c
}

/// One checker's verdict as the summary shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckerVerdict {
    pub valid: Validity,
    pub anomalies: BTreeMap<String, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
    /// The history file the results' op indices refer to.
    pub history: String,
}

impl CheckerVerdict {
    pub(crate) fn of(result: &CheckResult, history: &str) -> CheckerVerdict {
        CheckerVerdict {
            valid: result.valid,
            anomalies: result.counts.clone(),
            unknown_reason: result.unknown_reason.clone(),
            history: history.to_string(),
        }
    }
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub target: String,
    pub workloads: Vec<String>,
    pub nemesis: String,
    pub seed: u64,
    pub time_limit_s: f64,
    pub read_mode: String,
    pub watch_progress: bool,
    pub started_at: String,
    pub duration_s: f64,
    /// The binary under test.
    pub binary: String,
    pub endpoints: Vec<String>,
    /// The process ids each workload's clients used: `[first, last]`.
    pub processes: BTreeMap<String, [u64; 2]>,
    pub ops: BTreeMap<String, WorkloadCounts>,
    pub nemesis_events: usize,
    pub checkers: BTreeMap<String, CheckerVerdict>,
    pub verdict: Validity,
    /// Why the verdict is what it is, when not plainly valid.
    pub reasons: Vec<String>,
    pub exit_code: u8,
    /// A harness failure that ended the run, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The run's verdict from its checkers and op counts, with the reasons for it.
pub(crate) fn verdict(
    checkers: &BTreeMap<String, CheckerVerdict>,
    ops: &BTreeMap<String, WorkloadCounts>,
) -> (Validity, Vec<String>) {
    let mut reasons = Vec::new();
    for (name, v) in checkers {
        match v.valid {
            Validity::Invalid => reasons.push(format!("{name}: anomalies {:?}", v.anomalies)),
            Validity::Unknown => reasons.push(format!(
                "{name}: could not decide ({})",
                v.unknown_reason.as_deref().unwrap_or("no reason given")
            )),
            Validity::Valid => {}
        }
    }
    for (name, c) in ops {
        if c.all.ok == 0 {
            reasons.push(format!(
                "{name}: no operation completed ok, nothing was tested"
            ));
        }
    }
    let valid = if checkers.values().any(|v| v.valid == Validity::Invalid) {
        Validity::Invalid
    } else if reasons.is_empty() {
        Validity::Valid
    } else {
        Validity::Unknown
    };
    (valid, reasons)
}

pub(crate) fn exit_code(valid: Validity) -> u8 {
    match valid {
        Validity::Valid => 0,
        Validity::Invalid => 1,
        Validity::Unknown => 2,
    }
}

impl Summary {
    /// The lines `jepsen test` prints.
    pub fn render(&self, dir: &std::path::Path) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "jepsen test: {} / {} / nemesis {} / seed {} / {:.0} s ({:.0} s with heal and checks)",
            self.target,
            self.workloads.join(","),
            self.nemesis,
            self.seed,
            self.time_limit_s,
            self.duration_s
        );
        for (name, c) in &self.ops {
            let _ = writeln!(
                s,
                "  {name:<9} {:>6} ops: {} ok, {} fail, {} info",
                c.all.total(),
                c.all.ok,
                c.all.fail,
                c.all.info
            );
        }
        let _ = writeln!(s, "  nemesis events: {}", self.nemesis_events);
        for (name, v) in &self.checkers {
            let detail = match v.valid {
                Validity::Valid => String::new(),
                Validity::Invalid => format!(" {:?}", v.anomalies),
                Validity::Unknown => format!(" ({})", v.unknown_reason.as_deref().unwrap_or("")),
            };
            let _ = writeln!(s, "  checker {name:<12} {:?}{detail}", v.valid);
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "HARNESS FAILURE: {e}");
        }
        let headline = match self.verdict {
            Validity::Valid => "VALID: no anomaly found".to_string(),
            Validity::Invalid => "INVALID: anomalies found".to_string(),
            Validity::Unknown => format!(
                "UNKNOWN: not a pass, the run could not be judged: {}",
                self.reasons.join("; ")
            ),
        };
        let _ = writeln!(s, "{headline}\nrun folder: {}", dir.display());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict_of(valid: Validity) -> CheckerVerdict {
        CheckerVerdict {
            valid,
            anomalies: if valid == Validity::Invalid {
                BTreeMap::from([("nonlinearizable".to_string(), 1)])
            } else {
                BTreeMap::new()
            },
            unknown_reason: (valid == Validity::Unknown).then(|| "timeout".to_string()),
            history: "history.jsonl".into(),
        }
    }

    fn counts(ok: usize) -> WorkloadCounts {
        let mut c = WorkloadCounts::default();
        c.all.ok = ok;
        c
    }

    #[test]
    fn invalid_beats_unknown_and_unknown_is_not_a_pass() {
        let ops = BTreeMap::from([("register".to_string(), counts(5))]);
        let all = |vs: &[Validity]| {
            vs.iter()
                .enumerate()
                .map(|(i, &v)| (format!("c{i}"), verdict_of(v)))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(verdict(&all(&[Validity::Valid]), &ops).0, Validity::Valid);
        let (v, reasons) = verdict(&all(&[Validity::Valid, Validity::Unknown]), &ops);
        assert_eq!(v, Validity::Unknown);
        assert!(reasons[0].contains("timeout"), "{reasons:?}");
        assert_eq!(
            verdict(&all(&[Validity::Unknown, Validity::Invalid]), &ops).0,
            Validity::Invalid
        );
        assert_eq!(exit_code(Validity::Valid), 0);
        assert_eq!(exit_code(Validity::Invalid), 1);
        assert_eq!(exit_code(Validity::Unknown), 2);
    }

    #[test]
    fn a_workload_without_ok_ops_is_unknown() {
        let checkers = BTreeMap::from([("linearizable".to_string(), verdict_of(Validity::Valid))]);
        let ops = BTreeMap::from([("register".to_string(), counts(0))]);
        let (v, reasons) = verdict(&checkers, &ops);
        assert_eq!(v, Validity::Unknown);
        assert!(reasons[0].contains("no operation completed ok"));
    }

    #[test]
    fn counts_by_function_and_outcome() {
        let read = |kind| {
            Op::new(
                1,
                kind,
                Func::Read {
                    key: "k".into(),
                    value: None,
                },
                0,
                1,
            )
        };
        let c = count(&[read(OpType::Ok), read(OpType::Fail), read(OpType::Ok)]);
        assert_eq!(c.all.ok, 2);
        assert_eq!(c.all.total(), 3);
        assert_eq!(c.by_f["read"].fail, 1);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["ok"], 2, "outcome counts are flattened: {json}");
    }
}
