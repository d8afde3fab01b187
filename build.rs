//! Compiles `proto/dupla/v1/*.proto` with protox (pure Rust: no system
//! `protoc`) and generates the prost messages and tonic services once, for
//! every crate of the workspace. The encoded descriptor set is kept for
//! gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/dupla/v1/common.proto",
        "proto/dupla/v1/greeter.proto",
        "proto/dupla/v1/clock.proto",
        "proto/dupla/v1/storage.proto",
        "proto/dupla/v1/manager.proto",
        "proto/dupla/v1/accounts.proto",
        "proto/dupla/v1/rooms.proto",
        "proto/dupla/v1/room_relay.proto",
        "proto/dupla/v1/snapshots.proto",
        "proto/dupla/v1/social.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("dupla_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Chunk payloads stay `bytes::Bytes`: decoding slices the HTTP/2
        // buffer instead of copying each MiB into a fresh Vec.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
