//! One TLS stack for every outgoing connection: rustls with the ring provider, for PostgreSQL
//! (sqlx), Redis (`rediss://`) and HTTP (API sources). reqwest is built without a provider of its
//! own, so the process-wide default must be installed before the first client is built.

use std::sync::Once;

static INSTALL: Once = Once::new();

/// Installs ring as the process's default rustls provider (once; later calls do nothing).
pub fn install_crypto_provider() {
    INSTALL.call_once(|| {
        // Fails only when another provider was installed first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
