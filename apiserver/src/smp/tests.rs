//! Table-driven cases, modelled on upstream's `strategicpatch` test cases: the synthetic
//! `mergeItem` type (a merging list by `name`, a merging int list, non-merging lists, a map, a
//! `replace` field, `retainKeys` fields) and real kinds from the catalog.

use serde_json::{json, Map, Value};

use super::*;

/// Upstream's `mergeItem` test type as an OpenAPI schema.
fn merge_item_defs() -> Map<String, Value> {
    let item = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let list = |strategy: Option<&str>, key: Option<&str>| {
        let mut l = json!({"type": "array", "items": item("mergeItem")});
        if let Some(s) = strategy {
            l["x-kubernetes-patch-strategy"] = json!(s);
        }
        if let Some(k) = key {
            l["x-kubernetes-patch-merge-key"] = json!(k);
        }
        l
    };
    let ints = |strategy: Option<&str>| {
        let mut l = json!({"type": "array", "items": {"type": "integer"}});
        if let Some(s) = strategy {
            l["x-kubernetes-patch-strategy"] = json!(s);
        }
        l
    };
    let scalars = json!({
        "name": {"type": "string"}, "value": {"type": "string"}, "other": {"type": "string"},
        "simpleMap": {"type": "object", "additionalProperties": {"type": "string"}},
    });
    let mut merge_item = scalars.clone();
    let m = merge_item.as_object_mut().unwrap();
    m.insert("mergingList".into(), list(Some("merge"), Some("name")));
    m.insert("nonMergingList".into(), list(None, None));
    m.insert("mergingIntList".into(), ints(Some("merge")));
    m.insert("nonMergingIntList".into(), ints(None));
    m.insert(
        "replacingItem".into(),
        json!({"type": "object", "x-kubernetes-patch-strategy": "replace"}),
    );
    m.insert(
        "retainKeysMap".into(),
        json!({"allOf": [item("retainKeysMergeItem")], "x-kubernetes-patch-strategy": "retainKeys"}),
    );
    m.insert(
        "retainKeysMergingList".into(),
        list(Some("merge,retainKeys"), Some("name")),
    );
    let mut retain = scalars;
    let r = retain.as_object_mut().unwrap();
    r.insert("mergingList".into(), list(Some("merge"), Some("name")));
    r.insert("mergingIntList".into(), ints(Some("merge")));
    let mut defs = Map::new();
    defs.insert(
        "mergeItem".into(),
        json!({"type": "object", "properties": merge_item}),
    );
    defs.insert(
        "retainKeysMergeItem".into(),
        json!({"type": "object", "properties": retain}),
    );
    defs
}

/// (description, original, patch, expected result or `ERR<code>: <message part>`).
const CASES: &[(&str, &str, &str, &str)] = &[
    // Maps and null.
    ("add a field", r#"{"name":"1"}"#, r#"{"value":"1"}"#, r#"{"name":"1","value":"1"}"#),
    ("null deletes", r#"{"name":"1","value":"1"}"#, r#"{"name":null}"#, r#"{"value":"1"}"#),
    ("null of a missing field is dropped", r#"{"name":"1"}"#, r#"{"other":null}"#, r#"{"name":"1"}"#),
    ("nested maps merge", r#"{"simpleMap":{"key1":"1","key2":"1"}}"#,
     r#"{"simpleMap":{"key2":null,"key3":"3"}}"#, r#"{"simpleMap":{"key1":"1","key3":"3"}}"#),
    ("a new map keeps no nulls", r#"{}"#, r#"{"simpleMap":{"a":"1","b":null}}"#,
     r#"{"simpleMap":{"a":"1"}}"#),
    ("a changed type replaces", r#"{"simpleMap":{"a":"1"}}"#, r#"{"simpleMap":"x"}"#,
     r#"{"simpleMap":"x"}"#),
    ("replace strategy replaces a map", r#"{"replacingItem":{"a":1,"b":2}}"#,
     r#"{"replacingItem":{"c":3}}"#, r#"{"replacingItem":{"c":3}}"#),
    // $patch on maps.
    ("$patch delete clears a map", r#"{"simpleMap":{"key1":"1"},"name":"n"}"#,
     r#"{"simpleMap":{"$patch":"delete"}}"#, r#"{"simpleMap":{},"name":"n"}"#),
    ("$patch replace replaces the map", r#"{"name":"1","value":"1"}"#,
     r#"{"other":"a","$patch":"replace"}"#, r#"{"other":"a"}"#),
    ("$patch merge on a map is refused", r#"{"name":"1"}"#, r#"{"name":"2","$patch":"merge"}"#,
     "ERR500: unknown patch type: merge in map: map[$patch:merge name:2]"),
    // Lists without merge strategy.
    ("scalar lists are replaced", r#"{"nonMergingIntList":[1,2]}"#,
     r#"{"nonMergingIntList":[2,3]}"#, r#"{"nonMergingIntList":[2,3]}"#),
    ("map lists are replaced", r#"{"nonMergingList":[{"name":"1"},{"name":"2"}]}"#,
     r#"{"nonMergingList":[{"name":"3"}]}"#, r#"{"nonMergingList":[{"name":"3"}]}"#),
    // Merging lists.
    ("scalars merge as a set", r#"{"mergingIntList":[1,2]}"#, r#"{"mergingIntList":[2,3]}"#,
     r#"{"mergingIntList":[1,2,3]}"#),
    ("scalars keep the patch order", r#"{"mergingIntList":[1,2,3]}"#,
     r#"{"mergingIntList":[3,1]}"#, r#"{"mergingIntList":[2,3,1]}"#),
    ("maps merge by key", r#"{"mergingList":[{"name":"1","value":"a"},{"name":"2"}]}"#,
     r#"{"mergingList":[{"name":"1","other":"x","value":null}]}"#,
     r#"{"mergingList":[{"name":"1","other":"x"},{"name":"2"}]}"#),
    ("an added element goes first", r#"{"mergingList":[{"name":"1"},{"name":"2"}]}"#,
     r#"{"mergingList":[{"name":"3"}]}"#,
     r#"{"mergingList":[{"name":"3"},{"name":"1"},{"name":"2"}]}"#),
    ("the patch order wins", r#"{"mergingList":[{"name":"1"},{"name":"2","value":"b"},{"name":"3"}]}"#,
     r#"{"mergingList":[{"name":"3","value":"c"},{"name":"1","value":"a"},{"name":"2","other":"x"}]}"#,
     r#"{"mergingList":[{"name":"3","value":"c"},{"name":"1","value":"a"},{"name":"2","other":"x","value":"b"}]}"#),
    ("server-only elements keep their places", r#"{"mergingList":[{"name":"1"},{"name":"2","value":"b"},{"name":"3"}]}"#,
     r#"{"mergingList":[{"name":"3","value":"c"},{"name":"1","value":"a"}]}"#,
     r#"{"mergingList":[{"name":"2","value":"b"},{"name":"3","value":"c"},{"name":"1","value":"a"}]}"#),
    ("nested merging lists merge", r#"{"mergingList":[{"name":"1","mergingList":[{"name":"a","value":"x"}]}]}"#,
     r#"{"mergingList":[{"name":"1","mergingList":[{"name":"a","other":"y"}]}]}"#,
     r#"{"mergingList":[{"name":"1","mergingList":[{"name":"a","other":"y","value":"x"}]}]}"#),
    ("a missing merge key fails", r#"{"mergingList":[{"name":"1","value":"a"}]}"#,
     r#"{"mergingList":[{"value":"b"}]}"#,
     "ERR500: map: map[value:b] does not contain declared merge key: name"),
    ("empty merging lists stay empty", r#"{"mergingList":[]}"#, r#"{"mergingList":[]}"#,
     r#"{"mergingList":[]}"#),
    ("lists of lists are refused", r#"{"mergingIntList":[[1]]}"#, r#"{"mergingIntList":[[2]]}"#,
     "ERR422: lists of lists are not supported"),
    ("mixed element types fail", r#"{"mergingIntList":[1]}"#, r#"{"mergingIntList":["a"]}"#,
     "ERR500: list element types are not identical: [[1] [a]]"),
    // $patch in list elements.
    ("$patch delete removes every match", r#"{"mergingList":[{"name":"1"},{"name":"1"},{"name":"2","value":"a"},{"name":"3"},{"name":"3"}]}"#,
     r#"{"mergingList":[{"name":"1","$patch":"delete"},{"name":"3","$patch":"delete"}]}"#,
     r#"{"mergingList":[{"name":"2","value":"a"}]}"#),
    ("$patch delete needs the merge key", r#"{"mergingList":[{"name":"1"}]}"#,
     r#"{"mergingList":[{"$patch":"delete","value":"1"}]}"#,
     "ERR500: map: map[$patch:delete value:1] does not contain declared merge key: name"),
    ("$patch replace empties a list", r#"{"mergingList":[{"name":"1"},{"name":"2"}]}"#,
     r#"{"mergingList":[{"$patch":"replace"}]}"#, r#"{"mergingList":[]}"#),
    ("$patch replace keeps the other elements", r#"{"mergingList":[{"name":"1"},{"name":"2"}]}"#,
     r#"{"mergingList":[{"name":"3"},{"$patch":"replace"}]}"#, r#"{"mergingList":[{"name":"3"}]}"#),
    ("$patch merge in a list is refused", r#"{"mergingList":[{"name":"1"}]}"#,
     r#"{"mergingList":[{"name":"1","$patch":"merge"}]}"#,
     "ERR500: merging lists cannot yet be specified in the patch"),
    ("an unknown $patch in a list fails", r#"{"mergingList":[{"name":"1"}]}"#,
     r#"{"mergingList":[{"name":"1","$patch":"nope"}]}"#,
     "ERR500: unknown patch type: nope in map: map[$patch:nope name:1]"),
    // $setElementOrder.
    ("$setElementOrder orders a merged list", r#"{"mergingList":[{"name":"1","other":"a"},{"name":"2","value":"2","other":"b"}]}"#,
     r#"{"$setElementOrder/mergingList":[{"name":"4"},{"name":"1"},{"name":"2"},{"name":"3"}],"mergingList":[{"name":"4","value":"4"},{"name":"3","value":"3"}]}"#,
     r#"{"mergingList":[{"name":"4","value":"4"},{"name":"1","other":"a"},{"name":"2","value":"2","other":"b"},{"name":"3","value":"3"}]}"#),
    ("$setElementOrder may name absent elements", r#"{"mergingList":[{"name":"1"},{"name":"3"}]}"#,
     r#"{"$setElementOrder/mergingList":[{"name":"3"},{"name":"2"},{"name":"1"}],"mergingList":[{"name":"3","value":"3"},{"name":"1","value":"1"}]}"#,
     r#"{"mergingList":[{"name":"3","value":"3"},{"name":"1","value":"1"}]}"#),
    ("$setElementOrder orders scalars", r#"{"mergingIntList":[1,3]}"#,
     r#"{"$setElementOrder/mergingIntList":[3,2,1]}"#, r#"{"mergingIntList":[3,1]}"#),
    ("$setElementOrder must agree with the list", r#"{"mergingList":[{"name":"1"},{"name":"3"},{"name":"2"}]}"#,
     r#"{"$setElementOrder/mergingList":[{"name":"1"},{"name":"2"},{"name":"3"}],"mergingList":[{"name":"3","value":"3"},{"name":"1","value":"1"}]}"#,
     "ERR500: The order in patch list:\n[map[name:3 value:3] map[name:1 value:1]]\n doesn't match $setElementOrder list:\n[map[name:1] map[name:2] map[name:3]]\n"),
    ("$setElementOrder with a bad key", r#"{}"#, r#"{"$setElementOrder":[1]}"#,
     "ERR400: invalid patch format of setElementOrder list"),
    ("$setElementOrder must be a list", r#"{}"#, r#"{"$setElementOrder/mergingIntList":"x"}"#,
     "ERR500: expected a []interface {}, but received a string"),
    // $deleteFromPrimitiveList.
    ("$deleteFromPrimitiveList deletes", r#"{"mergingIntList":[1,2,3]}"#,
     r#"{"$deleteFromPrimitiveList/mergingIntList":[2]}"#, r#"{"mergingIntList":[1,3]}"#),
    ("$deleteFromPrimitiveList of an absent value", r#"{"mergingIntList":[1,2]}"#,
     r#"{"$deleteFromPrimitiveList/mergingIntList":[3]}"#, r#"{"mergingIntList":[1,2]}"#),
    ("$deleteFromPrimitiveList never creates the list", r#"{"foo":["bar"]}"#,
     r#"{"$deleteFromPrimitiveList/mergingIntList":[3]}"#, r#"{"foo":["bar"]}"#),
    ("$deleteFromPrimitiveList ignores the strategy", r#"{"nonMergingIntList":[1,2,3]}"#,
     r#"{"$deleteFromPrimitiveList/nonMergingIntList":[2]}"#, r#"{"nonMergingIntList":[1,3]}"#),
    ("delete duplicates and order scalars", r#"{"mergingIntList":[1,2,3,3,4]}"#,
     r#"{"$setElementOrder/mergingIntList":[1,2,4],"$deleteFromPrimitiveList/mergingIntList":[3]}"#,
     r#"{"mergingIntList":[1,2,4]}"#),
    ("add, delete and order scalars", r#"{"mergingIntList":[1,2,3]}"#,
     r#"{"$setElementOrder/mergingIntList":[1,2,4],"$deleteFromPrimitiveList/mergingIntList":[3],"mergingIntList":[4]}"#,
     r#"{"mergingIntList":[1,2,4]}"#),
    ("$deleteFromPrimitiveList with a bad key", r#"{}"#, r#"{"$deleteFromPrimitiveListX/a":[1]}"#,
     "ERR400: invalid patch format of primitive list"),
    // $retainKeys.
    ("$retainKeys clears the other keys", r#"{"retainKeysMap":{"name":"foo","value":"a","other":"b"}}"#,
     r#"{"retainKeysMap":{"$retainKeys":["name","value"],"value":"c"}}"#,
     r#"{"retainKeysMap":{"name":"foo","value":"c"}}"#),
    ("$retainKeys allows nulls and directives", r#"{"retainKeysMap":{"name":"foo","mergingIntList":[1,2],"other":"b"}}"#,
     r#"{"retainKeysMap":{"$retainKeys":["name","mergingIntList"],"other":null,"$deleteFromPrimitiveList/mergingIntList":[1]}}"#,
     r#"{"retainKeysMap":{"name":"foo","mergingIntList":[2]}}"#),
    ("$retainKeys in list elements", r#"{"retainKeysMergingList":[{"name":"foo","value":"a","other":"b"},{"name":"bar"}]}"#,
     r#"{"retainKeysMergingList":[{"name":"foo","$retainKeys":["name","other"]}]}"#,
     r#"{"retainKeysMergingList":[{"name":"foo","other":"b"},{"name":"bar"}]}"#),
    ("without $retainKeys a retainKeys map merges", r#"{"retainKeysMap":{"name":"foo","value":"a"}}"#,
     r#"{"retainKeysMap":{"value":null,"other":"x"}}"#,
     r#"{"retainKeysMap":{"name":"foo","other":"x"}}"#),
    ("a patched key must be retained", r#"{"retainKeysMap":{"name":"foo"}}"#,
     r#"{"retainKeysMap":{"$retainKeys":["name"],"value":"a"}}"#,
     "ERR400: invalid patch format of retainKeys"),
    ("$retainKeys must be a list", r#"{"retainKeysMap":{"name":"foo"}}"#,
     r#"{"retainKeysMap":{"$retainKeys":"name"}}"#, "ERR400: invalid patch format of retainKeys"),
];

fn check(desc: &str, schema: Schema, original: &Value, patch: &Value, want: &str) {
    let got = apply(original, patch, schema);
    if let Some(err) = want.strip_prefix("ERR") {
        let (code, message) = err.split_once(": ").unwrap();
        let e = got.expect_err(desc);
        assert_eq!(e.message(), message, "{desc}");
        let class = match e {
            SmpError::BadRequest(_) => "400",
            SmpError::Unprocessable(_) => "422",
            SmpError::Failed(_) => "500",
        };
        assert_eq!(class, code, "{desc}");
    } else {
        let want: Value = serde_json::from_str(want).unwrap();
        assert_eq!(got.expect(desc), want, "{desc}");
    }
}

#[test]
fn upstream_cases_on_the_merge_item_type() {
    let defs = merge_item_defs();
    let schema = Schema::new(&defs, &defs["mergeItem"]);
    for (desc, original, patch, want) in CASES {
        let parse =
            |s: &str| serde_json::from_str::<Value>(s).unwrap_or_else(|e| panic!("{desc}: {e}"));
        check(desc, schema, &parse(original), &parse(patch), want);
    }
}

#[test]
fn whole_patch_shapes() {
    let o = json!({"a": 1});
    assert_eq!(apply(&o, &Value::Null, Schema::none()).unwrap(), o);
    let e = apply(&o, &json!([1]), Schema::none()).unwrap_err();
    assert_eq!(
        e,
        SmpError::BadRequest(
            "json: cannot unmarshal array into Go value of type map[string]interface {}".into()
        )
    );
    assert_eq!(Error::from(e).code(), 400);
    let no_key = SmpError::Failed("map: map[] does not contain declared merge key: name".into());
    assert_eq!(Error::from(no_key).code(), 500);
    assert_eq!(Error::from(SmpError::Unprocessable("x".into())).code(), 422);
    // Without a schema, lists are replaced and maps merge.
    assert_eq!(
        apply(
            &json!({"l": [1], "m": {"a": 1}}),
            &json!({"l": [2], "m": {"b": 2}}),
            Schema::none()
        )
        .unwrap(),
        json!({"l": [2], "m": {"a": 1, "b": 2}})
    );
    assert_eq!(go(&json!(1.5)), "1.5");
    assert_eq!(go(&json!(1e6)), "1e+06");
    assert_eq!(go(&json!(0.00001)), "1e-05");
}

fn deployment(containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "finalizers": ["a"]},
        "spec": {
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
            "template": {"spec": {
                "containers": containers,
                "tolerations": [{"key": "k1"}],
                "volumes": [{"name": "v1", "emptyDir": {}}],
            }},
        },
    })
}

#[test]
fn built_in_kinds_merge_by_their_schema() {
    let app = json!({"name": "app", "image": "nginx:1.25",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "volumeMounts": [{"name": "v1", "mountPath": "/a"}]});
    let d = deployment(json!([app]));
    let schema = Schema::of_object(&d);
    // What kubectl apply sends after the file changes image, drops env B, adds a container.
    let applied = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
        "containers": [
            {"name": "app", "image": "nginx:1.26", "$setElementOrder/env": [{"name": "A"}],
             "env": [{"$patch": "delete", "name": "B"}]},
            {"name": "sidecar", "image": "busybox"},
        ],
    }}}});
    let out = apply(&d, &applied, schema).unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([
            {"name": "app", "image": "nginx:1.26", "env": [{"name": "A", "value": "1"}],
             "ports": [{"containerPort": 80, "protocol": "TCP"}],
             "volumeMounts": [{"name": "v1", "mountPath": "/a"}]},
            {"name": "sidecar", "image": "busybox"},
        ])
    );
    let out = apply(
        &d,
        &json!({
            "metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {
                "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null},
                "template": {"spec": {
                    "containers": [{"name": "app",
                        "ports": [{"containerPort": 443}],
                        "volumeMounts": [{"mountPath": "/a", "readOnly": true}]}],
                    "tolerations": [{"key": "k2"}],
                    "volumes": [{"name": "v2", "emptyDir": {}}],
                }},
            },
        }),
        schema,
    )
    .unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    let spec = &out["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"][0]["ports"],
        json!([{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(
        spec["containers"][0]["volumeMounts"],
        json!([{"name": "v1", "mountPath": "/a", "readOnly": true}])
    );
    assert_eq!(spec["tolerations"], json!([{"key": "k2"}]));
    assert_eq!(
        spec["volumes"],
        json!([{"name": "v2", "emptyDir": {}}, {"name": "v1", "emptyDir": {}}])
    );
}
