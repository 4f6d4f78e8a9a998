//! Per-sandbox state that belongs to a service (metrics keeps its previous
//! sample and an open `/proc/<init>/net/dev`, code contexts their
//! interpreters…): the engine holds it for the sandbox's lifetime without
//! knowing its type, and calls [`Extension::release`] at teardown so that
//! what pins a namespace or a process is let go with the sandbox.

use std::any::{Any, TypeId};
use std::sync::{Arc, Mutex};

use crate::engine::sync::lock;

/// A service's state attached to one sandbox.
pub(crate) trait Extension: Any + Send + Sync {
    /// The sandbox is being torn down: close what refers to it.
    fn release(&self) {}
}

type Entry = (TypeId, Arc<dyn Any + Send + Sync>, Arc<dyn Extension>);

/// At most one value per type.
#[derive(Default)]
pub(crate) struct Extensions {
    entries: Mutex<Vec<Entry>>,
}

impl Extensions {
    /// The sandbox's `T`, made by `make` on first use.
    pub fn get_or_insert_with<T: Extension>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        let mut entries = lock(&self.entries);
        let id = TypeId::of::<T>();
        if let Some((_, any, _)) = entries.iter().find(|(t, ..)| *t == id) {
            return any.clone().downcast::<T>().expect("keyed by its type");
        }
        let value = Arc::new(make());
        entries.push((id, value.clone(), value.clone()));
        value
    }

    /// The `T` inserted before, if any.
    pub fn get<T: Extension>(&self) -> Option<Arc<T>> {
        let id = TypeId::of::<T>();
        lock(&self.entries)
            .iter()
            .find(|(t, ..)| *t == id)
            .map(|(_, any, _)| any.clone().downcast::<T>().expect("keyed by its type"))
    }

    /// Teardown: every extension releases what it holds (outside the lock:
    /// a release may take time).
    pub fn release_all(&self) {
        let all: Vec<Arc<dyn Extension>> = lock(&self.entries)
            .iter()
            .map(|(.., e)| e.clone())
            .collect();
        for extension in all {
            extension.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Default)]
    struct Counter(AtomicU32);

    impl Extension for Counter {
        fn release(&self) {
            self.0.fetch_add(100, Ordering::SeqCst);
        }
    }

    #[test]
    fn one_value_per_type_released_at_teardown() {
        let ext = Extensions::default();
        ext.get_or_insert_with(Counter::default)
            .0
            .fetch_add(1, Ordering::SeqCst);
        let again = ext.get_or_insert_with::<Counter>(|| unreachable!("made once"));
        assert_eq!(again.0.load(Ordering::SeqCst), 1);
        ext.release_all();
        assert_eq!(again.0.load(Ordering::SeqCst), 101);
    }
}
