//! Authentication of `keelson apiserver`, driven by kubectl 1.32 and curl as against a real
//! kube-apiserver: the admin client certificate, a certificate from another CA, tokens from
//! `--token-auth-file`, `--client-ca-file`, and anonymous requests off (the default here) and
//! on. Expected outputs are upstream's: `kubectl auth whoami` (SelfSubjectReview) shows the
//! user and groups, and every refused request is the 401 `Status` kubectl prints as
//! `error: You must be logged in to the server (Unauthorized)`.
//!
//! Needs kubectl (as tests/apiserver_kubectl.rs: `KEELSON_KUBECTL_BIN`,
//! `KEELSON_SKIP_KUBECTL=1`), curl and openssl (for a second CA).

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::apiserver::Options;
use common::proc::{find_binary, run, Outcome};
use common::server::{require_etcd_tools, Server, ServerKind};

const UNAUTHORIZED: &str = "error: You must be logged in to the server (Unauthorized)";
const DISCOVERY_UNAUTHORIZED: &str = "error: You must be logged in to the server (the server \
     has asked for the client to provide credentials)";
const TOKENS: &str = "t0ken-good,tom,1001,\"devs,ops\"\nother,ann,1002\n";

/// kubectl, curl and openssl, or None (test skipped) when kubectl is missing and
/// `KEELSON_SKIP_KUBECTL=1` is set.
struct Tools {
    kubectl: PathBuf,
    curl: PathBuf,
    openssl: PathBuf,
}

fn tools(test: &str) -> Option<Tools> {
    let Some(kubectl) = find_binary("kubectl", "KEELSON_KUBECTL_BIN") else {
        if std::env::var("KEELSON_SKIP_KUBECTL").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED {test}: kubectl not found and KEELSON_SKIP_KUBECTL=1 is set");
            return None;
        }
        panic!("{test} needs kubectl on PATH (or KEELSON_KUBECTL_BIN)");
    };
    let curl = find_binary("curl", "KEELSON_CURL_BIN").expect("curl on PATH");
    let openssl = find_binary("openssl", "KEELSON_OPENSSL_BIN").expect("openssl on PATH");
    Some(Tools {
        kubectl,
        curl,
        openssl,
    })
}

/// A running `keelson apiserver` with its own data dir, and the tools to talk to it.
struct Apiserver<'t> {
    server: common::apiserver::Apiserver,
    tools: &'t Tools,
}

/// A raw HTTPS GET to `server` (HTTP/1.1, server verified against the cluster CA) with
/// `args` added: (status code, body).
fn curl(
    curl: &Path,
    server: &common::apiserver::Apiserver,
    args: &[&str],
    path: &str,
) -> (u16, String) {
    let mut cmd = Command::new(curl);
    cmd.args([
        "-sS",
        "--http1.1",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(server.data().join("ca.crt"))
    .args(args)
    .arg(format!("{}{path}", server.url()));
    let out = run(&mut cmd, None, Duration::from_secs(10), None).expect("run curl");
    assert!(out.success(), "curl {path}: {}", out.stderr_str());
    let text = out.stdout_str();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.parse().expect("status code"), body.to_string())
}

impl<'t> Apiserver<'t> {
    /// Starts an apiserver on `etcd` with `flags`, and waits until an anonymous `/readyz`
    /// answers ok (a public path, whatever `--anonymous-auth` says).
    fn start(tools: &'t Tools, etcd: &str, flags: &[&str]) -> Apiserver<'t> {
        let curl_bin = tools.curl.clone();
        let server = Options::new("keelson-auth-")
            .args(flags)
            .ready_when(move |a| {
                if !a.data().join("ca.crt").exists() {
                    return None;
                }
                let (code, body) = curl(&curl_bin, a, &[], "/readyz");
                if code == 200 && body == "ok" {
                    Some(Ok(()))
                } else {
                    Some(Err(format!("{code} {body}")))
                }
            })
            .start(&tools.kubectl, etcd);
        Apiserver { server, tools }
    }

    fn log(&self) -> String {
        self.server.log()
    }

    fn data(&self) -> PathBuf {
        self.server.data()
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// A raw HTTPS GET (HTTP/1.1, server verified against the cluster CA) with `args` added:
    /// (status code, body).
    fn curl(&self, args: &[&str], path: &str) -> (u16, String) {
        curl(&self.tools.curl, &self.server, args, path)
    }

    /// A kubeconfig for this server with `user` (YAML lines under `user:`).
    fn kubeconfig(&self, name: &str, user: &str) -> PathBuf {
        let path = self.server.path(&format!("{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: {}\n    \
             server: {}\n  name: c\ncontexts:\n- context:\n    cluster: c\n    user: u\n  name: x\n\
             current-context: x\nusers:\n- name: u\n  user:\n{user}",
            self.data().join("ca.crt").display(),
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    fn admin(&self) -> PathBuf {
        self.data().join("admin.kubeconfig")
    }

    /// kubectl with `kubeconfig` and its own HOME (its discovery cache).
    fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> Outcome {
        let home = self.server.path("home");
        let mut cmd = Command::new(&self.tools.kubectl);
        cmd.args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", home);
        run(&mut cmd, None, Duration::from_secs(30), None).expect("run kubectl")
    }

    fn ok(&self, kubeconfig: &Path, args: &[&str]) -> String {
        let out = self.kubectl(kubeconfig, args);
        assert!(
            out.success(),
            "kubectl {args:?}: {}\nstdout: {}\nstderr: {}\n--- apiserver log ---\n{}",
            out.end,
            out.stdout_str(),
            out.stderr_str(),
            self.log()
        );
        out.stdout_str()
    }

    /// `kubectl auth whoami -o json`: (username, uid, groups).
    fn whoami(&self, kubeconfig: &Path) -> (String, String, Vec<String>, serde_json::Value) {
        let out = self.ok(kubeconfig, &["auth", "whoami", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("whoami JSON");
        assert_eq!(v["kind"], "SelfSubjectReview", "{v}");
        let info = &v["status"]["userInfo"];
        let s = |k: &str| info[k].as_str().unwrap_or("").to_string();
        let groups = info["groups"]
            .as_array()
            .map(|g| g.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        (s("username"), s("uid"), groups, info["extra"].clone())
    }

    /// Runs kubectl and insists it is refused with upstream's 401 message.
    fn refused(&self, kubeconfig: &Path, args: &[&str]) {
        self.refused_with(kubeconfig, args, UNAUTHORIZED)
    }

    /// Runs kubectl and insists it is refused, its last line being `message`.
    fn refused_with(&self, kubeconfig: &Path, args: &[&str], message: &str) {
        let out = self.kubectl(kubeconfig, args);
        assert!(!out.success(), "kubectl {args:?} was let through");
        assert!(
            out.stderr_str().trim_end().ends_with(message),
            "kubectl {args:?}: {}\n--- apiserver log ---\n{}",
            out.stderr_str(),
            self.log()
        );
    }
}

/// A CA other than the cluster's, and a client certificate it signed (CN=mallory,
/// O=team-a, O=team-b): (ca.crt, client.crt, client.key).
fn other_ca(tools: &Tools, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ssl = |args: &[&str]| {
        let mut cmd = Command::new(&tools.openssl);
        cmd.args(args).current_dir(dir);
        let out = run(&mut cmd, None, Duration::from_secs(30), None).expect("run openssl");
        assert!(out.success(), "openssl {args:?}: {}", out.stderr_str());
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let with_key = |head: &[&'static str], tail: &[&'static str]| -> Vec<&'static str> {
        [head, &ec[..], tail].concat()
    };
    ssl(&with_key(
        &["req", "-x509"],
        &[
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.crt",
            "-subj",
            "/CN=other-ca",
            "-days",
            "2",
        ],
    ));
    ssl(&with_key(
        &["req"],
        &[
            "-keyout",
            "mallory.key",
            "-out",
            "mallory.csr",
            "-subj",
            "/O=team-a/O=team-b/CN=mallory",
        ],
    ));
    std::fs::write(dir.join("ext.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "mallory.csr",
        "-CA",
        "other-ca.crt",
        "-CAkey",
        "other-ca.key",
        "-CAcreateserial",
        "-out",
        "mallory.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("other-ca.crt"),
        dir.join("mallory.crt"),
        dir.join("mallory.key"),
    )
}

fn cert_user(cert: &Path, key: &Path) -> String {
    format!(
        "    client-certificate: {}\n    client-key: {}\n",
        cert.display(),
        key.display()
    )
}

/// The default apiserver (anonymous off) with a token file.
fn certificates_tokens_and_anonymous_off(t: &Tools, etcd: &str) {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), TOKENS).unwrap();
    let a = Apiserver::start(
        t,
        etcd,
        &["--token-auth-file", tokens.path().to_str().unwrap()],
    );

    // The admin kubeconfig's certificate.
    let (user, uid, groups, extra) = a.whoami(&a.admin());
    assert_eq!((user.as_str(), uid.as_str()), ("kubernetes-admin", ""));
    assert_eq!(groups, ["system:masters", "system:authenticated"]);
    let id = extra["authentication.kubernetes.io/credential-id"][0]
        .as_str()
        .unwrap();
    assert!(id.starts_with("X509SHA256=") && id.len() == 75, "{id}");
    let table = a.ok(&a.admin(), &["auth", "whoami"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("Username") && l.ends_with(" kubernetes-admin")),
        "{table}"
    );
    a.ok(&a.admin(), &["get", "namespaces"]);
    let resources = a.ok(
        &a.admin(),
        &[
            "api-resources",
            "--api-group=authentication.k8s.io",
            "-o",
            "wide",
        ],
    );
    let row: Vec<&str> = resources
        .lines()
        .nth(1)
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(
        row,
        [
            "selfsubjectreviews",
            "authentication.k8s.io/v1",
            "false",
            "SelfSubjectReview",
            "create"
        ],
        "{resources}"
    );

    // A certificate from another CA: kubectl always offers it, and it is refused.
    let (_, crt, key) = other_ca(t, a.server.dir());
    let mallory = a.kubeconfig("mallory", &cert_user(&crt, &key));
    a.refused(&mallory, &["get", "namespaces"]);
    a.refused(&mallory, &["auth", "whoami"]);
    // A bad credential is never anonymous, not even on a public path.
    let cert_args = [
        "--cert",
        crt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    assert_eq!(a.curl(&cert_args, "/healthz").0, 401);

    // Tokens.
    let good = a.kubeconfig("good", "    token: t0ken-good\n");
    let (user, uid, groups, _) = a.whoami(&good);
    assert_eq!((user.as_str(), uid.as_str()), ("tom", "1001"));
    assert_eq!(groups, ["devs", "ops", "system:authenticated"]);
    a.ok(&good, &["get", "configmaps", "-A"]);
    let bad = a.kubeconfig("bad", "    token: t0ken-bad\n");
    a.refused(&bad, &["get", "namespaces"]);
    a.refused(&bad, &["auth", "whoami"]);
    // A valid certificate wins over a wrong token (x509 comes first).
    let both = a.kubeconfig(
        "both",
        &format!(
            "{}    token: t0ken-bad\n",
            cert_user(&a.data().join("admin.crt"), &a.data().join("admin.key"))
        ),
    );
    assert_eq!(a.whoami(&both).0, "kubernetes-admin");

    // Anonymous is off: 401 with upstream's Status, except on the public-info paths.
    let (code, body) = a.curl(&[], "/api");
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized",
            "code": 401})
    );
    assert_eq!(a.curl(&[], "/api/v1/namespaces").0, 401);
    assert_eq!(a.curl(&[], "/healthz"), (200, "ok".to_string()));
    assert_eq!(a.curl(&[], "/livez").0, 200);
    assert_eq!(a.curl(&[], "/version").0, 200);
    // (kubectl without any credential prompts for a password, so curl stands in for it.)
    assert_eq!(
        a.curl(&REVIEW, "/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .0,
        401
    );
}

/// curl arguments that POST an empty SelfSubjectReview (what `kubectl auth whoami` sends).
const REVIEW: [&str; 6] = [
    "-X",
    "POST",
    "-H",
    "Content-Type: application/json",
    "-d",
    r#"{"kind":"SelfSubjectReview","apiVersion":"authentication.k8s.io/v1","metadata":{},"status":{}}"#,
];

/// `--anonymous-auth=true` and `--client-ca-file` naming another CA.
fn anonymous_on_and_another_client_ca(t: &Tools, etcd: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, crt, key) = other_ca(t, dir.path());
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    let a = Apiserver::start(
        t,
        etcd,
        &[
            "--anonymous-auth=true",
            "--client-ca-file",
            ca.to_str().unwrap(),
            "--token-auth-file",
            tokens.to_str().unwrap(),
        ],
    );
    let (code, body) = a.curl(&[], "/api");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"APIVersions\""), "{body}");
    let (code, body) = a.curl(&REVIEW, "/apis/authentication.k8s.io/v1/selfsubjectreviews");
    assert_eq!(code, 201, "{body}");
    let review: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        review["status"],
        serde_json::json!({"userInfo": {"username": "system:anonymous",
            "groups": ["system:unauthenticated"]}})
    );
    // A wrong token is still refused, never anonymous; a right one names its user.
    assert_eq!(a.curl(&["-H", "Authorization: Bearer nope"], "/api").0, 401);
    assert_eq!(
        a.curl(&["-H", "Authorization: Bearer other"], "/api").0,
        200
    );
    // The other CA's certificate now names its user, with both O values as groups.
    let mallory = a.kubeconfig("mallory", &cert_user(&crt, &key));
    let (user, _, groups, _) = a.whoami(&mallory);
    assert_eq!(user, "mallory");
    assert_eq!(groups, ["team-a", "team-b", "system:authenticated"]);
    // The generated admin certificate is from a CA this server does not trust: refused,
    // not anonymous. (Without a discovery cache, kubectl's discovery client does not decode
    // the 401 Status and prints client-go's generic 401 text instead, as it does against
    // kube-apiserver.)
    a.refused(&a.admin(), &["auth", "whoami"]);
    a.refused_with(&a.admin(), &["get", "namespaces"], DISCOVERY_UNAUTHORIZED);
}

#[test]
fn authentication_on_keelson_store() {
    let Some(t) = tools("authentication_on_keelson_store") else {
        return;
    };
    if !require_etcd_tools("authentication_on_keelson_store") {
        return;
    }
    let store = Server::start(ServerKind::Keelson, &[]).expect("keelson store");
    certificates_tokens_and_anonymous_off(&t, &store.client_url());
    anonymous_on_and_another_client_ca(&t, &store.client_url());
}

#[test]
fn authentication_on_real_etcd() {
    let Some(t) = tools("authentication_on_real_etcd") else {
        return;
    };
    if !require_etcd_tools("authentication_on_real_etcd") {
        return;
    }
    let etcd = Server::start(ServerKind::Etcd, &[]).expect("etcd");
    certificates_tokens_and_anonymous_off(&t, &etcd.client_url());
}
