//! End-to-end watch tests: a Store on 127.0.0.1:0 and the `etcd-client` crate, plus an
//! (ignored) differential probe that replays one script against a real etcd 3.4.

use std::time::Duration;

use etcd_client::{
    Client, EventType, GetOptions, WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};
use tokio::sync::oneshot;

use crate::{Store, StoreConfig};

struct Running {
    endpoint: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<crate::Result<()>>,
}

impl Running {
    async fn start() -> Running {
        let cfg = StoreConfig {
            listen_client_urls: vec!["http://127.0.0.1:0".into()],
            data_dir: None,
            ..Default::default()
        };
        let store = Store::open(cfg).await.unwrap();
        let endpoint = format!("http://{}", store.client_addrs()[0]);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(store.serve(async move {
            let _ = rx.await;
        }));
        Running {
            endpoint,
            stop: Some(tx),
            task,
        }
    }

    async fn client(&self) -> Client {
        Client::connect([self.endpoint.as_str()], None)
            .await
            .unwrap()
    }

    /// Shuts down; open watch streams must not keep the server from stopping.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the server stops although watch streams are open")
            .unwrap()
            .unwrap();
    }
}

async fn next(s: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("a watch response within 20 s")
        .unwrap()
        .expect("the watch stream is open")
}

/// (key, value, type, mod_revision, prev value) of each event.
fn evs(r: &WatchResponse) -> Vec<(String, String, EventType, i64, Option<String>)> {
    r.events()
        .iter()
        .map(|e| {
            let kv = e.kv().unwrap();
            let prev = e.prev_kv().map(|p| p.value_str().unwrap().to_string());
            (
                kv.key_str().unwrap().into(),
                kv.value_str().unwrap().into(),
                e.event_type(),
                kv.mod_revision(),
                prev,
            )
        })
        .collect()
}

#[tokio::test]
async fn key_prefix_prev_kv_filters_and_cancel_over_grpc() {
    let server = Running::start().await;
    let mut c = server.client().await;
    let mut s = c.watch_client().watch("k", None).await.unwrap();
    let created = next(&mut s).await;
    assert!(created.created() && created.watch_id() == 0);
    let rev0 = created.header().unwrap().revision();
    // A second and third watcher on the same stream.
    s.watch(
        "p/",
        Some(WatchOptions::new().with_prefix().with_prev_key()),
    )
    .await
    .unwrap();
    assert_eq!(next(&mut s).await.watch_id(), 1);
    s.watch(
        "p/",
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_filters([WatchFilterType::NoPut]),
        ),
    )
    .await
    .unwrap();
    assert_eq!(next(&mut s).await.watch_id(), 2);

    let r = c
        .put("k", "v1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert_eq!(r, rev0 + 1);
    let got = next(&mut s).await;
    assert_eq!((got.watch_id(), got.header().unwrap().revision()), (0, r));
    assert_eq!(
        evs(&got),
        vec![("k".into(), "v1".into(), EventType::Put, r, None)]
    );

    c.put("p/a", "1", None).await.unwrap();
    let r2 = c
        .put("p/a", "2", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.put("q", "ignored", None).await.unwrap();
    let r3 = c
        .delete("p/a", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut w1 = vec![];
    let mut w2 = vec![];
    while w1.len() < 3 || w2.is_empty() {
        let m = next(&mut s).await;
        match m.watch_id() {
            1 => w1.extend(evs(&m)),
            2 => w2.extend(evs(&m)),
            other => panic!("unexpected watch {other}: {m:?}"),
        }
    }
    assert_eq!(
        w1[1],
        (
            "p/a".into(),
            "2".into(),
            EventType::Put,
            r2,
            Some("1".into())
        )
    );
    assert_eq!(
        w1[2],
        (
            "p/a".into(),
            "".into(),
            EventType::Delete,
            r3,
            Some("2".into())
        )
    );
    assert_eq!(w2.len(), 1, "NOPUT leaves only the delete");
    assert_eq!(
        (w2[0].2, w2[0].3, w2[0].4.clone()),
        (EventType::Delete, r3, None)
    );

    s.cancel(0).await.unwrap();
    let canceled = next(&mut s).await;
    assert!(canceled.canceled() && canceled.watch_id() == 0);
    c.put("k", "after-cancel", None).await.unwrap();
    let r4 = c
        .put("p/b", "x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let m = next(&mut s).await;
    assert_eq!(
        (m.watch_id(), evs(&m)[0].3),
        (1, r4),
        "nothing for the canceled watcher"
    );

    s.request_progress().await.unwrap();
    let p = next(&mut s).await;
    assert_eq!((p.watch_id(), p.header().unwrap().revision()), (-1, r4));
    server.stop().await;
}

#[tokio::test]
async fn past_revision_and_compacted_start() {
    let server = Running::start().await;
    let mut c = server.client().await;
    let mut revs = vec![];
    for i in 0..10 {
        revs.push(
            c.put("h", format!("{i}"), None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision(),
        );
    }
    let mut s = c
        .watch_client()
        .watch("h", Some(WatchOptions::new().with_start_revision(revs[3])))
        .await
        .unwrap();
    assert!(next(&mut s).await.created());
    let mut got = vec![];
    while got.len() < 7 {
        got.extend(evs(&next(&mut s).await).into_iter().map(|e| e.3));
    }
    assert_eq!(got, revs[3..].to_vec());

    c.compact(revs[5], None).await.unwrap();
    let mut s2 = c
        .watch_client()
        .watch("h", Some(WatchOptions::new().with_start_revision(revs[2])))
        .await
        .unwrap();
    assert!(next(&mut s2).await.created());
    let m = next(&mut s2).await;
    assert_eq!(
        (m.compact_revision(), m.canceled(), m.cancel_reason()),
        (revs[5], true, "")
    );
    // The compacted revision itself is still watchable.
    let mut s3 = c
        .watch_client()
        .watch("h", Some(WatchOptions::new().with_start_revision(revs[5])))
        .await
        .unwrap();
    assert!(next(&mut s3).await.created());
    assert_eq!(
        evs(&next(&mut s3).await)
            .iter()
            .map(|e| e.3)
            .collect::<Vec<_>>(),
        revs[5..].to_vec()
    );
    server.stop().await;
}

#[tokio::test]
async fn slow_consumer_gets_every_event_once_in_order() {
    const PUTS: usize = 10_000;
    let server = Running::start().await;
    let c = server.client().await;
    let mut s = c
        .watch_client()
        .watch("slow/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let start = next(&mut s).await.header().unwrap().revision();
    // Nobody reads `s` while the puts happen: 1 KiB values overflow every window and queue.
    let value = "x".repeat(1024);
    let mut writers = vec![];
    for w in 0..4 {
        let mut c = c.clone();
        let value = value.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..PUTS).step_by(4) {
                c.put(format!("slow/{:05}", i % 100), value.clone(), None)
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut got = Vec::with_capacity(PUTS);
    while got.len() < PUTS {
        let m = next(&mut s).await;
        assert_eq!(m.watch_id(), 0);
        got.extend(m.events().iter().map(|e| e.kv().unwrap().mod_revision()));
    }
    let want: Vec<i64> = (start + 1..=start + PUTS as i64).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "every revision exactly once, in order");
    let mut c2 = c.clone();
    let count = c2
        .get(
            "slow/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap()
        .count();
    assert_eq!(count, 100);
    server.stop().await;
}

/// Replays one script against keelson and against a real etcd 3.4 (`/usr/bin/etcd`) and
/// compares every watch response field by field (cluster/member IDs and term aside). The test
/// suite installs etcd (`.ci/test`); without it this fails rather than passing silently.
#[tokio::test]
async fn matches_real_etcd() {
    let server = Running::start().await;
    let ours = probe::run(&server.endpoint).await;
    let etcd = probe::Etcd::start();
    let theirs = probe::run(&etcd.endpoint).await;
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        println!("step {i}\n  keelson: {a}\n  etcd:    {b}");
    }
    assert_eq!(ours, theirs);
    server.stop().await;
}

mod probe {
    use std::process::{Child, Command};
    use std::time::Duration;

    use keelson_proto::etcdserverpb::kv_client::KvClient;
    use keelson_proto::etcdserverpb::watch_client::WatchClient;
    use keelson_proto::etcdserverpb::watch_create_request::FilterType;
    use keelson_proto::etcdserverpb::watch_request::RequestUnion;
    use keelson_proto::etcdserverpb::*;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    pub(super) struct Etcd {
        pub(super) endpoint: String,
        child: Child,
        _dir: tempfile::TempDir,
    }

    impl Etcd {
        pub(super) fn start() -> Etcd {
            let dir = tempfile::tempdir().unwrap();
            let free = || {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            };
            let (client, peer) = (free(), free());
            let endpoint = format!("http://127.0.0.1:{client}");
            let child = Command::new("/usr/bin/etcd")
                .args(["--data-dir", dir.path().to_str().unwrap()])
                .args([
                    "--listen-client-urls",
                    &endpoint,
                    "--advertise-client-urls",
                    &endpoint,
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args([
                    "--initial-cluster",
                    &format!("default=http://127.0.0.1:{peer}"),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("etcd starts");
            Etcd {
                endpoint,
                child,
                _dir: dir,
            }
        }
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn create(key: &str, end: &str, start: i64) -> WatchCreateRequest {
        WatchCreateRequest {
            key: key.as_bytes().to_vec().into(),
            range_end: end.as_bytes().to_vec().into(),
            start_revision: start,
            ..Default::default()
        }
    }

    fn show(r: &WatchResponse) -> String {
        let evs: Vec<String> = r
            .events
            .iter()
            .map(|e| {
                let kv = e.kv.clone().unwrap_or_default();
                let prev = e
                    .prev_kv
                    .as_ref()
                    .map(|p| String::from_utf8_lossy(&p.value).into_owned());
                format!(
                    "{}:{}={}@{}/{}/{} prev={prev:?}",
                    e.r#type,
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value),
                    kv.mod_revision,
                    kv.create_revision,
                    kv.version
                )
            })
            .collect();
        format!(
            "id={} rev={} created={} canceled={} compact={} reason={:?} fragment={} events={evs:?}",
            r.watch_id,
            r.header.as_ref().map_or(-99, |h| h.revision),
            r.created,
            r.canceled,
            r.compact_revision,
            r.cancel_reason,
            r.fragment
        )
    }

    /// Runs the script; returns one line per step: the responses that step produced, sorted
    /// (watchers' relative order within a step is not specified).
    pub(super) async fn run(endpoint: &str) -> Vec<String> {
        let mut kv = loop {
            match KvClient::connect(endpoint.to_string()).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        // etcd may need a moment to elect itself.
        while kv
            .range(RangeRequest {
                key: "x".into(),
                ..Default::default()
            })
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let put = |k: &str, v: &str| PutRequest {
            key: k.as_bytes().to_vec().into(),
            value: v.as_bytes().to_vec().into(),
            ..Default::default()
        };
        kv.put(put("a", "1")).await.unwrap();
        kv.put(put("b", "2")).await.unwrap();
        kv.put(put("a", "3")).await.unwrap();
        kv.delete_range(DeleteRangeRequest {
            key: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut w = WatchClient::connect(endpoint.to_string()).await.unwrap();
        let (tx, rx) = mpsc::channel(16);
        // grpc-go sends a stream's headers with its first message, so etcd answers the call
        // only after a first request.
        let first = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create("a", "", 0))),
        };
        tx.send(first).await.unwrap();
        let mut out = w.watch(ReceiverStream::new(rx)).await.unwrap().into_inner();
        let mut steps = vec![];
        let step = |reqs: Vec<RequestUnion>| {
            let tx = tx.clone();
            async move {
                for r in reqs {
                    tx.send(WatchRequest {
                        request_union: Some(r),
                    })
                    .await
                    .unwrap();
                }
            }
        };
        // Collects what arrives until the stream is idle for a moment (a probe, not a test of
        // timing: both servers answer within milliseconds).
        async fn drain(out: &mut tonic::Streaming<WatchResponse>) -> String {
            let mut got = vec![];
            while let Ok(Ok(Some(r))) =
                tokio::time::timeout(Duration::from_millis(700), out.message()).await
            {
                got.push(show(&r));
            }
            got.sort();
            got.join(" | ")
        }
        use RequestUnion::*;
        steps.push(drain(&mut out).await);
        step(vec![CreateRequest(create("", "\0", 1))]).await;
        steps.push(drain(&mut out).await);
        step(vec![CreateRequest(WatchCreateRequest {
            watch_id: 7,
            prev_kv: true,
            ..create("b", "", 2)
        })])
        .await;
        steps.push(drain(&mut out).await);
        step(vec![CreateRequest(WatchCreateRequest {
            watch_id: 7,
            ..create("z", "", 0)
        })])
        .await;
        steps.push(drain(&mut out).await);
        step(vec![CreateRequest(create("b", "a", 0))]).await;
        steps.push(drain(&mut out).await);
        step(vec![
            CancelRequest(WatchCancelRequest { watch_id: 99 }),
            CancelRequest(WatchCancelRequest { watch_id: 0 }),
        ])
        .await;
        steps.push(drain(&mut out).await);
        kv.compact(CompactionRequest {
            revision: 3,
            physical: true,
        })
        .await
        .unwrap();
        step(vec![CreateRequest(create("a", "", 2))]).await;
        steps.push(drain(&mut out).await);
        step(vec![CreateRequest(create("a", "", 3))]).await;
        steps.push(drain(&mut out).await);
        step(vec![CreateRequest(create("a", "", -1))]).await;
        steps.push(drain(&mut out).await);
        step(vec![CreateRequest(WatchCreateRequest {
            filters: vec![FilterType::Noput as i32],
            ..create("", "\0", 0)
        })])
        .await;
        steps.push(drain(&mut out).await);
        kv.txn(TxnRequest {
            success: ["a", "c", "d"]
                .iter()
                .map(|k| RequestOp {
                    request: Some(request_op::Request::RequestPut(put(k, "t"))),
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
        steps.push(drain(&mut out).await);
        kv.delete_range(DeleteRangeRequest {
            key: "c".into(),
            range_end: "e".into(),
            prev_kv: true,
        })
        .await
        .unwrap();
        steps.push(drain(&mut out).await);
        step(vec![ProgressRequest(WatchProgressRequest {})]).await;
        steps.push(drain(&mut out).await);
        drop(tx);
        steps
    }
}
