//! An older date as memory keeps it: its index, never its pieces.
//!
//! A page of an older date needs the keys of the applications at its positions, and then those
//! pieces: [`Older`] holds the keys (read with the date's record, 36 bytes an application) and
//! what its `InfrastructureInfo` says, and the pieces come through the cache by key. The
//! identifiers the filters look up (`ApplicationGUID`, `ModuleGUID`) are kept with each piece in
//! the store, once for every date that has it, not with every date (that would be about 1 MiB a
//! day at 2,000 applications and 20,000 modules, a year of them past the disk budget), so
//! [`Guids`] is built from the pieces' records the first time a filter asks, and kept with the
//! index.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::ask::ServeError;
use super::pinned::infrastructure;
use crate::snapshot::catalog::Entry;
use crate::snapshot::history::tables::{self, APPS, PieceKind};
use crate::snapshot::history::{HistoryError, Reading};
use crate::snapshot::piece::{AppMeta, Digest, run_keys};

pub struct Older {
    pub entry: Entry,
    infrastructure: Arc<[u8]>,
    keys: Box<[Digest]>,
    run_keys: Box<[Digest]>,
    guids: OnceLock<Arc<Guids>>,
}

/// The identifiers of an older date's applications and modules, by position.
pub struct Guids {
    /// Lower-case GUID → application position.
    apps: HashMap<Box<str>, usize>,
    /// Lower-case GUID → (application position, module position within it).
    modules: HashMap<Box<str>, (usize, usize)>,
    metas: Box<[AppMeta]>,
}

impl Older {
    /// The index of `entry`'s date, read in `reading`, which must still hold that version of
    /// it.
    pub fn read(
        reading: &Reading<'_>,
        entry: &Entry,
        activation_code: &str,
    ) -> Result<Self, ServeError> {
        check(reading, entry)?;
        let date = entry.date;
        let pieces = reading.date_pieces(date)?.ok_or_else(|| {
            HistoryError::damaged(
                date,
                crate::snapshot::piece::codec::Damaged("its application list is missing".into()),
            )
        })?;
        let run_keys = run_keys(&pieces.keys).into();
        Ok(Self {
            entry: entry.clone(),
            infrastructure: infrastructure(activation_code, entry.analyzed_on).into(),
            keys: pieces.keys.into(),
            run_keys,
            guids: OnceLock::new(),
        })
    }

    pub fn infrastructure(&self) -> &Arc<[u8]> {
        &self.infrastructure
    }

    pub fn keys(&self) -> &[Digest] {
        &self.keys
    }

    pub fn run_keys(&self) -> &[Digest] {
        &self.run_keys
    }

    /// Its identifiers, if a filter has asked for them already.
    pub fn guids(&self) -> Option<&Arc<Guids>> {
        self.guids.get()
    }

    /// Reads its identifiers from the pieces' records, keeps them, and gives them. Two threads
    /// may both read them; the first to finish is kept. Nothing is locked while reading.
    pub fn read_guids(&self, reading: &Reading<'_>) -> Result<Arc<Guids>, ServeError> {
        if let Some(guids) = self.guids.get() {
            return Ok(Arc::clone(guids));
        }
        check(reading, &self.entry)?;
        let date = self.entry.date;
        let table = reading.open(APPS)?;
        let found = tables::pieces(&table, &self.keys, reading.path, tables::decode_app)
            .map_err(|e| e.at(date))?;
        let apps = tables::required(found, &self.keys, date, PieceKind::Application)?;
        let metas: Box<[AppMeta]> = apps.into_iter().map(|piece| piece.meta).collect();
        let mut app_index = HashMap::with_capacity(metas.len());
        let mut modules = HashMap::with_capacity(metas.iter().map(|m| m.modules.len()).sum());
        for (position, meta) in metas.iter().enumerate() {
            app_index.insert(meta.guid.clone(), position);
            for (m, module) in meta.modules.iter().enumerate() {
                modules.insert(module.guid.clone(), (position, m));
            }
        }
        let guids = Arc::new(Guids { apps: app_index, modules, metas });
        Ok(Arc::clone(self.guids.get_or_init(|| guids)))
    }

    /// What it holds in memory.
    pub fn memory_bytes(&self) -> usize {
        let own = 256 + self.infrastructure.len() + 32 * (self.keys.len() + self.run_keys.len());
        own + self.guids.get().map_or(0, |g| g.memory_bytes())
    }
}

impl Guids {
    pub fn application(&self, guid: &str) -> Option<usize> {
        self.apps.get(guid.to_ascii_lowercase().as_str()).copied()
    }

    pub fn module(&self, guid: &str) -> Option<(usize, usize)> {
        self.modules.get(guid.to_ascii_lowercase().as_str()).copied()
    }

    pub fn meta(&self, position: usize) -> Option<&AppMeta> {
        self.metas.get(position)
    }

    fn memory_bytes(&self) -> usize {
        let entry = size_of::<(Box<str>, (usize, usize))>() + 48;
        let metas: usize = self.metas.iter().map(|m| m.modules.len() * 64 + 96).sum();
        (self.apps.len() + self.modules.len()) * entry + metas
    }
}

/// Whether the store, as `reading` sees it, still holds `entry`'s version of its date: the
/// pieces read in the same transaction are then that version's, every one of them stored.
pub fn check(reading: &Reading<'_>, entry: &Entry) -> Result<(), ServeError> {
    match reading.header(entry.date)? {
        Some(header) if entry.describes(&header) => Ok(()),
        _ => Err(ServeError::Changed(entry.date)),
    }
}
