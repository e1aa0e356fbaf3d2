//! Helpers shared by Keelson's integration tests.
//!
//! Use from a test crate with `mod common;` (this directory is not a test
//! target of its own). Modules:
//!
//! * [`apiserver`]: `keelson apiserver` on a store with a temp data dir, and kubectl run
//!   with the kubeconfig it writes (options for extra flags/env), for the apiserver tests.
//! * [`cluster`]: `keelson store` members and clusters of them on loopback (start, SIGKILL,
//!   restart, clients once ready, leader/convergence waits, a write load), for the cluster
//!   and crash tests.
//! * [`proc`]: free ports, locating binaries on `PATH`, running a child
//!   process with stdin/timeout/"stop after this line" and a kill-on-drop
//!   guard.
//! * [`server`]: start a fresh single-member real etcd or `keelson store`
//!   (same etcd flags) on free loopback ports in a temp dir, wait until
//!   `etcdctl endpoint health` succeeds, kill it on drop.
//! * [`etcdctl`]: run etcdctl (API v3) against one endpoint.
//! * [`normalize`]: make etcdctl output comparable across servers (IDs,
//!   terms, sizes, timings, paths, ...).
//!
//! Environment variables understood here:
//! * `KEELSON_ETCD_BIN`, `KEELSON_ETCDCTL_BIN`: explicit paths of the
//!   reference binaries (default: `etcd` / `etcdctl` from `PATH`).
//! * `KEELSON_SKIP_ETCD=1`: tests that need the real etcd print a skip
//!   message and pass when etcd/etcdctl are missing (otherwise they fail).
//! * `KEELSON_KEEP_TMP=1`: keep server temp dirs (data, logs) after the test.
//!
//! Each test crate uses only part of this, so it declares the module as
//! `#[allow(dead_code)] mod common;` (Cargo's pattern for shared test helpers).

pub mod apiserver;
pub mod cluster;
pub mod etcdctl;
pub mod normalize;
pub mod proc;
pub mod server;
