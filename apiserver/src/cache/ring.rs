//! The history of one resource: a ring of its most recent events, oldest first (upstream's
//! `watchCache` cyclic buffer, `watch_cache.go`).
//!
//! Invariants:
//! - Events are in revision order. The events of one revision (a Txn touching several keys)
//!   leave the ring together, so it holds all or none of a revision's events.
//! - A watch from `rv` can be served from the ring exactly when `rv >= floor()`: every event
//!   after `rv` is still here. Until something is evicted after a relist the floor is the
//!   list's revision; afterwards it is the oldest event's revision minus one (upstream's
//!   `oldest-1`). Older watches are answered "too old resource version: rv (floor)".
//! - Capacity moves between 100 and 100×1024 (`defaultLowerBoundCapacity`,
//!   `defaultUpperBoundCapacity`): when the ring is full and its oldest event is younger
//!   than 75 s (`eventFreshDuration`) it doubles instead of evicting; when it is full and
//!   even its newest quarter is older than that it halves.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub(crate) const LOWER_CAPACITY: usize = 100;
pub(crate) const UPPER_CAPACITY: usize = 100 * 1024;
/// How long upstream wants events kept: a bookmark interval plus a margin.
pub(crate) const EVENT_FRESH: Duration = Duration::from_secs(75);

/// What the ring needs of an event.
pub(crate) trait Revisioned: Clone {
    fn rev(&self) -> i64;
    fn recorded(&self) -> Instant;
}

pub(crate) struct Ring<T> {
    events: VecDeque<T>,
    capacity: usize,
    /// The revision of the last list (`Replace`).
    list_rev: i64,
    /// Something was evicted since the last list.
    evicted: bool,
    /// The revision of the newest evicted event.
    evicted_rev: i64,
}

impl<T: Revisioned> Ring<T> {
    pub(crate) fn new() -> Ring<T> {
        Ring {
            events: VecDeque::new(),
            capacity: LOWER_CAPACITY,
            list_rev: 0,
            evicted: false,
            evicted_rev: 0,
        }
    }

    /// Forgets every event: the cache was just listed at `list_rev`.
    pub(crate) fn reset(&mut self, list_rev: i64) {
        self.events.clear();
        self.list_rev = list_rev;
        self.evicted = false;
        self.evicted_rev = 0;
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// The newest revision a watch may start from and still be complete (see module doc).
    pub(crate) fn floor(&self) -> i64 {
        if !self.evicted {
            return self.list_rev;
        }
        match self.events.front() {
            Some(e) => e.rev() - 1,
            None => self.evicted_rev,
        }
    }

    /// Appends an event (its revision must not be below the newest one's).
    pub(crate) fn push(&mut self, event: T) {
        let now = event.recorded();
        if self.events.len() >= self.capacity {
            self.resize(now);
        }
        while self.events.len() >= self.capacity {
            self.evict_oldest_revision();
        }
        self.events.push_back(event);
    }

    fn resize(&mut self, now: Instant) {
        let oldest = self.events.front().map(Revisioned::recorded).unwrap_or(now);
        if now.saturating_duration_since(oldest) < EVENT_FRESH {
            self.capacity = (self.capacity * 2).min(UPPER_CAPACITY);
            return;
        }
        let quarter = self.events.len() - self.capacity / 4;
        let newest_quarter = self.events.get(quarter).map(Revisioned::recorded);
        if newest_quarter.is_some_and(|t| now.saturating_duration_since(t) > EVENT_FRESH) {
            let smaller = (self.capacity / 2).max(LOWER_CAPACITY);
            while self.events.len() > smaller {
                self.evict_oldest_revision();
            }
            self.capacity = smaller;
        }
    }

    fn evict_oldest_revision(&mut self) {
        let Some(first) = self.events.pop_front() else {
            return;
        };
        let rev = first.rev();
        while self.events.front().is_some_and(|e| e.rev() == rev) {
            self.events.pop_front();
        }
        self.evicted = true;
        self.evicted_rev = rev;
    }

    /// Every event after revision `rv`, or `Err(floor)` when some of them are gone.
    pub(crate) fn since(&self, rv: i64) -> Result<Vec<T>, i64> {
        let floor = self.floor();
        if rv < floor {
            return Err(floor);
        }
        let first = self.events.partition_point(|e| e.rev() <= rv);
        Ok(self.events.range(first..).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Ev(i64, Instant);

    impl Revisioned for Ev {
        fn rev(&self) -> i64 {
            self.0
        }
        fn recorded(&self) -> Instant {
            self.1
        }
    }

    fn revs(v: &[Ev]) -> Vec<i64> {
        v.iter().map(|e| e.0).collect()
    }

    #[test]
    fn serves_everything_after_the_list_until_something_is_evicted() {
        let t = Instant::now();
        let mut r = Ring::new();
        r.reset(10);
        assert_eq!(r.since(10).unwrap(), vec![]);
        assert_eq!(r.since(9), Err(10));
        for rev in [12, 15, 15, 20] {
            r.push(Ev(rev, t));
        }
        assert_eq!(revs(&r.since(10).unwrap()), [12, 15, 15, 20]);
        assert_eq!(revs(&r.since(12).unwrap()), [15, 15, 20]);
        assert_eq!(revs(&r.since(15).unwrap()), [20]);
        // A watch from a revision between events, or past the newest: what follows it.
        assert_eq!(revs(&r.since(13).unwrap()), [15, 15, 20]);
        assert_eq!(r.since(99).unwrap(), vec![]);
    }

    #[test]
    fn grows_while_events_are_fresh_and_evicts_when_they_are_not() {
        let t = Instant::now();
        let mut r = Ring::new();
        r.reset(0);
        for rev in 1..=250 {
            r.push(Ev(rev, t));
        }
        // All within 75 s: doubled twice (100 → 200 → 400), nothing lost.
        assert_eq!((r.capacity(), r.len(), r.floor()), (400, 250, 0));

        let mut r = Ring::new();
        r.reset(0);
        for rev in 1..=100 {
            r.push(Ev(rev, t));
        }
        let later = t + Duration::from_secs(80);
        r.push(Ev(101, later));
        // Full and the oldest is stale, the newest quarter too but the capacity is already
        // at its lower bound: the oldest event goes.
        assert_eq!((r.capacity(), r.len()), (100, 100));
        assert_eq!(r.floor(), 1);
        assert_eq!(r.since(0), Err(1));
        assert_eq!(revs(&r.since(1).unwrap())[..2], [2, 3]);
    }

    #[test]
    fn halves_when_even_the_newest_quarter_is_stale() {
        let t = Instant::now();
        let mut r = Ring::new();
        r.reset(0);
        for rev in 1..=150 {
            r.push(Ev(rev, t));
        }
        assert_eq!(r.capacity(), 200);
        for rev in 151..=200 {
            r.push(Ev(rev, t));
        }
        r.push(Ev(201, t + Duration::from_secs(100)));
        assert_eq!((r.capacity(), r.len()), (100, 100));
        assert_eq!(r.floor(), 101);
        assert_eq!(revs(&r.since(101).unwrap())[..1], [102]);
    }

    #[test]
    fn a_revision_leaves_the_ring_whole() {
        let t = Instant::now() - Duration::from_secs(100);
        let mut r = Ring::new();
        r.reset(0);
        r.push(Ev(1, t));
        r.push(Ev(1, t));
        for rev in 2..=99 {
            r.push(Ev(rev, t));
        }
        r.push(Ev(100, Instant::now()));
        // Evicting revision 1 took both of its events.
        assert_eq!(r.len(), 99);
        assert_eq!(r.floor(), 1);
        assert_eq!(r.since(0), Err(1));
    }
}
