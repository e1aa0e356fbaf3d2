//! The Cluster service.
//!
//! MemberList describes the members as etcd does: ID, name, peer URLs, client URLs, learner
//! flag. Response headers carry no revision, as etcd's cluster server leaves it out. Peer URLs
//! are kept sorted, as etcd's `types.NewURLs` keeps them.
//!
//! A replicated member changes the membership through its proposer
//! (`Propose::change_members`: the leader changes it, through joint consensus where voters
//! change) and answers once the change is applied here, with the membership it then sees:
//! - MemberAdd derives the new member's ID as etcd's `NewMember("", peerURLs, "", now)` does
//!   (`added_member_id`: the URLs and the Unix time) and answers it with the URLs and the
//!   learner flag only; its name and client URLs come when it starts and publishes them.
//! - MemberPromote, MemberRemove and MemberUpdate answer etcd's errors for an unknown member, a
//!   voter promoted, a learner behind the leader, URLs already used.
//!
//! The single member cannot change its membership:
//! - MemberAdd of a new member answers etcd's strict-reconfiguration refusal ("not enough
//!   started members"): the member could never be started. Invalid URLs and URLs already
//!   used answer what etcd answers.
//! - MemberRemove of this member answers the same refusal, as etcd's strict reconfiguration
//!   check does for the last voting member.
//! - MemberUpdate of this member succeeds only when the peer URLs are unchanged (this
//!   member's identity comes from its flags); a change answers Unimplemented.
//! - MemberPromote of this member answers "can only promote a learner member".
//!
//! Any other member ID answers "member not found".

use std::sync::Arc;

use keelson_proto::etcdserverpb::cluster_server::Cluster;
use keelson_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use tonic::{Request, Response, Status};

use crate::core::Core;
use crate::error::{Error, Result};
use crate::node::MemberChange;

pub(crate) struct ClusterService {
    pub(crate) core: Arc<Core>,
}

impl ClusterService {
    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.core.cluster_id,
            member_id: self.core.member_id,
            revision: 0,
            raft_term: self.core.proposer().status().map_or(2, |s| s.term),
        })
    }

    fn me(&self) -> Member {
        let cfg = &self.core.cfg;
        Member {
            id: self.core.member_id,
            name: cfg.name.clone(),
            peer_ur_ls: cfg.initial_advertise_peer_urls.clone(),
            client_ur_ls: cfg.advertise_client_urls.clone(),
            is_learner: false,
        }
    }

    /// The membership: the replicated one, or this single member.
    fn list(&self) -> Vec<Member> {
        match self.core.proposer().members() {
            Some(ms) => ms
                .into_iter()
                .map(|m| Member {
                    id: m.id,
                    name: m.name,
                    peer_ur_ls: m.peer_urls,
                    client_ur_ls: m.client_urls,
                    is_learner: m.is_learner,
                })
                .collect(),
            None => vec![self.me()],
        }
    }

    /// Makes `change` through the replicated membership: `None` on the single member.
    async fn change(&self, change: MemberChange) -> Option<Result<Vec<Member>>> {
        let f = self.core.proposer().change_members(change)?;
        Some(f.await.map(|()| self.list()))
    }

    fn find(&self, id: u64) -> Result<Member> {
        if id == self.core.member_id {
            Ok(self.me())
        } else {
            Err(Error::MemberNotFound)
        }
    }
}

/// etcd's `types.NewURLs` check: a non-empty list of scheme://host:port URLs with no path.
pub(crate) fn check_urls(urls: &[String]) -> Result<()> {
    if urls.is_empty() {
        return Err(Error::MemberBadUrls);
    }
    for u in urls {
        let rest = ["http://", "https://", "unix://", "unixs://"]
            .iter()
            .find_map(|s| u.strip_prefix(s))
            .ok_or(Error::MemberBadUrls)?;
        let (host, port) = rest.rsplit_once(':').ok_or(Error::MemberBadUrls)?;
        if host.is_empty() || port.is_empty() || port.contains('/') || port.parse::<u16>().is_err()
        {
            return Err(Error::MemberBadUrls);
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let r = req.into_inner();
        check_urls(&r.peer_ur_ls)?;
        let mut peer_urls = r.peer_ur_ls.clone();
        peer_urls.sort();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = crate::cluster::added_member_id(&peer_urls, now);
        let add = MemberChange::Add {
            id,
            peer_urls: peer_urls.clone(),
            learner: r.is_learner,
        };
        if let Some(members) = self.change(add).await {
            return Ok(Response::new(MemberAddResponse {
                header: self.header(),
                member: Some(Member {
                    id,
                    peer_ur_ls: peer_urls,
                    is_learner: r.is_learner,
                    ..Default::default()
                }),
                members: members?,
            }));
        }
        let mine = &self.core.cfg.initial_advertise_peer_urls;
        if r.peer_ur_ls.iter().any(|u| mine.contains(u)) {
            return Err(Error::PeerUrlExists.into());
        }
        Err(Error::MemberNotEnoughStarted.into())
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let id = req.into_inner().id;
        if let Some(members) = self.change(MemberChange::Remove { id }).await {
            return Ok(Response::new(MemberRemoveResponse {
                header: self.header(),
                members: members?,
            }));
        }
        self.find(id)?;
        Err(Error::MemberNotEnoughStarted.into())
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let r = req.into_inner();
        check_urls(&r.peer_ur_ls)?;
        let mut peer_urls = r.peer_ur_ls.clone();
        peer_urls.sort();
        let update = MemberChange::Update {
            id: r.id,
            peer_urls,
        };
        if let Some(members) = self.change(update).await {
            return Ok(Response::new(MemberUpdateResponse {
                header: self.header(),
                members: members?,
            }));
        }
        let me = self.find(r.id)?;
        let (mut want, mut have) = (r.peer_ur_ls.clone(), me.peer_ur_ls.clone());
        want.sort();
        have.sort();
        if want != have {
            return Err(Status::unimplemented(
                "keelson: changing a member's peer URLs is not supported before replication",
            ));
        }
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: vec![me],
        }))
    }

    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        // Under replication the membership comes from the log; a member's client URLs are
        // known once it has published them (empty until then, as in etcd).
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.list(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let id = req.into_inner().id;
        if let Some(members) = self.change(MemberChange::Promote { id }).await {
            return Ok(Response::new(MemberPromoteResponse {
                header: self.header(),
                members: members?,
            }));
        }
        self.find(id)?;
        Err(Error::MemberNotLearner.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_like_etcd() {
        assert!(check_urls(&["http://127.0.0.1:2380".into()]).is_ok());
        assert!(check_urls(&["https://host:1".into(), "unix://sock:0".into()]).is_ok());
        assert_eq!(check_urls(&[]), Err(Error::MemberBadUrls));
        assert_eq!(check_urls(&["foo".into()]), Err(Error::MemberBadUrls));
        assert_eq!(
            check_urls(&["http://host".into()]),
            Err(Error::MemberBadUrls)
        );
        assert_eq!(
            check_urls(&["http://host:1/path".into()]),
            Err(Error::MemberBadUrls)
        );
    }
}
