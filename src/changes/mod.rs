//! Change tracking: every structural change of a panel is recorded (in the transaction that
//! makes it) with its actor and before/after values, and the users of the panel's published
//! views are notified with the change's impact on their view.

pub mod model;
pub mod repo;
pub mod routes;
pub mod service;

pub use model::{ChangeType, NewChange};
pub use service::{Affect, record};
