//! The key's record, without the key: how one appliance hands its key state to another.
//!
//! Two appliances behind one load balancer must admit the same key. `GET /key/record` answers
//! the state as a JSON document ([`export`]): a format name and version, the digest of the
//! activation code it belongs with, the store's generation, the current key's SHA-256,
//! fingerprint, generation, times, the grace key if one runs, and the retired keys. It never
//! holds a key: only what `key.ron` holds, in the same forms and names
//! ([`crate::keystore::RecordBody`]). `PUT /key/record` on the other appliance installs it
//! ([`decide`] says whether it may), as durably as any key change, through
//! [`super::KeyManager::install_record`].
//!
//! Anti-rollback: a record older than the one installed (a lower generation) is refused, and so
//! is a different record of the same generation (two appliances changed apart); `"force": true`
//! in the request installs it anyway, and the audit line says so. The same record twice is a
//! no-op. A record made for another activation code is refused: the pair must answer the same
//! clients. The activation code is named by a SHA-256 under a domain of its own, so the digest
//! in a record is not the gate's.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::ActivationCode;
use crate::key::KeyHash;
use crate::keystore::{
    GraceKeyFile, KeyRecord, MAX_RETIRED, RecordBody, RetiredKeyFile, StoredKeyFile,
};

/// The `format` field of every record.
pub const FORMAT: &str = "aims-api key record";
/// The `version` field this build writes and reads.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    format: String,
    version: u32,
    activation_code_sha256: String,
    generation: u64,
    key: Option<StoredKeyFile>,
    #[serde(default)]
    previous: Option<GraceKeyFile>,
    #[serde(default)]
    retired: Vec<RetiredKeyFile>,
    /// Only in a `PUT`: install even an older or diverged record. Never exported.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    force: bool,
}

/// A record offered for installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    pub record: KeyRecord,
    pub force: bool,
    code_digest: String,
}

/// What installing a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installation {
    /// A newer record, installed.
    Installed,
    /// The record installed already: nothing written.
    Unchanged,
    /// An older or diverged record, installed because the request said `"force": true`.
    Forced,
}

impl Installation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Installed => "installed",
            Self::Unchanged => "unchanged",
            Self::Forced => "forced",
        }
    }
}

/// Why a record cannot be installed.
#[derive(Debug)]
pub enum RecordError {
    /// Not a record: JSON that does not parse, or a field that is not what it must be.
    Json { path: String, source: serde_json::Error },
    /// Not a record of this format or version.
    Malformed(String),
    /// A record whose fields disagree with each other.
    Inconsistent(&'static str),
    /// Made for another activation code.
    CodeMismatch,
    /// Older than the record installed.
    Rollback { installed: u64, offered: u64 },
    /// Of the same generation as the record installed, but different: both appliances changed.
    Diverged { generation: u64 },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json { path, source } => {
                write!(f, "not a key record ({FORMAT}, version {VERSION}): {path}: {source}")
            }
            Self::Malformed(why) => {
                write!(f, "not a key record ({FORMAT}, version {VERSION}): {why}")
            }
            Self::Inconsistent(why) => write!(f, "the key record is inconsistent: {why}"),
            Self::CodeMismatch => f.write_str(
                "the key record was made for another activation code: both appliances of a pair \
                 must have the same activation_code in their config.ron",
            ),
            Self::Rollback { installed, offered } => write!(
                f,
                "the key record is older (generation {offered}) than the one installed \
                 (generation {installed}): export the record again from the appliance where the \
                 key last changed, or send \"force\": true to roll back on purpose"
            ),
            Self::Diverged { generation } => write!(
                f,
                "the key record differs from the one installed at the same generation \
                 ({generation}): the key was changed on both appliances; choose one, and send its \
                 record with \"force\": true"
            ),
        }
    }
}

impl std::error::Error for RecordError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The digest of `code` that a record carries (SHA-256 of a domain label and the code).
pub fn code_digest(code: &ActivationCode) -> String {
    let mut bytes = b"aims-api key record activation code\0".to_vec();
    bytes.extend_from_slice(code.as_str().as_bytes());
    KeyHash::of(&bytes).to_hex()
}

/// `record` as the JSON document `GET /key/record` answers.
pub fn export(record: &KeyRecord, code_digest: &str) -> String {
    let RecordBody { generation, key, previous, retired } = RecordBody::of(record);
    let file = RecordFile {
        format: FORMAT.to_owned(),
        version: VERSION,
        activation_code_sha256: code_digest.to_owned(),
        generation,
        key,
        previous,
        retired,
        force: false,
    };
    // Strings, integers and options only: serializing them cannot fail.
    let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
    text.push('\n');
    text
}

/// Reads a record offered in a `PUT /key/record` body.
pub fn parse(bytes: &[u8]) -> Result<Offered, RecordError> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let file: RecordFile = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        RecordError::Json { path, source: e.into_inner() }
    })?;
    if file.format != FORMAT {
        return Err(RecordError::Malformed(format!("format is `{}`, not `{FORMAT}`", file.format)));
    }
    if file.version != VERSION {
        return Err(RecordError::Malformed(format!(
            "version {} is not supported (this build reads version {VERSION})",
            file.version
        )));
    }
    if KeyHash::from_hex(&file.activation_code_sha256).is_none() {
        return Err(RecordError::Malformed(
            "activation_code_sha256 must be 64 lower-case hex digits".to_owned(),
        ));
    }
    let body = RecordBody {
        generation: file.generation,
        key: file.key,
        previous: file.previous,
        retired: file.retired,
    };
    let record = body.into_record();
    check_consistent(&record)?;
    Ok(Offered { record, force: file.force, code_digest: file.activation_code_sha256 })
}

fn check_consistent(record: &KeyRecord) -> Result<(), RecordError> {
    let key_generation = record.key.as_ref().map(|k| k.generation);
    if key_generation.is_some_and(|g| g > record.generation) {
        return Err(RecordError::Inconsistent("key.generation is above the record's generation"));
    }
    if let Some(grace) = &record.previous
        && key_generation.is_none_or(|g| grace.generation >= g)
    {
        return Err(RecordError::Inconsistent("previous must be older than the current key"));
    }
    if record.retired.len() > MAX_RETIRED {
        return Err(RecordError::Inconsistent("more retired keys than a store keeps (16)"));
    }
    Ok(())
}

/// Whether `offered` may replace `installed` on an appliance whose activation code has the
/// digest `code_digest`, and how.
pub fn decide(
    code_digest: &str,
    installed: &KeyRecord,
    offered: &Offered,
) -> Result<Installation, RecordError> {
    if offered.code_digest != code_digest {
        return Err(RecordError::CodeMismatch);
    }
    if offered.record == *installed {
        return Ok(Installation::Unchanged);
    }
    let (theirs, ours) = (offered.record.generation, installed.generation);
    match theirs.cmp(&ours) {
        std::cmp::Ordering::Greater => Ok(Installation::Installed),
        _ if offered.force => Ok(Installation::Forced),
        std::cmp::Ordering::Less => Err(RecordError::Rollback { installed: ours, offered: theirs }),
        std::cmp::Ordering::Equal => Err(RecordError::Diverged { generation: ours }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::SystemTime;

    use ring::rand::SystemRandom;

    use super::*;
    use crate::config::Config;
    use crate::key::ApiKey;
    use crate::keystore::Terms;

    fn code(text: &str) -> ActivationCode {
        let config = format!(
            r#"(activation_code: "{text}", state_dir: "s", api: (listen: "127.0.0.1:1"), admin: (listen: "127.0.0.1:2"))"#
        );
        Config::parse(Path::new("c.ron"), &config).unwrap().activation_code
    }

    #[test]
    fn a_record_round_trips_without_the_key_and_rolls_forward_only() {
        let rng = SystemRandom::new();
        let (a, b) = (ApiKey::generate(&rng).unwrap(), ApiKey::generate(&rng).unwrap());
        let now = crate::keystore::whole_millis(SystemTime::now());
        let grace = Terms { grace: std::time::Duration::from_secs(30), expires_at: None };
        let first = KeyRecord::default().generated(&a, now, Terms::default()).unwrap();
        let second = first.replaced(&b, now, grace).unwrap();
        let digest = code_digest(&code("CODE"));
        let text = export(&second, &digest);
        assert!(!text.contains(a.expose()) && !text.contains(b.expose()));
        assert!(text.contains(&b.hash().to_hex()) && text.contains("\"valid_until\""));
        let offered = parse(text.as_bytes()).unwrap();
        assert_eq!(offered.record, second);
        assert!(!offered.force);
        assert_eq!(decide(&digest, &first, &offered).unwrap(), Installation::Installed);
        assert_eq!(decide(&digest, &second, &offered).unwrap(), Installation::Unchanged);
        // Older: refused unless forced.
        let older = parse(export(&first, &digest).as_bytes()).unwrap();
        assert!(matches!(
            decide(&digest, &second, &older),
            Err(RecordError::Rollback { installed: 2, offered: 1 })
        ));
        let forced = text_with_force(&export(&first, &digest));
        let forced = parse(forced.as_bytes()).unwrap();
        assert_eq!(decide(&digest, &second, &forced).unwrap(), Installation::Forced);
        // Same generation, different record: the pair diverged.
        let other = first.replaced(&a, now, Terms::default()).unwrap();
        let other = parse(export(&other, &digest).as_bytes()).unwrap();
        assert!(matches!(
            decide(&digest, &second, &other),
            Err(RecordError::Diverged { generation: 2 })
        ));
        // Another activation code.
        let theirs = code_digest(&code("OTHER"));
        assert!(matches!(decide(&theirs, &first, &offered), Err(RecordError::CodeMismatch)));
    }

    fn text_with_force(text: &str) -> String {
        text.replacen('{', "{\"force\": true,", 1)
    }

    #[test]
    fn a_bad_record_names_what_is_wrong() {
        let digest = code_digest(&code("CODE"));
        let good = export(&KeyRecord::default(), &digest);
        let cases = [
            ("{", "not a key record"),
            (&good.replace(FORMAT, "other"), "format is `other`"),
            (&good.replace("\"version\": 1", "\"version\": 7"), "version 7 is not supported"),
            (
                &good.replace("\"generation\": 0", "\"generation\": 0, \"key_itself\": 1"),
                "key_itself",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
