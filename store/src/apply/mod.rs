//! The state machine: applies log commands, in log order, to the MVCC store, the lessor and
//! the alarms.
//!
//! Invariants:
//! - Apply is deterministic: the same commands in the same order give the same state and the
//!   same responses on every member. Errors returned from apply are deterministic ones
//!   ([`Error::is_deterministic`]); an I/O error while committing panics the member instead.
//! - A group of commands is applied into one backend batch together with the log index of the
//!   last one (`consistent_index`), written atomically and flushed before any of it becomes
//!   visible ([`Applier::commit`]); so after a crash the store is exactly the state after some
//!   prefix of the log, never part of a command, and it knows which prefix.

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

use crate::alarm::Alarms;
use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::keys;
use crate::lease::Lessor;
use crate::mvcc::{Mvcc, RevisionEvents, WriteTxn};

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

    /// Makes a group's batch durable: records `index` as applied, writes atomically, fsyncs,
    /// then publishes the new revision to readers. Panics on I/O failure (see module docs).
    pub(crate) fn commit(&self, index: u64, mut batch: WriteBatch) {
        batch.put(
            keys::meta_key(keys::META_CONSISTENT_INDEX),
            keys::frame_i64(index as i64),
        );
        if let Err(e) = self.backend.write(batch).and_then(|_| self.backend.flush()) {
            panic!("keelson: cannot make applied state durable, stopping: {e}");
        }
        self.mvcc.publish();
    }
}

#[cfg(test)]
mod tests;
