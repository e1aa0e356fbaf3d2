//! Every served kind through the machine's kubectl (1.32), on `keelson store` and on a real
//! etcd 3.4: `api-resources`, `create -f` of one object of every kind, `get` in every output
//! form (`-o wide` with upstream's printer columns and cells, yaml, json, `--show-labels`),
//! label and field selectors (with upstream's errors), `-A`, `-w`, `label`, `annotate`,
//! `patch` (json and merge) and `delete`.
//!
//! Statuses are written the way controllers write them (`patch --subresource=status`), and
//! the expected tables are what upstream's printers make of those objects. Ages, uids,
//! timestamps, allocated cluster IPs and resourceVersions are normalized.
//!
//! Environment: as `apiserver_kubectl.rs` (`KEELSON_KUBECTL_BIN`, `KEELSON_SKIP_KUBECTL=1`).

#[allow(dead_code)]
mod common;

#[path = "apiserver_kinds/expected.rs"]
mod expected;
#[path = "apiserver_kinds/harness.rs"]
mod harness;

use expected::{API_RESOURCES, KINDS, STATUSES, WIDE};
use harness::normalize;

use common::apiserver::{kubectl_bin, Apiserver, Options};
use common::server::{require_etcd_tools, Server, ServerKind};

/// One object of every stored kind (ComponentStatus is computed, never created).
const MANIFEST: &str = include_str!("apiserver_kinds/all-kinds.yaml");

/// Creates everything from one multi-document file and writes the statuses.
fn create_all(a: &Apiserver) {
    let file = a.path("all-kinds.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    let out = a.ok(&["create", "-f", file.to_str().unwrap()]);
    assert_eq!(out.lines().count(), KINDS.len(), "{out}");
    assert!(out.lines().all(|l| l.ends_with(" created")), "{out}");
    for (kind, name, status) in STATUSES {
        let ns = if ["node", "pv"].contains(kind) {
            "default"
        } else {
            "shop"
        };
        a.ok(&[
            "patch",
            kind,
            name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ]);
    }
}

/// `api-resources`, then every kind in every `get` form.
fn get_every_kind(a: &Apiserver) {
    assert_eq!(normalize(&a.ok(&["api-resources"])), API_RESOURCES);
    let cluster_ip = a.ok(&[
        "get",
        "svc",
        "web",
        "-n",
        "shop",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    // Upstream always allocates one, from 10.96.0.0/12.
    assert!(
        cluster_ip
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.octets()[0] == 10 && (96..112).contains(&ip.octets()[1])),
        "service web has no cluster IP from 10.96.0.0/12: {cluster_ip:?}"
    );
    let ip_cell = "<cluster-ip>";
    let job_uid = a.ok(&[
        "get",
        "job",
        "migrate",
        "-n",
        "shop",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    for (what, want) in WIDE {
        let mut args: Vec<&str> = vec!["get"];
        args.extend(what.split(' '));
        args.extend(["-n", "shop", "-o", "wide"]);
        let got = a.ok(&args).replace(&job_uid, "<uid>");
        let got = if cluster_ip.is_empty() {
            got
        } else {
            got.replace(&cluster_ip, "<cluster-ip>")
        };
        let want = want.lines().map(str::trim).collect::<Vec<_>>().join("\n");
        let want = want.replace("<cluster-ip>", ip_cell);
        assert_eq!(normalize(&got), want, "kubectl {args:?}");
        // The default output is the priority-0 columns of the same table.
        let mut narrow = args.clone();
        narrow.truncate(narrow.len() - 2);
        let plain = normalize(&a.ok(&narrow));
        assert_eq!(plain.lines().count(), want.lines().count(), "{plain}");
    }
    for (kind, name, namespaced) in KINDS {
        let ns = if *namespaced { "shop" } else { "default" };
        let yaml = a.ok(&["get", kind, name, "-n", ns, "-o", "yaml"]);
        assert!(
            yaml.contains(&format!("\n  name: {name}\n")),
            "{kind}: {yaml}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&a.ok(&["get", kind, name, "-n", ns, "-o", "json"])).unwrap();
        assert_eq!(json["metadata"]["name"], *name, "{kind}");
        assert!(
            json["kind"].is_string() && json["apiVersion"].is_string(),
            "{kind}"
        );
        // metadata.name on every kind; metadata.namespace on every kind that takes it.
        let sel = format!("metadata.name={name}");
        let listed = a.ok(&["get", kind, "-A", "--field-selector", &sel, "-o", "name"]);
        assert_eq!(listed.lines().count(), 1, "{kind}: {listed}");
        if *namespaced {
            let other = a.ok(&[
                "get",
                kind,
                "-A",
                "--field-selector",
                "metadata.namespace=default",
                "-o",
                "name",
            ]);
            assert!(!other.contains(&format!("/{name}\n")), "{kind}: {other}");
            let mine = a.ok(&[
                "get",
                kind,
                "-A",
                "--field-selector",
                "metadata.namespace=shop",
                "-o",
                "name",
            ]);
            assert!(mine.contains(&format!("/{name}\n")), "{kind}: {mine}");
        }
    }
    // ComponentStatus is computed: the store answers, so etcd-0 is Healthy.
    let cs = normalize(&a.ok(&["get", "cs", "-o", "wide"]));
    assert!(cs.starts_with("NAME STATUS MESSAGE ERROR\n"), "{cs}");
    assert!(cs.lines().any(|l| l.starts_with("etcd-0 Healthy")), "{cs}");
    // -A adds NAMESPACE; --show-labels adds LABELS from the rows' PartialObjectMetadata.
    assert_eq!(
        normalize(&a.ok(&["get", "deploy", "-A", "--show-labels"])),
        "NAMESPACE NAME READY UP-TO-DATE AVAILABLE AGE LABELS\nshop web 2/2 2 2 <age> app=web,tier=front"
    );
    assert_eq!(
        normalize(&a.ok(&["get", "no", "--show-labels"])),
        "NAME STATUS ROLES AGE VERSION LABELS\nn1 Ready worker <age> v1.32.0 kubernetes.io/os=linux,node-role.kubernetes.io/worker="
    );
}

/// Label selectors (equality, sets, `!key`) and the field selectors upstream supports.
fn selectors(a: &Apiserver) {
    let names = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["get", "-n", "shop", "-o", "name"];
        full.extend(args);
        a.ok(&full).lines().map(str::to_string).collect()
    };
    assert_eq!(
        names(&["deploy,sts", "-l", "app=web"]),
        ["deployment.apps/web"]
    );
    assert_eq!(
        names(&["deploy,sts", "-l", "app!=web"]),
        ["statefulset.apps/db"]
    );
    assert_eq!(
        names(&["deploy,sts", "-l", "app in (db,web),tier"]),
        ["deployment.apps/web"]
    );
    assert_eq!(
        names(&["deploy,sts", "-l", "app notin (web)"]),
        ["statefulset.apps/db"]
    );
    assert_eq!(
        names(&["deploy,sts", "-l", "!tier"]),
        ["statefulset.apps/db"]
    );
    for sel in [
        "spec.nodeName=n1",
        "spec.restartPolicy=Always",
        "spec.schedulerName=default-scheduler",
        "spec.serviceAccountName=builder",
        "status.phase=Running",
        "status.podIP=10.1.0.5",
        "status.nominatedNodeName=",
        "status.phase!=Pending,spec.nodeName=n1",
    ] {
        assert_eq!(
            names(&["pods", "--field-selector", sel]),
            ["pod/web-1"],
            "{sel}"
        );
    }
    assert!(names(&["pods", "--field-selector", "spec.nodeName=n2"]).is_empty());
    assert_eq!(
        names(&["no", "--field-selector", "spec.unschedulable=false"]),
        ["node/n1"]
    );
    assert!(names(&["no", "--field-selector", "spec.unschedulable=true"]).is_empty());
    for sel in [
        "involvedObject.kind=Pod,involvedObject.name=web-1,involvedObject.namespace=shop",
        "involvedObject.uid=uid-web-1,involvedObject.apiVersion=v1,involvedObject.fieldPath=",
        "reason=Scheduled,source=default-scheduler,type=Normal",
    ] {
        assert_eq!(
            names(&["ev", "--field-selector", sel]),
            ["event/web-1.17a"],
            "{sel}"
        );
    }
    assert!(names(&["ev", "--field-selector", "type=Warning"]).is_empty());
    assert_eq!(
        names(&["secret", "--field-selector", "type=Opaque"]),
        ["secret/creds"]
    );
    assert!(names(&["secret", "--field-selector", "type=kubernetes.io/tls"]).is_empty());

    let bad = a.kubectl(&[
        "get",
        "cm",
        "-n",
        "shop",
        "--field-selector",
        "status.phase=Running",
    ]);
    assert_eq!(bad.end, common::proc::End::Exited(1));
    assert_eq!(
        bad.stderr_str(),
        "Error from server (BadRequest): Unable to find \"/v1, Resource=configmaps\" that match \
         label selector \"\", field selector \"status.phase=Running\": \"status.phase\" is not a \
         known field selector: only \"metadata.name\", \"metadata.namespace\"\n"
    );
    // Nodes' and Namespaces' conversion funcs leave metadata.namespace out.
    let bad = a.kubectl(&["get", "no", "--field-selector", "metadata.namespace="]);
    assert!(
        bad.stderr_str()
            .ends_with("field label not supported: metadata.namespace\n"),
        "{}",
        bad.stderr_str()
    );
    let bad = a.kubectl(&[
        "get",
        "pods",
        "-n",
        "shop",
        "--field-selector",
        "spec.image=x",
    ]);
    assert!(
        bad.stderr_str()
            .ends_with("field label not supported: spec.image\n"),
        "{}",
        bad.stderr_str()
    );
}

/// label, annotate, patch (json and merge) and delete, each checked through `get`.
fn mutate(a: &Apiserver) {
    assert_eq!(
        a.ok(&["label", "cm", "settings", "-n", "shop", "env=prod"]),
        "configmap/settings labeled\n"
    );
    assert_eq!(
        a.ok(&["annotate", "cm", "settings", "-n", "shop", "owner=team-a"]),
        "configmap/settings annotated\n"
    );
    assert_eq!(
        a.ok(&[
            "patch",
            "cm",
            "settings",
            "-n",
            "shop",
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/data/c","value":"3"},{"op":"remove","path":"/data/a"}]"#
        ]),
        "configmap/settings patched\n"
    );
    assert_eq!(
        a.ok(&[
            "patch",
            "deploy",
            "web",
            "-n",
            "shop",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":3}}"#
        ]),
        "deployment.apps/web patched\n"
    );
    assert_eq!(
        a.ok(&[
            "get",
            "cm",
            "settings",
            "-n",
            "shop",
            "-o",
            "jsonpath={.metadata.labels.env} {.metadata.annotations.owner} {.data}"
        ]),
        r#"prod team-a {"b":"2","c":"3"}"#
    );
    assert_eq!(
        normalize(&a.ok(&["get", "deploy", "web", "-n", "shop"])),
        "NAME READY UP-TO-DATE AVAILABLE AGE\nweb 2/3 2 2 <age>"
    );
    assert_eq!(
        a.ok(&["delete", "lease", "leader", "-n", "shop"]),
        "lease.coordination.k8s.io \"leader\" deleted\n"
    );
    assert_eq!(
        a.ok(&["delete", "sc", "standard"]),
        "storageclass.storage.k8s.io \"standard\" deleted\n"
    );
    let gone = a.kubectl(&["get", "lease", "leader", "-n", "shop"]);
    assert_eq!(
        gone.stderr_str(),
        "Error from server (NotFound): leases.coordination.k8s.io \"leader\" not found\n"
    );
}

/// `kubectl get -w` prints one row per ADDED/MODIFIED/DELETED while another kubectl writes.
fn watch(a: &Apiserver) {
    a.ok(&[
        "create",
        "configmap",
        "w1",
        "-n",
        "shop",
        "--from-literal=k=v",
    ]);
    let mut w = a.watch(&[
        "get",
        "cm",
        "-n",
        "shop",
        "-l",
        "!env",
        "-w",
        "--output-watch-events",
    ]);
    // The list comes first: the header and the existing object.
    assert_eq!(normalize(&w.line()), "EVENT NAME DATA AGE");
    assert_eq!(normalize(&w.line()), "ADDED w1 1 <age>");
    a.ok(&["create", "configmap", "w2", "-n", "shop"]);
    assert_eq!(normalize(&w.line()), "ADDED w2 0 <age>");
    a.ok(&[
        "patch",
        "cm",
        "w1",
        "-n",
        "shop",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"k2":"v"}}"#,
    ]);
    assert_eq!(normalize(&w.line()), "MODIFIED w1 2 <age>");
    a.ok(&["delete", "cm", "w2", "-n", "shop"]);
    assert_eq!(normalize(&w.line()), "DELETED w2 0 <age>");
    // Labelled out of the selector: upstream reports it DELETED.
    a.ok(&["label", "cm", "w1", "-n", "shop", "env=x"]);
    assert_eq!(normalize(&w.line()), "DELETED w1 2 <age>");
}

fn scenario(a: &Apiserver) {
    create_all(a);
    get_every_kind(a);
    selectors(a);
    // After `mutate`, settings carries env=prod: the watch below sees only its own objects.
    mutate(a);
    watch(a);
}

#[test]
fn every_kind_on_keelson_store() {
    let Some(kubectl) = kubectl_bin("every_kind_on_keelson_store") else {
        return;
    };
    if !require_etcd_tools("every_kind_on_keelson_store") {
        return;
    }
    let store = Server::start(ServerKind::Keelson, &[]).expect("keelson store");
    scenario(&Options::new("keelson-kinds-").start(&kubectl, &store.client_url()));
}

#[test]
fn every_kind_on_real_etcd() {
    let Some(kubectl) = kubectl_bin("every_kind_on_real_etcd") else {
        return;
    };
    if !require_etcd_tools("every_kind_on_real_etcd") {
        return;
    }
    let etcd = Server::start(ServerKind::Etcd, &[]).expect("etcd");
    scenario(&Options::new("keelson-kinds-").start(&kubectl, &etcd.client_url()));
}
