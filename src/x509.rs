//! The few fields of an X.509 certificate the appliance reads: its validity and its names.
//!
//! rustls and webpki check certificates but do not expose `notAfter`, which the renewal, the
//! expiry metric and `diagnose` need. The one crate that would (x509-parser) brings a second
//! major version of `syn` into the build, which `cargo deny` refuses; reading two fields of a
//! DER structure whose layout RFC 5280 §4.1 fixes takes the small reader below instead. It
//! only walks the structure (tag, length, contents) and never trusts a length beyond the
//! bytes it has: a malformed certificate is an error, never a panic.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version` and `[3] EXPLICIT Extensions` in `TBSCertificate`.
const VERSION_TAG: u8 = 0xa0;
const EXTENSIONS_TAG: u8 = 0xa3;
/// `dNSName [2] IA5String` and `iPAddress [7] OCTET STRING` in `GeneralName`.
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The subject alternative names: DNS names as written, IP addresses in their usual text.
    pub names: Vec<String>,
    /// Whether the issuer is the subject (a self-signed certificate names itself).
    pub self_issued: bool,
    /// The subject's DER, as written.
    pub subject: Vec<u8>,
}

impl Leaf {
    /// Reads the validity and subject alternative names of a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let mut outer = Reader(der);
        let mut cert = Reader(outer.expect(SEQUENCE, "Certificate")?);
        let mut tbs = Reader(cert.expect(SEQUENCE, "TBSCertificate")?);
        if tbs.peek() == Some(VERSION_TAG) {
            tbs.any()?;
        }
        tbs.expect(INTEGER, "serialNumber")?;
        tbs.expect(SEQUENCE, "signature")?;
        let issuer = tbs.expect(SEQUENCE, "issuer")?;
        let mut validity = Reader(tbs.expect(SEQUENCE, "validity")?);
        let not_before = time(&mut validity, "notBefore")?;
        let not_after = time(&mut validity, "notAfter")?;
        let subject = tbs.expect(SEQUENCE, "subject")?;
        tbs.expect(SEQUENCE, "subjectPublicKeyInfo")?;
        let mut names = Vec::new();
        while let Some(tag) = tbs.peek() {
            let (_, contents) = tbs.any()?;
            if tag == EXTENSIONS_TAG {
                names = alt_names(contents)?;
            }
        }
        Ok(Self {
            not_before,
            not_after,
            names,
            self_issued: issuer == subject,
            subject: subject.to_vec(),
        })
    }

    /// Whether the subject's text holds `text` (a common name, say), as bytes.
    pub fn subject_holds(&self, text: &str) -> bool {
        self.subject.windows(text.len()).any(|w| w == text.as_bytes())
    }

    /// Time left at `now`; zero once expired.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or(Duration::ZERO)
    }

    /// Whether the certificate covers `name` (a DNS name or an IP address, case-insensitive;
    /// a `*.` wildcard covers exactly one label, as RFC 6125 §6.4.3 allows).
    pub fn covers(&self, name: &str) -> bool {
        let name = name.trim_start_matches('[').trim_end_matches(']');
        self.names.iter().any(|n| {
            n.eq_ignore_ascii_case(name)
                || n.strip_prefix("*.").is_some_and(|suffix| {
                    name.split_once('.').is_some_and(|(label, rest)| {
                        !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
                    })
                })
        })
    }
}

/// The whole `subjectPublicKeyInfo` of a DER certificate, tag and length included: what curl's
/// `--pinnedpubkey` hashes, and `upstream.pin_sha256` with it.
pub fn subject_public_key_info(der: &[u8]) -> Result<&[u8], String> {
    let mut outer = Reader(der);
    let mut cert = Reader(outer.expect(SEQUENCE, "Certificate")?);
    let mut tbs = Reader(cert.expect(SEQUENCE, "TBSCertificate")?);
    if tbs.peek() == Some(VERSION_TAG) {
        tbs.any()?;
    }
    for what in ["serialNumber", "signature", "issuer", "validity", "subject"] {
        tbs.any().map_err(|e| format!("{what}: {e}"))?;
    }
    let before = tbs.0;
    tbs.expect(SEQUENCE, "subjectPublicKeyInfo")?;
    Ok(&before[..before.len() - tbs.0.len()])
}

/// The names in the subjectAltName extension, from the contents of `[3] Extensions`.
fn alt_names(explicit: &[u8]) -> Result<Vec<String>, String> {
    let mut outer = Reader(explicit);
    let mut extensions = Reader(outer.expect(SEQUENCE, "extensions")?);
    let mut names = Vec::new();
    while extensions.peek().is_some() {
        let mut extension = Reader(extensions.expect(SEQUENCE, "extension")?);
        let oid = extension.expect(OID, "extnID")?;
        if extension.peek() == Some(BOOLEAN) {
            extension.any()?;
        }
        let value = extension.expect(OCTET_STRING, "extnValue")?;
        if oid != SUBJECT_ALT_NAME {
            continue;
        }
        let mut outer = Reader(value);
        let mut general_names = Reader(outer.expect(SEQUENCE, "GeneralNames")?);
        while general_names.peek().is_some() {
            let (tag, contents) = general_names.any()?;
            match tag {
                DNS_NAME => names.push(String::from_utf8_lossy(contents).into_owned()),
                IP_ADDRESS => {
                    if let Ok(v4) = <[u8; 4]>::try_from(contents) {
                        names.push(Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(contents) {
                        names.push(Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(names)
}

/// A `Time` (RFC 5280 §4.1.2.5): UTCTime `YYMMDDHHMMSSZ` (years 1950-2049) or GeneralizedTime
/// `YYYYMMDDHHMMSSZ`.
fn time(reader: &mut Reader<'_>, what: &str) -> Result<SystemTime, String> {
    let (tag, contents) = reader.any()?;
    let text = std::str::from_utf8(contents).map_err(|_| format!("{what} is not text"))?;
    let digits = text.strip_suffix('Z').ok_or(format!("{what} `{text}` is not in UTC"))?;
    let number = |range: std::ops::Range<usize>| -> Result<i64, String> {
        digits
            .get(range)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .ok_or(format!("{what} `{text}` is not a time"))
    };
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = number(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (number(0..4)?, 4),
        _ => return Err(format!("{what} `{text}` is not a UTCTime or GeneralizedTime")),
    };
    let field = |i: usize| number(rest + 2 * i..rest + 2 * i + 2);
    let (month, day, hour, minute, second) =
        (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(format!("{what} `{text}` is not a time"));
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Ok(match u64::try_from(secs) {
        Ok(after) => SystemTime::UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// DER elements one after another; every read is checked against the bytes left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next element's tag and contents.
    fn any(&mut self) -> Result<(u8, &'a [u8]), String> {
        let truncated = || "the certificate is truncated".to_owned();
        let (&tag, rest) = self.0.split_first().ok_or_else(truncated)?;
        let (&first, rest) = rest.split_first().ok_or_else(truncated)?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return Err("the certificate has a length DER does not allow".to_owned());
            }
            let len = rest[..count].iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
            (len, &rest[count..])
        };
        if rest.len() < len {
            return Err(truncated());
        }
        let (contents, rest) = rest.split_at(len);
        self.0 = rest;
        Ok((tag, contents))
    }

    /// The contents of the next element, which must have `tag`.
    fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        match self.any()? {
            (found, contents) if found == tag => Ok(contents),
            (found, _) => Err(format!("{what}: expected DER tag {tag:#04x}, found {found:#04x}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(names: &[&str], from: SystemTime, until: SystemTime) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.not_before = time::OffsetDateTime::from(from);
        params.not_after = time::OffsetDateTime::from(until);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn validity_and_names_round_trip_through_rcgen() {
        // 2024-02-29T12:34:56Z and 2051-01-01T00:00:00Z (a GeneralizedTime after 2049).
        let (from, until) = (at(1_709_210_096), at(2_556_144_000));
        let der = make(&["localhost", "*.example.com", "127.0.0.1", "::1"], from, until);
        let leaf = Leaf::parse(&der).unwrap();
        assert_eq!((leaf.not_before, leaf.not_after), (from, until));
        assert_eq!(leaf.names, ["localhost", "*.example.com", "127.0.0.1", "::1"]);
        assert!(leaf.covers("LOCALHOST") && leaf.covers("a.example.com") && leaf.covers("[::1]"));
        assert!(!leaf.covers("example.com") && !leaf.covers("a.b.example.com"));
        assert_eq!(leaf.remaining(until + Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(leaf.remaining(until - Duration::from_secs(5)), Duration::from_secs(5));
    }

    #[test]
    fn dates_before_1970_and_in_utctime_range_read_back() {
        let (from, until) = (SystemTime::UNIX_EPOCH - Duration::from_secs(86_400 * 365), at(0));
        let leaf = Leaf::parse(&make(&["a"], from, until)).unwrap();
        assert_eq!((leaf.not_before, leaf.not_after), (from, until));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn the_public_key_info_is_the_one_rcgen_made() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["a".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_public_key_info(cert.der()).unwrap(),
            rcgen::PublicKeyData::subject_public_key_info(&key)
        );
        let der = cert.der().to_vec();
        for cut in 0..der.len() {
            let _ = subject_public_key_info(&der[..cut]);
        }
    }

    #[test]
    fn damaged_certificates_are_errors_never_panics() {
        let der = make(&["a"], at(0), at(1_000_000));
        for cut in 0..der.len() {
            assert!(Leaf::parse(&der[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            Leaf::parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).unwrap_err(),
            "the certificate is truncated"
        );
        assert!(Leaf::parse(b"not der at all").is_err());
    }
}
