//! The on-disk [`Backend`], on sled 0.34.
//!
//! Everything lives in sled's default tree, so one `apply_batch` is atomic across all key spaces
//! (sled batches are atomic per tree only). `flush` calls sled's `flush`, which fsyncs the whole
//! page cache; sled's own background flusher is turned off so that what is on disk only ever
//! moves forward at our explicit flushes.
//!
//! Size accounting: `size` is the space sled's files occupy on disk; `size_in_use` is the
//! logical bytes of keys and values, kept as a running total.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Backend, Pair, WriteBatch};
use crate::error::{Error, Result};

pub struct SledBackend {
    db: sled::Db,
    dir: PathBuf,
    in_use: AtomicU64,
    /// sled's file sizes as of the last flush: `size()` is asked on every write (quota), so it
    /// must not walk the directory each time.
    on_disk: AtomicU64,
}

impl SledBackend {
    /// Opens (or creates) the backend in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let mut in_use = 0u64;
        for item in db.iter() {
            let (k, v) = item?;
            in_use += (k.len() + v.len()) as u64;
        }
        let on_disk = db.size_on_disk().unwrap_or_else(|_| dir_size(dir));
        Ok(SledBackend {
            db,
            dir: dir.to_path_buf(),
            in_use: AtomicU64::new(in_use),
            on_disk: AtomicU64::new(on_disk),
        })
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, start: &[u8], end: &[u8]) -> Box<dyn Iterator<Item = Result<Pair>> + Send + '_> {
        if start >= end {
            return Box::new(std::iter::empty());
        }
        Box::new(self.db.range(start.to_vec()..end.to_vec()).map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(Error::from)
        }))
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut b = sled::Batch::default();
        let mut delta: i64 = 0;
        for ((k, v), fresh) in batch.into_ops() {
            // Keep the in-use total honest: subtract what a put replaces or a delete removes
            // (a fresh put replaces nothing, so it needs no lookup).
            if !fresh {
                if let Some(old) = self.db.get(&k)? {
                    delta -= (k.len() + old.len()) as i64;
                }
            }
            match v {
                Some(v) => {
                    delta += (k.len() + v.len()) as i64;
                    b.insert(k, v);
                }
                None => b.remove(k),
            }
        }
        self.db.apply_batch(b)?;
        if delta >= 0 {
            self.in_use.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.in_use
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        let on_disk = self
            .db
            .size_on_disk()
            .unwrap_or_else(|_| dir_size(&self.dir));
        self.on_disk.store(on_disk, Ordering::Relaxed);
        Ok(())
    }

    fn size(&self) -> u64 {
        // sled's files can lag the data it holds in memory; the space in use is a floor.
        self.on_disk.load(Ordering::Relaxed).max(self.size_in_use())
    }

    fn size_in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    fn defragment(&self) -> Result<()> {
        // sled reclaims space as it rewrites segments; a flush lets it do so now.
        self.db.flush()?;
        Ok(())
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
