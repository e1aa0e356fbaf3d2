//! Printers of the core group (pods aside: `pod`): nodes, namespaces, configmaps, secrets,
//! serviceaccounts, services, endpoints, events, persistent volumes and claims,
//! replicationcontrollers and resourcequotas, as upstream's printers format them.

use serde_json::{json, Value};

use super::{age, arr, containers, format_labels, int, name, or, s, since, Printer};

pub(super) fn printer(resource: &str) -> Option<Printer> {
    let (columns, cells): (&'static [super::Col], super::Cells) = match resource {
        "namespaces" => (
            &[
                ("Name", "string", 0),
                ("Status", "string", 0),
                ("Age", "string", 0),
            ],
            |o| vec![name(o), json!(s(o, "/status/phase")), age(o)],
        ),
        "configmaps" => (
            &[
                ("Name", "string", 0),
                ("Data", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                vec![
                    name(o),
                    json!(len(o, "data") + len(o, "binaryData")),
                    age(o),
                ]
            },
        ),
        "secrets" => (
            &[
                ("Name", "string", 0),
                ("Type", "string", 0),
                ("Data", "string", 0),
                ("Age", "string", 0),
            ],
            |o| vec![name(o), json!(s(o, "/type")), json!(len(o, "data")), age(o)],
        ),
        "serviceaccounts" => (
            &[
                ("Name", "string", 0),
                ("Secrets", "string", 0),
                ("Age", "string", 0),
            ],
            |o| vec![name(o), json!(len(o, "secrets")), age(o)],
        ),
        "nodes" => (NODE_COLUMNS, node),
        "services" => (SERVICE_COLUMNS, service),
        "endpoints" => (
            &[
                ("Name", "string", 0),
                ("Endpoints", "string", 0),
                ("Age", "string", 0),
            ],
            |o| vec![name(o), json!(endpoints(o)), age(o)],
        ),
        "events" => (EVENT_COLUMNS, event),
        "persistentvolumes" => (PV_COLUMNS, pv),
        "persistentvolumeclaims" => (PVC_COLUMNS, pvc),
        "replicationcontrollers" => (
            &[
                ("Name", "string", 0),
                ("Desired", "integer", 0),
                ("Current", "integer", 0),
                ("Ready", "integer", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            |o| {
                let (c, i) = containers(o, "/spec/template/spec/containers");
                let desired = o.pointer("/spec/replicas").and_then(Value::as_i64);
                vec![
                    name(o),
                    json!(desired.unwrap_or(1)),
                    json!(int(o, "/status/replicas")),
                    json!(int(o, "/status/readyReplicas")),
                    age(o),
                    c,
                    i,
                    json!(format_labels(o.pointer("/spec/selector"))),
                ]
            },
        ),
        "resourcequotas" => (
            &[
                ("Name", "string", 0),
                ("Request", "string", 0),
                ("Limit", "string", 0),
                ("Age", "string", 0),
            ],
            quota,
        ),
        _ => return None,
    };
    Some(Printer { columns, cells })
}

/// The number of entries of the map or list at `key`.
fn len(o: &Value, key: &str) -> usize {
    match o.get(key) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

const NODE_COLUMNS: &[super::Col] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Roles", "string", 0),
    ("Age", "string", 0),
    ("Version", "string", 0),
    ("Internal-IP", "string", 1),
    ("External-IP", "string", 1),
    ("OS-Image", "string", 1),
    ("Kernel-Version", "string", 1),
    ("Container-Runtime", "string", 1),
];

fn node(o: &Value) -> Vec<Value> {
    let mut status: Vec<&str> = Vec::new();
    if let Some(c) = arr(o, "/status/conditions")
        .iter()
        .rev()
        .find(|c| c["type"] == "Ready")
    {
        status.push(if c["status"] == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push("SchedulingDisabled");
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = o.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role" && v.as_str().is_some_and(|v| !v.is_empty()) {
                roles.push(v.as_str().unwrap_or_default().to_string());
            }
        }
    }
    roles.sort();
    roles.dedup();
    let addr = |t: &str| {
        arr(o, "/status/addresses")
            .iter()
            .find(|a| a["type"] == t)
            .and_then(|a| a["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |f: &str| json!(or(s(o, &format!("/status/nodeInfo/{f}")), "<unknown>"));
    vec![
        name(o),
        json!(status.join(",")),
        json!(or(&roles.join(","), "<none>")),
        age(o),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

const SERVICE_COLUMNS: &[super::Col] = &[
    ("Name", "string", 0),
    ("Type", "string", 0),
    ("Cluster-IP", "string", 0),
    ("External-IP", "string", 0),
    ("Port(s)", "string", 0),
    ("Age", "string", 0),
    ("Selector", "string", 1),
];

fn service(o: &Value) -> Vec<Value> {
    let ty = s(o, "/spec/type");
    let external_ips: Vec<&str> = arr(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match ty {
        "ClusterIP" | "NodePort" if !external_ips.is_empty() => external_ips.join(","),
        "ClusterIP" | "NodePort" => "<none>".into(),
        "LoadBalancer" => {
            let lb = super::load_balancer(o, "/status/loadBalancer/ingress");
            let mut all: Vec<&str> = lb.split(',').filter(|s| !s.is_empty()).collect();
            all.extend(&external_ips);
            or(&all.join(","), "<pending>")
        }
        "ExternalName" => s(o, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("");
            match p["nodePort"].as_i64().filter(|n| *n > 0) {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    let cluster_ip = arr(o, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    vec![
        name(o),
        json!(ty),
        json!(cluster_ip),
        json!(external),
        json!(or(&ports.join(","), "<none>")),
        age(o),
        json!(format_labels(o.pointer("/spec/selector"))),
    ]
}

/// `formatEndpoints`: `ip:port` per address and port, the first three and `+ N more...`.
fn endpoints(o: &Value) -> String {
    let subsets = arr(o, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut list: Vec<String> = Vec::new();
    for ss in subsets {
        let addrs: Vec<&str> = arr(ss, "/addresses")
            .iter()
            .map(|a| a["ip"].as_str().unwrap_or(""))
            .collect();
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            list.extend(addrs.iter().map(|a| a.to_string()));
            continue;
        }
        for p in ports {
            let port = p["port"].as_i64().unwrap_or(0);
            for a in &addrs {
                list.push(if a.contains(':') {
                    format!("[{a}]:{port}")
                } else {
                    format!("{a}:{port}")
                });
            }
        }
    }
    if list.len() > 3 {
        format!("{} + {} more...", list[..3].join(","), list.len() - 3)
    } else {
        list.join(",")
    }
}

const EVENT_COLUMNS: &[super::Col] = &[
    ("Last Seen", "string", 0),
    ("Type", "string", 0),
    ("Reason", "string", 0),
    ("Object", "string", 0),
    ("Subobject", "string", 1),
    ("Source", "string", 1),
    ("Message", "string", 0),
    ("First Seen", "string", 1),
    ("Count", "string", 1),
    ("Name", "string", 1),
];

fn event(o: &Value) -> Vec<Value> {
    let first = match s(o, "/firstTimestamp") {
        "" => since(s(o, "/eventTime")),
        t => since(t),
    };
    let mut last = match s(o, "/lastTimestamp") {
        "" => first.clone(),
        t => since(t),
    };
    let mut count = int(o, "/count");
    if let Some(series) = o.get("series").filter(|v| v.is_object()) {
        last = since(s(series, "/lastObservedTime"));
        count = int(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = s(o, "/involvedObject/kind").to_lowercase();
    let target = match s(o, "/involvedObject/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = or(s(o, "/source/component"), s(o, "/reportingComponent"));
    let instance = or(s(o, "/source/host"), s(o, "/reportingInstance"));
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(target),
        json!(s(o, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(o, "/message").trim()),
        json!(first),
        json!(count),
        name(o),
    ]
}

/// `GetAccessModesAsString`: RWO, ROX, RWX, RWOP in that order.
fn access_modes(modes: &[Value]) -> String {
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| modes.iter().any(|x| x == m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The class of a volume or claim: the beta annotation, else `spec.storageClassName`.
fn storage_class(o: &Value) -> String {
    o.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .and_then(Value::as_str)
        .unwrap_or_else(|| s(o, "/spec/storageClassName"))
        .to_string()
}

fn phase_or_terminating(o: &Value) -> String {
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating".into()
    } else {
        s(o, "/status/phase").to_string()
    }
}

const PV_COLUMNS: &[super::Col] = &[
    ("Name", "string", 0),
    ("Capacity", "string", 0),
    ("Access Modes", "string", 0),
    ("Reclaim Policy", "string", 0),
    ("Status", "string", 0),
    ("Claim", "string", 0),
    ("StorageClass", "string", 0),
    ("VolumeAttributesClass", "string", 0),
    ("Reason", "string", 0),
    ("Age", "string", 0),
    ("VolumeMode", "string", 1),
];

fn pv(o: &Value) -> Vec<Value> {
    let claim = match o.pointer("/spec/claimRef").filter(|c| c.is_object()) {
        Some(c) => format!("{}/{}", s(c, "/namespace"), s(c, "/name")),
        None => String::new(),
    };
    vec![
        name(o),
        json!(quantity(o, "/spec/capacity/storage")),
        json!(access_modes(arr(o, "/spec/accessModes"))),
        json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
        json!(phase_or_terminating(o)),
        json!(claim),
        json!(storage_class(o)),
        json!(or(s(o, "/spec/volumeAttributesClassName"), "<unset>")),
        json!(s(o, "/status/reason")),
        age(o),
        json!(or(s(o, "/spec/volumeMode"), "<unset>")),
    ]
}

/// A quantity as stored ("0" when absent, as a zero `resource.Quantity` prints).
fn quantity(o: &Value, ptr: &str) -> String {
    match o.pointer(ptr) {
        Some(Value::String(q)) => q.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".into(),
    }
}

const PVC_COLUMNS: &[super::Col] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Volume", "string", 0),
    ("Capacity", "string", 0),
    ("Access Modes", "string", 0),
    ("StorageClass", "string", 0),
    ("VolumeAttributesClass", "string", 0),
    ("Age", "string", 0),
    ("VolumeMode", "string", 1),
];

fn pvc(o: &Value) -> Vec<Value> {
    let volume = s(o, "/spec/volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(o, "/status/capacity/storage"),
            access_modes(arr(o, "/status/accessModes")),
        )
    };
    vec![
        name(o),
        json!(phase_or_terminating(o)),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(o)),
        json!(or(s(o, "/spec/volumeAttributesClassName"), "<unset>")),
        age(o),
        json!(or(s(o, "/spec/volumeMode"), "<unset>")),
    ]
}

/// REQUEST and LIMIT: `resource: used/hard` for each hard limit, sorted by resource name,
/// `limits.*` in LIMIT.
fn quota(o: &Value) -> Vec<Value> {
    let mut hard: Vec<&String> = o
        .pointer("/status/hard")
        .and_then(Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    hard.sort();
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for r in hard {
        let esc = r.replace('~', "~0").replace('/', "~1");
        let text = format!(
            "{r}: {}/{}",
            quantity(o, &format!("/status/used/{esc}")),
            quantity(o, &format!("/status/hard/{esc}"))
        );
        if r.split('.').count() > 1 && r.starts_with("limits.") {
            limit.push(text);
        } else {
            request.push(text);
        }
    }
    vec![
        name(o),
        json!(request.join(", ")),
        json!(limit.join(", ")),
        age(o),
    ]
}
