//! Generates the ProtoBuf:1 messages (src/protobuf/pluginsocket.proto) with
//! prost. The .proto is parsed by protox, in Rust, so a fresh machine needs
//! no protoc binary: cargo alone builds the crate.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "src/protobuf/pluginsocket.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["src/protobuf"])?;
    // The descriptor set itself, for the unit test that checks the method
    // table against the service definition (src/protobuf/methods.rs).
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("pluginsocket.bin"), descriptors.encode_to_vec())?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
