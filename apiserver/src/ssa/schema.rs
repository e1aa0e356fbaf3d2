//! The merge semantics of each field, from the OpenAPI catalog: what upstream's
//! `managedfields` type converter reads from the same documents (`schemaconv`).
//!
//! - Lists: `x-kubernetes-list-type` `atomic`, `set`, or `map` keyed by
//!   `x-kubernetes-list-map-keys`; without it a `merge` patch strategy makes the list
//!   associative (keyed by the patch merge key, or a set without one); anything else is
//!   atomic.
//! - Objects with `properties` are structs, with `additionalProperties` maps; either is
//!   atomic under `x-kubernetes-map-type: atomic` (on the field or its definition).
//! - A value without a schema (an undeclared field, an untyped object) is atomic.

use serde_json::Value;

use crate::openapi::schemas::{self, REF_PREFIX};

/// A position in the catalog.
#[derive(Clone, Copy)]
pub(crate) struct Ty {
    node: Option<&'static Value>,
}

/// How values of a [`Ty`] merge and are owned.
pub(crate) enum Shape {
    /// Replaced whole and owned as one field: scalars, atomic lists and maps, untyped values.
    Atomic,
    /// An associative list: items by their `keys` (a set of scalars when empty).
    List { keys: Vec<&'static str>, items: Ty },
    /// Declared fields, each with its own type.
    Struct,
    /// Any keys, values of one type.
    Map { values: Ty },
}

/// Key fields whose default upstream's schema publishes: an item that leaves them out is
/// named with the default (ports are keyed by port and protocol, protocol defaults to TCP).
pub(crate) fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| Value::String("TCP".into()))
}

impl Ty {
    /// The schema of a kind (`apiVersion`, `kind`); untyped when the catalog lacks it.
    pub(crate) fn of_kind(api_version: &str, kind: &str) -> Ty {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let c = schemas::catalog();
        Ty {
            node: c.kind(group, kind).and_then(|n| c.get(n)),
        }
    }

    fn untyped() -> Ty {
        Ty { node: None }
    }

    /// The chain from the node through `$ref`s and single `allOf`s to the definition.
    fn chain(&self) -> Vec<&'static Value> {
        let mut out = Vec::new();
        let mut cur = self.node;
        while let Some(s) = cur {
            if out.len() > 64 {
                break;
            }
            out.push(s);
            cur = if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                r.strip_prefix(REF_PREFIX)
                    .and_then(|n| schemas::catalog().get(n))
            } else if let Some([one]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice)
            {
                Some(one)
            } else {
                None
            };
        }
        out
    }

    fn ext(chain: &[&'static Value], key: &str) -> Option<&'static Value> {
        chain.iter().find_map(|s| s.get(key))
    }

    pub(crate) fn shape(&self) -> Shape {
        let chain = self.chain();
        let Some(def) = chain.last() else {
            return Shape::Atomic;
        };
        let atomic_map = Ty::ext(&chain, "x-kubernetes-map-type") == Some(&Value::from("atomic"));
        if def.get("type").and_then(Value::as_str) == Some("array") {
            let items = Ty {
                node: def.get("items"),
            };
            let str_of = |k: &str| Ty::ext(&chain, k).and_then(Value::as_str);
            return match str_of("x-kubernetes-list-type") {
                Some("set") => Shape::List {
                    keys: Vec::new(),
                    items,
                },
                Some("map") => Shape::List {
                    keys: Ty::ext(&chain, "x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default(),
                    items,
                },
                Some(_) => Shape::Atomic,
                None => match str_of("x-kubernetes-patch-strategy") {
                    Some(s) if s.split(',').any(|p| p == "merge") => Shape::List {
                        keys: str_of("x-kubernetes-patch-merge-key").into_iter().collect(),
                        items,
                    },
                    _ => Shape::Atomic,
                },
            };
        }
        if def.get("properties").is_some_and(Value::is_object) {
            return if atomic_map {
                Shape::Atomic
            } else {
                Shape::Struct
            };
        }
        if let Some(values) = def.get("additionalProperties").filter(|a| a.is_object()) {
            return if atomic_map {
                Shape::Atomic
            } else {
                Shape::Map {
                    values: Ty { node: Some(values) },
                }
            };
        }
        Shape::Atomic
    }

    /// The type of a struct's declared field; None when it is not declared.
    pub(crate) fn field(&self, name: &str) -> Option<Ty> {
        let chain = self.chain();
        let prop = chain.last()?.get("properties")?.get(name)?;
        Some(Ty { node: Some(prop) })
    }

    /// A struct field's type, or untyped (atomic) for an undeclared one.
    pub(crate) fn field_or_untyped(&self, name: &str) -> Ty {
        self.field(name).unwrap_or_else(Ty::untyped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_fields_have_upstreams_semantics() {
        let d = Ty::of_kind("apps/v1", "Deployment");
        assert!(matches!(d.shape(), Shape::Struct));
        let spec = d.field("spec").unwrap();
        assert!(matches!(
            spec.field("selector").unwrap().shape(),
            Shape::Atomic
        ));
        assert!(matches!(
            spec.field("replicas").unwrap().shape(),
            Shape::Atomic
        ));
        let pod = spec.field("template").unwrap().field("spec").unwrap();
        let Shape::List { keys, items } = pod.field("containers").unwrap().shape() else {
            panic!("containers are a map list");
        };
        assert_eq!(keys, ["name"]);
        let Shape::List { keys, .. } = items.field("ports").unwrap().shape() else {
            panic!("ports are a map list");
        };
        assert_eq!(keys, ["containerPort", "protocol"]);
        // No list-type: atomic (args), or by the patch strategy (env by name).
        assert!(matches!(
            items.field("args").unwrap().shape(),
            Shape::Atomic
        ));
        let meta = d.field("metadata").unwrap();
        assert!(matches!(
            meta.field("labels").unwrap().shape(),
            Shape::Map { .. }
        ));
        let Shape::List { keys, .. } = meta.field("finalizers").unwrap().shape() else {
            panic!("finalizers are a set");
        };
        assert!(keys.is_empty());
        assert!(d.field("nope").is_none());
    }
}
