//! Printers of the smaller groups: `networking.k8s.io` (ingresses, ingressclasses,
//! networkpolicies), `discovery.k8s.io` (endpointslices), `coordination.k8s.io` (leases),
//! `storage.k8s.io` (storageclasses) and `policy` (poddisruptionbudgets).

use serde_json::{json, Value};

use super::{age, arr, format_selector, int, list_with_more, name, or, s, Printer};

pub(super) fn printer(resource: &str) -> Option<Printer> {
    let (columns, cells): (&'static [super::Col], super::Cells) = match resource {
        "ingresses" => (
            &[
                ("Name", "string", 0),
                ("Class", "string", 0),
                ("Hosts", "string", 0),
                ("Address", "string", 0),
                ("Ports", "string", 0),
                ("Age", "string", 0),
            ],
            ingress,
        ),
        "ingressclasses" => (
            &[
                ("Name", "string", 0),
                ("Controller", "string", 0),
                ("Parameters", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                let params = match o.pointer("/spec/parameters").filter(|p| p.is_object()) {
                    None => "<none>".to_string(),
                    Some(p) => {
                        let mut t = s(p, "/kind").to_string();
                        if let Some(g) = p.get("apiGroup").and_then(Value::as_str) {
                            t = format!("{t}.{g}");
                        }
                        format!("{t}/{}", s(p, "/name"))
                    }
                };
                vec![
                    name(o),
                    json!(s(o, "/spec/controller")),
                    json!(params),
                    age(o),
                ]
            },
        ),
        "networkpolicies" => (
            &[
                ("Name", "string", 0),
                ("Pod-Selector", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                let sel = o.pointer("/spec/podSelector").cloned().unwrap_or(json!({}));
                vec![name(o), json!(format_selector(Some(&sel))), age(o)]
            },
        ),
        "endpointslices" => (
            &[
                ("Name", "string", 0),
                ("AddressType", "string", 0),
                ("Ports", "string", 0),
                ("Endpoints", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                let ports: Vec<String> = arr(o, "/ports")
                    .iter()
                    .map(|p| match (p["port"].as_i64(), p["name"].as_str()) {
                        (Some(n), _) => n.to_string(),
                        (None, Some(n)) => n.to_string(),
                        _ => "*".into(),
                    })
                    .collect();
                let addrs: Vec<String> = arr(o, "/endpoints")
                    .iter()
                    .flat_map(|e| arr(e, "/addresses").iter())
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect();
                vec![
                    name(o),
                    json!(s(o, "/addressType")),
                    json!(list_with_more(&ports)),
                    json!(list_with_more(&addrs)),
                    age(o),
                ]
            },
        ),
        "leases" => (
            &[
                ("Name", "string", 0),
                ("Holder", "string", 0),
                ("Age", "string", 0),
            ],
            |o| vec![name(o), json!(s(o, "/spec/holderIdentity")), age(o)],
        ),
        "storageclasses" => (
            &[
                ("Name", "string", 0),
                ("Provisioner", "string", 0),
                ("ReclaimPolicy", "string", 0),
                ("VolumeBindingMode", "string", 0),
                ("AllowVolumeExpansion", "string", 0),
                ("Age", "string", 0),
            ],
            storage_class,
        ),
        "poddisruptionbudgets" => (
            &[
                ("Name", "string", 0),
                ("Min Available", "string", 0),
                ("Max Unavailable", "string", 0),
                ("Allowed Disruptions", "integer", 0),
                ("Age", "string", 0),
            ],
            |o| {
                let int_or_string = |p: &str| match o.pointer(p) {
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::String(v)) => v.clone(),
                    _ => "N/A".into(),
                };
                vec![
                    name(o),
                    json!(int_or_string("/spec/minAvailable")),
                    json!(int_or_string("/spec/maxUnavailable")),
                    json!(int(o, "/status/disruptionsAllowed")),
                    age(o),
                ]
            },
        ),
        _ => return None,
    };
    Some(Printer { columns, cells })
}

/// HOSTS: the first three rule hosts (`*` when none), PORTS: `80, 443` with TLS.
fn ingress(o: &Value) -> Vec<Value> {
    let rules = arr(o, "/spec/rules");
    let (mut hosts, mut more) = (Vec::new(), false);
    for r in rules {
        more |= hosts.len() == 3;
        if let Some(h) = r["host"].as_str().filter(|h| !h.is_empty() && !more) {
            hosts.push(h);
        }
    }
    let hosts = if hosts.is_empty() {
        "*".to_string()
    } else if more {
        format!("{} + {} more...", hosts.join(","), rules.len() - 3)
    } else {
        hosts.join(",")
    };
    let ports = if arr(o, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(o),
        json!(or(s(o, "/spec/ingressClassName"), "<none>")),
        json!(hosts),
        json!(super::load_balancer(o, "/status/loadBalancer/ingress")),
        json!(ports),
        age(o),
    ]
}

fn storage_class(o: &Value) -> Vec<Value> {
    let annotation = |k: &str| {
        o.pointer("/metadata/annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            == Some("true")
    };
    let mut n = s(o, "/metadata/name").to_string();
    if annotation("storageclass.kubernetes.io/is-default-class")
        || annotation("storageclass.beta.kubernetes.io/is-default-class")
    {
        n.push_str(" (default)");
    }
    vec![
        json!(n),
        json!(s(o, "/provisioner")),
        json!(or(s(o, "/reclaimPolicy"), "Delete")),
        json!(or(s(o, "/volumeBindingMode"), "Immediate")),
        json!(o
            .get("allowVolumeExpansion")
            .and_then(Value::as_bool)
            .unwrap_or(false)),
        age(o),
    ]
}
