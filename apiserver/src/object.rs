//! Object semantics that hold for every kind: the metadata the server owns, and the order in
//! which defaulting (`crate::defaults`) and validation (`crate::validate`) run around it.
//!
//! Invariants (upstream's `BeforeCreate`/`BeforeUpdate` in `rest/create.go`, `update.go`):
//! - On create the server sets `uid`, `creationTimestamp`, `generation` (kinds that track it)
//!   and a name from `generateName`; it clears `deletionTimestamp` and `selfLink`; a client
//!   `resourceVersion` is an error.
//! - On update `uid`, `creationTimestamp`, `deletionTimestamp`, `generation` and the
//!   namespace come from the stored object; `generation` is bumped only when the defaulted
//!   `spec` changed (Deployments: or their annotations, which are copied to ReplicaSets).
//!   Clients thus never set or change `deletionTimestamp`; while it is set they may not add
//!   finalizers (`crate::deletion::update_causes`). A namespace's `spec.finalizers` changes
//!   only through `/finalize`.
//! - For kinds with a status subresource the main endpoint keeps the stored `status`, and
//!   `/status` keeps everything but `status` (metadata changes are ignored too, as upstream's
//!   status strategies reset them); a status update never bumps `generation`.
//! - Create: defaults, then the create-time status, then validation; update: defaults, the
//!   inherited fields, then validation including the immutable fields. Any field error
//!   fails the whole write with one 422 listing all of them.
//! - `resourceVersion` is never stored: it is the key's mod_revision, set on every read.

use rand::Rng;
use serde_json::{json, Map, Value};

use crate::defaults;
use crate::error::{Cause, Error, Result};
use crate::resources::ResourceDef;
use crate::validate;

/// `metadata` of an object (created empty when missing).
pub(crate) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Sets `metadata.resourceVersion` to the stored revision.
pub(crate) fn set_rv(obj: &mut Value, rev: i64) {
    meta_mut(obj).insert("resourceVersion".into(), json!(rev.to_string()));
}

/// A random RFC 4122 version 4 UUID.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `generateName` + 5 characters from upstream's alphabet (no vowels, no confusable digits),
/// the base cut so the name stays within 63 characters.
fn generate_name(base: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let base: String = base.chars().take(58).collect();
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

/// Checks the body's `apiVersion` and `kind` against the endpoint, filling them in when the
/// client left them out.
pub(crate) fn check_type(def: &ResourceDef, obj: &mut Value) -> Result<()> {
    if !obj.is_object() {
        return Err(Error::BadRequest(
            "the object provided is not a JSON object".to_string(),
        ));
    }
    let want_av = def.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av != want_av => {
            return Err(Error::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
        Some(_) => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(def.kind),
        Some(k) if k != def.kind => {
            return Err(Error::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )))
        }
        Some(_) => {}
    }
    Ok(())
}

fn invalid(def: &ResourceDef, name: &str, causes: Vec<Cause>) -> Error {
    Error::Invalid {
        group: def.group.to_string(),
        kind: def.kind.to_string(),
        name: name.to_string(),
        causes,
    }
}

/// Prepares a new object for storage (see the module invariants). `namespace` is the one in
/// the URL.
pub(crate) fn prepare_create(
    def: &ResourceDef,
    obj: &mut Value,
    namespace: Option<&str>,
) -> Result<()> {
    check_type(def, obj)?;
    let meta = meta_mut(obj);
    if meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(Error::Internal(
            "resourceVersion should not be set on objects to be created".into(),
        ));
    }
    match (namespace, meta.get("namespace").and_then(Value::as_str)) {
        (Some(url), Some(body)) if !body.is_empty() && body != url => {
            return Err(Error::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .into(),
            ))
        }
        (Some(url), _) => {
            meta.insert("namespace".into(), json!(url));
        }
        (None, _) => {
            meta.remove("namespace");
        }
    }
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = if name.is_empty() {
        match meta.get("generateName").and_then(Value::as_str) {
            Some(g) if !g.is_empty() => generate_name(g),
            _ => {
                return Err(invalid(
                    def,
                    "",
                    vec![Cause::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ))
            }
        }
    } else {
        name
    };
    meta.insert("name".into(), json!(name));
    meta.insert("uid".into(), json!(uuid_v4()));
    meta.insert(
        "creationTimestamp".into(),
        json!(crate::time::rfc3339(crate::time::now_unix())),
    );
    for server_owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(server_owned);
    }
    if def.tracks_generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    defaults::apply(def, obj);
    defaults::on_create(def, obj);
    let causes = validate::object(def, obj);
    if !causes.is_empty() {
        return Err(invalid(def, &name, causes));
    }
    Ok(())
}

/// Merges the server-owned parts of `old` (the stored object) into `new` for an update through
/// the main endpoint (`subresource` None) or `/status`.
pub(crate) fn prepare_update(
    def: &ResourceDef,
    old: &Value,
    new: &mut Value,
    subresource: Option<&str>,
) -> Result<()> {
    check_type(def, new)?;
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if subresource == Some("status") {
        // Only status changes here: upstream's status strategies reset spec and metadata.
        let status = new.get("status").cloned();
        let mut merged = old.clone();
        match status {
            Some(s) => merged["status"] = s,
            None => {
                if let Some(m) = merged.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        *new = merged;
        return Ok(());
    }
    defaults::apply(def, new);
    defaults::on_update(def, old, new);
    let meta = meta_mut(new);
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
    ] {
        match old_meta.get(owned) {
            Some(v) => meta.insert(owned.into(), v.clone()),
            None => meta.remove(owned),
        };
    }
    meta.remove("selfLink");
    if def.has_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if def.group.is_empty() && def.kind == "Namespace" {
        // Only `/finalize` changes a namespace's spec.finalizers (upstream's strategy).
        match old.pointer("/spec/finalizers") {
            Some(f) => new["spec"]["finalizers"] = f.clone(),
            None => {
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("finalizers");
                }
            }
        }
    }
    if def.tracks_generation {
        let old_gen = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let annotations_count = def.group == "apps" && def.kind == "Deployment";
        let changed = old.get("spec") != new.get("spec")
            || (annotations_count
                && old_meta.get("annotations") != new["metadata"].get("annotations"));
        let gen = if changed { old_gen + 1 } else { old_gen };
        meta_mut(new).insert("generation".into(), json!(gen));
    }
    let mut causes = crate::deletion::update_causes(old, new);
    causes.extend(validate::on_update(def, old, new));
    if !causes.is_empty() {
        let name = meta_str(new, "name").unwrap_or_default().to_string();
        return Err(invalid(def, &name, causes));
    }
    Ok(())
}

/// The bytes stored for `obj`: JSON without `resourceVersion`.
pub(crate) fn encode_for_storage(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    meta_mut(&mut o).remove("resourceVersion");
    serde_json::to_vec(&o).unwrap_or_default()
}

/// A stored value back as an object with `resourceVersion` = `rev`.
pub(crate) fn decode_stored(value: &[u8], rev: i64) -> Result<Value> {
    let mut obj: Value = serde_json::from_slice(value)
        .map_err(|e| Error::Internal(format!("decoding a stored object: {e}")))?;
    set_rv(&mut obj, rev);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn deployment(name: &str, replicas: i64) -> Value {
        json!({"metadata": {"name": name}, "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    }

    #[test]
    fn create_sets_server_owned_metadata() {
        let d = find("apps", "v1", "deployments").unwrap();
        let mut o = deployment("", 1);
        o["metadata"] = json!({"generateName": "web-", "selfLink": "x"});
        prepare_create(d, &mut o, Some("default")).unwrap();
        let name = meta_str(&o, "name").unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(o["apiVersion"], "apps/v1");
        assert_eq!(o["kind"], "Deployment");
        assert_eq!(o["metadata"]["namespace"], "default");
        assert_eq!(o["metadata"]["generation"], 1);
        assert_eq!(meta_str(&o, "uid").unwrap().len(), 36);
        assert!(o["metadata"].get("selfLink").is_none());
        assert_eq!(o["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(o["status"], json!({}));
    }

    #[test]
    fn create_rejects_bad_input() {
        let cm = find("", "v1", "configmaps").unwrap();
        let err = |mut o: Value| prepare_create(cm, &mut o, Some("default")).unwrap_err();
        assert_eq!(err(json!({"metadata": {}})).code(), 422);
        assert_eq!(err(json!({"metadata": {"name": "Bad"}})).code(), 422);
        assert_eq!(
            err(json!({"metadata": {"name": "a", "namespace": "other"}})).code(),
            400
        );
        assert_eq!(
            err(json!({"apiVersion": "v2", "metadata": {"name": "a"}})).code(),
            400
        );
        assert_eq!(
            err(json!({"metadata": {"name": "a", "resourceVersion": "5"}})).code(),
            500
        );
        let d = find("apps", "v1", "deployments").unwrap();
        let mut o = json!({"metadata": {"name": "x"}, "spec": {"template": {
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        let e = prepare_create(d, &mut o, Some("default")).unwrap_err();
        assert_eq!(
            e.status()["message"],
            "Deployment.apps \"x\" is invalid: [spec.selector: Required value, \
             spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: \
             `selector` does not match template `labels`]"
        );
    }

    #[test]
    fn update_keeps_server_owned_fields_and_bumps_generation_on_spec_change() {
        let d = find("apps", "v1", "deployments").unwrap();
        let mut old = deployment("d", 1);
        prepare_create(d, &mut old, Some("n")).unwrap();
        old["metadata"]["generation"] = json!(3);
        old["status"] = json!({"x": 1});
        // A PUT without the defaults and with another status: same generation, old status.
        let mut new = deployment("d", 1);
        new["metadata"]["uid"] = json!("evil");
        new["status"] = json!({"x": 2});
        prepare_update(d, &old, &mut new, None).unwrap();
        assert_eq!(new["metadata"]["uid"], old["metadata"]["uid"]);
        assert_eq!(new["metadata"]["generation"], 3);
        assert_eq!(new["status"]["x"], 1);
        new["spec"]["replicas"] = json!(2);
        prepare_update(d, &old, &mut new, None).unwrap();
        assert_eq!(new["metadata"]["generation"], 4);
        // Annotations count for deployments.
        let mut annotated = old.clone();
        annotated["metadata"]["annotations"] = json!({"a": "b"});
        prepare_update(d, &old, &mut annotated, None).unwrap();
        assert_eq!(annotated["metadata"]["generation"], 4);
        // Status: only status changes, generation stays.
        let mut st = deployment("d", 9);
        st["status"] = json!({"x": 5});
        st["metadata"]["labels"] = json!({"ignored": "yes"});
        prepare_update(d, &old, &mut st, Some("status")).unwrap();
        assert_eq!(st["spec"]["replicas"], 1);
        assert_eq!(st["status"]["x"], 5);
        assert_eq!(st["metadata"]["generation"], 3);
        assert!(st["metadata"].get("labels").is_none());
        // The selector is immutable.
        let mut moved = old.clone();
        moved["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
        moved["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        let e = prepare_update(d, &old, &mut moved, None).unwrap_err();
        assert_eq!(
            e.status()["message"],
            "Deployment.apps \"d\" is invalid: spec.selector: Invalid value: \
             v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"other\"}, \
             MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        );
    }
}
