//! Access-control lists on panels and views, compatible with the existing client's `/acls`
//! routes, and enforced: only the resource's owner (or an admin) changes them, and only for a
//! resource that exists in the caller's tenant.

pub mod model;
pub mod repo;
pub mod routes;
pub mod service;
