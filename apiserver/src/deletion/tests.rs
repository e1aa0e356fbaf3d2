use serde_json::json;

use super::*;
use crate::resources::find;

fn opts(body: &str) -> Result<Options> {
    Options::parse(body.as_bytes(), &Query::parse(None))
}

#[test]
fn options_come_from_the_body_or_else_the_query() {
    let o = opts(
        r#"{"kind":"DeleteOptions","apiVersion":"v1","gracePeriodSeconds":0,
        "preconditions":{"uid":"u","resourceVersion":"7"},"propagationPolicy":"Foreground",
        "dryRun":["All"]}"#,
    )
    .unwrap();
    assert_eq!(
        o,
        Options {
            grace_period_seconds: Some(0),
            uid: Some("u".into()),
            resource_version: Some("7".into()),
            propagation: Some(Propagation::Foreground),
            orphan_dependents: None,
            dry_run: true,
        }
    );
    assert_eq!(opts("").unwrap(), Options::default());
    let q = Query::parse(Some(
        "gracePeriodSeconds=5&propagationPolicy=Orphan&dryRun=All",
    ));
    let o = Options::parse(b"", &q).unwrap();
    assert_eq!(o.grace_period_seconds, Some(5));
    assert_eq!(o.propagation, Some(Propagation::Orphan));
    assert!(o.dry_run);
    // The body wins entirely when there is one.
    let o = Options::parse(br#"{"orphanDependents":true}"#, &q).unwrap();
    assert_eq!(
        (o.propagation, o.orphan_dependents, o.dry_run),
        (None, Some(true), false)
    );
}

#[test]
fn invalid_options_are_422_with_upstream_messages() {
    let e = opts(r#"{"propagationPolicy":"Orphan","orphanDependents":false}"#).unwrap_err();
    assert_eq!(
        e.status()["message"],
        "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Invalid value: \
         \"Orphan\": orphanDependents and deletionPropagation cannot be both set"
    );
    let e = opts(r#"{"propagationPolicy":"Later","dryRun":["Some"]}"#).unwrap_err();
    assert_eq!(
        e.status()["message"],
        "DeleteOptions.meta.k8s.io \"\" is invalid: [propagationPolicy: Unsupported value: \
         \"Later\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\", \
         dryRun: Unsupported value: []string{\"Some\"}: supported values: \"All\"]"
    );
    assert_eq!(opts("{").unwrap_err().code(), 400);
}

#[test]
fn preconditions_conflict_naming_the_kind() {
    let d = find("apps", "v1", "deployments").unwrap();
    let obj = json!({"metadata": {"name": "web", "uid": "u1", "resourceVersion": "5"}});
    let mut o = Options {
        uid: Some("u1".into()),
        resource_version: Some("5".into()),
        ..Options::default()
    };
    check_preconditions(d, &obj, &o).unwrap();
    o.resource_version = Some("4".into());
    let e = check_preconditions(d, &obj, &o).unwrap_err();
    assert_eq!(
        e.status()["message"],
        "Operation cannot be fulfilled on Deployment.apps \"web\": the ResourceVersion in the \
         precondition (4) does not match the ResourceVersion in record (5). The object might \
         have been modified"
    );
    o.uid = Some("u2".into());
    let e = check_preconditions(d, &obj, &o).unwrap_err();
    assert_eq!(e.code(), 409);
    assert!(e.status()["message"]
        .as_str()
        .unwrap()
        .ends_with("the UID in the precondition (u2) does not match the UID in record (u1). The object might have been deleted and then recreated"));
}

#[test]
fn propagation_sets_the_gc_finalizers() {
    let with = |p: Option<Propagation>, orphan: Option<bool>, cur: &[&str]| {
        let o = Options {
            propagation: p,
            orphan_dependents: orphan,
            ..Options::default()
        };
        let cur: Vec<String> = cur.iter().map(|s| s.to_string()).collect();
        gc_finalizers(&o, &cur)
    };
    assert_eq!(with(Some(Propagation::Background), None, &[]), None);
    assert_eq!(
        with(Some(Propagation::Orphan), None, &["a"]),
        Some(vec!["a".into(), ORPHAN.into()])
    );
    assert_eq!(
        with(Some(Propagation::Foreground), None, &[ORPHAN]),
        Some(vec![FOREGROUND.into()])
    );
    assert_eq!(
        with(Some(Propagation::Background), None, &[ORPHAN, "a"]),
        Some(vec!["a".into()])
    );
    assert_eq!(with(None, Some(true), &[]), Some(vec![ORPHAN.into()]));
    assert_eq!(with(None, Some(false), &[FOREGROUND]), Some(vec![]));
    // No option: the object's own finalizers decide (nothing changes).
    assert_eq!(with(None, None, &[FOREGROUND]), None);
}

#[test]
fn plans_for_plain_finalized_and_propagated_deletes() {
    let cm = find("", "v1", "configmaps").unwrap();
    let d = find("apps", "v1", "deployments").unwrap();
    let now = 1_700_000_000;
    let ts = crate::time::rfc3339(now);
    let bg = Options {
        propagation: Some(Propagation::Background),
        ..Options::default()
    };
    let plain = json!({"metadata": {"name": "x"}});
    assert_eq!(plan(cm, &plain, &bg, now), Plan::DeleteNow);
    let finalized = json!({"metadata": {"name": "x", "finalizers": ["example.com/f"]}});
    assert_eq!(
        plan(cm, &finalized, &bg, now),
        Plan::Update {
            obj: json!({"metadata": {"name": "x", "finalizers": ["example.com/f"],
                "deletionTimestamp": ts, "deletionGracePeriodSeconds": 0}}),
            then_delete: false
        }
    );
    let orphan = Options {
        propagation: Some(Propagation::Orphan),
        ..Options::default()
    };
    let deploy = json!({"metadata": {"name": "web", "generation": 2}});
    assert_eq!(
        plan(d, &deploy, &orphan, now),
        Plan::Update {
            obj: json!({"metadata": {"name": "web", "generation": 3, "finalizers": [ORPHAN],
                "deletionTimestamp": ts, "deletionGracePeriodSeconds": 0}}),
            then_delete: false
        }
    );
    // Already marked: a second delete writes nothing new (same bytes) and keeps it.
    let Plan::Update { obj: marked, .. } = plan(d, &deploy, &orphan, now) else {
        unreachable!()
    };
    assert_eq!(
        plan(d, &marked, &orphan, now + 5),
        Plan::Update {
            obj: marked.clone(),
            then_delete: false
        }
    );
    // Background on a marked orphaned object drops the finalizer: it goes now.
    assert_eq!(plan(d, &marked, &bg, now), Plan::DeleteNow);
}

#[test]
fn pods_delete_gracefully_only_when_bound() {
    let pods = find("", "v1", "pods").unwrap();
    let now = 1_700_000_000;
    let pod = |node: &str| {
        json!({"metadata": {"name": "p"}, "spec": {"nodeName": node,
            "terminationGracePeriodSeconds": 30}, "status": {"phase": "Running"}})
    };
    let bg = Options::default();
    // Unbound: marked with grace 0, then removed.
    let Plan::Update { obj, then_delete } = plan(pods, &pod(""), &bg, now) else {
        panic!("unbound pods are marked first")
    };
    assert!(then_delete);
    assert_eq!(obj["metadata"]["deletionGracePeriodSeconds"], 0);
    // Bound: marked with the pod's grace period, and stays.
    let Plan::Update { obj, then_delete } = plan(pods, &pod("n1"), &bg, now) else {
        panic!("bound pods are marked")
    };
    assert!(!then_delete);
    assert_eq!(
        obj["metadata"]["deletionTimestamp"],
        crate::time::rfc3339(now + 30)
    );
    assert_eq!(obj["metadata"]["deletionGracePeriodSeconds"], 30);
    // Deleting again without a shorter grace: pending, nothing happens.
    assert_eq!(plan(pods, &obj, &bg, now + 1), Plan::Pending);
    let longer = Options {
        grace_period_seconds: Some(60),
        ..Options::default()
    };
    assert_eq!(plan(pods, &obj, &longer, now + 1), Plan::Pending);
    // --grace-period=0 --force: shortened to 0 and removed.
    let force = Options {
        grace_period_seconds: Some(0),
        ..Options::default()
    };
    let Plan::Update {
        obj: forced,
        then_delete,
    } = plan(pods, &obj, &force, now + 1)
    else {
        panic!("a shorter grace rewrites the marks")
    };
    assert!(then_delete);
    assert_eq!(
        forced["metadata"]["deletionTimestamp"],
        crate::time::rfc3339(now)
    );
    // A finished pod goes at once whatever its grace.
    let mut done = pod("n1");
    done["status"]["phase"] = json!("Succeeded");
    assert!(matches!(
        plan(pods, &done, &bg, now),
        Plan::Update {
            then_delete: true,
            ..
        }
    ));
}

#[test]
fn emptied_finalizers_delete_during_update() {
    let cm = find("", "v1", "configmaps").unwrap();
    let ns = find("", "v1", "namespaces").unwrap();
    let marked = json!({"metadata": {"name": "x", "finalizers": ["a/b"],
        "deletionTimestamp": "2024-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0}});
    let mut emptied = marked.clone();
    emptied["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    assert!(should_delete_during_update(cm, &marked, &emptied));
    assert!(!should_delete_during_update(cm, &marked, &marked));
    assert!(!should_delete_during_update(
        cm,
        &json!({"metadata": {"name": "x"}}),
        &emptied
    ));
    let mut ns_old = marked.clone();
    ns_old["spec"] = json!({"finalizers": ["kubernetes"]});
    let mut ns_new = emptied.clone();
    ns_new["spec"] = json!({"finalizers": ["kubernetes"]});
    assert!(!should_delete_during_update(ns, &ns_old, &ns_new));
    ns_new["spec"] = json!({});
    assert!(should_delete_during_update(ns, &ns_old, &ns_new));
}

#[test]
fn no_new_finalizers_once_deleting() {
    let old = json!({"metadata": {"finalizers": ["a/b"], "deletionTimestamp": "t"}});
    let new = json!({"metadata": {"finalizers": ["a/b", "z/y", "c/d"]}});
    let causes = update_causes(&old, &new);
    assert_eq!(
        causes[0].message,
        "Forbidden: no new finalizers can be added if the object is being deleted, found new \
         finalizers []string{\"c/d\", \"z/y\"}"
    );
    assert!(update_causes(&json!({"metadata": {}}), &new).is_empty());
}

#[test]
fn namespaces_are_marked_terminating() {
    let ns = json!({"metadata": {"name": "n"}, "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}});
    let o = Options {
        propagation: Some(Propagation::Orphan),
        ..Options::default()
    };
    let m = namespace::mark_terminating(&ns, &o, 1_700_000_000);
    assert_eq!(m["status"]["phase"], "Terminating");
    assert_eq!(m["metadata"]["finalizers"], json!([ORPHAN]));
    assert_eq!(m["spec"]["finalizers"], json!(["kubernetes"]));
    let m = namespace::mark_terminating(&ns, &Options::default(), 1_700_000_000);
    assert!(m["metadata"].get("finalizers").is_none());
}

#[test]
fn replies_follow_upstream() {
    let cm = find("", "v1", "configmaps").unwrap();
    let pods = find("", "v1", "pods").unwrap();
    let obj = json!({"metadata": {"name": "x", "uid": "u"}});
    let (code, body) = Outcome::Deleted(obj.clone()).reply(cm, &Options::default());
    assert_eq!(code, 200);
    assert_eq!(body["kind"], "Status");
    assert_eq!(
        body["details"],
        json!({"name": "x", "kind": "configmaps", "uid": "u"})
    );
    let (_, body) = Outcome::Deleted(obj.clone()).reply(pods, &Options::default());
    assert_eq!(body, obj);
    let cascade = Options {
        orphan_dependents: Some(false),
        ..Options::default()
    };
    assert_eq!(Outcome::Pending(obj.clone()).reply(cm, &cascade).0, 202);
    assert_eq!(Outcome::Pending(obj).reply(cm, &Options::default()).0, 200);
}
