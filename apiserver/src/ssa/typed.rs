//! Walks over values with their types: the set of fields a value sets
//! (`field_set`, upstream's `ToFieldSet`), what changed between two values (`compare`), the
//! merge of an applied configuration onto a live object (`merge`), and the removal of the
//! fields an applier gave up (`prune`).
//!
//! Invariants (structured-merge-diff's `typed` package):
//! - Atomic values are leaves: replaced whole, owned as one path.
//! - A struct field or map key whose value is null, `{}` or undeclared is a member itself;
//!   a struct field holding fields is not (only its fields are). List items always are.
//! - Two absent-or-empty lists or maps compare as leaves, so `[]` against missing is a change.
//! - Merged associative lists keep the live order, with the applied items placed as the
//!   applied list orders them (upstream's merge of list items).

use serde_json::{Map, Value};

use super::fieldpath::{Pe, Set};
use super::schema::{key_default, Shape, Ty};

/// A value the schema cannot take (a keyed list item without its key): upstream answers it
/// as an internal error.
pub(crate) type TypeError = String;

/// The path element naming `item` of a list keyed by `keys` (a set when empty).
pub(crate) fn item_pe(keys: &[&str], item: &Value) -> Result<Pe, TypeError> {
    if keys.is_empty() {
        if item.is_object() {
            return Err("associative list without keys has an element that's a map type".into());
        }
        return Ok(Pe::Val(item.clone()));
    }
    let mut fields = Vec::new();
    for k in keys {
        match item.get(k).cloned().or_else(|| key_default(k)) {
            Some(v) => fields.push((k.to_string(), v)),
            None => {
                return Err(format!(
                    "associative list with keys has an element that omits key field {k:?} \
                     (and doesn't have default value)"
                ))
            }
        }
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Pe::Key(fields))
}

fn indexed<'v>(keys: &[&str], items: &'v [Value]) -> Result<Vec<(Pe, &'v Value)>, TypeError> {
    items.iter().map(|i| Ok((item_pe(keys, i)?, i))).collect()
}

/// The fields `v` sets.
pub(crate) fn field_set(ty: Ty, v: &Value) -> Result<Set, TypeError> {
    let mut out = Set::default();
    walk_set(ty, v, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn walk_set(ty: Ty, v: &Value, path: &mut Vec<Pe>, out: &mut Set) -> Result<(), TypeError> {
    match (ty.shape(), v) {
        (Shape::List { keys, items }, Value::Array(list)) => {
            for item in list {
                path.push(item_pe(&keys, item)?);
                walk_set(items, item, path, out)?;
                out.insert(path);
                path.pop();
            }
        }
        (Shape::Struct, Value::Object(m)) => {
            for (k, val) in m {
                path.push(Pe::Field(k.clone()));
                walk_set(ty.field_or_untyped(k), val, path, out)?;
                let empty = val.is_null() || val.as_object().is_some_and(Map::is_empty);
                if empty || ty.field(k).is_none() {
                    out.insert(path);
                }
                path.pop();
            }
        }
        (Shape::Map { values }, Value::Object(m)) => {
            for (k, val) in m {
                path.push(Pe::Field(k.clone()));
                walk_set(values, val, path, out)?;
                out.insert(path);
                path.pop();
            }
        }
        (Shape::List { .. } | Shape::Struct | Shape::Map { .. }, Value::Null) => out.insert(path),
        (Shape::Atomic, _) => out.insert(path),
        // A value of the wrong type: owned whole.
        _ => out.insert(path),
    }
    Ok(())
}

/// What changed from `lhs` to `rhs` (upstream's `Comparison`).
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    pub(crate) added: Set,
    pub(crate) modified: Set,
    pub(crate) removed: Set,
}

impl Comparison {
    pub(crate) fn changed(&self) -> Set {
        self.added.union(&self.modified)
    }

    /// Without `ignored` and everything below it.
    pub(crate) fn exclude(self, ignored: &Set) -> Comparison {
        Comparison {
            added: self.added.recursive_difference(ignored),
            modified: self.modified.recursive_difference(ignored),
            removed: self.removed.recursive_difference(ignored),
        }
    }
}

pub(crate) fn compare(ty: Ty, lhs: &Value, rhs: &Value) -> Result<Comparison, TypeError> {
    let mut c = Comparison::default();
    walk_cmp(ty, Some(lhs), Some(rhs), &mut Vec::new(), &mut c)?;
    Ok(c)
}

fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(m)) => m.is_empty(),
        _ => false,
    }
}

fn walk_cmp(
    ty: Ty,
    l: Option<&Value>,
    r: Option<&Value>,
    path: &mut Vec<Pe>,
    c: &mut Comparison,
) -> Result<(), TypeError> {
    let leaf = |c: &mut Comparison| match (l, r) {
        (None, Some(_)) => c.added.insert(path),
        (Some(_), None) => c.removed.insert(path),
        (Some(a), Some(b)) if a != b => c.modified.insert(path),
        _ => {}
    };
    let shape = ty.shape();
    let container = !matches!(shape, Shape::Atomic);
    if !container || (is_empty(l) && is_empty(r)) {
        leaf(c);
        return Ok(());
    }
    match shape {
        Shape::List { keys, items } => {
            let (Some(la), Some(ra)) = (
                l.map_or(Some(&[][..]), |v| v.as_array().map(Vec::as_slice)),
                r.map_or(Some(&[][..]), |v| v.as_array().map(Vec::as_slice)),
            ) else {
                leaf(c);
                return Ok(());
            };
            let (li, ri) = (indexed(&keys, la)?, indexed(&keys, ra)?);
            for (pe, rv) in &ri {
                let lv = li.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
                path.push(pe.clone());
                walk_cmp(items, lv, Some(rv), path, c)?;
                path.pop();
            }
            for (pe, lv) in &li {
                if !ri.iter().any(|(p, _)| p == pe) {
                    path.push(pe.clone());
                    walk_cmp(items, Some(lv), None, path, c)?;
                    path.pop();
                }
            }
        }
        Shape::Struct | Shape::Map { .. } => {
            let empty = Map::new();
            let (Some(lm), Some(rm)) = (
                l.map_or(Some(&empty), Value::as_object),
                r.map_or(Some(&empty), Value::as_object),
            ) else {
                leaf(c);
                return Ok(());
            };
            for k in rm.keys().chain(lm.keys().filter(|k| !rm.contains_key(*k))) {
                let child = match &shape {
                    Shape::Map { values } => *values,
                    _ => ty.field_or_untyped(k),
                };
                path.push(Pe::Field(k.clone()));
                walk_cmp(child, lm.get(k), rm.get(k), path, c)?;
                path.pop();
            }
        }
        Shape::Atomic => {}
    }
    if l.is_none() {
        c.added.insert(path);
    } else if r.is_none() {
        c.removed.insert(path);
    }
    Ok(())
}

/// `rhs` (an applied configuration) merged onto `lhs`.
pub(crate) fn merge(ty: Ty, lhs: Option<&Value>, rhs: &Value) -> Result<Value, TypeError> {
    let Some(lhs) = lhs else {
        return Ok(rhs.clone());
    };
    match (ty.shape(), lhs, rhs) {
        (Shape::List { keys, items }, Value::Array(la), Value::Array(ra)) => {
            merge_list(&keys, items, la, ra)
        }
        (shape @ (Shape::Struct | Shape::Map { .. }), Value::Object(lm), Value::Object(rm)) => {
            let mut out = lm.clone();
            for (k, rv) in rm {
                if rv.is_null() {
                    out.remove(k);
                    continue;
                }
                let child = match &shape {
                    Shape::Map { values } => *values,
                    _ => ty.field_or_untyped(k),
                };
                out.insert(k.clone(), merge(child, lm.get(k), rv)?);
            }
            Ok(Value::Object(out))
        }
        _ => Ok(rhs.clone()),
    }
}

/// Upstream's list merge: walk both lists, keeping live-only items where they are and the
/// items both share in the applied list's order.
fn merge_list(keys: &[&str], items: Ty, la: &[Value], ra: &[Value]) -> Result<Value, TypeError> {
    let (l, r) = (indexed(keys, la)?, indexed(keys, ra)?);
    let in_r = |pe: &Pe| r.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
    let in_l = |pe: &Pe| l.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
    let mut shared = r
        .iter()
        .filter(|(pe, _)| in_l(pe).is_some())
        .map(|(pe, _)| pe);
    let mut next_shared = shared.next();
    let mut merged: Vec<&Pe> = Vec::new();
    let mut out = Vec::new();
    let (mut li, mut ri) = (0, 0);
    while li < l.len() || ri < r.len() {
        if li < l.len() && ri < r.len() {
            let pe = &l[li].0;
            if *pe == r[ri].0 {
                merged.push(pe);
                out.push(merge(items, in_l(pe), r[ri].1)?);
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if in_r(pe).is_some() && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < l.len() {
            let pe = &l[li].0;
            if in_r(pe).is_none() {
                out.push(l[li].1.clone());
                li += 1;
                continue;
            } else if merged.contains(&pe) {
                li += 1;
                continue;
            }
        }
        if ri < r.len() {
            let pe = &r[ri].0;
            merged.push(pe);
            out.push(merge(items, in_l(pe), r[ri].1)?);
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.next();
            }
        }
    }
    Ok(Value::Array(out))
}

/// Removes from `v` the fields `last` (the applier's previous set) names that nobody
/// (`managed`: every manager's set, the applier's new one included) owns any more.
/// A struct field counts as owned by a set holding anything below it.
pub(crate) fn prune(ty: Ty, v: &mut Value, last: &Set, managed: &Set) -> Result<(), TypeError> {
    let none = Set::default();
    let owned = |s: &Set, pe: &Pe, named: bool| {
        s.members.contains(pe) || (named && s.child(pe).is_some_and(|c| !c.is_empty()))
    };
    match (ty.shape(), v) {
        (Shape::List { keys, items }, Value::Array(list)) => {
            let mut kept = Vec::new();
            for mut item in std::mem::take(list) {
                let pe = item_pe(&keys, &item)?;
                if owned(last, &pe, false) && !owned(managed, &pe, false) {
                    continue;
                }
                if let Some(lc) = last.child(&pe) {
                    prune(items, &mut item, lc, managed.child(&pe).unwrap_or(&none))?;
                }
                kept.push(item);
            }
            *list = kept;
        }
        (shape @ (Shape::Struct | Shape::Map { .. }), Value::Object(m)) => {
            let named = matches!(shape, Shape::Struct);
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let pe = Pe::Field(k.clone());
                if owned(last, &pe, named) && !owned(managed, &pe, named) {
                    m.remove(&k);
                    continue;
                }
                if let (Some(lc), Some(child)) = (last.child(&pe), m.get_mut(&k)) {
                    let cty = match &shape {
                        Shape::Map { values } => *values,
                        _ => ty.field_or_untyped(&k),
                    };
                    prune(cty, child, lc, managed.child(&pe).unwrap_or(&none))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}
