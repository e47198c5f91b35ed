//! The exchange API: HTTPS with client certificates (rustls), HTTP/1.1 and
//! HTTP/2 (hyper). Every request is identified by its certificate, checked
//! against its case and the policy plan, audited durably, and only then
//! answered; data responses are sealed.

pub mod client;
pub mod export;
pub mod limits;
mod metrics;
pub mod openapi;
mod routes;
pub mod stewards;
pub mod token;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::audit::{AuditLog, spawn_tree_head_publisher};
use crate::catalog::{Agency, Catalog, SubjectKind};
use crate::config::{Settings, TlsMinVersion};
use crate::ingest::{COL_KEY, Golden};
use crate::policy::PolicySet;
use crate::policy::applications::ApplicationBook;
use crate::policy::cases::CaseBook;
use crate::policy::corrections::CorrectionBook;
use crate::seal::{SealMode, Signer};
use crate::store::{LoadedTable, TableStore, load_latest_good};

/// Why the broker could not assemble its state at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Cases(#[from] crate::policy::cases::CaseError),
    #[error(transparent)]
    Applications(#[from] crate::policy::applications::ApplicationError),
    #[error(transparent)]
    Corrections(#[from] crate::policy::corrections::CorrectionError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl AppState {
    /// Load catalogue and policy, the current golden tables, the case
    /// journal, the audit log and the seal key named by `s`. The seal's
    /// public key is (re)published next to the private one as `*.pub`.
    pub async fn open(s: &Settings) -> Result<AppState, StartError> {
        let catalog = Arc::new(Catalog::load(&s.policies_dir)?);
        let applications = ApplicationBook::open(&s.applications_file())?;
        let policy =
            PolicySet::load_with(&s.policies_dir, &catalog, &applications.approved()).await?;
        let policy_files = policy_fingerprint(&s.policies_dir);
        let store = TableStore::open_local(&s.store_dir())?;
        // Orphans of a killed pull go first; a pull running now is left
        // alone (its tables are locked).
        let store_for_start = store.clone();
        let tables = tokio::task::spawn_blocking(move || {
            for gc in store_for_start.recover()? {
                if !gc.files_removed.is_empty() {
                    tracing::info!(table = %gc.table, files = gc.files_removed.len(), bytes = gc.bytes_freed, "removed files of an unfinished write");
                }
            }
            let mut tables = Tables::new();
            for kind in SUBJECT_KINDS {
                if let Some(t) = load_newest_good(&store_for_start, kind, None)? {
                    tables.insert(kind, Arc::new(t));
                } else {
                    tracing::warn!(
                        table = Golden::table(kind),
                        "no loadable version: lookups of this kind answer 503 until a pull"
                    );
                }
            }
            Ok::<_, crate::store::StoreError>(tables)
        })
        .await
        .map_err(|e| StartError::Io {
            path: s.store_dir(),
            source: std::io::Error::other(e.to_string()),
        })??;
        let signer = crate::seal::load_or_create(s.seal_algorithm, &s.seal_key_file())?;
        let pub_path = s.seal_key_file().with_extension("pub");
        std::fs::write(&pub_path, crate::seal::public_key_file_contents(&*signer)).map_err(
            |source| StartError::Io {
                path: pub_path,
                source,
            },
        )?;
        let state = AppState {
            catalog,
            policy: RwLock::new(Arc::new(policy)),
            policies_dir: s.policies_dir.clone(),
            policy_files: Mutex::new(PolicyFiles {
                loaded: policy_files,
                seen: None,
            }),
            reloading: tokio::sync::Mutex::new(()),
            applications,
            cases: CaseBook::open(&s.cases_file())?,
            corrections: Arc::new(CorrectionBook::open(&s.corrections_file())?),
            tables: RwLock::new(Arc::new(tables)),
            store,
            store_poll: Duration::from_secs(s.store_poll_interval_secs.max(1)),
            store_failed: Mutex::new(HashMap::new()),
            reloading_tables: tokio::sync::Mutex::new(()),
            audit: Arc::new(AuditLog::open_sealing(
                &s.audit_dir(),
                s.audit_segment_max_bytes,
                (s.seal_mode == SealMode::Batch).then(|| Arc::clone(&signer)),
            )?),
            audit_dir: s.audit_dir(),
            logging_decisions: tokio::sync::Mutex::new(()),
            signer,
            seal_mode: s.seal_mode,
            max_body_bytes: s.max_body_bytes,
            limits: Limits::from_settings(s),
            metrics: metrics::Metrics::default(),
            request_timeout: Duration::from_secs(s.request_timeout_secs),
            tree_head_every: Duration::from_secs(s.tree_head_interval_secs.max(1)),
        };
        // Versions pulled while the broker was down may carry fixes.
        state.settle_corrections().await;
        Ok(state)
    }
}

/// The TLS config from the PKI directory of `s`: TLS 1.3 only unless
/// `tls_min_version` is 1.2.
pub fn tls_config_from(s: &Settings) -> Result<rustls::ServerConfig, ServeError> {
    let paths = crate::pki::PkiPaths { dir: s.pki_dir() };
    tls_config(
        &paths.ca_cert(),
        &paths.server_cert(),
        &paths.server_key(),
        s.tls_min_version == TlsMinVersion::Tls12,
    )
}

/// Limits enforced per request or per connection.
pub struct Limits {
    rate: limits::RateLimiter,
    /// Exports running at once, in all and per agency.
    pub exports: Arc<limits::ExportSlots>,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
    pub http2_max_concurrent_streams: u32,
}

impl Limits {
    fn from_settings(s: &Settings) -> Limits {
        Limits {
            rate: limits::RateLimiter::new(s.rate_limit_per_agency_rps, s.rate_limit_burst),
            exports: limits::ExportSlots::new(
                s.export_max_running,
                s.export_max_running_per_agency,
            ),
            max_header_bytes: s.max_header_bytes,
            http2_max_concurrent_streams: s.http2_max_concurrent_streams,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("tls: {path}: {reason}")]
    Tls { path: String, reason: String },
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("plain http is for local testing only and needs a loopback listen address, not {0}")]
    PlainNotLoopback(SocketAddr),
}

/// Everything a request needs, shared by all connections.
pub struct AppState {
    pub catalog: Arc<Catalog>,
    // std RwLock: held only to clone or replace the Arc, never across an await.
    policy: RwLock<Arc<PolicySet>>,
    policies_dir: PathBuf,
    /// Fingerprints of the policy files last loaded and last seen.
    policy_files: Mutex<PolicyFiles>,
    /// Held across a whole reload: reloads never overlap.
    reloading: tokio::sync::Mutex<()>,
    pub applications: ApplicationBook,
    pub cases: CaseBook,
    /// Disputed values (Article 17) and the index responses mark them by.
    pub corrections: Arc<CorrectionBook>,
    /// Golden tables by subject kind; swapped whole when a new version
    /// loads. std RwLock: held only to clone or replace the Arc.
    tables: RwLock<Arc<Tables>>,
    store: TableStore,
    store_poll: Duration,
    /// Per kind, the newest version that failed to load: not retried until
    /// a newer one appears. std Mutex: never held across an await.
    store_failed: Mutex<HashMap<SubjectKind, u64>>,
    /// Held across a whole table reload: reloads never overlap.
    reloading_tables: tokio::sync::Mutex<()>,
    pub audit: Arc<AuditLog>,
    audit_dir: PathBuf,
    /// Held while steward decisions are logged: never twice at once.
    logging_decisions: tokio::sync::Mutex<()>,
    pub signer: Arc<dyn Signer>,
    /// Per-response signatures, or one per audit group commit (the audit log then holds
    /// the signer too).
    pub seal_mode: SealMode,
    pub max_body_bytes: usize,
    pub limits: Limits,
    metrics: metrics::Metrics,
    pub request_timeout: Duration,
    /// How often the audit log's signed tree head is published.
    pub tree_head_every: Duration,
}

/// The golden tables served, by subject kind.
pub type Tables = HashMap<SubjectKind, Arc<LoadedTable>>;

const SUBJECT_KINDS: [SubjectKind; 2] = [SubjectKind::Person, SubjectKind::Organisation];

/// The newest version of a kind's golden table newer than `newer_than`
/// that loads; each newer one that does not is logged as an error naming
/// its file, and the caller keeps what it serves.
fn load_newest_good(
    store: &TableStore,
    kind: SubjectKind,
    newer_than: Option<u64>,
) -> Result<Option<LoadedTable>, crate::store::StoreError> {
    let table = Golden::table(kind);
    let (loaded, failures) = load_latest_good(store, table, COL_KEY, newer_than)?;
    for (version, error) in &failures {
        tracing::error!(table, version, %error, "a stored version cannot be loaded; serving the last good version");
    }
    Ok(loaded)
}

/// A change of the tables served.
#[derive(Debug, PartialEq, Eq)]
pub struct TablesReloaded {
    pub kind: SubjectKind,
    pub from: Option<u64>,
    pub to: u64,
}

/// The policy files whose change triggers a reload.
const POLICY_FILES: [&str; 3] = [
    crate::policy::MODEL_FILE,
    crate::policy::RULES_FILE,
    crate::policy::APPLICATIONS_FILE,
];

/// SHA-256 over the policy files' contents (a missing file counts as empty).
fn policy_fingerprint(dir: &Path) -> String {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    for f in POLICY_FILES {
        h.update(&std::fs::read(dir.join(f)).unwrap_or_default());
        h.update(b"\0");
    }
    hex::encode(h.finish().as_ref())
}

/// The policy files as last loaded (or last found bad), and a change seen
/// once but not yet loaded.
struct PolicyFiles {
    loaded: String,
    seen: Option<String>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    /// Swapped in; the new policy version.
    Swapped(String),
    /// The changed files are invalid; the last good policy stays in force.
    Rejected(String),
}

impl AppState {
    /// The golden tables served now: a snapshot, consistent for a whole
    /// request; a reload never waits for readers.
    pub fn tables(&self) -> Arc<Tables> {
        self.tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Load any newer version of the golden tables and swap it in. Loading
    /// runs off the async workers while requests keep reading the old
    /// version; a version that fails to load (a damaged file) is logged and
    /// skipped, and the last good one stays in service.
    pub async fn reload_tables(&self) -> Vec<TablesReloaded> {
        let _one_at_a_time = self.reloading_tables.lock().await;
        let mut changed = Vec::new();
        for kind in SUBJECT_KINDS {
            let held = self.tables().get(&kind).map(|t| t.manifest.version);
            let store = self.store.clone();
            let table = Golden::table(kind);
            let newest = match tokio::task::spawn_blocking(move || store.versions(table)).await {
                Ok(Ok(v)) => v.last().copied(),
                Ok(Err(e)) => {
                    tracing::warn!(table, error = %e, "cannot list table versions");
                    continue;
                }
                Err(_) => continue,
            };
            let Some(newest) = newest else { continue };
            let failed = self
                .store_failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&kind)
                .copied();
            if held.is_some_and(|h| h >= newest) || failed == Some(newest) {
                continue;
            }
            let store = self.store.clone();
            let loaded =
                tokio::task::spawn_blocking(move || load_newest_good(&store, kind, held)).await;
            match loaded {
                Ok(Ok(Some(t))) => {
                    let to = t.manifest.version;
                    let mut next = (*self.tables()).clone();
                    next.insert(kind, Arc::new(t));
                    *self.tables.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
                    tracing::info!(table, from = ?held, to, "table version loaded");
                    changed.push(TablesReloaded {
                        kind,
                        from: held,
                        to,
                    });
                    if to != newest {
                        self.store_failed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(kind, newest);
                    }
                }
                Ok(Ok(None)) => {
                    self.store_failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(kind, newest);
                }
                Ok(Err(e)) => tracing::warn!(table, error = %e, "cannot reload the table"),
                Err(e) => tracing::error!(table, error = %e, "table reload panicked"),
            }
        }
        if !changed.is_empty() {
            self.settle_corrections().await;
        }
        changed
    }

    /// Hold the corrections against the golden tables served now: an open
    /// one whose field now serves a new value from its owner closes as
    /// fixed; a fix that has arrived stops being marked. Journal writes
    /// fsync, so this runs off the async workers; a failure is logged and
    /// retried with the next version (the corrections stay as they were).
    pub async fn settle_corrections(&self) {
        let (tables, book) = (self.tables(), self.corrections.clone());
        let settled = tokio::task::spawn_blocking(move || {
            book.settle(chrono::Utc::now(), |c| {
                let table = tables.get(&c.filed.subject.kind)?;
                let row = table.row(&c.filed.subject.key);
                let cell = |suffix: &str| {
                    row.as_ref()
                        .and_then(|r| r.get(&format!("{}{suffix}", c.filed.field)))
                        .map(str::to_string)
                };
                Some(crate::policy::corrections::Current {
                    value: cell(""),
                    source: cell(crate::ingest::SUFFIX_SOURCE),
                    version: table.manifest.version,
                })
            })
        })
        .await;
        match settled {
            Ok(Ok(closed)) if !closed.is_empty() => {
                tracing::info!(
                    closed = closed.len(),
                    "corrections closed as fixed by a new version from their owner"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot settle corrections against the new version")
            }
            Err(e) => tracing::error!(error = %e, "settling corrections panicked"),
        }
    }

    /// The policy in force: a snapshot, consistent for a whole request.
    pub fn policy(&self) -> Arc<PolicySet> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reload the policy if its files changed (or `force`, after an
    /// application was decided): validated, checked and compiled aside,
    /// then swapped in atomically. A bad file is reported and the last good
    /// policy stays. A polled change is taken only once the files read the
    /// same on two polls in a row, so a file caught mid-write is not loaded;
    /// reloads never overlap, so a slower one cannot undo a newer one.
    pub async fn reload_policy(&self, force: bool) -> Reload {
        let _one_at_a_time = self.reloading.lock().await;
        let fingerprint = policy_fingerprint(&self.policies_dir);
        {
            let mut files = self.policy_files.lock().unwrap_or_else(|e| e.into_inner());
            if !force {
                if files.loaded == fingerprint {
                    files.seen = None;
                    return Reload::Unchanged;
                }
                if files.seen.as_deref() != Some(fingerprint.as_str()) {
                    files.seen = Some(fingerprint);
                    return Reload::Unchanged;
                }
            }
            files.loaded = fingerprint;
            files.seen = None;
        }
        let (dir, catalog, approved) = (
            self.policies_dir.clone(),
            self.catalog.clone(),
            self.applications.approved(),
        );
        let handle = tokio::runtime::Handle::current();
        // Compiling is CPU work (100 ms at 10,000 rules): off the async workers.
        let loaded = tokio::task::spawn_blocking(move || {
            let policy = handle
                .block_on(PolicySet::load_with(&dir, &catalog, &approved))
                .map_err(|e| e.to_string())?;
            let errors: Vec<String> = crate::policy::steward::check(&catalog, &policy)
                .into_iter()
                .filter(|f| f.severity == crate::policy::steward::Severity::Error)
                .map(|f| f.to_string())
                .collect();
            if errors.is_empty() {
                Ok(policy)
            } else {
                Err(errors.join("\n"))
            }
        })
        .await
        .unwrap_or_else(|e| Err(format!("policy compilation failed: {e}")));
        match loaded {
            Ok(p) => {
                let version = p.version.clone();
                *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
                tracing::info!(policy_version = %version, "policy reloaded");
                Reload::Swapped(version)
            }
            Err(e) => {
                tracing::error!(errors = %e, "policy files are invalid; the last good policy stays in force");
                Reload::Rejected(e)
            }
        }
    }
}

/// Who is calling, from the client certificate of the connection.
#[derive(Debug, Default)]
pub struct Caller {
    /// `None` when the certificate is valid but names no known agency.
    pub agency: Option<Agency>,
    /// Common name and SHA-256 fingerprint of the client certificate.
    pub certificate: String,
    /// The certificate's public key, which verifies officer tokens.
    pub token_key: Option<Vec<u8>>,
    /// The officer tokens verified on this connection.
    // std Mutex: held for a lookup or a store, never across an `.await`.
    pub verified_tokens: Mutex<token::VerifiedTokens>,
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServeError> {
    let err = |reason: String| ServeError::Tls {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in file".into()));
    }
    Ok(certs)
}

/// A rustls server config requiring client certificates issued by the CA
/// in `ca_path`. TLS 1.3 only unless `allow_tls12`.
pub fn tls_config(
    ca_path: &Path,
    cert_path: &Path,
    key_path: &Path,
    allow_tls12: bool,
) -> Result<rustls::ServerConfig, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca_path)? {
        roots.add(c).map_err(|e| ServeError::Tls {
            path: ca_path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ServeError::Tls {
            path: ca_path.display().to_string(),
            reason: e.to_string(),
        })?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| ServeError::Tls {
        path: key_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = if allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| ServeError::Tls {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(cert_path)?, key)
        .map_err(|e| ServeError::Tls {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Identify the agency behind a verified client certificate.
fn identify(catalog: &Catalog, certs: Option<&[CertificateDer<'_>]>) -> Caller {
    let Some(der) = certs.and_then(|c| c.first()) else {
        return Caller::default();
    };
    let fingerprint =
        hex::encode(ring::digest::digest(&ring::digest::SHA256, der.as_ref()).as_ref());
    let parsed = x509_parser::parse_x509_certificate(der.as_ref()).ok();
    let cn = parsed
        .as_ref()
        .and_then(|(_, cert)| {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    Caller {
        agency: catalog.agency_by_certificate_name(&cn).cloned(),
        certificate: format!("{cn}:{fingerprint}"),
        token_key: parsed
            .as_ref()
            .and_then(|(_, cert)| token::certificate_key(cert)),
        verified_tokens: Mutex::default(),
    }
}

/// The request header naming the client's certificate on a plain-HTTP
/// listener (local testing only): the broker trusts it as it stands.
pub const PLAIN_CLIENT_HEADER: &str = "x-sharebroker-client";

/// Identify a plain-HTTP caller by the certificate name in
/// [`PLAIN_CLIENT_HEADER`], reading `clients/<name>.pem` of the PKI
/// directory (for the agency and the key that verifies officer tokens).
fn identify_plain<B>(
    catalog: &Catalog,
    pki: &crate::pki::PkiPaths,
    req: &hyper::Request<B>,
) -> Caller {
    let name = req
        .headers()
        .get(PLAIN_CLIENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|n| {
            !n.is_empty()
                && n.len() <= 64
                && !n.starts_with('.')
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    let Some(name) = name else {
        return Caller::default();
    };
    match read_certs(&pki.client_cert(name)) {
        Ok(certs) => identify(catalog, Some(&certs)),
        Err(_) => Caller::default(),
    }
}

/// How often the policy files are checked for changes (hot reload).
const POLICY_POLL: Duration = Duration::from_secs(2);

/// How a connection reaches HTTP: through the TLS acceptor, or (local
/// testing only) in plain text with the client named in a header.
#[derive(Clone)]
enum Transport {
    Tls(TlsAcceptor),
    Plain(Arc<crate::pki::PkiPaths>),
}

/// Serve on `listener` until `shutdown` resolves; then stop accepting,
/// drain open connections (up to 10 s) and flush the audit log.
pub async fn run(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    serve(listener, Transport::Tls(acceptor), state, shutdown).await
}

/// [`run`] without TLS, for local testing only: the client names its
/// certificate in the [`PLAIN_CLIENT_HEADER`] header and is believed.
/// Refused unless `listener` is bound to a loopback address.
pub async fn run_plain(
    listener: TcpListener,
    pki: crate::pki::PkiPaths,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        return Err(ServeError::PlainNotLoopback(addr));
    }
    tracing::warn!(
        listen = %addr,
        "INSECURE: serving plain HTTP without TLS; any local process can claim any agency \
         with the `{PLAIN_CLIENT_HEADER}` header. For local testing only: never in production"
    );
    serve(listener, Transport::Plain(Arc::new(pki)), state, shutdown).await
}

async fn serve(
    listener: TcpListener,
    transport: Transport,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let reloader = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLICY_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                state.reload_policy(false).await;
            }
        })
    };
    let table_reloader = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.store_poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate: tables were just loaded
            loop {
                // Decisions recorded while the broker was down go first.
                if let Err(e) = state.log_steward_decisions().await {
                    tracing::error!(error = %e, "steward decisions not logged; tried again at the next poll");
                }
                tick.tick().await;
                state.reload_tables().await;
            }
        })
    };
    let publisher = spawn_tree_head_publisher(
        state.audit.clone(),
        state.signer.clone(),
        state.tree_head_every,
    );
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Request heads: bounded in size (431 above it) and in time.
    builder
        .http1()
        .max_buf_size(state.limits.max_header_bytes)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(state.request_timeout);
    builder
        .http2()
        .max_concurrent_streams(state.limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(state.limits.max_header_bytes).unwrap_or(u32::MAX));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let transport = transport.clone();
        let state = state.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match transport {
                Transport::Tls(acceptor) => {
                    let tls =
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::info!(%peer, error = %e, "tls handshake refused");
                                return;
                            }
                            Err(_) => {
                                tracing::info!(%peer, "tls handshake timed out");
                                return;
                            }
                        };
                    let caller = Arc::new(identify(
                        &state.catalog,
                        tls.get_ref().1.peer_certificates(),
                    ));
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        let caller = caller.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                routes::handle(state, caller, req).await,
                            )
                        }
                    });
                    let conn = builder
                        .serve_connection(TokioIo::new(tls), service)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                Transport::Plain(pki) => {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        let caller = Arc::new(identify_plain(&state.catalog, &pki, &req));
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                routes::handle(state, caller, req).await,
                            )
                        }
                    });
                    let conn = builder
                        .serve_connection(TokioIo::new(tcp), service)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
            }
        });
    }
    tracing::info!("shutting down: draining connections");
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing");
    }
    publisher.abort();
    reloader.abort();
    table_reloader.abort();
    // A last signed head covering everything served, then flush and stop.
    if let Err(e) = state.audit.publish_tree_head(state.signer.as_ref()) {
        tracing::error!(error = %e, "cannot publish the final audit tree head");
    }
    state.audit.shutdown();
    Ok(())
}
