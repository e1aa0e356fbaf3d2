//! The merge itself: upstream's `mergeMap` and `mergeSlice`, key by key.
//!
//! A map applies, in this order: its `$patch` directive (the whole map), `$retainKeys`
//! (clears the original's other keys), every `$setElementOrder/<list>` (merges that list
//! and orders it), then each remaining key in key order: `$deleteFromPrimitiveList/<list>`
//! removes values, `null` deletes, a key the original lacks is taken as is, values of
//! different JSON types are replaced, maps merge unless the field's strategy is `replace`,
//! lists merge when it is `merge` (by the merge key, or as a set of scalars) and are
//! replaced otherwise, scalars are replaced.
//!
//! A merged list keeps the elements the patch names in the patch's order and interleaves the
//! others (server-only elements) by their original positions; an element the patch adds
//! goes before the server-only elements that come after it in neither list. This is
//! upstream's order, including its surprise: a container a patch adds without
//! `$setElementOrder` lands first.

use serde_json::{Map, Value};

use super::schema::{Field, Schema, Strategy};
use super::{go, go_type, SmpError, LIST, MAP};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_PREFIX: &str = "$deleteFromPrimitiveList";
const ORDER_PREFIX: &str = "$setElementOrder";

type Result<T> = std::result::Result<T, SmpError>;

/// Merges `patch` into `original` (see the module doc).
pub(super) fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Schema,
) -> Result<Map<String, Value>> {
    if let Some(d) = patch.get(DIRECTIVE) {
        return match d.as_str() {
            Some("replace") => {
                patch.remove(DIRECTIVE);
                Ok(patch)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(bad_patch_type(d, &patch)),
        };
    }
    retain_keys(&mut original, &mut patch)?;
    set_element_order(&mut original, &mut patch, schema)?;
    for (k, v) in patch {
        if k.starts_with(DELETE_PREFIX) {
            let key = extract_key(&k, DELETE_PREFIX)?;
            delete_from_list(&mut original, key, v)?;
            continue;
        }
        if v.is_null() {
            original.remove(&k);
            continue;
        }
        let Some(cur) = original.get_mut(&k) else {
            original.insert(k, without_nulls(v));
            continue;
        };
        if go_type(cur) != go_type(&v) {
            *cur = without_nulls(v);
            continue;
        }
        let field = schema.field(&k);
        *cur = match (cur.take(), v) {
            (Value::Object(o), Value::Object(p)) if field.strategy != Strategy::Replace => {
                Value::Object(merge_map(o, p, field.schema)?)
            }
            (Value::Array(o), Value::Array(p)) => Value::Array(merge_list(o, p, &field)?),
            (_, v) => v,
        };
    }
    Ok(original)
}

/// A value the original did not have, as upstream's typed decoding would store it: a
/// `null` inside it is no value at all.
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k, without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// The list key after a `$deleteFromPrimitiveList/` or `$setElementOrder/` prefix.
fn extract_key<'k>(s: &'k str, prefix: &str) -> Result<&'k str> {
    match s.split_once('/') {
        Some((p, key)) if p == prefix => Ok(key),
        _ if prefix == DELETE_PREFIX => Err(SmpError::BadRequest(super::BAD_PRIMITIVE_LIST.into())),
        _ => Err(SmpError::BadRequest(super::BAD_ORDER_LIST.into())),
    }
}

/// `$deleteFromPrimitiveList/<key>`: removes the listed values wherever the list's strategy,
/// and never creates the list (upstream since 1.23 and 1.25).
fn delete_from_list(original: &mut Map<String, Value>, key: &str, v: Value) -> Result<()> {
    let del = match v {
        Value::Array(a) => a,
        Value::Null => return Ok(()),
        _ => return Err(SmpError::BadRequest(super::BAD_PRIMITIVE_LIST.into())),
    };
    let Some(Value::Array(items)) = original.get_mut(key) else {
        return Ok(());
    };
    if items.is_empty() && del.is_empty() {
        return Ok(());
    }
    element_type(&[items, &del])?;
    items.retain(|x| !del.contains(x));
    Ok(())
}

/// `$retainKeys`: the original keeps only the listed keys; the patch may set no others.
fn retain_keys(original: &mut Map<String, Value>, patch: &mut Map<String, Value>) -> Result<()> {
    let Some(list) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let bad = || SmpError::BadRequest(super::BAD_RETAIN_KEYS.into());
    let list = list.as_array().ok_or_else(bad)?;
    let keep = |k: &str| list.iter().any(|x| x.as_str() == Some(k));
    for (k, v) in patch.iter() {
        let directive = k.starts_with(DELETE_PREFIX) || k.starts_with(ORDER_PREFIX);
        if !v.is_null() && !directive && !keep(k) {
            return Err(bad());
        }
    }
    original.retain(|k, _| keep(k));
    Ok(())
}

/// Every `$setElementOrder/<key>` of `patch`: merges the list `<key>` of both sides and
/// orders it by the directive, then by the patch, then by the original.
fn set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Schema,
) -> Result<()> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(ORDER_PREFIX))
        .cloned()
        .collect();
    for key in keys {
        let Some(order) = patch.remove(&key) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(bad_arg_type(LIST, &order));
        };
        let list_key = extract_key(&key, ORDER_PREFIX)?.to_string();
        // An empty original list counts as none: upstream's typed original omits it.
        let orig = match original.get(&list_key) {
            Some(Value::Array(a)) if !a.is_empty() => Some(a.clone()),
            None | Some(Value::Array(_)) => None,
            Some(other) => return Err(bad_arg_type(LIST, other)),
        };
        let from_patch = match patch.get(&list_key) {
            Some(Value::Array(a)) => Some(a.clone()),
            None => None,
            Some(other) => return Err(bad_arg_type(LIST, other)),
        };
        let field = schema.field(&list_key);
        validate_order(
            from_patch.as_deref().unwrap_or_default(),
            &order,
            field.merge_key,
        )?;
        let merged = match (&orig, &from_patch) {
            (Some(o), None) => o.clone(),
            (None, Some(p)) => p.clone(),
            (Some(o), Some(p)) => merge_list(o.clone(), p.clone(), &field)?,
            (None, None) => continue,
        };
        let orig = orig.unwrap_or_default();
        let kind = element_type(&[&orig, from_patch.as_deref().unwrap_or_default()])?;
        let (named, server_only) = partition(merged, &order, field.merge_key)?;
        let both = normalize_order(named, server_only, &order, &orig, field.merge_key, kind)?;
        original.insert(list_key.clone(), Value::Array(both));
        patch.remove(&list_key);
    }
    Ok(())
}

/// Upstream's check that the patch list names its elements in the directive's order and
/// names none the directive lacks (elements with a `$patch` are not counted).
fn validate_order(list: &[Value], order: &[Value], merge_key: Option<&str>) -> Result<()> {
    if list.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut kept: Vec<&Value> = list.iter().collect();
    if merge_key.is_some() {
        if let Some(v) = list.iter().find(|v| !v.is_object()) {
            return Err(bad_arg_type(MAP, v));
        }
        kept.retain(|v| v.get(DIRECTIVE).and_then(Value::as_str) != Some("delete"));
    }
    let (mut p, mut o) = (0, 0);
    while p < kept.len() && o < order.len() {
        if kept[p].get(DIRECTIVE).is_some() {
            p += 1;
            continue;
        }
        if merge_key_equal(kept[p], &order[o], merge_key)? {
            p += 1;
        }
        o += 1;
    }
    if p < kept.len() && o >= order.len() {
        return Err(SmpError::Failed(format!(
            "The order in patch list:\n{}\n doesn't match {ORDER_PREFIX} list:\n{}\n",
            go(&Value::Array(list.to_vec())),
            go(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

fn merge_key_equal(l: &Value, r: &Value, merge_key: Option<&str>) -> Result<bool> {
    let Some(k) = merge_key else {
        return Ok(l == r);
    };
    let key = |v: &Value| match v {
        Value::Object(m) => m.get(k).cloned().ok_or_else(|| no_merge_key(v, k)),
        _ => Err(bad_arg_type(MAP, v)),
    };
    Ok(key(l)? == key(r)?)
}

/// A list field's merge: by its strategy.
fn merge_list(original: Vec<Value>, patch: Vec<Value>, field: &Field) -> Result<Vec<Value>> {
    if field.strategy != Strategy::Merge {
        return Ok(patch);
    }
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let kind = element_type(&[&original, &patch])?;
    if kind != MAP {
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(&patch) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (named, server_only) = partition(merged, &patch, None)?;
        return normalize_order(named, server_only, &patch, &original, None, kind);
    }
    let mk = field.merge_key.ok_or_else(|| {
        SmpError::Failed("cannot merge lists without merge key for type struct".into())
    })?;
    let (original, patch) = special_elements(original, patch, mk)?;
    let mut merged = original.clone();
    for v in &patch {
        let key = v.get(mk).ok_or_else(|| no_merge_key(v, mk))?;
        match merged.iter().position(|o| o.get(mk) == Some(key)) {
            Some(i) => {
                let Value::Object(o) = merged[i].take() else {
                    return Err(bad_arg_type(MAP, &merged[i]));
                };
                let p = v.as_object().cloned().unwrap_or_default();
                merged[i] = Value::Object(merge_map(o, p, field.schema.items())?);
            }
            None => merged.push(v.clone()),
        }
    }
    let (named, server_only) = partition(merged, &patch, Some(mk))?;
    normalize_order(named, server_only, &patch, &original, Some(mk), kind)
}

/// Applies the elements carrying `$patch` (delete by merge key, replace the whole list) and
/// returns the original and the rest of the patch.
fn special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    mk: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut rest = Vec::with_capacity(patch.len());
    let mut replace = false;
    for v in patch {
        let Some(d) = v.get(DIRECTIVE) else {
            rest.push(v);
            continue;
        };
        match d.as_str() {
            Some("delete") => {
                let key = v.get(mk).ok_or_else(|| no_merge_key(&v, mk))?;
                original.retain(|o| o.get(mk) != Some(key));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(SmpError::Failed(
                    "merging lists cannot yet be specified in the patch".into(),
                ))
            }
            _ => {
                let m = v.as_object().cloned().unwrap_or_default();
                return Err(bad_patch_type(d, &m));
            }
        }
    }
    Ok(if replace {
        (rest, Vec::new())
    } else {
        (original, rest)
    })
}

/// The JSON type all elements share (upstream's `sliceElementType`).
fn element_type(lists: &[&[Value]]) -> Result<&'static str> {
    let mut kind = None;
    for v in lists.iter().flat_map(|l| l.iter()) {
        let t = go_type(v);
        match kind {
            None if t == LIST => {
                return Err(SmpError::Unprocessable(super::NO_LIST_OF_LISTS.into()))
            }
            None => kind = Some(t),
            Some(k) if k != t => {
                let all = Value::Array(lists.iter().map(|l| Value::Array(l.to_vec())).collect());
                return Err(SmpError::Failed(format!(
                    "list element types are not identical: {}",
                    go(&all)
                )));
            }
            Some(_) => {}
        }
    }
    kind.ok_or_else(|| SmpError::Failed("no elements in any of the given slices".into()))
}

/// Splits `merged` into the elements `by` names (by merge key, or by value) and the rest.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    mk: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let (mut named, mut rest) = (Vec::new(), Vec::new());
    for v in merged {
        let found = match mk {
            None => by.contains(&v),
            Some(mk) => {
                if !v.is_object() {
                    return Err(bad_arg_type(MAP, &v));
                }
                let key = v.get(mk).ok_or_else(|| no_merge_key(&v, mk))?;
                let mut found = false;
                for (i, b) in by.iter().enumerate() {
                    if !b.is_object() {
                        return Err(SmpError::Failed(format!("value for key {i} is not a map.")));
                    }
                    found |= b.get(mk) == Some(key);
                }
                found
            }
        };
        if found {
            named.push(v);
        } else {
            rest.push(v);
        }
    }
    Ok((named, rest))
}

/// Sorts the named elements by `patch_order` and the others by `server_order`, then
/// interleaves them (upstream's `normalizeElementOrder`).
fn normalize_order(
    named: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    mk: Option<&str>,
    kind: &str,
) -> Result<Vec<Value>> {
    let named = sort_by_order(named, patch_order, mk, kind)?;
    let server_only = sort_by_order(server_only, server_order, mk, kind)?;
    let (mut l, mut r) = (
        server_only.into_iter().peekable(),
        named.into_iter().peekable(),
    );
    let mut out = Vec::new();
    loop {
        let take_left = match (l.peek(), r.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => matches!(
                (index(server_order, a, mk, kind), index(server_order, b, mk, kind)),
                (Some(i), Some(j)) if i < j
            ),
        };
        out.extend(if take_left { l.next() } else { r.next() });
    }
    Ok(out)
}

/// Stable sort by position in `order`; for maps, the merge key must be everywhere and
/// `$patch: delete` elements go last.
fn sort_by_order(
    list: Vec<Value>,
    order: &[Value],
    mk: Option<&str>,
    kind: &str,
) -> Result<Vec<Value>> {
    let (mut list, deletes) = if kind == MAP {
        let k = mk.unwrap_or("");
        for v in list.iter().chain(order) {
            if !v.is_object() {
                return Err(bad_arg_type(MAP, v));
            }
            if v.get(k).is_none() {
                return Err(no_merge_key(v, k));
            }
        }
        split_deletes(list)?
    } else {
        (list, Vec::new())
    };
    list.sort_by_key(|v| index(order, v, mk, kind).unwrap_or(usize::MAX));
    list.extend(deletes);
    Ok(list)
}

/// Elements without and with `$patch: delete`.
fn split_deletes(list: Vec<Value>) -> Result<(Vec<Value>, Vec<Value>)> {
    let (mut keep, mut delete) = (Vec::new(), Vec::new());
    for v in list {
        if !v.is_object() {
            return Err(bad_arg_type(MAP, &v));
        }
        if v.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
            delete.push(v);
        } else {
            keep.push(v);
        }
    }
    Ok((keep, delete))
}

/// Position of `v` in `list`: by merge key for maps, by value otherwise.
fn index(list: &[Value], v: &Value, mk: Option<&str>, kind: &str) -> Option<usize> {
    if kind == MAP {
        let k = mk.unwrap_or("");
        let key = v.get(k);
        list.iter().position(|x| x.get(k) == key)
    } else {
        list.iter().position(|x| x == v)
    }
}

fn no_merge_key(m: &Value, key: &str) -> SmpError {
    SmpError::Failed(format!(
        "map: {} does not contain declared merge key: {key}",
        go(m)
    ))
}

fn bad_arg_type(expected: &str, actual: &Value) -> SmpError {
    SmpError::Failed(format!(
        "expected a {expected}, but received a {}",
        go_type(actual)
    ))
}

fn bad_patch_type(t: &Value, m: &Map<String, Value>) -> SmpError {
    SmpError::Failed(format!(
        "unknown patch type: {} in map: {}",
        go(t),
        go(&Value::Object(m.clone()))
    ))
}
