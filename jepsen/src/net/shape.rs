//! Partition shapes as sets of cut links.
//!
//! A partition is a set of unordered member pairs whose link is cut, both ways ([`Cuts`]);
//! every mechanism (namespaces, proxies) only needs that set. The shapes are Jepsen's:
//! - [`Shape::Isolate`]: one member cut from all others (used for "isolate the leader" too);
//! - [`Shape::Halves`]: a minority cut from the majority, each side whole inside;
//! - [`Shape::Bridge`]: two halves that cannot reach each other, and one member (the bridge)
//!   that reaches both — with three members A–B–C, only A and C are cut from each other. No
//!   side holds a majority without the bridge, so leadership flaps through it.
//!
//! Invariant: a [`Cuts`] never holds a pair (i, i) and stores each pair once, as (low, high).

use std::collections::BTreeSet;
use std::fmt;

use rand::seq::SliceRandom;
use rand::Rng;

/// The cut links of a partition: unordered member pairs (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cuts(BTreeSet<(usize, usize)>);

impl Cuts {
    /// No link cut.
    pub fn none() -> Cuts {
        Cuts::default()
    }

    /// Cuts the link between `a` and `b` (both ways); a member is never cut from itself.
    pub fn cut(&mut self, a: usize, b: usize) {
        if a != b {
            self.0.insert((a.min(b), a.max(b)));
        }
    }

    /// Whether `a` and `b` cannot reach each other.
    pub fn is_cut(&self, a: usize, b: usize) -> bool {
        self.0.contains(&(a.min(b), a.max(b)))
    }

    /// Whether any link involving `a` is cut.
    pub fn touches(&self, a: usize) -> bool {
        self.0.iter().any(|&(x, y)| x == a || y == a)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The cut pairs, each as (low, high), ascending.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.0.iter().copied()
    }

    /// Cuts every link between a member of `a` and a member of `b`.
    fn between(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.cut(x, y);
            }
        }
    }
}

impl fmt::Display for Cuts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self.0.iter().map(|(a, b)| format!("m{a}-m{b}")).collect();
        write!(f, "cut {}", pairs.join(" "))
    }
}

/// A partition shape over members `0..n` (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// This member cannot reach any other.
    Isolate(usize),
    /// These members (fewer than half) are cut from the rest.
    Halves { minority: Vec<usize> },
    /// `bridge` reaches everyone; `left` and `right` cannot reach each other.
    Bridge {
        bridge: usize,
        left: Vec<usize>,
        right: Vec<usize>,
    },
}

impl Shape {
    /// A random minority / majority split of `n` members: the minority has `(n - 1) / 2`
    /// members (at least one).
    pub fn random_halves(n: usize, rng: &mut impl Rng) -> Shape {
        let mut all: Vec<usize> = (0..n).collect();
        all.shuffle(rng);
        let mut minority: Vec<usize> = all[..((n - 1) / 2).max(1)].to_vec();
        minority.sort_unstable();
        Shape::Halves { minority }
    }

    /// A random bridge over `n >= 3` members: one bridge, the others split in two halves.
    pub fn random_bridge(n: usize, rng: &mut impl Rng) -> Shape {
        let mut all: Vec<usize> = (0..n).collect();
        all.shuffle(rng);
        let bridge = all[0];
        let rest = &all[1..];
        let (l, r) = rest.split_at(rest.len() / 2);
        let (mut left, mut right) = (l.to_vec(), r.to_vec());
        left.sort_unstable();
        right.sort_unstable();
        Shape::Bridge {
            bridge,
            left,
            right,
        }
    }

    /// The links this shape cuts among members `0..n`.
    pub fn cuts(&self, n: usize) -> Cuts {
        let mut c = Cuts::none();
        match self {
            Shape::Isolate(i) => {
                let others: Vec<usize> = (0..n).filter(|j| j != i).collect();
                c.between(&[*i], &others);
            }
            Shape::Halves { minority } => {
                let majority: Vec<usize> = (0..n).filter(|j| !minority.contains(j)).collect();
                c.between(minority, &majority);
            }
            Shape::Bridge { left, right, .. } => c.between(left, right),
        }
        c
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |v: &[usize]| {
            v.iter()
                .map(|i| format!("m{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Shape::Isolate(i) => write!(f, "isolate m{i}"),
            Shape::Halves { minority } => write!(f, "minority [{}] | majority", names(minority)),
            Shape::Bridge {
                bridge,
                left,
                right,
            } => write!(
                f,
                "bridge [{}] - m{bridge} - [{}]",
                names(left),
                names(right)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Members reachable from `from` without crossing a cut link.
    fn component(c: &Cuts, n: usize, from: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::from([from]);
        let mut todo = vec![from];
        while let Some(a) = todo.pop() {
            for b in 0..n {
                if !c.is_cut(a, b) && seen.insert(b) {
                    todo.push(b);
                }
            }
        }
        seen
    }

    #[test]
    fn cuts_are_unordered_and_never_self() {
        let mut c = Cuts::none();
        c.cut(2, 0);
        c.cut(0, 2);
        c.cut(1, 1);
        assert_eq!(c.pairs().collect::<Vec<_>>(), [(0, 2)]);
        assert!(c.is_cut(0, 2) && c.is_cut(2, 0));
        assert!(!c.is_cut(1, 1));
        assert!(c.touches(2) && !c.touches(1));
        assert_eq!(c.to_string(), "cut m0-m2");
    }

    #[test]
    fn isolating_a_member_cuts_exactly_its_links() {
        let c = Shape::Isolate(1).cuts(3);
        assert_eq!(c.pairs().collect::<Vec<_>>(), [(0, 1), (1, 2)]);
        assert!(!c.is_cut(0, 2), "the other two still reach each other");
        let c5 = Shape::Isolate(4).cuts(5);
        assert_eq!(c5.pairs().count(), 4);
        assert_eq!(component(&c5, 5, 4), BTreeSet::from([4]));
        assert_eq!(component(&c5, 5, 0).len(), 4);
    }

    #[test]
    fn halves_leave_a_connected_majority_and_a_connected_minority() {
        let mut rng = StdRng::seed_from_u64(7);
        for n in [3, 4, 5, 7] {
            for _ in 0..20 {
                let s = Shape::random_halves(n, &mut rng);
                let Shape::Halves { minority } = &s else {
                    panic!("{s:?}")
                };
                assert!(!minority.is_empty() && minority.len() * 2 < n, "{s}");
                let c = s.cuts(n);
                let small = component(&c, n, minority[0]);
                assert_eq!(small.iter().copied().collect::<Vec<_>>(), *minority);
                let big_start = (0..n).find(|i| !minority.contains(i)).unwrap();
                assert_eq!(component(&c, n, big_start).len(), n - minority.len());
                assert_eq!(c.pairs().count(), minority.len() * (n - minority.len()));
            }
        }
    }

    #[test]
    fn a_bridge_of_three_cuts_only_the_two_ends() {
        let s = Shape::Bridge {
            bridge: 1,
            left: vec![0],
            right: vec![2],
        };
        assert_eq!(s.cuts(3).pairs().collect::<Vec<_>>(), [(0, 2)]);
        assert_eq!(s.to_string(), "bridge [m0] - m1 - [m2]");
    }

    #[test]
    fn random_bridges_connect_everyone_only_through_the_bridge() {
        let mut rng = StdRng::seed_from_u64(3);
        for n in [3, 5] {
            for _ in 0..20 {
                let s = Shape::random_bridge(n, &mut rng);
                let Shape::Bridge {
                    bridge,
                    left,
                    right,
                } = &s
                else {
                    panic!("{s:?}")
                };
                let c = s.cuts(n);
                assert!(!c.touches(*bridge), "{s}: the bridge reaches everyone");
                assert_eq!(left.len() + right.len() + 1, n);
                assert!(!left.is_empty() && !right.is_empty(), "{s}");
                for &l in left {
                    for &r in right {
                        assert!(c.is_cut(l, r), "{s}: m{l} reaches m{r}");
                    }
                }
                assert_eq!(
                    component(&c, n, left[0]).len(),
                    n,
                    "connected via the bridge"
                );
            }
        }
    }
}
