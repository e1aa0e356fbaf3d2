//! Server-side printing: `meta.k8s.io/v1` `Table` replies for `kubectl get`.
//!
//! Every served kind prints upstream's columns (`pkg/printers/internalversion/printers.go`)
//! with upstream's cell formatting; the per-group printers live in `core`, `pod`, `apps`
//! and `networking`. Priority-0 columns are what `kubectl get` shows; priority-1 columns are
//! added by `-o wide` (the server always fills them, as upstream's table convertor prints
//! with `Wide: true`). A kind without an upstream printer (LimitRange) gets upstream's
//! default table: Name and Created At (RFC 3339).
//!
//! Invariants: every row has exactly one cell per column; a row's `object` is, by default
//! (`includeObject=Metadata`), a `PartialObjectMetadata` (kubectl's `--show-labels` reads its
//! labels), the whole object with `includeObject=Object`, and absent with `None`. A watch
//! event's Table (`watch_row`) has the row and no column definitions.

mod apps;
mod core;
mod networking;
mod pod;

use serde_json::{json, Value};

use crate::resources::ResourceDef;

/// What each row carries besides its cells (the `includeObject` parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub(crate) fn parse(v: Option<&str>) -> Include {
        match v {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// One column: name, type, priority (1: only under `-o wide`).
type Col = (&'static str, &'static str, u8);

/// Computes one object's row cells, one per column.
type Cells = fn(&Value) -> Vec<Value>;

/// A kind's printer: its columns and the cells of one object's row.
struct Printer {
    columns: &'static [Col],
    cells: Cells,
}

/// Upstream's default table for kinds without a printer (`rest.NewDefaultTableConvertor`).
const DEFAULT: Printer = Printer {
    columns: &[("Name", "string", 0), ("Created At", "date", 0)],
    cells: |o| {
        let created = s(o, "/metadata/creationTimestamp");
        let at = crate::time::parse_rfc3339(created).map_or(String::new(), crate::time::rfc3339);
        vec![name(o), json!(at)]
    },
};

fn printer(def: &ResourceDef) -> Printer {
    let found = match def.group {
        "" if def.resource == "pods" => Some(pod::PRINTER),
        "" => core::printer(def.resource),
        "apps" | "batch" => apps::printer(def.resource),
        _ => networking::printer(def.resource),
    };
    found.unwrap_or(DEFAULT)
}

// --- helpers shared by the printers ---

/// The string at JSON pointer `ptr`, or "".
fn s<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The integer at `ptr`, or 0.
fn int(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// The array at `ptr` (empty when absent).
fn arr<'a>(o: &'a Value, ptr: &str) -> &'a [Value] {
    o.pointer(ptr)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn name(o: &Value) -> Value {
    json!(s(o, "/metadata/name"))
}

/// The AGE cell (`translateTimestampSince`).
fn age(o: &Value) -> Value {
    json!(since(s(o, "/metadata/creationTimestamp")))
}

/// Time since an RFC 3339 timestamp as a human duration; `<unknown>` when unset.
fn since(ts: &str) -> String {
    crate::time::age(Some(ts).filter(|t| !t.is_empty()))
}

fn or(v: &str, default: &str) -> String {
    if v.is_empty() { default } else { v }.to_string()
}

/// `labels.FormatLabels`: `k=v` sorted by key, `<none>` when empty.
fn format_labels(m: Option<&Value>) -> String {
    let mut pairs: Vec<String> = m
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// `metav1.LabelSelectorAsSelector(sel).String()` ("" for an absent selector, `<error>` for
/// one upstream cannot convert).
fn selector(sel: Option<&Value>) -> String {
    match sel.filter(|s| s.is_object()) {
        None => String::new(),
        Some(sel) => {
            crate::selectors::label_selector_string(sel).unwrap_or_else(|_| "<error>".into())
        }
    }
}

/// `metav1.FormatLabelSelector`: as [`selector`], `<none>` when empty.
fn format_selector(sel: Option<&Value>) -> String {
    or(&selector(sel), "<none>")
}

/// `layoutContainerCells`: container names and images, comma-joined.
fn containers(o: &Value, ptr: &str) -> (Value, Value) {
    let cs = arr(o, ptr);
    let names: Vec<&str> = cs
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    let images: Vec<&str> = cs
        .iter()
        .map(|c| c["image"].as_str().unwrap_or(""))
        .collect();
    (json!(names.join(",")), json!(images.join(",")))
}

/// `listWithMoreString`: the first three, `+ N more...`, `<unset>` when empty.
fn list_with_more(list: &[String]) -> String {
    const MAX: usize = 3;
    if list.len() > MAX {
        format!("{} + {} more...", list[..MAX].join(","), list.len() - MAX)
    } else if list.is_empty() {
        "<unset>".into()
    } else {
        list.join(",")
    }
}

/// Load-balancer ingress points (IP, else hostname), sorted and deduplicated.
fn load_balancer(o: &Value, ptr: &str) -> String {
    let mut set: Vec<&str> = arr(o, ptr)
        .iter()
        .filter_map(|i| {
            i["ip"]
                .as_str()
                .filter(|s| !s.is_empty())
                .or(i["hostname"].as_str().filter(|s| !s.is_empty()))
        })
        .collect();
    set.sort_unstable();
    set.dedup();
    set.join(",")
}

// --- tables ---

fn row(def: &ResourceDef, o: &Value, include: Include) -> Value {
    let mut r = json!({"cells": (printer(def).cells)(o)});
    if def.group.is_empty() && def.resource == "pods" {
        if let Some(c) = pod::row_conditions(o) {
            r["conditions"] = c;
        }
    }
    match include {
        Include::None => {}
        Include::Object => r["object"] = o.clone(),
        Include::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
            })
        }
    }
    r
}

/// A table of `items`; `list_meta` becomes the table's metadata (resourceVersion, continue).
pub(crate) fn table(
    def: &ResourceDef,
    items: &[Value],
    list_meta: Value,
    api_version: &str,
    include: Include,
) -> Value {
    let defs: Vec<Value> = printer(def)
        .columns
        .iter()
        .map(|(name, ty, priority)| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": name, "priority": priority})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": items.iter().map(|o| row(def, o, include)).collect::<Vec<_>>(),
    })
}

/// The one-row table a watch event carries (no column definitions, as upstream sends).
pub(crate) fn watch_row(
    def: &ResourceDef,
    obj: &Value,
    api_version: &str,
    include: Include,
) -> Value {
    let rv = obj
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(json!(""));
    json!({
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": [],
        "rows": [row(def, obj, include)],
    })
}

#[cfg(test)]
mod tests;
