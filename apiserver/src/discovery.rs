//! Discovery documents, built from the resource registry: the legacy forms (`APIVersions`,
//! `APIGroupList`, `APIGroup`, `APIResourceList`) and aggregated discovery
//! (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`, KEP-3352), which kubectl 1.32 asks for
//! first and which saves it one request per group-version.
//!
//! Invariant: both forms describe exactly the same resources, verbs, short names, categories
//! and subresources, because both are derived from [`crate::resources`].

use serde_json::{json, Value};

use crate::resources::{self, ResourceDef};

/// Content type of an aggregated discovery reply; client-go checks it before decoding.
pub(crate) const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn group_version(group: &str) -> Value {
    let gv = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    json!({"groupVersion": gv, "version": "v1"})
}

/// `GET /api`, legacy form. `server` is the address clients reached us at.
pub(crate) fn core_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

fn api_group(group: &str) -> Value {
    json!({
        "name": group,
        "versions": [group_version(group)],
        "preferredVersion": group_version(group),
    })
}

/// `GET /apis`, legacy form.
pub(crate) fn groups() -> Value {
    let groups: Vec<Value> = resources::groups().into_iter().map(api_group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`.
pub(crate) fn group(group: &str) -> Value {
    let mut g = api_group(group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    g
}

/// `GET /api/v1` or `/apis/<group>/<version>`: one entry per resource and subresource.
pub(crate) fn resource_list(group: &str, version: &str) -> Value {
    let mut out = Vec::new();
    for r in resources::of_group(group, version) {
        let mut e = json!({
            "name": r.resource,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        for sub in r.served_subresources() {
            let mut e = json!({
                "name": format!("{}/{}", r.resource, sub.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": sub.kind,
                "verbs": sub.verbs,
            });
            if sub.group != r.group {
                e["group"] = json!(sub.group);
                e["version"] = json!(sub.version);
            }
            out.push(e);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}

fn discovery_resource(r: &ResourceDef) -> Value {
    let kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let mut e = json!({
        "resource": r.resource,
        "responseKind": kind,
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    let subs: Vec<Value> = r
        .served_subresources()
        .into_iter()
        .map(|s| {
            let kind = json!({"group": s.group, "version": s.version, "kind": s.kind});
            json!({"subresource": s.name, "responseKind": kind, "verbs": s.verbs})
        })
        .collect();
    if !subs.is_empty() {
        e["subresources"] = json!(subs);
    }
    e
}

fn discovery_group(group: &str) -> Value {
    let resources: Vec<Value> = resources::of_group(group, "v1")
        .map(discovery_resource)
        .collect();
    let mut metadata = json!({"creationTimestamp": null});
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({
        "metadata": metadata,
        "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
    })
}

fn discovery_list(items: Vec<Value>) -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// `GET /api`, aggregated form: the core group alone.
pub(crate) fn aggregated_core() -> Value {
    discovery_list(vec![discovery_group("")])
}

/// `GET /apis`, aggregated form: every named group.
pub(crate) fn aggregated_groups() -> Value {
    discovery_list(
        resources::groups()
            .into_iter()
            .map(discovery_group)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_agree() {
        let legacy = resource_list("apps", "v1");
        let agg = aggregated_groups();
        let apps = agg["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let agg_res = apps["versions"][0]["resources"].as_array().unwrap();
        let legacy_main: Vec<&Value> = legacy["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| !r["name"].as_str().unwrap().contains('/'))
            .collect();
        assert_eq!(agg_res.len(), legacy_main.len());
        for (a, l) in agg_res.iter().zip(legacy_main) {
            assert_eq!(a["resource"], l["name"]);
            assert_eq!(a["verbs"], l["verbs"]);
            assert_eq!(a["scope"] == "Namespaced", l["namespaced"] == true);
            assert_eq!(a["responseKind"]["kind"], l["kind"]);
        }
        let deploy = agg_res
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["subresources"][0]["subresource"], "scale");
        assert_eq!(
            deploy["subresources"][0]["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        assert_eq!(deploy["subresources"][1]["subresource"], "status");
        let legacy_scale = legacy["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(
            (&legacy_scale["group"], &legacy_scale["kind"]),
            (&json!("autoscaling"), &json!("Scale"))
        );
    }

    #[test]
    fn core_lists_pods_with_status() {
        let l = resource_list("", "v1");
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods") && names.contains(&"pods/status"));
        assert!(names.contains(&"pods/binding") && names.contains(&"replicationcontrollers/scale"));
        assert_eq!(l["groupVersion"], "v1");
        let core = aggregated_core();
        assert!(core["items"][0]["metadata"].get("name").is_none());
    }
}
