//! Label and field selectors, as list and watch filter objects.
//!
//! Label selectors take upstream's grammar (`labels.Parse`): `k=v`, `k==v`, `k!=v`,
//! `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not exist), joined by commas.
//! Field selectors (`fields.ParseSelector`): `f=v`, `f==v`, `f!=v` joined by commas, over the
//! fields each kind supports (upstream's field label conversion funcs: `metadata.name` and
//! `metadata.namespace` by default, plus the pod, node, namespace, secret, event,
//! replicationcontroller and job fields); any other field is a 400 with the message of the
//! kind's conversion func (`"<f>" is not a known field selector: only "metadata.name",
//! "metadata.namespace"` by default, `field label not supported: <f>` for core kinds with
//! their own).

use serde_json::Value;

use crate::error::{Error, Result};
use crate::resources::ResourceDef;

#[derive(Debug, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Default)]
pub(crate) struct LabelSelector(Vec<Req>);

/// Splits on commas that are not inside parentheses.
/// A `metav1.LabelSelector` as upstream prints it (`LabelSelectorAsSelector(sel).String()`):
/// requirements sorted by key, set values sorted and unique — `k=v`, `k in (a,b)`,
/// `k notin (a,b)`, `k`, `!k`; "" for an absent or empty selector. An unknown operator is
/// the `Err` (its name).
pub(crate) fn label_selector_string(sel: &Value) -> std::result::Result<String, String> {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default().to_string();
        let mut values: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        values.sort_unstable();
        values.dedup();
        let text = match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            op => return Err(op.to_string()),
        };
        reqs.push((key, text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(","))
}

fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl LabelSelector {
    pub(crate) fn parse(s: Option<&str>) -> Result<LabelSelector> {
        let s = s.unwrap_or("").trim();
        if s.is_empty() {
            return Ok(LabelSelector::default());
        }
        let bad = || {
            Error::BadRequest(format!(
                "unable to parse requirement: invalid label selector: {s:?}"
            ))
        };
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(bad());
            }
            let set = |rest: &str| -> Option<Vec<String>> {
                let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
                Some(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let req = if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(rest).ok_or_else(bad)?)
            } else if let Some((k, rest)) = p.split_once(" in ") {
                Req::In(k.trim().into(), set(rest).ok_or_else(bad)?)
            } else if p.contains(char::is_whitespace) || p.contains('(') {
                return Err(bad());
            } else {
                Req::Exists(p.to_string())
            };
            let key = match &req {
                Req::Eq(k, _) | Req::NotEq(k, _) | Req::In(k, _) | Req::NotIn(k, _) => k,
                Req::Exists(k) | Req::NotExists(k) => k,
            };
            if key.is_empty() {
                return Err(bad());
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = obj.get("metadata").and_then(|m| m.get("labels"));
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed field selector: (field, value, equal?) terms, all of which must hold.
#[derive(Debug, Default)]
pub(crate) struct FieldSelector(Vec<(String, String, bool)>);

/// How a kind answers an unsupported field (upstream's field label conversion funcs).
#[derive(Clone, Copy)]
enum Unsupported {
    /// `runtime.DefaultMetaV1FieldSelectorConversion`, for kinds without their own func.
    Default,
    /// core/v1's funcs: `field label not supported: <f>`.
    Core,
    /// batch/v1 Job's func.
    Job,
}

impl Unsupported {
    fn error(self, f: &str) -> Error {
        Error::BadRequest(match self {
            Unsupported::Default => format!(
                "{f:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
            ),
            Unsupported::Core => format!("field label not supported: {f}"),
            Unsupported::Job => format!("field label {f:?} not supported for batchv1.Job"),
        })
    }
}

/// The fields `def` can be selected on (beyond the defaults) and how it refuses others.
/// `metadata.name` is everywhere; `metadata.namespace` too, except on Nodes and Namespaces
/// whose conversion funcs leave it out.
fn selectable(def: &ResourceDef) -> (&'static [&'static str], Unsupported) {
    const META: &[&str] = &["metadata.name", "metadata.namespace"];
    match (def.group, def.resource) {
        ("", "pods") => (
            &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
                "spec.host",
            ],
            Unsupported::Core,
        ),
        ("", "nodes") => (&["metadata.name", "spec.unschedulable"], Unsupported::Core),
        ("", "namespaces") => (&["metadata.name", "status.phase"], Unsupported::Core),
        ("", "secrets") => (
            &["metadata.name", "metadata.namespace", "type"],
            Unsupported::Core,
        ),
        ("", "replicationcontrollers") => (
            &["metadata.name", "metadata.namespace", "status.replicas"],
            Unsupported::Core,
        ),
        ("", "events") => (
            &[
                "metadata.name",
                "metadata.namespace",
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            Unsupported::Core,
        ),
        ("batch", "jobs") => (
            &["metadata.name", "metadata.namespace", "status.successful"],
            Unsupported::Job,
        ),
        _ => (META, Unsupported::Default),
    }
}

/// The value of selectable field `field` of `obj` (upstream's `ToSelectableFields`); a
/// field the kind's field set lacks reads as "".
fn field_value(obj: &Value, field: &str) -> String {
    let text = |ptr: &str| match obj.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let non_empty = |a: String, b: &str| if a.is_empty() { text(b) } else { a };
    match field {
        "spec.host" => text("/spec/nodeName"),
        "status.podIP" => obj
            .pointer("/status/podIPs/0/ip")
            .and_then(Value::as_str)
            .map_or_else(|| text("/status/podIP"), str::to_string),
        "status.podIPs" => String::new(),
        "spec.hostNetwork" | "spec.unschedulable" => {
            let b = obj.pointer(&format!("/{}", field.replace('.', "/")));
            (b == Some(&Value::Bool(true))).to_string()
        }
        "status.replicas" | "status.successful" => {
            let p = if field == "status.successful" {
                "/status/succeeded"
            } else {
                "/status/replicas"
            };
            obj.pointer(p)
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .to_string()
        }
        "source" => non_empty(text("/source/component"), "/reportingComponent"),
        "reportingComponent" => text("/reportingComponent"),
        f => text(&format!("/{}", f.replace('.', "/"))),
    }
}

impl FieldSelector {
    /// Parses `s` for resource `def`, rejecting fields the kind does not support.
    pub(crate) fn parse(def: &ResourceDef, s: Option<&str>) -> Result<FieldSelector> {
        let s = s.unwrap_or("").trim();
        if s.is_empty() {
            return Ok(FieldSelector::default());
        }
        let mut terms = Vec::new();
        for part in s.split(',') {
            let (f, v, eq) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, true)
            } else {
                return Err(Error::BadRequest(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let f = f.trim();
            let (fields, unsupported) = selectable(def);
            if !fields.contains(&f) {
                return Err(unsupported.error(f));
            }
            terms.push((f.to_string(), v.trim().to_string(), eq));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether `obj` (of the kind the selector was parsed for) passes every term.
    pub(crate) fn matches(&self, _def: &ResourceDef, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(f, v, eq)| (field_value(obj, f) == *v) == *eq)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "p1", "namespace": "ns", "labels": labels}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selectors_equality_and_sets() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let m = |s: &str| LabelSelector::parse(Some(s)).unwrap().matches(&o);
        assert!(m("app=web") && m("app==web") && m("app!=db") && m("app=web,tier=front"));
        assert!(!m("app=db") && !m("app=web,tier=back"));
        assert!(m("app in (web, db)") && !m("app notin (web)") && m("env notin (prod)"));
        assert!(m("app") && !m("!app") && m("!env") && !m("env"));
        assert!(m("tier in (front),app"));
        assert!(LabelSelector::parse(Some("")).unwrap().is_empty());
        for bad in ["app in web", "a b", "=x", ",", "x in (a"] {
            assert!(LabelSelector::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors_per_kind() {
        let pods = find("", "v1", "pods").unwrap();
        let cm = find("", "v1", "configmaps").unwrap();
        let o = obj(json!({}));
        let m = |d, s: &str| FieldSelector::parse(d, Some(s)).unwrap().matches(d, &o);
        assert!(m(pods, "metadata.name=p1") && m(pods, "metadata.name==p1"));
        assert!(
            !m(pods, "metadata.name!=p1") && m(pods, "status.phase=Running,metadata.namespace=ns")
        );
        assert!(m(pods, "spec.nodeName="));
        assert!(m(cm, "metadata.name=p1"));
        let err = FieldSelector::parse(cm, Some("status.phase=Running")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#""status.phase" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        let err = FieldSelector::parse(pods, Some("spec.nodename=x")).unwrap_err();
        assert_eq!(err.to_string(), "field label not supported: spec.nodename");
        let nodes = find("", "v1", "nodes").unwrap();
        assert!(FieldSelector::parse(nodes, Some("metadata.namespace=x")).is_err());
        let n = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(
            FieldSelector::parse(nodes, Some("spec.unschedulable=false"))
                .unwrap()
                .matches(nodes, &n)
        );
        // Cluster-scoped kinds without their own func take metadata.namespace (as "").
        let pv = find("", "v1", "persistentvolumes").unwrap();
        assert!(FieldSelector::parse(pv, Some("metadata.namespace="))
            .unwrap()
            .matches(pv, &n));
        let jobs = find("batch", "v1", "jobs").unwrap();
        let err = FieldSelector::parse(jobs, Some("status.phase=x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"field label "status.phase" not supported for batchv1.Job"#
        );
        let events = find("", "v1", "events").unwrap();
        let e = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p1"},
            "source": {"component": "kubelet"}, "type": "Normal"});
        let m = |s: &str| {
            FieldSelector::parse(events, Some(s))
                .unwrap()
                .matches(events, &e)
        };
        assert!(m(
            "involvedObject.kind=Pod,involvedObject.name=p1,source=kubelet,type=Normal"
        ));
        assert!(!m("source=scheduler") && m("reason="));
    }
}
