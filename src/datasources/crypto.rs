//! Secrets inside data-source configs, encrypted at rest with AES-256-GCM.
//!
//! A secret is the value of `connectionString`, of any key whose name contains `password`,
//! `secret`, `token` or `apiKey` (case-insensitive, at any depth), and every value of a
//! `headers` object (API sources put credentials there: `Authorization`, `X-Api-Key`, …). In the
//! stored jsonb a secret is `{"$enc": "v1:<base64 of nonce ‖ ciphertext>"}`; the plaintext is the
//! secret's JSON, so any JSON value round-trips. Responses and change records never show either
//! form: they show [`MASK`]. Server code that needs the real values (the sync) calls
//! [`decrypt_config`].

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::{Config, Environment};
use crate::error::{ApiError, Result};

/// What a response shows in place of a secret; sent back on update, it keeps the stored value.
pub const MASK: &str = "********";

/// The key of the object that holds an encrypted secret in the stored config.
const ENC_KEY: &str = "$enc";
/// Version prefix of the ciphertext format, so the format (or key) can change later.
const VERSION: &str = "v1:";
const NONCE_LEN: usize = 12;

/// The cipher for data-source secrets. `Debug` never shows the key.
pub struct Crypto {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypto(AES-256-GCM, key hidden)")
    }
}

/// Decodes `ENCRYPTION_KEY`: 64 hex characters, or base64 (standard or URL-safe, padded or not)
/// of exactly 32 bytes.
pub fn decode_key(raw: &str) -> std::result::Result<[u8; 32], String> {
    let raw = raw.trim();
    let bytes = if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(raw).map_err(|e| e.to_string())?
    } else {
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(raw).ok())
            .ok_or_else(|| "expected 64 hex characters or base64 of 32 bytes".to_owned())?
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("expected 32 bytes, got {}", bytes.len()))
}

impl Crypto {
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(key)),
        }
    }

    /// The cipher of this installation. Without `ENCRYPTION_KEY` (allowed only outside
    /// production, where configuration refuses to start) the key is derived from `JWT_SECRET`
    /// when there is one, else a fixed development key; either way a warning is logged once, here
    /// at start-up. Deriving rather than generating a random key keeps secrets readable across
    /// restarts of a developer machine; a random key would silently break every stored source.
    /// The derived key is only as secret as the JWT secret, which is why production needs its
    /// own key.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        if let Some(raw) = &config.encryption_key {
            let key = decode_key(raw.expose_secret())
                .map_err(|reason| anyhow!("invalid configuration: ENCRYPTION_KEY: {reason}"))?;
            return Ok(Self::new(key));
        }
        if config.environment == Environment::Production {
            return Err(anyhow!(
                "invalid configuration: ENCRYPTION_KEY: is required when APP_ENV=production"
            ));
        }
        let mut hasher = Sha256::new();
        hasher.update(b"panels-config-encryption");
        match &config.jwt_secret {
            Some(secret) => {
                hasher.update(secret.expose_secret().as_bytes());
                tracing::warn!(
                    "ENCRYPTION_KEY is not set: data-source secrets are encrypted with a key derived from JWT_SECRET (development only)"
                );
            }
            None => {
                hasher.update(b"development");
                tracing::warn!(
                    "ENCRYPTION_KEY and JWT_SECRET are not set: data-source secrets are encrypted with a fixed development key"
                );
            }
        }
        Ok(Self::new(hasher.finalize().into()))
    }

    /// `v1:<base64 of nonce ‖ ciphertext>` of `plaintext`, with a fresh random nonce.
    fn encrypt(&self, plaintext: &[u8]) -> anyhow::Result<String> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, plaintext)
            .map_err(|_| anyhow!("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{VERSION}{}", STANDARD.encode(out)))
    }

    fn decrypt(&self, token: &str) -> anyhow::Result<Vec<u8>> {
        let encoded = token
            .strip_prefix(VERSION)
            .context("unknown secret format")?;
        let bytes = STANDARD.decode(encoded).context("secret is not base64")?;
        if bytes.len() <= NONCE_LEN {
            return Err(anyhow!("secret is too short"));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().context("secret nonce")?;
        self.cipher
            .decrypt(&Nonce::from(nonce), sealed)
            .map_err(|_| anyhow!("secret does not decrypt with this ENCRYPTION_KEY"))
    }
}

/// One step of a path inside a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// `config.headers.Authorization`, as a validation error names it.
pub fn path_name(path: &[Seg]) -> String {
    let mut name = String::from("config");
    for seg in path {
        match seg {
            Seg::Key(k) => {
                name.push('.');
                name.push_str(k);
            }
            Seg::Index(i) => name.push_str(&format!("[{i}]")),
        }
    }
    name
}

/// Whether a key's value is a secret: `connectionString`, or a name containing password, secret,
/// token or apiKey (ignoring case, `_` and `-`, so `api_key` and `X-API-KEY` count too).
pub fn is_secret_name(key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    folded == "connectionstring"
        || ["password", "secret", "token", "apikey"]
            .iter()
            .any(|w| folded.contains(w))
}

/// Calls `f` with the path and value of every secret in `value`.
pub fn visit_secrets(
    value: &mut Value,
    f: &mut dyn FnMut(&[Seg], &mut Value) -> Result<()>,
) -> Result<()> {
    fn walk(
        value: &mut Value,
        path: &mut Vec<Seg>,
        f: &mut dyn FnMut(&[Seg], &mut Value) -> Result<()>,
    ) -> Result<()> {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    path.push(Seg::Key(key.clone()));
                    if is_secret_name(key) {
                        f(path, child)?;
                    } else if key.eq_ignore_ascii_case("headers") && child.is_object() {
                        if let Value::Object(headers) = child {
                            for (name, header) in headers.iter_mut() {
                                path.push(Seg::Key(name.clone()));
                                f(path, header)?;
                                path.pop();
                            }
                        }
                    } else {
                        walk(child, path, f)?;
                    }
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter_mut().enumerate() {
                    path.push(Seg::Index(i));
                    walk(child, path, f)?;
                    path.pop();
                }
            }
            _ => {}
        }
        Ok(())
    }
    walk(value, &mut Vec::new(), f)
}

/// The value at `path` inside `value`, if there is one.
pub fn lookup<'a>(value: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(value, |current, seg| match seg {
        Seg::Key(k) => current.as_object()?.get(k),
        Seg::Index(i) => current.as_array()?.get(*i),
    })
}

/// The encrypted form of a secret, if `value` is one.
fn sealed_token(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) if map.len() == 1 => map.get(ENC_KEY)?.as_str(),
        _ => None,
    }
}

/// Encrypts every secret of a plaintext config for storage (`null` stays `null`: nothing to hide).
pub fn encrypt_config(crypto: &Crypto, config: &Value) -> Result<Value> {
    let mut out = config.clone();
    visit_secrets(&mut out, &mut |_, secret| {
        if !secret.is_null() {
            let plaintext = serde_json::to_vec(secret).map_err(|e| ApiError::Internal(e.into()))?;
            *secret = json!({ ENC_KEY: crypto.encrypt(&plaintext)? });
        }
        Ok(())
    })?;
    Ok(out)
}

/// The stored config with every secret decrypted: for server code that uses the source (the
/// sync), never for a response. A secret stored in clear (written before encryption existed) is
/// answered as it is; one that does not decrypt (another key) is an error.
pub fn decrypt_config(crypto: &Crypto, config: &Value) -> Result<Value> {
    let mut out = config.clone();
    visit_secrets(&mut out, &mut |path, secret| {
        if let Some(token) = sealed_token(secret) {
            let plaintext = crypto.decrypt(token).with_context(|| {
                format!("cannot decrypt data-source secret {}", path_name(path))
            })?;
            *secret = serde_json::from_slice(&plaintext)
                .with_context(|| format!("decrypted secret {} is not JSON", path_name(path)))?;
        }
        Ok(())
    })?;
    Ok(out)
}

/// The config as a client may see it: every secret (encrypted or not) replaced by [`MASK`].
pub fn mask_config(config: &Value) -> Value {
    let mut out = match config {
        Value::Object(map) => Value::Object(map.clone()),
        // A non-object config (never written by this service) reads as empty.
        _ => Value::Object(Map::new()),
    };
    // The closure never fails, so neither does the walk.
    let _ = visit_secrets(&mut out, &mut |_, secret| {
        if !secret.is_null() {
            *secret = Value::String(MASK.to_owned());
        }
        Ok(())
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto() -> Crypto {
        Crypto::new([7u8; 32])
    }

    #[test]
    fn keys_decode_from_hex_and_base64_of_32_bytes_only() {
        assert_eq!(decode_key(&"ab".repeat(32)).expect("hex"), [0xab; 32]);
        assert_eq!(
            decode_key(&STANDARD.encode([1u8; 32])).expect("base64"),
            [1u8; 32]
        );
        assert_eq!(
            decode_key(&URL_SAFE_NO_PAD.encode([2u8; 32])).expect("url-safe"),
            [2u8; 32]
        );
        assert!(decode_key(&"ab".repeat(16)).is_err());
        assert!(decode_key(&STANDARD.encode([1u8; 16])).is_err());
        assert!(decode_key("not a key!").is_err());
    }

    #[test]
    fn secrets_are_named_by_convention() {
        for name in [
            "connectionString",
            "password",
            "dbPassword",
            "clientSecret",
            "accessToken",
            "apiKey",
            "api_key",
            "X-API-KEY",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["keyField", "query", "url", "timeoutMs", "refreshInterval"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn secrets_round_trip_encrypted_and_mask_everywhere() {
        let plain = json!({
            "connectionString": "postgres://u:hunter2@db/x",
            "query": "select 1",
            "headers": {"Authorization": "Bearer abc", "Accept": "text/csv"},
            "auth": {"password": 1234, "user": "me"},
            "list": [{"token": "list-token-value"}],
            "apiKey": null,
        });
        let sealed = encrypt_config(&crypto(), &plain).expect("encrypt");
        let text = sealed.to_string();
        // Long enough that base64 ciphertext cannot contain one by chance.
        for secret in ["hunter2", "Bearer abc", "text/csv", "list-token-value"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(sealed["query"], "select 1");
        assert_eq!(sealed["auth"]["user"], "me");
        assert!(
            sealed["connectionString"]["$enc"]
                .as_str()
                .expect("sealed")
                .starts_with("v1:")
        );
        assert_eq!(decrypt_config(&crypto(), &sealed).expect("decrypt"), plain);

        let masked = mask_config(&sealed);
        assert_eq!(masked["connectionString"], MASK);
        assert_eq!(masked["headers"]["Accept"], MASK);
        assert_eq!(masked["auth"]["password"], MASK);
        assert_eq!(masked["list"][0]["token"], MASK);
        assert_eq!(masked["apiKey"], Value::Null);
        assert_eq!(masked["query"], "select 1");
    }

    #[test]
    fn another_key_cannot_decrypt_and_nonces_differ() {
        let plain = json!({"password": "p"});
        let a = encrypt_config(&crypto(), &plain).expect("encrypt");
        let b = encrypt_config(&crypto(), &plain).expect("encrypt");
        assert_ne!(a, b, "a fresh nonce per encryption");
        assert!(decrypt_config(&Crypto::new([8u8; 32]), &a).is_err());
    }

    #[test]
    fn legacy_plaintext_secrets_read_as_they_are() {
        let legacy = json!({"connectionString": "postgres://old"});
        assert_eq!(decrypt_config(&crypto(), &legacy).expect("plain"), legacy);
        assert_eq!(mask_config(&legacy)["connectionString"], MASK);
    }

    #[test]
    fn lookup_follows_keys_and_indexes() {
        let v = json!({"a": [{"b": 1}]});
        assert_eq!(
            lookup(
                &v,
                &[Seg::Key("a".into()), Seg::Index(0), Seg::Key("b".into())]
            ),
            Some(&json!(1))
        );
        assert_eq!(lookup(&v, &[Seg::Key("x".into())]), None);
        assert_eq!(
            path_name(&[Seg::Key("a".into()), Seg::Index(0)]),
            "config.a[0]"
        );
    }
}
