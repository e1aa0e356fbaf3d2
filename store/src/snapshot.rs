//! Snapshots: a member's whole backend as one self-checking file, and restoring a data dir
//! from it.
//!
//! File format (version 1), all integers big-endian:
//!
//! | part    | bytes                                                                      |
//! |---------|----------------------------------------------------------------------------|
//! | header  | magic `KEELSNAP` (8) ‖ format version u32 ‖ reserved u32 (0)               |
//! | records | per backend pair: `P` ‖ key len u32 ‖ value len u32 ‖ key ‖ value ‖ crc32 |
//! | end     | `E` ‖ number of pair records u64 ‖ crc32                                   |
//! | padding | zero bytes up to a multiple of 512                                         |
//! | trailer | sha256 of everything before it (32)                                        |
//!
//! Each record's crc32 covers the record from its tag to the end of its value. The padding
//! exists for `etcdctl snapshot save`, which accepts a stream only if its size is ≡ 32 mod 512
//! (a bbolt file is a whole number of pages, followed by its sha256); the Snapshot RPC streams
//! the body and then the sha256 as its last message, exactly as etcd does, so any etcd client
//! can save a keelson snapshot. (`etcdctl snapshot status/restore` read bbolt and cannot open
//! it; `keelson store snapshot restore` does.)
//!
//! Restore checks the sha256 before creating anything, then every record's crc32 and every
//! value's own crc32 frame (`keys.rs`), builds the backend under a temporary name, replays it
//! through the MVCC, lease and alarm loaders (which decode every record), and only then moves
//! it into place. The restored member starts a new log: the applied index and the raft applied
//! state are not carried over.
//!
//! Consistency of a snapshot: the backend has no point-in-time reads, so [`consistent_pairs`]
//! scans it between two readings of the backend write counter (`metrics.rs`) and retries if a
//! write landed meanwhile; after a few tries it holds the MVCC state's read lock, under which
//! the applier can finish at most the one commit already under way, so the next try succeeds.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::alarm::Alarms;
use crate::backend::{Backend, Pair, SledBackend, WriteBatch};
use crate::config::StoreConfig;
use crate::core::Core;
use crate::error::{Error, Result};
use crate::keys;
use crate::lease::Lessor;
use crate::mvcc::Mvcc;
#[cfg(test)]
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"KEELSNAP";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 16;
const ALIGN: usize = 512;
const SHA_LEN: usize = 32;
const TAG_PAIR: u8 = b'P';
const TAG_END: u8 = b'E';
/// Pairs written per backend batch during restore.
const RESTORE_BATCH: usize = 4096;

/// A point-in-time copy of every backend pair. See the module docs.
pub(crate) fn consistent_pairs(core: &Core) -> Result<Vec<Pair>> {
    let (start, end) = keys::keyspace_bounds();
    let scan = || -> Result<Vec<Pair>> { core.backend.scan(&start, &end).collect() };
    for _ in 0..3 {
        let (started, finished) = core.metrics.write_epoch();
        if started != finished {
            std::thread::yield_now();
            continue;
        }
        let pairs = scan()?;
        if core.metrics.writes_started() == started {
            return Ok(pairs);
        }
    }
    let _writers_held = core.mvcc.state.read();
    loop {
        let (started, finished) = core.metrics.write_epoch();
        if started != finished {
            // The one commit that can still land is under way; it finishes without the lock.
            std::thread::yield_now();
            continue;
        }
        let pairs = scan()?;
        if core.metrics.writes_started() == started {
            return Ok(pairs);
        }
    }
}

/// Encodes pairs as a snapshot body (everything but the sha256 trailer).
pub(crate) fn encode(pairs: &[Pair]) -> Vec<u8> {
    let size: usize = pairs.iter().map(|(k, v)| 13 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + size + 13 + ALIGN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    for (k, v) in pairs {
        let at = out.len();
        out.push(TAG_PAIR);
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(v);
        let crc = crc32fast::hash(&out[at..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let at = out.len();
    out.push(TAG_END);
    out.extend_from_slice(&(pairs.len() as u64).to_be_bytes());
    let crc = crc32fast::hash(&out[at..]);
    out.extend_from_slice(&crc.to_be_bytes());
    out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
    out
}

/// The sha256 trailer of a body.
pub(crate) fn digest(body: &[u8]) -> [u8; SHA_LEN] {
    Sha256::digest(body).into()
}

/// Decodes a whole snapshot held in memory (body then sha256, as [`encode`] and [`digest`]
/// make it), checking the sha256, every record's crc32 and every value's own crc32 frame.
pub(crate) fn decode(data: &[u8]) -> Result<Vec<Pair>> {
    if data.len() < HEADER_LEN + SHA_LEN {
        return Err(corrupt("it is shorter than a header and a sha256"));
    }
    let (body, trailer) = data.split_at(data.len() - SHA_LEN);
    if digest(body)[..] != trailer[..] {
        return Err(corrupt("its sha256 does not match"));
    }
    let mut records = RecordReader::new(body)?;
    let mut pairs = Vec::new();
    while let Some(p) = records.next_pair()? {
        pairs.push(p);
    }
    Ok(pairs)
}

/// Reads the pair records of a body whose sha256 has already been checked.
struct RecordReader<R> {
    r: R,
    count: u64,
    done: bool,
}

impl<R: Read> RecordReader<R> {
    fn new(mut r: R) -> Result<Self> {
        let mut h = [0u8; HEADER_LEN];
        r.read_exact(&mut h)
            .map_err(|_| corrupt("the header is truncated"))?;
        if &h[..8] != MAGIC {
            return Err(corrupt("it does not start with the keelson snapshot magic"));
        }
        let version = u32::from_be_bytes(h[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(corrupt(&format!(
                "format version {version} is not supported (expected {VERSION})"
            )));
        }
        Ok(RecordReader {
            r,
            count: 0,
            done: false,
        })
    }

    fn read_u32(&mut self, crc: &mut crc32fast::Hasher) -> Result<u32> {
        let mut b = [0u8; 4];
        self.r
            .read_exact(&mut b)
            .map_err(|_| corrupt("a record is truncated"))?;
        crc.update(&b);
        Ok(u32::from_be_bytes(b))
    }

    fn check_crc(&mut self, crc: crc32fast::Hasher) -> Result<()> {
        let mut b = [0u8; 4];
        self.r
            .read_exact(&mut b)
            .map_err(|_| corrupt("a record is truncated"))?;
        if u32::from_be_bytes(b) != crc.finalize() {
            return Err(corrupt(&format!(
                "record {} failed its crc32 check",
                self.count
            )));
        }
        Ok(())
    }

    /// The next pair, or `None` after the end record (whose count and padding are checked).
    fn next_pair(&mut self) -> Result<Option<Pair>> {
        if self.done {
            return Ok(None);
        }
        let mut crc = crc32fast::Hasher::new();
        let mut tag = [0u8; 1];
        self.r
            .read_exact(&mut tag)
            .map_err(|_| corrupt("the end record is missing"))?;
        crc.update(&tag);
        match tag[0] {
            TAG_PAIR => {
                let klen = self.read_u32(&mut crc)? as usize;
                let vlen = self.read_u32(&mut crc)? as usize;
                let mut k = Vec::new();
                let mut v = Vec::new();
                (&mut self.r).take(klen as u64).read_to_end(&mut k)?;
                (&mut self.r).take(vlen as u64).read_to_end(&mut v)?;
                if k.len() != klen || v.len() != vlen {
                    return Err(corrupt("a record is truncated"));
                }
                crc.update(&k);
                crc.update(&v);
                self.check_crc(crc)?;
                // Every backend value carries its own crc frame; check it too.
                keys::unframe(&format!("snapshot record {}", self.count), &v)?;
                self.count += 1;
                Ok(Some((k, v)))
            }
            TAG_END => {
                let mut b = [0u8; 8];
                self.r
                    .read_exact(&mut b)
                    .map_err(|_| corrupt("the end record is truncated"))?;
                crc.update(&b);
                self.check_crc(crc)?;
                let n = u64::from_be_bytes(b);
                if n != self.count {
                    return Err(corrupt(&format!(
                        "it ends after {} records but says {n}",
                        self.count
                    )));
                }
                let mut rest = Vec::new();
                self.r.read_to_end(&mut rest)?;
                if rest.len() >= ALIGN || rest.iter().any(|&b| b != 0) {
                    return Err(corrupt("unexpected data after the end record"));
                }
                self.done = true;
                Ok(None)
            }
            t => Err(corrupt(&format!(
                "unknown record tag {t:#04x} after {} records",
                self.count
            ))),
        }
    }
}

fn corrupt(why: &str) -> Error {
    Error::InvalidArgument(format!(
        "snapshot file is not a valid keelson snapshot: {why}"
    ))
}

/// Where and as whom a snapshot is restored (`keelson store snapshot restore`'s flags).
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub data_dir: PathBuf,
    pub name: String,
    pub initial_cluster: Vec<(String, String)>,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: Vec<String>,
}

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    pub records: u64,
    pub revision: i64,
    /// -1 if history was never compacted.
    pub compact_revision: i64,
    pub member_id: u64,
    pub cluster_id: u64,
}

/// Verifies `file` and builds a new data dir from it. See the module docs.
pub fn restore_snapshot(file: &Path, opts: &RestoreOptions) -> Result<RestoreSummary> {
    let cfg = StoreConfig {
        name: opts.name.clone(),
        initial_cluster: opts.initial_cluster.clone(),
        initial_cluster_token: opts.initial_cluster_token.clone(),
        initial_advertise_peer_urls: opts.initial_advertise_peer_urls.clone(),
        ..StoreConfig::default()
    };
    if !cfg.initial_cluster.is_empty() && !cfg.initial_cluster.iter().any(|(n, _)| *n == cfg.name) {
        return Err(Error::InvalidArgument(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            cfg.name
        )));
    }
    let dir = &opts.data_dir;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(Error::InvalidArgument(format!(
            "data-dir {:?} exists and is not empty",
            dir.display()
        )));
    }
    let body_len = verify_digest(file)?;

    let staging = dir.join("member.restoring");
    let result = build(file, body_len, &staging.join("snap").join("db"));
    let (records, revision, compact_revision) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    std::fs::rename(&staging, dir.join("member"))?;
    let (member_id, cluster_id) = crate::cluster::ids(&cfg);
    Ok(RestoreSummary {
        records,
        revision,
        compact_revision,
        member_id,
        cluster_id,
    })
}

/// Checks the trailer against the body; returns the body's length.
fn verify_digest(file: &Path) -> Result<u64> {
    let f = File::open(file)?;
    let len = f.metadata()?.len();
    if len < (HEADER_LEN + SHA_LEN) as u64 || !(len - SHA_LEN as u64).is_multiple_of(ALIGN as u64) {
        return Err(corrupt(&format!(
            "its size {len} is not a whole number of {ALIGN}-byte blocks plus a {SHA_LEN}-byte sha256"
        )));
    }
    let body_len = len - SHA_LEN as u64;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut h = Sha256::new();
    std::io::copy(&mut (&mut r).take(body_len), &mut HashWriter(&mut h))?;
    let mut want = [0u8; SHA_LEN];
    r.read_exact(&mut want)?;
    let got: [u8; SHA_LEN] = h.finalize().into();
    if want != got {
        return Err(corrupt(&format!(
            "expected sha256 {}, got {}",
            hex(&want),
            hex(&got)
        )));
    }
    Ok(body_len)
}

/// Writes the records into a new backend at `db` and loads it back; returns (records,
/// revision, compacted revision).
fn build(file: &Path, body_len: u64, db: &Path) -> Result<(u64, i64, i64)> {
    let backend = SledBackend::open(db)?;
    let f = File::open(file)?;
    let mut records = RecordReader::new(BufReader::with_capacity(1 << 20, f).take(body_len))?;
    let applied = keys::meta_key(keys::META_CONSISTENT_INDEX);
    let raft_applied = keys::meta_key(keys::META_RAFT_APPLIED);
    let mut batch = WriteBatch::default();
    while let Some((k, v)) = records.next_pair()? {
        // The restored member starts a new log, so it has applied nothing of it yet.
        if k == applied || k == raft_applied {
            continue;
        }
        batch.put(k, v);
        if batch.len() >= RESTORE_BATCH {
            backend.write(std::mem::take(&mut batch))?;
        }
    }
    backend.write(batch)?;
    backend.flush()?;
    let mvcc = Mvcc::open(&backend)?;
    Lessor::open(&backend, 1)?;
    Alarms::open(&backend)?;
    let st = mvcc.state.read();
    Ok((records.count, st.current, st.compacted))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes a snapshot of `core` to `path` (body then sha256).
#[cfg(test)]
pub(crate) fn save(core: &Core, path: &Path) -> Result<()> {
    let body = encode(&consistent_pairs(core)?);
    let mut w = std::io::BufWriter::new(File::create(path)?);
    w.write_all(&body)?;
    w.write_all(&digest(&body))?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests;
