pub const INIT: &[u8] = include_bytes!(env!("SANDLOT_INIT_PATH"));

pub mod cgroups;
pub mod limits;
pub use limits::{Limits, LimitsError};
