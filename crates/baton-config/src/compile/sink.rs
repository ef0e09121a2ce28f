//! EventSink → `baton.v1.EventSink`: the endpoint, its signing key (decoded from the
//! Standard Webhooks `whsec_` form) and the event filter. An invalid sink is left out of the
//! snapshot and reported; it never fails the others.

use base64::Engine as _;
use baton_proto::v1 as pb;

use super::secrets::{SecretIndex, secret_value};
use crate::InvalidObject;
use crate::crd::{EVENT_TYPES, EventSink};

/// Key of the signing secret in an EventSink's Secret.
pub const SINK_SECRET_KEY: &str = "secret";
/// Shortest signing key accepted (decoded bytes); the Standard Webhooks specification asks
/// for 24 to 64.
pub const MIN_SINK_KEY: usize = 24;
/// Longest signing key accepted (decoded bytes).
pub const MAX_SINK_KEY: usize = 64;

/// What the compiler concluded about one EventSink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkReport {
    /// `namespace/name` of the EventSink.
    pub name: String,
    /// Namespace of the EventSink.
    pub namespace: String,
    /// `metadata.name` of the EventSink.
    pub resource_name: String,
    /// Why it was left out of the snapshot (`None`: it is in the snapshot).
    pub invalid: Option<InvalidObject>,
}

/// The signing key of a Standard Webhooks secret: `whsec_` (optional) then base64.
pub fn signing_key(text: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(text)
        .map_err(|_| "is not UTF-8".to_owned())?
        .trim();
    let b64 = text.strip_prefix("whsec_").unwrap_or(text);
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "is not `whsec_` followed by base64".to_owned())?;
    if !(MIN_SINK_KEY..=MAX_SINK_KEY).contains(&key.len()) {
        return Err(format!(
            "decodes to {} bytes; a signing key has {MIN_SINK_KEY} to {MAX_SINK_KEY}",
            key.len()
        ));
    }
    Ok(key)
}

/// Compile one EventSink named `key` (`namespace/name`).
pub(crate) fn compile_sink(
    sink: &EventSink,
    key: &str,
    namespace: &str,
    secrets: &SecretIndex<'_>,
) -> Result<pb::EventSink, InvalidObject> {
    let bad = |field: &str, message: String| InvalidObject::new("EventSink", key, field, message);
    let spec = &sink.spec;
    let url = spec.url.trim();
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("spec.url", "must be an https:// URL".into()))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains('@') || url.chars().any(char::is_whitespace) {
        return Err(bad(
            "spec.url",
            "must be https://host[:port]/path with no user info".into(),
        ));
    }
    for t in &spec.types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(bad("spec.types", format!("unknown event type {t:?}")));
        }
    }
    let secret_name = &spec.secret_ref.name;
    let secret = secrets.get(namespace, secret_name).ok_or_else(|| {
        bad(
            "spec.secretRef",
            format!("Secret {namespace}/{secret_name} not found"),
        )
    })?;
    let text = secret_value(secret, SINK_SECRET_KEY).ok_or_else(|| {
        bad(
            "spec.secretRef",
            format!("Secret {namespace}/{secret_name} has no `{SINK_SECRET_KEY}` key"),
        )
    })?;
    let signing = signing_key(text).map_err(|e| {
        bad(
            "spec.secretRef",
            format!("Secret {namespace}/{secret_name}: `{SINK_SECRET_KEY}` {e}"),
        )
    })?;
    let ca_bundle_pem = match &spec.ca_bundle_secret_ref {
        Some(r) => {
            let r = crate::crd::NamespacedSecretRef {
                name: r.name.clone(),
                namespace: Some(namespace.to_owned()),
            };
            super::secrets::ca_bundle(secrets, &r).map_err(|e| bad("spec.caBundleSecretRef", e))?
        }
        None => String::new(),
    };
    let duration = |field: &str, text: &str| {
        crate::units::parse_duration(text)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| bad(field, e))
    };
    let timeout_ms = duration("spec.timeout", &spec.timeout)?;
    if timeout_ms == 0 {
        return Err(bad("spec.timeout", "must be more than 0s".into()));
    }
    let max_event_age_ms = duration("spec.maxEventAge", &spec.max_event_age)?;
    let mut types = spec.types.clone();
    types.sort();
    types.dedup();
    let mut relay_domains = spec.relay_domains.clone();
    relay_domains.sort();
    relay_domains.dedup();
    Ok(pb::EventSink {
        name: key.to_owned(),
        namespace: namespace.to_owned(),
        url: url.to_owned(),
        secret: signing,
        sealed_secret: None,
        types,
        relay_domains,
        ca_bundle_pem,
        timeout_ms,
        max_backlog: spec.max_backlog.max(1),
        max_event_age_ms,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_standard_webhooks_secret_decodes_with_or_without_its_prefix() {
        let raw = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(signing_key(format!("whsec_{b64}").as_bytes()).unwrap(), raw);
        assert_eq!(signing_key(format!(" {b64}\n").as_bytes()).unwrap(), raw);
        assert!(signing_key(b"whsec_not base64!").is_err());
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 8]);
        assert!(
            signing_key(short.as_bytes())
                .unwrap_err()
                .contains("8 bytes")
        );
        assert!(signing_key(&[0xff, 0xfe]).is_err());
    }
}
