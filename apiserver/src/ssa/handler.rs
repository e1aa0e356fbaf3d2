//! The apply request: options, body, and the read-merge-write against the registry
//! (upstream's `applyPatcher` inside the patch handler, which creates a missing object).

use std::sync::Mutex;

use hyper::Response;
use serde_json::{json, Value};

use super::managers::{conflict_message, ApplyError, Conflict};
use crate::error::{Cause, Error, Result};
use crate::handlers::{json_reply, Call, State};
use crate::object;
use crate::resources::ResourceDef;
use crate::server::Body;

/// `PATCH` with an apply patch on `name` (or its subresource `sub`).
pub(crate) async fn serve(
    state: &State,
    def: &'static ResourceDef,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    call: &Call,
) -> Result<Response<Body>> {
    let manager = call.query.get("fieldManager").unwrap_or("");
    if manager.is_empty() {
        return Err(Error::Invalid {
            group: "meta.k8s.io".into(),
            kind: "PatchOptions".into(),
            name: String::new(),
            causes: vec![Cause::required(
                "fieldManager",
                "is required for apply patch",
            )],
        });
    }
    let force = call.query.flag("force")?;
    let dry_run = call.query.get("dryRun").is_some();
    let config = decode_config(def, &call.body)?;
    let conflicts: Mutex<Option<Vec<Conflict>>> = Mutex::new(None);
    let run = |live: Option<&Value>| -> Result<Value> {
        match super::apply(def, live, &config, manager, force, sub) {
            Ok(obj) => {
                check_name(&obj, name)?;
                Ok(obj)
            }
            Err(ApplyError::Conflicts(c)) => {
                *conflicts.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
                Err(Error::Internal("apply conflicts".into()))
            }
            Err(ApplyError::Type(e)) => Err(Error::Internal(format!(
                "failed to create typed patch object ({}, Kind={}) {}: {e}",
                def.api_version(),
                def.kind,
                ns.map_or(name.to_string(), |n| format!("{n}/{name}"))
            ))),
        }
    };
    // A conflict is answered here, not as an `Error`: the crate's error has no
    // field-manager causes.
    let fail = |e: Error| -> Result<Response<Body>> {
        match conflicts.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(c) => Ok(json_reply(409, &conflict_status(&c))),
            None => Err(e),
        }
    };
    loop {
        let live = match state.registry.get(def, ns, name, None).await {
            Ok(live) => Some(live),
            Err(Error::NotFound { .. }) if sub.is_none() => None,
            Err(e) => return Err(e),
        };
        let Some(live) = live else {
            let mut obj = match run(None) {
                Ok(o) => o,
                Err(e) => return fail(e),
            };
            object::prepare_create(def, &mut obj, ns)?;
            if dry_run {
                return Ok(json_reply(201, &obj));
            }
            match crate::defaults::clusterip::create(&state.registry, def, obj).await {
                Ok(created) => return Ok(json_reply(201, &created)),
                Err(Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        };
        let update = |old: &Value| -> Result<Value> {
            let mut new = run(Some(old))?;
            if new["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                return Err(Error::stale(&def.group_resource(), name));
            }
            object::prepare_update(def, old, &mut new, sub)?;
            super::keep_timestamps_of_noop(old, &mut new);
            Ok(new)
        };
        if dry_run {
            return match update(&live) {
                Ok(new) => Ok(json_reply(200, &new)),
                Err(e) => fail(e),
            };
        }
        match state
            .registry
            .update_with(def, ns, name, None, update)
            .await
        {
            Ok(updated) => return Ok(json_reply(200, &updated)),
            // Deleted since the read: apply creates it.
            Err(Error::NotFound { .. }) if sub.is_none() => continue,
            Err(e) => return fail(e),
        }
    }
}

/// The applied configuration: a JSON (YAML's JSON subset) object of this endpoint's kind,
/// without managedFields.
fn decode_config(def: &ResourceDef, body: &[u8]) -> Result<Value> {
    let config: Value = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "error decoding YAML: only the JSON form of YAML is supported: {e}"
        ))
    })?;
    if !config.is_object() {
        return Err(Error::BadRequest(
            "error decoding YAML: the apply patch must be an object".into(),
        ));
    }
    let want = def.api_version();
    let got = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if got != want {
        return Err(Error::BadRequest(format!(
            "Incorrect version specified in apply patch. Specified patch version: {got}, \
             expected: {want}"
        )));
    }
    let kind = config.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != def.kind {
        return Err(Error::BadRequest(format!(
            "Incorrect kind specified in apply patch. Specified patch kind: {kind}, \
             expected: {}",
            def.kind
        )));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(Error::BadRequest(
            "metadata.managedFields must be nil".into(),
        ));
    }
    Ok(config)
}

fn check_name(obj: &Value, url_name: &str) -> Result<()> {
    match object::meta_str(obj, "name") {
        Some(n) if n == url_name => Ok(()),
        Some(n) if !n.is_empty() => Err(Error::BadRequest(format!(
            "the name of the object ({n}) does not match the name on the URL ({url_name})"
        ))),
        _ => Err(Error::BadRequest("name is required".into())),
    }
}

/// Upstream's apply conflict (`NewApplyConflict`): 409 Conflict, one cause per field.
pub(crate) fn conflict_status(conflicts: &[Conflict]) -> Value {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", c.manager.label()),
                "field": super::fieldpath::display(&c.path),
            })
        })
        .collect();
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": conflict_message(conflicts),
        "reason": "Conflict",
        "details": {"causes": causes},
        "code": 409,
    })
}
