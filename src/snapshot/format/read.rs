//! A document read as it streams in: parsed from the first byte, hashed and counted on the way.
//!
//! The body reaches [`read`] as a `Read`, straight from the admin port's socket or from a file
//! of the inbox. Nothing is buffered beyond the parser's window: the first refill is at most
//! [`FIRST_READ_BYTES`], so a body that cannot be a snapshot (200 MB of zeros, a JSON array) is
//! refused after reading that much, and a valid one is never held twice (bytes and parsed form).
//! The parse always tracks its JSON path (serde_path_to_error): a stream cannot be read a second
//! time to find where the first read failed, and the tracking costs a few percent of a parse.

use std::fmt;
use std::io::{self, BufReader, Read};

use super::invalid::{Invalid, Problem};
use super::strict::Document;

/// The first read from the body is at most this many bytes; later ones fill the buffer.
pub const FIRST_READ_BYTES: usize = 1024;
/// The parser's window on the body.
const BUFFER_BYTES: usize = 64 << 10;
/// Editors on some systems start UTF-8 files with it; JSON forbids it, and it carries no data.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// A document received whole.
#[derive(Debug)]
pub struct Received {
    pub document: Document,
    /// Over every byte received, a byte-order mark included: what `GET /snapshots` reports and
    /// what `snapshot pull` compares its own rendering with.
    pub sha256: [u8; 32],
    pub bytes: u64,
}

/// Why no document was received.
#[derive(Debug)]
pub enum ReadError {
    /// Not one byte.
    Empty,
    /// The body could not be read (the client went away, a disk failed).
    Body(io::Error),
    Invalid(Invalid),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("there is nothing to read: a snapshot is a JSON object"),
            Self::Body(e) => write!(f, "cannot read the snapshot: {e}"),
            Self::Invalid(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Empty => None,
            Self::Body(e) => Some(e),
            Self::Invalid(e) => Some(e),
        }
    }
}

/// Reads one document from `body`, to its end: trailing characters are refused.
pub fn read(body: &mut dyn Read) -> Result<Received, ReadError> {
    let mut tap = Tap::new(body);
    let parsed = {
        let mut de =
            serde_json::Deserializer::from_reader(BufReader::with_capacity(BUFFER_BYTES, &mut tap));
        match serde_path_to_error::deserialize::<_, Document>(&mut de) {
            // Trailing characters after the document: the document itself was whole.
            Ok(document) => de.end().map(|()| document).map_err(|e| ("$".to_owned(), e)),
            Err(e) => Err((json_path(e.path()), e.into_inner())),
        }
    };
    match parsed {
        Ok(document) => Ok(Received { document, sha256: tap.sha256(), bytes: tap.bytes }),
        Err((path, error)) if error.is_io() => Err(io_failure(path, error)),
        Err(_) if tap.bytes == 0 => Err(ReadError::Empty),
        Err((path, error)) => Err(ReadError::Invalid(Invalid::at(path, Problem::syntax(&error)))),
    }
}

/// A failure the reader reported: the tap's refusal of what is not an object, or the body's.
fn io_failure(path: String, error: serde_json::Error) -> ReadError {
    let error = io::Error::from(error);
    if let Some(NotAnObject { line, column }) =
        error.get_ref().and_then(|inner| inner.downcast_ref::<NotAnObject>())
    {
        let message = "a snapshot is a JSON object, {…}".to_owned();
        let (line, column) = (*line, *column);
        return ReadError::Invalid(Invalid::at(path, Problem::Syntax { message, line, column }));
    }
    ReadError::Body(error)
}

/// A JSON path in the `$.Applications[3].Modules[0].GUID` form.
pub fn json_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::from("$");
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                out.push('.');
                out.push_str(key);
            }
            Segment::Map { key } => out.push_str(&format!("[{:?}]", super::invalid::echo(key))),
            Segment::Enum { variant } => out.push_str(&format!(".{variant}")),
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// The first character of the document, where it is not `{`: serde would read a struct from an
/// array too, by position, and an error about "6 elements" would only confuse.
#[derive(Debug)]
struct NotAnObject {
    line: usize,
    column: usize,
}

impl fmt::Display for NotAnObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a JSON object (line {}, column {})", self.line, self.column)
    }
}

impl std::error::Error for NotAnObject {}

/// The body as the parser sees it: hashed and counted as it passes, a leading byte-order mark
/// left out, and refused at the first character that is not whitespace unless it opens an
/// object.
struct Tap<'a> {
    inner: &'a mut dyn Read,
    digest: ring::digest::Context,
    bytes: u64,
    /// The first bytes, read to look for a byte-order mark and not yet handed on.
    head: Option<Vec<u8>>,
    /// Where the parser is while only whitespace has passed; `None` once `{` has.
    seeking: Option<(usize, usize)>,
}

impl<'a> Tap<'a> {
    fn new(inner: &'a mut dyn Read) -> Self {
        Self {
            inner,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
            head: None,
            seeking: Some((1, 1)),
        }
    }

    fn sha256(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.digest.clone().finish().as_ref());
        out
    }

    /// Reads from the body into `buf`, hashing and counting what came.
    fn take(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        let got =
            buf.get(..n).ok_or_else(|| io::Error::other("a read claimed more bytes than asked"))?;
        self.digest.update(got);
        self.bytes += got.len() as u64;
        Ok(n)
    }

    /// The body's first bytes, up to a byte-order mark's length, with the mark removed.
    fn first_bytes(&mut self) -> io::Result<Vec<u8>> {
        let mut head = vec![0u8; BYTE_ORDER_MARK.len()];
        let mut filled = 0;
        while filled < head.len() {
            let n = self.take(&mut head[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        head.truncate(filled);
        if head == BYTE_ORDER_MARK {
            head.clear();
        }
        Ok(head)
    }

    /// Follows the whitespace before the document, and refuses anything but `{` after it.
    fn watch(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some((mut line, mut column)) = self.seeking else { return Ok(()) };
        for &byte in bytes {
            match byte {
                b'\n' => (line, column) = (line + 1, 1),
                b' ' | b'\t' | b'\r' => column += 1,
                b'{' => {
                    self.seeking = None;
                    return Ok(());
                }
                _ => return Err(io::Error::other(NotAnObject { line, column })),
            }
        }
        self.seeking = Some((line, column));
        Ok(())
    }
}

impl Read for Tap<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.head.is_none() {
            let head = self.first_bytes()?;
            self.head = Some(head);
        }
        let n = match self.head.as_mut().filter(|head| !head.is_empty()) {
            Some(head) => {
                let n = head.len().min(buf.len());
                buf[..n].copy_from_slice(&head[..n]);
                head.drain(..n);
                n
            }
            None => {
                // The first refill is small: what cannot be a snapshot is refused after it.
                let room = match self.bytes < FIRST_READ_BYTES as u64 {
                    true => buf.len().min(FIRST_READ_BYTES),
                    false => buf.len(),
                };
                self.take(&mut buf[..room])?
            }
        };
        self.watch(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(text: &[u8]) -> (String, String, usize, usize) {
        match read(&mut &text[..]) {
            Err(ReadError::Invalid(Invalid {
                path,
                problem: Problem::Syntax { message, line, column },
            })) => (path, message, line, column),
            other => panic!("{other:?}"),
        }
    }

    const MINIMAL: &str = r#"{"LastAnalyzedOn":"2024-05-14T06:00:00Z","Levels":[],"Categories":[],"Applications":[]}"#;

    #[test]
    fn what_is_not_a_document_is_named_with_its_place() {
        let (path, message, line, column) = syntax(b"\n  [\"2024-05-14T06:00:00Z\", []]");
        assert_eq!((path.as_str(), message.as_str()), ("$", "a snapshot is a JSON object, {…}"));
        assert_eq!((line, column), (2, 3));
        let (path, message, ..) = syntax(format!("{MINIMAL} x").as_bytes());
        assert_eq!((path.as_str(), message.as_str()), ("$", "trailing characters"));
        let (path, message, line, column) = syntax(b"{\"LastAnalyzedOn\": ");
        assert_eq!(
            (path.as_str(), message.as_str()),
            ("$.LastAnalyzedOn", "EOF while parsing a value")
        );
        assert_eq!((line, column), (1, 19));
        let unknown = MINIMAL.replacen("\"Levels\"", "\"Level\":1,\"Levels\"", 1);
        let (path, message, ..) = syntax(unknown.as_bytes());
        assert_eq!(path, "$.Level");
        assert!(message.starts_with("unknown field `Level`"), "{message}");
        assert!(matches!(read(&mut &b""[..]), Err(ReadError::Empty)));
        assert!(matches!(read(&mut &b"  "[..]), Err(ReadError::Invalid(_))));
    }

    #[test]
    fn a_byte_order_mark_is_skipped_but_hashed() {
        let plain = read(&mut MINIMAL.as_bytes()).unwrap();
        let marked = [BYTE_ORDER_MARK, MINIMAL.as_bytes()].concat();
        let with_mark = read(&mut &marked[..]).unwrap();
        assert_eq!(with_mark.bytes, plain.bytes + 3);
        assert_ne!(with_mark.sha256, plain.sha256);
        let expected = ring::digest::digest(&ring::digest::SHA256, &marked);
        assert_eq!(&with_mark.sha256[..], expected.as_ref());
        assert_eq!(with_mark.document.last_analyzed_on, plain.document.last_analyzed_on);
        // A mark cut short is no mark: its bytes are the document's, and refused.
        let (_, message, ..) = syntax(b"\xEF\xBB");
        assert!(message.contains("a snapshot is a JSON object"), "{message}");
    }

    /// A reader that counts what was taken from it and never runs dry.
    struct Zeros {
        taken: usize,
    }

    impl Read for Zeros {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(0);
            self.taken += buf.len();
            Ok(buf.len())
        }
    }

    #[test]
    fn an_endless_body_of_zeros_is_refused_within_the_first_kib() {
        let mut zeros = Zeros { taken: 0 };
        let refused = read(&mut zeros);
        assert!(
            matches!(&refused, Err(ReadError::Invalid(Invalid { path, .. })) if path == "$"),
            "{refused:?}"
        );
        assert!(zeros.taken <= FIRST_READ_BYTES, "{} bytes read", zeros.taken);
    }

    #[test]
    fn a_body_that_fails_to_read_is_not_a_syntax_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone"))
            }
        }
        match read(&mut Broken) {
            Err(ReadError::Body(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("{other:?}"),
        }
    }
}
