//! The Pod printer: NAME READY STATUS RESTARTS AGE, wide IP NODE NOMINATED NODE READINESS
//! GATES, computed as upstream's `printPod`: STATUS starts from the phase (or
//! `status.reason`), is overridden by init-container progress (`Init:1/2`,
//! `Init:CrashLoopBackOff`), then by the last container's waiting or terminated reason, and
//! ends as `Terminating` while a deletion is pending. RESTARTS adds `(5m ago)` when a
//! container last terminated at a known time.

use serde_json::{json, Value};

use super::{arr, s, since, Printer};

pub(super) const PRINTER: Printer = Printer {
    columns: &[
        ("Name", "string", 0),
        ("Ready", "string", 0),
        ("Status", "string", 0),
        ("Restarts", "string", 0),
        ("Age", "string", 0),
        ("IP", "string", 1),
        ("Node", "string", 1),
        ("Nominated Node", "string", 1),
        ("Readiness Gates", "string", 1),
    ],
    cells,
};

/// The later of two optional RFC 3339 times (as epoch seconds).
fn later(a: Option<i64>, b: &Value) -> Option<i64> {
    let t = b
        .pointer("/lastState/terminated/finishedAt")
        .and_then(Value::as_str)
        .and_then(crate::time::parse_rfc3339);
    match (a, t) {
        (Some(a), Some(t)) => Some(a.max(t)),
        (a, t) => a.or(t),
    }
}

fn condition_true(o: &Value, ty: &str) -> bool {
    arr(o, "/status/conditions")
        .iter()
        .any(|c| c["type"] == ty && c["status"] == "True")
}

/// `Init:<reason>`-style text for a terminated container without a reason.
fn exit_text(t: &Value) -> String {
    match t["signal"].as_i64().filter(|s| *s != 0) {
        Some(sig) => format!("Signal:{sig}"),
        None => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
    }
}

/// (ready, total, status, restarts) as upstream computes them.
fn summary(o: &Value) -> (usize, usize, String, String) {
    let phase = s(o, "/status/phase");
    let mut reason = super::or(s(o, "/status/reason"), phase);
    if arr(o, "/status/conditions")
        .iter()
        .any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let init_specs = arr(o, "/spec/initContainers");
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| c["name"] == name && c["restartPolicy"] == "Always")
    };
    let total = arr(o, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| c["restartPolicy"] == "Always")
            .count();
    let (mut ready, mut restarts, mut init_restarts) = (0usize, 0i64, 0i64);
    let (mut last, mut last_init) = (None, None);
    let mut initializing = false;
    for (i, c) in arr(o, "/status/initContainerStatuses").iter().enumerate() {
        let rc = c["restartCount"].as_i64().unwrap_or(0);
        restarts += rc;
        last = later(last, c);
        let name = c["name"].as_str().unwrap_or("");
        if restartable(name) {
            init_restarts += rc;
            last_init = later(last_init, c);
        }
        let term = c.pointer("/state/terminated");
        let waiting = s(c, "/state/waiting/reason");
        if term.is_some_and(|t| t["exitCode"].as_i64().unwrap_or(0) == 0) {
            continue;
        }
        if restartable(name) && c["started"] == true {
            if c["ready"] == true {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = term {
            match t["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None => format!("Init:{}", exit_text(t)),
            }
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            format!("Init:{waiting}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }
    if !initializing || condition_true(o, "Initialized") {
        restarts = init_restarts;
        last = last_init;
        let mut has_running = false;
        for c in arr(o, "/status/containerStatuses").iter().rev() {
            restarts += c["restartCount"].as_i64().unwrap_or(0);
            last = later(last, c);
            let waiting = s(c, "/state/waiting/reason");
            let term = c.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = term {
                reason = match t["reason"].as_str().filter(|r| !r.is_empty()) {
                    Some(r) => r.to_string(),
                    None => exit_text(t),
                };
            } else if c["ready"] == true && c.pointer("/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(o, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .into();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        if s(o, "/status/reason") == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    let restarts = match last {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            crate::time::human_duration(crate::time::now_unix() - t)
        ),
        _ => restarts.to_string(),
    };
    (ready, total, reason, restarts)
}

fn cells(o: &Value) -> Vec<Value> {
    let (ready, total, status, restarts) = summary(o);
    let ip = arr(o, "/status/podIPs")
        .first()
        .and_then(|p| p["ip"].as_str())
        .unwrap_or("");
    let gates = arr(o, "/spec/readinessGates");
    let gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(o, "/status/conditions");
        let ok = gates
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .find(|c| c["type"] == g["conditionType"])
                    .is_some_and(|c| c["status"] == "True")
            })
            .count();
        format!("{ok}/{}", gates.len())
    };
    vec![
        super::name(o),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        json!(since(s(o, "/metadata/creationTimestamp"))),
        json!(super::or(ip, "<none>")),
        json!(super::or(s(o, "/spec/nodeName"), "<none>")),
        json!(super::or(s(o, "/status/nominatedNodeName"), "<none>")),
        json!(gates),
    ]
}

/// Upstream marks rows of finished pods with a `Completed` condition.
pub(super) fn row_conditions(o: &Value) -> Option<Value> {
    let (reason, message) = match s(o, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}
