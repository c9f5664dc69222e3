//! A panel's rows: the records its data sources brought in, projected through its base columns
//! (each reads its `sourceField` and coerces to the column's type) and calculated columns (their
//! formulas compiled to SQL), one keyset-paginated query per page; and the formula dry run.

pub mod model;
pub mod repo;
pub mod routes;
pub mod service;
