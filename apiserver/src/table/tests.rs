use super::*;
use crate::resources::find;

fn cells_of(group: &str, resource: &str, o: Value) -> Vec<Value> {
    let def = find(group, "v1", resource).unwrap();
    row(def, &o, Include::None)["cells"]
        .as_array()
        .unwrap()
        .clone()
}

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
fn pod_cells_follow_container_states() {
    let p = json!({"metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c"}, {"name": "d"}]},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}], "containerStatuses": [
            {"ready": true, "restartCount": 2, "state": {"running": {}}},
            {"ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
    let c = cells_of("", "pods", p.clone());
    assert_eq!(
        c[1..4],
        [json!("1/2"), json!("CrashLoopBackOff"), json!("3")]
    );
    assert_eq!(
        c[5..9],
        [
            json!("10.0.0.5"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>")
        ]
    );
    let r = row(find("", "v1", "pods").unwrap(), &p, Include::Metadata);
    assert_eq!(r["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(r["object"]["metadata"]["labels"]["a"], "b");

    let init = json!({"metadata": {"name": "p"},
        "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "c"}]},
        "status": {"phase": "Pending", "initContainerStatuses": [
            {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
            {"name": "i2", "state": {"running": {}}}]}});
    assert_eq!(cells_of("", "pods", init)[2], json!("Init:1/2"));
    let gone = json!({"metadata": {"name": "p", "deletionTimestamp": "2020-01-01T00:00:00Z"},
        "spec": {"containers": []}, "status": {"phase": "Running"}});
    assert_eq!(cells_of("", "pods", gone)[2], json!("Terminating"));
    let done = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
    assert_eq!(cells_of("", "pods", done.clone())[2], json!("Completed"));
    let r = row(find("", "v1", "pods").unwrap(), &done, Include::None);
    assert_eq!(r["conditions"][0]["reason"], "Succeeded");
}

#[test]
fn service_and_node_cells() {
    let s = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIPs": ["10.96.0.9"],
        "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
        "selector": {"tier": "x", "app": "web"}}});
    let c = cells_of("", "services", s);
    assert_eq!(
        c[1..5],
        [
            json!("NodePort"),
            json!("10.96.0.9"),
            json!("<none>"),
            json!("80:30080/TCP,53/UDP")
        ]
    );
    assert_eq!(c[6], json!("app=web,tier=x"));
    let lb = json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}});
    assert_eq!(cells_of("", "services", lb)[3], json!("<pending>"));

    let n = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "False"}], "nodeInfo": {"kubeletVersion": "v1.32.0"}}});
    let c = cells_of("", "nodes", n);
    assert_eq!(
        c[1..3],
        [json!("NotReady,SchedulingDisabled"), json!("control-plane")]
    );
    assert_eq!(c[4], json!("v1.32.0"));
    assert_eq!(c[7], json!("<unknown>"));
}

#[test]
fn workload_cells() {
    let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3,
        "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]}]},
        "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}, {"name": "s", "image": "envoy"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    let c = cells_of("apps", "deployments", d);
    assert_eq!(c[1..4], [json!("2/3"), json!(3), json!(2)]);
    assert_eq!(
        c[5..8],
        [
            json!("c,s"),
            json!("nginx,envoy"),
            json!("app=web,env in (a,b)")
        ]
    );
    let j = json!({"metadata": {"name": "j"}, "spec": {"completions": 2, "template": {"spec": {"containers": []}}},
        "status": {"succeeded": 2, "startTime": "2020-01-01T00:00:00Z", "completionTime": "2020-01-01T00:01:05Z",
            "conditions": [{"type": "Complete", "status": "True"}]}});
    let c = cells_of("batch", "jobs", j);
    assert_eq!(c[1..4], [json!("Complete"), json!("2/2"), json!("65s")]);
    let cj =
        json!({"metadata": {"name": "cj"}, "spec": {"schedule": "*/5 * * * *", "suspend": false}});
    let c = cells_of("batch", "cronjobs", cj);
    assert_eq!(
        c[1..6],
        [
            json!("*/5 * * * *"),
            json!("<none>"),
            json!("False"),
            json!(0),
            json!("<none>")
        ]
    );
}

#[test]
fn other_group_cells() {
    let i = json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": "nginx",
        "rules": [{"host": "a.example"}, {}, {"host": "b.example"}], "tls": [{"hosts": ["a.example"]}]}});
    assert_eq!(
        cells_of("networking.k8s.io", "ingresses", i)[1..5],
        [
            json!("nginx"),
            json!("a.example,b.example"),
            json!(""),
            json!("80, 443")
        ]
    );
    let es = json!({"metadata": {"name": "e"}, "addressType": "IPv4", "ports": [{"port": 80}, {"name": "x"}],
        "endpoints": [{"addresses": ["1.1.1.1"]}, {"addresses": ["2.2.2.2", "3.3.3.3", "4.4.4.4"]}]});
    assert_eq!(
        cells_of("discovery.k8s.io", "endpointslices", es)[1..4],
        [
            json!("IPv4"),
            json!("80,x"),
            json!("1.1.1.1,2.2.2.2,3.3.3.3 + 1 more...")
        ]
    );
    let sc = json!({"metadata": {"name": "std", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "example.com/p"});
    assert_eq!(
        cells_of("storage.k8s.io", "storageclasses", sc)[0..5],
        [
            json!("std (default)"),
            json!("example.com/p"),
            json!("Delete"),
            json!("Immediate"),
            json!(false)
        ]
    );
    let lr = json!({"metadata": {"name": "l", "creationTimestamp": "2020-01-01T00:00:00Z"}});
    assert_eq!(
        cells_of("", "limitranges", lr),
        [json!("l"), json!("2020-01-01T00:00:00Z")]
    );
}
