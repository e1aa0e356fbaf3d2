//! The index against etcd's request conventions and against the obvious matcher: every
//! watcher whose range contains the key, found by checking each one.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// The index with the positions its callers keep, as the hub keeps them in its watchers.
#[derive(Default)]
struct Tracked {
    ix: SyncedIndex,
    at: HashMap<u64, u32>,
}

impl Tracked {
    fn insert(&mut self, uid: u64, r: &KeyRange) {
        let at = self.ix.insert(uid, r);
        self.at.insert(uid, at);
    }

    /// Removes `uid` as a caller that may hold a stale position would: a uid removed
    /// already is looked up at the position it last had.
    fn remove(&mut self, uid: u64, r: &KeyRange) {
        let at = self.at.get(&uid).copied().unwrap_or(0);
        if let Some((moved, to)) = self.ix.remove(uid, r, at) {
            self.at.insert(moved, to);
        }
        self.at.remove(&uid);
    }

    fn is_empty(&self) -> bool {
        self.ix.is_empty()
    }
}

fn matching(ix: &Tracked, key: &[u8]) -> Vec<u64> {
    let mut v = vec![];
    ix.ix.for_each_matching(key, |u| v.push(u));
    v.sort();
    v
}

#[test]
fn request_conventions_match_etcd() {
    let r = KeyRange::from_request(b"", b"").unwrap();
    assert_eq!((r.key.as_ref(), &r.end), (&b"\0"[..], &RangeEnd::Single));
    let r = KeyRange::from_request(b"", b"\0").unwrap();
    assert!(!r.contains(b"") && r.contains(b"\0") && r.contains(b"zzz"));
    let r = KeyRange::from_request(b"a", b"b").unwrap();
    assert!(r.contains(b"a") && r.contains(b"az") && !r.contains(b"b"));
    assert_eq!(KeyRange::from_request(b"b", b"a"), Err(EMPTY_RANGE));
    assert_eq!(KeyRange::from_request(b"a", b"a"), Err(EMPTY_RANGE));
}

#[test]
fn index_finds_exact_prefix_and_open_ranges() {
    let mut ix = Tracked::default();
    let one = KeyRange::from_request(b"foo", b"").unwrap();
    let pre = KeyRange::from_request(b"fo", b"fp").unwrap();
    let all = KeyRange::from_request(b"", b"\0").unwrap();
    let later = KeyRange::from_request(b"g", b"\0").unwrap();
    ix.insert(1, &one);
    ix.insert(2, &pre);
    ix.insert(3, &pre);
    ix.insert(4, &all);
    ix.insert(5, &later);
    assert_eq!(matching(&ix, b"foo"), vec![1, 2, 3, 4]);
    assert_eq!(matching(&ix, b"fox"), vec![2, 3, 4]);
    assert_eq!(matching(&ix, b"fp"), vec![4]);
    assert_eq!(matching(&ix, b"h"), vec![4, 5]);
    ix.remove(2, &pre);
    ix.remove(1, &one);
    assert_eq!(matching(&ix, b"foo"), vec![3, 4]);
    for (u, r) in [(3, &pre), (4, &all), (5, &later)] {
        ix.remove(u, r);
    }
    assert!(ix.is_empty());
}

#[test]
fn removing_from_a_large_group_keeps_the_rest() {
    let mut ix = Tracked::default();
    let pre = KeyRange::from_request(b"/registry/pods/", b"/registry/pods0").unwrap();
    for u in 0..1000 {
        ix.insert(u, &pre);
    }
    for u in (0..1000).filter(|u| u % 3 == 0) {
        ix.remove(u, &pre);
    }
    // Gone already, at a position another watcher now holds: a no-op.
    assert_eq!(ix.ix.remove(0, &pre, 0), None);
    assert_eq!(ix.ix.remove(3, &pre, 1), None);
    let want: Vec<u64> = (0..1000).filter(|u| u % 3 != 0).collect();
    assert_eq!(matching(&ix, b"/registry/pods/a"), want);
    assert_eq!(ix.at.len(), want.len());
    assert_eq!(ix.ix.ranges.len(), 1);
}

/// etcd's prefix end (clientv3 `GetPrefixRangeEnd`): the last byte below 0xff incremented and
/// what follows it dropped; `"\0"` if every byte is 0xff.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Short keys over an alphabet of edge bytes, so ranges nest, share starts and ends, and hit
/// the `"\0"` and `0xff` corners.
fn random_key(rng: &mut StdRng) -> Vec<u8> {
    const ALPHABET: [u8; 6] = [0x00, 0x01, b'a', b'b', 0xfe, 0xff];
    let len = rng.random_range(0..=3);
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

fn random_range(rng: &mut StdRng) -> Option<KeyRange> {
    let key = random_key(rng);
    let end = match rng.random_range(0..4) {
        0 => vec![],
        1 => vec![0],
        2 => prefix_end(&key),
        _ => random_key(rng),
    };
    let r = KeyRange::from_request(&key, &end);
    let k = if key.is_empty() { vec![0] } else { key };
    let empty = !end.is_empty() && end != [0] && k >= end;
    assert_eq!(
        r.is_err(),
        empty,
        "refused exactly when empty: {k:?} {end:?}"
    );
    r.ok()
}

#[test]
fn index_agrees_with_a_linear_scan_under_random_churn() {
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ix = Tracked::default();
        let mut live: Vec<(u64, KeyRange)> = Vec::new();
        let mut next_uid = 0;
        for step in 0..1500 {
            if live.is_empty() || rng.random_bool(0.6) {
                // Reuse a live range now and then, so groups grow past one watcher.
                let r = if !live.is_empty() && rng.random_bool(0.3) {
                    Some(live[rng.random_range(0..live.len())].1.clone())
                } else {
                    random_range(&mut rng)
                };
                if let Some(r) = r {
                    next_uid += 1;
                    ix.insert(next_uid, &r);
                    live.push((next_uid, r));
                }
            } else {
                let (uid, r) = live.swap_remove(rng.random_range(0..live.len()));
                ix.remove(uid, &r);
            }
            if step % 25 == 0 {
                ix.ix.ranges.check();
                for _ in 0..30 {
                    let key = random_key(&mut rng);
                    let mut want: Vec<u64> = live
                        .iter()
                        .filter(|(_, r)| r.contains(&key))
                        .map(|(u, _)| *u)
                        .collect();
                    want.sort();
                    assert_eq!(
                        matching(&ix, &key),
                        want,
                        "seed {seed} step {step} key {key:?}"
                    );
                }
            }
        }
        for (uid, r) in live.drain(..) {
            ix.remove(uid, &r);
        }
        assert!(ix.is_empty() && ix.at.is_empty(), "seed {seed}");
    }
}
