//! The crate's one error type, and its one conversion into a Kubernetes `Status`.
//!
//! Every failure a client can see is a variant of [`Error`]; handlers return `Result<_, Error>`
//! and [`Error::status`] renders the `Status` object kube-apiserver would send for the same
//! failure: the same `reason`, `code`, `message` and `details` (apimachinery `api/errors`).
//! Clients branch on `reason` and `code` (client-go's `IsNotFound`, `IsConflict`, kubectl's
//! `Error from server (NotFound): …` line prints `reason` and `message`), so these strings are
//! part of the API: change them only to match upstream more closely.

use serde_json::{json, Value};

/// A resource as named in messages: `configmaps`, or `deployments.apps` for a named group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupResource {
    pub(crate) group: String,
    pub(crate) resource: String,
}

impl GroupResource {
    pub(crate) fn new(group: &str, resource: &str) -> GroupResource {
        GroupResource {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// One field error of a 422 Invalid (a `StatusCause`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, …
    pub(crate) reason: &'static str,
    /// The field path, e.g. `metadata.name`.
    pub(crate) field: String,
    /// The detail after the field, e.g. `Invalid value: "X": a lowercase RFC 1123 …`.
    pub(crate) message: String,
}

impl Cause {
    pub(crate) fn required(field: &str, detail: &str) -> Cause {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Cause {
            reason: "FieldValueRequired",
            field: field.to_string(),
            message,
        }
    }

    pub(crate) fn forbidden(field: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden",
            field: field.to_string(),
            message: format!("Forbidden: {detail}"),
        }
    }

    pub(crate) fn invalid(field: &str, value: &Value, detail: &str) -> Cause {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        Cause {
            reason: "FieldValueInvalid",
            field: field.to_string(),
            message: format!("Invalid value: {shown}: {detail}"),
        }
    }
}

/// Everything that can go wrong in the apiserver, each variant carrying what its `Status`
/// needs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{resource} {name:?} not found")]
    NotFound {
        resource: GroupResource,
        name: String,
    },
    #[error("{resource} {name:?} already exists")]
    AlreadyExists {
        resource: GroupResource,
        name: String,
    },
    /// An optimistic-concurrency failure; `detail` follows `Operation cannot be fulfilled on …:`.
    #[error("Operation cannot be fulfilled on {resource} {name:?}: {detail}")]
    Conflict {
        resource: GroupResource,
        name: String,
        detail: String,
    },
    #[error("{kind} {name:?} is invalid")]
    Invalid {
        group: String,
        kind: String,
        name: String,
        causes: Vec<Cause>,
    },
    #[error("{resource} {name:?} is forbidden: {detail}")]
    Forbidden {
        resource: GroupResource,
        name: String,
        detail: String,
    },
    #[error("{0}")]
    BadRequest(String),
    /// The path exists but not with this HTTP method (or verb on the resource).
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// No such path or resource.
    #[error("the server could not find the requested resource")]
    RouteNotFound,
    /// A compacted revision (410 Expired); `continue_token` is the inconsistent-continue token
    /// a compacted paged list hands back.
    #[error("{message}")]
    Expired {
        message: String,
        continue_token: Option<String>,
    },
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: i64, current: i64 },
    #[error(
        "the body of the request was in an unknown format - accepted media types include: {0}"
    )]
    UnsupportedMediaType(String),
    /// The storage (etcd API) failed or could not be reached.
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Internal(String),
    /// A failure upstream reports as a bare `Status` (a plain error wrapped by the handler):
    /// the code and message as they are, a reason only if non-empty, details only with one.
    #[error("{message}")]
    Generic {
        code: u16,
        reason: &'static str,
        message: String,
        empty_details: bool,
    },
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Error {
        Error::Storage(s.message().to_string())
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Error {
        Error::Storage(e.to_string())
    }
}

impl Error {
    pub(crate) fn not_found(resource: &GroupResource, name: &str) -> Error {
        Error::NotFound {
            resource: resource.clone(),
            name: name.to_string(),
        }
    }

    /// The optimistic-lock conflict upstream's generic registry reports for a stale
    /// resourceVersion (`OptimisticLockErrorMsg`).
    pub(crate) fn stale(resource: &GroupResource, name: &str) -> Error {
        Error::Conflict {
            resource: resource.clone(),
            name: name.to_string(),
            detail: "the object has been modified; please apply your changes to the latest \
                     version and try again"
                .to_string(),
        }
    }

    /// The HTTP status code of this error.
    pub(crate) fn code(&self) -> u16 {
        match self {
            Error::NotFound { .. } | Error::RouteNotFound => 404,
            Error::AlreadyExists { .. } | Error::Conflict { .. } => 409,
            Error::Invalid { .. } => 422,
            Error::Forbidden { .. } => 403,
            Error::BadRequest(_) => 400,
            Error::MethodNotAllowed => 405,
            Error::Expired { .. } => 410,
            Error::TooLargeResourceVersion { .. } => 504,
            Error::UnsupportedMediaType(_) => 415,
            Error::Storage(_) | Error::Internal(_) => 500,
            Error::Generic { code, .. } => *code,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Error::NotFound { .. } | Error::RouteNotFound => "NotFound",
            Error::AlreadyExists { .. } => "AlreadyExists",
            Error::Conflict { .. } => "Conflict",
            Error::Invalid { .. } => "Invalid",
            Error::Forbidden { .. } => "Forbidden",
            Error::BadRequest(_) => "BadRequest",
            Error::MethodNotAllowed => "MethodNotAllowed",
            Error::Expired { .. } => "Expired",
            Error::TooLargeResourceVersion { .. } => "Timeout",
            Error::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Error::Storage(_) | Error::Internal(_) => "InternalError",
            Error::Generic { reason, .. } => reason,
        }
    }

    fn message(&self) -> String {
        match self {
            Error::Invalid {
                group,
                kind,
                name,
                causes,
            } => {
                let mut errs: Vec<String> = causes
                    .iter()
                    .map(|c| format!("{}: {}", c.field, c.message))
                    .collect();
                let list = if errs.len() == 1 {
                    errs.remove(0)
                } else {
                    format!("[{}]", errs.join(", "))
                };
                format!(
                    "{} {name:?} is invalid: {list}",
                    GroupResource::new(group, kind)
                )
            }
            Error::Storage(m) | Error::Internal(m) => format!("Internal error occurred: {m}"),
            other => other.to_string(),
        }
    }

    fn details(&self) -> Option<Value> {
        let named = |r: &GroupResource, name: &str| {
            let mut d = json!({"name": name, "kind": r.resource});
            if !r.group.is_empty() {
                d["group"] = json!(r.group);
            }
            d
        };
        match self {
            Error::NotFound { resource, name }
            | Error::AlreadyExists { resource, name }
            | Error::Conflict { resource, name, .. }
            | Error::Forbidden { resource, name, .. } => Some(named(resource, name)),
            Error::Invalid {
                group,
                kind,
                name,
                causes,
            } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                let mut d = json!({"name": name, "kind": kind, "causes": causes});
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            Error::TooLargeResourceVersion { .. } => Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            })),
            Error::Storage(m) | Error::Internal(m) => Some(json!({"causes": [{"message": m}]})),
            Error::Generic {
                empty_details: true,
                ..
            } => Some(json!({})),
            _ => None,
        }
    }

    /// The `Status` object for this error, exactly as kube-apiserver renders it.
    pub(crate) fn status(&self) -> Value {
        let mut metadata = json!({});
        if let Error::Expired {
            continue_token: Some(t),
            ..
        } = self
        {
            metadata["continue"] = json!(t);
        }
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": metadata,
            "status": "Failure",
            "message": self.message(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Some(d) = self.details() {
            s["details"] = d;
        }
        if self.reason().is_empty() {
            if let Some(m) = s.as_object_mut() {
                m.remove("reason");
            }
        }
        s
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_errors_carry_only_what_upstream_sets() {
        let e = Error::Generic {
            code: 500,
            reason: "",
            message: "map: map[image:b] does not contain declared merge key: name".into(),
            empty_details: false,
        };
        assert_eq!(
            e.status(),
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"map: map[image:b] does not contain declared merge key: name",
                   "code":500})
        );
        let e = Error::Generic {
            code: 422,
            reason: "Invalid",
            message: "the server rejected our request due to an error in our request".into(),
            empty_details: true,
        };
        assert_eq!(e.status()["details"], json!({}));
        assert_eq!(e.status()["reason"], "Invalid");
    }

    #[test]
    fn not_found_matches_upstream() {
        let e = Error::not_found(&GroupResource::new("", "configmaps"), "x");
        assert_eq!(
            e.status(),
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"configmaps \"x\" not found","reason":"NotFound",
                   "details":{"name":"x","kind":"configmaps"},"code":404})
        );
    }

    #[test]
    fn grouped_resources_are_qualified() {
        let e = Error::stale(&GroupResource::new("apps", "deployments"), "d");
        let s = e.status();
        assert_eq!(s["code"], 409);
        assert_eq!(s["reason"], "Conflict");
        assert_eq!(
            s["message"],
            "Operation cannot be fulfilled on deployments.apps \"d\": the object has been \
             modified; please apply your changes to the latest version and try again"
        );
        assert_eq!(s["details"]["group"], "apps");
    }

    #[test]
    fn invalid_lists_causes() {
        let one = Error::Invalid {
            group: String::new(),
            kind: "ConfigMap".into(),
            name: "X".into(),
            causes: vec![Cause::invalid("metadata.name", &json!("X"), "bad")],
        };
        let s = one.status();
        assert_eq!(s["code"], 422);
        assert_eq!(
            s["message"],
            "ConfigMap \"X\" is invalid: metadata.name: Invalid value: \"X\": bad"
        );
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueInvalid");
        let two = Error::Invalid {
            group: String::new(),
            kind: "Pod".into(),
            name: "p".into(),
            causes: vec![
                Cause::required("spec.containers", ""),
                Cause::required("metadata.name", "name or generateName is required"),
            ],
        };
        assert_eq!(
            two.status()["message"],
            "Pod \"p\" is invalid: [spec.containers: Required value, metadata.name: Required \
             value: name or generateName is required]"
        );
    }

    #[test]
    fn expired_carries_the_continue_token() {
        let e = Error::Expired {
            message: "too old".into(),
            continue_token: Some("tok".into()),
        };
        let s = e.status();
        assert_eq!(
            (s["code"].clone(), s["reason"].clone()),
            (json!(410), json!("Expired"))
        );
        assert_eq!(s["metadata"]["continue"], "tok");
    }
}
