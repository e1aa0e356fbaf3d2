//! The faults: choosing one, injecting it, healing it, and saying what happened.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use super::NemesisKind;
use crate::cluster::{Cluster, Damage, Restart, Target};
use crate::error::HarnessError;
use crate::net::{Cuts, Shape};

/// How long a member restarted on damaged files has to serve or to refuse.
const CORRUPT_RESTART: Duration = Duration::from_secs(30);
/// How long a member added back may take to catch up and serve.
const CATCH_UP: Duration = Duration::from_secs(90);

#[derive(Clone, Debug)]
enum What {
    Kill(usize),
    Pause(usize),
    Partition(Cuts),
    Member(usize),
    /// Damage the log tail or the newest snapshot file.
    Corrupt {
        slot: usize,
        damage: Damage,
    },
}

/// One fault: what it does and, once injected, what it did (see the module docs of
/// [`super`]).
pub(super) struct Fault {
    what: What,
    detail: String,
}

/// A member to hit: the leader half the time (when there is one), else any.
async fn victim(cluster: &Cluster, rng: &mut StdRng) -> (usize, String) {
    if rng.random_bool(0.5) {
        if let Some(l) = cluster.leader().await {
            return (l, format!("{} (the leader)", cluster.name(l)));
        }
    }
    let i = rng.random_range(0..cluster.len());
    (i, cluster.name(i).to_string())
}

impl Fault {
    /// A fault of `kind` (for [`NemesisKind::All`], of a random kind) against the cluster as
    /// it is now.
    pub(super) async fn choose(kind: NemesisKind, cluster: &Cluster, rng: &mut StdRng) -> Fault {
        let kind = match kind {
            NemesisKind::All => [
                NemesisKind::Kill,
                NemesisKind::Pause,
                NemesisKind::Partition,
                NemesisKind::Member,
                NemesisKind::Corrupt,
            ][rng.random_range(0..5)],
            k => k,
        };
        let n = cluster.len();
        let (what, detail) = match kind {
            NemesisKind::Kill => {
                let (i, who) = victim(cluster, rng).await;
                (What::Kill(i), format!("kill -9 {who}"))
            }
            NemesisKind::Pause => {
                let (i, who) = victim(cluster, rng).await;
                (What::Pause(i), format!("SIGSTOP {who}"))
            }
            NemesisKind::Partition => {
                let shape = match rng.random_range(0..4) {
                    0 => Shape::Isolate(rng.random_range(0..n)),
                    1 => match cluster.leader().await {
                        Some(l) => Shape::Isolate(l),
                        None => Shape::Isolate(rng.random_range(0..n)),
                    },
                    2 => Shape::random_halves(n, rng),
                    _ if n >= 3 => Shape::random_bridge(n, rng),
                    _ => Shape::random_halves(n, rng),
                };
                let cuts = shape.cuts(n);
                (What::Partition(cuts.clone()), format!("{shape} ({cuts})"))
            }
            NemesisKind::Member => {
                let (i, who) = victim(cluster, rng).await;
                (What::Member(i), format!("remove {who}"))
            }
            NemesisKind::Corrupt | NemesisKind::None | NemesisKind::All => {
                let i = rng.random_range(0..n);
                // Keelson keeps no snapshot file.
                let damage = if cluster.target() == Target::Etcd && rng.random_bool(0.5) {
                    Damage::Snapshot
                } else {
                    Damage::LogTail
                };
                (
                    What::Corrupt { slot: i, damage },
                    format!("kill -9 {}", cluster.name(i)),
                )
            }
        };
        Fault { what, detail }
    }

    /// kill, pause, partition, member or corrupt.
    pub(super) fn kind(&self) -> &'static str {
        match self.what {
            What::Kill(_) => "kill",
            What::Pause(_) => "pause",
            What::Partition(_) => "partition",
            What::Member(_) => "member",
            What::Corrupt { .. } => "corrupt",
        }
    }

    /// What was done so far.
    pub(super) fn detail(&self) -> &str {
        &self.detail
    }

    /// Does it.
    pub(super) async fn inject(
        mut self,
        cluster: &Cluster,
        rng: &mut StdRng,
    ) -> Result<Fault, HarnessError> {
        match &self.what {
            What::Kill(i) => cluster.kill(*i).await,
            What::Pause(i) => cluster.pause(*i)?,
            What::Partition(cuts) => cluster.partition(cuts)?,
            What::Member(i) => {
                let id = cluster.member_id(*i);
                cluster.remove_member(*i).await?;
                if let Some(id) = id {
                    self.detail += &format!(" (member {id:x})");
                }
            }
            What::Corrupt { slot, damage } => {
                cluster.kill(*slot).await;
                match cluster.corrupt(*slot, *damage, rng)? {
                    Some(c) => self.detail += &format!("; {c}"),
                    None => self.detail += "; nothing on disk to damage yet",
                }
            }
        }
        Ok(self)
    }

    /// Undoes it; the full account of the fault.
    pub(super) async fn heal(mut self, cluster: &Cluster) -> Result<String, HarnessError> {
        match self.what {
            What::Kill(i) => {
                cluster.restart(i)?;
                self.detail += "; restarted";
            }
            What::Pause(i) => {
                cluster.resume(i)?;
                self.detail += "; SIGCONT";
            }
            What::Partition(_) => {
                cluster.partition(&Cuts::none())?;
                self.detail += "; healed";
            }
            What::Member(i) => {
                cluster.add_member(i).await?;
                cluster.wait_serving(i, CATCH_UP).await?;
                self.detail += "; wiped and added back";
                if let Some(id) = cluster.member_id(i) {
                    self.detail += &format!(" as member {id:x}");
                }
            }
            What::Corrupt { slot, .. } => {
                let how = cluster.restart_checked(slot, CORRUPT_RESTART).await?;
                match how {
                    Restart::Serving => {
                        self.detail += "; restarted and serves";
                        if cluster.process_log(slot).contains("torn tail") {
                            self.detail += " (it dropped a torn tail)";
                        }
                    }
                    Restart::Exited { status, why } => {
                        self.detail +=
                            &format!("; refused to start ({status}: {why}); wiped and added back");
                        cluster.replace_member(slot).await?;
                        cluster.wait_serving(slot, CATCH_UP).await?;
                    }
                    Restart::NotServing => {
                        self.detail += &format!(
                            "; did not serve within {CORRUPT_RESTART:?}; wiped and added back"
                        );
                        cluster.replace_member(slot).await?;
                        cluster.wait_serving(slot, CATCH_UP).await?;
                    }
                }
            }
        }
        Ok(self.detail)
    }
}
