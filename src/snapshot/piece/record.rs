//! A date's own records in the store: its [`Header`] (what it is, read for every date at start)
//! and its [`DatePieces`] (its applications' keys in serving order, and each piece's stored
//! size).
//!
//! The header is small and JSON, which an operator can read with redb's tools if ever needed;
//! the list of keys is read whenever an older date is first asked for, so it is a count and fixed
//! little-endian fields. Both read back with [`Damaged`] instead of a panic on any bytes.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::codec::{Damaged, Reader, put_u32};
use super::{Digest, RUN_APPS, Stats};

/// What a date is, besides its applications' keys: read for every date at start, so small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub analyzed_on_ms: u64,
    pub file_bytes: u64,
    pub file_sha256: String,
    pub levels: String,
    pub categories: String,
    pub teams: String,
    pub applications: u64,
    pub modules: u64,
    pub findings: u64,
    pub rendered_bytes: u64,
    pub compressed_bytes: u64,
    /// The stored size of the level, category and team lists, for the listing's shares.
    pub lists_bytes: [u64; 3],
    /// When and how the date came into the store; absent in records written before it was
    /// kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival: Option<Arrival>,
}

/// When a date went live and how it came, kept with it so that the listing and the
/// last-import metric survive a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrival {
    pub at_ms: u64,
    pub source: Source,
}

impl Arrival {
    pub fn at(time: SystemTime, source: Source) -> Self {
        Self { at_ms: unix_ms(time), source }
    }

    pub fn time(&self) -> SystemTime {
        from_unix_ms(self.at_ms)
    }
}

/// A time as the records keep it: whole milliseconds since the Unix epoch (0 before it, which
/// no analysis or import is).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// How a date came into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `aims-api snapshot pull`, from the upstream (`PUT …?source=pull`).
    Pull,
    /// Any other `PUT /snapshots/<date>`: `snapshot import`, curl.
    Import,
    /// A file of the inbox, taken over at start or reload; its time is the file's, when the
    /// release that kept files wrote it.
    Inbox,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Import => "import",
            Self::Inbox => "inbox",
        }
    }
}

impl Header {
    pub fn analyzed_on(&self) -> SystemTime {
        from_unix_ms(self.analyzed_on_ms)
    }

    /// The sizes it records. Each fits a `usize`: the targets are 64-bit (deny.toml's graph).
    pub fn stats(&self) -> Stats {
        let size = |n: u64| n as usize;
        Stats {
            applications: size(self.applications),
            modules: size(self.modules),
            findings: size(self.findings),
            file_bytes: size(self.file_bytes),
            rendered_bytes: size(self.rendered_bytes),
            compressed_bytes: size(self.compressed_bytes),
        }
    }

    /// The SHA-256 of the file it was imported from.
    pub fn file_sha256(&self) -> Result<Digest, Damaged> {
        unhex(&self.file_sha256)
    }

    /// The keys of its level, category and team lists, in that order.
    pub fn list_keys(&self) -> Result<[Digest; 3], Damaged> {
        Ok([unhex(&self.levels)?, unhex(&self.categories)?, unhex(&self.teams)?])
    }

    pub fn encode(&self) -> Result<Vec<u8>, Damaged> {
        // A struct of numbers and strings serializes; were it not to, nothing is written.
        serde_json::to_vec(self).map_err(|e| Damaged(format!("date header: {e}")))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Damaged> {
        serde_json::from_slice(bytes).map_err(|e| Damaged(format!("date header: {e}")))
    }
}

/// A date's pieces: its applications' keys in serving order, each with the size of its stored
/// record, then the size of each run's record. The sizes let the listing divide the store
/// among the dates from these records alone, without reading a single piece.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatePieces {
    pub keys: Vec<Digest>,
    pub sizes: Vec<u32>,
    pub run_sizes: Vec<u32>,
}

impl DatePieces {
    /// Count, then each key and size, then each run's size.
    pub fn encode(&self) -> Result<Vec<u8>, Damaged> {
        let count = u32::try_from(self.keys.len())
            .map_err(|_| Damaged("application list: more than 2^32 applications".into()))?;
        if self.sizes.len() != self.keys.len()
            || self.run_sizes.len() != self.keys.len().div_ceil(RUN_APPS)
        {
            return Err(Damaged("application list: its sizes do not match its keys".into()));
        }
        let mut out = Vec::with_capacity(4 + 36 * self.keys.len() + 4 * self.run_sizes.len());
        put_u32(&mut out, count);
        for (key, size) in self.keys.iter().zip(&self.sizes) {
            out.extend_from_slice(key);
            put_u32(&mut out, *size);
        }
        self.run_sizes.iter().for_each(|size| put_u32(&mut out, *size));
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Damaged> {
        let mut r = Reader::new(bytes, "application list");
        let count = r.u32()? as usize;
        let runs = count.div_ceil(RUN_APPS);
        if r.left() != 36 * count + 4 * runs {
            return Err(r.damaged("its length does not match its count"));
        }
        let mut pieces = Self {
            keys: Vec::with_capacity(count),
            sizes: Vec::with_capacity(count),
            run_sizes: Vec::with_capacity(runs),
        };
        for _ in 0..count {
            pieces.keys.push(r.digest()?);
            pieces.sizes.push(r.u32()?);
        }
        for _ in 0..runs {
            pieces.run_sizes.push(r.u32()?);
        }
        Ok(pieces)
    }
}

pub fn hex(digest: &Digest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Result<Digest, Damaged> {
    let bad = || Damaged(format!("`{}` is not a SHA-256 in hexadecimal", text.escape_debug()));
    if text.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = text.get(2 * i..2 * i + 2).ok_or_else(bad)?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_headers_read_back_and_damage_is_refused() {
        let pieces = DatePieces {
            keys: (0..11u8).map(|i| [i; 32]).collect(),
            sizes: (0..11).collect(),
            run_sizes: vec![70, 7],
        };
        assert_eq!(DatePieces::decode(&pieces.encode().unwrap()), Ok(pieces.clone()));
        let mut short = pieces.encode().unwrap();
        short.pop();
        assert!(DatePieces::decode(&short).is_err());
        let empty = DatePieces::default();
        assert_eq!(DatePieces::decode(&empty.encode().unwrap()), Ok(empty));
        let mismatched = DatePieces { run_sizes: vec![1], ..pieces };
        assert!(mismatched.encode().is_err(), "eleven applications make two runs");
        assert_eq!(unhex(&hex(&[0xab; 32])), Ok([0xab; 32]));
        assert!(unhex("zz").is_err());
        assert!(Header::decode(b"{}").is_err());
    }

    #[test]
    fn a_header_keeps_its_arrival_and_one_written_before_arrivals_has_none() {
        let digest = hex(&[7; 32]);
        let old = format!(
            r#"{{"analyzed_on_ms":5,"file_bytes":1,"file_sha256":"{digest}","levels":"{digest}",
            "categories":"{digest}","teams":"{digest}","applications":1,"modules":2,
            "findings":3,"rendered_bytes":4,"compressed_bytes":5,"lists_bytes":[1,2,3]}}"#
        );
        let mut header = Header::decode(old.as_bytes()).unwrap();
        assert_eq!(header.arrival, None);
        header.arrival = Some(Arrival { at_ms: 1_800_000_000_123, source: Source::Pull });
        let encoded = header.encode().unwrap();
        let text = String::from_utf8(encoded.clone()).unwrap();
        assert!(text.ends_with(r#""arrival":{"at_ms":1800000000123,"source":"pull"}}"#), "{text}");
        assert_eq!(Header::decode(&encoded), Ok(header));
    }
}
