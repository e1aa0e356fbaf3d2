//! What the tool learns from, and asks of, the operating system: the resident memory of a
//! server process, and this process's open-file limit.
//!
//! Memory is read from `/proc/PID/status` (Linux only): `VmRSS` is the resident set, the figure
//! `ps` and `top` show and the one etcd's per-watcher memory is quoted in; `RssAnon` (heap,
//! stacks) and `RssFile` (mapped binary and files) split it, so a growth can be told apart from
//! pages of the binary being touched for the first time. The kernel prints these in kB
//! (KiB); [`Rss`] holds bytes.
//!
//! A sample is one reading; RSS after a burst of work still moves for a moment (a Go server's
//! heap grows in steps, an allocator returns pages lazily), so [`sample_max`] reads a few times
//! at a fixed interval and keeps the largest reading per process: the memory the process
//! needed, not a lucky moment after a collection.
//!
//! The open-file limit matters only for many connections (a watcher costs no descriptor; a
//! connection costs one on each side): [`raise_nofile`] lifts the soft limit to the hard one,
//! and servers started by `compare` inherit the raised limit.

use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

/// A process's resident memory, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Rss {
    pub(crate) total: u64,
    pub(crate) anon: u64,
    pub(crate) file: u64,
}

/// Parses the text of `/proc/PID/status`; `None` without a `VmRSS` line (a kernel thread, or
/// not that file at all).
pub(crate) fn parse_status(text: &str) -> Option<Rss> {
    let mut rss = Rss::default();
    let mut seen = false;
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match name {
            "VmRSS" => {
                seen = true;
                &mut rss.total
            }
            "RssAnon" => &mut rss.anon,
            "RssFile" => &mut rss.file,
            _ => continue,
        };
        *slot = parse_kb(value)?;
    }
    seen.then_some(rss)
}

/// "   123456 kB" → bytes.
fn parse_kb(value: &str) -> Option<u64> {
    let mut words = value.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        _ => None,
    }
}

/// The resident memory of process `pid` now.
pub(crate) fn rss(pid: u32) -> anyhow::Result<Rss> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path} (is process {pid} running, on Linux?)"))?;
    parse_status(&text).with_context(|| format!("no VmRSS in {path}"))
}

/// This process's resident memory.
pub(crate) fn own_rss() -> anyhow::Result<Rss> {
    rss(std::process::id())
}

/// Reads every pid's memory `samples` times, `interval` apart, and keeps each pid's largest
/// reading (by `VmRSS`).
pub(crate) async fn sample_max(
    pids: &[u32],
    samples: usize,
    interval: Duration,
) -> anyhow::Result<Vec<Rss>> {
    let mut max: Vec<Rss> = pids.iter().map(|&p| rss(p)).collect::<Result<_, _>>()?;
    for _ in 1..samples.max(1) {
        // Fixed-interval sampling is the measurement itself, not a wait for an event.
        tokio::time::sleep(interval).await;
        for (m, &p) in max.iter_mut().zip(pids) {
            let now = rss(p)?;
            if now.total > m.total {
                *m = now;
            }
        }
    }
    Ok(max)
}

/// Lifts this process's soft open-file limit to its hard limit if it is below `needed`;
/// returns the soft limit in force afterwards. Fails if even the hard limit is too low.
pub(crate) fn raise_nofile(needed: u64) -> anyhow::Result<u64> {
    let lim = nofile()?;
    if lim.rlim_cur >= needed {
        return Ok(lim.rlim_cur);
    }
    if lim.rlim_max < needed {
        bail!(
            "{needed} open files needed but the hard limit is {} (raise it: ulimit -Hn, or \
             fewer --conns)",
            lim.rlim_max
        );
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    eprintln!(
        "open-file limit raised from {} to {}",
        lim.rlim_cur, lim.rlim_max
    );
    Ok(raised.rlim_cur)
}

/// This process's open-file limit (soft, hard).
fn nofile() -> anyhow::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    Ok(lim)
}

/// Bytes → MiB, for reports.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tetcd\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 11403688 kB\n\
        VmSize:\t11403688 kB\nVmHWM:\t   40252 kB\nVmRSS:\t   40252 kB\nRssAnon:\t   21520 kB\n\
        RssFile:\t   18732 kB\nRssShmem:\t       0 kB\nThreads:\t12\n";

    #[test]
    fn status_lines_become_bytes() {
        let r = parse_status(STATUS).unwrap();
        assert_eq!(
            r,
            Rss {
                total: 40252 * 1024,
                anon: 21520 * 1024,
                file: 18732 * 1024
            }
        );
        // VmHWM, the peak, must not be mistaken for VmRSS.
        assert_ne!(r.total, 11403688 * 1024);
    }

    #[test]
    fn a_status_without_vmrss_or_with_a_bad_number_is_refused() {
        assert_eq!(parse_status("Name:\tkthreadd\nState:\tS\n"), None);
        assert_eq!(parse_status("VmRSS:\t  12x kB\n"), None);
        assert_eq!(
            parse_status("VmRSS:\t  12 MB\n"),
            None,
            "the kernel says kB"
        );
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        let r = own_rss().unwrap();
        assert!(r.total > 0 && r.anon + r.file <= r.total, "{r:?}");
        assert!(rss(u32::MAX).is_err(), "no such process");
    }

    #[test]
    fn the_open_file_limit_is_at_least_what_is_asked_when_possible() {
        let before = nofile().unwrap();
        assert_eq!(raise_nofile(16).unwrap(), before.rlim_cur, "enough already");
        if before.rlim_cur < before.rlim_max {
            assert_eq!(raise_nofile(before.rlim_cur + 1).unwrap(), before.rlim_max);
        }
        if before.rlim_max != libc::RLIM_INFINITY {
            let e = raise_nofile(before.rlim_max + 1).unwrap_err().to_string();
            assert!(e.contains("hard limit"), "{e}");
        }
    }

    #[tokio::test]
    async fn sampling_keeps_the_largest_reading() {
        let pid = std::process::id();
        let r = sample_max(&[pid, pid], 2, Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.total > 0));
    }
}
