//! Partitions without privileges: peer traffic through proxies in the harness.
//!
//! Every member advertises (in `--initial-cluster` and `--initial-advertise-peer-urls`, so
//! member IDs and every member's idea of where its peers are derive from it) a peer URL that is
//! a proxy listener of this process, and listens for peers on its own port behind it. All raft
//! traffic therefore crosses a proxy, which forwards it unless the link is cut.
//!
//! A proxy knows which member it forwards *to* (its listener) but must learn which member
//! dialled: the kernel tells. `/proc/net/tcp` (and `tcp6`) maps the dialling socket — the one
//! whose local port is the accepted connection's peer port and whose remote port is the
//! proxy's — to an inode, and the member whose `/proc/PID/fd` holds `socket:[inode]` dialled.
//! A connection nobody can be found for (not a member) is never cut.
//!
//! A cut link behaves like a partition, not like a refused connection: open connections
//! between the two members stop moving bytes in both directions (what was read is held, the
//! rest waits in the kernel's buffers) and resume when the link heals; new connections are
//! accepted and held without being forwarded until it heals.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::shape::Cuts;
use crate::error::HarnessError;

/// The process of each member slot, as the proxies see them.
pub(crate) type Pids = Arc<Mutex<Vec<Option<u32>>>>;

/// One proxy per member (see the module docs).
pub(crate) struct Proxies {
    cuts: watch::Sender<Cuts>,
    pids: Pids,
    ports: Vec<u16>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxies {
    /// Listens on a fresh loopback port for each member, forwarding to `real[i]` (the member's
    /// `--listen-peer-urls` address). Must run inside a tokio runtime, which runs the proxies.
    pub(crate) async fn start(real: Vec<SocketAddr>) -> Result<Proxies, HarnessError> {
        let (cuts, _) = watch::channel(Cuts::none());
        let pids: Pids = Arc::new(Mutex::new(vec![None; real.len()]));
        let (mut ports, mut tasks) = (Vec::new(), Vec::new());
        for (to, addr) in real.into_iter().enumerate() {
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| HarnessError::io("binding a partition proxy", e))?;
            let port = l
                .local_addr()
                .map_err(|e| HarnessError::io("partition proxy address", e))?
                .port();
            ports.push(port);
            tasks.push(tokio::spawn(accept(
                l,
                to,
                addr,
                cuts.subscribe(),
                pids.clone(),
            )));
        }
        Ok(Proxies {
            cuts,
            pids,
            ports,
            tasks,
        })
    }

    /// The port member `i`'s peers dial.
    pub(crate) fn port(&self, i: usize) -> u16 {
        self.ports[i]
    }

    /// Tells the proxies member `i`'s process (None while it is not running).
    pub(crate) fn set_pid(&self, i: usize, pid: Option<u32>) {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())[i] = pid;
    }

    pub(crate) fn apply(&self, cuts: &Cuts) {
        self.cuts.send_replace(cuts.clone());
    }

    /// Stops the proxies (open connections end with their tasks' runtime).
    pub(crate) fn teardown(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.teardown();
    }
}

async fn accept(
    listener: TcpListener,
    to: usize,
    real: SocketAddr,
    cuts: watch::Receiver<Cuts>,
    pids: Pids,
) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    while let Ok((conn, peer)) = listener.accept().await {
        let known = pids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let from = dialler(peer.port(), local.port(), &known);
        let link = Link { from, to };
        tokio::spawn(forward(conn, real, link, cuts.clone()));
    }
}

/// A directed connection between members; `from` is None when the dialler is not a member.
#[derive(Clone, Copy)]
struct Link {
    from: Option<usize>,
    to: usize,
}

impl Link {
    fn is_cut(&self, c: &Cuts) -> bool {
        self.from.is_some_and(|f| c.is_cut(f, self.to))
    }
}

async fn forward(conn: TcpStream, real: SocketAddr, link: Link, mut cuts: watch::Receiver<Cuts>) {
    // A connection opened during a cut is held, unforwarded, until the link heals.
    if cuts.wait_for(|c| !link.is_cut(c)).await.is_err() {
        return;
    }
    let Ok(upstream) = TcpStream::connect(real).await else {
        return; // The member is down: the dialler sees its connection close.
    };
    let _ = conn.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = conn.into_split();
    let (ur, uw) = upstream.into_split();
    tokio::join!(
        pump(cr, uw, link, cuts.clone()),
        pump(ur, cw, link, cuts.clone())
    );
}

/// Copies `r` to `w`, holding the bytes while the link is cut.
async fn pump(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    link: Link,
    mut cuts: watch::Receiver<Cuts>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if cuts.wait_for(|c| !link.is_cut(c)).await.is_err() {
            return;
        }
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if cuts.wait_for(|c| !link.is_cut(c)).await.is_err() {
            return;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The member (an index into `pids`) whose process holds the socket with local port
/// `peer_port` connected to local port `proxy_port` on loopback.
pub(crate) fn dialler(peer_port: u16, proxy_port: u16, pids: &[Option<u32>]) -> Option<usize> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(t) = std::fs::read_to_string(table) {
            inodes.extend(socket_inodes(&t, peer_port, proxy_port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: HashSet<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    pids.iter().position(|pid| {
        let Some(pid) = pid else { return false };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|l| wanted.contains(l.to_string_lossy().as_ref()))
        })
    })
}

/// Inodes of the sockets in a `/proc/net/tcp{,6}` table whose local port is `local_port` and
/// remote port `remote_port` (addresses are not compared: both ends are on loopback).
pub(crate) fn socket_inodes(table: &str, local_port: u16, remote_port: u16) -> Vec<u64> {
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let ours = port_of(f[1]) == Some(local_port) && port_of(f[2]) == Some(remote_port);
            ours.then(|| f[9].parse().ok()).flatten()
        })
        .filter(|&inode| inode != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:0CEA 01 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:0CEA 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3003 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:9C41 0100007F:0CEA 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0000000000000000
";

    #[test]
    fn the_dialling_socket_is_found_by_its_ports() {
        // 0x9C40 = 40000 dialled 0x0CEA = 3306: the dialler's socket is row 1, not the
        // accepted end (row 2) nor the listener (row 0).
        assert_eq!(socket_inodes(TABLE, 40000, 3306), [2002]);
        assert_eq!(socket_inodes(TABLE, 3306, 40000), [3003]);
        assert!(
            socket_inodes(TABLE, 40001, 3306).is_empty(),
            "TIME_WAIT has no inode"
        );
        let v6 = "header\n 0: 0000000000000000FFFF00000100007F:9C40 0000000000000000FFFF00000100007F:0CEA 01 0:0 0:0 0 0 0 4004 1\n";
        assert_eq!(socket_inodes(v6, 40000, 3306), [4004]);
    }

    #[tokio::test]
    async fn this_process_is_found_as_the_dialler() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let _c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (_s, peer) = l.accept().await.unwrap();
        let me = Some(std::process::id());
        assert_eq!(dialler(peer.port(), port, &[None, Some(1), me]), Some(2));
        assert_eq!(dialler(peer.port(), port, &[Some(1)]), None);
    }

    #[tokio::test]
    async fn a_cut_link_holds_bytes_until_it_heals() {
        // Echo server standing in for a member.
        let member = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let real = member.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = member.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    while s.read_exact(&mut b).await.is_ok() {
                        if s.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        // Slot 0 is this process (the dialler), slot 1 the echo server.
        let proxies = Proxies::start(vec![real, real]).await.unwrap();
        proxies.set_pid(0, Some(std::process::id()));
        let mut c = TcpStream::connect(("127.0.0.1", proxies.port(1)))
            .await
            .unwrap();
        let mut b = [0u8; 1];
        c.write_all(b"a").await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"a");

        let mut cut = Cuts::none();
        cut.cut(0, 1);
        proxies.apply(&cut);
        c.write_all(b"b").await.unwrap();
        let stalled =
            tokio::time::timeout(std::time::Duration::from_millis(300), c.read_exact(&mut b)).await;
        assert!(stalled.is_err(), "bytes crossed a cut link");

        proxies.apply(&Cuts::none());
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"b", "held bytes are delivered after the heal");
    }
}
