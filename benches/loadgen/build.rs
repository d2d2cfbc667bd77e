//! floor-pb's ProtoBuf:1 messages, generated from the core's schema
//! (src/protobuf/pluginsocket.proto) with protox: no protoc binary needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "../../src/protobuf";
    println!("cargo:rerun-if-changed={dir}/pluginsocket.proto");
    let descriptors = protox::compile(["pluginsocket.proto"], [dir])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
