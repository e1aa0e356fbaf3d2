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

use common::apiserver::{kubectl_bin, Apiserver, Options};
use common::server::{require_etcd_tools, Server, ServerKind};
use serde_json::{json, Value};

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
    let a = Options::new("keelson-objects-").start(&kubectl, &store.client_url());
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
