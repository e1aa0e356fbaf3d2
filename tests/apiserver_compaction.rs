//! The apiserver compacts the store's history as kube-apiserver does
//! (`--etcd-compaction-interval`, the `compact_rev_key` protocol), on `keelson store` and on
//! a real etcd 3.4: the store's compacted revision advances, and two apiservers sharing a
//! store compact once per interval between them, not once each.

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::apiserver::{Apiserver, Options};
use common::server::{require_etcd_tools, Server, ServerKind};
use etcd_client::{Client, GetOptions};

const INTERVAL: Duration = Duration::from_millis(500);

/// A `keelson apiserver` compacting every [`INTERVAL`], killed on drop; ready once it has
/// bound its port (its kubeconfig is written then).
fn start_apiserver(etcd: &str) -> Apiserver {
    Options::new("keelson-apiserver-")
        .arg("--etcd-compaction-interval")
        .arg(&format!("{}ms", INTERVAL.as_millis()))
        .start_bound(etcd)
}

/// `compact_rev_key`'s version and value (0 and 0 while it does not exist).
async fn compact_key(client: &mut Client) -> (i64, i64) {
    let r = client.get("compact_rev_key", None).await.expect("get");
    match r.kvs().first() {
        Some(kv) => (
            kv.version(),
            kv.value_str().unwrap_or("0").parse().unwrap_or(0),
        ),
        None => (0, 0),
    }
}

async fn two_apiservers_compact_once_per_interval(kind: ServerKind) {
    let server = Server::start(kind, &[]).expect("start the store");
    let a = start_apiserver(&server.client_url());
    let b = start_apiserver(&server.client_url());
    let mut client = Client::connect([server.client_url()], None)
        .await
        .expect("connect");

    // When each version of the key was first seen (polled: the writers are other processes).
    let mut seen: Vec<(i64, i64, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let (version, value) = compact_key(&mut client).await;
        if seen.last().is_none_or(|(v, _, _)| *v != version) && version > 0 {
            seen.push((version, value, Instant::now()));
        }
        if let Some(&(v0, _, _)) = seen.first() {
            if version >= v0 + 5 {
                break v0;
            }
        }
        assert!(
            Instant::now() < deadline,
            "compaction did not go on: saw {seen:?}\n--- a ---\n{}\n--- b ---\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Each write of the key waits a whole interval after its writer last read it, so five
    // writes take at least five intervals, whichever apiserver makes them (two apiservers
    // compacting independently would make them in about half that).
    let t = |v: i64| seen.iter().find(|(x, _, _)| *x >= v).map(|s| s.2).unwrap();
    let elapsed = t(first + 5) - t(first);
    assert!(
        elapsed >= INTERVAL * 5 - Duration::from_millis(200),
        "5 compactions in {elapsed:?} with a {INTERVAL:?} interval: both apiservers compacted"
    );

    // The store really was compacted: the revision one round before the last is gone from
    // history, the last round's revision is still readable.
    let (_, last) = compact_key(&mut client).await;
    let (_, previous, _) = seen[seen.len() - 2];
    assert!(0 < previous && previous < last, "{seen:?}, last {last}");
    let below = client
        .get(
            "compact_rev_key",
            Some(GetOptions::new().with_revision(previous - 1)),
        )
        .await;
    assert!(
        below.as_ref().is_err_and(|e| e
            .to_string()
            .contains("required revision has been compacted")),
        "a read below revision {previous}: {below:?}"
    );
    client
        .get(
            "compact_rev_key",
            Some(GetOptions::new().with_revision(last)),
        )
        .await
        .expect("the last interval's history is kept");
    for log in [a.log(), b.log()] {
        assert!(!log.contains("compaction of the store failed"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_on_keelson_store() {
    two_apiservers_compact_once_per_interval(ServerKind::Keelson).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_on_etcd() {
    if !require_etcd_tools("compaction_on_etcd") {
        return;
    }
    two_apiservers_compact_once_per_interval(ServerKind::Etcd).await;
}
