//! The `paths` of a group-version document: one entry per URL the server answers for a
//! resource, with upstream's operation ids, `x-kubernetes-action`,
//! `x-kubernetes-group-version-kind` and query parameters.
//!
//! Invariants: an operation exists only for a verb the resource serves (`ResourceDef::verbs`)
//! and a subresource it implements; every mutating operation lists `dryRun`, `fieldManager`
//! and `fieldValidation` (kubectl's `QueryParamVerifierV3` looks for the last one on PATCH
//! before it leaves unknown-field detection to the server).

use serde_json::{json, Map, Value};

use super::schemas::{self, Catalog, REF_PREFIX};
use crate::resources::ResourceDef;

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": ty, "uniqueItems": true},
    })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

/// A query parameter: `name type description`.
type Param = &'static str;

const DRY_RUN: Param = "dryRun string When present, the request is processed but not \
                        persisted. The only value is All.";

const MUTATING: &[Param] = &[
    DRY_RUN,
    "fieldManager string The name of the actor making these changes (at most 128 printable \
     characters).",
    "fieldValidation string How the server treats unknown and duplicate fields in the object: \
     Ignore drops them silently; Warn (the default) drops them and sends a Warning header for \
     each; Strict fails the request with a BadRequest naming every one of them.",
];

const LIST: &[Param] = &[
    "allowWatchBookmarks boolean Asks for BOOKMARK events in a watch.",
    "continue string The continue token of the previous page of a paged list.",
    "fieldSelector string Restricts the result by the objects' fields.",
    "labelSelector string Restricts the result by the objects' labels.",
    "limit integer The largest number of items a list returns.",
    "resourceVersion string Which resource version the result must be at.",
    "resourceVersionMatch string How resourceVersion applies: Exact or NotOlderThan.",
    "sendInitialEvents boolean Starts a watch with the current state and a bookmark.",
    "timeoutSeconds integer How long the call may last, whatever the activity.",
];

const WATCH: Param = "watch boolean Watch for changes instead of listing.";

const DELETE: &[Param] = &[
    DRY_RUN,
    "gracePeriodSeconds integer Seconds before the object should be deleted.",
    "orphanDependents boolean Deprecated: use propagationPolicy.",
    "propagationPolicy string Whether and how dependents are garbage collected: Orphan, \
     Background or Foreground.",
];

fn params<'a>(list: impl IntoIterator<Item = &'a Param>) -> Vec<Value> {
    list.into_iter()
        .map(|p| {
            let (name, rest) = p.split_once(' ').unwrap_or((p, ""));
            let (ty, description) = rest.split_once(' ').unwrap_or((rest, ""));
            query(name, ty, description)
        })
        .collect()
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

fn content(name: Option<&str>, types: &[&str]) -> Value {
    let schema = name
        .map(schema_ref)
        .unwrap_or_else(|| json!({"type": "object"}));
    let mut m = Map::new();
    for t in types {
        m.insert(t.to_string(), json!({"schema": schema}));
    }
    Value::Object(m)
}

/// What a kind's operations share: names and schemas.
struct Ctx<'a> {
    def: &'a ResourceDef,
    /// `CoreV1`, `AppsV1`, `NetworkingV1`, …
    gv: String,
    tag: String,
    kind: Option<&'a str>,
    list: Option<String>,
}

impl Ctx<'_> {
    fn op(&self, verb: &str, id: String, action: &str, response: Option<&str>) -> Value {
        let mut op = json!({
            "description": format!("{verb} {}", self.def.kind),
            "operationId": id,
            "tags": [self.tag],
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": {
                "group": self.def.group, "version": self.def.version, "kind": self.def.kind,
            },
            "responses": {
                "200": {"description": "OK", "content": content(response, &["application/json"])},
                "401": {"description": "Unauthorized"},
            },
        });
        match action {
            "post" | "put" | "patch" => {
                let mut params = params(MUTATING);
                if action == "patch" {
                    params.push(query(
                        "force",
                        "boolean",
                        "Apply patches only: take over fields other managers own.",
                    ));
                }
                op["parameters"] = json!(params);
                let body_types: &[&str] = if action == "patch" {
                    &[
                        "application/apply-patch+yaml",
                        "application/json-patch+json",
                        "application/merge-patch+json",
                        "application/strategic-merge-patch+json",
                    ]
                } else {
                    &["*/*"]
                };
                let body = if action == "patch" {
                    Some(schemas::PATCH)
                } else {
                    self.kind
                };
                op["requestBody"] = json!({"content": content(body, body_types), "required": true});
                let json_content = content(response, &["application/json"]);
                let created = json!({"description": "Created", "content": json_content});
                if action != "patch" {
                    op["responses"]["201"] = created;
                }
                if action == "post" {
                    op["responses"]["202"] =
                        json!({"description": "Accepted", "content": json_content});
                }
            }
            "delete" | "deletecollection" => {
                let mut params = params(DELETE);
                if action == "deletecollection" {
                    params.extend(self::params(LIST));
                }
                op["parameters"] = json!(params);
                op["requestBody"] =
                    json!({"content": content(Some(schemas::DELETE_OPTIONS), &["*/*"])});
            }
            "list" => {
                op["parameters"] = json!(params(LIST.iter().chain([&WATCH])));
                op["responses"]["200"]["content"] = content(
                    response,
                    &["application/json", "application/json;stream=watch"],
                );
            }
            "watch" | "watchlist" => {
                op["parameters"] = json!(params(LIST.iter().chain([&WATCH])));
                op["responses"]["200"]["content"] = content(
                    Some(schemas::WATCH_EVENT),
                    &["application/json", "application/json;stream=watch"],
                );
            }
            _ => {}
        }
        op
    }
}

/// `core` → `Core`, `networking.k8s.io` → `Networking`, `rbac.authorization.k8s.io` →
/// `RbacAuthorization`: upstream's operation-id spelling of a group.
fn group_words(group: &str) -> Vec<String> {
    let g = if group.is_empty() { "core" } else { group };
    g.trim_end_matches(".k8s.io")
        .split('.')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The operations of one resource, added to `paths`.
pub(crate) fn add_resource(paths: &mut Map<String, Value>, catalog: &Catalog, def: &ResourceDef) {
    let words = group_words(def.group);
    let mut tag = words.concat();
    tag[..1].make_ascii_lowercase();
    let kind = catalog.kind(def.group, def.kind);
    let cx = Ctx {
        def,
        gv: format!("{}V1", words.concat()),
        tag: format!("{tag}_{}", def.version),
        kind,
        list: kind.map(|k| format!("{k}List")),
    };
    let base = if def.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", def.group, def.version)
    };
    let (ns, ns_word) = if def.namespaced {
        ("/namespaces/{namespace}", "Namespaced")
    } else {
        ("", "")
    };
    let k = def.kind;
    let gv = &cx.gv;
    let has = |v: &str| def.verbs.contains(&v);
    let name_param = path_param("name", &format!("name of the {k}"));
    let mut common = vec![query(
        "pretty",
        "string",
        "If 'true', the output is pretty printed.",
    )];
    if def.namespaced {
        common.insert(
            0,
            path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            ),
        );
    }
    let mut item_common = common.clone();
    item_common.insert(0, name_param);

    let mut coll = Map::new();
    let list = cx.list.as_deref();
    if has("list") {
        let id = format!("list{gv}{ns_word}{k}");
        coll.insert("get".into(), cx.op("list", id, "list", list));
    }
    if has("create") {
        let id = format!("create{gv}{ns_word}{k}");
        coll.insert("post".into(), cx.op("create", id, "post", kind));
    }
    if has("deletecollection") {
        let id = format!("deletecollection{gv}{ns_word}{k}");
        let op = cx.op(
            "delete collection of",
            id,
            "deletecollection",
            Some(schemas::STATUS),
        );
        coll.insert("delete".into(), op);
    }
    if !coll.is_empty() {
        coll.insert("parameters".into(), json!(common));
        paths.insert(format!("{base}{ns}/{}", def.resource), Value::Object(coll));
    }

    let mut item = Map::new();
    if has("get") {
        let id = format!("read{gv}{ns_word}{k}");
        item.insert("get".into(), cx.op("read the specified", id, "get", kind));
    }
    if has("update") {
        let id = format!("replace{gv}{ns_word}{k}");
        item.insert(
            "put".into(),
            cx.op("replace the specified", id, "put", kind),
        );
    }
    if has("patch") {
        let id = format!("patch{gv}{ns_word}{k}");
        item.insert(
            "patch".into(),
            cx.op("partially update the specified", id, "patch", kind),
        );
    }
    if has("delete") {
        let id = format!("delete{gv}{ns_word}{k}");
        let op = cx.op("delete", id, "delete", Some(schemas::STATUS));
        item.insert("delete".into(), op);
    }
    if !item.is_empty() {
        item.insert("parameters".into(), json!(item_common));
        paths.insert(
            format!("{base}{ns}/{}/{{name}}", def.resource),
            Value::Object(item),
        );
    }

    for sub in def.subresources() {
        let word = format!("{}{}", sub[..1].to_ascii_uppercase(), &sub[1..]);
        let mut ops = Map::new();
        for (method, verb, action, what) in [
            ("get", "read", "get", "read"),
            ("put", "replace", "put", "replace"),
            ("patch", "patch", "patch", "partially update"),
        ] {
            let id = format!("{verb}{gv}{ns_word}{k}{word}");
            let op = cx.op(&format!("{what} {sub} of the specified"), id, action, kind);
            ops.insert(method.into(), op);
        }
        ops.insert("parameters".into(), json!(item_common));
        paths.insert(
            format!("{base}{ns}/{}/{{name}}/{sub}", def.resource),
            Value::Object(ops),
        );
    }

    if has("watch") {
        let id = format!("watch{gv}{ns_word}{k}List");
        let op = cx.op("watch changes to a list of", id, "watchlist", None);
        paths.insert(
            format!("{base}/watch{ns}/{}", def.resource),
            json!({"get": op, "parameters": common}),
        );
        let id = format!("watch{gv}{ns_word}{k}");
        let op = cx.op("watch changes to an object of kind", id, "watch", None);
        paths.insert(
            format!("{base}/watch{ns}/{}/{{name}}", def.resource),
            json!({"get": op, "parameters": item_common}),
        );
    }
    if def.namespaced && has("list") {
        let pretty = json!([query(
            "pretty",
            "string",
            "If 'true', the output is pretty printed."
        )]);
        let id = format!("list{gv}{k}ForAllNamespaces");
        let op = cx.op("list or watch objects of kind", id, "list", list);
        paths.insert(
            format!("{base}/{}", def.resource),
            json!({"get": op, "parameters": pretty}),
        );
        if has("watch") {
            let id = format!("watch{gv}{k}ListForAllNamespaces");
            let op = cx.op("watch changes to a list of", id, "watchlist", None);
            paths.insert(
                format!("{base}/watch/{}", def.resource),
                json!({"get": op, "parameters": pretty}),
            );
        }
    }
}

/// `GET /api/v1/` or `/apis/<group>/v1/`: the resource list.
pub(crate) fn add_resource_list(paths: &mut Map<String, Value>, group: &str) {
    let words = group_words(group);
    let mut tag = words.concat();
    tag[..1].make_ascii_lowercase();
    let path = if group.is_empty() {
        "/api/v1/".to_string()
    } else {
        format!("/apis/{group}/v1/")
    };
    paths.insert(
        path,
        json!({"get": {
            "description": "get available resources",
            "operationId": format!("get{}V1APIResources", words.concat()),
            "tags": [format!("{tag}_v1")],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": content(Some(schemas::RESOURCE_LIST), &["application/json"]),
                },
                "401": {"description": "Unauthorized"},
            },
        }}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn group_spelling_follows_upstream() {
        assert_eq!(group_words("").concat(), "Core");
        assert_eq!(group_words("networking.k8s.io").concat(), "Networking");
        assert_eq!(
            group_words("rbac.authorization.k8s.io").concat(),
            "RbacAuthorization"
        );
    }

    #[test]
    fn pods_get_upstreams_operations() {
        let mut p = Map::new();
        add_resource(&mut p, schemas::catalog(), find("", "v1", "pods").unwrap());
        let item = &p["/api/v1/namespaces/{namespace}/pods/{name}"];
        assert_eq!(item["get"]["operationId"], "readCoreV1NamespacedPod");
        assert_eq!(item["patch"]["operationId"], "patchCoreV1NamespacedPod");
        assert_eq!(item["patch"]["tags"][0], "core_v1");
        let params: Vec<&str> = item["patch"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            params,
            ["dryRun", "fieldManager", "fieldValidation", "force"]
        );
        let coll = &p["/api/v1/namespaces/{namespace}/pods"];
        assert_eq!(coll["post"]["x-kubernetes-action"], "post");
        assert_eq!(
            coll["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodList"
        );
        assert_eq!(
            p["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
        assert!(p.contains_key("/api/v1/namespaces/{namespace}/pods/{name}/status"));
        assert!(p.contains_key("/api/v1/watch/namespaces/{namespace}/pods/{name}"));
    }

    #[test]
    fn cluster_scoped_kinds_have_no_namespace_segment() {
        let mut p = Map::new();
        let ns = find("", "v1", "namespaces").unwrap();
        add_resource(&mut p, schemas::catalog(), ns);
        assert_eq!(
            p["/api/v1/namespaces/{name}"]["put"]["operationId"],
            "replaceCoreV1Namespace"
        );
        // Namespaces have no deletecollection upstream, and so no collection DELETE.
        assert!(p["/api/v1/namespaces"].get("delete").is_none());
        assert!(!p.contains_key("/api/v1/watch/namespaces/{namespace}/namespaces"));
    }
}
