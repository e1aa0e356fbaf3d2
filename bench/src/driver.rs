//! The closed-loop driver: N workers, one request in flight each, until a count or a deadline.
//!
//! A closed loop (each worker sends its next request only when the previous one is answered)
//! is what etcd's `benchmark` tool and most clients do; throughput is then what the server
//! sustains at that concurrency, and latency is not inflated by a queue in the client.
//!
//! Work is handed out by ticket: with `--total`, a shared counter hands out sequence numbers
//! 0..total, so the count is exact however the workers race; with `--duration`, every worker
//! stops at the same deadline. A worker that fails 100 times in a row stops (the server is
//! gone or refusing everything; the report already says so), rather than spinning on errors.
//!
//! Progress goes to a bar on stderr, which indicatif hides when stderr is not a terminal.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::Load;
use crate::stats::Recorder;

/// How long a run goes on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Limit {
    Total(u64),
    Duration(Duration),
}

impl Limit {
    pub(crate) fn from_load(load: &Load) -> Limit {
        match (load.total, load.duration) {
            (_, Some(d)) => Limit::Duration(d),
            (Some(n), None) => Limit::Total(n),
            (None, None) => Limit::Total(10_000),
        }
    }
}

/// One client of a closed loop.
pub(crate) trait Worker: Send + 'static {
    /// Performs operation number `seq`, recording its latencies into `rec`. An `Err` is a
    /// failed request; the driver records it.
    fn op(
        &mut self,
        seq: u64,
        rec: &mut Recorder,
    ) -> impl Future<Output = Result<(), Failed>> + Send;
}

/// A failed request: the operation's name and what the server said.
#[derive(Debug)]
pub(crate) struct Failed(pub(crate) &'static str, pub(crate) tonic::Status);

/// `.map_err(fail("put"))?` names the operation a request belonged to.
pub(crate) fn fail(op: &'static str) -> impl Fn(tonic::Status) -> Failed {
    move |s| Failed(op, s)
}

/// What a closed loop gives back: the workers (with whatever they collected), the merged
/// recorder, and the wall time of the loop.
pub(crate) struct Run<W> {
    pub(crate) workers: Vec<W>,
    pub(crate) rec: Recorder,
    pub(crate) elapsed: Duration,
}

/// Runs `workers` in a closed loop until `limit`; `label` names the progress bar.
pub(crate) async fn closed_loop<W: Worker>(label: &str, workers: Vec<W>, limit: Limit) -> Run<W> {
    const MAX_CONSECUTIVE_ERRORS: u32 = 100;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let progress = Progress::start(label, limit, done.clone());
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let (next, done) = (next.clone(), done.clone());
            tokio::spawn(async move {
                let mut rec = Recorder::default();
                let mut consecutive = 0;
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let more = match limit {
                        Limit::Total(n) => seq < n,
                        Limit::Duration(d) => start.elapsed() < d,
                    };
                    if !more {
                        break;
                    }
                    match w.op(seq, &mut rec).await {
                        Ok(()) => consecutive = 0,
                        Err(Failed(op, status)) => {
                            rec.error(op, status.message());
                            consecutive += 1;
                            if consecutive >= MAX_CONSECUTIVE_ERRORS {
                                break;
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                (w, rec)
            })
        })
        .collect();
    let mut run = Run {
        workers: Vec::with_capacity(tasks.len()),
        rec: Recorder::default(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (w, rec) = t.await.expect("a worker panicked");
        run.workers.push(w);
        run.rec.merge(rec);
    }
    run.elapsed = start.elapsed();
    progress.finish();
    run
}

/// A progress bar fed by a counter, redrawn by a ticker task until finished.
pub(crate) struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Shows `done` against `limit` (a count, or the time left of a duration).
    pub(crate) fn start(label: &str, limit: Limit, done: Arc<AtomicU64>) -> Progress {
        let (len, unit) = match limit {
            Limit::Total(n) => (n, "ops"),
            Limit::Duration(d) => (d.as_millis() as u64, "ms"),
        };
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{label:>14} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} {{msg}}"
            ))
            .expect("a valid template"),
        );
        let b = bar.clone();
        let start = Instant::now();
        let ticker = tokio::spawn(async move {
            loop {
                let n = done.load(Ordering::Relaxed);
                match limit {
                    Limit::Total(_) => b.set_position(n),
                    Limit::Duration(_) => {
                        b.set_position(start.elapsed().as_millis() as u64);
                        b.set_message(format!("({n} ops)"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Progress { bar, ticker }
    }

    pub(crate) fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// Runs `f(i)` for i in 0..n with at most `parallel` at once; for setup phases (preloads,
/// lease grants) that are not measured.
pub(crate) async fn for_each_parallel<F, Fut, T>(
    n: usize,
    parallel: usize,
    f: F,
) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    use futures::stream::{StreamExt, TryStreamExt};
    futures::stream::iter(0..n)
        .map(f)
        .buffered(parallel.max(1))
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting {
        seqs: Vec<u64>,
        fail_every: u64,
    }

    impl Worker for Counting {
        async fn op(&mut self, seq: u64, rec: &mut Recorder) -> Result<(), Failed> {
            tokio::task::yield_now().await;
            self.seqs.push(seq);
            if self.fail_every > 0 && seq.is_multiple_of(self.fail_every) {
                return Err(Failed("op", tonic::Status::unavailable("down")));
            }
            rec.record("op", Duration::from_micros(seq + 1));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_total_is_split_exactly_among_workers() {
        let workers = (0..7)
            .map(|_| Counting {
                seqs: vec![],
                fail_every: 10,
            })
            .collect();
        let run = closed_loop("test", workers, Limit::Total(1000)).await;
        let mut all: Vec<u64> = run.workers.iter().flat_map(|w| w.seqs.clone()).collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..1000).collect::<Vec<_>>(),
            "every ticket exactly once"
        );
        let s = run.rec.op_stats("op", run.elapsed);
        assert_eq!(s.count, 900);
        assert_eq!(s.errors, 100);
    }

    #[tokio::test]
    async fn a_worker_that_only_fails_gives_up() {
        let run = closed_loop(
            "test",
            vec![Counting {
                seqs: vec![],
                fail_every: 1,
            }],
            Limit::Total(10_000),
        )
        .await;
        assert_eq!(run.workers[0].seqs.len(), 100);
    }
}
