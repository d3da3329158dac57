//! Each date's share of the store on disk, for the listing.
//!
//! A date's share is its own records plus each piece it names divided among the dates that
//! name it, so the shares add up to what the pieces take. It is read from the dates' records
//! alone (they carry every piece's size), never from the pieces.

use std::collections::{BTreeMap, HashMap};

use super::error::HistoryError;
use super::tables::{DATE_APPS, Reading};
use crate::snapshot::date::Date;
use crate::snapshot::piece::record::DatePieces;
use crate::snapshot::piece::{Digest, run_keys};

/// The pieces a date names, each with its stored size.
type Sized = Vec<(Digest, u64)>;

/// Every date's share, in bytes.
pub fn disk_shares(reading: &Reading<'_>) -> Result<BTreeMap<Date, u64>, HistoryError> {
    let headers = reading.dates()?;
    let date_apps = reading.open(DATE_APPS)?;
    // Every piece each date names, with its size; then how many dates name each.
    let mut per_date: Vec<(Date, u64, Sized)> = Vec::with_capacity(headers.len());
    for (date, header) in &headers {
        let key = date.to_string();
        let record = date_apps
            .get(key.as_bytes())
            .map_err(|e| HistoryError::db("read", reading.path, e))?
            .ok_or_else(|| {
                let what = "its application list is missing".to_owned();
                HistoryError::damaged(*date, crate::snapshot::piece::codec::Damaged(what))
            })?;
        let header_bytes = header.encode().map_err(|e| HistoryError::damaged(*date, e))?;
        let own = (record.value().len() + header_bytes.len()) as u64;
        let pieces =
            DatePieces::decode(record.value()).map_err(|e| HistoryError::damaged(*date, e))?;
        let mut named: Sized =
            pieces.keys.iter().zip(&pieces.sizes).map(|(k, s)| (*k, u64::from(*s))).collect();
        let runs = run_keys(&pieces.keys);
        named.extend(runs.into_iter().zip(pieces.run_sizes.iter().map(|s| u64::from(*s))));
        let lists = header.list_keys().map_err(|e| HistoryError::damaged(*date, e))?;
        named.extend(lists.into_iter().zip(header.lists_bytes));
        named.sort_unstable();
        named.dedup_by_key(|(key, _)| *key);
        per_date.push((*date, own, named));
    }
    let mut uses: HashMap<Digest, u64> = HashMap::new();
    for (_, _, named) in &per_date {
        named.iter().for_each(|(key, _)| *uses.entry(*key).or_default() += 1);
    }
    Ok(per_date
        .into_iter()
        .map(|(date, own, named)| {
            // Each key was counted above, once for this date at least.
            let shared: u64 =
                named.iter().map(|(key, size)| size / uses.get(key).map_or(1, |n| *n)).sum();
            (date, own + shared)
        })
        .collect())
}
