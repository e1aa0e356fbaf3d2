//! Cluster identity: member and cluster IDs derived exactly as etcd derives them.
//!
//! A member's ID is the first 8 bytes (big-endian) of sha1(sorted peer URLs ‖ cluster token);
//! the cluster's ID is the first 8 bytes of sha1 of the sorted member IDs, each 8 bytes
//! big-endian (`etcdserver/api/membership/member.go`, `cluster.go`). A member added to a
//! running cluster also hashes the time it was added (`added_member_id`).

use sha1::{Digest, Sha1};

use crate::config::StoreConfig;

/// A member's ID from its peer URLs and the cluster token, as etcd derives it.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    for u in &urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("sha1 has 20 bytes"))
}

/// The ID of a member added with MemberAdd: etcd's `NewMember("", peerURLs, "", &now)` hashes
/// the sorted peer URLs, an empty cluster name and the Unix time in seconds (decimal), so two
/// members added with the same URLs at different times get different IDs.
pub fn added_member_id(peer_urls: &[String], unix_secs: u64) -> u64 {
    member_id(peer_urls, &unix_secs.to_string())
}

pub(crate) fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("sha1 has 20 bytes"))
}

/// This member's ID and the cluster ID from the initial cluster configuration.
pub(crate) fn ids(cfg: &StoreConfig) -> (u64, u64) {
    let token = &cfg.initial_cluster_token;
    let mut by_name: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (name, url) in &cfg.initial_cluster {
        by_name.entry(name.as_str()).or_default().push(url.clone());
    }
    let ids: Vec<u64> = by_name
        .values()
        .map(|urls| member_id(urls, token))
        .collect();
    let me = match by_name.get(cfg.name.as_str()) {
        Some(urls) => member_id(urls, token),
        None => member_id(&cfg.initial_advertise_peer_urls, token),
    };
    let ids = if ids.is_empty() { vec![me] } else { ids };
    (me, cluster_id(&ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_member_id_matches_etcd() {
        // etcd's well-known ID for a default single member (`--name default`, peer URL
        // http://localhost:2380, token etcd-cluster) is 8e9e05c52164694d, cluster cdf818194e3a8c32.
        let m = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{m:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[m])), "cdf818194e3a8c32");
    }

    #[test]
    fn added_member_id_matches_etcd() {
        // etcd 3.4: `etcdctl member add m4 --learner --peer-urls=http://127.0.0.1:9999` at Unix
        // time 1795310661 answered "Member c38407b9554d54dc added".
        let id = added_member_id(&["http://127.0.0.1:9999".to_string()], 1795310661);
        assert_eq!(format!("{id:x}"), "c38407b9554d54dc");
    }
}
