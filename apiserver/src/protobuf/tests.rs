//! Hand-built protobuf bodies, written as Go's generated marshaller writes them (every value
//! field, zero or not; pointer fields only when set), decoded to the JSON Go would write.

use serde_json::json;

use super::*;

/// A message under construction.
#[derive(Default, Clone)]
struct M(Vec<u8>);

impl M {
    fn key(mut self, num: u64, wt: u64) -> Self {
        put_varint((num << 3) | wt, &mut self.0);
        self
    }
    fn bytes(self, num: u64, b: &[u8]) -> Self {
        let mut s = self.key(num, 2);
        put_varint(b.len() as u64, &mut s.0);
        s.0.extend_from_slice(b);
        s
    }
    fn s(self, num: u64, v: &str) -> Self {
        self.bytes(num, v.as_bytes())
    }
    fn v(self, num: u64, v: i64) -> Self {
        let mut s = self.key(num, 0);
        put_varint(v as u64, &mut s.0);
        s
    }
    fn m(self, num: u64, m: M) -> Self {
        self.bytes(num, &m.0)
    }
    /// A `map<string,string>` entry.
    fn kv(self, num: u64, k: &str, v: &str) -> Self {
        self.m(num, M::default().s(1, k).s(2, v))
    }
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn envelope(api_version: &str, kind: &str, obj: M) -> Vec<u8> {
    let tm = M::default().s(1, api_version).s(2, kind);
    let unknown = M::default().m(1, tm).m(2, obj).s(3, "").s(4, "");
    [MAGIC, &unknown.0].concat()
}

/// ObjectMeta as Go writes it: every string, generation, a zero creationTimestamp.
fn meta(name: &str, labels: &[(&str, &str)]) -> M {
    let mut m = M::default().s(1, name);
    for n in 2..=6 {
        m = m.s(n, "");
    }
    m = m.v(7, 0).m(8, M::default());
    for (k, v) in labels {
        m = m.kv(11, k, v);
    }
    m
}

/// A Container with its value fields: name, image, resources {}, and empty strings/falses.
fn container(name: &str, image: &str, command: &[&str]) -> M {
    let mut c = M::default().s(1, name).s(2, image);
    for a in command {
        c = c.s(3, a);
    }
    c = c.s(5, "").m(8, M::default()).s(13, "").s(14, "");
    c.v(16, 0).v(17, 0).v(18, 0).s(20, "")
}

/// A PodSpec with one container and Go's zero values for the other value fields.
fn pod_spec(c: M, restart: &str) -> M {
    let mut p = M::default()
        .m(2, c)
        .s(3, restart)
        .s(6, "")
        .s(8, "")
        .s(9, "");
    p = p
        .s(10, "")
        .v(11, 0)
        .v(12, 0)
        .v(13, 0)
        .s(16, "")
        .s(17, "")
        .s(19, "");
    p.s(24, "")
}

fn template(labels: &[(&str, &str)], spec: M) -> M {
    M::default().m(1, meta("", labels)).m(2, spec)
}

#[test]
fn decodes_a_configmap_like_go_json() {
    let cm = M::default()
        .m(1, meta("x", &[("app", "web")]).s(3, "default"))
        .kv(2, "a", "b")
        .kv(2, "c", "")
        .m(3, M::default().s(1, "bin").bytes(2, &[0, 1]))
        .v(4, 0) // immutable: false, set explicitly
        .v(99, 7); // a field from the future
    assert_eq!(
        decode(&envelope("v1", "ConfigMap", cm)).unwrap(),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "default", "labels": {"app": "web"},
                         "creationTimestamp": null},
            "data": {"a": "b", "c": ""},
            "binaryData": {"bin": "AAE="},
            "immutable": false,
        })
    );
}

#[test]
fn a_deployment_keeps_pointer_zeros_and_drops_value_zeros() {
    let labels = [("app", "web")];
    let spec = M::default()
        .v(1, 0) // replicas: *int32, set to 0
        .m(2, M::default().kv(1, "app", "web"))
        .m(
            3,
            template(&labels, pod_spec(container("nginx", "nginx", &[]), "")),
        )
        .m(4, M::default().s(1, ""))
        .v(5, 0) // minReadySeconds: a value
        .v(7, 0); // paused: false, a value
    let status = M::default().v(1, 0).v(2, 0).v(3, 0).v(4, 0).v(5, 0).v(7, 0);
    let d = M::default()
        .m(1, meta("web", &labels))
        .m(2, spec)
        .m(3, status);
    assert_eq!(
        decode(&envelope("apps/v1", "Deployment", d)).unwrap(),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]},
                },
                "strategy": {},
            },
            "status": {},
        })
    );
}

#[test]
fn a_service_port_reads_int_or_string() {
    let port = |name: &str, target: M| {
        M::default()
            .s(1, name)
            .s(2, "TCP")
            .v(3, 80)
            .m(4, target)
            .v(5, 0)
    };
    let spec = M::default()
        .m(1, port("80-8080", M::default().v(1, 0).v(2, 8080).s(3, "")))
        .m(1, port("web", M::default().v(1, 1).v(2, 0).s(3, "http")))
        .kv(2, "app", "s")
        .s(3, "")
        .s(4, "ClusterIP")
        .s(7, "")
        .v(13, 0);
    let svc = M::default()
        .m(1, meta("s", &[("app", "s")]))
        .m(2, spec)
        .m(3, M::default().m(1, M::default()));
    let obj = decode(&envelope("v1", "Service", svc)).unwrap();
    assert_eq!(
        obj["spec"],
        json!({
            "ports": [
                {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "web", "protocol": "TCP", "port": 80, "targetPort": "http"},
            ],
            "selector": {"app": "s"},
            "type": "ClusterIP",
        })
    );
    assert_eq!(obj["status"], json!({"loadBalancer": {}}));
}

fn job_spec(name: &str) -> M {
    let c = container(name, "busybox", &["echo", "hi"]);
    M::default().m(6, template(&[], pod_spec(c, "Never")))
}

#[test]
fn a_job_and_a_cronjob() {
    let status = M::default().v(4, 0).v(5, 0).v(6, 0).s(7, "");
    let job = M::default()
        .m(1, meta("j", &[]))
        .m(2, job_spec("j").v(7, 0)) // backoffLimit: *int32 0
        .m(3, status);
    let pod_template = json!({
        "metadata": {"creationTimestamp": null},
        "spec": {
            "containers": [{"name": "j", "image": "busybox", "command": ["echo", "hi"],
                            "resources": {}}],
            "restartPolicy": "Never",
        },
    });
    assert_eq!(
        decode(&envelope("batch/v1", "Job", job)).unwrap(),
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "j", "creationTimestamp": null},
            "spec": {"template": pod_template, "backoffLimit": 0},
            "status": {},
        })
    );
    let cj_spec = M::default()
        .s(1, "*/5 * * * *")
        .s(3, "")
        .m(5, M::default().m(1, meta("c", &[])).m(2, job_spec("j")));
    let cj = M::default()
        .m(1, meta("c", &[]))
        .m(2, cj_spec)
        .m(3, M::default());
    assert_eq!(
        decode(&envelope("batch/v1", "CronJob", cj)).unwrap()["spec"],
        json!({
            "schedule": "*/5 * * * *",
            "jobTemplate": {
                "metadata": {"name": "c", "creationTimestamp": null},
                "spec": {"template": pod_template},
            },
        })
    );
}

#[test]
fn inlined_structs_join_their_parent() {
    let volume = M::default().s(1, "cfg").m(
        2,
        M::default().m(19, M::default().m(1, M::default().s(1, "app-config"))),
    );
    let probe = M::default()
        .m(
            1,
            M::default().m(2, M::default().s(1, "/").m(2, M::default().v(2, 8080))),
        )
        .v(2, 0)
        .v(3, 0);
    let c = container("app", "nginx", &[]).m(10, probe);
    let pod = M::default()
        .m(1, meta("p", &[]))
        .m(2, pod_spec(c, "Always").m(1, volume));
    let obj = decode(&envelope("v1", "Pod", pod)).unwrap();
    assert_eq!(
        obj["spec"]["volumes"],
        json!([{"name": "cfg", "configMap": {"name": "app-config"}}])
    );
    assert_eq!(
        obj["spec"]["containers"][0]["livenessProbe"],
        json!({"httpGet": {"path": "/", "port": 8080}})
    );
}

#[test]
fn every_served_kind_has_a_schema() {
    let s = &*schema::SCHEMA;
    for def in crate::resources::all() {
        assert!(
            s.kind(&def.api_version(), def.kind).is_some(),
            "{}",
            def.kind
        );
        for sub in def.served_subresources() {
            let av = if sub.group.is_empty() {
                sub.version.to_string()
            } else {
                format!("{}/{}", sub.group, sub.version)
            };
            assert!(s.kind(&av, sub.kind).is_some(), "{av} {}", sub.kind);
        }
    }
    for (name, fields) in s.names.iter().zip(&s.messages) {
        assert!(!fields.is_empty(), "{name} has no fields in schema.tsv");
    }
}

#[test]
fn rejects_what_it_cannot_read() {
    assert_eq!(decode(b"{}").unwrap_err().code(), 400);
    let mut body = envelope("v1", "ConfigMap", M::default().m(1, meta("x", &[])));
    body.truncate(body.len() - 7);
    assert_eq!(decode(&body).unwrap_err().code(), 400);
    let role = envelope("rbac.authorization.k8s.io/v1", "Role", M::default());
    assert_eq!(decode(&role).unwrap_err().code(), 415);
    let wrong = M::default().s(2, "not a message");
    assert_eq!(
        decode(&envelope("apps/v1", "Deployment", wrong))
            .unwrap_err()
            .code(),
        400
    );
    assert!(is_protobuf(
        "application/vnd.kubernetes.protobuf; charset=x"
    ));
    assert!(!is_protobuf("application/json"));
}
