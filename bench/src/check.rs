//! The watch completeness checker: did every watcher get exactly the events it should?
//!
//! The truth is the write log: every write the server acknowledged, as (key id, revision),
//! with the revision taken from the response header. A watcher of one key must see exactly the
//! revisions written to that key, a prefix watcher all of them; each exactly once, in
//! increasing revision order (etcd's watch guarantees: ordered, reliable, atomic). Anything
//! else is counted by kind, so a report says not only that delivery failed but how.
//!
//! This relies on each write touching one key (true of every workload here): a revision then
//! identifies the write, and an event for the right revision but the wrong key shows up as
//! "unexpected" for a single-key watcher.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::stats::Report;

/// Which writes a watcher should see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Filter {
    /// The writes to the key with this id.
    Key(u32),
    /// Every write (a prefix watch over all keys of the workload).
    All,
}

/// What the checker found, summed over all watchers.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq, Clone)]
pub(crate) struct Delivery {
    pub(crate) watchers: u64,
    /// Events that should have been delivered.
    pub(crate) expected: u64,
    /// Events delivered (including duplicates and unexpected ones).
    pub(crate) delivered: u64,
    pub(crate) missing: u64,
    pub(crate) duplicate: u64,
    /// Events whose revision is lower than the one delivered before it.
    pub(crate) out_of_order: u64,
    /// Events of revisions the watcher should not see at all.
    pub(crate) unexpected: u64,
    /// Watchers with at least one of the faults above.
    pub(crate) faulty_watchers: u64,
}

impl Delivery {
    pub(crate) fn complete(&self) -> bool {
        self.faulty_watchers == 0
    }

    /// Puts the counts into `report`, and a problem if delivery was not complete.
    pub(crate) fn report_into(&self, report: &mut Report) {
        report.figure("events_expected", self.expected as f64);
        report.figure("events_delivered", self.delivered as f64);
        if !self.complete() {
            report.problem(format!(
                "watch delivery incomplete: {} of {} watchers faulty; {} missing, {} duplicate, \
                 {} out of order, {} unexpected events",
                self.faulty_watchers,
                self.watchers,
                self.missing,
                self.duplicate,
                self.out_of_order,
                self.unexpected
            ));
        }
    }
}

/// Expected delivery, computed once from the write log.
pub(crate) struct Expectation {
    by_key: HashMap<u32, Vec<i64>>,
    all: Vec<i64>,
}

impl Expectation {
    /// `writes`: every acknowledged write as (key id, revision), in any order.
    pub(crate) fn new(writes: &[(u32, i64)]) -> Expectation {
        let mut by_key: HashMap<u32, Vec<i64>> = HashMap::new();
        for &(k, rev) in writes {
            by_key.entry(k).or_default().push(rev);
        }
        by_key.values_mut().for_each(|v| v.sort_unstable());
        let mut all: Vec<i64> = writes.iter().map(|&(_, r)| r).collect();
        all.sort_unstable();
        Expectation { by_key, all }
    }

    pub(crate) fn expected(&self, f: Filter) -> &[i64] {
        match f {
            Filter::All => &self.all,
            Filter::Key(k) => self.by_key.get(&k).map(Vec::as_slice).unwrap_or(&[]),
        }
    }

    /// Checks every watcher: (what it watched, the revisions it received, in arrival order).
    pub(crate) fn check<'a>(
        &self,
        watchers: impl IntoIterator<Item = (Filter, &'a [i64])>,
    ) -> Delivery {
        let mut d = Delivery::default();
        for (f, received) in watchers {
            d.watchers += 1;
            let expected = self.expected(f);
            d.expected += expected.len() as u64;
            d.delivered += received.len() as u64;
            let before = d.clone();
            let mut seen = HashSet::with_capacity(received.len());
            let mut prev = i64::MIN;
            for &rev in received {
                if rev < prev {
                    d.out_of_order += 1;
                }
                prev = prev.max(rev);
                if !seen.insert(rev) {
                    d.duplicate += 1;
                } else if expected.binary_search(&rev).is_err() {
                    d.unexpected += 1;
                }
            }
            let got = expected.iter().filter(|r| seen.contains(r)).count();
            d.missing += (expected.len() - got) as u64;
            let faulty = (d.missing, d.duplicate, d.out_of_order, d.unexpected)
                != (
                    before.missing,
                    before.duplicate,
                    before.out_of_order,
                    before.unexpected,
                );
            d.faulty_watchers += u64::from(faulty);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes: key 0 at revisions 10, 12, 14; key 1 at 11, 13.
    fn log() -> Expectation {
        Expectation::new(&[(0, 10), (1, 11), (0, 12), (1, 13), (0, 14)])
    }

    #[test]
    fn exact_delivery_is_complete() {
        let e = log();
        let d = e.check([
            (Filter::Key(0), &[10, 12, 14][..]),
            (Filter::Key(1), &[11, 13][..]),
            (Filter::All, &[10, 11, 12, 13, 14][..]),
        ]);
        assert_eq!(
            d,
            Delivery {
                watchers: 3,
                expected: 10,
                delivered: 10,
                ..Delivery::default()
            }
        );
        assert!(d.complete());
    }

    #[test]
    fn a_watcher_of_an_unwritten_key_expects_nothing() {
        let d = log().check([(Filter::Key(7), &[][..])]);
        assert!(d.complete());
        assert_eq!(d.expected, 0);
    }

    #[test]
    fn each_fault_is_counted_by_kind() {
        let e = log();
        let missing = e.check([(Filter::Key(0), &[10, 14][..])]);
        assert_eq!((missing.missing, missing.faulty_watchers), (1, 1));
        let dup = e.check([(Filter::Key(1), &[11, 11, 13][..])]);
        assert_eq!((dup.duplicate, dup.missing, dup.out_of_order), (1, 0, 0));
        let swapped = e.check([(Filter::All, &[10, 12, 11, 13, 14][..])]);
        assert_eq!((swapped.out_of_order, swapped.missing), (1, 0));
        let wrong_key = e.check([(Filter::Key(1), &[11, 12, 13][..])]);
        assert_eq!((wrong_key.unexpected, wrong_key.missing), (1, 0));
        assert!(!wrong_key.complete());
    }

    #[test]
    fn only_faulty_watchers_are_counted_faulty() {
        let d = log().check([
            (Filter::Key(0), &[10, 12, 14][..]),
            (Filter::Key(1), &[13][..]),
            (Filter::All, &[10, 11, 12, 13, 14][..]),
        ]);
        assert_eq!((d.faulty_watchers, d.missing, d.delivered), (1, 1, 9));
        let mut r = Report::default();
        d.report_into(&mut r);
        assert_eq!(r.figures["events_expected"], 10.0);
        assert!(r.problems[0].contains("1 missing"), "{:?}", r.problems);
    }
}
