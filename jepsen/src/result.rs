//! # Checker results
//!
//! Every checker answers with one [`CheckResult`]: `valid`, `invalid` with the anomalies found
//! (each naming the operations involved, copied whole so a result file reads on its own), or
//! `unknown` when the checker could not decide (a search ran out of time) — never a false pass.
//!
//! A broken store can produce thousands of anomalies of one kind; the result keeps the first
//! [`MAX_PER_KIND`] of each kind and counts them all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::Op;

/// How many anomalies of one kind a result spells out.
pub const MAX_PER_KIND: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    Valid,
    Invalid,
    Unknown,
}

/// One violation, with the evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// A short stable name: `nonlinearizable`, `G1c`, `watch-gap`, ...
    pub kind: String,
    /// One sentence a person can act on.
    pub message: String,
    /// The operations involved.
    pub ops: Vec<Op>,
    /// Checker-specific evidence (a cycle's edges, the longest linearizable prefix, ...).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

impl Anomaly {
    pub fn new(kind: &str, message: impl Into<String>, ops: Vec<Op>) -> Anomaly {
        Anomaly {
            kind: kind.to_string(),
            message: message.into(),
            ops,
            detail: serde_json::Value::Null,
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Anomaly {
        self.detail = detail;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub checker: String,
    pub valid: Validity,
    /// Why the result is unknown, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
    /// How many anomalies of each kind were found (all of them, not only those listed).
    pub counts: BTreeMap<String, usize>,
    pub anomalies: Vec<Anomaly>,
    /// Checker-specific statistics (ops examined, partitions, ...).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub stats: serde_json::Value,
}

impl CheckResult {
    pub fn is_valid(&self) -> bool {
        self.valid == Validity::Valid
    }

    /// Whether an anomaly of `kind` was found.
    pub fn has(&self, kind: &str) -> bool {
        self.counts.contains_key(kind)
    }
}

/// Collects anomalies, capping each kind, and builds the result.
#[derive(Debug)]
pub struct Report {
    checker: String,
    counts: BTreeMap<String, usize>,
    anomalies: Vec<Anomaly>,
    unknown_reason: Option<String>,
    stats: serde_json::Value,
}

impl Report {
    pub fn new(checker: &str) -> Report {
        Report {
            checker: checker.to_string(),
            counts: BTreeMap::new(),
            anomalies: Vec::new(),
            unknown_reason: None,
            stats: serde_json::Value::Null,
        }
    }

    pub fn add(&mut self, anomaly: Anomaly) {
        let count = self.counts.entry(anomaly.kind.clone()).or_insert(0);
        *count += 1;
        if *count <= MAX_PER_KIND {
            self.anomalies.push(anomaly);
        }
    }

    /// Marks the result unknown unless an anomaly is found: an anomaly is proof, a timeout
    /// is only the absence of one.
    pub fn unknown(&mut self, reason: impl Into<String>) {
        self.unknown_reason.get_or_insert_with(|| reason.into());
    }

    pub fn stats(&mut self, stats: serde_json::Value) {
        self.stats = stats;
    }

    pub fn finish(self) -> CheckResult {
        let valid = if !self.anomalies.is_empty() {
            Validity::Invalid
        } else if self.unknown_reason.is_some() {
            Validity::Unknown
        } else {
            Validity::Valid
        };
        CheckResult {
            checker: self.checker,
            valid,
            unknown_reason: if valid == Validity::Unknown {
                self.unknown_reason
            } else {
                None
            },
            counts: self.counts,
            anomalies: self.anomalies,
            stats: self.stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomalies_beat_unknown_and_are_capped_per_kind() {
        let mut report = Report::new("t");
        report.unknown("timeout");
        for _ in 0..MAX_PER_KIND + 5 {
            report.add(Anomaly::new("x", "bad", vec![]));
        }
        let result = report.finish();
        assert_eq!(result.valid, Validity::Invalid);
        assert_eq!(result.counts["x"], MAX_PER_KIND + 5);
        assert_eq!(result.anomalies.len(), MAX_PER_KIND);
        assert_eq!(result.unknown_reason, None);
    }

    #[test]
    fn unknown_without_anomalies_serializes_lowercase() {
        let mut report = Report::new("t");
        report.unknown("timeout");
        let json = serde_json::to_value(report.finish()).unwrap();
        assert_eq!(json["valid"], "unknown");
        assert_eq!(json["unknown_reason"], "timeout");
    }
}
