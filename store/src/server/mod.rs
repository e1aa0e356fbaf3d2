//! The gRPC front: one tonic server per client URL carrying every etcd service.

pub(crate) mod kv;
pub(crate) mod lease;

use std::net::SocketAddr;
use std::sync::Arc;

use keelson_proto::etcdserverpb::kv_server::KvServer;
use keelson_proto::etcdserverpb::lease_server::LeaseServer;
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
    hostport
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("invalid URL {url:?}: expected http://IP:PORT")))
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
    let lease = LeaseServer::new(lease::LeaseService { core: core.clone() }).max_decoding_message_size(max);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(kv)
        .add_service(lease)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Io(e.to_string()))
}
