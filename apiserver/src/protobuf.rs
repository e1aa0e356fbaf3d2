//! Request bodies in Kubernetes protobuf (`application/vnd.kubernetes.protobuf`), turned into
//! the JSON the rest of the server works on.
//!
//! kubectl's typed clients (`kubectl create configmap|secret|namespace|serviceaccount …`)
//! send protobuf and do not fall back to JSON on 415, so the server must read it. Replies
//! stay JSON: every client accepts JSON after protobuf in `Accept`.
//!
//! The format: the bytes `k8s\0`, then a `runtime.Unknown` message {1: TypeMeta{1:
//! apiVersion, 2: kind}, 2: raw, 3: contentEncoding, 4: contentType} whose `raw` is the typed
//! object in the `generated.proto` schema of its group. The decoder here is generic over
//! small schema tables (field number → JSON name and type), one per message type.
//!
//! Invariants: Go's marshalling writes every non-pointer field, zero or not; Go's JSON omits
//! those (`omitempty`). So a zero scalar, an empty string, an empty list/map or a zero `Time`
//! is dropped unless the field is a pointer in Go (`ptr`), where zero is a value. Unknown
//! field numbers are skipped (a newer client's additions), as protobuf requires.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

pub(crate) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    Int,
    /// `bytes`, base64 in JSON.
    Bytes,
    Msg(&'static [Field]),
    /// `metav1.Time` {1: seconds, 2: nanos} → RFC 3339.
    Time,
    /// `map<string,string>`.
    MapStr,
    /// `map<string,bytes>` (values base64).
    MapBytes,
    /// `FieldsV1`/`RawExtension` {1: raw JSON bytes} → the JSON value.
    RawJson,
}

#[derive(Clone, Copy)]
struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
    /// A pointer in Go: present means set, even when zero.
    ptr: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
        ptr: false,
    }
}
const fn rep(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
        ptr: false,
    }
}
const fn ptr(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
        ptr: true,
    }
}

const OWNER_REFERENCE: &[Field] = &[
    f(5, "apiVersion", Ty::Str),
    f(1, "kind", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    ptr(6, "controller", Ty::Bool),
    ptr(7, "blockOwnerDeletion", Ty::Bool),
];
const MANAGED_FIELDS_ENTRY: &[Field] = &[
    f(1, "manager", Ty::Str),
    f(2, "operation", Ty::Str),
    f(3, "apiVersion", Ty::Str),
    f(4, "time", Ty::Time),
    f(6, "fieldsType", Ty::Str),
    f(7, "fieldsV1", Ty::RawJson),
    f(8, "subresource", Ty::Str),
];
const OBJECT_META: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(4, "selfLink", Ty::Str),
    f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "generation", Ty::Int),
    f(8, "creationTimestamp", Ty::Time),
    f(9, "deletionTimestamp", Ty::Time),
    ptr(10, "deletionGracePeriodSeconds", Ty::Int),
    f(11, "labels", Ty::MapStr),
    f(12, "annotations", Ty::MapStr),
    rep(13, "ownerReferences", Ty::Msg(OWNER_REFERENCE)),
    rep(14, "finalizers", Ty::Str),
    rep(17, "managedFields", Ty::Msg(MANAGED_FIELDS_ENTRY)),
];
const OBJECT_REFERENCE: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(2, "namespace", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "fieldPath", Ty::Str),
];
const LOCAL_OBJECT_REFERENCE: &[Field] = &[f(1, "name", Ty::Str)];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapStr),
    f(3, "binaryData", Ty::MapBytes),
    ptr(4, "immutable", Ty::Bool),
];
const SECRET: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapBytes),
    f(3, "type", Ty::Str),
    f(4, "stringData", Ty::MapStr),
    ptr(5, "immutable", Ty::Bool),
];
const NAMESPACE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(&[rep(1, "finalizers", Ty::Str)])),
    f(3, "status", Ty::Msg(&[f(1, "phase", Ty::Str)])),
];
const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    rep(2, "secrets", Ty::Msg(OBJECT_REFERENCE)),
    rep(3, "imagePullSecrets", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    ptr(4, "automountServiceAccountToken", Ty::Bool),
];

/// The schema of a top-level kind, by `apiVersion` and `kind`.
fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    match (api_version, kind) {
        ("v1", "ConfigMap") => Some(CONFIG_MAP),
        ("v1", "Secret") => Some(SECRET),
        ("v1", "Namespace") => Some(NAMESPACE),
        ("v1", "ServiceAccount") => Some(SERVICE_ACCOUNT),
        _ => None,
    }
}

/// Whether a `Content-Type` is Kubernetes protobuf.
pub(crate) fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().map(str::trim) == Some(MEDIA_TYPE)
}

fn malformed(what: &str) -> Error {
    Error::BadRequest(format!("the protobuf body could not be decoded: {what}"))
}

/// One wire field: its number and its value.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf
            .split_first()
            .ok_or_else(|| malformed("truncated varint"))?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(malformed("varint too long"))
}

/// Every field of a message, in wire order.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (num, wt) = (key >> 3, key & 7);
        let w = match wt {
            0 => Wire::Varint(varint(&mut buf)?),
            1 | 5 => {
                let n = if wt == 1 { 8 } else { 4 };
                buf = buf
                    .get(n..)
                    .ok_or_else(|| malformed("truncated fixed field"))?;
                Wire::Fixed
            }
            2 => {
                let n = varint(&mut buf)? as usize;
                let (b, rest) = (buf.get(..n), buf.get(n..));
                buf = rest.ok_or_else(|| malformed("truncated field"))?;
                Wire::Bytes(b.ok_or_else(|| malformed("truncated field"))?)
            }
            _ => return Err(malformed("unsupported wire type")),
        };
        out.push((num, w));
    }
    Ok(out)
}

fn utf8(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| malformed("a string is not UTF-8"))
}

/// One value of type `ty` from its wire form.
fn value(ty: Ty, w: &Wire<'_>) -> Result<Value> {
    Ok(match (ty, w) {
        (Ty::Str, Wire::Bytes(b)) => json!(utf8(b)?),
        (Ty::Bytes, Wire::Bytes(b)) => json!(STANDARD.encode(b)),
        (Ty::Bool, Wire::Varint(v)) => json!(*v != 0),
        (Ty::Int, Wire::Varint(v)) => json!(*v as i64),
        (Ty::Msg(s), Wire::Bytes(b)) => message(s, b)?,
        (Ty::Time, Wire::Bytes(b)) => {
            let secs = fields(b)?.iter().find_map(|(n, w)| match (n, w) {
                (1, Wire::Varint(v)) => Some(*v as i64),
                _ => None,
            });
            match secs {
                Some(s) if s != 0 => json!(crate::time::rfc3339(s)),
                _ => Value::Null,
            }
        }
        (Ty::RawJson, Wire::Bytes(b)) => match fields(b)?.iter().find(|(n, _)| *n == 1) {
            Some((_, Wire::Bytes(raw))) => {
                serde_json::from_slice(raw).map_err(|_| malformed("embedded JSON"))?
            }
            _ => Value::Null,
        },
        _ => return Err(malformed("a field has the wrong wire type")),
    })
}

/// Go's `omitempty` emptiness.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn message(schema: &[Field], buf: &[u8]) -> Result<Value> {
    let mut out = Map::new();
    for (num, w) in fields(buf)? {
        let Some(fd) = schema.iter().find(|f| f.num == num) else {
            continue;
        };
        match fd.ty {
            Ty::MapStr | Ty::MapBytes => {
                let Wire::Bytes(entry) = w else {
                    return Err(malformed("map entry"));
                };
                let (mut k, mut v) = (String::new(), Value::Null);
                for (n, ew) in fields(entry)? {
                    match (n, &ew) {
                        (1, Wire::Bytes(b)) => k = utf8(b)?,
                        (2, _) => {
                            v = value(
                                if matches!(fd.ty, Ty::MapStr) {
                                    Ty::Str
                                } else {
                                    Ty::Bytes
                                },
                                &ew,
                            )?
                        }
                        _ => {}
                    }
                }
                if v.is_null() {
                    v = json!("");
                }
                let m = out.entry(fd.name).or_insert_with(|| json!({}));
                m[k] = v;
            }
            _ if fd.repeated => {
                let v = value(fd.ty, &w)?;
                out.entry(fd.name)
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .expect("array")
                    .push(v);
            }
            _ => {
                let v = value(fd.ty, &w)?;
                if fd.ptr || !is_empty(&v) {
                    out.insert(fd.name.to_string(), v);
                } else {
                    out.remove(fd.name);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf request body into the object's JSON (with apiVersion and kind).
pub(crate) fn decode(body: &[u8]) -> Result<Value> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("missing the k8s\\0 prefix"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, w) in fields(rest)? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                for (tn, tw) in fields(tm)? {
                    match (tn, tw) {
                        (1, Wire::Bytes(b)) => api_version = utf8(b)?,
                        (2, Wire::Bytes(b)) => kind = utf8(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            (3, Wire::Bytes(b)) if !b.is_empty() => {
                return Err(malformed("content encodings are not supported"))
            }
            _ => {}
        }
    }
    let schema = schema(&api_version, &kind).ok_or_else(|| {
        Error::UnsupportedMediaType(format!(
            "application/json (protobuf is read for ConfigMap, Secret, Namespace and ServiceAccount; not {api_version} {kind})"
        ))
    })?;
    let mut obj = message(schema, raw)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(num: u64, wt: u64, out: &mut Vec<u8>) {
        put_varint((num << 3) | wt, out);
    }
    fn put_varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes(num: u64, b: &[u8], out: &mut Vec<u8>) {
        key(num, 2, out);
        put_varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        bytes(1, k.as_bytes(), &mut e);
        bytes(2, v, &mut e);
        e
    }

    /// What Go's generated marshaller writes for `kubectl create configmap x --from-literal=a=b`:
    /// every non-pointer field, empty or not.
    fn configmap_body() -> Vec<u8> {
        let mut meta = Vec::new();
        for (n, s) in [(1, "x"), (2, ""), (3, "default"), (4, ""), (5, ""), (6, "")] {
            bytes(n, s.as_bytes(), &mut meta);
        }
        key(7, 0, &mut meta);
        put_varint(0, &mut meta);
        bytes(8, &[], &mut meta); // zero creationTimestamp
        bytes(11, &entry("app", b"web"), &mut meta);
        let mut cm = Vec::new();
        bytes(1, &meta, &mut cm);
        bytes(2, &entry("a", b"b"), &mut cm);
        bytes(2, &entry("c", b""), &mut cm);
        bytes(3, &entry("bin", &[0, 1]), &mut cm);
        key(4, 0, &mut cm);
        put_varint(0, &mut cm); // immutable: false, set explicitly
        key(99, 0, &mut cm); // a field from the future
        put_varint(7, &mut cm);
        let mut tm = Vec::new();
        bytes(1, b"v1", &mut tm);
        bytes(2, b"ConfigMap", &mut tm);
        let mut unknown = Vec::new();
        bytes(1, &tm, &mut unknown);
        bytes(2, &cm, &mut unknown);
        bytes(3, b"", &mut unknown);
        bytes(4, b"", &mut unknown);
        [MAGIC, &unknown].concat()
    }

    #[test]
    fn decodes_a_configmap_like_go_json() {
        let obj = decode(&configmap_body()).unwrap();
        assert_eq!(
            obj,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "x", "namespace": "default", "labels": {"app": "web"}},
                "data": {"a": "b", "c": ""},
                "binaryData": {"bin": "AAE="},
                "immutable": false,
            })
        );
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert_eq!(decode(b"{}").unwrap_err().code(), 400);
        let mut body = configmap_body();
        body.truncate(body.len() - 3);
        assert_eq!(decode(&body).unwrap_err().code(), 400);
        let mut tm = Vec::new();
        bytes(1, b"apps/v1", &mut tm);
        bytes(2, b"Deployment", &mut tm);
        let mut unknown = Vec::new();
        bytes(1, &tm, &mut unknown);
        assert_eq!(decode(&[MAGIC, &unknown].concat()).unwrap_err().code(), 415);
        assert!(is_protobuf(
            "application/vnd.kubernetes.protobuf; charset=x"
        ));
        assert!(!is_protobuf("application/json"));
    }
}
