//! Controller, Job and Service spec rules (upstream `pkg/apis/apps/validation`,
//! `pkg/apis/batch/validation`, and `ValidateService`/`ValidateReplicationController` in
//! `pkg/apis/core/validation`).

use std::collections::HashSet;

use serde_json::{json, Value};

use super::meta::{self, dns1123_label, is_empty_selector, selects};
use super::pod::{self, port_name, port_num};
use super::{go_label_selector, go_str, go_string_map, Errs};

const MISMATCH: &str = "`selector` does not match template `labels`";

/// A required `metav1.LabelSelector` at `spec.selector`; `what` names the kind in the
/// empty-selector message.
fn selector(spec: &Value, what: &str, e: &mut Errs) {
    let sel = &spec["selector"];
    if sel.is_null() {
        e.required("spec.selector", "");
        return;
    }
    meta::label_selector(sel, "spec.selector", e);
    if is_empty_selector(sel) {
        e.invalid(
            "spec.selector",
            &go_label_selector(sel),
            &format!("empty selector is invalid for {what}"),
        );
    }
}

/// The template labels must be selected unless the selector selects everything.
fn template_matches(sel: &Value, template: &Value, path: &str, e: &mut Errs) {
    let labels = &template["metadata"]["labels"];
    if !is_empty_selector(sel) && !selects(sel, labels) {
        e.invalid(
            &format!("{path}.metadata.labels"),
            &go_string_map(labels),
            MISMATCH,
        );
    }
}

fn restart_always(template: &Value, path: &str, e: &mut Errs) {
    let policy = template["spec"]["restartPolicy"].as_str().unwrap_or("");
    if policy != "Always" {
        e.not_supported(&format!("{path}.spec.restartPolicy"), policy, &["Always"]);
    }
}

/// Deployments and ReplicaSets (`ValidateDeploymentSpec`, `ValidateReplicaSetSpec`).
pub(crate) fn replica_set(spec: &Value, what: &str, e: &mut Errs) {
    e.nonnegative("spec.replicas", &spec["replicas"]);
    selector(spec, what, e);
    let t = &spec["template"];
    template_matches(&spec["selector"], t, "spec.template", e);
    pod::template(t, "spec.template", e);
    restart_always(t, "spec.template", e);
    if !t["spec"]["activeDeadlineSeconds"].is_null() {
        e.forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        );
    }
    e.nonnegative("spec.minReadySeconds", &spec["minReadySeconds"]);
    e.nonnegative("spec.revisionHistoryLimit", &spec["revisionHistoryLimit"]);
    if let Some(ty) = spec["strategy"]["type"].as_str() {
        if !["Recreate", "RollingUpdate"].contains(&ty) {
            e.not_supported("spec.strategy.type", ty, &["Recreate", "RollingUpdate"]);
        }
    }
}

pub(crate) fn stateful_set(spec: &Value, e: &mut Errs) {
    e.one_of(
        "spec.podManagementPolicy",
        &spec["podManagementPolicy"],
        &["OrderedReady", "Parallel"],
    );
    e.nonnegative("spec.replicas", &spec["replicas"]);
    selector(spec, "statefulset", e);
    let t = &spec["template"];
    template_matches(&spec["selector"], t, "spec.template", e);
    pod::template(t, "spec.template", e);
    restart_always(t, "spec.template", e);
}

pub(crate) fn daemon_set(spec: &Value, e: &mut Errs) {
    selector(spec, "daemonset", e);
    let t = &spec["template"];
    template_matches(&spec["selector"], t, "spec.template", e);
    pod::template(t, "spec.template", e);
    restart_always(t, "spec.template", e);
}

pub(crate) fn replication_controller(spec: &Value, e: &mut Errs) {
    e.nonnegative("spec.replicas", &spec["replicas"]);
    let sel = &spec["selector"];
    if sel.as_object().is_none_or(|m| m.is_empty()) {
        e.required("spec.selector", "");
    }
    meta::labels(sel, "spec.selector", e);
    let t = &spec["template"];
    if !t.is_object() {
        e.required("spec.template", "");
        return;
    }
    let as_selector = json!({"matchLabels": sel.clone()});
    template_matches(&as_selector, t, "spec.template", e);
    pod::template(t, "spec.template", e);
    restart_always(t, "spec.template", e);
}

/// `ValidateJobSpec` at `path` (`spec`, or `spec.jobTemplate.spec` in a CronJob, where the
/// selector is not required yet).
pub(crate) fn job(spec: &Value, path: &str, needs_selector: bool, e: &mut Errs) {
    for f in ["parallelism", "completions", "backoffLimit"] {
        e.nonnegative(&format!("{path}.{f}"), &spec[f]);
    }
    if let Some(n) = spec["activeDeadlineSeconds"].as_i64().filter(|n| *n <= 0) {
        e.invalid(
            &format!("{path}.activeDeadlineSeconds"),
            &n.to_string(),
            "must be greater than 0",
        );
    }
    let sel = &spec["selector"];
    let t = &spec["template"];
    let tpath = format!("{path}.template");
    if sel.is_null() {
        if needs_selector {
            e.required(&format!("{path}.selector"), "");
        }
    } else {
        meta::label_selector(sel, &format!("{path}.selector"), e);
        if !selects(sel, &t["metadata"]["labels"]) {
            e.invalid(
                &format!("{tpath}.metadata.labels"),
                &go_string_map(&t["metadata"]["labels"]),
                MISMATCH,
            );
        }
    }
    pod::template(t, &tpath, e);
    let policy = t["spec"]["restartPolicy"].as_str().unwrap_or("");
    if policy != "OnFailure" && policy != "Never" {
        e.not_supported(
            &format!("{tpath}.spec.restartPolicy"),
            policy,
            &["OnFailure", "Never"],
        );
    }
    if let Some(m) = spec["completionMode"].as_str() {
        if !["NonIndexed", "Indexed"].contains(&m) {
            e.not_supported(
                &format!("{path}.completionMode"),
                m,
                &["NonIndexed", "Indexed"],
            );
        }
    }
}

pub(crate) fn cron_job(spec: &Value, e: &mut Errs) {
    match spec["schedule"].as_str().unwrap_or("") {
        "" => e.required("spec.schedule", ""),
        s if s.split_whitespace().count() != 5 && !s.starts_with('@') => {
            let n = s.split_whitespace().count();
            e.invalid(
                "spec.schedule",
                &go_str(s),
                &format!("expected exactly 5 fields, found {n}: {s}"),
            );
        }
        _ => {}
    }
    e.one_of(
        "spec.concurrencyPolicy",
        &spec["concurrencyPolicy"],
        &["Allow", "Forbid", "Replace"],
    );
    e.nonnegative(
        "spec.startingDeadlineSeconds",
        &spec["startingDeadlineSeconds"],
    );
    for f in ["successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        e.nonnegative(&format!("spec.{f}"), &spec[f]);
    }
    job(
        &spec["jobTemplate"]["spec"],
        "spec.jobTemplate.spec",
        false,
        e,
    );
}

/// `ValidateService`'s spec part.
pub(crate) fn service(spec: &Value, e: &mut Errs) {
    let ty = spec["type"].as_str().unwrap_or("");
    let headless = spec["clusterIP"] == "None";
    let ports = spec["ports"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if ports.is_empty() && !headless && ty != "ExternalName" {
        e.required("spec.ports", "");
    }
    if ty == "ExternalName" {
        match spec["externalName"].as_str().unwrap_or("") {
            "" => e.required("spec.externalName", ""),
            n => {
                for m in meta::dns1123_subdomain(n.trim_end_matches('.')) {
                    e.invalid("spec.externalName", &go_str(n), &m);
                }
            }
        }
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let name = p["name"].as_str().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            e.required(&format!("{at}.name"), "");
        } else if !name.is_empty() {
            for m in dns1123_label(name) {
                e.invalid(&format!("{at}.name"), &go_str(name), &m);
            }
            if !names.insert(name.to_string()) {
                e.duplicate(&format!("{at}.name"), &go_str(name));
            }
        }
        match p["port"].as_i64() {
            None => e.invalid(
                &format!("{at}.port"),
                "0",
                "must be between 1 and 65535, inclusive",
            ),
            Some(_) => port_num(&p["port"], &format!("{at}.port"), e),
        }
        e.one_of(
            &format!("{at}.protocol"),
            &p["protocol"],
            &["SCTP", "TCP", "UDP"],
        );
        match &p["targetPort"] {
            Value::String(s) => {
                for m in port_name(s) {
                    e.invalid(&format!("{at}.targetPort"), &go_str(s), m);
                }
            }
            other => port_num(other, &format!("{at}.targetPort"), e),
        }
    }
    if !ty.is_empty() && !["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"].contains(&ty) {
        e.not_supported(
            "spec.type",
            ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        );
    }
    e.one_of(
        "spec.sessionAffinity",
        &spec["sessionAffinity"],
        &["ClientIP", "None"],
    );
}
