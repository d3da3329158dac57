//! An identifier as the document holds it: a GUID kept inline, without an allocation.
//!
//! A snapshot of 400,000 findings names 800,000 GUIDs (each finding its category and its
//! pattern): as `String`s they were 800,000 allocations and a third of the parsed form's
//! memory. A GUID is 36 bytes, so one of up to [`INLINE`] bytes is kept in place; a longer
//! identifier (the format allows 256 bytes) is boxed.

use std::fmt;
use std::ops::Deref;

use arrayvec::ArrayString;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest identifier kept inline.
const INLINE: usize = 46;

#[derive(Clone, PartialEq, Eq)]
pub struct Id(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Inline(ArrayString<INLINE>),
    Boxed(Box<str>),
}

impl Id {
    pub fn new(text: &str) -> Self {
        match ArrayString::from(text) {
            Ok(inline) => Self(Repr::Inline(inline)),
            Err(_) => Self(Repr::Boxed(text.into())),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(text) => text,
            Repr::Boxed(text) => text,
        }
    }
}

impl Default for Id {
    fn default() -> Self {
        Self::new("")
    }
}

impl Deref for Id {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Id {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;

        impl Visitor<'_> for IdVisitor {
            type Value = Id;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Id, E> {
                Ok(Id::new(text))
            }
        }

        deserializer.deserialize_str(IdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_identifiers_read_and_write_back_as_they_came() {
        for text in ["", "a1", "3AD401B9-DAF7-54EC-B9A0-A936FCC83222", "é😀é", &"x".repeat(47)]
        {
            let json = serde_json::to_string(text).unwrap();
            let id: Id = serde_json::from_str(&json).unwrap();
            assert_eq!((id.as_str(), id.len()), (text, text.len()));
            assert_eq!(serde_json::to_string(&id).unwrap(), json);
            assert_eq!(format!("{id}"), text);
        }
        assert!(matches!(Id::new(&"x".repeat(46)).0, Repr::Inline(_)));
        assert!(matches!(Id::new(&"x".repeat(47)).0, Repr::Boxed(_)));
        assert_eq!(Id::new("a"), Id::from("a"));
    }
}
