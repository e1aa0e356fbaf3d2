//! Server-side apply through the machine's kubectl, on `keelson store` and on a real etcd
//! 3.4: `kubectl apply --server-side` creates a Deployment and, after the file is edited,
//! updates it (removing what the file dropped); a second field manager applying another
//! `replicas` gets upstream's conflict, printed by kubectl as upstream's; `--force-conflicts`
//! takes the field over; `get --show-managed-fields` shows every manager's entry.
//!
//! Environment: `KEELSON_KUBECTL_BIN` (default: `kubectl` on PATH); `KEELSON_SKIP_KUBECTL=1`
//! makes the tests pass with a note when kubectl is missing (otherwise they fail).

#[allow(dead_code)]
mod common;

use serde_json::{json, Value};

use common::apiserver::{kubectl_bin, Apiserver, Options};
use common::server::{require_etcd_tools, Server, ServerKind};

impl Apiserver {
    /// The stored Deployment `name`, managedFields included.
    fn deployment(&self, name: &str) -> Value {
        let out = self.ok(&["get", "deploy", name, "-o", "json", "--show-managed-fields"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

/// The manager entries of `d`, as (manager, operation) pairs in stored order.
fn managers(d: &Value) -> Vec<(String, String)> {
    d["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("manager"), s("operation"))
        })
        .collect()
}

fn fields_of<'a>(d: &'a Value, manager: &str) -> &'a Value {
    let e = d["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["manager"] == manager))
        .unwrap_or_else(|| panic!("no entry for {manager}: {d:#}"));
    &e["fieldsV1"]
}

/// The Deployment file: `replicas`, the image, and whether env `B` is there.
fn web_yaml(replicas: u32, image: &str, env_b: bool) -> String {
    let b = if env_b {
        "        - {name: B, value: \"2\"}\n"
    } else {
        ""
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {{app: web}}\n\
         spec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    \
         metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: app\n        \
         image: {image}\n        env:\n        - {{name: A, value: \"1\"}}\n{b}        ports:\n        \
         - containerPort: 80\n"
    )
}

const CONTAINER: &str = "k:{\"name\":\"app\"}";

fn scenario(kind: ServerKind) {
    let test = format!("ssa_on_{kind}");
    let Some(kubectl) = kubectl_bin(&test) else {
        return;
    };
    if !require_etcd_tools(&test) {
        return;
    }
    let store = Server::start(kind, &[]).expect("store");
    let a = Options::new("keelson-ssa-").start(&kubectl, &store.client_url());

    // Create.
    let f = a.file("web.yaml", &web_yaml(2, "nginx:1.25", true));
    assert_eq!(
        a.ok(&["apply", "--server-side", "-f", &f]),
        "deployment.apps/web serverside-applied\n"
    );
    let d = a.deployment("web");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(managers(&d), [("kubectl".to_string(), "Apply".to_string())]);
    let c = &fields_of(&d, "kubectl")["f:spec"]["f:template"]["f:spec"]["f:containers"][CONTAINER];
    assert_eq!(c["."], json!({}));
    assert_eq!(
        c["f:ports"],
        json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}})
    );
    assert_eq!(fields_of(&d, "kubectl")["f:spec"]["f:selector"], json!({}));
    // Applying the same file again changes nothing, not even the resourceVersion.
    a.ok(&["apply", "--server-side", "-f", &f]);
    assert_eq!(
        a.deployment("web")["metadata"]["resourceVersion"],
        d["metadata"]["resourceVersion"]
    );

    // Edit: a new image, env B dropped.
    let f = a.file("web.yaml", &web_yaml(2, "nginx:1.26", false));
    assert_eq!(
        a.ok(&["apply", "--server-side", "-f", &f]),
        "deployment.apps/web serverside-applied\n"
    );
    let d = a.deployment("web");
    let app = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(app["image"], "nginx:1.26");
    assert_eq!(app["env"], json!([{"name": "A", "value": "1"}]));
    assert_eq!(d["metadata"]["generation"], 2);

    // A second manager wants other replicas: upstream's conflict, as kubectl prints it.
    let other = a.file("other.yaml", &web_yaml(5, "nginx:1.26", false));
    let out = a.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        &other,
    ]);
    assert!(!out.success(), "the conflicting apply succeeded");
    let err = out.stderr_str();
    assert!(
        err.starts_with(
            "error: Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas\n\
             Please review the fields above--they currently have other managers."
        ),
        "{err}"
    );
    assert!(err.contains("--force-conflicts"), "{err}");
    assert_eq!(a.deployment("web")["spec"]["replicas"], 2);

    // Forced: `other` owns replicas now; both applied the rest and share it.
    assert_eq!(
        a.ok(&[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            &other,
        ]),
        "deployment.apps/web serverside-applied\n"
    );
    let d = a.deployment("web");
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(fields_of(&d, "other")["f:spec"]["f:replicas"], json!({}));
    assert!(fields_of(&d, "kubectl")["f:spec"]
        .get("f:replicas")
        .is_none());
    assert_eq!(
        fields_of(&d, "kubectl")["f:spec"]["f:template"],
        fields_of(&d, "other")["f:spec"]["f:template"]
    );

    // A non-apply write records an Update entry for its manager.
    a.ok(&["label", "deploy", "web", "tier=front"]);
    let d = a.deployment("web");
    assert_eq!(
        fields_of(&d, "kubectl-label"),
        &json!({"f:metadata": {"f:labels": {"f:tier": {}}}})
    );
    let mut ms = managers(&d);
    ms.sort();
    assert_eq!(
        ms,
        [
            ("kubectl".to_string(), "Apply".to_string()),
            ("kubectl-label".to_string(), "Update".to_string()),
            ("other".to_string(), "Apply".to_string()),
        ]
    );
    let yaml = a.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    for line in [
        "    manager: kubectl\n",
        "    manager: other\n",
        "    operation: Apply\n",
        "    fieldsType: FieldsV1\n",
        "        f:replicas: {}\n",
    ] {
        assert!(yaml.contains(line), "{line:?} missing from\n{yaml}");
    }
}

#[test]
fn server_side_apply_on_keelson_store() {
    scenario(ServerKind::Keelson);
}

#[test]
fn server_side_apply_on_real_etcd() {
    scenario(ServerKind::Etcd);
}
