//! The special subresources: `scale` (deployments, replicasets, statefulsets,
//! replicationcontrollers), `pods/binding` and `namespaces/finalize` (`crate::deletion`). `status` is not here: it is the ordinary
//! update path with a different strategy (`object::prepare_update`).
//!
//! Invariants (upstream `pkg/registry/apps/deployment/storage`, `core/pod/storage`):
//! - A `Scale` is a view, never stored: `spec.replicas` is the object's `spec.replicas`,
//!   `status.replicas` its `status.replicas`, `status.selector` its selector as a label
//!   selector string, and its `metadata` the object's name, namespace, uid, resourceVersion
//!   and creationTimestamp.
//! - Writing a `Scale` writes the object's `spec.replicas` and nothing else, through the same
//!   optimistic-concurrency update as any write: a `Scale` carrying a resourceVersion other
//!   than the object's is a 409 Conflict. The write bumps `generation` (the spec changed).
//! - A binding sets `spec.nodeName` of a pod that has none, merges the binding's annotations
//!   and marks the pod `PodScheduled`; a pod already bound (or being deleted) is a 409 on
//!   `pods/binding`.

use hyper::{Method, Response};
use serde_json::{json, Value};

use crate::error::{Cause, Error, GroupResource, Result};
use crate::handlers::{json_reply, Call, State};
use crate::object;
use crate::patch::{self, PatchType};
use crate::registry::parse_rv;
use crate::request::ResourceRequest;
use crate::resources::ResourceDef;
use crate::server::Body;

/// Serves `r`, whose subresource is `scale`, `binding` or `finalize` (routing admits no
/// other).
pub(crate) async fn serve(state: &State, r: ResourceRequest, call: Call) -> Result<Response<Body>> {
    let (Some(name), Some(sub)) = (r.name.as_deref(), r.subresource.as_deref()) else {
        return Err(Error::RouteNotFound);
    };
    let ns = r.namespace.as_deref();
    match (sub, &call.method) {
        ("scale", &Method::GET) => {
            let obj = state
                .registry
                .get(r.def, ns, name, call.query.get("resourceVersion"))
                .await?;
            Ok(json_reply(200, &scale_of(r.def, &obj)?))
        }
        ("scale", &Method::PUT) => {
            let body = decode(&call.body, "Scale")?;
            check_scale_type(&body)?;
            match object::meta_str(&body, "name") {
                Some(n) if n == name => {}
                _ => {
                    return Err(Error::BadRequest(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        object::meta_str(&body, "name").unwrap_or_default()
                    )))
                }
            }
            let precondition = parse_rv(object::meta_str(&body, "resourceVersion"))?;
            let updated =
                write_scale(state, r.def, ns, name, precondition, |_| Ok(body.clone())).await?;
            Ok(json_reply(200, &updated))
        }
        ("scale", &Method::PATCH) => {
            let ty = PatchType::from_content_type(call.content_type.as_deref())?;
            let updated = write_scale(state, r.def, ns, name, None, |cur| {
                let new = patch::apply(ty, cur, &call.body)?;
                if new["metadata"]["resourceVersion"] != cur["metadata"]["resourceVersion"] {
                    return Err(Error::stale(&r.def.group_resource(), name));
                }
                Ok(new)
            })
            .await?;
            Ok(json_reply(200, &updated))
        }
        ("binding", &Method::POST) => bind(state, r.def, ns, name, &call).await,
        ("finalize", &Method::PUT) => {
            let body = decode(&call.body, "Namespace")?;
            let dry_run = call.query.get("dryRun").is_some();
            let ns =
                crate::deletion::finalize(&state.registry, r.def, name, &body, dry_run).await?;
            Ok(json_reply(200, &ns))
        }
        _ => Err(Error::MethodNotAllowed),
    }
}

fn decode(body: &[u8], kind: &str) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: {e}"
        ))
    })
}

fn check_scale_type(body: &Value) -> Result<()> {
    let av = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
    if !av.is_empty() && av != "autoscaling/v1" {
        return Err(Error::BadRequest(format!(
            "the API version in the data ({av}) does not match the expected API version (autoscaling/v1)"
        )));
    }
    if !kind.is_empty() && kind != "Scale" {
        return Err(Error::BadRequest(format!(
            "the kind in the data ({kind}) does not match the expected kind (Scale)"
        )));
    }
    Ok(())
}

/// The `Scale` view of a stored object.
pub(crate) fn scale_of(def: &ResourceDef, obj: &Value) -> Result<Value> {
    let selector = if def.kind == "ReplicationController" {
        selector_string(&json!({"matchLabels": obj["spec"]["selector"]}))?
    } else {
        selector_string(&obj["spec"]["selector"])?
    };
    let mut meta = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = obj["metadata"].get(f) {
            meta[f] = v.clone();
        }
    }
    let mut spec = json!({});
    if let Some(r) = obj["spec"]["replicas"].as_i64().filter(|r| *r != 0) {
        spec["replicas"] = json!(r);
    }
    let mut status = json!({"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0)});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": spec,
        "status": status,
    }))
}

/// A `metav1.LabelSelector` as upstream's `labels.Selector` prints it
/// ([`crate::selectors::label_selector_string`]); an unknown operator is an internal error.
pub(crate) fn selector_string(sel: &Value) -> Result<String> {
    crate::selectors::label_selector_string(sel)
        .map_err(|op| Error::Internal(format!("{op:?} is not a valid label selector operator")))
}

/// Read-modify-write of `spec.replicas` through a `Scale`: `compute` turns the current scale
/// into the requested one. Answers the scale of the written object.
async fn write_scale(
    state: &State,
    def: &'static ResourceDef,
    ns: Option<&str>,
    name: &str,
    precondition: Option<i64>,
    compute: impl Fn(&Value) -> Result<Value>,
) -> Result<Value> {
    let updated = state
        .registry
        .update_with(def, ns, name, precondition, |old| {
            let want = compute(&scale_of(def, old)?)?;
            let replicas = match want["spec"].get("replicas") {
                None | Some(Value::Null) => 0,
                Some(v) => v.as_i64().filter(|r| i32::try_from(*r).is_ok()).ok_or_else(|| {
                    Error::BadRequest(format!(
                        "Scale in version \"v1\" cannot be handled as a Scale: invalid spec.replicas {v}"
                    ))
                })?,
            };
            if replicas < 0 {
                return Err(Error::Invalid {
                    group: "autoscaling".into(),
                    kind: "Scale".into(),
                    name: name.to_string(),
                    causes: vec![Cause::invalid(
                        "spec.replicas",
                        &json!(replicas),
                        "must be greater than or equal to 0",
                    )],
                });
            }
            let mut new = old.clone();
            new["spec"]["replicas"] = json!(replicas);
            object::prepare_update(def, old, &mut new, None)?;
            Ok(new)
        })
        .await?;
    scale_of(def, &updated)
}

fn binding_conflict(name: &str, detail: String) -> Error {
    Error::Conflict {
        resource: GroupResource::new("", "pods/binding"),
        name: name.to_string(),
        detail,
    }
}

/// `POST pods/<name>/binding`.
async fn bind(
    state: &State,
    def: &'static ResourceDef,
    ns: Option<&str>,
    name: &str,
    call: &Call,
) -> Result<Response<Body>> {
    let b = decode(&call.body, "Binding")?;
    if object::meta_str(&b, "name") != Some(name) {
        return Err(Error::BadRequest(
            "name in URL does not match name in Binding object".into(),
        ));
    }
    let mut causes = Vec::new();
    let kind = b["target"]["kind"].as_str().unwrap_or("");
    if !kind.is_empty() && kind != "Node" {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "target.kind".into(),
            message: format!(
                "Unsupported value: {kind:?}: supported values: \"Node\", \"<empty>\""
            ),
        });
    }
    let node = b["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        causes.push(Cause::required("target.name", ""));
    }
    if !causes.is_empty() {
        return Err(Error::Invalid {
            group: String::new(),
            kind: "Binding".into(),
            name: name.to_string(),
            causes,
        });
    }
    let precondition = parse_rv(object::meta_str(&b, "resourceVersion"))?;
    let uid = object::meta_str(&b, "uid").filter(|u| !u.is_empty());
    let annotations = b["metadata"]["annotations"].as_object().cloned();
    let dry_run = call.query.get("dryRun").is_some();
    let now = crate::time::rfc3339(crate::time::now_unix());
    let bind_one = |old: &Value| -> Result<Value> {
        if let Some(u) = uid.filter(|u| Some(*u) != object::meta_str(old, "uid")) {
            return Err(binding_conflict(
                name,
                format!(
                    "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                    object::meta_str(old, "uid").unwrap_or_default()
                ),
            ));
        }
        if old["metadata"].get("deletionTimestamp").is_some() {
            return Err(binding_conflict(
                name,
                format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let bound = old["spec"]["nodeName"].as_str().unwrap_or("");
        if !bound.is_empty() {
            return Err(binding_conflict(
                name,
                format!("pod {name} is already assigned to node {bound:?}"),
            ));
        }
        let mut pod = old.clone();
        pod["spec"]["nodeName"] = json!(node);
        if let Some(a) = &annotations {
            let meta = object::meta_mut(&mut pod);
            let target = meta.entry("annotations").or_insert_with(|| json!({}));
            for (k, v) in a {
                target[k] = v.clone();
            }
        }
        set_scheduled(&mut pod, &now);
        Ok(pod)
    };
    if dry_run {
        let current = state.registry.get(def, ns, name, None).await?;
        bind_one(&current)?;
    } else {
        state
            .registry
            .update_with(def, ns, name, precondition, bind_one)
            .await?;
    }
    Ok(json_reply(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Sets the pod's `PodScheduled` condition to True (upstream `UpdatePodCondition`: the
/// transition time changes only when the status does).
fn set_scheduled(pod: &mut Value, now: &str) {
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let conds = pod["status"]["conditions"]
        .as_array_mut()
        .expect("conditions is an array");
    let fresh = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
        "lastTransitionTime": now});
    match conds.iter_mut().find(|c| c["type"] == "PodScheduled") {
        Some(c) if c["status"] == "True" => {}
        Some(c) => *c = fresh,
        None => conds.push(fresh),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn selectors_print_as_upstream() {
        let s = json!({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "dev"]},
            {"key": "c", "operator": "DoesNotExist"},
            {"key": "tier", "operator": "NotIn", "values": ["x"]},
            {"key": "d", "operator": "Exists"}]});
        assert_eq!(
            selector_string(&s).unwrap(),
            "a=1,b=2,!c,d,env in (dev,prod),tier notin (x)"
        );
        assert_eq!(selector_string(&Value::Null).unwrap(), "");
    }

    #[test]
    fn scale_views_deployments_and_rcs() {
        let d = find("apps", "v1", "deployments").unwrap();
        let obj = json!({"metadata": {"name": "web", "namespace": "n", "uid": "u",
            "resourceVersion": "7", "creationTimestamp": "t", "labels": {"x": "y"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2}});
        assert_eq!(
            scale_of(d, &obj).unwrap(),
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": "web", "namespace": "n", "uid": "u",
                    "resourceVersion": "7", "creationTimestamp": "t"},
                "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=web"}})
        );
        let rc = find("", "v1", "replicationcontrollers").unwrap();
        let obj = json!({"metadata": {"name": "r"}, "spec": {"replicas": 0,
            "selector": {"app": "a", "tier": "b"}}});
        let s = scale_of(rc, &obj).unwrap();
        assert_eq!(s["spec"], json!({}));
        assert_eq!(
            s["status"],
            json!({"replicas": 0, "selector": "app=a,tier=b"})
        );
    }

    #[test]
    fn scheduling_condition_is_set_once() {
        let mut pod = json!({"status": {"phase": "Pending"}});
        set_scheduled(&mut pod, "t1");
        set_scheduled(&mut pod, "t2");
        assert_eq!(
            pod["status"]["conditions"],
            json!([{"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": "t1"}])
        );
    }
}
