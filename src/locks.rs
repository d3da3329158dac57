//! Locks that outlive a panic in the thread that held them.
//!
//! A panic while a lock is held poisons it, and std then hands every later caller an error. In
//! this server that would turn one bug in one request into a server that refuses everything (or,
//! for the gate, a server that cannot change its key). Every value guarded here is replaced
//! whole, never left half-changed across a call that could panic: so the value behind a poisoned
//! lock is still a whole, valid one, and taking it is right. This is the one place that decides
//! so; a lock whose value could be left torn must not use these functions.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes the value out of a mutex that is no longer shared.
pub fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_poisoned_lock_still_gives_its_value() {
        let shared = Arc::new(Mutex::new(7));
        let clone = Arc::clone(&shared);
        let _ = std::thread::spawn(move || {
            let _guard = clone.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(shared.is_poisoned());
        assert_eq!(*lock(&shared), 7);
    }
}
