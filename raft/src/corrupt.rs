//! `--experimental-initial-corrupt-check`: before a member with data serves anyone, it compares
//! its HashKV with its peers' and refuses to start when they differ (etcd 3.4's
//! `CheckInitialHashKV`, `etcdserver/corrupt.go`).
//!
//! This member hashes at its current revision; each other member of the membership in its log
//! is asked for HashKV at that revision over the client URL it published (etcd asks over the
//! peer URLs, where it serves the client API too; ours carry only raft). As etcd:
//! - only a peer with the same compact revision and a different hash counts as a mismatch; a
//!   different compact revision only warns (the hashes cover different ranges);
//! - a peer that has not reached the revision (`FutureRev`: it is slow) or has compacted past
//!   it (`Compacted`: this member is behind) is skipped with a warning, as is an unreachable
//!   one: the check is best effort and never blocks a start on a peer being down;
//! - any mismatch fails the start with `<id> found data inconsistency with peers`.

use std::time::Duration;

use keelson_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keelson_proto::etcdserverpb::HashKvRequest;
use keelson_store::{Error, Replica};
use openraft::async_runtime::WatchReceiver;

use crate::member::StoreRaft;

/// How long each peer may take to answer (etcd's request timeout, without election timeouts).
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a peer answered for HashKV at this member's revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerHash {
    /// Its hash and compact revision.
    Hash { hash: u32, compact_revision: i64 },
    /// It has not reached the revision.
    FutureRev,
    /// It compacted past the revision.
    Compacted,
    /// It could not be asked (unreachable, no client URL, another error).
    Unknown(String),
}

/// How many peers disagree with this member's `hash` at compact revision `compact`.
pub(crate) fn mismatches(hash: u32, compact: i64, peers: &[(u64, PeerHash)]) -> usize {
    let mut n = 0;
    for (id, p) in peers {
        match p {
            PeerHash::Hash {
                hash: h,
                compact_revision,
            } if *h != hash => {
                if *compact_revision == compact {
                    tracing::warn!(
                        peer = %format!("{id:x}"),
                        "found different hash values from remote peer: local {hash}, \
                         remote {h}, compact revision {compact}"
                    );
                    n += 1;
                } else {
                    tracing::warn!(
                        peer = %format!("{id:x}"),
                        "found different compact revision values from remote peer: local \
                         {compact}, remote {compact_revision}"
                    );
                }
            }
            PeerHash::Hash { .. } => {}
            PeerHash::FutureRev => tracing::warn!(
                peer = %format!("{id:x}"),
                "cannot fetch hash from slow remote peer"
            ),
            PeerHash::Compacted => tracing::warn!(
                peer = %format!("{id:x}"),
                "cannot fetch hash from remote peer; local member is behind"
            ),
            PeerHash::Unknown(why) => tracing::warn!(
                peer = %format!("{id:x}"),
                "cannot fetch hash from remote peer: {why}"
            ),
        }
    }
    n
}

/// The check (see the module docs) for member `me` over `replica`, whose raft has started.
pub(crate) async fn check(raft: &StoreRaft, replica: Replica, me: u64) -> Result<(), String> {
    tracing::info!(member = %format!("{me:x}"), "starting initial corruption check");
    let (hash, compact, rev) = tokio::task::spawn_blocking(move || replica.hash_kv(0))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{me:x} failed to fetch hash ({e})"))?;
    // The membership in this member's log; raft publishes it once it has loaded the log.
    let _ = raft
        .wait(Some(PEER_TIMEOUT))
        .metrics(
            |m| m.membership_config.log_id().is_some(),
            "membership loaded",
        )
        .await;
    let others: Vec<(u64, Vec<String>)> = {
        let m = raft.metrics();
        let m = m.borrow_watched();
        m.membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(id, n)| (*id, n.client_urls.clone()))
            .collect()
    };
    let mut peers = Vec::new();
    for (id, urls) in others {
        peers.push((id, ask(&urls, rev).await));
    }
    if mismatches(hash, compact, &peers) > 0 {
        return Err(format!("{me:x} found data inconsistency with peers"));
    }
    tracing::info!(
        member = %format!("{me:x}"),
        "initial corruption checking passed; no corruption"
    );
    Ok(())
}

/// HashKV at `rev` from the first of `urls` that answers.
async fn ask(urls: &[String], rev: i64) -> PeerHash {
    let mut last = PeerHash::Unknown("no client URL published".into());
    for url in urls {
        let answer = tokio::time::timeout(PEER_TIMEOUT, async {
            let mut c = MaintenanceClient::connect(url.clone())
                .await
                .map_err(|e| e.to_string())?;
            c.hash_kv(HashKvRequest { revision: rev })
                .await
                .map(|r| r.into_inner())
                .map_err(|s| s.message().to_string())
        })
        .await;
        last = match answer {
            Ok(Ok(r)) => {
                return PeerHash::Hash {
                    hash: r.hash,
                    compact_revision: r.compact_revision,
                }
            }
            Ok(Err(m)) if m == Error::FutureRev.to_string() => return PeerHash::FutureRev,
            Ok(Err(m)) if m == Error::Compacted.to_string() => return PeerHash::Compacted,
            Ok(Err(m)) => PeerHash::Unknown(format!("{url}: {m}")),
            Err(_) => PeerHash::Unknown(format!("{url}: timed out")),
        };
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(hash: u32, compact_revision: i64) -> PeerHash {
        PeerHash::Hash {
            hash,
            compact_revision,
        }
    }

    #[test]
    fn only_a_different_hash_at_the_same_compact_revision_is_a_mismatch() {
        let peers = [(2, hash(7, 3)), (3, hash(7, 3))];
        assert_eq!(mismatches(7, 3, &peers), 0);
        assert_eq!(mismatches(8, 3, &peers), 2);
        // Another compact revision: the hashes cover different ranges.
        assert_eq!(mismatches(7, 3, &[(2, hash(9, 4))]), 0);
        assert_eq!(mismatches(7, -1, &[(2, hash(9, 3)), (3, hash(9, -1))]), 1);
    }

    #[test]
    fn slow_compacted_and_unreachable_peers_are_skipped() {
        let peers = [
            (2, PeerHash::FutureRev),
            (3, PeerHash::Compacted),
            (4, PeerHash::Unknown("down".into())),
        ];
        assert_eq!(mismatches(7, 3, &peers), 0);
        assert_eq!(
            mismatches(7, 3, &[(2, PeerHash::FutureRev), (5, hash(1, 3))]),
            1
        );
    }
}
