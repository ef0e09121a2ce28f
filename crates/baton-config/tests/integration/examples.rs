//! `manifests/examples/*.yaml` load and compile, every object valid.

use baton_config::compile::ConditionType;
use baton_config::{compile, load_paths};
use baton_proto::v1::DeliveryMode;

use super::{cond, manifests_dir, report};

fn example(name: &str) -> std::path::PathBuf {
    manifests_dir().join("examples").join(name)
}

#[test]
fn each_example_loads_and_compiles() {
    for name in [
        "sending-pool-direct.yaml",
        "sending-pool-smarthost.yaml",
        "relay-domain.yaml",
    ] {
        let res = load_paths(&[example(name)]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let compiled = compile(&res, 1, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
        compiled
            .ensure_valid()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn examples_directory_compiles_to_a_ready_domain() {
    let res = load_paths(&[manifests_dir().join("examples")]).unwrap();
    let compiled = compile(&res, 7, 0).unwrap();
    compiled.ensure_valid().unwrap();
    let pools: Vec<_> = compiled
        .config
        .pools
        .iter()
        .map(|p| (p.name.as_str(), p.mode))
        .collect();
    assert_eq!(
        pools,
        [
            ("default", DeliveryMode::Direct as i32),
            ("smarthost", DeliveryMode::Smarthost as i32)
        ]
    );
    assert_eq!(
        compiled.config.pools[1].workers, 2,
        "autoscaling.minReplicas"
    );
    let r = report(&compiled, "team-a/example-com");
    assert!(r.ready, "{}", r.not_ready_reason);
    assert_eq!(cond(r, ConditionType::DkimKeyReady), ("True", "KeyLoaded"));
    let d = &compiled.config.domains[0];
    assert_eq!((d.credentials.len(), d.dkim_keys.len()), (1, 1));
    assert_eq!(d.dkim_keys[0].expire_secs, 7 * 86_400);
    let spf = r
        .dns_records
        .iter()
        .find(|x| x.name == "example.com")
        .unwrap();
    assert_eq!(spf.value, "v=spf1 ip4:203.0.113.10 ip4:203.0.113.11 ~all");
}

#[test]
fn relay_domain_alone_reports_the_missing_pool() {
    let res = load_paths(&[example("relay-domain.yaml")]).unwrap();
    let compiled = compile(&res, 1, 0).unwrap();
    let r = report(&compiled, "team-a/example-com");
    assert_eq!(cond(r, ConditionType::PoolFound), ("False", "PoolNotFound"));
}
