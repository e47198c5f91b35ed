//! `http_json`: a paginated JSON web API, pulled as a snapshot page by page
//! (page number, offset or cursor) with a hyper 1 HTTP/1.1 client on a small
//! current-thread runtime owned by each `pull` / `check`. Every request is
//! spaced by the rate limit and retried with exponential backoff on 5xx, 429
//! (honouring `Retry-After`), connect errors and timeouts; any other non-2xx
//! status fails at once. Each page is read whole, up to `max_page_bytes`,
//! and its records — the array at the `records` JSON pointer — become rows:
//! strings as they are, numbers as JSON prints them, booleans `true` /
//! `false`, null or missing as empty. A record that is not an object, has an
//! object or array where a value belongs, or lacks its record id or subject
//! goes to quarantine with its 1-based number across pages.
//!
//! Header values may come from the environment (`{ env = "VAR" }`), read at
//! each pull; they are marked sensitive and never appear in errors or logs,
//! and neither does a URL's query string.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::sql::source_key_line;
use super::{
    BatchBuilder, Checkpoint, Connector, ConnectorError, ConnectorSpec, PullStats, Pulled, Rejected,
};
use crate::config::{ConfigError, Source};

/// At most this much of a rejected record's JSON is kept for the steward.
const MAX_RAW_BYTES: usize = 4096;
/// The longest wait between attempts, whatever the backoff has grown to.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The `[source]` section of an `http_json` connector file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct HttpJsonSource {
    /// `http://…` or `https://…` (https needs `ca_file`). Pagination
    /// parameters are appended to its query string.
    pub url: String,
    /// JSON pointer to the array of records in each page (`/data/items`;
    /// `""` when the page itself is the array).
    pub records: String,
    /// How to ask for the next page; default: one page only.
    #[serde(default)]
    pub pagination: Pagination,
    /// Request headers: a literal value, or `{ env = "VAR" }` read from the
    /// environment at each pull. Credentials (`Authorization`, cookies, API
    /// keys, tokens) must come from the environment.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderSource>,
    /// Seconds for one request, connecting and reading the body included;
    /// default 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Attempts per page before the pull fails; default 5.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// At most this many requests per second, retries included; default 5.
    #[serde(default = "default_rate_limit_per_sec")]
    pub rate_limit_per_sec: f64,
    /// Wait before the first retry, doubled for each further one and capped
    /// at 10 s; default 200.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Largest page body read; default 64 MiB.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: usize,
    /// PEM file of the certificate authorities trusted for an https `url`
    /// (relative: against the data directory). Required for https: this
    /// build carries no public root store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// How pages are asked for, tagged by `type`.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// The first response is the whole source.
    #[default]
    None,
    /// `?{param}={n}&{size_param}={size}` for n = start, start + 1, …; a
    /// page with fewer than `size` records is the last.
    Page {
        #[serde(default = "default_page_param")]
        param: String,
        #[serde(default = "default_size_param")]
        size_param: String,
        #[serde(default = "default_page_size")]
        size: u64,
        #[serde(default = "default_page_start")]
        start: u64,
    },
    /// `?{param}={offset}&{limit_param}={limit}` from offset 0; a page with
    /// fewer than `limit` records is the last.
    Offset {
        #[serde(default = "default_offset_param")]
        param: String,
        #[serde(default = "default_limit_param")]
        limit_param: String,
        #[serde(default = "default_page_size")]
        limit: u64,
    },
    /// The first page without a cursor, then `?{param}={cursor}` with the
    /// value at JSON pointer `next` of the previous page; absent, null or
    /// empty there means that page was the last.
    Cursor {
        #[serde(default = "default_cursor_param")]
        param: String,
        next: String,
    },
}

/// A header value in a connector file.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum HeaderSource {
    Literal(String),
    Env(EnvRef),
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct EnvRef {
    /// The environment variable holding the value.
    pub env: String,
}

fn default_timeout_secs() -> u64 {
    30
}
fn default_max_attempts() -> u32 {
    5
}
fn default_rate_limit_per_sec() -> f64 {
    5.0
}
fn default_backoff_initial_ms() -> u64 {
    200
}
fn default_max_page_bytes() -> usize {
    64 << 20
}
fn default_page_param() -> String {
    "page".to_string()
}
fn default_size_param() -> String {
    "size".to_string()
}
fn default_offset_param() -> String {
    "offset".to_string()
}
fn default_limit_param() -> String {
    "limit".to_string()
}
fn default_cursor_param() -> String {
    "cursor".to_string()
}
fn default_page_size() -> u64 {
    100
}
fn default_page_start() -> u64 {
    1
}

/// Header names whose values are credentials: they may not be literals.
fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "api-key",
        "apikey",
        "token",
        "secret",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// A URL parameter name that needs no escaping.
fn is_plain_param(p: &str) -> bool {
    !p.is_empty()
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

fn is_pointer(p: &str) -> bool {
    p.is_empty() || p.starts_with('/')
}

impl HttpJsonSource {
    /// Structural checks of a connector file's `[source]` section.
    pub(crate) fn validate(&self, src: &Source, errors: &mut Vec<ConfigError>) {
        let err = |key: &str, reason: String| {
            let top = key.split('.').next().unwrap_or(key);
            ConfigError::new(&src.path, format!("source.{key}"), reason)
                .at_line(source_key_line(src, top))
        };
        match self.url.parse::<Uri>() {
            Err(_) => errors.push(err("url", "not a valid URL".to_string())),
            Ok(uri) => {
                match uri.scheme_str() {
                    Some("http") => {}
                    Some("https") if self.ca_file.is_none() => errors.push(err(
                        "url",
                        "an https `url` needs `ca_file` (PEM certificate authorities to trust): this build has no public root store".to_string(),
                    )),
                    Some("https") => {}
                    _ => errors.push(err(
                        "url",
                        "the URL must start with `http://` or `https://`".to_string(),
                    )),
                }
                match uri.authority() {
                    None => errors.push(err("url", "the URL has no host".to_string())),
                    Some(a) if a.as_str().contains('@') => errors.push(err(
                        "url",
                        "the URL carries credentials; send them in a header from `{ env = \"VAR\" }`".to_string(),
                    )),
                    Some(_) => {}
                }
                let query = uri.query().unwrap_or("");
                for p in self.pagination.params() {
                    if !is_plain_param(p) {
                        errors.push(err(
                            "pagination",
                            format!(
                                "parameter name `{p}` must be letters, digits, `-`, `_`, `.` or `~`"
                            ),
                        ));
                    } else if query.split('&').any(|kv| kv.split('=').next() == Some(p)) {
                        errors.push(err(
                            "pagination",
                            format!("the URL already has a `{p}` parameter, which pagination sets"),
                        ));
                    }
                }
            }
        }
        if !is_pointer(&self.records) {
            errors.push(err(
                "records",
                format!(
                    "`{}` is not a JSON pointer (`/data/items`, or `\"\"` for the whole page)",
                    self.records
                ),
            ));
        }
        match &self.pagination {
            Pagination::Page { size: 0, .. } => {
                errors.push(err("pagination.size", "must be at least 1".to_string()))
            }
            Pagination::Offset { limit: 0, .. } => {
                errors.push(err("pagination.limit", "must be at least 1".to_string()))
            }
            Pagination::Cursor { next, .. } if next.is_empty() || !is_pointer(next) => {
                errors.push(err(
                    "pagination.next",
                    format!("`{next}` is not a JSON pointer to the next cursor (`/next_cursor`)"),
                ))
            }
            _ => {}
        }
        for (name, value) in &self.headers {
            let key = format!("headers.{name}");
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(err(&key, "not a valid header name".to_string()));
                continue;
            }
            match value {
                HeaderSource::Literal(_) if is_credential_header(name) => errors.push(err(
                    &key,
                    "a credential never sits in a connector file: give `{ env = \"VAR\" }`"
                        .to_string(),
                )),
                HeaderSource::Literal(v) if HeaderValue::from_str(v).is_err() => {
                    errors.push(err(&key, "not a valid header value".to_string()))
                }
                HeaderSource::Env(EnvRef { env }) if env.trim().is_empty() => {
                    errors.push(err(&key, "the variable name is empty".to_string()))
                }
                _ => {}
            }
        }
        if self.timeout_secs == 0 {
            errors.push(err("timeout_secs", "must be at least 1".to_string()));
        }
        if self.max_attempts == 0 {
            errors.push(err("max_attempts", "must be at least 1".to_string()));
        }
        if !(self.rate_limit_per_sec.is_finite() && self.rate_limit_per_sec > 0.0) {
            errors.push(err(
                "rate_limit_per_sec",
                "must be a positive number".to_string(),
            ));
        }
        if self.max_page_bytes == 0 {
            errors.push(err("max_page_bytes", "must be at least 1".to_string()));
        }
    }
}

impl Pagination {
    /// The URL parameters this pagination sets.
    fn params(&self) -> Vec<&str> {
        match self {
            Pagination::None => vec![],
            Pagination::Page {
                param, size_param, ..
            } => vec![param, size_param],
            Pagination::Offset {
                param, limit_param, ..
            } => vec![param, limit_param],
            Pagination::Cursor { param, .. } => vec![param],
        }
    }
}

/// Percent-encode a query value (everything but RFC 3986 unreserved bytes).
fn encode_query_value(v: &str, out: &mut String) {
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The URL without its query string (which may carry a key), for errors.
fn redacted(uri: &Uri) -> String {
    let mut s = String::new();
    if let Some(scheme) = uri.scheme_str() {
        let _ = write!(s, "{scheme}://");
    }
    if let Some(a) = uri.authority() {
        s.push_str(a.as_str());
    }
    s.push_str(uri.path());
    s
}

/// Render one JSON value as the text of a column; `Err` for a value that
/// has none (object or array).
fn render(v: Option<&Value>) -> Result<String, &'static str> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(Value::Object(_)) => Err("an object"),
        Some(Value::Array(_)) => Err("an array"),
    }
}

/// A record's value for a column: a plain key, or a JSON pointer when the
/// name contains `/` (`owner/name` and `/owner/name` alike).
fn lookup<'a>(record: &'a Value, column: &str) -> Option<&'a Value> {
    if column.contains('/') {
        if column.starts_with('/') {
            record.pointer(column)
        } else {
            record.pointer(&format!("/{column}"))
        }
    } else {
        record.get(column)
    }
}

/// The record's JSON, cut to [`MAX_RAW_BYTES`] at a character boundary.
fn raw_json(record: &Value) -> String {
    let mut s = record.to_string();
    if s.len() > MAX_RAW_BYTES {
        let mut cut = MAX_RAW_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// One record → its values in source-column order, or why it is rejected.
/// `columns[0]` is the record id and `columns[2]` the subject.
fn record_values(record: &Value, columns: &[&str]) -> Result<Vec<String>, String> {
    if !record.is_object() {
        return Err("the record is not a JSON object".to_string());
    }
    let mut values = Vec::with_capacity(columns.len());
    for col in columns {
        match render(lookup(record, col)) {
            Ok(v) => values.push(v),
            Err(what) => return Err(format!("`{col}` is {what}, not a value")),
        }
    }
    for (i, what) in [(0, "record id"), (2, "subject")] {
        if values[i].is_empty() {
            return Err(format!("the {what} `{}` is missing or empty", columns[i]));
        }
    }
    Ok(values)
}

/// Spaces requests at least `1 / rate` seconds apart.
struct RateLimit {
    interval: Duration,
    next: Option<Instant>,
}

impl RateLimit {
    fn new(per_sec: f64) -> Self {
        RateLimit {
            interval: Duration::from_secs_f64(1.0 / per_sec),
            next: None,
        }
    }

    async fn wait(&mut self) {
        if let Some(at) = self.next {
            tokio::time::sleep_until(at).await;
        }
        self.next = Some(Instant::now() + self.interval);
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why one attempt failed.
enum Failure {
    /// Worth another attempt, after at least `retry_after` if given.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help.
    Fatal(String),
}

/// The parts of a URL needed to reach it.
struct Target {
    https: bool,
    host: String,
    port: u16,
    authority: String,
}

impl Target {
    fn of(uri: &Uri) -> Option<Target> {
        let https = uri.scheme_str()? == "https";
        let authority = uri.authority()?;
        Some(Target {
            https,
            host: authority.host().trim_matches(['[', ']']).to_string(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_string(),
        })
    }
}

/// One pull's HTTP client: a kept-alive connection, re-made after any
/// failure, the resolved headers, the rate limit and the retry policy.
struct Client<'a> {
    c: &'a HttpJsonConnector,
    target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
    headers: Vec<(HeaderName, HeaderValue)>,
    sender: Option<SendRequest<Empty<Bytes>>>,
    rate: RateLimit,
}

impl<'a> Client<'a> {
    fn new(c: &'a HttpJsonConnector) -> Result<Client<'a>, ConnectorError> {
        let uri = c.base_uri()?;
        let target = Target::of(&uri).ok_or_else(|| c.unsupported("the URL has no host"))?;
        let tls = if target.https {
            Some(c.tls_connector()?)
        } else {
            None
        };
        Ok(Client {
            c,
            target,
            tls,
            headers: c.resolve_headers()?,
            sender: None,
            rate: RateLimit::new(c.source.rate_limit_per_sec),
        })
    }

    async fn connect(&mut self) -> Result<SendRequest<Empty<Bytes>>, Failure> {
        let retry = |reason: String| Failure::Retry {
            reason,
            retry_after: None,
        };
        let tcp = tokio::net::TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|e| retry(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(self.target.host.clone())
                    .map_err(|_| Failure::Fatal("the URL's host is not a valid TLS name".into()))?;
                Box::new(tls.connect(name, tcp).await.map_err(|e| {
                    let reason = format!("TLS handshake failed: {e}");
                    // A certificate the CA file does not vouch for will not
                    // start to on a retry; a dropped handshake might.
                    let rustls_error = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
                    match rustls_error {
                        Some(rustls::Error::InvalidCertificate(_)) => Failure::Fatal(reason),
                        _ => retry(reason),
                    }
                })?)
            }
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| retry(format!("HTTP handshake failed: {e}")))?;
        // The connection task ends with the connection or the runtime.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// One GET, with no retry: the body on 2xx.
    async fn attempt(&mut self, uri: &Uri) -> Result<Bytes, Failure> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        let retry = |reason: String| Failure::Retry {
            reason,
            retry_after: None,
        };
        sender
            .ready()
            .await
            .map_err(|e| retry(format!("connection lost: {e}")))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::get(path)
            .header(header::HOST, &self.target.authority)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("sharebroker/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| Failure::Fatal(format!("cannot build the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| retry(format!("request failed: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
            // The body is not read; the connection is not reused.
            let reason = format!("HTTP status {status}");
            return if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                Err(Failure::Retry {
                    reason,
                    retry_after,
                })
            } else {
                Err(Failure::Fatal(reason))
            };
        }
        let limit = self.c.source.max_page_bytes;
        let body = Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Failure::Fatal(format!(
                        "the page is larger than max_page_bytes ({limit} bytes)"
                    ))
                } else {
                    retry(format!("body read failed: {e}"))
                }
            })?
            .to_bytes();
        self.sender = Some(sender);
        Ok(body)
    }

    /// GET a page, retrying as configured: its body on success.
    async fn fetch(&mut self, page: u64, uri: &Uri) -> Result<Bytes, ConnectorError> {
        let source = &self.c.source;
        let timeout = Duration::from_secs(source.timeout_secs);
        let mut backoff = Duration::from_millis(source.backoff_initial_ms);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.rate.wait().await;
            let outcome = match tokio::time::timeout(timeout, self.attempt(uri)).await {
                Ok(o) => o,
                Err(_) => {
                    self.sender = None;
                    Err(Failure::Retry {
                        reason: format!("timed out after {} s", source.timeout_secs),
                        retry_after: None,
                    })
                }
            };
            let (reason, retry_after) = match outcome {
                Ok(body) => return Ok(body),
                Err(Failure::Fatal(reason)) => return Err(self.c.http_error(page, uri, reason)),
                Err(Failure::Retry {
                    reason,
                    retry_after,
                }) => (reason, retry_after),
            };
            if attempt >= source.max_attempts {
                return Err(self.c.http_error(
                    page,
                    uri,
                    format!("gave up after {attempt} attempts: {reason}"),
                ));
            }
            let delay = retry_after.unwrap_or(backoff);
            tracing::warn!(
                source = %self.c.spec.name,
                page,
                attempt,
                delay_ms = delay.as_millis() as u64,
                %reason,
                "request failed; retrying"
            );
            tokio::time::sleep(delay).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Where the next page is, after the one just read.
enum Next {
    Page(u64),
    Offset(u64),
    Cursor(String),
    Done,
}

pub(crate) struct HttpJsonConnector {
    spec: ConnectorSpec,
    source: HttpJsonSource,
    data_dir: PathBuf,
}

impl HttpJsonConnector {
    pub(crate) fn new(spec: ConnectorSpec, source: HttpJsonSource, data_dir: &Path) -> Self {
        HttpJsonConnector {
            spec,
            source,
            data_dir: data_dir.to_path_buf(),
        }
    }

    fn unsupported(&self, reason: &str) -> ConnectorError {
        ConnectorError::Unsupported {
            source_name: self.spec.name.clone(),
            reason: reason.to_string(),
        }
    }

    fn http_error(&self, page: u64, uri: &Uri, reason: String) -> ConnectorError {
        ConnectorError::Http {
            source_name: self.spec.name.clone(),
            page,
            url: redacted(uri),
            reason,
        }
    }

    fn base_uri(&self) -> Result<Uri, ConnectorError> {
        self.source
            .url
            .parse::<Uri>()
            .map_err(|_| self.unsupported("`url` is not a valid URL"))
    }

    fn runtime(&self) -> Result<tokio::runtime::Runtime, ConnectorError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ConnectorError::Connect {
                source_name: self.spec.name.clone(),
                reason: format!("cannot start the HTTP client runtime: {e}"),
            })
    }

    fn tls_connector(&self) -> Result<tokio_rustls::TlsConnector, ConnectorError> {
        let cred = |reason: String| ConnectorError::Credentials {
            source_name: self.spec.name.clone(),
            reason,
        };
        let Some(ca) = &self.source.ca_file else {
            return Err(cred("an https URL needs `ca_file`".to_string()));
        };
        let path = self.data_dir.join(ca);
        let bad = |e: &dyn std::fmt::Display| {
            cred(format!("cannot read CA file {}: {e}", path.display()))
        };
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for c in rustls_pki_types::CertificateDer::pem_file_iter(&path).map_err(|e| bad(&e))? {
            roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        if roots.is_empty() {
            return Err(bad(&"no certificate in it"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// The configured headers with values from the environment read now,
    /// marked sensitive. An error names the variable, never a value.
    fn resolve_headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, ConnectorError> {
        let cred = |reason: String| ConnectorError::Credentials {
            source_name: self.spec.name.clone(),
            reason,
        };
        let mut out = Vec::new();
        for (name, value) in &self.source.headers {
            let hname = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| cred(format!("`{name}` is not a valid header name")))?;
            let mut hvalue = match value {
                HeaderSource::Literal(v) => HeaderValue::from_str(v)
                    .map_err(|_| cred(format!("header `{name}` has an invalid value")))?,
                HeaderSource::Env(EnvRef { env }) => {
                    let v = std::env::var(env).map_err(|_| {
                        cred(format!(
                            "environment variable `{env}` (header `{name}`) is not set or not valid unicode"
                        ))
                    })?;
                    HeaderValue::from_str(&v).map_err(|_| {
                        cred(format!(
                            "environment variable `{env}` (header `{name}`) does not hold a valid header value"
                        ))
                    })?
                }
            };
            hvalue.set_sensitive(true);
            out.push((hname, hvalue));
        }
        Ok(out)
    }

    /// The URL of a page.
    fn page_uri(&self, at: &Next) -> Result<Uri, ConnectorError> {
        let mut url = self.source.url.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        let mut add = |url: &mut String, k: &str, v: &str| {
            url.push(sep);
            sep = '&';
            url.push_str(k);
            url.push('=');
            encode_query_value(v, url);
        };
        match (&self.source.pagination, at) {
            (
                Pagination::Page {
                    param,
                    size_param,
                    size,
                    ..
                },
                Next::Page(n),
            ) => {
                add(&mut url, param, &n.to_string());
                add(&mut url, size_param, &size.to_string());
            }
            (
                Pagination::Offset {
                    param,
                    limit_param,
                    limit,
                },
                Next::Offset(o),
            ) => {
                add(&mut url, param, &o.to_string());
                add(&mut url, limit_param, &limit.to_string());
            }
            (Pagination::Cursor { param, .. }, Next::Cursor(c)) => add(&mut url, param, c),
            _ => {}
        }
        url.parse::<Uri>()
            .map_err(|_| self.unsupported("`url` is not a valid URL"))
    }

    fn first(&self) -> Next {
        match &self.source.pagination {
            Pagination::None => Next::Done,
            Pagination::Page { start, .. } => Next::Page(*start),
            Pagination::Offset { .. } => Next::Offset(0),
            // The first page carries no cursor.
            Pagination::Cursor { .. } => Next::Done,
        }
    }

    /// Parse a page and take its records array out of it.
    fn records(
        &self,
        page: u64,
        uri: &Uri,
        body: &[u8],
    ) -> Result<(Value, Vec<Value>), ConnectorError> {
        let mut doc: Value = serde_json::from_slice(body)
            .map_err(|e| self.http_error(page, uri, format!("the body is not JSON: {e}")))?;
        let found = match doc.pointer_mut(&self.source.records).map(Value::take) {
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(self.http_error(
                    page,
                    uri,
                    format!(
                        "`records` (`{}`) is {}, not an array",
                        self.source.records,
                        kind_of(&other)
                    ),
                ));
            }
            None => {
                return Err(self.http_error(
                    page,
                    uri,
                    format!(
                        "the page has no `records` array at `{}`",
                        self.source.records
                    ),
                ));
            }
        };
        Ok((doc, found))
    }

    /// Where the page after this one is, given how many records it had and
    /// (for cursors) the rest of its document.
    fn next(
        &self,
        page: u64,
        uri: &Uri,
        at: &Next,
        n: u64,
        doc: &Value,
    ) -> Result<Next, ConnectorError> {
        Ok(match (&self.source.pagination, at) {
            (Pagination::Page { size, .. }, Next::Page(p)) if n >= *size => Next::Page(p + 1),
            (Pagination::Offset { limit, .. }, Next::Offset(o)) if n >= *limit => {
                Next::Offset(o + n)
            }
            (Pagination::Cursor { next, .. }, _) => match doc.pointer(next) {
                None | Some(Value::Null) => Next::Done,
                Some(Value::String(s)) if s.is_empty() => Next::Done,
                Some(Value::String(s)) => Next::Cursor(s.clone()),
                Some(Value::Number(x)) => Next::Cursor(x.to_string()),
                Some(other) => {
                    return Err(self.http_error(
                        page,
                        uri,
                        format!("the next cursor at `{next}` is {}", kind_of(other)),
                    ));
                }
            },
            _ => Next::Done,
        })
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Connector for HttpJsonConnector {
    fn spec(&self) -> &ConnectorSpec {
        &self.spec
    }

    fn check(&self) -> Result<(), ConnectorError> {
        let rt = self.runtime()?;
        rt.block_on(async {
            let mut client = Client::new(self)?;
            let at = self.first();
            let uri = self.page_uri(&at)?;
            let body = client.fetch(1, &uri).await?;
            let (_, records) = self.records(1, &uri, &body)?;
            // An empty source has no record to check the columns against.
            let Some(first) = records.first() else {
                return Ok(());
            };
            for col in self.spec.source_columns() {
                if lookup(first, col).is_none() {
                    let found = match first {
                        Value::Object(m) => {
                            let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
                            keys.sort_unstable();
                            keys.join(", ")
                        }
                        other => format!("(the first record is {})", kind_of(other)),
                    };
                    return Err(ConnectorError::MissingColumn {
                        source_name: self.spec.name.clone(),
                        column: col.to_string(),
                        found,
                    });
                }
            }
            Ok(())
        })
    }

    fn pull(
        &self,
        _from: Option<&Checkpoint>,
        emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<PullStats, ConnectorError> {
        let rt = self.runtime()?;
        rt.block_on(async {
            let mut client = Client::new(self)?;
            let columns = self.spec.source_columns();
            let mut out = BatchBuilder::new(&self.spec);
            let mut at = self.first();
            let mut page = 0u64;
            let mut position = 0u64;
            let mut last_cursor: Option<String> = None;
            loop {
                page += 1;
                let uri = self.page_uri(&at)?;
                let body = client.fetch(page, &uri).await?;
                out.stats.bytes += body.len() as u64;
                let (doc, records) = self.records(page, &uri, &body)?;
                drop(body);
                let n = records.len() as u64;
                tracing::debug!(source = %self.spec.name, page, n_records = n, "page read");
                for record in &records {
                    position += 1;
                    match record_values(record, &columns) {
                        Ok(values) => out.push(position, values, emit)?,
                        Err(reason) => {
                            tracing::trace!(source = %self.spec.name, position, "record rejected");
                            out.reject(Rejected {
                                position,
                                reason,
                                raw: raw_json(record),
                            });
                            if out.is_full() {
                                out.flush(None, emit)?;
                            }
                        }
                    }
                }
                at = self.next(page, &uri, &at, n, &doc)?;
                match &at {
                    Next::Done => break,
                    Next::Cursor(c) => {
                        // A server handing out the same cursor again would
                        // loop for ever.
                        if last_cursor.as_deref() == Some(c.as_str()) {
                            return Err(self.http_error(
                                page,
                                &uri,
                                "the server returned the same next cursor twice".to_string(),
                            ));
                        }
                        last_cursor = Some(c.clone());
                    }
                    _ => {}
                }
            }
            out.finish(None, emit)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> crate::catalog::Catalog {
        crate::catalog::Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
            .expect("catalogue")
    }

    #[test]
    fn example_file_loads_with_its_pagination_and_headers() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("connectors/examples/http-json-enterprises.toml");
        let config = crate::connectors::load_file(&path, &catalog()).expect("example is valid");
        let crate::connectors::SourceKind::HttpJson(s) = config.source else {
            panic!("not http_json");
        };
        assert_eq!(
            s.pagination,
            Pagination::Page {
                param: "page".into(),
                size_param: "size".into(),
                size: 500,
                start: 1
            }
        );
        assert_eq!(s.records, "/data/items");
        assert!(matches!(
            &s.headers["Authorization"],
            HeaderSource::Env(EnvRef { env }) if env == "SCJGJ_API_AUTHORIZATION"
        ));
        assert_eq!(
            (s.timeout_secs, s.max_attempts, s.backoff_initial_ms),
            (30, 5, 200)
        );
        assert!(config.spec.columns.contains(&(
            "fddbr/xm".to_string(),
            "enterprise.legal_representative".to_string()
        )));
    }

    #[test]
    fn bad_http_json_sources_name_key_and_line() {
        let head = "agency = \"xj-scjgj\"\ndataset = \"enterprise\"\nsubject_column = \"credit\"\nrecord_id_column = \"id\"\nas_of_column = \"updated\"\n[columns]\ncredit = \"enterprise.credit_code\"\n[source]\ntype = \"http_json\"\n";
        let ok = "url = \"http://h/items\"\nrecords = \"/items\"\n";
        let cases: &[(&str, &str)] = &[
            (
                "url = \"ftp://h/items\"\nrecords = \"/items\"\n",
                "x.toml:10: source.url: the URL must start with `http://` or `https://`",
            ),
            (
                "url = \"https://h/items\"\nrecords = \"/items\"\n",
                "x.toml:10: source.url: an https `url` needs `ca_file`",
            ),
            (
                "url = \"http://user:pw0rd@h/items\"\nrecords = \"/items\"\n",
                "x.toml:10: source.url: the URL carries credentials",
            ),
            (
                "url = \"http://h/items\"\nrecords = \"data/items\"\n",
                "x.toml:11: source.records: `data/items` is not a JSON pointer",
            ),
            (
                "url = \"http://h/items?page=2\"\nrecords = \"/items\"\npagination = { type = \"page\" }\n",
                "x.toml:12: source.pagination: the URL already has a `page` parameter",
            ),
            (
                "pagination = { type = \"page\", size = 0 }\n",
                "x.toml:12: source.pagination.size: must be at least 1",
            ),
            (
                "pagination = { type = \"cursor\", next = \"next\" }\n",
                "x.toml:12: source.pagination.next: `next` is not a JSON pointer",
            ),
            (
                "pagination = { type = \"cursor\" }\n",
                "missing field `next`",
            ),
            (
                "pagination = { type = \"scroll\" }\n",
                "unknown variant `scroll`",
            ),
            (
                "pagination = { type = \"offset\", sise = 10 }\n",
                "unknown field `sise`",
            ),
            ("retries = 3\n", "x.toml:12: unknown field `retries`"),
            (
                "headers = { Authorization = \"Bearer hunter2\" }\n",
                "x.toml:12: source.headers.Authorization: a credential never sits in a connector file",
            ),
            (
                "headers = { \"Bad Name\" = \"x\" }\n",
                "x.toml:12: source.headers.Bad Name: not a valid header name",
            ),
            (
                "timeout_secs = 0\n",
                "x.toml:12: source.timeout_secs: must be at least 1",
            ),
            (
                "max_attempts = 0\n",
                "x.toml:12: source.max_attempts: must be at least 1",
            ),
            (
                "rate_limit_per_sec = 0\n",
                "x.toml:12: source.rate_limit_per_sec: must be a positive number",
            ),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = catalog();
        for (text, want) in cases {
            let p = dir.path().join("x.toml");
            // Cases that do not give url and records get the good ones first.
            let body = if text.starts_with("url") {
                text.to_string()
            } else {
                format!("{ok}{text}")
            };
            std::fs::write(&p, format!("{head}{body}")).expect("write");
            let got = crate::connectors::load_file(&p, &cat)
                .unwrap_err()
                .to_string();
            assert!(got.contains(want), "want `{want}` in `{got}`");
            assert!(!got.contains("hunter2") && !got.contains("pw0rd"), "{got}");
        }
        let p = dir.path().join("x.toml");
        std::fs::write(&p, format!("{head}{ok}")).expect("write");
        let config = crate::connectors::load_file(&p, &cat).expect("minimal source is valid");
        let crate::connectors::SourceKind::HttpJson(s) = config.source else {
            panic!("not http_json");
        };
        assert_eq!(s.pagination, Pagination::None);
        assert_eq!(
            (
                s.timeout_secs,
                s.max_attempts,
                s.rate_limit_per_sec,
                s.backoff_initial_ms,
                s.max_page_bytes
            ),
            (30, 5, 5.0, 200, 64 << 20)
        );
    }

    #[test]
    fn values_render_as_json_prints_them() {
        let cases: &[(Value, Result<&str, &str>)] = &[
            (json!("张三"), Ok("张三")),
            (json!(42), Ok("42")),
            (json!(-7), Ok("-7")),
            (json!(1.5), Ok("1.5")),
            (json!(12345678901234567u64), Ok("12345678901234567")),
            (json!(true), Ok("true")),
            (json!(false), Ok("false")),
            (Value::Null, Ok("")),
            (json!({"a": 1}), Err("an object")),
            (json!([1]), Err("an array")),
        ];
        for (v, want) in cases {
            assert_eq!(render(Some(v)).as_deref(), want.as_deref(), "{v}");
        }
        assert_eq!(render(None).as_deref(), Ok(""));
    }

    #[test]
    fn records_become_values_or_reasons() {
        let cols = ["id", "as_of", "credit", "name", "owner/name", "/owner/id"];
        let rec = json!({"id": 7, "as_of": "2024-01-01", "credit": "9165", "name": null,
                         "owner": {"name": "李四", "id": 3}});
        assert_eq!(
            record_values(&rec, &cols).expect("values"),
            vec!["7", "2024-01-01", "9165", "", "李四", "3"]
        );
        let cases: &[(Value, &str)] = &[
            (json!([1, 2]), "the record is not a JSON object"),
            (
                json!({"as_of": "x", "credit": "c"}),
                "the record id `id` is missing or empty",
            ),
            (
                json!({"id": 1, "credit": null}),
                "the subject `credit` is missing or empty",
            ),
            (
                json!({"id": 1, "credit": "c", "name": {"x": 1}}),
                "`name` is an object, not a value",
            ),
            (
                json!({"id": 1, "credit": "c", "owner": {"name": ["a"]}}),
                "`owner/name` is an array, not a value",
            ),
        ];
        for (rec, want) in cases {
            assert_eq!(record_values(rec, &cols).unwrap_err(), *want, "{rec}");
        }
    }

    #[test]
    fn raw_json_is_cut_at_a_character_boundary() {
        let rec = json!({"x": "字".repeat(3000)});
        let raw = raw_json(&rec);
        assert!(raw.len() <= MAX_RAW_BYTES + '…'.len_utf8());
        assert!(raw.ends_with('…'));
    }

    #[test]
    fn query_values_are_percent_encoded_and_urls_lose_their_query() {
        let mut s = String::new();
        encode_query_value("a b&c=d/é", &mut s);
        assert_eq!(s, "a%20b%26c%3Dd%2F%C3%A9");
        let uri: Uri = "https://api.example.org:8443/v1/items?key=s3cret&page=2"
            .parse()
            .expect("uri");
        assert_eq!(redacted(&uri), "https://api.example.org:8443/v1/items");
    }
}
