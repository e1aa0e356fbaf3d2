//! An in-memory [`Backend`]: a `BTreeMap` behind a lock. Durable for the life of the process
//! only; used by tests, simulations and benchmarks.

use std::collections::BTreeMap;

use parking_lot::RwLock;

use super::{Backend, Pair, WriteBatch};
use crate::error::Result;

#[derive(Default)]
pub struct MemBackend {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Backend for MemBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.read().get(key).cloned())
    }

    fn scan(&self, start: &[u8], end: &[u8]) -> Box<dyn Iterator<Item = Result<Pair>> + Send + '_> {
        if start >= end {
            return Box::new(std::iter::empty());
        }
        // Copy out in pages so no lock is held while the caller iterates.
        let end = end.to_vec();
        let mut next = Some(start.to_vec());
        let mut page: std::vec::IntoIter<Pair> = Vec::new().into_iter();
        Box::new(std::iter::from_fn(move || loop {
            if let Some(p) = page.next() {
                return Some(Ok(p));
            }
            let from = next.take()?;
            let map = self.map.read();
            let items: Vec<Pair> = map
                .range(from..end.clone())
                .take(1024)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if items.len() == 1024 {
                let mut after = items[1023].0.clone();
                after.push(0);
                next = Some(after);
            }
            if items.is_empty() {
                return None;
            }
            page = items.into_iter();
        }))
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut map = self.map.write();
        for (k, v) in batch.ops {
            match v {
                Some(v) => {
                    map.insert(k, v);
                }
                None => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size_in_use()
    }

    fn size_in_use(&self) -> u64 {
        self.map
            .read()
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }

    fn defragment(&self) -> Result<()> {
        Ok(())
    }
}
