//! `watch-catchup`: history first, then watchers from the old revision; time to catch up.
//!
//! `--history` puts are written (unwatched) to the key set; then `--watchers` watchers are
//! created with `start_revision` = the first of those puts, as a Kubernetes apiserver does
//! after a restart or a watch-cache miss. The clock runs from the first create request until
//! every watcher has every historical event — the figure is catch-up time and events/s —
//! and delivery is checked for completeness exactly as in `watch`.

use std::time::Instant;

use clap::Args;

use super::watch::{put_phase, WatchSet};
use crate::check::Expectation;
use crate::cli::Target;
use crate::conn::Conns;
use crate::stats::{rate, Report};
use crate::watchers::Watchers;

#[derive(Args, Debug, Clone)]
pub struct CatchupArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub set: WatchSet,
    /// Events written before the watchers start.
    #[arg(long, default_value_t = 10_000)]
    pub history: u64,
}

pub(crate) async fn run(a: &CatchupArgs) -> anyhow::Result<Report> {
    let conns = Conns::open(&a.target).await?;
    let keys = a.set.key_space()?;
    let (puts, log) = put_phase("history", &conns, &a.set, &keys, a.history, 0.0).await;
    let expect = Expectation::new(&log);
    let from = log.iter().map(|&(_, rev)| rev).min().unwrap_or(0);

    let start = Instant::now();
    let watchers = Watchers::start(&conns, a.set.streams, a.set.specs(&keys, from), false).await?;
    let want = watchers.expected_events(&expect);
    let last = watchers.wait_for(want, a.set.drain_timeout).await;
    let took = last.unwrap_or_else(Instant::now).duration_since(start);
    let got = watchers.stop().await;
    let delivery = got.check(&expect);

    let mut r = Report {
        elapsed_s: took.as_secs_f64(),
        ..Report::default()
    };
    r.add_ops(&puts.rec, puts.elapsed);
    r.figure("catchup_s", took.as_secs_f64());
    r.figure("events_per_s", rate(delivery.delivered, took));
    delivery.report_into(&mut r);
    for p in got.problems {
        r.problem(p);
    }
    Ok(r)
}
