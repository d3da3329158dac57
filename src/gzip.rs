//! Gzip members (RFC 1952) assembled from pieces compressed once, so a compressed answer costs
//! a copy, not a compression.
//!
//! A [`Segment`] is one piece of plaintext compressed *alone* as raw deflate (RFC 1951) and
//! ended by a sync flush: its blocks are never final, it ends on a byte boundary, and no
//! back-reference reaches outside it. Any sequence of segments is therefore one valid deflate
//! stream, which is how parallel gzip tools (pigz) stitch their chunks together. A [`Member`]
//! writes the gzip header, the segments (and small plaintext as stored blocks), an empty final
//! block, and the trailer: the CRC-32 of the whole, combined from each piece's CRC-32 (see
//! [`crc32_shift`]), and the length. No byte of a segment is read again per request except to
//! copy it.
//!
//! Segments are made per rendered piece (one application object, one whole answer) and never
//! depend on their neighbours, so the history store (issue 12) can keep them next to the
//! piece they compress, content-addressed like it, and reuse them across dates without
//! compressing again. [`compress`] makes a whole member in one go, for answers built per
//! request (at most a few KiB: one team, one module) and for the whole pre-rendered answers.

use std::cell::RefCell;

use flate2::{Compress, Compression, FlushCompress};

/// RFC 1952 §2.3: ID1 ID2, CM 8 (deflate), no flags, MTIME 0 (not a file), XFL 0, OS 255
/// (unknown).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final block with fixed codes (RFC 1951 §3.2.6): BFINAL 1, BTYPE 01, then the
/// seven zero bits of end-of-block, padded to a byte.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];
/// A stored block holds at most this many bytes (its LEN is 16 bits).
const STORED_MAX: usize = 0xffff;

/// The compression level for pieces compressed once at load. Measured on the 2,000-application
/// benchmark snapshot, each application alone (`bench/snapshot.sh`): level 1 gives 8.7x fewer
/// bytes, 3 gives 11.5x, 6 gives 13.0x for twice the time of level 1, 9 gives 13.3x for
/// three times. The cost is paid once per snapshot, the bytes on every request: 6.
pub const LOAD_LEVEL: u32 = 6;
/// The level for answers compressed per request: the cheapest, they are small.
pub const REQUEST_LEVEL: u32 = 1;

/// One piece compressed alone: raw deflate ended by a sync flush, with the CRC-32 and length
/// of its plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub deflate: &'a [u8],
    pub crc: u32,
    pub plain_len: u32,
    /// [`crc32_shift`] of `plain_len`, computed with the segment.
    pub crc_shift: u32,
}

impl<'a> Segment<'a> {
    fn new(deflate: &'a [u8], crc: u32, plain_len: u32) -> Self {
        Self { deflate, crc, plain_len, crc_shift: crc32_shift(plain_len) }
    }
}

/// One piece compressed alone, owning its bytes: what the history store keeps beside each
/// application (and each run of them), and reads back to serve without compressing again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    pub deflate: Box<[u8]>,
    pub crc: u32,
    pub plain_len: u32,
    /// [`crc32_shift`] of `plain_len`.
    pub crc_shift: u32,
}

/// A compressed piece that does not decompress to what it claims (a damaged store): what is
/// wrong, and the decompressor's own error when it gave one.
#[derive(Debug, Clone)]
pub struct Corrupt {
    pub what: &'static str,
    cause: Option<flate2::DecompressError>,
}

impl Corrupt {
    fn new(what: &'static str) -> Self {
        Self { what, cause: None }
    }
}

impl PartialEq for Corrupt {
    fn eq(&self, other: &Self) -> bool {
        self.what == other.what
    }
}

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.what)
    }
}

impl std::error::Error for Corrupt {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_ref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Compressed {
    /// A piece read back from storage, with the CRC-32 and length stored beside it.
    pub fn from_stored(deflate: Box<[u8]>, crc: u32, plain_len: u32) -> Self {
        Self { deflate, crc, plain_len, crc_shift: crc32_shift(plain_len) }
    }

    pub fn segment(&self) -> Segment<'_> {
        Segment {
            deflate: &self.deflate,
            crc: self.crc,
            plain_len: self.plain_len,
            crc_shift: self.crc_shift,
        }
    }

    /// The plaintext, checked against the stored length and CRC-32.
    pub fn inflate(&self) -> Result<Vec<u8>, Corrupt> {
        thread_local! {
            // Making a decompressor allocates and sets up its tables: a page of an older date
            // decompresses 200 applications, so each thread keeps one and resets it.
            static INFLATE: RefCell<flate2::Decompress> =
                RefCell::new(flate2::Decompress::new(false));
        }
        INFLATE.with_borrow_mut(|inflate| {
            inflate.reset(false);
            self.inflate_with(inflate)
        })
    }

    fn inflate_with(&self, inflate: &mut flate2::Decompress) -> Result<Vec<u8>, Corrupt> {
        let expected = self.plain_len as usize;
        let mut plain = Vec::with_capacity(expected);
        // The segment ends with a sync flush, never a final block: the decoder has taken all
        // of it when its input is used up, with exactly the plaintext out.
        while (inflate.total_in() as usize) < self.deflate.len() {
            let at = inflate.total_in() as usize;
            let before = (inflate.total_in(), inflate.total_out());
            plain.reserve(expected.saturating_sub(plain.len()).max(64));
            inflate
                .decompress_vec(&self.deflate[at..], &mut plain, flate2::FlushDecompress::Sync)
                .map_err(|e| Corrupt {
                    what: "the compressed bytes are not valid deflate",
                    cause: Some(e),
                })?;
            if (inflate.total_in(), inflate.total_out()) == before {
                return Err(Corrupt::new("the compressed bytes end in the middle of a block"));
            }
            if plain.len() > expected {
                return Err(Corrupt::new("it decompresses to more bytes than stored beside it"));
            }
        }
        if plain.len() != expected {
            return Err(Corrupt::new("it decompresses to fewer bytes than stored beside it"));
        }
        if crc32fast::hash(&plain) != self.crc {
            return Err(Corrupt::new("its CRC-32 does not match the one stored beside it"));
        }
        Ok(plain)
    }

    /// What it holds in memory.
    pub fn memory_bytes(&self) -> usize {
        self.deflate.len() + size_of::<Self>()
    }

    fn of_parts(compress: &mut Compress, parts: &[&[u8]]) -> Self {
        let mut deflate = Vec::new();
        deflate_alone(compress, parts, &mut deflate);
        let mut crc = crc32fast::Hasher::new();
        parts.iter().for_each(|part| crc.update(part));
        let plain_len = parts.iter().fold(0u32, |n, part| n.wrapping_add(piece_len(part)));
        Self::from_stored(deflate.into(), crc.finalize(), plain_len)
    }
}

/// Compresses each piece alone at `level`, on up to `threads` threads (the pieces are
/// independent, so the work splits without changing a byte of the result). A piece is the
/// concatenation of its parts, so a run of objects with commas between them is compressed
/// without being copied together first.
pub fn compress_each(pieces: &[Vec<&[u8]>], level: u32, threads: usize) -> Vec<Compressed> {
    let shares = in_shares(pieces, threads, "gzip-load", |share| {
        let mut compress = Compress::new(Compression::new(level), false);
        share.iter().map(|parts| Compressed::of_parts(&mut compress, parts)).collect::<Vec<_>>()
    });
    shares.into_iter().flatten().collect()
}

/// Decompresses each piece (checked as [`Compressed::inflate`] checks it) on up to `threads`
/// threads, in order.
pub fn inflate_each(pieces: &[&Compressed], threads: usize) -> Result<Vec<Vec<u8>>, Corrupt> {
    let shares = in_shares(pieces, threads, "gzip-inflate", |share| {
        share.iter().map(|piece| piece.inflate()).collect::<Result<Vec<_>, _>>()
    });
    let mut all = Vec::with_capacity(pieces.len());
    for share in shares {
        all.extend(share?);
    }
    Ok(all)
}

/// Whether each piece decompresses to exactly the concatenation of its parts, on up to
/// `threads` threads: a piece read back from a store is taken for the bytes it claims only when
/// it gives them. Decompressed through a small window and compared as it comes, so checking a
/// whole snapshot's pieces allocates nothing of their size.
pub fn each_inflates_to(pieces: &[(&Compressed, Vec<&[u8]>)], threads: usize) -> Vec<bool> {
    let shares = in_shares(pieces, threads, "gzip-inflate", |share| {
        let mut inflate = flate2::Decompress::new(false);
        let mut window = vec![0u8; 64 << 10];
        share
            .iter()
            .map(|(piece, parts)| piece.gives(parts, &mut inflate, &mut window))
            .collect::<Vec<_>>()
    });
    shares.into_iter().flatten().collect()
}

impl Compressed {
    /// Whether it decompresses to exactly `parts` joined, through `window`.
    fn gives(&self, parts: &[&[u8]], inflate: &mut flate2::Decompress, window: &mut [u8]) -> bool {
        let expected: usize = parts.iter().map(|p| p.len()).sum();
        if expected != self.plain_len as usize || window.is_empty() {
            return false;
        }
        inflate.reset(false);
        let mut left = parts.iter().copied().filter(|p| !p.is_empty());
        let mut part: &[u8] = left.next().unwrap_or_default();
        while (inflate.total_in() as usize) < self.deflate.len() {
            let (taken, given) = (inflate.total_in(), inflate.total_out());
            // Below the length: the loop's condition.
            let input = &self.deflate[taken as usize..];
            if inflate.decompress(input, window, flate2::FlushDecompress::Sync).is_err() {
                return false;
            }
            let produced = (inflate.total_out() - given) as usize;
            if inflate.total_in() == taken && produced == 0 {
                return false;
            }
            // The decompressor writes at most the window.
            let mut out = &window[..produced];
            while !out.is_empty() {
                if part.is_empty() {
                    match left.next() {
                        Some(next) => part = next,
                        None => return false,
                    }
                }
                let n = part.len().min(out.len());
                if part[..n] != out[..n] {
                    return false;
                }
                (part, out) = (&part[n..], &out[n..]);
            }
        }
        part.is_empty() && left.next().is_none() && inflate.total_out() as usize == expected
    }
}

/// `work` over `items` cut into up to `threads` shares, one thread each, the first on this
/// thread instead of waiting idle; the shares' results in order. The pieces are independent,
/// so the split changes nothing in the result. A share whose thread cannot be started (out of
/// threads or memory) is done here afterwards: slower, never a failure.
fn in_shares<I: Sync, O: Send>(
    items: &[I],
    threads: usize,
    name: &str,
    work: impl Fn(&[I]) -> O + Sync,
) -> Vec<O> {
    let per_thread = items.len().div_ceil(threads.max(1)).max(1);
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per_thread)
            .skip(1)
            .map(|share| {
                let spawned = std::thread::Builder::new()
                    .name(name.into())
                    .spawn_scoped(scope, move || work(share));
                (share, spawned.ok())
            })
            .collect();
        let mut all = vec![work(items.get(..per_thread).unwrap_or(items))];
        for (share, handle) in handles {
            all.push(match handle {
                // Compressing and decompressing cannot panic on any input; if one did, the
                // panic is passed on, as it would be had the work been done here.
                Some(handle) => handle.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
                None => work(share),
            });
        }
        all
    })
}

/// A gzip member being written: header, pieces, then [`Member::finish`].
pub struct Member {
    out: Vec<u8>,
    crc: u32,
    /// ISIZE: the plaintext length modulo 2^32 (RFC 1952 §2.3.1).
    plain_len: u32,
}

impl Member {
    /// `capacity`: the expected compressed size, to allocate once.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity + HEADER.len() + FINAL_BLOCK.len() + 8);
        out.extend_from_slice(&HEADER);
        Self { out, crc: 0, plain_len: 0 }
    }

    /// Appends a piece compressed earlier.
    pub fn segment(&mut self, segment: Segment<'_>) {
        self.out.extend_from_slice(segment.deflate);
        self.crc = crc32_multiply(segment.crc_shift, self.crc) ^ segment.crc;
        self.plain_len = self.plain_len.wrapping_add(segment.plain_len);
    }

    /// Appends plaintext as stored blocks (RFC 1951 §3.2.4): for the few dozen bytes around
    /// the segments (a page's head and tail, the commas), where compressing would cost more
    /// than it saves. Five bytes of framing per block.
    pub fn stored(&mut self, plain: &[u8]) {
        for chunk in plain.chunks(STORED_MAX) {
            // BFINAL 0, BTYPE 00, padded to a byte: every segment ends on a byte boundary.
            let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
            self.out.push(0);
            self.out.extend_from_slice(&len.to_le_bytes());
            self.out.extend_from_slice(&(!len).to_le_bytes());
            self.out.extend_from_slice(chunk);
        }
        let mut crc = crc32fast::Hasher::new_with_initial(self.crc);
        crc.update(plain);
        self.crc = crc.finalize();
        self.plain_len = self.plain_len.wrapping_add(piece_len(plain));
    }

    /// The whole member: the final block and the trailer (CRC-32, ISIZE, little-endian).
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&FINAL_BLOCK);
        self.out.extend_from_slice(&self.crc.to_le_bytes());
        self.out.extend_from_slice(&self.plain_len.to_le_bytes());
        self.out
    }
}

/// `plain` as one gzip member, compressed at `level`.
pub fn compress(plain: &[u8], level: u32) -> Vec<u8> {
    let mut deflate = Vec::with_capacity(plain.len() / 4 + 64);
    if level == REQUEST_LEVEL {
        // Each thread keeps its compressor for answers made per request and resets it: making
        // one allocates and zeroes some 300 KiB of tables, more than a small answer costs.
        thread_local! {
            static COMPRESSOR: RefCell<Option<Compress>> = const { RefCell::new(None) };
        }
        COMPRESSOR.with_borrow_mut(|compressor| {
            let compress = compressor
                .get_or_insert_with(|| Compress::new(Compression::new(REQUEST_LEVEL), false));
            deflate_alone(compress, &[plain], &mut deflate);
        });
    } else {
        let mut compress = Compress::new(Compression::new(level), false);
        deflate_alone(&mut compress, &[plain], &mut deflate);
    }
    let segment = Segment::new(&deflate, crc32fast::hash(plain), piece_len(plain));
    let mut member = Member::with_capacity(deflate.len());
    member.segment(segment);
    member.finish()
}

/// Compresses the concatenation of `parts` with a fresh dictionary onto `out`, ended by a
/// sync flush.
fn deflate_alone(compress: &mut Compress, parts: &[&[u8]], out: &mut Vec<u8>) {
    compress.reset();
    for part in parts {
        feed(compress, part, FlushCompress::None, out);
    }
    feed(compress, &[], FlushCompress::Sync, out);
}

/// Runs the compressor over `input` with `flush` until it has taken all of it and, for a
/// flush, written everything out: that is when it returns with room left in `out`.
fn feed(compress: &mut Compress, input: &[u8], flush: FlushCompress, out: &mut Vec<u8>) {
    let start = compress.total_in();
    loop {
        let consumed = usize::try_from(compress.total_in() - start).unwrap_or(input.len());
        let rest = input.get(consumed..).unwrap_or_default();
        // Deflate's worst case is 5 bytes per stored block on top of the input.
        out.reserve(rest.len() + rest.len() / 1024 + 64);
        let (taken, written) = (compress.total_in(), compress.total_out());
        // With the rust backend compressing into memory cannot fail; were it to, the output
        // would be cut short and the decoding tests would say so.
        if compress.compress_vec(rest, out, flush).is_err() {
            return;
        }
        let all_in = compress.total_in() - start == input.len() as u64;
        let stuck = compress.total_in() == taken && compress.total_out() == written;
        if (all_in && out.len() < out.capacity()) || stuck {
            return;
        }
    }
}

/// The CRC-32 polynomial, bit-reversed (RFC 1952 §8).
const CRC32_POLY: u32 = 0xedb8_8320;

/// `x^(8 * 2^k) mod P` for k = 0..32: what appending 2^k zero bytes multiplies a CRC by.
const CRC32_X8_POW2: [u32; 32] = {
    let mut table = [0u32; 32];
    // x^1 in the bit-reversed representation, squared three times: x^8.
    let mut p = 1u32 << 30;
    let mut k = 0;
    while k < 3 {
        p = crc32_multiply(p, p);
        k += 1;
    }
    let mut k = 0;
    while k < 32 {
        table[k] = p;
        p = crc32_multiply(p, p);
        k += 1;
    }
    table
};

/// What a CRC-32 is multiplied by when `len` bytes follow its input: `x^(8 len) mod P`. With
/// it, `crc(A ‖ B) = crc32_multiply(crc32_shift(len B), crc(A)) ^ crc(B)` (zlib's
/// `crc32_combine_op`). crc32fast's `Hasher::combine` computes the same operator on every call,
/// one multiplication per set bit of the length; each segment keeps its own, so a page pays
/// one multiplication per segment (profiled: the per-call form was 7% of the server's CPU on
/// `Limit=200` pages).
pub fn crc32_shift(len: u32) -> u32 {
    let mut p = 1u32 << 31; // x^0
    let mut n = len;
    let mut k = 0;
    while n != 0 {
        if n & 1 == 1 {
            p = crc32_multiply(CRC32_X8_POW2[k], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// `a(x) b(x) mod P`, bit-reversed, as zlib's `multmodp`.
const fn crc32_multiply(a: u32, mut b: u32) -> u32 {
    let mut product = 0u32;
    let mut i = 0;
    while i < 32 {
        if (a >> (31 - i)) & 1 == 1 {
            product ^= b;
        }
        b = if b & 1 == 1 { (b >> 1) ^ CRC32_POLY } else { b >> 1 };
        i += 1;
    }
    product
}

/// A piece's length as ISIZE counts it (modulo 2^32; pieces are far smaller).
fn piece_len(piece: &[u8]) -> u32 {
    (piece.len() as u64 & 0xffff_ffff) as u32
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use proptest::prelude::*;

    use super::*;

    fn gunzip(member: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(member).read_to_end(&mut out).unwrap();
        out
    }

    /// Strict: exactly one member, nothing after it.
    fn gunzip_exact(member: &[u8]) -> Vec<u8> {
        let mut decoder = flate2::bufread::GzDecoder::new(member);
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).unwrap();
        assert!(decoder.into_inner().is_empty(), "bytes after the member");
        out
    }

    #[test]
    fn a_segment_ends_with_the_sync_flush_marker() {
        let pieces = compress_each(&[vec![b"hello hello ".as_slice(), b"hello"]], 6, 1);
        let segment = pieces[0].segment();
        assert!(segment.deflate.ends_with(&[0, 0, 0xff, 0xff]), "{:x?}", segment.deflate);
        assert_eq!(segment.plain_len, 17);
        assert_eq!(segment.crc, crc32fast::hash(b"hello hello hello"));
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].inflate().unwrap(), b"hello hello hello");
    }

    #[test]
    fn the_crc_of_a_concatenation_is_combined_exactly() {
        let a = b"{\"GUID\":\"a\"}".repeat(37);
        let b = b"the quick brown fox".repeat(1001);
        for (x, y) in [(&a[..], &b[..]), (&b[..], &a[..]), (&a[..0], &b[..]), (&a[..], &b[..0])] {
            let len = u32::try_from(y.len()).unwrap();
            let combined =
                crc32_multiply(crc32_shift(len), crc32fast::hash(x)) ^ crc32fast::hash(y);
            assert_eq!(combined, crc32fast::hash(&[x, y].concat()));
        }
        assert_eq!(crc32_shift(0), 1 << 31, "x^0: nothing follows");
        assert_eq!(CRC32_X8_POW2[0], 0x0080_0000, "x^8, as zlib's table has it");
    }

    #[test]
    fn an_empty_member_is_valid_and_the_header_is_the_rfcs() {
        let member = Member::with_capacity(0).finish();
        assert_eq!(&member[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(member.len(), 10 + 2 + 8);
        assert_eq!(gunzip_exact(&member), b"");
    }

    #[test]
    fn stored_blocks_longer_than_one_block_round_trip() {
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut member = Member::with_capacity(0);
        member.stored(&plain);
        assert_eq!(gunzip_exact(&member.finish()), plain);
    }

    #[test]
    fn compress_round_trips_and_reuses_its_compressor() {
        for level in [1, 6, 1] {
            let plain = b"{\"Levels\":[{\"GUID\":\"a\"},{\"GUID\":\"a\"}]}".repeat(100);
            let member = compress(&plain, level);
            assert!(member.len() < plain.len() / 10, "{}", member.len());
            assert_eq!(gunzip_exact(&member), plain);
        }
        assert_eq!(gunzip_exact(&compress(b"", 1)), b"");
    }

    #[test]
    fn the_lenient_reader_agrees_with_the_strict_one() {
        // The integration tests decode with curl and Python's gzip module as well.
        let plain = b"abc".repeat(1000);
        let pieces = compress_each(&[vec![&plain], vec![&plain]], 1, 2);
        let mut member = Member::with_capacity(0);
        member.segment(pieces[0].segment());
        member.stored(b",");
        member.segment(pieces[1].segment());
        let member = member.finish();
        assert_eq!(gunzip(&member), [plain.as_slice(), b",", &plain].concat());
    }

    #[test]
    fn a_stored_piece_is_taken_only_when_it_gives_exactly_its_bytes() {
        let plain = b"{\"GUID\":\"a\"},{\"GUID\":\"b\"}".repeat(5000);
        let good = compress_each(&[vec![&plain]], 6, 1).remove(0);
        let (head, tail) = plain.split_at(70_001);
        let mut damaged = good.clone();
        let middle = damaged.deflate.len() / 2;
        damaged.deflate[middle] ^= 0x55;
        let mut other = plain.clone();
        other[99_999] = b'X';
        let checks = [
            (&good, vec![plain.as_slice()]),
            (&good, vec![head, b"".as_slice(), tail]),
            (&good, vec![other.as_slice()]),
            (&good, vec![head]),
            (&damaged, vec![plain.as_slice()]),
        ];
        assert_eq!(each_inflates_to(&checks, 2), [true, true, false, false, false]);
    }

    #[test]
    fn a_damaged_piece_is_refused_not_served() {
        let good = compress_each(&[vec![b"{\"GUID\":\"a\"}".as_slice()]], 6, 1).remove(0);
        let mut flipped = good.clone();
        flipped.crc ^= 1;
        assert_eq!(
            flipped.inflate(),
            Err(Corrupt::new("its CRC-32 does not match the one stored beside it"))
        );
        let short = Compressed::from_stored(good.deflate[..3].into(), good.crc, good.plain_len);
        assert!(short.inflate().is_err());
        let longer = Compressed::from_stored(good.deflate.clone(), good.crc, good.plain_len - 1);
        assert!(longer.inflate().is_err());
        let garbage = Compressed::from_stored(vec![0xff; 40].into(), 0, 10);
        let refused = garbage.inflate().unwrap_err();
        assert_eq!(refused.what, "the compressed bytes are not valid deflate");
        let cause = std::error::Error::source(&refused).map(|e| e.to_string());
        assert!(cause.is_some_and(|c| !c.is_empty()), "the decompressor's error is kept");
    }

    proptest! {
        /// Any sequence of pieces, each compressed alone, in any order and with repeats, with
        /// stored plaintext between them, is one gzip stream of the concatenated plaintext.
        #[test]
        fn any_sequence_of_pieces_concatenates_into_one_member(
            pieces in prop::collection::vec(
                prop::collection::vec(prop::sample::select(b"{}[],:\"ab01".to_vec()), 0..3000),
                0..8,
            ),
            order in prop::collection::vec((0usize..8, prop::collection::vec(any::<u8>(), 0..5)),
                0..20),
            level in 0u32..10,
            threads in 1usize..4,
        ) {
            // Each piece in two parts, cut anywhere: a piece is the concatenation of its parts.
            let slices: Vec<Vec<&[u8]>> =
                pieces.iter().map(|p| p.split_at(p.len() / 3)).map(|(a, b)| vec![a, b]).collect();
            let segments = compress_each(&slices, level, threads);
            prop_assert_eq!(segments.len(), pieces.len());
            for (segment, plain) in segments.iter().zip(&pieces) {
                prop_assert_eq!(&segment.inflate().unwrap(), plain);
            }
            let refs: Vec<&Compressed> = segments.iter().collect();
            prop_assert_eq!(&inflate_each(&refs, threads).unwrap(), &pieces);
            let mut member = Member::with_capacity(0);
            let mut expected = Vec::new();
            for (i, between) in &order {
                if let Some(segment) = segments.get(*i) {
                    member.segment(segment.segment());
                    expected.extend_from_slice(&pieces[*i]);
                }
                member.stored(between);
                expected.extend_from_slice(between);
            }
            prop_assert_eq!(gunzip_exact(&member.finish()), expected);
        }
    }
}
