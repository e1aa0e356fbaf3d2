//! Patch metadata from the OpenAPI schemas: for a field of a struct, the schema of its value,
//! its patch strategy (`x-kubernetes-patch-strategy`) and merge key
//! (`x-kubernetes-patch-merge-key`). This is what upstream reads from the Go struct tags of
//! the typed object; the OpenAPI extensions are generated from those same tags.
//!
//! A value without a schema (an unknown field, an untyped value, a kind outside the catalog)
//! has no metadata: its maps merge recursively and its lists are replaced, as RFC 7386 would.

use serde_json::{Map, Value};

use crate::openapi::schemas::{self, REF_PREFIX};

/// A position in a schema tree: a node plus the definitions its `$ref`s name.
#[derive(Clone, Copy)]
pub(crate) struct Schema<'a> {
    defs: Option<&'a Map<String, Value>>,
    node: Option<&'a Value>,
}

/// What the schema says about one field.
pub(crate) struct Field<'a> {
    /// The schema of the field's value.
    pub(crate) schema: Schema<'a>,
    /// `merge` or `replace` (a `retainKeys` part is dropped: it only shapes the patches a
    /// client computes, the server honours `$retainKeys` wherever a patch carries it).
    pub(crate) strategy: Strategy,
    pub(crate) merge_key: Option<&'a str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// No strategy: maps merge, lists are replaced.
    Default,
    Merge,
    Replace,
}

impl<'a> Schema<'a> {
    /// No metadata anywhere below.
    pub(crate) fn none() -> Schema<'a> {
        Schema {
            defs: None,
            node: None,
        }
    }

    /// `root` with its references resolved in `defs` (definition names after [`REF_PREFIX`]).
    pub(crate) fn new(defs: &'a Map<String, Value>, root: &'a Value) -> Schema<'a> {
        Schema {
            defs: Some(defs),
            node: Some(root),
        }
    }

    /// The schema of a stored object's kind, from its `apiVersion` and `kind`.
    pub(crate) fn of_object(obj: &Value) -> Schema<'static> {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let c = schemas::catalog();
        match c.kind(group, kind).and_then(|n| c.get(n)) {
            Some(root) => Schema::new(&c.schemas, root),
            None => Schema::none(),
        }
    }

    /// Follows `$ref` and single-element `allOf` to the node that describes the value.
    fn resolved(&self) -> Option<&'a Value> {
        let mut s = self.node?;
        for _ in 0..64 {
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                s = r.strip_prefix(REF_PREFIX).and_then(|n| self.defs?.get(n))?;
            } else if let Some([one]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice)
            {
                s = one;
            } else {
                return Some(s);
            }
        }
        None
    }

    fn at(&self, node: Option<&'a Value>) -> Schema<'a> {
        Schema {
            defs: self.defs,
            node,
        }
    }

    /// The metadata of `name` in this struct (or of any value, for a map).
    pub(crate) fn field(&self, name: &str) -> Field<'a> {
        let s = self.resolved();
        let prop = s
            .and_then(|s| s.get("properties"))
            .and_then(|p| p.get(name));
        let Some(prop) = prop else {
            let values = s
                .and_then(|s| s.get("additionalProperties"))
                .filter(|a| a.is_object());
            return Field {
                schema: self.at(values),
                strategy: Strategy::Default,
                merge_key: None,
            };
        };
        let strategy = prop
            .get("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .unwrap_or("");
        let strategy = match strategy.split(',').find(|s| *s != "retainKeys") {
            Some("merge") => Strategy::Merge,
            Some("replace") => Strategy::Replace,
            _ => Strategy::Default,
        };
        Field {
            schema: self.at(Some(prop)),
            strategy,
            merge_key: prop
                .get("x-kubernetes-patch-merge-key")
                .and_then(Value::as_str),
        }
    }

    /// The schema of a list's elements.
    pub(crate) fn items(&self) -> Schema<'a> {
        self.at(self.resolved().and_then(|s| s.get("items")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_spec_metadata_comes_from_the_catalog() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod"});
        let spec = Schema::of_object(&pod).field("spec").schema;
        let containers = spec.field("containers");
        assert_eq!(containers.strategy, Strategy::Merge);
        assert_eq!(containers.merge_key, Some("name"));
        let ports = containers.schema.items().field("ports");
        assert_eq!(ports.merge_key, Some("containerPort"));
        let volumes = spec.field("volumes");
        assert_eq!(
            (volumes.strategy, volumes.merge_key),
            (Strategy::Merge, Some("name"))
        );
        assert_eq!(spec.field("tolerations").strategy, Strategy::Default);
        let labels = Schema::of_object(&pod).field("metadata").schema;
        assert_eq!(labels.field("finalizers").strategy, Strategy::Merge);
        assert_eq!(labels.field("finalizers").merge_key, None);
        let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget"});
        let sel = Schema::of_object(&pdb)
            .field("spec")
            .schema
            .field("selector");
        assert_eq!(sel.strategy, Strategy::Replace);
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment"});
        // retainKeys alone leaves the default strategy.
        let strategy = Schema::of_object(&deploy)
            .field("spec")
            .schema
            .field("strategy");
        assert_eq!(strategy.strategy, Strategy::Default);
        let unknown = json!({"apiVersion": "x/v1", "kind": "Nope"});
        assert_eq!(
            Schema::of_object(&unknown).field("spec").strategy,
            Strategy::Default
        );
    }
}
