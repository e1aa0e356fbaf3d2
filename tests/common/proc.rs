//! Process helpers: free ports, finding binaries, running children with a
//! timeout and an optional "stop once this line was printed" rule, and a
//! guard that kills a long-running child on drop.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// `n` distinct free TCP ports on 127.0.0.1: bind port 0, read the port,
/// drop the listener. All listeners are held until all ports are picked, and
/// a port is never handed out twice within this test process (tests in one
/// binary run in parallel threads). Another process may still grab a port
/// before our server binds it; [`crate::common::server::Server::start`]
/// retries with new ports when the server reports "address already in use".
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut listeners = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    let mut taken = handed_out().lock().unwrap_or_else(|e| e.into_inner());
    let mut attempts = 0;
    while ports.len() < n {
        attempts += 1;
        assert!(attempts < 1000, "could not find {n} free ports");
        let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        let p = l.local_addr().expect("local_addr").port();
        if taken.insert(p) {
            ports.push(p);
        }
        listeners.push(l);
    }
    drop(listeners);
    ports
}

/// One free TCP port on 127.0.0.1 (see [`free_ports`]).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Path of `name` found on `PATH`, or the path in env var `override_var` if
/// that is set and non-empty (it must exist).
pub fn find_binary(name: &str, override_var: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(override_var).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// How a child run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Exited on its own with this code.
    Exited(i32),
    /// Died from a signal we did not send.
    Signaled,
    /// Killed by us after the [`StopAfter`] rule was satisfied.
    Stopped,
    /// Killed by us at the deadline.
    TimedOut,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Exited(c) => write!(f, "exit code {c}"),
            End::Signaled => write!(f, "killed by a signal"),
            End::Stopped => write!(f, "stopped after the expected output"),
            End::TimedOut => write!(f, "timed out (killed)"),
        }
    }
}

impl End {
    fn from_status(s: ExitStatus) -> End {
        match s.code() {
            Some(c) => End::Exited(c),
            None => End::Signaled,
        }
    }
}

/// Which stdout line satisfies a [`StopAfter`] rule.
#[derive(Clone, Debug)]
pub enum LineMatch {
    /// The whole line (without its newline) equals this.
    Equals(String),
    /// The line contains this.
    Contains(String),
}

impl LineMatch {
    pub fn matches(&self, line: &str) -> bool {
        match self {
            LineMatch::Equals(s) => line == s,
            LineMatch::Contains(s) => line.contains(s.as_str()),
        }
    }
}

/// Kill the child once a stdout line matching `line` and then `extra_lines`
/// more lines have been read. Later stdout is discarded, so the captured
/// output does not depend on how fast we killed it. For never-ending commands
/// like `etcdctl watch`.
#[derive(Clone, Debug)]
pub struct StopAfter {
    pub line: LineMatch,
    pub extra_lines: usize,
}

/// Captured result of a child run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub end: End,
}

impl Outcome {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    pub fn success(&self) -> bool {
        self.end == End::Exited(0)
    }
}

enum Ev {
    OutLine(Vec<u8>),
    OutEof,
    Err(Vec<u8>),
    ErrEof,
}

/// A spawned child whose stdout (line by line) and stderr are being read by
/// background threads. Finish it with [`Running::finish`].
pub struct Running {
    child: Child,
    rx: Receiver<Ev>,
    started: Instant,
    desc: String,
}

/// Spawn `cmd` with piped stdout/stderr; `stdin` is written by a thread and
/// then closed (no stdin → /dev/null).
pub fn spawn(cmd: &mut Command, stdin: Option<Vec<u8>>) -> io::Result<Running> {
    let desc = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn()?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        thread::spawn(move || {
            // The child may exit without reading everything; ignore EPIPE.
            let _ = pipe.write_all(&data);
        });
    }
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped stdout");
    let tx_out = tx.clone();
    thread::spawn(move || {
        let mut r = BufReader::new(out);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx_out.send(Ev::OutLine(line)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx_out.send(Ev::OutEof);
    });
    let mut err = child.stderr.take().expect("piped stderr");
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match err.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Ev::Err(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Ev::ErrEof);
    });
    Ok(Running {
        child,
        rx,
        started: Instant::now(),
        desc,
    })
}

impl Running {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Collect output until the child exits, `stop` is satisfied (→ kill,
    /// [`End::Stopped`]) or `timeout` since spawn has passed (→ kill,
    /// [`End::TimedOut`]). Waits on pipe events, never sleeps.
    pub fn finish(mut self, timeout: Duration, stop: Option<&StopAfter>) -> Outcome {
        let deadline = self.started + timeout;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let (mut out_eof, mut err_eof) = (false, false);
        let mut matched = false;
        let mut extra_left = 0usize;
        let mut end = None;
        while !(out_eof && err_eof) {
            if matched && extra_left == 0 {
                end = Some(End::Stopped);
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                end = Some(End::TimedOut);
                break;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(Ev::OutLine(line)) => {
                    stdout.extend_from_slice(&line);
                    if matched {
                        extra_left -= 1;
                    } else if let Some(rule) = stop {
                        let text = String::from_utf8_lossy(&line);
                        if rule.line.matches(text.trim_end_matches(['\n', '\r'])) {
                            matched = true;
                            extra_left = rule.extra_lines;
                        }
                    }
                }
                Ok(Ev::OutEof) => out_eof = true,
                Ok(Ev::Err(b)) => stderr.extend_from_slice(&b),
                Ok(Ev::ErrEof) => err_eof = true,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if matched && extra_left == 0 && end.is_none() {
            // The rule was satisfied by the very last line before EOF.
            end = Some(End::Stopped);
        }
        let end = match end {
            Some(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                e
            }
            None => match self.child.wait() {
                Ok(s) => End::from_status(s),
                Err(_) => End::Signaled,
            },
        };
        // Drain what is left of stderr (the pipes close when the child dies);
        // stdout after the stop point is deliberately dropped.
        let drain_deadline = Instant::now() + Duration::from_secs(2);
        while !(out_eof && err_eof) {
            let now = Instant::now();
            if now >= drain_deadline {
                break;
            }
            match self.rx.recv_timeout(drain_deadline - now) {
                Ok(Ev::OutLine(line)) => {
                    if end != End::Stopped {
                        stdout.extend_from_slice(&line);
                    }
                }
                Ok(Ev::OutEof) => out_eof = true,
                Ok(Ev::Err(b)) => stderr.extend_from_slice(&b),
                Ok(Ev::ErrEof) => err_eof = true,
                Err(_) => break,
            }
        }
        Outcome {
            stdout,
            stderr,
            end,
        }
    }

    /// Kill the child now and return what it printed.
    pub fn kill(self) -> Outcome {
        self.finish(Duration::ZERO, None)
    }
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Running(pid {}, {})", self.child.id(), self.desc)
    }
}

/// Run `cmd` to completion (see [`Running::finish`]).
pub fn run(
    cmd: &mut Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    stop: Option<&StopAfter>,
) -> io::Result<Outcome> {
    Ok(spawn(cmd, stdin)?.finish(timeout, stop))
}

/// Owns a long-running child (a server) and kills it on drop.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        ChildGuard { child: Some(child) }
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `Some(status)` if the child has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Kill (SIGKILL) and reap the child; idempotent.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
