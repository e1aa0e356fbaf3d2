//! The state machine: applies log commands, in log order, to the MVCC store, the lessor and
//! the alarms.
//!
//! Invariants:
//! - Apply is deterministic: the same commands in the same order give the same state and the
//!   same responses on every member. Errors returned from apply are deterministic ones
//!   ([`Error::is_deterministic`]); a command that fails with one changed nothing.
//! - A group of commands is applied into one backend batch together with the log index of the
//!   last one (`consistent_index`) and, under raft, the raft crate's applied-state blob,
//!   written atomically before any of it becomes visible ([`Applier::commit`]); so after a
//!   crash the store is exactly the state after some prefix of the log, never part of a
//!   command, and it knows which prefix. The single member fsyncs each group before it is
//!   visible; under raft the log is the durable record and the batch is fsynced lazily
//!   ([`Durability`]).
//! - The store has one writer at a time ([`Writer`]): a group is applied, committed and
//!   published (readers, then watchers) under one lock, and a restore holds the same lock, so
//!   revisions reach the watch hub in order, each exactly once.
//! - A non-deterministic failure (an I/O error while committing, corrupt data met while
//!   applying) stops the store for good: the in-memory state may then hold changes that are not
//!   durable, so every later group or restore is refused with an error instead of being built on
//!   them. The member must be restarted; it recovers from what is durable.

mod command;
mod txn;

pub use command::Command;
pub(crate) use txn::check_txn_request;

use std::sync::Arc;

use keelson_proto::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantResponse,
    LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader,
    TxnResponse,
};

use parking_lot::{Mutex, MutexGuard};
use prost::Message;

use crate::alarm::Alarms;
use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::keys;
use crate::lease::Lessor;
use crate::mvcc::{Mvcc, RevisionEvents, WriteTxn};
use crate::watch::WatchHub;

/// What applying a command answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Alarm(AlarmResponse),
    /// An auth change was applied (its response carries only a header).
    Auth,
}

impl Response {
    /// A one-byte tag and the protobuf encoding of the etcd response, as [`Command::encode`]
    /// (`Auth` has no body): lossless, for carrying a response between members.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            Response::Put(r) => (1u8, r.encode_to_vec()),
            Response::DeleteRange(r) => (2, r.encode_to_vec()),
            Response::Txn(r) => (3, r.encode_to_vec()),
            Response::Compact(r) => (4, r.encode_to_vec()),
            Response::LeaseGrant(r) => (5, r.encode_to_vec()),
            Response::LeaseRevoke(r) => (6, r.encode_to_vec()),
            Response::Alarm(r) => (7, r.encode_to_vec()),
            Response::Auth => (8, Vec::new()),
        };
        let mut v = Vec::with_capacity(1 + body.len());
        v.push(tag);
        v.extend_from_slice(&body);
        v
    }

    /// Decodes [`Response::encode`]'s form; anything else is [`Error::Corrupt`].
    pub fn decode(buf: &[u8]) -> Result<Response> {
        let (tag, body) = buf
            .split_first()
            .ok_or_else(|| Error::Corrupt("empty apply response".into()))?;
        let bad = |e: prost::DecodeError| Error::Corrupt(format!("apply response tag {tag}: {e}"));
        Ok(match tag {
            1 => Response::Put(Message::decode(body).map_err(bad)?),
            2 => Response::DeleteRange(Message::decode(body).map_err(bad)?),
            3 => Response::Txn(Message::decode(body).map_err(bad)?),
            4 => Response::Compact(Message::decode(body).map_err(bad)?),
            5 => Response::LeaseGrant(Message::decode(body).map_err(bad)?),
            6 => Response::LeaseRevoke(Message::decode(body).map_err(bad)?),
            7 => Response::Alarm(Message::decode(body).map_err(bad)?),
            8 if body.is_empty() => Response::Auth,
            t => return Err(Error::Corrupt(format!("unknown apply response tag {t}"))),
        })
    }
}

pub(crate) struct Applier {
    pub(crate) mvcc: Arc<Mvcc>,
    pub(crate) lessor: Arc<Lessor>,
    pub(crate) alarms: Arc<Alarms>,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) auth: Arc<crate::auth::AuthStore>,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// gRPC-level validation of a put (etcd's `checkPutRequest`).
pub(crate) fn check_put(p: &PutRequest) -> Result<()> {
    if p.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

impl Applier {
    /// The log index of the last command whose effects are durable in the backend.
    pub(crate) fn consistent_index(&self) -> Result<u64> {
        match self
            .backend
            .get(&keys::meta_key(keys::META_CONSISTENT_INDEX))?
        {
            Some(v) => Ok(keys::unframe_i64(&keys::META_CONSISTENT_INDEX, &v)? as u64),
            None => Ok(0),
        }
    }

    /// Applies one command; its backend records go to `batch` and its revision's events (if it
    /// changed the keyspace) to `events`.
    pub(crate) fn apply(
        &self,
        cmd: &Command,
        batch: &mut WriteBatch,
        events: &mut Vec<RevisionEvents>,
    ) -> Result<Response> {
        match cmd {
            Command::Put(p) => {
                if p.lease != 0 && !self.lessor.exists(p.lease) {
                    return Err(Error::LeaseNotFound);
                }
                let mut txn = self.mvcc.write();
                let resp = self.put_in(&mut txn, p);
                Self::finish(txn, batch, events);
                resp.map(Response::Put)
            }
            Command::DeleteRange(d) => {
                let mut txn = self.mvcc.write();
                let mut resp = self.delete_in(&mut txn, d);
                Self::finish(txn, batch, events);
                resp.header = header(self.mvcc.state.read().pending);
                Ok(Response::DeleteRange(resp))
            }
            Command::Txn(t) => {
                let mut txn = self.mvcc.write();
                let resp = self.apply_txn(&mut txn, t);
                let ev = Self::finish(txn, batch, events);
                resp.map(|mut r| {
                    if let Some(rev) = ev {
                        r.header = header(rev);
                    }
                    Response::Txn(r)
                })
            }
            Command::Compact(c) => {
                let doomed = self.mvcc.compact(c.revision)?;
                for k in doomed {
                    batch.delete(k);
                }
                batch.put(
                    keys::meta_key(keys::META_COMPACTED),
                    keys::frame_i64(c.revision),
                );
                Ok(Response::Compact(CompactionResponse {
                    header: header(self.mvcc.state.read().pending),
                }))
            }
            Command::LeaseGrant(g) => {
                let ttl = self.lessor.grant(g.id, g.ttl, batch)?;
                Ok(Response::LeaseGrant(LeaseGrantResponse {
                    header: header(self.mvcc.state.read().pending),
                    id: g.id,
                    ttl,
                    error: String::new(),
                }))
            }
            Command::LeaseRevoke(r) => {
                let keys = self.lessor.revoke(r.id, batch)?;
                let mut txn = self.mvcc.write();
                for k in keys {
                    for prev in txn.delete_range(&k, &[]) {
                        self.lessor.reattach(&prev.key, prev.lease, 0);
                    }
                }
                Self::finish(txn, batch, events);
                Ok(Response::LeaseRevoke(LeaseRevokeResponse {
                    header: header(self.mvcc.state.read().pending),
                }))
            }
            Command::Alarm(a) => Ok(Response::Alarm(self.alarms.apply(a, batch)?)),
            Command::Auth(c) => self.auth.apply(c, batch).map(|()| Response::Auth),
        }
    }

    fn finish(
        txn: WriteTxn<'_>,
        batch: &mut WriteBatch,
        events: &mut Vec<RevisionEvents>,
    ) -> Option<i64> {
        let ev = txn.finish(batch)?;
        let rev = ev.revision;
        events.push(ev);
        Some(rev)
    }

    pub(crate) fn put_in(&self, txn: &mut WriteTxn<'_>, p: &PutRequest) -> Result<PutResponse> {
        let existing = txn.get(&p.key).cloned();
        if (p.ignore_value || p.ignore_lease) && existing.is_none() {
            return Err(Error::KeyNotFound);
        }
        let value = match (&existing, p.ignore_value) {
            (Some(e), true) => e.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&existing, p.ignore_lease) {
            (Some(e), true) => e.lease,
            _ => p.lease,
        };
        let prev = txn.put(p.key.clone(), value, lease);
        self.lessor
            .reattach(&p.key, prev.as_ref().map_or(0, |k| k.lease), lease);
        Ok(PutResponse {
            header: header(txn.header_revision()),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    pub(crate) fn delete_in(
        &self,
        txn: &mut WriteTxn<'_>,
        d: &DeleteRangeRequest,
    ) -> DeleteRangeResponse {
        let deleted = txn.delete_range(&d.key, &d.range_end);
        for kv in &deleted {
            self.lessor.reattach(&kv.key, kv.lease, 0);
        }
        DeleteRangeResponse {
            header: header(txn.header_revision()),
            deleted: deleted.len() as i64,
            prev_kvs: if d.prev_kv { deleted } else { Vec::new() },
        }
    }

    pub(crate) fn range_in(&self, txn: &WriteTxn<'_>, q: &RangeRequest) -> Result<RangeResponse> {
        let rr = txn.range(q)?;
        Ok(RangeResponse {
            header: header(txn.header_revision()),
            kvs: rr.kvs,
            more: rr.more,
            count: rr.count,
        })
    }

    /// Commits a group's batch: records `index` as applied (if given: a group without
    /// commands leaves it as it is), writes atomically, fsyncs when `sync` says so, then
    /// publishes the new revision to readers. On an I/O error nothing is published and the
    /// error is returned; the applied-but-undurable changes stay in memory, so the caller must
    /// stop the store ([`Writer`] does).
    pub(crate) fn commit(
        &self,
        index: Option<u64>,
        mut batch: WriteBatch,
        sync: Durability,
    ) -> Result<()> {
        if let Some(index) = index {
            batch.put(
                keys::meta_key(keys::META_CONSISTENT_INDEX),
                keys::frame_i64(index as i64),
            );
        }
        self.backend.write(batch)?;
        if sync == Durability::Fsync {
            self.backend.flush()?;
        }
        self.mvcc.publish();
        Ok(())
    }
}

/// Whether a group is fsynced before it becomes visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Fsync first: the group's own commit is what makes it durable (the single member, whose
    /// group commit is the only record of a write).
    Fsync,
    /// Write atomically, fsync later: the commands are already durable in a replicated log
    /// (fsynced on a quorum before they were committed), which is replayed from the stored
    /// `consistent_index` after a crash. The log must keep every entry after the last fsynced
    /// group ([`crate::Replica::flush`] before the log is purged), as etcd's WAL does for its
    /// backend, which commits every 100 ms rather than per entry.
    Deferred,
}

/// The store's one writer. See the module docs.
pub(crate) struct Writer {
    pub(crate) applier: Arc<Applier>,
    hub: Arc<WatchHub>,
    /// The newest published revision, for tasks that wait for the store to move on.
    revision: tokio::sync::watch::Sender<i64>,
    /// Held for a whole group or restore; holds the failure that stopped the store, if any.
    lock: Mutex<Option<Error>>,
}

/// Exclusive use of the store's state, from [`Writer::exclusive`].
pub(crate) struct Exclusive<'a> {
    writer: &'a Writer,
    failed: MutexGuard<'a, Option<Error>>,
}

impl Writer {
    pub(crate) fn new(
        applier: Arc<Applier>,
        hub: Arc<WatchHub>,
        revision: tokio::sync::watch::Sender<i64>,
    ) -> Writer {
        Writer {
            applier,
            hub,
            revision,
            lock: Mutex::new(None),
        }
    }

    /// Waits for the previous group or restore to finish; refuses if the store has stopped.
    pub(crate) fn exclusive(&self) -> Result<Exclusive<'_>> {
        let failed = self.lock.lock();
        if let Some(e) = &*failed {
            return Err(Error::Io(format!(
                "the store stopped after an earlier failure: {e}"
            )));
        }
        Ok(Exclusive {
            writer: self,
            failed,
        })
    }

    /// Applies `commands` in order and commits them as one batch with `index` (the log index
    /// of the last command; `None` leaves the stored one) and `raft_applied` (stored as is under
    /// its meta key), then publishes the new revisions and events. One result per command;
    /// `Err` is a non-deterministic failure, after which the store refuses everything. Blocks
    /// (fsync).
    pub(crate) fn apply_group<'c>(
        &self,
        commands: impl IntoIterator<Item = &'c Command>,
        index: Option<u64>,
        raft_applied: Option<&[u8]>,
        sync: Durability,
    ) -> Result<Vec<Result<Response>>> {
        let mut ex = self.exclusive()?;
        let mut batch = WriteBatch::default();
        let mut events = Vec::new();
        let mut results = Vec::new();
        for cmd in commands {
            let r = self.applier.apply(cmd, &mut batch, &mut events);
            match &r {
                Err(e) if !e.is_deterministic() => return Err(ex.fail(e.clone())),
                _ => results.push(r),
            }
        }
        if let Some(blob) = raft_applied {
            batch.put(keys::meta_key(keys::META_RAFT_APPLIED), keys::frame(blob));
        }
        if let Err(e) = self.applier.commit(index, batch, sync) {
            return Err(ex.fail(e));
        }
        ex.publish(events);
        Ok(results)
    }
}

impl Exclusive<'_> {
    /// Stops the store for good with `e`, and returns it.
    pub(crate) fn fail(&mut self, e: Error) -> Error {
        tracing::error!("keelson: the store cannot go on and refuses every write: {e}");
        *self.failed = Some(e.clone());
        e
    }

    /// Hands committed revisions' events to the revision channel and the watch hub, in order.
    pub(crate) fn publish(&self, events: Vec<RevisionEvents>) {
        if let Some(last) = events.last() {
            self.writer.revision.send_replace(last.revision);
            self.writer.hub.publish(events);
        }
    }

    /// Announces the newest revision without events (after a restore).
    pub(crate) fn publish_revision(&self, revision: i64) {
        self.writer.revision.send_replace(revision);
    }
}

#[cfg(test)]
mod tests;
