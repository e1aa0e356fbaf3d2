//! What `apiserver_kinds.rs` writes and expects: the controllers' statuses, and upstream's
//! `kubectl get -o wide` and `api-resources` output for the objects of `all-kinds.yaml`.

/// Statuses as the controllers (kubelet, deployment controller, …) would write them.
pub const STATUSES: &[(&str, &str, &str)] = &[
    (
        "node",
        "n1",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"ok"}],"addresses":[{"type":"InternalIP","address":"192.168.1.10"}],"nodeInfo":{"kubeletVersion":"v1.32.0","osImage":"Debian GNU/Linux 12","kernelVersion":"6.1.0","containerRuntimeVersion":"containerd://1.7.0","machineID":"m","systemUUID":"s","bootID":"b","kubeProxyVersion":"","operatingSystem":"linux","architecture":"amd64"}}}"#,
    ),
    ("pv", "pv1", r#"{"status":{"phase":"Bound"}}"#),
    (
        "pvc",
        "data",
        r#"{"status":{"phase":"Bound","accessModes":["ReadWriteOnce"],"capacity":{"storage":"1Gi"}}}"#,
    ),
    (
        "pod",
        "web-1",
        r#"{"status":{"phase":"Running","podIP":"10.1.0.5","podIPs":[{"ip":"10.1.0.5"}],"conditions":[{"type":"Ready","status":"True"}],"containerStatuses":[{"name":"app","image":"nginx:1.27","imageID":"","ready":true,"restartCount":0,"started":true,"state":{"running":{"startedAt":"2024-01-01T00:00:00Z"}}},{"name":"sidecar","image":"envoy:1.31","imageID":"","ready":false,"restartCount":0,"started":false,"state":{"waiting":{"reason":"ContainerCreating"}}}]}}"#,
    ),
    (
        "rc",
        "legacy",
        r#"{"status":{"replicas":1,"readyReplicas":1}}"#,
    ),
    (
        "quota",
        "quota",
        r#"{"status":{"hard":{"pods":"10","requests.cpu":"1","limits.memory":"1Gi"},"used":{"pods":"1","requests.cpu":"100m","limits.memory":"128Mi"}}}"#,
    ),
    (
        "deploy",
        "web",
        r#"{"status":{"replicas":2,"updatedReplicas":2,"readyReplicas":2,"availableReplicas":2,"observedGeneration":1}}"#,
    ),
    (
        "rs",
        "web-5d4f8",
        r#"{"status":{"replicas":2,"readyReplicas":2,"availableReplicas":2}}"#,
    ),
    (
        "sts",
        "db",
        r#"{"status":{"replicas":1,"readyReplicas":1,"currentReplicas":1,"updatedReplicas":1,"availableReplicas":1}}"#,
    ),
    (
        "ds",
        "agent",
        r#"{"status":{"desiredNumberScheduled":1,"currentNumberScheduled":1,"numberReady":1,"updatedNumberScheduled":1,"numberAvailable":1,"numberMisscheduled":0}}"#,
    ),
    (
        "job",
        "migrate",
        r#"{"status":{"startTime":"2024-01-01T00:00:00Z","completionTime":"2024-01-01T00:00:30Z","succeeded":1,"conditions":[{"type":"SuccessCriteriaMet","status":"True","lastProbeTime":"2024-01-01T00:00:30Z","lastTransitionTime":"2024-01-01T00:00:30Z"},{"type":"Complete","status":"True","lastProbeTime":"2024-01-01T00:00:30Z","lastTransitionTime":"2024-01-01T00:00:30Z"}]}}"#,
    ),
    (
        "ing",
        "web",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.7"}]}}}"#,
    ),
    (
        "pdb",
        "web-pdb",
        r#"{"status":{"disruptionsAllowed":1,"currentHealthy":2,"desiredHealthy":1,"expectedPods":2,"observedGeneration":1}}"#,
    ),
];

/// `kubectl get <kind> -o wide` for every kind, as upstream prints these objects.
pub const WIDE: &[(&str, &str)] = &[
    ("ns shop", "NAME STATUS AGE\nshop Active <age>"),
    ("no", "NAME STATUS ROLES AGE VERSION INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME\n\
      n1 Ready worker <age> v1.32.0 192.168.1.10 <none> Debian GNU/Linux 12 6.1.0 containerd://1.7.0"),
    ("pv", "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE VOLUMEMODE\n\
      pv1 1Gi RWO Retain Bound shop/data standard <unset> <age> Filesystem"),
    ("ingressclass", "NAME CONTROLLER PARAMETERS AGE\nnginx k8s.io/ingress-nginx <none> <age>"),
    ("sc", "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE\n\
      standard (default) kubernetes.io/no-provisioner Delete WaitForFirstConsumer false <age>"),
    ("cm settings", "NAME DATA AGE\nsettings 2 <age>"),
    ("secret creds", "NAME TYPE DATA AGE\ncreds Opaque 1 <age>"),
    ("sa builder", "NAME SECRETS AGE\nbuilder 0 <age>"),
    ("svc", "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE SELECTOR\n\
      web ClusterIP <cluster-ip> <none> 80/TCP <age> app=web"),
    ("ep", "NAME ENDPOINTS AGE\nweb 10.1.0.5:8080,10.1.0.6:8080 <age>"),
    ("ev", "LAST SEEN TYPE REASON OBJECT SUBOBJECT SOURCE MESSAGE FIRST SEEN COUNT NAME\n\
      <age> Normal Scheduled pod/web-1 default-scheduler Successfully assigned shop/web-1 to n1 <age> 1 web-1.17a"),
    ("limits", "NAME CREATED AT\nlimits <timestamp>"),
    ("pvc", "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE VOLUMEMODE\n\
      data Bound pv1 1Gi RWO standard <unset> <age> Filesystem"),
    ("po", "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES\n\
      web-1 1/2 ContainerCreating 0 <age> 10.1.0.5 n1 <none> <none>"),
    ("rc", "NAME DESIRED CURRENT READY AGE CONTAINERS IMAGES SELECTOR\n\
      legacy 1 1 1 <age> app nginx:1.27 app=legacy"),
    ("quota", "NAME REQUEST LIMIT AGE\nquota pods: 1/10, requests.cpu: 100m/1 limits.memory: 128Mi/1Gi <age>"),
    ("controllerrevision", "NAME CONTROLLER REVISION AGE\ndb-7c9d statefulset.apps/db 1 <age>"),
    ("ds", "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE CONTAINERS IMAGES SELECTOR\n\
      agent 1 1 1 1 1 kubernetes.io/os=linux <age> agent busybox:1.36 app=agent"),
    ("deploy", "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR\n\
      web 2/2 2 2 <age> app,sidecar nginx:1.27,envoy:1.31 app=web"),
    ("rs", "NAME DESIRED CURRENT READY AGE CONTAINERS IMAGES SELECTOR\n\
      web-5d4f8 2 2 2 <age> app nginx:1.27 app=web,pod-template-hash=5d4f8"),
    ("sts", "NAME READY AGE CONTAINERS IMAGES\ndb 1/1 <age> db postgres:16"),
    ("cj", "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE CONTAINERS IMAGES SELECTOR\n\
      nightly 0 3 * * * Etc/UTC False 0 <none> <age> backup busybox:1.36 <none>"),
    ("job", "NAME STATUS COMPLETIONS DURATION AGE CONTAINERS IMAGES SELECTOR\n\
      migrate Complete 1/1 <age> <age> migrate busybox:1.36 batch.kubernetes.io/controller-uid=<uid>"),
    ("ing", "NAME CLASS HOSTS ADDRESS PORTS AGE\nweb nginx shop.example.com 203.0.113.7 80, 443 <age>"),
    ("netpol", "NAME POD-SELECTOR AGE\ndeny-web app=web <age>"),
    ("endpointslices", "NAME ADDRESSTYPE PORTS ENDPOINTS AGE\nweb-abcde IPv4 8080 10.1.0.5,10.1.0.6 <age>"),
    ("lease", "NAME HOLDER AGE\nleader web-1 <age>"),
    ("pdb", "NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE\nweb-pdb 1 N/A 1 <age>"),
];

/// What a real 1.32 cluster's `kubectl api-resources` lists, restricted to the served kinds.
pub const API_RESOURCES: &str = "NAME SHORTNAMES APIVERSION NAMESPACED KIND
componentstatuses cs v1 false ComponentStatus
configmaps cm v1 true ConfigMap
endpoints ep v1 true Endpoints
events ev v1 true Event
limitranges limits v1 true LimitRange
namespaces ns v1 false Namespace
nodes no v1 false Node
persistentvolumeclaims pvc v1 true PersistentVolumeClaim
persistentvolumes pv v1 false PersistentVolume
pods po v1 true Pod
replicationcontrollers rc v1 true ReplicationController
resourcequotas quota v1 true ResourceQuota
secrets v1 true Secret
serviceaccounts sa v1 true ServiceAccount
services svc v1 true Service
controllerrevisions apps/v1 true ControllerRevision
daemonsets ds apps/v1 true DaemonSet
deployments deploy apps/v1 true Deployment
replicasets rs apps/v1 true ReplicaSet
statefulsets sts apps/v1 true StatefulSet
selfsubjectreviews authentication.k8s.io/v1 false SelfSubjectReview
cronjobs cj batch/v1 true CronJob
jobs batch/v1 true Job
leases coordination.k8s.io/v1 true Lease
endpointslices discovery.k8s.io/v1 true EndpointSlice
ingressclasses networking.k8s.io/v1 false IngressClass
ingresses ing networking.k8s.io/v1 true Ingress
networkpolicies netpol networking.k8s.io/v1 true NetworkPolicy
poddisruptionbudgets pdb policy/v1 true PodDisruptionBudget
storageclasses sc storage.k8s.io/v1 false StorageClass";

/// Every kind by the name `kubectl get` takes, with the one object's name (and whether it
/// lives in the `shop` namespace).
pub const KINDS: &[(&str, &str, bool)] = &[
    ("namespaces", "shop", false),
    ("nodes", "n1", false),
    ("persistentvolumes", "pv1", false),
    ("ingressclasses", "nginx", false),
    ("storageclasses", "standard", false),
    ("configmaps", "settings", true),
    ("secrets", "creds", true),
    ("serviceaccounts", "builder", true),
    ("services", "web", true),
    ("endpoints", "web", true),
    ("events", "web-1.17a", true),
    ("limitranges", "limits", true),
    ("persistentvolumeclaims", "data", true),
    ("pods", "web-1", true),
    ("replicationcontrollers", "legacy", true),
    ("resourcequotas", "quota", true),
    ("controllerrevisions", "db-7c9d", true),
    ("daemonsets", "agent", true),
    ("deployments", "web", true),
    ("replicasets", "web-5d4f8", true),
    ("statefulsets", "db", true),
    ("cronjobs", "nightly", true),
    ("jobs", "migrate", true),
    ("ingresses", "web", true),
    ("networkpolicies", "deny-web", true),
    ("endpointslices", "web-abcde", true),
    ("leases", "leader", true),
    ("poddisruptionbudgets", "web-pdb", true),
];
