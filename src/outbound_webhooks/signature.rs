//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): the
//! HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` under each
//! secret, base64, as `v1,<signature>`, space-separated when several
//! secrets sign (a rotation). Secrets are `whsec_` and base64 key bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// Key bytes of a generated secret (the specification asks for 24 to 64).
const KEY_BYTES: usize = 32;

/// A new random signing secret.
pub fn generate_secret() -> String {
    let mut key = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// A stored secret that is not `whsec_` and base64: our own data is wrong.
#[derive(Debug, thiserror::Error)]
#[error("a webhook signing secret is not whsec_ and base64")]
pub struct MalformedSecret;

/// The `webhook-signature` header value for one delivery.
pub fn sign(
    secrets: &[&str],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, MalformedSecret> {
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let key = secret
            .strip_prefix(PREFIX)
            .and_then(|encoded| STANDARD.decode(encoded).ok())
            .ok_or(MalformedSecret)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| MalformedSecret)?;
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let signature = STANDARD.encode(mac.finalize().into_bytes());
        signatures.push(format!("v1,{signature}"));
    }
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_specifications_example() {
        // The example of the Standard Webhooks specification.
        let signature = sign(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn the_reference_library_verifies_what_we_sign() {
        let secret = generate_secret();
        let body = br#"{"type":"member.joined"}"#;
        let timestamp = chrono::Utc::now().timestamp();
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", http::HeaderValue::from_static("evt_1"));
        headers.insert("webhook-timestamp", timestamp.into());
        let signature = sign(&[&secret], "evt_1", timestamp, body).unwrap();
        headers.insert("webhook-signature", signature.parse().unwrap());
        let reference = standardwebhooks::Webhook::new(&secret).unwrap();
        reference.verify(body, &headers).expect("verified");
        let other = standardwebhooks::Webhook::new(&generate_secret()).unwrap();
        assert!(other.verify(body, &headers).is_err());
    }

    #[test]
    fn every_secret_signs_and_a_malformed_one_is_refused() {
        let new = generate_secret();
        let old = generate_secret();
        assert!(new.starts_with("whsec_") && new != old);
        let both = sign(&[&new, &old], "id", 1, b"{}").unwrap();
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&[&new], "id", 1, b"{}").unwrap());
        assert_eq!(parts[1], sign(&[&old], "id", 1, b"{}").unwrap());
        assert!(sign(&["not-a-secret"], "id", 1, b"{}").is_err());
    }
}
