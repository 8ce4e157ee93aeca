//! Compiles `proto/fedpace/v1/fleet.proto` with protox (pure Rust, no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/fedpace/v1/fleet.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_transport(false)
        .bytes(".fedpace.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
