//! Defaulting, as kube-apiserver 1.32 applies it when it decodes an object (upstream
//! `pkg/apis/*/v1/defaults.go`), and the per-kind create-time status of upstream's
//! `PrepareForCreate` strategies.
//!
//! Invariants:
//! - [`apply`] only fills what is missing (absent or null): a value the client gave is never
//!   replaced, and applying it twice changes nothing. It runs on every create and every
//!   update through the main endpoint, so a PUT of an object stripped of its defaults
//!   compares equal to the stored one and does not bump `generation`.
//! - [`on_create`] sets what the server owns at creation: the initial status (pods Pending
//!   with their QoS class, namespaces Active, the empty status of controllers), and the
//!   selector and labels a Job generates from its uid.
//! - Cluster IPs come from [`clusterip`], which allocates through the store.

pub(crate) mod clusterip;
pub(crate) mod pod;

use serde_json::{json, Value};

use crate::object::meta_str;
use crate::resources::ResourceDef;

/// Sets `path` in `v` to `value` unless it holds a non-null value already (objects are
/// created along the way).
pub(crate) fn set_if_missing(v: &mut Value, path: &[&str], value: Value) {
    let mut cur = v;
    for p in &path[..path.len() - 1] {
        if !cur.get(*p).is_some_and(Value::is_object) {
            cur[*p] = json!({});
        }
        cur = &mut cur[*p];
    }
    let last = path[path.len() - 1];
    if cur.get(last).is_none_or(Value::is_null) {
        cur[last] = value;
    }
}

/// `spec.template`'s pod defaults (when there is a template).
fn template_at(obj: &mut Value, path: &[&str]) {
    let mut cur = &mut *obj;
    for p in path {
        match cur.get_mut(*p) {
            Some(next) if next.is_object() => cur = next,
            _ => return,
        }
    }
    pod::template(cur);
}

/// The defaults of `def`'s kind (see the module invariants).
pub(crate) fn apply(def: &ResourceDef, obj: &mut Value) {
    match (def.group, def.kind) {
        ("", "Pod") => pod::pod(obj),
        ("", "Secret") => set_if_missing(obj, &["type"], json!("Opaque")),
        ("", "Service") => service(obj),
        ("", "Namespace") => set_if_missing(obj, &["spec", "finalizers"], json!(["kubernetes"])),
        ("", "Node")
            if obj["status"]["allocatable"].is_null() && obj["status"]["capacity"].is_object() =>
        {
            obj["status"]["allocatable"] = obj["status"]["capacity"].clone();
        }
        ("", "PersistentVolume") => {
            set_if_missing(
                obj,
                &["spec", "persistentVolumeReclaimPolicy"],
                json!("Retain"),
            );
            set_if_missing(obj, &["spec", "volumeMode"], json!("Filesystem"));
        }
        ("", "PersistentVolumeClaim") => {
            set_if_missing(obj, &["spec", "volumeMode"], json!("Filesystem"))
        }
        ("", "ReplicationController") => {
            // Selector and labels default to the template's labels.
            let labels = obj["spec"]["template"]["metadata"]["labels"].clone();
            if labels.as_object().is_some_and(|l| !l.is_empty()) {
                if obj["spec"]["selector"]
                    .as_object()
                    .is_none_or(|s| s.is_empty())
                {
                    obj["spec"]["selector"] = labels.clone();
                }
                if obj["metadata"]["labels"]
                    .as_object()
                    .is_none_or(|l| l.is_empty())
                {
                    obj["metadata"]["labels"] = labels;
                }
            }
            set_if_missing(obj, &["spec", "replicas"], json!(1));
            template_at(obj, &["spec", "template"]);
        }
        ("apps", "Deployment") => {
            set_if_missing(obj, &["spec", "replicas"], json!(1));
            set_if_missing(obj, &["spec", "strategy", "type"], json!("RollingUpdate"));
            if obj["spec"]["strategy"]["type"] == "RollingUpdate" {
                let s = &mut obj["spec"]["strategy"];
                set_if_missing(s, &["rollingUpdate", "maxUnavailable"], json!("25%"));
                set_if_missing(s, &["rollingUpdate", "maxSurge"], json!("25%"));
            }
            set_if_missing(obj, &["spec", "revisionHistoryLimit"], json!(10));
            set_if_missing(obj, &["spec", "progressDeadlineSeconds"], json!(600));
            template_at(obj, &["spec", "template"]);
        }
        ("apps", "ReplicaSet") => {
            set_if_missing(obj, &["spec", "replicas"], json!(1));
            template_at(obj, &["spec", "template"]);
        }
        ("apps", "StatefulSet") => {
            set_if_missing(obj, &["spec", "podManagementPolicy"], json!("OrderedReady"));
            if obj["spec"]["updateStrategy"]["type"].is_null() {
                set_if_missing(
                    obj,
                    &["spec", "updateStrategy"],
                    json!({"type": "RollingUpdate"}),
                );
                obj["spec"]["updateStrategy"]["type"] = json!("RollingUpdate");
                set_if_missing(obj, &["spec", "updateStrategy", "rollingUpdate"], json!({}));
            }
            if obj["spec"]["updateStrategy"]["type"] == "RollingUpdate"
                && obj["spec"]["updateStrategy"]["rollingUpdate"].is_object()
            {
                let s = &mut obj["spec"]["updateStrategy"];
                set_if_missing(s, &["rollingUpdate", "partition"], json!(0));
            }
            set_if_missing(obj, &["spec", "replicas"], json!(1));
            set_if_missing(obj, &["spec", "revisionHistoryLimit"], json!(10));
            let policy = &["spec", "persistentVolumeClaimRetentionPolicy"];
            set_if_missing(obj, policy, json!({}));
            let p = &mut obj["spec"]["persistentVolumeClaimRetentionPolicy"];
            set_if_missing(p, &["whenDeleted"], json!("Retain"));
            set_if_missing(p, &["whenScaled"], json!("Retain"));
            for t in obj["spec"]
                .get_mut("volumeClaimTemplates")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                set_if_missing(t, &["spec", "volumeMode"], json!("Filesystem"));
            }
            template_at(obj, &["spec", "template"]);
        }
        ("apps", "DaemonSet") => {
            set_if_missing(
                obj,
                &["spec", "updateStrategy", "type"],
                json!("RollingUpdate"),
            );
            if obj["spec"]["updateStrategy"]["type"] == "RollingUpdate" {
                let s = &mut obj["spec"]["updateStrategy"];
                set_if_missing(s, &["rollingUpdate", "maxUnavailable"], json!(1));
                set_if_missing(s, &["rollingUpdate", "maxSurge"], json!(0));
            }
            set_if_missing(obj, &["spec", "revisionHistoryLimit"], json!(10));
            template_at(obj, &["spec", "template"]);
        }
        ("batch", "Job") => job(obj),
        ("batch", "CronJob") => {
            set_if_missing(obj, &["spec", "concurrencyPolicy"], json!("Allow"));
            set_if_missing(obj, &["spec", "suspend"], json!(false));
            set_if_missing(obj, &["spec", "successfulJobsHistoryLimit"], json!(3));
            set_if_missing(obj, &["spec", "failedJobsHistoryLimit"], json!(1));
            template_at(obj, &["spec", "jobTemplate", "spec", "template"]);
        }
        _ => {}
    }
}

fn job(obj: &mut Value) {
    let spec = &obj["spec"];
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        set_if_missing(obj, &["spec", "completions"], json!(1));
    }
    set_if_missing(obj, &["spec", "parallelism"], json!(1));
    let backoff = if obj["spec"]["backoffLimitPerIndex"].is_null() {
        6
    } else {
        i32::MAX as i64
    };
    set_if_missing(obj, &["spec", "backoffLimit"], json!(backoff));
    let labels = obj["spec"]["template"]["metadata"]["labels"].clone();
    if labels.is_object()
        && obj["metadata"]["labels"]
            .as_object()
            .is_none_or(|l| l.is_empty())
    {
        obj["metadata"]["labels"] = labels;
    }
    set_if_missing(obj, &["spec", "completionMode"], json!("NonIndexed"));
    set_if_missing(obj, &["spec", "suspend"], json!(false));
    let replacement = if obj["spec"]["podFailurePolicy"].is_null() {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set_if_missing(obj, &["spec", "podReplacementPolicy"], json!(replacement));
    template_at(obj, &["spec", "template"]);
}

fn service(obj: &mut Value) {
    set_if_missing(obj, &["spec", "sessionAffinity"], json!("None"));
    set_if_missing(obj, &["spec", "type"], json!("ClusterIP"));
    let ty = obj["spec"]["type"].as_str().unwrap_or("").to_string();
    for p in obj["spec"]
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if !p.is_object() {
            continue;
        }
        set_if_missing(p, &["protocol"], json!("TCP"));
        if p["targetPort"].is_null() || p["targetPort"] == json!(0) || p["targetPort"] == "" {
            p["targetPort"] = p["port"].clone();
        }
    }
    if obj["spec"]["sessionAffinity"] == "ClientIP" {
        set_if_missing(
            obj,
            &[
                "spec",
                "sessionAffinityConfig",
                "clientIP",
                "timeoutSeconds",
            ],
            json!(10800),
        );
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_if_missing(obj, &["spec", "externalTrafficPolicy"], json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_if_missing(obj, &["spec", "allocateLoadBalancerNodePorts"], json!(true));
    }
    if ty != "ExternalName" {
        set_if_missing(obj, &["spec", "internalTrafficPolicy"], json!("Cluster"));
        // Upstream's registry sets these with the cluster IP; this server is single-stack.
        set_if_missing(obj, &["spec", "ipFamilyPolicy"], json!("SingleStack"));
        set_if_missing(obj, &["spec", "ipFamilies"], json!(["IPv4"]));
    }
}

/// Upstream's `PrepareForCreate`: the status a new object starts with, and (Jobs) the
/// generated selector. Runs after [`apply`], with `metadata.uid` set.
pub(crate) fn on_create(def: &ResourceDef, obj: &mut Value) {
    match (def.group, def.kind) {
        ("", "Pod") => {
            let qos = pod::qos_class(&obj["spec"]);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        ("", "Namespace") => {
            obj["status"] = json!({"phase": "Active"});
            // Upstream labels every namespace with its own name.
            let name = meta_str(obj, "name").unwrap_or_default().to_string();
            set_if_missing(obj, &["metadata", "labels"], json!({}));
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        ("", "Node") => {}
        ("", "Service") | ("networking.k8s.io", "Ingress") => {
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("", "PersistentVolume") => {
            let now = crate::time::rfc3339(crate::time::now_unix());
            obj["status"] = json!({"phase": "Pending", "lastPhaseTransitionTime": now});
        }
        ("", "PersistentVolumeClaim") => obj["status"] = json!({"phase": "Pending"}),
        ("batch", "Job") => {
            obj["status"] = json!({});
            if obj["spec"]["manualSelector"] != json!(true) {
                let uid = meta_str(obj, "uid").unwrap_or_default().to_string();
                let name = meta_str(obj, "name").unwrap_or_default().to_string();
                let t = &mut obj["spec"]["template"];
                set_if_missing(t, &["metadata", "labels"], json!({}));
                let labels = &mut t["metadata"]["labels"];
                labels["batch.kubernetes.io/controller-uid"] = json!(uid);
                labels["batch.kubernetes.io/job-name"] = json!(name);
                labels["controller-uid"] = json!(uid);
                labels["job-name"] = json!(name);
                if obj["spec"]["selector"].is_null() {
                    obj["spec"]["selector"] =
                        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                }
            }
        }
        _ if def.has_status => obj["status"] = json!({}),
        _ => {}
    }
}

/// What an update through the main endpoint inherits from the stored object beyond the
/// metadata: a Service's allocated cluster IPs when the new body leaves them out.
pub(crate) fn on_update(def: &ResourceDef, old: &Value, new: &mut Value) {
    if def.group.is_empty() && def.kind == "Service" {
        let needs = |s: &Value| s["spec"]["type"] != "ExternalName";
        if needs(old) && needs(new) && new["spec"]["clusterIP"].as_str().unwrap_or("").is_empty() {
            for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if !old["spec"][f].is_null() {
                    new["spec"][f] = old["spec"][f].clone();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
