//! Generates the `drover.v1` code with a vendored protoc, so a build needs no system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // `build_transport(false)`: the rpc `AgentService.Connect` would clash with the generated
    // client's `connect` constructor; clients are built from a `Channel` instead.
    tonic_prost_build::configure()
        .build_transport(false)
        // Small starting buffers: a coordinator holds a stream per agent (see src/codec.rs).
        .codec_path("crate::LeanCodec")
        .file_descriptor_set_path(out_dir.join("drover_descriptor.bin"))
        .compile_with_config(config, &["proto/drover/v1/drover.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
