//! The state machine adapter over an in-memory store: directly, and inside a real one-member
//! openraft cluster writing through the durable log.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use keelson_proto::etcdserverpb::{PutRequest, PutResponse, ResponseHeader};
use keelson_store::{ApplyResponse, Command, Error};
use openraft::entry::RaftEntry;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse};
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{Raft, ServerState};

use super::StateMachine;
use crate::log::LogStore;
use crate::mem_store::MemStore;
use crate::types::{Entry, LogId, Member, Membership, Outcome, Proposal, TypeConfig, Vote};

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

fn put_cmd(key: &str, value: &str) -> Command {
    Command::Put(PutRequest {
        key: key.to_string().into(),
        value: value.to_string().into(),
        ..Default::default()
    })
}

fn put(index: u64, key: &str, value: &str) -> Entry {
    Entry::new_normal(log_id(1, index), Proposal::new(&put_cmd(key, value)))
}

fn voters(ids: &[u64]) -> Membership {
    Membership::new_with_defaults(vec![ids.iter().copied().collect()], [])
}

async fn apply(sm: &mut StateMachine<MemStore>, entries: Vec<Entry>) -> std::io::Result<()> {
    sm.apply(stream::iter(entries.into_iter().map(|e| Ok((e, None)))))
        .await
}

#[tokio::test]
async fn apply_changes_the_store_and_stores_where_it_is_with_the_data() {
    let store = Arc::new(MemStore::default());
    let mut sm = StateMachine::new(Arc::clone(&store)).await.unwrap();
    let entries = vec![
        Entry::new_blank(log_id(1, 1)),
        Entry::new_membership(log_id(1, 2), voters(&[1, 2])),
        put(3, "a", "1"),
        put(4, "b", "2"),
    ];
    apply(&mut sm, entries).await.unwrap();
    assert_eq!(store.get(b"a").as_deref(), Some(&b"1"[..]));
    assert_eq!(store.revision(), 2);
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 4)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 2)));
    assert_eq!(membership.membership(), &voters(&[1, 2]));

    // A restarted member reads the same position back from the store.
    let mut again = StateMachine::new(Arc::clone(&store)).await.unwrap();
    assert_eq!(again.applied_state().await.unwrap(), (applied, membership));

    // Blank entries move the applied position too, without commands.
    apply(&mut sm, vec![Entry::new_blank(log_id(2, 5))])
        .await
        .unwrap();
    let mut again = StateMachine::new(Arc::clone(&store)).await.unwrap();
    assert_eq!(again.applied_state().await.unwrap().0, Some(log_id(2, 5)));
}

#[tokio::test]
async fn an_undecodable_command_stops_the_member_before_anything_is_applied() {
    let store = Arc::new(MemStore::default());
    let mut sm = StateMachine::new(Arc::clone(&store)).await.unwrap();
    let bad = Entry::new_normal(
        log_id(1, 2),
        Proposal::from_bytes(Bytes::from_static(&[99])),
    );
    let err = apply(&mut sm, vec![put(1, "a", "1"), bad])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("undecodable command"), "{err}");
    assert_eq!(store.get(b"a"), None);
    assert_eq!(sm.applied_state().await.unwrap().0, None);
}

#[tokio::test]
async fn a_snapshot_carries_the_data_and_its_position_to_another_member() {
    let leader_store = Arc::new(MemStore::default());
    let mut leader = StateMachine::new(Arc::clone(&leader_store)).await.unwrap();
    let entries = vec![
        Entry::new_membership(log_id(1, 1), voters(&[1, 2, 3])),
        put(2, "k", "v"),
    ];
    apply(&mut leader, entries).await.unwrap();
    let snap = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 2)));

    let follower_store = Arc::new(MemStore::default());
    let mut follower = StateMachine::new(Arc::clone(&follower_store))
        .await
        .unwrap();
    follower
        .install_snapshot(&snap.meta, snap.snapshot.clone())
        .await
        .unwrap();
    assert_eq!(follower_store.get(b"k").as_deref(), Some(&b"v"[..]));
    assert_eq!(
        follower.applied_state().await.unwrap(),
        leader.applied_state().await.unwrap()
    );
    let current = follower
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("kept");
    assert_eq!(current.meta, snap.meta);

    // Metadata that does not describe the data is refused.
    let mut lying = snap.meta.clone();
    lying.last_log_id = Some(log_id(1, 9));
    let mut other = StateMachine::new(Arc::new(MemStore::default()))
        .await
        .unwrap();
    assert!(other.install_snapshot(&lying, snap.snapshot).await.is_err());
}

/// A network for a one-member cluster: there is nobody to reach.
struct Nobody;

impl RaftNetworkFactory<TypeConfig> for Nobody {
    type Network = Nobody;

    async fn new_client(&mut self, _target: u64, _node: &Member) -> Nobody {
        Nobody
    }
}

fn unreachable() -> Unreachable<TypeConfig> {
    Unreachable::from_string("single-member test cluster")
}

impl RaftNetworkV2<TypeConfig> for Nobody {
    type SnapshotData = Bytes;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(unreachable().into())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(unreachable().into())
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot<openraft::impls::leader_id_adv::LeaderId<u64, u64>, u64, Member, Bytes>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(unreachable().into())
    }
}

async fn start(
    dir: &std::path::Path,
    store: &Arc<MemStore>,
) -> Raft<TypeConfig, StateMachine<MemStore>> {
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    };
    let log = LogStore::open(dir).await.unwrap();
    let sm = StateMachine::new(Arc::clone(store)).await.unwrap();
    Raft::new(1, Arc::new(config.validate().unwrap()), Nobody, log, sm)
        .await
        .unwrap()
}

/// Writes `cmd`; returns its log id and outcome.
async fn write(raft: &Raft<TypeConfig, StateMachine<MemStore>>, cmd: &Command) -> (LogId, Outcome) {
    let resp = raft
        .client_write(Proposal::new(cmd))
        .await
        .expect("written");
    (resp.log_id, resp.data)
}

fn put_answer(revision: i64) -> Outcome {
    Outcome::Applied(ApplyResponse::Put(PutResponse {
        header: Some(ResponseHeader {
            revision,
            ..Default::default()
        }),
        prev_kv: None,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_member_cluster_answers_writes_and_comes_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The store outlives the raft instance, as the durable store does across a restart.
    let store = Arc::new(MemStore::default());
    let timeout = Some(Duration::from_secs(10));

    let raft = start(dir.path(), &store).await;
    raft.initialize(BTreeMap::from([(1, Member::default())]))
        .await
        .unwrap();
    raft.wait(timeout)
        .state(ServerState::Leader, "elected")
        .await
        .unwrap();
    assert_eq!(write(&raft, &put_cmd("k", "v1")).await.1, put_answer(1));
    let (before, rejected) = write(&raft, &put_cmd("", "v")).await;
    assert_eq!(rejected, Outcome::Rejected(Error::EmptyKey));
    assert_eq!(store.revision(), 1, "a rejected command changes nothing");
    raft.shutdown().await.unwrap();

    let raft = start(dir.path(), &store).await;
    raft.wait(timeout)
        .state(ServerState::Leader, "re-elected from its own log")
        .await
        .unwrap();
    let (after, answer) = write(&raft, &put_cmd("k", "v2")).await;
    assert_eq!(answer, put_answer(2));
    assert_eq!(store.get(b"k").as_deref(), Some(&b"v2"[..]));
    assert!(
        after.index > before.index,
        "the log went on: {before} then {after}"
    );
    raft.shutdown().await.unwrap();
}

#[test]
fn membership_entries_record_who_they_removed() {
    use std::collections::BTreeSet;

    use super::AppliedState;

    let of = |ids: &[u64]| {
        Membership::new(
            vec![ids.iter().copied().collect()],
            ids.iter()
                .map(|&i| (i, Member::default()))
                .collect::<BTreeMap<_, _>>(),
        )
        .unwrap()
    };
    let at = |i| openraft::testing::log_id::<crate::types::TypeConfig>(1, 1, i);
    let mut st = AppliedState::default();
    st.change_membership(at(1), &of(&[1, 2, 3]));
    assert!(st.removed.is_empty());
    st.change_membership(at(2), &of(&[1, 2]));
    assert_eq!(st.removed, BTreeSet::from([3]));
    assert_eq!(st.membership.log_id(), &Some(at(2)));
    // It survives the blob's round trip, and an older blob without it reads as empty.
    let back = AppliedState::decode(Some(st.encode())).unwrap();
    assert_eq!(back, st);
    let mut old: serde_json::Value = serde_json::from_slice(&st.encode()).unwrap();
    old.as_object_mut().unwrap().remove("removed");
    let old = AppliedState::decode(Some(serde_json::to_vec(&old).unwrap())).unwrap();
    assert!(old.removed.is_empty());
    // Listed again, a member leaves the set.
    st.change_membership(at(3), &of(&[1, 2, 3]));
    assert!(st.removed.is_empty());
}
