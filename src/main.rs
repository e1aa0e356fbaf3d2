//! `keelson`: the one CLI. It parses flags and wires the crates together; nothing else.
//!
//! `keelson store` takes etcd's own flag names and `ETCD_*` environment variables, so an
//! etcd member's command line or unit file works unchanged; `keelson apiserver` takes
//! kube-apiserver's. `keelson up` (`up.rs`) runs one or three members in one process on
//! 127.0.0.1, each exactly as `keelson store` with the flags it derives, and the apiserver on
//! them. All stop on Ctrl-C (SIGINT) or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use keelson_store::{CompactionMode, Store, StoreConfig};

mod up;

/// mimalloc rather than glibc's malloc: see the note on the dependency in Cargo.toml.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keelson",
    version,
    about = "A Raft-replicated etcd v3 store with a Kubernetes apiserver"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a store member (etcd v3 API), with etcd's flags.
    Store(Box<StoreArgs>),
    /// Run a local cluster in this one process, on 127.0.0.1: 1 or 3 store members and the
    /// apiserver on them.
    Up(up::UpArgs),
    /// Run the Kubernetes API server on an etcd v3 API (`keelson store` or etcd).
    Apiserver(ApiserverArgs),
}

/// `keelson apiserver`: kube-apiserver's flag names and defaults.
#[derive(Args)]
struct ApiserverArgs {
    /// etcd v3 endpoints to store objects in.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    etcd_servers: Vec<String>,
    /// The HTTPS port.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: std::net::IpAddr,
    /// Where the certificates and admin.kubeconfig are kept.
    #[arg(long, default_value = "./keelson-apiserver")]
    data_dir: PathBuf,
    /// The interval of compaction requests (a Go duration: 5m0s, 30s, 500ms). If 0, the
    /// compaction request from the apiserver is disabled.
    #[arg(long, default_value = "5m0s", value_parser = parse_go_duration)]
    etcd_compaction_interval: Duration,
    /// If set, any request presenting a client certificate signed by one of the authorities
    /// in the client-ca-file is authenticated with an identity corresponding to the
    /// CommonName of the client certificate (default: the CA generated in --data-dir).
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// If set, the file that will be used to secure the secure port of the API server via
    /// token authentication (CSV: token,user,uid,"group1,group2").
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Enables anonymous requests to the secure port of the API server. Requests that are not
    /// rejected by another authentication method are treated as anonymous requests
    /// (system:anonymous, group system:unauthenticated). Off by default here (upstream: on);
    /// /healthz, /livez, /readyz and /version answer anonymous requests either way.
    #[arg(long, default_value = "false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_go_bool)]
    anonymous_auth: bool,
}

/// A Go boolean flag value (`strconv.ParseBool`): 1, t, T, TRUE, true, True, 0, f, F, FALSE,
/// false, False.
fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {s:?}")),
    }
}

/// A Go `time.Duration` string as kube-apiserver's flags take it: `0`, or a sequence of
/// decimal numbers each with a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), as in `1h30m`
/// or `1.5s`. Negative durations are refused.
fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (examples: 5m0s, 30s, 500ms, 0)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += number * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct StoreArgs {
    #[command(subcommand)]
    cmd: Option<StoreCmd>,
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    name: String,
    /// Path to the data directory (default: NAME.etcd).
    #[arg(long, env = "ETCD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379",
        value_delimiter = ','
    )]
    listen_client_urls: Vec<String>,
    /// Client URLs to advertise to the cluster.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379",
        value_delimiter = ','
    )]
    advertise_client_urls: Vec<String>,
    /// URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    listen_peer_urls: Vec<String>,
    /// This member's peer URLs to advertise to the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration: name=peerURL,...
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    initial_cluster_state: String,
    /// Initial cluster token.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    initial_cluster_token: String,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1572864)]
    max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,
    /// Raise alarms when backend size exceeds the given quota (0 = default 2 GiB).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    quota_backend_bytes: u64,
    /// Interpret auto-compaction-retention as 'periodic' or 'revision'.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    auto_compaction_mode: String,
    /// Auto compaction retention (0 = off): hours or a duration in periodic mode, revisions in revision mode.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    auto_compaction_retention: String,
    /// URLs to listen on for the metrics and health endpoints.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", value_delimiter = ',')]
    listen_metrics_urls: Vec<String>,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100000)]
    snapshot_count: u64,
    /// Serve linearizable reads on the leader from its leader lease instead of a quorum round
    /// (faster; assumes clocks run at about the same rate on every member).
    #[arg(long, env = "ETCD_EXPERIMENTAL_LEASE_READ")]
    experimental_lease_read: bool,
    /// Check data corruption with the peers' HashKV before serving (a member with data).
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK")]
    experimental_initial_corrupt_check: bool,
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Offline snapshot tools.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Build a new data dir from a snapshot file (from `etcdctl snapshot save` against keelson).
    Restore(RestoreArgs),
}

/// `etcdctl snapshot restore`'s flags, with its defaults.
#[derive(Args)]
struct RestoreArgs {
    /// The snapshot file.
    file: PathBuf,
    /// The data dir to create (must not exist or be empty).
    #[arg(long)]
    data_dir: PathBuf,
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Initial cluster configuration: name=peerURL,...
    #[arg(long, default_value = "default=http://localhost:2380")]
    initial_cluster: String,
    /// Initial cluster token.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// This member's peer URLs to advertise to the cluster.
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
}

impl RestoreArgs {
    fn run(self) -> anyhow::Result<()> {
        let opts = keelson_store::RestoreOptions {
            data_dir: self.data_dir,
            name: self.name,
            initial_cluster: parse_initial_cluster(&self.initial_cluster)?,
            initial_cluster_token: self.initial_cluster_token,
            initial_advertise_peer_urls: self.initial_advertise_peer_urls,
        };
        let s = keelson_store::restore_snapshot(&self.file, &opts)
            .with_context(|| format!("restoring {}", self.file.display()))?;
        println!(
            "restored snapshot {} into {}: {} records, revision {}, member {:x} of cluster {:x}",
            self.file.display(),
            opts.data_dir.display(),
            s.records,
            s.revision,
            s.member_id,
            s.cluster_id
        );
        Ok(())
    }
}

impl StoreArgs {
    fn config(self) -> anyhow::Result<StoreConfig> {
        let initial_cluster = match &self.initial_cluster {
            Some(s) => parse_initial_cluster(s)?,
            None => self
                .initial_advertise_peer_urls
                .iter()
                .map(|u| (self.name.clone(), u.clone()))
                .collect(),
        };
        let auto_compaction_mode = match self.auto_compaction_mode.as_str() {
            "periodic" => CompactionMode::Periodic,
            "revision" => CompactionMode::Revision,
            other => bail!("unknown auto-compaction-mode {other:?}"),
        };
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)));
        Ok(StoreConfig {
            name: self.name,
            data_dir: Some(data_dir),
            listen_client_urls: self.listen_client_urls,
            advertise_client_urls: self.advertise_client_urls,
            listen_peer_urls: self.listen_peer_urls,
            initial_advertise_peer_urls: self.initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_state: self.initial_cluster_state,
            initial_cluster_token: self.initial_cluster_token,
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            quota_backend_bytes: self.quota_backend_bytes,
            auto_compaction_mode,
            auto_compaction_retention: self.auto_compaction_retention,
            listen_metrics_urls: self.listen_metrics_urls,
            election_timeout: Duration::from_millis(self.election_timeout),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            snapshot_count: self.snapshot_count,
            experimental_lease_read: self.experimental_lease_read,
            experimental_initial_corrupt_check: self.experimental_initial_corrupt_check,
        })
    }
}

fn parse_initial_cluster(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, url) = p
                .split_once('=')
                .with_context(|| format!("--initial-cluster entry {p:?} is not name=url"))?;
            Ok((name.to_string(), url.to_string()))
        })
        .collect()
}

/// A member of a cluster of several: the store replicated with raft (`keelson-raft`).
async fn start_replicated(cfg: StoreConfig) -> anyhow::Result<(Store, keelson_raft::RaftHandle)> {
    let opts = keelson_raft::MemberOptions {
        name: cfg.name.clone(),
        data_dir: cfg
            .data_dir
            .clone()
            .context("a replicated member needs a data dir")?,
        initial_cluster: cfg.initial_cluster.clone(),
        new_cluster: match cfg.initial_cluster_state.as_str() {
            "new" => true,
            "existing" => false,
            other => bail!("unknown initial-cluster-state {other:?}"),
        },
        token: cfg.initial_cluster_token.clone(),
        listen_peer_urls: cfg.listen_peer_urls.clone(),
        advertise_client_urls: cfg.advertise_client_urls.clone(),
        heartbeat_interval: cfg.heartbeat_interval,
        election_timeout: cfg.election_timeout,
        snapshot_count: cfg.snapshot_count,
        max_request_bytes: cfg.max_request_bytes,
        lease_read: cfg.experimental_lease_read,
        initial_corrupt_check: cfg.experimental_initial_corrupt_check,
    };
    // A member added to a running cluster learns its ID from the cluster first.
    let ids = keelson_raft::identity(&opts)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let unstarted = Store::open_replicated_as(cfg, ids).await?;
    keelson_raft::start(unstarted, opts)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

/// Runs one store member from its flags (`keelson store`, and each member of `keelson up`)
/// until `shutdown` resolves or the member is removed from the cluster.
async fn run_store(
    args: StoreArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let names: std::collections::BTreeSet<&str> = cfg
        .initial_cluster
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    // A single member keeps its own group-commit log; more go through raft.
    let (store, raft) = if names.len() > 1 {
        let (store, raft) = start_replicated(cfg).await?;
        (store, Some(raft))
    } else {
        (Store::open(cfg).await?, None)
    };
    for a in store.client_addrs() {
        tracing::info!("serving client requests on {a}");
    }
    // A member removed from the cluster stops by itself, as etcd's does.
    let removed = raft.as_ref().map(|r| r.removed());
    let (tx, was_removed) = tokio::sync::oneshot::channel::<()>();
    store
        .serve(async move {
            let removed = async {
                match removed {
                    Some(r) => r.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown => {}
                _ = removed => {
                    tracing::warn!(
                        "the member has been permanently removed from the cluster; \
                         stopping (its data dir must be removed before it rejoins)"
                    );
                    let _ = tx.send(());
                }
            }
        })
        .await?;
    if let Some(raft) = raft {
        raft.shutdown().await;
    }
    if was_removed.await.is_ok() {
        tracing::warn!("stopped: the member has been permanently removed from the cluster");
    }
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, the two ways a member is asked to stop.
async fn stop_requested() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Store(args) => match *args {
            StoreArgs {
                cmd: Some(StoreCmd::Snapshot(SnapshotCmd::Restore(r))),
                ..
            } => r.run()?,
            args => run_store(args, stop_requested()).await?,
        },
        Cmd::Up(up) => up.run().await?,
        Cmd::Apiserver(a) => {
            let cfg = keelson_apiserver::Config {
                etcd_servers: a.etcd_servers,
                secure_port: a.secure_port,
                bind_address: a.bind_address,
                data_dir: a.data_dir,
                compaction_interval: a.etcd_compaction_interval,
                client_ca_file: a.client_ca_file,
                token_auth_file: a.token_auth_file,
                anonymous_auth: a.anonymous_auth,
            };
            keelson_apiserver::run(cfg, stop_requested()).await?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration;
    use std::time::Duration;

    #[test]
    fn go_durations_parse_as_kube_apiserver_reads_them() {
        let ok = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(ok("5m0s"), Duration::from_secs(300));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        for bad in ["", "5", "5x", "-1s", "m", "1.2.3s", "s5"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn anonymous_auth_is_a_go_boolean_flag() {
        use clap::Parser;
        let anonymous = |extra: &[&str]| {
            let argv = ["keelson", "apiserver"].iter().chain(extra);
            match super::Cli::try_parse_from(argv).map(|c| c.cmd) {
                Ok(super::Cmd::Apiserver(a)) => Ok(a.anonymous_auth),
                Ok(_) => unreachable!("an apiserver command line"),
                Err(e) => Err(e.kind()),
            }
        };
        assert_eq!(anonymous(&[]), Ok(false));
        assert_eq!(anonymous(&["--anonymous-auth"]), Ok(true));
        assert_eq!(anonymous(&["--anonymous-auth=true"]), Ok(true));
        assert_eq!(anonymous(&["--anonymous-auth=F"]), Ok(false));
        assert!(anonymous(&["--anonymous-auth=maybe"]).is_err());
        // As Go's flag package: a separate word is not the flag's value.
        assert!(anonymous(&["--anonymous-auth", "false"]).is_err());
    }
}
