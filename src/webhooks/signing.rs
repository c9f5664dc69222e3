//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): a secret is `whsec_` and
//! the base64 of its key's bytes; a message is signed with HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}` and the signature sent as `v1,<base64>` in
//! `webhook-signature`, several of them separated by spaces (during a rotation, one per secret).
//!
//! Secrets are stored sealed with `ENCRYPTION_KEY` ([`Crypto::seal`]), bound to the tenant and the
//! webhook, so a sealed secret copied to another webhook or tenant does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::datasources::Crypto;
use crate::error::{ApiError, Result};

/// What every secret starts with.
pub const PREFIX: &str = "whsec_";

type HmacSha256 = Hmac<Sha256>;

/// A new secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The HMAC key of a secret: its bytes after `whsec_`, base64-decoded.
pub fn key_of(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(PREFIX)?).ok()
}

/// `v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    // invariant: HMAC takes a key of any length (longer ones are hashed), so `new_from_slice`
    // has no error case for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per key, separated by spaces.
pub fn signature_header(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &str) -> String {
    keys.iter()
        .map(|key| sign(key, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What binds a sealed secret to its place.
fn associated_data(tenant: &str, webhook_id: i64) -> Vec<u8> {
    format!("panels/webhook/v1|{tenant}|{webhook_id}|secret").into_bytes()
}

/// The secret sealed for storage.
pub fn seal(crypto: &Crypto, tenant: &str, webhook_id: i64, secret: &str) -> Result<String> {
    crypto
        .seal(secret.as_bytes(), &associated_data(tenant, webhook_id))
        .map_err(ApiError::Internal)
}

/// The HMAC key of a stored (sealed) secret.
pub fn open_key(crypto: &Crypto, tenant: &str, webhook_id: i64, sealed: &str) -> Result<Vec<u8>> {
    let plain = crypto
        .open(sealed, &associated_data(tenant, webhook_id))
        .map_err(|e| ApiError::Internal(e.context("cannot open a webhook secret")))?;
    std::str::from_utf8(&plain)
        .ok()
        .and_then(key_of)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a stored webhook secret is malformed")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_specification_says() {
        // Computed independently (Python's hmac, hashlib and base64) from the specification.
        let key = key_of("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw8ZdmK6fVhq0=").expect("key");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,FjyZUxnZxWgSQDX5g+YYsQBX2tixt9vK3trTWa9Xphw="
        );
    }

    #[test]
    fn secrets_are_prefixed_base64_of_32_bytes_and_seal_to_their_place() {
        let secret = new_secret();
        assert_eq!(key_of(&secret).expect("key").len(), 32);
        assert_eq!(key_of("sk_nope"), None);
        let crypto = Crypto::new([7u8; 32]);
        let sealed = seal(&crypto, "acme", 4, &secret).expect("seal");
        assert!(!sealed.contains(&secret[PREFIX.len()..]));
        assert_eq!(
            open_key(&crypto, "acme", 4, &sealed).expect("open"),
            key_of(&secret).expect("key")
        );
        assert!(open_key(&crypto, "acme", 5, &sealed).is_err());
        assert!(open_key(&crypto, "other", 4, &sealed).is_err());
    }

    #[test]
    fn a_rotation_sends_one_signature_per_secret() {
        let header = signature_header(&[vec![1u8; 32], vec![2u8; 32]], "1-2", 5, "{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }
}
