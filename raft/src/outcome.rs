//! What applying one log entry answers, and its wire form.
//!
//! [`Outcome`] is openraft's `R`: the state machine hands one to the responder of every entry a
//! client is waiting for, and `Raft::client_write` returns it. It is normally used only on the
//! member that applied it, but openraft's `serde` feature requires `R` to be serializable (so a
//! follower could forward a write and get the answer back). The wire form is the protobuf
//! encoding of the etcd response behind a one-byte tag, so it is lossless and compact in any
//! serde format.
//!
//! Errors travel as a tag naming the variant plus its text. Only deterministic errors are ever
//! carried (an I/O error during apply stops the member instead). A variant missing from the table
//! below still travels, as `InvalidArgument` with its exact text; the table test lists every
//! variant it knows so a new one is noticed here.

use bytes::{Buf, BufMut};
use keelson_proto::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseRevokeResponse, PutResponse, TxnResponse,
};
use keelson_store::{ApplyResponse, Error};
use prost::Message;
use serde::{Deserialize, Serialize};

/// The answer to one applied log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub enum Outcome {
    /// A blank or membership entry: nothing to answer but "applied".
    Done,
    /// A command applied; its etcd response.
    Applied(ApplyResponse),
    /// A command that failed deterministically (the same on every member), e.g. a lease that
    /// does not exist. Its effects are none.
    Rejected(Error),
}

impl Outcome {
    /// The outcome of a command, as the store's applier returned it.
    pub fn of(result: keelson_store::Result<ApplyResponse>) -> Outcome {
        match result {
            Ok(r) => Outcome::Applied(r),
            Err(e) => Outcome::Rejected(e),
        }
    }
}

const DONE: u8 = 0;
const REJECTED: u8 = 100;

impl From<Outcome> for Vec<u8> {
    fn from(o: Outcome) -> Vec<u8> {
        let (tag, body) = match &o {
            Outcome::Done => (DONE, Vec::new()),
            Outcome::Applied(r) => match r {
                ApplyResponse::Put(m) => (1, m.encode_to_vec()),
                ApplyResponse::DeleteRange(m) => (2, m.encode_to_vec()),
                ApplyResponse::Txn(m) => (3, m.encode_to_vec()),
                ApplyResponse::Compact(m) => (4, m.encode_to_vec()),
                ApplyResponse::LeaseGrant(m) => (5, m.encode_to_vec()),
                ApplyResponse::LeaseRevoke(m) => (6, m.encode_to_vec()),
                ApplyResponse::Alarm(m) => (7, m.encode_to_vec()),
                ApplyResponse::Auth => (8, Vec::new()),
            },
            Outcome::Rejected(e) => {
                let (code, text) = error_code(e);
                let mut body = vec![code];
                body.extend_from_slice(text.as_bytes());
                (REJECTED, body)
            }
        };
        let mut v = Vec::with_capacity(1 + body.len());
        v.put_u8(tag);
        v.extend_from_slice(&body);
        v
    }
}

impl TryFrom<Vec<u8>> for Outcome {
    type Error = String;

    fn try_from(v: Vec<u8>) -> Result<Outcome, String> {
        let mut buf = v.as_slice();
        if !buf.has_remaining() {
            return Err("empty outcome".into());
        }
        let tag = buf.get_u8();
        let bad = |e: prost::DecodeError| format!("outcome tag {tag}: {e}");
        Ok(match tag {
            DONE => Outcome::Done,
            1 => Outcome::Applied(ApplyResponse::Put(PutResponse::decode(buf).map_err(bad)?)),
            2 => Outcome::Applied(ApplyResponse::DeleteRange(
                DeleteRangeResponse::decode(buf).map_err(bad)?,
            )),
            3 => Outcome::Applied(ApplyResponse::Txn(TxnResponse::decode(buf).map_err(bad)?)),
            4 => Outcome::Applied(ApplyResponse::Compact(
                CompactionResponse::decode(buf).map_err(bad)?,
            )),
            5 => Outcome::Applied(ApplyResponse::LeaseGrant(
                LeaseGrantResponse::decode(buf).map_err(bad)?,
            )),
            6 => Outcome::Applied(ApplyResponse::LeaseRevoke(
                LeaseRevokeResponse::decode(buf).map_err(bad)?,
            )),
            7 => Outcome::Applied(ApplyResponse::Alarm(
                AlarmResponse::decode(buf).map_err(bad)?,
            )),
            8 => Outcome::Applied(ApplyResponse::Auth),
            REJECTED => {
                if !buf.has_remaining() {
                    return Err("rejected outcome without an error code".into());
                }
                let code = buf.get_u8();
                let text = String::from_utf8(buf.to_vec()).map_err(|e| e.to_string())?;
                Outcome::Rejected(error_from_code(code, text))
            }
            t => return Err(format!("unknown outcome tag {t}")),
        })
    }
}

/// One table for both directions, so encoding and decoding cannot drift apart.
macro_rules! error_table {
    (units { $($ucode:literal => $unit:ident,)* } texts { $($tcode:literal => $text:ident,)* }) => {
        /// The wire code of `e` and the text it carries (empty for unit variants).
        fn error_code(e: &Error) -> (u8, String) {
            match e {
                $(Error::$unit => ($ucode, String::new()),)*
                $(Error::$text(s) => ($tcode, s.clone()),)*
                #[allow(unreachable_patterns)]
                other => (INVALID_ARGUMENT, other.to_string()),
            }
        }

        fn error_from_code(code: u8, text: String) -> Error {
            match code {
                $($ucode => Error::$unit,)*
                $($tcode => Error::$text(text),)*
                _ => Error::InvalidArgument(text),
            }
        }

        #[cfg(test)]
        fn every_tabled_error() -> Vec<Error> {
            vec![$(Error::$unit,)* $(Error::$text("some text".into()),)*]
        }
    };
}

const INVALID_ARGUMENT: u8 = 201;

error_table! {
    units {
        1 => EmptyKey,
        2 => Compacted,
        3 => FutureRev,
        4 => LeaseNotFound,
        5 => LeaseExists,
        6 => LeaseTtlTooLarge,
        7 => KeyNotFound,
        8 => ValueProvided,
        9 => LeaseProvided,
        10 => RequestTooLarge,
        11 => TooManyOps,
        12 => DuplicateKey,
        13 => NoSpace,
        14 => TooManyRequests,
        15 => NoLeader,
        16 => Timeout,
        17 => LeaderChanged,
        18 => Stopped,
        19 => AuthNotEnabled,
        20 => MemberNotFound,
        21 => NotSupportedForLearner,
        22 => CorruptCluster,
        23 => BadLeaderTransferee,
        24 => PeerUrlExists,
        25 => MemberBadUrls,
        26 => MemberNotEnoughStarted,
        27 => MemberNotLearner,
        28 => RootUserNotExist,
        29 => RootRoleNotExist,
        30 => UserAlreadyExists,
        31 => UserEmpty,
        32 => UserNotFound,
        33 => RoleAlreadyExists,
        34 => RoleNotFound,
        35 => RoleEmpty,
        36 => RoleNotGranted,
        37 => PermissionNotGranted,
        38 => InvalidAuthMgmt,
        39 => SessionExpired,
        40 => ElectionNotLeader,
        41 => ElectionNoLeader,
        42 => MissingLeaderKey,
        43 => LearnerNotReady,
        44 => MemberExists,
        45 => TooManyLearners,
    }
    texts {
        200 => Unimplemented,
        201 => InvalidArgument,
        202 => Corrupt,
        203 => Io,
    }
}

#[cfg(test)]
mod tests {
    use keelson_proto::etcdserverpb::ResponseHeader;

    use super::*;

    fn round_trip(o: Outcome) {
        let bytes: Vec<u8> = o.clone().into();
        assert_eq!(Outcome::try_from(bytes).unwrap(), o);
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), o);
    }

    #[test]
    fn responses_round_trip() {
        round_trip(Outcome::Done);
        round_trip(Outcome::Applied(ApplyResponse::Auth));
        round_trip(Outcome::Applied(ApplyResponse::Put(PutResponse {
            header: Some(ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            prev_kv: None,
        })));
        round_trip(Outcome::Applied(ApplyResponse::LeaseGrant(
            LeaseGrantResponse {
                id: 5,
                ttl: 60,
                ..Default::default()
            },
        )));
    }

    #[test]
    fn every_tabled_error_round_trips_with_its_text() {
        let all = every_tabled_error();
        let mut codes: Vec<u8> = all.iter().map(|e| error_code(e).0).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len(), "wire codes are unique");
        for e in all {
            round_trip(Outcome::Rejected(e));
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Outcome::try_from(vec![]).is_err());
        assert!(Outcome::try_from(vec![99]).is_err());
        assert!(Outcome::try_from(vec![1, 0xff, 0xff]).is_err());
    }
}
