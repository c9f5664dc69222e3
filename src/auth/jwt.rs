//! Access tokens: issuing ours (HS256) and verifying ours and the identity provider's.
//!
//! Every token is verified: signature, `exp` (required), `nbf`, and `iss`/`aud` when configured.
//! The algorithm decides the key, never the other way round: HS256 only ever verifies with
//! `JWT_SECRET`, RS256/ES256 only with the public keys of `JWT_PUBLIC_KEYS_FILE`, so a token signed
//! with HS256 over a public key (algorithm confusion) or with `alg: none` is rejected.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::model::{Credential, Principal, Role, TenantId};
use crate::config::Config;

/// The claims of the access tokens we issue.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub email: String,
    pub tenant: String,
    pub role: Role,
    pub exp: u64,
    pub iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// What we read from any accepted token: ours, or the identity provider's (Stytch B2B).
#[derive(Debug, Deserialize)]
struct IncomingClaims {
    sub: Option<String>,
    email: Option<String>,
    tenant: Option<String>,
    role: Option<String>,
    #[serde(rename = "https://stytch.com/organization")]
    organization: Option<ProviderOrganization>,
    #[serde(rename = "https://stytch.com/session")]
    session: Option<ProviderSession>,
    /// An identity provider's statement that `email` belongs to the member; `false` means the
    /// address is unproven, so it grants nothing an ACL entry names.
    email_verified: Option<bool>,
    /// Checked by the validation; read again to bound how long a verified token is remembered.
    exp: Option<f64>,
    nbf: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct ProviderOrganization {
    slug: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ProviderSession {
    #[serde(default)]
    roles: Vec<String>,
}

struct ExternalKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

/// Signing and verification keys, built once at start-up.
pub struct AuthKeys {
    encoding: EncodingKey,
    hs256: DecodingKey,
    /// External public keys by `kid` (JWKS) or under `None` (a single PEM key).
    external: HashMap<Option<String>, ExternalKey>,
    issuer: Option<String>,
    audience: Option<String>,
    /// The checks of each accepted algorithm, built once (building them allocates sets).
    validation: Validations,
    /// Tokens verified recently, by their exact text (see [`Verified`]).
    verified: moka::sync::Cache<String, Verified>,
    /// Access tokens revoked before their expiry (logout), by SHA-256 of the token, with their
    /// expiry in seconds since the epoch; filled here and from every instance's revocations
    /// ([`crate::auth::revocations`]).
    revoked: std::sync::Mutex<HashMap<[u8; 32], u64>>,
    /// Principals this instance noted lately ([`crate::auth::identity`]).
    pub noted: super::identity::Noted,
    /// API keys found unusable lately ([`crate::auth::api_keys::authenticate`]).
    pub refused_keys: super::api_keys::Refused,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_max_age: Duration,
}

/// Most verified tokens remembered, and for how long at most (a token is refused again as soon as
/// its own window ends, whatever this says).
const VERIFIED_CAPACITY: u64 = 10_000;
const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY: u64 = 30;

/// A token that passed verification: its principal and the window in which it stays valid.
/// A token's signature and claims are fixed by its text, so another request with the same text
/// needs only the window checked again, skipping base64, two JSON parses and the HMAC or RSA/ECDSA
/// check (bench/README.md, finding 11).
#[derive(Clone)]
struct Verified {
    principal: Principal,
    /// `nbf - leeway` and `exp + leeway`, in seconds since the epoch.
    from: u64,
    until: u64,
    /// SHA-256 of the token, the key of the denylist: a revocation forgets the entry at once.
    digest: [u8; 32],
}

impl Verified {
    #[cfg(test)]
    fn new(principal: Principal, claims_nbf: Option<f64>, claims_exp: Option<f64>) -> Self {
        Self::with_digest(principal, claims_nbf, claims_exp, [0; 32])
    }

    fn with_digest(
        principal: Principal,
        claims_nbf: Option<f64>,
        claims_exp: Option<f64>,
        digest: [u8; 32],
    ) -> Self {
        let secs = |v: f64| {
            if v.is_finite() && v > 0.0 {
                v as u64
            } else {
                0
            }
        };
        Self {
            principal,
            from: claims_nbf.map(secs).unwrap_or(0).saturating_sub(LEEWAY),
            until: claims_exp.map(secs).unwrap_or(0).saturating_add(LEEWAY),
            digest,
        }
    }

    /// Whether the token is still inside its window at `now` (the checks the validation makes:
    /// not expired beyond the leeway, not used before its `nbf` beyond the leeway).
    fn valid_at(&self, now: u64) -> bool {
        self.from <= now && now <= self.until
    }
}

struct Validations {
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
}

/// What a token of `algorithm` must satisfy: `exp` (required), `nbf`, and `iss`/`aud` when
/// configured, with 30 s of leeway.
fn validation(algorithm: Algorithm, issuer: Option<&str>, audience: Option<&str>) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    match issuer {
        Some(iss) => {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        // Provider tokens carry an `aud` we have not been told about: accept it as it is.
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Why a token was refused; the message is what the client reads in the 401.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub &'static str);

impl AuthKeys {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let secret: Vec<u8> = match &config.jwt_secret {
            Some(secret) => secret.expose_secret().as_bytes().to_vec(),
            None => {
                tracing::warn!(
                    "JWT_SECRET is not set: using a random secret for this process; tokens will not survive a restart or work across instances"
                );
                let mut bytes = vec![0u8; 48];
                rand::rng().fill_bytes(&mut bytes);
                bytes
            }
        };
        let external = match &config.jwt_public_keys_file {
            Some(path) => load_external_keys(path)
                .with_context(|| format!("JWT_PUBLIC_KEYS_FILE: cannot load {path}"))?,
            None => HashMap::new(),
        };
        Ok(Self {
            encoding: EncodingKey::from_secret(&secret),
            hs256: DecodingKey::from_secret(&secret),
            external,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            validation: {
                let (iss, aud) = (config.jwt_issuer.as_deref(), config.jwt_audience.as_deref());
                Validations {
                    hs256: validation(Algorithm::HS256, iss, aud),
                    rs256: validation(Algorithm::RS256, iss, aud),
                    es256: validation(Algorithm::ES256, iss, aud),
                }
            },
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_TTL)
                .build(),
            revoked: std::sync::Mutex::new(HashMap::new()),
            noted: super::identity::Noted::default(),
            refused_keys: super::api_keys::Refused::default(),
            access_ttl: config.jwt_access_ttl,
            refresh_ttl: config.jwt_refresh_ttl,
            refresh_max_age: config.jwt_refresh_max_age,
        })
    }

    /// Signs an access token for a user of ours; answers the token and its lifetime in seconds.
    pub fn issue(
        &self,
        user_id: i64,
        email: &str,
        tenant: &TenantId,
        role: Role,
    ) -> anyhow::Result<(String, u64)> {
        let now = now_secs();
        let ttl = self.access_ttl.as_secs();
        let claims = AccessClaims {
            sub: user_id.to_string(),
            email: email.to_owned(),
            tenant: tenant.as_str().to_owned(),
            role,
            exp: now + ttl,
            iat: now,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, ttl))
    }

    /// Verifies a bearer token and turns it into the request's principal. A token verified before
    /// answers from memory while it is inside its validity window.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        if let Some(principal) = self.remembered(token) {
            return Ok(principal);
        }
        let (principal, verified) = self.verify_fully(token)?;
        self.verified.insert(token.to_owned(), verified);
        Ok(principal)
    }

    /// The principal of a token verified recently and still inside its window (no cryptography,
    /// no revocation look-up: a revoked token is forgotten here when it is revoked).
    pub fn remembered(&self, token: &str) -> Option<Principal> {
        let verified = self.verified.get(token)?;
        if verified.valid_at(now_secs()) {
            return Some(verified.principal);
        }
        self.verified.invalidate(token);
        None
    }

    /// Verifies `token` and answers what revoking it needs: its tenant, its digest and its expiry.
    pub fn revocable(&self, token: &str) -> Option<(TenantId, [u8; 32], u64)> {
        self.verify(token).ok()?;
        let verified = self.verified.get(token)?;
        Some((
            verified.principal.tenant.clone(),
            verified.digest,
            verified.until.saturating_sub(LEEWAY),
        ))
    }

    /// Refuses the token with this digest until `exp` (seconds since the epoch), here at once.
    pub fn revoke(&self, digest: [u8; 32], exp: u64) {
        {
            let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            let now = now_secs();
            if revoked.len() > 10_000 {
                revoked.retain(|_, until| *until + LEEWAY >= now);
            }
            revoked.insert(digest, exp);
        }
        let remembered: Vec<String> = self
            .verified
            .iter()
            .filter(|(_, v)| v.digest == digest)
            .map(|(k, _)| (*k).clone())
            .collect();
        for token in remembered {
            self.verified.invalidate(&token);
        }
    }

    fn is_revoked(&self, digest: &[u8; 32]) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(digest)
    }

    fn verify_fully(&self, token: &str) -> Result<(Principal, Verified), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError("Invalid token"))?;
        let (key, algorithm) = match header.alg {
            Algorithm::HS256 => (&self.hs256, Algorithm::HS256),
            Algorithm::RS256 | Algorithm::ES256 => {
                let external = self
                    .external
                    .get(&header.kid)
                    .ok_or(TokenError("Unknown signing key"))?;
                if external.algorithm != header.alg {
                    return Err(TokenError("Token algorithm does not match its key"));
                }
                (&external.key, external.algorithm)
            }
            _ => return Err(TokenError("Token algorithm not accepted")),
        };
        let validation = match algorithm {
            Algorithm::RS256 => &self.validation.rs256,
            Algorithm::ES256 => &self.validation.es256,
            _ => &self.validation.hs256,
        };
        let data =
            jsonwebtoken::decode::<IncomingClaims>(token, key, validation).map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                TokenError(match err.kind() {
                    ErrorKind::ExpiredSignature => "Token expired",
                    ErrorKind::ImmatureSignature => "Token not yet valid",
                    ErrorKind::InvalidSignature => "Invalid token signature",
                    ErrorKind::InvalidIssuer => "Invalid token issuer",
                    ErrorKind::InvalidAudience => "Invalid token audience",
                    ErrorKind::MissingRequiredClaim(_) => "Token is missing a required claim",
                    ErrorKind::InvalidAlgorithm => "Token algorithm not accepted",
                    _ => "Invalid token",
                })
            })?;
        let (nbf, exp) = (data.claims.nbf, data.claims.exp);
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if self.is_revoked(&digest) {
            return Err(TokenError("Token revoked"));
        }
        let principal = principal_from_claims(data.claims)?;
        let verified = Verified::with_digest(principal.clone(), nbf, exp, digest);
        Ok((principal, verified))
    }
}

fn principal_from_claims(claims: IncomingClaims) -> Result<Principal, TokenError> {
    let missing = TokenError("Invalid token payload - missing required fields");
    let user_id = claims.sub.filter(|s| !s.is_empty()).ok_or(TokenError(
        "Invalid token payload - missing required fields",
    ))?;
    let tenant_raw = claims
        .tenant
        .or_else(|| claims.organization.and_then(|o| o.slug))
        .filter(|s| !s.is_empty())
        .ok_or(missing)?;
    let tenant = TenantId::parse(&tenant_raw).ok_or(TokenError("Invalid tenant in token"))?;
    let role = match claims.role {
        Some(raw) => Role::parse(&raw).ok_or(TokenError("Invalid role in token"))?,
        None => Role::from_provider_roles(
            claims
                .session
                .iter()
                .flat_map(|s| s.roles.iter().map(String::as_str)),
        ),
    };
    let email = match claims.email_verified {
        Some(false) => String::new(),
        _ => claims.email.unwrap_or_default().to_lowercase(),
    };
    Ok(Principal {
        user_id,
        email,
        tenant,
        role,
        credential: Credential::Jwt,
    })
}

fn load_external_keys(path: &str) -> anyhow::Result<HashMap<Option<String>, ExternalKey>> {
    let text = std::fs::read_to_string(path)?;
    let mut keys = HashMap::new();
    if text.trim_start().starts_with('{') {
        let set: JwkSet = serde_json::from_str(&text).context("not a JWKS document")?;
        for jwk in &set.keys {
            let algorithm = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk)?;
            keys.insert(jwk.common.key_id.clone(), ExternalKey { key, algorithm });
        }
    } else if let Ok(key) = DecodingKey::from_rsa_pem(text.as_bytes()) {
        keys.insert(
            None,
            ExternalKey {
                key,
                algorithm: Algorithm::RS256,
            },
        );
    } else {
        let key = DecodingKey::from_ec_pem(text.as_bytes())
            .context("neither an RSA nor an EC public key")?;
        keys.insert(
            None,
            ExternalKey {
                key,
                algorithm: Algorithm::ES256,
            },
        );
    }
    anyhow::ensure!(!keys.is_empty(), "no usable RS256/ES256 key");
    Ok(keys)
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> AuthKeys {
        let config = Config::from_lookup(|name| {
            (name == "JWT_SECRET").then(|| "a-test-secret-of-enough-length-0123456789".to_owned())
        })
        .expect("config");
        AuthKeys::from_config(&config).expect("keys")
    }

    fn sign(keys: &AuthKeys, exp: u64, nbf: Option<u64>) -> String {
        let mut claims = serde_json::json!({
            "sub": "7", "email": "Ann@Example.com", "tenant": "acme", "role": "builder", "exp": exp,
        });
        if let Some(nbf) = nbf {
            claims["nbf"] = nbf.into();
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).expect("sign")
    }

    #[test]
    fn a_window_keeps_the_leeway_of_the_validation() {
        let p = Principal {
            user_id: "7".to_owned(),
            email: "ann@example.com".to_owned(),
            tenant: TenantId::parse("acme").expect("slug"),
            role: Role::Builder,
            credential: Credential::Jwt,
        };
        let v = Verified::new(p.clone(), Some(1_000.0), Some(2_000.0));
        assert!(!v.valid_at(969));
        assert!(v.valid_at(970));
        assert!(v.valid_at(2_030));
        assert!(!v.valid_at(2_031));
        let v = Verified::new(p, None, Some(2_000.5));
        assert!(v.valid_at(0));
        assert!(!v.valid_at(2_031));
    }

    #[test]
    fn a_remembered_token_answers_its_principal_until_its_window_ends() {
        let keys = keys();
        let token = sign(&keys, now_secs() + 600, None);
        let first = keys.verify(&token).expect("valid");
        assert_eq!(first.email, "ann@example.com");
        assert_eq!(first.role, Role::Builder);
        assert!(
            keys.verified.get(&token).is_some(),
            "a valid token is remembered"
        );
        let again = keys.verify(&token).expect("remembered");
        assert_eq!(again.user_id, "7");
        assert_eq!(again.tenant.as_str(), "acme");

        // A token remembered while valid whose window has since ended (`exp` 31 s ago, past
        // the leeway): refused, with the validation's own message, and forgotten.
        let exp = now_secs() - LEEWAY - 1;
        let expired = sign(&keys, exp, None);
        keys.verified.insert(
            expired.clone(),
            Verified::new(first, None, Some(exp as f64)),
        );
        assert_eq!(
            keys.verify(&expired).err().map(|e| e.0),
            Some("Token expired")
        );
        assert!(keys.verified.get(&expired).is_none());

        // Not yet valid: refused, and not remembered.
        let early = sign(&keys, now_secs() + 600, Some(now_secs() + 120));
        assert_eq!(
            keys.verify(&early).err().map(|e| e.0),
            Some("Token not yet valid")
        );
        assert!(keys.verified.get(&early).is_none());
    }
}
