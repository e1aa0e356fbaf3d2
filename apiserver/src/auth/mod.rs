//! Authentication: who a request comes from, decided before it reaches `handlers`, as
//! kube-apiserver 1.32 decides it (`pkg/kubeapiserver/authenticator/config.go`).
//!
//! The chain, in upstream's order:
//! 1. the connection's client certificate, verified against the client CA (`x509`);
//! 2. an `Authorization: Bearer <token>` header, looked up in `--token-auth-file`
//!    (`tokenfile`); only when that flag is given;
//! 3. anonymous: `system:anonymous` in group `system:unauthenticated`.
//!
//! Invariants:
//! - The first authenticator that names a user wins; later ones are not consulted (a valid
//!   certificate with a wrong token is the certificate's user).
//! - A credential that was presented and is wrong (a certificate from another CA, an unknown
//!   token) is never anonymous: if no authenticator names a user and any of them failed, the
//!   request gets upstream's 401 (`Status` reason `Unauthorized`, message `Unauthorized`,
//!   which kubectl prints as `You must be logged in to the server (Unauthorized)`).
//! - A request without credentials is anonymous if `--anonymous-auth=true`; otherwise it gets
//!   the same 401, except on the public-info paths (`/healthz`, `/livez`, `/readyz`,
//!   `/version`), which stay reachable anonymously as upstream's `system:public-info-viewer`
//!   and 1.32's anonymous-with-conditions configuration allow. Keelson's default is `false`
//!   (issue 7: anonymous requests are refused unless asked for); upstream's is `true`.
//! - Every authenticated user except `system:anonymous` also gets `system:authenticated`,
//!   unless it already carries that group or `system:unauthenticated`.
//! - Authorization is not here: everything authenticated is allowed (RBAC comes later).

mod review;
mod tokenfile;
mod x509;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;

use crate::error::{Error, Result};

pub(crate) use review::serve as serve_self_subject_review;

pub(crate) const ANONYMOUS: &str = "system:anonymous";
pub(crate) const UNAUTHENTICATED: &str = "system:unauthenticated";
pub(crate) const AUTHENTICATED: &str = "system:authenticated";
/// The user-extra key carrying a credential's identity (upstream `user.CredentialIDKey`).
pub(crate) const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// Paths anonymous requests reach even with `--anonymous-auth=false`.
const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];

/// An authenticated identity (upstream `user.Info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct UserInfo {
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) groups: Vec<String>,
    pub(crate) extra: BTreeMap<String, Vec<String>>,
}

/// What one authenticator made of a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// No credential of this kind was presented.
    NotHandled,
    User(UserInfo),
    /// A credential was presented and is not valid (logged, never sent to the client).
    Failed(String),
}

/// The authentication flags.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// PEM file of the CA(s) client certificates must chain to.
    pub(crate) client_ca_file: PathBuf,
    pub(crate) token_auth_file: Option<PathBuf>,
    pub(crate) anonymous: bool,
}

/// The authenticator chain, built once at start.
#[derive(Debug)]
pub(crate) struct Authenticator {
    client_ca: x509::ClientCa,
    tokens: Option<tokenfile::Tokens>,
    anonymous: bool,
}

/// What a connection's client certificate established, decided once per connection.
#[derive(Debug)]
pub(crate) struct Peer(Outcome);

impl Authenticator {
    pub(crate) fn new(o: &Options) -> Result<Authenticator> {
        let tokens = match &o.token_auth_file {
            Some(path) => Some(tokenfile::Tokens::load(path)?),
            None => None,
        };
        Ok(Authenticator {
            client_ca: x509::ClientCa::load(&o.client_ca_file)?,
            tokens,
            anonymous: o.anonymous,
        })
    }

    /// The TLS server's client-certificate verifier (requests, does not require, a
    /// certificate; see `x509`).
    pub(crate) fn tls_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.client_ca.handshake_verifier()
    }

    /// Verifies the certificates a connection presented (None or empty: none).
    pub(crate) fn peer(&self, certs: Option<&[CertificateDer<'_>]>) -> Peer {
        Peer(self.client_ca.authenticate(certs.unwrap_or_default()))
    }

    /// The user a request on `peer`'s connection comes from, or the 401 it gets.
    pub(crate) fn authenticate(
        &self,
        peer: &Peer,
        authorization: Option<&str>,
        path: &str,
    ) -> Result<UserInfo> {
        let mut failures = Vec::new();
        let certificate = || match &peer.0 {
            Outcome::NotHandled => Outcome::NotHandled,
            Outcome::User(u) => Outcome::User(u.clone()),
            Outcome::Failed(e) => Outcome::Failed(e.clone()),
        };
        let token = || self.bearer(authorization);
        for authenticator in [&certificate as &dyn Fn() -> Outcome, &token] {
            match authenticator() {
                Outcome::User(u) => return Ok(with_authenticated_group(u)),
                Outcome::Failed(e) => failures.push(e),
                Outcome::NotHandled => {}
            }
        }
        if !failures.is_empty() {
            tracing::info!(
                "Unable to authenticate the request ({path}): [{}]",
                failures.join(", ")
            );
            return Err(unauthorized());
        }
        if self.anonymous || PUBLIC_PATHS.contains(&path) {
            return Ok(UserInfo {
                name: ANONYMOUS.into(),
                groups: vec![UNAUTHENTICATED.into()],
                ..UserInfo::default()
            });
        }
        Err(unauthorized())
    }

    /// The bearer-token authenticator (upstream `bearertoken.Authenticator` over the token
    /// file): a missing header, another scheme or an empty token is not handled; an unknown
    /// token fails.
    fn bearer(&self, authorization: Option<&str>) -> Outcome {
        let Some(tokens) = &self.tokens else {
            return Outcome::NotHandled;
        };
        let header = authorization.unwrap_or("").trim();
        let mut parts = header.splitn(3, ' ');
        let (Some(scheme), Some(token)) = (parts.next(), parts.next()) else {
            return Outcome::NotHandled;
        };
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Outcome::NotHandled;
        }
        match tokens.get(token) {
            Some(u) => Outcome::User(u.clone()),
            None => Outcome::Failed("invalid bearer token".into()),
        }
    }
}

/// Upstream's `AuthenticatedGroupAdder`.
fn with_authenticated_group(mut u: UserInfo) -> UserInfo {
    if u.name != ANONYMOUS
        && !u
            .groups
            .iter()
            .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED)
    {
        u.groups.push(AUTHENTICATED.into());
    }
    u
}

/// The 401 every authentication failure gets (`apierrors.NewUnauthorized("Unauthorized")`).
pub(crate) fn unauthorized() -> Error {
    Error::Generic {
        code: 401,
        reason: "Unauthorized",
        message: "Unauthorized".into(),
        empty_details: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(tokens: &str, anonymous: bool) -> (Authenticator, x509::tests::TestCa) {
        let ca = x509::tests::TestCa::new("cluster-ca");
        let a = Authenticator {
            client_ca: ca.client_ca(),
            tokens: Some(tokenfile::Tokens::parse(tokens, "t.csv").unwrap()),
            anonymous,
        };
        (a, ca)
    }

    const TOKENS: &str = "good,tom,42,\"devs,ops\"\nsys,svc,7,system:unauthenticated\n";

    #[test]
    fn certificate_first_then_token() {
        let (a, ca) = chain(TOKENS, false);
        let cert = ca.client("kubernetes-admin", Some("system:masters"));
        let peer = a.peer(Some(std::slice::from_ref(&cert)));
        // A valid certificate wins over any token, right or wrong.
        for header in [None, Some("Bearer good"), Some("Bearer wrong")] {
            let u = a.authenticate(&peer, header, "/api").unwrap();
            assert_eq!(u.name, "kubernetes-admin");
            assert_eq!(u.groups, ["system:masters", "system:authenticated"]);
        }
        let none = a.peer(None);
        let u = a.authenticate(&none, Some("Bearer good"), "/api").unwrap();
        assert_eq!((u.name.as_str(), u.uid.as_str()), ("tom", "42"));
        assert_eq!(u.groups, ["devs", "ops", "system:authenticated"]);
        // A user already marked unauthenticated gets no system:authenticated.
        let u = a.authenticate(&none, Some("bearer sys"), "/api").unwrap();
        assert_eq!(u.groups, ["system:unauthenticated"]);
    }

    #[test]
    fn wrong_credentials_are_401_never_anonymous() {
        let (a, _) = chain(TOKENS, true);
        let none = a.peer(None);
        let e = a
            .authenticate(&none, Some("Bearer wrong"), "/api")
            .unwrap_err();
        assert_eq!(
            e.status(),
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"Unauthorized","reason":"Unauthorized","code":401})
        );
        // Even on a public path.
        assert!(a
            .authenticate(&none, Some("Bearer wrong"), "/healthz")
            .is_err());
        // A certificate from another CA fails, unless a good token follows it.
        let other = x509::tests::TestCa::new("other").client("eve", None);
        let bad_peer = a.peer(Some(std::slice::from_ref(&other)));
        assert!(a.authenticate(&bad_peer, None, "/api").is_err());
        let u = a
            .authenticate(&bad_peer, Some("Bearer good"), "/api")
            .unwrap();
        assert_eq!(u.name, "tom");
    }

    #[test]
    fn headers_that_are_not_bearer_tokens_are_ignored() {
        let (a, _) = chain(TOKENS, true);
        let none = a.peer(None);
        for h in [
            "",
            "   ",
            "Basic dG9tOnB3",
            "Bearer",
            "Bearer  good",
            "Token good",
        ] {
            let u = a.authenticate(&none, Some(h), "/api").unwrap();
            assert_eq!(u.name, ANONYMOUS, "{h:?}");
            assert_eq!(u.groups, [UNAUTHENTICATED]);
        }
        // A third part after the token is ignored, as SplitN(…, 3) leaves it.
        let u = a.authenticate(&none, Some(" Bearer good extra "), "/api");
        assert_eq!(u.unwrap().name, "tom");
        // Without a token file a bearer header is no credential at all.
        let no_file = Authenticator {
            tokens: None,
            ..chain("", true).0
        };
        let u = no_file.authenticate(&none, Some("Bearer good"), "/api");
        assert_eq!(u.unwrap().name, ANONYMOUS);
    }

    #[test]
    fn anonymous_off_leaves_only_the_public_paths() {
        let (a, _) = chain(TOKENS, false);
        let none = a.peer(None);
        for path in ["/api", "/apis", "/api/v1/namespaces", "/healthz/etcd", "/"] {
            assert_eq!(
                a.authenticate(&none, None, path).unwrap_err().code(),
                401,
                "{path}"
            );
        }
        for path in ["/healthz", "/livez", "/readyz", "/version"] {
            assert_eq!(a.authenticate(&none, None, path).unwrap().name, ANONYMOUS);
        }
    }
}
