//! Patches: JSON merge patch (RFC 7386) and JSON patch (RFC 6902), applied to the stored
//! object's JSON.
//!
//! Strategic merge patch (kubectl's default for built-in kinds) is `crate::smp`, driven by
//! the patch metadata of the target's kind.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Which patch format a `Content-Type` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Json,
    StrategicMerge,
}

impl PatchType {
    pub(crate) fn from_content_type(ct: Option<&str>) -> Result<PatchType> {
        let media = ct.unwrap_or("").split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::StrategicMerge),
            _ => Err(Error::UnsupportedMediaType(
                "application/json-patch+json, application/merge-patch+json, \
                 application/strategic-merge-patch+json, application/apply-patch+yaml"
                    .into(),
            )),
        }
    }
}

/// Applies `patch` (the request body) of type `ty` to `target`.
pub(crate) fn apply(ty: PatchType, target: &Value, patch: &[u8]) -> Result<Value> {
    let p: Value = serde_json::from_slice(patch)
        .map_err(|e| Error::BadRequest(format!("error decoding patch: {e}")))?;
    match ty {
        PatchType::Merge => Ok(merge(target.clone(), &p)),
        PatchType::StrategicMerge => Ok(crate::smp::apply(
            target,
            &p,
            crate::smp::Schema::of_object(target),
        )?),
        PatchType::Json => json_patch(target.clone(), &p),
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub(crate) fn merge(target: Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut t = match target {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            let cur = t.remove(k).unwrap_or(Value::Null);
            t.insert(k.clone(), merge(cur, v));
        }
    }
    Value::Object(t)
}

fn bad(msg: String) -> Error {
    Error::BadRequest(msg)
}

/// Splits an RFC 6901 pointer into unescaped tokens.
fn tokens(ptr: &str) -> Result<Vec<String>> {
    if ptr.is_empty() {
        return Ok(Vec::new());
    }
    let rest = ptr
        .strip_prefix('/')
        .ok_or_else(|| bad(format!("invalid JSON pointer {ptr:?}")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(tok: &str, len: usize, allow_end: bool) -> Result<usize> {
    if allow_end && tok == "-" {
        return Ok(len);
    }
    let i: usize = tok
        .parse()
        .map_err(|_| bad(format!("invalid array index {tok:?}")))?;
    if i > len || (!allow_end && i == len) {
        return Err(bad(format!("array index {i} out of bounds")));
    }
    Ok(i)
}

/// The parent container of `path` and the last token.
fn parent<'a>(doc: &'a mut Value, path: &[String]) -> Result<(&'a mut Value, String)> {
    let (last, init) = path
        .split_last()
        .ok_or_else(|| bad("the root cannot be the target here".into()))?;
    let mut cur = doc;
    for t in init {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => {
                let i = index(t, a.len(), false)?;
                a.get_mut(i)
            }
            _ => None,
        }
        .ok_or_else(|| bad(format!("path {t:?} does not exist")))?;
    }
    Ok((cur, last.clone()))
}

fn get(doc: &Value, path: &[String]) -> Result<Value> {
    let mut cur = doc;
    for t in path {
        cur = match cur {
            Value::Object(m) => m.get(t),
            Value::Array(a) => a.get(index(t, a.len(), false)?),
            _ => None,
        }
        .ok_or_else(|| bad(format!("path {t:?} does not exist")))?;
    }
    Ok(cur.clone())
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<()> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            let i = index(&last, a.len(), true)?;
            a.insert(i, value);
        }
        _ => {
            return Err(bad(format!(
                "cannot add at {last:?}: parent is not a container"
            )))
        }
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value> {
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| bad(format!("unable to remove nonexistent key: {last}"))),
        Value::Array(a) => {
            let i = index(&last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(bad(format!(
            "cannot remove {last:?}: parent is not a container"
        ))),
    }
}

/// RFC 6902, all operations; the whole patch applies or none of it.
fn json_patch(mut doc: Value, patch: &Value) -> Result<Value> {
    let ops = patch
        .as_array()
        .ok_or_else(|| bad("a JSON patch must be an array of operations".into()))?;
    for op in ops {
        let field = |k: &str| {
            op.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("operation is missing {k:?}")))
        };
        let path = tokens(field("path")?)?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| bad("operation is missing \"value\"".into()))
        };
        match field("op")? {
            "add" => add(&mut doc, &path, value()?)?,
            "remove" => {
                remove(&mut doc, &path)?;
            }
            "replace" => {
                get(&doc, &path)?;
                if path.is_empty() {
                    doc = value()?;
                } else {
                    remove(&mut doc, &path)?;
                    add(&mut doc, &path, value()?)?;
                }
            }
            "move" => {
                let from = tokens(field("from")?)?;
                let v = remove(&mut doc, &from)?;
                add(&mut doc, &path, v)?;
            }
            "copy" => {
                let v = get(&doc, &tokens(field("from")?)?)?;
                add(&mut doc, &path, v)?;
            }
            "test" => {
                if get(&doc, &path)? != value()? {
                    return Err(bad("testing value failed".into()));
                }
            }
            other => return Err(bad(format!("unexpected operation {other:?}"))),
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        let t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        assert_eq!(
            merge(t, &json!({"a": "z", "c": {"f": null}})),
            json!({"a": "z", "c": {"d": "e"}})
        );
        assert_eq!(
            merge(json!({"a": [1]}), &json!({"a": [2, 3]})),
            json!({"a": [2, 3]})
        );
        assert_eq!(
            merge(json!({"a": 1}), &json!({"b": {"c": 1}})),
            json!({"a": 1, "b": {"c": 1}})
        );
    }

    #[test]
    fn strategic_merge_applies_directives() {
        let p =
            br#"{"metadata":{"labels":{"x":"y"}},"$setElementOrder/containers":[{"name":"c"}]}"#;
        let out = apply(
            PatchType::StrategicMerge,
            &json!({"metadata": {"name": "a"}}),
            p,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"name": "a", "labels": {"x": "y"}}})
        );
    }

    #[test]
    fn json_patch_operations() {
        let doc = json!({"metadata": {"labels": {"a/b": "1"}}, "list": [1, 2]});
        let p = br#"[
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "replace", "path": "/metadata/labels/a~1b", "value": "2"},
            {"op": "copy", "from": "/list/0", "path": "/first"},
            {"op": "move", "from": "/first", "path": "/moved"},
            {"op": "remove", "path": "/list/1"},
            {"op": "test", "path": "/moved", "value": 1}
        ]"#;
        let out = apply(PatchType::Json, &doc, p).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"a/b": "2"}}, "list": [1, 3], "moved": 1})
        );
        for bad in [
            br#"[{"op": "remove", "path": "/nope"}]"#.as_slice(),
            br#"[{"op": "replace", "path": "/list/5", "value": 1}]"#,
            br#"[{"op": "test", "path": "/list/0", "value": 9}]"#,
            br#"{"op": "add"}"#,
            b"not json",
        ] {
            assert_eq!(apply(PatchType::Json, &doc, bad).unwrap_err().code(), 400);
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type(Some("application/merge-patch+json")).unwrap(),
            PatchType::Merge
        );
        assert_eq!(
            PatchType::from_content_type(Some("application/json-patch+json; charset=utf-8"))
                .unwrap(),
            PatchType::Json
        );
        assert_eq!(
            PatchType::from_content_type(Some("application/apply-patch+yaml"))
                .unwrap_err()
                .code(),
            415
        );
    }
}
