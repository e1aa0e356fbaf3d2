//! Deletion as kube-apiserver 1.32 does it (`registry/generic/registry/store.go` `Delete`,
//! `DeleteCollection`, `updateForGracefulDeletionAndFinalizers`; `registry/rest/delete.go`
//! `BeforeDelete`; `pkg/registry/core/pod` `CheckGracefulDelete`;
//! `pkg/registry/core/namespace/storage`).
//!
//! A delete does not always remove the object. It first decides a [`Plan`] from the stored
//! object and the [`Options`]:
//! - **Graceful deletion** (pods only): the pod gets `deletionTimestamp` = now + grace and
//!   `deletionGracePeriodSeconds` = grace, and stays until a delete with a shorter grace (0:
//!   `kubectl delete --grace-period=0 --force`) or the node agent confirms. The grace is the
//!   request's, else the pod's `terminationGracePeriodSeconds`; a pod bound to no node, or
//!   already Succeeded/Failed, gets 0 and goes at once (after the one write that marks it,
//!   so watchers see MODIFIED then DELETED, as upstream). A later delete may only shorten a
//!   pending grace period.
//! - **Finalizers**: an object with finalizers is marked (`deletionTimestamp` = now,
//!   `deletionGracePeriodSeconds` 0) and stays; the update that removes its last finalizer
//!   removes it ([`should_delete_during_update`], called by the registry's update path). While
//!   `deletionTimestamp` is set no finalizer may be added ([`update_causes`]), and clients
//!   can neither set nor change `deletionTimestamp` (`object::prepare_update` keeps the
//!   stored one).
//! - **Propagation**: `Orphan` (or `orphanDependents: true`) puts the `orphan` finalizer on the
//!   object, `Foreground` (or `orphanDependents: false`) `foregroundDeletion`; `Background`
//!   removes both. Without either option the object's own finalizers decide. The garbage
//!   collector that acts on them (and removes them) is a controller's job, not the
//!   apiserver's.
//! - **Preconditions** (`uid`, `resourceVersion`) are checked against the stored object
//!   before anything is written: a mismatch is 409 Conflict with upstream's message.
//! - **dryRun=All** computes everything and writes nothing; the reply is what a real delete
//!   would have answered.
//!
//! Namespaces (`namespace`) never go at once: the first delete moves them to
//! `Terminating`; they are removed when both `spec.finalizers` (cleared through the
//! `/finalize` subresource by the namespace controller, which is not here yet: nothing
//! empties a Terminating namespace) and `metadata.finalizers` are empty. The immortal
//! namespaces cannot be deleted, and nothing may be created in a missing or Terminating
//! namespace (the parts of the NamespaceLifecycle admission plugin that belong to deletion).
//!
//! Invariants: every write is a guarded Txn on the mod_revision the plan was computed from
//! (a concurrent write makes the plan start over); a removal is a guarded delete, so the
//! watch cache sees DELETED carrying the last stored state, and every marking write is an
//! ordinary MODIFIED.

mod flow;
mod namespace;
#[cfg(test)]
mod tests;

use serde_json::{json, Value};

use crate::error::{Cause, Error, GroupResource, Result};
use crate::object;
use crate::request::Query;
use crate::resources::ResourceDef;

pub(crate) use flow::{delete, delete_collection, delete_during_update};
pub(crate) use namespace::{check_create_namespace, finalize};

pub(crate) const ORPHAN: &str = "orphan";
pub(crate) const FOREGROUND: &str = "foregroundDeletion";

/// `DeletionPropagation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Propagation {
    Orphan,
    Background,
    Foreground,
}

/// `metav1.DeleteOptions`, from the body or (when the body is empty) the query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) grace_period_seconds: Option<i64>,
    pub(crate) uid: Option<String>,
    pub(crate) resource_version: Option<String>,
    pub(crate) propagation: Option<Propagation>,
    pub(crate) orphan_dependents: Option<bool>,
    pub(crate) dry_run: bool,
}

fn options_invalid(causes: Vec<Cause>) -> Error {
    Error::Invalid {
        group: "meta.k8s.io".into(),
        kind: "DeleteOptions".into(),
        name: String::new(),
        causes,
    }
}

impl Options {
    /// Parses and validates (apimachinery `ValidateDeleteOptions`) the options of a delete or
    /// deletecollection: the JSON body when there is one, else the query parameters.
    pub(crate) fn parse(body: &[u8], query: &Query) -> Result<Options> {
        let (grace, uid, rv, policy, orphan, dry_run);
        if body.iter().all(u8::is_ascii_whitespace) {
            grace = query.int("gracePeriodSeconds")?;
            (uid, rv) = (None, None);
            policy = query.get("propagationPolicy").map(str::to_string);
            orphan = match query.get("orphanDependents") {
                None => None,
                Some(_) => Some(query.flag("orphanDependents")?),
            };
            dry_run = query.get("dryRun").map(|d| vec![d.to_string()]);
        } else {
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                Error::BadRequest(format!(
                    "the DeleteOptions provided are not valid JSON: {e}"
                ))
            })?;
            let bad = |f: &str| Error::BadRequest(format!("invalid DeleteOptions field {f}"));
            let string = |p: &str| -> Result<Option<String>> {
                match v.pointer(p) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(bad(p)),
                }
            };
            grace = match v.get("gracePeriodSeconds") {
                None | Some(Value::Null) => None,
                Some(g) => Some(g.as_i64().ok_or_else(|| bad("gracePeriodSeconds"))?),
            };
            uid = string("/preconditions/uid")?;
            rv = string("/preconditions/resourceVersion")?;
            policy = string("/propagationPolicy")?;
            orphan = match v.get("orphanDependents") {
                None | Some(Value::Null) => None,
                Some(b) => Some(b.as_bool().ok_or_else(|| bad("orphanDependents"))?),
            };
            dry_run = match v.get("dryRun") {
                None | Some(Value::Null) => None,
                Some(Value::Array(a)) => Some(
                    a.iter()
                        .map(|d| d.as_str().map(str::to_string).ok_or_else(|| bad("dryRun")))
                        .collect::<Result<Vec<_>>>()?,
                ),
                Some(_) => return Err(bad("dryRun")),
            };
        }
        let mut causes = Vec::new();
        if orphan.is_some() {
            if let Some(p) = &policy {
                causes.push(Cause::invalid(
                    "propagationPolicy",
                    &json!(p),
                    "orphanDependents and deletionPropagation cannot be both set",
                ));
            }
        }
        let propagation = match policy.as_deref() {
            None => None,
            Some("Orphan") => Some(Propagation::Orphan),
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some(other) => {
                causes.push(Cause {
                    reason: "FieldValueNotSupported",
                    field: "propagationPolicy".into(),
                    message: format!(
                        "Unsupported value: {other:?}: supported values: \"Foreground\", \
                         \"Background\", \"Orphan\", \"nil\""
                    ),
                });
                None
            }
        };
        let dry_run = dry_run.unwrap_or_default();
        if dry_run.iter().any(|d| d != "All") {
            let shown: Vec<String> = dry_run.iter().map(|d| format!("{d:?}")).collect();
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: "dryRun".into(),
                message: format!(
                    "Unsupported value: []string{{{}}}: supported values: \"All\"",
                    shown.join(", ")
                ),
            });
        }
        if !causes.is_empty() {
            return Err(options_invalid(causes));
        }
        Ok(Options {
            grace_period_seconds: grace,
            uid,
            resource_version: rv,
            propagation,
            orphan_dependents: orphan,
            dry_run: !dry_run.is_empty(),
        })
    }
}

/// What a delete does to the stored object.
#[derive(Debug, PartialEq)]
pub(crate) enum Plan {
    /// A graceful deletion is under way and this request does not shorten it: nothing.
    Pending,
    /// Remove the object as stored.
    DeleteNow,
    /// Write `obj` (deletion marks, finalizers); then remove it when `then_delete`.
    Update { obj: Value, then_delete: bool },
}

pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(obj: &mut Value, f: Vec<String>) {
    let meta = object::meta_mut(obj);
    if f.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), json!(f));
    }
}

fn deletion_grace(obj: &Value) -> Option<i64> {
    obj["metadata"]["deletionGracePeriodSeconds"].as_i64()
}

fn bump_generation(obj: &mut Value) {
    if let Some(g) = obj["metadata"]["generation"].as_i64().filter(|g| *g > 0) {
        obj["metadata"]["generation"] = json!(g + 1);
    }
}

/// Only pods delete gracefully (their strategy implements `CheckGracefulDelete`).
fn graceful_kind(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.resource == "pods"
}

/// The 409 a failed precondition answers (upstream `BeforeDelete`: the resource named by
/// its kind).
pub(crate) fn check_preconditions(def: &ResourceDef, obj: &Value, opts: &Options) -> Result<()> {
    let conflict = |detail: String| Error::Conflict {
        resource: GroupResource::new(def.group, def.kind),
        name: object::meta_str(obj, "name")
            .unwrap_or_default()
            .to_string(),
        detail,
    };
    let uid = object::meta_str(obj, "uid").unwrap_or_default();
    if let Some(want) = opts.uid.as_deref().filter(|u| *u != uid) {
        return Err(conflict(format!(
            "the UID in the precondition ({want}) does not match the UID in record ({uid}). \
             The object might have been deleted and then recreated"
        )));
    }
    let rv = object::meta_str(obj, "resourceVersion").unwrap_or_default();
    if let Some(want) = opts.resource_version.as_deref().filter(|r| *r != rv) {
        return Err(conflict(format!(
            "the ResourceVersion in the precondition ({want}) does not match the \
             ResourceVersion in record ({rv}). The object might have been modified"
        )));
    }
    Ok(())
}

/// Upstream `BeforeDelete` on `obj`: returns (graceful, pending) and sets the deletion marks
/// of a graceful deletion. `now` is in Unix seconds.
fn before_delete(def: &ResourceDef, obj: &mut Value, opts: &Options, now: i64) -> (bool, bool) {
    let requested = opts.grace_period_seconds.map(|g| if g < 0 { 1 } else { g });
    if deletion_grace(obj).is_some_and(|g| g < 0) {
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(1);
    }
    if !graceful_kind(def) {
        return (false, false);
    }
    let ts = object::meta_str(obj, "deletionTimestamp").and_then(crate::time::parse_rfc3339);
    if let Some(ts) = ts {
        let current = match deletion_grace(obj) {
            None | Some(0) => return (false, false),
            Some(g) => g,
        };
        return match requested {
            Some(p) if p < current => {
                let meta = object::meta_mut(obj);
                meta.insert(
                    "deletionTimestamp".into(),
                    json!(crate::time::rfc3339(ts - current + p)),
                );
                meta.insert("deletionGracePeriodSeconds".into(), json!(p));
                (true, false)
            }
            _ => (false, true),
        };
    }
    // The pod strategy's CheckGracefulDelete.
    let mut period = requested
        .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(0);
    if obj["spec"]["nodeName"].as_str().unwrap_or("").is_empty() {
        period = 0;
    }
    if matches!(
        obj["status"]["phase"].as_str(),
        Some("Failed" | "Succeeded")
    ) {
        period = 0;
    }
    if period < 0 {
        period = 1;
    }
    let meta = object::meta_mut(obj);
    meta.insert(
        "deletionTimestamp".into(),
        json!(crate::time::rfc3339(now + period)),
    );
    meta.insert("deletionGracePeriodSeconds".into(), json!(period));
    bump_generation(obj);
    (true, false)
}

/// The finalizers the garbage collector needs after this delete, when they change
/// (upstream `deletionFinalizersForGarbageCollection`; every kind here defaults to
/// background deletion).
pub(crate) fn gc_finalizers(opts: &Options, current: &[String]) -> Option<Vec<String>> {
    let first = current
        .iter()
        .find(|f| *f == ORPHAN || *f == FOREGROUND)
        .map(String::as_str);
    let orphan = match (opts.orphan_dependents, opts.propagation) {
        (Some(o), _) => o,
        (None, Some(p)) => p == Propagation::Orphan,
        (None, None) => first == Some(ORPHAN),
    };
    let foreground = match (opts.orphan_dependents, opts.propagation) {
        (Some(_), _) => false,
        (None, Some(p)) => p == Propagation::Foreground,
        (None, None) => first == Some(FOREGROUND),
    };
    let mut new: Vec<String> = current
        .iter()
        .filter(|f| *f != ORPHAN && *f != FOREGROUND)
        .cloned()
        .collect();
    if orphan {
        new.push(ORPHAN.into());
    }
    if foreground {
        new.push(FOREGROUND.into());
    }
    let set = |v: &[String]| v.iter().cloned().collect::<std::collections::BTreeSet<_>>();
    (set(&new) != set(current)).then_some(new)
}

/// Marks an object whose finalizers keep it (upstream `markAsDeleting`).
fn mark_as_deleting(obj: &mut Value, now: i64) {
    let ts = object::meta_str(obj, "deletionTimestamp").and_then(crate::time::parse_rfc3339);
    if ts.is_none() {
        bump_generation(obj);
    }
    let meta = object::meta_mut(obj);
    if ts.is_none_or(|t| t > now) {
        meta.insert("deletionTimestamp".into(), json!(crate::time::rfc3339(now)));
    }
    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
}

/// What deleting `stored` with `opts` does (upstream `Delete` with
/// `updateForGracefulDeletionAndFinalizers`), at `now` (Unix seconds).
pub(crate) fn plan(def: &ResourceDef, stored: &Value, opts: &Options, now: i64) -> Plan {
    let mut obj = stored.clone();
    let (graceful, pending) = before_delete(def, &mut obj, opts, now);
    if pending {
        return Plan::Pending;
    }
    let current = finalizers(&obj);
    let gc = gc_finalizers(opts, &current);
    if !graceful && current.is_empty() && gc.is_none() {
        return Plan::DeleteNow;
    }
    if let Some(f) = gc {
        set_finalizers(&mut obj, f);
    }
    let pending_finalizers = !finalizers(&obj).is_empty();
    if !graceful {
        if !pending_finalizers {
            return Plan::DeleteNow;
        }
        mark_as_deleting(&mut obj, now);
        return Plan::Update {
            obj,
            then_delete: false,
        };
    }
    let then_delete = !pending_finalizers && deletion_grace(&obj).unwrap_or(0) == 0;
    Plan::Update { obj, then_delete }
}

/// Whether an update from `old` to `new` removes the object instead (upstream
/// `ShouldDeleteDuringUpdate`, and for namespaces `ShouldDeleteNamespaceDuringUpdate`): the
/// last finalizer went from an object marked for deletion with no grace period pending.
pub(crate) fn should_delete_during_update(def: &ResourceDef, old: &Value, new: &Value) -> bool {
    if !finalizers(new).is_empty() || object::meta_str(old, "deletionTimestamp").is_none() {
        return false;
    }
    if def.group.is_empty()
        && def.resource == "namespaces"
        && new["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    {
        return false;
    }
    deletion_grace(old).unwrap_or(0) == 0
}

/// The metadata errors of an update that deletion adds (upstream `ValidateObjectMetaUpdate`):
/// no new finalizers on an object being deleted.
pub(crate) fn update_causes(old: &Value, new: &Value) -> Vec<Cause> {
    if object::meta_str(old, "deletionTimestamp").is_none() {
        return Vec::new();
    }
    let before = finalizers(old);
    let mut extra: Vec<String> = finalizers(new)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    extra.sort();
    extra.dedup();
    if extra.is_empty() {
        return Vec::new();
    }
    let shown: Vec<String> = extra.iter().map(|f| format!("{f:?}")).collect();
    vec![Cause::forbidden(
        "metadata.finalizers",
        &format!(
            "no new finalizers can be added if the object is being deleted, found new \
             finalizers []string{{{}}}",
            shown.join(", ")
        ),
    )]
}

/// What a delete answers when it removed the object: the object itself for pods
/// (`ReturnDeletedObject`), a `Status` of Success naming it for everything else.
pub(crate) fn deleted_reply(def: &ResourceDef, deleted: Value) -> Value {
    if def.group.is_empty() && def.resource == "pods" {
        return deleted;
    }
    let mut details = json!({
        "name": object::meta_str(&deleted, "name").unwrap_or_default(),
        "kind": def.resource,
        "uid": object::meta_str(&deleted, "uid").unwrap_or_default(),
    });
    if !def.group.is_empty() {
        details["group"] = json!(def.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": details})
}

/// The outcome of one delete.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Gone: its last state, with the deletion's revision.
    Deleted(Value),
    /// Still stored (graceful deletion or finalizers pending): its state now.
    Pending(Value),
}

impl Outcome {
    /// The HTTP code and body of the reply (upstream's delete handler: 200, or 202 when the
    /// object stays and the client asked `orphanDependents: false`).
    pub(crate) fn reply(self, def: &ResourceDef, opts: &Options) -> (u16, Value) {
        match self {
            Outcome::Deleted(o) => (200, deleted_reply(def, o)),
            Outcome::Pending(o) if opts.orphan_dependents == Some(false) => (202, o),
            Outcome::Pending(o) => (200, o),
        }
    }
}
