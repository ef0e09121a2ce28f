//! Scenario: `baton dev` runs its own nats-server with production's authorization (issue
//! 13.1): one NATS user per role with the permissions of `baton nats-auth`, passwords that only
//! the dev process and the server hold. Mail flows end to end; the server refuses an anonymous
//! client; the configuration file it wrote names no password.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use baton_system_tests::config::smarthost;
use baton_system_tests::delivery::{Submission, submit};
use baton_system_tests::harness::{
    Proc, ProcGroup, TempDir, assert_eventually, baton_bin, free_port, http_get, require,
    write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn dev_runs_nats_with_one_user_per_role() -> anyhow::Result<()> {
    require("nats-server", "nats-server")?;
    let dir = TempDir::new("baton-dev-auth")?;
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let cfg = write_config(
        &dir.0,
        "c.yaml",
        &smarthost(&[("127.0.0.1", receiver.addr().port(), 1)], "[1s]", "1h"),
    )?;
    let port = || free_port().map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let (smtp, sub, smtps, metrics, admin) = (port()?, port()?, port()?, port()?, port()?);
    let log = dir.0.join("dev.log");
    let data = dir.0.join("data");
    let child = Command::new(baton_bin()?)
        .args(["dev", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen-smtp", &smtp.to_string()])
        .args(["--listen-submission", &sub.to_string()])
        .args(["--listen-smtps", &smtps.to_string()])
        .args(["--listen-metrics", &metrics.to_string()])
        .args(["--listen-admin", &admin.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        // Its own process group, so the nats-server it starts goes with it.
        .process_group(0)
        .spawn()?;
    let _dev = ProcGroup(Proc {
        child,
        name: "baton dev".into(),
    });
    assert_eventually(WAIT, "baton dev /readyz", || async move {
        http_get(metrics, "/readyz")
            .await
            .is_ok_and(|(c, _)| c == 200)
    })
    .await
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;

    let m = Submission {
        from: "app@example.com",
        mail_params: "",
        rcpts: vec![("x@dest.test", "")],
        subject: "dev-with-authorization",
    };
    assert_eq!(submit(smtp, &m).await?, 250);
    let got = receiver.wait_for_messages(1, WAIT).await?;
    assert!(String::from_utf8_lossy(&got[0].body).contains("dev-with-authorization"));

    let conf = std::fs::read_to_string(data.join("nats.conf"))?;
    for user in ["baton-admin", "baton-ingress", "baton-worker-test"] {
        assert!(conf.contains(&format!("user: \"{user}\"")), "{conf}");
    }
    assert!(
        conf.contains("password: $BATON_NATS_PASSWORD_INGRESS"),
        "{conf}"
    );
    // The server the dev process started (its URL is in the log) refuses anonymous clients.
    let text = std::fs::read_to_string(&log)?;
    let url = text
        .lines()
        .find(|l| l.contains("nats-server started"))
        .and_then(|l| l.split("url=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .context("the dev log names the nats-server URL")?;
    // The server is there (a TCP connection succeeds) but will not talk to a stranger.
    tokio::net::TcpStream::connect(url.trim_start_matches("nats://")).await?;
    let anonymous = async_nats::ConnectOptions::new().connect(url).await;
    let err = anonymous.err().context("an anonymous client connected")?;
    assert!(err.to_string().to_lowercase().contains("authoriz"), "{err}");
    assert_eq!(
        baton_system_tests::harness::metric(metrics, "baton_nats_permission_denials_total").await,
        0.0,
        "no role was refused"
    );
    Ok(())
}
