//! The KV and Lease services end to end: a real `Store` on 127.0.0.1:0, driven by the
//! `etcd-client` crate (the client Rust users of etcd have). Errors are asserted by the exact
//! gRPC code and message, because that is how etcd clients recognise them.

use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, LeaseGrantOptions,
    LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use keelson_store::{Store, StoreConfig};
use tokio::sync::oneshot;
use tonic::Code;

/// A running in-memory store and a client connected to it.
struct Server {
    client: Client,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<keelson_store::Result<()>>,
}

impl Server {
    async fn start() -> Server {
        let cfg = StoreConfig {
            listen_client_urls: vec!["http://127.0.0.1:0".into()],
            data_dir: None,
            ..Default::default()
        };
        let store = Store::open(cfg).await.expect("store opens");
        let addr = store.client_addrs()[0];
        let (shutdown, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(store.serve(async {
            let _ = rx.await;
        }));
        // The listener is bound before serve starts, so connecting cannot race the bind.
        let client = Client::connect([format!("http://{addr}")], None)
            .await
            .expect("client connects");
        Server {
            client,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        drop(self.client);
        let _ = self.shutdown.send(());
        self.task
            .await
            .expect("serve task")
            .expect("serve returns Ok");
    }
}

/// Asserts `r` failed with etcd's gRPC `code` and exact `message`.
#[track_caller]
fn assert_status<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>, code: Code, message: &str) {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => {
            assert_eq!((s.code(), s.message()), (code, message), "status {s:?}");
        }
        other => panic!("expected {code:?} {message:?}, got {other:?}"),
    }
}

fn rev<T: HasHeader>(r: &T) -> i64 {
    r.revision()
}

trait HasHeader {
    fn revision(&self) -> i64;
}

macro_rules! has_header {
    ($($t:ty),*) => {$(
        impl HasHeader for $t {
            fn revision(&self) -> i64 {
                self.header().expect("every response has a header").revision()
            }
        }
    )*};
}

has_header!(
    etcd_client::PutResponse,
    etcd_client::GetResponse,
    etcd_client::DeleteResponse,
    etcd_client::TxnResponse,
    etcd_client::CompactionResponse,
    etcd_client::LeaseRevokeResponse
);

#[tokio::test]
async fn put_get_delete_txn_compact() {
    let mut s = Server::start().await;
    let c = &mut s.client;

    let r = c.put("a", "1", None).await.unwrap();
    assert_eq!(rev(&r), 2, "first write of a fresh store is revision 2");
    let h = r.header().unwrap();
    assert!(
        h.cluster_id() != 0 && h.member_id() != 0,
        "header names the member: {h:?}"
    );

    let r = c
        .put("a", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(rev(&r), 3);
    let prev = r.prev_key().expect("prev_kv asked for");
    assert_eq!(
        (prev.value(), prev.mod_revision(), prev.version()),
        (&b"1"[..], 2, 1)
    );

    c.put("b", "1", None).await.unwrap();
    c.put("c", "1", None).await.unwrap();

    let r = c.get("a", None).await.unwrap();
    assert_eq!(rev(&r), 5);
    assert_eq!(r.count(), 1);
    let kv = &r.kvs()[0];
    assert_eq!((kv.key(), kv.value()), (&b"a"[..], &b"2"[..]));
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (2, 3, 2)
    );

    let r = c
        .get("a", Some(GetOptions::new().with_prefix().with_limit(1)))
        .await
        .unwrap();
    assert_eq!((r.count(), r.kvs().len(), r.more()), (1, 1, false));
    let r = c
        .get("a", Some(GetOptions::new().with_from_key().with_limit(2)))
        .await
        .unwrap();
    assert_eq!((r.count(), r.kvs().len(), r.more()), (3, 2, true));
    let r = c
        .get("a", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"1");
    assert_eq!(
        rev(&r),
        5,
        "a historical read's header carries the current revision"
    );

    let r = c
        .delete(
            "b",
            Some(DeleteOptions::new().with_range("d").with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!((r.deleted(), rev(&r)), (2, 6));
    assert_eq!(
        r.prev_kvs().iter().map(|kv| kv.key()).collect::<Vec<_>>(),
        vec![&b"b"[..], &b"c"[..]]
    );
    let r = c.delete("b", None).await.unwrap();
    assert_eq!(
        (r.deleted(), rev(&r)),
        (0, 6),
        "deleting nothing uses no revision"
    );

    // Create-if-absent: the apiserver's txn shape.
    let create = |k: &str, v: &str| {
        Txn::new()
            .when([Compare::mod_revision(k, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, v, None)])
            .or_else([TxnOp::get(k, None)])
    };
    let r = c.txn(create("n", "1")).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(rev(&r), 7);
    let r = c.txn(create("n", "2")).await.unwrap();
    assert!(!r.succeeded());
    assert_eq!(rev(&r), 7, "a txn that writes nothing uses no revision");
    match &r.op_responses()[0] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"1"),
        other => panic!("expected the failure branch's get, got {other:?}"),
    }
    // A read after a write inside one txn sees the write.
    let r = c
        .txn(Txn::new().and_then([
            TxnOp::put("t", "x", None),
            TxnOp::get("t", None),
            TxnOp::delete("n", None),
        ]))
        .await
        .unwrap();
    assert_eq!(rev(&r), 8);
    match &r.op_responses()[1] {
        TxnOpResponse::Get(g) => assert_eq!(
            (g.kvs()[0].value(), g.kvs()[0].mod_revision()),
            (&b"x"[..], 8)
        ),
        other => panic!("expected a get, got {other:?}"),
    }

    let r = c.compact(5, None).await.unwrap();
    assert_eq!(rev(&r), 8);
    assert_status(
        c.get("a", Some(GetOptions::new().with_revision(4))).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let r = c
        .get("a", Some(GetOptions::new().with_revision(5)))
        .await
        .unwrap();
    assert_eq!(
        r.kvs()[0].value(),
        b"2",
        "the compacted revision itself stays readable"
    );
    assert_status(
        c.compact(5, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        c.compact(9, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    assert_status(
        c.get("a", Some(GetOptions::new().with_revision(9))).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    s.stop().await;
}

#[tokio::test]
async fn invalid_requests_get_etcds_errors() {
    let mut s = Server::start().await;
    let c = &mut s.client;
    c.put("exists", "1", None).await.unwrap();

    // 1.6 MiB is over the 1.5 MiB --max-request-bytes but under the gRPC limit (+512 KiB), so
    // it is the store, not the transport, that refuses it.
    let big = vec![b'x'; 1024 * 1024 * 16 / 10];
    assert_status(
        c.put("big", big, None).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );

    assert_status(
        c.put("", "1", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    assert_status(
        c.get("", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    assert_status(
        c.delete("", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    assert_status(
        c.txn(Txn::new().when([Compare::version("", CompareOp::Equal, 0)]))
            .await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );

    let ops: Vec<TxnOp> = (0..129)
        .map(|i| TxnOp::put(format!("k{i}"), "v", None))
        .collect();
    assert_status(
        c.txn(Txn::new().and_then(ops)).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    let ops: Vec<TxnOp> = (0..128)
        .map(|i| TxnOp::put(format!("k{i}"), "v", None))
        .collect();
    c.txn(Txn::new().and_then(ops))
        .await
        .expect("128 ops is the limit, not over it");

    assert_status(
        c.txn(Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]))
            .await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    assert_status(
        c.txn(Txn::new().and_then([
            TxnOp::delete("a", Some(DeleteOptions::new().with_range("z"))),
            TxnOp::put("d", "2", None),
        ]))
        .await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );

    assert_status(
        c.put("k", "1", Some(PutOptions::new().with_lease(0x1234)))
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    assert_status(
        c.txn(Txn::new().and_then([TxnOp::put(
            "k",
            "1",
            Some(PutOptions::new().with_lease(0x1234)),
        )]))
        .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    assert_status(
        c.lease_revoke(0x1234).await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );

    assert_status(
        c.put("exists", "1", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    );
    assert_status(
        c.put(
            "exists",
            "",
            Some(PutOptions::new().with_ignore_lease().with_lease(5)),
        )
        .await,
        Code::InvalidArgument,
        "etcdserver: lease is provided",
    );
    assert_status(
        c.put("missing", "", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );

    // None of the refused writes used a revision: 2 = "exists", 3 = the 128-op txn.
    let r = c.get("exists", None).await.unwrap();
    assert_eq!(rev(&r), 3);
    s.stop().await;
}

#[tokio::test]
async fn lease_grant_keepalive_timetolive_leases_revoke() {
    let mut s = Server::start().await;
    let c = &mut s.client;

    let g = c.lease_grant(60, None).await.unwrap();
    assert!(g.id() > 0, "server-chosen IDs are positive");
    assert_eq!(g.ttl(), 60);
    let id = g.id();
    let g = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(77)))
        .await
        .unwrap();
    assert_eq!((g.id(), g.ttl()), (77, 30));
    assert_status(
        c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(77)))
            .await,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );
    assert_status(
        c.lease_grant(9_000_000_001, None).await,
        Code::OutOfRange,
        "etcdserver: too large lease TTL",
    );
    let g = c.lease_grant(1, None).await.unwrap();
    assert_eq!(
        g.ttl(),
        2,
        "TTLs are raised to ceil(1.5 x election timeout)"
    );

    c.put("l1", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    c.put("l2", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    c.put("other", "v", Some(PutOptions::new().with_lease(77)))
        .await
        .unwrap();

    let t = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(t.granted_ttl(), 60);
    assert!((58..=60).contains(&t.ttl()), "remaining {}", t.ttl());
    assert_eq!(t.keys(), &[b"l1".to_vec(), b"l2".to_vec()]);
    let t = c.lease_time_to_live(id, None).await.unwrap();
    assert!(t.keys().is_empty(), "keys only when asked for");
    let t = c.lease_time_to_live(0x5555, None).await.unwrap();
    assert_eq!(t.ttl(), -1, "an unknown lease has TTL -1, not an error");

    {
        // Scoped: an open keepalive stream would hold the server's graceful shutdown.
        let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
        keeper.keep_alive().await.unwrap();
        let k = stream.message().await.unwrap().expect("a keepalive answer");
        assert_eq!((k.id(), k.ttl()), (id, 60));
    }
    // The server answers a keepalive of an unknown lease with TTL 0 (not an error); the
    // client turns that first answer into this error.
    match c.lease_keep_alive(0x5555).await {
        Err(etcd_client::Error::LeaseKeepAliveError(m)) => assert_eq!(m, "lease not found"),
        other => panic!("expected the TTL-0 answer, got {:?}", other.map(|_| ())),
    }

    let mut ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&id) && ids.contains(&77));

    let before = rev(&c.get("l1", None).await.unwrap());
    let r = c.lease_revoke(id).await.unwrap();
    assert_eq!(rev(&r), before + 1, "both keys deleted in one revision");
    let r = c
        .get("l", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(r.count(), 0);
    assert_eq!(
        c.get("other", None).await.unwrap().count(),
        1,
        "other leases' keys stay"
    );
    let ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    assert!(!ids.contains(&id));
    assert_eq!(c.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
    s.stop().await;
}

#[tokio::test]
async fn an_expired_lease_deletes_its_keys() {
    let mut s = Server::start().await;
    let c = &mut s.client;
    let granted = Instant::now();
    let id = c.lease_grant(2, None).await.unwrap().id();
    c.put("e1", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    let last = rev(&c
        .put("e2", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap());

    // Polled rather than watched: this test does not depend on the Watch service. The bound
    // is generous (TTL 2 s + the 500 ms expiry tick + slow CI).
    let deadline = granted + Duration::from_secs(15);
    let gone = loop {
        let r = c
            .get("e", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        if r.count() == 0 {
            break r;
        }
        assert!(Instant::now() < deadline, "lease {id:x} did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        granted.elapsed() >= Duration::from_secs(2),
        "expired early: {:?}",
        granted.elapsed()
    );
    assert_eq!(
        rev(&gone),
        last + 1,
        "one revision deletes every key of the lease"
    );
    assert_eq!(c.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
    s.stop().await;
}

/// etcd stops its gRPC server gracefully but force-closes streams still open after its request
/// timeout (`embed/serve.go` stopServers: GracefulStop, then Stop after ~7 s), so a client
/// holding a watch or keepalive stream cannot keep a member from shutting down.
#[tokio::test]
async fn shutdown_does_not_wait_forever_for_open_streams() {
    let mut s = Server::start().await;
    let id = s.client.lease_grant(60, None).await.unwrap().id();
    let (_keeper, _stream) = s.client.lease_keep_alive(id).await.unwrap();
    let Server {
        client: _client,
        shutdown,
        task,
    } = s;
    let _ = shutdown.send(());
    match tokio::time::timeout(Duration::from_secs(15), task).await {
        Ok(r) => r.expect("serve task").expect("serve returns Ok"),
        Err(_) => {
            panic!("serve still running 15 s after shutdown while a keepalive stream is open")
        }
    }
}
