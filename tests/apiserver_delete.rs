//! Deletion semantics of `keelson apiserver` driven by the machine's kubectl 1.32, on
//! `keelson store` and on a real etcd 3.4: propagation finalizers (`--cascade`), custom
//! finalizers and `deletionTimestamp`, preconditions, dry runs, label-selected and
//! collection deletes, graceful pod deletion, and namespaces (Terminating, `/finalize`,
//! the immortal ones). Expected outputs are what kubectl prints against a real cluster.
//!
//! Environment: `KEELSON_KUBECTL_BIN` (default: `kubectl` on PATH); `KEELSON_SKIP_KUBECTL=1`
//! makes the tests pass with a note when kubectl is missing (otherwise they fail).

#[allow(dead_code)]
mod common;

use common::apiserver::{kubectl_bin, Apiserver, Options};
use common::server::{require_etcd_tools, Server, ServerKind};

impl Apiserver {
    fn get(&self, args: &[&str], jsonpath: &str) -> String {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        let jp = format!("jsonpath={jsonpath}");
        all.extend_from_slice(&["-o", &jp]);
        self.ok(&all)
    }

    fn not_found(&self, kind: &str, name: &str, resource: &str) {
        assert_eq!(
            self.fails(&["get", kind, name]),
            format!("Error from server (NotFound): {resource} \"{name}\" not found\n")
        );
    }
}

/// `--cascade=orphan|foreground` set the garbage collector's finalizers; the object stays
/// marked until they go (no garbage collector runs here).
fn cascades(a: &Apiserver) {
    a.ok(&["create", "deployment", "web", "--image=nginx"]);
    assert_eq!(
        a.ok(&[
            "delete",
            "deploy",
            "web",
            "--cascade=orphan",
            "--wait=false"
        ]),
        "deployment.apps \"web\" deleted\n"
    );
    assert_eq!(
        a.get(&["deploy", "web"], "{.metadata.finalizers}"),
        "[\"orphan\"]"
    );
    assert_ne!(
        a.get(&["deploy", "web"], "{.metadata.deletionTimestamp}"),
        ""
    );
    assert_eq!(
        a.get(&["deploy", "web"], "{.metadata.deletionGracePeriodSeconds}"),
        "0"
    );
    // Deleting again changes nothing.
    a.ok(&[
        "delete",
        "deploy",
        "web",
        "--cascade=orphan",
        "--wait=false",
    ]);
    assert_eq!(
        a.get(&["deploy", "web"], "{.metadata.finalizers}"),
        "[\"orphan\"]"
    );
    assert_eq!(
        a.ok(&[
            "patch",
            "deploy",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#
        ]),
        "deployment.apps/web patched\n"
    );
    a.not_found("deploy", "web", "deployments.apps");

    a.ok(&["create", "deployment", "fg", "--image=nginx"]);
    a.ok(&[
        "delete",
        "deploy",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    assert_eq!(
        a.get(&["deploy", "fg"], "{.metadata.finalizers}"),
        "[\"foregroundDeletion\"]"
    );
    assert_ne!(
        a.get(&["deploy", "fg"], "{.metadata.deletionTimestamp}"),
        ""
    );
    a.ok(&[
        "patch",
        "deploy",
        "fg",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    a.not_found("deploy", "fg", "deployments.apps");
}

/// A custom finalizer keeps a configmap until it is removed; none may be added meanwhile;
/// watchers see MODIFIED (the marking) then DELETED.
fn custom_finalizer(a: &Apiserver) {
    let f = a.file(
        "held.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n",
    );
    a.ok(&["create", "-f", &f]);
    let rv = a.get(&["cm", "held"], "{.metadata.resourceVersion}");
    assert_eq!(
        a.ok(&["delete", "cm", "held", "--wait=false"]),
        "configmap \"held\" deleted\n"
    );
    assert_ne!(a.get(&["cm", "held"], "{.metadata.deletionTimestamp}"), "");
    let refused = a.fails(&[
        "patch",
        "cm",
        "held",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold","example.com/more"]}}"#,
    ]);
    assert_eq!(
        refused,
        "The ConfigMap \"held\" is invalid: metadata.finalizers: Forbidden: no new finalizers \
         can be added if the object is being deleted, found new finalizers \
         []string{\"example.com/more\"}\n"
    );
    a.ok(&[
        "patch",
        "cm",
        "held",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    a.not_found("cm", "held", "configmaps");
    let path = format!(
        "/api/v1/namespaces/default/configmaps?watch=1&fieldSelector=metadata.name%3Dheld\
         &resourceVersion={rv}&timeoutSeconds=2"
    );
    let events: Vec<(String, bool)> = a
        .ok(&["get", "--raw", &path])
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            let marked = e["object"]["metadata"]["deletionTimestamp"].is_string();
            (e["type"].as_str().unwrap().to_string(), marked)
        })
        .collect();
    assert_eq!(
        events,
        [
            ("MODIFIED".to_string(), true),
            ("DELETED".to_string(), true)
        ]
    );
}

/// Preconditions through the raw API, and a server-side dry run.
fn preconditions_and_dry_run(a: &Apiserver) {
    a.ok(&["create", "configmap", "pre"]);
    let rv = a.get(&["cm", "pre"], "{.metadata.resourceVersion}");
    let uid = a.get(&["cm", "pre"], "{.metadata.uid}");
    let url = "/api/v1/namespaces/default/configmaps/pre";
    let stale = a.file(
        "stale.json",
        r#"{"kind":"DeleteOptions","apiVersion":"v1","preconditions":{"resourceVersion":"1"}}"#,
    );
    let err = a.fails(&["delete", "--raw", url, "-f", &stale]);
    assert_eq!(
        err,
        format!(
            "Error from server (Conflict): Operation cannot be fulfilled on ConfigMap \"pre\": \
             the ResourceVersion in the precondition (1) does not match the ResourceVersion in \
             record ({rv}). The object might have been modified\n"
        )
    );
    let wrong_uid = a.file("uid.json", r#"{"preconditions":{"uid":"nope"}}"#);
    let err = a.fails(&["delete", "--raw", url, "-f", &wrong_uid]);
    assert!(err.starts_with("Error from server (Conflict): "), "{err}");
    assert_eq!(
        a.ok(&["delete", "cm", "pre", "--dry-run=server"]),
        "configmap \"pre\" deleted (server dry run)\n"
    );
    assert_eq!(a.get(&["cm", "pre"], "{.metadata.resourceVersion}"), rv);
    let right = a.file(
        "right.json",
        &format!(r#"{{"preconditions":{{"uid":"{uid}","resourceVersion":"{rv}"}}}}"#),
    );
    let reply: serde_json::Value =
        serde_json::from_str(&a.ok(&["delete", "--raw", url, "-f", &right])).unwrap();
    assert_eq!(reply["status"], "Success");
    assert_eq!(reply["details"]["uid"], uid.as_str());
    a.not_found("cm", "pre", "configmaps");
}

/// `delete -l` (kubectl lists, then deletes each) and a raw deletecollection.
fn selected(a: &Apiserver) {
    for (n, app) in [
        ("a1", "a"),
        ("a2", "a"),
        ("b1", "b"),
        ("b2", "b"),
        ("c1", "c"),
    ] {
        a.ok(&["create", "configmap", n]);
        a.ok(&["label", "cm", n, &format!("app={app}")]);
    }
    assert_eq!(
        a.ok(&["delete", "cm", "-l", "app=a"]),
        "configmap \"a1\" deleted\nconfigmap \"a2\" deleted\n"
    );
    let list: serde_json::Value = serde_json::from_str(&a.ok(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps?labelSelector=app%3Db",
    ]))
    .unwrap();
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        a.get(&["cm", "-l", "app"], "{.items[*].metadata.name}"),
        "c1"
    );
    a.ok(&["delete", "cm", "c1"]);
}

/// A pod bound to a node is deleted gracefully and stays (no node agent confirms); an
/// unbound one goes at once; `--grace-period=0 --force` removes the bound one.
fn pods(a: &Apiserver) {
    let pod = |name: &str, node: &str| {
        format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{{\"name\":\"{name}\"}},\
             \"spec\":{{{node}\"containers\":[{{\"name\":\"c\",\"image\":\"busybox\"}}]}}}}"
        )
    };
    let bound = a.file("bound.json", &pod("bound", "\"nodeName\":\"n1\","));
    let free = a.file("free.json", &pod("free", ""));
    a.ok(&["create", "-f", &bound]);
    a.ok(&["create", "-f", &free]);
    let rv = a.get(&["pod", "free"], "{.metadata.resourceVersion}");
    assert_eq!(a.ok(&["delete", "pod", "free"]), "pod \"free\" deleted\n");
    a.not_found("pod", "free", "pods");
    // Marked with grace 0 first, then removed: watchers see both (as upstream).
    let path =
        format!("/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}&timeoutSeconds=2");
    let types: Vec<String> = a
        .ok(&["get", "--raw", &path])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].to_string())
        .collect();
    assert_eq!(types, ["\"MODIFIED\"", "\"DELETED\""]);
    assert_eq!(
        a.ok(&["delete", "pod", "bound", "--wait=false"]),
        "pod \"bound\" deleted\n"
    );
    assert_eq!(
        a.get(&["pod", "bound"], "{.metadata.deletionGracePeriodSeconds}"),
        "30"
    );
    assert_ne!(
        a.get(&["pod", "bound"], "{.metadata.deletionTimestamp}"),
        ""
    );
    let out = a.kubectl(&["delete", "pod", "bound", "--grace-period=0", "--force"]);
    assert!(out.success(), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "pod \"bound\" force deleted\n");
    a.not_found("pod", "bound", "pods");
}

/// Namespaces: Terminating on delete, no creates inside, `/finalize` removes them; the
/// immortal ones are refused.
fn namespaces(a: &Apiserver) {
    assert_eq!(
        a.fails(&["delete", "ns", "default"]),
        "Error from server (Forbidden): namespaces \"default\" is forbidden: this namespace \
         may not be deleted\n"
    );
    a.ok(&["create", "ns", "doomed"]);
    a.ok(&["create", "configmap", "inside", "-n", "doomed"]);
    assert_eq!(
        a.ok(&["delete", "ns", "doomed", "--wait=false"]),
        "namespace \"doomed\" deleted\n"
    );
    assert_eq!(a.get(&["ns", "doomed"], "{.status.phase}"), "Terminating");
    assert_eq!(
        a.get(&["ns", "doomed"], "{.spec.finalizers}"),
        "[\"kubernetes\"]"
    );
    assert_ne!(
        a.get(&["ns", "doomed"], "{.metadata.deletionTimestamp}"),
        ""
    );
    assert_eq!(
        a.fails(&["create", "configmap", "late", "-n", "doomed"]),
        "error: failed to create configmap: configmaps \"late\" is forbidden: unable to create \
         new content in namespace doomed because it is being terminated\n"
    );
    assert_eq!(
        a.fails(&["create", "configmap", "x", "-n", "nowhere"]),
        "error: failed to create configmap: namespaces \"nowhere\" not found\n"
    );
    // Deleting again: still there while spec.finalizers holds "kubernetes".
    a.ok(&["delete", "ns", "doomed", "--wait=false"]);
    assert_eq!(a.get(&["ns", "doomed"], "{.status.phase}"), "Terminating");
    let body = a.file(
        "finalize.json",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"doomed"},"spec":{"finalizers":[]}}"#,
    );
    a.ok(&[
        "replace",
        "--raw",
        "/api/v1/namespaces/doomed/finalize",
        "-f",
        &body,
    ]);
    a.not_found("ns", "doomed", "namespaces");
}

fn scenarios(a: &Apiserver) {
    cascades(a);
    custom_finalizer(a);
    preconditions_and_dry_run(a);
    selected(a);
    pods(a);
    namespaces(a);
}

#[test]
fn deletion_on_keelson_store() {
    let Some(kubectl) = kubectl_bin("deletion_on_keelson_store") else {
        return;
    };
    if !require_etcd_tools("deletion_on_keelson_store") {
        return;
    }
    let store = Server::start(ServerKind::Keelson, &[]).expect("keelson store");
    let a = Options::new("keelson-delete-").start(&kubectl, &store.client_url());
    scenarios(&a);
}

#[test]
fn deletion_on_real_etcd() {
    let Some(kubectl) = kubectl_bin("deletion_on_real_etcd") else {
        return;
    };
    if !require_etcd_tools("deletion_on_real_etcd") {
        return;
    }
    let etcd = Server::start(ServerKind::Etcd, &[]).expect("etcd");
    let a = Options::new("keelson-delete-").start(&kubectl, &etcd.client_url());
    scenarios(&a);
}
