use super::*;
use crate::resources::find;

fn deployments() -> &'static ResourceDef {
    find("apps", "v1", "deployments").unwrap()
}

fn decode(body: &str, d: Directive) -> Result<(Value, Vec<String>)> {
    decode_object(deployments(), body.as_bytes(), d)
}

const DEPLOYMENT: &str = r#"{
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"a": "1", "a": "2"}},
    "spec": {
        "replicas": 1, "foo": true,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "c", "image": "nginx",
                 "resources": {"limits": {"cpu": "1", "memory": 512}},
                 "ports": [{"containerPort": 80, "bogus": 1}]},
                {"name": "d", "image": "nginx", "imagee": "typo"}
            ]}
        }
    }
}"#;

#[test]
fn unknown_and_duplicate_fields_are_found_with_upstreams_paths() {
    let (obj, warnings) = decode(DEPLOYMENT, Directive::Warn).unwrap();
    assert_eq!(
        warnings,
        [
            r#"duplicate field "metadata.annotations.a""#,
            r#"unknown field "spec.foo""#,
            r#"unknown field "spec.template.spec.containers[0].ports[0].bogus""#,
            r#"unknown field "spec.template.spec.containers[1].imagee""#,
        ]
    );
    // Unknown fields are dropped, the last duplicate wins, everything else stays.
    assert!(obj["spec"].get("foo").is_none());
    assert!(obj["spec"]["template"]["spec"]["containers"][1]
        .get("imagee")
        .is_none());
    assert_eq!(obj["metadata"]["annotations"]["a"], "2");
    assert_eq!(obj["spec"]["replicas"], 1);
    let c0 = &obj["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c0["ports"], json!([{"containerPort": 80}]));
    // int-or-string and quantities are taken as they come, in either form.
    assert_eq!(obj["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(
        obj["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    assert_eq!(c0["resources"]["limits"]["memory"], 512);
}

#[test]
fn strict_fails_with_upstreams_message_and_ignore_is_silent() {
    let body = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"},
                   "spec": {"foo": 1, "bar": {"x": 1}, "replicas": 1, "replicas": 2}}"#;
    let err = decode(body, Directive::Strict).unwrap_err();
    assert_eq!(err.code(), 400);
    assert_eq!(
        err.status()["message"],
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: \
         unknown field \"spec.foo\", unknown field \"spec.bar\", duplicate field \"spec.replicas\""
    );
    assert_eq!(err.status()["reason"], "BadRequest");
    let (obj, warnings) = decode(body, Directive::Ignore).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(obj["spec"], json!({"replicas": 2}));
    let (_, clean) = decode(
        r#"{"metadata": {"name": "a"}, "spec": {}}"#,
        Directive::Strict,
    )
    .unwrap();
    assert!(clean.is_empty());
}

#[test]
fn maps_of_structs_continue_the_path_with_the_key() {
    // Few built-in maps hold structs; the rule is upstream's for every map.
    let catalog = schemas::catalog();
    let schema = json!({"type": "object", "additionalProperties": {
        "$ref": "#/components/schemas/io.k8s.api.core.v1.ContainerPort"
    }});
    let raw: Raw =
        serde_json::from_str(r#"{"http": {"containerPort": 80, "nope": 1}, "http": {}}"#).unwrap();
    let mut w = Walker::new(catalog);
    let v = w.walk(raw, Some(&schema), "spec.ports");
    assert_eq!(
        w.errors,
        [
            r#"unknown field "spec.ports.http.nope""#,
            r#"duplicate field "spec.ports.http""#
        ]
    );
    assert_eq!(v, json!({"http": {}}));
}

#[test]
fn preserve_unknown_fields_keeps_everything_but_reports_duplicates() {
    let catalog = schemas::catalog();
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}},
                        "x-kubernetes-preserve-unknown-fields": true});
    let raw: Raw =
        serde_json::from_str(r#"{"a": "x", "b": {"c": 1, "c": 2}, "d": [{"e": 1, "e": 1}]}"#)
            .unwrap();
    let mut w = Walker::new(catalog);
    let v = w.walk(raw, Some(&schema), "");
    assert_eq!(
        w.errors,
        [r#"duplicate field "b.c""#, r#"duplicate field "d[0].e""#]
    );
    assert_eq!(v, json!({"a": "x", "b": {"c": 2}, "d": [{"e": 1}]}));
}

#[test]
fn errors_are_deduplicated_and_capped() {
    let mut items = Vec::new();
    for i in 0..150 {
        items.push(format!(r#"{{"name": "c{i}", "x{i}": 1, "x{i}": 2}}"#));
    }
    let body = format!(
        concat!(
            r#"{{"metadata": {{"name": "a"}}, "#,
            r#""spec": {{"template": {{"spec": {{"containers": [{}]}}}}}}}}"#
        ),
        items.join(",")
    );
    let (_, w) = decode(&body, Directive::Warn).unwrap();
    assert_eq!(w.len(), 100);
    assert_eq!(
        w[0],
        r#"unknown field "spec.template.spec.containers[0].x0""#
    );
    assert_eq!(
        w[1],
        r#"unknown field "spec.template.spec.containers[1].x1""#
    );
}

#[test]
fn directives_parse_like_upstream() {
    assert_eq!(
        Directive::parse(None, "CreateOptions").unwrap(),
        Directive::Warn
    );
    assert_eq!(
        Directive::parse(Some("Strict"), "x").unwrap(),
        Directive::Strict
    );
    assert_eq!(
        Directive::parse(Some("Ignore"), "x").unwrap(),
        Directive::Ignore
    );
    let e = Directive::parse(Some("strict"), "CreateOptions").unwrap_err();
    assert_eq!(e.code(), 422);
    assert_eq!(
        e.status()["message"],
        "CreateOptions.meta.k8s.io \"\" is invalid: fieldValidation: Unsupported value: \
         \"strict\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
    );
}

#[test]
fn patches_report_body_duplicates_and_unknown_fields_of_the_result() {
    let d = deployments();
    let body = br#"{"spec": {"paused": true, "paused": false}}"#;
    let dups = patch_body_errors(PatchType::Merge, body, Directive::Strict).unwrap();
    assert_eq!(dups, [r#"duplicate field "spec.paused""#]);
    assert!(patch_body_errors(PatchType::Merge, body, Directive::Ignore)
        .unwrap()
        .is_empty());
    let ops = br#"[{"op": "add", "path": "/spec/x", "value": {"k": 1, "k": 2}, "extra": 1}]"#;
    assert_eq!(
        patch_body_errors(PatchType::Json, ops, Directive::Warn).unwrap(),
        [
            r#"json patch duplicate field "[0].value.k""#,
            r#"json patch unknown field "[0].extra""#
        ]
    );

    let patched = json!({"metadata": {"name": "a"}, "spec": {"x": 1, "paused": false}});
    let (obj, warnings) = check_patched(
        d,
        Directive::Warn,
        PatchType::Merge,
        body,
        patched.clone(),
        &dups,
    )
    .unwrap();
    assert_eq!(obj["spec"], json!({"paused": false}));
    assert_eq!(
        warnings,
        [
            r#"duplicate field "spec.paused""#,
            r#"unknown field "spec.x""#
        ]
    );
    let e = check_patched(
        d,
        Directive::Strict,
        PatchType::Merge,
        body,
        patched.clone(),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.code(), 422);
    let msg = e.status()["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with(r#" "" is invalid: patch: Invalid value: "{\"metadata\""#),
        "{msg}"
    );
    assert!(
        msg.ends_with(r#": strict decoding error: unknown field "spec.x""#),
        "{msg}"
    );
    // A strategic merge patch is shown as Go prints the decoded patch.
    let smp = br#"{"spec": {"x": 1, "paused": false}}"#;
    let e = check_patched(
        d,
        Directive::Strict,
        PatchType::StrategicMerge,
        smp,
        patched,
        &[],
    )
    .unwrap_err();
    assert!(e.status()["message"]
        .as_str()
        .unwrap()
        .contains(r#"Invalid value: "map[spec:map[paused:false x:1]]": strict"#));
}

#[test]
fn warnings_become_headers() {
    let r = crate::handlers::full(200, "application/json", "{}");
    let r = with_warnings(r, &[r#"unknown field "spec.foo""#.to_string()]);
    let all: Vec<_> = r.headers().get_all(hyper::header::WARNING).iter().collect();
    assert_eq!(all, [r#"299 - "unknown field \"spec.foo\"""#]);
}

#[test]
fn go_quoting_and_printing() {
    assert_eq!(go_quote("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\x01é""#);
    assert_eq!(
        go_value(&json!({"b": [1, "x", null], "a": {"c": true, "d": 1.5}})),
        "map[a:map[c:true d:1.5] b:[1 x <nil>]]"
    );
    assert_eq!(go_value(&json!(1e21)), "1e+21");
}
