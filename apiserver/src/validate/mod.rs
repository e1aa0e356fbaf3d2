//! Per-kind validation of objects, as kube-apiserver 1.32 validates them after defaulting
//! (upstream `pkg/apis/*/validation`, `apimachinery/pkg/api/validation`): the common failures
//! of metadata, pods and pod templates, the workload controllers and Services, and the
//! fields an update may not change.
//!
//! Invariants:
//! - Each problem is one [`Cause`] with upstream's reason, field path and message, collected
//!   in upstream's order; the caller turns a non-empty list into one 422 Invalid, whose
//!   message is `<Kind> "<name>" is invalid: <path>: <detail>` (several in `[…]`).
//! - Values inside messages are printed as Go prints them there: strings quoted, numbers
//!   bare, label maps as `map[string]string{"k":"v"}`, label selectors as
//!   `v1.LabelSelector{…}`. Where upstream prints a large Go struct (a pod template) we
//!   print its JSON instead.
//! - Validation never changes the object.
//!
//! `crate::validation` is a different thing: unknown and duplicate fields (`fieldValidation`).

mod meta;
mod pod;
mod update;
mod workloads;

use serde_json::Value;

use crate::error::Cause;
use crate::resources::ResourceDef;

pub(crate) use update::on_update;

/// Field errors in the order found.
#[derive(Default)]
pub(crate) struct Errs(pub(crate) Vec<Cause>);

impl Errs {
    fn push(&mut self, reason: &'static str, field: &str, message: String) {
        self.0.push(Cause {
            reason,
            field: field.to_string(),
            message,
        });
    }

    fn required(&mut self, field: &str, detail: &str) {
        self.0.push(Cause::required(field, detail));
    }

    /// `Invalid value: <shown>: <detail>`, `shown` already in Go's notation.
    fn invalid(&mut self, field: &str, shown: &str, detail: &str) {
        self.push(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {shown}: {detail}"),
        );
    }

    fn forbidden(&mut self, field: &str, detail: &str) {
        self.0.push(Cause::forbidden(field, detail));
    }

    fn duplicate(&mut self, field: &str, shown: &str) {
        self.push(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {shown}"),
        );
    }

    fn not_supported(&mut self, field: &str, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| go_str(s)).collect();
        self.push(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: {}: supported values: {}",
                go_str(value),
                list.join(", ")
            ),
        );
    }

    /// A field that must be one of `supported`: Required when empty, NotSupported otherwise.
    fn one_of(&mut self, field: &str, value: &Value, supported: &[&str]) {
        match value.as_str().unwrap_or("") {
            "" => self.required(field, ""),
            v if supported.contains(&v) => {}
            v => self.not_supported(field, v, supported),
        }
    }

    /// `ValidateNonnegativeField` on an optional integer.
    fn nonnegative(&mut self, field: &str, value: &Value) {
        if let Some(n) = value.as_i64().filter(|n| *n < 0) {
            self.invalid(field, &n.to_string(), "must be greater than or equal to 0");
        }
    }
}

/// Go's `%q` of a string.
pub(crate) fn go_str(s: &str) -> String {
    crate::validation::go_quote(s)
}

/// Go's `%#v` of a `map[string]string` (keys sorted, as Go prints maps).
pub(crate) fn go_string_map(v: &Value) -> String {
    match v.as_object() {
        None => "map[string]string(nil)".into(),
        Some(m) => {
            let mut pairs: Vec<(&String, &Value)> = m.iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}:{}", go_str(k), go_str(v.as_str().unwrap_or(""))))
                .collect();
            format!("map[string]string{{{}}}", body.join(", "))
        }
    }
}

/// Go's `%#v` of a `metav1.LabelSelector` (what upstream shows for selector errors).
pub(crate) fn go_label_selector(v: &Value) -> String {
    if v.is_null() {
        return "null".into();
    }
    let labels = go_string_map(&v["matchLabels"]);
    let exprs = match v["matchExpressions"].as_array() {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|e| {
                    let values = match e["values"].as_array() {
                        None => "[]string(nil)".to_string(),
                        Some(vs) => format!(
                            "[]string{{{}}}",
                            vs.iter()
                                .map(|x| go_str(x.as_str().unwrap_or("")))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                        go_str(e["key"].as_str().unwrap_or("")),
                        go_str(e["operator"].as_str().unwrap_or(""))
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

/// Everything wrong with `obj` (defaulted, ready to store) as a new or updated `def`.
pub(crate) fn object(def: &ResourceDef, obj: &Value) -> Vec<Cause> {
    let mut e = Errs::default();
    meta::object_meta(def, obj, &mut e);
    let spec = &obj["spec"];
    match (def.group, def.kind) {
        ("", "Pod") => pod::spec(spec, "spec", &mut e),
        ("", "ReplicationController") => workloads::replication_controller(spec, &mut e),
        ("", "Service") => workloads::service(spec, &mut e),
        ("apps", "Deployment") => workloads::replica_set(spec, "deployment", &mut e),
        ("apps", "ReplicaSet") => workloads::replica_set(spec, "deployment", &mut e),
        ("apps", "StatefulSet") => workloads::stateful_set(spec, &mut e),
        ("apps", "DaemonSet") => workloads::daemon_set(spec, &mut e),
        ("batch", "Job") => workloads::job(spec, "spec", true, &mut e),
        ("batch", "CronJob") => workloads::cron_job(spec, &mut e),
        _ => {}
    }
    e.0
}

#[cfg(test)]
mod tests;
