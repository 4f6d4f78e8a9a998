//! Compiles the vendored envd .proto files (see proto/README.md) into prost
//! message types with pbjson serde impls: the Connect JSON codec is the
//! canonical proto3 JSON mapping, which pbjson implements. protox parses
//! the files in pure Rust, so no `protoc` is needed.

use prost::Message;

fn main() {
    let protos = [
        "proto/process/process.proto",
        "proto/filesystem/filesystem.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"]).expect("compile the envd .proto files");
    let encoded = descriptors.encode_to_vec();

    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(descriptors)
        .expect("generate prost types");

    pbjson_build::Builder::new()
        .register_descriptors(&encoded)
        .expect("register descriptors")
        .build(&[".process", ".filesystem"])
        .expect("generate pbjson impls");
}
