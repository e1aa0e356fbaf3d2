//! The current state of one resource: every object by etcd key, in key order (so lists come
//! out in etcd's order and continue tokens work), plus, for pods, an index by
//! `spec.nodeName` (upstream's `NodeNameIndexFunc`), so a node's list is as cheap as its pods.
//!
//! Invariant: the index holds exactly the keys of the items whose entry has that index
//! value; it is updated in the same call that changes an item.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::event::Entry;

#[derive(Default)]
pub(crate) struct Store {
    items: BTreeMap<Arc<str>, Arc<Entry>>,
    index: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
}

impl Store {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Arc<Entry>> {
        self.items.get(key)
    }

    /// Stores `entry`, returning what was at its key.
    pub(crate) fn upsert(&mut self, entry: Arc<Entry>) -> Option<Arc<Entry>> {
        if let Some(v) = &entry.index {
            self.index
                .entry(v.clone())
                .or_default()
                .insert(entry.key.clone());
        }
        let prev = self.items.insert(entry.key.clone(), entry.clone());
        if let Some(p) = &prev {
            if p.index != entry.index {
                self.unindex(p);
            }
        }
        prev
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<Arc<Entry>> {
        let prev = self.items.remove(key)?;
        self.unindex(&prev);
        Some(prev)
    }

    fn unindex(&mut self, e: &Entry) {
        if let Some(v) = &e.index {
            if let Some(keys) = self.index.get_mut(v) {
                keys.remove(&e.key);
                if keys.is_empty() {
                    self.index.remove(v);
                }
            }
        }
    }

    /// Replaces everything (a relist).
    pub(crate) fn replace(&mut self, entries: Vec<Arc<Entry>>) {
        self.items.clear();
        self.index.clear();
        for e in entries {
            self.upsert(e);
        }
    }

    /// The items whose key starts with `prefix`, in key order.
    pub(crate) fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Entry>> + 'a {
        self.items
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
    }

    /// The items with index value `value` whose key starts with `prefix`, in key order.
    pub(crate) fn indexed<'a>(
        &'a self,
        value: &str,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Entry>> + 'a {
        self.index
            .get(value)
            .into_iter()
            .flat_map(|keys| keys.iter())
            .filter(move |k| k.starts_with(prefix))
            .filter_map(|k| self.items.get(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, node: &str, rev: i64) -> Arc<Entry> {
        let key = format!("/registry/pods/{ns}/{name}");
        Arc::new(Entry::new(
            "pods",
            Arc::from(key),
            json!({"metadata": {"name": name, "namespace": ns, "resourceVersion": rev.to_string()},
                "spec": {"nodeName": node}}),
        ))
    }

    fn names<'a>(it: impl Iterator<Item = &'a Arc<Entry>>) -> Vec<String> {
        it.map(|e| e.object["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn lists_in_key_order_by_prefix() {
        let mut s = Store::default();
        s.replace(vec![
            pod("b", "x", "n1", 1),
            pod("a", "z", "n1", 2),
            pod("a", "y", "", 3),
            pod("ab", "w", "n2", 4),
        ]);
        assert_eq!(
            names(s.with_prefix("/registry/pods/")),
            ["y", "z", "w", "x"]
        );
        assert_eq!(names(s.with_prefix("/registry/pods/a/")), ["y", "z"]);
        assert_eq!(
            names(s.with_prefix("/registry/pods/c/")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_node_index_follows_every_change() {
        let mut s = Store::default();
        s.replace(vec![pod("a", "p1", "n1", 1), pod("a", "p2", "", 2)]);
        assert_eq!(names(s.indexed("n1", "/registry/pods/")), ["p1"]);
        assert_eq!(names(s.indexed("", "/registry/pods/")), ["p2"]);
        // Scheduling p2 moves it from "" to n1; the previous entry comes back.
        let prev = s.upsert(pod("a", "p2", "n1", 3)).unwrap();
        assert_eq!(prev.object["metadata"]["resourceVersion"], "2");
        assert_eq!(names(s.indexed("n1", "/registry/pods/")), ["p1", "p2"]);
        assert_eq!(
            names(s.indexed("", "/registry/pods/")),
            Vec::<String>::new()
        );
        // Same node again: still indexed once.
        s.upsert(pod("a", "p2", "n1", 4));
        assert_eq!(names(s.indexed("n1", "/registry/pods/a/")), ["p1", "p2"]);
        assert_eq!(
            names(s.indexed("n1", "/registry/pods/b/")),
            Vec::<String>::new()
        );
        s.remove("/registry/pods/a/p1").unwrap();
        assert_eq!(names(s.indexed("n1", "/registry/pods/")), ["p2"]);
        assert!(s.remove("/registry/pods/a/p1").is_none());
        assert_eq!(s.len(), 1);
        assert!(!s.index.contains_key(""));
    }
}
