//! Generates the Rust code and the descriptor set from proto/ with protox: no system protoc.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "recoup/v1/envelope.proto",
        "recoup/v1/debt_cases.proto",
        "recoup/v1/paygo_snapshots.proto",
        "recoup/v1/collections.proto",
        "recoup/v1/query.proto",
        "recoup/v1/access.proto",
        "recoup/v1/read_models.proto",
    ];
    let fds = protox::compile(files.iter().map(|f| root.join(f)), [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("recoup_descriptor.bin"), fds.encode_to_vec())?;
    // The sources themselves, for `recoup schema export`.
    let sources: String = files
        .iter()
        .map(|f| format!("({f:?}, include_str!({:?})),\n", root.join(f).display()))
        .collect();
    std::fs::write(out.join("proto_files.rs"), format!("&[\n{sources}]"))?;
    tonic_prost_build::configure()
        // A request that does not decode is INVALID_ARGUMENT, not prost's INTERNAL.
        .codec_path("crate::codec::RecoupCodec")
        // Encoded in key order, so that equal contents encode (and fingerprint) equally.
        .btree_map(".recoup.v1.CollectionsDealObserved.extra")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
