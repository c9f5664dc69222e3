//! Typed ids: a panel's id is a [`PanelId`], a view's a [`ViewId`], and so on, so one can never be
//! passed where the other is meant. Each is the `bigint` identity of its table, transparent to
//! serde (a JSON number, as the existing client reads it), to sqlx (a `bigint`), and to paths.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            sqlx::Type, ToSchema,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        #[schema(value_type = i64)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl From<$name> for serde_json::Value {
            fn from(id: $name) -> Self {
                serde_json::Value::from(id.0)
            }
        }
    )*};
}

ids! {
    /// A panel (a worklist).
    PanelId;
    /// A view of a panel.
    ViewId;
    /// A base or calculated column (the two kinds share one id space).
    ColumnId;
    /// A data source of a panel.
    DataSourceId;
    /// A sync run of a data source.
    RunId;
}
