//! The history of one key: etcd's `keyIndex`, with the values kept beside their revisions.
//!
//! A key's life is a list of generations. A generation starts with the put that creates the key
//! and ends with its tombstone (a delete); after a tombstone an empty generation is opened, so
//! the last generation is the live one (empty if the key is currently deleted).
//!
//! Invariants:
//! - revisions strictly increase across the whole list of generations;
//! - every generation except the last is non-empty and ends with a tombstone;
//! - compaction at `rev` keeps, in each generation still relevant, the newest version `<= rev`
//!   and everything newer; a generation whose tombstone is `< rev` disappears entirely. A
//!   tombstone exactly at `rev` is kept until the next compaction, so a watch that starts at
//!   the compacted revision still sees that delete (etcd #18089/#19179, fixed after 3.4 the
//!   same way);
//!   [`KeyIndex::compact`] reports every revision it drops so the backend can delete them.

use keelson_proto::mvccpb::KeyValue;

use super::Revision;

/// One stored version of a key: a put (with its KeyValue) or a tombstone.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub(crate) rev: Revision,
    /// `None` marks a tombstone.
    pub(crate) kv: Option<KeyValue>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Generation {
    pub(crate) revs: Vec<Version>,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct KeyIndex {
    pub(crate) generations: Vec<Generation>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            generations: vec![Generation::default()],
        }
    }
}

impl KeyIndex {
    /// Records a put at `rev`.
    pub(crate) fn put(&mut self, rev: Revision, kv: KeyValue) {
        let g = self
            .generations
            .last_mut()
            .expect("a key index always has a generation");
        g.revs.push(Version { rev, kv: Some(kv) });
    }

    /// Records a delete at `rev` and opens a new, empty generation. Returns false (and records
    /// nothing) if the key is not live.
    pub(crate) fn tombstone(&mut self, rev: Revision) -> bool {
        let g = self
            .generations
            .last_mut()
            .expect("a key index always has a generation");
        if g.is_empty() {
            return false;
        }
        g.revs.push(Version { rev, kv: None });
        self.generations.push(Generation::default());
        true
    }

    /// Whether nothing at all is recorded (the key can be dropped from the tree).
    pub(crate) fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].is_empty()
    }

    /// The version visible at `at`: the newest put with main revision `<= at` in a generation
    /// that had not been ended by then. `None` if the key did not exist at `at`.
    pub(crate) fn get(&self, at: i64) -> Option<&KeyValue> {
        let g = self.find_generation(at)?;
        g.revs
            .iter()
            .rev()
            .find(|v| v.rev.main <= at)
            .and_then(|v| v.kv.as_ref())
    }

    /// The live version, ignoring revisions (the newest put of the last generation).
    pub(crate) fn latest(&self) -> Option<&KeyValue> {
        self.generations
            .last()
            .and_then(|g| g.revs.last())
            .and_then(|v| v.kv.as_ref())
    }

    fn find_generation(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate().rev() {
            if g.is_empty() {
                continue;
            }
            if i != last {
                let tomb = g.revs.last().expect("non-empty").rev.main;
                if tomb <= at {
                    return None;
                }
            }
            if g.revs[0].rev.main <= at {
                return Some(g);
            }
        }
        None
    }

    /// All versions with main revision in `(after, ..]`, oldest first (tombstones included).
    pub(crate) fn versions_since(&self, after: i64) -> impl Iterator<Item = &Version> {
        self.generations
            .iter()
            .flat_map(|g| g.revs.iter())
            .filter(move |v| v.rev.main > after)
    }

    /// Compacts the history at `at` (etcd's `keyIndex.compact`): pushes every dropped revision
    /// (with its tombstone mark) onto `dropped`.
    pub(crate) fn compact(&mut self, at: i64, dropped: &mut Vec<(Revision, bool)>) {
        let last = self.generations.len() - 1;
        // Find the first generation that still matters: its tombstone is at or after `at`, or
        // it is the live one.
        let mut gi = 0;
        while gi < last {
            let tomb = self.generations[gi]
                .revs
                .last()
                .expect("ended generation")
                .rev
                .main;
            if tomb >= at {
                break;
            }
            gi += 1;
        }
        for g in self.generations.drain(..gi) {
            dropped.extend(g.revs.iter().map(|v| (v.rev, v.kv.is_none())));
        }
        let g = &mut self.generations[0];
        // Keep the newest version <= at and everything after it.
        if let Some(keep) = g.revs.iter().rposition(|v| v.rev.main <= at) {
            dropped.extend(g.revs.drain(..keep).map(|v| (v.rev, v.kv.is_none())));
        }
    }

    /// Replays a stored tombstone at start. Normally it ends the live generation; if the
    /// generation's puts were compacted away (the tombstone was at the compacted revision) it
    /// is recorded as a generation of its own, exactly as compaction left it in memory.
    pub(crate) fn restore_tombstone(&mut self, rev: Revision) {
        let g = self
            .generations
            .last_mut()
            .expect("a key index always has a generation");
        g.revs.push(Version { rev, kv: None });
        self.generations.push(Generation::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision { main, sub: 0 }
    }

    fn kv(main: i64) -> KeyValue {
        KeyValue {
            key: b"k".to_vec().into(),
            mod_revision: main,
            ..Default::default()
        }
    }

    fn mains(d: &[(Revision, bool)]) -> Vec<i64> {
        d.iter().map(|(r, _)| r.main).collect()
    }

    /// put 2, put 4, delete 6, put 8, put 10, delete 12.
    fn history() -> KeyIndex {
        let mut ki = KeyIndex::default();
        ki.put(rev(2), kv(2));
        ki.put(rev(4), kv(4));
        assert!(ki.tombstone(rev(6)));
        ki.put(rev(8), kv(8));
        ki.put(rev(10), kv(10));
        assert!(ki.tombstone(rev(12)));
        ki
    }

    #[test]
    fn get_sees_generations() {
        let ki = history();
        assert!(ki.get(1).is_none());
        assert_eq!(ki.get(3).unwrap().mod_revision, 2);
        assert_eq!(ki.get(5).unwrap().mod_revision, 4);
        assert!(ki.get(6).is_none());
        assert!(ki.get(7).is_none());
        assert_eq!(ki.get(9).unwrap().mod_revision, 8);
        assert!(ki.get(12).is_none());
        assert!(ki.latest().is_none());
        assert!(
            !ki.clone().tombstone(rev(13)),
            "a deleted key cannot be deleted again"
        );
    }

    #[test]
    fn compaction_keeps_newest_version_at_or_below() {
        let mut ki = history();
        let mut d = vec![];
        ki.compact(5, &mut d);
        assert_eq!(mains(&d), vec![2]);
        assert_eq!(ki.get(5).unwrap().mod_revision, 4);
        d.clear();
        ki.compact(7, &mut d);
        assert_eq!(mains(&d), vec![4, 6]);
        assert!(ki.get(7).is_none());
        assert_eq!(ki.get(9).unwrap().mod_revision, 8);
        d.clear();
        ki.compact(11, &mut d);
        assert_eq!(mains(&d), vec![8]);
        d.clear();
        ki.compact(12, &mut d);
        assert_eq!(
            mains(&d),
            vec![10],
            "the tombstone at the compaction revision stays"
        );
        assert!(!ki.is_empty());
        assert!(ki.get(12).is_none());
        d.clear();
        ki.compact(13, &mut d);
        assert_eq!(mains(&d), vec![12]);
        assert!(ki.is_empty());
    }

    #[test]
    fn compaction_of_a_live_key_keeps_its_latest() {
        let mut ki = KeyIndex::default();
        ki.put(rev(2), kv(2));
        ki.put(rev(3), kv(3));
        let mut d = vec![];
        ki.compact(100, &mut d);
        assert_eq!(mains(&d), vec![2]);
        assert_eq!(ki.latest().unwrap().mod_revision, 3);
        assert!(!ki.is_empty());
    }
}
