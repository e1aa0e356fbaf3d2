//! Batching linearizable reads: many readers share one read-index round.
//!
//! A read-index round costs a quorum round on the leader, plus a peer call when this member
//! does not lead. As etcd's `linearizableReadLoop` does, concurrent readers share rounds: a
//! reader joins the *next* round, which starts as soon as no round is in flight. Readers that
//! arrive while a round is in flight cannot use its answer (the round may have been confirmed
//! before they arrived, so a write acknowledged just before them could be missing), so they
//! wait for the round after it, which they share with everyone else who arrived meanwhile. So
//! at most one round per member is in flight, and each reader waits at most for the end of the
//! round in flight and one more.
//!
//! The rounds run in a task of their own, so a reader that gives up (its client went away)
//! never cancels a round others are waiting for; the task stops when no reader is waiting.

use std::future::Future;
use std::sync::Arc;

use keelson_store::Error;
use parking_lot::Mutex;
use tokio::sync::watch;

/// The answer of one round: the read index, or why there is none.
type RoundResult = Option<Result<u64, Error>>;

/// Shared read-index rounds. See the module docs.
#[derive(Default)]
pub(crate) struct ReadRounds {
    state: Mutex<Rounds>,
}

#[derive(Default)]
struct Rounds {
    /// Whether the task running rounds is alive.
    running: bool,
    /// The readers waiting for the round that has not started yet.
    next: Option<watch::Sender<RoundResult>>,
}

impl ReadRounds {
    /// Joins the next round and returns its read index. `round` runs one round; it is called
    /// from the rounds task, once per round.
    pub(crate) async fn join<F, Fut>(self: &Arc<Self>, round: F) -> Result<u64, Error>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, Error>> + Send + 'static,
    {
        let mut rx = {
            let mut st = self.state.lock();
            let rx = st
                .next
                .get_or_insert_with(|| watch::channel(None).0)
                .subscribe();
            if !st.running {
                st.running = true;
                tokio::spawn(Arc::clone(self).run(round));
            }
            rx
        };
        let answer = rx
            .wait_for(|r| r.is_some())
            .await
            .map_err(|_| Error::Stopped)?;
        answer.clone().unwrap_or(Err(Error::Stopped))
    }

    /// Runs rounds while readers wait for one.
    async fn run<F, Fut>(self: Arc<Self>, round: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<u64, Error>>,
    {
        loop {
            let waiting = {
                let mut st = self.state.lock();
                match st.next.take() {
                    Some(tx) => tx,
                    None => {
                        st.running = false;
                        return;
                    }
                }
            };
            // Every reader gave up already: skip the round.
            if waiting.receiver_count() == 0 {
                continue;
            }
            let _ = waiting.send(Some(round().await));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::sync::Semaphore;

    /// Readers that arrive while a round is in flight share the next round, not that one.
    #[tokio::test]
    async fn readers_arriving_during_a_round_share_the_next() {
        let rounds = Arc::new(ReadRounds::default());
        let started = Arc::new(AtomicU64::new(0));
        // Each round waits for a permit, so the test decides when a round ends.
        let gate = Arc::new(Semaphore::new(0));
        let round = {
            let (started, gate) = (started.clone(), gate.clone());
            move || {
                let (started, gate) = (started.clone(), gate.clone());
                async move {
                    let n = started.fetch_add(1, Ordering::SeqCst) + 1;
                    gate.acquire().await.unwrap().forget();
                    Ok(n * 100)
                }
            }
        };
        let first = tokio::spawn({
            let (rounds, round) = (rounds.clone(), round.clone());
            async move { rounds.join(round).await }
        });
        while started.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        // Round 1 is in flight; these ten must wait for round 2.
        let later: Vec<_> = (0..10)
            .map(|_| {
                let (rounds, round) = (rounds.clone(), round.clone());
                tokio::spawn(async move { rounds.join(round).await })
            })
            .collect();
        let waiting_for_next =
            |r: &ReadRounds| r.state.lock().next.as_ref().map(|tx| tx.receiver_count());
        while waiting_for_next(&rounds) != Some(10) {
            tokio::task::yield_now().await;
        }
        assert_eq!(started.load(Ordering::SeqCst), 1, "one round at a time");
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Ok(100));
        gate.add_permits(1);
        for r in later {
            assert_eq!(r.await.unwrap(), Ok(200), "the later readers share round 2");
        }
        assert_eq!(started.load(Ordering::SeqCst), 2);
        // With nobody waiting the task stops; the next reader starts a new one.
        gate.add_permits(1);
        assert_eq!(rounds.join(round).await, Ok(300));
    }
}
