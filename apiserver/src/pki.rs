//! The apiserver's certificates and the admin kubeconfig, kept in `--data-dir`.
//!
//! Files: `ca.crt`/`ca.key` (the cluster CA), `apiserver.crt`/`apiserver.key` (the serving
//! certificate, signed by the CA), `admin.crt`/`admin.key` (a client certificate with
//! CN=kubernetes-admin, O=system:masters, as kubeadm's admin.conf before 1.29; the group is
//! the one upstream's authorizer lets do anything) and `admin.kubeconfig`.
//!
//! The CA is also the default client CA (`--client-ca-file`): the admin certificate and any
//! other certificate it signs authenticate (`auth`).
//!
//! Invariants:
//! - A file that exists is reused, never regenerated: restarting keeps every kubeconfig and
//!   trust store that was handed out valid. Only missing certificates are made, the leaf ones
//!   signed by the CA on disk (rebuilt from the same parameters, so issuer and key identifier
//!   match the CA certificate).
//! - `admin.kubeconfig` is rewritten on every start, because the port it points at is a flag.
//! - Private keys are written with mode 0600.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// What the data dir holds for the server.
pub(crate) struct Pki {
    pub(crate) kubeconfig: PathBuf,
    /// The cluster CA's certificate (`ca.crt`).
    pub(crate) ca: PathBuf,
}

/// The admin client certificate's user and group.
pub(crate) const ADMIN_USER: &str = "kubernetes-admin";
pub(crate) const ADMIN_GROUP: &str = "system:masters";

fn io(what: &Path, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{}: {e}", what.display()))
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("certificates: {e}"))
}

fn write(path: &Path, data: &str, private: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| io(path, e))?;
    f.write_all(data.as_bytes()).map_err(|e| io(path, e))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

/// The CA's parameters; identical on every start so a reloaded key signs as the same issuer.
fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    p.distinguished_name.push(DnType::CommonName, "keelson-ca");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn validity(p: &mut CertificateParams, years: i32) {
    let (y, m, d) = crate::time::rfc3339(crate::time::now_unix() - 86_400)
        .get(0..10)
        .and_then(|s| {
            let mut it = s.split('-').map(|x| x.parse::<i32>().ok());
            Some((it.next()??, it.next()?? as u8, it.next()?? as u8))
        })
        .unwrap_or((2024, 1, 1));
    p.not_before = rcgen::date_time_ymd(y, m, d);
    p.not_after = rcgen::date_time_ymd(y + years, m, d.min(28));
}

/// The names the serving certificate is valid for.
fn serving_names(bind: IpAddr) -> Vec<String> {
    let mut names: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !bind.is_unspecified() && !names.contains(&bind.to_string()) {
        names.push(bind.to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
        }
    }
    names
}

/// Loads the certificates from `dir`, creating whatever is missing, and writes
/// `admin.kubeconfig` pointing at `server_url`.
pub(crate) fn ensure(dir: &Path, bind: IpAddr, server_url: &str) -> Result<Pki> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let f = |n: &str| dir.join(n);
    let ca_key = if f("ca.key").exists() && f("ca.crt").exists() {
        KeyPair::from_pem(&read(&f("ca.key"))?).map_err(tls_err)?
    } else {
        let key = KeyPair::generate().map_err(tls_err)?;
        let mut params = ca_params()?;
        validity(&mut params, 10);
        let cert = params.self_signed(&key).map_err(tls_err)?;
        write(&f("ca.key"), &key.serialize_pem(), true)?;
        write(&f("ca.crt"), &cert.pem(), false)?;
        tracing::info!("generated a new cluster CA in {}", dir.display());
        key
    };
    let issuer = Issuer::new(ca_params()?, ca_key);

    let leaf = |crt: &str, key: &str, mut params: CertificateParams| -> Result<()> {
        if f(crt).exists() && f(key).exists() {
            return Ok(());
        }
        validity(&mut params, 1);
        let k = KeyPair::generate().map_err(tls_err)?;
        let cert = params.signed_by(&k, &issuer).map_err(tls_err)?;
        write(&f(key), &k.serialize_pem(), true)?;
        write(&f(crt), &cert.pem(), false)
    };
    let mut serving = CertificateParams::new(serving_names(bind)).map_err(tls_err)?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf("apiserver.crt", "apiserver.key", serving)?;
    let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    admin
        .distinguished_name
        .push(DnType::CommonName, ADMIN_USER);
    admin
        .distinguished_name
        .push(DnType::OrganizationName, ADMIN_GROUP);
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf("admin.crt", "admin.key", admin)?;

    let kubeconfig = f("admin.kubeconfig");
    write(
        &kubeconfig,
        &kubeconfig_text(
            server_url,
            &read(&f("ca.crt"))?,
            &read(&f("admin.crt"))?,
            &read(&f("admin.key"))?,
        ),
        true,
    )?;
    Ok(Pki {
        kubeconfig,
        ca: f("ca.crt"),
    })
}

fn kubeconfig_text(server: &str, ca: &str, cert: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: keelson\n\
         contexts:\n\
         - context:\n    cluster: keelson\n    user: {ADMIN_USER}\n  name: {ADMIN_USER}@keelson\n\
         current-context: {ADMIN_USER}@keelson\n\
         preferences: {{}}\n\
         users:\n\
         - name: {ADMIN_USER}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        STANDARD.encode(ca),
        STANDARD.encode(cert),
        STANDARD.encode(key),
    )
}

/// TLS 1.2/1.3 with ALPN h2 and http/1.1, serving `apiserver.crt` from `dir`; `clients`
/// decides what the handshake asks of client certificates (`auth` requests one and judges it
/// per request).
pub(crate) fn server_config(
    dir: &Path,
    clients: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("apiserver.crt"))
            .map_err(tls_err)?
            .collect::<std::result::Result<_, _>>()
            .map_err(tls_err)?;
    let key = PrivateKeyDer::from_pem_file(dir.join("apiserver.key")).map_err(tls_err)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(clients)
        .with_single_cert(certs, key)
        .map_err(tls_err)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let bind: IpAddr = "127.0.0.1".parse().unwrap();
        ensure(dir.path(), bind, "https://127.0.0.1:1").unwrap();
        let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
        let admin = std::fs::read(dir.path().join("admin.crt")).unwrap();
        // A second start reuses everything but points the kubeconfig at the new port.
        ensure(dir.path(), bind, "https://127.0.0.1:2").unwrap();
        assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), ca);
        assert_eq!(std::fs::read(dir.path().join("admin.crt")).unwrap(), admin);
        let kc = std::fs::read_to_string(dir.path().join("admin.kubeconfig")).unwrap();
        assert!(kc.contains("server: https://127.0.0.1:2"), "{kc}");
        // A lost serving certificate is re-issued by the same CA.
        std::fs::remove_file(dir.path().join("apiserver.crt")).unwrap();
        ensure(dir.path(), bind, "https://127.0.0.1:2").unwrap();
        assert!(dir.path().join("apiserver.crt").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
