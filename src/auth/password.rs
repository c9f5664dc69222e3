//! Password hashing with argon2id at OWASP's minimum cost (m=19456 KiB, t=2, p=1), run on the
//! blocking pool so a login never stalls the async workers.

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

const MEMORY_KIB: u32 = Params::DEFAULT_M_COST;

/// At most one hash per core at a time: each needs its memory (`MEMORY_KIB`) and a core for a
/// while, so more at once only queue on the CPU while holding memory (bench/README.md, finding 8).
/// A process-wide bound like the blocking pool itself, hence a static.
static HASHING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    let cores = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(2);
    tokio::sync::Semaphore::new(cores)
});
const ITERATIONS: u32 = Params::DEFAULT_T_COST;
const PARALLELISM: u32 = Params::DEFAULT_P_COST;

fn hasher() -> Argon2<'static> {
    // argon2's defaults are OWASP's minimum, the parameters `is_current` checks against.
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
}

/// Hashes a password into a PHC string.
pub async fn hash(password: String) -> anyhow::Result<String> {
    let _permit = HASHING.acquire().await?;
    tokio::task::spawn_blocking(move || {
        hasher()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
    })
    .await?
}

/// The outcome of checking a password against a stored hash.
pub struct Verified {
    pub ok: bool,
    /// The stored hash is weaker than today's parameters: re-hash it now that we know the password.
    pub needs_rehash: bool,
}

/// Verifies a password; an unparsable stored hash verifies as false.
pub async fn verify(password: String, stored: String) -> anyhow::Result<Verified> {
    let _permit = HASHING.acquire().await?;
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return Verified {
                ok: false,
                needs_rehash: false,
            };
        };
        let ok = hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        let needs_rehash = ok && !is_current(&parsed);
        Verified { ok, needs_rehash }
    })
    .await
    .map_err(Into::into)
}

fn is_current(hash: &PasswordHash) -> bool {
    let param = |name: &str| hash.params.get_decimal(name).unwrap_or(0);
    hash.algorithm.as_str() == "argon2id"
        && param("m") >= MEMORY_KIB
        && param("t") >= ITERATIONS
        && param("p") >= PARALLELISM
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_weaker_ones_ask_for_a_rehash() {
        let stored = hash("correct horse battery".to_owned())
            .await
            .expect("hash");
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let good = verify("correct horse battery".to_owned(), stored.clone())
            .await
            .expect("verify");
        assert!(good.ok && !good.needs_rehash);
        assert!(!verify("wrong".to_owned(), stored).await.expect("verify").ok);

        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 1, 1, None).expect("params"),
        )
        .hash_password(b"pw")
        .expect("hash")
        .to_string();
        let checked = verify("pw".to_owned(), weak).await.expect("verify");
        assert!(checked.ok && checked.needs_rehash);
    }
}
