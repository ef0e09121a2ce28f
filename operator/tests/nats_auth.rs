//! The operator's NATS authorization ([`baton_operator::nats_auth`]) against a real
//! `nats-server` (from PATH) that includes the `auth.conf` it renders, as the chart's NATS
//! servers do: the bcrypt hashes log the right passwords in and nothing else; a pool added
//! later gets a user that works after the server reloads the file (SIGHUP, what the NATS
//! chart's config reloader sends), and the users already there keep their passwords.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use baton_operator::nats_auth::{AUTH_CONF_KEY, password_key, render};
use baton_queue::permissions::Role;
use common::nats::Server;

fn worker(pool: &str) -> Role {
    Role::Worker {
        pool: pool.into(),
        tiers: 1,
    }
}

/// nats-server with `auth_conf` included from its config file, as the chart's servers do.
async fn start(auth_conf: &[u8]) -> Server {
    Server::start(|dir, port| {
        std::fs::write(dir.join("auth.conf"), auth_conf).unwrap();
        std::fs::write(
            dir.join("nats.conf"),
            format!("listen: 127.0.0.1:{port}\ninclude auth.conf\n"),
        )
        .unwrap();
        vec!["-c".into(), dir.join("nats.conf").display().to_string()]
    })
    .await
}

/// Whether `user`/`password` may log in (one attempt, no retry).
async fn logs_in(url: &str, user: &str, password: &str) -> bool {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .is_ok()
}

fn password(data: &BTreeMap<String, Vec<u8>>, role: &Role) -> String {
    String::from_utf8(data[&password_key(role)].clone()).unwrap()
}

#[tokio::test]
async fn rendered_users_log_in_and_a_new_pool_works_after_a_reload() {
    let mut n = 0;
    let mut fresh = move || {
        n += 1;
        Ok(format!("secret-{n}-{}", std::process::id()))
    };
    let roles = vec![Role::Admin, Role::Ingress, worker("bulk")];
    // Cost 4 keeps the test fast; the operator uses BCRYPT_COST.
    let first = render(&roles, &BTreeMap::new(), 4, &mut fresh).unwrap();
    let server = start(&first[AUTH_CONF_KEY]).await;

    for role in &roles {
        assert!(
            logs_in(&server.url, &role.user(), &password(&first, role)).await,
            "{} with its password",
            role.user()
        );
    }
    let bulk = password(&first, &worker("bulk"));
    assert!(!logs_in(&server.url, "baton-worker-bulk", "wrong").await);
    assert!(
        !logs_in(&server.url, "baton-ingress", &bulk).await,
        "another role's password"
    );
    assert!(
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(&server.url)
            .await
            .is_err(),
        "anonymous login"
    );

    // A new pool: its user exists only once the server reloads the file.
    let roles = vec![Role::Admin, Role::Ingress, worker("bulk"), worker("tx")];
    let second = render(&roles, &first, 4, &mut fresh).unwrap();
    let tx = password(&second, &worker("tx"));
    assert!(!logs_in(&server.url, "baton-worker-tx", &tx).await);
    std::fs::write(server.dir.join("auth.conf"), &second[AUTH_CONF_KEY]).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut reloaded = false;
    for _ in 0..100 {
        if logs_in(&server.url, "baton-worker-tx", &tx).await {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reloaded,
        "the new pool's worker cannot log in after the reload"
    );
    assert!(
        logs_in(&server.url, "baton-worker-bulk", &bulk).await,
        "kept its password"
    );
}
