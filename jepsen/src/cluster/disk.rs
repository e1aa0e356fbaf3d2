//! Damaging a stopped member's files the way disks and crashes do.
//!
//! Where the files are (both under `--data-dir`):
//! - Keelson: the raft log is `member/wal/<id:020>.wal` segments (8-byte magic, then frames of
//!   `len u32 | crc32 u32 | header crc u32 | payload`, `raft/src/log/wal`); the last segment is
//!   the one being appended to. Keelson keeps no snapshot file (`member/snap/db` is the store
//!   itself; a snapshot is built from it on demand), so only its log is damaged.
//! - etcd 3.4: `member/wal/<seq>-<index>.wal` (preallocated to 64 MiB and zero-filled past the
//!   data; frames are a little-endian u64 whose low 56 bits are the record length and whose top
//!   byte gives the padding to 8 bytes), and snapshots `member/snap/<term>-<index>.snap`.
//!
//! A flip always lands inside a record's bytes, so it cannot fall in the zeros past the end of
//! a preallocated file and change nothing. Which record is chosen at random among the last
//! few, so sometimes the very last one (a torn tail the member may truncate) and sometimes one
//! with data after it (damage the member must refuse to start with).

use std::fmt;
use std::path::{Path, PathBuf};

use rand::Rng;

use super::Target;
use crate::error::HarnessError;

/// How far from the end of the log the damaged record may be.
const TAIL_RECORDS: usize = 3;

/// What was damaged.
#[derive(Clone, Debug)]
pub struct Corruption {
    pub file: PathBuf,
    pub offset: u64,
    /// Records after the damaged one in that file (0: the tail record).
    pub records_after: usize,
    /// The byte is in the record's framing (length, checksums), not its data.
    pub in_header: bool,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flipped byte {} of {}", self.offset, self.file.display())?;
        if self.file.extension().is_some_and(|e| e == "wal") {
            write!(
                f,
                " (in a record {}, {} records after it)",
                if self.in_header { "header" } else { "body" },
                self.records_after
            )?;
        }
        Ok(())
    }
}

/// Keelson's frame header: length, payload crc, header crc.
const KEELSON_HEADER: usize = 12;
/// etcd's frame header: the length field.
const ETCD_HEADER: usize = 8;

/// Byte ranges of the records (framing included) of a Keelson WAL segment.
pub(crate) fn keelson_records(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 8; // the magic
    while at + 12 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if b[at..at + 12].iter().all(|&x| x == 0) || at + 12 + len > b.len() {
            break;
        }
        out.push((at, at + 12 + len));
        at += 12 + len;
    }
    out
}

/// Byte ranges of the records (framing included, padding not) of an etcd WAL file, up to the
/// zeros after the data.
pub(crate) fn etcd_records(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= b.len() {
        let field = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        if field == 0 {
            break;
        }
        let len = (field & 0x00ff_ffff_ffff_ffff) as usize;
        let pad = if field >> 63 == 1 {
            ((field >> 56) & 0x7) as usize
        } else {
            0
        };
        if at + 8 + len + pad > b.len() {
            break;
        }
        out.push((at, at + 8 + len));
        at += 8 + len + pad;
    }
    out
}

/// Files in `dir` ending in `ext`, sorted by name (both stores name them in log order).
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// XORs the byte at `offset` of `file` with a random nonzero value and fsyncs it.
fn flip(file: &Path, offset: usize, rng: &mut impl Rng) -> Result<(), HarnessError> {
    use std::os::unix::fs::FileExt;
    let what = || format!("corrupting {}", file.display());
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(file)
        .map_err(|e| HarnessError::io(what(), e))?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset as u64)
        .map_err(|e| HarnessError::io(what(), e))?;
    b[0] ^= rng.random_range(1..=255u8);
    f.write_all_at(&b, offset as u64)
        .and_then(|()| f.sync_all())
        .map_err(|e| HarnessError::io(what(), e))
}

/// Which byte a corruption flips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Any byte of one of the last few records of the newest log file, chosen at random.
    LogTail,
    /// A byte in the body of the record `from_end` records before the end of the newest log
    /// file (0: the last record).
    LogRecord { from_end: usize },
    /// Any byte of the newest snapshot file; the log tail where there is none (Keelson).
    Snapshot,
}

/// Flips one byte of the member's files as `damage` says. None if there is nothing to damage
/// (yet). The member must not be running.
pub(crate) fn corrupt(
    target: Target,
    data_dir: &Path,
    damage: Damage,
    rng: &mut impl Rng,
) -> Result<Option<Corruption>, HarnessError> {
    let member = data_dir.join("member");
    if damage == Damage::Snapshot {
        if let Some(snap) = files(&member.join("snap"), "snap").pop() {
            let len = std::fs::metadata(&snap)
                .map_err(|e| HarnessError::io(format!("reading {}", snap.display()), e))?
                .len() as usize;
            if len > 0 {
                let offset = rng.random_range(0..len);
                flip(&snap, offset, rng)?;
                return Ok(Some(Corruption {
                    file: snap,
                    offset: offset as u64,
                    records_after: 0,
                    in_header: false,
                }));
            }
        }
    }
    let Some(wal) = files(&member.join("wal"), "wal").pop() else {
        return Ok(None);
    };
    let bytes = std::fs::read(&wal)
        .map_err(|e| HarnessError::io(format!("reading {}", wal.display()), e))?;
    let (records, header) = match target {
        Target::Keelson => (keelson_records(&bytes), KEELSON_HEADER),
        Target::Etcd => (etcd_records(&bytes), ETCD_HEADER),
    };
    let (back, body_only) = match damage {
        Damage::LogRecord { from_end } => (from_end, true),
        _ if records.is_empty() => return Ok(None),
        _ => (rng.random_range(0..TAIL_RECORDS.min(records.len())), false),
    };
    let Some(&(start, end)) = records.len().checked_sub(back + 1).map(|i| &records[i]) else {
        return Ok(None);
    };
    let first = if body_only { start + header } else { start };
    if first >= end {
        return Ok(None);
    }
    let offset = rng.random_range(first..end);
    flip(&wal, offset, rng)?;
    Ok(Some(Corruption {
        file: wal,
        offset: offset as u64,
        records_after: back,
        in_header: offset < start + header,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn keelson_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_le_bytes().to_vec();
        f.extend([0xaa; 8]); // the crcs are not checked here
        f.extend(payload);
        f
    }

    #[test]
    fn keelson_records_end_at_zeros_or_a_short_frame() {
        let mut seg = b"KLSNLOG1".to_vec();
        seg.extend(keelson_frame(b"abc"));
        seg.extend(keelson_frame(b"defgh"));
        assert_eq!(keelson_records(&seg), [(8, 23), (23, 40)]);
        let mut zeros = seg.clone();
        zeros.extend([0; 30]);
        assert_eq!(keelson_records(&zeros).len(), 2);
        let mut torn = seg.clone();
        torn.extend(&keelson_frame(b"longer payload")[..15]);
        assert_eq!(
            keelson_records(&torn).len(),
            2,
            "a torn frame is not a record"
        );
    }

    fn etcd_frame(data: &[u8]) -> Vec<u8> {
        let pad = (8 - data.len() % 8) % 8;
        let mut field = data.len() as u64;
        if pad > 0 {
            field |= (0x80 | pad as u64) << 56;
        }
        let mut f = field.to_le_bytes().to_vec();
        f.extend(data);
        f.extend(vec![0; pad]);
        f
    }

    #[test]
    fn etcd_records_skip_padding_and_stop_at_the_preallocated_zeros() {
        let mut wal = etcd_frame(b"12345");
        wal.extend(etcd_frame(b"12345678"));
        wal.extend([0; 64]);
        // The first record's data is 5 bytes, padded to 8.
        assert_eq!(etcd_records(&wal), [(0, 13), (16, 32)]);
    }

    #[test]
    fn a_flip_lands_in_one_of_the_last_records_of_the_newest_segment() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("member/wal");
        std::fs::create_dir_all(&wal).unwrap();
        let mut old = b"KLSNLOG1".to_vec();
        old.extend(keelson_frame(b"old"));
        std::fs::write(wal.join("00000000000000000001.wal"), &old).unwrap();
        let mut seg = b"KLSNLOG1".to_vec();
        for i in 0..10u8 {
            seg.extend(keelson_frame(&[i; 20]));
        }
        let newest = wal.join("00000000000000000002.wal");
        std::fs::write(&newest, &seg).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20 {
            let c = corrupt(Target::Keelson, dir.path(), Damage::Snapshot, &mut rng)
                .unwrap()
                .unwrap();
            assert_eq!(c.file, newest);
            let after = std::fs::read(&newest).unwrap();
            let diff: Vec<usize> = (0..seg.len()).filter(|&i| after[i] != seg[i]).collect();
            assert_eq!(diff, [c.offset as usize], "exactly one byte changed");
            let first_allowed = 8 + 32 * (10 - TAIL_RECORDS);
            assert!(c.offset as usize >= first_allowed, "{c}");
            assert_eq!(c.records_after, 9 - (c.offset as usize - 8) / 32);
            assert_eq!(c.in_header, (c.offset as usize - 8) % 32 < 12);
            std::fs::write(&newest, &seg).unwrap();
        }
        assert_eq!(
            std::fs::read(wal.join("00000000000000000001.wal")).unwrap(),
            old
        );
    }

    #[test]
    fn a_chosen_record_is_damaged_in_its_body() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("member/wal");
        std::fs::create_dir_all(&wal).unwrap();
        let mut seg = b"KLSNLOG1".to_vec();
        for i in 0..4u8 {
            seg.extend(keelson_frame(&[i; 20]));
        }
        let file = wal.join("00000000000000000001.wal");
        std::fs::write(&file, &seg).unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        for from_end in 0..4 {
            let d = Damage::LogRecord { from_end };
            let c = corrupt(Target::Keelson, dir.path(), d, &mut rng)
                .unwrap()
                .unwrap();
            let record = 3 - from_end;
            let body = 8 + 32 * record + 12;
            assert!((body..body + 20).contains(&(c.offset as usize)), "{c}");
            assert!(!c.in_header);
            assert_eq!(c.records_after, from_end);
            std::fs::write(&file, &seg).unwrap();
        }
        let beyond = Damage::LogRecord { from_end: 4 };
        assert!(corrupt(Target::Keelson, dir.path(), beyond, &mut rng)
            .unwrap()
            .is_none());
    }

    #[test]
    fn nothing_to_damage_in_an_empty_member() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        for d in [
            Damage::LogTail,
            Damage::Snapshot,
            Damage::LogRecord { from_end: 0 },
        ] {
            assert!(corrupt(Target::Etcd, dir.path(), d, &mut rng)
                .unwrap()
                .is_none());
        }
    }
}
