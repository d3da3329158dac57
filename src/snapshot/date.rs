//! Calendar dates as the API and the snapshot folder write them: `YYYY-MM-DD`, nothing else.
//!
//! One type serves the `Date` query parameter, the admin routes and the file names, so the three
//! can never disagree about what a date is. Parsing is strict (RFC 3339 `full-date`: four-digit
//! year, two-digit month and day, a real day of that month), because a date that parses loosely
//! in one place and strictly in another would name a snapshot that cannot be asked for.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

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

impl Date {
    /// The UTC day of `at` (a time before 1970 is 1970-01-01; one past 9999 is 9999-12-31).
    pub fn of(at: SystemTime) -> Self {
        let days = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
        Self::from_days(days)
    }

    /// The date `days` days after 1970-01-01: the proleptic Gregorian calendar, by Howard
    /// Hinnant's `civil_from_days`.
    fn from_days(days: u64) -> Self {
        let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let shifted_month = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
        let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        if year > 9999 {
            return Self { year: 9999, month: 12, day: 31 };
        }
        // Bounded above: the year by the check, the month to 1..=12, the day to 1..=31.
        Self { year: year as u16, month: month as u8, day: day as u8 }
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
    fn the_utc_day_of_a_time() {
        let day = |secs: u64| Date::of(UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(day(0).to_string(), "1970-01-01");
        assert_eq!(day(86_399).to_string(), "1970-01-01");
        assert_eq!(day(951_782_400).to_string(), "2000-02-29");
        assert_eq!(day(1_715_666_400).to_string(), "2024-05-14");
        assert_eq!(day(1_798_761_599).to_string(), "2026-12-31");
        assert_eq!(day(1_798_761_600).to_string(), "2027-01-01");
        assert_eq!(day(u64::MAX / 2).to_string(), "9999-12-31");
        // Every day of four years, one after the other: no gaps, no repeats.
        let mut previous = day(0);
        for n in 1..(4 * 366) {
            let next = day(n * 86_400);
            assert!(next > previous, "{next} after {previous}");
            assert_eq!(Date::parse(&next.to_string()), Ok(next));
            previous = next;
        }
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
