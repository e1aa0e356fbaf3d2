//! The command line: one subcommand per workload, plus `compare` and `plot`.
//!
//! Flags shared by every workload live in [`Target`] (where to connect, how to print) and
//! [`Load`] (how much load, for how long); each workload adds its own in its module. `compare`
//! reuses this very parser for the workload command lines it is given, so a workload means
//! the same thing whether it is run alone or inside a comparison.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::compare::CompareArgs;
use crate::conn;
use crate::stats::Report;
use crate::workloads::{
    catchup::CatchupArgs, k8s::K8sArgs, lease::LeaseArgs, put::PutArgs, range::RangeArgs,
    txn_cas::CasArgs, watch::WatchArgs, watch_idle::IdleArgs,
};

#[derive(Parser, Debug)]
#[command(
    name = "keelson-bench",
    version,
    about = "An etcd v3 load tool: measures real etcd and Keelson with the same client"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    #[command(flatten)]
    Workload(Workload),
    /// Start a real etcd and a keelson store, run workloads against both in alternation and
    /// print the Keelson/etcd ratio of every figure.
    Compare(CompareArgs),
    /// Draw watch fan-out throughput and p99 latency against watcher count, etcd and Keelson
    /// on the same axes, from the JSON lines of `compare` runs, as an SVG.
    Plot(crate::plot::PlotArgs),
    /// Pod creates, lists, a watch fan-out and updates against a running keelson apiserver
    /// (over HTTPS, through curl).
    Apiserver(crate::apiserver::ApiserverArgs),
}

#[derive(Subcommand, Debug, Clone)]
pub enum Workload {
    /// Puts of random keys in a key space.
    Put(PutArgs),
    /// Ranges over preloaded keys: single keys or a prefix, linearizable or serializable.
    Range(RangeArgs),
    /// Compare-and-swap increments of a few hot counters (Txn on mod_revision).
    TxnCas(CasArgs),
    /// Many watchers, then puts: delivery rate, put→event latency, and a completeness check.
    Watch(WatchArgs),
    /// Idle watchers: how fast the server accepts them, its memory per watcher, and liveness.
    WatchIdle(IdleArgs),
    /// Write history first, then watchers from that old revision: time to catch up.
    WatchCatchup(CatchupArgs),
    /// Leases kept alive over keep-alive streams.
    LeaseKeepalive(LeaseArgs),
    /// A Kubernetes-shaped mix on /registry/pods/: creates, updates, gets, paged lists, watches.
    K8s(K8sArgs),
}

/// Where to connect and how to print.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// etcd v3 client endpoints, comma separated (host:port or http://host:port).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// gRPC connections, opened round-robin over the endpoints.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Print the report as one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How much load, for how long.
#[derive(Args, Debug, Clone)]
pub struct Load {
    /// Concurrent requests in flight (workers), spread over the connections.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Operations in all (the default is 10000 when neither --total nor --duration is given).
    #[arg(long, conflicts_with = "duration")]
    pub total: Option<u64>,
    /// Run for this long instead of a fixed count (e.g. 10s, 500ms, 2m).
    #[arg(long, value_parser = conn::parse_duration)]
    pub duration: Option<Duration>,
}

impl Workload {
    /// The subcommand name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put(_) => "put",
            Workload::Range(_) => "range",
            Workload::TxnCas(_) => "txn-cas",
            Workload::Watch(_) => "watch",
            Workload::WatchIdle(_) => "watch-idle",
            Workload::WatchCatchup(_) => "watch-catchup",
            Workload::LeaseKeepalive(_) => "lease-keepalive",
            Workload::K8s(_) => "k8s",
        }
    }

    pub fn target(&self) -> &Target {
        match self {
            Workload::Put(a) => &a.target,
            Workload::Range(a) => &a.target,
            Workload::TxnCas(a) => &a.target,
            Workload::Watch(a) => &a.target,
            Workload::WatchIdle(a) => &a.target,
            Workload::WatchCatchup(a) => &a.target,
            Workload::LeaseKeepalive(a) => &a.target,
            Workload::K8s(a) => &a.target,
        }
    }

    pub fn target_mut(&mut self) -> &mut Target {
        match self {
            Workload::Put(a) => &mut a.target,
            Workload::Range(a) => &mut a.target,
            Workload::TxnCas(a) => &mut a.target,
            Workload::Watch(a) => &mut a.target,
            Workload::WatchIdle(a) => &mut a.target,
            Workload::WatchCatchup(a) => &mut a.target,
            Workload::LeaseKeepalive(a) => &mut a.target,
            Workload::K8s(a) => &mut a.target,
        }
    }

    /// Whether every run needs servers of its own: a memory measurement must not inherit the
    /// heap of earlier runs (an allocator keeps freed pages, so growth would look smaller).
    pub fn fresh_server(&self) -> bool {
        matches!(self, Workload::WatchIdle(_))
    }

    /// Tells a workload that measures server memory which processes serve its endpoints
    /// (one pid per endpoint, in the same order); other workloads ignore it.
    pub fn set_server_pids(&mut self, pids: Vec<u32>) {
        if let Workload::WatchIdle(a) = self {
            a.server_pids = pids;
        }
    }

    /// Runs the workload once and returns its report (not printed).
    pub async fn run(&self) -> anyhow::Result<Report> {
        let mut report = match self {
            Workload::Put(a) => crate::workloads::put::run(a).await?,
            Workload::Range(a) => crate::workloads::range::run(a).await?,
            Workload::TxnCas(a) => crate::workloads::txn_cas::run(a).await?,
            Workload::Watch(a) => crate::workloads::watch::run(a).await?,
            Workload::WatchIdle(a) => crate::workloads::watch_idle::run(a).await?,
            Workload::WatchCatchup(a) => crate::workloads::catchup::run(a).await?,
            Workload::LeaseKeepalive(a) => crate::workloads::lease::run(a).await?,
            Workload::K8s(a) => crate::workloads::k8s::run(a).await?,
        };
        report.workload = self.name().to_string();
        report.finish();
        Ok(report)
    }
}

/// Parses one workload command line ("put --clients 10 --total 1000"), as `compare` takes them.
pub(crate) fn parse_workload(line: &str) -> anyhow::Result<Workload> {
    #[derive(Parser)]
    #[command(no_binary_name = true)]
    struct One {
        #[command(subcommand)]
        w: Workload,
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    Ok(One::try_parse_from(words)
        .map_err(|e| anyhow::anyhow!("workload {line:?}: {e}"))?
        .w)
}

/// Runs a parsed command line, printing what it produced; returns whether every check passed.
pub async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Workload(w) => {
            let report = w.run().await?;
            if w.target().json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(report.ok)
        }
        Command::Compare(args) => crate::compare::run(args).await,
        Command::Plot(args) => crate::plot::run(&args).map(|()| true),
        Command::Apiserver(args) => crate::apiserver::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_lines_parse_like_the_command_line() {
        let w = parse_workload("put --clients 7 --total 100 --key-size 16").unwrap();
        let Workload::Put(a) = &w else {
            panic!("not a put: {w:?}")
        };
        assert_eq!(
            (a.load.clients, a.load.total, a.key_size),
            (7, Some(100), 16)
        );
        assert_eq!(w.name(), "put");
        assert!(parse_workload("put --total 1 --duration 1s").is_err());
        assert!(parse_workload("nonsense").is_err());
    }
}
