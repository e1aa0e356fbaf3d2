//! Printers of the workload groups, `apps` (deployments, replicasets, daemonsets,
//! statefulsets, controllerrevisions) and `batch` (jobs, cronjobs), as upstream formats them.

use serde_json::{json, Value};

use super::{age, arr, containers, format_labels, format_selector, int, name, or, s, Printer};

const TEMPLATE: &str = "/spec/template/spec/containers";

pub(super) fn printer(resource: &str) -> Option<Printer> {
    let (columns, cells): (&'static [super::Col], super::Cells) = match resource {
        "deployments" => (
            &[
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Up-to-date", "string", 0),
                ("Available", "string", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            |o| {
                let (c, i) = containers(o, TEMPLATE);
                vec![
                    name(o),
                    json!(ready_of(o)),
                    json!(int(o, "/status/updatedReplicas")),
                    json!(int(o, "/status/availableReplicas")),
                    age(o),
                    c,
                    i,
                    json!(super::selector(o.pointer("/spec/selector"))),
                ]
            },
        ),
        "replicasets" => (
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
                let (c, i) = containers(o, TEMPLATE);
                vec![
                    name(o),
                    json!(int(o, "/spec/replicas")),
                    json!(int(o, "/status/replicas")),
                    json!(int(o, "/status/readyReplicas")),
                    age(o),
                    c,
                    i,
                    json!(format_selector(o.pointer("/spec/selector"))),
                ]
            },
        ),
        "daemonsets" => (
            &[
                ("Name", "string", 0),
                ("Desired", "integer", 0),
                ("Current", "integer", 0),
                ("Ready", "integer", 0),
                ("Up-to-date", "integer", 0),
                ("Available", "integer", 0),
                ("Node Selector", "string", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            |o| {
                let (c, i) = containers(o, TEMPLATE);
                vec![
                    name(o),
                    json!(int(o, "/status/desiredNumberScheduled")),
                    json!(int(o, "/status/currentNumberScheduled")),
                    json!(int(o, "/status/numberReady")),
                    json!(int(o, "/status/updatedNumberScheduled")),
                    json!(int(o, "/status/numberAvailable")),
                    json!(format_labels(o.pointer("/spec/template/spec/nodeSelector"))),
                    age(o),
                    c,
                    i,
                    json!(format_selector(o.pointer("/spec/selector"))),
                ]
            },
        ),
        "statefulsets" => (
            &[
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
            ],
            |o| {
                let (c, i) = containers(o, TEMPLATE);
                vec![name(o), json!(ready_of(o)), age(o), c, i]
            },
        ),
        "controllerrevisions" => (
            &[
                ("Name", "string", 0),
                ("Controller", "string", 0),
                ("Revision", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                vec![
                    name(o),
                    json!(controller(o)),
                    json!(int(o, "/revision")),
                    age(o),
                ]
            },
        ),
        "jobs" => (
            &[
                ("Name", "string", 0),
                ("Status", "string", 0),
                ("Completions", "string", 0),
                ("Duration", "string", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            job,
        ),
        "cronjobs" => (
            &[
                ("Name", "string", 0),
                ("Schedule", "string", 0),
                ("Timezone", "string", 0),
                ("Suspend", "boolean", 0),
                ("Active", "integer", 0),
                ("Last Schedule", "string", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            cronjob,
        ),
        _ => return None,
    };
    Some(Printer { columns, cells })
}

/// `ready/desired` (`spec.replicas` is defaulted, so absent reads as 0 here as upstream's
/// zero value would).
fn ready_of(o: &Value) -> String {
    format!(
        "{}/{}",
        int(o, "/status/readyReplicas"),
        int(o, "/spec/replicas")
    )
}

/// The controlling owner as `kind.group/name` in lower case, `<none>` without one.
fn controller(o: &Value) -> String {
    let Some(r) = arr(o, "/metadata/ownerReferences")
        .iter()
        .find(|r| r["controller"] == true)
    else {
        return "<none>".into();
    };
    let kind = s(r, "/kind");
    let group = s(r, "/apiVersion").rsplit_once('/').map_or("", |(g, _)| g);
    let gk = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    if gk.is_empty() {
        return s(r, "/name").to_string();
    }
    format!("{}/{}", gk.to_lowercase(), s(r, "/name"))
}

/// The status of the first condition of type `ty` is True.
fn has_condition(o: &Value, ty: &str) -> bool {
    arr(o, "/status/conditions")
        .iter()
        .find(|c| c["type"] == ty)
        .is_some_and(|c| c["status"] == "True")
}

fn job(o: &Value) -> Vec<Value> {
    let succeeded = int(o, "/status/succeeded");
    let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(o, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let time = |p: &str| crate::time::parse_rfc3339(s(o, p));
    let duration = match (time("/status/startTime"), time("/status/completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => crate::time::human_duration(crate::time::now_unix() - start),
        (Some(start), Some(end)) => crate::time::human_duration(end - start),
    };
    let status = if has_condition(o, "Complete") {
        "Complete"
    } else if has_condition(o, "Failed") {
        "Failed"
    } else if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has_condition(o, "Suspended") {
        "Suspended"
    } else if has_condition(o, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (c, i) = containers(o, TEMPLATE);
    vec![
        name(o),
        json!(status),
        json!(completions),
        json!(duration),
        age(o),
        c,
        i,
        json!(format_selector(o.pointer("/spec/selector"))),
    ]
}

fn cronjob(o: &Value) -> Vec<Value> {
    let last = match s(o, "/status/lastScheduleTime") {
        "" => "<none>".to_string(),
        t => super::since(t),
    };
    let suspend = match o.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let (c, i) = containers(o, "/spec/jobTemplate/spec/template/spec/containers");
    vec![
        name(o),
        json!(s(o, "/spec/schedule")),
        json!(or(s(o, "/spec/timeZone"), "<none>")),
        json!(suspend),
        json!(arr(o, "/status/active").len()),
        json!(last),
        age(o),
        c,
        i,
        json!(format_selector(
            o.pointer("/spec/jobTemplate/spec/selector")
        )),
    ]
}
