//! Keys and values: fixed-size keys in a numbered key space, and values that carry data.
//!
//! A key is a workload prefix followed by a zero-padded decimal index, padded to exactly
//! `--key-size` bytes, so keys sort in index order and every workload has its own corner of
//! the key space (runs of different workloads against one server do not collide).
//!
//! A value begins with 8 big-endian bytes of payload and is padded to `--val-size` with `x`:
//! - [`stamp`]: nanoseconds since this process's time origin, taken just before the request
//!   is sent; whoever receives the value (a watcher in the same process) gets the put→event
//!   latency with [`stamp_age`], on a monotonic clock;
//! - [`counter`]: a number, for compare-and-swap counters whose final sum is checked.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::{BufMut, Bytes, BytesMut};
use rand::Rng;

/// A numbered key space: `prefix` + index, zero-padded to `size` bytes.
#[derive(Clone, Debug)]
pub(crate) struct KeySpace {
    prefix: String,
    width: usize,
    space: u64,
}

impl KeySpace {
    pub(crate) fn new(prefix: &str, key_size: usize, space: u64) -> anyhow::Result<KeySpace> {
        if space == 0 {
            bail!("the key space is empty");
        }
        let digits = (space - 1).to_string().len();
        let width = key_size.saturating_sub(prefix.len());
        if width < digits {
            bail!(
                "--key-size {key_size} is too small for {space} keys under {prefix:?} (needs {})",
                prefix.len() + digits
            );
        }
        Ok(KeySpace {
            prefix: prefix.to_string(),
            width,
            space,
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.space
    }

    /// Key number `i` (taken modulo the space).
    pub(crate) fn key(&self, i: u64) -> Bytes {
        let k = format!("{}{:0w$}", self.prefix, i % self.space, w = self.width);
        Bytes::from(k)
    }

    pub(crate) fn random(&self, rng: &mut impl Rng) -> Bytes {
        self.key(rng.random_range(0..self.space))
    }

    /// The prefix every key of the space starts with.
    pub(crate) fn prefix(&self) -> Bytes {
        Bytes::from(self.prefix.clone())
    }

    /// The index of `key` if it is a key of this space (the inverse of [`KeySpace::key`]).
    pub(crate) fn index_of(&self, key: &[u8]) -> Option<u64> {
        let digits = key.strip_prefix(self.prefix.as_bytes())?;
        if digits.len() != self.width || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let i: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        (i < self.space).then_some(i)
    }
}

/// The range end that makes a range or watch cover every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    // All 0xff (or empty): etcd's "\0" means "to the end of the key space".
    Bytes::from_static(b"\0")
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn value(head: u64, size: usize) -> Bytes {
    let mut v = BytesMut::with_capacity(size.max(8));
    v.put_u64(head);
    v.resize(size.max(8), b'x');
    v.freeze()
}

/// A value of `size` bytes (at least 8) stamped with the current time.
pub(crate) fn stamp(size: usize) -> Bytes {
    value(origin().elapsed().as_nanos() as u64, size)
}

/// How long ago a [`stamp`]ed value was made; `None` for a value that carries no stamp.
pub(crate) fn stamp_age(v: &[u8]) -> Option<Duration> {
    let head = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let now = origin().elapsed().as_nanos() as u64;
    now.checked_sub(head).map(Duration::from_nanos)
}

/// A value of `size` bytes (at least 8) holding the counter `n`.
pub(crate) fn counter(n: u64, size: usize) -> Bytes {
    value(n, size)
}

/// The counter in a [`counter`] value; an absent or foreign value counts as 0.
pub(crate) fn counter_of(v: &[u8]) -> u64 {
    v.get(..8)
        .and_then(|h| h.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_exact_size_and_sort_by_index() {
        let ks = KeySpace::new("put/", 12, 1000).unwrap();
        assert_eq!(&ks.key(7)[..], b"put/00000007");
        assert_eq!(ks.key(7).len(), 12);
        assert_eq!(ks.key(1007), ks.key(7), "indexes wrap around the space");
        assert!(ks.key(9) < ks.key(10));
        assert_eq!(ks.index_of(&ks.key(7)), Some(7));
        assert_eq!(ks.index_of(b"put/0000007"), None, "too short");
        assert_eq!(ks.index_of(b"put/00001000"), None, "outside the space");
        assert_eq!(ks.index_of(b"get/00000007"), None, "another prefix");
        assert_eq!(ks.index_of(b"put/0000000x"), None);
        let mut rng = rand::rng();
        for _ in 0..100 {
            let k = ks.random(&mut rng);
            assert!(k.starts_with(b"put/") && k.len() == 12);
        }
    }

    #[test]
    fn a_key_size_too_small_for_the_space_is_refused() {
        assert!(KeySpace::new("put/", 6, 100).is_ok());
        let e = KeySpace::new("put/", 6, 101).unwrap_err().to_string();
        assert!(e.contains("needs 7"), "{e}");
        assert!(KeySpace::new("p/", 8, 0).is_err());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(&prefix_end(b"abc")[..], b"abd");
        assert_eq!(&prefix_end(b"a\xff")[..], b"b");
        assert_eq!(&prefix_end(b"\xff\xff")[..], b"\0");
        assert_eq!(&prefix_end(b"/registry/pods/")[..], b"/registry/pods0");
    }

    #[test]
    fn stamps_and_counters_round_trip() {
        let v = stamp(100);
        assert_eq!(v.len(), 100);
        let age = stamp_age(&v).unwrap();
        assert!(age < Duration::from_secs(5), "{age:?}");
        assert_eq!(stamp(3).len(), 8, "a value holds at least its stamp");
        assert_eq!(stamp_age(b"short"), None);
        assert_eq!(counter_of(&counter(42, 64)), 42);
        assert_eq!(counter_of(b""), 0);
    }
}
