//! Scenario: tenant isolation between namespaces. A SendingPool that lists the namespaces it
//! serves (`spec.allowedNamespaces`) does not relay for a RelayDomain of another namespace: the
//! domain is never ready and its client is told why at MAIL (`451 4.7.5`); once the pool allows
//! the namespace, the same client is accepted.

use baton_system_tests::config::direct;
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, apply_config, assert_eventually, write_config,
};
use baton_system_tests::smtp::Talk;
use std::time::Duration;

/// MAIL FROM for example.com (RelayDomain `team-a/example-com`) from an allowed network.
async fn mail(ing: std::net::SocketAddr) -> anyhow::Result<(u16, String)> {
    let (mut t, _) = Talk::connect(ing).await?;
    t.cmd("EHLO client.test").await?;
    let r = t.cmd("MAIL FROM:<app@example.com>").await?;
    let _ = t.cmd("QUIT").await;
    Ok((r.code, r.text))
}

#[tokio::test]
async fn a_pool_relays_only_for_the_namespaces_it_allows() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-tenants")?;
    let nats = Nats::start().await?;
    let base = direct(2500, "[1s]", "1h");
    let only_b = base.replace(
        "  tls: {policy: Disabled}\n",
        "  tls: {policy: Disabled}\n  allowedNamespaces: [team-b]\n",
    );
    assert!(only_b.contains("allowedNamespaces"), "{only_b}");
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &only_b)?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let (code, text) = mail(ing.smtp).await?;
    assert_eq!(code, 451, "{text}");
    assert!(
        text.contains("4.7.5") && text.contains("does not allow RelayDomains of namespace team-a"),
        "{text}"
    );

    let both = base.replace(
        "  tls: {policy: Disabled}\n",
        "  tls: {policy: Disabled}\n  allowedNamespaces: [team-a, team-b]\n",
    );
    apply_config(&nats, &write_config(&dir.0, "c2.yaml", &both)?)?;
    assert_eventually(
        Duration::from_secs(20),
        "allowed once the pool lists team-a",
        || async { mail(ing.smtp).await.is_ok_and(|(c, _)| c == 250) },
    )
    .await?;
    Ok(())
}
