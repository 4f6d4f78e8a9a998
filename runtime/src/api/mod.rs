//! Layer 4, the façade: [`Runtime`](runtime::Runtime), the create
//! sequence, the public [`Sandbox`](crate::Sandbox) handle and [`Pool`](pool::Pool).

pub(crate) mod create;
pub(crate) mod factory;
pub(crate) mod persist;
pub mod pool;
pub mod runtime;
pub mod sandbox;
