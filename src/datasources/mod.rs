//! Data sources: where a panel's rows come from (a database query, an HTTP API, a file, or a
//! custom feed). This module keeps their configuration: validated per type, secrets encrypted at
//! rest (`crypto`) and masked in every response and change record. Fetching records (the sync)
//! reads the decrypted config through `crypto::decrypt_config`.

pub mod connectors;
pub mod crypto;
pub mod model;
pub mod repo;
pub mod routes;
pub mod service;
pub mod sync;

pub use crypto::{Crypto, decrypt_config};
