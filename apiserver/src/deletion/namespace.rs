//! Namespace deletion (`pkg/registry/core/namespace/storage`) and the deletion-related part
//! of the NamespaceLifecycle admission plugin.
//!
//! Invariants:
//! - The first delete of a namespace only marks it: `deletionTimestamp`, `status.phase`
//!   Terminating, and the `orphan`/`foregroundDeletion` finalizers the options ask for. Later
//!   deletes answer the namespace unchanged while `spec.finalizers` is non-empty, and remove
//!   it (the generic store's delete) once it is empty.
//! - `PUT namespaces/<name>/finalize` changes `spec.finalizers` and nothing else; when that
//!   leaves both finalizer lists empty on a Terminating namespace, the namespace is removed.
//! - `default`, `kube-system` and `kube-public` cannot be deleted (403); nothing can be
//!   created in a namespace that is missing (404) or Terminating (403).

use serde_json::{json, Value};

use super::{flow, should_delete_during_update, Options, Outcome, FOREGROUND, ORPHAN};
use crate::error::{Cause, Error, GroupResource, Result};
use crate::etcd::Written;
use crate::keys;
use crate::object;
use crate::registry::{parse_rv, Registry};
use crate::resources::ResourceDef;

const IMMORTAL: [&str; 3] = ["default", "kube-system", "kube-public"];
/// The finalizer names that need no `/` (upstream `IsStandardFinalizerName`).
const STANDARD: [&str; 3] = ["kubernetes", ORPHAN, FOREGROUND];

fn namespaces() -> GroupResource {
    GroupResource::new("", "namespaces")
}

/// Refuses a create of `def` named `name` in namespace `ns` when the namespace is missing or
/// Terminating (NamespaceLifecycle).
pub(crate) async fn check_create_namespace(
    reg: &Registry,
    def: &ResourceDef,
    ns: &str,
    name: &str,
) -> Result<()> {
    let (found, _) = reg
        .etcd
        .get(&keys::object_key("namespaces", None, ns))
        .await?;
    let found = found.ok_or_else(|| Error::not_found(&namespaces(), ns))?;
    let nsobj = object::decode_stored(&found.value, found.mod_revision)?;
    if nsobj["status"]["phase"] == "Terminating" {
        return Err(Error::Forbidden {
            resource: def.group_resource(),
            name: name.to_string(),
            detail: format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        });
    }
    Ok(())
}

/// Whether the namespace keeps (or gains) `finalizer` (upstream `shouldHaveOrphanFinalizer`
/// and `shouldHaveDeleteDependentsFinalizer`).
fn should_have(opts: &Options, finalizer: &str, has: bool) -> bool {
    let orphan = finalizer == ORPHAN;
    match (opts.orphan_dependents, opts.propagation) {
        (Some(o), _) => o == orphan,
        (None, Some(p)) => {
            p == if orphan {
                super::Propagation::Orphan
            } else {
                super::Propagation::Foreground
            }
        }
        (None, None) => has,
    }
}

/// The namespace marked Terminating by a first delete.
pub(super) fn mark_terminating(ns: &Value, opts: &Options, now: i64) -> Value {
    let mut new = ns.clone();
    let meta = object::meta_mut(&mut new);
    if !meta.contains_key("deletionTimestamp") {
        meta.insert("deletionTimestamp".into(), json!(crate::time::rfc3339(now)));
    }
    if !new["status"].is_object() {
        new["status"] = json!({});
    }
    new["status"]["phase"] = json!("Terminating");
    let mut fins = super::finalizers(&new);
    let mut changed = false;
    for f in [ORPHAN, FOREGROUND] {
        let has = fins.iter().any(|x| x == f);
        let want = should_have(opts, f, has);
        if want && !has {
            fins.push(f.to_string());
            changed = true;
        } else if has && !want {
            fins.retain(|x| x != f);
            changed = true;
        }
    }
    if changed {
        super::set_finalizers(&mut new, fins);
    }
    new
}

/// `DELETE namespaces/<name>`.
pub(super) async fn delete(
    reg: &Registry,
    def: &ResourceDef,
    name: &str,
    opts: &Options,
) -> Result<Outcome> {
    if IMMORTAL.contains(&name) {
        return Err(Error::Forbidden {
            resource: namespaces(),
            name: name.to_string(),
            detail: "this namespace may not be deleted".into(),
        });
    }
    let key = keys::object_key("namespaces", None, name);
    let (mut kv, _) = reg.etcd.get(&key).await?;
    loop {
        let cur = kv.ok_or_else(|| Error::not_found(&namespaces(), name))?;
        let ns = object::decode_stored(&cur.value, cur.mod_revision)?;
        let uid = object::meta_str(&ns, "uid").unwrap_or_default().to_string();
        let conflict = |detail: String| Error::Conflict {
            resource: namespaces(),
            name: name.to_string(),
            detail,
        };
        if let Some(want) = opts.uid.as_deref().filter(|u| *u != uid) {
            return Err(conflict(format!(
                "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
            )));
        }
        let rv = cur.mod_revision.to_string();
        if let Some(want) = opts.resource_version.as_deref().filter(|r| *r != rv) {
            return Err(conflict(format!(
                "Precondition failed: ResourceVersion in precondition: {want}, \
                 ResourceVersion in object meta: {rv}"
            )));
        }
        if object::meta_str(&ns, "deletionTimestamp").is_none() {
            let mut new = mark_terminating(&ns, opts, crate::time::now_unix());
            if opts.dry_run {
                return Ok(Outcome::Pending(new));
            }
            match reg
                .etcd
                .put_if(&key, object::encode_for_storage(&new), cur.mod_revision)
                .await?
            {
                Written::At(at) => {
                    object::set_rv(&mut new, at);
                    return Ok(Outcome::Pending(new));
                }
                Written::Stale(now) => {
                    kv = now;
                    continue;
                }
            }
        }
        if ns["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
        {
            return Ok(Outcome::Pending(ns));
        }
        let mut opts = opts.clone();
        opts.uid = Some(uid);
        return flow::store_delete(reg, def, None, name, &opts).await;
    }
}

/// `PUT namespaces/<name>/finalize`: sets `spec.finalizers` from `body`. Answers the
/// namespace as updated (or, when that removed it, as it would have been).
pub(crate) async fn finalize(
    reg: &Registry,
    def: &ResourceDef,
    name: &str,
    body: &Value,
    dry_run: bool,
) -> Result<Value> {
    match object::meta_str(body, "name") {
        Some(n) if n == name => {}
        Some(n) if !n.is_empty() => {
            return Err(Error::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
        _ => return Err(Error::BadRequest("name is required".into())),
    }
    let wanted: Vec<Value> = body["spec"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut causes = Vec::new();
    for (i, f) in wanted.iter().enumerate() {
        let field = format!("spec.finalizers[{i}]");
        match f.as_str() {
            Some(s) if s.contains('/') || STANDARD.contains(&s) => {}
            _ => causes.push(Cause::invalid(
                &field,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            )),
        }
    }
    if !causes.is_empty() {
        return Err(Error::Invalid {
            group: String::new(),
            kind: "Namespace".into(),
            name: name.to_string(),
            causes,
        });
    }
    let precondition = parse_rv(object::meta_str(body, "resourceVersion"))?;
    let key = keys::object_key("namespaces", None, name);
    let (mut kv, _) = reg.etcd.get(&key).await?;
    loop {
        let cur = kv.ok_or_else(|| Error::not_found(&namespaces(), name))?;
        if precondition.is_some_and(|p| p != cur.mod_revision) {
            return Err(Error::stale(&namespaces(), name));
        }
        let old = object::decode_stored(&cur.value, cur.mod_revision)?;
        let mut new = old.clone();
        if !new["spec"].is_object() {
            new["spec"] = json!({});
        }
        match new["spec"].as_object_mut() {
            Some(spec) if wanted.is_empty() => {
                spec.remove("finalizers");
            }
            Some(spec) => {
                spec.insert("finalizers".into(), json!(wanted));
            }
            None => {}
        }
        if dry_run {
            return Ok(new);
        }
        if should_delete_during_update(def, &old, &new) {
            match flow::delete_during_update(reg, def, &key, cur.mod_revision, &old).await? {
                Some(_) => return Ok(new),
                None => {
                    kv = reg.etcd.get(&key).await?.0;
                    continue;
                }
            }
        }
        let data = object::encode_for_storage(&new);
        if data == cur.value.as_ref() {
            return Ok(old);
        }
        match reg.etcd.put_if(&key, data, cur.mod_revision).await? {
            Written::At(at) => {
                object::set_rv(&mut new, at);
                return Ok(new);
            }
            Written::Stale(now) => kv = now,
        }
    }
}
