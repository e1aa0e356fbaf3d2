//! kubectl's typed clients send request bodies in Kubernetes protobuf: the generator commands
//! (`create deployment|job|cronjob|service|ingress|quota|pdb`, `run`, `expose`) against
//! `keelson apiserver` on `keelson store` and on a real etcd 3.4, and the stored objects
//! compared with what upstream stores for the same commands (the fields kubectl sets, as its
//! generators build them, plus Go's JSON shape: `status: {}`, container `resources: {}`).
//!
//! Environment: as `apiserver_kubectl.rs` (`KEELSON_KUBECTL_BIN`, `KEELSON_SKIP_KUBECTL=1`).

#[allow(dead_code)]
mod common;

use common::apiserver::{kubectl_bin, Apiserver, Options};
use common::server::{require_etcd_tools, Server, ServerKind};
use serde_json::{json, Value};

impl Apiserver {
    /// Runs kubectl, insists it succeeds, returns stdout and stderr.
    fn ok_both(&self, args: &[&str]) -> (String, String) {
        let out = self.checked(args);
        (out.stdout_str(), out.stderr_str())
    }

    fn get(&self, what: &str) -> Value {
        let out = self.ok(&["get", what, "-o", "json"]);
        serde_json::from_str(&out).expect("kubectl -o json")
    }
}

/// `kubectl … -v=8` prints each request's headers: the body's media type.
fn sent_protobuf(stderr: &str) -> bool {
    stderr.contains("Content-Type: application/vnd.kubernetes.protobuf")
}

fn container(obj: &Value, path: &str) -> Value {
    obj.pointer(path).cloned().unwrap_or(Value::Null)
}

fn generators(a: &Apiserver) {
    let (out, err) = a.ok_both(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=80",
        "-v=8",
    ]);
    assert_eq!(out, "deployment.apps/web created\n");
    assert!(sent_protobuf(&err), "kubectl sent no protobuf body: {err}");
    let d = a.get("deployment/web");
    assert_eq!(d["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    let tpl = &d["spec"]["template"];
    assert_eq!(tpl["metadata"]["labels"], json!({"app": "web"}));
    let c = container(tpl, "/spec/containers/0");
    assert_eq!(c["name"], "nginx");
    assert_eq!(c["image"], "nginx:1.27");
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(c["resources"], json!({}));
    assert_eq!(d["status"], json!({}));

    a.ok(&["create", "job", "j", "--image=busybox", "--", "echo", "hi"]);
    let j = a.get("job/j");
    let pod = &j["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["containers"][0]["name"], "j");
    assert_eq!(pod["containers"][0]["image"], "busybox");
    assert_eq!(pod["containers"][0]["command"], json!(["echo", "hi"]));
    assert_eq!(j["status"], json!({}));

    a.ok(&[
        "create",
        "cronjob",
        "c",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "--",
        "date",
    ]);
    let cj = a.get("cronjob/c");
    assert_eq!(cj["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(cj["spec"]["jobTemplate"]["metadata"]["name"], "c");
    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "OnFailure");
    assert_eq!(pod["containers"][0]["name"], "c");
    assert_eq!(pod["containers"][0]["command"], json!(["date"]));

    a.ok(&["create", "service", "clusterip", "s", "--tcp=80:8080"]);
    let s = a.get("service/s");
    assert_eq!(s["metadata"]["labels"], json!({"app": "s"}));
    assert_eq!(s["spec"]["selector"], json!({"app": "s"}));
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(
        s["spec"]["ports"],
        json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}])
    );
    assert!(s["spec"]["clusterIP"]
        .as_str()
        .is_some_and(|ip| !ip.is_empty()));

    a.ok(&["run", "p", "--image=nginx", "--labels=app=p"]);
    let p = a.get("pod/p");
    assert_eq!(p["metadata"]["labels"], json!({"app": "p"}));
    assert_eq!(p["spec"]["containers"][0]["name"], "p");
    assert_eq!(p["spec"]["containers"][0]["image"], "nginx");
    assert_eq!(p["spec"]["restartPolicy"], "Always");

    a.ok(&["expose", "deployment", "web", "--port=80", "--name=web2"]);
    let s2 = a.get("service/web2");
    assert_eq!(s2["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(s2["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(
        s2["spec"]["ports"],
        json!([{"port": 80, "protocol": "TCP", "targetPort": 80}])
    );

    a.ok(&["create", "ingress", "ing", "--rule=foo.com/bar=svc1:8080"]);
    let ing = a.get("ingress/ing");
    assert_eq!(
        ing["spec"]["rules"],
        json!([{"host": "foo.com", "http": {"paths": [{
            "path": "/bar", "pathType": "Exact",
            "backend": {"service": {"name": "svc1", "port": {"number": 8080}}},
        }]}}])
    );

    a.ok(&["create", "quota", "q", "--hard=pods=2,cpu=1"]);
    let q = a.get("resourcequota/q");
    assert_eq!(q["spec"]["hard"], json!({"cpu": "1", "pods": "2"}));

    a.ok(&[
        "create",
        "pdb",
        "b",
        "--selector=app=web",
        "--min-available=0",
    ]);
    let b = a.get("pdb/b");
    assert_eq!(b["spec"]["minAvailable"], 0);
    assert_eq!(
        b["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );

    // A pointer zero survives: replicas 0 is kept, not defaulted back to 1.
    a.ok(&[
        "create",
        "deployment",
        "zero",
        "--image=nginx",
        "--replicas=0",
    ]);
    assert_eq!(a.get("deployment/zero")["spec"]["replicas"], 0);
    let (_, err) = a.ok_both(&["scale", "deployment", "web", "--replicas=0", "-v=8"]);
    assert_eq!(a.get("deployment/web")["spec"]["replicas"], 0);
    assert!(!sent_protobuf(&err), "scale now sends protobuf: {err}");
}

#[test]
fn protobuf_bodies_on_keelson_store() {
    let Some(kubectl) = kubectl_bin("protobuf_bodies_on_keelson_store") else {
        return;
    };
    if !require_etcd_tools("protobuf_bodies_on_keelson_store") {
        return;
    }
    let store = Server::start(ServerKind::Keelson, &[]).expect("keelson store");
    generators(&Options::new("keelson-apiserver-").start(&kubectl, &store.client_url()));
}

#[test]
fn protobuf_bodies_on_real_etcd() {
    let Some(kubectl) = kubectl_bin("protobuf_bodies_on_real_etcd") else {
        return;
    };
    if !require_etcd_tools("protobuf_bodies_on_real_etcd") {
        return;
    }
    let etcd = Server::start(ServerKind::Etcd, &[]).expect("etcd");
    generators(&Options::new("keelson-apiserver-").start(&kubectl, &etcd.client_url()));
}
