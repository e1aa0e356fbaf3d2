//! Generates the Rust types, tonic clients and tonic servers for the etcd v3
//! API from `protos/*.proto`.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate, so no system protobuf
//! compiler is needed.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "protos/kv.proto",
    "protos/auth.proto",
    "protos/rpc.proto",
    "protos/v3election.proto",
    "protos/v3lock.proto",
    "protos/raft.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Keys and values are `bytes::Bytes`: a stored value is shared, not copied, by every range
    // response and watch event that carries it.
    config.bytes(["."]);

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .file_descriptor_set_path(out_dir.join("etcd_descriptor.bin"))
        .compile_with_config(config, PROTOS, &["protos"])?;

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=protos");
    Ok(())
}
