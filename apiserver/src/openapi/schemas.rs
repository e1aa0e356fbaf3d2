//! The schema catalog: every served kind's OpenAPI v3 schema and everything it references,
//! computed once.
//!
//! Structure, types, formats and descriptions come from `k8s-openapi`'s generated
//! `schemars` impls (Kubernetes 1.32). Those leave out what kube-apiserver's own spec adds, so
//! `extensions.tsv` (facts from the v1.32.0 spec, see `gen_extensions.py`) overlays the
//! `x-kubernetes-*` extensions (group-version-kind, patch strategy and merge key, list type and
//! map keys, map type, unions) and upstream's `required` lists. List kinds (`PodList`, …)
//! have no schema in `k8s-openapi` and are built here.
//!
//! Invariants: every `$ref` in the catalog names a schema in it; every served kind whose type
//! is in [`TYPES`] has a schema carrying its `x-kubernetes-group-version-kind`, and so does its
//! list (every kind upstream has a list for). Checked against the v1.32.0 spec that
//! `gen_extensions.py` reads (properties, types, references, item and map schemas,
//! descriptions, extensions, `required`), the catalog differs only in the descriptions of
//! IntOrString, Quantity and WatchEvent and in their `x-kubernetes-int-or-string`
//! (k8s-openapi's); upstream's `default` values are not carried.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use k8s_openapi::api::{apps, batch, coordination, core, discovery, networking, policy, storage};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use k8s_openapi::schemars::JsonSchema;
use k8s_openapi::Resource;
use serde_json::{json, Map, Value};

/// Where references point in a v3 document.
pub(crate) const REF_PREFIX: &str = "#/components/schemas/";

/// Registers one kind's schema; returns its group, kind and schema name.
type Register = fn(&mut SchemaGenerator) -> (&'static str, &'static str, String);

fn reg<T: JsonSchema + Resource>(g: &mut SchemaGenerator) -> (&'static str, &'static str, String) {
    g.subschema_for::<T>();
    (T::GROUP, T::KIND, T::schema_name().into_owned())
}

/// The Rust types of the kinds that have (or may soon have) a REST endpoint. A served kind
/// missing here is served without a schema and without field validation.
const TYPES: &[Register] = &[
    reg::<core::v1::Binding>,
    reg::<core::v1::ComponentStatus>,
    reg::<core::v1::ConfigMap>,
    reg::<core::v1::Endpoints>,
    reg::<core::v1::Event>,
    reg::<core::v1::LimitRange>,
    reg::<core::v1::Namespace>,
    reg::<core::v1::Node>,
    reg::<core::v1::PersistentVolume>,
    reg::<core::v1::PersistentVolumeClaim>,
    reg::<core::v1::Pod>,
    reg::<core::v1::ReplicationController>,
    reg::<core::v1::ResourceQuota>,
    reg::<core::v1::Secret>,
    reg::<core::v1::Service>,
    reg::<core::v1::ServiceAccount>,
    reg::<apps::v1::ControllerRevision>,
    reg::<apps::v1::DaemonSet>,
    reg::<apps::v1::Deployment>,
    reg::<apps::v1::ReplicaSet>,
    reg::<apps::v1::StatefulSet>,
    reg::<batch::v1::CronJob>,
    reg::<batch::v1::Job>,
    reg::<coordination::v1::Lease>,
    reg::<discovery::v1::EndpointSlice>,
    reg::<networking::v1::Ingress>,
    reg::<networking::v1::IngressClass>,
    reg::<networking::v1::NetworkPolicy>,
    reg::<policy::v1::PodDisruptionBudget>,
    reg::<storage::v1::StorageClass>,
];

/// The meta types every group-version document references from its operations.
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(crate) const RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// All schemas, by name, in v3 form (`$ref`s to [`REF_PREFIX`]).
pub(crate) struct Catalog {
    pub(crate) schemas: Map<String, Value>,
    /// `(group, kind)` → schema name, for the kinds in [`TYPES`].
    kinds: Vec<(&'static str, &'static str, String)>,
}

impl Catalog {
    /// The schema name of a kind (`io.k8s.api.apps.v1.Deployment`).
    pub(crate) fn kind(&self, group: &str, kind: &str) -> Option<&str> {
        self.kinds
            .iter()
            .find(|(g, k, _)| *g == group && *k == kind)
            .map(|(_, _, n)| n.as_str())
    }

    /// The schema named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.schemas.get(name)
    }

    /// The names of `roots` and of every schema they reach through `$ref`s.
    pub(crate) fn closure<'a>(&self, roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = roots.into_iter().map(str::to_string).collect();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(s) = self.schemas.get(&name) {
                let mut refs = BTreeSet::new();
                collect_refs(s, &mut refs);
                todo.extend(refs.into_iter().filter(|r| !seen.contains(r)));
            }
        }
        seen
    }
}

/// Names referenced by `$ref` anywhere inside `v`.
pub(crate) fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => {
                        if let Some(n) = r.strip_prefix(REF_PREFIX) {
                            out.insert(n.to_string());
                        }
                    }
                    _ => collect_refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

pub(crate) fn catalog() -> &'static Catalog {
    static CATALOG: LazyLock<Catalog> = LazyLock::new(build);
    &CATALOG
}

/// One line of `extensions.tsv`.
struct Fact<'a> {
    definition: &'a str,
    property: &'a str,
    key: &'a str,
    value: Value,
}

fn facts() -> impl Iterator<Item = Fact<'static>> {
    include_str!("extensions.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let mut f = l.splitn(4, '\t');
            let mut next = || f.next().unwrap_or_default();
            let (definition, property, key) = (next(), next(), next());
            let value = serde_json::from_str(next()).expect("extensions.tsv holds JSON values");
            Fact {
                definition,
                property,
                key,
                value,
            }
        })
}

fn build() -> Catalog {
    let mut gen = SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let kinds: Vec<_> = TYPES.iter().map(|r| r(&mut gen)).collect();
    gen.subschema_for::<meta::Status>();
    gen.subschema_for::<meta::DeleteOptions>();
    gen.subschema_for::<meta::WatchEvent<()>>();
    gen.subschema_for::<meta::Patch>();
    gen.subschema_for::<meta::APIResourceList>();
    gen.subschema_for::<meta::ListMeta>();
    let mut schemas = gen.take_definitions(true);
    let facts: Vec<Fact> = facts().collect();
    for (group, kind, name) in &kinds {
        let list = format!("{name}List");
        // Upstream defines a list for every kind with a list verb (not for Binding).
        if facts.iter().any(|f| f.definition == list) {
            let schema = list_schema(&schemas, group, kind, name);
            schemas.insert(list, schema);
        }
    }
    overlay(&mut schemas, facts);
    for (name, format) in [
        (
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
            Some("int-or-string"),
        ),
        ("io.k8s.apimachinery.pkg.api.resource.Quantity", None),
    ] {
        if let Some(Value::Object(s)) = schemas.get_mut(name) {
            s.insert("type".into(), json!("string"));
            if let Some(f) = format {
                s.insert("format".into(), json!(f));
            }
        }
    }
    Catalog { schemas, kinds }
}

/// `<Kind>List`, as upstream defines every list kind (the descriptions come with the overlay).
fn list_schema(schemas: &Map<String, Value>, group: &str, kind: &str, name: &str) -> Value {
    let prop = |p: &str| {
        schemas
            .get(name)
            .and_then(|s| s.pointer(&format!("/properties/{p}")))
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}))
    };
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": prop("apiVersion"),
            "items": {
                "description": format!("List of {kind} objects."),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{name}")},
            },
            "kind": prop("kind"),
            "metadata": {
                "allOf": [{"$ref": format!("{REF_PREFIX}{LIST_META}")}],
                "description": "Standard list metadata.",
            },
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": [
            {"group": group, "kind": format!("{kind}List"), "version": "v1"},
        ],
    })
}

/// Applies `extensions.tsv`: upstream's `required` replaces k8s-openapi's (none where the
/// table has none), and the extensions (and list descriptions) are set on definitions and
/// their properties.
fn overlay(schemas: &mut Map<String, Value>, facts: Vec<Fact>) {
    for s in schemas.values_mut() {
        if let Some(m) = s.as_object_mut() {
            m.remove("required");
        }
    }
    for f in facts {
        let Some(Value::Object(def)) = schemas.get_mut(f.definition) else {
            continue;
        };
        if f.property.is_empty() {
            def.insert(f.key.to_string(), f.value);
        } else if let Some(Value::Object(p)) = def
            .get_mut("properties")
            .and_then(|ps| ps.get_mut(f.property))
        {
            p.insert(f.key.to_string(), f.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop<'a>(def: &str, p: &str) -> &'a Value {
        let c = catalog();
        &c.get(def).unwrap_or_else(|| panic!("{def}"))["properties"][p]
    }

    #[test]
    fn every_reference_resolves() {
        let c = catalog();
        let mut refs = BTreeSet::new();
        for s in c.schemas.values() {
            collect_refs(s, &mut refs);
        }
        for r in refs {
            assert!(c.get(&r).is_some(), "{r}");
        }
    }

    #[test]
    fn kinds_and_lists_carry_their_gvk() {
        let c = catalog();
        let d = c.kind("apps", "Deployment").unwrap();
        assert_eq!(d, "io.k8s.api.apps.v1.Deployment");
        assert_eq!(
            c.get(d).unwrap()["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        let list = c.get("io.k8s.api.core.v1.PodList").unwrap();
        assert_eq!(
            list["x-kubernetes-group-version-kind"][0]["kind"],
            "PodList"
        );
        assert_eq!(list["required"], json!(["items"]));
        assert_eq!(list["description"], "PodList is a list of Pods.");
        assert!(c.get("io.k8s.api.core.v1.BindingList").is_none());
        assert!(c.kind("", "Pod").is_some() && c.kind("apps", "Pod").is_none());
    }

    #[test]
    fn patch_and_list_extensions_are_upstreams() {
        let ports = prop("io.k8s.api.core.v1.Container", "ports");
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        assert_eq!(ports["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(ports["x-kubernetes-list-type"], "map");
        assert_eq!(
            ports["x-kubernetes-list-map-keys"],
            json!(["containerPort", "protocol"])
        );
        let volumes = prop("io.k8s.api.core.v1.PodSpec", "volumes");
        assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
        let finalizers = prop(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "finalizers",
        );
        assert_eq!(finalizers["x-kubernetes-list-type"], "set");
        let c = catalog();
        assert_eq!(
            c.get("io.k8s.api.core.v1.LocalObjectReference").unwrap()["x-kubernetes-map-type"],
            "atomic"
        );
    }

    #[test]
    fn required_is_upstreams_and_refs_keep_descriptions() {
        let c = catalog();
        // k8s-openapi makes `metadata` required (a non-Option field); upstream does not.
        assert!(c
            .get("io.k8s.api.apps.v1.Deployment")
            .unwrap()
            .get("required")
            .is_none());
        assert_eq!(
            c.get("io.k8s.api.core.v1.Container").unwrap()["required"],
            json!(["name"])
        );
        let spec = prop("io.k8s.api.apps.v1.Deployment", "spec");
        assert_eq!(
            spec["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(spec["description"]
            .as_str()
            .unwrap()
            .contains("desired behavior"));
        let ios = c
            .get("io.k8s.apimachinery.pkg.util.intstr.IntOrString")
            .unwrap();
        assert_eq!(
            (ios["type"].as_str(), ios["format"].as_str()),
            (Some("string"), Some("int-or-string"))
        );
        assert_eq!(ios["x-kubernetes-int-or-string"], true);
    }
}
