//! A member's identity (its member ID and the cluster ID), and how a member added to a running
//! cluster learns it.
//!
//! Members bootstrapped together derive their IDs from `--initial-cluster` and the token, the
//! same on every member (`keelson_store::member_id`). A member added later with MemberAdd got an
//! ID that also hashes the time of the add (`keelson_store::added_member_id`), which it cannot
//! derive. So, as etcd 3.4 does (`GetClusterFromRemotePeers` and
//! `ValidateClusterAndAssignIDs`), a member started with `--initial-cluster-state existing` and
//! no data asks the other members listed in `--initial-cluster` for the membership (the
//! `Members` peer call, which names no target) and finds itself by its peer URLs. The answer is
//! kept in `DIR/member/keelson-identity` (written and fsynced before raft starts, then renamed
//! into place), so a restart knows it without asking anyone; etcd keeps it in its WAL metadata.
//!
//! Its raft then starts uninitialized and waits for the leader, whose membership already holds
//! it, to replicate the log (or a snapshot) to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use openraft::Raft;
use serde::{Deserialize, Serialize};

use crate::forward::{Forwarder, Rpc};
use crate::member::MemberOptions;
use crate::network::PeerConfig;
use crate::types::{Member, TypeConfig};

/// How long a joining member keeps asking for the membership before giving up.
const JOIN_PATIENCE: Duration = Duration::from_secs(30);

/// The answer to the `Members` peer call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MembersReply {
    pub(crate) cluster_id: u64,
    pub(crate) members: Vec<(u64, Member)>,
    /// The log index of that membership, and whether the answering member applied it (so it
    /// is committed): how a removed member learns it was removed (`removed.rs`).
    pub(crate) membership_index: Option<u64>,
    pub(crate) membership_applied: bool,
}

/// The `Members` peer call answered from `raft`'s membership.
pub(crate) fn members_here<SM>(raft: &Raft<TypeConfig, SM>, cluster_id: u64) -> MembersReply
where
    SM: RaftStateMachine<TypeConfig>,
{
    let m = raft.metrics();
    let m = m.borrow_watched();
    let stored = &m.membership_config;
    MembersReply {
        membership_index: stored.log_id().map(|l| l.index),
        membership_applied: m.last_applied.is_some_and(|a| Some(a) >= *stored.log_id()),
        cluster_id,
        members: m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect(),
    }
}

fn identity_file(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("keelson-identity")
}

/// This member's `(member ID, cluster ID)` when they are not the ones derived from
/// `--initial-cluster` (see the module docs); `None` when they are.
pub async fn identity(
    opts: &MemberOptions,
) -> Result<Option<(u64, u64)>, Box<dyn std::error::Error + Send + Sync>> {
    let file = identity_file(&opts.data_dir);
    match std::fs::read_to_string(&file) {
        Ok(s) => {
            return Ok(Some(
                parse(&s).ok_or_else(|| format!("{}: damaged", file.display()))?,
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", file.display()).into()),
    }
    let wal = opts.data_dir.join("member").join("wal");
    let has_log = std::fs::read_dir(&wal).is_ok_and(|mut d| d.next().is_some());
    if opts.new_cluster || has_log {
        return Ok(None);
    }
    let mine: Vec<String> = sorted(
        opts.initial_cluster
            .iter()
            .filter(|(n, _)| *n == opts.name)
            .map(|(_, u)| u.clone()),
    );
    if mine.is_empty() {
        return Err(format!("--name {} is not in --initial-cluster", opts.name).into());
    }
    let others: Vec<String> = opts
        .initial_cluster
        .iter()
        .filter(|(n, _)| *n != opts.name)
        .map(|(_, u)| u.clone())
        .collect();
    let ids = ask(&others, &mine).await?;
    write(&file, ids)?;
    tracing::info!(
        "joined cluster {:x} as member {:x} (found by peer URLs {mine:?})",
        ids.1,
        ids.0
    );
    Ok(Some(ids))
}

fn sorted(urls: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = urls.collect();
    v.sort();
    v
}

/// Asks the members at `peers` until one lists a member with peer URLs `mine`.
async fn ask(
    peers: &[String],
    mine: &[String],
) -> Result<(u64, u64), Box<dyn std::error::Error + Send + Sync>> {
    let forwarder = Forwarder::new(PeerConfig::default());
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    let mut last = String::from("no member listed in --initial-cluster besides this one");
    loop {
        for url in peers {
            let node = Member {
                peer_urls: vec![url.clone()],
                ..Default::default()
            };
            // Target 0: the call names no member (this one does not know their IDs either).
            let r: Result<MembersReply, _> = forwarder
                .call(Rpc::Members, 0, &node, &(), Duration::from_secs(2))
                .await;
            match r {
                Ok(reply) => {
                    let me = reply
                        .members
                        .iter()
                        .find(|(_, m)| sorted(m.peer_urls.iter().cloned()) == mine);
                    match me {
                        Some((id, _)) => return Ok((*id, reply.cluster_id)),
                        None => {
                            last = format!(
                                "{url} lists no member with peer URLs {mine:?} (add it first \
                                 with `etcdctl member add`)"
                            )
                        }
                    }
                }
                Err(e) => last = format!("{url}: {e:?}"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(
                format!("could not learn this member's ID from the cluster: {last}").into(),
            );
        }
        tracing::info!("joining the cluster: {last}; asking again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn parse(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split_whitespace();
    let member = u64::from_str_radix(it.next()?, 16).ok()?;
    let cluster = u64::from_str_radix(it.next()?, 16).ok()?;
    it.next().is_none().then_some((member, cluster))
}

/// Writes the identity durably: a temporary file, fsynced, renamed into place, the directory
/// fsynced.
fn write(file: &Path, (member, cluster): (u64, u64)) -> std::io::Result<()> {
    use std::io::Write;
    let dir = file.parent().expect("the identity file is in member/");
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{member:x} {cluster:x}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = identity_file(dir.path());
        write(&file, (0xc38407b9554d54dc, 0xe8c222cc9810ba31)).unwrap();
        let s = std::fs::read_to_string(&file).unwrap();
        assert_eq!(parse(&s), Some((0xc38407b9554d54dc, 0xe8c222cc9810ba31)));
        assert_eq!(parse("zz 1"), None);
        assert_eq!(parse("1"), None);
        assert_eq!(parse("1 2 3"), None);
    }
}
