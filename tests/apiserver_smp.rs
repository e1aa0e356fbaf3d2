//! Strategic merge patch through the machine's kubectl: client-side `apply -f` (kubectl
//! computes a three-way patch from the OpenAPI metadata and sends it as a strategic merge
//! patch) and `kubectl patch` (strategic by default), on `keelson store` and on a real etcd
//! 3.4.
//!
//! The expected objects are what upstream's strategic merge produces for the same inputs:
//! lists merge by their merge keys (containers by `name`, env by `name`), elements the file
//! drops are deleted, elements only the live object has are kept, and an element a bare patch
//! adds goes first. Fields the server defaults are left out of the comparison.
//!
//! Environment: `KEELSON_KUBECTL_BIN` (default: `kubectl` on PATH); `KEELSON_SKIP_KUBECTL=1`
//! makes the tests pass with a note when kubectl is missing (otherwise they fail).

#[allow(dead_code)]
mod common;

use serde_json::{json, Value};

use common::apiserver::{kubectl_bin, Apiserver, Options};
use common::server::{require_etcd_tools, Server, ServerKind};

impl Apiserver {
    /// The stored Deployment `name`.
    fn deployment(&self, name: &str) -> Value {
        let out = self.ok(&["get", "deploy", name, "-o", "json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// The Deployment's containers without the fields the server defaults.
    fn containers(&self, name: &str) -> Value {
        let mut c = self.deployment(name)["spec"]["template"]["spec"]["containers"].take();
        for c in c.as_array_mut().expect("containers") {
            let c = c.as_object_mut().unwrap();
            for k in [
                "imagePullPolicy",
                "terminationMessagePath",
                "terminationMessagePolicy",
            ] {
                c.remove(k);
            }
            if c.get("resources") == Some(&json!({})) {
                c.remove("resources");
            }
            for p in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if p.get("protocol") == Some(&json!("TCP")) {
                    p.as_object_mut().unwrap().remove("protocol");
                }
            }
        }
        c
    }
}

/// The Deployment file, before (`false`) and after (`true`) the edit: a new image, env `B`
/// removed, a sidecar added.
fn web_yaml(edited: bool) -> String {
    let (image, env_b, sidecar) = if edited {
        (
            "nginx:1.26",
            "",
            "      - name: sidecar\n        image: busybox:1.36\n        command: [sleep, \"3600\"]\n",
        )
    } else {
        ("nginx:1.25", "        - {name: B, value: \"2\"}\n", "")
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  \
         selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    \
         spec:\n      containers:\n      - name: app\n        image: {image}\n        env:\n        \
         - {{name: A, value: \"1\"}}\n{env_b}        ports:\n        - containerPort: 80\n{sidecar}"
    )
}

/// Client-side apply: create, a live-only change, then re-apply the edited file.
fn apply_edit_apply(a: &Apiserver) {
    let f = a.file("web.yaml", &web_yaml(false));
    assert_eq!(a.ok(&["apply", "-f", &f]), "deployment.apps/web created\n");
    assert_eq!(
        a.containers("web"),
        json!([{"name": "app", "image": "nginx:1.25",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"containerPort": 80}]}])
    );
    // A change made outside the file: apply must keep it (it is not in last-applied).
    a.ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","env":[{"name":"LIVE","value":"x"}]}]}}}}"#,
    ]);
    assert_eq!(
        a.containers("web")[0]["env"],
        json!([{"name": "LIVE", "value": "x"}, {"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );

    let f = a.file("web.yaml", &web_yaml(true));
    assert_eq!(
        a.ok(&["apply", "-f", &f]),
        "deployment.apps/web configured\n"
    );
    assert_eq!(
        a.containers("web"),
        json!([
            {"name": "app", "image": "nginx:1.26",
             "env": [{"name": "LIVE", "value": "x"}, {"name": "A", "value": "1"}],
             "ports": [{"containerPort": 80}]},
            {"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "3600"]},
        ])
    );
    let d = a.deployment("web");
    let last: Value = serde_json::from_str(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .expect("last-applied annotation"),
    )
    .unwrap();
    assert_eq!(
        last["spec"]["template"]["spec"]["containers"][1]["name"],
        "sidecar"
    );
    assert_eq!(d["metadata"]["generation"], 3);
    // The live env has an element the file lacks, so kubectl's three-way patch still
    // carries `$setElementOrder/env` (kubectl reports "configured", as upstream): it changes
    // nothing.
    assert_eq!(
        a.ok(&["apply", "-f", &f]),
        "deployment.apps/web configured\n"
    );
    let again = a.deployment("web");
    assert_eq!(again["spec"], d["spec"]);
    assert_eq!(again["metadata"]["generation"], 3);
}

/// `kubectl patch` (strategic by default) merges containers by name.
fn patch_by_name(a: &Apiserver) {
    let f = a.file(
        "x.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  \
         selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n    \
         spec:\n      containers:\n      - {name: a, image: \"b:1\"}\n      - {name: c, image: \"d:1\"}\n",
    );
    assert_eq!(a.ok(&["apply", "-f", &f]), "deployment.apps/x created\n");
    assert_eq!(a.ok(&["apply", "-f", &f]), "deployment.apps/x unchanged\n");
    assert_eq!(
        a.ok(&[
            "patch",
            "deploy",
            "x",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"b:2"}]}}}}"#,
        ]),
        "deployment.apps/x patched\n"
    );
    assert_eq!(
        a.containers("x"),
        json!([{"name": "a", "image": "b:2"}, {"name": "c", "image": "d:1"}])
    );
    a.ok(&[
        "patch",
        "deploy",
        "x",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"n","image":"m:1"}]}}}}"#,
    ]);
    assert_eq!(
        a.containers("x"),
        json!([{"name": "n", "image": "m:1"}, {"name": "a", "image": "b:2"}, {"name": "c", "image": "d:1"}])
    );
    a.ok(&[
        "patch",
        "deploy",
        "x",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"n","$patch":"delete"}]}}}}"#,
    ]);
    assert_eq!(
        a.containers("x"),
        json!([{"name": "a", "image": "b:2"}, {"name": "c", "image": "d:1"}])
    );
    let bad = a.kubectl(&[
        "patch",
        "deploy",
        "x",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"image":"b:3"}]}}}}"#,
    ]);
    assert!(!bad.success());
    // Upstream answers a bare 500 without a reason, which kubectl prints as is.
    assert_eq!(
        bad.stderr_str(),
        "Error from server: map: map[image:b:3] does not contain declared merge key: name\n"
    );
}

fn scenario(kind: ServerKind) {
    let test = format!("smp_on_{kind}");
    let Some(kubectl) = kubectl_bin(&test) else {
        return;
    };
    if !require_etcd_tools(&test) {
        return;
    }
    let store = Server::start(kind, &[]).expect("store");
    let a = Options::new("keelson-smp-").start(&kubectl, &store.client_url());
    apply_edit_apply(&a);
    patch_by_name(&a);
}

#[test]
fn strategic_merge_on_keelson_store() {
    scenario(ServerKind::Keelson);
}

#[test]
fn strategic_merge_on_real_etcd() {
    scenario(ServerKind::Etcd);
}
