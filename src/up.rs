//! `keelson up`: a local cluster in one foreground process: 1 or 3 store members on
//! 127.0.0.1 and the apiserver on top of them.
//!
//! Invariants:
//! - Each member runs exactly as `keelson store` would with the flags [`UpArgs::members`]
//!   derives (parsed by the same parser), so `up` gives the store no behaviour of its own.
//! - The apiserver reaches the members only through their client URLs, as
//!   `keelson apiserver --etcd-servers` would: it never shares the store's memory.
//! - `export KUBECONFIG=…` is printed once the apiserver is ready (the store answered and the
//!   default namespaces exist), so the first kubectl command after it works.
//! - Stop order, on Ctrl-C or SIGTERM or when a member stops: the apiserver first (its
//!   watches end and in-flight requests drain while the store still answers), then the
//!   members.

use std::path::PathBuf;

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser};

use crate::{run_store, stop_requested, Cli, Cmd, StoreArgs};

/// `keelson up`: member i is `m<i>` with data dir `DIR/m<i>`, client port `N + 10 i` and peer
/// port one above its client port; the apiserver keeps its certificates and kubeconfig in
/// `DIR/apiserver` and serves HTTPS on 127.0.0.1.
#[derive(Args)]
pub(crate) struct UpArgs {
    /// How many store members to run (1 or 3).
    #[arg(long, default_value_t = 1, value_parser = PossibleValuesParser::new(["1", "3"]).map(|s| s.parse::<u16>().unwrap()))]
    store_members: u16,
    /// Where the members and the apiserver keep their data (one directory each inside it).
    #[arg(long, default_value = "./keelson-up")]
    data_dir: PathBuf,
    /// The first member's client port; the others' are 10 and 20 above it.
    #[arg(long, default_value_t = 2379)]
    client_port: u16,
    /// The apiserver's HTTPS port.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
}

impl UpArgs {
    /// The `keelson store` flags of each member.
    fn members(&self) -> anyhow::Result<Vec<StoreArgs>> {
        let n = self.store_members;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|i| {
                let client = self
                    .client_port
                    .checked_add(10 * i)
                    .and_then(|c| c.checked_add(1).map(|p| (c, p)))
                    .context("--client-port too high for the members' ports")?;
                Ok(client)
            })
            .collect::<anyhow::Result<_>>()?;
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let client = format!("http://127.0.0.1:{client}");
                let peer = format!("http://127.0.0.1:{peer}");
                let dir = self.data_dir.join(format!("m{i}"));
                let argv: Vec<std::ffi::OsString> = vec![
                    "keelson".into(),
                    "store".into(),
                    "--name".into(),
                    format!("m{i}").into(),
                    "--data-dir".into(),
                    dir.into_os_string(),
                    "--listen-client-urls".into(),
                    client.clone().into(),
                    "--advertise-client-urls".into(),
                    client.into(),
                    "--listen-peer-urls".into(),
                    peer.clone().into(),
                    "--initial-advertise-peer-urls".into(),
                    peer.into(),
                    "--initial-cluster".into(),
                    cluster.clone().into(),
                ];
                // The same parser as `keelson store`, so every other flag keeps its default.
                match Cli::try_parse_from(argv)?.cmd {
                    Cmd::Store(args) => Ok(*args),
                    _ => unreachable!("parsed a store command line"),
                }
            })
            .collect()
    }

    /// Runs the members and the apiserver until Ctrl-C or SIGTERM (or until a member stops,
    /// which stops everything else).
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        // Absolute, so the printed KUBECONFIG works from any directory.
        let data_dir = std::fs::canonicalize(&self.data_dir)
            .with_context(|| format!("resolving {}", self.data_dir.display()))?;
        let members = self.members()?;
        let endpoints: Vec<String> = members
            .iter()
            .map(|m| m.advertise_client_urls.join(","))
            .collect();
        let signal = tokio::spawn(stop_requested());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut running = tokio::task::JoinSet::new();
        for args in members {
            let mut stopped = stopped.clone();
            running.spawn(run_store(args, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
        }
        println!(
            "{} store member(s) up; data in {}\netcdctl --endpoints {} endpoint status --cluster -w table",
            endpoints.len(),
            data_dir.display(),
            endpoints.join(",")
        );
        let apiserver = keelson_apiserver::Apiserver::start(keelson_apiserver::Config {
            etcd_servers: endpoints,
            secure_port: self.secure_port,
            bind_address: std::net::Ipv4Addr::LOCALHOST.into(),
            data_dir: data_dir.join("apiserver"),
            compaction_interval: keelson_apiserver::DEFAULT_COMPACTION_INTERVAL,
            // The admin kubeconfig's client certificate is signed by the generated CA.
            client_ca_file: None,
            token_auth_file: None,
            anonymous_auth: false,
        })
        .await;
        let mut result = Ok(());
        match apiserver {
            Ok(apiserver) => {
                tokio::pin!(signal);
                let mut announced = false;
                loop {
                    tokio::select! {
                        _ = &mut signal => break,
                        Some(done) = running.join_next() => {
                            result = done.context("a member panicked").and_then(|r| r);
                            break;
                        }
                        _ = apiserver.ready(), if !announced => {
                            println!("export KUBECONFIG={}", apiserver.kubeconfig().display());
                            announced = true;
                        }
                    }
                }
                apiserver.shutdown().await;
            }
            Err(e) => result = Err(e).context("starting the apiserver"),
        }
        let _ = stop.send(true);
        while let Some(done) = running.join_next().await {
            let r = done.context("a member panicked").and_then(|r| r);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}
