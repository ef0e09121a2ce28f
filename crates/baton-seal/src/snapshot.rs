//! The walk over a snapshot's secrets: seal them all, open them all, find any left in clear.

use baton_proto::v1::RelayConfig;

use crate::{Keyring, SealError};

/// The place of a DKIM key: `dkim/<relay domain>/<selector>`.
fn dkim_context(domain: &str, selector: &str) -> String {
    format!("dkim/{domain}/{selector}")
}

/// The place of a smarthost password: `smarthost/<pool>/<host>:<port>/<username>`.
fn smarthost_context(pool: &str, host: &str, port: u32, username: &str) -> String {
    format!("smarthost/{pool}/{host}:{port}/{username}")
}

/// The place of a VERP key: `verp/<relay domain>/<id>`.
fn verp_context(domain: &str, id: u32) -> String {
    format!("verp/{domain}/{id}")
}

/// The place of an EventSink's signing key: `webhook/<namespace>/<name>`.
fn webhook_context(sink: &str) -> String {
    format!("webhook/{sink}")
}

/// One secret of a snapshot, clear and sealed side, with its context.
enum Slot<'a> {
    Text(&'a mut String, &'a mut Option<baton_proto::v1::Sealed>),
    Bytes(&'a mut Vec<u8>, &'a mut Option<baton_proto::v1::Sealed>),
}

/// Every secret slot of `config`, with its context.
fn slots(config: &mut RelayConfig) -> Vec<(String, Slot<'_>)> {
    let mut out = Vec::new();
    for d in &mut config.domains {
        for k in &mut d.dkim_keys {
            out.push((
                dkim_context(&d.name, &k.selector),
                Slot::Text(&mut k.private_key_pem, &mut k.sealed_private_key),
            ));
        }
        if let Some(rp) = &mut d.return_path {
            for k in &mut rp.keys {
                out.push((
                    verp_context(&d.name, k.id),
                    Slot::Bytes(&mut k.secret, &mut k.sealed_secret),
                ));
            }
        }
    }
    for p in &mut config.pools {
        for s in &mut p.smarthosts {
            out.push((
                smarthost_context(&p.name, &s.host, s.port, &s.username),
                Slot::Text(&mut s.password, &mut s.sealed_password),
            ));
        }
    }
    for k in &mut config.sinks {
        out.push((
            webhook_context(&k.name),
            Slot::Bytes(&mut k.secret, &mut k.sealed_secret),
        ));
    }
    out
}

/// Seal every secret held in clear (clearing it); returns how many. Values already sealed are
/// kept. Without a keyring, a snapshot with a secret in clear is an error
/// ([`SealError::NoKeyring`]); one without is returned unchanged.
pub fn seal_config(
    config: &mut RelayConfig,
    keyring: Option<&Keyring>,
) -> Result<usize, SealError> {
    let mut sealed = 0;
    let pending = clear_secrets(config).len();
    if pending == 0 {
        return Ok(0);
    }
    let keyring = keyring.ok_or(SealError::NoKeyring(pending))?;
    for (context, slot) in slots(config) {
        match slot {
            Slot::Text(clear, out) if !clear.is_empty() => {
                *out = Some(keyring.seal(&context, clear.as_bytes())?);
                clear.clear();
                sealed += 1;
            }
            Slot::Bytes(clear, out) if !clear.is_empty() => {
                *out = Some(keyring.seal(&context, clear)?);
                clear.clear();
                sealed += 1;
            }
            _ => {}
        }
    }
    Ok(sealed)
}

/// Open every sealed secret into its clear field (in memory only); returns how many. A
/// snapshot without sealed values needs no keyring. The first secret that does not open fails
/// the whole snapshot: a process never runs on a half-opened configuration.
pub fn unseal_config(
    config: &mut RelayConfig,
    keyring: Option<&Keyring>,
) -> Result<usize, SealError> {
    let pending = sealed_key_ids(config).len();
    if pending == 0 {
        return Ok(0);
    }
    let keyring = keyring.ok_or(SealError::NoKeyring(pending))?;
    let mut opened = 0;
    for (context, slot) in slots(config) {
        match slot {
            Slot::Text(clear, sealed) => {
                if let Some(s) = sealed.take() {
                    let bytes = keyring.open(&context, &s)?;
                    *clear = String::from_utf8(bytes).map_err(|_| SealError::NotUtf8(context))?;
                    opened += 1;
                }
            }
            Slot::Bytes(clear, sealed) => {
                if let Some(s) = sealed.take() {
                    *clear = keyring.open(&context, &s)?;
                    opened += 1;
                }
            }
        }
    }
    Ok(opened)
}

/// The contexts of the secrets `config` holds in clear (empty: safe to store).
pub fn clear_secrets(config: &RelayConfig) -> Vec<String> {
    let mut copy = config.clone();
    slots(&mut copy)
        .into_iter()
        .filter(|(_, slot)| match slot {
            Slot::Text(clear, _) => !clear.is_empty(),
            Slot::Bytes(clear, _) => !clear.is_empty(),
        })
        .map(|(context, _)| context)
        .collect()
}

/// The key id of every sealed value of `config`, in snapshot order.
pub fn sealed_key_ids(config: &RelayConfig) -> Vec<u32> {
    let mut copy = config.clone();
    slots(&mut copy)
        .into_iter()
        .filter_map(|(_, slot)| match slot {
            Slot::Text(_, s) | Slot::Bytes(_, s) => s.as_ref().map(|s| s.key_id),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::KEY_LEN;
    use baton_proto::Message as _;
    use baton_proto::v1::{
        DkimKey, EventSink, RelayDomain, ReturnPath, SendingPool, Smarthost, VerpKey,
    };

    fn keyring(id: u32, b: u8) -> Keyring {
        Keyring::from_keys([(id, [b; KEY_LEN].as_slice())]).unwrap()
    }

    fn snapshot() -> RelayConfig {
        RelayConfig {
            generation: 3,
            domains: vec![RelayDomain {
                name: "team-a/example".into(),
                domain: "example.com".into(),
                dkim_keys: vec![DkimKey {
                    selector: "s1".into(),
                    algorithm: "rsa-sha256".into(),
                    private_key_pem:
                        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n".into(),
                    ..DkimKey::default()
                }],
                return_path: Some(ReturnPath {
                    domain: "bounces.example.com".into(),
                    keys: vec![VerpKey {
                        id: 1,
                        secret: b"verp-secret".to_vec(),
                        sealed_secret: None,
                    }],
                }),
                ..RelayDomain::default()
            }],
            pools: vec![SendingPool {
                name: "relay".into(),
                smarthosts: vec![
                    Smarthost {
                        host: "smtp.example.net".into(),
                        port: 587,
                        username: "u".into(),
                        password: "hunter2-password".into(),
                        ..Smarthost::default()
                    },
                    Smarthost {
                        host: "open.example.net".into(),
                        port: 25,
                        ..Smarthost::default()
                    },
                ],
                ..SendingPool::default()
            }],
            sinks: vec![EventSink {
                name: "team-a/hooks".into(),
                secret: b"webhook-signing-key".to_vec(),
                ..EventSink::default()
            }],
            ..RelayConfig::default()
        }
    }

    #[test]
    fn sealing_leaves_nothing_in_clear_and_opens_back() {
        let original = snapshot();
        assert_eq!(clear_secrets(&original).len(), 4);
        let k = keyring(1, 5);
        let mut sealed = original.clone();
        assert_eq!(seal_config(&mut sealed, Some(&k)).unwrap(), 4);
        assert!(clear_secrets(&sealed).is_empty());
        assert_eq!(sealed_key_ids(&sealed), vec![1, 1, 1, 1]);
        let wire = sealed.encode_to_vec();
        for needle in [
            &b"BEGIN PRIVATE KEY"[..],
            b"MIIE",
            b"verp-secret",
            b"hunter2",
            b"webhook-signing-key",
        ] {
            assert!(!wire.windows(needle.len()).any(|w| w == needle));
        }
        // Deterministic: sealing again gives the same bytes.
        let mut again = original.clone();
        seal_config(&mut again, Some(&k)).unwrap();
        assert_eq!(again, sealed);
        let mut opened = RelayConfig::decode(wire.as_slice()).unwrap();
        assert_eq!(unseal_config(&mut opened, Some(&k)).unwrap(), 4);
        assert_eq!(opened, original);
    }

    #[test]
    fn no_keyring_is_an_error_only_with_secrets() {
        let mut plain = RelayConfig::default();
        assert_eq!(seal_config(&mut plain, None).unwrap(), 0);
        assert_eq!(unseal_config(&mut plain, None).unwrap(), 0);
        let mut s = snapshot();
        assert!(matches!(
            seal_config(&mut s, None),
            Err(SealError::NoKeyring(4))
        ));
        seal_config(&mut s, Some(&keyring(1, 5))).unwrap();
        assert!(matches!(
            unseal_config(&mut s, None),
            Err(SealError::NoKeyring(4))
        ));
    }

    #[test]
    fn a_wrong_key_or_a_moved_value_fails_the_whole_snapshot() {
        let mut s = snapshot();
        seal_config(&mut s, Some(&keyring(1, 5))).unwrap();
        let mut wrong = s.clone();
        let e = unseal_config(&mut wrong, Some(&keyring(2, 5))).unwrap_err();
        assert!(e.is_unknown_key());
        let mut impostor = s.clone();
        assert!(matches!(
            unseal_config(&mut impostor, Some(&keyring(1, 6))),
            Err(SealError::Open { .. })
        ));
        // A password moved to another smarthost does not open there.
        let mut moved = s.clone();
        moved.pools[0].smarthosts[1].sealed_password =
            moved.pools[0].smarthosts[0].sealed_password.clone();
        let e = unseal_config(&mut moved, Some(&keyring(1, 5))).unwrap_err();
        assert!(e.to_string().contains("open.example.net"), "{e}");
    }
}
