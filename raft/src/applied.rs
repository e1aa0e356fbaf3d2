//! [`AppliedIndex`]: this member's last applied log index, and the requests waiting for it.
//!
//! A write forwarded to the leader, or a linearizable read given the leader's read index, must
//! wait until this member has applied a given index before it answers. openraft's metrics can
//! be waited on for that, but every metrics change wakes every waiter; with hundreds of
//! requests in flight that is most of a follower's work. Here waiters sit in a map ordered by
//! the index they need, and each applied batch wakes exactly the ones it satisfies.
//!
//! Invariants:
//! - The index only grows: the state machine advances it after a batch is applied (before the
//!   batch's clients are answered) and after a snapshot is installed.
//! - A waiter registered for an index at or below the current one returns at once; every other
//!   one is woken by the first advance that reaches it, or fails when the member stops (the
//!   map is dropped with the state machine).

use std::collections::BTreeMap;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// See the module docs. Shared between the state machine and the proposer.
#[derive(Default)]
pub(crate) struct AppliedIndex {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    applied: u64,
    waiting: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
}

/// The member stopped before the index was applied.
#[derive(Debug)]
pub(crate) struct Stopped;

impl AppliedIndex {
    /// Records that everything up to `index` is applied and wakes whoever waited for it.
    pub(crate) fn advance(&self, index: u64) {
        let woken = {
            let mut st = self.state.lock();
            if index <= st.applied {
                return;
            }
            st.applied = index;
            let later = st.waiting.split_off(&(index + 1));
            std::mem::replace(&mut st.waiting, later)
        };
        for tx in woken.into_values().flatten() {
            let _ = tx.send(());
        }
    }

    /// Resolves once `index` is applied here.
    pub(crate) async fn wait(&self, index: u64) -> Result<(), Stopped> {
        let rx = {
            let mut st = self.state.lock();
            if index <= st.applied {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            st.waiting.entry(index).or_default().push(tx);
            rx
        };
        rx.await.map_err(|_| Stopped)
    }

    /// Fails every waiter (the member stops).
    pub(crate) fn stop(&self) {
        self.state.lock().waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn waiters_wake_exactly_when_their_index_is_applied() {
        let applied = Arc::new(AppliedIndex::default());
        applied.advance(3);
        applied.wait(2).await.unwrap();
        applied.wait(3).await.unwrap();

        let spawn = |i| {
            let applied = Arc::clone(&applied);
            tokio::spawn(async move { applied.wait(i).await })
        };
        let (w5, w7, w9) = (spawn(5), spawn(7), spawn(9));
        // Registered before advancing: wait until all three sit in the map.
        while applied.state.lock().waiting.len() < 3 {
            tokio::task::yield_now().await;
        }
        applied.advance(7);
        w5.await.unwrap().unwrap();
        w7.await.unwrap().unwrap();
        assert!(!w9.is_finished());
        assert_eq!(applied.state.lock().waiting.len(), 1);
        applied.advance(6); // never backwards
        assert_eq!(applied.state.lock().applied, 7);
        applied.stop();
        assert!(
            w9.await.unwrap().is_err(),
            "a stopped member fails its waiters"
        );
    }
}
