//! What an update may not change (upstream `ValidateImmutableField` and the per-kind
//! `Validate*Update` functions): selectors of the workload controllers, a Job's template,
//! most of a Pod's spec, a StatefulSet's spec outside its mutable fields, a Service's
//! cluster IP.

use serde_json::{json, Value};

use super::{go_label_selector, go_str, Errs};
use crate::error::Cause;
use crate::resources::ResourceDef;

const IMMUTABLE: &str = "field is immutable";
const POD_UPDATE: &str = "pod updates may not change fields other than \
    `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,\
    `spec.tolerations` (only additions to existing tolerations),\
    `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";
const STS_UPDATE: &str = "updates to statefulset spec for fields other than 'replicas', \
    'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and \
    'minReadySeconds' are forbidden";

/// Everything wrong with `new` as the update of `old` (both defaulted): the object's own
/// rules, then the immutable fields.
pub(crate) fn on_update(def: &ResourceDef, old: &Value, new: &Value) -> Vec<Cause> {
    let mut e = Errs(super::object(def, new));
    let (o, n) = (&old["spec"], &new["spec"]);
    let selector_fixed = |e: &mut Errs| {
        if o["selector"] != n["selector"] {
            e.invalid(
                "spec.selector",
                &go_label_selector(&n["selector"]),
                IMMUTABLE,
            );
        }
    };
    match (def.group, def.kind) {
        ("apps", "Deployment") | ("apps", "ReplicaSet") | ("apps", "DaemonSet") => {
            selector_fixed(&mut e)
        }
        ("apps", "StatefulSet") => {
            let strip = |s: &Value| {
                let mut s = s.clone();
                if let Some(m) = s.as_object_mut() {
                    for f in [
                        "replicas",
                        "ordinals",
                        "template",
                        "updateStrategy",
                        "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds",
                    ] {
                        m.remove(f);
                    }
                }
                s
            };
            if strip(o) != strip(n) {
                e.forbidden("spec", STS_UPDATE);
            }
        }
        ("batch", "Job") => {
            selector_fixed(&mut e);
            if o["template"] != n["template"] && n["suspend"] != json!(true) {
                let shown = serde_json::to_string(&n["template"]).unwrap_or_default();
                e.invalid("spec.template", &shown, IMMUTABLE);
            }
            if o["completions"] != n["completions"] && n["completionMode"] != "Indexed" {
                e.invalid("spec.completions", &n["completions"].to_string(), IMMUTABLE);
            }
        }
        ("", "Pod") if !pod_update_allowed(o, n) => e.forbidden("spec", POD_UPDATE),
        ("", "Service") => {
            let ip = |s: &Value| s["clusterIPs"][0].as_str().map(str::to_string);
            let both_need = o["type"] != "ExternalName" && n["type"] != "ExternalName";
            if both_need && ip(o).is_some() && ip(o) != ip(n) {
                let shown: Vec<String> = n["clusterIPs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| go_str(v.as_str().unwrap_or("")))
                    .collect();
                e.invalid(
                    "spec.clusterIPs[0]",
                    &format!("[]string{{{}}}", shown.join(", ")),
                    "may not change once set",
                );
            }
        }
        _ => {}
    }
    e.0
}

/// Whether `new` differs from `old` only where upstream lets a pod's spec change.
fn pod_update_allowed(old: &Value, new: &Value) -> bool {
    let mut o = old.clone();
    let mut n = new.clone();
    // Images may change: compare with the old images in place.
    for list in ["containers", "initContainers"] {
        let olds = old[list].as_array().cloned().unwrap_or_default();
        if let Some(cs) = n.get_mut(list).and_then(Value::as_array_mut) {
            if cs.len() == olds.len() {
                for (c, oc) in cs.iter_mut().zip(&olds) {
                    c["image"] = oc["image"].clone();
                }
            }
        }
    }
    // activeDeadlineSeconds may be set or lowered.
    let (od, nd) = (
        old["activeDeadlineSeconds"].as_i64(),
        new["activeDeadlineSeconds"].as_i64(),
    );
    if nd.is_some_and(|nd| od.is_none_or(|od| nd <= od)) {
        n["activeDeadlineSeconds"] = old["activeDeadlineSeconds"].clone();
    }
    // Tolerations may only be added to.
    let ot = old["tolerations"].as_array().cloned().unwrap_or_default();
    let nt = new["tolerations"].as_array().cloned().unwrap_or_default();
    if ot.iter().all(|t| nt.contains(t)) {
        o["tolerations"] = Value::Null;
        n["tolerations"] = Value::Null;
    }
    // A negative grace period may become 1.
    if old["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|g| g < 0)
        && new["terminationGracePeriodSeconds"] == 1
    {
        n["terminationGracePeriodSeconds"] = old["terminationGracePeriodSeconds"].clone();
    }
    o == n
}
