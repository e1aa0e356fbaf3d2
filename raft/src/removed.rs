//! How a member learns it was removed from the cluster, so it can stop (etcd's member exits
//! with "the member has been permanently removed from the cluster").
//!
//! Two ways, because a removed member often never sees the entry that removes it: the leader
//! stops replicating to a member as soon as the membership excluding it is in the leader's log
//! (openraft), which may be before that entry, or even the joint configuration before it,
//! reached the member.
//! - Its own log: the membership it knows no longer has it, after it was in one (as voter or
//!   learner). A leader waits until that membership is applied, since it must still commit the
//!   entry that removes it; a follower's vote is not needed by the new configuration, and the
//!   joint configuration before it was committed without waiting for it.
//! - Its peers: while it hears from no leader, it asks the members it knows for their
//!   membership (the `Members` peer call). A membership a peer has applied (so committed), later
//!   in the log than the one this member knows, and without this member, means it was removed.
//!   A peer lagging behind this member's membership (a member just added) is ignored by the
//!   same comparison, so a member is never told it was removed by a stale peer.
//!
//! Its peers also refuse its raft calls once they have applied its removal (the applied state's
//! `removed` set, etcd's `members_removed` bucket; `peer_service.rs`), so a removed member that
//! has not stopped yet cannot disturb the cluster.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;

use crate::forward::{Forwarder, Rpc};
use crate::join::MembersReply;
use crate::member::StoreRaft;
use crate::network::PeerConfig;

/// How often a member hearing from no leader asks its peers.
const ASK_EVERY: Duration = Duration::from_secs(1);

/// Resolves once member `me` of cluster `cluster_id` is known removed; never if raft stops.
pub(crate) async fn removed(raft: StoreRaft, me: u64, cluster_id: u64) {
    let mut metrics = raft.metrics();
    let forwarder = Forwarder::new(PeerConfig::default());
    let lease = Duration::from_millis(raft.config().election_timeout_max);
    let mut was_member = false;
    let mut tick = tokio::time::interval(ASK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let index = {
            let m = metrics.borrow_watched();
            let stored = &m.membership_config;
            let here = stored.membership().get_node(&me).is_some();
            was_member |= here;
            let applied = m.last_applied.is_some_and(|a| Some(a) >= *stored.log_id());
            let leads = m.current_leader == Some(me);
            if was_member && !here && (applied || !leads) {
                return;
            }
            stored.log_id().map(|l| l.index)
        };
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
            _ = tick.tick() => {
                if !was_member || hears_leader(&raft, me, lease).await {
                    continue;
                }
                let peers: Vec<_> = metrics
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .nodes()
                    .filter(|(id, _)| **id != me)
                    .map(|(id, n)| (*id, n.clone()))
                    .collect();
                for (id, node) in &peers {
                    let reply: Result<MembersReply, _> = forwarder
                        .call(Rpc::Members, *id, node, &(), Duration::from_secs(1))
                        .await;
                    if let Ok(reply) = reply {
                        if removed_by(&reply, me, cluster_id, index) {
                            tracing::info!(
                                peer = %format!("{id:x}"),
                                "the membership at index {:?} applied on the peer no longer \
                                 has this member",
                                reply.membership_index
                            );
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Whether this member leads, or heard from its leader within `lease`.
async fn hears_leader(raft: &StoreRaft, me: u64, lease: Duration) -> bool {
    if raft.metrics().borrow_watched().current_leader == Some(me) {
        return true;
    }
    raft.with_raft_state(move |st| st.vote_last_modified().is_some_and(|t| t.elapsed() < lease))
        .await
        .unwrap_or(true)
}

/// Whether a peer's `reply` shows member `me` removed, this member knowing the membership at
/// log index `mine` (see the module docs).
fn removed_by(reply: &MembersReply, me: u64, cluster_id: u64, mine: Option<u64>) -> bool {
    reply.cluster_id == cluster_id
        && reply.membership_applied
        && reply.membership_index > mine
        && !reply.members.iter().any(|(id, _)| *id == me)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Member;

    fn reply(index: u64, applied: bool, ids: &[u64]) -> MembersReply {
        MembersReply {
            cluster_id: 7,
            members: ids.iter().map(|&id| (id, Member::default())).collect(),
            membership_index: Some(index),
            membership_applied: applied,
        }
    }

    #[test]
    fn only_a_later_applied_membership_without_us_removes_us() {
        assert!(removed_by(&reply(10, true, &[2, 3]), 1, 7, Some(5)));
        // Still listed, not applied yet, not later than ours, another cluster.
        assert!(!removed_by(&reply(10, true, &[1, 2]), 1, 7, Some(5)));
        assert!(!removed_by(&reply(10, false, &[2, 3]), 1, 7, Some(5)));
        assert!(!removed_by(&reply(4, true, &[2, 3]), 1, 7, Some(5)));
        assert!(!removed_by(&reply(5, true, &[2, 3]), 1, 7, Some(5)));
        assert!(!removed_by(&reply(10, true, &[2, 3]), 1, 8, Some(5)));
    }
}
