//! Strategic merge patch (`application/strategic-merge-patch+json`), as kube-apiserver 1.32
//! applies it (k8s.io/apimachinery `strategicpatch.StrategicMergeMapPatch`).
//!
//! A JSON merge patch whose lists can merge: where a field's schema says
//! `x-kubernetes-patch-strategy: merge`, a list of maps merges element by element on the
//! `x-kubernetes-patch-merge-key` (containers by `name`, ports by `containerPort`, volume
//! mounts by `mountPath`, …) and a list of scalars merges as a set; other lists are replaced
//! whole, maps merge recursively (unless the strategy is `replace`), `null` deletes. The
//! metadata comes from the OpenAPI catalog (`schema`), the same facts upstream reads from its
//! Go struct tags and publishes in its OpenAPI documents, so kubectl's client-side apply (which
//! computes a three-way patch from those documents and sends it here) lands exactly as it
//! would upstream.
//!
//! Directives, inside the patch: `$patch: replace | delete` on a map (replace it by the rest
//! of the patch map / clear it), `$patch: delete` on a list element (remove the elements with
//! its merge key) and `$patch: replace` as a list element (replace the list by the other
//! elements); `$setElementOrder/<list>` (the final order of a merged list);
//! `$deleteFromPrimitiveList/<list>` (values to remove from a list of scalars);
//! `$retainKeys` (the keys a map keeps). `$patch: merge` is refused, as upstream refuses it.
//!
//! Invariants:
//! - `apply` never fails on a well-formed patch whose merge lists name their merge keys;
//!   when it fails, the error carries upstream's message and its class decides the HTTP
//!   status exactly where upstream's `interpretStrategicMergePatchError` does: the format
//!   errors are 400, lists of lists 422, anything else (a missing merge key, an unknown
//!   directive, a `$setElementOrder` that contradicts its list) is a bare error upstream,
//!   a 500.
//! - Element order is upstream's (see `merge`), so a list reads back in the same order.

mod merge;
mod schema;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

pub(crate) use schema::Schema;

use crate::error::Error;

/// Upstream's `mergepatch` sentinel messages.
const BAD_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const BAD_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const BAD_ORDER_LIST: &str = "invalid patch format of setElementOrder list";
const NO_LIST_OF_LISTS: &str = "lists of lists are not supported";

/// Go's names for the types of decoded JSON, as upstream's messages print them.
const MAP: &str = "map[string]interface {}";
const LIST: &str = "[]interface {}";

/// Why a strategic merge patch could not apply, classed as upstream answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SmpError {
    /// A malformed patch: 400 BadRequest.
    BadRequest(String),
    /// Lists of lists: 422.
    Unprocessable(String),
    /// Everything else: upstream returns the bare error (500, no reason).
    Failed(String),
}

#[cfg(test)]
impl SmpError {
    pub(crate) fn message(&self) -> &str {
        match self {
            SmpError::BadRequest(m) | SmpError::Unprocessable(m) | SmpError::Failed(m) => m,
        }
    }
}

impl From<SmpError> for Error {
    /// As upstream's patch handler reports them: a malformed directive is 400 BadRequest, a
    /// patch the merge cannot apply is a bare 500 with the merge's message and no reason, and
    /// an unprocessable one is 422 Invalid with upstream's generic message.
    fn from(e: SmpError) -> Error {
        match e {
            SmpError::BadRequest(m) => Error::BadRequest(m),
            SmpError::Unprocessable(_) => Error::Generic {
                code: 422,
                reason: "Invalid",
                message: "the server rejected our request due to an error in our request".into(),
                empty_details: true,
            },
            SmpError::Failed(m) => Error::Generic {
                code: 500,
                reason: "",
                message: m,
                empty_details: false,
            },
        }
    }
}

/// Applies the strategic merge `patch` to `original`, with the patch metadata of `schema`
/// (`Schema::of_object(original)` for a stored object).
pub(crate) fn apply(original: &Value, patch: &Value, schema: Schema) -> Result<Value, SmpError> {
    let patch = match patch {
        Value::Object(m) => m.clone(),
        Value::Null => return Ok(original.clone()),
        other => {
            let what = match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Bool(_) => "bool",
                _ => "number",
            };
            return Err(SmpError::BadRequest(format!(
                "json: cannot unmarshal {what} into Go value of type {MAP}"
            )));
        }
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge::merge_map(original, patch, schema).map(Value::Object)
}

/// Go's name for the dynamic type of a decoded JSON value (`reflect.TypeOf`); integers
/// decode as int64 (upstream keeps them so), other numbers as float64.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "%!s(<nil>)",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int64",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => LIST,
        Value::Object(_) => MAP,
    }
}

/// Go's `%v` of a decoded JSON value: `map[k:v …]` with sorted keys, `[a b]`, `<nil>`.
fn go(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => go_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, x)| format!("{k}:{}", go(x)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// `%v` of a float64 (`%g` with the shortest digits): exponent form below 1e-4 and from 1e6.
fn go_float(f: f64) -> String {
    if f != 0.0 && (f.abs() < 1e-4 || f.abs() >= 1e6) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        }
    } else {
        f.to_string()
    }
}
