//! The backend: an ordered, durable byte keyspace, shaped on etcd's `backend.Backend` and toydb's
//! `Engine`. Two implementations run the same tests: [`SledBackend`] (on disk) and
//! [`MemBackend`] (tests, simulation, benchmarks).
//!
//! Contract every implementation keeps:
//! - [`Backend::write`] applies a [`WriteBatch`] atomically: after a crash either all of the
//!   batch is visible or none of it.
//! - Writes are only guaranteed durable after [`Backend::flush`] returns `Ok`. Nothing may be
//!   acknowledged to a client before that.
//! - Scans return keys in ascending byte order.
//!
//! The backend knows nothing of revisions, checksums or key spaces: `keys.rs` owns the layout
//! and the crc32 framing, so both implementations store exactly the same bytes.

mod memory;
mod sled_backend;

pub use memory::MemBackend;
pub use sled_backend::SledBackend;

use crate::error::Result;

/// One key/value pair as stored.
pub type Pair = (Vec<u8>, Vec<u8>);

/// A set of puts and deletes applied atomically, in order.
#[derive(Default, Debug, Clone)]
pub struct WriteBatch {
    pub(crate) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Per op: a put of a key known not to exist yet ([`WriteBatch::put_fresh`]).
    fresh: Vec<bool>,
}

impl WriteBatch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
        self.fresh.push(false);
    }
    /// A put of a key the caller knows is not stored yet (a new revision record): a backend
    /// that accounts replaced bytes can skip looking it up, which keeps a read off the write
    /// path of every revision.
    pub fn put_fresh(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
        self.fresh.push(true);
    }
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
        self.fresh.push(false);
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// The ops in order, each with whether it is a fresh put.
    pub(crate) fn into_ops(self) -> impl Iterator<Item = ((Vec<u8>, Option<Vec<u8>>), bool)> {
        self.ops.into_iter().zip(self.fresh)
    }
}

/// An ordered durable keyspace. See the module docs for the contract.
pub trait Backend: Send + Sync + 'static {
    /// The value stored at `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// All pairs with `start <= key < end`, ascending.
    fn scan(&self, start: &[u8], end: &[u8]) -> Box<dyn Iterator<Item = Result<Pair>> + Send + '_>;

    /// Applies `batch` atomically. Not durable until [`Backend::flush`].
    fn write(&self, batch: WriteBatch) -> Result<()>;

    /// Makes every earlier write durable (fsync).
    fn flush(&self) -> Result<()>;

    /// Bytes the backend occupies (etcd's `dbSize`).
    fn size(&self) -> u64;

    /// Bytes of live data (etcd's `dbSizeInUse`).
    fn size_in_use(&self) -> u64;

    /// Reclaims space freed by deletions. May block I/O while it runs, as etcd's does.
    fn defragment(&self) -> Result<()>;
}

/// Opens sled in `dir`, waiting (bounded) for a previous handle's lock to go: sled releases
/// its directory lock only when its last background job lets go of the database, which can be
/// a moment after the last handle is dropped. A restarted process never sees this; an
/// in-process reopen in a test does, and there is no event to await.
#[cfg(test)]
pub(crate) fn open_sled_retrying(dir: &std::path::Path) -> Result<SledBackend> {
    use crate::error::Error;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledBackend::open(dir) {
            Err(Error::Io(m))
                if m.contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            r => return r,
        }
    }
}

/// Which backend a test runs on; tests of the layers above run on both.
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Mem,
    Sled,
}

/// Where a test's data lives between reopens: the in-memory map itself, or sled's directory.
#[cfg(test)]
pub(crate) enum Disk {
    Mem(std::sync::Arc<MemBackend>),
    Sled(tempfile::TempDir),
}

#[cfg(test)]
impl Disk {
    /// An empty store of `kind`.
    pub(crate) fn new(kind: Kind) -> Disk {
        match kind {
            Kind::Mem => Disk::Mem(std::sync::Arc::new(MemBackend::default())),
            Kind::Sled => Disk::Sled(tempfile::tempdir().unwrap()),
        }
    }

    /// (Re)opens the backend over this data.
    pub(crate) fn open(&self) -> Result<std::sync::Arc<dyn Backend>> {
        Ok(match self {
            Disk::Mem(m) => m.clone(),
            Disk::Sled(d) => std::sync::Arc::new(open_sled_retrying(d.path())?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(b: &dyn Backend) {
        let mut batch = WriteBatch::default();
        batch.put(b"a".to_vec(), b"1".to_vec());
        batch.put(b"b".to_vec(), b"2".to_vec());
        batch.put(b"c".to_vec(), b"3".to_vec());
        b.write(batch).unwrap();
        b.flush().unwrap();
        assert_eq!(b.get(b"b").unwrap(), Some(b"2".to_vec()));
        let got: Vec<Pair> = b.scan(b"a", b"c").map(|r| r.unwrap()).collect();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
        let mut batch = WriteBatch::default();
        batch.delete(b"a".to_vec());
        batch.put(b"b".to_vec(), b"20".to_vec());
        b.write(batch).unwrap();
        assert_eq!(b.get(b"a").unwrap(), None);
        assert_eq!(b.get(b"b").unwrap(), Some(b"20".to_vec()));
        assert!(b.size() > 0 && b.size_in_use() > 0);
        b.defragment().unwrap();
        assert_eq!(b.get(b"c").unwrap(), Some(b"3".to_vec()));
    }

    #[test]
    fn memory_backend_contract() {
        exercise(&MemBackend::default());
    }

    #[test]
    fn sled_backend_contract_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = SledBackend::open(dir.path()).unwrap();
            exercise(&b);
        }
        let b = SledBackend::open(dir.path()).unwrap();
        assert_eq!(b.get(b"b").unwrap(), Some(b"20".to_vec()));
        assert_eq!(b.get(b"a").unwrap(), None);
    }
}
