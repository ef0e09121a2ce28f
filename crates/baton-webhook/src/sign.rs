//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): HMAC-SHA256 with the
//! sink's key over `<webhook-id>.<webhook-timestamp>.<body>`, sent as
//! `webhook-signature: v1,<base64>`.

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The header names of the specification.
pub const ID_HEADER: &str = "webhook-id";
/// Seconds since the Unix epoch when this attempt was sent.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Space-separated `v1,<base64>` signatures.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The `webhook-signature` value of one message.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' test suites: secret
    /// `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`, id `msg_p5jXN8AQM9LWM0D4loKWxJek`,
    /// timestamp 1614265330, body `{"test": 2432232314}`.
    #[test]
    fn matches_the_reference_example() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_or_default();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn every_input_changes_the_signature() {
        let base = signature(b"k", "id", 1, b"body");
        assert_ne!(base, signature(b"K", "id", 1, b"body"));
        assert_ne!(base, signature(b"k", "iD", 1, b"body"));
        assert_ne!(base, signature(b"k", "id", 2, b"body"));
        assert_ne!(base, signature(b"k", "id", 1, b"bodY"));
    }
}
