//! `/openapi/v2`: the same schemas and operations as the v3 documents, in Swagger 2.0 form
//! (`definitions`, body parameters, `consumes`/`produces`), all group-versions in one
//! document as upstream serves it.
//!
//! Invariant: a pure function of the v3 paths and the catalog; every `$ref` points into
//! `#/definitions/`.

use serde_json::{json, Map, Value};

use super::schemas::{Catalog, REF_PREFIX};

const V2_PREFIX: &str = "#/definitions/";

/// A v3 schema in v2 form: references re-pointed, `allOf: [$ref]` wrappers (v3's way to give
/// a reference a description) unwrapped, `nullable` dropped.
pub(crate) fn schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => {
                        let name = r.strip_prefix(REF_PREFIX).unwrap_or(r);
                        out.insert(k.clone(), json!(format!("{V2_PREFIX}{name}")));
                    }
                    ("allOf", Value::Array(a)) if a.len() == 1 && a[0].get("$ref").is_some() => {
                        if let Value::Object(inner) = schema(&a[0]) {
                            out.extend(inner);
                        }
                    }
                    ("nullable", _) => {}
                    _ => {
                        out.insert(k.clone(), schema(x));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(schema).collect()),
        other => other.clone(),
    }
}

fn parameter(p: &Value) -> Value {
    let mut out = p.clone();
    if let Some(m) = out.as_object_mut() {
        if let Some(Value::Object(s)) = m.remove("schema") {
            m.extend(s);
        }
    }
    out
}

fn operation(op: &Value) -> Value {
    let mut out = Map::new();
    let mut params: Vec<Value> = Vec::new();
    for (k, x) in op.as_object().into_iter().flatten() {
        match k.as_str() {
            "parameters" => params.extend(x.as_array().into_iter().flatten().map(parameter)),
            "requestBody" => {
                let content = x["content"].as_object();
                let first = content.and_then(|c| c.values().next());
                params.push(json!({
                    "name": "body",
                    "in": "body",
                    "required": x["required"].as_bool().unwrap_or(false),
                    "schema": first.map(|c| schema(&c["schema"])).unwrap_or(json!({})),
                }));
                let types: Vec<&String> = content.into_iter().flat_map(|c| c.keys()).collect();
                out.insert("consumes".into(), json!(types));
            }
            "responses" => {
                let mut responses = Map::new();
                let mut produces: Vec<String> = Vec::new();
                for (code, r) in x.as_object().into_iter().flatten() {
                    let mut resp = json!({"description": r["description"]});
                    if let Some(c) = r["content"].as_object() {
                        for t in c.keys() {
                            if !produces.contains(t) {
                                produces.push(t.clone());
                            }
                        }
                        if let Some(first) = c.values().next() {
                            resp["schema"] = schema(&first["schema"]);
                        }
                    }
                    responses.insert(code.clone(), resp);
                }
                out.insert("produces".into(), json!(produces));
                out.insert("responses".into(), Value::Object(responses));
            }
            _ => {
                out.insert(k.clone(), x.clone());
            }
        }
    }
    if !params.is_empty() {
        out.insert("parameters".into(), json!(params));
    }
    out.insert("schemes".into(), json!(["https"]));
    Value::Object(out)
}

/// The Swagger 2.0 document for `paths` (merged v3 paths of every group-version) and the
/// schemas `names`.
pub(crate) fn document(
    catalog: &Catalog,
    paths: &Map<String, Value>,
    names: impl IntoIterator<Item = String>,
) -> Value {
    let mut definitions = Map::new();
    for n in names {
        if let Some(s) = catalog.get(&n) {
            definitions.insert(n, schema(s));
        }
    }
    let mut out_paths = Map::new();
    for (path, item) in paths {
        let mut m = Map::new();
        for (k, x) in item.as_object().into_iter().flatten() {
            let v = if k == "parameters" {
                json!(x
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(parameter)
                    .collect::<Vec<_>>())
            } else {
                operation(x)
            };
            m.insert(k.clone(), v);
        }
        out_paths.insert(path.clone(), Value::Object(m));
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": super::VERSION},
        "paths": out_paths,
        "definitions": definitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_rewritten_and_unwrapped() {
        let v3 = json!({"properties": {
            "spec": {"allOf": [{"$ref": "#/components/schemas/a.B"}], "description": "d"},
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/a.C"}},
        }});
        assert_eq!(
            schema(&v3),
            json!({"properties": {
                "spec": {"$ref": "#/definitions/a.B", "description": "d"},
                "items": {"type": "array", "items": {"$ref": "#/definitions/a.C"}},
            }})
        );
    }

    #[test]
    fn operations_get_body_parameters_and_media_types() {
        let x = json!({"schema": {"$ref": "#/components/schemas/a.X"}});
        let op = json!({
            "operationId": "createX",
            "parameters": [{
                "name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true},
            }],
            "requestBody": {"content": {"*/*": x}, "required": true},
            "responses": {"200": {"description": "OK", "content": {"application/json": x}}},
        });
        let v2 = operation(&op);
        assert_eq!(
            v2["parameters"][0],
            json!({"name": "dryRun", "in": "query", "type": "string", "uniqueItems": true})
        );
        assert_eq!(v2["parameters"][1]["in"], "body");
        assert_eq!(v2["parameters"][1]["schema"]["$ref"], "#/definitions/a.X");
        assert_eq!(v2["consumes"], json!(["*/*"]));
        assert_eq!(v2["produces"], json!(["application/json"]));
        assert_eq!(
            v2["responses"]["200"]["schema"]["$ref"],
            "#/definitions/a.X"
        );
    }
}
