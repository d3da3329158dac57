//! The byte layouts of the pieces the history store keeps, and their reading back.
//!
//! A page of an older date reads up to 200 applications from the store, and an index of one
//! reads the identifiers of all of them, so the pieces are a few fixed little-endian fields and
//! the bytes, not a text format: a serde format would be one more dependency to keep (bincode,
//! the obvious one, is unmaintained: RUSTSEC-2025-0141) for a hundred lines that a property test
//! pins down. Every read checks lengths and fails with [`Damaged`] instead of panicking: the file
//! is ours, but a disk can still hand back anything. Every write checks that each length fits its
//! field and fails instead of cutting a value short.

use std::fmt;
use std::ops::Range;

use super::{AppMeta, AppPiece, Digest, ModuleMeta, RunPiece, Teams};
use crate::gzip::Compressed;

/// A stored piece that cannot be read back, or a value that cannot be laid out: what, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged(pub String);

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

/// An application: CRC-32, plaintext length, findings, where its modules start, its GUID, its
/// modules (span and GUID), then the deflate segment. (The layout of the release that made
/// the store: a store written by it reads as it is.)
pub fn encode_app(app: &AppPiece) -> Result<Vec<u8>, Damaged> {
    let meta = &app.meta;
    let mut out = Vec::with_capacity(app.compressed.deflate.len() + 48 * meta.modules.len() + 64);
    put_u32(&mut out, app.compressed.crc);
    put_u32(&mut out, app.compressed.plain_len);
    put_u32(&mut out, meta.findings);
    put_u32(&mut out, meta.modules_at);
    put_str(&mut out, &meta.guid)?;
    put_u32(&mut out, fit(meta.modules.len(), "modules")?);
    for module in meta.modules.iter() {
        put_u32(&mut out, module.span.start);
        put_u32(&mut out, module.span.end);
        put_str(&mut out, &module.guid)?;
    }
    out.extend_from_slice(&app.compressed.deflate);
    Ok(out)
}

/// An application whole: its index entries and its segment.
pub fn decode_app(hash: Digest, bytes: &[u8]) -> Result<AppPiece, Damaged> {
    let mut r = Reader::new(bytes, "application");
    let (crc, plain_len, findings, modules_at) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
    if modules_at > plain_len {
        return Err(r.damaged("its module list starts past its end"));
    }
    let guid = r.str()?;
    let count = module_count(&mut r)?;
    let mut modules = Vec::with_capacity(count);
    for _ in 0..count {
        let span = r.u32()?..r.u32()?;
        if span.start > span.end || span.end > plain_len || span.start < modules_at {
            return Err(r.damaged("a module's span is outside the application"));
        }
        modules.push(ModuleMeta { span, guid: r.str()? });
    }
    let deflate = r.rest().into();
    let meta = AppMeta { guid, modules_at, modules: modules.into(), findings };
    Ok(AppPiece { hash, meta, compressed: Compressed::from_stored(deflate, crc, plain_len) })
}

/// An application's segment alone, its identifiers stepped over without being copied: what a
/// page needs of it.
pub fn decode_app_segment(bytes: &[u8]) -> Result<Compressed, Damaged> {
    let mut r = Reader::new(bytes, "application");
    let (crc, plain_len, _findings, _modules_at) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
    r.skip_str()?;
    for _ in 0..module_count(&mut r)? {
        r.take(8)?;
        r.skip_str()?;
    }
    Ok(Compressed::from_stored(r.rest().into(), crc, plain_len))
}

/// The count of modules that follows. Each takes at least ten bytes: a count larger than what
/// is left is damage, and must not become a huge allocation.
fn module_count(r: &mut Reader<'_>) -> Result<usize, Damaged> {
    let count = r.u32()? as usize;
    if count > r.left() / 10 {
        return Err(r.damaged("more modules than bytes"));
    }
    Ok(count)
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
    let mut r = Reader::new(bytes, "run");
    let crc = r.u32()?;
    let plain_len = r.u32()?;
    Ok(RunPiece { key, compressed: Compressed::from_stored(r.rest().into(), crc, plain_len) })
}

/// The teams: their count, each one's span and lower-case `ExternalId`, then their objects.
pub fn encode_teams(teams: &Teams) -> Result<Vec<u8>, Damaged> {
    let mut out = Vec::with_capacity(teams.json().len() + 48 * teams.len() + 4);
    put_u32(&mut out, fit(teams.len(), "teams")?);
    for (span, id) in teams.spans().iter().zip(teams.ids()) {
        put_u32(&mut out, span.start);
        put_u32(&mut out, span.end);
        put_str(&mut out, id)?;
    }
    out.extend_from_slice(teams.json());
    Ok(out)
}

pub fn decode_teams(bytes: &[u8]) -> Result<Teams, Damaged> {
    let mut r = Reader::new(bytes, "team list");
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
    Teams::new(json, spans.into(), ids.into())
        .map_err(|_| r.damaged("a team's span is outside the list"))
}

/// The size of [`encode_app`]'s record, without making it.
pub fn app_len(app: &AppPiece) -> Result<u32, Damaged> {
    let meta = &app.meta;
    let str_len = |s: &str| 2 + s.len();
    let modules: usize = meta.modules.iter().map(|m| 8 + str_len(&m.guid)).sum();
    fit(20 + str_len(&meta.guid) + modules + app.compressed.deflate.len(), "application")
}

/// The size of [`encode_run`]'s record.
pub fn run_len(run: &RunPiece) -> Result<u32, Damaged> {
    fit(8 + run.compressed.deflate.len(), "run")
}

/// `n` as a 32-bit length, or why it is not one.
fn fit(n: usize, what: &str) -> Result<u32, Damaged> {
    u32::try_from(n).map_err(|_| Damaged(format!("{what}: {n} does not fit a 32-bit length")))
}

pub(super) fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

/// A string of at most 64 KiB (identifiers, which the format keeps far shorter).
fn put_str(out: &mut Vec<u8>, text: &str) -> Result<(), Damaged> {
    let len = u16::try_from(text.len())
        .map_err(|_| Damaged(format!("an identifier of {} bytes is over 64 KiB", text.len())))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// Reads fields off a record, failing with where and why it is damaged.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, at: 0, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| self.damaged("it ends too soon"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    pub(super) fn u32(&mut self) -> Result<u32, Damaged> {
        let mut field = [0u8; 4];
        field.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(field))
    }

    pub(super) fn digest(&mut self) -> Result<Digest, Damaged> {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.take(32)?);
        Ok(key)
    }

    fn str(&mut self) -> Result<Box<str>, Damaged> {
        let bytes = self.str_bytes()?;
        std::str::from_utf8(bytes)
            .map(Into::into)
            .map_err(|_| self.damaged("an identifier is not UTF-8"))
    }

    fn skip_str(&mut self) -> Result<(), Damaged> {
        self.str_bytes().map(|_| ())
    }

    fn str_bytes(&mut self) -> Result<&'a [u8], Damaged> {
        let mut len = [0u8; 2];
        len.copy_from_slice(self.take(2)?);
        self.take(u16::from_le_bytes(len) as usize)
    }

    pub(super) fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }

    pub(super) fn damaged(&self, why: &str) -> Damaged {
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
        let bytes = encode_app(&piece).unwrap();
        assert_eq!(app_len(&piece).unwrap() as usize, bytes.len());
        assert_eq!(decode_app([7; 32], &bytes), Ok(piece.clone_for_test()));
        assert_eq!(decode_app_segment(&bytes), Ok(piece.compressed.clone()));
        for cut in [0, 3, 17, 21] {
            let error = decode_app([7; 32], &bytes[..cut]).unwrap_err();
            assert!(error.0.starts_with("application record: it ends too soon"), "{error}");
        }
        let mut outside = bytes.clone();
        // The first module's end, past the plaintext: after the four fields, the GUID
        // (2 + 2 bytes), the count and the first module's start.
        let at = 4 * 4 + 2 + 2 + 4 + 4;
        outside[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
        let error = decode_app([7; 32], &outside).unwrap_err();
        assert!(error.0.contains("a module's span is outside the application"), "{error}");
        let mut huge = bytes;
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_app([7; 32], &huge).unwrap_err().0.contains("more modules than bytes"));
    }

    #[test]
    fn a_value_too_long_for_its_field_is_refused_not_cut() {
        let long = "x".repeat(70_000);
        let piece = app(&long, &[], b"{}");
        assert!(encode_app(&piece).unwrap_err().0.contains("over 64 KiB"));
    }

    #[test]
    fn teams_and_runs_read_back() {
        let teams = Teams::new(
            b"{\"a\":1}{\"b\":2}".to_vec().into(),
            vec![0..7, 7..14].into(),
            vec!["t1".into(), "t2".into()].into(),
        )
        .unwrap();
        assert_eq!(decode_teams(&encode_teams(&teams).unwrap()), Ok(teams));
        let run = RunPiece {
            key: [1; 32],
            compressed: gzip::compress_each(&[vec![b"x,y"]], 6, 1).remove(0),
        };
        assert_eq!(decode_run([1; 32], &encode_run(&run)), Ok(run));
    }

    impl AppPiece {
        fn clone_for_test(&self) -> Self {
            Self { hash: self.hash, meta: self.meta.clone(), compressed: self.compressed.clone() }
        }
    }

    proptest! {
        /// Whatever the bytes, reading them back fails or succeeds; it never panics.
        #[test]
        fn any_bytes_decode_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_app([0; 32], &bytes);
            let _ = decode_app_segment(&bytes);
            let _ = decode_run([0; 32], &bytes);
            let _ = decode_teams(&bytes);
            let _ = super::super::record::DatePieces::decode(&bytes);
            let _ = super::super::record::Header::decode(&bytes);
        }
    }
}
