//! The API key: how it is made, how it looks, and what of it may be kept.
//!
//! A key is `aims_`, 43 characters of base62 drawn from the operating system's CSPRNG (256 bits),
//! and a 6-character base62 checksum, 54 characters in all. Like GitHub's tokens, the fixed prefix
//! lets secret scanners recognise a leaked key and the checksum lets anyone tell a typo from a
//! wrong key offline, without asking the server. Every character is safe in headers and shells.
//!
//! The key itself lives only in an [`ApiKey`], which wipes its memory on drop and never prints.
//! What the appliance keeps is its SHA-256 ([`KeyHash`]) and a [`Fingerprint`] (the prefix and
//! the last four characters) that names it in status output and logs.

use std::fmt;

use ring::digest;
use ring::rand::SecureRandom;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// What every key starts with.
pub const PREFIX: &str = "aims_";
/// Random characters after the prefix: 43 base62 characters carry 256.03 bits.
const RANDOM_LEN: usize = 43;
/// Checksum characters at the end: 6 base62 characters hold a 32-bit value.
const CHECKSUM_LEN: usize = 6;
/// The length of every well-formed key.
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// An API key in clear. Exists only between generation and the one response that shows it.
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    /// Draws a new key from `rng` (in production `ring::rand::SystemRandom`).
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, KeyError> {
        let mut text = Zeroizing::new(String::with_capacity(KEY_LEN));
        text.push_str(PREFIX);
        let mut pool = Zeroizing::new([0u8; 64]);
        while text.len() < PREFIX.len() + RANDOM_LEN {
            rng.fill(pool.as_mut()).map_err(|_| KeyError::Random)?;
            // Rejection sampling keeps every character uniform: 248 is the largest multiple of
            // 62 that fits in a byte, so bytes at or above it would favour the first symbols.
            for &byte in pool.iter().filter(|&&b| b < 248) {
                if text.len() == PREFIX.len() + RANDOM_LEN {
                    break;
                }
                text.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
        let checksum = checksum_chars(text.as_bytes());
        // The checksum is drawn from ALPHABET, plain ASCII: never anything but UTF-8.
        text.extend(checksum.iter().map(|&b| char::from(b)));
        Ok(Self(text))
    }

    /// The key in clear, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the key: all that the store and the gate ever hold.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.0.as_bytes())
    }

    /// The fingerprint that names this key in status output and logs.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Why a key could not be made.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyError {
    /// The operating system's random number generator failed.
    Random,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Random => f.write_str("the operating system's random number generator failed"),
        }
    }
}

/// A leaf: ring's error says nothing more than that the generator failed.
impl std::error::Error for KeyError {}

/// Why a presented key is not even a candidate. Checked before any hashing, so garbage costs
/// nothing and a typo is told apart from a wrong key (in the log only: clients all see 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    Length,
    Prefix,
    Character,
    Checksum,
}

impl FormatError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Length => "key has the wrong length",
            Self::Prefix => "key does not start with aims_",
            Self::Character => "key has a character outside base62",
            Self::Checksum => "key checksum does not match (a typo or a truncated key)",
        }
    }
}

/// Checks that `presented` is shaped like a key this appliance issues, checksum included.
pub fn check_format(presented: &[u8]) -> Result<(), FormatError> {
    check_shape(presented)?;
    check_checksum(presented)
}

/// Checks the length, prefix and alphabet of `presented`: everything but the checksum, which
/// costs a SHA-256. A key that then matches a key's hash needs no checksum check (every key
/// this appliance issued has a valid one), so the gate checks it only for keys that match none.
pub fn check_shape(presented: &[u8]) -> Result<(), FormatError> {
    if presented.len() != KEY_LEN {
        return Err(FormatError::Length);
    }
    if !presented.starts_with(PREFIX.as_bytes()) {
        return Err(FormatError::Prefix);
    }
    if !presented[PREFIX.len()..].iter().all(u8::is_ascii_alphanumeric) {
        return Err(FormatError::Character);
    }
    Ok(())
}

/// Checks the checksum of a key of the right shape ([`check_shape`]).
pub fn check_checksum(presented: &[u8]) -> Result<(), FormatError> {
    let Some((body, checksum)) = presented.split_at_checked(KEY_LEN - CHECKSUM_LEN) else {
        return Err(FormatError::Length);
    };
    // The checksum is public information about the key (it is in every copy of the key), so
    // comparing it in variable time leaks nothing that the key's holder does not already show.
    if checksum_chars(body) != checksum {
        return Err(FormatError::Checksum);
    }
    Ok(())
}

/// The first 32 bits of SHA-256 over prefix and random part, as 6 base62 digits.
fn checksum_chars(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = digest::digest(&digest::SHA256, body);
    let bytes = digest.as_ref();
    let mut value = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// The SHA-256 of a key. Never logged: its `Debug` is redacted and it has no `Display`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(key: &[u8]) -> Self {
        let digest = digest::digest(&digest::SHA256, key);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// Whether `presented` hashes to this value, compared in constant time.
    ///
    /// ring deprecated its own slice comparison ("no promises regarding side channels"), so the
    /// comparison is `subtle`'s, which rustls already depends on.
    pub fn matches(&self, presented: &[u8]) -> bool {
        Self::of(presented).ct_eq(self)
    }

    /// Constant-time equality of two hashes.
    pub fn ct_eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }

    /// Lower-case hex, for the store file.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses the store's lower-case hex form.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        for (slot, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *slot = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash([redacted])")
    }
}

/// The prefix and the last four characters of a key: `aims_...Ab3x`. Enough to tell keys apart
/// in logs and status, far too little to guess one (the last four are mostly checksum).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    fn of(key: &str) -> Self {
        let tail = key.get(key.len().saturating_sub(4)..).unwrap_or_default();
        Self(format!("{PREFIX}...{tail}"))
    }

    /// The fingerprint of a key a client presented, if it is well-formed (checksum included):
    /// such a key can only be one this kind of appliance issued, and its fingerprint is safe
    /// to log. Anything else is not named at all.
    pub fn of_presented(presented: &[u8]) -> Option<Self> {
        check_format(presented).ok()?;
        std::str::from_utf8(presented).ok().map(Self::of)
    }

    /// Accepts a fingerprint read back from the store if it has the shape this module writes.
    pub fn parse(text: &str) -> Option<Self> {
        let tail = text.strip_prefix(PREFIX)?.strip_prefix("...")?;
        (tail.len() == 4 && tail.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn key() -> ApiKey {
        ApiKey::generate(&SystemRandom::new()).unwrap()
    }

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let (a, b) = (key(), key());
        assert_eq!(a.expose().len(), KEY_LEN);
        assert!(a.expose().starts_with(PREFIX));
        assert_eq!(check_format(a.expose().as_bytes()), Ok(()));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn a_one_character_typo_is_caught_by_the_checksum() {
        let k = key();
        let mut bytes = k.expose().as_bytes().to_vec();
        let i = PREFIX.len() + 7;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        assert_eq!(check_format(&bytes), Err(FormatError::Checksum));
    }

    #[test]
    fn malformed_keys_name_what_is_wrong() {
        let k = key();
        let good = k.expose().as_bytes();
        assert_eq!(check_format(&good[..KEY_LEN - 1]), Err(FormatError::Length));
        let mut prefix = good.to_vec();
        prefix[0] = b'b';
        assert_eq!(check_format(&prefix), Err(FormatError::Prefix));
        let mut char = good.to_vec();
        char[10] = b'-';
        assert_eq!(check_format(&char), Err(FormatError::Character));
    }

    #[test]
    fn hash_matches_only_its_key() {
        let (a, b) = (key(), key());
        assert!(a.hash().matches(a.expose().as_bytes()));
        assert!(!a.hash().matches(b.expose().as_bytes()));
        assert_eq!(KeyHash::from_hex(&a.hash().to_hex()), Some(a.hash()));
        assert_eq!(KeyHash::from_hex("00"), None);
        assert_eq!(KeyHash::from_hex(&"G".repeat(64)), None);
    }

    #[test]
    fn fingerprint_is_prefix_and_last_four() {
        let k = key();
        let fp = k.fingerprint();
        assert_eq!(fp.as_str(), format!("aims_...{}", &k.expose()[KEY_LEN - 4..]));
        assert_eq!(Fingerprint::parse(fp.as_str()), Some(fp));
        assert_eq!(Fingerprint::parse("aims_...ab"), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let k = key();
        assert_eq!(format!("{k:?}"), "ApiKey([redacted])");
        assert_eq!(format!("{:?}", k.hash()), "KeyHash([redacted])");
    }
}
