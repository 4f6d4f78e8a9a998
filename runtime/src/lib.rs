#![deny(unsafe_code)]

pub mod caps;
pub mod seccomp;
#[allow(unsafe_code)]
mod sys;

pub const INIT: &[u8] = include_bytes!(env!("SANDLOT_INIT_PATH"));
