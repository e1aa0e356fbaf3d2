//! `componentstatuses` (core/v1 `ComponentStatus`, `kubectl get cs`): the health of the
//! control plane's parts as this apiserver sees them, probed on every request and never
//! stored (upstream `pkg/registry/core/componentstatus`).
//!
//! Invariants, as upstream:
//! - Three components. `etcd-0` is the store, probed with a real read of `/registry/health`
//!   through the etcd v3 API: Healthy with message `ok`, or Unhealthy with error
//!   `error getting data from etcd: …`. `scheduler` and `controller-manager` are probed
//!   with an HTTPS GET of `/healthz` on 127.0.0.1 at their fixed ports (10259, 10257),
//!   without verifying the certificate: a 2xx/3xx is Healthy with the body as message;
//!   anything else is Unhealthy with the failure as *message* and no error, as upstream's
//!   HTTP prober reports it (`Get "https://127.0.0.1:10259/healthz": dial tcp
//!   127.0.0.1:10259: connect: connection refused` when nothing listens).
//! - Only get and list. A list applies label and field selectors, ignores paging and
//!   resourceVersion, and has no resourceVersion; getting a name that is no component is
//!   upstream's plain error, a 500 `Component not found: <name>`.
//! - Every reply carries the deprecation warning upstream sends for this kind
//!   (deprecated in 1.19), which kubectl prints on stderr.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::{header, Method, Response};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::etcd::Etcd;
use crate::handlers::{json_reply, Call, State};
use crate::request::{ResourceRequest, Wants};
use crate::resources::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::Body;
use crate::table::Include;

/// Upstream's `probeTimeOut`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// Upstream's HTTP prober reads at most this much of a body (`maxRespBodyLength`).
const MAX_BODY: usize = 10 * 1024;
/// The `Warning` header of a deprecated kind (`299 - "<message>"`).
const DEPRECATED: &str = "299 - \"v1 ComponentStatus is deprecated in v1.19+\"";
/// `ObjectMeta.name`'s description, the Name column's in every upstream table.
const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating \
    resources, although some resources may allow a client to request the generation of an \
    appropriate name automatically. Name is primarily intended for creation idempotence and \
    configuration definition. Cannot be updated. More info: \
    https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// How one component is probed.
#[derive(Clone, Copy)]
enum Probe {
    /// The store, through the etcd v3 API.
    Store,
    /// `GET https://127.0.0.1:<port>/healthz`.
    Healthz(u16),
}

/// The components in the order they are listed (upstream's order varies run to run).
const COMPONENTS: &[(&str, Probe)] = &[
    ("scheduler", Probe::Healthz(10259)),
    ("controller-manager", Probe::Healthz(10257)),
    ("etcd-0", Probe::Store),
];

/// A probe's outcome: the `Healthy` condition's status, message and error.
#[derive(Debug, PartialEq, Eq)]
struct Health {
    healthy: bool,
    message: String,
    error: String,
}

pub(crate) async fn serve(state: &State, r: ResourceRequest, call: Call) -> Result<Response<Body>> {
    if call.method != Method::GET || call.query.flag("watch")? {
        return Err(Error::MethodNotAllowed);
    }
    let def = r.def;
    let include = Include::parse(call.query.get("includeObject"));
    let body = match r.name {
        Some(name) => {
            let probe = COMPONENTS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| Error::Internal(format!("Component not found: {name}")))?;
            let obj = object(&name, &check(&state.registry.etcd, probe).await);
            match call.wants {
                Wants::Table(av) => table(&[obj], av, include),
                _ => obj,
            }
        }
        None => {
            let labels = LabelSelector::parse(call.query.get("labelSelector"))?;
            let fields = FieldSelector::parse(def, call.query.get("fieldSelector"))?;
            let etcd = &state.registry.etcd;
            let checks = COMPONENTS
                .iter()
                .map(|(name, probe)| async move { object(name, &check(etcd, *probe).await) });
            let items: Vec<Value> = futures::future::join_all(checks)
                .await
                .into_iter()
                .filter(|o| labels.matches(o) && fields.matches(def, o))
                .collect();
            match call.wants {
                Wants::Table(av) => table(&items, av, include),
                _ => list(def, items),
            }
        }
    };
    let mut reply = json_reply(200, &body);
    reply.headers_mut().insert(
        header::WARNING,
        header::HeaderValue::from_static(DEPRECATED),
    );
    Ok(reply)
}

fn object(name: &str, h: &Health) -> Value {
    let mut condition =
        json!({"type": "Healthy", "status": if h.healthy { "True" } else { "False" }});
    if !h.message.is_empty() {
        condition["message"] = json!(h.message);
    }
    if !h.error.is_empty() {
        condition["error"] = json!(h.error);
    }
    json!({
        "kind": "ComponentStatus",
        "apiVersion": "v1",
        "metadata": {"name": name, "creationTimestamp": null},
        "conditions": [condition],
    })
}

/// A `ComponentStatusList`: items without kind and apiVersion, as typed lists are encoded.
fn list(def: &ResourceDef, items: Vec<Value>) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": def.api_version(),
        "metadata": {},
        "items": items,
    })
}

/// Upstream's ComponentStatus table: NAME STATUS MESSAGE ERROR.
fn table(items: &[Value], api_version: &str, include: Include) -> Value {
    let column = |name: &str, description: &str| {
        let format = if name == "Name" { "name" } else { "" };
        json!({"name": name, "type": "string", "format": format, "description": description, "priority": 0})
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let c = &o["conditions"][0];
            let status = if c["status"] == "True" {
                "Healthy"
            } else {
                "Unhealthy"
            };
            let mut row = json!({"cells": [
                o["metadata"]["name"],
                status,
                c["message"].as_str().unwrap_or(""),
                c["error"].as_str().unwrap_or(""),
            ]});
            match include {
                Include::None => {}
                Include::Object => row["object"] = o.clone(),
                Include::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": {},
        "columnDefinitions": [
            column("Name", NAME_DOC),
            column("Status", "Status of the component conditions"),
            column("Message", "Message of the component conditions"),
            column("Error", "Error of the component conditions"),
        ],
        "rows": rows,
    })
}

async fn check(etcd: &Etcd, probe: Probe) -> Health {
    match probe {
        Probe::Store => {
            let read = tokio::time::timeout(PROBE_TIMEOUT, etcd.get("/registry/health")).await;
            match read {
                Ok(Ok(_)) => Health {
                    healthy: true,
                    message: "ok".into(),
                    error: String::new(),
                },
                Ok(Err(e)) => store_failure(e.to_string()),
                Err(_) => store_failure("context deadline exceeded".into()),
            }
        }
        Probe::Healthz(port) => {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            let url = format!("https://{addr}/healthz");
            match tokio::time::timeout(PROBE_TIMEOUT, healthz(addr)).await {
                Ok(Ok((code, body))) if (200..400).contains(&code) => Health {
                    healthy: true,
                    message: body,
                    error: String::new(),
                },
                Ok(Ok((code, _))) => {
                    http_failure(format!("HTTP probe failed with statuscode: {code}"))
                }
                Ok(Err(e)) => http_failure(format!("Get \"{url}\": {e}")),
                Err(_) => http_failure(format!(
                    "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while \
                     awaiting headers)"
                )),
            }
        }
    }
}

fn store_failure(detail: String) -> Health {
    Health {
        healthy: false,
        message: String::new(),
        error: format!("error getting data from etcd: {detail}"),
    }
}

/// Upstream's HTTP prober turns every transport failure into a failed probe whose message
/// is the error, with no error of its own.
fn http_failure(message: String) -> Health {
    Health {
        healthy: false,
        message,
        error: String::new(),
    }
}

/// One HTTP/1.1 `GET /healthz` over TLS, certificate unchecked: the status code and body.
/// Errors read as Go's net/http words them (`dial tcp …: connect: connection refused`).
async fn healthz(addr: SocketAddr) -> std::result::Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                format!("dial tcp {addr}: connect: connection refused")
            }
            _ => format!("dial tcp {addr}: {e}"),
        })?;
    let connector = tokio_rustls::TlsConnector::from(insecure_client_config());
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("remote error: tls: {e}"))?;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let read = (&mut tls)
        .take((MAX_BODY + 16 * 1024) as u64)
        .read_to_end(&mut raw)
        .await;
    // A server that closes without TLS close_notify still delivered its reply.
    if let Err(e) = read {
        if raw.is_empty() {
            return Err(e.to_string());
        }
    }
    parse_response(&raw).ok_or_else(|| "malformed HTTP response".to_string())
}

/// The status code and body of a complete HTTP/1.1 response (plain or chunked).
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let code: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            if k == "transfer-encoding" && v.contains("chunked") {
                chunked = true;
            } else if k == "content-length" {
                body = &body[..v.parse::<usize>().ok()?.min(body.len())];
            }
        }
    }
    let mut out = Vec::new();
    if chunked {
        loop {
            let end = body.windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(&body[..end]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            body = &body[end + 2..];
            if size == 0 || size > body.len() {
                break;
            }
            out.extend_from_slice(&body[..size]);
            body = body.get(size + 2..).unwrap_or_default();
        }
    } else {
        out.extend_from_slice(body);
    }
    out.truncate(MAX_BODY);
    Some((code, String::from_utf8_lossy(&out).into_owned()))
}

/// A TLS client that accepts any server certificate (upstream: `InsecureSkipVerify`) but
/// still checks the handshake signatures.
fn insecure_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(cfg)
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(parse_response(plain), Some((200, "ok".into())));
        let chunked =
            b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n2\r\n!!\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((500, "bad!!".into())));
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn table_cells_follow_upstream_printer() {
        let up = object(
            "etcd-0",
            &Health {
                healthy: true,
                message: "ok".into(),
                error: String::new(),
            },
        );
        let down = object("scheduler", &http_failure("Get \"x\": refused".into()));
        let t = table(&[up, down], "meta.k8s.io/v1", Include::Metadata);
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Status", "Message", "Error"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["etcd-0", "Healthy", "ok", ""])
        );
        assert_eq!(
            t["rows"][1]["cells"],
            json!(["scheduler", "Unhealthy", "Get \"x\": refused", ""])
        );
        assert_eq!(t["rows"][1]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][1]["object"]["metadata"]["name"], "scheduler");
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_reads_as_go_reports_it() {
        // Bind then drop: the port is (very likely) closed for the probe.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        assert_eq!(
            healthz(addr).await,
            Err(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }
}
