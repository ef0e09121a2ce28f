//! A private Postfix instance (Debian's `postfix` package) for scenarios that need a real MTA
//! on the other side: its own config directory, queue and log, listening on one loopback
//! address and port, stopped when dropped. Needs root (Postfix's own privilege separation),
//! as `.ci/run` has.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::harness::require;

/// A running private Postfix.
pub struct Postfix {
    /// Its config directory (`postfix -c`).
    pub etc: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its mail log.
    pub log: PathBuf,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Postfix {
    /// Start an instance under `dir` listening on `addr`, with stock settings except: no
    /// local delivery, no TLS, `mynetworks = 127.0.0.0/8`, and the `main.cf` settings in
    /// `extra` (`name = value`).
    pub fn start(dir: &Path, addr: SocketAddr, extra: &[String]) -> anyhow::Result<Postfix> {
        require("postfix", "postfix")?;
        let etc = dir.join("postfix-etc");
        let queue = dir.join("postfix-queue");
        let data = dir.join("postfix-data");
        for d in [&etc, &queue, &data] {
            std::fs::create_dir_all(d)?;
        }
        run(Command::new("chown").arg("postfix").arg(&data))?;
        std::fs::copy("/etc/postfix/master.cf", etc.join("master.cf"))
            .context("Debian's /etc/postfix/master.cf")?;
        std::fs::write(etc.join("main.cf"), "")?;
        let log = dir.join("postfix.log");
        let mut settings = vec![
            "compatibility_level = 3.6".to_string(),
            format!("queue_directory = {}", queue.display()),
            format!("data_directory = {}", data.display()),
            "mail_owner = postfix".into(),
            "setgid_group = postdrop".into(),
            "myhostname = mx.postfix.test".into(),
            "mydomain = postfix.test".into(),
            format!("inet_interfaces = {}", addr.ip()),
            "inet_protocols = ipv4".into(),
            "mydestination =".into(),
            "local_transport = error:local delivery disabled".into(),
            "mynetworks = 127.0.0.0/8".into(),
            "smtp_tls_security_level = none".into(),
            "smtpd_tls_security_level = none".into(),
            "alias_maps =".into(),
            "alias_database =".into(),
            format!("maillog_file = {}", log.display()),
            format!("maillog_file_prefixes = {}", dir.display()),
            format!("syslog_name = postfix-{}", addr.port()),
            "smtp_host_lookup = native".into(),
        ];
        settings.extend(extra.iter().cloned());
        run(Command::new("postconf")
            .arg("-c")
            .arg(&etc)
            .arg("-e")
            .args(&settings))?;
        run(Command::new("postconf")
            .arg("-c")
            .arg(&etc)
            .arg("-M#")
            .arg("smtp/inet"))?;
        run(Command::new("postconf")
            .arg("-c")
            .arg(&etc)
            .arg("-M")
            .arg(format!("{addr}/inet = {addr} inet n - n - - smtpd")))?;
        run(Command::new("postconf")
            .arg("-c")
            .arg(&etc)
            .arg("-F")
            .arg("*/*/chroot = n"))?;
        run(Command::new("postconf")
            .arg("-c")
            .arg(&etc)
            .arg("-M")
            .arg("postlog/unix-dgram=postlog unix-dgram n - n - 1 postlogd"))?;
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&etc)
            .arg("set-permissions")
            .output();
        run(Command::new("postfix").arg("-c").arg(&etc).arg("start"))
            .context("starting a private Postfix")?;
        Ok(Postfix { etc, addr, log })
    }

    /// The mail log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.etc)
            .arg("stop")
            .output();
    }
}
