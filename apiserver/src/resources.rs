//! The resource registry: every kind the server serves, described once as data.
//!
//! Discovery, routing, storage keys, error messages and table printing all read this table,
//! so a resource exists everywhere or nowhere. Invariants:
//! - `(group, resource)` is unique, and so is `(group, kind)`.
//! - Only subresources that are actually implemented are listed (discovery promises them).
//! - `verbs` is what discovery advertises; the handlers refuse anything else with 405.

use crate::error::GroupResource;

/// The verbs of an ordinary read-write resource.
const RW: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Namespaces: no deletecollection upstream.
const NS_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
/// ComponentStatus: computed on request (`componentstatus`), so only read.
const CS_VERBS: &[&str] = &["get", "list"];
/// SelfSubjectReview: answered from the request (`auth`), never stored.
const CREATE_ONLY: &[&str] = &["create"];
/// Verbs of a `status` subresource.
pub(crate) const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// One served resource type.
#[derive(Debug)]
pub(crate) struct ResourceDef {
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    /// Plural, lower case: the URL segment and storage key component.
    pub(crate) resource: &'static str,
    pub(crate) singular: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) namespaced: bool,
    pub(crate) short_names: &'static [&'static str],
    pub(crate) categories: &'static [&'static str],
    pub(crate) verbs: &'static [&'static str],
    /// Has a `status` subresource: the main endpoint ignores status changes, `/status`
    /// changes nothing else.
    pub(crate) has_status: bool,
    /// `metadata.generation` is kept and bumped when the spec changes.
    pub(crate) tracks_generation: bool,
    /// Has a `scale` subresource (an autoscaling/v1 `Scale` over `spec.replicas`).
    pub(crate) has_scale: bool,
}

/// A subresource as discovery describes it (`crate::subresource` serves the non-status ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subresource {
    pub(crate) name: &'static str,
    /// The group/version/kind its requests and replies carry.
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) verbs: &'static [&'static str],
}

impl ResourceDef {
    /// `v1` or `apps/v1`.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub(crate) fn group_resource(&self) -> GroupResource {
        GroupResource::new(self.group, self.resource)
    }

    /// The subresources the OpenAPI documents describe (status: same kind as the resource).
    pub(crate) fn subresources(&self) -> Vec<&'static str> {
        let mut subs = Vec::new();
        if self.has_status {
            subs.push("status");
        }
        subs
    }

    /// Every served subresource: routing and discovery read this.
    pub(crate) fn served_subresources(&self) -> Vec<Subresource> {
        let mut subs = Vec::new();
        if self.group.is_empty() && self.resource == "pods" {
            subs.push(Subresource {
                name: "binding",
                group: "",
                version: "v1",
                kind: "Binding",
                verbs: &["create"],
            });
        }
        if self.group.is_empty() && self.resource == "namespaces" {
            subs.push(Subresource {
                name: "finalize",
                group: "",
                version: "v1",
                kind: "Namespace",
                verbs: &["update"],
            });
        }
        if self.has_scale {
            subs.push(Subresource {
                name: "scale",
                group: "autoscaling",
                version: "v1",
                kind: "Scale",
                verbs: STATUS_VERBS,
            });
        }
        if self.has_status {
            subs.push(Subresource {
                name: "status",
                group: self.group,
                version: self.version,
                kind: self.kind,
                verbs: STATUS_VERBS,
            });
        }
        subs
    }
}

/// Builds a table row; `flags` is a set of single letters: `n` namespaced, `s` has status,
/// `g` tracks generation, `c` has scale.
const fn def(
    group: &'static str,
    resource: &'static str,
    singular: &'static str,
    kind: &'static str,
    flags: &'static str,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
) -> ResourceDef {
    let f = flags.as_bytes();
    let mut namespaced = false;
    let mut has_status = false;
    let mut tracks_generation = false;
    let mut has_scale = false;
    let mut i = 0;
    while i < f.len() {
        match f[i] {
            b'n' => namespaced = true,
            b's' => has_status = true,
            b'g' => tracks_generation = true,
            b'c' => has_scale = true,
            _ => {}
        }
        i += 1;
    }
    ResourceDef {
        group,
        version: "v1",
        resource,
        singular,
        kind,
        namespaced,
        short_names,
        categories,
        verbs: RW,
        has_status,
        tracks_generation,
        has_scale,
    }
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

static RESOURCES: &[ResourceDef] = &[
    // core/v1
    ResourceDef {
        verbs: CS_VERBS,
        ..def(
            "",
            "componentstatuses",
            "componentstatus",
            "ComponentStatus",
            "",
            &["cs"],
            NONE,
        )
    },
    def(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        "n",
        &["cm"],
        NONE,
    ),
    def(
        "",
        "endpoints",
        "endpoints",
        "Endpoints",
        "n",
        &["ep"],
        NONE,
    ),
    def("", "events", "event", "Event", "n", &["ev"], NONE),
    def(
        "",
        "limitranges",
        "limitrange",
        "LimitRange",
        "n",
        &["limits"],
        NONE,
    ),
    ResourceDef {
        verbs: NS_VERBS,
        ..def(
            "",
            "namespaces",
            "namespace",
            "Namespace",
            "s",
            &["ns"],
            NONE,
        )
    },
    def("", "nodes", "node", "Node", "s", &["no"], NONE),
    def(
        "",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        "ns",
        &["pvc"],
        NONE,
    ),
    def(
        "",
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        "s",
        &["pv"],
        NONE,
    ),
    def("", "pods", "pod", "Pod", "ns", &["po"], ALL),
    def(
        "",
        "replicationcontrollers",
        "replicationcontroller",
        "ReplicationController",
        "nsgc",
        &["rc"],
        ALL,
    ),
    def(
        "",
        "resourcequotas",
        "resourcequota",
        "ResourceQuota",
        "ns",
        &["quota"],
        NONE,
    ),
    def("", "secrets", "secret", "Secret", "n", NONE, NONE),
    def(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        "n",
        &["sa"],
        NONE,
    ),
    def("", "services", "service", "Service", "ns", &["svc"], ALL),
    // apps/v1
    def(
        "apps",
        "controllerrevisions",
        "controllerrevision",
        "ControllerRevision",
        "n",
        NONE,
        NONE,
    ),
    def(
        "apps",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        "nsg",
        &["ds"],
        ALL,
    ),
    def(
        "apps",
        "deployments",
        "deployment",
        "Deployment",
        "nsgc",
        &["deploy"],
        ALL,
    ),
    def(
        "apps",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        "nsgc",
        &["rs"],
        ALL,
    ),
    def(
        "apps",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        "nsgc",
        &["sts"],
        ALL,
    ),
    // authentication.k8s.io/v1
    ResourceDef {
        verbs: CREATE_ONLY,
        ..def(
            "authentication.k8s.io",
            "selfsubjectreviews",
            "selfsubjectreview",
            "SelfSubjectReview",
            "",
            NONE,
            NONE,
        )
    },
    // batch/v1
    def(
        "batch",
        "cronjobs",
        "cronjob",
        "CronJob",
        "nsg",
        &["cj"],
        ALL,
    ),
    def("batch", "jobs", "job", "Job", "nsg", NONE, ALL),
    // networking.k8s.io/v1
    def(
        "networking.k8s.io",
        "ingresses",
        "ingress",
        "Ingress",
        "nsg",
        &["ing"],
        NONE,
    ),
    def(
        "networking.k8s.io",
        "ingressclasses",
        "ingressclass",
        "IngressClass",
        "",
        NONE,
        NONE,
    ),
    def(
        "networking.k8s.io",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        "ng",
        &["netpol"],
        NONE,
    ),
    // discovery.k8s.io/v1
    def(
        "discovery.k8s.io",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        "n",
        NONE,
        NONE,
    ),
    // coordination.k8s.io/v1
    def(
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        "n",
        NONE,
        NONE,
    ),
    // storage.k8s.io/v1
    def(
        "storage.k8s.io",
        "storageclasses",
        "storageclass",
        "StorageClass",
        "",
        &["sc"],
        NONE,
    ),
    // policy/v1
    def(
        "policy",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        "nsg",
        &["pdb"],
        NONE,
    ),
];

/// Every served resource, core first, then groups in the order of [`groups`].
pub(crate) fn all() -> &'static [ResourceDef] {
    RESOURCES
}

/// The named API groups, in discovery order (all served at version v1).
pub(crate) fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// Whether `group/version` is served (`""`/`v1` is the core group).
pub(crate) fn serves(group: &str, version: &str) -> bool {
    version == "v1" && (group.is_empty() || groups().contains(&group))
}

/// The resource `resource` of `group/version`.
pub(crate) fn find(group: &str, version: &str, resource: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.resource == resource)
}

/// The resources of one group/version.
pub(crate) fn of_group(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceDef> {
    let group = group.to_string();
    let version = version.to_string();
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_and_kinds_are_unique() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(!(a.group == b.group && a.resource == b.resource), "{a:?}");
                assert!(!(a.group == b.group && a.kind == b.kind), "{a:?}");
            }
        }
    }

    #[test]
    fn flags_are_decoded() {
        let pods = find("", "v1", "pods").unwrap();
        assert!(pods.namespaced && pods.has_status && !pods.tracks_generation);
        let ns = find("", "v1", "namespaces").unwrap();
        assert!(!ns.namespaced && !ns.verbs.contains(&"deletecollection"));
        let d = find("apps", "v1", "deployments").unwrap();
        assert!(d.tracks_generation && d.api_version() == "apps/v1");
        assert!(serves("apps", "v1") && serves("", "v1") && !serves("apps", "v2"));
    }
}
