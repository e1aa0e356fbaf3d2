//! The proposer: "propose → apply in log order", behind the [`Propose`] trait.
//!
//! Every write reaches the store as a [`Command`] handed to the member's proposer, which puts it
//! in a log and answers once the command has been applied *on this member* (durable, and
//! published to readers and watchers) with the applier's response. Two proposers exist:
//! - [`Node`], the single member's (the default of `Store::open`): one apply thread takes
//!   whatever proposals are queued (up to [`MAX_GROUP`]), gives them consecutive log indexes and
//!   applies and commits them as one group with a single fsync (group commit, [`Writer`]). So no
//!   write is acknowledged before it is durable, and concurrent writers share fsyncs.
//! - the raft crate's, installed with `Store::open_replicated`: it appends the command to the
//!   replicated log, and the committed entries are applied through [`crate::Replica`], which
//!   uses the same [`Writer`].
//!
//! The proposer also says whether this member leads: only the leader keeps lease time and
//! proposes the revokes of expired leases (`Core::spawn_lease_expiry`). A member that does not
//! lead reaches the leader's lease clock through its proposer (KeepAlive, TimeToLive), and a
//! linearizable read passes the proposer's read barrier before reading local state.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use crate::apply::{Command, Durability, Response, Writer};
use crate::error::{Error, Result};
use crate::lease::LeaseStatus;

/// The most commands applied under one fsync.
const MAX_GROUP: usize = 1024;

/// Puts commands in the member's log. See the module docs.
pub trait Propose: Send + Sync + 'static {
    /// Proposes `cmd` and resolves once it has been applied on this member, with the applier's
    /// response or its deterministic rejection (the command changed nothing). When the command
    /// could not be committed the error says why in etcd's terms (`Error::NoLeader`,
    /// `Error::LeaderChanged`, `Error::Timeout`, `Error::Stopped`). A proposer that learns the
    /// outcome from another member must still wait until this member has applied the entry, so
    /// a client reading from this member afterwards sees its own write.
    fn propose(&self, cmd: Command) -> BoxFuture<'static, Result<Response>>;

    /// Proposes `cmd` only if this member leads, never forwarding it: for decisions only the
    /// leader may take on its own state (revoking the leases its clock says expired). Fails with
    /// `LeaderChanged` on a member that does not lead. The single member always leads.
    fn propose_as_leader(&self, cmd: Command) -> BoxFuture<'static, Result<Response>> {
        self.propose(cmd)
    }

    /// Whether this member currently leads the group (a single member always does). Only the
    /// leader expires leases; a member that becomes leader gives every lease a fresh TTL first,
    /// as etcd's `Promote` does.
    fn is_leader(&self) -> bool;

    /// Resolves once this member has applied everything committed before the call: the
    /// barrier a linearizable read passes before reading the local state (etcd's ReadIndex).
    /// Errors as `propose`'s (`NoLeader`, `Timeout`, `Stopped`). The single member's local
    /// state *is* its log's state, so its barrier is immediate.
    fn read_barrier(&self) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Renews lease `id` on the member that keeps lease time (the leader), answering the TTL it
    /// renewed to, or `LeaseNotFound`. `None`: this member keeps lease time itself (the single
    /// member), so the caller renews with its own lessor.
    fn renew_lease(&self, _id: i64) -> Option<BoxFuture<'static, Result<i64>>> {
        None
    }

    /// Lease `id` as the member that keeps lease time sees it (TimeToLive); `None` as for
    /// [`Propose::renew_lease`].
    fn lease_time_to_live(&self, _id: i64) -> Option<BoxFuture<'static, Result<LeaseStatus>>> {
        None
    }

    /// Where the replicated log stands, for Maintenance.Status and response headers; `None`
    /// for the single member (leader of term 2, its applied index as the raft index).
    fn status(&self) -> Option<RaftStatus> {
        None
    }

    /// Whether this member knows a live leader (etcd's `Leader() != None`): a request carrying
    /// the `hasleader: true` metadata fails at once with `NoLeader` when it does not
    /// (`server/mod.rs`). A follower forgets its leader one election timeout after it last heard
    /// from it, a leader once a quorum stopped acknowledging it for as long, as etcd's members
    /// do (pre-candidate, check-quorum). The single member always leads.
    fn has_leader(&self) -> BoxFuture<'static, bool> {
        Box::pin(async { true })
    }

    /// The members of the group as the replicated membership describes them; `None` for the
    /// single member (MemberList then describes it from its flags).
    fn members(&self) -> Option<Vec<MemberInfo>> {
        None
    }

    /// Changes the replicated membership (on the leader, through joint consensus where voters
    /// change) and resolves once the change is applied on this member, so [`Propose::members`]
    /// then shows it. Errors are etcd's (`MemberNotFound`, `PeerUrlExists`, `MemberNotLearner`,
    /// `LearnerNotReady`, `MemberNotEnoughStarted`, or `propose`'s). `None` for the single
    /// member, whose membership cannot change.
    fn change_members(&self, _change: MemberChange) -> Option<BoxFuture<'static, Result<()>>> {
        None
    }

    /// Maintenance.MoveLeader: hands leadership to voter `target` and resolves once this member
    /// sees it lead, as etcd's `MoveLeader`: `NotLeader` on a member that does not lead,
    /// `BadLeaderTransferee` for a target that is not a voter, `TimeoutLeaderTransfer` when the
    /// target does not lead within the request timeout. `None` for the single member, which
    /// always leads and can only "move" leadership to itself.
    fn move_leader(&self, _target: u64) -> Option<BoxFuture<'static, Result<()>>> {
        None
    }
}

/// A membership change (the Cluster service's MemberAdd, MemberPromote, MemberRemove,
/// MemberUpdate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// A new member `id` reached on `peer_urls`, a learner or (through a learner first) a voter.
    Add {
        id: u64,
        peer_urls: Vec<String>,
        learner: bool,
    },
    /// Learner `id` becomes a voter, if it has caught up with the leader.
    Promote { id: u64 },
    /// Member `id` leaves.
    Remove { id: u64 },
    /// Member `id` is now reached on `peer_urls`.
    Update { id: u64, peer_urls: Vec<String> },
}

/// Where the replicated log stands on this member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// The member this one believes leads (0: none known).
    pub leader: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// This member is a learner in the membership it knows (etcd serves a learner only Status
    /// and serializable Range: `server/require_leader.rs`).
    pub is_learner: bool,
}

/// One member as MemberList describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

struct Proposal {
    cmd: Command,
    done: oneshot::Sender<Result<Response>>,
}

/// The single member's proposer.
pub(crate) struct Node {
    tx: mpsc::Sender<Proposal>,
}

impl Node {
    /// Starts the apply thread. It stops when the `Node` is dropped, or after a failure that
    /// stops the store (its proposers are answered with the error, later ones with
    /// `Error::Stopped`).
    pub(crate) fn start(writer: Arc<Writer>) -> Result<Node> {
        let (tx, rx) = mpsc::channel::<Proposal>(4 * MAX_GROUP);
        let first = writer.applier.consistent_index()?;
        std::thread::Builder::new()
            .name("keelson-apply".into())
            .spawn(move || {
                // A panic here is a bug in apply; a member that keeps serving reads while it can
                // never apply again is worse than one that stops (etcd's apply panics take the
                // whole process down too), so the process exits and its supervisor restarts it
                // from the durable state.
                let run = std::panic::AssertUnwindSafe(|| apply_loop(writer, rx, first));
                if std::panic::catch_unwind(run).is_err() {
                    eprintln!("keelson: the apply thread panicked; stopping the member");
                    std::process::abort();
                }
            })
            .map_err(Error::from)?;
        Ok(Node { tx })
    }
}

impl Propose for Node {
    fn propose(&self, cmd: Command) -> BoxFuture<'static, Result<Response>> {
        let tx = self.tx.clone();
        Box::pin(async move {
            let (done, rx) = oneshot::channel();
            tx.send(Proposal { cmd, done })
                .await
                .map_err(|_| Error::Stopped)?;
            rx.await.map_err(|_| Error::Stopped)?
        })
    }

    fn is_leader(&self) -> bool {
        true
    }
}

fn apply_loop(writer: Arc<Writer>, mut rx: mpsc::Receiver<Proposal>, mut index: u64) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(p) = rx.blocking_recv() {
        group.push(p);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let last = index + group.len() as u64;
        match writer.apply_group(
            group.iter().map(|p| &p.cmd),
            Some(last),
            None,
            Durability::Fsync,
        ) {
            Ok(results) => {
                index = last;
                for (p, r) in group.drain(..).zip(results) {
                    let _ = p.done.send(r);
                }
            }
            Err(e) => {
                // Not known to be durable, so not acknowledged; the writer now refuses
                // everything, and the member has to be restarted.
                for p in group.drain(..) {
                    let _ = p.done.send(Err(e.clone()));
                }
                return;
            }
        }
    }
}

/// The proposer of a store that has none yet (`Store::open_replicated` before `start`).
pub(crate) struct NotStarted;

impl Propose for NotStarted {
    fn propose(&self, _: Command) -> BoxFuture<'static, Result<Response>> {
        Box::pin(async { Err(Error::NoLeader) })
    }

    fn read_barrier(&self) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Err(Error::NoLeader) })
    }

    fn renew_lease(&self, _: i64) -> Option<BoxFuture<'static, Result<i64>>> {
        Some(Box::pin(async { Err(Error::NoLeader) }))
    }

    fn lease_time_to_live(&self, _: i64) -> Option<BoxFuture<'static, Result<LeaseStatus>>> {
        Some(Box::pin(async { Err(Error::NoLeader) }))
    }

    fn is_leader(&self) -> bool {
        false
    }

    fn has_leader(&self) -> BoxFuture<'static, bool> {
        Box::pin(async { false })
    }
}
