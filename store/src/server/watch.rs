//! The Watch service: etcd's bidirectional `Watch` stream over the watch hub.
//!
//! The service is written out by hand rather than through the generated `WatchServer`, for one
//! reason: its codec. Responses leave as [`Frame`]s, a `WatchResponse` head plus events that
//! were encoded once and are shared by every watcher that receives them (`watch/batch.rs`), so
//! fanning a revision out to N watchers copies bytes into N buffers but encodes it once. The
//! wire format is unchanged: a frame's bytes are exactly a `WatchResponse`'s.
//!
//! Per stream: a task reads requests (create, cancel, progress) and hands them to the hub,
//! waiting whenever the stream's queue is full; the response body polls the hub's
//! `WatchStream`. When the client ends its requests the watchers stay (etcd keeps sending);
//! when the client goes away the response stream is dropped and the hub forgets the stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::StreamExt;
use keelson_proto::etcdserverpb::watch_request::RequestUnion;
use keelson_proto::etcdserverpb::WatchRequest;
use prost::Message;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use crate::core::Core;
use crate::error::Error;
use crate::server::require_leader;
use crate::watch::{Frame, StreamHandle};

/// gRPC overhead etcd adds to `--max-request-bytes` for its receive limit and fragment size.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The tower service serving `/etcdserverpb.Watch/Watch`.
#[derive(Clone)]
pub(crate) struct WatchServer {
    core: Arc<Core>,
    /// Moves when `hasleader` streams must end (`require_leader::monitor`).
    leader_lost: tokio::sync::watch::Receiver<u64>,
}

impl WatchServer {
    pub(crate) fn new(
        core: Arc<Core>,
        leader_lost: tokio::sync::watch::Receiver<u64>,
    ) -> WatchServer {
        WatchServer { core, leader_lost }
    }
}

impl NamedService for WatchServer {
    const NAME: &'static str = "etcdserverpb.Watch";
}

impl<B> Service<http::Request<B>> for WatchServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let core = self.core.clone();
        // Only streams that asked for a leader end when it is lost.
        let leader_lost = require_leader::requires_leader(req.headers()).then(|| {
            let mut rx = self.leader_lost.clone();
            rx.borrow_and_update();
            rx
        });
        if req.uri().path() != "/etcdserverpb.Watch/Watch" {
            return Box::pin(async move { Ok(Status::unimplemented("").into_http()) });
        }
        Box::pin(async move {
            let max = core.cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
            let mut grpc =
                Grpc::new(WatchCodec).apply_max_message_size_config(Some(max), Some(usize::MAX));
            Ok(grpc.streaming(WatchMethod { core, leader_lost }, req).await)
        })
    }
}

struct WatchMethod {
    core: Arc<Core>,
    leader_lost: Option<tokio::sync::watch::Receiver<u64>>,
}

impl StreamingService<WatchRequest> for WatchMethod {
    type Response = Frame;
    type ResponseStream = BoxStream<'static, Result<Frame, Status>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<WatchRequest>>) -> Self::Future {
        let core = self.core.clone();
        let leader_lost = self.leader_lost.take();
        Box::pin(async move {
            let header = core.header(0).unwrap_or_default();
            let limit = core.cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
            let (handle, stream) = core.hub.open_stream(header, limit);
            tokio::spawn(receive(handle, request.into_inner()));
            let out = futures::stream::unfold(Some((stream, leader_lost)), |state| async move {
                let (mut s, mut lost) = state?;
                let next = match &mut lost {
                    None => s.next().await?,
                    Some(l) => tokio::select! {
                        next = s.next() => next?,
                        Ok(()) = l.changed() => {
                            return Some((Err(Status::from(Error::NoLeader)), None));
                        }
                    },
                };
                Some((next.map_err(Status::from), Some((s, lost))))
            });
            Ok(Response::new(out.boxed()))
        })
    }
}

/// The request loop: one request at a time, each only once the stream's queue has room. It
/// ends with the stream, dropping the request body, so a finished stream does not hold its
/// connection open (graceful shutdown waits for every open stream).
async fn receive(handle: StreamHandle, mut requests: Streaming<WatchRequest>) {
    loop {
        handle.ready().await;
        let next = tokio::select! {
            _ = handle.closed() => return,
            next = requests.message() => next,
        };
        let req = match next {
            Ok(Some(req)) => req,
            // The client ended its requests: keep the watchers, as etcd does.
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("watch stream receive failed: {e}");
                handle.close();
                return;
            }
        };
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => handle.create(&c),
            Some(RequestUnion::CancelRequest(c)) => handle.cancel(c.watch_id),
            Some(RequestUnion::ProgressRequest(_)) => handle.request_progress(),
            // etcd ignores requests it does not understand rather than ending the stream.
            None => {}
        }
    }
}

/// Decodes `WatchRequest`s with prost; encodes [`Frame`]s as `WatchResponse`s.
struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = Frame;
    type Decode = WatchRequest;
    type Encoder = FrameEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> FrameEncoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = Frame;
    type Error = Status;

    fn encode(&mut self, item: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = WatchRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<WatchRequest>, Status> {
        WatchRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
