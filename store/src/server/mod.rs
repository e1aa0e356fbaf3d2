//! The gRPC front: one tonic server per client URL carrying every etcd service.

pub(crate) mod auth;
pub(crate) mod cluster;
pub(crate) mod election;
pub(crate) mod kv;
pub(crate) mod lease;
pub(crate) mod lock;
pub(crate) mod maintenance;
pub(crate) mod require_leader;
pub(crate) mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use keelson_proto::etcdserverpb::auth_server::AuthServer;
use keelson_proto::etcdserverpb::cluster_server::ClusterServer;
use keelson_proto::etcdserverpb::kv_server::KvServer;
use keelson_proto::etcdserverpb::lease_server::LeaseServer;
use keelson_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use tokio::net::TcpListener;

use crate::core::Core;
use crate::error::{Error, Result};

/// Parses `http://host:port` (etcd's URL form) into a socket address.
pub(crate) fn parse_url(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let hostport = rest.trim_end_matches('/');
    let hostport = hostport.replacen("localhost", "127.0.0.1", 1);
    hostport.parse().map_err(|_| {
        Error::InvalidArgument(format!("invalid URL {url:?}: expected http://IP:PORT"))
    })
}

/// Binds every client URL; returns the listeners (so callers learn ports chosen for port 0).
pub(crate) async fn bind(urls: &[String]) -> Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for u in urls {
        out.push(TcpListener::bind(parse_url(u)?).await?);
    }
    Ok(out)
}

/// Serves every etcd service on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let max = core.cfg.max_request_bytes + 512 * 1024;
    let kv = KvServer::new(kv::KvService { core: core.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX);
    let lease =
        LeaseServer::new(lease::LeaseService { core: core.clone() }).max_decoding_message_size(max);
    let incoming = nodelay(listener);
    // Waiting Lock/Campaign/Observe calls end when shutdown begins (`lock.rs`).
    let (shutdown, stopping) = lock::Stopping::on(shutdown);
    // HTTP/1.1 too: `/health`, `/version` and `/metrics` share the port with gRPC (`http.rs`).
    tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(require_leader::RequireLeaderLayer { core: core.clone() })
        .add_routes(crate::http::routes(core.clone()))
        .add_service(kv)
        .add_service(lease)
        .add_service(MaintenanceServer::new(maintenance::MaintenanceService {
            core: core.clone(),
        }))
        .add_service(ClusterServer::new(cluster::ClusterService {
            core: core.clone(),
        }))
        .add_service(AuthServer::new(auth::AuthService { core: core.clone() }))
        .add_service(keelson_proto::v3lockpb::lock_server::LockServer::new(
            lock::LockService {
                core: core.clone(),
                stopping: stopping.clone(),
            },
        ))
        .add_service(
            keelson_proto::v3electionpb::election_server::ElectionServer::new(
                election::ElectionService {
                    core: core.clone(),
                    stopping,
                },
            ),
        )
        .add_service(watch::WatchServer::new(
            core.clone(),
            require_leader::monitor(&core),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown_watches(&core, shutdown))
        .await
        .map_err(|e| Error::Io(e.to_string()))
}

/// Watch streams never end on their own, so graceful shutdown would wait for them forever:
/// end them (with "server stopped") as soon as shutdown begins.
fn shutdown_watches(
    core: &Arc<Core>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let hub = core.hub.clone();
    async move {
        shutdown.await;
        hub.shutdown();
    }
}

/// Serves the HTTP endpoints alone (`--listen-metrics-urls`) until `shutdown` completes.
pub(crate) async fn serve_metrics(
    core: Arc<Core>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let incoming = nodelay(listener);
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(crate::http::routes(core))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Io(e.to_string()))
}

/// Accepted connections with Nagle's algorithm off. tonic's `tcp_nodelay` only applies to
/// listeners it binds itself; with Nagle on, small responses wait for the client's delayed ACK
/// (~40 ms), which measured as a 44 ms floor on linearizable reads.
fn nodelay(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener)
        .map(|r| r.and_then(|s| s.set_nodelay(true).map(|_| s)))
}
