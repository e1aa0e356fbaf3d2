//! OpenAPI v3, as far as kubectl needs it today: the `/openapi/v3` index and, per
//! group-version, a document whose PATCH operations carry each kind's
//! `x-kubernetes-group-version-kind` and a `fieldValidation` query parameter.
//!
//! That is what kubectl's `QueryParamVerifierV3` looks for before `create -f`, `apply` and
//! `edit`: finding it, kubectl leaves validation to the server (`fieldValidation=Strict`)
//! instead of failing with "failed to download openapi". The documents carry no schemas yet
//! (`components.schemas` is empty), so `kubectl explain` and the server's own unknown-field
//! rejection still wait for them.
//!
//! Invariant: the index lists exactly the served group-versions, and each document's
//! `serverRelativeURL` hash changes whenever the document does.

use serde_json::{json, Map, Value};

use crate::resources;

/// `api/v1` or `apis/<group>/v1`: the index key and URL suffix of a group-version.
fn gv_path(group: &str) -> String {
    if group.is_empty() {
        "api/v1".into()
    } else {
        format!("apis/{group}/v1")
    }
}

fn hash(v: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// `GET /openapi/v3`.
pub(crate) fn index() -> Value {
    let mut paths = Map::new();
    let groups = std::iter::once("").chain(resources::groups());
    for g in groups {
        let p = gv_path(g);
        let doc = document(&p).unwrap_or(Value::Null);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&doc))}),
        );
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/<gv path>`; None for a group-version that is not served.
pub(crate) fn document(gv: &str) -> Option<Value> {
    let group = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", "v1"] => "",
        ["apis", g, "v1"] if resources::serves(g, "v1") => *g,
        _ => return None,
    };
    let param = json!({
        "name": "fieldValidation",
        "in": "query",
        "description": "How the server treats unknown or duplicate fields: Ignore, Warn or Strict.",
        "schema": {"type": "string", "uniqueItems": true},
    });
    let mut paths = Map::new();
    for r in resources::of_group(group, "v1") {
        let base = if r.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}/{{name}}",
                gv_path(group),
                r.resource
            )
        } else {
            format!("/{}/{}/{{name}}", gv_path(group), r.resource)
        };
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let op = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", r.kind),
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [param.clone()],
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(base, json!({"patch": op("patch"), "put": op("replace")}));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0-keelson"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_points_at_every_served_group_version() {
        let i = index();
        let paths = i["paths"].as_object().unwrap();
        assert!(paths.contains_key("api/v1") && paths.contains_key("apis/apps/v1"));
        for (p, entry) in paths {
            let url = entry["serverRelativeURL"].as_str().unwrap();
            assert!(url.starts_with(&format!("/openapi/v3/{p}?hash=")), "{url}");
            assert!(document(p).is_some(), "{p}");
        }
        assert!(document("apis/apps/v2").is_none() && document("apis/nope/v1").is_none());
    }

    #[test]
    fn patch_operations_carry_gvk_and_field_validation() {
        let d = document("apis/apps/v1").unwrap();
        let op = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert_eq!(op["parameters"][0]["name"], "fieldValidation");
        assert_eq!(op["parameters"][0]["in"], "query");
        let core = document("api/v1").unwrap();
        assert!(core["paths"]["/api/v1/namespaces/{name}"]["patch"].is_object());
    }
}
