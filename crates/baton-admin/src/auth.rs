//! Who may call the operations API: bearer tokens checked against a token file, each token
//! with a permission (`viewer` reads, `admin` reads and writes) and optionally limited to
//! namespaces (the RelayDomains' namespaces whose mail it sees and acts on).
//!
//! The file holds no token in clear: each line keeps the SHA-256 of a token (tokens are 32
//! random bytes, so a fast hash is enough; a slow hash buys nothing against guessing 256
//! bits), its permission, its namespaces and a name for the logs:
//!
//! ```text
//! # sha256:<hex>  <viewer|admin>  <*|ns1,ns2>  <name>
//! sha256:9f86d08…  admin   *        sre-oncall
//! sha256:2c26b46…  viewer  shop     shop-team
//! ```
//!
//! `baton admin-token add` adds a line and prints the token once. The file is re-read when it
//! changes, so adding or revoking a token needs no restart. Pure parsing and lookup here; the
//! gRPC interceptor is in [`crate::server`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    /// Read: status, summary, list, show.
    Viewer,
    /// Read and write: requeue, delete.
    Admin,
}

impl Permission {
    /// `viewer` or `admin`.
    pub fn label(self) -> &'static str {
        match self {
            Permission::Viewer => "viewer",
            Permission::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Permission::Viewer),
            "admin" => Some(Permission::Admin),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Name for the logs.
    pub name: String,
    /// What it may do.
    pub permission: Permission,
    /// Namespaces it is limited to; empty: every namespace.
    pub namespaces: Vec<String>,
}

impl Caller {
    /// Whether the caller may see and act on mail of RelayDomain `relay_domain`
    /// (`namespace/name`). A caller limited to namespaces never sees mail without one.
    pub fn sees(&self, relay_domain: &str) -> bool {
        if self.namespaces.is_empty() {
            return true;
        }
        match relay_domain.split_once('/') {
            Some((ns, _)) => self.namespaces.iter().any(|n| n == ns),
            None => false,
        }
    }

    /// Whether the caller sees every namespace.
    pub fn unscoped(&self) -> bool {
        self.namespaces.is_empty()
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Nobody presents this token (or it expired).
    #[error("unknown token")]
    Unknown,
    /// The token is valid but grants nothing here.
    #[error("{0}")]
    Forbidden(String),
    /// The check itself failed (the Kubernetes API did not answer).
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

/// Turns a bearer token into a caller.
#[tonic::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The caller presenting `token`.
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError>;
}

/// Why a token file does not load.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It could not be read.
    #[error("token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("token file {path} line {line}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The parsed token file: digest → caller.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Caller>,
}

impl Tokens {
    /// Parse the text of a token file (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, TokenFileError> {
        let mut by_digest = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: &str| TokenFileError::Syntax {
                path: path.to_owned(),
                line: i + 1,
                reason: reason.to_owned(),
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [digest, permission, namespaces, name] = fields[..] else {
                return Err(err(
                    "want 4 fields: sha256:<hex> <viewer|admin> <*|ns,...> <name>",
                ));
            };
            let digest = digest
                .strip_prefix("sha256:")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .ok_or_else(|| err("the first field must be sha256:<64 hex digits>"))?;
            let permission = Permission::parse(permission)
                .ok_or_else(|| err("the permission must be `viewer` or `admin`"))?;
            let namespaces = if namespaces == "*" {
                Vec::new()
            } else {
                namespaces
                    .split(',')
                    .map(str::to_owned)
                    .filter(|n| !n.is_empty())
                    .collect()
            };
            let caller = Caller {
                name: name.to_owned(),
                permission,
                namespaces,
            };
            if by_digest.insert(digest, caller).is_some() {
                return Err(err("the same token is listed twice"));
            }
        }
        Ok(Tokens { by_digest })
    }

    /// The caller presenting `token`, if any.
    pub fn lookup(&self, token: &str) -> Option<&Caller> {
        self.by_digest.get(&digest(token))
    }

    /// How many tokens are listed.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no token is listed.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// A new random token (`baton_` and 32 random bytes, base64url) and its token-file line.
pub fn new_token(permission: Permission, namespaces: &[String], name: &str) -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!(
        "baton_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let scope = if namespaces.is_empty() {
        "*".to_owned()
    } else {
        namespaces.join(",")
    };
    let line = format!(
        "sha256:{} {} {} {}",
        hex::encode(digest(&token)),
        permission.label(),
        scope,
        name
    );
    (token, line)
}

/// A token file kept current: re-read whenever its modification time or size changes. A
/// file that stops parsing keeps the last good tokens (and the error is logged once).
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    state: parking_lot::Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: Option<(SystemTime, u64)>,
    tokens: Tokens,
}

impl TokenFile {
    /// Load `path` (it must parse now).
    pub fn open(path: &Path) -> Result<Self, TokenFileError> {
        let (stamp, tokens) = load(path)?;
        Ok(TokenFile {
            path: path.to_owned(),
            state: parking_lot::Mutex::new(Loaded {
                stamp: Some(stamp),
                tokens,
            }),
        })
    }

    /// The caller presenting `token`, from the file as it is now.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        let mut state = self.state.lock();
        let now = stamp(&self.path).ok();
        if now != state.stamp {
            match load(&self.path) {
                Ok((stamp, tokens)) => {
                    tracing::info!(path = %self.path.display(), tokens = tokens.len(), "token file reloaded");
                    *state = Loaded {
                        stamp: Some(stamp),
                        tokens,
                    };
                }
                Err(e) => {
                    tracing::error!(error = %e, "token file not reloaded; keeping the last good one");
                    state.stamp = now;
                }
            }
        }
        state.tokens.lookup(token).cloned()
    }
}

#[tonic::async_trait]
impl Authenticator for TokenFile {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        TokenFile::authenticate(self, token).ok_or(AuthError::Unknown)
    }
}

fn stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.modified()?, m.len()))
}

fn load(path: &Path) -> Result<((SystemTime, u64), Tokens), TokenFileError> {
    let read = |source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    };
    let s = stamp(path).map_err(read)?;
    let text = std::fs::read_to_string(path).map_err(read)?;
    Ok((s, Tokens::parse(path, &text)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Tokens, TokenFileError> {
        Tokens::parse(Path::new("tokens"), text)
    }

    #[test]
    fn a_new_token_authenticates_with_its_line_and_nothing_else_does() {
        let (token, line) = new_token(Permission::Viewer, &["shop".into()], "shop-team");
        assert!(token.starts_with("baton_") && token.len() > 40);
        assert!(!line.contains(&token), "the line never holds the token");
        let tokens = parse(&format!("# comment\n\n{line}\n")).unwrap();
        let c = tokens.lookup(&token).unwrap();
        assert_eq!(c.name, "shop-team");
        assert_eq!(c.permission, Permission::Viewer);
        assert_eq!(c.namespaces, ["shop"]);
        assert!(tokens.lookup(&format!("{token}x")).is_none());
        assert!(tokens.lookup("").is_none());
        // Whitespace around a token read from a file does not matter.
        assert!(tokens.lookup(&format!("{token}\n")).is_some());
    }

    #[test]
    fn scope_limits_what_a_caller_sees() {
        let all = Caller {
            name: "a".into(),
            permission: Permission::Admin,
            namespaces: vec![],
        };
        assert!(all.sees("shop/main") && all.sees(""));
        let shop = Caller {
            namespaces: vec!["shop".into(), "blog".into()],
            ..all
        };
        assert!(shop.sees("shop/main") && shop.sees("blog/x"));
        assert!(!shop.sees("bank/main"));
        assert!(!shop.sees("shopping/main"), "a namespace, not a prefix");
        assert!(!shop.sees(""), "mail without a RelayDomain is not theirs");
    }

    #[test]
    fn malformed_lines_name_their_line_number() {
        let (_, good) = new_token(Permission::Admin, &[], "ops");
        let bad_permission = good.replace(" admin ", " root ");
        let twice = format!("{good}\n{good}");
        for (text, want, line) in [
            ("sha256:00 admin * x", "sha256:<64 hex", 2),
            ("md5:abc admin * x", "sha256:<64 hex", 2),
            ("admin * x", "want 4 fields", 2),
            (bad_permission.as_str(), "`viewer` or `admin`", 2),
            (twice.as_str(), "twice", 3),
        ] {
            let e = parse(&format!("# header\n{text}")).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.contains(&format!("line {line}:")), "{e}");
        }
    }

    #[test]
    fn the_file_is_reread_when_it_changes_and_a_broken_edit_keeps_the_last_good_one() {
        let dir = std::env::temp_dir().join(format!("baton-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        let (t1, l1) = new_token(Permission::Admin, &[], "one");
        std::fs::write(&path, format!("{l1}\n")).unwrap();
        let file = TokenFile::open(&path).unwrap();
        assert_eq!(file.authenticate(&t1).unwrap().name, "one");
        let (t2, l2) = new_token(Permission::Viewer, &[], "two-longer-name");
        std::fs::write(&path, format!("{l2}\n")).unwrap();
        assert_eq!(file.authenticate(&t2).unwrap().name, "two-longer-name");
        assert!(
            file.authenticate(&t1).is_none(),
            "revoked by removing its line"
        );
        std::fs::write(&path, "garbage line that does not parse at all\n").unwrap();
        assert_eq!(file.authenticate(&t2).unwrap().name, "two-longer-name");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
