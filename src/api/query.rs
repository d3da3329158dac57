//! Query strings: raw text in, the parameters of one API method out, or a precise 400.
//!
//! Names match in any letter case (`limit`, `LIMIT`, `Limit`), as on the hosted service, and
//! values are percent-decoded (`application/x-www-form-urlencoded`, so `+` is a space). Beyond
//! that nothing is guessed: a name the method does not take, a parameter given twice, an empty
//! value, a number that is not an integer or out of range, or a date that is not `YYYY-MM-DD`
//! is refused with a message that says which and what would be accepted. A misspelt filter
//! that was silently ignored would answer a CI quality gate about every application instead of
//! one, which is worse than an error.

use std::fmt;

use crate::snapshot::{Date, DateError};

/// Every query parameter of the V1 API, by its documented name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    ApplicationGuid,
    ModuleGuid,
    Date,
    Limit,
    Offset,
    Team,
}

impl Param {
    const ALL: [Self; 6] = [
        Self::ApplicationGuid,
        Self::ModuleGuid,
        Self::Date,
        Self::Limit,
        Self::Offset,
        Self::Team,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ApplicationGuid => "ApplicationGUID",
            Self::ModuleGuid => "ModuleGUID",
            Self::Date => "Date",
            Self::Limit => "Limit",
            Self::Offset => "Offset",
            Self::Team => "Team",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The parameters of `/TechnicalDebt_Application`.
pub const APPLICATION: &[Param] =
    &[Param::ApplicationGuid, Param::ModuleGuid, Param::Date, Param::Limit, Param::Offset];
/// The parameters of `/TechnicalDebt_Team`.
pub const TEAM: &[Param] = &[Param::Team];
/// The methods that take no parameters.
pub const NONE: &[Param] = &[];

/// `Limit` when not given, and its bounds (int32 in the API's Swagger).
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 200;
pub const MAX_OFFSET: u32 = i32::MAX as u32;

/// Why a query string was refused (always a 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    Unknown { name: String, accepted: &'static [Param] },
    Repeated(Param),
    Empty(Param),
    NotInteger { param: Param, value: String },
    OutOfRange { param: Param, value: String },
    Date { value: String, reason: DateError },
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown { name, accepted: [] } => {
                write!(f, "unknown query parameter `{name}`: this method takes no parameters")
            }
            Self::Unknown { name, accepted } => {
                let names: Vec<&str> = accepted.iter().map(|p| p.name()).collect();
                write!(
                    f,
                    "unknown query parameter `{name}`: this method takes {}",
                    names.join(", ")
                )
            }
            Self::Repeated(param) => write!(f, "{} is given more than once", param.name()),
            Self::Empty(param) => {
                write!(f, "{} is empty: give it a value, or leave it out", param.name())
            }
            Self::NotInteger { param, value } => {
                write!(f, "{} must be an integer {}, not `{value}`", param.name(), range(*param))
            }
            Self::OutOfRange { param, value } => {
                write!(f, "{} must be {}, not {value}", param.name(), range(*param))
            }
            Self::Date { value, reason } => {
                write!(f, "Date `{value}` is not a date ({reason}): write it YYYY-MM-DD")
            }
        }
    }
}

fn range(param: Param) -> String {
    match param {
        Param::Limit => format!("from 1 to {MAX_LIMIT}"),
        _ => format!("from 0 to {MAX_OFFSET}"),
    }
}

/// A query string split into the parameters one method accepts.
#[derive(Debug, Default)]
pub struct Query {
    values: [Option<String>; Param::ALL.len()],
}

/// The longest value echoed back in a message.
const ECHO_CHARS: usize = 64;

impl Query {
    /// Parses `raw` for a method that takes `accepted`.
    pub fn parse(raw: Option<&str>, accepted: &'static [Param]) -> Result<Self, QueryError> {
        let mut query = Self::default();
        for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if name.is_empty() && value.is_empty() {
                continue; // `a=1&&b=2`, or a trailing `&`: nothing was sent
            }
            let param = accepted
                .iter()
                .copied()
                .find(|p| p.name().eq_ignore_ascii_case(&name))
                .ok_or_else(|| QueryError::Unknown { name: echo(&name), accepted })?;
            if value.is_empty() {
                return Err(QueryError::Empty(param));
            }
            let slot = &mut query.values[param.index()];
            if slot.is_some() {
                return Err(QueryError::Repeated(param));
            }
            *slot = Some(value.into_owned());
        }
        Ok(query)
    }

    pub fn text(&self, param: Param) -> Option<&str> {
        self.values[param.index()].as_deref()
    }

    pub fn date(&self) -> Result<Option<Date>, QueryError> {
        self.text(Param::Date)
            .map(|value| {
                Date::parse(value).map_err(|reason| QueryError::Date { value: echo(value), reason })
            })
            .transpose()
    }

    /// An integer parameter within `min..=max`, or `default` when absent.
    pub fn integer(
        &self,
        param: Param,
        default: u32,
        min: u32,
        max: u32,
    ) -> Result<u32, QueryError> {
        let Some(value) = self.text(param) else { return Ok(default) };
        match value.parse::<i64>() {
            Ok(n) if n >= i64::from(min) && n <= i64::from(max) => Ok(n as u32),
            Ok(_) => Err(QueryError::OutOfRange { param, value: echo(value) }),
            // All digits, but more than i64 holds: out of range too, not "not a number".
            Err(_) if is_integer_text(value) => {
                Err(QueryError::OutOfRange { param, value: echo(value) })
            }
            Err(_) => Err(QueryError::NotInteger { param, value: echo(value) }),
        }
    }
}

fn is_integer_text(value: &str) -> bool {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A value as quoted in a message: shortened, so an error never repeats a huge input.
fn echo(value: &str) -> String {
    match value.char_indices().nth(ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn application(raw: &str) -> Result<Query, QueryError> {
        Query::parse(Some(raw), APPLICATION)
    }

    #[test]
    fn names_match_in_any_case_and_values_are_decoded() {
        let q =
            application("applicationguid=a%2Db&MODULEGUID=m+1&dAtE=2024-05-14&limit=5").unwrap();
        assert_eq!(q.text(Param::ApplicationGuid), Some("a-b"));
        assert_eq!(q.text(Param::ModuleGuid), Some("m 1"));
        assert_eq!(q.date().unwrap(), Some(Date::parse("2024-05-14").unwrap()));
        assert_eq!(q.integer(Param::Limit, DEFAULT_LIMIT, 1, MAX_LIMIT), Ok(5));
        assert_eq!(q.integer(Param::Offset, 0, 0, MAX_OFFSET), Ok(0));
        let empty = Query::parse(None, NONE).unwrap();
        assert_eq!(empty.text(Param::Team), None);
        let nothing = Query::parse(Some("&&"), NONE).unwrap();
        assert_eq!(Param::ALL.map(|p| nothing.text(p)), [None; Param::ALL.len()]);
    }

    #[test]
    fn each_mistake_is_named() {
        let unknown = |name: &str, accepted| QueryError::Unknown { name: name.into(), accepted };
        let cases: &[(&str, &'static [Param], QueryError)] = &[
            ("Limt=5", APPLICATION, unknown("Limt", APPLICATION)),
            ("Team=x", APPLICATION, unknown("Team", APPLICATION)),
            ("Date=2024-05-14", NONE, unknown("Date", NONE)),
            ("Limit", APPLICATION, QueryError::Empty(Param::Limit)),
            ("ApplicationGUID=", APPLICATION, QueryError::Empty(Param::ApplicationGuid)),
            ("team=a&TEAM=b", TEAM, QueryError::Repeated(Param::Team)),
        ];
        for (raw, accepted, expected) in cases {
            assert_eq!(Query::parse(Some(raw), accepted).unwrap_err(), *expected, "{raw}");
        }
        let limit = |raw: &str| {
            application(raw).unwrap().integer(Param::Limit, DEFAULT_LIMIT, 1, MAX_LIMIT)
        };
        let out = |v: &str| QueryError::OutOfRange { param: Param::Limit, value: v.into() };
        let nan = |v: &str| QueryError::NotInteger { param: Param::Limit, value: v.into() };
        assert_eq!(limit("Limit=0"), Err(out("0")));
        assert_eq!(limit("Limit=201"), Err(out("201")));
        assert_eq!(limit("Limit=-1"), Err(out("-1")));
        assert_eq!(limit("Limit=99999999999999999999"), Err(out("99999999999999999999")));
        assert_eq!(limit("Limit=1.5"), Err(nan("1.5")));
        assert_eq!(limit("Limit=ten"), Err(nan("ten")));
        assert_eq!(limit("Limit=%2010"), Err(nan(" 10")));
        assert_eq!(limit("Limit=200"), Ok(200));
        let date = application("Date=2024-02-30").unwrap().date().unwrap_err();
        assert_eq!(date, QueryError::Date { value: "2024-02-30".into(), reason: DateError::Day });
        assert_eq!(
            date.to_string(),
            "Date `2024-02-30` is not a date (that month has no such day): write it YYYY-MM-DD"
        );
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(500);
        let error = Query::parse(Some(&format!("{long}=1")), NONE).unwrap_err();
        let QueryError::Unknown { name, .. } = error else { panic!("{error:?}") };
        assert_eq!(name.chars().count(), ECHO_CHARS + 1);
    }
}
