//! L3: what a sandbox offers on top of the core (this tree holds code
//! contexts so far; the restructure moves the other services here).

pub mod code;
