//! The Auth service, with authentication not enabled — as every etcd member starts.
//!
//! Users and roles work as in etcd with auth disabled: they are stored, replicated through the
//! log and listed (`auth.rs`). What depends on auth being *enabled* is deferred:
//! - AuthEnable checks what etcd checks first (a `root` user holding the `root` role: "root
//!   user does not exist" / "root user does not have root role"), then answers Unimplemented,
//!   because this member cannot yet enforce tokens and permissions and must not pretend to;
//! - Authenticate answers "authentication is not enabled", as etcd does while disabled;
//! - AuthDisable succeeds (disabling a disabled auth is a no-op in etcd);
//! - AuthStatus (etcd 3.5) reports disabled and the auth revision.

use std::sync::Arc;

use keelson_proto::etcdserverpb::auth_server::Auth;
use keelson_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

use crate::apply::{Command, Response as Applied};
use crate::auth::{AuthCommand, ROOT_ROLE};
use crate::core::Core;
use crate::error::Error;
use crate::server::kv::unexpected;

/// etcd's bcrypt cost (`auth.BcryptCost`).
const BCRYPT_COST: u32 = 10;

pub(crate) struct AuthService {
    pub(crate) core: Arc<Core>,
}

impl AuthService {
    /// Proposes an auth change; returns the header for its response.
    async fn change(&self, cmd: AuthCommand) -> Result<Option<ResponseHeader>, Status> {
        match self.core.propose(Command::Auth(cmd)).await? {
            Applied::Auth => Ok(self.core.header(0)),
            other => Err(unexpected(other)),
        }
    }
}

/// Hashes a password off the async runtime (bcrypt is slow on purpose).
async fn hash(password: String) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, BCRYPT_COST))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("keelson: hashing the password: {e}")))
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        _req: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let root = self
            .core
            .auth
            .user("root")
            .map_err(|_| Error::RootUserNotExist)?;
        if !root.roles.iter().any(|r| r == ROOT_ROLE) {
            return Err(Error::RootRoleNotExist.into());
        }
        Err(Status::unimplemented(
            "keelson: enabling authentication is not supported yet",
        ))
    }

    async fn auth_disable(
        &self,
        _req: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        Ok(Response::new(AuthDisableResponse {
            header: self.core.header(0),
        }))
    }

    async fn auth_status(
        &self,
        _req: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        Ok(Response::new(AuthStatusResponse {
            header: self.core.header(0),
            enabled: false,
            auth_revision: self.core.auth.revision(),
        }))
    }

    async fn authenticate(
        &self,
        _req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        Err(Error::AuthNotEnabled.into())
    }

    async fn user_add(
        &self,
        req: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let mut r = req.into_inner();
        if r.name.is_empty() {
            return Err(Error::UserEmpty.into());
        }
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        r.hashed_password = if no_password {
            String::new()
        } else {
            hash(std::mem::take(&mut r.password)).await?
        };
        r.password.clear();
        let header = self.change(AuthCommand::UserAdd(r)).await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        req: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let user = self.core.auth.user(&req.into_inner().name)?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.core.header(0),
            roles: user.roles,
        }))
    }

    async fn user_list(
        &self,
        _req: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        Ok(Response::new(AuthUserListResponse {
            header: self.core.header(0),
            users: self.core.auth.user_names(),
        }))
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let header = self
            .change(AuthCommand::UserDelete(req.into_inner()))
            .await?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let mut r = req.into_inner();
        // Refuse an unknown user before spending a bcrypt on it.
        self.core.auth.user(&r.name)?;
        r.hashed_password = hash(std::mem::take(&mut r.password)).await?;
        let header = self.change(AuthCommand::UserChangePassword(r)).await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let header = self
            .change(AuthCommand::UserGrantRole(req.into_inner()))
            .await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let header = self
            .change(AuthCommand::UserRevokeRole(req.into_inner()))
            .await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        req: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let header = self.change(AuthCommand::RoleAdd(req.into_inner())).await?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        req: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let role = self.core.auth.role(&req.into_inner().role)?;
        Ok(Response::new(AuthRoleGetResponse {
            header: self.core.header(0),
            perm: role.key_permission,
        }))
    }

    async fn role_list(
        &self,
        _req: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        Ok(Response::new(AuthRoleListResponse {
            header: self.core.header(0),
            roles: self.core.auth.role_names(),
        }))
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let header = self
            .change(AuthCommand::RoleDelete(req.into_inner()))
            .await?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let header = self
            .change(AuthCommand::RoleGrantPermission(req.into_inner()))
            .await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let header = self
            .change(AuthCommand::RoleRevokePermission(req.into_inner()))
            .await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}
