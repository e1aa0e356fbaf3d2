//! Server-side field validation (`fieldValidation=Ignore|Warn|Strict`, default Warn), as
//! kube-apiserver 1.32 does it when it decodes a typed object.
//!
//! A request body is parsed keeping duplicate keys, then walked against the kind's schema
//! from the OpenAPI catalog (`openapi::schemas`), the way upstream's strict JSON decoder
//! (sigs.k8s.io/json) walks Go structs:
//! - a key a struct does not have is an `unknown field "<path>"` and is dropped from the
//!   object whatever the directive (a typed decode has nowhere to put it);
//! - a key seen twice in one object (struct, map or untyped value) is a
//!   `duplicate field "<path>"`, and the last value wins;
//! - paths join keys with `.` and add `[i]` for list items; map values continue the path with
//!   `.<key>`; values with a custom decoder upstream (int-or-string, quantities, times, raw
//!   extensions, any schema without properties) are not looked into;
//! - errors are reported in document order, deduplicated, at most 100.
//!
//! Strict fails the request (create/update: 400 `<Kind> in version "<v>" cannot be handled as
//! a <Kind>: strict decoding error: …`; patch: 422 Invalid on `patch`); Warn answers with one
//! `Warning: 299 - "<error>"` header per error; Ignore says nothing.

mod raw;

use hyper::Response;
use serde_json::{json, Map, Value};

use raw::go_value;
pub(crate) use raw::{go_quote, Raw};

use crate::error::{Cause, Error, Result};
use crate::openapi::schemas::{self, Catalog, REF_PREFIX};
use crate::patch::PatchType;
use crate::resources::ResourceDef;
use crate::server::Body;

/// Upstream's cap on collected strict errors.
const MAX_ERRORS: usize = 100;

/// What to do about unknown and duplicate fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Directive {
    Ignore,
    Warn,
    Strict,
}

impl Directive {
    /// The `fieldValidation` query value; `options` (`CreateOptions`, `UpdateOptions`,
    /// `PatchOptions`) names the 422 for a value upstream does not know.
    pub(crate) fn parse(value: Option<&str>, options: &str) -> Result<Directive> {
        match value.unwrap_or("") {
            "" | "Warn" => Ok(Directive::Warn),
            "Ignore" => Ok(Directive::Ignore),
            "Strict" => Ok(Directive::Strict),
            other => Err(Error::Invalid {
                group: "meta.k8s.io".into(),
                kind: options.into(),
                name: String::new(),
                causes: vec![Cause {
                    reason: "FieldValueNotSupported",
                    field: "fieldValidation".into(),
                    message: format!(
                        "Unsupported value: {}: supported values: \"\", \"Ignore\", \"Strict\", \
                         \"Warn\"",
                        go_quote(other)
                    ),
                }],
            }),
        }
    }
}

/// Walks raw JSON against schemas, collecting strict errors (see the module invariants).
pub(crate) struct Walker<'a> {
    catalog: &'a Catalog,
    /// Errors in order, without repeats.
    pub(crate) errors: Vec<String>,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(catalog: &'a Catalog) -> Walker<'a> {
        Walker {
            catalog,
            errors: Vec::new(),
        }
    }

    fn record(&mut self, what: &str, stack: &str, key: &str) {
        let path = if stack.is_empty() {
            key.to_string()
        } else {
            format!("{stack}.{key}")
        };
        let e = format!("{what} {}", go_quote(&path));
        if self.errors.len() < MAX_ERRORS && !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }

    /// Follows `$ref` and single-element `allOf` to the schema that describes a value.
    fn resolve(&self, mut s: &'a Value) -> &'a Value {
        for _ in 0..64 {
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                match r.strip_prefix(REF_PREFIX).and_then(|n| self.catalog.get(n)) {
                    Some(t) => s = t,
                    None => return s,
                }
            } else if let Some([one]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice)
            {
                s = one;
            } else {
                return s;
            }
        }
        s
    }

    /// `raw` decoded against `schema` (None: untyped), unknown fields dropped. `stack` is the
    /// path so far.
    pub(crate) fn walk(&mut self, raw: Raw, schema: Option<&'a Value>, stack: &str) -> Value {
        let Some(schema) = schema.map(|s| self.resolve(s)) else {
            return self.untyped(raw, stack);
        };
        if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            && schema.get("properties").is_none()
        {
            return self.untyped(raw, stack);
        }
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        let items = schema.get("items").filter(|i| i.is_object());
        match raw {
            Raw::Object(fields) if props.is_some() || additional.is_some() => {
                let keep_unknown =
                    schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
                let mut out = Map::new();
                for (k, v) in fields {
                    let sub = match (props.and_then(|p| p.get(&k)), additional) {
                        (Some(p), _) => Some(p),
                        (None, Some(a)) if props.is_none() => Some(a),
                        _ => None,
                    };
                    if out.contains_key(&k) && (sub.is_some() || keep_unknown) {
                        self.record("duplicate field", stack, &k);
                    }
                    let path = child(stack, &k);
                    let Some(sub) = sub else {
                        if keep_unknown {
                            let value = self.untyped(v, &path);
                            out.insert(k, value);
                        } else {
                            self.record("unknown field", stack, &k);
                        }
                        continue;
                    };
                    let value = self.walk(v, Some(sub), &path);
                    out.insert(k, value);
                }
                Value::Object(out)
            }
            Raw::Array(elems) if items.is_some() => Value::Array(
                elems
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| self.walk(e, items, &format!("{stack}[{i}]")))
                    .collect(),
            ),
            // Scalars, opaque values (custom decoders upstream) and type mismatches.
            other => other.into(),
        }
    }

    /// An untyped value (`interface{}` upstream): duplicates are still found.
    fn untyped(&mut self, raw: Raw, stack: &str) -> Value {
        match raw {
            Raw::Object(fields) => {
                let mut out = Map::new();
                for (k, v) in fields {
                    if out.contains_key(&k) {
                        self.record("duplicate field", stack, &k);
                    }
                    let path = child(stack, &k);
                    let value = self.untyped(v, &path);
                    out.insert(k, value);
                }
                Value::Object(out)
            }
            Raw::Array(elems) => Value::Array(
                elems
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| self.untyped(e, &format!("{stack}[{i}]")))
                    .collect(),
            ),
            other => other.into(),
        }
    }
}

fn child(stack: &str, key: &str) -> String {
    if stack.is_empty() {
        key.to_string()
    } else {
        format!("{stack}.{key}")
    }
}

fn parse_raw(body: &[u8], what: &str) -> Result<Raw> {
    serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("{what} is not valid JSON: {e}")))
}

/// The schema of `def`'s kind, if the catalog has it.
fn kind_schema(def: &ResourceDef) -> Option<&'static Value> {
    let c = schemas::catalog();
    c.kind(def.group, def.kind).and_then(|n| c.get(n))
}

/// Decodes a create or update body (JSON) for `def`: unknown fields dropped; under Warn the
/// strict errors come back as warnings, under Strict they fail the request.
pub(crate) fn decode_object(
    def: &ResourceDef,
    body: &[u8],
    directive: Directive,
) -> Result<(Value, Vec<String>)> {
    let raw = parse_raw(body, "the object provided")?;
    let Some(schema) = kind_schema(def) else {
        return Ok((raw.into(), Vec::new()));
    };
    let mut w = Walker::new(schemas::catalog());
    let obj = w.walk(raw, Some(schema), "");
    match directive {
        Directive::Strict if !w.errors.is_empty() => {
            let kind = obj.get("kind").and_then(Value::as_str).unwrap_or(def.kind);
            let version = obj
                .get("apiVersion")
                .and_then(Value::as_str)
                .map(|av| av.rsplit('/').next().unwrap_or(av))
                .unwrap_or(def.version);
            Err(Error::BadRequest(format!(
                "{kind} in version {} cannot be handled as a {}: strict decoding error: {}",
                go_quote(version),
                def.kind,
                w.errors.join(", ")
            )))
        }
        Directive::Warn => Ok((obj, w.errors)),
        _ => Ok((obj, Vec::new())),
    }
}

/// Strict errors in a patch body itself (duplicate keys; for JSON patch also unknown
/// operation fields), as upstream finds them before patching under Warn and Strict.
pub(crate) fn patch_body_errors(
    ty: PatchType,
    body: &[u8],
    directive: Directive,
) -> Result<Vec<String>> {
    if directive == Directive::Ignore {
        return Ok(Vec::new());
    }
    let raw = serde_json::from_slice::<Raw>(body)
        .map_err(|e| Error::BadRequest(format!("error decoding patch: {e}")))?;
    let mut w = Walker::new(schemas::catalog());
    match ty {
        PatchType::Json => {
            let op = json!({"type": "array", "items": {"type": "object", "properties": {
                "op": {}, "path": {}, "from": {},
                "value": {"x-kubernetes-preserve-unknown-fields": true},
            }}});
            w.walk(raw, Some(&op), "");
            Ok(w.errors
                .into_iter()
                .map(|e| format!("json patch {e}"))
                .collect())
        }
        PatchType::Merge | PatchType::StrategicMerge => {
            w.walk(raw, None, "");
            Ok(w.errors)
        }
    }
}

/// Checks a patched object: unknown fields are dropped; `body_errors` (from
/// [`patch_body_errors`]) and the object's own strict errors become warnings or, under
/// Strict, upstream's 422 on `patch`.
pub(crate) fn check_patched(
    def: &ResourceDef,
    directive: Directive,
    ty: PatchType,
    body: &[u8],
    patched: Value,
    body_errors: &[String],
) -> Result<(Value, Vec<String>)> {
    let Some(schema) = kind_schema(def) else {
        return Ok((patched, Vec::new()));
    };
    // What a Strict failure shows: the patched object, or the decoded strategic merge patch.
    let shown = |patched: &Value| match ty {
        PatchType::StrategicMerge => go_value(&serde_json::from_slice(body).unwrap_or(Value::Null)),
        _ => serde_json::to_string(patched).unwrap_or_default(),
    };
    let original = (directive == Directive::Strict).then(|| patched.clone());
    let mut w = Walker::new(schemas::catalog());
    w.errors.extend(body_errors.iter().cloned());
    let obj = w.walk(patched.into(), Some(schema), "");
    match directive {
        Directive::Ignore => Ok((obj, Vec::new())),
        Directive::Warn => Ok((obj, w.errors)),
        Directive::Strict if w.errors.is_empty() => Ok((obj, Vec::new())),
        Directive::Strict => Err(Error::Invalid {
            group: String::new(),
            kind: String::new(),
            name: String::new(),
            causes: vec![Cause {
                reason: "FieldValueInvalid",
                field: "patch".into(),
                message: format!(
                    "Invalid value: {}: strict decoding error: {}",
                    go_quote(&shown(original.as_ref().unwrap_or(&Value::Null))),
                    w.errors.join(", ")
                ),
            }],
        }),
    }
}

/// Adds one `Warning: 299 - "<text>"` header per warning (upstream's format: `"` and `\`
/// escaped).
pub(crate) fn with_warnings(mut r: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let text: String = w
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c if c.is_control() => vec![' '],
                c => vec![c],
            })
            .collect();
        if let Ok(v) =
            hyper::header::HeaderValue::from_bytes(format!("299 - \"{text}\"").as_bytes())
        {
            r.headers_mut().append(hyper::header::WARNING, v);
        }
    }
    r
}

#[cfg(test)]
mod tests;
