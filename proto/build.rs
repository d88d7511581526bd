//! Generates the `legion.v1` tonic code with protox (pure Rust, no protoc) and writes the file
//! descriptor set that the control plane serves through gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/legion/v1/tasks.proto",
    "proto/legion/v1/catalog.proto",
    "proto/legion/v1/executor.proto",
    "proto/legion/v1/security.proto",
    "proto/legion/v1/chains.proto",
    "proto/legion/v1/schedules.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("legion_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
