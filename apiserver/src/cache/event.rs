//! What the cache holds: objects ([`Entry`]) and the changes between them ([`Event`]), each
//! serialized at most once per watch-event form and shared by every watcher as `Bytes`
//! (upstream's `cachingObject`).
//!
//! Invariants:
//! - An entry is immutable once built: its object carries `metadata.resourceVersion` = the
//!   revision it was written at (a deletion's copy carries the deletion's revision).
//! - A cached line is exactly what `serde_json` prints for `{"type":…,"object":…}` (keys in
//!   order, no spaces) plus a newline, so a line from the cache and one built per watcher
//!   are byte-identical.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use crate::object;

/// The three kinds of change a watch reports about an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Added,
    Modified,
    Deleted,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Added => "ADDED",
            Kind::Modified => "MODIFIED",
            Kind::Deleted => "DELETED",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One object as the cache holds it.
pub(crate) struct Entry {
    /// The etcd key.
    pub(crate) key: Arc<str>,
    /// The object with its resourceVersion set.
    pub(crate) object: Value,
    /// The value of the resource's index (pods: `spec.nodeName`, "" when unscheduled).
    pub(crate) index: Option<Arc<str>>,
    lines: [OnceLock<Bytes>; 3],
}

/// The index value of `object` for `resource` (only pods are indexed, by node).
pub(crate) fn index_value(resource: &str, object: &Value) -> Option<Arc<str>> {
    (resource == "pods").then(|| {
        Arc::from(
            object
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or(""),
        )
    })
}

impl Entry {
    pub(crate) fn new(resource: &str, key: Arc<str>, object: Value) -> Entry {
        Entry {
            index: index_value(resource, &object),
            key,
            object,
            lines: Default::default(),
        }
    }

    /// The same object with resourceVersion `rev` (a deletion's copy).
    pub(crate) fn at_revision(&self, rev: i64) -> Entry {
        let mut object = self.object.clone();
        object::set_rv(&mut object, rev);
        Entry {
            key: self.key.clone(),
            object,
            index: self.index.clone(),
            lines: Default::default(),
        }
    }

    /// The watch line `{"object":…,"type":<kind>}` for this object, serialized once.
    pub(crate) fn line(&self, kind: Kind) -> Bytes {
        self.lines[kind.index()]
            .get_or_init(|| encode_line(kind.as_str(), &self.object))
            .clone()
    }
}

/// `serde_json`'s rendering of `{"type": ty, "object": object}` plus a newline.
pub(crate) fn encode_line(ty: &str, object: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"object\":");
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, object);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\"}\n");
    Bytes::from(out)
}

/// One change of one object, as the store's watch reported it.
pub(crate) struct Event {
    pub(crate) kind: Kind,
    /// The revision of the change (several events may share one: a Txn).
    pub(crate) rev: i64,
    /// The object after the change; for a deletion, the last state with the deletion's
    /// revision.
    pub(crate) object: Arc<Entry>,
    /// The object before the change (None for a creation).
    pub(crate) prev: Option<Arc<Entry>>,
    pub(crate) recorded: Instant,
    /// `prev` at this event's revision: what a watcher whose selector stopped matching
    /// receives as DELETED.
    prev_at_rev: OnceLock<Arc<Entry>>,
}

impl Event {
    pub(crate) fn new(
        kind: Kind,
        rev: i64,
        object: Arc<Entry>,
        prev: Option<Arc<Entry>>,
        recorded: Instant,
    ) -> Event {
        Event {
            kind,
            rev,
            object,
            prev,
            recorded,
            prev_at_rev: OnceLock::new(),
        }
    }

    /// The previous object with this event's revision (for a deletion: `object` itself).
    pub(crate) fn prev_at_rev(&self) -> Arc<Entry> {
        if self.kind == Kind::Deleted {
            return self.object.clone();
        }
        self.prev_at_rev
            .get_or_init(|| match &self.prev {
                Some(p) => Arc::new(p.at_revision(self.rev)),
                None => self.object.clone(),
            })
            .clone()
    }

    /// The index values a watcher may be interested in: the object's and, when different,
    /// the previous object's.
    pub(crate) fn index_values(&self) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self.object.index.iter().cloned().collect();
        if let Some(p) = self.prev.as_ref().and_then(|p| p.index.clone()) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

impl super::ring::Revisioned for Arc<Event> {
    fn rev(&self) -> i64 {
        self.rev
    }
    fn recorded(&self) -> Instant {
        self.recorded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cached_lines_match_serde_json() {
        let obj = json!({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7"}, "spec": {"nodeName": "n1"}});
        let e = Entry::new("pods", Arc::from("/registry/pods/default/p"), obj.clone());
        for kind in [Kind::Added, Kind::Modified, Kind::Deleted] {
            let mut want =
                serde_json::to_vec(&json!({"type": kind.as_str(), "object": obj})).unwrap();
            want.push(b'\n');
            assert_eq!(e.line(kind), Bytes::from(want));
        }
        assert_eq!(e.index.as_deref(), Some("n1"));
        assert_eq!(index_value("configmaps", &obj), None);
        assert_eq!(index_value("pods", &json!({})).as_deref(), Some(""));
    }

    #[test]
    fn prev_at_rev_carries_the_event_revision() {
        let old = Arc::new(Entry::new(
            "pods",
            Arc::from("k"),
            json!({"metadata": {"resourceVersion": "3"}, "spec": {"nodeName": "a"}}),
        ));
        let new = Arc::new(Entry::new(
            "pods",
            Arc::from("k"),
            json!({"metadata": {"resourceVersion": "5"}, "spec": {"nodeName": "b"}}),
        ));
        let ev = Event::new(Kind::Modified, 5, new, Some(old), Instant::now());
        assert_eq!(ev.prev_at_rev().object["metadata"]["resourceVersion"], "5");
        assert_eq!(ev.prev_at_rev().object["spec"]["nodeName"], "a");
        let values: Vec<String> = ev.index_values().iter().map(|v| v.to_string()).collect();
        assert_eq!(values, ["b", "a"]);
    }
}
