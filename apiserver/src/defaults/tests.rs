use serde_json::json;

use super::*;
use crate::resources::find;

fn defaulted(group: &str, resource: &str, mut obj: Value) -> Value {
    apply(find(group, "v1", resource).unwrap(), &mut obj);
    obj
}

#[test]
fn deployment_defaults_are_upstreams() {
    let d = defaulted(
        "apps",
        "deployments",
        json!({"spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    );
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    let t = &d["spec"]["template"]["spec"];
    assert_eq!(t["restartPolicy"], "Always");
    assert_eq!(t["containers"][0]["imagePullPolicy"], "Always");
    // Templates get no priority (admission's business for pods).
    assert!(t.get("priority").is_none());
    // Recreate gets no rolling parameters; defaulting twice changes nothing.
    let r = defaulted(
        "apps",
        "deployments",
        json!({"spec": {"strategy": {"type": "Recreate"}}}),
    );
    assert_eq!(r["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(defaulted("apps", "deployments", d.clone()), d);
}

#[test]
fn other_workload_defaults_are_upstreams() {
    let s = defaulted("apps", "statefulsets", json!({"spec": {}}));
    assert_eq!(
        s["spec"],
        json!({"podManagementPolicy": "OrderedReady", "replicas": 1,
            "revisionHistoryLimit": 10,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"}})
    );
    let ds = defaulted("apps", "daemonsets", json!({"spec": {}}));
    assert_eq!(
        ds["spec"],
        json!({"revisionHistoryLimit": 10, "updateStrategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}})
    );
    let rc = defaulted(
        "",
        "replicationcontrollers",
        json!({"metadata": {}, "spec": {"template": {"metadata": {"labels": {"app": "x"}}}}}),
    );
    assert_eq!(rc["spec"]["selector"], json!({"app": "x"}));
    assert_eq!(rc["metadata"]["labels"], json!({"app": "x"}));
    assert_eq!(rc["spec"]["replicas"], 1);
    let job = defaulted("batch", "jobs", json!({"metadata": {}, "spec": {}}));
    assert_eq!(
        job["spec"],
        json!({"completions": 1, "parallelism": 1, "backoffLimit": 6,
            "completionMode": "NonIndexed", "suspend": false,
            "podReplacementPolicy": "TerminatingOrFailed"})
    );
    let par = defaulted("batch", "jobs", json!({"spec": {"parallelism": 3}}));
    assert!(par["spec"].get("completions").is_none());
    let cj = defaulted(
        "batch",
        "cronjobs",
        json!({"spec": {"schedule": "* * * * *"}}),
    );
    assert_eq!(
        cj["spec"],
        json!({"schedule": "* * * * *", "concurrencyPolicy": "Allow", "suspend": false,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1})
    );
}

#[test]
fn service_defaults_are_upstreams() {
    let s = defaulted(
        "",
        "services",
        json!({"spec": {"ports": [{"port": 80}, {"port": 81, "targetPort": "http"}]}}),
    );
    assert_eq!(
        s["spec"],
        json!({"type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
            "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"],
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80},
                      {"port": 81, "protocol": "TCP", "targetPort": "http"}]})
    );
    let np = defaulted("", "services", json!({"spec": {"type": "NodePort"}}));
    assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
    let en = defaulted("", "services", json!({"spec": {"type": "ExternalName"}}));
    assert!(en["spec"].get("internalTrafficPolicy").is_none());
}

#[test]
fn create_time_status_and_job_selector() {
    let job = find("batch", "v1", "jobs").unwrap();
    let mut j = json!({"metadata": {"name": "pi", "uid": "u1"},
        "spec": {"template": {"spec": {}}}, "status": {"active": 3}});
    on_create(job, &mut j);
    assert_eq!(j["status"], json!({}));
    assert_eq!(
        j["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}})
    );
    assert_eq!(
        j["spec"]["template"]["metadata"]["labels"]["job-name"],
        "pi"
    );
    let ns = find("", "v1", "namespaces").unwrap();
    let mut n = json!({"metadata": {"name": "dev"}});
    apply(ns, &mut n);
    on_create(ns, &mut n);
    assert_eq!(n["status"], json!({"phase": "Active"}));
    assert_eq!(n["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(
        n["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "dev"
    );
    let svc = find("", "v1", "services").unwrap();
    let mut s = json!({"spec": {}});
    on_create(svc, &mut s);
    assert_eq!(s["status"], json!({"loadBalancer": {}}));
    let deploy = find("apps", "v1", "deployments").unwrap();
    let mut d = json!({"spec": {}, "status": {"replicas": 5}});
    on_create(deploy, &mut d);
    assert_eq!(d["status"], json!({}));
}

#[test]
fn service_updates_keep_allocated_ips() {
    let svc = find("", "v1", "services").unwrap();
    let old = json!({"spec": {"clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"],
        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "type": "ClusterIP"}});
    let mut new = json!({"spec": {"type": "ClusterIP"}});
    on_update(svc, &old, &mut new);
    assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.0.9"]));
    let mut changed = json!({"spec": {"clusterIP": "10.96.0.10"}});
    on_update(svc, &old, &mut changed);
    assert!(changed["spec"].get("clusterIPs").is_none());
}
