//! A panel's rows: the worklist engine. Which rows (the panel's cohort rule AND a view's or a
//! query's filter tree AND a search), in which order (sort keys on base and calculated columns,
//! then the row id), from where (a signed keyset cursor), how many (exact or estimated), and each
//! row's shown values; also exports of a view's rows and the formula dry run.
//!
//! `query.rs` compiles a request to SQL (pure), `cursor.rs` signs and reads cursors, `project.rs`
//! computes the shown values in process, `export.rs` writes CSV and NDJSON, `indexes.rs` builds
//! the indexes the queries of large panels want, `slots.rs` keeps the typed copies of base
//! columns those indexes and filters read.

pub mod cursor;
pub mod export;
pub mod indexes;
pub mod membership;
pub mod model;
pub mod project;
pub mod query;
pub mod repo;
pub mod routes;
pub mod service;
pub mod slots;
