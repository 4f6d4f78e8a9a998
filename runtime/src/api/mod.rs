//! Layer 4, the façade: [`Runtime`](runtime::Runtime), the create
//! sequence (and its persistent steps, adoption), the public
//! [`Sandbox`](crate::Sandbox) handle, [`Pool`](pool::Pool),
//! [`SessionPool`](session::SessionPool) and `create_with_retry`.

pub(crate) mod create;
pub(crate) mod factory;
pub(crate) mod persist;
pub mod pool;
pub mod retry;
pub mod runtime;
pub mod sandbox;
pub mod session;
