//! Pod spec and pod template rules (upstream `pkg/apis/core/validation`: `ValidatePodSpec`,
//! `validateContainers`, `validateContainerPorts`, `ValidatePodTemplateSpec`).

use std::collections::HashSet;

use serde_json::Value;

use super::meta::{self, dns1123_label};
use super::{go_str, Errs};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// `IsValidPortNum`.
pub(crate) fn port_num(v: &Value, path: &str, e: &mut Errs) {
    if let Some(n) = v.as_i64().filter(|n| !(1..=65535).contains(n)) {
        e.invalid(
            path,
            &n.to_string(),
            "must be between 1 and 65535, inclusive",
        );
    }
}

/// `IsValidPortName` (IANA service names).
pub(crate) fn port_name(name: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if name.len() > 15 {
        out.push("must be no more than 15 characters");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if name.contains("--") {
        out.push("must not contain consecutive hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        out.push("must not begin or end with a hyphen");
    }
    if !name.bytes().any(|c| c.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)");
    }
    out
}

fn ports(ports: &Value, path: &str, e: &mut Errs) {
    let mut names = HashSet::new();
    for (i, p) in ports.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}[{i}]");
        let name = p["name"].as_str().unwrap_or("");
        if !name.is_empty() {
            let msgs = port_name(name);
            if !msgs.is_empty() {
                for m in msgs {
                    e.invalid(&format!("{at}.name"), &go_str(name), m);
                }
            } else if !names.insert(name.to_string()) {
                e.duplicate(&format!("{at}.name"), &go_str(name));
            }
        }
        match p["containerPort"].as_i64() {
            None | Some(0) => e.required(&format!("{at}.containerPort"), ""),
            Some(_) => port_num(&p["containerPort"], &format!("{at}.containerPort"), e),
        }
        if p["hostPort"].as_i64().is_some_and(|n| n != 0) {
            port_num(&p["hostPort"], &format!("{at}.hostPort"), e);
        }
        e.one_of(&format!("{at}.protocol"), &p["protocol"], PROTOCOLS);
    }
}

fn containers(list: &Value, path: &str, required: bool, e: &mut Errs) {
    let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
    if required && items.is_empty() {
        e.required(path, "");
    }
    let mut names = HashSet::new();
    for (i, c) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let name = c["name"].as_str().unwrap_or("");
        if name.is_empty() {
            e.required(&format!("{at}.name"), "");
        } else {
            for m in dns1123_label(name) {
                e.invalid(&format!("{at}.name"), &go_str(name), &m);
            }
        }
        if c["image"].as_str().unwrap_or("").is_empty() {
            e.required(&format!("{at}.image"), "");
        }
        e.one_of(
            &format!("{at}.terminationMessagePolicy"),
            &c["terminationMessagePolicy"],
            &["File", "FallbackToLogsOnError"],
        );
        ports(&c["ports"], &format!("{at}.ports"), e);
        e.one_of(
            &format!("{at}.imagePullPolicy"),
            &c["imagePullPolicy"],
            &["Always", "IfNotPresent", "Never"],
        );
        if !name.is_empty() && !names.insert(name.to_string()) {
            e.duplicate(&format!("{at}.name"), &go_str(name));
        }
    }
}

/// `ValidatePodSpec` (the common part) of `spec` at `path`.
pub(crate) fn spec(spec: &Value, path: &str, e: &mut Errs) {
    containers(&spec["containers"], &format!("{path}.containers"), true, e);
    containers(
        &spec["initContainers"],
        &format!("{path}.initContainers"),
        false,
        e,
    );
    e.one_of(
        &format!("{path}.restartPolicy"),
        &spec["restartPolicy"],
        &["Always", "OnFailure", "Never"],
    );
    e.one_of(
        &format!("{path}.dnsPolicy"),
        &spec["dnsPolicy"],
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    meta::labels(&spec["nodeSelector"], &format!("{path}.nodeSelector"), e);
    if let Some(sa) = spec["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        if let Some(why) = meta::dns1123_subdomain(sa).into_iter().next() {
            e.invalid(&format!("{path}.serviceAccountName"), &go_str(sa), &why);
        }
    }
    if let Some(n) = spec["activeDeadlineSeconds"].as_i64().filter(|n| *n <= 0) {
        e.invalid(
            &format!("{path}.activeDeadlineSeconds"),
            &n.to_string(),
            "must be between 1 and 2147483647, inclusive",
        );
    }
}

/// `ValidatePodTemplateSpec` of the template at `path` (e.g. `spec.template`).
pub(crate) fn template(t: &Value, path: &str, e: &mut Errs) {
    meta::labels(&t["metadata"]["labels"], &format!("{path}.labels"), e);
    meta::annotations(
        &t["metadata"]["annotations"],
        &format!("{path}.annotations"),
        e,
    );
    spec(&t["spec"], &format!("{path}.spec"), e);
}
