//! Staleness check for the checked-in generated code.
//!
//! `cargo test -p baton-proto --test generated` fails when `src/gen/` does not match what the
//! `.proto` files under `proto/` produce. Regenerate with:
//!
//! ```sh
//! BATON_REGENERATE=1 cargo test -p baton-proto --test generated
//! ```
//!
//! The compiler is `protox` (pure Rust), so no `protoc` is needed on the machine.

use std::path::{Path, PathBuf};

fn generate(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "baton/v1/envelope.proto",
        "baton/v1/config.proto",
        "baton/v1/admin.proto",
        "baton/v1/filter.proto",
    ];
    let fds = protox::compile(files, [&root]).unwrap_or_else(|e| panic!("proto compile: {e}"));
    // The descriptor set server reflection serves (`baton_proto::FILE_DESCRIPTOR_SET`).
    std::fs::write(
        out.join("baton_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )
    .unwrap_or_else(|e| panic!("descriptor set: {e}"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        // The content filter request carries the whole message: shared, not copied, per call.
        .bytes(".baton.v1.FilterRequest.message")
        // A queued body is shared with the NATS message it was decoded from, not copied: the
        // worker holds one copy of each message in hand instead of two.
        .bytes(".baton.v1.Envelope.inline_body")
        .out_dir(out)
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("codegen: {e}"));
}

#[test]
fn generated_code_is_fresh() {
    let checked_in = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/gen");
    if std::env::var_os("BATON_REGENERATE").is_some() {
        generate(&checked_in);
        return;
    }
    let tmp = std::env::temp_dir().join(format!("baton-proto-gen-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("{e}"));
    generate(&tmp);
    for entry in std::fs::read_dir(&tmp).unwrap_or_else(|e| panic!("{e}")) {
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        let fresh = std::fs::read(entry.path()).unwrap_or_else(|e| panic!("{e}"));
        let name = entry.file_name();
        let old = std::fs::read(checked_in.join(&name)).unwrap_or_default();
        assert!(
            fresh == old,
            "src/gen/{} is stale: run `BATON_REGENERATE=1 cargo test -p baton-proto --test generated`",
            name.to_string_lossy()
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `EnvelopeHead` is `Envelope` without its body: every one of its fields must be Envelope's
/// field of the same number, name and type, and only the body fields may be missing.
#[test]
fn the_envelope_head_mirrors_the_envelope() {
    use prost::Message as _;
    let fds = prost_types::FileDescriptorSet::decode(baton_proto::FILE_DESCRIPTOR_SET)
        .unwrap_or_else(|e| panic!("{e}"));
    let message = |name: &str| {
        fds.file
            .iter()
            .flat_map(|f| f.message_type.iter())
            .find(|m| m.name() == name)
            .cloned()
            .unwrap_or_else(|| panic!("no message {name}"))
    };
    let (full, head) = (message("Envelope"), message("EnvelopeHead"));
    let key = |f: &prost_types::FieldDescriptorProto| {
        (
            f.number(),
            f.name().to_owned(),
            f.r#type(),
            f.type_name().to_owned(),
            f.label(),
        )
    };
    let full_fields: Vec<_> = full.field.iter().map(key).collect();
    for f in &head.field {
        assert!(
            full_fields.contains(&key(f)),
            "EnvelopeHead.{} differs from Envelope",
            f.name()
        );
    }
    let missing: Vec<&str> = full
        .field
        .iter()
        .filter(|f| !head.field.iter().any(|h| h.number() == f.number()))
        .map(|f| f.name())
        .collect();
    assert_eq!(missing, ["inline_body"], "only the inline body is left out");
}
