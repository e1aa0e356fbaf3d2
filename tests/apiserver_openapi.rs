//! OpenAPI and server-side field validation, driven by the machine's kubectl (1.32 through
//! the dispatcher) against `keelson apiserver` on `keelson store` and on a real etcd 3.4.
//!
//! `kubectl explain` reads the `/openapi/v3` documents; `kubectl create -f` and `apply -f`
//! find `fieldValidation` there, send `fieldValidation=Strict`, and leave unknown-field
//! detection to the server. Expected outputs are what kubectl 1.32 prints against a real
//! cluster for the same commands.
//!
//! Environment: `KEELSON_KUBECTL_BIN` (default: `kubectl` on PATH); `KEELSON_SKIP_KUBECTL=1`
//! makes the tests pass with a note when kubectl is missing (otherwise they fail).

#[allow(dead_code)]
mod common;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proc::{find_binary, free_port, run, ChildGuard, End, Outcome};
use common::server::{keelson_bin, require_etcd_tools, Server, ServerKind};

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

/// A running `keelson apiserver` and a kubectl pointed at it.
struct Apiserver {
    child: ChildGuard,
    dir: tempfile::TempDir,
    kubectl: PathBuf,
}

impl Apiserver {
    /// Starts the apiserver on `etcd` and waits until `/readyz` answers ok.
    fn start(kubectl: PathBuf, etcd: &str) -> Apiserver {
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("keelson-openapi-")
                .tempdir()
                .expect("tempdir");
            let log = File::create(dir.path().join("apiserver.log")).expect("log");
            let child = Command::new(keelson_bin())
                .args([
                    "apiserver",
                    "--etcd-servers",
                    etcd,
                    "--bind-address",
                    "127.0.0.1",
                ])
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

    /// Polls `kubectl get --raw /readyz` (the process is external: no event to await).
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

    /// Runs kubectl with the admin kubeconfig and its own HOME (its discovery cache).
    fn kubectl(&self, args: &[&str]) -> Outcome {
        let mut cmd = Command::new(&self.kubectl);
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        run(&mut cmd, None, Duration::from_secs(30), None).expect("run kubectl")
    }

    /// Runs kubectl and insists it succeeds.
    fn ok(&self, args: &[&str]) -> Outcome {
        let out = self.kubectl(args);
        assert!(
            out.success(),
            "kubectl {args:?}: {}\nstdout: {}\nstderr: {}\n--- apiserver log ---\n{}",
            out.end,
            out.stdout_str(),
            out.stderr_str(),
            self.log()
        );
        out
    }

    /// Writes `text` into the data dir; returns the path as kubectl is given it.
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write manifest");
        p.to_str().expect("utf-8 path").to_string()
    }
}

/// A Deployment with two fields no Deployment has.
const UNKNOWN_FIELDS: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: typo
spec:
  foo: bar
  replicas: 2
  selector:
    matchLabels: {app: typo}
  template:
    metadata:
      labels: {app: typo}
    spec:
      containers:
      - name: c
        image: nginx
        imagePullPolice: Always
";

const VALID: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: nginx
        ports:
        - containerPort: 80
";

fn explain(a: &Apiserver) {
    assert_eq!(
        a.ok(&["explain", "deployment.spec.replicas"]).stdout_str(),
        "GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\n\
         FIELD: replicas <integer>\n\n\n\
         DESCRIPTION:\n    \
         Number of desired pods. This is a pointer to distinguish between explicit\n    \
         zero and not specified. Defaults to 1.\n    \n\n"
    );
    // A nested field, through PodTemplateSpec, PodSpec and Container: its own description,
    // its type's, and the fields with the required ones marked.
    let ports = a
        .ok(&["explain", "deployment.spec.template.spec.containers.ports"])
        .stdout_str();
    assert!(
        ports.starts_with(
            "GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\n\
             FIELD: ports <[]ContainerPort>\n\n\nDESCRIPTION:\n    \
             List of ports to expose from the container."
        ),
        "{ports}"
    );
    assert!(
        ports.contains("    ContainerPort represents a network port in a single container.\n"),
        "{ports}"
    );
    assert!(
        ports.contains("\nFIELDS:\n  containerPort\t<integer> -required-\n"),
        "{ports}"
    );
    assert!(ports.contains("\n  protocol\t<string>\n"), "{ports}");
}

fn field_validation(a: &Apiserver) {
    // kubectl's default (--validate=strict): the server rejects the object.
    let bad = a.file("typo.yaml", UNKNOWN_FIELDS);
    let strict = a.kubectl(&["create", "-f", &bad]);
    assert_eq!(strict.end, End::Exited(1), "{}", strict.stderr_str());
    assert_eq!(strict.stdout_str(), "");
    assert_eq!(
        strict.stderr_str(),
        format!(
            "Error from server (BadRequest): error when creating \"{bad}\": Deployment in \
             version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown \
             field \"spec.foo\", unknown field \
             \"spec.template.spec.containers[0].imagePullPolice\"\n"
        )
    );
    assert_eq!(a.kubectl(&["get", "deploy", "typo"]).end, End::Exited(1));

    // --validate=false: fieldValidation=Ignore, created without the unknown fields.
    let ignored = a.ok(&["create", "--validate=false", "-f", &bad]);
    assert_eq!(ignored.stdout_str(), "deployment.apps/typo created\n");
    assert_eq!(ignored.stderr_str(), "");
    let spec = a
        .ok(&["get", "deploy", "typo", "-o", "jsonpath={.spec}"])
        .stdout_str();
    assert!(
        !spec.contains("foo") && !spec.contains("imagePullPolice"),
        "{spec}"
    );
    assert!(spec.contains("\"replicas\":2"), "{spec}");
    a.ok(&["delete", "deploy", "typo"]);

    // --validate=warn: created, one warning per dropped field.
    let warned = a.ok(&["create", "--validate=warn", "-f", &bad]);
    assert_eq!(warned.stdout_str(), "deployment.apps/typo created\n");
    assert_eq!(
        warned.stderr_str(),
        "Warning: unknown field \"spec.foo\"\n\
         Warning: unknown field \"spec.template.spec.containers[0].imagePullPolice\"\n"
    );

    // A valid Deployment applies without --validate=false, and re-applies (a strategic
    // merge patch under fieldValidation=Strict).
    let good = a.file("web.yaml", VALID);
    assert_eq!(
        a.ok(&["apply", "-f", &good]).stdout_str(),
        "deployment.apps/web created\n"
    );
    let scaled = a.file("web.yaml", &VALID.replace("replicas: 2", "replicas: 3"));
    let applied = a.ok(&["apply", "-f", &scaled]);
    assert_eq!(applied.stdout_str(), "deployment.apps/web configured\n");
    assert_eq!(applied.stderr_str(), "");
    assert_eq!(
        a.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .stdout_str(),
        "3"
    );
}

#[test]
fn openapi_on_keelson_store() {
    let Some(kubectl) = kubectl_bin("openapi_on_keelson_store") else {
        return;
    };
    if !require_etcd_tools("openapi_on_keelson_store") {
        return;
    }
    let store = Server::start(ServerKind::Keelson, &[]).expect("keelson store");
    let a = Apiserver::start(kubectl, &store.client_url());
    explain(&a);
    field_validation(&a);
}

#[test]
fn openapi_on_real_etcd() {
    let Some(kubectl) = kubectl_bin("openapi_on_real_etcd") else {
        return;
    };
    if !require_etcd_tools("openapi_on_real_etcd") {
        return;
    }
    let etcd = Server::start(ServerKind::Etcd, &[]).expect("etcd");
    let a = Apiserver::start(kubectl, &etcd.client_url());
    explain(&a);
    field_validation(&a);
}
