//! # keelson-bench: one etcd v3 load tool for etcd and Keelson alike
//!
//! The tool speaks nothing but the etcd v3 gRPC API (through `keelson-proto`'s generated tonic
//! clients), so a figure measured against Keelson and one measured against a real etcd come
//! from the very same client code, connection setup and timing. That is the point of the crate:
//! a ratio is only meaningful when the numerator and the denominator were taken the same way.
//!
//! How a run is shaped:
//! - `--conns` gRPC connections (HTTP/2, one TCP connection each) are opened round-robin over
//!   `--endpoints`; `--clients` workers each keep exactly one request in flight (a closed loop,
//!   as etcd's own `benchmark` tool does), worker `i` on connection `i % conns` ([`driver`]);
//! - a run ends after `--total` operations or after `--duration`;
//! - every latency goes into a per-worker HDR histogram, merged at the end ([`stats`]);
//! - a [`stats::Report`] is printed as a table for people or as JSON for machines, and a
//!   report whose checks failed (a watcher missed an event, a CAS counter lost an update, a
//!   request failed) is not `ok`: the process exits non-zero.
//!
//! Watch workloads measure put→event latency by stamping each value with the send time
//! ([`keys::stamp`]) and check completeness against the revisions the puts were acknowledged
//! with ([`check`]), so a fast but lossy server cannot look good.
//!
//! `watch-idle` measures what idle watchers cost a server: how fast it accepts them and how
//! much its resident memory grows per watcher, read from `/proc` ([`os`]) given the server's
//! pid; it ends by checking that a sample of the watchers is still live.
//!
//! `compare` ([`compare`]) starts a real etcd and a `keelson store` side by side, runs every
//! selected workload against each in alternation and prints the Keelson/etcd ratio per figure;
//! `plot` ([`plot`], drawn by [`svg`]) turns a sweep of watch runs over watcher counts into an
//! SVG of throughput and p99 latency, both servers on the same axes.

mod apiserver;
mod check;
mod cli;
mod compare;
mod conn;
mod driver;
mod keys;
mod members;
mod os;
mod plot;
mod stats;
mod svg;
mod watchers;
mod workloads;

pub use cli::{run, Cli, Command, Workload};
pub use stats::{OpStats, Report};
