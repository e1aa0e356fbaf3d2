//! # Histories: what the clients saw
//!
//! A history is the list of operations the test's clients performed against the cluster, each
//! with the wall of time it occupied on the client: `invoke_ns` when the request was sent,
//! `complete_ns` when the answer arrived. Times are one monotonic clock of the test process in
//! nanoseconds, so "A completed before B was invoked" means A really preceded B.
//!
//! One JSON object per line, one line per operation, written when the operation completes (or,
//! for one still in flight when the test ends, with type `invoke`). Unlike Jepsen's history,
//! which has separate invoke and completion events, an operation is one record: every checker
//! wants the pair, and a client that records only at completion never writes half a pair.
//!
//! The type follows Jepsen's semantics:
//! - `ok`: the operation took effect, and its results (a read's value, a revision) are true;
//! - `fail`: the operation certainly did not take effect (a CAS whose compare failed, an
//!   error the server returns before proposing);
//! - `info`: indeterminate — a timeout, a dropped connection: the operation may take effect at
//!   any time after its invocation, even after the client gave up on it, or never;
//! - `invoke`: never completed (the test ended first); treated exactly like `info`.
//!
//! Keys and register values are strings; a recorder for binary keys should hex-encode them.
//! Values are only compared for equality, so any injective encoding works.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The outcome class of an operation (Jepsen's `:type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

impl OpType {
    /// The op may or may not have taken effect, at any time after its invocation.
    pub fn is_indeterminate(self) -> bool {
        matches!(self, OpType::Invoke | OpType::Info)
    }
}

/// One operation of a list-append transaction (Elle's micro-op).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum MicroOp {
    /// Append `value` to the list at `key`. Values appended to one key must be unique.
    Append { key: String, value: i64 },
    /// Read the whole list at `key`; `None` when the result is unknown (the txn did not
    /// complete ok), `Some(vec![])` for an absent key.
    R {
        key: String,
        #[serde(default)]
        value: Option<Vec<i64>>,
    },
}

/// What a watch asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WatchRequest {
    pub key: String,
    /// etcd's range_end: `None` watches `key` alone, `"\0"` every key ≥ `key`, anything else
    /// the half-open range `[key, range_end)`.
    pub range_end: Option<String>,
    /// 0 = from the next revision; otherwise the first revision wanted.
    pub start_revision: i64,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchRequest {
    pub fn covers(&self, key: &str) -> bool {
        match self.range_end.as_deref() {
            None => key == self.key,
            Some("\0") => key >= self.key.as_str(),
            Some(end) => key >= self.key.as_str() && key < end,
        }
    }

    /// Whether the watch should deliver `event` (range and filters, not revision).
    pub fn matches(&self, key: &str, kind: EventKind) -> bool {
        self.covers(key)
            && match kind {
                EventKind::Put => !self.no_put,
                EventKind::Delete => !self.no_delete,
            }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Put,
    Delete,
}

/// One event as a watcher received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub key: String,
    /// The new value of a put; `None` for a delete.
    #[serde(default)]
    pub value: Option<String>,
    /// The revision of the event (the kv's mod_revision; for a delete, the header revision of
    /// the deleting write).
    pub revision: i64,
    /// The kv's create_revision (0 for a delete); a put creates iff it equals `revision`.
    #[serde(default)]
    pub create_revision: i64,
    /// prev_kv's value when the watch asked for prev_kv and the server sent one.
    #[serde(default)]
    pub prev_value: Option<String>,
}

/// One message of a watch stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WatchResponse {
    pub events: Vec<WatchEvent>,
    /// The response header's revision.
    pub revision: i64,
    /// An empty response that only reports progress (etcd's IsProgressNotify).
    pub progress_notify: bool,
    pub created: bool,
    pub canceled: bool,
    pub compact_revision: i64,
    pub time_ns: u64,
}

/// What an operation did, with its arguments and (for ok ops) its results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Func {
    /// Read one key; `value: None` means the key was absent.
    Read {
        key: String,
        #[serde(default)]
        value: Option<String>,
    },
    /// Put, optionally attached to a lease.
    Write {
        key: String,
        value: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<i64>,
    },
    /// Delete one key; `deleted` is the response's count when known.
    Delete {
        key: String,
        #[serde(default)]
        deleted: Option<i64>,
    },
    /// Compare-and-set: if the value equals `expected` (`None` = absent) then put `value`.
    /// A compare that did not hold is recorded as `fail`.
    Cas {
        key: String,
        expected: Option<String>,
        value: String,
    },
    /// A list-append transaction.
    Txn {
        ops: Vec<MicroOp>,
    },
    /// One watch request and every response it received, in arrival order.
    Watch {
        request: WatchRequest,
        #[serde(default)]
        responses: Vec<WatchResponse>,
    },
    LeaseGrant {
        lease: i64,
        ttl: i64,
    },
    /// `ttl` is the TTL the response granted.
    LeaseKeepAlive {
        lease: i64,
        #[serde(default)]
        ttl: Option<i64>,
    },
    LeaseRevoke {
        lease: i64,
    },
}

/// One operation: one line of a history file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history; [`History::new`] renumbers, so recorders may leave it 0.
    #[serde(default)]
    pub index: usize,
    /// The client (Jepsen's process); one client runs one operation at a time.
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: OpType,
    #[serde(flatten)]
    pub f: Func,
    pub invoke_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_ns: Option<u64>,
    /// The response header's revision, when the op completed ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    pub fn new(process: u64, kind: OpType, f: Func, invoke_ns: u64, complete_ns: u64) -> Op {
        Op {
            index: 0,
            process,
            kind,
            f,
            invoke_ns,
            complete_ns: Some(complete_ns),
            revision: None,
            error: None,
        }
    }

    pub fn with_revision(mut self, revision: i64) -> Op {
        self.revision = Some(revision);
        self
    }

    /// The last instant the operation could have taken effect: its completion for a
    /// determinate op, never-ending for an indeterminate one.
    pub fn effect_deadline(&self) -> u64 {
        if self.kind.is_indeterminate() {
            u64::MAX
        } else {
            self.complete_ns.unwrap_or(u64::MAX)
        }
    }

    /// The key a single-key operation addresses.
    pub fn key(&self) -> Option<&str> {
        match &self.f {
            Func::Read { key, .. }
            | Func::Write { key, .. }
            | Func::Delete { key, .. }
            | Func::Cas { key, .. } => Some(key),
            _ => None,
        }
    }

    /// `self` completed before `other` was invoked: real-time order.
    pub fn precedes(&self, other: &Op) -> bool {
        self.effect_deadline() < other.invoke_ns
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {source}")]
    Parse {
        line: usize,
        source: serde_json::Error,
    },
}

/// A whole history; `ops[i].index == i`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    pub fn new(mut ops: Vec<Op>) -> History {
        for (i, op) in ops.iter_mut().enumerate() {
            op.index = i;
        }
        History { ops }
    }

    /// Reads JSON lines; blank lines are skipped.
    pub fn read_jsonl(reader: impl BufRead) -> Result<History, HistoryError> {
        let mut ops = Vec::new();
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| HistoryError::Io {
                path: "<input>".into(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let op = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
                line: n + 1,
                source,
            })?;
            ops.push(op);
        }
        Ok(History::new(ops))
    }

    pub fn write_jsonl(&self, mut writer: impl Write) -> std::io::Result<()> {
        for op in &self.ops {
            serde_json::to_writer(&mut writer, op)?;
            writer.write_all(b"\n")?;
        }
        writer.flush()
    }

    pub fn load(path: &Path) -> Result<History, HistoryError> {
        let io = |source| HistoryError::Io {
            path: path.display().to_string(),
            source,
        };
        History::read_jsonl(BufReader::new(File::open(path).map_err(io)?))
    }

    pub fn save(&self, path: &Path) -> Result<(), HistoryError> {
        let io = |source| HistoryError::Io {
            path: path.display().to_string(),
            source,
        };
        self.write_jsonl(BufWriter::new(File::create(path).map_err(io)?))
            .map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trip_keeps_every_field() {
        let ops = vec![
            Op::new(
                1,
                OpType::Ok,
                Func::Write {
                    key: "x".into(),
                    value: "1".into(),
                    lease: Some(7),
                },
                10,
                20,
            )
            .with_revision(2),
            Op::new(
                2,
                OpType::Info,
                Func::Cas {
                    key: "x".into(),
                    expected: None,
                    value: "2".into(),
                },
                11,
                30,
            ),
            Op::new(
                3,
                OpType::Ok,
                Func::Txn {
                    ops: vec![
                        MicroOp::Append {
                            key: "a".into(),
                            value: 1,
                        },
                        MicroOp::R {
                            key: "a".into(),
                            value: Some(vec![1]),
                        },
                    ],
                },
                12,
                40,
            ),
            Op::new(
                4,
                OpType::Ok,
                Func::Watch {
                    request: WatchRequest {
                        key: "a".into(),
                        range_end: Some("\0".into()),
                        ..Default::default()
                    },
                    responses: vec![WatchResponse {
                        events: vec![WatchEvent {
                            kind: EventKind::Put,
                            key: "a".into(),
                            value: Some("v".into()),
                            revision: 2,
                            create_revision: 2,
                            prev_value: None,
                        }],
                        revision: 2,
                        ..Default::default()
                    }],
                },
                1,
                50,
            ),
        ];
        let history = History::new(ops);
        let mut buf = Vec::new();
        history.write_jsonl(&mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(
            text.lines().next().unwrap().contains(r#""f":"write""#),
            "{text}"
        );
        assert!(text.contains(r#""type":"info""#));
        let back = History::read_jsonl(&buf[..]).unwrap();
        assert_eq!(back, history);
        assert_eq!(back.ops[3].index, 3);
    }

    #[test]
    fn a_bad_line_names_its_number() {
        let input = "\n{\"process\":1,\"type\":\"ok\",\"f\":\"read\",\"key\":\"x\",\"invoke_ns\":1}\nnot json\n";
        match History::read_jsonl(input.as_bytes()) {
            Err(HistoryError::Parse { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn indeterminate_ops_may_take_effect_forever() {
        let read = Func::Read {
            key: "x".into(),
            value: None,
        };
        let info = Op::new(1, OpType::Info, read.clone(), 5, 9);
        let ok = Op::new(1, OpType::Ok, read, 5, 9);
        assert_eq!(info.effect_deadline(), u64::MAX);
        assert_eq!(ok.effect_deadline(), 9);
    }

    #[test]
    fn watch_ranges_follow_etcd() {
        let one = WatchRequest {
            key: "a".into(),
            ..Default::default()
        };
        assert!(one.covers("a") && !one.covers("ab"));
        let from = WatchRequest {
            key: "b".into(),
            range_end: Some("\0".into()),
            ..Default::default()
        };
        assert!(from.covers("b") && from.covers("zz") && !from.covers("a"));
        let prefix = WatchRequest {
            key: "p/".into(),
            range_end: Some("p0".into()),
            no_delete: true,
            ..Default::default()
        };
        assert!(prefix.matches("p/x", EventKind::Put));
        assert!(!prefix.matches("p/x", EventKind::Delete));
        assert!(!prefix.matches("q", EventKind::Put));
    }
}
