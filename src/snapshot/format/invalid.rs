//! Why a snapshot was refused: the JSON path of the first problem, and what it is.
//!
//! Every refusal names a place in the document (`$.Applications[3].LevelGUID`) so the person
//! who made the file can go straight to it; the admin port answers it as a `422` with the path
//! and the reason in their own fields. Nothing here echoes more of the input than a reader can
//! use: a value or a message from the parser is cut to [`MAX_ECHO_CHARS`].

use std::fmt;

use super::FORMAT_VERSION;

/// The most characters of the input a message repeats: enough to recognise a GUID or a name, and
/// a 50 MB string never becomes a 50 MB answer or log line.
pub const MAX_ECHO_CHARS: usize = 120;

/// Why a snapshot was refused: where in the document (a JSON path) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// `$` is the whole document, `$.Applications[3].LevelGUID` one value in it.
    pub path: String,
    pub problem: Problem,
}

impl Invalid {
    pub(crate) fn at(path: String, problem: Problem) -> Self {
        Self { path, problem }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

impl std::error::Error for Invalid {}

/// What kind of thing a GUID failed to name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Level,
    Category,
    Pattern,
    Application,
}

impl Kind {
    fn where_declared(self) -> &'static str {
        match self {
            Self::Level => "level in $.Levels",
            Self::Category => "category in $.Categories",
            Self::Pattern => "pattern in $.Categories[*].Patterns",
            Self::Application => "application in $.Applications",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not JSON, or not the documented shape, in `serde`'s words, with the position.
    Syntax {
        message: String,
        line: usize,
        column: usize,
    },
    FormatVersion(u32),
    Timestamp {
        text: String,
    },
    EmptyIdentifier,
    /// A string longer than the format allows for its field.
    TooLong {
        bytes: usize,
        max: usize,
    },
    /// A control character (or a line separator or bidirectional control) in a string: the
    /// `char` position and the code point.
    ControlCharacter {
        at: usize,
        code_point: u32,
    },
    /// An identifier used twice where it must be unique (letter case ignored).
    Duplicate {
        id: String,
        first: String,
    },
    /// A reference to something the snapshot does not declare.
    Unresolved {
        kind: Kind,
        guid: String,
    },
    /// A finding names a pattern and a category, and the pattern is in another category.
    WrongCategory {
        pattern: String,
        category: String,
        declared_in: String,
    },
    NegativeCount(i64),
}

impl Problem {
    /// Where in the file the problem is, when the parser could say (a syntax or shape error).
    pub fn line_column(&self) -> Option<(usize, usize)> {
        match self {
            Self::Syntax { line, column, .. } => Some((*line, *column)),
            Self::FormatVersion(_)
            | Self::Timestamp { .. }
            | Self::EmptyIdentifier
            | Self::TooLong { .. }
            | Self::ControlCharacter { .. }
            | Self::Duplicate { .. }
            | Self::Unresolved { .. }
            | Self::WrongCategory { .. }
            | Self::NegativeCount(_) => None,
        }
    }

    pub(super) fn syntax(error: &serde_json::Error) -> Self {
        let (line, column) = (error.line(), error.column());
        let text = error.to_string();
        // serde_json appends the position to its message; it is reported in its own fields.
        let suffix = format!(" at line {line} column {column}");
        let message = echo(text.strip_suffix(&suffix).unwrap_or(&text));
        Self::Syntax { message, line, column }
    }
}

/// `text` as a message may repeat it: at most [`MAX_ECHO_CHARS`] characters, `…` when cut.
pub fn echo(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { message, line, column } => {
                write!(f, "{message} (line {line}, column {column})")
            }
            Self::FormatVersion(v) => write!(
                f,
                "format version {v} is not supported (this build reads version {FORMAT_VERSION})"
            ),
            Self::Timestamp { text } => write!(
                f,
                "`{text}` is not an RFC 3339 UTC timestamp; write it like 2024-05-14T06:00:00.000Z"
            ),
            Self::EmptyIdentifier => f.write_str("an identifier must not be empty"),
            Self::TooLong { bytes, max } => write!(
                f,
                "the string is {bytes} bytes long; this field takes at most {max} bytes of UTF-8"
            ),
            Self::ControlCharacter { at, code_point } => write!(
                f,
                "character {at} is U+{code_point:04X}, a control character; strings may not \
                 hold control characters, line separators or bidirectional controls"
            ),
            Self::Duplicate { id, first } => write!(
                f,
                "`{id}` is already used at {first}; identifiers must be unique (letter case is \
                 ignored)"
            ),
            Self::Unresolved { kind, guid } => {
                write!(f, "`{guid}` names no {}", kind.where_declared())
            }
            Self::WrongCategory { pattern, category, declared_in } => write!(
                f,
                "pattern `{pattern}` belongs to category `{declared_in}`, not `{category}`"
            ),
            Self::NegativeCount(n) => write!(f, "Count is {n}; a count cannot be negative"),
        }
    }
}
