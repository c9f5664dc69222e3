//! Views: a user's look at a panel — which of its columns to show, how to sort and filter its
//! rows. A view belongs to its owner and is shared through ACL entries; publishing it makes it
//! readable by everyone in the tenant (and subscribes its users to the panel's change
//! notifications).

pub mod model;
pub mod repo;
pub mod routes;
pub mod service;
