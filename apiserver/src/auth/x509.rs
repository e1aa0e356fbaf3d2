//! Client certificates: the TLS side and the request side, as kube-apiserver splits them.
//!
//! The handshake *requests* a certificate and names the client CA's subjects as acceptable
//! issuers (Go's `tls.RequestClientCert` with `ClientCAs` set, as upstream's secure serving
//! does), so clients pick the right certificate; it checks only that the client holds the
//! key (the handshake signature), never the chain. A connection without a certificate, or
//! with one from another CA, is still served: the chain is verified against the client CA
//! here, per connection, and a failure is a 401 for every request on that connection rather
//! than a TLS alert (upstream's `x509.Authenticator`).
//!
//! A verified certificate names the user as upstream's `CommonNameUserConversion` does:
//! user = the subject's CommonName (the last one, if several), groups = its Organization
//! values in order, extra `authentication.kubernetes.io/credential-id` =
//! `X509SHA256=<hex SHA-256 of the certificate>`. A verified certificate without a
//! CommonName identifies nobody (the other authenticators and anonymous get their turn).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::{Outcome, UserInfo, CREDENTIAL_ID};
use crate::error::{Error, Result};

/// The client CA (`--client-ca-file`) and what verifies against it.
#[derive(Debug)]
pub(crate) struct ClientCa {
    /// Verifies a presented chain against the CA (client-auth usage, validity).
    chain: Arc<dyn ClientCertVerifier>,
    handshake: Arc<RequestClientCert>,
}

impl ClientCa {
    /// Loads every certificate in the PEM file `path` as a trusted root.
    pub(crate) fn load(path: &Path) -> Result<ClientCa> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::Internal(format!("--client-ca-file {}: {e}", path.display()))
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        if roots.is_empty() {
            return Err(bad(&"no certificates in the file"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let hints = roots.subjects();
        let chain =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad(&e))?;
        Ok(ClientCa {
            chain,
            handshake: Arc::new(RequestClientCert { hints, algorithms }),
        })
    }

    /// The verifier the TLS server config uses.
    pub(crate) fn handshake_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.handshake.clone()
    }

    /// Who the certificates a connection presented identify (`certs[0]` is the leaf).
    pub(crate) fn authenticate(&self, certs: &[CertificateDer<'_>]) -> Outcome {
        let Some((leaf, intermediates)) = certs.split_first() else {
            return Outcome::NotHandled;
        };
        let subject = subject_of(leaf);
        if let Err(e) = self
            .chain
            .verify_client_cert(leaf, intermediates, UnixTime::now())
        {
            let who = subject
                .as_ref()
                .map(|s| format!("CN={}", s.common_name))
                .unwrap_or_default();
            return Outcome::Failed(format!("verifying certificate {who} failed: {e}"));
        }
        match subject {
            Some(s) if !s.common_name.is_empty() => {
                let mut user = UserInfo {
                    name: s.common_name,
                    groups: s.organizations,
                    ..UserInfo::default()
                };
                user.extra.insert(
                    CREDENTIAL_ID.to_string(),
                    vec![format!("X509SHA256={}", sha256_hex(leaf))],
                );
                Outcome::User(user)
            }
            Some(_) => Outcome::NotHandled,
            None => Outcome::Failed("the client certificate's subject cannot be read".into()),
        }
    }
}

/// Requests a client certificate, accepts any chain, and checks the handshake signature.
#[derive(Debug)]
struct RequestClientCert {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RequestClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        // The chain is judged per request, so that a foreign CA gets a 401 (see above).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Lower-case hex SHA-256 of `data`, through rustls' own (ring) hash.
fn sha256_hex(data: &[u8]) -> String {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let digest = match suite.tls13() {
        Some(s) => s.common.hash_provider.hash(data),
        None => unreachable!("a TLS 1.3 suite"),
    };
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The parts of a certificate subject that name a user.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Subject {
    pub(crate) common_name: String,
    pub(crate) organizations: Vec<String>,
}

/// One DER element: (tag, contents, the bytes after it).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// The subject's CommonName and Organization values (Go's `pkix.Name` rules), or None if
/// the certificate cannot be read that far.
pub(crate) fn subject_of(cert: &[u8]) -> Option<Subject> {
    let (SEQUENCE, cert, _) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = tlv(cert)? else {
        return None;
    };
    // [0] version (optional), serialNumber, signature, issuer, validity, subject.
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = tlv(tbs)?.2;
    }
    let (SEQUENCE, mut name, _) = tlv(tbs)? else {
        return None;
    };
    let mut subject = Subject {
        common_name: String::new(),
        organizations: Vec::new(),
    };
    while !name.is_empty() {
        let (SET, mut rdn, rest) = tlv(name)? else {
            return None;
        };
        name = rest;
        while !rdn.is_empty() {
            let (SEQUENCE, attr, rest) = tlv(rdn)? else {
                return None;
            };
            rdn = rest;
            let (0x06, oid, value) = tlv(attr)? else {
                return None;
            };
            let (tag, value, _) = tlv(value)?;
            let Some(value) = string_value(tag, value) else {
                continue;
            };
            if oid == OID_COMMON_NAME {
                subject.common_name = value;
            } else if oid == OID_ORGANIZATION {
                subject.organizations.push(value);
            }
        }
    }
    Some(subject)
}

/// The ASN.1 string types a name attribute may use.
fn string_value(tag: u8, v: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, NumericString
        0x0c | 0x13 | 0x16 | 0x12 => String::from_utf8(v.to_vec()).ok(),
        // T61String, read as Latin-1 as Go does.
        0x14 => Some(v.iter().map(|&b| b as char).collect()),
        // BMPString: UTF-16BE.
        0x1e if v.len().is_multiple_of(2) => {
            let units: Vec<u16> = v
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};

    /// A CA and a function issuing client certificates from it.
    pub(crate) struct TestCa {
        pub(crate) pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl TestCa {
        pub(crate) fn new(name: &str) -> TestCa {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let key = KeyPair::generate().unwrap();
            let pem = p.self_signed(&key).unwrap().pem();
            TestCa {
                pem,
                issuer: Issuer::new(p, key),
            }
        }

        /// A client certificate (DER) with CN `cn` and O `org` (rcgen keeps one value per
        /// attribute type).
        pub(crate) fn client(&self, cn: &str, org: Option<&str>) -> CertificateDer<'static> {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            if let Some(o) = org {
                p.distinguished_name.push(DnType::OrganizationName, o);
            }
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let key = KeyPair::generate().unwrap();
            p.signed_by(&key, &self.issuer).unwrap().der().clone()
        }

        pub(crate) fn client_ca(&self) -> ClientCa {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ca.crt");
            std::fs::write(&path, &self.pem).unwrap();
            ClientCa::load(&path).unwrap()
        }
    }

    #[test]
    fn a_certificate_from_the_ca_names_its_user() {
        let ca = TestCa::new("ca");
        let cert = ca.client("jane", Some("system:masters"));
        let Outcome::User(u) = ca.client_ca().authenticate(std::slice::from_ref(&cert)) else {
            panic!("not authenticated");
        };
        assert_eq!(u.name, "jane");
        assert_eq!(u.groups, ["system:masters"]);
        assert!(u.uid.is_empty());
        let id = &u.extra[CREDENTIAL_ID][0];
        assert!(id.starts_with("X509SHA256=") && id.len() == 11 + 64, "{id}");
    }

    #[test]
    fn another_ca_fails_and_no_certificate_is_not_handled() {
        let ours = TestCa::new("ours");
        let theirs = TestCa::new("theirs");
        let cert = theirs.client("mallory", None);
        let out = ours.client_ca().authenticate(&[cert]);
        assert!(
            matches!(&out, Outcome::Failed(e) if e.contains("CN=mallory")),
            "{out:?}"
        );
        assert!(matches!(
            ours.client_ca().authenticate(&[]),
            Outcome::NotHandled
        ));
        // A verified certificate without a CommonName names nobody.
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let der = p
            .signed_by(&KeyPair::generate().unwrap(), &ours.issuer)
            .unwrap()
            .der()
            .clone();
        assert!(matches!(
            ours.client_ca().authenticate(&[der]),
            Outcome::NotHandled
        ));
    }

    fn der(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = parts.concat();
        let mut out = vec![tag];
        if body.len() < 0x80 {
            out.push(body.len() as u8);
        } else {
            out.extend([0x82, (body.len() >> 8) as u8, body.len() as u8]);
        }
        out.extend(body);
        out
    }

    fn attr(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let oid = der(0x06, &[oid]);
        let value = der(tag, &[value]);
        der(SET, &[&der(SEQUENCE, &[&oid, &value])])
    }

    #[test]
    fn subjects_keep_every_organization_in_order() {
        let name = der(
            SEQUENCE,
            &[
                &attr(OID_ORGANIZATION, 0x0c, b"a"),
                &attr(OID_ORGANIZATION, 0x13, b"b"),
                &attr(OID_COMMON_NAME, 0x0c, b"first"),
                &attr(&[0x55, 0x04, 0x06], 0x13, b"NL"),
                &attr(OID_COMMON_NAME, 0x1e, &[0, b'n']),
            ],
        );
        let version = der(0xa0, &[&der(0x02, &[&[2]])]);
        let tbs = der(
            SEQUENCE,
            &[
                &version,
                &der(0x02, &[&[1]]),
                &der(SEQUENCE, &[]),
                &der(SEQUENCE, &[]),
                &der(SEQUENCE, &[]),
                &name,
            ],
        );
        let cert = der(SEQUENCE, &[&tbs, &der(SEQUENCE, &[])]);
        assert_eq!(
            subject_of(&cert).unwrap(),
            Subject {
                common_name: "n".into(),
                organizations: vec!["a".into(), "b".into()],
            }
        );
        // And from a real certificate.
        let real = TestCa::new("ca").client("u", Some("g"));
        let s = subject_of(&real).unwrap();
        assert_eq!(
            (s.common_name.as_str(), s.organizations),
            ("u", vec!["g".to_string()])
        );
        assert!(subject_of(b"\x30\x03\x02\x01\x00").is_none());
        assert!(subject_of(&[]).is_none());
        // The fingerprint is SHA-256 ("abc" is the FIPS 180-2 example).
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
