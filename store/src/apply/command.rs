//! Log commands: what is proposed, replicated and applied in order.
//!
//! A command is a one-byte tag and the protobuf encoding of the etcd request it carries.
//! Anything non-deterministic (a lease ID the server picks, the time) is decided before the
//! command is proposed, so applying the same log gives the same state on every member.

use keelson_proto::etcdserverpb::{
    AlarmRequest, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, TxnRequest,
};
use prost::Message;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    Alarm(AlarmRequest),
    /// A user or role change (`auth.rs`).
    Auth(crate::auth::AuthCommand),
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            Command::Put(r) => (1u8, r.encode_to_vec()),
            Command::DeleteRange(r) => (2, r.encode_to_vec()),
            Command::Txn(r) => (3, r.encode_to_vec()),
            Command::Compact(r) => (4, r.encode_to_vec()),
            Command::LeaseGrant(r) => (5, r.encode_to_vec()),
            Command::LeaseRevoke(r) => (6, r.encode_to_vec()),
            Command::Alarm(r) => (7, r.encode_to_vec()),
            Command::Auth(c) => (8, c.encode()),
        };
        let mut v = Vec::with_capacity(1 + body.len());
        v.push(tag);
        v.extend_from_slice(&body);
        v
    }

    pub fn decode(buf: &[u8]) -> Result<Command> {
        let (tag, body) = buf
            .split_first()
            .ok_or_else(|| Error::Corrupt("empty command".into()))?;
        let bad = |e: prost::DecodeError| Error::Corrupt(format!("command tag {tag}: {e}"));
        Ok(match tag {
            1 => Command::Put(PutRequest::decode(body).map_err(bad)?),
            2 => Command::DeleteRange(DeleteRangeRequest::decode(body).map_err(bad)?),
            3 => Command::Txn(TxnRequest::decode(body).map_err(bad)?),
            4 => Command::Compact(CompactionRequest::decode(body).map_err(bad)?),
            5 => Command::LeaseGrant(LeaseGrantRequest::decode(body).map_err(bad)?),
            6 => Command::LeaseRevoke(LeaseRevokeRequest::decode(body).map_err(bad)?),
            7 => Command::Alarm(AlarmRequest::decode(body).map_err(bad)?),
            8 => Command::Auth(crate::auth::AuthCommand::decode(body)?),
            t => return Err(Error::Corrupt(format!("unknown command tag {t}"))),
        })
    }

    /// Whether the command may add data (refused while the NOSPACE alarm is raised).
    pub fn grows_data(&self) -> bool {
        match self {
            Command::Put(_) | Command::LeaseGrant(_) => true,
            Command::Txn(t) => txn_has_put(t),
            _ => false,
        }
    }
}

fn txn_has_put(t: &TxnRequest) -> bool {
    use keelson_proto::etcdserverpb::request_op::Request;
    t.success
        .iter()
        .chain(t.failure.iter())
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) => true,
            Some(Request::RequestTxn(t)) => txn_has_put(t),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let c = Command::Put(PutRequest {
            key: "a".into(),
            value: "b".into(),
            ..Default::default()
        });
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        assert!(c.grows_data());
        assert!(Command::decode(&[]).is_err());
        assert!(Command::decode(&[99]).is_err());
    }
}
