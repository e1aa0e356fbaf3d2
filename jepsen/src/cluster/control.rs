//! Faults on single members and healing them: kill, restart, pause, partition, corrupt; who
//! leads; waiting until members serve.

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use rand::Rng;

use super::{disk, process, rpc, Cluster, Corruption, Damage, Net, Target};
use crate::error::HarnessError;
use crate::net::{Cuts, Network};

/// How long [`Cluster::heal`] waits for each member to serve again.
const HEAL_PATIENCE: Duration = Duration::from_secs(90);
/// How often an awaited member is asked again.
const POLL: Duration = Duration::from_millis(100);

/// How a member restarted on its data turned out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restart {
    /// It completes linearizable reads.
    Serving,
    /// It exited by itself: its exit status and the line of its log that says why.
    Exited { status: String, why: String },
    /// It runs but did not serve in time.
    NotServing,
}

/// The line of a member's `log` that best says why it stopped: the last one mentioning
/// corruption or a checksum, else the last error, panic or fatal line, else the last line.
pub(crate) fn why_it_stopped(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let last_with = |words: &[&str]| {
        lines.iter().rev().find(|l| {
            let l = l.to_ascii_lowercase();
            words.iter().any(|w| l.contains(w))
        })
    };
    last_with(&["corrupt", "crc", "checksum"])
        .or_else(|| last_with(&["error", "panic", "fatal", " c | "]))
        .or(lines.last())
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "(nothing in its log)".into())
}

fn read_from(path: &Path, from: u64) -> String {
    let b = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(b.get(from as usize..).unwrap_or_default()).into_owned()
}

/// The first panic in `log` (its "panicked at" line and the message after it), if any, as a
/// sentence to put in an error: a panicked thread can leave a process running but useless.
fn panics(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    match lines.iter().position(|l| l.contains("panicked at")) {
        Some(p) => format!(
            " it panicked: {};",
            lines[p..(p + 2).min(lines.len())].join(" ")
        ),
        None => String::new(),
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The slot every member names as leader, given each slot's (own id, leader id): None while a
/// member is silent, names no leader or another one, or the leader is not among them.
pub(super) fn agreed_leader(seen: &[Option<(u64, u64)>]) -> Option<usize> {
    let first = (*seen.first()?)?.1;
    if first == 0 || !seen.iter().all(|s| s.is_some_and(|(_, l)| l == first)) {
        return None;
    }
    seen.iter()
        .position(|s| s.is_some_and(|(id, _)| id == first))
}

/// The member ID a majority of all `n` members name as leader, given the (own id, leader id)
/// answers of some of them.
fn majority_leader(seen: &[Option<(u64, u64)>], n: usize) -> Option<u64> {
    let named: Vec<u64> = seen.iter().flatten().map(|&(_, l)| l).collect();
    named
        .iter()
        .copied()
        .filter(|&l| l != 0)
        .find(|l| named.iter().filter(|x| *x == l).count() > n / 2)
}

impl Cluster {
    /// Number of member slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn target(&self) -> Target {
        self.opts.target
    }

    /// Slot `i`'s member name (`m<i>`).
    pub fn name(&self, i: usize) -> &str {
        &self.slots[i].name
    }

    pub fn log_path(&self, i: usize) -> &Path {
        &self.slots[i].log
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.slots[i].data_dir
    }

    /// The partition mechanism in use ([`Network::Namespaces`] or [`Network::Proxy`]).
    pub fn network(&self) -> Network {
        match self.net {
            Net::Namespaces(_) => Network::Namespaces,
            Net::Proxy(_) => Network::Proxy,
        }
    }

    /// Appends a line to `cluster/control.log`.
    pub fn note(&self, msg: &str) {
        self.journal.note(msg);
    }

    /// Whether slot `i` has a live process (paused counts as live).
    pub fn is_running(&self, i: usize) -> bool {
        self.reap_if_exited(i);
        self.lock()[i].child.is_some()
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.lock()[i].paused
    }

    /// Whether slot `i` was removed from the cluster and not added back yet.
    pub fn is_removed(&self, i: usize) -> bool {
        self.lock()[i].removed
    }

    /// Reaps slot `i`'s process if it exited by itself: its status.
    fn reap_if_exited(&self, i: usize) -> Option<ExitStatus> {
        let mut procs = self.lock();
        let p = &mut procs[i];
        let status = p.child.as_mut()?.try_wait().ok().flatten()?;
        p.child = None;
        p.paused = false;
        if let Net::Proxy(proxies) = &self.net {
            proxies.set_pid(i, None);
        }
        drop(procs);
        self.journal
            .note(&format!("{} exited by itself ({status})", self.name(i)));
        Some(status)
    }

    /// Errs with the end of its log if slot `i`'s process exited by itself.
    pub(crate) fn check_alive(&self, i: usize) -> Result<(), HarnessError> {
        match self.reap_if_exited(i) {
            None => Ok(()),
            Some(status) => Err(HarnessError::MemberExited {
                member: self.name(i).to_string(),
                status: status.to_string(),
                log_tail: tail(&self.process_log(i), 30),
            }),
        }
    }

    /// Slot `i`'s member ID as last seen (None while removed or not yet known).
    pub fn member_id(&self, i: usize) -> Option<u64> {
        self.lock()[i].id
    }

    /// What slot `i`'s current (or last) process wrote to its log.
    pub fn process_log(&self, i: usize) -> String {
        let from = self.lock()[i].log_from;
        read_from(&self.slots[i].log, from)
    }

    /// SIGKILLs slot `i`'s process and reaps it; nothing if it is not running.
    pub async fn kill(&self, i: usize) {
        let child = {
            let mut procs = self.lock();
            procs[i].paused = false;
            procs[i].child.take()
        };
        if let Some(c) = child {
            if let Net::Proxy(proxies) = &self.net {
                proxies.set_pid(i, None);
            }
            self.journal
                .note(&format!("kill -9 {} (pid {})", self.name(i), c.id()));
            process::kill(c).await;
        }
    }

    /// Starts slot `i` again on its data; it must be stopped and still a member.
    pub fn restart(&self, i: usize) -> Result<(), HarnessError> {
        if self.is_removed(i) {
            return Err(HarnessError::Config(format!(
                "{} was removed from the cluster; add it back instead",
                self.name(i)
            )));
        }
        self.reap_if_exited(i);
        self.spawn(i)
    }

    fn signal(&self, i: usize, sig: libc::c_int, paused: bool) -> Result<(), HarnessError> {
        let mut procs = self.lock();
        let p = &mut procs[i];
        let Some(c) = &p.child else {
            return Err(HarnessError::Config(format!(
                "{} is not running",
                self.slots[i].name
            )));
        };
        process::signal(c.id(), sig)
            .map_err(|e| HarnessError::io(format!("signalling {}", self.slots[i].name), e))?;
        p.paused = paused;
        Ok(())
    }

    /// SIGSTOPs slot `i`'s process.
    pub fn pause(&self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, libc::SIGSTOP, true)?;
        self.journal.note(&format!("SIGSTOP {}", self.name(i)));
        Ok(())
    }

    /// SIGCONTs slot `i`'s process.
    pub fn resume(&self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, libc::SIGCONT, false)?;
        self.journal.note(&format!("SIGCONT {}", self.name(i)));
        Ok(())
    }

    /// Cuts exactly the links in `cuts` (and heals all others). Runs `ip` in namespace mode,
    /// which blocks for a few milliseconds.
    pub fn partition(&self, cuts: &Cuts) -> Result<(), HarnessError> {
        match &self.net {
            Net::Namespaces(ns) => ns.apply(cuts)?,
            Net::Proxy(p) => p.apply(cuts),
        }
        *self.cuts.lock().unwrap_or_else(|e| e.into_inner()) = cuts.clone();
        self.journal.note(&if cuts.is_empty() {
            "network healed".to_string()
        } else {
            cuts.to_string()
        });
        Ok(())
    }

    /// The links currently cut.
    pub fn cuts(&self) -> Cuts {
        self.cuts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Each slot's (own member ID, leader it names), None for slots that are not running, are
    /// paused or did not answer. Remembers the IDs.
    pub(crate) async fn statuses(&self) -> Vec<Option<(u64, u64)>> {
        let asked: Vec<bool> = (0..self.len())
            .map(|i| self.is_running(i) && !self.is_paused(i))
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for (i, s) in self.slots.iter().enumerate() {
            if asked[i] {
                let url = s.client_url.clone();
                set.spawn(async move { (i, rpc::status(&url).await) });
            }
        }
        let mut seen = vec![None; self.len()];
        while let Some(Ok((i, s))) = set.join_next().await {
            seen[i] = s;
        }
        let mut procs = self.lock();
        for (i, s) in seen.iter().enumerate() {
            if let Some((id, _)) = s {
                procs[i].id = Some(*id);
            }
        }
        seen
    }

    /// The slot a majority of members name as leader, if any.
    pub async fn leader(&self) -> Option<usize> {
        let seen = self.statuses().await;
        let id = majority_leader(&seen, self.len())?;
        self.lock().iter().position(|p| p.id == Some(id))
    }

    /// Waits until slot `i` completes a linearizable read; errs if its process exits or
    /// `patience` runs out.
    pub async fn wait_serving(&self, i: usize, patience: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + patience;
        loop {
            self.check_alive(i)?;
            if !self.is_running(i) {
                return Err(HarnessError::Config(format!(
                    "{} is not running",
                    self.name(i)
                )));
            }
            if rpc::serves(&self.slots[i].client_url).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.process_log(i);
                return Err(HarnessError::timeout(
                    format!(
                        "{} to serve;{} its log ends:\n{}",
                        self.name(i),
                        panics(&log),
                        tail(&log, 20)
                    ),
                    patience,
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every member slot not removed serves (within `patience` in all).
    pub async fn wait_healthy(&self, patience: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + patience;
        for i in 0..self.len() {
            if !self.is_removed(i) {
                let left = deadline.saturating_duration_since(Instant::now());
                self.wait_serving(i, left.max(POLL)).await?;
            }
        }
        Ok(())
    }

    /// Restarts slot `i` on its data and watches it for up to `patience`: does it serve, exit
    /// (saying why), or neither?
    pub async fn restart_checked(
        &self,
        i: usize,
        patience: Duration,
    ) -> Result<Restart, HarnessError> {
        self.restart(i)?;
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.reap_if_exited(i) {
                return Ok(Restart::Exited {
                    status: status.to_string(),
                    why: why_it_stopped(&self.process_log(i)),
                });
            }
            if rpc::serves(&self.slots[i].client_url).await {
                return Ok(Restart::Serving);
            }
            if Instant::now() > deadline {
                return Ok(Restart::NotServing);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Flips a byte of stopped slot `i`'s raft log or snapshot as `damage` says (see
    /// `disk.rs`). None: nothing to damage (yet).
    pub fn corrupt(
        &self,
        i: usize,
        damage: Damage,
        rng: &mut impl Rng,
    ) -> Result<Option<Corruption>, HarnessError> {
        if self.is_running(i) {
            return Err(HarnessError::Config(format!(
                "{} must be stopped before its files are damaged",
                self.name(i)
            )));
        }
        let c = disk::corrupt(self.opts.target, self.data_dir(i), damage, rng)?;
        self.journal.note(&match &c {
            Some(c) => format!("{}: {c}", self.name(i)),
            None => format!("{}: nothing to corrupt", self.name(i)),
        });
        Ok(c)
    }

    /// Puts everything back: heals the network, continues paused members, adds removed ones
    /// back, restarts dead ones, and waits until every member serves. A member that will not
    /// start on its data (it exits) is wiped and added back. Returns what it had to do.
    pub async fn heal(&self) -> Result<Vec<String>, HarnessError> {
        let mut done = Vec::new();
        if !self.cuts().is_empty() {
            self.partition(&Cuts::none())?;
            done.push("healed the network".to_string());
        }
        for i in 0..self.len() {
            if self.is_paused(i) {
                self.resume(i)?;
                done.push(format!("continued {}", self.name(i)));
            }
        }
        for i in 0..self.len() {
            if self.is_removed(i) {
                self.add_member(i).await?;
                done.push(format!("added {} back", self.name(i)));
            } else if !self.is_running(i) {
                self.restart(i)?;
                done.push(format!("restarted {}", self.name(i)));
            }
        }
        for i in 0..self.len() {
            match self.wait_serving(i, HEAL_PATIENCE).await {
                Ok(()) => {}
                Err(HarnessError::MemberExited { status, .. }) => {
                    let why = why_it_stopped(&self.process_log(i));
                    done.push(format!(
                        "{} would not start ({status}: {why}); replaced it",
                        self.name(i)
                    ));
                    self.replace_member(i).await?;
                    self.wait_serving(i, HEAL_PATIENCE).await?;
                }
                Err(e) => return Err(e),
            }
        }
        self.journal.note(&format!("healed: {}", done.join("; ")));
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_is_agreed_only_when_all_name_the_same_member() {
        let all = |l: u64| vec![Some((10, l)), Some((20, l)), Some((30, l))];
        assert_eq!(agreed_leader(&all(20)), Some(1));
        assert_eq!(agreed_leader(&all(0)), None);
        assert_eq!(agreed_leader(&all(99)), None, "not a member");
        let split = vec![Some((10, 10)), Some((20, 20)), Some((30, 20))];
        assert_eq!(agreed_leader(&split), None);
        assert_eq!(agreed_leader(&[Some((10, 30)), None, Some((30, 30))]), None);
    }

    #[test]
    fn the_leader_is_the_one_a_majority_names() {
        // An isolated old leader still names itself; the other two follow a new one.
        let seen = vec![Some((10, 10)), Some((20, 30)), Some((30, 30))];
        assert_eq!(majority_leader(&seen, 3), Some(30));
        // A paused member does not answer: two of three still decide, even without the
        // leader's own answer.
        assert_eq!(
            majority_leader(&[Some((10, 30)), Some((20, 30)), None], 3),
            Some(30)
        );
        // One answer is no majority of three.
        assert_eq!(majority_leader(&[None, None, Some((30, 30))], 3), None);
        assert_eq!(majority_leader(&[Some((10, 0)), Some((20, 0))], 3), None);
        // Two members split between two leaders: no majority.
        assert_eq!(majority_leader(&[Some((10, 10)), Some((20, 20))], 3), None);
    }

    #[test]
    fn a_panic_is_quoted_with_its_message() {
        let log = "ok\nthread 'w' panicked at src/x.rs:1:2:\nfollower log reversion\nERROR a\n";
        assert_eq!(
            panics(log),
            " it panicked: thread 'w' panicked at src/x.rs:1:2: follower log reversion;"
        );
        assert_eq!(panics("fine\n"), "");
    }

    #[test]
    fn the_reason_a_member_stopped_is_its_corruption_line_or_last_error() {
        let keelson = "INFO starting\nINFO opening log\nError: raft log corrupt: /d/member/wal/1.wal at byte 40: payload crc mismatch; refusing to start this member\n";
        assert!(why_it_stopped(keelson).starts_with("Error: raft log corrupt"));
        let etcd = "2024 I | etcdserver: name = m0\n2024 C | etcdmain: walpb: crc mismatch\ngoroutine 1 [running]:\n  main.main()\n";
        assert_eq!(
            why_it_stopped(etcd),
            "2024 C | etcdmain: walpb: crc mismatch"
        );
        assert_eq!(
            why_it_stopped("a\nfatal error: out of memory\nstack\n"),
            "fatal error: out of memory"
        );
        assert_eq!(why_it_stopped("just\nlines\n"), "lines");
        assert_eq!(why_it_stopped(""), "(nothing in its log)");
    }
}
