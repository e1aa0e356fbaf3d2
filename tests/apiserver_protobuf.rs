//! kubectl's typed clients send request bodies in Kubernetes protobuf: the generator commands
//! (`create deployment|job|cronjob|service|ingress|quota|pdb`, `run`, `expose`) against
//! `keelson apiserver` on `keelson store` and on a real etcd 3.4, and the stored objects
//! compared with what upstream stores for the same commands (the fields kubectl sets, as its
//! generators build them, plus Go's JSON shape: `status: {}`, container `resources: {}`).
//!
//! Environment: as `apiserver_kubectl.rs` (`KEELSON_KUBECTL_BIN`, `KEELSON_SKIP_KUBECTL=1`).

#[allow(dead_code)]
mod common;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proc::{find_binary, free_port, run, ChildGuard, Outcome};
use common::server::{keelson_bin, require_etcd_tools, Server, ServerKind};
use serde_json::{json, Value};

fn kubectl_bin(test: &str) -> Option<PathBuf> {
    if let Some(p) = find_binary("kubectl", "KEELSON_KUBECTL_BIN") {
        return Some(p);
    }
    if std::env::var("KEELSON_SKIP_KUBECTL").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: kubectl not found and KEELSON_SKIP_KUBECTL=1 is set");
        return None;
    }
    panic!("{test} needs kubectl on PATH (or KEELSON_KUBECTL_BIN); set KEELSON_SKIP_KUBECTL=1");
}

/// A running `keelson apiserver` and a kubectl pointed at it.
struct Apiserver {
    child: ChildGuard,
    dir: tempfile::TempDir,
    kubectl: PathBuf,
}

impl Apiserver {
    fn start(kubectl: PathBuf, etcd: &str) -> Apiserver {
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("keelson-apiserver-")
                .tempdir()
                .expect("tempdir");
            let log = File::create(dir.path().join("apiserver.log")).expect("log");
            let child = Command::new(keelson_bin())
                .args(["apiserver", "--etcd-servers", etcd])
                .args(["--bind-address", "127.0.0.1", "--secure-port"])
                .arg(free_port().to_string())
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().expect("log")))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn keelson apiserver");
            let mut a = Apiserver {
                child: ChildGuard::new(child),
                dir,
                kubectl: kubectl.clone(),
            };
            match a.wait_ready() {
                Ok(()) => return a,
                Err(e) if a.log().contains("Address already in use") => eprintln!("retrying: {e}"),
                Err(e) => panic!("{e}\n--- apiserver log ---\n{}", a.log()),
            }
        }
        panic!("the apiserver's port kept being taken");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("data").join("admin.kubeconfig")
    }

    /// Polls `/readyz` (the process is external: no event to await).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.exited() {
                return Err(format!("the apiserver exited ({status})"));
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.success() && out.stdout_str() == "ok" {
                    return Ok(());
                }
                last = format!("{}{}", out.stdout_str(), out.stderr_str());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("the apiserver did not become ready: {last}"))
    }

    fn kubectl(&self, args: &[&str]) -> Outcome {
        let mut cmd = Command::new(&self.kubectl);
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path());
        run(&mut cmd, None, Duration::from_secs(30), None).expect("run kubectl")
    }

    /// Runs kubectl, insists it succeeds, returns stdout and stderr.
    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.kubectl(args);
        assert!(
            out.success(),
            "kubectl {args:?}: {}\nstdout: {}\nstderr: {}\n--- apiserver log ---\n{}",
            out.end,
            out.stdout_str(),
            out.stderr_str(),
            self.log()
        );
        (out.stdout_str(), out.stderr_str())
    }

    fn get(&self, what: &str) -> Value {
        let (out, _) = self.ok(&["get", what, "-o", "json"]);
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
    let (out, err) = a.ok(&[
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
    let (_, err) = a.ok(&["scale", "deployment", "web", "--replicas=0", "-v=8"]);
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
    generators(&Apiserver::start(kubectl, &store.client_url()));
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
    generators(&Apiserver::start(kubectl, &etcd.client_url()));
}
