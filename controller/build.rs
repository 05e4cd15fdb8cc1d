//! Compiles the admin API's proto with protox (pure Rust: no system protoc) and generates
//! its tonic server and client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/switchyard/admin/v1/admin.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
