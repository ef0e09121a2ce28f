//! Scenario: NATS users kept in a directory outside Kubernetes (`baton nats-auth --write DIR`,
//! the rendering the operator uses for its Secret). nats-server runs with the `auth.conf` it
//! wrote (bcrypt hashes); `config apply`, the ingress and the worker log in with the password
//! files of their roles and a message is delivered. Writing again keeps every password and the
//! file byte for byte; a pool added later gets its own password file, and a pool removed loses
//! it.

use std::path::Path;
use std::time::Duration;

use baton_system_tests::config::smarthost;
use baton_system_tests::delivery::{Submission, submit};
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, Worker, apply_config_with, assert_eventually, write_config,
};
use baton_system_tests::nats_users::{login, strs, write_users};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

const OTHER_POOL: &str = "---\napiVersion: baton.dev/v1alpha1\nkind: SendingPool\n\
    metadata: {name: other}\nspec:\n  egress: [{ehloName: out.baton.test, weight: 1}]\n";

#[tokio::test]
async fn roles_log_in_with_the_written_password_files() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-nats-files")?;
    let users = dir.0.join("users");
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let one_pool = smarthost(&[("127.0.0.1", receiver.addr().port(), 1)], "[1s]", "1h");
    let cfg = write_config(&dir.0, "c.yaml", &one_pool)?;
    write_users(&cfg, &users)?;
    let conf = std::fs::read_to_string(users.join("auth.conf"))?;
    let admin = std::fs::read(users.join("admin"))?;
    assert!(
        !conf.contains(std::str::from_utf8(&admin)?),
        "a clear password in auth.conf"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode(&users)?, 0o700);
        assert_eq!(mode(&users.join("worker-test"))?, 0o600);
    }

    let nats = Nats::start_with(Some(conf.clone())).await?;
    let admin_login = login(&users, "admin");
    apply_config_with(&nats.url, &cfg, &strs(&admin_login))?;
    let ingress_login = login(&users, "ingress");
    let ing = Ingress::start(&nats, &dir.0, &strs(&ingress_login)).await?;
    let worker_login = login(&users, "worker-test");
    let _w = Worker::start(&nats, &dir.0, "test", None, &strs(&worker_login)).await?;
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("a@dest.test", "")],
        subject: "written-users",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let r = &receiver;
    assert_eventually(Duration::from_secs(30), "delivered", || async move {
        r.messages()
            .iter()
            .any(|m| String::from_utf8_lossy(&m.body).contains("written-users"))
    })
    .await?;

    // Again: nothing changes.
    write_users(&cfg, &users)?;
    assert_eq!(std::fs::read_to_string(users.join("auth.conf"))?, conf);
    assert_eq!(std::fs::read(users.join("admin"))?, admin);

    // A second pool gets a user; removing it again deletes its password file.
    let two = write_config(&dir.0, "c2.yaml", &format!("{one_pool}{OTHER_POOL}"))?;
    write_users(&two, &users)?;
    assert!(users.join("worker-other").is_file());
    assert!(std::fs::read_to_string(users.join("auth.conf"))?.contains("baton-worker-other"));
    assert_eq!(std::fs::read(users.join("admin"))?, admin);
    write_users(&cfg, &users)?;
    assert!(!users.join("worker-other").exists());
    Ok(())
}
