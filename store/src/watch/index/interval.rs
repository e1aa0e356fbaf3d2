//! An interval tree over byte-string key ranges: which of many ranges hold a key.
//!
//! Each node is one distinct range `[start, end)` (`end` may be unbounded) carrying a value;
//! nodes are ordered by `(start, end)` in an AVL tree, and every node also records the greatest
//! `end` in its subtree (`max_end`, the usual augmentation; etcd's `adt.IntervalTree` is the
//! same idea on a red-black tree). A stabbing query for key `k` then skips every subtree whose
//! `max_end <= k` (no range there reaches `k`) and every right subtree of a node whose start is
//! `> k` (all of it starts later), so it costs O((m + 1) log n) for `m` hits among `n` ranges
//! instead of a walk over every range that starts at or before `k`.
//!
//! Invariants, kept by every insert and remove (and checked by the tests' `check`):
//! - in-order traversal is strictly increasing in `(start, end)`: one node per distinct range;
//! - each node's `height` is one more than its taller child's, and the heights of its two
//!   children differ by at most one (so the depth is below 1.45 log2(n + 2));
//! - each node's `max_end` is the greatest `end` of the node and its descendants.

use std::cmp::Ordering;

use bytes::Bytes;

/// The end of a range: exclusive, or none (every key from the start on).
///
/// The derived order is the order of ends: `Before(a) < Before(b)` iff `a < b`, and every
/// `Before` is below `Unbounded`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum End {
    Before(Bytes),
    Unbounded,
}

impl End {
    /// Whether a range ending here still holds `key` (given its start is `<= key`).
    fn reaches(&self, key: &[u8]) -> bool {
        match self {
            End::Before(e) => key < e.as_ref(),
            End::Unbounded => true,
        }
    }
}

type Link<V> = Option<Box<Node<V>>>;

struct Node<V> {
    start: Bytes,
    end: End,
    /// The greatest `end` in this subtree.
    max_end: End,
    height: u8,
    value: V,
    left: Link<V>,
    right: Link<V>,
}

fn height<V>(l: &Link<V>) -> u8 {
    l.as_ref().map_or(0, |n| n.height)
}

impl<V> Node<V> {
    fn order(&self, start: &[u8], end: &End) -> Ordering {
        self.start
            .as_ref()
            .cmp(start)
            .then_with(|| self.end.cmp(end))
    }

    /// Recomputes `height` and `max_end` from the children.
    fn update(&mut self) {
        self.height = 1 + height(&self.left).max(height(&self.right));
        let mut max = &self.end;
        for child in [&self.left, &self.right].into_iter().flatten() {
            if child.max_end > *max {
                max = &child.max_end;
            }
        }
        if *max != self.max_end {
            self.max_end = max.clone();
        }
    }
}

fn rotate_right<V>(mut n: Box<Node<V>>) -> Box<Node<V>> {
    let mut l = n.left.take().expect("a right rotation needs a left child");
    n.left = l.right.take();
    n.update();
    l.right = Some(n);
    l.update();
    l
}

fn rotate_left<V>(mut n: Box<Node<V>>) -> Box<Node<V>> {
    let mut r = n.right.take().expect("a left rotation needs a right child");
    n.right = r.left.take();
    n.update();
    r.left = Some(n);
    r.update();
    r
}

/// Restores the AVL balance at `n`, whose subtrees are balanced and differ in height by at
/// most two, and refreshes its augmentation.
fn rebalance<V>(mut n: Box<Node<V>>) -> Box<Node<V>> {
    n.update();
    let (hl, hr) = (height(&n.left), height(&n.right));
    if hl > hr + 1 {
        let l = n.left.take().expect("taller side exists");
        n.left = Some(if height(&l.left) < height(&l.right) {
            rotate_left(l)
        } else {
            l
        });
        return rotate_right(n);
    }
    if hr > hl + 1 {
        let r = n.right.take().expect("taller side exists");
        n.right = Some(if height(&r.right) < height(&r.left) {
            rotate_right(r)
        } else {
            r
        });
        return rotate_left(n);
    }
    n
}

fn rebalance_link<V>(link: &mut Link<V>) {
    if let Some(n) = link.take() {
        *link = Some(rebalance(n));
    }
}

/// Detaches the leftmost node of `n`; returns it and what remains of `n`.
fn take_min<V>(mut n: Box<Node<V>>) -> (Box<Node<V>>, Link<V>) {
    match n.left.take() {
        None => {
            let rest = n.right.take();
            (n, rest)
        }
        Some(l) => {
            let (min, rest) = take_min(l);
            n.left = rest;
            (min, Some(rebalance(n)))
        }
    }
}

/// Ranges `[start, end)` with a value each. See the module docs.
pub(crate) struct IntervalTree<V> {
    root: Link<V>,
    len: usize,
}

impl<V> Default for IntervalTree<V> {
    fn default() -> Self {
        IntervalTree { root: None, len: 0 }
    }
}

impl<V> IntervalTree<V> {
    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    pub(crate) fn get_mut(&mut self, start: &[u8], end: &End) -> Option<&mut V> {
        let mut link = &mut self.root;
        while let Some(n) = link {
            match n.order(start, end) {
                Ordering::Greater => link = &mut n.left,
                Ordering::Less => link = &mut n.right,
                Ordering::Equal => return Some(&mut n.value),
            }
        }
        None
    }

    /// The value of `[start, end)`, inserted with `make` if the range is new.
    pub(crate) fn get_or_insert_with(
        &mut self,
        start: &Bytes,
        end: &End,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        if self.get_mut(start, end).is_none() {
            insert(&mut self.root, start.clone(), end.clone(), make());
            self.len += 1;
        }
        self.get_mut(start, end).expect("just inserted")
    }

    /// Removes `[start, end)`; returns its value if it was there.
    pub(crate) fn remove(&mut self, start: &[u8], end: &End) -> Option<V> {
        let v = remove(&mut self.root, start, end);
        if v.is_some() {
            self.len -= 1;
        }
        v
    }

    /// Calls `f` with the value of every range that holds `key`, in range order.
    pub(crate) fn for_each_containing<'a>(&'a self, key: &[u8], mut f: impl FnMut(&'a V)) {
        stab(&self.root, key, &mut f);
    }
}

/// Inserts a range known to be absent.
fn insert<V>(link: &mut Link<V>, start: Bytes, end: End, value: V) {
    let Some(n) = link else {
        *link = Some(Box::new(Node {
            max_end: end.clone(),
            start,
            end,
            height: 1,
            value,
            left: None,
            right: None,
        }));
        return;
    };
    match n.order(&start, &end) {
        Ordering::Greater => insert(&mut n.left, start, end, value),
        Ordering::Less => insert(&mut n.right, start, end, value),
        Ordering::Equal => unreachable!("insert of a range already in the tree"),
    }
    rebalance_link(link);
}

fn remove<V>(link: &mut Link<V>, start: &[u8], end: &End) -> Option<V> {
    let order = link.as_ref()?.order(start, end);
    let n = link.as_mut().expect("checked above");
    let removed = match order {
        Ordering::Greater => remove(&mut n.left, start, end)?,
        Ordering::Less => remove(&mut n.right, start, end)?,
        Ordering::Equal => {
            let mut gone = link.take().expect("checked above");
            *link = match (gone.left.take(), gone.right.take()) {
                (None, only) | (only, None) => only,
                (left, Some(right)) => {
                    let (mut successor, rest) = take_min(right);
                    successor.left = left;
                    successor.right = rest;
                    Some(rebalance(successor))
                }
            };
            return Some(gone.value);
        }
    };
    rebalance_link(link);
    Some(removed)
}

fn stab<'a, V>(link: &'a Link<V>, key: &[u8], f: &mut impl FnMut(&'a V)) {
    let Some(n) = link else { return };
    if !n.max_end.reaches(key) {
        return;
    }
    stab(&n.left, key, f);
    if n.start.as_ref() <= key {
        if n.end.reaches(key) {
            f(&n.value);
        }
        stab(&n.right, key, f);
    }
}

#[cfg(test)]
impl<V> IntervalTree<V> {
    /// The number of distinct ranges.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Asserts every invariant of the module docs; returns the tree's height.
    pub(crate) fn check(&self) -> u8 {
        fn walk<V>(l: &Link<V>, prev: &mut Option<(Bytes, End)>, count: &mut usize) -> u8 {
            let Some(n) = l else { return 0 };
            let hl = walk(&n.left, prev, count);
            if let Some((s, e)) = prev.as_ref() {
                assert_eq!(n.order(s, e), Ordering::Greater, "in-order is increasing");
            }
            *prev = Some((n.start.clone(), n.end.clone()));
            *count += 1;
            let hr = walk(&n.right, prev, count);
            assert!(hl.abs_diff(hr) <= 1, "AVL balance");
            assert_eq!(n.height, 1 + hl.max(hr), "height");
            let children = [&n.left, &n.right];
            let max = children
                .into_iter()
                .flatten()
                .map(|c| &c.max_end)
                .fold(&n.end, |a, b| a.max(b));
            assert_eq!(&n.max_end, max, "max_end");
            n.height
        }
        let mut count = 0;
        let h = walk(&self.root, &mut None, &mut count);
        assert_eq!(count, self.len, "len");
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(e: &str) -> End {
        End::Before(Bytes::copy_from_slice(e.as_bytes()))
    }

    fn containing(t: &IntervalTree<u32>, key: &str) -> Vec<u32> {
        let mut v = vec![];
        t.for_each_containing(key.as_bytes(), |&x| v.push(x));
        v.sort();
        v
    }

    #[test]
    fn stabbing_finds_exactly_the_ranges_holding_the_key() {
        let mut t = IntervalTree::default();
        let ranges = [
            ("a", end("c"), 1),
            ("a", end("b"), 2),
            ("a", End::Unbounded, 3),
            ("b", end("bb"), 4),
            ("c", end("d"), 5),
        ];
        for (s, e, v) in &ranges {
            *t.get_or_insert_with(&Bytes::from_static(s.as_bytes()), e, || 0) = *v;
        }
        t.check();
        assert_eq!(containing(&t, ""), Vec::<u32>::new());
        assert_eq!(containing(&t, "a"), vec![1, 2, 3]);
        assert_eq!(containing(&t, "b"), vec![1, 3, 4]);
        assert_eq!(containing(&t, "ba"), vec![1, 3, 4]);
        assert_eq!(containing(&t, "bb"), vec![1, 3]);
        assert_eq!(containing(&t, "c"), vec![3, 5]);
        assert_eq!(containing(&t, "zz"), vec![3]);
        assert_eq!(t.remove(b"a", &End::Unbounded), Some(3));
        assert_eq!(t.remove(b"a", &End::Unbounded), None);
        t.check();
        assert_eq!(containing(&t, "zz"), Vec::<u32>::new());
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn stays_balanced_and_augmented_through_sorted_inserts_and_removes() {
        let mut t = IntervalTree::default();
        let key = |i: u32| Bytes::from(format!("{i:06}"));
        for i in 0..2000u32 {
            // Nested and overlapping: [i, i + 1 + i % 7), plus every 100th unbounded.
            let e = if i % 100 == 0 {
                End::Unbounded
            } else {
                End::Before(key(i + 1 + i % 7))
            };
            t.get_or_insert_with(&key(i), &e, || i);
        }
        let h = t.check();
        assert!(h <= 16, "height {h} for 2000 ranges");
        for i in (0..2000u32).step_by(3) {
            let e = if i % 100 == 0 {
                End::Unbounded
            } else {
                End::Before(key(i + 1 + i % 7))
            };
            assert_eq!(t.remove(&key(i), &e), Some(i));
            t.check();
        }
        assert_eq!(t.len(), 2000 - 667);
    }
}
