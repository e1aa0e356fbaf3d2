//! Server-side printing: `meta.k8s.io/v1` `Table` replies for `kubectl get`.
//!
//! Columns follow upstream's printers (`pkg/printers/internalversion/printers.go`): priority-0
//! columns are what `kubectl get` shows, priority-1 columns are added by `-o wide`. Kinds
//! without a printer here get upstream's default for printer-less types (Name, Age).
//! Invariants: every row has exactly one cell per column; a row's `object` is, by default
//! (`includeObject=Metadata`), a `PartialObjectMetadata` (kubectl's `--show-labels` reads its
//! labels), the whole object with `includeObject=Object`, and absent with `None`.

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

/// (name, type, priority) of each column of `def`'s table.
fn columns(def: &ResourceDef) -> Vec<(&'static str, &'static str, u8)> {
    let s = "string";
    let i = "integer";
    match (def.group, def.resource) {
        ("", "namespaces") => vec![("Name", s, 0), ("Status", s, 0), ("Age", s, 0)],
        ("", "configmaps") => vec![("Name", s, 0), ("Data", i, 0), ("Age", s, 0)],
        ("", "secrets") => vec![
            ("Name", s, 0),
            ("Type", s, 0),
            ("Data", i, 0),
            ("Age", s, 0),
        ],
        ("", "serviceaccounts") => vec![("Name", s, 0), ("Secrets", i, 0), ("Age", s, 0)],
        ("", "pods") => vec![
            ("Name", s, 0),
            ("Ready", s, 0),
            ("Status", s, 0),
            ("Restarts", s, 0),
            ("Age", s, 0),
            ("IP", s, 1),
            ("Node", s, 1),
            ("Nominated Node", s, 1),
            ("Readiness Gates", s, 1),
        ],
        ("", "nodes") => vec![
            ("Name", s, 0),
            ("Status", s, 0),
            ("Roles", s, 0),
            ("Age", s, 0),
            ("Version", s, 0),
            ("Internal-IP", s, 1),
            ("External-IP", s, 1),
            ("OS-Image", s, 1),
            ("Kernel-Version", s, 1),
            ("Container-Runtime", s, 1),
        ],
        ("", "services") => vec![
            ("Name", s, 0),
            ("Type", s, 0),
            ("Cluster-IP", s, 0),
            ("External-IP", s, 0),
            ("Port(s)", s, 0),
            ("Age", s, 0),
            ("Selector", s, 1),
        ],
        ("", "endpoints") => vec![("Name", s, 0), ("Endpoints", s, 0), ("Age", s, 0)],
        ("apps", "deployments") => vec![
            ("Name", s, 0),
            ("Ready", s, 0),
            ("Up-to-date", i, 0),
            ("Available", i, 0),
            ("Age", s, 0),
            ("Containers", s, 1),
            ("Images", s, 1),
            ("Selector", s, 1),
        ],
        ("apps", "replicasets") => vec![
            ("Name", s, 0),
            ("Desired", i, 0),
            ("Current", i, 0),
            ("Ready", i, 0),
            ("Age", s, 0),
            ("Containers", s, 1),
            ("Images", s, 1),
            ("Selector", s, 1),
        ],
        _ => vec![("Name", s, 0), ("Age", s, 0)],
    }
}

fn str_at<'a>(o: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(o, |cur, p| cur.get(*p))?.as_str()
}

fn int_at(o: &Value, path: &[&str]) -> i64 {
    path.iter()
        .try_fold(o, |cur, p| cur.get(*p))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn len_at(o: &Value, key: &str) -> usize {
    match o.get(key) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn or_none(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("<none>").to_string()
}

fn selector_string(sel: Option<&Value>) -> String {
    let Some(Value::Object(m)) = sel else {
        return "<none>".into();
    };
    if m.is_empty() {
        return "<none>".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

fn containers_images(o: &Value) -> (String, String) {
    let cs = o
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().filter_map(|c| c["name"].as_str()).collect();
    let images: Vec<&str> = cs.iter().filter_map(|c| c["image"].as_str()).collect();
    (names.join(","), images.join(","))
}

fn pod_status(o: &Value) -> String {
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut reason = str_at(o, &["status", "reason"])
        .or_else(|| str_at(o, &["status", "phase"]))
        .unwrap_or("")
        .to_string();
    if let Some(statuses) = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
    {
        for c in statuses.iter().rev() {
            if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
                reason = r.to_string();
            } else if let Some(r) = c
                .pointer("/state/terminated/reason")
                .and_then(Value::as_str)
            {
                reason = r.to_string();
            }
        }
    }
    reason
}

/// The cells of one row.
fn cells(def: &ResourceDef, o: &Value) -> Vec<Value> {
    let name = json!(str_at(o, &["metadata", "name"]).unwrap_or_default());
    let age = json!(crate::time::age(str_at(
        o,
        &["metadata", "creationTimestamp"]
    )));
    match (def.group, def.resource) {
        ("", "namespaces") => vec![
            name,
            json!(str_at(o, &["status", "phase"]).unwrap_or("")),
            age,
        ],
        ("", "configmaps") => {
            let n = len_at(o, "data") + len_at(o, "binaryData");
            vec![name, json!(n), age]
        }
        ("", "secrets") => vec![
            name,
            json!(str_at(o, &["type"]).unwrap_or("")),
            json!(len_at(o, "data")),
            age,
        ],
        ("", "serviceaccounts") => vec![name, json!(len_at(o, "secrets")), age],
        ("", "pods") => {
            let total = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
            let restarts: i64 = statuses.map_or(0, |s| {
                s.iter()
                    .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                    .sum()
            });
            let gates = o
                .pointer("/spec/readinessGates")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                age,
                json!(or_none(str_at(o, &["status", "podIP"]))),
                json!(or_none(str_at(o, &["spec", "nodeName"]))),
                json!(or_none(str_at(o, &["status", "nominatedNodeName"]))),
                json!(if gates == 0 {
                    "<none>".to_string()
                } else {
                    format!("0/{gates}")
                }),
            ]
        }
        ("", "nodes") => {
            let conds = o.pointer("/status/conditions").and_then(Value::as_array);
            let ready = conds.and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
            let mut status = match ready.and_then(|c| c["status"].as_str()) {
                Some("True") => "Ready".to_string(),
                Some("False") => "NotReady".to_string(),
                _ => "Unknown".to_string(),
            };
            if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<&str> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect()
                })
                .unwrap_or_default();
            let addr = |t: &str| {
                o.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|x| x["type"] == t))
                    .and_then(|x| x["address"].as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| "<none>".into())
            };
            let info = |f: &str| json!(str_at(o, &["status", "nodeInfo", f]).unwrap_or(""));
            vec![
                name,
                json!(status),
                json!(if roles.is_empty() {
                    "<none>".to_string()
                } else {
                    roles.join(",")
                }),
                age,
                info("kubeletVersion"),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                info("osImage"),
                info("kernelVersion"),
                info("containerRuntimeVersion"),
            ]
        }
        ("", "services") => {
            let ty = str_at(o, &["spec", "type"]).unwrap_or("ClusterIP");
            let external = match ty {
                "ExternalName" => or_none(str_at(o, &["spec", "externalName"])),
                "LoadBalancer" => {
                    let ips: Vec<&str> = o
                        .pointer("/status/loadBalancer/ingress")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                                .collect()
                        })
                        .unwrap_or_default();
                    if ips.is_empty() {
                        "<pending>".into()
                    } else {
                        ips.join(",")
                    }
                }
                _ => "<none>".into(),
            };
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let proto = p["protocol"].as_str().unwrap_or("TCP");
                            match p["nodePort"].as_i64() {
                                Some(np) if np > 0 => format!("{}:{np}/{proto}", p["port"]),
                                _ => format!("{}/{proto}", p["port"]),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(ty),
                json!(or_none(str_at(o, &["spec", "clusterIP"]))),
                json!(external),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
                age,
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        ("", "endpoints") => {
            let mut eps = Vec::new();
            for subset in o
                .get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let ports: Vec<i64> = subset["ports"]
                    .as_array()
                    .map(|p| p.iter().filter_map(|p| p["port"].as_i64()).collect())
                    .unwrap_or_default();
                for a in subset["addresses"].as_array().into_iter().flatten() {
                    let ip = a["ip"].as_str().unwrap_or_default();
                    if ports.is_empty() {
                        eps.push(ip.to_string());
                    }
                    eps.extend(ports.iter().map(|p| format!("{ip}:{p}")));
                }
            }
            let shown = if eps.is_empty() {
                "<none>".to_string()
            } else if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                eps.join(",")
            };
            vec![name, json!(shown), age]
        }
        ("apps", "deployments") => {
            let (c, i) = containers_images(o);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int_at(o, &["status", "readyReplicas"]),
                    int_at(o, &["spec", "replicas"])
                )),
                json!(int_at(o, &["status", "updatedReplicas"])),
                json!(int_at(o, &["status", "availableReplicas"])),
                age,
                json!(c),
                json!(i),
                json!(label_selector_string(o.pointer("/spec/selector"))),
            ]
        }
        ("apps", "replicasets") => {
            let (c, i) = containers_images(o);
            vec![
                name,
                json!(int_at(o, &["spec", "replicas"])),
                json!(int_at(o, &["status", "replicas"])),
                json!(int_at(o, &["status", "readyReplicas"])),
                age,
                json!(c),
                json!(i),
                json!(label_selector_string(o.pointer("/spec/selector"))),
            ]
        }
        _ => vec![name, age],
    }
}

/// A `metav1.LabelSelector` as kubectl prints it (`app=x,tier in (a,b)`).
fn label_selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        parts.extend(
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())),
        );
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let vals: Vec<&str> = e["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn row(def: &ResourceDef, o: &Value, include: Include) -> Value {
    let mut r = json!({"cells": cells(def, o)});
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
    let defs: Vec<Value> = columns(def)
        .into_iter()
        .map(|(name, ty, priority)| {
            let format = if name == "Name" { "name" } else { "" };
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
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn every_kind_has_one_cell_per_column() {
        let o = json!({"metadata": {"name": "x", "creationTimestamp": "2020-01-01T00:00:00Z"}});
        for def in crate::resources::all() {
            let t = table(
                def,
                std::slice::from_ref(&o),
                json!({}),
                "meta.k8s.io/v1",
                Include::Metadata,
            );
            assert_eq!(
                t["columnDefinitions"].as_array().unwrap().len(),
                t["rows"][0]["cells"].as_array().unwrap().len(),
                "{}",
                def.resource
            );
        }
    }

    #[test]
    fn pod_and_service_cells() {
        let pods = find("", "v1", "pods").unwrap();
        let p = json!({"metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}, {"name": "d"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [{"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1}]}});
        let c = cells(pods, &p);
        assert_eq!(c[1..4], [json!("1/2"), json!("Running"), json!("3")]);
        assert_eq!(
            c[5..8],
            [json!("10.0.0.5"), json!("<none>"), json!("<none>")]
        );
        let r = row(pods, &p, Include::Metadata);
        assert_eq!(r["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(r["object"]["metadata"]["labels"]["a"], "b");
        let svc = find("", "v1", "services").unwrap();
        let s = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.9",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}});
        let c = cells(svc, &s);
        assert_eq!(
            c[1..5],
            [
                json!("NodePort"),
                json!("10.96.0.9"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP")
            ]
        );
        assert_eq!(c[6], json!("app=web"));
    }
}
