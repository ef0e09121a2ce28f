//! [`Keyring`]: numbered keys from a directory, and the sealing construction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::{aead, hkdf, hmac};
use base64::Engine as _;
use baton_proto::v1::Sealed;

use crate::SealError;

/// Bytes of keyring key material.
pub const KEY_LEN: usize = 32;
/// Keyring files are named `key-<id>` (`id` a decimal `u32`); other files are ignored.
pub const KEY_FILE_PREFIX: &str = "key-";
/// HKDF salt: names the construction, so keys derived for anything else never coincide.
const HKDF_SALT: &[u8] = b"baton-seal/v1";

/// One keyring key, as the two keys derived from it.
struct Key {
    aead: aead::LessSafeKey,
    siv: hmac::Key,
}

impl Key {
    fn derive(material: &[u8]) -> Result<Key, SealError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(material);
        let enc: aead::UnboundKey = prk
            .expand(&[b"aes-256-gcm"], &aead::AES_256_GCM)
            .map_err(|_| SealError::Crypto("HKDF expand (aead)"))?
            .into();
        let siv: hmac::Key = prk
            .expand(&[b"synthetic-nonce"], hmac::HMAC_SHA256)
            .map_err(|_| SealError::Crypto("HKDF expand (nonce)"))?
            .into();
        Ok(Key {
            aead: aead::LessSafeKey::new(enc),
            siv,
        })
    }

    /// The synthetic nonce: the first 12 bytes of HMAC(context length ‖ context ‖ plaintext).
    fn nonce(&self, context: &str, plaintext: &[u8]) -> [u8; aead::NONCE_LEN] {
        let mut mac = hmac::Context::with_key(&self.siv);
        mac.update(&(context.len() as u64).to_be_bytes());
        mac.update(context.as_bytes());
        mac.update(plaintext);
        let tag = mac.sign();
        let mut nonce = [0u8; aead::NONCE_LEN];
        nonce.copy_from_slice(&tag.as_ref()[..aead::NONCE_LEN]);
        nonce
    }
}

/// Numbered keys; the highest id seals, every id opens. Its `Debug` shows the ids only.
pub struct Keyring {
    keys: BTreeMap<u32, Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("ids", &self.ids()).finish()
    }
}

impl Keyring {
    /// A keyring from `(id, 32 bytes)` pairs.
    pub fn from_keys<'a>(
        keys: impl IntoIterator<Item = (u32, &'a [u8])>,
    ) -> Result<Keyring, SealError> {
        let mut map = BTreeMap::new();
        for (id, material) in keys {
            if material.len() != KEY_LEN {
                return Err(SealError::BadKeyring {
                    dir: format!("key {id}"),
                    reason: format!("{} bytes, not {KEY_LEN}", material.len()),
                });
            }
            map.insert(id, Key::derive(material)?);
        }
        if map.is_empty() {
            return Err(SealError::BadKeyring {
                dir: "(given keys)".into(),
                reason: "no key".into(),
            });
        }
        Ok(Keyring { keys: map })
    }

    /// Load every `key-<id>` file of `dir` (a mounted Secret: `..data` and other dot entries
    /// are skipped). See [`Keyring::from_files`].
    pub fn load_dir(dir: &Path) -> Result<Keyring, SealError> {
        let shown = dir.display().to_string();
        let entries = std::fs::read_dir(dir).map_err(|source| SealError::Io {
            path: shown.clone(),
            source,
        })?;
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| SealError::Io {
                path: shown.clone(),
                source,
            })?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if key_id(&name).is_none() {
                continue;
            }
            let path = entry.path();
            let content = std::fs::read(&path).map_err(|source| SealError::Io {
                path: path.display().to_string(),
                source,
            })?;
            files.push((name, content));
        }
        Keyring::from_files(
            &shown,
            files.iter().map(|(n, c)| (n.as_str(), c.as_slice())),
        )
    }

    /// A keyring from named files (a directory, or a Kubernetes Secret's `data`): every
    /// `key-<id>` entry holds the base64 of [`KEY_LEN`] bytes, surrounding white space ignored;
    /// other names are skipped. No key, or a key entry that does not decode to exactly 32
    /// bytes, is an error naming the entry (never its content). `origin` names the source in
    /// errors.
    pub fn from_files<'a>(
        origin: &str,
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Keyring, SealError> {
        let bad = |reason: String| SealError::BadKeyring {
            dir: origin.to_owned(),
            reason,
        };
        let mut raw: Vec<(u32, Vec<u8>)> = Vec::new();
        for (name, content) in files {
            let Some(id) = key_id(name) else {
                continue;
            };
            let text =
                std::str::from_utf8(content).map_err(|_| bad(format!("{name}: not base64")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| bad(format!("{name}: not base64")))?;
            if bytes.len() != KEY_LEN {
                return Err(bad(format!(
                    "{name}: {} bytes, a key is {KEY_LEN} (create one with `openssl rand -base64 32`)",
                    bytes.len()
                )));
            }
            raw.push((id, bytes));
        }
        if raw.is_empty() {
            return Err(bad(format!("no {KEY_FILE_PREFIX}<id> entry")));
        }
        Keyring::from_keys(raw.iter().map(|(id, k)| (*id, k.as_slice())))
    }

    /// The ids, ascending.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// The id that seals: the highest.
    pub fn sealing_id(&self) -> u32 {
        self.keys.keys().next_back().copied().unwrap_or_default()
    }

    fn ids_text(&self) -> String {
        let ids: Vec<String> = self.ids().iter().map(u32::to_string).collect();
        ids.join(", ")
    }

    /// Seal `plaintext` for `context` with the sealing key (deterministic: see the crate doc).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Sealed, SealError> {
        let id = self.sealing_id();
        let key = self
            .keys
            .get(&id)
            .ok_or(SealError::Crypto("empty keyring"))?;
        let nonce = key.nonce(context, plaintext);
        let mut buf = plaintext.to_vec();
        key.aead
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Crypto("AES-256-GCM seal"))?;
        Ok(Sealed {
            key_id: id,
            nonce: nonce.to_vec(),
            ciphertext: buf,
        })
    }

    /// Open a value sealed for `context`.
    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let key = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| SealError::UnknownKey {
                context: context.to_string(),
                key_id: sealed.key_id,
                have: self.ids_text(),
            })?;
        let failed = || SealError::Open {
            context: context.to_string(),
            key_id: sealed.key_id,
        };
        let nonce: [u8; aead::NONCE_LEN] =
            sealed.nonce.as_slice().try_into().map_err(|_| failed())?;
        let mut buf = sealed.ciphertext.clone();
        let plain = key
            .aead
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| failed())?;
        Ok(plain.to_vec())
    }
}

/// The id of a keyring entry name `key-<id>`.
fn key_id(name: &str) -> Option<u32> {
    name.strip_prefix(KEY_FILE_PREFIX)?.parse().ok()
}

/// Where a process gets its keyring: a directory, re-read on demand (a rotated Secret's new
/// key appears in the mounted directory without a restart), or none.
#[derive(Clone, Debug, Default)]
pub struct KeySource {
    dir: Option<PathBuf>,
}

impl KeySource {
    /// Keys from `dir`; `None`: no keyring (only snapshots without secrets can be used).
    pub fn new(dir: Option<PathBuf>) -> KeySource {
        KeySource { dir }
    }

    /// The directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Read the keyring now; `Ok(None)` without a directory.
    pub fn load(&self) -> Result<Option<Keyring>, SealError> {
        self.dir.as_deref().map(Keyring::load_dir).transpose()
    }
}

/// A new key file's content: the base64 of [`KEY_LEN`] bytes from the system's secure random
/// source (what `openssl rand -base64 32` prints).
pub fn generate_key_text() -> Result<String, SealError> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| SealError::Crypto("system random source"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

/// Add a key to the keyring directory `dir` (created with mode 0700 when missing): the file
/// `key-<highest id + 1>` (`key-1` in an empty directory), mode 0600. Returns the new id.
pub fn add_key(dir: &Path) -> Result<u32, SealError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| SealError::Io { path, source }
    };
    create_private_dir(dir).map_err(io(dir))?;
    let next = match Keyring::load_dir(dir) {
        Ok(k) => k.sealing_id().checked_add(1).ok_or(SealError::BadKeyring {
            dir: dir.display().to_string(),
            reason: "no id left after the highest".into(),
        })?,
        Err(SealError::BadKeyring { reason, .. }) if reason.starts_with("no ") => 1,
        Err(e) => return Err(e),
    };
    let path = dir.join(format!("{KEY_FILE_PREFIX}{next}"));
    write_private_file(&path, &generate_key_text()?).map_err(io(&path))?;
    Ok(next)
}

/// A keyring directory with at least one key: `dir` as it is when it has one, else with a new
/// `key-1` ([`add_key`]). What `baton dev` uses without `--keyring`.
pub fn ensure_keyring(dir: &Path) -> Result<Keyring, SealError> {
    match Keyring::load_dir(dir) {
        Ok(k) => Ok(k),
        Err(SealError::Io { .. }) | Err(SealError::BadKeyring { .. }) if !has_key_file(dir) => {
            add_key(dir)?;
            Keyring::load_dir(dir)
        }
        Err(e) => Err(e),
    }
}

fn has_key_file(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(KEY_FILE_PREFIX))
            })
        })
        .unwrap_or(false)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn write_private_file(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ring(ids: &[(u32, u8)]) -> Keyring {
        let keys: Vec<(u32, [u8; KEY_LEN])> =
            ids.iter().map(|(id, b)| (*id, [*b; KEY_LEN])).collect();
        Keyring::from_keys(keys.iter().map(|(id, k)| (*id, k.as_slice()))).unwrap()
    }

    #[test]
    fn seal_opens_and_is_deterministic() {
        let k = ring(&[(1, 7)]);
        let a = k.seal("dkim/ns/rd/s1", b"secret").unwrap();
        let b = k.seal("dkim/ns/rd/s1", b"secret").unwrap();
        assert_eq!(a, b, "same place, same secret: same bytes");
        assert_eq!(a.key_id, 1);
        assert!(!a.ciphertext.windows(6).any(|w| w == b"secret"));
        assert_eq!(k.open("dkim/ns/rd/s1", &a).unwrap(), b"secret");
        // Another secret or another place: another nonce.
        assert_ne!(k.seal("dkim/ns/rd/s1", b"secreT").unwrap().nonce, a.nonce);
        assert_ne!(k.seal("dkim/ns/rd/s2", b"secret").unwrap().nonce, a.nonce);
    }

    #[test]
    fn a_moved_or_altered_value_does_not_open() {
        let k = ring(&[(1, 7)]);
        let a = k.seal("smarthost/p/h:587/u", b"pw").unwrap();
        assert!(matches!(
            k.open("smarthost/p/other:587/u", &a),
            Err(SealError::Open { key_id: 1, .. })
        ));
        let mut bad = a.clone();
        bad.ciphertext[0] ^= 1;
        assert!(matches!(
            k.open("smarthost/p/h:587/u", &bad),
            Err(SealError::Open { .. })
        ));
        let mut short = a;
        short.nonce.pop();
        assert!(k.open("smarthost/p/h:587/u", &short).is_err());
    }

    #[test]
    fn the_highest_id_seals_and_every_id_opens() {
        let old = ring(&[(1, 7)]);
        let both = ring(&[(1, 7), (2, 9)]);
        let new_only = ring(&[(2, 9)]);
        let by_old = old.seal("c", b"x").unwrap();
        let by_both = both.seal("c", b"x").unwrap();
        assert_eq!(by_both.key_id, 2);
        assert_eq!(both.open("c", &by_old).unwrap(), b"x");
        assert_eq!(new_only.open("c", &by_both).unwrap(), b"x");
        let e = new_only.open("c", &by_old).unwrap_err();
        assert!(e.is_unknown_key(), "{e}");
        assert!(e.to_string().contains("key 1") && e.to_string().contains("has 2"));
        // Same id, other material: refused, not an unknown key.
        let impostor = ring(&[(1, 8)]);
        assert!(matches!(
            impostor.open("c", &by_old),
            Err(SealError::Open { .. })
        ));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let k = ring(&[(3, 0x41)]);
        let shown = format!("{k:?}");
        assert_eq!(shown, "Keyring { ids: [3] }");
    }

    #[test]
    fn loads_a_mounted_secret_directory() {
        let dir = std::env::temp_dir().join(format!("baton-seal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..data")).unwrap();
        assert!(matches!(
            Keyring::load_dir(&dir),
            Err(SealError::BadKeyring { .. })
        ));
        std::fs::write(
            dir.join("key-1"),
            format!("{}\n", generate_key_text().unwrap()),
        )
        .unwrap();
        std::fs::write(dir.join("key-12"), generate_key_text().unwrap()).unwrap();
        std::fs::write(dir.join("README"), "ignored").unwrap();
        let k = Keyring::load_dir(&dir).unwrap();
        assert_eq!(k.ids(), vec![1, 12]);
        assert_eq!(k.sealing_id(), 12);
        std::fs::write(dir.join("key-3"), "c2hvcnQ=").unwrap();
        let e = Keyring::load_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("key-3") && e.contains("5 bytes"), "{e}");
        assert!(
            !e.contains("c2hvcnQ"),
            "the file content is never shown: {e}"
        );
        std::fs::write(dir.join("key-3"), "not base64 !!").unwrap();
        assert!(
            Keyring::load_dir(&dir)
                .unwrap_err()
                .to_string()
                .contains("not base64")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn add_key_numbers_from_the_highest_and_keeps_files_private() {
        let dir = std::env::temp_dir().join(format!("baton-seal-add-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = ensure_keyring(&dir).unwrap();
        assert_eq!(first.ids(), vec![1]);
        assert_eq!(
            ensure_keyring(&dir).unwrap().ids(),
            vec![1],
            "kept, not replaced"
        );
        assert_eq!(add_key(&dir).unwrap(), 2);
        let k = Keyring::load_dir(&dir).unwrap();
        assert_eq!((k.ids(), k.sealing_id()), (vec![1, 2], 2));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join("key-2")), 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn generated_keys_differ() {
        let a = generate_key_text().unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&a)
                .unwrap()
                .len(),
            KEY_LEN
        );
        assert_ne!(a, generate_key_text().unwrap());
    }
}
