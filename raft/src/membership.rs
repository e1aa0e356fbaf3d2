//! Membership changes (etcd's MemberAdd, MemberPromote, MemberRemove, MemberUpdate) on the
//! leader.
//!
//! Any member may receive the request; it travels to the leader like a write (`forward.rs`,
//! [`ForwardRequest::Members`](crate::forward::ForwardRequest)), the leader checks it against
//! its membership and changes it, and the receiving member answers once it has applied the
//! change, so its MemberList shows it.
//!
//! - **Add** puts the member in as a learner (`add_learner`, not waiting for it to catch up: it
//!   is not even running yet). A voter is then promoted at once with `change_membership`, which
//!   openraft carries out through joint consensus (old and new voter sets must both agree until
//!   the uniform config is committed). The new member is described with an empty name and no
//!   client URLs until it starts and publishes itself, as etcd's "unstarted" member.
//! - **Promote** is refused while the learner's replicated log is behind: etcd's
//!   `isLearnerReady` wants its match index at least 90 % of the leader's.
//! - **Remove** drops a voter through joint consensus (`RemoveVoters`, not retained as a learner)
//!   or a learner directly (`RemoveNodes`). A removed leader steps down by itself (openraft's
//!   `removed_leader_step_down`).
//! - **Update** re-describes the member with its new peer URLs (`SetNodes`).
//! - etcd's strict reconfiguration checks: a voter is added, promoted or removed only if enough
//!   voters have started (published a name) to keep a quorum.
//! - Only one membership change runs at a time. A change that arrives while another (or a
//!   member's publish) is not yet committed waits for it, up to [`BUSY_WAIT`].
//!
//! Retrying is safe: a forwarded Add that reaches a new leader after the old one added the
//! learner finds the same ID with the same URLs and only finishes the promotion.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use keelson_store::{Error, MemberChange};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::storage::RaftStateMachine;
use openraft::{ChangeMembers, Raft, RaftMetrics};
use serde::{Deserialize, Serialize};

use crate::forward::{reply_of, ForwardReply};
use crate::types::{Member, Membership, Outcome, TypeConfig};

/// How long a change waits for an earlier membership change to be committed.
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// etcd 3.4's `maxLearners`: at most this many learners in the cluster.
const MAX_LEARNERS: usize = 1;

/// etcd's `readyPercent`: a learner may be promoted once its log matches 90 % of the leader's.
const READY_PERCENT: f64 = 0.9;

/// [`MemberChange`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MemberOp {
    Add {
        id: u64,
        peer_urls: Vec<String>,
        learner: bool,
    },
    Promote {
        id: u64,
    },
    Remove {
        id: u64,
    },
    Update {
        id: u64,
        peer_urls: Vec<String>,
    },
}

impl From<MemberChange> for MemberOp {
    fn from(c: MemberChange) -> MemberOp {
        match c {
            MemberChange::Add {
                id,
                peer_urls,
                learner,
            } => MemberOp::Add {
                id,
                peer_urls,
                learner,
            },
            MemberChange::Promote { id } => MemberOp::Promote { id },
            MemberChange::Remove { id } => MemberOp::Remove { id },
            MemberChange::Update { id, peer_urls } => MemberOp::Update { id, peer_urls },
        }
    }
}

fn sorted(urls: &[String]) -> Vec<String> {
    let mut v = urls.to_vec();
    v.sort();
    v
}

/// etcd's `IsStarted`: a member that has published its name.
fn started(m: &Member) -> bool {
    !m.name.is_empty()
}

/// The voters of `ms` other than `except`, and how many of them have started.
fn voters(ms: &Membership, except: Option<u64>) -> (usize, usize) {
    let mut n = 0;
    let mut up = 0;
    for id in ms.voter_ids().filter(|id| Some(*id) != except) {
        n += 1;
        if ms.get_node(&id).is_some_and(started) {
            up += 1;
        }
    }
    (n, up)
}

/// Carries out `op` on this member if it leads (see the module docs).
pub(crate) async fn change_here<SM>(raft: &Raft<TypeConfig, SM>, op: MemberOp) -> ForwardReply
where
    SM: RaftStateMachine<TypeConfig>,
{
    match change(raft, op).await {
        Ok(reply) => reply,
        Err(e) => ForwardReply::Failed(e),
    }
}

async fn change<SM>(raft: &Raft<TypeConfig, SM>, op: MemberOp) -> Result<ForwardReply, Error>
where
    SM: RaftStateMachine<TypeConfig>,
{
    let Some(m) = settled_leader(raft).await else {
        let leader = raft.metrics().borrow_watched().current_leader;
        return Ok(ForwardReply::NotLeader { leader });
    };
    let ms = m.membership_config.membership().clone();
    match op {
        MemberOp::Add {
            id,
            peer_urls,
            learner,
        } => {
            let retried = match ms.get_node(&id) {
                Some(n) if sorted(&n.peer_urls) == sorted(&peer_urls) => true,
                Some(_) => return Err(Error::MemberExists),
                None => false,
            };
            if !retried
                && ms
                    .nodes()
                    .any(|(_, n)| n.peer_urls.iter().any(|u| peer_urls.contains(u)))
            {
                return Err(Error::PeerUrlExists);
            }
            // etcd 3.4 allows one learner at a time (`maxLearners`).
            let learners = ms
                .nodes()
                .filter(|(nid, _)| !ms.voter_ids().any(|v| v == **nid))
                .count();
            if learner && !retried && learners >= MAX_LEARNERS {
                return Err(Error::TooManyLearners);
            }
            if !learner {
                // etcd's IsReadyToAddVotingMember: counting the new (unstarted) voter, the
                // started voters must still be a quorum (a second member joining a single one
                // is always allowed).
                let (n, up) = voters(&ms, Some(id));
                let n = n + 1;
                if !(up == 1 && n == 2) && up < n / 2 + 1 {
                    return Err(Error::MemberNotEnoughStarted);
                }
            }
            let mut reply = ForwardReply::Applied {
                index: 0,
                outcome: Outcome::Done,
            };
            if !retried {
                let node = Member {
                    name: String::new(),
                    peer_urls: sorted(&peer_urls),
                    client_urls: Vec::new(),
                };
                reply = reply_of(raft.add_learner(id, node, false).await);
                if learner || !matches!(reply, ForwardReply::Applied { .. }) {
                    return Ok(reply);
                }
            }
            if learner || ms.voter_ids().any(|v| v == id) {
                return Ok(reply);
            }
            Ok(membership_write(
                raft,
                ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                false,
            )
            .await)
        }
        MemberOp::Promote { id } => {
            if ms.get_node(&id).is_none() {
                return Err(Error::MemberNotFound);
            }
            if ms.voter_ids().any(|v| v == id) {
                return Err(Error::MemberNotLearner);
            }
            if !in_sync(&m, id) {
                return Err(Error::LearnerNotReady);
            }
            // etcd's IsReadyToPromoteMember: the learner counts, and counts as started.
            let (n, up) = voters(&ms, None);
            let (n, up) = (n + 1, up + 1);
            if up < n / 2 + 1 {
                return Err(Error::MemberNotEnoughStarted);
            }
            Ok(membership_write(
                raft,
                ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                false,
            )
            .await)
        }
        MemberOp::Remove { id } => {
            if ms.get_node(&id).is_none() {
                return Err(Error::MemberNotFound);
            }
            if !ms.voter_ids().any(|v| v == id) {
                return Ok(membership_write(
                    raft,
                    ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                    false,
                )
                .await);
            }
            // etcd's IsReadyToRemoveVotingMember: the started voters left must be a quorum of
            // the voters left.
            let (n, up) = voters(&ms, Some(id));
            if up < n / 2 + 1 {
                return Err(Error::MemberNotEnoughStarted);
            }
            Ok(membership_write(
                raft,
                ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                false,
            )
            .await)
        }
        MemberOp::Update { id, peer_urls } => {
            let Some(node) = ms.get_node(&id) else {
                return Err(Error::MemberNotFound);
            };
            if ms
                .nodes()
                .any(|(other, n)| *other != id && n.peer_urls.iter().any(|u| peer_urls.contains(u)))
            {
                return Err(Error::PeerUrlExists);
            }
            let node = Member {
                peer_urls: sorted(&peer_urls),
                ..node.clone()
            };
            if ms.get_node(&id) == Some(&node) {
                return Ok(ForwardReply::Applied {
                    index: 0,
                    outcome: Outcome::Done,
                });
            }
            Ok(membership_write(
                raft,
                ChangeMembers::SetNodes(BTreeMap::from([(id, node)])),
                true,
            )
            .await)
        }
    }
}

/// Whether learner `id`'s replicated log matches at least [`READY_PERCENT`] of the leader's
/// (etcd's `isLearnerReady`). A learner never heard from has matched nothing.
fn in_sync(m: &RaftMetrics<TypeConfig>, id: u64) -> bool {
    let leader = m.last_log_index.unwrap_or(0);
    let learner = m
        .replication
        .as_ref()
        .and_then(|r| r.get(&id).cloned().flatten())
        .map_or(0, |l| l.index);
    (learner as f64) >= (leader as f64) * READY_PERCENT
}

/// This member's metrics once no membership change is in flight, if it leads.
async fn settled_leader<SM>(raft: &Raft<TypeConfig, SM>) -> Option<RaftMetrics<TypeConfig>>
where
    SM: RaftStateMachine<TypeConfig>,
{
    let settled = raft
        .wait(Some(BUSY_WAIT))
        .metrics(
            |m| {
                !m.state.is_leader()
                    || m.committed_membership_config.log_id() == m.membership_config.log_id()
            },
            "earlier membership change committed",
        )
        .await
        .ok()?;
    settled.state.is_leader().then_some(settled)
}

/// `change_membership`, retried while an earlier change (a member publishing itself, say) is
/// still in progress.
async fn membership_write<SM>(
    raft: &Raft<TypeConfig, SM>,
    changes: ChangeMembers<u64, Member>,
    retain: bool,
) -> ForwardReply
where
    SM: RaftStateMachine<TypeConfig>,
{
    let deadline = tokio::time::Instant::now() + BUSY_WAIT;
    loop {
        let r = raft.change_membership(changes.clone(), retain).await;
        let busy = matches!(
            &r,
            Err(RaftError::APIError(
                ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_)
                        | ChangeMembershipError::UncommittedLeaderLog(_)
                )
            ))
        );
        if !busy || tokio::time::Instant::now() >= deadline {
            return reply_of(r);
        }
        if settled_leader(raft).await.is_none() {
            let leader = raft.metrics().borrow_watched().current_leader;
            return ForwardReply::NotLeader { leader };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            peer_urls: vec![format!("http://{name}:2380")],
            client_urls: Vec::new(),
        }
    }

    #[test]
    fn started_voters_are_counted_without_the_excluded_one() {
        let ms = Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            BTreeMap::from([
                (1, member("a")),
                (2, member("b")),
                (3, member("")),
                (4, member("d")),
            ]),
        )
        .unwrap();
        assert_eq!(voters(&ms, None), (3, 2));
        assert_eq!(voters(&ms, Some(1)), (2, 1));
        assert_eq!(voters(&ms, Some(3)), (2, 2));
    }
}
