//! Server-side apply (`PATCH` with `application/apply-patch+yaml`) and the field ownership
//! every write records in `metadata.managedFields`, as kube-apiserver 1.32 does it
//! (sigs.k8s.io/structured-merge-diff, k8s.io/apimachinery `managedfields`).
//!
//! An apply sends a partial object, the applier's whole intent: it is merged onto the live
//! object by the schema's list and map semantics (`schema`, `typed`), the applier comes to
//! own exactly the fields it set (`fieldpath` sets, stored as `fieldsV1`), and fields it set
//! last time but leaves out now are removed unless another manager owns them. Changing a
//! value another manager owns is a 409 Conflict naming the managers and fields, unless the
//! request says `force=true`, which takes them over. Every other write (create, update,
//! patch) records an `Update` entry for its `fieldManager` with the fields it changed
//! (`record_update`), taking them from their previous owners.
//!
//! Invariants:
//! - The merge, the ownership sets and the conflicts are functions of the live object, the
//!   request and the stored entries only: two apiservers agree on them.
//! - A write that changes nothing but managedFields timestamps leaves them as they were, so
//!   a repeated apply is a no-op that keeps the resourceVersion.
//! - What the server owns (name, uid, resourceVersion, …: `managers::strip_set`) and what the
//!   endpoint resets (status through the main resource, spec through `/status`) is never
//!   owned by anyone.
//!
//! Not here: the interplay with client-side apply's last-applied annotation (upstream's
//! `lastAppliedManager`/`lastAppliedUpdater`), the cap of ten `Update` managers, YAML
//! bodies that are not JSON, and the manager name upstream derives from a missing
//! `fieldManager` through the User-Agent (an empty name is recorded instead).

mod fieldpath;
mod handler;
mod managers;
mod schema;
#[cfg(test)]
mod tests;
mod typed;

use serde_json::{Map, Value};

use crate::resources::ResourceDef;

pub(crate) use handler::serve;
use managers::{ApplyError, Write};
use schema::{Shape, Ty};

/// The apply patch's media type.
pub(crate) const MEDIA_TYPE: &str = "application/apply-patch+yaml";

/// Whether a request's `Content-Type` is an apply patch.
pub(crate) fn is_apply(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim() == MEDIA_TYPE)
}

fn write<'a>(def: &ResourceDef, api_version: &'a str, manager: &'a str, sub: &'a str) -> Write<'a> {
    let mut ignored = fieldpath::Set::default();
    if sub == "status" {
        ignored.insert(&[fieldpath::Pe::Field("spec".into())]);
    } else if def.has_status {
        ignored.insert(&[fieldpath::Pe::Field("status".into())]);
    }
    Write {
        ty: Ty::of_kind(api_version, def.kind),
        api_version,
        manager,
        subresource: sub,
        ignored,
        now: crate::time::rfc3339(crate::time::now_unix()),
    }
}

/// Struct fields that are values, not pointers, in upstream's Go types: an empty object of
/// the kind already has them, so the first writer does not own them as such.
const VALUE_STRUCTS: [&str; 7] = [
    "metadata",
    "spec",
    "status",
    "template",
    "strategy",
    "updateStrategy",
    "jobTemplate",
];

/// The empty object upstream compares a create against.
fn zero(ty: Ty) -> Value {
    let mut m = Map::new();
    if matches!(ty.shape(), Shape::Struct) {
        for f in VALUE_STRUCTS {
            if let Some(t) = ty.field(f).filter(|t| matches!(t.shape(), Shape::Struct)) {
                m.insert(f.to_string(), zero(t));
            }
        }
    }
    Value::Object(m)
}

fn without_managed(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    o
}

/// Records a create (`old` None), update or non-apply patch from `old` to `new` as
/// `manager`'s `Update` in `new`'s managedFields. The entries start from `new`'s own when
/// the client sent some (`[{}]` clears them, as upstream), otherwise from `old`'s.
pub(crate) fn record_update(
    def: &ResourceDef,
    old: Option<&Value>,
    new: &mut Value,
    manager: Option<&str>,
    sub: Option<&str>,
) {
    let api_version = def.api_version();
    let w = write(def, &api_version, manager.unwrap_or(""), sub.unwrap_or(""));
    let sent = new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let source = if sent { Some(&*new) } else { old };
    let entries = source
        .map(managers::decode)
        .unwrap_or(Ok(Vec::new()))
        .or_else(|_| old.map_or(Ok(Vec::new()), managers::decode))
        .unwrap_or_default();
    let before = old.map_or_else(|| zero(w.ty), without_managed);
    match managers::update(&w, &before, &without_managed(new), entries.clone()) {
        Ok(e) => managers::encode(new, e),
        Err(e) => {
            tracing::warn!("managed fields not updated: {e}");
            managers::encode(new, entries);
        }
    }
}

/// Applies `config` as `manager` to `live` (None: the object does not exist yet): the new
/// object with its managedFields, before defaulting and validation.
pub(crate) fn apply(
    def: &ResourceDef,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    sub: Option<&str>,
) -> Result<Value, ApplyError> {
    let api_version = def.api_version();
    let w = write(def, &api_version, manager, sub.unwrap_or(""));
    let entries = live
        .map(managers::decode)
        .transpose()
        .map_err(ApplyError::Type)?
        .unwrap_or_default();
    let base = live.map_or_else(|| Value::Object(Map::new()), without_managed);
    let (mut obj, entries) = managers::apply(&w, &base, config, entries, force)?;
    managers::encode(&mut obj, entries);
    Ok(obj)
}

/// Keeps `old`'s managedFields when `new` differs from it in their timestamps only
/// (upstream's `IgnoreManagedFieldsTimestampsTransformer`).
pub(crate) fn keep_timestamps_of_noop(old: &Value, new: &mut Value) {
    let untimed = |o: &Value| {
        let mut l = o.pointer("/metadata/managedFields").cloned();
        for e in l.iter_mut().flat_map(|l| l.as_array_mut()).flatten() {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
        l
    };
    let mut a = without_managed(old);
    let mut b = without_managed(new);
    for o in [&mut a, &mut b] {
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
    }
    if a == b && untimed(old) == untimed(new) {
        if let Some(mf) = old.pointer("/metadata/managedFields") {
            crate::object::meta_mut(new).insert("managedFields".into(), mf.clone());
        }
    }
}
