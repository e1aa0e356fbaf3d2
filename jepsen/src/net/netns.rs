//! Partitions in the kernel: one network namespace per member, joined by a bridge.
//!
//! Layout of one run (all names carry the run's tag, `<harness pid in hex>-<sequence>`):
//! - a bridge `jb<tag>` in the root namespace holding `10.77.X.1/24`, where `X` is a subnet no
//!   address in the root namespace uses yet (chosen under a lock file, so concurrent runs on one
//!   machine get different subnets);
//! - per member `i`, a namespace `jepsen-<tag>-m<i>` whose `eth0` (`10.77.X.<i+2>/24`) is one
//!   end of a veth pair; the other end, `jv<tag>-<i>`, is a port of the bridge.
//!
//! Clients stay in the root namespace and reach every member through the bridge; partitions
//! never touch them. A member's process joins its namespace with setns(2) before exec, so it
//! listens on its own address with the usual ports.
//!
//! **How a link is cut.** Member A's neighbour entry for B's address is replaced by a permanent
//! entry with a MAC address no interface has, and B's for A likewise. Frames between them then
//! go onto the bridge addressed to nobody and are dropped, while both kernels believe the link
//! is fine: established connections stall and retransmit, new connections hang in SYN_SENT —
//! what a real partition does. (A blackhole or prohibit route would fail `connect` at once with
//! EINVAL or EACCES instead, which is a refused connection, not a partition; and this machine's
//! kernel has no queueing disciplines or packet filters to drop with.) Healing deletes the
//! entries; the kernels resolve the real addresses again and the stalled connections resume.
//!
//! **Cleanup.** A run deletes its veths, bridge and namespaces when torn down (and on drop). A
//! harness that died without doing so leaves them behind; every new run first deletes any
//! whose tag names a process that no longer exists.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use super::shape::Cuts;
use crate::error::HarnessError;

/// Link-layer address of no interface: frames sent to it are lost on the bridge.
const NOWHERE_MAC: &str = "02:6a:65:70:00:00";
/// Serializes subnet choice and stale cleanup among concurrent runs on one machine.
const LOCK_FILE: &str = "/tmp/jepsen-netns.lock";
const NS_PREFIX: &str = "jepsen-";

/// The namespaces and bridge of one run (see the module docs).
pub(crate) struct Namespaces {
    bridge: String,
    members: Vec<NsMember>,
    /// The cuts currently in the kernel.
    applied: Mutex<Cuts>,
    torn_down: AtomicBool,
}

struct NsMember {
    ns: String,
    veth: String,
    ip: Ipv4Addr,
}

/// Runs `ip args…`; its stdout, or an error with its stderr.
fn ip(args: &[&str]) -> Result<String, HarnessError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| HarnessError::io("running ip(8)", e))?;
    if !out.status.success() {
        return Err(HarnessError::Net(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Holds an exclusive flock(2) on [`LOCK_FILE`] while alive.
struct Lock(File);

impl Lock {
    fn take() -> Result<Lock, HarnessError> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .map_err(|e| HarnessError::io(LOCK_FILE, e))?;
        // SAFETY: flock on a descriptor we own; blocks until other runs release it.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(HarnessError::io(
                "locking the namespace allocator",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Lock(f))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The harness pid a bridge, veth or namespace name of ours carries, if it is one of ours.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix(NS_PREFIX)
        .or_else(|| name.strip_prefix("jb"))
        .or_else(|| name.strip_prefix("jv"))?;
    let (pid, tail) = rest.split_once('-')?;
    if tail.is_empty() || !tail.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes links and namespaces of runs whose harness is gone. Best effort.
fn clean_stale() {
    let links = ip(&["-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        // "12: jv1a2b-0@if11: <...>"
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if owner_pid(name).is_some_and(|p| !alive(p)) {
            let _ = ip(&["link", "del", name]);
        }
    }
    let spaces = ip(&["netns", "list"]).unwrap_or_default();
    for line in spaces.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if owner_pid(name).is_some_and(|p| !alive(p)) {
            // Members of a dead harness die with it (PR_SET_PDEATHSIG); these are leftovers.
            for pid in ip(&["netns", "pids", name]).unwrap_or_default().lines() {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: plain kill(2).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A `10.77.X.0/24` no address in the root namespace is in.
fn free_subnet() -> Result<u8, HarnessError> {
    let used = ip(&["-o", "-4", "addr", "show"])?;
    (0..=255u8)
        .find(|x| !used.contains(&format!(" 10.77.{x}.")))
        .ok_or_else(|| HarnessError::Net("every 10.77.X.0/24 subnet is in use".into()))
}

impl Namespaces {
    /// Creates namespaces for `n` members on a fresh bridge. Blocking (runs `ip`).
    pub(crate) fn create(n: usize) -> Result<Namespaces, HarnessError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        if n > 250 {
            return Err(HarnessError::Config(format!(
                "{n} members do not fit a /24"
            )));
        }
        let _lock = Lock::take()?;
        clean_stale();
        let x = free_subnet()?;
        let tag = format!(
            "{:x}-{:x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let me = Namespaces {
            bridge: format!("jb{tag}"),
            members: (0..n)
                .map(|i| NsMember {
                    ns: format!("{NS_PREFIX}{tag}-m{i}"),
                    veth: format!("jv{tag}-{i}"),
                    ip: Ipv4Addr::new(10, 77, x, i as u8 + 2),
                })
                .collect(),
            applied: Mutex::new(Cuts::none()),
            torn_down: AtomicBool::new(false),
        };
        // From here on, dropping `me` on an error removes whatever was created.
        let br = me.bridge.as_str();
        ip(&["link", "add", br, "type", "bridge"])?;
        ip(&["addr", "add", &format!("10.77.{x}.1/24"), "dev", br])?;
        ip(&["link", "set", br, "up"])?;
        for m in &me.members {
            let addr = format!("{}/24", m.ip);
            ip(&["netns", "add", &m.ns])?;
            ip(&[
                "link", "add", &m.veth, "type", "veth", "peer", "name", "eth0", "netns", &m.ns,
            ])?;
            ip(&["link", "set", &m.veth, "master", br])?;
            ip(&["link", "set", &m.veth, "up"])?;
            ip(&["-n", &m.ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &m.ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &m.ns, "link", "set", "lo", "up"])?;
        }
        Ok(me)
    }

    /// Member `i`'s address.
    pub(crate) fn addr(&self, i: usize) -> Ipv4Addr {
        self.members[i].ip
    }

    /// The file whose descriptor setns(2) takes to enter member `i`'s namespace.
    pub(crate) fn ns_file(&self, i: usize) -> Result<File, HarnessError> {
        let p = PathBuf::from("/run/netns").join(&self.members[i].ns);
        File::open(&p).map_err(|e| HarnessError::io(format!("opening {}", p.display()), e))
    }

    /// Makes the kernel's cut links exactly `cuts`. Blocking (runs `ip`).
    pub(crate) fn apply(&self, cuts: &Cuts) -> Result<(), HarnessError> {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let new: Vec<(usize, usize)> = cuts
            .pairs()
            .filter(|&(a, b)| !applied.is_cut(a, b))
            .collect();
        for (a, b) in new {
            for (from, to) in [(a, b), (b, a)] {
                let (m, peer) = (&self.members[from], self.members[to].ip.to_string());
                ip(&[
                    "-n",
                    &m.ns,
                    "neigh",
                    "replace",
                    &peer,
                    "lladdr",
                    NOWHERE_MAC,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ])?;
            }
            applied.cut(a, b);
        }
        let healed: Vec<(usize, usize)> = applied
            .pairs()
            .filter(|&(a, b)| !cuts.is_cut(a, b))
            .collect();
        for (a, b) in healed {
            for (from, to) in [(a, b), (b, a)] {
                let (m, peer) = (&self.members[from], self.members[to].ip.to_string());
                ip(&["-n", &m.ns, "neigh", "del", &peer, "dev", "eth0"])?;
            }
        }
        *applied = cuts.clone();
        Ok(())
    }

    /// Deletes the veths, the bridge and the namespaces; idempotent. Members must be dead
    /// (a process keeps its namespace alive, though unnamed). Blocking (runs `ip`).
    pub(crate) fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        for m in &self.members {
            let _ = ip(&["link", "del", &m.veth]);
            let _ = ip(&["netns", "del", &m.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_carry_an_owner() {
        assert_eq!(owner_pid("jepsen-1a2b-0-m2"), Some(0x1a2b));
        assert_eq!(owner_pid("jb1a2b-3"), Some(0x1a2b));
        assert_eq!(owner_pid("jv400000-1f-9"), Some(0x400000));
        assert_eq!(owner_pid("eth0"), None);
        assert_eq!(owner_pid("jvx-1"), None, "not hex");
        assert_eq!(owner_pid("jb12"), None, "no sequence");
        assert_eq!(owner_pid("jepsen-12-"), None);
        assert_eq!(owner_pid("docker0"), None);
    }

    #[test]
    fn names_fit_linux_interface_names() {
        // IFNAMSIZ is 16 with the NUL: the longest pid (2^22) and a large sequence and index.
        let tag = format!("{:x}-{:x}", 4_194_304u32, 255u32);
        assert!(format!("jv{tag}-{}", 99).len() <= 15);
        assert!(format!("jb{tag}").len() <= 15);
    }
}
