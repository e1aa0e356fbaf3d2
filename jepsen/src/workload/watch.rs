//! # `watch`: observers follow a prefix through faults while writers write
//!
//! Three writers put unique values to (and sometimes delete) ten keys under `w/`, recording
//! each ok write with its revision. Three observers, one per member, each watch the whole
//! prefix with `prev_kv` and `progress_notify`:
//! - observer 0 starts at revision 1 (the whole history of the prefix, no compaction in a
//!   run), the others at 0 ("from now");
//! - each watch stream carries one watch, recorded as one op with every response it got;
//! - when [`Ctx::watch_progress`] is on, an observer asks for a progress notification on its
//!   stream about once a second (at once when the stream opens, while it may still be
//!   catching up);
//! - a stream that breaks (member killed, connection cut) or that the observer restarts on
//!   purpose (every 5–15 s) is followed by a new watch from `last + 1`, where `last` is the
//!   highest revision the previous stream proved delivered (its last event or progress
//!   notification, or for a watch from "now" the revision it was created at). The watch
//!   checker's `resumable` and `reliable` checks then judge each resumption.
//!
//! At the end, once the nemesis has healed the cluster, the workload writes a sentinel key
//! (`w/final`, retried until ok) and every observer keeps watching until its stream has proved
//! delivery up to the sentinel's revision, or [`CATCH_UP`] runs out. The sentinel is an event
//! every observer must see, so the end needs no progress notification. A stream that never
//! got its `created` response is not recorded: it saw nothing.
//!
//! Progress requests are off against etcd 3.4.23 (Debian's): it answers them out of band, so a
//! notification can overtake events still queued for the watcher (etcd-io/etcd#15220, fixed
//! in 3.4.24), which the watch checker rightly reports as `watch-bookmarkable`.

use std::time::Duration;

use bytes::Bytes;
use keelson_proto::etcdserverpb::{
    watch_request::RequestUnion, DeleteRangeRequest, PutRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest as PbWatchRequest, WatchResponse as PbWatchResponse,
};
use keelson_proto::mvccpb::event::EventType;
use rand::rngs::StdRng;
use rand::Rng;
use tokio::sync::{mpsc, watch as signal};
use tokio_stream::wrappers::ReceiverStream;

use super::{spawn_clients, Ctx, Phase, Process, WorkloadKind};
use crate::client::{outcome, Conn, Effect};
use crate::history::{EventKind, Func, Op, OpType, WatchEvent, WatchRequest, WatchResponse};

const WRITERS: usize = 3;
const OBSERVERS: usize = 3;
const KEYS: u64 = 10;
const WRITE_PAUSE: Duration = Duration::from_millis(40);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
const FINAL_PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How long observers may take, after the heal, to reach the final revision.
pub(crate) const CATCH_UP: Duration = Duration::from_secs(30);

/// What observers know about the end of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Final {
    /// Still running (or healing).
    NotYet,
    /// Watch until this revision is proven delivered.
    Reach(i64),
    /// Stop now.
    Stop,
}

/// Writers, observers and the sentinel writer: the process-id stride.
const PROCESSES: usize = WRITERS + OBSERVERS + 1;

pub(crate) async fn run(ctx: Ctx) -> Vec<Op> {
    let (final_tx, final_rx) = signal::channel(Final::NotYet);
    let sentinel = tokio::spawn(sentinel(ctx.clone(), final_tx));
    // The observers' closure owns the last receivers, so the sentinel learns when all are
    // gone.
    let observing = ctx.clone();
    let observers = tokio::spawn(spawn_clients(OBSERVERS, move |i| {
        observer(observing.clone(), i, final_rx.clone())
    }));
    let mut ops = spawn_clients(WRITERS, |i| writer(ctx.clone(), i)).await;
    ops.extend(observers.await.expect("observers do not panic"));
    ops.extend(sentinel.await.expect("the sentinel writer does not panic"));
    ops
}

/// After the heal, writes `w/final` until ok and tells the observers its revision; stops
/// them [`CATCH_UP`] later in any case.
async fn sentinel(mut ctx: Ctx, final_tx: signal::Sender<Final>) -> Vec<Op> {
    while *ctx.phase.borrow() < Phase::Healed {
        if ctx.phase.changed().await.is_err() {
            break;
        }
    }
    let give_up = tokio::time::Instant::now() + CATCH_UP;
    let client = PROCESSES - 1;
    let mut process = Process::new(WorkloadKind::Watch, client, PROCESSES);
    let mut ops = Vec::new();
    for attempt in 0.. {
        let mut conn = Conn::new(ctx.endpoint(attempt), ctx.timeout);
        let key = format!("{}final", WorkloadKind::Watch.prefix());
        let value = format!("final.{attempt}");
        let op = put(&ctx, &mut conn, process.id(), key, value).await;
        process.after(&op);
        let revision = op.revision.filter(|_| op.kind == OpType::Ok);
        ops.push(op);
        if let Some(revision) = revision {
            let _ = final_tx.send(Final::Reach(revision));
            break;
        }
        if tokio::time::Instant::now() > give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stopped = async {
        tokio::time::sleep_until(give_up).await;
        let _ = final_tx.send(Final::Stop);
    };
    // Done early when every observer has stopped listening.
    tokio::select! {
        _ = stopped => {}
        _ = final_tx.closed() => {}
    }
    ops
}

async fn writer(mut ctx: Ctx, i: usize) -> Vec<Op> {
    let kind = WorkloadKind::Watch;
    let mut rng = ctx.rng(kind, i);
    let mut conn = Conn::new(ctx.endpoint(i), ctx.timeout);
    let mut process = Process::new(kind, i, PROCESSES);
    let mut ops = Vec::new();
    let mut seq = 0u64;
    while ctx.running() {
        let key = format!("{}{}", kind.prefix(), rng.random_range(0..KEYS));
        seq += 1;
        let op = if rng.random_bool(0.2) {
            delete(&ctx, &mut conn, process.id(), key).await
        } else {
            let value = format!("{}.{seq}", process.id());
            put(&ctx, &mut conn, process.id(), key, value).await
        };
        process.after(&op);
        ops.push(op);
        if !ctx.pause(&mut rng, WRITE_PAUSE).await {
            break;
        }
    }
    ops
}

async fn put(ctx: &Ctx, conn: &mut Conn, process: u64, key: String, value: String) -> Op {
    let invoke = ctx.clock.now();
    let mut kv = conn.kv();
    let req = PutRequest {
        key: Bytes::from(key.clone()),
        value: Bytes::from(value.clone()),
        ..Default::default()
    };
    let result = conn.call(kv.put(req)).await;
    let f = Func::Write {
        key,
        value,
        lease: None,
    };
    let complete = ctx.clock.now();
    match result {
        Ok(resp) => Op::new(process, OpType::Ok, f, invoke, complete)
            .with_revision(resp.header.map_or(0, |h| h.revision)),
        Err(failure) => {
            let mut op = Op::new(
                process,
                outcome(&failure, Effect::Write),
                f,
                invoke,
                complete,
            );
            op.error = Some(failure.message());
            op
        }
    }
}

async fn delete(ctx: &Ctx, conn: &mut Conn, process: u64, key: String) -> Op {
    let invoke = ctx.clock.now();
    let mut kv = conn.kv();
    let req = DeleteRangeRequest {
        key: Bytes::from(key.clone()),
        ..Default::default()
    };
    let result = conn.call(kv.delete_range(req)).await;
    let complete = ctx.clock.now();
    match result {
        Ok(resp) => {
            let f = Func::Delete {
                key,
                deleted: Some(resp.deleted),
            };
            Op::new(process, OpType::Ok, f, invoke, complete)
                .with_revision(resp.header.map_or(0, |h| h.revision))
        }
        Err(failure) => {
            let f = Func::Delete { key, deleted: None };
            let mut op = Op::new(
                process,
                outcome(&failure, Effect::Write),
                f,
                invoke,
                complete,
            );
            op.error = Some(failure.message());
            op
        }
    }
}

/// The watch request an observer sends, resuming at `start` (0 = from now).
pub(crate) fn request(start: i64) -> WatchRequest {
    WatchRequest {
        key: "w/".to_string(),
        range_end: Some("w0".to_string()),
        start_revision: start,
        prev_kv: true,
        progress_notify: true,
        no_put: false,
        no_delete: false,
    }
}

/// A gRPC watch response as the history records it.
pub(crate) fn convert(resp: &PbWatchResponse, time_ns: u64) -> WatchResponse {
    let revision = resp.header.map_or(0, |h| h.revision);
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let events = resp
        .events
        .iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            let kind = if e.r#type == EventType::Delete as i32 {
                EventKind::Delete
            } else {
                EventKind::Put
            };
            WatchEvent {
                kind,
                key: text(&kv.key),
                value: (kind == EventKind::Put).then(|| text(&kv.value)),
                revision: kv.mod_revision,
                create_revision: kv.create_revision,
                prev_value: e.prev_kv.as_ref().map(|p| text(&p.value)),
            }
        })
        .collect::<Vec<_>>();
    WatchResponse {
        // etcd's IsProgressNotify.
        progress_notify: events.is_empty()
            && !resp.canceled
            && !resp.created
            && resp.compact_revision == 0
            && revision != 0,
        events,
        revision,
        created: resp.created,
        canceled: resp.canceled,
        compact_revision: resp.compact_revision,
        time_ns,
    }
}

/// The highest revision a stream proved delivered, given where it started.
pub(crate) fn proven(start: i64, responses: &[WatchResponse]) -> Option<i64> {
    responses.iter().fold(None, |last, r| {
        let this = match r.events.last() {
            Some(e) => Some(e.revision),
            None if r.progress_notify => Some(r.revision),
            // Created "from now": nothing at or below the creation revision will come.
            None if r.created && start == 0 => Some(r.revision),
            None => None,
        };
        last.max(this)
    })
}

/// Why a stream ended.
enum End {
    /// The observer closed it (restart, or the run is over).
    Closed,
    /// It broke: the error.
    Broken(String),
}

async fn observer(ctx: Ctx, i: usize, mut fin: signal::Receiver<Final>) -> Vec<Op> {
    let kind = WorkloadKind::Watch;
    let mut rng = ctx.rng(kind, WRITERS + i);
    let mut conn = Conn::new(ctx.endpoint(i), ctx.timeout);
    let mut process = Process::new(kind, WRITERS + i, PROCESSES);
    let mut ops = Vec::new();
    let mut start: i64 = if i == 0 { 1 } else { 0 };
    loop {
        let reached = |start: i64, fin: Final| match fin {
            Final::NotYet => false,
            Final::Reach(target) => start > target,
            Final::Stop => true,
        };
        if reached(start, *fin.borrow()) {
            break;
        }
        let invoke = ctx.clock.now();
        let (responses, end) = stream(&ctx, &mut conn, &mut rng, start, &mut fin).await;
        if responses.is_empty() {
            if matches!(end, End::Broken(_)) {
                conn.reset();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            continue;
        }
        // A watch canceled because its start was compacted away can only resume at the
        // compaction revision: the events before it are gone for every watcher.
        let compacted = responses.iter().map(|r| r.compact_revision).max();
        let next = proven(start, &responses)
            .map_or(start, |r| r + 1)
            .max(compacted.unwrap_or(0));
        let (kind, error) = match end {
            End::Closed => (OpType::Ok, None),
            End::Broken(e) => (OpType::Info, Some(e)),
        };
        let f = Func::Watch {
            request: request(start),
            responses,
        };
        let mut op = Op::new(process.id(), kind, f, invoke, ctx.clock.now());
        op.error = error;
        process.after(&op);
        let broken = op.kind == OpType::Info;
        ops.push(op);
        start = next.max(start);
        if broken {
            conn.reset();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    ops
}

/// Runs one watch stream from `start` until it breaks, the observer restarts it, or the final
/// revision is proven delivered.
async fn stream(
    ctx: &Ctx,
    conn: &mut Conn,
    rng: &mut StdRng,
    start: i64,
    fin: &mut signal::Receiver<Final>,
) -> (Vec<WatchResponse>, End) {
    let (tx, rx) = mpsc::channel(4);
    let req = request(start);
    let create = PbWatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::from(req.key.clone()),
            range_end: Bytes::from(req.range_end.clone().unwrap_or_default()),
            start_revision: start,
            progress_notify: true,
            prev_kv: true,
            ..Default::default()
        })),
    };
    tx.send(create).await.expect("the receiver is alive");
    let mut client = conn.watch();
    let mut inbound =
        match tokio::time::timeout(conn.timeout(), client.watch(ReceiverStream::new(rx))).await {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => return (vec![], End::Broken(format!("{status}"))),
            Err(_) => return (vec![], End::Broken("timeout opening the stream".into())),
        };
    let restart = tokio::time::sleep(Duration::from_millis(rng.random_range(5_000..15_000)));
    tokio::pin!(restart);
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut responses: Vec<WatchResponse> = Vec::new();
    let progress = PbWatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    };
    let end = loop {
        let fin_now = *fin.borrow();
        if let Final::Reach(target) = fin_now {
            if proven(start, &responses).is_some_and(|p| p >= target) {
                break End::Closed;
            }
        }
        if fin_now == Final::Stop {
            break End::Closed;
        }
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(resp)) => {
                    let converted = convert(&resp, ctx.clock.now());
                    let canceled = converted.canceled;
                    responses.push(converted);
                    if canceled {
                        break End::Broken(format!("canceled: {}", resp.cancel_reason));
                    }
                }
                Ok(None) => break End::Broken("stream closed by the server".into()),
                Err(status) => break End::Broken(format!("{status}")),
            },
            _ = ticker.tick(), if ctx.watch_progress => {
                // A full queue means the member is not reading: skip this request.
                let _ = tx.try_send(progress.clone());
            }
            _ = &mut restart, if fin_now == Final::NotYet && ctx.running() => break End::Closed,
            _ = fin.changed() => {
                if *fin.borrow() != Final::NotYet {
                    ticker = tokio::time::interval(FINAL_PROGRESS_EVERY);
                }
            }
        }
    };
    (responses, end)
}
