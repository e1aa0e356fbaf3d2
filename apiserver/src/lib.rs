//! # keelson-apiserver
//!
//! A Kubernetes-style apiserver that kubectl 1.32 talks to unmodified, storing every object
//! through the etcd v3 gRPC API only: it never links the store, so it runs the same on
//! `keelson store` and on a real etcd 3.4.
//!
//! ## Shape
//! A request travels `server` (TLS, HTTP/1.1 + HTTP/2) → `auth` (who sent it: client
//! certificate, bearer token, anonymous; 401 otherwise) → `handlers` (route, content
//! negotiation, the single error-to-`Status` conversion) → `crud` (the verb) → `object`
//! (server-owned metadata; `defaults`, then `validate`) → `registry` (resourceVersion rules,
//! optimistic concurrency) → `etcd` (guarded Txns, ranges, watches). `resources` is the one
//! table of served kinds that discovery, routing, keys and printing all read; `keys` is the
//! one place that formats storage keys and continue tokens. `componentstatuses` is the one
//! kind not stored: `handlers` sends it to `componentstatus`, which probes on every request.
//! Reads and watches pass through `cache`, one watch cache per resource fed by one store
//! watch each, wherever upstream's resourceVersion rules let the cache answer. `openapi`
//! holds every served kind's schema (and serves `/openapi/v2` and `/openapi/v3`);
//! `validation` walks create, update and patch bodies against those schemas for
//! `fieldValidation` (unknown and duplicate fields). `defaults` fills in upstream's defaults
//! (and allocates Service cluster IPs through the store), `validate` holds the per-kind
//! rules and immutable fields, and `subresource` serves `scale`, `pods/binding` and
//! `namespaces/finalize`. `deletion` owns delete and deletecollection: graceful pod
//! deletion, finalizers and `deletionTimestamp`, propagation finalizers, preconditions,
//! namespaces moving to Terminating.
//!
//! ## Invariants
//! - Objects live at `/registry/<resource>/[<namespace>/]<name>` as JSON without
//!   `resourceVersion`; an object's resourceVersion is its key's etcd `mod_revision`, a
//!   list's is the revision it was read at.
//! - Every write is a Txn on the key's `mod_revision` (create: 0): no lost update, no
//!   read-modify-write without a guard.
//! - Every failure reaches the client as a Kubernetes `Status` with upstream's reason, code
//!   and message (`error::Error::status`), converted in exactly one place.
//! - The apiserver keeps no durable state of its own besides certificates: any number of
//!   them may run against one store. Its watch caches only mirror the store, and a read
//!   from a cache is never older than the same read from the store may be.
//! - The store's history is compacted once per `compaction_interval`, by whichever of the
//!   apiservers sharing the store wins that interval's Txn on `compact_rev_key`
//!   (`compaction`), as kube-apiserver does.
//!
//! ## Not yet here (issues 6 and 7 continue)
//! Server-side apply; subresources other than `status`, `scale`, `pods/binding` and
//! `namespaces/finalize` (eviction, log, exec, …) and `scale`/`binding`/`finalize` in the
//! OpenAPI documents; the garbage collector that acts on the `orphan`/`foregroundDeletion`
//! finalizers and the namespace controller that empties a Terminating namespace and clears
//! its `kubernetes` finalizer (both controllers' work: until then such objects stay marked);
//! the `NamespaceTerminating` cause in the 403 for creates in a Terminating namespace;
//! validation beyond the common failures `validate` covers (volumes, env, resources,
//! probes, affinity, type mismatches) and upstream's diff after a forbidden pod update;
//! NodePort allocation; `/openapi/v2` in protobuf; admission; authorization (every
//! authenticated request is allowed) and authenticators beyond client certificates and the
//! token file.

mod auth;
mod cache;
mod compaction;
mod componentstatus;
mod crud;
mod defaults;
mod deletion;
mod discovery;
mod error;
mod etcd;
mod handlers;
mod keys;
mod object;
mod openapi;
mod patch;
mod pki;
mod protobuf;
mod registry;
mod request;
mod resources;
mod selectors;
mod server;
mod smp;
mod ssa;
mod subresource;
mod table;
mod time;
mod validate;
mod validation;
mod watch;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use compaction::DEFAULT_INTERVAL as DEFAULT_COMPACTION_INTERVAL;
pub use error::Error;

/// `keelson apiserver`'s flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// etcd v3 endpoints (`http://host:port`), any member of one cluster.
    pub etcd_servers: Vec<String>,
    /// The HTTPS port (0: any free port; see [`Apiserver::local_addr`]).
    pub secure_port: u16,
    pub bind_address: IpAddr,
    /// Where the certificates and `admin.kubeconfig` live.
    pub data_dir: PathBuf,
    /// How often the store's history is compacted (`--etcd-compaction-interval`; zero:
    /// never). See `compaction`.
    pub compaction_interval: Duration,
    /// CA bundle client certificates must chain to (`--client-ca-file`; None: the cluster CA
    /// generated in `data_dir`).
    pub client_ca_file: Option<PathBuf>,
    /// Static bearer tokens (`--token-auth-file`, upstream's CSV format).
    pub token_auth_file: Option<PathBuf>,
    /// Requests without credentials are `system:anonymous` (`--anonymous-auth`); when false
    /// they get 401 except on `/healthz`, `/livez`, `/readyz` and `/version`.
    pub anonymous_auth: bool,
}

/// A running apiserver.
pub struct Apiserver {
    local_addr: SocketAddr,
    kubeconfig: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    /// Turns true once the default namespaces are in place (`/readyz` passes).
    ready: tokio::sync::watch::Receiver<bool>,
    compactor: Option<tokio::task::JoinHandle<()>>,
}

impl Apiserver {
    /// Binds the port, makes or loads the certificates, writes `admin.kubeconfig`, and starts
    /// serving. The default namespaces are created in the background as soon as the store
    /// answers (until then `/readyz` fails).
    pub async fn start(cfg: Config) -> Result<Apiserver, Error> {
        let listener = tokio::net::TcpListener::bind((cfg.bind_address, cfg.secure_port))
            .await
            .map_err(|e| {
                Error::Internal(format!(
                    "binding {}:{}: {e}",
                    cfg.bind_address, cfg.secure_port
                ))
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let host = if cfg.bind_address.is_unspecified() {
            "127.0.0.1".to_string()
        } else if cfg.bind_address.is_ipv6() {
            format!("[{}]", cfg.bind_address)
        } else {
            cfg.bind_address.to_string()
        };
        let address = format!("{host}:{}", local_addr.port());
        let pki = pki::ensure(
            &cfg.data_dir,
            cfg.bind_address,
            &format!("https://{address}"),
        )?;
        let authenticator = Arc::new(auth::Authenticator::new(&auth::Options {
            client_ca_file: cfg.client_ca_file.clone().unwrap_or(pki.ca.clone()),
            token_auth_file: cfg.token_auth_file.clone(),
            anonymous: cfg.anonymous_auth,
        })?);
        let tls = pki::server_config(&cfg.data_dir, authenticator.tls_verifier())?;
        let registry = registry::Registry::new(etcd::Etcd::new(&cfg.etcd_servers)?);
        let (stop_watches, watches_stopped) = tokio::sync::watch::channel(false);
        let compactor = compaction::start(
            registry.etcd.clone(),
            cfg.compaction_interval,
            watches_stopped.clone(),
        );
        let state = Arc::new(handlers::State {
            registry: registry.clone(),
            shutdown: watches_stopped.clone(),
            address,
            bootstrapped: AtomicBool::new(false),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let boot_state = state.clone();
        let mut boot_stop = watches_stopped;
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = bootstrap(&boot_state) => { let _ = ready_tx.send(true); }
                _ = async { let _ = boot_stop.wait_for(|s| *s).await; } => {}
            }
        });
        let task = tokio::spawn(server::serve(
            listener,
            tls,
            authenticator,
            state,
            stop_watches,
            async {
                let _ = stopped.await;
            },
        ));
        tracing::info!(
            "apiserver serving on https://{local_addr}; kubeconfig {}",
            pki.kubeconfig.display()
        );
        Ok(Apiserver {
            local_addr,
            kubeconfig: pki.kubeconfig,
            stop,
            task,
            ready,
            compactor,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin kubeconfig written into the data dir.
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// Resolves once the apiserver is ready (the store answered and the default namespaces
    /// exist); never, if it stops first.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        if ready.wait_for(|r| *r).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Stops accepting, ends watches and the compaction loop, and waits for in-flight
    /// requests (bounded).
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        if let Some(c) = self.compactor {
            let _ = c.await;
        }
    }
}

/// Creates the default namespaces, retrying while the store is unreachable.
async fn bootstrap(state: &handlers::State) {
    let mut delay = Duration::from_millis(100);
    loop {
        match state.registry.ensure_namespaces().await {
            Ok(()) => {
                state.bootstrapped.store(true, Ordering::Release);
                tracing::info!("default namespaces are in place");
                return;
            }
            Err(e) => {
                tracing::warn!("waiting for the store: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Runs an apiserver until `shutdown` resolves (`keelson apiserver`).
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let server = Apiserver::start(cfg).await?;
    println!("export KUBECONFIG={}", server.kubeconfig().display());
    shutdown.await;
    server.shutdown().await;
    Ok(())
}
