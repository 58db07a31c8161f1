fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc: no system package needed.
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    // A method a service leaves out answers UNIMPLEMENTED: the raft crate
    // and the node each implement their own half of `Peer`.
    tonic_prost_build::configure().generate_default_stubs(true).compile_protos(&["proto/peer.proto", "proto/client.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
