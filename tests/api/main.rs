//! The integration tests: one binary, a real PostgreSQL and a real Redis, the real router on a
//! real port, called over HTTP as a client would. Each test gets its own database.

mod cluster;
mod helpers;

mod acls;
mod audit;
mod auth;
mod cache;
mod columns;
mod datasources;
mod events;
mod formula_differential;
mod isolation;
mod operations;
mod panels;
mod rows;
mod security;
mod sync;
mod views;
mod webhooks;
mod worklist;
mod ws;
