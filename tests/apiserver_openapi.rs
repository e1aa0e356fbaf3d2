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

use common::apiserver::{kubectl_bin, Apiserver, Options};
use common::proc::End;
use common::server::{require_etcd_tools, Server, ServerKind};

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
        a.checked(&["explain", "deployment.spec.replicas"])
            .stdout_str(),
        "GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\n\
         FIELD: replicas <integer>\n\n\n\
         DESCRIPTION:\n    \
         Number of desired pods. This is a pointer to distinguish between explicit\n    \
         zero and not specified. Defaults to 1.\n    \n\n"
    );
    // A nested field, through PodTemplateSpec, PodSpec and Container: its own description,
    // its type's, and the fields with the required ones marked.
    let ports = a
        .checked(&["explain", "deployment.spec.template.spec.containers.ports"])
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
    let ignored = a.checked(&["create", "--validate=false", "-f", &bad]);
    assert_eq!(ignored.stdout_str(), "deployment.apps/typo created\n");
    assert_eq!(ignored.stderr_str(), "");
    let spec = a
        .checked(&["get", "deploy", "typo", "-o", "jsonpath={.spec}"])
        .stdout_str();
    assert!(
        !spec.contains("foo") && !spec.contains("imagePullPolice"),
        "{spec}"
    );
    assert!(spec.contains("\"replicas\":2"), "{spec}");
    a.checked(&["delete", "deploy", "typo"]);

    // --validate=warn: created, one warning per dropped field.
    let warned = a.checked(&["create", "--validate=warn", "-f", &bad]);
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
        a.checked(&["apply", "-f", &good]).stdout_str(),
        "deployment.apps/web created\n"
    );
    let scaled = a.file("web.yaml", &VALID.replace("replicas: 2", "replicas: 3"));
    let applied = a.checked(&["apply", "-f", &scaled]);
    assert_eq!(applied.stdout_str(), "deployment.apps/web configured\n");
    assert_eq!(applied.stderr_str(), "");
    assert_eq!(
        a.checked(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
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
    let a = Options::new("keelson-openapi-").start(&kubectl, &store.client_url());
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
    let a = Options::new("keelson-openapi-").start(&kubectl, &etcd.client_url());
    explain(&a);
    field_validation(&a);
}
