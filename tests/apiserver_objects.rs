//! Object semantics of `keelson apiserver` driven by the machine's kubectl 1.32, on
//! `keelson store` and on a real etcd 3.4: the `scale` and `status` subresources,
//! `pods/binding`, `metadata.generation`, upstream's defaults as `-o json` shows them,
//! validation errors as kubectl prints them, and Service cluster IPs.
//!
//! The harness follows `tests/apiserver_kubectl.rs` (same environment variables:
//! `KEELSON_KUBECTL_BIN`, `KEELSON_SKIP_KUBECTL=1`). Expected values are upstream's for the
//! same requests.

#[allow(dead_code)]
mod common;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proc::{find_binary, free_port, run, ChildGuard, End, Outcome};
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
    panic!(
        "{test} needs kubectl on PATH (or KEELSON_KUBECTL_BIN); set KEELSON_SKIP_KUBECTL=1 to skip"
    );
}

/// A running `keelson apiserver` (allocating cluster IPs) and a kubectl pointed at it.
struct Apiserver {
    child: ChildGuard,
    dir: tempfile::TempDir,
    kubectl: PathBuf,
}

impl Apiserver {
    fn start(kubectl: PathBuf, etcd: &str) -> Apiserver {
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("keelson-objects-")
                .tempdir()
                .expect("tempdir");
            let log = File::create(dir.path().join("apiserver.log")).expect("log");
            let child = Command::new(keelson_bin())
                .args(["apiserver", "--etcd-servers", etcd, "--bind-address"])
                .arg("127.0.0.1")
                .arg("--secure-port")
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

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.success(),
            "kubectl {args:?}: {}\nstdout: {}\nstderr: {}\n--- apiserver log ---\n{}",
            out.end,
            out.stdout_str(),
            out.stderr_str(),
            self.log()
        );
        out.stdout_str()
    }

    /// Runs kubectl expecting exit 1; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert_eq!(
            out.end,
            End::Exited(1),
            "kubectl {args:?} should fail: {}",
            out.stdout_str()
        );
        out.stderr_str()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("kubectl printed JSON")
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write manifest");
        p.to_str().expect("utf-8 path").to_string()
    }
}

const WEB: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: c, image: nginx, ports: [{containerPort: 80}]}
";

fn generation(a: &Apiserver) -> String {
    a.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.generation} {.spec.replicas} {.status.replicas}",
    ])
}

/// Upstream's defaults on a created Deployment, `kubectl scale`, and generation across
/// status and spec updates.
fn deployments(a: &Apiserver) {
    let f = a.file("web.yaml", WEB);
    assert_eq!(a.ok(&["create", "-f", &f]), "deployment.apps/web created\n");
    let d = a.json(&["get", "deploy", "web", "-o", "json"]);
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["status"], json!({}));
    assert_eq!(
        d["spec"],
        json!({
            "progressDeadlineSeconds": 600, "replicas": 2, "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                         "type": "RollingUpdate"},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [{"image": "nginx", "imagePullPolicy": "Always", "name": "c",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"}],
                "dnsPolicy": "ClusterFirst", "enableServiceLinks": true,
                "restartPolicy": "Always", "schedulerName": "default-scheduler",
                "securityContext": {}, "terminationGracePeriodSeconds": 30}}
        })
    );

    assert_eq!(
        a.ok(&["scale", "deployment/web", "--replicas=3"]),
        "deployment.apps/web scaled\n"
    );
    assert_eq!(generation(a), "2 3 ");
    let scale = a.json(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ]);
    assert_eq!(
        (&scale["kind"], &scale["apiVersion"]),
        (&json!("Scale"), &json!("autoscaling/v1"))
    );
    assert_eq!(scale["spec"], json!({"replicas": 3}));
    assert_eq!(
        scale["status"],
        json!({"replicas": 0, "selector": "app=web"})
    );
    assert_eq!(
        scale["metadata"]["resourceVersion"],
        a.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.resourceVersion}"
        ])
    );

    // Status through /status: generation stays, labels are ignored.
    a.ok(&[
        "patch",
        "deploy",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":3},"metadata":{"labels":{"x":"y"}},"spec":{"replicas":7}}"#,
    ]);
    assert_eq!(generation(a), "2 3 3");
    assert_eq!(
        a.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.labels}"]),
        ""
    );
    // Status through the main endpoint is ignored.
    a.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":9}}"#,
    ]);
    assert_eq!(generation(a), "2 3 3");
    // A spec change bumps it.
    a.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":1}}"#,
    ]);
    assert_eq!(generation(a), "3 3 3");

    // The selector is immutable.
    let moved = a.fails(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"matchLabels":{"app":"x"}},"template":{"metadata":{"labels":{"app":"x"}}}}}"#,
    ]);
    assert_eq!(
        moved,
        "The Deployment \"web\" is invalid: spec.selector: Invalid value: \
         v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"x\"}, \
         MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable\n"
    );
    let negative = a.fails(&["scale", "deployment/web", "--replicas=-1"]);
    assert!(negative.contains("--replicas=COUNT"), "{negative}");
}

/// Invalid objects: kubectl prints upstream's messages from the Status causes.
fn invalid_objects(a: &Apiserver) {
    let no_selector = WEB
        .replace("name: web", "name: bad")
        .replace("  selector: {matchLabels: {app: web}}\n", "");
    let f = a.file("bad.yaml", &no_selector);
    assert_eq!(
        a.fails(&["create", "-f", &f]),
        "The Deployment \"bad\" is invalid: \n\
         * spec.selector: Required value\n\
         * spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: \
         `selector` does not match template `labels`\n"
    );
    let negative = WEB
        .replace("name: web", "name: neg")
        .replace("replicas: 2", "replicas: -1");
    let f = a.file("neg.yaml", &negative);
    assert_eq!(
        a.fails(&["create", "-f", &f]),
        "The Deployment \"neg\" is invalid: spec.replicas: Invalid value: -1: must be greater \
         than or equal to 0\n"
    );
    let f = a.file(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: nocontainers}\nspec: {containers: []}\n",
    );
    assert_eq!(
        a.fails(&["create", "-f", &f]),
        "The Pod \"nocontainers\" is invalid: spec.containers: Required value\n"
    );
    let job_yaml = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    \
         spec: {containers: [{name: c, image: busybox}]}\n";
    let job = a.file("job.yaml", job_yaml);
    assert_eq!(
        a.fails(&["create", "-f", &job]),
        "The Job \"j\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \
         \"Always\": supported values: \"OnFailure\", \"Never\"\n"
    );
    // A valid Job gets its generated selector (`kubectl create job` would send protobuf,
    // which the server reads for a few core kinds only).
    let pi = job_yaml.replace("name: j}", "name: pi}").replace(
        "spec: {containers",
        "spec: {restartPolicy: Never, containers",
    );
    let pi = a.file("pi.yaml", &pi);
    assert_eq!(a.ok(&["create", "-f", &pi]), "job.batch/pi created\n");
    let uid = a.ok(&["get", "job", "pi", "-o", "jsonpath={.metadata.uid}"]);
    let sel = a.ok(&[
        "get",
        "job",
        "pi",
        "-o",
        "jsonpath={.spec.selector.matchLabels.batch\\.kubernetes\\.io/controller-uid}",
    ]);
    assert_eq!(sel, uid);
}

/// Pod defaults, `pods/binding` and the pod update rules.
fn pods(a: &Apiserver) {
    a.ok(&["run", "p1", "--image=nginx:1.27"]);
    let p = a.json(&["get", "pod", "p1", "-o", "json"]);
    assert_eq!(
        p["status"],
        json!({"phase": "Pending", "qosClass": "BestEffort"})
    );
    assert_eq!(p["spec"]["priority"], 0);
    assert_eq!(
        p["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert!(p["metadata"].get("generation").is_none());
    let binding = a.file(
        "binding.json",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p1"},"target":{"kind":"Node","name":"n1"}}"#,
    );
    let raw = "/api/v1/namespaces/default/pods/p1/binding";
    let out = a.ok(&["create", "--raw", raw, "-f", &binding]);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&status["status"], &status["code"]),
        (&json!("Success"), &json!(201))
    );
    assert_eq!(
        a.ok(&[
            "get",
            "pod",
            "p1",
            "-o",
            "jsonpath={.spec.nodeName} {.status.conditions[0].type}={.status.conditions[0].status}"
        ]),
        "n1 PodScheduled=True"
    );
    let again = a.fails(&["create", "--raw", raw, "-f", &binding]);
    assert!(
        again.contains(
            "Operation cannot be fulfilled on pods/binding \"p1\": pod p1 is already assigned \
             to node \"n1\""
        ),
        "{again}"
    );
    // Images may change; ports may not. (JSON patch: `kubectl set image` sends a strategic
    // merge patch, whose keyed list merge is not served yet.)
    a.ok(&[
        "patch",
        "pod",
        "p1",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/containers/0/image","value":"nginx:1.28"}]"#,
    ]);
    let forbidden = a.fails(&[
        "patch",
        "pod",
        "p1",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/containers/0/ports","value":[{"containerPort":81}]}]"#,
    ]);
    assert!(
        forbidden.starts_with(
            "The Pod \"p1\" is invalid: spec: Forbidden: pod updates may not change fields \
             other than `spec.containers[*].image`"
        ),
        "{forbidden}"
    );
}

/// Services: defaults and a cluster IP from 10.96.0.0/12, held until deletion.
fn services(a: &Apiserver) {
    let s1 = a.file(
        "s1.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s1}\nspec: {ports: [{port: 80, targetPort: 8080}]}\n",
    );
    assert_eq!(a.ok(&["create", "-f", &s1]), "service/s1 created\n");
    let s = a.json(&["get", "svc", "s1", "-o", "json"]);
    let ip = s["spec"]["clusterIP"].as_str().unwrap().to_string();
    let octets: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    assert!(
        octets[0] == 10 && (96..112).contains(&octets[1]),
        "{ip} is outside 10.96.0.0/12"
    );
    assert_eq!(s["spec"]["clusterIPs"], json!([ip]));
    assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(s["spec"]["ipFamilyPolicy"], "SingleStack");
    assert_eq!(s["spec"]["sessionAffinity"], "None");
    assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
    assert_eq!(s["status"], json!({"loadBalancer": {}}));
    let taken = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: s2}}\nspec: {{clusterIP: {ip}, \
         ports: [{{port: 80}}]}}\n"
    );
    let f = a.file("s2.yaml", &taken);
    assert_eq!(
        a.fails(&["create", "-f", &f]),
        format!(
            "The Service \"s2\" is invalid: spec.clusterIPs: Invalid value: []string{{\"{ip}\"}}: \
             failed to allocate IP {ip}: provided IP is already allocated\n"
        )
    );
    a.ok(&["delete", "svc", "s1"]);
    assert_eq!(a.ok(&["create", "-f", &f]), "service/s2 created\n");
    assert_eq!(
        a.ok(&["get", "svc", "s2", "-o", "jsonpath={.spec.clusterIP}"]),
        ip
    );
}

/// Discovery lists the subresources; `kubectl api-resources` still works.
fn discovery(a: &Apiserver) {
    let apps = a.json(&["get", "--raw", "/apis/apps/v1"]);
    let scale = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments/scale")
        .expect("deployments/scale in discovery");
    assert_eq!(
        (&scale["group"], &scale["version"], &scale["kind"]),
        (&json!("autoscaling"), &json!("v1"), &json!("Scale"))
    );
    let core = a.json(&["get", "--raw", "/api/v1"]);
    assert!(core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "pods/binding" && r["verbs"] == json!(["create"])));
    let resources = a.ok(&["api-resources", "--api-group=apps", "-o", "name"]);
    assert!(
        resources.contains("deployments.apps\n") && !resources.contains("scale"),
        "{resources}"
    );
}

fn scenario(test: &str, kind: ServerKind) {
    let Some(kubectl) = kubectl_bin(test) else {
        return;
    };
    if !require_etcd_tools(test) {
        return;
    }
    let store = Server::start(kind, &[]).expect("store");
    let a = Apiserver::start(kubectl, &store.client_url());
    discovery(&a);
    deployments(&a);
    invalid_objects(&a);
    pods(&a);
    services(&a);
}

#[test]
fn objects_on_keelson_store() {
    scenario("objects_on_keelson_store", ServerKind::Keelson);
}

#[test]
fn objects_on_real_etcd() {
    scenario("objects_on_real_etcd", ServerKind::Etcd);
}
