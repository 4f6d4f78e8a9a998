//! Layer 4, the façade: [`Runtime`](runtime::Runtime), the create
//! sequence, the public [`Sandbox`](crate::Sandbox) handle and [`Pool`](pool::Pool).

pub mod pool;
pub mod runtime;
