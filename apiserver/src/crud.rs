//! The verbs on resources: get, list, watch, create, update, patch, delete and
//! deletecollection, mapped from HTTP as kube-apiserver maps them (`GET` on a collection is
//! list, or watch with `watch=true`; `DELETE` on a collection is deletecollection).
//!
//! Replies: single objects with kind and apiVersion; lists as `<Kind>List` whose items carry
//! neither (as upstream encodes typed lists); a `Table` instead of either when the client's
//! Accept asks for one. Create answers 201, everything else 200.

use std::time::Duration;

use hyper::{Method, Response};
use serde_json::{json, Value};

use crate::deletion;
use crate::error::{Error, Result};
use crate::handlers::{json_reply, stream_reply, Call, State};
use crate::object;
use crate::patch::{self, PatchType};
use crate::protobuf;
use crate::registry::{parse_rv, ListOptions, ListPage};
use crate::request::{ResourceRequest, Wants};
use crate::resources::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::Body;
use crate::table::{self, Include};
use crate::validation;
use crate::watch;

/// Upstream's default watch length is a random 30–60 minutes (`MinRequestTimeout` 1800 s).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

pub(crate) async fn serve(state: &State, r: ResourceRequest, call: Call) -> Result<Response<Body>> {
    let def = r.def;
    let ns = r.namespace.as_deref();
    let sub = r.subresource.as_deref();
    match sub {
        None => {}
        Some("status") if matches!(call.method, Method::GET | Method::PUT | Method::PATCH) => {}
        Some("status") => return Err(Error::MethodNotAllowed),
        Some(_) => return crate::subresource::serve(state, r, call).await,
    }
    let allowed = |verb: &str| {
        if def.verbs.contains(&verb) {
            Ok(())
        } else {
            Err(Error::MethodNotAllowed)
        }
    };
    match (&call.method, r.name.as_deref()) {
        (&Method::GET, Some(name)) => {
            allowed("get")?;
            let obj = state
                .registry
                .get(def, ns, name, call.query.get("resourceVersion"))
                .await?;
            Ok(match call.wants {
                Wants::Table(av) => {
                    let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                    json_reply(200, &table::table(def, &[obj], meta, av, include(&call)))
                }
                _ => json_reply(200, &obj),
            })
        }
        (&Method::GET, None) if call.query.flag("watch")? => {
            allowed("watch")?;
            watch(state, def, ns, &call)
        }
        (&Method::GET, None) => {
            allowed("list")?;
            let opts = list_options(def, &call)?;
            let page = state.registry.list(def, ns, &opts).await?;
            Ok(json_reply(200, &render_list(def, page, &call)))
        }
        (&Method::POST, None) => {
            allowed("create")?;
            if def.namespaced && ns.is_none() {
                return Err(Error::MethodNotAllowed);
            }
            let (mut obj, warnings) = parse_body(def, &call, "CreateOptions")?;
            object::prepare_create(def, &mut obj, ns)?;
            crate::ssa::record_update(def, None, &mut obj, call.query.get("fieldManager"), sub);
            if call.query.get("dryRun").is_some() {
                return Ok(validation::with_warnings(json_reply(201, &obj), &warnings));
            }
            let created = crate::defaults::clusterip::create(&state.registry, def, obj).await?;
            Ok(validation::with_warnings(
                json_reply(201, &created),
                &warnings,
            ))
        }
        (&Method::PUT, Some(name)) => {
            allowed("update")?;
            let (body, warnings) = parse_body(def, &call, "UpdateOptions")?;
            check_name(&body, name)?;
            let precondition = parse_rv(object::meta_str(&body, "resourceVersion"))?;
            let updated = state
                .registry
                .update_with(def, ns, name, precondition, |old| {
                    let mut new = body.clone();
                    object::prepare_update(def, old, &mut new, sub)?;
                    let manager = call.query.get("fieldManager");
                    crate::ssa::record_update(def, Some(old), &mut new, manager, sub);
                    Ok(new)
                })
                .await?;
            Ok(validation::with_warnings(
                json_reply(200, &updated),
                &warnings,
            ))
        }
        (&Method::PATCH, Some(name)) => {
            allowed("patch")?;
            if crate::ssa::is_apply(call.content_type.as_deref()) {
                return crate::ssa::serve(state, def, ns, name, sub, &call).await;
            }
            let ty = PatchType::from_content_type(call.content_type.as_deref())?;
            let directive =
                validation::Directive::parse(call.query.get("fieldValidation"), "PatchOptions")?;
            let body_errors = validation::patch_body_errors(ty, &call.body, directive)?;
            let warnings = std::sync::Mutex::new(Vec::new());
            let updated = state
                .registry
                .update_with(def, ns, name, None, |old| {
                    let new = patch::apply(ty, old, &call.body)?;
                    let (mut new, w) = validation::check_patched(
                        def,
                        directive,
                        ty,
                        &call.body,
                        new,
                        &body_errors,
                    )?;
                    *warnings.lock().unwrap_or_else(|e| e.into_inner()) = w;
                    check_name(&new, name)?;
                    if new["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                        return Err(Error::stale(&def.group_resource(), name));
                    }
                    object::prepare_update(def, old, &mut new, sub)?;
                    let manager = call.query.get("fieldManager");
                    crate::ssa::record_update(def, Some(old), &mut new, manager, sub);
                    Ok(new)
                })
                .await?;
            let warnings = warnings.into_inner().unwrap_or_else(|e| e.into_inner());
            Ok(validation::with_warnings(
                json_reply(200, &updated),
                &warnings,
            ))
        }
        (&Method::DELETE, Some(name)) => {
            allowed("delete")?;
            let opts = deletion::Options::parse(&call.body, &call.query)?;
            let outcome = deletion::delete(&state.registry, def, ns, name, &opts).await?;
            let (code, body) = outcome.reply(def, &opts);
            Ok(json_reply(code, &body))
        }
        (&Method::DELETE, None) => {
            allowed("deletecollection")?;
            let opts = deletion::Options::parse(&call.body, &call.query)?;
            let list = list_options(def, &call)?;
            let page = deletion::delete_collection(&state.registry, def, ns, &list, &opts).await?;
            Ok(json_reply(200, &render_list(def, page, &call)))
        }
        _ => Err(Error::MethodNotAllowed),
    }
}

fn include(call: &Call) -> Include {
    Include::parse(call.query.get("includeObject"))
}

/// The request's object, with the warnings field validation found (`crate::validation`;
/// `options` names the verb's options kind in a bad `fieldValidation`'s error).
fn parse_body(def: &ResourceDef, call: &Call, options: &str) -> Result<(Value, Vec<String>)> {
    let directive = validation::Directive::parse(call.query.get("fieldValidation"), options)?;
    let media = call.content_type.as_deref().unwrap_or("application/json");
    if protobuf::is_protobuf(media) {
        return Ok((protobuf::decode(&call.body)?, Vec::new()));
    }
    let media = media.split(';').next().unwrap_or("").trim();
    if media != "application/json" && !media.is_empty() {
        return Err(Error::UnsupportedMediaType(format!(
            "application/json, {}",
            protobuf::MEDIA_TYPE
        )));
    }
    validation::decode_object(def, &call.body, directive)
}

fn check_name(body: &Value, url_name: &str) -> Result<()> {
    match object::meta_str(body, "name") {
        Some(n) if n == url_name => Ok(()),
        Some(n) if !n.is_empty() => Err(Error::BadRequest(format!(
            "the name of the object ({n}) does not match the name on the URL ({url_name})"
        ))),
        _ => Err(Error::BadRequest("name is required".into())),
    }
}

fn list_options(def: &ResourceDef, call: &Call) -> Result<ListOptions> {
    let q = &call.query;
    if q.get("sendInitialEvents").is_some() {
        return Err(Error::Invalid {
            group: "meta.k8s.io".into(),
            kind: "ListOptions".into(),
            name: String::new(),
            causes: vec![crate::error::Cause::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            )],
        });
    }
    Ok(ListOptions {
        resource_version: q.get("resourceVersion").map(str::to_string),
        resource_version_match: q.get("resourceVersionMatch").map(str::to_string),
        limit: q.int("limit")?.unwrap_or(0).max(0),
        continue_token: q.get("continue").map(str::to_string),
        labels: LabelSelector::parse(q.get("labelSelector"))?,
        fields: FieldSelector::parse(def, q.get("fieldSelector"))?,
        node_name: crate::cache::exact_node_name(def, q.get("fieldSelector")),
    })
}

fn render_list(def: &ResourceDef, page: ListPage, call: &Call) -> Value {
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(n) = page.remaining {
        meta["remainingItemCount"] = json!(n);
    }
    if let Wants::Table(av) = call.wants {
        return table::table(def, &page.items, meta, av, include(call));
    }
    let items: Vec<Value> = page
        .items
        .into_iter()
        .map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": def.api_version(),
        "metadata": meta,
        "items": items,
    })
}

fn watch(
    state: &State,
    def: &'static ResourceDef,
    ns: Option<&str>,
    call: &Call,
) -> Result<Response<Body>> {
    let q = &call.query;
    let allow_bookmarks = q.flag("allowWatchBookmarks")?;
    let send_initial = match q.get("sendInitialEvents") {
        None => None,
        Some(_) => Some(q.flag("sendInitialEvents")?),
    };
    watch::validate(send_initial, q.get("resourceVersionMatch"), allow_bookmarks)?;
    let timeout = match q.int("timeoutSeconds")? {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        _ => DEFAULT_WATCH_TIMEOUT,
    };
    let spec = watch::WatchRequestSpec {
        def,
        namespace: ns.map(str::to_string),
        resource_version: parse_rv(q.get("resourceVersion"))?,
        send_initial_events: send_initial.unwrap_or(false),
        allow_bookmarks,
        timeout,
        labels: LabelSelector::parse(q.get("labelSelector"))?,
        fields: FieldSelector::parse(def, q.get("fieldSelector"))?,
        node_name: crate::cache::exact_node_name(def, q.get("fieldSelector")),
        table: match call.wants {
            Wants::Table(av) => Some(av),
            _ => None,
        },
        include: include(call),
    };
    let rx = watch::start(state.registry.clone(), spec, state.shutdown.clone());
    Ok(stream_reply(rx))
}
