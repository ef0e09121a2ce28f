//! Secrets at rest: the keyring and the sealing of the secrets the config snapshot carries.
//!
//! The snapshot (`baton-config` bucket, `proto/baton/v1/config.proto`) holds four kinds of
//! secret: DKIM private keys, smarthost passwords, VERP signing keys and EventSink signing
//! keys. None is ever stored in
//! clear: the writers (the operator, `baton config apply`, `baton dev`) seal each one with
//! [`seal_config`] before the snapshot leaves the process, and the readers (ingress, workers)
//! open them in memory with [`unseal_config`]. `baton_queue::ConfigStore::put` refuses a
//! snapshot that still holds a clear secret ([`clear_secrets`]), so no writer can forget.
//!
//! This crate owns:
//! - [`Keyring`]: numbered 256-bit keys loaded from a directory (a mounted Kubernetes Secret)
//!   of files `key-<id>`, each the base64 of 32 random bytes. The highest id seals; every key
//!   opens. Rotation: add `key-<n+1>` everywhere, the next compile re-seals with it, remove the
//!   old key once every process has the new snapshot.
//! - The construction ([`Keyring::seal`]): AES-256-GCM (ring) under a key derived with
//!   HKDF-SHA256 from the keyring key, with a synthetic nonce — HMAC-SHA256, under a second
//!   derived key, of the context and the plaintext (the SIV idea). Sealing is deterministic, so
//!   an unchanged configuration seals to the same bytes and keeps its content digest (no
//!   generation churn), and a nonce only ever repeats for the same context and plaintext,
//!   which reveals nothing new. The context names the secret's place (`dkim/<relay domain>/
//!   <selector>`, ...) and is the associated data: a sealed value copied to another place does
//!   not open.
//! - [`seal_config`], [`unseal_config`], [`clear_secrets`]: the walk over a snapshot.

mod keyring;
mod snapshot;

pub use keyring::{
    KEY_FILE_PREFIX, KEY_LEN, KeySource, Keyring, add_key, ensure_keyring, generate_key_text,
};
pub use snapshot::{clear_secrets, seal_config, sealed_key_ids, unseal_config};

/// Why a keyring could not be loaded or a secret not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Secrets to seal or open, and no keyring to do it with.
    #[error(
        "the config snapshot holds {0} secret(s) and no keyring was given (--keyring or BATON_KEYRING: a directory of key-<id> files)"
    )]
    NoKeyring(usize),
    /// A keyring directory that cannot be used.
    #[error("keyring {dir}: {reason}")]
    BadKeyring {
        /// The directory.
        dir: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading a keyring file failed.
    #[error("reading keyring {path}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A secret sealed with a key this keyring does not have.
    #[error(
        "{context}: sealed with keyring key {key_id}, which this keyring does not have (it has {have})"
    )]
    UnknownKey {
        /// Which secret.
        context: String,
        /// The key it was sealed with.
        key_id: u32,
        /// The ids this keyring has.
        have: String,
    },
    /// The tag did not verify: another key under the same id, or an altered or moved value.
    #[error(
        "{context}: does not open with keyring key {key_id} (different key material under that id, or the value was altered or moved)"
    )]
    Open {
        /// Which secret.
        context: String,
        /// The key id it names.
        key_id: u32,
    },
    /// A sealed text secret (a PEM key, a password) that opened to something other than UTF-8.
    #[error("{0}: opened to bytes that are not UTF-8")]
    NotUtf8(String),
    /// The system random source or a key derivation failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

impl SealError {
    /// True when the snapshot needs a key this process does not have (yet): during a rotation,
    /// the new key file may reach a pod after the snapshot sealed with it.
    pub fn is_unknown_key(&self) -> bool {
        matches!(self, SealError::UnknownKey { .. })
    }
}
