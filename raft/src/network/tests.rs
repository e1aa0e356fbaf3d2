//! Three members in one process, talking real gRPC over loopback: each with its own durable log
//! (a temp dir), the test state machine (`mem_store.rs`) and a `RaftPeer` server on a port
//! picked by binding `127.0.0.1:0`.
//!
//! The message limit is tiny (4 KiB) so that ordinary test traffic exercises the paths big
//! clusters need: appends cut to a prefix that fits, and snapshots sent as many chunks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use keelson_proto::etcdserverpb::PutRequest;
use keelson_proto::keelsonraftpb::raft_peer_client::RaftPeerClient;
use keelson_proto::keelsonraftpb::RaftMessage;
use keelson_store::Command;
use openraft::async_runtime::WatchReceiver;
use openraft::{Config, Raft, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;
use tonic::Code;

use super::{snapshot, PeerConfig, PeerNetwork, TARGET_HEADER};
use crate::log::LogStore;
use crate::mem_store::MemStore;
use crate::peer_service::{serve_peers, PeerService};
use crate::state_machine::StateMachine;
use crate::types::{LogId, Member, Outcome, Proposal, TypeConfig, Vote};

const ELECTION_TIMEOUT_MAX: u64 = 400;
/// Long enough for anything the tests wait for; a hang fails instead of blocking the suite.
const PATIENCE: Option<Duration> = Some(Duration::from_secs(20));

type TestRaft = Raft<TypeConfig, StateMachine<MemStore>>;

fn raft_config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: ELECTION_TIMEOUT_MAX,
        install_snapshot_timeout: 2000,
        // A snapshot every 20 entries, after which the log before it is purged entirely: a
        // member that misses more than that can only catch up by snapshot.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(20),
        max_in_snapshot_log_to_keep: 0,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

fn peer_config() -> PeerConfig {
    PeerConfig {
        max_message_bytes: 4096,
        snapshot_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

/// One running member.
struct Running {
    raft: TestRaft,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// A member: what survives its restarts (address, log directory, store) and, while it runs,
/// its raft and server.
struct Node {
    id: u64,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    store: Arc<MemStore>,
    running: Option<Running>,
}

impl Node {
    fn raft(&self) -> &TestRaft {
        &self.running.as_ref().expect("member running").raft
    }

    fn member(&self) -> Member {
        Member {
            name: format!("m{}", self.id),
            peer_urls: vec![format!("http://{}", self.addr)],
            client_urls: vec![],
        }
    }

    async fn start(&mut self, listener: TcpListener) {
        let log = LogStore::open(self.dir.path()).await.unwrap();
        let sm = StateMachine::new(Arc::clone(&self.store)).await.unwrap();
        let net = PeerNetwork::new(self.id, peer_config());
        let raft = Raft::new(self.id, raft_config(), net, log, sm)
            .await
            .unwrap();
        let (stop_server, stopped) = oneshot::channel::<()>();
        let service = PeerService::new(raft.clone(), self.id, peer_config());
        let server = tokio::spawn(serve_peers(service, listener, async {
            stopped.await.ok();
        }));
        self.running = Some(Running {
            raft,
            stop_server,
            server,
        });
    }

    /// Stops raft and the peer server, as a crash would (the log and store stay).
    async fn stop(&mut self) {
        let Running {
            raft,
            stop_server,
            server,
        } = self.running.take().expect("member running");
        raft.shutdown().await.unwrap();
        stop_server.send(()).ok();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("peer server stops")
            .unwrap()
            .unwrap();
    }
}

async fn start_cluster() -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut listeners = Vec::new();
    for id in 1..=3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        nodes.push(Node {
            id,
            addr: listener.local_addr().unwrap(),
            dir: tempfile::tempdir().unwrap(),
            store: Arc::default(),
            running: None,
        });
        listeners.push(listener);
    }
    for (node, listener) in nodes.iter_mut().zip(listeners) {
        node.start(listener).await;
    }
    let members: BTreeMap<u64, Member> = nodes.iter().map(|n| (n.id, n.member())).collect();
    nodes[0].raft().initialize(members).await.unwrap();
    nodes
}

/// The leader all running members agree on.
async fn agreed_leader(nodes: &[Node], timeout: Option<Duration>, not: Option<u64>) -> u64 {
    let mut leaders = Vec::new();
    for n in nodes.iter().filter(|n| n.running.is_some()) {
        let m = n
            .raft()
            .wait(timeout)
            .metrics(
                |m| m.current_leader.is_some() && m.current_leader != not,
                "a leader",
            )
            .await
            .unwrap_or_else(|e| panic!("member {}: {e}", n.id));
        leaders.push(m.current_leader.unwrap());
    }
    leaders.dedup();
    assert_eq!(
        leaders.len(),
        1,
        "members disagree on the leader: {leaders:?}"
    );
    leaders[0]
}

fn put(key: &str, value_bytes: usize) -> Proposal {
    Proposal::new(&Command::Put(PutRequest {
        key: key.to_string().into(),
        value: vec![b'v'; value_bytes].into(),
        ..Default::default()
    }))
}

/// Writes `keys` through the leader, concurrently (so the leader batches entries); returns the
/// log id of the last.
async fn write_all(leader: &TestRaft, keys: impl Iterator<Item = String>) -> LogId {
    // A new leader takes writes only once a quorum has acknowledged it (its lease).
    leader
        .wait(PATIENCE)
        .leader_with_quorum_acked(None, "leader lease")
        .await
        .unwrap();
    let writes = keys.map(|k| async move { leader.client_write(put(&k, 300)).await });
    let mut last = None;
    for resp in join_all(writes).await {
        let resp = resp.expect("written");
        assert!(matches!(resp.data, Outcome::Applied(_)), "{:?}", resp.data);
        last = last.max(Some(resp.log_id));
    }
    last.expect("at least one write")
}

/// Waits until every running member applied `upto`, then checks they hold the same data.
async fn assert_same_state(nodes: &[Node], upto: LogId, keys: &[String]) {
    for n in nodes.iter().filter(|n| n.running.is_some()) {
        n.raft()
            .wait(PATIENCE)
            .applied_index_at_least(Some(upto.index), "applied")
            .await
            .unwrap_or_else(|e| panic!("member {}: {e}", n.id));
    }
    let running: Vec<&Node> = nodes.iter().filter(|n| n.running.is_some()).collect();
    for n in &running {
        assert_eq!(
            n.store.revision(),
            running[0].store.revision(),
            "member {}",
            n.id
        );
        for k in keys {
            assert_eq!(
                n.store.get(k.as_bytes()),
                Some(vec![b'v'; 300]),
                "member {} key {k}",
                n.id
            );
        }
    }
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:03}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_and_elect_a_new_leader_when_it_dies() {
    let mut nodes = start_cluster().await;
    let leader = agreed_leader(&nodes, PATIENCE, None).await;
    let li = nodes.iter().position(|n| n.id == leader).unwrap();

    let first = keys("a", 40);
    let last = write_all(nodes[li].raft(), first.iter().cloned()).await;
    assert_same_state(&nodes, last, &first).await;
    assert_eq!(nodes[0].store.revision(), 40);

    nodes[li].stop().await;
    let bound = Duration::from_millis(3 * ELECTION_TIMEOUT_MAX);
    let successor = agreed_leader(&nodes, Some(bound), Some(leader)).await;
    assert_ne!(successor, leader);

    let si = nodes.iter().position(|n| n.id == successor).unwrap();
    let second = keys("b", 10);
    let last = write_all(nodes[si].raft(), second.iter().cloned()).await;
    assert_same_state(&nodes, last, &[first, second].concat()).await;

    for n in nodes.iter_mut().filter(|n| n.running.is_some()) {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_purged_log_catches_up_by_snapshot_over_grpc() {
    let mut nodes = start_cluster().await;
    let leader = agreed_leader(&nodes, PATIENCE, None).await;
    let li = nodes.iter().position(|n| n.id == leader).unwrap();
    let fi = (li + 1) % nodes.len();

    let first = keys("a", 5);
    let last = write_all(nodes[li].raft(), first.iter().cloned()).await;
    assert_same_state(&nodes, last, &first).await;
    let behind = nodes[fi]
        .raft()
        .metrics()
        .borrow_watched()
        .last_applied
        .unwrap();
    nodes[fi].stop().await;

    // Far more than the snapshot threshold: the leader snapshots and purges its log past where
    // the stopped member is.
    let second = keys("b", 60);
    let last = write_all(nodes[li].raft(), second.iter().cloned()).await;
    nodes[li]
        .raft()
        .wait(PATIENCE)
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > behind.index),
            "log purged past the stopped member",
        )
        .await
        .unwrap();

    let listener = TcpListener::bind(nodes[fi].addr).await.unwrap();
    nodes[fi].start(listener).await;
    let caught_up = nodes[fi]
        .raft()
        .wait(PATIENCE)
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index > behind.index),
            "snapshot installed",
        )
        .await
        .unwrap();
    assert!(caught_up.last_applied >= caught_up.snapshot);
    assert_same_state(&nodes, last, &[first, second].concat()).await;
    assert_eq!(nodes[fi].store.revision(), 65);

    for n in nodes.iter_mut() {
        n.stop().await;
    }
}

/// A server of an uninitialized member: what it refuses, it refuses before raft sees it.
async fn lone_server() -> (Node, RaftPeerClient<tonic::transport::Channel>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut node = Node {
        id: 7,
        addr: listener.local_addr().unwrap(),
        dir: tempfile::tempdir().unwrap(),
        store: Arc::default(),
        running: None,
    };
    node.start(listener).await;
    let client = RaftPeerClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    (node, client)
}

fn addressed_to<T>(id: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert(TARGET_HEADER, MetadataValue::try_from(id).unwrap());
    req
}

#[tokio::test]
async fn the_peer_service_refuses_corrupt_snapshots_and_calls_for_other_members() {
    let (mut node, mut client) = lone_server().await;

    let meta = Default::default();
    let data = bytes::Bytes::from(vec![5u8; 10_000]);
    let mut chunks = snapshot::chunks(&Vote::new(1, 1), &meta, &data, 1000).unwrap();
    let mut damaged = chunks[5].data.to_vec();
    damaged[0] ^= 1;
    chunks[5].data = damaged.into();
    let err = client
        .install_snapshot(addressed_to("7", futures::stream::iter(chunks)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(
        err.message()
            .starts_with("snapshot chunk at offset 4000 is corrupt"),
        "{err:?}"
    );

    let vote = crate::network::encode(&openraft::raft::VoteRequest::<TypeConfig>::new(
        Vote::new(1, 1),
        None,
    ))
    .unwrap();
    let err = client
        .vote(addressed_to("8", RaftMessage { payload: vote }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "this is member 7, not member 8: the peer URL reaches another member"
    );

    let err = client
        .vote(addressed_to(
            "7",
            RaftMessage {
                payload: vec![0xff].into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    node.stop().await;
}
