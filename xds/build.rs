//! Generates jalin's own xDS resource messages from `proto/` with protox (pure-Rust protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/jalin/v1/resources.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .bytes(".jalin.v1")
        .compile_fds(fds)?;
    Ok(())
}
