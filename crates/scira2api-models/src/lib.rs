//! Model names: the mapping between the names clients use (external) and the names the upstream
//! knows (internal), and the catalog that `/v1/models` lists.
//!
//! Mapping is a table of `external:internal` pairs in a fixed order. A name that is not in the
//! table passes through unchanged in both directions, so a client can always use an upstream's
//! own model ids.
//!
//! Routing (a `CONFIG_FILE`'s model groups) maps an external name to a group of deployments
//! over several provider instances, with weights, orders, fallbacks and cool-downs.

#![deny(missing_docs)]

mod catalog;
mod mapping;
mod routing;

pub use catalog::{Catalog, ModelEntry};
pub use mapping::{MappingParse, ModelMap};
pub use routing::{
    CooldownPolicy, Deployment, Group, HealthState, Outcome, Router, Strategy, Ticket, Unavailable,
};
