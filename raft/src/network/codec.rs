//! How openraft's messages are put into the `bytes` fields of `raft.proto`.
//!
//! Every request and response travels as its serde form in [postcard]: compact (varint integers,
//! entry payloads as raw bytes) and with a wire format frozen since postcard 1.0. postcard is
//! positional (no field names on the wire), so both members must run the same message
//! definitions: a member of another openraft version is refused at decode time with a clear
//! error rather than misread, because openraft 0.10 keeps its serde forms positional-safe (its
//! `SnapshotMeta` compatibility note) and a length or tag that does not fit fails decoding.
//!
//! The tests round-trip every message this transport sends, including entries of all three
//! payload kinds, so a change in openraft's serde forms that postcard cannot carry shows up
//! here and not in a cluster.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes a message for the wire.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Result<Bytes, String> {
    postcard::to_stdvec(msg)
        .map(Bytes::from)
        .map_err(|e| format!("encoding a raft message: {e}"))
}

/// Decodes a message from the wire; `what` names it in the error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| {
        format!(
            "undecodable {what} ({} bytes): {e}; is the peer running another keelson version?",
            bytes.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Debug;

    use keelson_proto::etcdserverpb::PutRequest;
    use keelson_store::Command;
    use openraft::entry::RaftEntry;
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
        VoteRequest, VoteResponse,
    };
    use openraft::storage::SnapshotMeta;

    use super::*;
    use crate::types::{Entry, Member, Membership, Proposal, StoredMembership, TypeConfig, Vote};

    fn log_id(term: u64, index: u64) -> crate::LogId {
        openraft::testing::log_id::<TypeConfig>(term, 1, index)
    }

    fn round_trip<T: Serialize + DeserializeOwned + Debug>(msg: &T) -> T {
        let bytes = encode(msg).unwrap();
        decode(&bytes, "test message").unwrap()
    }

    /// openraft's request types do not all implement `PartialEq`; compare their debug forms.
    fn same<T: Serialize + DeserializeOwned + Debug>(msg: T) {
        assert_eq!(format!("{:?}", round_trip(&msg)), format!("{msg:?}"));
    }

    fn membership() -> Membership {
        let member = |n: u64| Member {
            name: format!("m{n}"),
            peer_urls: vec![format!("http://127.0.0.1:{}", 2380 + n)],
            client_urls: vec![format!("http://127.0.0.1:{}", 2379 + n)],
        };
        Membership::new(
            vec![[1, 2, 3].into_iter().collect()],
            BTreeMap::from([(1, member(1)), (2, member(2)), (3, member(3))]),
        )
        .unwrap()
    }

    #[test]
    fn every_message_round_trips() {
        let vote = Vote::new(3, 1);
        let put = Command::Put(PutRequest {
            key: "k".into(),
            value: vec![0u8, 255, 7].into(),
            ..Default::default()
        });
        let entries: Vec<Entry> = vec![
            Entry::new_blank(log_id(3, 1)),
            Entry::new_membership(log_id(3, 2), membership()),
            Entry::new_normal(log_id(3, 3), Proposal::new(&put)),
        ];
        same(AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(log_id(2, 0)),
            entries,
            leader_commit: Some(log_id(3, 2)),
        });
        for resp in [
            AppendEntriesResponse::<TypeConfig>::Success,
            AppendEntriesResponse::PartialSuccess(Some(log_id(3, 2))),
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(Vote::new(4, 2)),
        ] {
            assert_eq!(round_trip(&resp), resp);
        }
        same(VoteRequest::<TypeConfig>::new(vote, Some(log_id(3, 3))));
        let granted = VoteResponse::<TypeConfig>::new(vote, Some(log_id(3, 3)), true);
        assert_eq!(round_trip(&granted), granted);
        let transfer = TransferLeaderRequest::<TypeConfig>::new(vote, 2, Some(log_id(3, 3)));
        assert_eq!(round_trip(&transfer), transfer);
        let answered: openraft::raft::TransferLeaderResponse<TypeConfig> = Ok(());
        assert_eq!(round_trip(&answered), answered);
        let installed = SnapshotResponse::<TypeConfig>::new(vote);
        assert_eq!(round_trip(&installed), installed);

        let meta = SnapshotMeta {
            last_log_id: Some(log_id(3, 3)),
            last_membership: StoredMembership::new(Some(log_id(3, 2)), membership()),
        };
        assert_eq!(round_trip(&(vote, meta.clone())), (vote, meta));
    }

    #[test]
    fn entry_payloads_travel_as_raw_bytes() {
        let value = vec![0xabu8; 4096];
        let put = Command::Put(PutRequest {
            key: "k".into(),
            value: value.clone().into(),
            ..Default::default()
        });
        let entry = Entry::new_normal(log_id(1, 1), Proposal::new(&put));
        let encoded = encode(&entry).unwrap();
        // A json number array would take about 4 bytes per value byte.
        assert!(encoded.len() < value.len() + 64, "{} bytes", encoded.len());
    }

    #[test]
    fn garbage_is_refused_with_a_clear_error() {
        let err = decode::<VoteRequest<TypeConfig>>(&[0xff; 3], "vote request").unwrap_err();
        assert!(
            err.starts_with("undecodable vote request (3 bytes)"),
            "{err}"
        );
    }
}
