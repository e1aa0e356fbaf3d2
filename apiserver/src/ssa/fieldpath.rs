//! Field paths and sets of them, and their `FieldsV1` encoding (structured-merge-diff's
//! `fieldpath` package, which `metadata.managedFields` stores).
//!
//! A path is a list of elements: a struct field or map key (`f:<name>`), an associative list
//! item named by its key fields (`k:{"containerPort":80,"protocol":"TCP"}`), a set item named
//! by its value (`v:"x"`), or a list index (`i:3`). A [`Set`] is a tree: at each node the
//! elements that are members (owned themselves) and the children (something below them is
//! owned). A node that is both encodes its children plus `".": {}`.
//!
//! Invariants:
//! - Elements order as upstream's `PathElement.Compare`: fields, then keys, then values, then
//!   indexes; values in `value.Compare` order (numbers, strings, booleans, lists, maps, null).
//! - A set never holds an empty child: every operation prunes them, so two sets with the same
//!   members compare equal and encode identically.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pe {
    Field(String),
    /// Key fields sorted by name.
    Key(Vec<(String, Value)>),
    Val(Value),
    Index(usize),
}

pub(crate) type Path = Vec<Pe>;

fn rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Array(_) => 3,
        Value::Object(_) => 4,
        Value::Null => 5,
    }
}

/// Upstream's `value.Compare`.
pub(crate) fn value_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => {
                let (f, g) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                f.partial_cmp(&g).unwrap_or(Ordering::Equal)
            }
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let c = value_cmp(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            for ((k, p), (l, q)) in x.iter().zip(y) {
                let c = k.cmp(l).then_with(|| value_cmp(p, q));
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

impl Pe {
    fn kind(&self) -> u8 {
        match self {
            Pe::Field(_) => 0,
            Pe::Key(_) => 1,
            Pe::Val(_) => 2,
            Pe::Index(_) => 3,
        }
    }

    /// `FieldsV1` key: `f:name`, `k:{…}`, `v:…`, `i:n`.
    pub(crate) fn encode(&self) -> String {
        match self {
            Pe::Field(n) => format!("f:{n}"),
            Pe::Key(fields) => {
                let m: Map<String, Value> = fields.iter().cloned().collect();
                format!("k:{}", Value::Object(m))
            }
            Pe::Val(v) => format!("v:{v}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Result<Pe, String> {
        let bad = || format!("invalid path element {s:?}");
        let (tag, rest) = s.split_once(':').ok_or_else(bad)?;
        Ok(match tag {
            "f" => Pe::Field(rest.to_string()),
            "k" => match serde_json::from_str(rest).map_err(|_| bad())? {
                Value::Object(m) => Pe::Key(m.into_iter().collect()),
                _ => return Err(bad()),
            },
            "v" => Pe::Val(serde_json::from_str(rest).map_err(|_| bad())?),
            "i" => Pe::Index(rest.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        })
    }

    /// As upstream prints it in conflict messages: `.name`, `[k="v",n=1]`, `[=v]`, `[3]`.
    fn display(&self) -> String {
        match self {
            Pe::Field(n) => format!(".{n}"),
            Pe::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", go_string(v)))
                    .collect();
                format!("[{}]", parts.join(","))
            }
            Pe::Val(v) => format!("[={}]", go_string(v)),
            Pe::Index(i) => format!("[{i}]"),
        }
    }
}

/// Upstream's `value.ToString`: strings quoted, the rest as JSON-ish text.
fn go_string(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl Ord for Pe {
    fn cmp(&self, o: &Pe) -> Ordering {
        match (self, o) {
            (Pe::Field(a), Pe::Field(b)) => a.cmp(b),
            (Pe::Key(a), Pe::Key(b)) => {
                for ((k, x), (l, y)) in a.iter().zip(b) {
                    let c = k.cmp(l).then_with(|| value_cmp(x, y));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (Pe::Val(a), Pe::Val(b)) => value_cmp(a, b),
            (Pe::Index(a), Pe::Index(b)) => a.cmp(b),
            _ => self.kind().cmp(&o.kind()),
        }
    }
}

impl PartialOrd for Pe {
    fn partial_cmp(&self, o: &Pe) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// `.spec.template.spec.containers[name="app"].image`.
pub(crate) fn display(p: &[Pe]) -> String {
    p.iter().map(Pe::display).collect()
}

/// A set of paths, as a tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Set {
    pub(crate) members: BTreeSet<Pe>,
    pub(crate) children: BTreeMap<Pe, Set>,
}

impl Set {
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    pub(crate) fn insert(&mut self, path: &[Pe]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    #[cfg(test)]
    pub(crate) fn has(&self, path: &[Pe]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    pub(crate) fn child(&self, pe: &Pe) -> Option<&Set> {
        self.children.get(pe)
    }

    pub(crate) fn union(&self, o: &Set) -> Set {
        let mut out = self.clone();
        out.members.extend(o.members.iter().cloned());
        for (pe, c) in &o.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// Members and children of `self` not in `o` (a member of `o` does not take away the
    /// children below it: see [`Set::recursive_difference`]).
    pub(crate) fn difference(&self, o: &Set) -> Set {
        let members = self.members.difference(&o.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            let d = match o.children.get(pe) {
                Some(oc) => c.difference(oc),
                None => c.clone(),
            };
            if !d.is_empty() {
                children.insert(pe.clone(), d);
            }
        }
        Set { members, children }
    }

    /// `self` without `o`'s members and everything below them.
    pub(crate) fn recursive_difference(&self, o: &Set) -> Set {
        let members = self.members.difference(&o.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            if o.members.contains(pe) {
                continue;
            }
            let d = match o.children.get(pe) {
                Some(oc) => c.recursive_difference(oc),
                None => c.clone(),
            };
            if !d.is_empty() {
                children.insert(pe.clone(), d);
            }
        }
        Set { members, children }
    }

    pub(crate) fn intersection(&self, o: &Set) -> Set {
        let members = self.members.intersection(&o.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            if let Some(oc) = o.children.get(pe) {
                let i = c.intersection(oc);
                if !i.is_empty() {
                    children.insert(pe.clone(), i);
                }
            }
        }
        Set { members, children }
    }

    /// Every member path, as upstream's `Iterate`: a node's members, then its children.
    pub(crate) fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(p);
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` object.
    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        for pe in &self.members {
            if !self.children.contains_key(pe) {
                m.insert(pe.encode(), Value::Object(Map::new()));
            }
        }
        for (pe, c) in &self.children {
            let mut inner = c.to_fields_v1();
            if self.members.contains(pe) {
                if let Value::Object(o) = &mut inner {
                    o.insert(".".into(), Value::Object(Map::new()));
                }
            }
            m.insert(pe.encode(), inner);
        }
        Value::Object(m)
    }

    pub(crate) fn from_fields_v1(v: &Value) -> Result<Set, String> {
        let Value::Object(m) = v else {
            return Err("fieldsV1 must be an object".into());
        };
        let mut s = Set::default();
        for (k, inner) in m {
            if k == "." {
                continue;
            }
            let pe = Pe::decode(k)?;
            let child = Set::from_fields_v1(inner)?;
            let is_member = child.is_empty() || inner.get(".").is_some();
            if is_member {
                s.members.insert(pe.clone());
            }
            if !child.is_empty() {
                s.children.insert(pe, child);
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(n: &str) -> Pe {
        Pe::Field(n.into())
    }

    #[test]
    fn encoding_round_trips_and_marks_owned_parents() {
        let port = Pe::Key(vec![
            ("containerPort".into(), json!(80)),
            ("protocol".into(), json!("TCP")),
        ]);
        let mut s = Set::default();
        s.insert(&[f("spec"), f("replicas")]);
        s.insert(&[f("spec"), f("ports"), port.clone()]);
        s.insert(&[f("spec"), f("ports"), port.clone(), f("containerPort")]);
        s.insert(&[f("metadata"), f("finalizers"), Pe::Val(json!("x"))]);
        let v = s.to_fields_v1();
        assert_eq!(
            v,
            json!({"f:metadata": {"f:finalizers": {"v:\"x\"": {}}},
                   "f:spec": {"f:replicas": {},
                              "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":
                                          {".": {}, "f:containerPort": {}}}}})
        );
        assert_eq!(Set::from_fields_v1(&v).unwrap(), s);
        assert_eq!(
            display(&[f("spec"), f("ports"), port, f("containerPort")]),
            ".spec.ports[containerPort=80,protocol=\"TCP\"].containerPort"
        );
    }

    #[test]
    fn set_algebra() {
        let mut a = Set::default();
        a.insert(&[f("a"), f("b")]);
        a.insert(&[f("a"), f("c")]);
        a.insert(&[f("d")]);
        let mut b = Set::default();
        b.insert(&[f("a"), f("b")]);
        b.insert(&[f("a")]);
        let d = a.difference(&b);
        assert!(d.has(&[f("a"), f("c")]) && d.has(&[f("d")]) && !d.has(&[f("a"), f("b")]));
        let r = a.recursive_difference(&b);
        assert_eq!(r.paths(), vec![vec![f("d")]]);
        assert_eq!(a.intersection(&b).paths(), vec![vec![f("a"), f("b")]]);
        assert_eq!(a.union(&b).paths().len(), 4);
        assert!(a.difference(&a).is_empty());
        assert!(Pe::Field("z".into()) < Pe::Key(vec![]));
        assert!(Pe::Val(json!(9)) < Pe::Val(json!(10)) && Pe::Val(json!(10)) < Pe::Val(json!("1")));
    }
}
