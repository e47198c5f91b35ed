//! The exchange API: HTTPS with client certificates (rustls), HTTP/1.1 and
//! HTTP/2 (hyper). Every request is identified by its certificate, checked
//! against its case and the policy plan, audited durably, and only then
//! answered; data responses are sealed.

pub mod client;
mod routes;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
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
use crate::config::Settings;
use crate::ingest::{COL_KEY, Golden};
use crate::policy::PolicySet;
use crate::policy::cases::CaseBook;
use crate::seal::{Ed25519Signer, Signer};
use crate::store::{LoadedTable, LocalStore, load_current};

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
        let policy = Arc::new(PolicySet::load(&s.policies_dir, &catalog).await?);
        let store = LocalStore::open(&s.store_dir())?;
        let mut tables = HashMap::new();
        for kind in [SubjectKind::Person, SubjectKind::Organisation] {
            match load_current(&store, Golden::table(kind), COL_KEY)? {
                Some(t) => {
                    tables.insert(kind, Arc::new(t));
                }
                None => tracing::warn!(
                    table = Golden::table(kind),
                    "no stored version: lookups of this kind answer 503 until a pull and a restart"
                ),
            }
        }
        let signer = Ed25519Signer::load_or_create(&s.seal_key_file())?;
        let pub_path = s.seal_key_file().with_extension("pub");
        std::fs::write(&pub_path, crate::seal::public_key_file_contents(&signer)).map_err(
            |source| StartError::Io {
                path: pub_path,
                source,
            },
        )?;
        Ok(AppState {
            catalog,
            policy,
            cases: CaseBook::open(&s.cases_file())?,
            tables,
            audit: Arc::new(AuditLog::open_with(
                &s.audit_dir(),
                s.audit_segment_max_bytes,
            )?),
            signer: Arc::new(signer),
            max_body_bytes: s.max_body_bytes,
            request_timeout: Duration::from_secs(s.request_timeout_secs),
            tree_head_every: Duration::from_secs(s.tree_head_interval_secs.max(1)),
        })
    }
}

/// The TLS config from the PKI directory of `s`.
pub fn tls_config_from(
    s: &Settings,
    allow_tls12: bool,
) -> Result<rustls::ServerConfig, ServeError> {
    let paths = crate::pki::PkiPaths { dir: s.pki_dir() };
    tls_config(
        &paths.ca_cert(),
        &paths.server_cert(),
        &paths.server_key(),
        allow_tls12,
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("tls: {path}: {reason}")]
    Tls { path: String, reason: String },
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything a request needs, shared by all connections.
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub policy: Arc<PolicySet>,
    pub cases: CaseBook,
    /// Golden tables by subject kind, as loaded at start.
    pub tables: HashMap<SubjectKind, Arc<LoadedTable>>,
    pub audit: Arc<AuditLog>,
    pub signer: Arc<dyn Signer>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// How often the audit log's signed tree head is published.
    pub tree_head_every: Duration,
}

/// Who is calling, from the client certificate of the connection.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None` when the certificate is valid but names no known agency.
    pub agency: Option<Agency>,
    /// Common name and SHA-256 fingerprint of the client certificate.
    pub certificate: String,
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
        return Caller {
            agency: None,
            certificate: String::new(),
        };
    };
    let fingerprint =
        hex::encode(ring::digest::digest(&ring::digest::SHA256, der.as_ref()).as_ref());
    let cn = x509_parser::parse_x509_certificate(der.as_ref())
        .ok()
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
    }
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
    let publisher = spawn_tree_head_publisher(
        state.audit.clone(),
        state.signer.clone(),
        state.tree_head_every,
    );
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
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
        let acceptor = acceptor.clone();
        let state = state.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
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
                    Ok::<_, std::convert::Infallible>(routes::handle(state, caller, req).await)
                }
            });
            let conn = builder
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
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
    // A last signed head covering everything served, then flush and stop.
    if let Err(e) = state.audit.publish_tree_head(state.signer.as_ref()) {
        tracing::error!(error = %e, "cannot publish the final audit tree head");
    }
    state.audit.shutdown();
    Ok(())
}
