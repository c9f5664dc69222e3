//! Panels: a tenant's worklists. A panel owns its data sources, columns and views; its cohort
//! rule (a filter tree over its columns) selects which rows belong to it. Other modules reach a
//! panel through `service::authorize`, which applies the tenant and the caller's permission.

pub mod batch;
pub mod model;
pub mod repo;
pub mod routes;
pub mod service;

pub use service::{Access, authorize};
