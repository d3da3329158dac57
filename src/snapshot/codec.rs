//! The byte layouts of the pieces the history store keeps, and their reading back.
//!
//! The pieces are read by the thousand when an older date is first served (2,000 applications
//! in well under the 50 ms budget), so they are a few fixed little-endian fields and the bytes,
//! not a text format: a serde format would be one more dependency to keep (bincode, the obvious
//! one, is unmaintained: RUSTSEC-2025-0141) for thirty lines that a property test pins down.
//! Every read checks lengths and fails with [`Damaged`] instead of panicking: the file is ours,
//! but a disk can still hand back anything. The date's own header is small and read once per
//! listing, so it is JSON, which an operator can read with `redb`'s tools if ever needed.

use std::fmt;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::render::{AppMeta, ModuleMeta, Teams};
use super::served::{AppPiece, Digest, RunPiece, Stats};
use crate::gzip::Compressed;

/// A stored piece that cannot be read back: what, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged(pub String);

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

/// An application: CRC-32, plaintext length, findings, where its modules start, its GUID, its
/// modules (span and GUID), then the deflate segment.
pub fn encode_app(app: &AppPiece) -> Vec<u8> {
    let meta = &app.meta;
    let mut out = Vec::with_capacity(app.compressed.deflate.len() + 64 * meta.modules.len() + 64);
    put_u32(&mut out, app.compressed.crc);
    put_u32(&mut out, app.compressed.plain_len);
    put_u32(&mut out, meta.findings);
    put_u32(&mut out, meta.modules_at);
    put_str(&mut out, &meta.guid);
    put_u32(&mut out, len_u32(meta.modules.len()));
    for module in meta.modules.iter() {
        put_u32(&mut out, module.span.start);
        put_u32(&mut out, module.span.end);
        put_str(&mut out, &module.guid);
    }
    out.extend_from_slice(&app.compressed.deflate);
    out
}

pub fn decode_app(hash: Digest, bytes: &[u8]) -> Result<AppPiece, Damaged> {
    let mut r = Reader { bytes, at: 0, what: "application" };
    let crc = r.u32()?;
    let plain_len = r.u32()?;
    let findings = r.u32()?;
    let modules_at = r.u32()?;
    let guid = r.str()?;
    let count = r.u32()? as usize;
    // Each module takes at least ten bytes: a count larger than what is left is damage, and
    // must not become a huge allocation.
    if count > r.left() / 10 {
        return Err(r.damaged("more modules than bytes"));
    }
    let mut modules = Vec::with_capacity(count);
    for _ in 0..count {
        let span = r.u32()?..r.u32()?;
        if span.start > span.end || span.end > plain_len || span.start < modules_at {
            return Err(r.damaged("a module's span is outside the application"));
        }
        modules.push(ModuleMeta { span, guid: r.str()? });
    }
    if modules_at > plain_len {
        return Err(r.damaged("its module list starts past its end"));
    }
    let deflate = r.rest().into();
    let meta = AppMeta { guid, modules_at, modules: modules.into(), findings };
    Ok(AppPiece { hash, meta, compressed: Compressed::from_stored(deflate, crc, plain_len) })
}

/// A run: CRC-32, plaintext length, then the deflate segment.
pub fn encode_run(run: &RunPiece) -> Vec<u8> {
    let mut out = Vec::with_capacity(run.compressed.deflate.len() + 8);
    put_u32(&mut out, run.compressed.crc);
    put_u32(&mut out, run.compressed.plain_len);
    out.extend_from_slice(&run.compressed.deflate);
    out
}

pub fn decode_run(key: Digest, bytes: &[u8]) -> Result<RunPiece, Damaged> {
    let mut r = Reader { bytes, at: 0, what: "run" };
    let crc = r.u32()?;
    let plain_len = r.u32()?;
    Ok(RunPiece { key, compressed: Compressed::from_stored(r.rest().into(), crc, plain_len) })
}

/// The teams: their count, each one's span and lower-case `ExternalId`, then their objects.
pub fn encode_teams(teams: &Teams) -> Vec<u8> {
    let mut out = Vec::with_capacity(teams.json.len() + 48 * teams.ids.len() + 4);
    put_u32(&mut out, len_u32(teams.spans.len()));
    for (span, id) in teams.spans.iter().zip(teams.ids.iter()) {
        put_u32(&mut out, span.start);
        put_u32(&mut out, span.end);
        put_str(&mut out, id);
    }
    out.extend_from_slice(&teams.json);
    out
}

pub fn decode_teams(bytes: &[u8]) -> Result<Teams, Damaged> {
    let mut r = Reader { bytes, at: 0, what: "team list" };
    let count = r.u32()? as usize;
    if count > r.left() / 10 {
        return Err(r.damaged("more teams than bytes"));
    }
    let mut spans: Vec<Range<u32>> = Vec::with_capacity(count);
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        spans.push(r.u32()?..r.u32()?);
        ids.push(r.str()?);
    }
    let json: Box<[u8]> = r.rest().into();
    if spans.iter().any(|s| s.start > s.end || s.end as usize > json.len()) {
        return Err(r.damaged("a team's span is outside the list"));
    }
    Ok(Teams { json, spans: spans.into(), ids: ids.into() })
}

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
    /// kept, and in a snapshot loaded outside the store.
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

/// A time as the records keep it: whole milliseconds since the Unix epoch (0 before it).
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

    pub fn stats(&self) -> Stats {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Stats {
            applications: size(self.applications),
            modules: size(self.modules),
            findings: size(self.findings),
            file_bytes: size(self.file_bytes),
            rendered_bytes: size(self.rendered_bytes),
            compressed_bytes: size(self.compressed_bytes),
        }
    }

    /// The keys of its level, category and team lists, in that order.
    pub fn list_keys(&self) -> Result<[Digest; 3], Damaged> {
        Ok([unhex(&self.levels)?, unhex(&self.categories)?, unhex(&self.teams)?])
    }

    pub fn encode(&self) -> Vec<u8> {
        // A struct of numbers and strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
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
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 36 * self.keys.len() + 4 * self.run_sizes.len());
        put_u32(&mut out, len_u32(self.keys.len()));
        for (key, size) in self.keys.iter().zip(&self.sizes) {
            out.extend_from_slice(key);
            put_u32(&mut out, *size);
        }
        self.run_sizes.iter().for_each(|size| put_u32(&mut out, *size));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Damaged> {
        let mut r = Reader { bytes, at: 0, what: "application list" };
        let count = r.u32()? as usize;
        let runs = count.div_ceil(super::served::RUN_APPS);
        if r.left() != 36 * count + 4 * runs {
            return Err(r.damaged("its length does not match its count"));
        }
        let mut pieces = Self {
            keys: Vec::with_capacity(count),
            sizes: Vec::with_capacity(count),
            run_sizes: Vec::with_capacity(runs),
        };
        for _ in 0..count {
            let mut key = [0u8; 32];
            key.copy_from_slice(r.take(32)?);
            pieces.keys.push(key);
            pieces.sizes.push(r.u32()?);
        }
        for _ in 0..runs {
            pieces.run_sizes.push(r.u32()?);
        }
        Ok(pieces)
    }
}

/// The size of [`encode_app`]'s record, without making it.
pub fn app_len(app: &AppPiece) -> u32 {
    let meta = &app.meta;
    let str_len = |s: &str| 2 + s.len().min(u16::MAX as usize);
    let modules: usize = meta.modules.iter().map(|m| 8 + str_len(&m.guid)).sum();
    len_u32(20 + str_len(&meta.guid) + modules + app.compressed.deflate.len())
}

/// The size of [`encode_run`]'s record.
pub fn run_len(run: &RunPiece) -> u32 {
    len_u32(8 + run.compressed.deflate.len())
}

pub fn hex(digest: &Digest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Result<Digest, Damaged> {
    let bad = || Damaged(format!("`{text}` is not a SHA-256 in hexadecimal"));
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

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

/// A string of at most 64 KiB (identifiers; longer ones are cut, and would fail the lookup
/// that needs them rather than anything else).
fn put_str(out: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(u16::MAX as usize);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| self.damaged("it ends too soon"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, Damaged> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn str(&mut self) -> Result<Box<str>, Damaged> {
        let len = self.take(2)?;
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(Into::into)
            .map_err(|_| self.damaged("an identifier is not UTF-8"))
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }

    fn damaged(&self, why: &str) -> Damaged {
        Damaged(format!(
            "{} record: {why} (at byte {} of {})",
            self.what,
            self.at,
            self.bytes.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::gzip;

    fn app(guid: &str, modules: &[(u32, u32, &str)], plain: &[u8]) -> AppPiece {
        let compressed = gzip::compress_each(&[vec![plain]], 6, 1).remove(0);
        let modules = modules
            .iter()
            .map(|&(start, end, guid)| ModuleMeta { span: start..end, guid: guid.into() })
            .collect();
        AppPiece {
            hash: [7; 32],
            meta: AppMeta { guid: guid.into(), modules_at: 2, modules, findings: 9 },
            compressed,
        }
    }

    #[test]
    fn an_application_reads_back_as_written_and_damage_is_named() {
        let piece = app("a1", &[(2, 5, "m1"), (6, 9, "é")], b"0123456789");
        let bytes = encode_app(&piece);
        assert_eq!(app_len(&piece) as usize, bytes.len());
        assert_eq!(decode_app([7; 32], &bytes), Ok(piece));
        for cut in [0, 3, 17, 21] {
            let error = decode_app([7; 32], &bytes[..cut]).unwrap_err();
            assert!(error.0.starts_with("application record: it ends too soon"), "{error}");
        }
        let mut outside = bytes.clone();
        // The first module's end, past the plaintext.
        let at = 4 * 4 + 2 + 2 + 4 + 4;
        outside[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
        let error = decode_app([7; 32], &outside).unwrap_err();
        assert!(error.0.contains("a module's span is outside the application"), "{error}");
        let mut huge = bytes;
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_app([7; 32], &huge).unwrap_err().0.contains("more modules than bytes"));
    }

    #[test]
    fn teams_runs_keys_and_headers_read_back() {
        let teams = Teams {
            json: b"{\"a\":1}{\"b\":2}".to_vec().into(),
            spans: vec![0..7, 7..14].into(),
            ids: vec!["t1".into(), "t2".into()].into(),
        };
        assert_eq!(decode_teams(&encode_teams(&teams)), Ok(teams));
        let run = RunPiece {
            key: [1; 32],
            compressed: gzip::compress_each(&[vec![b"x,y"]], 6, 1).remove(0),
        };
        assert_eq!(decode_run([1; 32], &encode_run(&run)), Ok(run));
        let pieces = DatePieces {
            keys: (0..11u8).map(|i| [i; 32]).collect(),
            sizes: (0..11).collect(),
            run_sizes: vec![70, 7],
        };
        assert_eq!(DatePieces::decode(&pieces.encode()), Ok(pieces.clone()));
        let mut short = pieces.encode();
        short.pop();
        assert!(DatePieces::decode(&short).is_err());
        assert_eq!(DatePieces::decode(&DatePieces::default().encode()), Ok(DatePieces::default()));
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
        let encoded = header.encode();
        let text = String::from_utf8(encoded.clone()).unwrap();
        assert!(text.ends_with(r#""arrival":{"at_ms":1800000000123,"source":"pull"}}"#), "{text}");
        assert_eq!(Header::decode(&encoded), Ok(header));
    }

    proptest! {
        /// Whatever the bytes, reading them back fails or succeeds; it never panics.
        #[test]
        fn any_bytes_decode_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_app([0; 32], &bytes);
            let _ = decode_run([0; 32], &bytes);
            let _ = decode_teams(&bytes);
            let _ = DatePieces::decode(&bytes);
            let _ = Header::decode(&bytes);
        }
    }
}
