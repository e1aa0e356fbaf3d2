//! Server-side apply against upstream's documented behaviour: the `fieldsV1` upstream
//! stores for the same applies (derived from structured-merge-diff's encoding rules), merge
//! and removal per list and map type, conflicts and force.

use serde_json::{json, Value};

use super::{apply, keep_timestamps_of_noop, managers::ApplyError, record_update};
use crate::resources::{find, ResourceDef};

fn deployments() -> &'static ResourceDef {
    find("apps", "v1", "deployments").unwrap()
}

fn nginx(replicas: i64, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx", "labels": {"app": "nginx"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "nginx"}},
            "template": {"metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": image,
                    "ports": [{"containerPort": 80}]}]}}}})
}

fn entries(obj: &Value) -> Vec<Value> {
    obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn fields_of(obj: &Value, manager: &str) -> Value {
    entries(obj)
        .into_iter()
        .find(|e| e["manager"] == manager)
        .unwrap_or_else(|| panic!("no entry for {manager}: {obj:#}"))["fieldsV1"]
        .clone()
}

fn apply_ok(live: Option<&Value>, config: &Value, manager: &str, force: bool) -> Value {
    match apply(deployments(), live, config, manager, force, None) {
        Ok(v) => v,
        Err(e) => panic!("apply failed: {e:?}"),
    }
}

fn conflicts(live: &Value, config: &Value, manager: &str) -> Value {
    match apply(deployments(), Some(live), config, manager, false, None) {
        Err(ApplyError::Conflicts(c)) => super::handler::conflict_status(&c),
        other => panic!("expected conflicts, got {other:?}"),
    }
}

#[test]
fn apply_creates_with_upstreams_fields_v1() {
    let obj = apply_ok(None, &nginx(3, "nginx:1.14.2"), "kubectl", false);
    assert_eq!(obj["spec"]["replicas"], 3);
    let e = &entries(&obj)[0];
    assert_eq!(
        (
            &e["manager"],
            &e["operation"],
            &e["apiVersion"],
            &e["fieldsType"]
        ),
        (
            &json!("kubectl"),
            &json!("Apply"),
            &json!("apps/v1"),
            &json!("FieldsV1")
        )
    );
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
    // What kube-apiserver stores for `kubectl apply --server-side` of this file: struct
    // fields holding fields are not members, the atomic selector is one leaf, list items
    // are members named by their keys (protocol defaulted to TCP).
    assert_eq!(
        e["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:selector": {},
                "f:template": {"f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:containerPort": {}}}}}}}}})
    );
}

#[test]
fn updates_own_what_they_changed_including_defaults() {
    let d = deployments();
    let mut created = nginx(1, "nginx:1");
    crate::object::prepare_create(d, &mut created, Some("default")).unwrap();
    record_update(d, None, &mut created, Some("kubectl-create"), None);
    let f = fields_of(&created, "kubectl-create");
    let e = &entries(&created)[0];
    assert_eq!(e["operation"], "Update");
    // Pointer-valued structs and maps that did not exist are members (`.`), value structs
    // (spec, template, its spec) are not; status and server metadata belong to nobody.
    assert_eq!(f["f:metadata"]["f:labels"], json!({".": {}, "f:app": {}}));
    assert!(f["f:spec"].get(".").is_none());
    assert!(f["f:spec"]["f:template"].get(".").is_none());
    assert_eq!(f["f:spec"]["f:revisionHistoryLimit"], json!({}));
    assert_eq!(
        f["f:spec"]["f:strategy"]["f:rollingUpdate"][".".to_string()],
        json!({})
    );
    assert!(f.get("f:status").is_none() && f["f:metadata"].get("f:uid").is_none());

    // A later scale by another manager moves .spec.replicas to it.
    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(4);
    record_update(d, Some(&created), &mut scaled, Some("kubectl-scale"), None);
    assert!(fields_of(&scaled, "kubectl-create")["f:spec"]
        .get("f:replicas")
        .is_none());
    assert_eq!(
        fields_of(&scaled, "kubectl-scale"),
        json!({"f:spec": {"f:replicas": {}}})
    );
    // Apply entries sort first, then updates by time.
    let ops: Vec<Value> = entries(&scaled)
        .iter()
        .map(|e| e["manager"].clone())
        .collect();
    assert_eq!(ops, [json!("kubectl-create"), json!("kubectl-scale")]);
}

#[test]
fn conflicting_apply_is_refused_and_force_takes_ownership() {
    let d = deployments();
    let mut live = nginx(1, "nginx:1");
    crate::object::prepare_create(d, &mut live, Some("default")).unwrap();
    record_update(d, None, &mut live, Some("kubectl-client-side-apply"), None);
    // Same values: no conflict, shared ownership.
    let same = apply_ok(Some(&live), &nginx(1, "nginx:1"), "kubectl", false);
    assert_eq!(same["spec"], live["spec"]);
    // A different replicas: upstream's 409.
    let s = conflicts(&live, &nginx(3, "nginx:1"), "kubectl");
    assert_eq!(
        s["message"],
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    assert_eq!(
        (&s["code"], &s["reason"]),
        (&json!(409), &json!("Conflict"))
    );
    assert_eq!(
        s["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "field": ".spec.replicas",
                "message": "conflict with \"kubectl-client-side-apply\" using apps/v1"}])
    );
    // Two fields: grouped under the manager.
    let s = conflicts(&live, &nginx(3, "nginx:2"), "kubectl");
    assert_eq!(
        s["message"],
        "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n\
         - .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image"
    );
    let forced = apply_ok(Some(&live), &nginx(3, "nginx:1"), "kubectl", true);
    assert_eq!(forced["spec"]["replicas"], 3);
    let csa = fields_of(&forced, "kubectl-client-side-apply");
    assert!(csa["f:spec"].get("f:replicas").is_none());
    assert_eq!(
        fields_of(&forced, "kubectl")["f:spec"]["f:replicas"],
        json!({})
    );
    // Another applier conflicts with an Apply owner, named without a version.
    let s = conflicts(&forced, &nginx(5, "nginx:1"), "other");
    assert_eq!(
        s["message"],
        "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"
    );
}

#[test]
fn fields_an_applier_drops_are_removed_unless_someone_else_owns_them() {
    let mut first = nginx(1, "nginx:1");
    first["metadata"]["labels"]["tier"] = json!("web");
    first["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]);
    let live = apply_ok(None, &first, "kubectl", false);
    // Another applier co-owns label tier.
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx", "labels": {"tier": "web"}}});
    let live = apply_ok(Some(&live), &other, "other", false);
    let mut second = nginx(1, "nginx:1");
    second["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "A", "value": "1"}]);
    let out = apply_ok(Some(&live), &second, "kubectl", false);
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "nginx", "tier": "web"})
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}])
    );
    let f = fields_of(&out, "kubectl");
    let env =
        &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]["f:env"];
    assert_eq!(
        env,
        &json!({"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}})
    );
    // Dropping the whole env list removes it.
    let out = apply_ok(Some(&out), &nginx(1, "nginx:1"), "kubectl", false);
    assert!(out["spec"]["template"]["spec"]["containers"][0]
        .get("env")
        .is_none());
}

#[test]
fn sets_merge_by_value_and_atomic_maps_replace_whole() {
    let mut a = nginx(1, "nginx:1");
    a["metadata"]["finalizers"] = json!(["a.example/x"]);
    let live = apply_ok(None, &a, "one", false);
    let b = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx", "finalizers": ["b.example/y"]}});
    let out = apply_ok(Some(&live), &b, "two", false);
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["a.example/x", "b.example/y"])
    );
    assert_eq!(
        fields_of(&out, "two")["f:metadata"],
        json!({"f:finalizers": {"v:\"b.example/y\"": {}}})
    );
    // The selector is atomic: another value is a conflict on the whole selector.
    let mut sel = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx"}, "spec": {"selector": {"matchLabels": {"app": "x"}}}});
    let s = conflicts(&out, &sel, "two");
    assert_eq!(
        s["message"],
        "Apply failed with 1 conflict: conflict with \"one\": .spec.selector"
    );
    sel["spec"]["selector"] = json!({"matchLabels": {"app": "nginx", "more": "x"}});
    let forced = apply(deployments(), Some(&out), &sel, "two", true, None).unwrap();
    assert_eq!(
        forced["spec"]["selector"],
        json!({"matchLabels": {"app": "nginx", "more": "x"}})
    );
}

#[test]
fn merged_lists_keep_live_order_with_applied_items_in_place() {
    let ty = super::schema::Ty::of_kind("apps/v1", "Deployment");
    let spec = ty
        .field("spec")
        .unwrap()
        .field("template")
        .unwrap()
        .field("spec")
        .unwrap();
    let c = |n: &str| json!({"name": n});
    let live = json!({"containers": [c("a"), c("b"), c("c")]});
    let out = super::typed::merge(spec, Some(&live), &json!({"containers": [c("c"), c("x")]}));
    assert_eq!(
        out.unwrap()["containers"],
        json!([c("a"), c("b"), c("c"), c("x")])
    );
    let out = super::typed::merge(spec, Some(&live), &json!({"containers": [c("x"), c("b")]}));
    assert_eq!(
        out.unwrap()["containers"],
        json!([c("a"), c("x"), c("b"), c("c")])
    );
}

#[test]
fn a_repeated_apply_keeps_its_timestamps() {
    let live = apply_ok(None, &nginx(1, "nginx:1"), "kubectl", false);
    let mut old = live.clone();
    old["metadata"]["managedFields"][0]["time"] = json!("2020-01-01T00:00:00Z");
    let mut again = apply_ok(Some(&old), &nginx(1, "nginx:1"), "kubectl", false);
    keep_timestamps_of_noop(&old, &mut again);
    assert_eq!(again, old);
    let mut changed = apply_ok(Some(&old), &nginx(2, "nginx:1"), "kubectl", false);
    keep_timestamps_of_noop(&old, &mut changed);
    assert_ne!(
        changed["metadata"]["managedFields"],
        old["metadata"]["managedFields"]
    );
}
