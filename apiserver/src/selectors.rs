//! Label and field selectors, as list and watch filter objects.
//!
//! Label selectors take upstream's grammar (`labels.Parse`): `k=v`, `k==v`, `k!=v`,
//! `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not exist), joined by commas.
//! Field selectors (`fields.ParseSelector`): `f=v`, `f==v`, `f!=v` joined by commas, over the
//! fields each kind supports (`metadata.name` and `metadata.namespace` everywhere); any other
//! field is a 400 `field label not supported: <f>`, as upstream answers.

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

/// The value of a selectable field of `obj`; None when the kind does not support the field.
fn field_value(def: &ResourceDef, obj: &Value, field: &str) -> Option<String> {
    let at = |path: &[&str]| {
        let mut cur = obj;
        for p in path {
            match cur.get(*p) {
                Some(v) => cur = v,
                None => return Some(String::new()),
            }
        }
        Some(match cur {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })
    };
    match (def.resource, field) {
        (_, "metadata.name") => at(&["metadata", "name"]),
        (_, "metadata.namespace") if def.namespaced => at(&["metadata", "namespace"]),
        ("pods", f) => match f {
            "spec.nodeName"
            | "spec.restartPolicy"
            | "spec.schedulerName"
            | "spec.serviceAccountName"
            | "spec.hostNetwork"
            | "status.phase"
            | "status.podIP"
            | "status.nominatedNodeName" => {
                let path: Vec<&str> = f.split('.').collect();
                at(&path)
            }
            _ => None,
        },
        ("nodes", "spec.unschedulable") => {
            at(&["spec", "unschedulable"]).map(|v| if v.is_empty() { "false".into() } else { v })
        }
        ("secrets", "type") => at(&["type"]),
        ("namespaces", "status.phase") => at(&["status", "phase"]),
        ("events", f)
            if f.starts_with("involvedObject.")
                || ["reason", "source", "type", "reportingComponent"].contains(&f) =>
        {
            let path: Vec<&str> = f.split('.').collect();
            at(&path)
        }
        _ => None,
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
            if field_value(def, &serde_json::json!({}), f).is_none() {
                return Err(Error::BadRequest(format!("field label not supported: {f}")));
            }
            terms.push((f.to_string(), v.trim().to_string(), eq));
        }
        Ok(FieldSelector(terms))
    }

    pub(crate) fn matches(&self, def: &ResourceDef, obj: &Value) -> bool {
        self.0.iter().all(|(f, v, eq)| {
            let got = field_value(def, obj, f).unwrap_or_default();
            (got == *v) == *eq
        })
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
        assert_eq!(err.to_string(), "field label not supported: status.phase");
        let ns = find("", "v1", "nodes").unwrap();
        assert!(FieldSelector::parse(ns, Some("metadata.namespace=x")).is_err());
    }
}
