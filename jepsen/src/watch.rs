//! # Watch guarantees
//!
//! The checks of etcd's robustness suite (`tests/robustness/validate/watch.go`), which state
//! etcd's documented watch API guarantees, applied to every watch op of a history (one op = one
//! watch request and every response it received):
//!
//! - **filter**: every event is inside the watched range and not removed by a filter;
//! - **ordered**: event revisions never decrease along a watch;
//! - **unique**: no (key, revision) event arrives twice on one watch;
//! - **atomic**: the events of one revision arrive in one response, never split across two;
//! - **bookmarkable**: progress notifications' revisions never decrease nor fall behind an
//!   event already delivered, and no event at or below a notified revision arrives after it;
//! - **reliable**: between the first revision the watch covers (its start revision, else the
//!   revision after its first progress/created response, else its first event) and the last
//!   revision it reported, it received every matching event of the store's history: no gaps;
//! - **resumable**: a watch started at revision R first receives the first matching event at a
//!   revision ≥ R, and nothing older;
//! - **prev_kv**: a prev_kv sent with an event holds the value of the key's previous write;
//! - **is_create**: a put is a create (create_revision == mod_revision) iff the key did not
//!   exist before it.
//!
//! The store's history is rebuilt from the history itself: every event any watcher received,
//! plus every ok write whose revision is known (put, successful CAS, delete that removed a key).
//! Two sources that disagree about a (revision, key) are an `inconsistent-events` anomaly.
//! The reliable, prev_kv and is_create checks assume this rebuilt history is complete for the
//! keys involved — true when some watcher covers the keyspace for the whole run, which the
//! workloads arrange. As in etcd's suite, a missing prev_kv is accepted (compaction may have
//! removed it), a wrong one is not.

use std::collections::{BTreeMap, HashSet};

use serde_json::json;

use crate::history::{
    EventKind, Func, History, Op, OpType, WatchEvent, WatchRequest, WatchResponse,
};
use crate::result::{Anomaly, CheckResult, Report};

/// One event of the rebuilt store history.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Known {
    kind: EventKind,
    value: Option<String>,
    /// The op that told us: a write, or the watch that received it.
    source: usize,
}

type Store = BTreeMap<(i64, String), Known>;

pub fn check(history: &History) -> CheckResult {
    let mut report = Report::new("watch");
    let store = rebuild(history, &mut report);
    let mut watches = 0;
    for op in &history.ops {
        if let Func::Watch { request, responses } = &op.f {
            watches += 1;
            let w = Watch {
                op,
                request,
                responses,
                store: &store,
                ops: &history.ops,
            };
            w.filter(&mut report);
            w.ordered_unique_atomic(&mut report);
            w.bookmarkable(&mut report);
            w.reliable(&mut report);
            w.resumable(&mut report);
            w.prev_kv_and_is_create(&mut report);
        }
    }
    report.stats(json!({ "watches": watches, "known_events": store.len() }));
    report.finish()
}

/// The store's history as far as the history reveals it.
fn rebuild(history: &History, report: &mut Report) -> Store {
    let mut store = Store::new();
    let mut learn = |rev: i64, key: &str, known: Known, report: &mut Report| {
        match store.get(&(rev, key.to_string())) {
        Some(old) if (old.kind, &old.value) != (known.kind, &known.value) => report.add(
            Anomaly::new(
                "inconsistent-events",
                format!(
                    "revision {rev} of {key:?} is {:?} {:?} according to op {} but {:?} {:?} according to op {}",
                    old.kind, old.value, old.source, known.kind, known.value, known.source
                ),
                vec![history.ops[old.source].clone(), history.ops[known.source].clone()],
            )
            .with_detail(json!({ "revision": rev, "key": key })),
        ),
        Some(_) => {}
        None => {
            store.insert((rev, key.to_string()), known);
        }
    }
    };
    for op in history.ops.iter().filter(|op| op.kind == OpType::Ok) {
        let Some(rev) = op.revision else { continue };
        let (key, kind, value) = match &op.f {
            Func::Write { key, value, .. } | Func::Cas { key, value, .. } => {
                (key, EventKind::Put, Some(value.clone()))
            }
            Func::Delete {
                key,
                deleted: Some(n),
            } if *n > 0 => (key, EventKind::Delete, None),
            _ => continue,
        };
        learn(
            rev,
            key,
            Known {
                kind,
                value,
                source: op.index,
            },
            report,
        );
    }
    for op in &history.ops {
        if let Func::Watch { responses, .. } = &op.f {
            for e in responses.iter().flat_map(|r| &r.events) {
                let known = Known {
                    kind: e.kind,
                    value: e.value.clone(),
                    source: op.index,
                };
                learn(e.revision, &e.key, known, report);
            }
        }
    }
    store
}

struct Watch<'h> {
    op: &'h Op,
    request: &'h WatchRequest,
    responses: &'h [WatchResponse],
    store: &'h Store,
    ops: &'h [Op],
}

impl Watch<'_> {
    fn events(&self) -> impl Iterator<Item = &WatchEvent> {
        self.responses.iter().flat_map(|r| &r.events)
    }

    fn anomaly(&self, kind: &str, message: String, event: Option<&WatchEvent>) -> Anomaly {
        let mut ops = vec![self.op.clone()];
        if let Some(known) = event.and_then(|e| self.store.get(&(e.revision, e.key.clone()))) {
            if known.source != self.op.index {
                ops.push(self.ops[known.source].clone());
            }
        }
        Anomaly::new(kind, format!("watch op {}: {message}", self.op.index), ops).with_detail(
            json!({ "watch_op": self.op.index, "request": self.request, "event": event }),
        )
    }

    fn filter(&self, report: &mut Report) {
        for e in self
            .events()
            .filter(|e| !self.request.matches(&e.key, e.kind))
        {
            let msg = format!(
                "{:?} event on {:?} at revision {} is outside the watch's range or filters",
                e.kind, e.key, e.revision
            );
            report.add(self.anomaly("watch-filter", msg, Some(e)));
        }
    }

    fn ordered_unique_atomic(&self, report: &mut Report) {
        let mut last: Option<i64> = None;
        let mut seen = HashSet::new();
        for resp in self.responses {
            if let (Some(first), Some(prev)) = (resp.events.first(), last) {
                if first.revision == prev {
                    let msg =
                        format!("the events of revision {prev} were split across two responses");
                    report.add(self.anomaly("watch-split-revision", msg, Some(first)));
                }
            }
            for e in &resp.events {
                if let Some(prev) = last.filter(|&prev| e.revision < prev) {
                    let msg = format!(
                        "event at revision {} on {:?} arrived after revision {prev}",
                        e.revision, e.key
                    );
                    report.add(self.anomaly("watch-out-of-order", msg, Some(e)));
                }
                if !seen.insert((e.revision, e.key.as_str())) {
                    let msg = format!(
                        "event at revision {} on {:?} arrived twice",
                        e.revision, e.key
                    );
                    report.add(self.anomaly("watch-duplicate", msg, Some(e)));
                }
                last = Some(e.revision);
            }
        }
    }

    fn bookmarkable(&self, report: &mut Report) {
        let (mut progress, mut last_event) = (0i64, 0i64);
        for resp in self.responses {
            for e in &resp.events {
                if e.revision <= progress {
                    let msg = format!(
                        "event at revision {} on {:?} arrived after a progress notification for revision {progress}",
                        e.revision, e.key
                    );
                    report.add(self.anomaly("watch-bookmarkable", msg, Some(e)));
                }
                last_event = e.revision;
            }
            if is_progress(resp) {
                if resp.revision < progress || resp.revision < last_event {
                    let msg = format!(
                        "progress notification for revision {} after progress {progress} and event {last_event}",
                        resp.revision
                    );
                    report.add(self.anomaly("watch-bookmarkable", msg, None));
                }
                progress = progress.max(resp.revision);
            }
        }
    }

    /// The first revision the watch is answerable for, and the last it reported.
    fn window(&self) -> Option<(i64, i64)> {
        let first = if self.request.start_revision != 0 {
            self.request.start_revision
        } else {
            let resp = self.responses.first()?;
            match resp.events.first() {
                Some(e) if !resp.created => e.revision,
                _ if resp.created || resp.progress_notify => resp.revision + 1,
                _ => return None,
            }
        };
        let last = self
            .responses
            .iter()
            .rev()
            .find_map(|r| match r.events.last() {
                Some(e) => Some(e.revision),
                None if is_progress(r) => Some(r.revision),
                None => None,
            })?;
        Some((first, last))
    }

    fn reliable(&self, report: &mut Report) {
        let Some((first, last)) = self.window() else {
            return;
        };
        let got: HashSet<(i64, &str)> = self
            .events()
            .map(|e| (e.revision, e.key.as_str()))
            .collect();
        for ((rev, key), known) in self.store.range((first, String::new())..) {
            if *rev > last {
                break;
            }
            if self.request.matches(key, known.kind) && !got.contains(&(*rev, key.as_str())) {
                let msg = format!(
                    "missed the {:?} of {key:?} at revision {rev} (known from op {}), inside its window {first}..={last}",
                    known.kind, known.source
                );
                let mut anomaly = self.anomaly("watch-gap", msg, None);
                anomaly.ops.push(self.ops[known.source].clone());
                anomaly.detail["missing"] = json!({ "revision": rev, "key": key, "kind": known.kind, "value": known.value });
                report.add(anomaly);
            }
        }
    }

    fn resumable(&self, report: &mut Report) {
        let start = self.request.start_revision;
        let Some(got) = self.events().next() else {
            return;
        };
        if start == 0 {
            return;
        }
        let want = self
            .store
            .range((start, String::new())..)
            .find(|((_, key), known)| self.request.matches(key, known.kind));
        if let Some(((rev, key), _)) = want {
            if (got.revision, &got.key) != (*rev, key) {
                let msg = format!(
                    "started at revision {start}, the first event should be {key:?} at revision {rev}, got {:?} at {}",
                    got.key, got.revision
                );
                report.add(self.anomaly("watch-not-resumable", msg, Some(got)));
            }
        }
    }

    fn prev_kv_and_is_create(&self, report: &mut Report) {
        for e in self.events() {
            // The key's previous known event.
            let prev = self
                .store
                .range(..(e.revision, String::new()))
                .rev()
                .find(|((_, key), _)| key == &e.key)
                .map(|(_, known)| known);
            if self.request.prev_kv {
                if let (Some(got), Some(prev)) = (&e.prev_value, prev) {
                    if prev.kind == EventKind::Delete || prev.value.as_ref() != Some(got) {
                        let msg = format!(
                            "event at revision {} on {:?} carries prev_kv {got:?}, but the previous write (op {}) left {:?}",
                            e.revision, e.key, prev.source, prev.value
                        );
                        let mut anomaly = self.anomaly("watch-prev-kv", msg, Some(e));
                        anomaly.ops.push(self.ops[prev.source].clone());
                        report.add(anomaly);
                    }
                }
            }
            if e.kind == EventKind::Put && e.create_revision != 0 {
                let is_create = e.create_revision == e.revision;
                let existed = prev.map(|p| p.kind == EventKind::Put);
                if existed == Some(is_create) {
                    let msg = format!(
                        "put at revision {} on {:?} has create_revision {} although the key {} before it",
                        e.revision,
                        e.key,
                        e.create_revision,
                        if is_create { "existed" } else { "did not exist" }
                    );
                    report.add(self.anomaly("watch-is-create", msg, Some(e)));
                }
            }
        }
    }
}

fn is_progress(resp: &WatchResponse) -> bool {
    resp.progress_notify && resp.events.is_empty()
}

#[cfg(test)]
mod tests;
