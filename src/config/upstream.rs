//! The `upstream` section of the configuration: where `aims-api snapshot pull` fetches from.
//!
//! Read by [`crate::config`] like every other section (unknown fields are errors, each mistake
//! is reported with its file, line and column); a module of its own because the section is the
//! largest and only `snapshot pull` ([`crate::pull`]) reads it. Paths are resolved against the
//! config file's folder by the caller.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::{ActivationCode, BoundedU64 as Bounded};

/// The checked `upstream` section.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The base of the V1 methods, `https://…/AIMentorStudioAPI/rest/v1`, without a trailing `/`.
    pub url: String,
    /// The file holding the upstream's API key (owner root or this uid, mode 0600 or tighter).
    /// `$CREDENTIALS_DIRECTORY/upstream-key` is used instead when systemd sets it.
    pub api_key_file: PathBuf,
    /// `None`: the appliance's own activation code.
    pub activation_code: Option<ActivationCode>,
    /// PEM certificates to trust instead of the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 of the upstream's public key: that server and no other, whatever its
    /// certificate's chain, names or dates (never together with `ca_file`).
    pub pin_sha256: Option<PinSha256>,
    /// Connect (with the TLS handshake) and each request, body included.
    pub request_timeout: Duration,
    /// The whole pull, retries and waits included.
    pub pull_timeout: Duration,
    /// Tries of one request before the pull gives up on it (1 = no retry).
    pub max_attempts: u32,
    /// The longest wait between two tries, and the most a `Retry-After` is honoured for.
    pub max_backoff: Duration,
}

/// The SHA-256 of a server's `subjectPublicKeyInfo`, as curl's `--pinnedpubkey` takes it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PinSha256(pub [u8; 32]);

impl PinSha256 {
    /// `sha256//` and 44 characters of base64 (curl's form; the prefix may be left out), or 64
    /// hex digits (optionally in colon-separated pairs, as `openssl dgst -c` prints them).
    pub fn parse(text: &str) -> Result<Self, String> {
        use base64::Engine as _;
        let text = text.trim();
        let bare = text.strip_prefix("sha256//").unwrap_or(text);
        let hex: String = bare.chars().filter(|c| *c != ':').collect();
        let bytes = if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
                .collect::<Result<_, _>>()
                .ok()
        } else {
            base64::engine::general_purpose::STANDARD.decode(bare).ok()
        };
        match bytes.and_then(|b: Vec<u8>| <[u8; 32]>::try_from(b).ok()) {
            Some(digest) => Ok(Self(digest)),
            None => Err(format!(
                "upstream.pin_sha256 `{text}` is not a SHA-256: give it as curl's \
                 --pinnedpubkey does, sha256// and the base64 of the public key's digest \
                 (openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der \
                 | openssl dgst -sha256 -binary | base64), or as 64 hex digits"
            )),
        }
    }

    /// The digest of a DER `subjectPublicKeyInfo`.
    pub fn of_public_key(spki: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }
}

impl fmt::Display for PinSha256 {
    /// curl's form, `sha256//BASE64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine as _;
        write!(f, "sha256//{}", base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PinSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinSha256({self})")
    }
}

impl<'de> Deserialize<'de> for PinSha256 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(de::Error::custom)
    }
}

/// The section as written in the file. Wrapped so that the check of two fields at once still
/// fails inside deserialization, where `ron` knows the position.
#[derive(Deserialize)]
#[serde(try_from = "UpstreamFields")]
pub struct UpstreamFile(UpstreamFields);

impl TryFrom<UpstreamFields> for UpstreamFile {
    type Error = &'static str;

    fn try_from(fields: UpstreamFields) -> Result<Self, Self::Error> {
        if fields.ca_file.is_some() && fields.pin_sha256.is_some() {
            return Err("upstream.ca_file and upstream.pin_sha256 exclude each other: a pin \
                        accepts exactly the server with that key, whatever its chain; set one \
                        and make the other None");
        }
        Ok(Self(fields))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "upstream")]
pub struct UpstreamFields {
    url: BaseUrl,
    api_key_file: PathBuf,
    #[serde(default)]
    activation_code: Option<ActivationCode>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    pin_sha256: Option<PinSha256>,
    #[serde(default = "Bounded::thirty")]
    timeout_secs: Bounded<1, 3600>,
    #[serde(default = "Bounded::fifteen_minutes")]
    pull_timeout_secs: Bounded<1, 86_400>,
    #[serde(default = "Bounded::five")]
    max_attempts: Bounded<1, 100>,
    #[serde(default = "Bounded::sixty")]
    max_backoff_secs: Bounded<1, 3600>,
}

impl UpstreamFile {
    /// The settings, with relative paths resolved by `resolve`.
    pub fn resolve(self, resolve: impl Fn(&Path) -> PathBuf) -> Upstream {
        let Self(fields) = self;
        fields.resolve(resolve)
    }
}

impl UpstreamFields {
    fn resolve(self, resolve: impl Fn(&Path) -> PathBuf) -> Upstream {
        Upstream {
            url: self.url.0,
            api_key_file: resolve(&self.api_key_file),
            activation_code: self.activation_code,
            ca_file: self.ca_file.as_deref().map(&resolve),
            pin_sha256: self.pin_sha256,
            request_timeout: Duration::from_secs(self.timeout_secs.0),
            pull_timeout: Duration::from_secs(self.pull_timeout_secs.0),
            max_attempts: self.max_attempts.0 as u32,
            max_backoff: Duration::from_secs(self.max_backoff_secs.0),
        }
    }
}

/// An `https://` URL with a host, no query, fragment or credentials. Plain HTTP is refused:
/// the upstream key would cross the network in clear.
struct BaseUrl(String);

impl<'de> Deserialize<'de> for BaseUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let Some(rest) = text.strip_prefix("https://") else {
            return Err(de::Error::custom(format!(
                "upstream.url `{text}` must start with https:// (the upstream key must not \
                 cross the network in clear)"
            )));
        };
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty()
            || host.contains('@')
            || rest.contains(['?', '#', ' '])
            || !text.is_ascii()
            || text.len() > 2048
        {
            return Err(de::Error::custom(format!(
                "upstream.url `{text}` is not a plain https URL: write it like \
                 https://aimentorstudio.outsystems.com/AIMentorStudioAPI/rest/v1"
            )));
        }
        Ok(Self(text.trim_end_matches('/').to_owned()))
    }
}

// The section's defaults, on the number type every section of the file uses.
impl<const MIN: u64, const MAX: u64> Bounded<MIN, MAX> {
    fn five() -> Self {
        Self(5)
    }
    fn thirty() -> Self {
        Self(30)
    }
    fn sixty() -> Self {
        Self(60)
    }
    fn fifteen_minutes() -> Self {
        Self(900)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_reads_in_curls_form_bare_base64_and_hex() {
        let digest: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let pin = PinSha256(digest);
        let curl = pin.to_string();
        assert_eq!(curl, "sha256//AAcOFRwjKjE4P0ZNVFtiaXB3foWMk5qhqK+2vcTL0tk=");
        assert_eq!(PinSha256::parse(&curl), Ok(pin));
        assert_eq!(PinSha256::parse(curl.trim_start_matches("sha256//")), Ok(pin));
        let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(PinSha256::parse(&hex), Ok(pin));
        let colons: Vec<String> = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(PinSha256::parse(&colons.join(":")), Ok(pin));
        for bad in [
            "",
            "sha256//",
            "sha256//AAAA",
            &hex[..62],
            "sha1//AAcOFRwjKjE4P0ZNVFtiaXB3foWMk5qhqK+2vcTL0tk=",
        ] {
            let error = PinSha256::parse(bad).unwrap_err();
            assert!(error.contains("is not a SHA-256"), "{bad}: {error}");
        }
    }
}
