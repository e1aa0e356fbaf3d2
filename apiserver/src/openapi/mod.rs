//! OpenAPI as kube-apiserver 1.32 serves it: the `/openapi/v3` index, one v3 document per
//! group-version, and the all-in-one Swagger 2.0 document at `/openapi/v2`.
//!
//! A group-version document has `paths` for every URL of its resources (`paths`: upstream's
//! operation ids, actions, group-version-kinds, and the `dryRun`/`fieldManager`/
//! `fieldValidation` parameters on writes) and `components.schemas` for each served kind, its
//! list, the meta types the operations use, and everything they reference (`schemas`: the
//! structure from `k8s-openapi`, upstream's `x-kubernetes-*` extensions overlaid). This is what
//! kubectl needs: `explain` walks the schemas from the kind whose
//! `x-kubernetes-group-version-kind` matches; `create`/`apply`/`edit` find `fieldValidation`
//! on the PATCH operation and leave unknown-field detection to the server
//! (`crate::validation`, which reads the same catalog); `apply` takes strategic-merge
//! metadata from the patch extensions.
//!
//! Invariants:
//! - Documents are computed once, serialized once, and served with an ETag (their hash); the
//!   index lists exactly the served group-versions, each `serverRelativeURL` carrying that
//!   hash, so a client's cached copy is valid exactly while its hash is current (a stale
//!   `?hash=` is redirected to the current one).
//! - `/openapi/v2` is JSON only: a client that accepts nothing but the protobuf encoding gets
//!   406 Not Acceptable, which client-go treats like a server without the document.

mod paths;
pub(crate) mod schemas;
mod v2;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use bytes::Bytes;
use hyper::{header, Response};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::handlers::full;
use crate::resources;
use crate::server::Body;

/// `info.version` of every document.
const VERSION: &str = "v1.32.0-keelson";

/// A document as served: its bytes and their hash.
struct Served {
    body: Bytes,
    hash: String,
}

impl Served {
    fn new(v: &Value) -> Served {
        let body = serde_json::to_vec(v).unwrap_or_default();
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            body.hash(&mut h);
            format!("{:016X}", h.finish())
        };
        Served {
            body: body.into(),
            hash,
        }
    }
}

struct Docs {
    /// By index key (`api/v1`, `apis/apps/v1`).
    v3: BTreeMap<String, Served>,
    index: Served,
    v2: Served,
}

/// `api/v1` or `apis/<group>/v1`: the index key and URL suffix of a group-version.
fn gv_path(group: &str) -> String {
    if group.is_empty() {
        "api/v1".into()
    } else {
        format!("apis/{group}/v1")
    }
}

fn served_groups() -> Vec<&'static str> {
    std::iter::once("").chain(resources::groups()).collect()
}

/// The paths of one group-version.
fn gv_paths(group: &str) -> Map<String, Value> {
    let catalog = schemas::catalog();
    let mut p = Map::new();
    paths::add_resource_list(&mut p, group);
    for r in resources::of_group(group, "v1") {
        paths::add_resource(&mut p, catalog, r);
    }
    p
}

/// The schema names a group-version's document carries.
fn gv_schema_names(group: &str) -> std::collections::BTreeSet<String> {
    let catalog = schemas::catalog();
    let mut roots: Vec<String> = vec![
        schemas::STATUS.into(),
        schemas::DELETE_OPTIONS.into(),
        schemas::WATCH_EVENT.into(),
        schemas::PATCH.into(),
        schemas::RESOURCE_LIST.into(),
    ];
    for r in resources::of_group(group, "v1") {
        if let Some(k) = catalog.kind(r.group, r.kind) {
            roots.push(format!("{k}List"));
            roots.push(k.to_string());
        }
    }
    catalog.closure(roots.iter().map(String::as_str))
}

/// The v3 document of `group`/v1.
fn document_for(group: &str) -> Value {
    let catalog = schemas::catalog();
    let mut components = Map::new();
    for n in gv_schema_names(group) {
        if let Some(s) = catalog.get(&n) {
            components.insert(n, s.clone());
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": VERSION},
        "paths": gv_paths(group),
        "components": {"schemas": components},
    })
}

fn docs() -> &'static Docs {
    static DOCS: LazyLock<Docs> = LazyLock::new(|| {
        let mut v3 = BTreeMap::new();
        let mut index = Map::new();
        let mut all_paths = Map::new();
        let mut all_names = std::collections::BTreeSet::new();
        for g in served_groups() {
            let doc = Served::new(&document_for(g));
            let key = gv_path(g);
            index.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", doc.hash)}),
            );
            v3.insert(key, doc);
            all_paths.extend(gv_paths(g));
            all_names.extend(gv_schema_names(g));
        }
        let swagger = v2::document(schemas::catalog(), &all_paths, all_names);
        Docs {
            v3,
            index: Served::new(&json!({"paths": index})),
            v2: Served::new(&swagger),
        }
    });
    &DOCS
}

/// A 200 with `served`'s bytes and ETag, or 304 when the client holds them already.
fn reply(served: &Served, if_none_match: Option<&str>) -> Response<Body> {
    let etag = format!("\"{}\"", served.hash);
    let mut r = if if_none_match == Some(etag.as_str()) {
        full(304, "application/json", Bytes::new())
    } else {
        full(200, "application/json", served.body.clone())
    };
    if let Ok(v) = etag.parse() {
        r.headers_mut().insert(header::ETAG, v);
    }
    r.headers_mut()
        .insert(header::VARY, header::HeaderValue::from_static("Accept"));
    r
}

/// `GET /openapi/v3`.
pub(crate) fn serve_index(if_none_match: Option<&str>) -> Response<Body> {
    reply(&docs().index, if_none_match)
}

/// `GET /openapi/v3/<api/v1 | apis/group/v1>[?hash=…]`.
pub(crate) fn serve_document(
    gv: &str,
    hash: Option<&str>,
    if_none_match: Option<&str>,
) -> Result<Response<Body>> {
    let doc = docs().v3.get(gv).ok_or(Error::RouteNotFound)?;
    match hash {
        Some(h) if h != doc.hash => {
            let mut r = full(301, "text/plain", Bytes::new());
            let location = format!("/openapi/v3/{gv}?hash={}", doc.hash);
            if let Ok(v) = location.parse() {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Ok(r)
        }
        Some(_) => {
            let mut r = reply(doc, if_none_match);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("public, immutable"),
            );
            Ok(r)
        }
        None => Ok(reply(doc, if_none_match)),
    }
}

/// Whether an `Accept` header admits a JSON reply.
fn accepts_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return true;
    };
    accept.split(',').any(|e| {
        let media = e.split(';').next().unwrap_or("").trim();
        matches!(media, "application/json" | "application/*" | "*/*")
    })
}

/// `GET /openapi/v2`: JSON, or 406 for a protobuf-only client.
pub(crate) fn serve_v2(accept: Option<&str>, if_none_match: Option<&str>) -> Response<Body> {
    if !accepts_json(accept) {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "only application/json is served for /openapi/v2",
            "reason": "NotAcceptable", "code": 406,
        });
        return full(
            406,
            "application/json",
            serde_json::to_vec(&status).unwrap_or_default(),
        );
    }
    reply(&docs().v2, if_none_match)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(gv: &str) -> Value {
        serde_json::from_slice(&docs().v3[gv].body).unwrap()
    }

    #[test]
    fn index_points_at_every_served_group_version() {
        let i: Value = serde_json::from_slice(&docs().index.body).unwrap();
        let paths = i["paths"].as_object().unwrap();
        assert!(paths.contains_key("api/v1") && paths.contains_key("apis/apps/v1"));
        assert_eq!(paths.len(), resources::groups().len() + 1);
        for (p, entry) in paths {
            let url = entry["serverRelativeURL"].as_str().unwrap();
            let hash = &docs().v3[p].hash;
            assert_eq!(url, format!("/openapi/v3/{p}?hash={hash}"));
        }
        assert!(serve_document("apis/apps/v2", None, None).is_err());
    }

    #[test]
    fn documents_carry_paths_and_every_referenced_schema() {
        let d = doc("apis/apps/v1");
        let op = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        let schemas = d["components"]["schemas"].as_object().unwrap();
        for name in [
            "io.k8s.api.apps.v1.Deployment",
            "io.k8s.api.apps.v1.DeploymentList",
            "io.k8s.api.core.v1.PodSpec",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        ] {
            assert!(schemas.contains_key(name), "{name}");
        }
        let mut refs = std::collections::BTreeSet::new();
        schemas::collect_refs(&d, &mut refs);
        for r in refs {
            assert!(schemas.contains_key(&r), "{r}");
        }
        // Only this group-version's kinds.
        assert!(!schemas.contains_key("io.k8s.api.core.v1.Pod"));
    }

    #[test]
    fn stale_hashes_redirect_and_current_ones_are_immutable() {
        let cur = docs().v3["api/v1"].hash.clone();
        let r = serve_document("api/v1", Some("0"), None).unwrap();
        assert_eq!(r.status(), 301);
        assert_eq!(
            r.headers()[header::LOCATION],
            format!("/openapi/v3/api/v1?hash={cur}").as_str()
        );
        let r = serve_document("api/v1", Some(&cur), None).unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, immutable");
        let etag = format!("\"{cur}\"");
        assert_eq!(
            serve_document("api/v1", None, Some(&etag))
                .unwrap()
                .status(),
            304
        );
    }

    #[test]
    fn v2_is_json_or_not_acceptable() {
        let pb = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
        assert_eq!(serve_v2(Some(pb), None).status(), 406);
        assert_eq!(
            serve_v2(Some(&format!("{pb},application/json")), None).status(),
            200
        );
        assert_eq!(serve_v2(None, None).status(), 200);
        let v2: Value = serde_json::from_slice(&docs().v2.body).unwrap();
        assert_eq!(v2["swagger"], "2.0");
        let d = &v2["definitions"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        let patch = &v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["operationId"], "patchCoreV1NamespacedPod");
    }
}
