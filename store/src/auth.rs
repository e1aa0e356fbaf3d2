//! Users and roles: etcd's auth store, replicated through the log.
//!
//! Every change (add, delete, grant, revoke, password) is an [`AuthCommand`] applied in log
//! order, like any write, and bumps the auth revision. Reads (UserGet, RoleList, ...) are served
//! from memory. Records live in the backend under `u` (users) and `r` (roles) as crc-framed
//! `authpb.User` / `authpb.Role` (`keys.rs`).
//!
//! Passwords are hashed with bcrypt (cost 10, as etcd) *before* proposing, so a plaintext
//! password never enters the log and apply stays deterministic (etcd 3.4 hashed inside apply,
//! giving every member a different salt; 3.5 moved it out, as here).
//!
//! Authentication itself is not enforced yet: auth is never enabled (see `server/auth.rs`),
//! so the rules etcd applies only while it is enabled (the root user and role cannot be
//! removed) never trigger.

use std::collections::BTreeMap;

use keelson_proto::authpb::{Permission, Role, User, UserAddOptions};
use keelson_proto::etcdserverpb::{
    AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserDeleteRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
};
use parking_lot::RwLock;
use prost::Message;

use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::keys;

/// etcd's built-in root role, which need not exist to be granted.
pub(crate) const ROOT_ROLE: &str = "root";

/// An auth change, as proposed. Passwords are already hashed (`hashed_password`).
#[derive(Debug, Clone, PartialEq)]
pub enum AuthCommand {
    UserAdd(AuthUserAddRequest),
    UserDelete(AuthUserDeleteRequest),
    UserChangePassword(AuthUserChangePasswordRequest),
    UserGrantRole(AuthUserGrantRoleRequest),
    UserRevokeRole(AuthUserRevokeRoleRequest),
    RoleAdd(AuthRoleAddRequest),
    RoleDelete(AuthRoleDeleteRequest),
    RoleGrantPermission(AuthRoleGrantPermissionRequest),
    RoleRevokePermission(AuthRoleRevokePermissionRequest),
}

impl AuthCommand {
    /// A sub-tag byte and the request's protobuf encoding.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            AuthCommand::UserAdd(r) => (1u8, r.encode_to_vec()),
            AuthCommand::UserDelete(r) => (2, r.encode_to_vec()),
            AuthCommand::UserChangePassword(r) => (3, r.encode_to_vec()),
            AuthCommand::UserGrantRole(r) => (4, r.encode_to_vec()),
            AuthCommand::UserRevokeRole(r) => (5, r.encode_to_vec()),
            AuthCommand::RoleAdd(r) => (6, r.encode_to_vec()),
            AuthCommand::RoleDelete(r) => (7, r.encode_to_vec()),
            AuthCommand::RoleGrantPermission(r) => (8, r.encode_to_vec()),
            AuthCommand::RoleRevokePermission(r) => (9, r.encode_to_vec()),
        };
        let mut v = Vec::with_capacity(1 + body.len());
        v.push(tag);
        v.extend_from_slice(&body);
        v
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<AuthCommand> {
        let (tag, body) = buf
            .split_first()
            .ok_or_else(|| Error::Corrupt("empty auth command".into()))?;
        let bad = |e: prost::DecodeError| Error::Corrupt(format!("auth command tag {tag}: {e}"));
        Ok(match tag {
            1 => AuthCommand::UserAdd(Message::decode(body).map_err(bad)?),
            2 => AuthCommand::UserDelete(Message::decode(body).map_err(bad)?),
            3 => AuthCommand::UserChangePassword(Message::decode(body).map_err(bad)?),
            4 => AuthCommand::UserGrantRole(Message::decode(body).map_err(bad)?),
            5 => AuthCommand::UserRevokeRole(Message::decode(body).map_err(bad)?),
            6 => AuthCommand::RoleAdd(Message::decode(body).map_err(bad)?),
            7 => AuthCommand::RoleDelete(Message::decode(body).map_err(bad)?),
            8 => AuthCommand::RoleGrantPermission(Message::decode(body).map_err(bad)?),
            9 => AuthCommand::RoleRevokePermission(Message::decode(body).map_err(bad)?),
            t => return Err(Error::Corrupt(format!("unknown auth command tag {t}"))),
        })
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.encode().len()
    }
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    revision: u64,
}

pub(crate) struct AuthStore {
    state: RwLock<State>,
}

fn name_of(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec())
        .map_err(|_| Error::Corrupt(format!("auth name {b:?} is not UTF-8")))
}

impl AuthStore {
    pub(crate) fn open(backend: &dyn Backend) -> Result<AuthStore> {
        let mut st = State::default();
        for item in backend.scan(&[keys::USER_PREFIX], &keys::space_end(keys::USER_PREFIX)) {
            let (k, v) = item?;
            let user = User::decode(keys::unframe(&"auth user", &v)?)
                .map_err(|e| Error::Corrupt(format!("auth user {k:?}: {e}")))?;
            st.users.insert(name_of(&user.name)?, user);
        }
        for item in backend.scan(&[keys::ROLE_PREFIX], &keys::space_end(keys::ROLE_PREFIX)) {
            let (k, v) = item?;
            let role = Role::decode(keys::unframe(&"auth role", &v)?)
                .map_err(|e| Error::Corrupt(format!("auth role {k:?}: {e}")))?;
            st.roles.insert(name_of(&role.name)?, role);
        }
        if let Some(v) = backend.get(&keys::meta_key(keys::META_AUTH_REVISION))? {
            st.revision = keys::unframe_i64(&keys::META_AUTH_REVISION, &v)? as u64;
        }
        Ok(AuthStore {
            state: RwLock::new(st),
        })
    }

    /// Takes `fresh`'s users, roles and revision in place (a restore), so every holder of this
    /// store sees them.
    pub(crate) fn replace(&self, fresh: AuthStore) {
        *self.state.write() = fresh.state.into_inner();
    }

    /// The auth revision: the number of auth changes applied.
    pub(crate) fn revision(&self) -> u64 {
        self.state.read().revision
    }

    pub(crate) fn user(&self, name: &str) -> Result<User> {
        self.state
            .read()
            .users
            .get(name)
            .cloned()
            .ok_or(Error::UserNotFound)
    }

    pub(crate) fn user_names(&self) -> Vec<String> {
        self.state.read().users.keys().cloned().collect()
    }

    pub(crate) fn role(&self, name: &str) -> Result<Role> {
        self.state
            .read()
            .roles
            .get(name)
            .cloned()
            .ok_or(Error::RoleNotFound)
    }

    pub(crate) fn role_names(&self) -> Vec<String> {
        self.state.read().roles.keys().cloned().collect()
    }

    /// Applies a change: validates it against the current state, then records it in memory
    /// and in `batch`. Nothing changes when it fails.
    pub(crate) fn apply(&self, cmd: &AuthCommand, batch: &mut WriteBatch) -> Result<()> {
        let mut st = self.state.write();
        let mut users: Vec<User> = Vec::new();
        let mut roles: Vec<Role> = Vec::new();
        let mut deleted_user: Option<String> = None;
        let mut deleted_role: Option<String> = None;
        match cmd {
            AuthCommand::UserAdd(r) => {
                if r.name.is_empty() {
                    return Err(Error::UserEmpty);
                }
                if st.users.contains_key(&r.name) {
                    return Err(Error::UserAlreadyExists);
                }
                let options = r.options.unwrap_or(UserAddOptions { no_password: false });
                users.push(User {
                    name: r.name.clone().into_bytes().into(),
                    password: r.hashed_password.clone().into_bytes().into(),
                    roles: Vec::new(),
                    options: Some(options),
                });
            }
            AuthCommand::UserDelete(r) => {
                st.users.get(&r.name).ok_or(Error::UserNotFound)?;
                deleted_user = Some(r.name.clone());
            }
            AuthCommand::UserChangePassword(r) => {
                let mut u = st.users.get(&r.name).cloned().ok_or(Error::UserNotFound)?;
                u.password = r.hashed_password.clone().into_bytes().into();
                users.push(u);
            }
            AuthCommand::UserGrantRole(r) => {
                let mut u = st.users.get(&r.user).cloned().ok_or(Error::UserNotFound)?;
                if r.role != ROOT_ROLE && !st.roles.contains_key(&r.role) {
                    return Err(Error::RoleNotFound);
                }
                if let Err(at) = u.roles.binary_search(&r.role) {
                    u.roles.insert(at, r.role.clone());
                }
                users.push(u);
            }
            AuthCommand::UserRevokeRole(r) => {
                let mut u = st.users.get(&r.name).cloned().ok_or(Error::UserNotFound)?;
                let at = u
                    .roles
                    .iter()
                    .position(|x| *x == r.role)
                    .ok_or(Error::RoleNotGranted)?;
                u.roles.remove(at);
                users.push(u);
            }
            AuthCommand::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(Error::RoleEmpty);
                }
                if st.roles.contains_key(&r.name) {
                    return Err(Error::RoleAlreadyExists);
                }
                roles.push(Role {
                    name: r.name.clone().into_bytes().into(),
                    key_permission: Vec::new(),
                });
            }
            AuthCommand::RoleDelete(r) => {
                st.roles.get(&r.role).ok_or(Error::RoleNotFound)?;
                deleted_role = Some(r.role.clone());
                // Revoke it from every user that has it, as etcd does.
                for u in st.users.values().filter(|u| u.roles.contains(&r.role)) {
                    let mut u = u.clone();
                    u.roles.retain(|x| *x != r.role);
                    users.push(u);
                }
            }
            AuthCommand::RoleGrantPermission(r) => {
                let mut role = st.roles.get(&r.name).cloned().ok_or(Error::RoleNotFound)?;
                let perm = r.perm.clone().ok_or_else(|| {
                    Error::InvalidArgument("etcdserver: permission not given".into())
                })?;
                match role
                    .key_permission
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(existing) => existing.perm_type = perm.perm_type,
                    None => {
                        role.key_permission.push(Permission { ..perm });
                        // Stable, so permissions on one key keep their order, as Go's sort
                        // does for etcdctl's small lists.
                        role.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                roles.push(role);
            }
            AuthCommand::RoleRevokePermission(r) => {
                let mut role = st.roles.get(&r.role).cloned().ok_or(Error::RoleNotFound)?;
                let at = role
                    .key_permission
                    .iter()
                    .position(|p| p.key == r.key && p.range_end == r.range_end)
                    .ok_or(Error::PermissionNotGranted)?;
                role.key_permission.remove(at);
                roles.push(role);
            }
        }
        if let Some(name) = deleted_user {
            batch.delete(keys::auth_key(keys::USER_PREFIX, name.as_bytes()));
            st.users.remove(&name);
        }
        if let Some(name) = deleted_role {
            batch.delete(keys::auth_key(keys::ROLE_PREFIX, name.as_bytes()));
            st.roles.remove(&name);
        }
        for u in users {
            let name = name_of(&u.name)?;
            batch.put(
                keys::auth_key(keys::USER_PREFIX, &u.name),
                keys::frame(&u.encode_to_vec()),
            );
            st.users.insert(name, u);
        }
        for r in roles {
            let name = name_of(&r.name)?;
            batch.put(
                keys::auth_key(keys::ROLE_PREFIX, &r.name),
                keys::frame(&r.encode_to_vec()),
            );
            st.roles.insert(name, r);
        }
        st.revision += 1;
        batch.put(
            keys::meta_key(keys::META_AUTH_REVISION),
            keys::frame_i64(st.revision as i64),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    fn apply(s: &AuthStore, b: &MemBackend, c: AuthCommand) -> Result<()> {
        let mut batch = WriteBatch::default();
        s.apply(&c, &mut batch)?;
        b.write(batch)
    }

    #[test]
    fn users_and_roles_follow_etcd_rules_and_survive_reopen() {
        let b = MemBackend::default();
        let s = AuthStore::open(&b).unwrap();
        let add = |n: &str| {
            AuthCommand::UserAdd(AuthUserAddRequest {
                name: n.into(),
                hashed_password: "h".into(),
                ..Default::default()
            })
        };
        apply(&s, &b, add("root")).unwrap();
        assert_eq!(apply(&s, &b, add("root")), Err(Error::UserAlreadyExists));
        assert_eq!(apply(&s, &b, add("")), Err(Error::UserEmpty));
        let grant = |u: &str, r: &str| {
            AuthCommand::UserGrantRole(AuthUserGrantRoleRequest {
                user: u.into(),
                role: r.into(),
            })
        };
        assert_eq!(apply(&s, &b, grant("root", "r1")), Err(Error::RoleNotFound));
        apply(&s, &b, grant("root", ROOT_ROLE)).unwrap();
        apply(
            &s,
            &b,
            AuthCommand::RoleAdd(AuthRoleAddRequest { name: "r1".into() }),
        )
        .unwrap();
        apply(&s, &b, grant("root", "r1")).unwrap();
        apply(&s, &b, grant("root", "r1")).unwrap();
        assert_eq!(
            s.user("root").unwrap().roles,
            vec!["r1".to_string(), "root".to_string()]
        );
        let perm = |k: &str, t: i32| {
            AuthCommand::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                name: "r1".into(),
                perm: Some(Permission {
                    perm_type: t,
                    key: k.as_bytes().to_vec().into(),
                    range_end: Default::default(),
                }),
            })
        };
        apply(&s, &b, perm("foo", 0)).unwrap();
        apply(&s, &b, perm("bar", 0)).unwrap();
        apply(&s, &b, perm("foo", 2)).unwrap();
        let r1 = s.role("r1").unwrap();
        assert_eq!(
            r1.key_permission
                .iter()
                .map(|p| (p.key.to_vec(), p.perm_type))
                .collect::<Vec<_>>(),
            vec![(b"bar".to_vec(), 0), (b"foo".to_vec(), 2)]
        );
        let revoke = AuthCommand::RoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: "r1".into(),
            key: "nope".into(),
            range_end: Default::default(),
        });
        assert_eq!(apply(&s, &b, revoke), Err(Error::PermissionNotGranted));
        let rev_before = s.revision();
        // Deleting a role revokes it from its users.
        apply(
            &s,
            &b,
            AuthCommand::RoleDelete(AuthRoleDeleteRequest { role: "r1".into() }),
        )
        .unwrap();
        assert_eq!(s.user("root").unwrap().roles, vec!["root".to_string()]);
        assert_eq!(s.revision(), rev_before + 1);
        let reopened = AuthStore::open(&b).unwrap();
        assert_eq!(reopened.user_names(), vec!["root".to_string()]);
        assert!(reopened.role_names().is_empty());
        assert_eq!(
            reopened.user("root").unwrap().roles,
            vec!["root".to_string()]
        );
        assert_eq!(reopened.revision(), s.revision());
        let unrevoke = AuthCommand::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: "root".into(),
            role: "r9".into(),
        });
        assert_eq!(apply(&s, &b, unrevoke), Err(Error::RoleNotGranted));
    }

    #[test]
    fn commands_round_trip() {
        let c = AuthCommand::RoleAdd(AuthRoleAddRequest { name: "r".into() });
        assert_eq!(AuthCommand::decode(&c.encode()).unwrap(), c);
        assert!(AuthCommand::decode(&[42]).is_err());
    }
}
