//! Pod spec defaults (upstream `pkg/apis/core/v1/defaults.go`), shared by pods and every pod
//! template (deployments, replica sets, jobs, …), and the pod's QoS class.

use serde_json::{json, Value};

use super::set_if_missing;

/// `IfNotPresent` for a tagged image other than `:latest`, `Always` otherwise (a digest
/// counts as tagged).
pub(crate) fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag follows the last ':' after the last '/' (a registry port is not a tag).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// Defaults of one container (regular, init or ephemeral).
fn container(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    set_if_missing(
        c,
        &["terminationMessagePath"],
        json!("/dev/termination-log"),
    );
    set_if_missing(c, &["terminationMessagePolicy"], json!("File"));
    let image = c["image"].as_str().unwrap_or("").to_string();
    set_if_missing(c, &["imagePullPolicy"], json!(image_pull_policy(&image)));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter(|p| p.is_object()) {
            set_if_missing(p, &["protocol"], json!("TCP"));
        }
    }
    // Requests default to limits where only limits are given.
    let limits = c["resources"]["limits"].as_object().cloned();
    if let Some(limits) = limits.filter(|l| !l.is_empty()) {
        let requests = &mut c["resources"]["requests"];
        if !requests.is_object() {
            *requests = json!({});
        }
        for (k, v) in limits {
            if requests.get(&k).is_none() {
                requests[k] = v;
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if c.get(probe).is_some_and(Value::is_object) {
            let p = &mut c[probe];
            set_if_missing(p, &["timeoutSeconds"], json!(1));
            set_if_missing(p, &["periodSeconds"], json!(10));
            set_if_missing(p, &["successThreshold"], json!(1));
            set_if_missing(p, &["failureThreshold"], json!(3));
            if p.get("httpGet").is_some_and(Value::is_object) {
                set_if_missing(p, &["httpGet", "path"], json!("/"));
                set_if_missing(p, &["httpGet", "scheme"], json!("HTTP"));
            }
        }
    }
}

/// Defaults of a `PodSpec` (in a pod or a template).
pub(crate) fn spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_if_missing(spec, &["restartPolicy"], json!("Always"));
    set_if_missing(spec, &["dnsPolicy"], json!("ClusterFirst"));
    set_if_missing(spec, &["schedulerName"], json!("default-scheduler"));
    set_if_missing(spec, &["terminationGracePeriodSeconds"], json!(30));
    set_if_missing(spec, &["securityContext"], json!({}));
    set_if_missing(spec, &["enableServiceLinks"], json!(true));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container);
        }
    }
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols.iter_mut() {
            for (src, field) in [
                ("secret", "defaultMode"),
                ("configMap", "defaultMode"),
                ("projected", "defaultMode"),
                ("downwardAPI", "defaultMode"),
            ] {
                if v.get(src).is_some_and(Value::is_object) {
                    set_if_missing(&mut v[src], &[field], json!(420));
                }
            }
            if v.get("hostPath").is_some_and(Value::is_object) {
                set_if_missing(&mut v["hostPath"], &["type"], json!(""));
            }
        }
    }
    if let Some(ts) = spec.get_mut("tolerations").and_then(Value::as_array_mut) {
        for t in ts.iter_mut().filter(|t| t.is_object()) {
            if t.get("operator").is_none() {
                t["operator"] = json!("Equal");
            }
        }
    }
}

/// Pods themselves: the spec defaults plus the priority a pod without a priority class gets.
pub(crate) fn pod(obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let spec_v = &mut obj["spec"];
    // Host networking: host ports default to the container ports (pods only, not templates).
    if spec_v.get("hostNetwork") == Some(&json!(true)) {
        for c in spec_v
            .get_mut("containers")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            for p in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if p.get("hostPort").is_none() && p.get("containerPort").is_some() {
                    p["hostPort"] = p["containerPort"].clone();
                }
            }
        }
    }
    spec(spec_v);
    if obj["spec"].get("priorityClassName").is_none() {
        set_if_missing(obj, &["spec", "priority"], json!(0));
    }
}

/// A template's defaults (`spec.template`, or `spec.jobTemplate.spec.template`).
pub(crate) fn template(t: &mut Value) {
    if t.is_object() {
        if !t.get("spec").is_some_and(Value::is_object) {
            t["spec"] = json!({});
        }
        spec(&mut t["spec"]);
    }
}

/// Upstream's QoS class: BestEffort without any request or limit, Guaranteed when every
/// container limits cpu and memory with requests equal to limits, Burstable otherwise.
pub(crate) fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .collect();
    let empty = |v: &Value| v.as_object().is_none_or(|m| m.is_empty());
    if containers
        .iter()
        .all(|c| empty(&c["resources"]["requests"]) && empty(&c["resources"]["limits"]))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let (req, lim) = (&c["resources"]["requests"], &c["resources"]["limits"]);
        ["cpu", "memory"].iter().all(|r| lim.get(*r).is_some())
            && req
                .as_object()
                .into_iter()
                .flatten()
                .all(|(k, v)| lim.get(k) == Some(v))
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        for (image, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("localhost:5000/nginx", "Always"),
            ("localhost:5000/nginx:v1", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(image_pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn pod_spec_defaults_are_upstreams() {
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "nginx:1",
            "ports": [{"containerPort": 80}],
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        pod(&mut p);
        assert_eq!(
            p["spec"],
            json!({"containers": [{"name": "c", "image": "nginx:1",
                "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                              "requests": {"cpu": "1", "memory": "1Gi"}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File"}],
                "dnsPolicy": "ClusterFirst", "enableServiceLinks": true, "priority": 0,
                "restartPolicy": "Always", "schedulerName": "default-scheduler",
                "securityContext": {}, "terminationGracePeriodSeconds": 30})
        );
        assert_eq!(qos_class(&p["spec"]), "Guaranteed");
        // Given values are kept.
        let mut p = json!({"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "x", "imagePullPolicy": "Never",
             "resources": {"requests": {"cpu": "1"}}}]}});
        pod(&mut p);
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(qos_class(&p["spec"]), "Burstable");
        assert_eq!(qos_class(&json!({"containers": [{}]})), "BestEffort");
    }
}
