//! Replacing a member through the Cluster API, as an operator replaces a failed machine:
//! MemberRemove, wipe its data, MemberAdd with the same peer URL, start it with
//! `--initial-cluster-state existing` and an `--initial-cluster` of the members after the add.
//!
//! Requests go to a member that can take them, the leader's first, and are retried until a
//! deadline: a membership change may be refused while another is in flight or while the
//! leader changes. Retrying is safe in both directions — a remove that already happened
//! answers "member not found", an add that already happened "Peer URLs already exists", and
//! both are taken as done (the added member's ID then comes from MemberList).
//!
//! The caller keeps a majority: removing a member of three while the other two serve leaves two
//! of two, and adding it back makes three of which two serve.

use std::time::{Duration, Instant};

use keelson_proto::etcdserverpb::Member;

use super::{rpc, Cluster};
use crate::error::HarnessError;

/// How long a membership change may keep being retried.
const MEMBERSHIP_PATIENCE: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_millis(500);

impl Cluster {
    /// Slots that can take a Cluster API request (running, not paused, not removed, not
    /// `except`), the leader's first.
    async fn helpers(&self, except: usize) -> Vec<usize> {
        let leader = self.leader().await;
        let mut v: Vec<usize> = (0..self.len())
            .filter(|&h| h != except && self.is_running(h) && !self.is_paused(h))
            .filter(|&h| !self.is_removed(h))
            .collect();
        v.sort_by_key(|&h| Some(h) != leader);
        v
    }

    fn url(&self, i: usize) -> &str {
        &self.slots[i].client_url
    }

    /// Slot `i`'s member ID: remembered, or looked up by its peer URL.
    async fn resolve_member_id(&self, i: usize) -> Result<u64, HarnessError> {
        if let Some(id) = self.lock()[i].id {
            return Ok(id);
        }
        let peer = self.slots[i].peer_url.clone();
        let mut last = String::from("no member to ask");
        for h in self.helpers(i).await {
            match rpc::member_list(self.url(h)).await {
                Ok(ms) => match ms.iter().find(|m| m.peer_ur_ls.contains(&peer)) {
                    Some(m) => return Ok(m.id),
                    None => last = format!("no member has peer URL {peer}"),
                },
                Err(e) => last = e,
            }
        }
        Err(HarnessError::Rpc {
            what: format!("finding {}'s member ID", self.name(i)),
            message: last,
        })
    }

    /// Removes slot `i`'s member from the cluster and kills its process (a removed member
    /// stops by itself too). Its data stays until [`Cluster::add_member`] wipes it.
    pub async fn remove_member(&self, i: usize) -> Result<(), HarnessError> {
        if self.is_removed(i) {
            return Ok(());
        }
        let id = self.resolve_member_id(i).await?;
        self.journal
            .note(&format!("MemberRemove {} ({id:x})", self.name(i)));
        let deadline = Instant::now() + MEMBERSHIP_PATIENCE;
        'retry: loop {
            let mut last = String::from("no member to ask");
            for h in self.helpers(i).await {
                match rpc::member_remove(self.url(h), id).await {
                    Ok(()) => break 'retry,
                    Err(e) if e.contains("member not found") => break 'retry,
                    Err(e) => last = e,
                }
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Rpc {
                    what: format!("removing {}", self.name(i)),
                    message: last,
                });
            }
            tokio::time::sleep(RETRY).await;
        }
        self.kill(i).await;
        let mut procs = self.lock();
        procs[i].removed = true;
        procs[i].id = None;
        Ok(())
    }

    /// Wipes removed slot `i`'s data, adds it back with its peer URL (a new member ID) and
    /// starts it with `--initial-cluster-state existing`. Does not wait for it to serve.
    pub async fn add_member(&self, i: usize) -> Result<(), HarnessError> {
        if !self.is_removed(i) {
            return Err(HarnessError::Config(format!(
                "{} is still a member; remove it first",
                self.name(i)
            )));
        }
        let dir = self.data_dir(i);
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| HarnessError::io(format!("wiping {}", dir.display()), e))?;
        }
        let peer = self.slots[i].peer_url.clone();
        self.journal
            .note(&format!("wiped {}; MemberAdd {peer}", self.name(i)));
        let deadline = Instant::now() + MEMBERSHIP_PATIENCE;
        let (id, members) = 'retry: loop {
            let mut last = String::from("no member to ask");
            for h in self.helpers(i).await {
                match rpc::member_add(self.url(h), &peer).await {
                    Ok(added) => break 'retry added,
                    Err(e) if e.contains("Peer URLs already exists") => {
                        // An earlier attempt got through; its answer was lost.
                        match rpc::member_list(self.url(h)).await {
                            Ok(ms) => match ms.iter().find(|m| m.peer_ur_ls.contains(&peer)) {
                                Some(m) => break 'retry (m.id, ms.clone()),
                                None => last = e,
                            },
                            Err(e) => last = e,
                        }
                    }
                    Err(e) => last = e,
                }
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Rpc {
                    what: format!("adding {} back", self.name(i)),
                    message: last,
                });
            }
            tokio::time::sleep(RETRY).await;
        };
        let initial = self.initial_cluster_of(&members);
        self.journal.note(&format!(
            "{} is member {id:x}; --initial-cluster {initial}",
            self.name(i)
        ));
        {
            let mut procs = self.lock();
            let p = &mut procs[i];
            p.removed = false;
            p.id = Some(id);
            p.initial_cluster = initial;
            p.state = "existing";
        }
        self.spawn(i)
    }

    /// Removes, wipes and adds back slot `i` (see the module docs).
    pub async fn replace_member(&self, i: usize) -> Result<(), HarnessError> {
        self.remove_member(i).await?;
        self.add_member(i).await
    }

    /// `--initial-cluster` for `members`: each slot's name with its peer URL.
    fn initial_cluster_of(&self, members: &[Member]) -> String {
        members
            .iter()
            .filter_map(|m| {
                let url = m.peer_ur_ls.first()?;
                let s = self.slots.iter().find(|s| &s.peer_url == url)?;
                Some(format!("{}={url}", s.name))
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}
