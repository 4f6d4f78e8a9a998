//! Locks that a panic does not poison for everyone.
//!
//! A panic while one sandbox is handled (on the io thread, say) must fail
//! that sandbox only: the data behind every lock of the engine stays
//! consistent at each unlock point (each critical section is a few field
//! updates), so a poisoned lock is taken as it is.

use std::sync::{Mutex, MutexGuard};

/// `mutex.lock()`, ignoring poisoning (see the module doc).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
