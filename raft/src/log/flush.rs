//! Group fsync: one blocking thread at a time makes written batches durable and tells whoever
//! waits for them.
//!
//! Writers write a batch (`Wal::write`, sequence number `n`) and then wait for "durable up to
//! `n`" with [`Shared::when_durable`]. If no flush is running, one is started on tokio's blocking
//! pool; it takes the newest sync point (the highest batch written and the file holding it),
//! fsyncs that file, completes every waiter up to that point, and goes round again while more
//! waiters arrived meanwhile. So batches written during an fsync share the next one, and the
//! async executor never blocks on the disk.
//!
//! An fsync error is final: after a failed fsync Linux may have dropped the dirty pages, so a
//! later successful fsync would prove nothing. Every waiter then fails, and so does every later
//! write; openraft stops the member. The same holds for a failed write (a partial batch must
//! stay the last thing in the file, where recovery treats it as a torn tail).
//!
//! Waiters are completed in sequence order and under the lock, so openraft sees its flush
//! notifications in the order it issued the writes.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use openraft::storage::IOFlushed;

use super::Shared;
use crate::types::TypeConfig;

#[derive(Default)]
pub(super) struct FlushState {
    /// Every batch up to this sequence number is durable.
    synced: u64,
    /// A flush thread is running and will look at `waiting` again before it exits.
    pub(super) running: bool,
    /// Why the log stopped accepting writes, once it has.
    failed: Option<String>,
    /// fsyncs done so far (each may cover many batches).
    fsyncs: u64,
    waiting: VecDeque<(u64, IOFlushed<TypeConfig>)>,
}

impl Shared {
    /// Completes `done` once batch `seq` is durable, or with an error if the log has failed.
    pub(super) fn when_durable(self: &Arc<Self>, seq: u64, done: IOFlushed<TypeConfig>) {
        let mut st = self.flush.lock();
        if let Some(why) = &st.failed {
            done.io_completed(Err(failed(why)));
        } else if seq <= st.synced {
            done.io_completed(Ok(()));
        } else {
            st.waiting.push_back((seq, done));
            if !st.running {
                st.running = true;
                let me = Arc::clone(self);
                tokio::task::spawn_blocking(move || me.flush_loop());
            }
        }
    }

    /// Fails now if the log has already failed.
    pub(super) fn check(&self) -> io::Result<()> {
        match &self.flush.lock().failed {
            Some(why) => Err(failed(why)),
            None => Ok(()),
        }
    }

    /// Stops the log for good after a write or fsync error, failing everyone waiting.
    pub(super) fn fail(&self, e: &io::Error) {
        let mut st = self.flush.lock();
        tracing::error!("raft log failed, no further writes: {e}");
        if st.failed.is_none() {
            st.failed = Some(e.to_string());
        }
        let why = st.failed.clone().unwrap_or_default();
        for (_, done) in st.waiting.drain(..) {
            done.io_completed(Err(failed(&why)));
        }
    }

    /// fsyncs done so far.
    #[cfg(test)]
    pub(super) fn fsyncs(&self) -> u64 {
        self.flush.lock().fsyncs
    }

    /// The flush thread's body: fsync, complete, repeat while anyone waits.
    pub(super) fn flush_loop(&self) {
        loop {
            let (target, file) = self.wal.lock().sync_point();
            let result = file.sync_data();
            if let Err(e) = &result {
                self.fail(e);
            }
            let mut st = self.flush.lock();
            st.fsyncs += 1;
            if result.is_ok() {
                st.synced = st.synced.max(target);
                while st.waiting.front().is_some_and(|(seq, _)| *seq <= target) {
                    if let Some((_, done)) = st.waiting.pop_front() {
                        done.io_completed(Ok(()));
                    }
                }
            }
            if st.waiting.is_empty() || st.failed.is_some() {
                st.running = false;
                return;
            }
        }
    }
}

fn failed(why: &str) -> io::Error {
    io::Error::other(format!("raft log stopped after an I/O error: {why}"))
}
