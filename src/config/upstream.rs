//! The `upstream` section of the configuration: where `aims-api snapshot pull` fetches from.
//!
//! Read by [`crate::config`] like every other section (unknown fields are errors, each mistake
//! is reported with its file, line and column); a module of its own because the section is the
//! largest and only `snapshot pull` ([`crate::pull`]) reads it. Paths are resolved against the
//! config file's folder by the caller.

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
    /// Connect (with the TLS handshake) and each request, body included.
    pub request_timeout: Duration,
    /// The whole pull, retries and waits included.
    pub pull_timeout: Duration,
    /// Tries of one request before the pull gives up on it (1 = no retry).
    pub max_attempts: u32,
    /// The longest wait between two tries, and the most a `Retry-After` is honoured for.
    pub max_backoff: Duration,
}

/// The section as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "upstream")]
pub struct UpstreamFile {
    url: BaseUrl,
    api_key_file: PathBuf,
    #[serde(default)]
    activation_code: Option<ActivationCode>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
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
        Upstream {
            url: self.url.0,
            api_key_file: resolve(&self.api_key_file),
            activation_code: self.activation_code,
            ca_file: self.ca_file.as_deref().map(&resolve),
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
