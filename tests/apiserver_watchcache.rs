//! The apiserver's watch cache, driven over HTTP (`kubectl get --raw`, `kubectl get -w`) on
//! `keelson store` and on a real etcd 3.4.
//!
//! What it shows, per backend: a list at resourceVersion "0" comes from the cache (its
//! `limit` is ignored, as upstream's cache ignores it); a consistent list sees a write made
//! just before it; a watch from a revision sees exactly the later changes, from history and
//! live; bookmarks arrive before the watch's deadline; `sendInitialEvents` ends its initial
//! ADDEDs with the `k8s.io/initial-events-end` bookmark; a pod watch with
//! `fieldSelector=spec.nodeName=X` sees only that node's pods (the cache's index); a
//! revision older than a freshly started apiserver's cache is a 410 ERROR event inside a
//! 200 stream.
//!
//! Environment: as tests/apiserver_kubectl.rs (`KEELSON_KUBECTL_BIN`,
//! `KEELSON_SKIP_KUBECTL=1`, `KEELSON_SKIP_ETCD=1`).

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use common::apiserver::{kubectl_bin, Apiserver, Options};
use common::proc::{run, spawn, LineMatch, StopAfter};
use common::server::{require_etcd_tools, Server, ServerKind};

impl Apiserver {
    fn raw(&self, path: &str) -> Value {
        let out = self.ok(&["get", "--raw", path]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
    }

    /// A watch (its path ends the stream with `timeoutSeconds`): every event line.
    fn watch_events(&self, path: &str) -> Vec<Value> {
        events(&self.ok(&["get", "--raw", path]))
    }

    /// Creates a pod on `node` ("" for none) and returns its resourceVersion.
    fn pod(&self, name: &str, node: &str) -> i64 {
        let node = if node.is_empty() {
            String::new()
        } else {
            format!(",\"nodeName\":\"{node}\"")
        };
        let doc = format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{{\"name\":\"{name}\"}},\
             \"spec\":{{\"containers\":[{{\"name\":\"c\",\"image\":\"busybox\"}}]{node}}}}}"
        );
        let file = self.path(&format!("{name}.json"));
        std::fs::write(&file, doc).unwrap();
        self.ok(&["create", "-f", file.to_str().unwrap()]);
        rv(&self.raw(&format!("/api/v1/namespaces/default/pods/{name}")))
    }
}

fn events(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn rv(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {obj}"))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// (type, name) of each event; bookmarks as ("BOOKMARK", "").
fn summary(evs: &[Value]) -> Vec<(String, String)> {
    evs.iter()
        .map(|e| {
            let name = e["object"]["metadata"]["name"].as_str().unwrap_or("");
            (e["type"].as_str().unwrap().to_string(), name.to_string())
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn lists(a: &Apiserver) {
    for n in ["a", "b", "c"] {
        a.ok(&["create", "configmap", n]);
    }
    // resourceVersion=0 is served by the cache, which ignores limit.
    let any = a.raw(&format!("{CMS}?limit=1&resourceVersion=0"));
    assert_eq!(names(&any), ["a", "b", "c"], "{any}");
    assert!(any["metadata"].get("continue").is_none(), "{any}");
    // A limit with a consistent read pages, and the continue token works.
    let page = a.raw(&format!("{CMS}?limit=2"));
    assert_eq!(names(&page), ["a", "b"]);
    assert_eq!(page["metadata"]["remainingItemCount"], 1);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let rest = a.raw(&format!("{CMS}?limit=2&continue={token}"));
    assert_eq!(names(&rest), ["c"]);
    assert_eq!(
        rest["metadata"]["resourceVersion"],
        page["metadata"]["resourceVersion"]
    );

    // A consistent list sees the write made just before it, every time.
    for i in 0..10 {
        let name = format!("fresh{i}");
        a.ok(&["create", "configmap", &name]);
        let created = rv(&a.raw(&format!("{CMS}/{name}")));
        let list = a.raw(CMS);
        assert!(names(&list).contains(&name), "{name} missing from {list}");
        assert!(rv(&list) >= created);
        // Not older than the write: from the cache once it has caught up.
        let nto = a.raw(&format!(
            "{CMS}?resourceVersion={created}&resourceVersionMatch=NotOlderThan"
        ));
        assert!(names(&nto).contains(&name) && rv(&nto) >= created, "{nto}");
        let got = a.raw(&format!("{CMS}/{name}?resourceVersion={created}"));
        assert_eq!(rv(&got), created);
    }
    a.ok(&["delete", "configmap", "--all"]);
}

fn watches(a: &Apiserver) {
    let start = rv(&a.raw(CMS));
    a.ok(&["create", "configmap", "w"]);
    a.ok(&["label", "configmap", "w", "x=y"]);
    a.ok(&["delete", "configmap", "w"]);
    // From history: exactly the three changes, in order, with their revisions.
    let evs = a.watch_events(&format!(
        "{CMS}?watch=1&resourceVersion={start}&timeoutSeconds=1"
    ));
    assert_eq!(
        summary(&evs),
        pairs(&[("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")])
    );
    let revs: Vec<i64> = evs.iter().map(|e| rv(&e["object"])).collect();
    assert!(
        revs[0] > start && revs[0] < revs[1] && revs[1] < revs[2],
        "{revs:?}"
    );
    assert_eq!(evs[1]["object"]["metadata"]["labels"]["x"], "y");

    // Live, with a label selector: the object enters and leaves the selection.
    let from = rv(&a.raw(CMS));
    let path = format!("{CMS}?watch=1&resourceVersion={from}&labelSelector=x%3Dy&timeoutSeconds=3");
    let watcher = spawn(&mut a.command(&["get", "--raw", &path]), None).unwrap();
    a.ok(&["create", "configmap", "s"]);
    a.ok(&["label", "configmap", "s", "x=y"]);
    a.ok(&["label", "configmap", "s", "x=z", "--overwrite"]);
    a.ok(&["delete", "configmap", "s"]);
    let out = watcher.finish(Duration::from_secs(20), None);
    assert!(out.success(), "{}", out.stderr_str());
    assert_eq!(
        summary(&events(&out.stdout_str())),
        pairs(&[("ADDED", "s"), ("DELETED", "s")])
    );

    // Bookmarks: only when allowed, 2 s before the deadline, at a revision not older than
    // the watch's start.
    let now = rv(&a.raw(CMS));
    let evs = a.watch_events(&format!(
        "{CMS}?watch=1&resourceVersion={now}&allowWatchBookmarks=true&timeoutSeconds=4"
    ));
    assert!(!evs.is_empty(), "no bookmark");
    for e in &evs {
        assert_eq!(e["type"], "BOOKMARK", "{e}");
        assert_eq!(e["object"]["kind"], "ConfigMap");
        assert_eq!(e["object"]["apiVersion"], "v1");
        assert!(rv(&e["object"]) >= now);
    }

    // sendInitialEvents: the current objects, the end bookmark, then changes.
    a.ok(&["create", "configmap", "i1"]);
    a.ok(&["create", "configmap", "i2"]);
    let i2 = rv(&a.raw(&format!("{CMS}/i2")));
    for rv_param in ["", "&resourceVersion=0"] {
        let path = format!(
            "{CMS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan\
             &allowWatchBookmarks=true{rv_param}&timeoutSeconds=10"
        );
        let stop = StopAfter {
            line: LineMatch::Contains("initial-events-end".into()),
            extra_lines: 0,
        };
        let out = run(
            &mut a.command(&["get", "--raw", &path]),
            None,
            Duration::from_secs(20),
            Some(&stop),
        )
        .unwrap();
        let evs = events(&out.stdout_str());
        assert_eq!(
            summary(&evs),
            pairs(&[("ADDED", "i1"), ("ADDED", "i2"), ("BOOKMARK", "")]),
            "{rv_param}"
        );
        let end = &evs[2]["object"];
        assert_eq!(
            end["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
        assert!(rv(end) >= i2);
    }

    // kubectl's own watch (a Table per event, served from the cache).
    let stop = StopAfter {
        line: LineMatch::Contains("late".into()),
        extra_lines: 0,
    };
    let watcher = spawn(&mut a.command(&["get", "configmaps", "-w"]), None).unwrap();
    a.ok(&["create", "configmap", "late"]);
    let out = watcher.finish(Duration::from_secs(20), Some(&stop));
    assert!(
        out.stdout_str().lines().any(|l| l.starts_with("late ")),
        "{}",
        out.stdout_str()
    );
    a.ok(&["delete", "configmap", "--all"]);
}

fn node_watches(a: &Apiserver) {
    let start = rv(&a.raw(PODS));
    a.pod("p1", "n1");
    a.pod("p2", "n2");
    a.pod("p3", "");
    let list = a.raw(&format!(
        "{PODS}?fieldSelector=spec.nodeName%3Dn1&resourceVersion=0"
    ));
    assert_eq!(names(&list), ["p1"]);
    let unscheduled = a.raw(&format!("{PODS}?fieldSelector=spec.nodeName%3D"));
    assert_eq!(names(&unscheduled), ["p3"]);
    let path = format!(
        "{PODS}?watch=1&fieldSelector=spec.nodeName%3Dn1&resourceVersion={start}&timeoutSeconds=3"
    );
    let watcher = spawn(&mut a.command(&["get", "--raw", &path]), None).unwrap();
    a.pod("p4", "n1");
    a.pod("p5", "n2");
    // A bound pod is deleted gracefully unless forced: forced, it is marked (MODIFIED, grace
    // 0) and then removed (DELETED), as upstream does it.
    a.ok(&[
        "delete",
        "pod",
        "p1",
        "p5",
        "--wait=false",
        "--grace-period=0",
        "--force",
    ]);
    let out = watcher.finish(Duration::from_secs(20), None);
    assert!(out.success(), "{}", out.stderr_str());
    assert_eq!(
        summary(&events(&out.stdout_str())),
        pairs(&[
            ("ADDED", "p1"),
            ("ADDED", "p4"),
            ("MODIFIED", "p1"),
            ("DELETED", "p1")
        ])
    );
    a.ok(&["delete", "pod", "--all", "--wait=false"]);
}

/// A new apiserver's cache starts at the store's revision: older watches are 410 in a 200
/// stream, with upstream's cacher message.
fn too_old_after_restart(kubectl: &Path, store: &Server, a: Apiserver) {
    let old = rv(&a.raw(CMS));
    a.ok(&["create", "configmap", "after"]);
    let last = rv(&a.raw(&format!("{CMS}/after")));
    drop(a);
    let b = Options::new("keelson-watchcache-")
        .env("RUST_LOG", "info")
        .start(kubectl, &store.client_url());
    let out = b.ok(&[
        "get",
        "--raw",
        &format!("{CMS}?watch=1&resourceVersion={old}&timeoutSeconds=5"),
    ]);
    let evs = events(&out);
    assert_eq!(evs.len(), 1, "{out}");
    assert_eq!(evs[0]["type"], "ERROR");
    let status = &evs[0]["object"];
    assert_eq!(
        (status["code"].as_i64(), status["reason"].as_str()),
        (Some(410), Some("Expired"))
    );
    let msg = status["message"].as_str().unwrap();
    let floor: i64 = msg
        .strip_prefix(&format!("too old resource version: {old} ("))
        .and_then(|m| m.strip_suffix(')'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{msg}"));
    assert!(floor >= last, "{msg}");
    // From the cache's own start it is fine.
    let ok = b.watch_events(&format!(
        "{CMS}?watch=1&resourceVersion={floor}&timeoutSeconds=1"
    ));
    assert!(ok.is_empty(), "{ok:?}");
    let verbose = b.ok(&["get", "--raw", "/readyz?verbose"]);
    assert!(verbose.contains("[+]watch-cache ok\n"), "{verbose}");
}

fn scenario(test: &str, kind: ServerKind) {
    let Some(kubectl) = kubectl_bin(test) else {
        return;
    };
    if !require_etcd_tools(test) {
        return;
    }
    let store = Server::start(kind, &[]).expect("store");
    let a = Options::new("keelson-watchcache-")
        .env("RUST_LOG", "info")
        .start(&kubectl, &store.client_url());
    lists(&a);
    watches(&a);
    node_watches(&a);
    too_old_after_restart(&kubectl, &store, a);
}

#[test]
fn watch_cache_on_keelson_store() {
    scenario("watch_cache_on_keelson_store", ServerKind::Keelson);
}

#[test]
fn watch_cache_on_real_etcd() {
    scenario("watch_cache_on_real_etcd", ServerKind::Etcd);
}
