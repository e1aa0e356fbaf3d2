//! The store side of a delete: read, plan (`super::plan`), then guarded writes, starting
//! over when the object changed underneath; and deletecollection, one delete per listed
//! object with the same options.

use serde_json::Value;

use super::{check_preconditions, namespace, plan, Options, Outcome, Plan};
use crate::error::{Error, Result};
use crate::etcd::Written;
use crate::keys;
use crate::object;
use crate::registry::{ListOptions, ListPage, Registry};
use crate::resources::ResourceDef;

/// Deletes (or marks for deletion) one object.
pub(crate) async fn delete(
    reg: &Registry,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    opts: &Options,
) -> Result<Outcome> {
    if def.group.is_empty() && def.resource == "namespaces" {
        return namespace::delete(reg, def, name, opts).await;
    }
    store_delete(reg, def, ns, name, opts).await
}

/// The generic store's delete (upstream `Store.Delete`).
pub(super) async fn store_delete(
    reg: &Registry,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    opts: &Options,
) -> Result<Outcome> {
    let key = keys::object_key(def.resource, if def.namespaced { ns } else { None }, name);
    let (mut kv, _) = reg.etcd.get(&key).await?;
    loop {
        let cur = kv.ok_or_else(|| Error::not_found(&def.group_resource(), name))?;
        let stored = object::decode_stored(&cur.value, cur.mod_revision)?;
        check_preconditions(def, &stored, opts)?;
        let now = crate::time::now_unix();
        let (rev, last) = match plan(def, &stored, opts, now) {
            Plan::Pending => return Ok(Outcome::Pending(stored)),
            Plan::DeleteNow => (cur.mod_revision, stored),
            Plan::Update { obj, then_delete } => {
                if opts.dry_run {
                    return Ok(if then_delete {
                        Outcome::Deleted(obj)
                    } else {
                        Outcome::Pending(obj)
                    });
                }
                let data = object::encode_for_storage(&obj);
                let rev = if data == cur.value.as_ref() {
                    cur.mod_revision
                } else {
                    match reg.etcd.put_if(&key, data, cur.mod_revision).await? {
                        Written::At(rev) => rev,
                        Written::Stale(now) => {
                            kv = now;
                            continue;
                        }
                    }
                };
                let mut obj = obj;
                object::set_rv(&mut obj, rev);
                if !then_delete {
                    return Ok(Outcome::Pending(obj));
                }
                (rev, obj)
            }
        };
        if opts.dry_run {
            return Ok(Outcome::Deleted(last));
        }
        match reg.etcd.delete_if(&key, rev).await? {
            Written::At(at) => {
                let mut last = last;
                object::set_rv(&mut last, at);
                crate::defaults::clusterip::after_delete(&reg.etcd, def, &last).await;
                return Ok(Outcome::Deleted(last));
            }
            // Someone else removed it after our marking write: upstream tolerates that.
            Written::Stale(None) if rev != cur.mod_revision => return Ok(Outcome::Deleted(last)),
            Written::Stale(now) => kv = now,
        }
    }
}

/// Removes an object whose update emptied its finalizers (upstream `deleteWithoutFinalizers`),
/// if it is still at `rev`. None: it changed in between (the caller starts over).
pub(crate) async fn delete_during_update(
    reg: &Registry,
    def: &ResourceDef,
    key: &str,
    rev: i64,
    last: &Value,
) -> Result<Option<i64>> {
    match reg.etcd.delete_if(key, rev).await? {
        Written::At(at) => {
            crate::defaults::clusterip::after_delete(&reg.etcd, def, last).await;
            Ok(Some(at))
        }
        Written::Stale(None) => Ok(Some(rev)),
        Written::Stale(Some(_)) => Ok(None),
    }
}

/// `DELETE` on a collection: lists with the request's selectors, then deletes each object
/// with the same options (NotFound skipped). Answers the list of what was deleted or marked,
/// each in its state after this request.
pub(crate) async fn delete_collection(
    reg: &Registry,
    def: &ResourceDef,
    ns: Option<&str>,
    list: &ListOptions,
    opts: &Options,
) -> Result<ListPage> {
    let page = reg.list(def, ns, list).await?;
    let mut done = Vec::new();
    for item in page.items {
        let name = object::meta_str(&item, "name")
            .unwrap_or_default()
            .to_string();
        let item_ns = object::meta_str(&item, "namespace").map(str::to_string);
        match delete(reg, def, item_ns.as_deref(), &name, opts).await {
            Ok(Outcome::Deleted(o) | Outcome::Pending(o)) => done.push(o),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let rev = done
        .iter()
        .filter_map(|o| {
            crate::registry::parse_rv(object::meta_str(o, "resourceVersion"))
                .ok()
                .flatten()
        })
        .max();
    Ok(ListPage {
        items: done,
        revision: rev.unwrap_or(page.revision).max(page.revision),
        continue_token: None,
        remaining: None,
    })
}
