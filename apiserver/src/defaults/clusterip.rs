//! Service cluster IP allocation from 10.96.0.0/12, kept in the store so that any number of
//! apiservers sharing it never hand out one address twice.
//!
//! Invariants:
//! - An address is taken exactly when the key `/registry/ranges/serviceips/<ip>` exists; it
//!   is created with a Txn guarded on "key absent" (mod_revision 0), so of two concurrent
//!   claims exactly one wins. Its value names the owner (namespace, name, uid) and when it was
//!   claimed.
//! - The allocation is made before the Service is written and released when that write
//!   fails or the Service is deleted. A claim left behind (a crash in between, or a Service
//!   removed with its namespace) is reclaimed when an allocation collides with it, provided
//!   it is older than [`GRACE_SECONDS`] and its owner no longer exists with that uid; the
//!   reclaim is guarded on the stale key's mod_revision.
//! - Dynamic allocation skips the first 256 addresses (upstream keeps a lower band for
//!   addresses chosen by clients; 10.96.0.1 is the `kubernetes` Service's), the network and
//!   the broadcast address.

use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{json, Value};

use crate::error::{Cause, Error, Result};
use crate::etcd::{Etcd, Written};
use crate::keys;
use crate::object::meta_str;
use crate::registry::Registry;
use crate::resources::ResourceDef;

/// The service CIDR (upstream's default `--service-cluster-ip-range`).
pub(crate) const RANGE: &str = "10.96.0.0/12";
const BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SIZE: u32 = 1 << 20;
const LOWER_BAND: u32 = 256;
const KEY_PREFIX: &str = "/registry/ranges/serviceips/";
/// How old an orphaned claim must be before a colliding allocation takes it over.
pub(crate) const GRACE_SECONDS: i64 = 60;
const ATTEMPTS: usize = 64;

fn key(ip: Ipv4Addr) -> String {
    format!("{KEY_PREFIX}{ip}")
}

fn in_range(ip: Ipv4Addr) -> bool {
    let n = u32::from(ip);
    n & !(SIZE - 1) == BASE && n != BASE && n != BASE + SIZE - 1
}

fn invalid(svc: &Value, ip: &str, detail: String) -> Error {
    Error::Invalid {
        group: String::new(),
        kind: "Service".into(),
        name: meta_str(svc, "name").unwrap_or_default().to_string(),
        causes: vec![Cause {
            reason: "FieldValueInvalid",
            field: "spec.clusterIPs".into(),
            message: format!("Invalid value: []string{{{ip:?}}}: {detail}"),
        }],
    }
}

/// Claims `ip` for `owner`; false when someone else holds it.
async fn claim(etcd: &Etcd, ip: Ipv4Addr, owner: &Value) -> Result<bool> {
    let value = serde_json::to_vec(owner).unwrap_or_default();
    match etcd.put_if(&key(ip), value.clone(), 0).await? {
        Written::At(_) => Ok(true),
        Written::Stale(None) => Ok(false),
        Written::Stale(Some(kv)) => {
            let held: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            let age = crate::time::now_unix() - held["at"].as_i64().unwrap_or(0);
            if age < GRACE_SECONDS {
                return Ok(false);
            }
            let ns = held["namespace"].as_str().unwrap_or_default();
            let name = held["name"].as_str().unwrap_or_default();
            let (svc, _) = etcd
                .get(&keys::object_key("services", Some(ns), name))
                .await?;
            let alive = svc
                .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
                .is_some_and(|s| meta_str(&s, "uid") == held["uid"].as_str());
            if alive {
                return Ok(false);
            }
            tracing::info!("reclaiming cluster IP {ip} left behind by {ns}/{name}");
            Ok(matches!(
                etcd.put_if(&key(ip), value, kv.mod_revision).await?,
                Written::At(_)
            ))
        }
    }
}

/// Allocates the cluster IP of a new Service (already defaulted and validated, with its uid):
/// the one it asks for, or a free one. Returns the address claimed, if any (headless and
/// ExternalName Services claim none).
pub(crate) async fn allocate(etcd: &Etcd, svc: &mut Value) -> Result<Option<Ipv4Addr>> {
    let spec = &svc["spec"];
    if spec["type"] == "ExternalName" {
        return Ok(None);
    }
    let requested = spec["clusterIP"]
        .as_str()
        .or_else(|| spec["clusterIPs"][0].as_str())
        .unwrap_or("")
        .to_string();
    let owner = json!({
        "namespace": meta_str(svc, "namespace").unwrap_or_default(),
        "name": meta_str(svc, "name").unwrap_or_default(),
        "uid": meta_str(svc, "uid").unwrap_or_default(),
        "at": crate::time::now_unix(),
    });
    let ip = if requested == "None" {
        None
    } else if requested.is_empty() {
        let mut got = None;
        for _ in 0..ATTEMPTS {
            let offset = rand::rng().random_range(LOWER_BAND..SIZE - 1);
            let ip = Ipv4Addr::from(BASE + offset);
            if claim(etcd, ip, &owner).await? {
                got = Some(ip);
                break;
            }
        }
        Some(got.ok_or_else(|| {
            Error::Internal("failed to allocate a serviceIP: range is full".into())
        })?)
    } else {
        let ip: Ipv4Addr = requested.parse().map_err(|_| {
            invalid(
                svc,
                &requested,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into(),
            )
        })?;
        if !in_range(ip) {
            return Err(invalid(
                svc,
                &requested,
                format!(
                    "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid \
                     range. The range of valid IPs is {RANGE}"
                ),
            ));
        }
        if !claim(etcd, ip, &owner).await? {
            return Err(invalid(
                svc,
                &requested,
                format!("failed to allocate IP {ip}: provided IP is already allocated"),
            ));
        }
        Some(ip)
    };
    let shown = ip.map_or("None".to_string(), |ip| ip.to_string());
    let spec = &mut svc["spec"];
    spec["clusterIP"] = json!(shown);
    spec["clusterIPs"] = json!([shown]);
    if spec["ipFamilyPolicy"].is_null() {
        spec["ipFamilyPolicy"] = json!("SingleStack");
    }
    if spec["ipFamilies"].is_null() {
        spec["ipFamilies"] = json!(["IPv4"]);
    }
    Ok(ip)
}

/// Releases the cluster IPs `svc` holds (after its deletion, or a failed create). Claims
/// owned by another uid are left alone.
pub(crate) async fn release(etcd: &Etcd, svc: &Value) -> Result<()> {
    let uid = meta_str(svc, "uid").unwrap_or_default();
    for ip in svc["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|s| s.parse::<Ipv4Addr>().ok())
    {
        let (kv, _) = etcd.get(&key(ip)).await?;
        let Some(kv) = kv else { continue };
        let held: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        if held["uid"].as_str() == Some(uid) {
            etcd.delete_if(&key(ip), kv.mod_revision).await?;
        }
    }
    Ok(())
}

/// Creates `obj` (prepared by `object::prepare_create`) through `registry`, allocating a
/// Service's cluster IP first and releasing it if the write fails.
pub(crate) async fn create(
    registry: &Registry,
    def: &ResourceDef,
    mut obj: Value,
) -> Result<Value> {
    if !(def.group.is_empty() && def.kind == "Service") {
        return registry.create(def, obj).await;
    }
    allocate(&registry.etcd, &mut obj).await?;
    match registry.create(def, obj.clone()).await {
        Ok(created) => Ok(created),
        Err(e) => {
            if let Err(r) = release(&registry.etcd, &obj).await {
                tracing::warn!("releasing a cluster IP after a failed create: {r}");
            }
            Err(e)
        }
    }
}

/// After `deleted` (an object of `def`) is gone: frees a Service's cluster IP. Failures are
/// logged; the claim is then reclaimed on collision (see the module invariants).
pub(crate) async fn after_delete(etcd: &Etcd, def: &ResourceDef, deleted: &Value) {
    if def.group.is_empty() && def.kind == "Service" {
        if let Err(e) = release(etcd, deleted).await {
            tracing::warn!("releasing a deleted Service's cluster IP: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_10_96_0_0_slash_12() {
        assert!(in_range("10.96.0.1".parse().unwrap()));
        assert!(in_range("10.111.255.254".parse().unwrap()));
        assert!(!in_range("10.96.0.0".parse().unwrap()));
        assert!(!in_range("10.111.255.255".parse().unwrap()));
        assert!(!in_range("10.112.0.1".parse().unwrap()));
        assert!(!in_range("10.95.255.1".parse().unwrap()));
    }

    #[test]
    fn allocation_errors_read_as_upstreams() {
        let svc = json!({"metadata": {"name": "web"}});
        let e = invalid(&svc, "1.2.3.4", "x".into());
        assert_eq!(
            e.status()["message"],
            "Service \"web\" is invalid: spec.clusterIPs: Invalid value: []string{\"1.2.3.4\"}: x"
        );
    }
}
