use serde_json::{json, Value};

use super::meta::{name_problem, DNS1035_LABEL, DNS1123_LABEL, DNS1123_SUBDOMAIN};
use super::*;
use crate::resources::find;

fn messages(group: &str, resource: &str, obj: Value) -> Vec<String> {
    let def = find(group, "v1", resource).unwrap();
    let mut obj = obj;
    crate::defaults::apply(def, &mut obj);
    object(def, &obj)
        .into_iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect()
}

#[test]
fn names_are_validated_per_kind() {
    let cm = find("", "v1", "configmaps").unwrap();
    let ns = find("", "v1", "namespaces").unwrap();
    let svc = find("", "v1", "services").unwrap();
    assert_eq!(name_problem(cm, "a.b-c"), None);
    assert_eq!(name_problem(cm, "X").as_deref(), Some(DNS1123_SUBDOMAIN));
    assert_eq!(name_problem(cm, "a..b").as_deref(), Some(DNS1123_SUBDOMAIN));
    assert_eq!(name_problem(ns, "a.b").as_deref(), Some(DNS1123_LABEL));
    assert_eq!(name_problem(svc, "1abc").as_deref(), Some(DNS1035_LABEL));
    assert!(name_problem(ns, &"a".repeat(64)).unwrap().contains("63"));
}

#[test]
fn labels_and_annotations() {
    let m = messages(
        "",
        "configmaps",
        json!({"metadata": {"name": "x", "labels": {"a/b/c": "ok", "good": "bad value"},
            "annotations": {"example.com/": "v"}}}),
    );
    assert_eq!(m.len(), 4, "{m:#?}");
    assert!(m[0].starts_with(
        "metadata.labels: Invalid value: \"a/b/c\": a qualified name must consist of"
    ));
    assert!(m[1].starts_with(
        "metadata.labels: Invalid value: \"bad value\": a valid label must be an empty string"
    ));
    assert_eq!(
        m[2],
        "metadata.annotations: Invalid value: \"example.com/\": name part must be non-empty"
    );
    assert!(m[3].starts_with(
        "metadata.annotations: Invalid value: \"example.com/\": name part must consist of"
    ));
}

#[test]
fn pods_need_containers_with_names_and_images() {
    assert_eq!(
        messages("", "pods", json!({"metadata": {"name": "p"}, "spec": {}})),
        ["spec.containers: Required value"]
    );
    let m = messages(
        "",
        "pods",
        json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "Sometimes",
            "containers": [{"name": "c", "image": "x",
                            "ports": [{"containerPort": 70000, "protocol": "XTP"}]},
                           {"name": "c"}, {"image": "y"}]}}),
    );
    assert_eq!(
        m,
        [
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[0].protocol: Unsupported value: \"XTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.containers[1].image: Required value",
            "spec.containers[1].name: Duplicate value: \"c\"",
            "spec.containers[2].name: Required value",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ]
    );
}

fn template(labels: Value, restart: &str) -> Value {
    json!({"metadata": {"labels": labels},
        "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "i"}]}})
}

#[test]
fn controllers_need_matching_selectors() {
    let m = messages(
        "apps",
        "deployments",
        json!({"metadata": {"name": "d"}, "spec": {"replicas": -1,
            "selector": {"matchLabels": {"app": "a"}},
            "template": template(json!({"app": "b"}), "Never")}}),
    );
    assert_eq!(
        m,
        [
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`",
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        ]
    );
    let m = messages(
        "apps",
        "replicasets",
        json!({"metadata": {"name": "r"}, "spec": {"selector": {},
            "template": template(json!({"app": "b"}), "Always")}}),
    );
    assert_eq!(
        m,
        ["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"]
    );
    let m = messages(
        "apps",
        "statefulsets",
        json!({"metadata": {"name": "s"}, "spec": {
            "selector": {"matchExpressions": [{"key": "app", "operator": "In"}]},
            "template": template(json!({"app": "b"}), "Always")}}),
    );
    assert_eq!(
        m[0],
        "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
    );
    let ok = messages(
        "",
        "replicationcontrollers",
        json!({"metadata": {"name": "rc"}, "spec": {"template": template(json!({"a": "b"}), "Always")}}),
    );
    assert!(ok.is_empty(), "{ok:?}");
}

#[test]
fn jobs_restart_on_failure_or_never() {
    let m = messages(
        "batch",
        "jobs",
        json!({"metadata": {"name": "j"}, "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
    );
    assert_eq!(
        m,
        ["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]
    );
    let m = messages(
        "batch",
        "cronjobs",
        json!({"metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {
            "template": template(json!({}), "Never")}}}}),
    );
    assert_eq!(m, ["spec.schedule: Required value"]);
}

#[test]
fn services_need_valid_ports() {
    assert_eq!(
        messages(
            "",
            "services",
            json!({"metadata": {"name": "s"}, "spec": {}})
        ),
        ["spec.ports: Required value"]
    );
    let m = messages(
        "",
        "services",
        json!({"metadata": {"name": "s"}, "spec": {"type": "Weird", "ports": [
            {"port": 80, "name": "http"}, {"port": 0, "name": "http"}, {"port": 8080, "targetPort": "Bad_Name"}]}}),
    );
    assert_eq!(
        m,
        [
            "spec.ports[1].name: Duplicate value: \"http\"",
            "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[1].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[2].name: Required value",
            "spec.ports[2].targetPort: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.type: Unsupported value: \"Weird\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
        ]
    );
    let headless = messages(
        "",
        "services",
        json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}),
    );
    assert!(headless.is_empty(), "{headless:?}");
}

#[test]
fn immutable_fields_on_update() {
    let pod = find("", "v1", "pods").unwrap();
    let old = json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "nginx:1"}]}});
    let mut o = old.clone();
    crate::defaults::apply(pod, &mut o);
    let mut image = o.clone();
    image["spec"]["containers"][0]["image"] = json!("nginx:2");
    assert_eq!(on_update(pod, &o, &image), []);
    let mut port = o.clone();
    port["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}]);
    let e = on_update(pod, &o, &port);
    assert_eq!(e.len(), 1);
    assert!(e[0].message.starts_with(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
    ));
    let svc = find("", "v1", "services").unwrap();
    let s1 = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "sessionAffinity": "None",
        "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"],
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}});
    let mut s2 = s1.clone();
    s2["spec"]["clusterIP"] = json!("10.96.0.10");
    s2["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
    let e = on_update(svc, &s1, &s2);
    assert_eq!(
        format!("{}: {}", e[0].field, e[0].message),
        "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.10\"}: may not change once set"
    );
}
