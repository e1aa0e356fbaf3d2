//! # keelson-proto
//!
//! Protocol buffer definitions of the etcd v3 API, together with the Rust
//! message types and the [tonic] gRPC clients and servers generated from them.
//! Everything else in Keelson speaks to the outside world through this crate.
//!
//! ## Wire compatibility with etcd
//!
//! The `.proto` files in `protos/` are written for Keelson but describe
//! exactly the same protocol as etcd 3.5: the same protobuf package names
//! (`mvccpb`, `authpb`, `etcdserverpb`, `v3electionpb`, `v3lockpb`), the
//! same service and RPC names (and therefore the same gRPC paths, such as
//! `/etcdserverpb.KV/Range`), the same message names, field names, field
//! numbers and enum values. That is what lets unmodified etcd clients —
//! `etcdctl`, Go's `clientv3`, the Kubernetes apiserver, the Rust
//! `etcd-client` crate — talk to a Keelson server, and Keelson's own client
//! code talk to a real etcd.
//!
//! etcd's HTTP/JSON gateway annotations and gogoproto options are left out:
//! they change neither the binary encoding nor the gRPC paths.
//!
//! ## Field numbers are forever
//!
//! A protobuf field is identified on the wire only by its number and wire
//! type. **Never change, reuse or renumber a field, and never change an enum
//! value**: doing so silently corrupts data exchanged with etcd clients
//! instead of failing loudly. New fields may only be added with numbers etcd
//! itself uses for them (a later etcd release may claim any unused number).
//! Field *names* should not change either; they are part of etcd's JSON
//! mapping and of the generated Rust API.
//!
//! ## Generated Rust names
//!
//! prost converts field names to snake case, so etcd's capitalised names
//! appear as e.g. `ttl` (`TTL`), `id` (`ID`), `granted_ttl` (`grantedTTL`),
//! `member_id` (`memberID`) and — less prettily — `peer_ur_ls` (`peerURLs`)
//! and `client_ur_ls` (`clientURLs`). Enum variants lose their
//! SCREAMING_CASE: `range_request::SortOrder::Ascend`,
//! `mvccpb::event::EventType::Delete`, and so on.
//!
//! For every service `Foo` there is a server module `foo_server` with the
//! trait `Foo` and the `FooServer` wrapper, and a client module `foo_client`
//! with `FooClient`; for example [`etcdserverpb::kv_server::Kv`] and
//! [`etcdserverpb::kv_client::KvClient`].

/// MVCC key-value records and watch events (`kv.proto`).
#[allow(clippy::all, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Users, roles and permissions (`auth.proto`).
#[allow(clippy::all, missing_docs)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// The KV, Watch, Lease, Cluster, Maintenance and Auth services
/// (`rpc.proto`).
#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// The Election service (`v3election.proto`).
#[allow(clippy::all, missing_docs)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// The Lock service (`v3lock.proto`).
#[allow(clippy::all, missing_docs)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// Keelson's member-to-member raft transport (`raft.proto`): not part of etcd's API.
#[allow(clippy::all, missing_docs)]
pub mod keelsonraftpb {
    tonic::include_proto!("keelsonraftpb");
}

/// Encoded `FileDescriptorSet` of all the protos above, e.g. for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("etcd_descriptor");
