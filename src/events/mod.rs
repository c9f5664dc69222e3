//! Live events: the transactional outbox every write appends to (`write.rs`), this instance's
//! fan-out of it (`hub`), and the streams clients follow (`GET /api/events`, Server-Sent Events).
//! PostgreSQL is the truth; Redis carries only wake-ups. See docs/events.md.

pub mod hub;
pub mod model;
pub mod repo;
pub mod retention;
pub mod routes;
pub mod service;
pub mod ws;
