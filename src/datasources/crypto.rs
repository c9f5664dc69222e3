//! Secrets inside data-source configs, encrypted at rest with AES-256-GCM.
//!
//! A secret is the value of `connectionString`, of any key whose name contains `password`,
//! `secret`, `token` or `apiKey` (case-insensitive, at any depth), every value of a `headers`
//! object (API sources put credentials there: `Authorization`, `X-Api-Key`, …), and the
//! credentials inside a `url` (a userinfo password, query parameters such as `access_token`,
//! `api_key`, `key`, `token`, `signature`): the URL is stored masked in place and its credentials
//! beside it under [`URL_SECRETS`], itself a secret. In the stored jsonb a secret is
//! `{"$enc": "v2:<key id>:<base64 of nonce ‖ ciphertext>"}`, sealed with associated data naming the
//! tenant, the data source and the field, so a ciphertext moved anywhere else does not decrypt;
//! the key id lets keys rotate (`ENCRYPTION_KEYS` holds the old ones for reading, `panels
//! rotate-secrets` re-encrypts). The plaintext is the secret's JSON, so any JSON value
//! round-trips. Responses and change records never show either form: they show [`MASK`]. Server
//! code that needs the real values (the sync) calls [`decrypt_config`].

use crate::ids::DataSourceId;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::{Config, Environment};
use crate::error::{ApiError, Result};

/// What a response shows in place of a secret; sent back on update, it keeps the stored value.
pub const MASK: &str = "********";

/// The key of the object that holds an encrypted secret in the stored config.
const ENC_KEY: &str = "$enc";
/// The first format: no associated data, no key id (still read; `panels rotate-secrets` rewrites).
const V1: &str = "v1:";
/// The current format: `v2:<key id>:<base64 of nonce ‖ ciphertext>`, sealed with associated data
/// naming the tenant, the data source and the field, so a ciphertext copied into another source,
/// tenant or field does not decrypt.
const V2: &str = "v2:";
const NONCE_LEN: usize = 12;

/// Where a secret belongs: bound into its ciphertext as associated data.
#[derive(Debug, Clone, Copy)]
pub struct SecretScope<'a> {
    pub tenant: &'a str,
    pub data_source_id: DataSourceId,
}

impl SecretScope<'_> {
    fn associated_data(&self, path: &[Seg]) -> Vec<u8> {
        format!(
            "panels/data_source/v2|{}|{}|{}",
            self.tenant,
            self.data_source_id,
            path_name(path)
        )
        .into_bytes()
    }
}

/// One key: its cipher and its id (the first 8 hex digits of a hash of the key: names the key in
/// each ciphertext without revealing it).
struct KeyEntry {
    id: String,
    cipher: Aes256Gcm,
}

impl KeyEntry {
    fn new(key: &[u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"panels-key-id");
        hasher.update(key);
        Self {
            id: hex::encode(&hasher.finalize()[..4]),
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key)),
        }
    }
}

/// The ciphers for data-source secrets: the current key (every encryption) and the old keys of
/// `ENCRYPTION_KEYS` (decryption only, until `panels rotate-secrets` has re-encrypted everything
/// with the current key). `Debug` never shows a key.
pub struct Crypto {
    current: KeyEntry,
    old: Vec<KeyEntry>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Crypto(AES-256-GCM, key {} + {} old, keys hidden)",
            self.current.id,
            self.old.len()
        )
    }
}

impl Crypto {
    pub fn new(key: [u8; 32]) -> Self {
        Self::with_old_keys(key, &[])
    }

    pub fn with_old_keys(key: [u8; 32], old: &[[u8; 32]]) -> Self {
        let current = KeyEntry::new(&key);
        let old = old
            .iter()
            .map(KeyEntry::new)
            .filter(|k| k.id != current.id)
            .collect();
        Self { current, old }
    }

    /// The id of the key every new secret is encrypted with.
    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// The cipher of this installation. Without `ENCRYPTION_KEY` (allowed only outside
    /// production, where configuration refuses to start) the key is derived from `JWT_SECRET`
    /// when there is one, else a fixed development key; either way a warning is logged once, here
    /// at start-up. Deriving rather than generating a random key keeps secrets readable across
    /// restarts of a developer machine; a random key would silently break every stored source.
    /// The derived key is only as secret as the JWT secret, which is why production needs its
    /// own key.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let old: Vec<[u8; 32]> = config
            .encryption_keys_old
            .iter()
            .map(|k| *k.bytes())
            .collect();
        if let Some(key) = &config.encryption_key {
            return Ok(Self::with_old_keys(*key.bytes(), &old));
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
                use secrecy::ExposeSecret;
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
        Ok(Self::with_old_keys(hasher.finalize().into(), &old))
    }

    /// Seals a secret that is not part of a data-source config (a webhook's signing secret) under
    /// the current key, bound to `aad` (which names where it belongs): the same format and key
    /// rotation as the configs' secrets.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> anyhow::Result<String> {
        self.encrypt(plaintext, aad)
    }

    /// Opens what [`Crypto::seal`] sealed with the same `aad`.
    pub fn open(&self, token: &str, aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.decrypt(token, aad)
    }

    fn key(&self, id: &str) -> Option<&KeyEntry> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == id)
    }

    /// `v2:<key id>:<base64 of nonce ‖ ciphertext>` of `plaintext` bound to `aad`, with a fresh
    /// random nonce, under the current key.
    fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> anyhow::Result<String> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| anyhow!("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{V2}{}:{}", self.current.id, STANDARD.encode(out)))
    }

    fn decrypt(&self, token: &str, aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        if let Some(rest) = token.strip_prefix(V2) {
            let (id, encoded) = rest.split_once(':').context("secret without a key id")?;
            let key = self.key(id).with_context(|| {
                format!("secret encrypted with key {id}, which is not configured (ENCRYPTION_KEYS)")
            })?;
            let (nonce, sealed) = split_sealed(encoded)?;
            return key
                .cipher
                .decrypt(
                    &nonce,
                    Payload {
                        msg: sealed.as_slice(),
                        aad,
                    },
                )
                .map_err(|_| {
                    anyhow!(
                        "secret does not decrypt here (another source, tenant or field, or altered)"
                    )
                });
        }
        let encoded = token.strip_prefix(V1).context("unknown secret format")?;
        let (nonce, sealed) = split_sealed(encoded)?;
        std::iter::once(&self.current)
            .chain(&self.old)
            .find_map(|k| k.cipher.decrypt(&nonce, sealed.as_slice()).ok())
            .ok_or_else(|| {
                anyhow!("secret does not decrypt with ENCRYPTION_KEY or ENCRYPTION_KEYS")
            })
    }
}

fn split_sealed(encoded: &str) -> anyhow::Result<(Nonce<aes_gcm::aead::consts::U12>, Vec<u8>)> {
    let bytes = STANDARD.decode(encoded).context("secret is not base64")?;
    if bytes.len() <= NONCE_LEN {
        return Err(anyhow!("secret is too short"));
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().context("secret nonce")?;
    Ok((Nonce::from(nonce), sealed.to_vec()))
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
                    if is_secret_name(key) || key == URL_SECRETS {
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

/// Encrypts every secret of a plaintext config for storage (`null` stays `null`: nothing to
/// hide). Expects the URL's secrets split off already ([`split_url_secrets`]).
pub fn encrypt_config(crypto: &Crypto, scope: SecretScope<'_>, config: &Value) -> Result<Value> {
    let mut out = config.clone();
    visit_secrets(&mut out, &mut |path, secret| {
        if !secret.is_null() && sealed_token(secret).is_none() {
            let plaintext = serde_json::to_vec(secret).map_err(|e| ApiError::Internal(e.into()))?;
            *secret = json!({ ENC_KEY: crypto.encrypt(&plaintext, &scope.associated_data(path))? });
        }
        Ok(())
    })?;
    Ok(out)
}

/// The stored config with every secret decrypted, the URL still masked and its secrets beside it
/// (the form an update compares with). A secret stored in clear (written before encryption
/// existed) is answered as it is; one that does not decrypt is an error.
pub fn open_config(crypto: &Crypto, scope: SecretScope<'_>, config: &Value) -> Result<Value> {
    let mut out = config.clone();
    visit_secrets(&mut out, &mut |path, secret| {
        if let Some(token) = sealed_token(secret) {
            let plaintext = crypto
                .decrypt(token, &scope.associated_data(path))
                .with_context(|| {
                    format!("cannot decrypt data-source secret {}", path_name(path))
                })?;
            *secret = serde_json::from_slice(&plaintext)
                .with_context(|| format!("decrypted secret {} is not JSON", path_name(path)))?;
        }
        Ok(())
    })?;
    Ok(out)
}

/// The config a connector uses: every secret decrypted and the URL whole again. For server code
/// that uses the source (the sync), never for a response.
pub fn decrypt_config(crypto: &Crypto, scope: SecretScope<'_>, config: &Value) -> Result<Value> {
    let mut out = open_config(crypto, scope, config)?;
    join_url_secrets(&mut out);
    Ok(out)
}

/// The stored config again with every secret under the current key and format, or `None` when it
/// already is (`panels rotate-secrets`).
pub fn reseal_config(
    crypto: &Crypto,
    scope: SecretScope<'_>,
    stored: &Value,
) -> Result<Option<Value>> {
    let mut stale = false;
    let mut probe = stored.clone();
    visit_secrets(&mut probe, &mut |_, secret| {
        match sealed_token(secret) {
            Some(token) if token.starts_with(&format!("{V2}{}:", crypto.current.id)) => {}
            None if secret.is_null() => {}
            _ => stale = true,
        }
        Ok(())
    })?;
    if !stale {
        return Ok(None);
    }
    let open = open_config(crypto, scope, stored)?;
    encrypt_config(crypto, scope, &open).map(Some)
}

/// The config as a client may see it: every secret (encrypted or not) replaced by [`MASK`], the
/// URL in its masked form, and the server's own bookkeeping (`$…` keys) left out.
pub fn mask_config(config: &Value) -> Value {
    let mut out = match config {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
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

/// Where the secrets of a URL are kept beside its masked form (itself a secret, so encrypted).
pub const URL_SECRETS: &str = "$urlSecrets";

/// Query parameters whose values are credentials: names a secret key would have
/// ([`is_secret_name`]: `access_token`, `api_key`, `client_secret`, …) and the usual short ones.
pub fn is_secret_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    is_secret_name(name)
        || matches!(
            lower.as_str(),
            "key" | "signature" | "sig" | "auth" | "code"
        )
}

/// One credential taken out of a URL: a query parameter's raw (still percent-encoded) value, or
/// the userinfo password (`name` `@password`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UrlSecret {
    pub name: String,
    pub value: String,
}

const USERINFO_PASSWORD: &str = "@password";

/// A credential of a URL a client sent: its name and its value, `None` when sent as the mask.
pub type SentCredential = (String, Option<String>);

/// Splits a URL into its masked form and its credentials, in order of appearance. A credential
/// sent as [`MASK`] comes back with the value `None`: the caller keeps the stored one. The query
/// is rewritten segment by segment, so everything but the masked values stays byte for byte.
pub fn split_url(raw: &str) -> Option<(String, Vec<SentCredential>)> {
    let mut url = url::Url::parse(raw).ok()?;
    let mut secrets = Vec::new();
    if let Some(password) = url.password().map(str::to_owned) {
        let kept = (password != MASK).then_some(password);
        secrets.push((USERINFO_PASSWORD.to_owned(), kept));
        url.set_password(Some(MASK)).ok()?;
    }
    if let Some(query) = url.query().map(str::to_owned) {
        let mut segments = Vec::new();
        for segment in query.split('&') {
            match segment.split_once('=') {
                Some((name, value)) if is_secret_param(&decode_component(name)) => {
                    let kept = (value != MASK).then(|| value.to_owned());
                    secrets.push((decode_component(name), kept));
                    segments.push(format!("{name}={MASK}"));
                }
                _ => segments.push(segment.to_owned()),
            }
        }
        url.set_query(Some(&segments.join("&")));
    }
    Some((url.into(), secrets))
}

/// The URL with its credentials put back (in the order [`split_url`] took them out).
pub fn join_url(masked: &str, secrets: &[UrlSecret]) -> String {
    let Ok(mut url) = url::Url::parse(masked) else {
        return masked.to_owned();
    };
    let take = |name: &str, used: &mut Vec<bool>| -> Option<String> {
        let i = secrets
            .iter()
            .enumerate()
            .position(|(i, s)| !used[i] && s.name == name)?;
        used[i] = true;
        Some(secrets[i].value.clone())
    };
    let mut used = vec![false; secrets.len()];
    if url.password() == Some(MASK)
        && let Some(password) = take(USERINFO_PASSWORD, &mut used)
    {
        let _ = url.set_password(Some(&password));
    }
    if let Some(query) = url.query().map(str::to_owned) {
        let segments: Vec<String> = query
            .split('&')
            .map(|segment| match segment.split_once('=') {
                Some((name, MASK)) if is_secret_param(&decode_component(name)) => {
                    match take(&decode_component(name), &mut used) {
                        Some(value) => format!("{name}={value}"),
                        None => segment.to_owned(),
                    }
                }
                _ => segment.to_owned(),
            })
            .collect();
        url.set_query(Some(&segments.join("&")));
    }
    url.into()
}

fn decode_component(text: &str) -> String {
    url::form_urlencoded::parse(format!("{text}=").as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

/// A plaintext config's URL split for storage: `url` masked, its credentials in
/// [`URL_SECRETS`] (the caller has filled kept ones in). No credentials, no [`URL_SECRETS`].
pub fn store_url_secrets(config: &mut Map<String, Value>, masked: String, secrets: Vec<UrlSecret>) {
    config.insert("url".to_owned(), Value::String(masked));
    if secrets.is_empty() {
        config.remove(URL_SECRETS);
    } else {
        config.insert(URL_SECRETS.to_owned(), json!(secrets));
    }
}

/// The stored credentials of a (decrypted) config's URL.
pub fn url_secrets_of(config: &Value) -> Vec<UrlSecret> {
    config
        .get(URL_SECRETS)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// Puts a decrypted config's URL back together.
fn join_url_secrets(config: &mut Value) {
    let secrets = url_secrets_of(config);
    if let Value::Object(map) = config {
        map.remove(URL_SECRETS);
        if !secrets.is_empty()
            && let Some(Value::String(url)) = map.get("url")
        {
            let whole = join_url(url, &secrets);
            map.insert("url".to_owned(), Value::String(whole));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EncryptionKey;

    fn crypto() -> Crypto {
        Crypto::new([7u8; 32])
    }

    const SCOPE: SecretScope<'static> = SecretScope {
        tenant: "acme",
        data_source_id: crate::ids::DataSourceId(7),
    };

    #[test]
    fn keys_decode_from_hex_and_base64_of_32_bytes_only() {
        let parse = |raw: &str| EncryptionKey::parse(raw).map(|k| *k.bytes());
        assert_eq!(parse(&"ab".repeat(32)).expect("hex"), [0xab; 32]);
        assert_eq!(
            parse(&STANDARD.encode([1u8; 32])).expect("base64"),
            [1u8; 32]
        );
        assert!(parse(&"ab".repeat(16)).is_err());
        assert!(parse(&STANDARD.encode([1u8; 16])).is_err());
        assert!(parse("not a key!").is_err());
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
        let sealed = encrypt_config(&crypto(), SCOPE, &plain).expect("encrypt");
        let text = sealed.to_string();
        // Long enough that base64 ciphertext cannot contain one by chance.
        for secret in ["hunter2", "Bearer abc", "text/csv", "list-token-value"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(sealed["query"], "select 1");
        assert_eq!(sealed["auth"]["user"], "me");
        let token = sealed["connectionString"]["$enc"].as_str().expect("sealed");
        assert!(
            token.starts_with(&format!("v2:{}:", crypto().current_key_id())),
            "{token}"
        );
        assert_eq!(
            decrypt_config(&crypto(), SCOPE, &sealed).expect("decrypt"),
            plain
        );

        let masked = mask_config(&sealed);
        assert_eq!(masked["connectionString"], MASK);
        assert_eq!(masked["headers"]["Accept"], MASK);
        assert_eq!(masked["auth"]["password"], MASK);
        assert_eq!(masked["list"][0]["token"], MASK);
        assert_eq!(masked["apiKey"], Value::Null);
        assert_eq!(masked["query"], "select 1");
    }

    #[test]
    fn a_ciphertext_is_bound_to_its_tenant_source_and_field() {
        let sealed = encrypt_config(&crypto(), SCOPE, &json!({"password": "p", "token": "t"}))
            .expect("encrypt");
        let other_source = SecretScope {
            data_source_id: crate::ids::DataSourceId(8),
            ..SCOPE
        };
        let other_tenant = SecretScope {
            tenant: "evil",
            ..SCOPE
        };
        assert!(decrypt_config(&crypto(), other_source, &sealed).is_err());
        assert!(decrypt_config(&crypto(), other_tenant, &sealed).is_err());
        // The password's ciphertext moved into the token field does not decrypt either.
        let mut swapped = sealed.clone();
        swapped["token"] = sealed["password"].clone();
        assert!(decrypt_config(&crypto(), SCOPE, &swapped).is_err());
    }

    #[test]
    fn another_key_cannot_decrypt_and_nonces_differ() {
        let plain = json!({"password": "p"});
        let a = encrypt_config(&crypto(), SCOPE, &plain).expect("encrypt");
        let b = encrypt_config(&crypto(), SCOPE, &plain).expect("encrypt");
        assert_ne!(a, b, "a fresh nonce per encryption");
        assert!(decrypt_config(&Crypto::new([8u8; 32]), SCOPE, &a).is_err());
    }

    #[test]
    fn old_keys_decrypt_and_resealing_moves_everything_to_the_current_key() {
        let plain = json!({"password": "p", "headers": {"A": "b"}, "query": "q"});
        let old = Crypto::new([1u8; 32]);
        let sealed_old = encrypt_config(&old, SCOPE, &plain).expect("encrypt");
        let rotated = Crypto::with_old_keys([2u8; 32], &[[1u8; 32]]);
        assert_eq!(
            decrypt_config(&rotated, SCOPE, &sealed_old).expect("old key"),
            plain
        );
        let resealed = reseal_config(&rotated, SCOPE, &sealed_old)
            .expect("reseal")
            .expect("was stale");
        assert!(
            reseal_config(&rotated, SCOPE, &resealed)
                .expect("again")
                .is_none()
        );
        let current_only = Crypto::new([2u8; 32]);
        assert_eq!(
            decrypt_config(&current_only, SCOPE, &resealed).expect("current"),
            plain
        );
    }

    #[test]
    fn v1_secrets_without_associated_data_still_read() {
        // The format before key ids and associated data: v1:<base64 of nonce ‖ ciphertext>.
        let key = [7u8; 32];
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(key));
        let nonce = Nonce::from([3u8; NONCE_LEN]);
        let sealed = cipher.encrypt(&nonce, &b"\"old-pw\""[..]).expect("seal");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        let stored = json!({"password": {"$enc": format!("v1:{}", STANDARD.encode(bytes))}});
        let plain = decrypt_config(&crypto(), SCOPE, &stored).expect("v1");
        assert_eq!(plain["password"], "old-pw");
        assert!(
            reseal_config(&crypto(), SCOPE, &stored)
                .expect("reseal")
                .is_some()
        );
    }

    #[test]
    fn legacy_plaintext_secrets_read_as_they_are() {
        let legacy = json!({"connectionString": "postgres://old"});
        assert_eq!(
            decrypt_config(&crypto(), SCOPE, &legacy).expect("plain"),
            legacy
        );
        assert_eq!(mask_config(&legacy)["connectionString"], MASK);
    }

    #[test]
    fn url_credentials_are_masked_in_place_and_put_back_byte_for_byte() {
        let raw = "https://svc:pw%21@api.example.com/v1/p?page=2&access_token=abc%2Bdef&q=a+b&key=k1&signature=s";
        let (masked, secrets) = split_url(raw).expect("url");
        assert_eq!(
            masked,
            "https://svc:********@api.example.com/v1/p?page=2&access_token=********&q=a+b&key=********&signature=********"
        );
        let secrets: Vec<UrlSecret> = secrets
            .into_iter()
            .map(|(name, value)| UrlSecret {
                name,
                value: value.expect("sent"),
            })
            .collect();
        assert_eq!(secrets[0].name, "@password");
        assert_eq!(
            secrets[1],
            UrlSecret {
                name: "access_token".into(),
                value: "abc%2Bdef".into()
            }
        );
        assert_eq!(join_url(&masked, &secrets), raw);
        // A credential sent back as the mask is a "keep".
        let (_, again) = split_url(&masked).expect("url");
        assert!(again.iter().all(|(_, v)| v.is_none()));
        // No credentials: nothing changes.
        let (plain, none) = split_url("https://x.example/a?page=1").expect("url");
        assert_eq!(plain, "https://x.example/a?page=1");
        assert!(none.is_empty());
    }

    #[test]
    fn a_stored_url_masks_without_decryption_and_decrypts_whole() {
        let (masked, secrets) = split_url("https://api.example/x?token=t0p&page=1").expect("url");
        let secrets = secrets
            .into_iter()
            .map(|(name, value)| UrlSecret {
                name,
                value: value.expect("sent"),
            })
            .collect();
        let mut map = Map::new();
        store_url_secrets(&mut map, masked, secrets);
        let sealed = encrypt_config(&crypto(), SCOPE, &Value::Object(map)).expect("encrypt");
        assert!(!sealed.to_string().contains("t0p"));
        let shown = mask_config(&sealed);
        assert_eq!(
            shown,
            json!({"url": "https://api.example/x?token=********&page=1"})
        );
        let plain = decrypt_config(&crypto(), SCOPE, &sealed).expect("decrypt");
        assert_eq!(
            plain,
            json!({"url": "https://api.example/x?token=t0p&page=1"})
        );
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
