//! The one module that knows how anything is laid out in the backend.
//!
//! The backend is a single ordered keyspace; a one-byte prefix separates the spaces:
//!
//! | prefix | key                                       | value                          |
//! |--------|-------------------------------------------|--------------------------------|
//! | `k`    | revision: main (8 B BE) `_` sub (8 B BE), then `t` for a tombstone | `mvccpb.KeyValue` |
//! | `m`    | a metadata name (`consistent_index`, `finished_compact_rev`, `current_rev`, `auth_revision`) | `i64` BE |
//! | `m`    | `raft_applied`                            | opaque bytes of the raft crate |
//! | `l`    | lease ID (8 B BE)                         | TTL (8 B BE)                   |
//! | `a`    | alarm: member ID (8 B BE) + type (4 B BE) | empty                          |
//! | `u`    | auth user name                            | `authpb.User`                  |
//! | `r`    | auth role name                            | `authpb.Role`                  |
//!
//! Revision keys sort in revision order because both parts are big-endian and non-negative, so
//! a prefix scan over `k` walks history in the order it was written (watch catch-up and HashKV
//! rely on this).
//!
//! Every value is framed as `crc32(payload) (4 B BE) ‖ payload`; [`unframe`] checks the crc and
//! refuses a mismatch with [`Error::Corrupt`], so corrupt data is never served.

use crate::error::{Error, Result};
use crate::mvcc::Revision;

pub(crate) const REV_PREFIX: u8 = b'k';
pub(crate) const META_PREFIX: u8 = b'm';
pub(crate) const LEASE_PREFIX: u8 = b'l';
pub(crate) const ALARM_PREFIX: u8 = b'a';
pub(crate) const USER_PREFIX: u8 = b'u';
pub(crate) const ROLE_PREFIX: u8 = b'r';

/// Length of an encoded revision key without the tombstone mark.
pub(crate) const REV_KEY_LEN: usize = 1 + 8 + 1 + 8;

pub(crate) const META_CONSISTENT_INDEX: &str = "consistent_index";
pub(crate) const META_COMPACTED: &str = "finished_compact_rev";
pub(crate) const META_CURRENT_REV: &str = "current_rev";
pub(crate) const META_AUTH_REVISION: &str = "auth_revision";
/// The raft crate's record of where the store is in its log (last applied log id, membership),
/// opaque to the store and written in the same batch as the commands it covers.
pub(crate) const META_RAFT_APPLIED: &str = "raft_applied";

/// Encodes a revision key; `tombstone` appends the `t` mark.
pub(crate) fn rev_key(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(REV_KEY_LEN + 1);
    k.push(REV_PREFIX);
    k.extend_from_slice(&(rev.main as u64).to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&(rev.sub as u64).to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

/// The first revision key at or after main revision `main` (sub 0).
pub(crate) fn rev_key_from(main: i64) -> Vec<u8> {
    rev_key(Revision { main, sub: 0 }, false)
}

/// Decodes a revision key into the revision and its tombstone mark.
pub(crate) fn decode_rev_key(k: &[u8]) -> Result<(Revision, bool)> {
    let bad = || Error::Corrupt(format!("malformed revision key {k:?}"));
    if k.len() < REV_KEY_LEN || k[0] != REV_PREFIX || k[9] != b'_' {
        return Err(bad());
    }
    let main = u64::from_be_bytes(k[1..9].try_into().map_err(|_| bad())?) as i64;
    let sub = u64::from_be_bytes(k[10..18].try_into().map_err(|_| bad())?) as i64;
    let tombstone = match &k[REV_KEY_LEN..] {
        [] => false,
        [b't'] => true,
        _ => return Err(bad()),
    };
    Ok((Revision { main, sub }, tombstone))
}

/// The end (exclusive) of the revision key space.
pub(crate) fn rev_space_end() -> Vec<u8> {
    vec![REV_PREFIX + 1]
}

pub(crate) fn meta_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(META_PREFIX);
    k.extend_from_slice(name.as_bytes());
    k
}

pub(crate) fn lease_key(id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(LEASE_PREFIX);
    k.extend_from_slice(&(id as u64).to_be_bytes());
    k
}

pub(crate) fn decode_lease_key(k: &[u8]) -> Result<i64> {
    if k.len() != 9 || k[0] != LEASE_PREFIX {
        return Err(Error::Corrupt(format!("malformed lease key {k:?}")));
    }
    Ok(u64::from_be_bytes(k[1..9].try_into().expect("8 bytes")) as i64)
}

pub(crate) fn alarm_key(member: u64, alarm: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(ALARM_PREFIX);
    k.extend_from_slice(&member.to_be_bytes());
    k.extend_from_slice(&(alarm as u32).to_be_bytes());
    k
}

pub(crate) fn decode_alarm_key(k: &[u8]) -> Result<(u64, i32)> {
    if k.len() != 13 || k[0] != ALARM_PREFIX {
        return Err(Error::Corrupt(format!("malformed alarm key {k:?}")));
    }
    let member = u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"));
    let alarm = u32::from_be_bytes(k[9..13].try_into().expect("4 bytes")) as i32;
    Ok((member, alarm))
}

/// An auth user's or role's key: its space's prefix and the name's bytes.
pub(crate) fn auth_key(prefix: u8, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(prefix);
    k.extend_from_slice(name);
    k
}

/// Bounds `[start, end)` covering every key of every space (all prefixes are ASCII letters).
pub(crate) fn keyspace_bounds() -> (Vec<u8>, Vec<u8>) {
    (Vec::new(), vec![0xff])
}

/// The exclusive end of the key space that starts with `prefix`.
pub(crate) fn space_end(prefix: u8) -> Vec<u8> {
    vec![prefix + 1]
}

/// Frames a payload with its crc32.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + payload.len());
    v.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Checks a framed value's crc32 and returns its payload. `what` names the record in the error.
pub(crate) fn unframe<'a>(what: &dyn std::fmt::Debug, framed: &'a [u8]) -> Result<&'a [u8]> {
    if framed.len() < 4 {
        return Err(Error::Corrupt(format!("record {what:?} is truncated")));
    }
    let (crc, payload) = framed.split_at(4);
    let want = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
    let got = crc32fast::hash(payload);
    if want != got {
        return Err(Error::Corrupt(format!(
            "record {what:?} failed its checksum (stored {want:08x}, computed {got:08x})"
        )));
    }
    Ok(payload)
}

pub(crate) fn frame_i64(v: i64) -> Vec<u8> {
    frame(&v.to_be_bytes())
}

pub(crate) fn unframe_i64(what: &dyn std::fmt::Debug, framed: &[u8]) -> Result<i64> {
    let p = unframe(what, framed)?;
    let arr: [u8; 8] = p
        .try_into()
        .map_err(|_| Error::Corrupt(format!("record {what:?} has a bad length")))?;
    Ok(i64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rev_keys_sort_in_revision_order_and_round_trip() {
        let a = rev_key(Revision { main: 2, sub: 5 }, false);
        let b = rev_key(Revision { main: 3, sub: 0 }, true);
        let c = rev_key(Revision { main: 256, sub: 0 }, false);
        assert!(a < b && b < c);
        assert_eq!(
            decode_rev_key(&b).unwrap(),
            (Revision { main: 3, sub: 0 }, true)
        );
        assert_eq!(
            decode_rev_key(&a).unwrap(),
            (Revision { main: 2, sub: 5 }, false)
        );
        assert!(decode_rev_key(b"kxx").is_err());
        assert!(c < rev_space_end());
    }

    #[test]
    fn frames_detect_corruption() {
        let mut f = frame(b"hello");
        assert_eq!(unframe(&"x", &f).unwrap(), b"hello");
        f[5] ^= 0x01;
        let err = unframe(&"x", &f).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
        assert!(unframe(&"x", &[1, 2]).is_err());
        assert_eq!(unframe_i64(&"n", &frame_i64(-7)).unwrap(), -7);
    }

    #[test]
    fn lease_and_alarm_keys_round_trip() {
        assert_eq!(
            decode_lease_key(&lease_key(0x694d_7e8f)).unwrap(),
            0x694d_7e8f
        );
        assert_eq!(decode_alarm_key(&alarm_key(42, 1)).unwrap(), (42, 1));
    }
}
