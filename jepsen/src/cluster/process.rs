//! Member processes: spawning them so they die with the harness, and signalling them.
//!
//! Invariants:
//! - Every member is forked by one long-lived thread, the spawner. A child asks the kernel to
//!   SIGKILL it when its parent dies (PR_SET_DEATHSIG), and "parent" means the *thread* that
//!   forked it: forked from a tokio worker or blocking-pool thread, a member would be killed
//!   whenever that thread retires. The spawner thread lives as long as the process.
//! - The child sets that up before exec, checks the harness did not die in between (then its
//!   parent is no longer the harness and the signal would never come), and enters its network
//!   namespace if it has one — all with async-signal-safe system calls only.
//! - Processes are reaped by whoever kills them ([`kill`]), so a pid in the cluster's state
//!   always names our live child or a zombie we still own, never a recycled pid.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Job = (Command, mpsc::Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("jepsen-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the spawner thread");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` from the spawner thread, in the network namespace behind `netns` if given
/// (a descriptor of `/run/netns/<name>` that stays open until this returns).
pub(crate) fn spawn(mut cmd: Command, netns: Option<RawFd>) -> io::Result<Child> {
    // SAFETY: getpid has no preconditions.
    let harness = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (prctl, getppid, setns) that are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != harness {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(fd) = netns {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, tx))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// Sends `sig` to `pid` (SIGSTOP / SIGCONT for pauses).
pub(crate) fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain kill(2) on a child we own (see the module docs).
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SIGKILLs `child` and reaps it (on the blocking pool: reaping waits for the kernel).
pub(crate) async fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

/// SIGKILLs and reaps `child` without a runtime (for drops).
pub(crate) fn kill_now(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn children_are_forked_by_the_spawner_and_can_be_paused() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let child = spawn(cmd, None).unwrap();
        let pid = child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap();
        assert_eq!(ppid, std::process::id());

        signal(pid, libc::SIGSTOP).unwrap();
        let state = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().next().unwrap()))
        };
        // The state changes asynchronously after kill(2) returns.
        let deadline = Instant::now() + Duration::from_secs(5);
        while state(pid) != Some('T') {
            assert!(Instant::now() < deadline, "not stopped: {:?}", state(pid));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        signal(pid, libc::SIGCONT).unwrap();
        kill(child).await;
        assert_eq!(state(pid), None, "killed and reaped");
    }
}
