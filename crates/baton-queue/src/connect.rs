//! How a Baton process reaches NATS: the servers, TLS (server verification against a CA bundle,
//! optional client certificate) and the client's credentials. Every process (ingress, worker,
//! operator, `config apply`, the CLIs) connects through [`connect`] with [`NatsOptions`], so
//! they all behave alike: the initial connect is retried, reconnects are forever, and a server
//! that refuses TLS or the credentials leaves the process not ready instead of crashing it.
//!
//! Secrets never travel on the command line: the password and the nkey seed are read from
//! files (or the environment, by the CLI), the `.creds` file by async-nats itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::QueueError;

/// TLS towards NATS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// PEM bundle the server's certificate must chain to (instead of the system roots).
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients (`verify: true`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Refuse a connection that is not TLS (implied by `ca` and `client_cert`).
    pub required: bool,
}

impl NatsTls {
    /// Whether TLS is demanded.
    pub fn is_required(&self) -> bool {
        self.required || self.ca.is_some() || self.client_cert.is_some()
    }
}

/// Who the client is to NATS.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum NatsAuth {
    /// No credentials (a server without authorization, e.g. `baton dev`'s own).
    #[default]
    None,
    /// A decentralised-auth `.creds` file (user JWT and nkey seed), as `nats` tools use.
    CredsFile(PathBuf),
    /// User name and password (the server's `authorization { users = [...] }`).
    UserPassword {
        /// User name.
        user: String,
        /// Password; never logged.
        password: String,
    },
    /// An nkey seed (`SU...`); never logged.
    Nkey(String),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::CredsFile(p) => f.debug_tuple("CredsFile").field(p).finish(),
            NatsAuth::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            NatsAuth::Nkey(_) => f.write_str("Nkey(<redacted>)"),
        }
    }
}

/// Everything needed to connect to NATS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsOptions {
    /// One server URL, or several separated by commas (`nats://a:4222,nats://b:4222`); any of
    /// them can serve the first connection. `tls://` URLs demand TLS.
    pub url: String,
    /// TLS settings.
    pub tls: NatsTls,
    /// Credentials.
    pub auth: NatsAuth,
    /// Prefix of the client's reply subjects. `None`: `_INBOX.<user>` when a user name is
    /// given (what Baton's generated permissions allow, see [`crate::permissions`]), else
    /// the NATS default `_INBOX`.
    pub inbox_prefix: Option<String>,
}

impl NatsOptions {
    /// Plain options for `url` (no TLS settings, no credentials).
    pub fn new(url: impl Into<String>) -> NatsOptions {
        NatsOptions {
            url: url.into(),
            ..NatsOptions::default()
        }
    }

    /// The server list.
    pub fn servers(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Check that every file these options name can be read, so that a typo fails at start
    /// with the path instead of as an endless reconnect.
    pub fn check_files(&self) -> Result<(), QueueError> {
        let mut files: Vec<&Path> = Vec::new();
        files.extend(self.tls.ca.as_deref());
        if let Some((cert, key)) = &self.tls.client_cert {
            files.extend([cert.as_path(), key.as_path()]);
        }
        if let NatsAuth::CredsFile(p) = &self.auth {
            files.push(p);
        }
        for file in files {
            std::fs::metadata(file).map_err(|e| {
                QueueError::Connect(format!("NATS option file {}: {e}", file.display()))
            })?;
        }
        Ok(())
    }

    /// The async-nats options for a process called `name`.
    pub async fn connect_options(
        &self,
        name: &str,
    ) -> Result<async_nats::ConnectOptions, QueueError> {
        self.check_files()?;
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5));
        if self.tls.is_required() {
            options = options.require_tls(true);
        }
        if let Some(ca) = &self.tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::CredsFile(path) => options.credentials_file(path).await.map_err(|e| {
                QueueError::Connect(format!("NATS credentials file {}: {e}", path.display()))
            })?,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Nkey(seed) => options.nkey(seed.clone()),
        };
        let prefix = match (&self.inbox_prefix, &self.auth) {
            (Some(p), _) => Some(p.clone()),
            (None, NatsAuth::UserPassword { user, .. }) => {
                Some(crate::permissions::inbox_prefix(user))
            }
            (None, _) => None,
        };
        if let Some(prefix) = prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        options = options.event_callback(|event| async move {
            match event {
                async_nats::Event::ServerError(e) => record_server_error(&e.to_string()),
                async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                async_nats::Event::Connected => {
                    LOGIN_REFUSED.store(false, Ordering::Relaxed);
                    tracing::info!("NATS connected")
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
        Ok(options)
    }
}

static DENIALS: AtomicU64 = AtomicU64::new(0);
static LAST_DENIAL: parking_lot::Mutex<Option<String>> = parking_lot::Mutex::new(None);
/// Operations refused to this identity once logged in (permission violations): sticky.
static REFUSED_OPERATIONS: AtomicU64 = AtomicU64::new(0);
/// The last login was refused and no connection succeeded since.
static LOGIN_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A server error seen on any connection of this process: permission violations and
/// authorization failures are counted (see [`denials`]) and logged as errors. A permission
/// violation means the process's NATS identity does not match what it does, which no retry
/// fixes; a refused login (authorization violation) lasts until a login succeeds — the
/// server's user list may be catching up (the operator adds a new pool's worker user to the
/// file nats-server reloads).
fn record_server_error(text: &str) {
    let lower = text.to_ascii_lowercase();
    let permission = lower.contains("permissions violation");
    if permission || lower.contains("authorization violation") {
        DENIALS.fetch_add(1, Ordering::Relaxed);
        if permission {
            REFUSED_OPERATIONS.fetch_add(1, Ordering::Relaxed);
        } else {
            LOGIN_REFUSED.store(true, Ordering::Relaxed);
        }
        *LAST_DENIAL.lock() = Some(text.to_owned());
        tracing::error!(error = %text, "NATS refused an operation of this process's identity");
    } else {
        tracing::warn!(error = %text, "NATS server error");
    }
}

/// Permission and authorization violations NATS reported to this process so far, and the
/// last one's text.
pub fn denials() -> (u64, Option<String>) {
    let last = LAST_DENIAL.lock().clone();
    (DENIALS.load(Ordering::Relaxed), last)
}

/// Why the NATS connection makes this process not ready, if it does: an operation NATS
/// refused to its identity (no retry fixes that: it stays not ready until restarted with the
/// right credentials), a login refused since the last successful one, else not being
/// connected. `who` names the identity in the text.
pub fn readiness_problem(connected: bool, who: &str) -> Option<String> {
    let last = LAST_DENIAL.lock().clone().unwrap_or_default();
    problem(
        REFUSED_OPERATIONS.load(Ordering::Relaxed),
        LOGIN_REFUSED.load(Ordering::Relaxed),
        &last,
        connected,
        who,
    )
}

fn problem(
    refused: u64,
    login_refused: bool,
    last: &str,
    connected: bool,
    who: &str,
) -> Option<String> {
    if refused > 0 {
        return Some(format!(
            "NATS refused {refused} operation(s) of {who}, last: {last}"
        ));
    }
    if login_refused {
        return Some(format!("NATS refused the login of {who}: {last}"));
    }
    (!connected).then(|| "not connected to NATS".to_owned())
}

/// Connect to NATS as the process `name`: retry the initial connect, reconnect forever, and a
/// name that shows up in `nats-server` monitoring.
pub async fn connect(options: &NatsOptions, name: &str) -> Result<async_nats::Client, QueueError> {
    options
        .connect_options(name)
        .await?
        .connect(options.servers())
        .await
        .map_err(|e| QueueError::Connect(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_split_and_trimmed() {
        let o = NatsOptions::new(" nats://a:4222, ,tls://b:4222 ");
        assert_eq!(o.servers(), ["nats://a:4222", "tls://b:4222"]);
    }

    #[test]
    fn a_ca_or_client_certificate_demands_tls() {
        let mut tls = NatsTls::default();
        assert!(!tls.is_required());
        tls.ca = Some("ca.crt".into());
        assert!(tls.is_required());
        let cert = NatsTls {
            client_cert: Some(("c".into(), "k".into())),
            ..NatsTls::default()
        };
        assert!(cert.is_required());
    }

    #[test]
    fn missing_files_are_named() {
        let o = NatsOptions {
            tls: NatsTls {
                ca: Some("/nonexistent/ca.crt".into()),
                ..NatsTls::default()
            },
            ..NatsOptions::new("nats://127.0.0.1:4222")
        };
        let err = o.check_files().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.crt"), "{err}");
    }

    #[test]
    fn violations_are_counted_other_errors_are_not() {
        let (before, _) = denials();
        record_server_error("slow consumer");
        assert_eq!(denials().0, before);
        record_server_error("Permissions Violation for Publish to \"baton.retry.x.0\"");
        let (after, last) = denials();
        assert_eq!(after, before + 1);
        assert!(last.unwrap().contains("baton.retry.x.0"));
    }

    #[test]
    fn a_refused_login_lasts_until_a_login_succeeds_a_refused_operation_for_good() {
        let login = "Authorization Violation";
        assert_eq!(
            problem(0, true, login, false, "me").as_deref(),
            Some("NATS refused the login of me: Authorization Violation")
        );
        // Connected again (the flag is cleared on `Connected`): ready.
        assert_eq!(problem(0, false, login, true, "me"), None);
        assert_eq!(
            problem(0, false, login, false, "me").as_deref(),
            Some("not connected to NATS")
        );
        let op = "Permissions Violation for Subscribe to \"x\"";
        assert!(
            problem(2, false, op, true, "me")
                .unwrap()
                .starts_with("NATS refused 2 operation(s) of me")
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let auth = NatsAuth::UserPassword {
            user: "ingress".into(),
            password: "hunter2".into(),
        };
        let shown = format!("{auth:?}");
        assert!(
            shown.contains("ingress") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(!format!("{:?}", NatsAuth::Nkey("SUASECRET".into())).contains("SUASECRET"));
    }
}
