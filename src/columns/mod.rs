//! Columns: what a panel shows. A base column reads a field of one of the panel's data sources;
//! a calculated column computes a formula over the panel's other columns. Both kinds share one
//! table and one id space, an order on the panel, and change records that tell the users of
//! published views what a change does to them.

pub mod model;
pub mod repo;
pub mod routes;
pub mod service;
