//! Staleness and shape of the generated CRD manifests.

use std::path::PathBuf;

use baton_config::crdgen;
use kube::CustomResourceExt as _;

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../manifests/crds")
}

#[test]
fn crds_are_fresh() {
    let dir = crd_dir();
    if std::env::var_os("BATON_REGENERATE").is_some() {
        crdgen::write_crds(&dir).expect("write CRDs");
    }
    for (name, yaml) in crdgen::crd_files() {
        let path = dir.join(name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == crdgen::file_contents(&yaml),
            "{} is stale; regenerate with: BATON_REGENERATE=1 cargo test -p baton-config crds_are_fresh",
            path.display()
        );
    }
}

#[test]
fn crds_carry_names_columns_and_cel() {
    use baton_config::crd::{RelayDomain, SendingPool};
    let pool = SendingPool::crd();
    assert_eq!(pool.spec.scope, "Cluster");
    assert_eq!(pool.spec.names.short_names, Some(vec!["sp".to_owned()]));
    assert_eq!(pool.spec.names.categories, Some(vec!["baton".to_owned()]));
    let columns: Vec<_> = pool.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Mode", "Workers", "Ready", "Queue", "Age"]);

    let domain = RelayDomain::crd();
    assert_eq!(domain.spec.scope, "Namespaced");
    assert_eq!(domain.spec.names.short_names, Some(vec!["rd".to_owned()]));
    let columns: Vec<_> = domain.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Domain", "Pool", "Ready", "Age"]);

    let yaml = crdgen::crd_yaml();
    for rule in [
        "rule: self == oldSelf",
        "rule: self.mode != 'Smarthost' || (has(self.smarthosts) && size(self.smarthosts) > 0)",
        "rule: self.all(n, isCIDR(n))",
        "rule: isIP(self)",
        "rule: self.metadata.name.size() <= 63",
        "self.additionalKeys.all(k, k.selector != self.selector)",
        "rule: isIP(self) || self.matches(",
        "x-kubernetes-list-type: map",
    ] {
        assert!(yaml.contains(rule), "CRDs lack {rule:?}");
    }
    assert_eq!(yaml.matches("kind: CustomResourceDefinition").count(), 3);

    let sink = baton_config::crd::EventSink::crd();
    assert_eq!(sink.spec.scope, "Namespaced");
    assert_eq!(sink.spec.names.short_names, Some(vec!["sink".to_owned()]));
    let columns: Vec<_> = sink.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["URL", "Ready", "Backlog", "Last delivered"]);
    assert!(yaml.contains("message: unknown event type"));
    // The API server does not know (nor enforce) unsigned formats; bounds replace them.
    assert!(
        !yaml.contains("format: uint"),
        "CRDs carry an unsigned format"
    );
    assert!(yaml.contains("maximum: 4294967295.0"));
}
