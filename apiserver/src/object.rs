//! Object semantics that hold for every kind: the metadata the server owns, name validation,
//! and the few per-kind defaults kubectl's output depends on.
//!
//! Invariants (upstream's `BeforeCreate`/`BeforeUpdate` in `rest/create.go`, `update.go`):
//! - On create the server sets `uid`, `creationTimestamp`, `generation` (kinds that track it)
//!   and a name from `generateName`; it clears `deletionTimestamp` and `selfLink`; a client
//!   `resourceVersion` is an error.
//! - On update `uid`, `creationTimestamp`, `deletionTimestamp`, `generation` and the
//!   namespace come from the stored object; `generation` is bumped only when `spec` changed.
//! - For kinds with a status subresource the main endpoint keeps the stored `status`, and
//!   `/status` keeps everything but `status` (and labels/annotations, which it may change).
//! - `resourceVersion` is never stored: it is the key's mod_revision, set on every read.

use rand::Rng;
use serde_json::{json, Map, Value};

use crate::error::{Cause, Error, Result};
use crate::resources::ResourceDef;

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

const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
    alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
    (e.g. 'example.com', regex used for validation is \
    '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
    characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  \
    or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL: &str = "a DNS-1035 label must consist of lower case alphanumeric characters \
    or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. \
    'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Why `name` is not a valid name for `def` (None: valid).
pub(crate) fn name_problem(def: &ResourceDef, name: &str) -> Option<String> {
    match def.resource {
        "namespaces" => {
            if name.len() > 63 {
                Some("must be no more than 63 characters".into())
            } else if !is_label(name) {
                Some(DNS1123_LABEL.into())
            } else {
                None
            }
        }
        "services" => {
            if name.len() > 63 {
                Some("must be no more than 63 characters".into())
            } else if !is_label(name) || !name.as_bytes()[0].is_ascii_lowercase() {
                Some(DNS1035_LABEL.into())
            } else {
                None
            }
        }
        _ => {
            if name.len() > 253 {
                Some("must be no more than 253 characters".into())
            } else if !name.split('.').all(is_label) {
                Some(DNS1123_SUBDOMAIN.into())
            } else {
                None
            }
        }
    }
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
    if let Some(why) = name_problem(def, &name) {
        return Err(invalid(
            def,
            &name,
            vec![Cause::invalid("metadata.name", &json!(name), &why)],
        ));
    }
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
    default_on_create(def, obj);
    Ok(())
}

/// The defaults kubectl's default output shows (a small part of upstream's defaulting).
fn default_on_create(def: &ResourceDef, obj: &mut Value) {
    let set_if_missing = |v: &mut Value, path: &[&str], value: Value| {
        let mut cur = v;
        for p in &path[..path.len() - 1] {
            if !cur.get(*p).is_some_and(Value::is_object) {
                cur[*p] = json!({});
            }
            cur = &mut cur[*p];
        }
        let last = path[path.len() - 1];
        if cur.get(last).is_none_or(Value::is_null) {
            cur[last] = value;
        }
    };
    match (def.group, def.resource) {
        ("", "namespaces") => {
            set_if_missing(obj, &["spec", "finalizers"], json!(["kubernetes"]));
            obj["status"] = json!({"phase": "Active"});
            // Upstream labels every namespace with its own name.
            let name = meta_str(obj, "name").unwrap_or_default().to_string();
            set_if_missing(obj, &["metadata", "labels"], json!({}));
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        ("", "secrets") => set_if_missing(obj, &["type"], json!("Opaque")),
        ("", "pods") => {
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            set_if_missing(obj, &["spec", "restartPolicy"], json!("Always"));
            set_if_missing(obj, &["spec", "dnsPolicy"], json!("ClusterFirst"));
            set_if_missing(obj, &["spec", "schedulerName"], json!("default-scheduler"));
            set_if_missing(obj, &["spec", "terminationGracePeriodSeconds"], json!(30));
        }
        ("", "services") => {
            set_if_missing(obj, &["spec", "type"], json!("ClusterIP"));
            set_if_missing(obj, &["spec", "sessionAffinity"], json!("None"));
        }
        _ => {
            if def.has_status && obj.get("status").is_some() {
                obj["status"] = json!({});
            }
        }
    }
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
    if def.tracks_generation {
        let old_gen = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let gen = if old.get("spec") != new.get("spec") {
            old_gen + 1
        } else {
            old_gen
        };
        meta_mut(new).insert("generation".into(), json!(gen));
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

    #[test]
    fn names_are_validated_per_kind() {
        let cm = find("", "v1", "configmaps").unwrap();
        let ns = find("", "v1", "namespaces").unwrap();
        let svc = find("", "v1", "services").unwrap();
        assert_eq!(name_problem(cm, "a.b-c"), None);
        assert_eq!(name_problem(cm, "X").as_deref(), Some(DNS1123_SUBDOMAIN));
        assert_eq!(name_problem(cm, "a..b").as_deref(), Some(DNS1123_SUBDOMAIN));
        assert_eq!(name_problem(ns, "a.b").as_deref(), Some(DNS1123_LABEL));
        assert_eq!(name_problem(svc, "1abc").as_deref(), Some(DNS1035_LABEL));
        assert!(name_problem(ns, &"a".repeat(64)).unwrap().contains("63"));
    }

    #[test]
    fn create_sets_server_owned_metadata() {
        let d = find("apps", "v1", "deployments").unwrap();
        let mut o = json!({"metadata": {"generateName": "web-", "selfLink": "x"}, "spec": {}});
        prepare_create(d, &mut o, Some("default")).unwrap();
        let name = meta_str(&o, "name").unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(o["apiVersion"], "apps/v1");
        assert_eq!(o["kind"], "Deployment");
        assert_eq!(o["metadata"]["namespace"], "default");
        assert_eq!(o["metadata"]["generation"], 1);
        assert_eq!(meta_str(&o, "uid").unwrap().len(), 36);
        assert!(o["metadata"].get("selfLink").is_none());
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
    }

    #[test]
    fn update_keeps_server_owned_fields_and_bumps_generation_on_spec_change() {
        let d = find("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"name": "d", "uid": "u", "creationTimestamp": "t",
            "generation": 3, "namespace": "n"}, "spec": {"replicas": 1}, "status": {"x": 1}});
        let mut new = json!({"metadata": {"name": "d", "uid": "evil"}, "spec": {"replicas": 1},
            "status": {"x": 2}});
        prepare_update(d, &old, &mut new, None).unwrap();
        assert_eq!(new["metadata"]["uid"], "u");
        assert_eq!(new["metadata"]["generation"], 3);
        assert_eq!(new["status"]["x"], 1);
        new["spec"]["replicas"] = json!(2);
        prepare_update(d, &old, &mut new, None).unwrap();
        assert_eq!(new["metadata"]["generation"], 4);
        let mut st =
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 9}, "status": {"x": 5}});
        prepare_update(d, &old, &mut st, Some("status")).unwrap();
        assert_eq!(
            (st["spec"]["replicas"].clone(), st["status"]["x"].clone()),
            (json!(1), json!(5))
        );
    }
}
