//! Calendar dates as the API and the snapshot folder write them: `YYYY-MM-DD`, nothing else.
//!
//! One type serves the `Date` query parameter, the admin routes and the file names, so the three
//! can never disagree about what a date is. Parsing is strict (RFC 3339 `full-date`: four-digit
//! year, two-digit month and day, a real day of that month), because a date that parses loosely
//! in one place and strictly in another would name a snapshot that cannot be asked for.

use std::fmt;

/// A valid calendar date from 0001-01-01 to 9999-12-31. Orders chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: u16,
    month: u8,
    day: u8,
}

/// Why a text is not a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateError {
    /// Not ten characters of the form `DDDD-DD-DD`.
    Format,
    Year,
    Month,
    /// A day that the month does not have (`2023-02-29`, `2024-04-31`, `…-00`).
    Day,
}

impl fmt::Display for DateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Format => "a date is written YYYY-MM-DD",
            Self::Year => "the year must be from 0001 to 9999",
            Self::Month => "the month must be from 01 to 12",
            Self::Day => "that month has no such day",
        })
    }
}

impl std::error::Error for DateError {}

impl Date {
    pub fn parse(text: &str) -> Result<Self, DateError> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return Err(DateError::Format);
        }
        let year = digits(&bytes[0..4])?;
        let month = digits(&bytes[5..7])?;
        let day = digits(&bytes[8..10])?;
        if year == 0 {
            return Err(DateError::Year);
        }
        if !(1..=12).contains(&month) {
            return Err(DateError::Month);
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err(DateError::Day);
        }
        // Each value was bounded above: four digits fit u16, two fit u8.
        Ok(Self { year: year as u16, month: month as u8, day: day as u8 })
    }
}

fn digits(bytes: &[u8]) -> Result<u32, DateError> {
    bytes.iter().try_fold(0u32, |n, &b| {
        if b.is_ascii_digit() { Ok(n * 10 + u32::from(b - b'0')) } else { Err(DateError::Format) }
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_dates_parse_and_print_back() {
        for text in ["2024-05-14", "2024-02-29", "2000-02-29", "0001-01-01", "9999-12-31"] {
            assert_eq!(Date::parse(text).unwrap().to_string(), text);
        }
        assert!(Date::parse("2024-05-13").unwrap() < Date::parse("2024-05-14").unwrap());
        assert!(Date::parse("2023-12-31").unwrap() < Date::parse("2024-01-01").unwrap());
    }

    #[test]
    fn each_mistake_is_named() {
        let cases = [
            ("", DateError::Format),
            ("2024-5-14", DateError::Format),
            ("2024/05/14", DateError::Format),
            ("20240514", DateError::Format),
            ("2024-05-14T00:00:00Z", DateError::Format),
            ("+024-05-14", DateError::Format),
            ("2024-0a-14", DateError::Format),
            ("２０２４-05-1", DateError::Format),
            ("0000-01-01", DateError::Year),
            ("2024-00-10", DateError::Month),
            ("2024-13-10", DateError::Month),
            ("2024-05-00", DateError::Day),
            ("2024-04-31", DateError::Day),
            ("2023-02-29", DateError::Day),
            ("1900-02-29", DateError::Day),
        ];
        for (text, expected) in cases {
            assert_eq!(Date::parse(text), Err(expected), "{text}");
        }
    }
}
