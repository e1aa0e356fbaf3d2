//! The HTTPS listener: TLS (rustls, ALPN h2 and http/1.1), HTTP/1.1 and HTTP/2 on the same
//! port (hyper-util's auto builder), authentication of every request before it is handled,
//! and graceful shutdown.
//!
//! Authentication: the client certificate (requested, not required, by the handshake) is
//! verified once per connection; each request is then authenticated from it and its
//! `Authorization` header (`auth`). A failure is answered here with the 401 `Status`; a
//! success reaches `handlers` with the [`crate::auth::UserInfo`] in the request's
//! extensions.
//!
//! Shutdown order: stop accepting; flip the shared shutdown flag so long-running watch
//! streams end; then wait (bounded) for in-flight requests on every connection to finish
//! (hyper-util `GracefulShutdown`), and drop whatever is left.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::handlers::{self, State};

/// Every response body: a full buffer or a stream (watches).
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown` resolves, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    authenticator: Arc<Authenticator>,
    state: Arc<State>,
    stop_watches: tokio::sync::watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(1000);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let authenticator = authenticator.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake with {peer}: {e}");
                    return;
                }
                Err(_) => return,
            };
            let certificate = Arc::new(authenticator.peer(tls.get_ref().1.peer_certificates()));
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                let state = state.clone();
                let user = authenticator.authenticate(
                    &certificate,
                    req.headers()
                        .get(hyper::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok()),
                    req.uri().path(),
                );
                async move {
                    Ok::<_, Infallible>(match user {
                        Ok(user) => {
                            req.extensions_mut().insert(user);
                            handlers::handle(state, req).await
                        }
                        Err(e) => handlers::json_reply(e.code(), &e.status()),
                    })
                }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    let _ = stop_watches.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}; closing them");
    }
}
