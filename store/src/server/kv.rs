//! The KV service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Validation that etcd does in its gRPC layer (`v3rpc/key.go`) happens here, before a
//! proposal; everything that depends on state happens in apply. Ranges are served locally at
//! the current (durable) revision. A linearizable Range (not `serializable`) first passes the
//! proposer's read barrier, so it sees every write committed before it arrived on any member
//! (the single member's barrier is immediate); a serializable one reads whatever this member
//! has applied. A Txn, even one of ranges only, goes through the log as etcd 3.4's does.

use std::sync::Arc;

use keelson_proto::etcdserverpb::kv_server::Kv;
use keelson_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use crate::apply::{check_put, check_txn_request, Command, Response as Applied};
use crate::core::Core;
use crate::error::Error;

pub(crate) struct KvService {
    pub(crate) core: Arc<Core>,
}

impl KvService {
    /// Serves a range at the current revision (also used for read-only txns).
    pub(crate) fn range(&self, r: &RangeRequest) -> Result<RangeResponse, Error> {
        if r.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        self.core.metrics.record_range();
        let st = self.core.mvcc.state.read();
        let current = st.current;
        let rr = st.range(r, current)?;
        drop(st);
        Ok(RangeResponse {
            header: self.core.header(current),
            kvs: rr.kvs,
            more: rr.more,
            count: rr.count,
        })
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let r = req.get_ref();
        if r.key.is_empty() {
            return Err(Error::EmptyKey.into());
        }
        if !r.serializable {
            // A learner serves only serializable ranges (etcd's `isRPCSupportedForLearner`);
            // the other calls are refused in `require_leader.rs`.
            if self.core.proposer().status().is_some_and(|s| s.is_learner) {
                return Err(Error::NotSupportedForLearner.into());
            }
            // Before the read lock is taken: the read must see everything committed before it
            // arrived, which this member may not have applied yet.
            self.core.proposer().read_barrier().await?;
        }
        Ok(Response::new(KvService::range(self, r)?))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let r = req.into_inner();
        check_put(&r)?;
        match self.core.propose(Command::Put(r)).await? {
            Applied::Put(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let r = req.into_inner();
        if r.key.is_empty() {
            return Err(Error::EmptyKey.into());
        }
        match self.core.propose(Command::DeleteRange(r)).await? {
            Applied::DeleteRange(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let r = req.into_inner();
        check_txn_request(&r, self.core.cfg.max_txn_ops)?;
        match self.core.propose(Command::Txn(r)).await? {
            Applied::Txn(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let r = req.into_inner();
        match self.core.propose(Command::Compact(r)).await? {
            Applied::Compact(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }
}

pub(crate) fn unexpected(r: Applied) -> Status {
    Status::internal(format!("keelson: unexpected apply response {r:?}"))
}
