//! Config files → validated structs: the shared error type naming file, key
//! and line, TOML loading with `deny_unknown_fields`, and the broker's own
//! settings (data directory, listen address, limits) with embedded defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A config file that could not be read or is invalid. `key` is a dotted path
/// into the file (`dataset[2].field[0].share`), `line` the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub line: Option<usize>,
    pub reason: String,
}

impl ConfigError {
    pub fn new(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            key: key.into(),
            line: None,
            reason: reason.into(),
        }
    }

    pub fn at_line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Several config errors at once, so that a steward sees every problem of a
/// policy directory in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// A config file's text, kept so that validation errors can name lines.
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, "", format!("cannot read file: {e}")))?;
        Ok(Source {
            path: path.to_path_buf(),
            text,
        })
    }

    /// The 1-based line of a byte offset into the file.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// An error at a span of this file.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::new(&self.path, key, reason).at_line(Some(self.line_of(span.start)))
    }

    /// Parse the file as TOML into `T`; syntax errors and unknown or missing
    /// keys come back with their line.
    pub fn parse_toml<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            let line = e.span().map(|s| self.line_of(s.start));
            let reason = e.message().trim().trim_end_matches('.').to_string();
            ConfigError::new(&self.path, "", reason).at_line(line)
        })
    }
}

/// The broker's own settings. Every field has an embedded default so that
/// `sharebroker demo` runs from a clean clone with no config file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Catalogue, agencies, service items and casbin policy files.
    pub policies_dir: PathBuf,
    /// One TOML file per agency source.
    pub connectors_dir: PathBuf,
    /// Generated sources, store, audit log, cases, PKI, seal key.
    pub data_dir: PathBuf,
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// How long one request may take end to end, in seconds.
    pub request_timeout_secs: u64,
    /// How often a signed tree head of the audit log is published, in seconds.
    pub tree_head_interval_secs: u64,
    /// Size at which the audit log starts a new segment file, in bytes.
    pub audit_segment_max_bytes: u64,
    /// How many old table versions to keep, and for how long (`pull` and
    /// `store gc` apply it).
    pub store_retention: crate::store::Retention,
    /// How often a running broker looks for new table versions, in seconds.
    pub store_poll_interval_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policies_dir: PathBuf::from("policies"),
            connectors_dir: PathBuf::from("connectors"),
            data_dir: PathBuf::from("data"),
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            request_timeout_secs: default_request_timeout_secs(),
            tree_head_interval_secs: default_tree_head_interval_secs(),
            audit_segment_max_bytes: crate::audit::DEFAULT_SEGMENT_MAX_BYTES,
            store_retention: crate::store::Retention::default(),
            store_poll_interval_secs: default_store_poll_interval_secs(),
        }
    }
}

/// `127.0.0.1:8443`: local only until an operator says otherwise.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

/// 64 KiB: the largest legitimate request (a case with many applicants) is
/// a few hundred bytes.
pub fn default_max_body_bytes() -> usize {
    64 * 1024
}

/// 30 seconds.
pub fn default_request_timeout_secs() -> u64 {
    30
}

/// 5 seconds: a pull is served within this long of its commit.
pub fn default_store_poll_interval_secs() -> u64 {
    5
}

/// 10 seconds: an auditor's view of the log is never more than this stale.
pub fn default_tree_head_interval_secs() -> u64 {
    10
}

impl Settings {
    pub fn sources_dir(&self) -> PathBuf {
        self.data_dir.join("sources")
    }
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
    pub fn audit_dir(&self) -> PathBuf {
        self.data_dir.join("audit")
    }
    pub fn pki_dir(&self) -> PathBuf {
        self.data_dir.join("pki")
    }
    pub fn cases_file(&self) -> PathBuf {
        self.data_dir.join("cases.jsonl")
    }
    pub fn applications_file(&self) -> PathBuf {
        self.data_dir.join("applications.jsonl")
    }
    pub fn seal_key_file(&self) -> PathBuf {
        self.data_dir.join("seal").join("seal-key.pk8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_line() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let src = Source {
            path: PathBuf::from("x.toml"),
            text: "\n\nb = 1\n".into(),
        };
        let e = src.parse_toml::<T>().unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("unknown field `b`"), "{}", e.reason);
        assert!(e.to_string().starts_with("x.toml:3: "), "{e}");
    }
}
