//! The Maintenance service: Status, Alarm, Defragment, Hash, HashKV, Snapshot, MoveLeader.
//!
//! What etcd 3.4 clients see, and how this member answers it:
//! - Status reports version [`SERVER_VERSION`] (3.5.13 or later makes kube-apiserver use watch
//!   progress requests), this member as leader at term 2, the applied log index as both raft
//!   indexes, and each raised alarm as etcd prints it (`memberID:N alarm:NOSPACE `).
//! - Alarm GET is answered locally; ACTIVATE and DEACTIVATE go through the log, so every
//!   replica raises and clears the same alarms.
//! - HashKV hashes (crc32) the revision records with main revision <= the requested one, in
//!   revision order, as the backend holds them; so members with equal histories (and equal
//!   compactions) report equal hashes. It reads the in-memory key index under its lock, so a
//!   compaction is either wholly in the hash or not at all. `compact_revision` is -1 before
//!   the first compaction, as in etcd.
//! - Snapshot streams the snapshot body (`snapshot.rs`) in 32 KiB chunks, `remaining_bytes`
//!   counting down the body, then the body's sha256 as a last message, as etcd does.
//! - MoveLeader is answered by the proposer (`Propose::move_leader`): only the leader accepts
//!   it, the target must be a voter, and it returns once the target leads; the single member
//!   accepts only itself. The response has no header, as etcd's.
//! - Downgrade does not exist in etcd 3.4, so it answers Unimplemented with gRPC's standard
//!   "unknown method" text.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
use keelson_proto::etcdserverpb::maintenance_server::Maintenance;
use keelson_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use keelson_proto::mvccpb::KeyValue;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::apply::{Command, Response as Applied};
use crate::core::Core;
use crate::error::{Error, Result};
use crate::mvcc::Revision;
use crate::server::kv::unexpected;
use crate::{keys, snapshot};

/// The etcd server version this member reports.
pub(crate) const SERVER_VERSION: &str = "3.5.17";
/// The cluster version this member reports (`/version`'s `etcdcluster`).
pub(crate) const CLUSTER_VERSION: &str = "3.5.0";
/// etcd's snapshot chunk size (`snapshotSendBufferSize`).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

pub(crate) struct MaintenanceService {
    pub(crate) core: Arc<Core>,
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

/// An alarm as etcd's Status errors and `etcdctl alarm list` print it (gogoproto's compact
/// text form, trailing space included).
pub(crate) fn alarm_text(a: &AlarmMember) -> String {
    let name = AlarmType::try_from(a.alarm)
        .map_or_else(|_| a.alarm.to_string(), |t| t.as_str_name().to_string());
    format!("memberID:{} alarm:{} ", a.member_id, name)
}

/// etcd's HashKV: (hash, compact revision or -1, current revision).
pub(crate) fn hash_kv(core: &Core, rev: i64) -> Result<(u32, i64, i64)> {
    let (mut records, compacted, current) = {
        let st = core.mvcc.state.read();
        if rev > 0 && rev <= st.compacted {
            return Err(Error::Compacted);
        }
        if rev > st.current {
            return Err(Error::FutureRev);
        }
        let at = if rev <= 0 { st.current } else { rev };
        let mut records: Vec<(Revision, Bytes, Option<KeyValue>)> = Vec::new();
        for (key, ki) in st.tree.iter() {
            for v in ki.generations.iter().flat_map(|g| g.revs.iter()) {
                if v.rev.main <= at {
                    records.push((v.rev, key.clone(), v.kv.clone()));
                }
            }
        }
        (records, st.compacted, st.current)
    };
    records.sort_unstable_by_key(|r| r.0);
    let mut h = crc32fast::Hasher::new();
    let mut buf = Vec::new();
    for (rev, key, kv) in records {
        let tombstone = kv.is_none();
        h.update(&keys::rev_key(rev, tombstone));
        // A tombstone is stored as its delete event's key-value: the key at the revision.
        let kv = kv.unwrap_or(KeyValue {
            key,
            mod_revision: rev.main,
            ..Default::default()
        });
        buf.clear();
        kv.encode(&mut buf).expect("a Vec grows as needed");
        h.update(&buf);
    }
    Ok((h.finalize(), compacted, current))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let r = req.into_inner();
        match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Get) => {
                let alarms = self
                    .core
                    .alarms
                    .list()
                    .into_iter()
                    .filter(|a| r.alarm == AlarmType::None as i32 || a.alarm == r.alarm)
                    .collect();
                // etcd's applier builds AlarmResponse without a header and the maintenance
                // server passes it through as is (`etcdctl alarm list -w json` prints `{}`).
                Ok(Response::new(AlarmResponse {
                    header: None,
                    alarms,
                }))
            }
            _ => match self.core.propose(Command::Alarm(r)).await? {
                Applied::Alarm(resp) => Ok(Response::new(resp)),
                other => Err(unexpected(other)),
            },
        }
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let core = &self.core;
        let applied = core.applied_index();
        let raft = core
            .proposer()
            .status()
            .unwrap_or(keelson_status(core.member_id, applied));
        Ok(Response::new(StatusResponse {
            header: core.header(0),
            version: SERVER_VERSION.into(),
            db_size: core.backend.size() as i64,
            leader: raft.leader,
            raft_index: raft.commit_index,
            raft_term: raft.term,
            raft_applied_index: raft.applied_index,
            errors: core.alarms.list().iter().map(alarm_text).collect(),
            db_size_in_use: core.backend.size_in_use() as i64,
            is_learner: raft.is_learner,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let backend = self.core.backend.clone();
        tokio::task::spawn_blocking(move || backend.defragment())
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        // etcd answers an empty response (no header).
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let core = self.core.clone();
        let hash = tokio::task::spawn_blocking(move || -> Result<u32> {
            let mut h = crc32fast::Hasher::new();
            for (k, v) in snapshot::consistent_pairs(&core)? {
                h.update(&k);
                h.update(&v);
            }
            Ok(h.finalize())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(HashResponse {
            header: self.core.header(0),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let rev = req.into_inner().revision;
        let core = self.core.clone();
        let (hash, compact_revision, current) =
            tokio::task::spawn_blocking(move || hash_kv(&core, rev))
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(HashKvResponse {
            header: self.core.header(current),
            hash,
            compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let core = self.core.clone();
        let body = tokio::task::spawn_blocking(move || -> Result<Bytes> {
            Ok(Bytes::from(snapshot::encode(&snapshot::consistent_pairs(
                &core,
            )?)))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        let sha = Bytes::copy_from_slice(&snapshot::digest(&body));
        let mut msgs: Vec<SnapshotResponse> = Vec::with_capacity(body.len() / SNAPSHOT_CHUNK + 2);
        let mut sent = 0;
        while sent < body.len() {
            let n = SNAPSHOT_CHUNK.min(body.len() - sent);
            msgs.push(SnapshotResponse {
                header: if sent == 0 { self.core.header(0) } else { None },
                remaining_bytes: (body.len() - sent - n) as u64,
                blob: body.slice(sent..sent + n),
            });
            sent += n;
        }
        msgs.push(SnapshotResponse {
            header: None,
            remaining_bytes: 0,
            blob: sha,
        });
        // The chunks share the body's buffer, so the list costs no copy.
        Ok(Response::new(Box::pin(futures::stream::iter(
            msgs.into_iter().map(Ok),
        ))))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = req.into_inner().target_id;
        match self.core.proposer().move_leader(target) {
            Some(transfer) => transfer.await?,
            // The only member is the leader; moving leadership to it is a no-op, as in etcd.
            None if target == self.core.member_id => {}
            None => return Err(Error::BadLeaderTransferee.into()),
        }
        // etcd answers an empty response (no header).
        Ok(Response::new(MoveLeaderResponse { header: None }))
    }

    async fn downgrade(
        &self,
        _req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented(
            "unknown method Downgrade for service etcdserverpb.Maintenance",
        ))
    }
}

/// The single member's status: leader of term 2, its applied index as the raft index.
fn keelson_status(me: u64, applied: u64) -> crate::node::RaftStatus {
    crate::node::RaftStatus {
        leader: me,
        term: 2,
        commit_index: applied,
        applied_index: applied,
        is_learner: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_text_matches_etcd() {
        let a = AlarmMember {
            member_id: 4107608440975363269,
            alarm: AlarmType::Nospace as i32,
        };
        assert_eq!(
            alarm_text(&a),
            "memberID:4107608440975363269 alarm:NOSPACE "
        );
    }
}
