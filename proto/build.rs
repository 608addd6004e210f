//! Compile `mpcvit/v1/*.proto` with protox (pure Rust), so a fresh machine
//! builds with cargo alone: no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "mpcvit/v1/client.proto",
        "mpcvit/v1/party.proto",
        "mpcvit/v1/dealer.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
