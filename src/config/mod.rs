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
#[derive(Debug, Clone, PartialEq)]
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
    /// Sustained requests per second each agency may make (token bucket
    /// refill rate); above it requests get 429 with `Retry-After`.
    pub rate_limit_per_agency_rps: f64,
    /// Requests an agency may make at once above the sustained rate
    /// (token bucket size).
    pub rate_limit_burst: u32,
    /// Largest request head (request line and headers) accepted, in bytes:
    /// HTTP/1.1 read buffer and HTTP/2 header list size.
    pub max_header_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// Exports running at once, in all (above it: 503 `exports_busy`).
    pub export_max_running: usize,
    /// Exports one agency may run at once (above it: 429 `too_many_exports`).
    pub export_max_running_per_agency: usize,
    /// Oldest TLS version accepted (`"1.3"`, or `"1.2"` when configured).
    pub tls_min_version: TlsMinVersion,
    /// Serve plain HTTP without TLS, the client naming its certificate in
    /// a header: for local testing only, refused unless `listen` is a
    /// loopback address.
    pub insecure_plain_http: bool,
    /// How many old table versions to keep, and for how long (`pull` and
    /// `store gc` apply it).
    pub store_retention: crate::store::Retention,
    /// How often a running broker looks for new table versions, in seconds.
    pub store_poll_interval_secs: u64,
    /// Signature algorithm of seals and signed tree heads: Ed25519 (default) or SM2 with
    /// SM3 (GB/T 32918.2, default user ID `1234567812345678`). Each has its own key file.
    pub seal_algorithm: crate::seal::Alg,
    /// One signature per audit group commit over the batch's Merkle root, each response
    /// carrying its inclusion path (`batch`, default), or one signature per response
    /// (`response`).
    pub seal_mode: crate::seal::SealMode,
}

/// Oldest TLS version the listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMinVersion {
    Tls12,
    Tls13,
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
            rate_limit_per_agency_rps: default_rate_limit_per_agency_rps(),
            rate_limit_burst: default_rate_limit_burst(),
            max_header_bytes: default_max_header_bytes(),
            http2_max_concurrent_streams: default_http2_max_concurrent_streams(),
            export_max_running: default_export_max_running(),
            export_max_running_per_agency: default_export_max_running_per_agency(),
            tls_min_version: TlsMinVersion::Tls13,
            insecure_plain_http: false,
            store_retention: crate::store::Retention::default(),
            store_poll_interval_secs: default_store_poll_interval_secs(),
            seal_algorithm: crate::seal::Alg::Ed25519,
            seal_mode: crate::seal::SealMode::Batch,
        }
    }
}

/// 2,000 requests per second per agency: case work by hundreds of officers
/// at once is far below it; bulk reads go through exports.
pub fn default_rate_limit_per_agency_rps() -> f64 {
    2_000.0
}

/// 4,000 requests: two seconds at the default rate.
pub fn default_rate_limit_burst() -> u32 {
    4_000
}

/// 16 KiB: a request head with a client certificate name, an officer token
/// and the usual headers is well under 2 KiB.
pub fn default_max_header_bytes() -> usize {
    16 * 1024
}

/// 100 streams per HTTP/2 connection (RFC 9113 recommends at least 100).
pub fn default_http2_max_concurrent_streams() -> u32 {
    100
}

/// 4 exports: each builds its batches on up to four threads, so more at
/// once only share the same cores while holding more memory.
pub fn default_export_max_running() -> usize {
    4
}

/// 2 exports: one agency cannot take every export slot.
pub fn default_export_max_running_per_agency() -> usize {
    2
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
    pub fn corrections_file(&self) -> PathBuf {
        self.data_dir.join("corrections.jsonl")
    }
    /// The private seal key of the configured algorithm (PKCS#8 PEM, 0600); the public key
    /// is published beside it with the extension `.pub`.
    pub fn seal_key_file(&self) -> PathBuf {
        let name = match self.seal_algorithm {
            crate::seal::Alg::Ed25519 => "seal-key.pk8",
            crate::seal::Alg::Sm2Sm3 => "seal-key-sm2.pk8",
        };
        self.data_dir.join("seal").join(name)
    }
}

/// The broker's settings file as written: every key optional (the default
/// applies), unknown keys refused.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    listen: Option<toml::Spanned<String>>,
    max_body_bytes: Option<toml::Spanned<i64>>,
    request_timeout_secs: Option<toml::Spanned<i64>>,
    tree_head_interval_secs: Option<toml::Spanned<i64>>,
    audit_segment_max_bytes: Option<toml::Spanned<i64>>,
    rate_limit_per_agency_rps: Option<toml::Spanned<f64>>,
    rate_limit_burst: Option<toml::Spanned<i64>>,
    max_header_bytes: Option<toml::Spanned<i64>>,
    http2_max_concurrent_streams: Option<toml::Spanned<i64>>,
    export_max_running: Option<toml::Spanned<i64>>,
    export_max_running_per_agency: Option<toml::Spanned<i64>>,
    tls_min_version: Option<toml::Spanned<String>>,
    insecure_plain_http: Option<toml::Spanned<bool>>,
    store_keep_versions: Option<toml::Spanned<i64>>,
    store_keep_days: Option<toml::Spanned<i64>>,
    store_poll_interval_secs: Option<toml::Spanned<i64>>,
    seal_algorithm: Option<toml::Spanned<String>>,
    seal_mode: Option<toml::Spanned<String>>,
}

impl Settings {
    /// Settings from a TOML file (see `broker.example.toml`): each key
    /// present replaces its default in `base`. Every problem is reported
    /// as `file:line: key: reason`.
    pub fn load(path: &Path, base: Settings) -> Result<Settings, ConfigErrors> {
        let src = Source::read(path)?;
        let raw: RawSettings = src.parse_toml()?;
        let mut s = base;
        let mut errors = Vec::new();
        let mut int = |v: &Option<toml::Spanned<i64>>,
                       key: &str,
                       range: std::ops::RangeInclusive<i64>,
                       unit: &str|
         -> Option<i64> {
            let v = v.as_ref()?;
            if range.contains(v.get_ref()) {
                Some(*v.get_ref())
            } else {
                errors.push(src.error_at(
                    v.span(),
                    key,
                    format!(
                        "must be from {} to {} {unit}, found {}",
                        range.start(),
                        range.end(),
                        v.get_ref()
                    ),
                ));
                None
            }
        };
        if let Some(n) = int(&raw.max_body_bytes, "max_body_bytes", 1..=1 << 30, "bytes") {
            s.max_body_bytes = n as usize;
        }
        if let Some(n) = int(
            &raw.request_timeout_secs,
            "request_timeout_secs",
            1..=3600,
            "seconds",
        ) {
            s.request_timeout_secs = n as u64;
        }
        if let Some(n) = int(
            &raw.tree_head_interval_secs,
            "tree_head_interval_secs",
            1..=86_400,
            "seconds",
        ) {
            s.tree_head_interval_secs = n as u64;
        }
        if let Some(n) = int(
            &raw.audit_segment_max_bytes,
            "audit_segment_max_bytes",
            4096..=1 << 40,
            "bytes",
        ) {
            s.audit_segment_max_bytes = n as u64;
        }
        if let Some(n) = int(
            &raw.rate_limit_burst,
            "rate_limit_burst",
            1..=10_000_000,
            "requests",
        ) {
            s.rate_limit_burst = n as u32;
        }
        // hyper's HTTP/1.1 read buffer cannot be smaller than 8 KiB.
        if let Some(n) = int(
            &raw.max_header_bytes,
            "max_header_bytes",
            8192..=1 << 20,
            "bytes",
        ) {
            s.max_header_bytes = n as usize;
        }
        if let Some(n) = int(
            &raw.http2_max_concurrent_streams,
            "http2_max_concurrent_streams",
            1..=10_000,
            "streams",
        ) {
            s.http2_max_concurrent_streams = n as u32;
        }
        if let Some(n) = int(
            &raw.export_max_running,
            "export_max_running",
            1..=1000,
            "exports",
        ) {
            s.export_max_running = n as usize;
        }
        if let Some(n) = int(
            &raw.export_max_running_per_agency,
            "export_max_running_per_agency",
            1..=1000,
            "exports",
        ) {
            s.export_max_running_per_agency = n as usize;
        }
        if let Some(n) = int(
            &raw.store_keep_versions,
            "store_keep_versions",
            1..=1_000_000,
            "versions",
        ) {
            s.store_retention.keep_versions = n as usize;
        }
        if let Some(n) = int(&raw.store_keep_days, "store_keep_days", 0..=36_500, "days") {
            s.store_retention.keep_days = n as u32;
        }
        if let Some(n) = int(
            &raw.store_poll_interval_secs,
            "store_poll_interval_secs",
            1..=3600,
            "seconds",
        ) {
            s.store_poll_interval_secs = n as u64;
        }
        if let Some(v) = &raw.rate_limit_per_agency_rps {
            let rps = *v.get_ref();
            if rps.is_finite() && rps > 0.0 && rps <= 10_000_000.0 {
                s.rate_limit_per_agency_rps = rps;
            } else {
                errors.push(src.error_at(
                    v.span(),
                    "rate_limit_per_agency_rps",
                    format!(
                        "must be more than 0 and at most 10000000 requests per second, found {rps}"
                    ),
                ));
            }
        }
        if let Some(v) = &raw.tls_min_version {
            match v.get_ref().as_str() {
                "1.3" => s.tls_min_version = TlsMinVersion::Tls13,
                "1.2" => s.tls_min_version = TlsMinVersion::Tls12,
                other => errors.push(src.error_at(
                    v.span(),
                    "tls_min_version",
                    format!("must be \"1.3\" or \"1.2\", found {other:?}"),
                )),
            }
        }
        if let Some(v) = &raw.seal_algorithm {
            match crate::seal::Alg::from_name(v.get_ref()) {
                Some(alg) => s.seal_algorithm = alg,
                None => errors.push(src.error_at(
                    v.span(),
                    "seal_algorithm",
                    format!(
                        "must be \"ed25519\" or \"sm2-sm3\", found {:?}",
                        v.get_ref()
                    ),
                )),
            }
        }
        if let Some(v) = &raw.seal_mode {
            match v.get_ref().as_str() {
                "batch" => s.seal_mode = crate::seal::SealMode::Batch,
                "response" => s.seal_mode = crate::seal::SealMode::Response,
                other => errors.push(src.error_at(
                    v.span(),
                    "seal_mode",
                    format!("must be \"batch\" or \"response\", found {other:?}"),
                )),
            }
        }
        if let Some(v) = &raw.listen {
            match v.get_ref().parse::<SocketAddr>() {
                Ok(a) => s.listen = a,
                Err(_) => errors.push(src.error_at(
                    v.span(),
                    "listen",
                    format!(
                        "must be an address and port such as \"127.0.0.1:8443\", found {:?}",
                        v.get_ref()
                    ),
                )),
            }
        }
        if let Some(v) = &raw.insecure_plain_http {
            s.insecure_plain_http = *v.get_ref();
            if s.insecure_plain_http && !s.listen.ip().is_loopback() {
                errors.push(src.error_at(
                    v.span(),
                    "insecure_plain_http",
                    format!(
                        "plain http is for local testing only and needs a loopback `listen` address, found {}",
                        s.listen
                    ),
                ));
            }
        }
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Whether these settings may be served: plain HTTP only on loopback.
    pub fn check_listen(&self) -> Result<(), String> {
        if self.insecure_plain_http && !self.listen.ip().is_loopback() {
            return Err(format!(
                "insecure_plain_http: plain http is for local testing only and needs a loopback listen address, found {}",
                self.listen
            ));
        }
        Ok(())
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

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/settings")
            .join(name)
    }

    #[test]
    fn the_good_settings_file_sets_every_key() {
        let s = Settings::load(&fixture("good.toml"), Settings::default()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(s.max_body_bytes, 32768);
        assert_eq!(s.request_timeout_secs, 20);
        assert_eq!(s.tree_head_interval_secs, 5);
        assert_eq!(s.audit_segment_max_bytes, 1 << 20);
        assert_eq!(s.rate_limit_per_agency_rps, 500.0);
        assert_eq!(s.rate_limit_burst, 1000);
        assert_eq!(s.max_header_bytes, 32768);
        assert_eq!(s.http2_max_concurrent_streams, 50);
        assert_eq!(s.export_max_running, 8);
        assert_eq!(s.export_max_running_per_agency, 3);
        assert_eq!(s.tls_min_version, TlsMinVersion::Tls12);
        assert!(s.insecure_plain_http);
        assert_eq!(s.seal_algorithm, crate::seal::Alg::Sm2Sm3);
        assert_eq!(s.seal_mode, crate::seal::SealMode::Response);
        assert!(s.seal_key_file().ends_with("seal/seal-key-sm2.pk8"));
        // An empty file keeps every default.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.toml"), "").unwrap();
        let d = Settings::load(&dir.path().join("empty.toml"), Settings::default()).unwrap();
        assert_eq!(d.tls_min_version, TlsMinVersion::Tls13);
        assert!(!d.insecure_plain_http);
        assert_eq!(d.rate_limit_burst, default_rate_limit_burst());
    }

    #[test]
    fn wrong_settings_files_name_file_line_and_key() {
        // (fixture, the whole expected message after the directory)
        let cases = [
            (
                "wrong-unknown-key.toml",
                "wrong-unknown-key.toml:2: unknown field `rate_limit_rps`, expected one of `listen`, `max_body_bytes`, `request_timeout_secs`, `tree_head_interval_secs`, `audit_segment_max_bytes`, `rate_limit_per_agency_rps`, `rate_limit_burst`, `max_header_bytes`, `http2_max_concurrent_streams`, `export_max_running`, `export_max_running_per_agency`, `tls_min_version`, `insecure_plain_http`, `store_keep_versions`, `store_keep_days`, `store_poll_interval_secs`, `seal_algorithm`, `seal_mode`",
            ),
            (
                "wrong-rate-limit-per-agency-rps.toml",
                "wrong-rate-limit-per-agency-rps.toml:2: rate_limit_per_agency_rps: must be more than 0 and at most 10000000 requests per second, found 0",
            ),
            (
                "wrong-rate-limit-burst.toml",
                "wrong-rate-limit-burst.toml:3: rate_limit_burst: must be from 1 to 10000000 requests, found 0",
            ),
            (
                "wrong-max-header-bytes.toml",
                "wrong-max-header-bytes.toml:1: max_header_bytes: must be from 8192 to 1048576 bytes, found 1024",
            ),
            (
                "wrong-http2-max-concurrent-streams.toml",
                "wrong-http2-max-concurrent-streams.toml:2: http2_max_concurrent_streams: must be from 1 to 10000 streams, found 0",
            ),
            (
                "wrong-export-max-running.toml",
                "wrong-export-max-running.toml:2: export_max_running_per_agency: must be from 1 to 1000 exports, found 0",
            ),
            (
                "wrong-tls-min-version.toml",
                "wrong-tls-min-version.toml:1: tls_min_version: must be \"1.3\" or \"1.2\", found \"1.1\"",
            ),
            (
                "wrong-insecure-plain-http.toml",
                "wrong-insecure-plain-http.toml:3: insecure_plain_http: plain http is for local testing only and needs a loopback `listen` address, found 0.0.0.0:8080",
            ),
            (
                "wrong-store-keep-versions.toml",
                "wrong-store-keep-versions.toml:2: store_keep_versions: must be from 1 to 1000000 versions, found 0",
            ),
            (
                "wrong-listen.toml",
                "wrong-listen.toml:1: listen: must be an address and port such as \"127.0.0.1:8443\", found \"localhost\"",
            ),
            (
                "wrong-seal-algorithm.toml",
                "wrong-seal-algorithm.toml:2: seal_algorithm: must be \"ed25519\" or \"sm2-sm3\", found \"sm2\"",
            ),
            (
                "wrong-seal-mode.toml",
                "wrong-seal-mode.toml:1: seal_mode: must be \"batch\" or \"response\", found \"per-request\"",
            ),
            (
                "wrong-type.toml",
                "wrong-type.toml:1: invalid type: string \"many\", expected i64",
            ),
        ];
        let dir = fixture("").display().to_string();
        let mismatches: Vec<String> = cases
            .iter()
            .filter_map(|(file, want)| {
                let got = Settings::load(&fixture(file), Settings::default())
                    .unwrap_err()
                    .to_string();
                (got.strip_prefix(&dir) != Some(*want)).then(|| format!("{file}: got {got}"))
            })
            .collect();
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }

    #[test]
    fn the_example_file_states_every_default() {
        // Start from settings where every key differs from its default.
        let changed = Settings::load(&fixture("good.toml"), Settings::default()).unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("broker.example.toml");
        assert_eq!(
            Settings::load(&example, changed).unwrap(),
            Settings::default()
        );
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        let s = Settings {
            insecure_plain_http: true,
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..Settings::default()
        };
        assert!(s.check_listen().unwrap_err().contains("loopback"));
        let s = Settings {
            insecure_plain_http: true,
            ..Settings::default()
        };
        assert!(s.check_listen().is_ok());
        let ipv6 = Settings {
            insecure_plain_http: true,
            listen: "[::1]:8080".parse().unwrap(),
            ..Settings::default()
        };
        assert!(ipv6.check_listen().is_ok());
    }
}
