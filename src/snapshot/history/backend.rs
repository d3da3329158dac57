//! The store's file as redb sees it, with its length known at every moment.
//!
//! redb reads and writes the database through a [`StorageBackend`]; [`Measured`] passes every
//! call through to the real one (the file, or in the tests one that can lose what was not
//! synced) and keeps the length the file has, so the listing and the metrics report the store's
//! size without a `stat` that could fail, exactly as redb left it after the last commit or
//! compaction.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{BackendError, StorageBackend};

/// The length a [`Measured`] backend last gave its storage.
#[derive(Debug, Clone, Default)]
pub struct Length(Arc<AtomicU64>);

impl Length {
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, bytes: u64) {
        self.0.store(bytes, Ordering::Relaxed);
    }

    fn grow_to(&self, bytes: u64) {
        self.0.fetch_max(bytes, Ordering::Relaxed);
    }
}

/// A backend passed through, its length kept in a [`Length`].
#[derive(Debug)]
pub struct Measured<B> {
    inner: B,
    length: Length,
}

impl<B: StorageBackend> Measured<B> {
    pub fn new(inner: B) -> Result<(Self, Length), std::io::Error> {
        let length = Length::default();
        length.set(inner.len()?);
        Ok((Self { inner, length: length.clone() }, length))
    }
}

impl<B: StorageBackend> StorageBackend for Measured<B> {
    fn len(&self) -> Result<u64, std::io::Error> {
        let len = self.inner.len()?;
        self.length.set(len);
        Ok(len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)?;
        self.length.set(len);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)?;
        self.length.grow_to(offset.saturating_add(data.len() as u64));
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
