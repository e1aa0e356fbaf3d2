//! The generic registry: get, list, create, update and delete of any kind over the etcd API,
//! with kube-apiserver's resourceVersion rules (`storage/etcd3/store.go`,
//! reference/apiserver.md §2).
//!
//! Invariants:
//! - Optimistic concurrency only: a write names the mod_revision it was computed from. An
//!   update whose body carries a resourceVersion fails with 409 Conflict when the stored one
//!   differs; one without is retried on a fresh read (upstream `GuaranteedUpdate`).
//! - An update that changes no byte is not written (the resourceVersion stays).
//! - An update that empties the finalizers of an object marked for deletion removes it
//!   instead (`crate::deletion`, which owns every other removal too).
//! - Lists read one consistent revision: the first page fixes it and continue tokens carry
//!   it; a compacted revision answers 410 Expired (with the inconsistent-continue token when
//!   paging).
//! - A resourceVersion newer than the store's is "Too large resource version" (504).
//! - Reads go to the watch cache whenever upstream's rules allow (`cache::read`), and to
//!   the store otherwise; writes always go to the store.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::cache::Caches;
use crate::error::{Cause, Error, Result};
use crate::etcd::{Etcd, ReadError, Written};
use crate::keys;
use crate::object;
use crate::resources::{self, ResourceDef};
use crate::selectors::{FieldSelector, LabelSelector};

const LIST_TOO_OLD: &str = "The resourceVersion for the provided list is too old.";
const CONTINUE_TOO_OLD: &str = "The provided continue parameter is too old to display a \
    consistent list result. You can start a new list without the continue parameter, or use \
    the continue token in this response to retrieve the remainder of the results. Continuing \
    with the provided token results in an inconsistent list - objects that were created, \
    modified, or deleted between the time the first chunk was returned and now may show up in \
    the list.";
/// Upstream's cap on how far a filtered list grows its etcd page size.
const MAX_PAGE: i64 = 10_000;

/// A parsed resourceVersion parameter (unset, "0" or a revision).
pub(crate) fn parse_rv(rv: Option<&str>) -> Result<Option<i64>> {
    match rv {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<u64>()
            .map(|v| Some(v as i64))
            .map_err(|e| Error::BadRequest(format!("invalid resource version: {s:?}: {e}"))),
    }
}

/// What a list asks for.
#[derive(Default)]
pub(crate) struct ListOptions {
    pub(crate) resource_version: Option<String>,
    pub(crate) resource_version_match: Option<String>,
    pub(crate) limit: i64,
    pub(crate) continue_token: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    /// The value of an exact `spec.nodeName=` term (pods; the cache's index).
    pub(crate) node_name: Option<String>,
}

fn list_options_invalid(causes: Vec<Cause>) -> Error {
    Error::Invalid {
        group: "meta.k8s.io".into(),
        kind: "ListOptions".into(),
        name: String::new(),
        causes,
    }
}

impl ListOptions {
    /// apimachinery's `ValidateListOptions` for a list (not a watch).
    pub(crate) fn validate(&self) -> Result<()> {
        let rv = self.resource_version.as_deref().unwrap_or("");
        match self.resource_version_match.as_deref() {
            None | Some("") => Ok(()),
            Some(m @ ("NotOlderThan" | "Exact")) => {
                let forbid = |d: &str| Err(list_options_invalid(vec![Cause::forbidden("resourceVersionMatch", d)]));
                if rv.is_empty() {
                    forbid("resourceVersionMatch is forbidden unless resourceVersion is provided")
                } else if self.continue_token.is_some() {
                    forbid("resourceVersionMatch is forbidden when continue is provided")
                } else if m == "Exact" && rv == "0" {
                    forbid("resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"")
                } else {
                    Ok(())
                }
            }
            Some(other) => Err(list_options_invalid(vec![Cause {
                reason: "FieldValueNotSupported",
                field: "resourceVersionMatch".into(),
                message: format!(
                    "Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""
                ),
            }])),
        }
    }
}

/// One page of a list.
pub(crate) struct ListPage {
    pub(crate) items: Vec<Value>,
    pub(crate) revision: i64,
    pub(crate) continue_token: Option<String>,
    pub(crate) remaining: Option<i64>,
}

#[derive(Clone)]
pub(crate) struct Registry {
    pub(crate) etcd: Etcd,
    pub(crate) cache: Arc<Caches>,
}

fn key_of(def: &ResourceDef, ns: Option<&str>, name: &str) -> String {
    keys::object_key(def.resource, if def.namespaced { ns } else { None }, name)
}

fn too_large(requested: i64, current: i64) -> Error {
    Error::TooLargeResourceVersion { requested, current }
}

impl Registry {
    /// A registry on `etcd` with a watch cache per resource (stopped when the last clone
    /// goes).
    pub(crate) fn new(etcd: Etcd) -> Registry {
        let cache = Arc::new(Caches::start(&etcd));
        Registry { etcd, cache }
    }

    /// One object. `rv`: unset reads the latest from the store, "0" whatever the cache
    /// has, a revision at least that.
    pub(crate) async fn get(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        rv: Option<&str>,
    ) -> Result<Value> {
        let min = parse_rv(rv)?;
        let key = key_of(def, ns, name);
        if let Some(cacher) = self.cache.get(def) {
            if let Some(found) = cacher.get(&self.etcd, &key, min).await? {
                return found.ok_or_else(|| Error::not_found(&def.group_resource(), name));
            }
        }
        let (kv, current) = self.etcd.get(&key).await?;
        if let Some(m) = min.filter(|m| *m > current) {
            return Err(too_large(m, current));
        }
        let kv = kv.ok_or_else(|| Error::not_found(&def.group_resource(), name))?;
        object::decode_stored(&kv.value, kv.mod_revision)
    }

    /// A page of objects under `ns` (None: all namespaces, or cluster-scoped), from the
    /// cache when it may answer.
    pub(crate) async fn list(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListPage> {
        opts.validate()?;
        if let Some(cacher) = self.cache.get(def) {
            let prefix = keys::list_prefix(def.resource, if def.namespaced { ns } else { None });
            if let Some(page) = cacher.list(&self.etcd, def, &prefix, opts).await? {
                return Ok(page);
            }
        }
        self.list_from_store(def, ns, opts).await
    }

    /// A page of objects read from the store.
    pub(crate) async fn list_from_store(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListPage> {
        opts.validate()?;
        let prefix = keys::list_prefix(def.resource, if def.namespaced { ns } else { None });
        let end = keys::prefix_end(prefix.as_bytes());
        let from_rv = parse_rv(opts.resource_version.as_deref())?;
        let mut start = prefix.clone();
        let mut with_rev = 0i64;
        let mut continue_key = None;
        if let Some(token) = &opts.continue_token {
            let (key, crv) = keys::decode_continue(token, &prefix)?;
            if from_rv.is_some_and(|v| v != 0) {
                return Err(Error::BadRequest(
                    "specifying resource version is not allowed when using continue".into(),
                ));
            }
            start = key.clone();
            continue_key = Some(key);
            with_rev = crv.max(0);
        } else if let Some(rv) = from_rv {
            match opts.resource_version_match.as_deref() {
                Some("Exact") => with_rev = rv,
                Some("NotOlderThan") => {}
                _ if opts.limit > 0 && rv > 0 => with_rev = rv,
                _ => {}
            }
        }
        let filtering = !opts.labels.is_empty() || !opts.fields.is_empty();
        let mut limit = opts.limit.max(0);
        let mut items = Vec::new();
        let (mut has_more, mut last_key, mut count);
        last_key = Vec::new();
        loop {
            let resp = match self
                .etcd
                .range(start.as_bytes(), &end, limit, with_rev)
                .await
            {
                Ok(r) => r,
                Err(ReadError::Compacted) => {
                    return Err(match &continue_key {
                        Some(k) => Error::Expired {
                            message: CONTINUE_TOO_OLD.into(),
                            continue_token: Some(keys::encode_continue(k, &prefix, -1)),
                        },
                        None => Error::Expired {
                            message: LIST_TOO_OLD.into(),
                            continue_token: None,
                        },
                    })
                }
                Err(ReadError::Future) => {
                    let current = self.etcd.current_revision().await?;
                    return Err(too_large(with_rev, current));
                }
                Err(ReadError::Other(e)) => return Err(e),
            };
            let current = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
            if let Some(m) = from_rv.filter(|m| *m > current) {
                return Err(too_large(m, current));
            }
            has_more = resp.more;
            count = resp.count;
            if with_rev == 0 {
                with_rev = current;
            }
            for kv in resp.kvs {
                if opts.limit > 0 && items.len() as i64 >= opts.limit {
                    has_more = true;
                    break;
                }
                last_key = kv.key.to_vec();
                let obj = object::decode_stored(&kv.value, kv.mod_revision)?;
                if opts.labels.matches(&obj) && opts.fields.matches(def, &obj) {
                    items.push(obj);
                }
            }
            if !has_more || opts.limit == 0 || items.len() as i64 >= opts.limit {
                break;
            }
            // Filtered out too much: fetch more, doubling the page as upstream does.
            limit = (limit * 2).min(MAX_PAGE).max(limit);
            let mut next = last_key.clone();
            next.push(0);
            start = String::from_utf8_lossy(&next).into_owned();
        }
        let (continue_token, remaining) = if has_more {
            let mut next = String::from_utf8_lossy(&last_key).into_owned();
            next.push('\0');
            let remaining = (!filtering).then(|| count - opts.limit);
            (
                Some(keys::encode_continue(&next, &prefix, with_rev)),
                remaining,
            )
        } else {
            (None, None)
        };
        Ok(ListPage {
            items,
            revision: with_rev,
            continue_token,
            remaining,
        })
    }

    /// Stores a new object; `obj` has been through [`object::prepare_create`].
    pub(crate) async fn create(&self, def: &ResourceDef, obj: Value) -> Result<Value> {
        let name = object::meta_str(&obj, "name")
            .unwrap_or_default()
            .to_string();
        let ns = object::meta_str(&obj, "namespace").map(str::to_string);
        if def.namespaced {
            let ns = ns.clone().unwrap_or_default();
            crate::deletion::check_create_namespace(self, def, &ns, &name).await?;
        }
        let key = key_of(def, ns.as_deref(), &name);
        match self
            .etcd
            .put_if(&key, object::encode_for_storage(&obj), 0)
            .await?
        {
            Written::At(rev) => {
                let mut obj = obj;
                object::set_rv(&mut obj, rev);
                Ok(obj)
            }
            Written::Stale(_) => Err(Error::AlreadyExists {
                resource: def.group_resource(),
                name,
            }),
        }
    }

    /// Read-modify-write of one object: `update` computes the new object from the stored
    /// one. With `precondition` (the client's resourceVersion) a different stored revision
    /// is a Conflict; without, a concurrent write makes it start over.
    pub(crate) async fn update_with(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        precondition: Option<i64>,
        update: impl Fn(&Value) -> Result<Value>,
    ) -> Result<Value> {
        let key = key_of(def, ns, name);
        let (mut kv, _) = self.etcd.get(&key).await?;
        loop {
            let cur = kv.ok_or_else(|| Error::not_found(&def.group_resource(), name))?;
            if precondition.is_some_and(|p| p != cur.mod_revision) {
                return Err(Error::stale(&def.group_resource(), name));
            }
            let old = object::decode_stored(&cur.value, cur.mod_revision)?;
            let new = update(&old)?;
            if crate::deletion::should_delete_during_update(def, &old, &new) {
                // The last finalizer went: the update removes the object.
                match crate::deletion::delete_during_update(self, def, &key, cur.mod_revision, &old)
                    .await?
                {
                    Some(_) => return Ok(new),
                    None => {
                        kv = self.etcd.get(&key).await?.0;
                        continue;
                    }
                }
            }
            let data = object::encode_for_storage(&new);
            if data == cur.value.as_ref() {
                return Ok(old);
            }
            match self.etcd.put_if(&key, data, cur.mod_revision).await? {
                Written::At(rev) => {
                    let mut new = new;
                    object::set_rv(&mut new, rev);
                    return Ok(new);
                }
                Written::Stale(now) => kv = now,
            }
        }
    }

    /// Creates the namespaces every cluster has; those that exist are left alone.
    pub(crate) async fn ensure_namespaces(&self) -> Result<()> {
        let def = resources::find("", "v1", "namespaces").expect("namespaces are served");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let mut obj = json!({"metadata": {"name": name}});
            object::prepare_create(def, &mut obj, None)?;
            match self.create(def, obj).await {
                Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
