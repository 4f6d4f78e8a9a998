//! Layer 5, tools over the whole library: `doctor`.

pub mod doctor;
