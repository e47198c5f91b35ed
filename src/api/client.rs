//! A small mutual-TLS HTTP/1.1 client with a keep-alive connection: what
//! the integration tests and the load benchmarks use to call the broker the
//! way an agency system would (curl and wrk cannot hold a client
//! certificate over keep-alive the way we need to measure). Given the
//! agency's key, it names its officer in a signed token (minted for five
//! minutes, renewed a minute before it expires).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::token::{self, TokenSigner};

/// Lifetime of the tokens the client mints.
const TOKEN_LIFETIME_SECS: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("client tls setup: {path}: {reason}")]
    Setup { path: String, reason: String },
    #[error("connect: {0}")]
    Connect(String),
    #[error("request: {0}")]
    Request(String),
    #[error("officer token: {0}")]
    Token(#[from] token::TokenError),
}

/// A token signer for `agency` from the PEM PKCS#8 key of its client
/// certificate (`clients/<name>.key` of the development PKI).
pub fn token_signer(key: &Path, agency: &str) -> Result<TokenSigner, ClientError> {
    match PrivateKeyDer::from_pem_file(key).map_err(|e| setup(key, e))? {
        PrivateKeyDer::Pkcs8(der) => Ok(TokenSigner::from_pkcs8(der.secret_pkcs8_der(), agency)?),
        _ => Err(setup(key, "not a pkcs#8 private key")),
    }
}

/// What the client puts in the officer token header.
enum TokenSource {
    /// Mint tokens with this signer for the client's officer.
    Signer(Arc<TokenSigner>),
    /// Send exactly this token (tests: forged, expired, other agency).
    Fixed(String),
    /// Send no token.
    None,
}

fn setup(path: &Path, reason: impl ToString) -> ClientError {
    ClientError::Setup {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// A rustls client config trusting `ca` and presenting `cert` / `key`.
pub fn config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| setup(ca, e))? {
        roots
            .add(c.map_err(|e| setup(ca, e))?)
            .map_err(|e| setup(ca, e))?;
    }
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| setup(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup(cert, e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| setup(key, e))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(ca, e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key_der)
        .map_err(|e| setup(cert, e))?;
    Ok(Arc::new(config))
}

/// One keep-alive connection to the broker.
pub struct MtlsClient {
    sender: SendRequest<Full<Bytes>>,
    officer: String,
    token: TokenSource,
    /// The last minted token and its expiry (Unix seconds).
    minted: Option<(String, i64)>,
}

impl MtlsClient {
    /// Connect and handshake; the broker's certificate must name `server_name`.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<MtlsClient, ClientError> {
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(MtlsClient {
            sender,
            officer: "officer-1".into(),
            token: TokenSource::None,
            minted: None,
        })
    }

    /// The officer named in the token of every request.
    pub fn with_officer(mut self, officer: &str) -> Self {
        self.officer = officer.to_string();
        self.minted = None;
        self
    }

    /// Mint the officer token with `signer` (the agency's certificate key).
    pub fn with_token_signer(mut self, signer: Arc<TokenSigner>) -> Self {
        self.token = TokenSource::Signer(signer);
        self.minted = None;
        self
    }

    /// Send exactly `token` (or none), for tests of refused tokens.
    pub fn with_fixed_token(mut self, token: Option<String>) -> Self {
        self.token = token.map_or(TokenSource::None, TokenSource::Fixed);
        self
    }

    fn current_token(&mut self) -> Result<Option<String>, ClientError> {
        match &self.token {
            TokenSource::None => Ok(None),
            TokenSource::Fixed(t) => Ok(Some(t.clone())),
            TokenSource::Signer(signer) => {
                let now = chrono::Utc::now().timestamp();
                match &self.minted {
                    Some((t, exp)) if *exp - now > 60 => Ok(Some(t.clone())),
                    _ => {
                        let t = signer.mint_at(&self.officer, now, TOKEN_LIFETIME_SECS)?;
                        self.minted = Some((t.clone(), now + TOKEN_LIFETIME_SECS));
                        Ok(Some(t))
                    }
                }
            }
        }
    }

    /// Send one request; returns the status and the whole body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), ClientError> {
        let (status, _, bytes) = self.request_full(method, path, &[], body).await?;
        Ok((status, bytes))
    }

    /// Send one request with extra headers; returns the status, the
    /// response headers and the whole body.
    pub async fn request_full(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<(u16, hyper::HeaderMap, Bytes), ClientError> {
        let resp = self.send(method, path, headers, body).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Request(e.to_string()))?
            .to_bytes();
        Ok((status, headers, bytes))
    }

    /// Send one request; the response as it arrives, its body (and any
    /// trailers) still to be read: for streamed exports.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        self.sender
            .ready()
            .await
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json");
        if let Some(t) = self.current_token()? {
            req = req.header(token::HEADER, t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        self.sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Request(e.to_string()))
    }
}
