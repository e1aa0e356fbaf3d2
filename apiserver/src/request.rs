//! Reading a request: the route from the path, the query parameters, and what the client
//! accepts back.
//!
//! Paths follow kube-apiserver's grammar (`RequestInfoFactory`):
//! `/api/v1/[namespaces/<ns>/]<resource>[/<name>[/<subresource>]]` and the same under
//! `/apis/<group>/<version>/`. `namespaces/<ns>/<x>` is a resource `x` inside namespace `ns`
//! unless `x` is one of the namespace's own subresources (`status`, `finalize`). A namespaced
//! resource without a namespace segment is the all-namespaces collection.

use crate::error::{Error, Result};
use crate::resources::{self, ResourceDef};

/// Where a request goes.
#[derive(Debug)]
pub(crate) enum Route {
    Version,
    /// `/healthz`, `/livez` or `/readyz` (optionally with one check name after it).
    Health(&'static str),
    /// `/api`: the core group's versions.
    CoreVersions,
    /// `/apis`: the named groups.
    Groups,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`: the resource list.
    Resources {
        group: String,
        version: String,
    },
    Resource(ResourceRequest),
    /// `/openapi/v3`.
    OpenApiIndex,
    /// `/openapi/v3/<api/v1 | apis/group/version>`.
    OpenApiDocument(String),
    /// `/openapi/v2`.
    OpenApiV2,
}

/// A request addressed to a resource type, a collection or one object.
#[derive(Debug)]
pub(crate) struct ResourceRequest {
    pub(crate) def: &'static ResourceDef,
    /// The namespace from the path (None: cluster-scoped, or all namespaces).
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
}

/// Maps a path to its route; unknown paths are [`Error::RouteNotFound`].
pub(crate) fn route(path: &str) -> Result<Route> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["healthz", ..] => return Ok(Route::Health("healthz")),
        ["livez", ..] => return Ok(Route::Health("livez")),
        ["readyz", ..] => return Ok(Route::Health("readyz")),
        ["api"] => return Ok(Route::CoreVersions),
        ["openapi", "v2"] => return Ok(Route::OpenApiV2),
        ["openapi", "v3"] => return Ok(Route::OpenApiIndex),
        ["openapi", "v3", rest @ ..] => return Ok(Route::OpenApiDocument(rest.join("/"))),
        ["apis"] => return Ok(Route::Groups),
        ["apis", g] if resources::groups().contains(g) => return Ok(Route::Group(g.to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(Error::RouteNotFound),
    };
    if !resources::serves(group, version) {
        return Err(Error::RouteNotFound);
    }
    if rest.is_empty() {
        return Ok(Route::Resources {
            group: group.to_string(),
            version: version.to_string(),
        });
    }
    // Strip `namespaces/<ns>/` when what follows is a namespaced resource.
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, more @ ..] if *r != "status" && *r != "finalize" => (
            Some(ns.to_string()),
            std::iter::once(*r).chain(more.iter().copied()).collect(),
        ),
        other => (None, other.to_vec()),
    };
    let def = resources::find(group, version, rest[0]).ok_or(Error::RouteNotFound)?;
    if namespace.is_some() && !def.namespaced {
        return Err(Error::RouteNotFound);
    }
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 || (def.namespaced && namespace.is_none() && name.is_some()) {
        return Err(Error::RouteNotFound);
    }
    if let Some(sub) = &subresource {
        if !def.served_subresources().iter().any(|s| s.name == sub) {
            return Err(Error::RouteNotFound);
        }
    }
    Ok(Route::Resource(ResourceRequest {
        def,
        namespace,
        name,
        subresource,
    }))
}

/// Decoded query parameters, in order.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Query {
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            percent_encoding::percent_decode_str(&s)
                .decode_utf8_lossy()
                .into_owned()
        };
        Query(
            q.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (decode(k), decode(v)),
                    None => (decode(p), String::new()),
                })
                .collect(),
        )
    }

    /// The first value of `key`; an empty value counts as absent, as in Go's `url.Values`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Whether `key` is present at all (`?verbose`).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// A boolean parameter (`true`/`1`); anything else that is not absent is a 400.
    pub(crate) fn flag(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(v) => Err(Error::BadRequest(format!(
                "invalid value {v:?} for parameter {key}"
            ))),
        }
    }

    /// A non-negative integer parameter.
    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| Error::BadRequest(format!("invalid value {v:?} for parameter {key}"))),
        }
    }
}

/// The representation a client asked for in `Accept`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wants {
    Json,
    /// `application/json;as=Table;g=meta.k8s.io;v=v1` (or v1beta1: the version given).
    Table(&'static str),
    /// `application/json;as=APIGroupDiscoveryList;g=apidiscovery.k8s.io;v=v2`.
    AggregatedDiscovery,
}

/// The first entry of `Accept` that the server can produce, in the client's order (as
/// kube-apiserver negotiates); plain JSON when nothing more specific matches.
pub(crate) fn negotiate(accept: Option<&str>) -> Wants {
    for entry in accept.unwrap_or("").split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if media != "application/json" && media != "*/*" {
            continue;
        }
        let (mut r#as, mut g, mut v) = ("", "", "");
        for p in parts {
            match p.split_once('=') {
                Some(("as", x)) => r#as = x,
                Some(("g", x)) => g = x,
                Some(("v", x)) => v = x,
                _ => {}
            }
        }
        match (r#as, g, v) {
            ("", _, _) => return Wants::Json,
            ("Table", "meta.k8s.io", "v1") => return Wants::Table("meta.k8s.io/v1"),
            ("Table", "meta.k8s.io", "v1beta1") => return Wants::Table("meta.k8s.io/v1beta1"),
            ("APIGroupDiscoveryList", "apidiscovery.k8s.io", "v2") => {
                return Wants::AggregatedDiscovery
            }
            _ => continue,
        }
    }
    Wants::Json
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourceRequest {
        match route(path).unwrap() {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn resource_paths() {
        let r = res("/api/v1/namespaces/default/configmaps/x");
        assert_eq!(
            (r.def.resource, r.namespace.as_deref(), r.name.as_deref()),
            ("configmaps", Some("default"), Some("x"))
        );
        let r = res("/api/v1/pods");
        assert_eq!((r.namespace, r.name), (None, None));
        let r = res("/api/v1/namespaces/kube-system");
        assert_eq!(
            (r.def.resource, r.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let r = res("/api/v1/namespaces/a/status");
        assert_eq!(
            (r.name.as_deref(), r.subresource.as_deref()),
            (Some("a"), Some("status"))
        );
        let r = res("/apis/apps/v1/namespaces/n/deployments/d/status");
        assert_eq!(
            (r.def.kind, r.subresource.as_deref()),
            ("Deployment", Some("status"))
        );
        let r = res("/api/v1/nodes/n1");
        assert_eq!((r.def.kind, r.name.as_deref()), ("Node", Some("n1")));
    }

    #[test]
    fn other_paths() {
        assert!(matches!(route("/version").unwrap(), Route::Version));
        assert!(matches!(route("/api").unwrap(), Route::CoreVersions));
        assert!(matches!(route("/apis/").unwrap(), Route::Groups));
        assert!(matches!(route("/apis/apps").unwrap(), Route::Group(g) if g == "apps"));
        assert!(matches!(route("/api/v1").unwrap(), Route::Resources { .. }));
        assert!(matches!(
            route("/readyz/etcd").unwrap(),
            Route::Health("readyz")
        ));
        for bad in [
            "/nope",
            "/api/v2",
            "/apis/apps/v2/deployments",
            "/api/v1/widgets",
            "/api/v1/namespaces/a/nodes",
            "/api/v1/pods/p",
            "/api/v1/namespaces/a/configmaps/x/status",
            "/api/v1/namespaces/a/pods/p/status/extra",
        ] {
            assert!(matches!(route(bad), Err(Error::RouteNotFound)), "{bad}");
        }
    }

    #[test]
    fn queries_decode() {
        let q = Query::parse(Some(
            "fieldSelector=metadata.name%3Dx&limit=500&watch=1&empty=",
        ));
        assert_eq!(q.get("fieldSelector"), Some("metadata.name=x"));
        assert_eq!(q.int("limit").unwrap(), Some(500));
        assert!(q.flag("watch").unwrap());
        assert_eq!(q.get("empty"), None);
        assert!(q.has("empty") && !q.has("verbose"));
        assert!(Query::parse(Some("watch=maybe")).flag("watch").is_err());
    }

    #[test]
    fn accept_negotiation_follows_client_order() {
        let kubectl_get = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(kubectl_get)), Wants::Table("meta.k8s.io/v1"));
        let discovery = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate(Some(discovery)), Wants::AggregatedDiscovery);
        let only_beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate(Some(only_beta)), Wants::Json);
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf,application/json")),
            Wants::Json
        );
        assert_eq!(negotiate(None), Wants::Json);
    }
}
