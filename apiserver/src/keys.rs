//! Storage keys and continue tokens: the one place that knows how an object's etcd key looks.
//!
//! Invariants:
//! - An object of resource `r` lives at `/registry/<r>/<namespace>/<name>` when namespaced and
//!   at `/registry/<r>/<name>` when cluster-scoped. Resources of named groups use the bare
//!   resource name too (`/registry/deployments/…`), as kube-apiserver does for built-ins.
//! - A list prefix always ends in `/`, so `/registry/pods/a/` never matches namespace `ab`.
//! - Names and namespaces reaching here are validated DNS names (no `/`), so a key splits
//!   unambiguously.
//! - A continue token is upstream's (`storage/continue.go`): unpadded base64url of JSON
//!   `{"v":"meta.k8s.io/v1","rv":<revision>,"start":<next key minus the list prefix>}`; `rv`
//!   -1 means "continue at the latest revision" (the inconsistent token of a 410). Decoding
//!   rejects anything that would escape the list prefix.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const ROOT: &str = "/registry/";

/// The key of one object.
pub(crate) fn object_key(resource: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ROOT}{resource}/{ns}/{name}"),
        None => format!("{ROOT}{resource}/{name}"),
    }
}

/// The prefix of a list: all objects of `resource`, or those in one namespace.
pub(crate) fn list_prefix(resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{ROOT}{resource}/{ns}/"),
        None => format!("{ROOT}{resource}/"),
    }
}

/// The exclusive end of the range of keys starting with `prefix` (etcd's `GetPrefixRangeEnd`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: range to the end of the keyspace.
    vec![0]
}

#[derive(Serialize, Deserialize)]
struct Token {
    v: String,
    rv: i64,
    start: String,
}

/// Encodes a token that resumes a list of `prefix` at `next_key` (inclusive) at revision `rv`.
pub(crate) fn encode_continue(next_key: &str, prefix: &str, rv: i64) -> String {
    let start = next_key.strip_prefix(prefix).unwrap_or(next_key);
    let t = Token {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: start.into(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&t).unwrap_or_default())
}

/// Decodes a continue token for a list of `prefix`: the full key to resume at and the
/// revision (-1: latest).
pub(crate) fn decode_continue(token: &str, prefix: &str) -> Result<(String, i64)> {
    let invalid = |why: String| Error::BadRequest(format!("invalid continue token: {why}"));
    let data = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| invalid(format!("continue key is not valid: {e}")))?;
    let t: Token = serde_json::from_slice(&data)
        .map_err(|e| invalid(format!("continue key is not valid: {e}")))?;
    if t.v != "meta.k8s.io/v1" {
        return Err(invalid(format!(
            "continue key is not valid: server does not recognize this encoded version {}",
            t.v
        )));
    }
    if t.rv == 0 {
        return Err(invalid(
            "continue key is not valid: incorrect encoded start resourceVersion (version \
             meta.k8s.io/v1)"
                .into(),
        ));
    }
    if t.start.is_empty() {
        return Err(invalid(
            "continue key is not valid: encoded start key empty (version meta.k8s.io/v1)".into(),
        ));
    }
    // Upstream path.Clean()s "/"+start and demands it unchanged: no "..", ".", "//" segments.
    let segments: Vec<&str> = t.start.trim_start_matches('/').split('/').collect();
    let dirty = segments
        .iter()
        .enumerate()
        .any(|(i, s)| *s == ".." || *s == "." || (s.is_empty() && i + 1 < segments.len()));
    if dirty {
        return Err(invalid(format!("continue key is not valid: {}", t.start)));
    }
    Ok((format!("{prefix}{}", t.start.trim_start_matches('/')), t.rv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_registry_layout() {
        assert_eq!(
            object_key("configmaps", Some("default"), "x"),
            "/registry/configmaps/default/x"
        );
        assert_eq!(
            object_key("namespaces", None, "kube-system"),
            "/registry/namespaces/kube-system"
        );
        assert_eq!(list_prefix("pods", Some("a")), "/registry/pods/a/");
        assert_eq!(list_prefix("pods", None), "/registry/pods/");
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn continue_tokens_round_trip_and_match_upstream() {
        let prefix = "/registry/pods/";
        let t = encode_continue("/registry/pods/ns/p2\u{0}", prefix, 42);
        // Upstream's encoding of the same state: base64url(JSON) without padding.
        let json = r#"{"v":"meta.k8s.io/v1","rv":42,"start":"ns/p2\u0000"}"#;
        assert_eq!(t, URL_SAFE_NO_PAD.encode(json));
        assert_eq!(
            decode_continue(&t, prefix).unwrap(),
            ("/registry/pods/ns/p2\u{0}".to_string(), 42)
        );
        let latest = encode_continue("/registry/pods/b", prefix, -1);
        assert_eq!(decode_continue(&latest, prefix).unwrap().1, -1);
    }

    #[test]
    fn bad_continue_tokens_are_rejected() {
        let prefix = "/registry/pods/";
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            "%%%".to_string(),
            enc("{}"),
            enc(r#"{"v":"meta.k8s.io/v2","rv":1,"start":"a"}"#),
            enc(r#"{"v":"meta.k8s.io/v1","rv":0,"start":"a"}"#),
            enc(r#"{"v":"meta.k8s.io/v1","rv":1,"start":""}"#),
            enc(r#"{"v":"meta.k8s.io/v1","rv":1,"start":"../secrets/x"}"#),
            enc(r#"{"v":"meta.k8s.io/v1","rv":1,"start":"a/./b"}"#),
        ] {
            let err = decode_continue(&bad, prefix).unwrap_err();
            assert_eq!(err.code(), 400, "{bad}: {err}");
            assert!(err
                .to_string()
                .starts_with("invalid continue token: continue key is not valid"));
        }
    }
}
