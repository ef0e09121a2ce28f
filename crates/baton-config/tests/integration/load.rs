//! The YAML loader.

use std::path::PathBuf;

use baton_config::{ConfigError, load_paths, load_str};

use super::POOL;

#[test]
fn multi_document_stream_with_empty_documents() {
    let yaml = format!(
        "---\n{POOL}---\n# only a comment\n---\napiVersion: baton.dev/v1alpha1\nkind: RelayDomain\n\
         metadata: {{name: a}}\nspec: {{domain: example.com}}\n---\napiVersion: v1\nkind: Secret\n\
         metadata: {{name: s, namespace: team-a}}\ndata: {{username: YXBw}}\n---\n"
    );
    let res = load_str(&yaml, "multi.yaml").unwrap();
    assert_eq!(
        (res.pools.len(), res.domains.len(), res.secrets.len()),
        (1, 1, 1)
    );
    assert_eq!(
        res.domains[0].metadata.namespace.as_deref(),
        Some("default"),
        "namespace defaults"
    );
    assert_eq!(res.secrets[0].metadata.namespace.as_deref(), Some("team-a"));
    let data = res.secrets[0].data.as_ref().unwrap();
    assert_eq!(data["username"].0, b"app", "data is base64-decoded");
    assert_eq!(
        res.domains[0].spec.pool, "default",
        "pool defaults to `default`"
    );
}

#[test]
fn directories_load_yaml_files_in_name_order() {
    let dir = std::env::temp_dir().join(format!("baton-config-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pool = |name: &str| POOL.replace("name: default", &format!("name: {name}"));
    std::fs::write(dir.join("b.yaml"), pool("from-b")).unwrap();
    std::fs::write(dir.join("a.yml"), pool("from-a")).unwrap();
    std::fs::write(dir.join("c.txt"), "not: yaml: at all: [").unwrap();
    let single = dir.join("single.conf");
    std::fs::write(&single, pool("explicit-file")).unwrap();
    let res = load_paths(&[dir.clone(), single]).unwrap();
    let names: Vec<_> = res
        .pools
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    // single.conf is skipped inside the directory (not *.yaml) but loaded when named explicitly.
    assert_eq!(names, ["from-a", "from-b", "explicit-file"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_path_is_an_io_error() {
    let err = load_paths(&[PathBuf::from("/nonexistent/baton.yaml")]).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("/nonexistent/baton.yaml: "),
        "{err}"
    );
}

#[test]
fn unknown_kind_names_file_and_document() {
    let yaml = format!("{POOL}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n");
    let err = load_str(&yaml, "team-a.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "team-a.yaml: document 1: unsupported kind \"ConfigMap\" (apiVersion \"v1\"); expected \
         RelayDomain or SendingPool (baton.dev/v1alpha1) or Secret (v1)"
    );
    assert_eq!(err.metric_label(), "unsupported_kind");
    let wrong_version = POOL.replace("v1alpha1", "v1");
    let err = load_str(&wrong_version, "v.yaml").unwrap_err();
    assert!(matches!(err, ConfigError::UnsupportedKind { .. }), "{err}");
}

#[test]
fn unknown_field_is_rejected_with_its_name() {
    let yaml = "apiVersion: baton.dev/v1alpha1\nkind: SendingPool\nmetadata: {name: p}\n\
                spec:\n  delivery:\n    mode: Direct\n    prot: 25\n";
    let err = load_str(yaml, "pool.yaml").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("pool.yaml: document 0 (SendingPool): "),
        "{text}"
    );
    assert!(text.contains("unknown field `prot`"), "{text}");
    assert!(text.contains("spec.delivery"), "path of the field: {text}");
    assert!(!text.contains('\n'), "one line: {text}");

    let yaml = "apiVersion: baton.dev/v1alpha1\nkind: RelayDomain\nmetadata: {name: d}\n\
                spec: {domain: example.com, dkim: {selector: s, keySecretRef: {name: k}, extra: 1}}\n";
    let text = load_str(yaml, "d.yaml").unwrap_err().to_string();
    assert!(text.contains("unknown field `extra`"), "{text}");
}

#[test]
fn unknown_enum_value_is_rejected() {
    let yaml = POOL.replace("spec: {}", "spec: {tls: {policy: Sometimes}}");
    let text = load_str(&yaml, "p.yaml").unwrap_err().to_string();
    assert!(text.contains("unknown variant `Sometimes`"), "{text}");
    let yaml = POOL.replace("spec: {}", "spec: {delivery: {mode: Carrier}}");
    let text = load_str(&yaml, "p.yaml").unwrap_err().to_string();
    assert!(text.contains("unknown variant `Carrier`"), "{text}");
}

#[test]
fn malformed_yaml_is_a_parse_error() {
    let err = load_str("kind: [unclosed", "bad.yaml").unwrap_err();
    assert!(
        matches!(err, ConfigError::Parse { index: 0, .. }),
        "{err:?}"
    );
}
