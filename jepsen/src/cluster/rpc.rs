//! The gRPC calls cluster control makes: Status for identity and leadership, a linearizable
//! Range as proof a member serves, and the Cluster API for membership changes.
//!
//! Each call opens its own connection with short timeouts: a member may be dead, paused or cut
//! off, and a cached channel stuck on a stalled connection would make control wait on the very
//! fault it is trying to heal.

use std::time::Duration;

use keelson_proto::etcdserverpb::cluster_client::ClusterClient;
use keelson_proto::etcdserverpb::kv_client::KvClient;
use keelson_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keelson_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberListRequest, MemberRemoveRequest, RangeRequest, StatusRequest,
};
use tonic::transport::{Channel, Endpoint};

/// How long a probe (Status, Range) may take.
pub(crate) const PROBE: Duration = Duration::from_secs(2);
/// How long a membership change may take (etcd's request timeout is 5 s plus elections).
const MEMBERSHIP: Duration = Duration::from_secs(15);

async fn channel(url: &str, timeout: Duration) -> Result<Channel, String> {
    Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("{url}: {e}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))
}

fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// The member's own ID and the leader it names (0: none), or None if it did not answer.
pub(crate) async fn status(url: &str) -> Option<(u64, u64)> {
    let ch = channel(url, PROBE).await.ok()?;
    let mut client = MaintenanceClient::new(ch);
    let call = client.status(StatusRequest {});
    let r = tokio::time::timeout(PROBE, call)
        .await
        .ok()?
        .ok()?
        .into_inner();
    Some((r.header?.member_id, r.leader))
}

/// Whether the member completes a linearizable read: it has a leader and reaches a quorum.
pub(crate) async fn serves(url: &str) -> bool {
    let Ok(ch) = channel(url, PROBE).await else {
        return false;
    };
    let req = RangeRequest {
        key: "jepsen-health".into(),
        ..Default::default()
    };
    let mut client = KvClient::new(ch);
    let call = client.range(req);
    matches!(tokio::time::timeout(PROBE, call).await, Ok(Ok(_)))
}

pub(crate) async fn member_list(url: &str) -> Result<Vec<Member>, String> {
    let ch = channel(url, MEMBERSHIP).await?;
    let mut client = ClusterClient::new(ch);
    let call = client.member_list(MemberListRequest { linearizable: true });
    match tokio::time::timeout(MEMBERSHIP, call).await {
        Ok(Ok(r)) => Ok(r.into_inner().members),
        Ok(Err(s)) => Err(status_text(s)),
        Err(_) => Err("MemberList timed out".into()),
    }
}

pub(crate) async fn member_remove(url: &str, id: u64) -> Result<(), String> {
    let ch = channel(url, MEMBERSHIP).await?;
    let mut client = ClusterClient::new(ch);
    let call = client.member_remove(MemberRemoveRequest { id });
    match tokio::time::timeout(MEMBERSHIP, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(status_text(s)),
        Err(_) => Err("MemberRemove timed out".into()),
    }
}

/// Adds a voting member with `peer_url`: its new ID and the members after the addition.
pub(crate) async fn member_add(url: &str, peer_url: &str) -> Result<(u64, Vec<Member>), String> {
    let ch = channel(url, MEMBERSHIP).await?;
    let req = MemberAddRequest {
        peer_ur_ls: vec![peer_url.to_string()],
        is_learner: false,
    };
    let mut client = ClusterClient::new(ch);
    let call = client.member_add(req);
    match tokio::time::timeout(MEMBERSHIP, call).await {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            let id = r.member.map(|m| m.id).ok_or("MemberAdd named no member")?;
            Ok((id, r.members))
        }
        Ok(Err(s)) => Err(status_text(s)),
        Err(_) => Err("MemberAdd timed out".into()),
    }
}
