//! `authentication.k8s.io/v1` `SelfSubjectReview` (`kubectl auth whoami`): a create-only,
//! never-stored, cluster-scoped resource whose reply is the caller's own identity.
//!
//! As upstream's `selfsubjectreview` REST storage: `POST .../selfsubjectreviews` answers 201
//! with `metadata.creationTimestamp` set to now and `status.userInfo` = {username, uid,
//! groups, extra} of the authenticated user (empty fields omitted). The request body carries
//! nothing the reply depends on; a JSON body must still be a `SelfSubjectReview`.

use hyper::Method;
use serde_json::{json, Map, Value};

use super::UserInfo;
use crate::error::{Error, Result};
use crate::handlers::{json_reply, Call};
use crate::request::ResourceRequest;
use crate::server::Body;

const API_VERSION: &str = "authentication.k8s.io/v1";
const KIND: &str = "SelfSubjectReview";

/// Serves a request routed to `selfsubjectreviews`; `user` is who sent it.
pub(crate) fn serve(
    r: ResourceRequest,
    call: Call,
    user: Option<UserInfo>,
) -> Result<hyper::Response<Body>> {
    if call.method != Method::POST || r.name.is_some() {
        return Err(Error::MethodNotAllowed);
    }
    check_body(&call)?;
    let user = user.ok_or_else(|| Error::Internal("no user info found in the request".into()))?;
    Ok(json_reply(201, &review(&user, crate::time::now_unix())))
}

/// A JSON body must be an object of our kind (other encodings are not read: nothing in the
/// body matters).
fn check_body(call: &Call) -> Result<()> {
    let json = call
        .content_type
        .as_deref()
        .is_none_or(|c| c.starts_with("application/json") || c.starts_with("*/*"));
    if !json || call.body.is_empty() {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(&call.body)
        .map_err(|e| Error::BadRequest(format!("error decoding the request body: {e}")))?;
    let (kind, api_version) = (v.get("kind"), v.get("apiVersion"));
    let ok_kind = kind.is_none_or(|k| k == KIND);
    let ok_version = api_version.is_none_or(|a| a == API_VERSION);
    if !v.is_object() || !ok_kind || !ok_version {
        return Err(Error::BadRequest(format!(
            "the API version in the data ({}) does not match the expected API version \
             ({API_VERSION}) or kind ({KIND})",
            api_version.and_then(Value::as_str).unwrap_or("")
        )));
    }
    Ok(())
}

/// The reply for `user`, created at `now` (unix seconds).
fn review(user: &UserInfo, now: i64) -> Value {
    let mut info = Map::new();
    if !user.name.is_empty() {
        info.insert("username".into(), json!(user.name));
    }
    if !user.uid.is_empty() {
        info.insert("uid".into(), json!(user.uid));
    }
    if !user.groups.is_empty() {
        info.insert("groups".into(), json!(user.groups));
    }
    if !user.extra.is_empty() {
        info.insert("extra".into(), json!(user.extra));
    }
    json!({
        "kind": KIND,
        "apiVersion": API_VERSION,
        "metadata": {"creationTimestamp": crate::time::rfc3339(now)},
        "status": {"userInfo": info},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_review_carries_the_callers_identity() {
        let mut u = UserInfo {
            name: "tom".into(),
            uid: String::new(),
            groups: vec!["devs".into(), "system:authenticated".into()],
            ..UserInfo::default()
        };
        u.extra.insert("k".into(), vec!["v".into()]);
        assert_eq!(
            review(&u, 0),
            json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                   "metadata": {"creationTimestamp": "1970-01-01T00:00:00Z"},
                   "status": {"userInfo": {"username": "tom",
                       "groups": ["devs", "system:authenticated"], "extra": {"k": ["v"]}}}})
        );
    }
}
