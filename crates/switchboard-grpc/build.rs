//! Compiles `/proto/switchboard/**.proto` with tonic-prost-build.
//!
//! protoc comes from `protoc-bin-vendored` (a registry crate bundling protoc for every common
//! platform), so a fresh clone builds with `cargo build` alone; `PROTOC` overrides it. The path is
//! handed to prost through `Config::protoc_executable`, because `std::env::set_var` is unsafe in
//! edition 2024.

use std::path::PathBuf;

const PROTOS: &[&str] =
    &["switchboard/raft/v1/raft.proto", "switchboard/fanout/v1/fanout.proto", "switchboard/admin/v1/admin.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // `bytes` fields become `bytes::Bytes`: a received fan-out frame is shared by every local
    // connection it goes to without a copy.
    config.bytes(["."]);
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    tonic_prost_build::configure().compile_with_config(config, &files, std::slice::from_ref(&root))?;
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    Ok(())
}
