//! A small mutual-TLS HTTP/1.1 client with a keep-alive connection: what
//! the integration tests and the load benchmarks use to call the broker the
//! way an agency system would (curl and wrk cannot hold a client
//! certificate over keep-alive the way we need to measure).

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

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("client tls setup: {path}: {reason}")]
    Setup { path: String, reason: String },
    #[error("connect: {0}")]
    Connect(String),
    #[error("request: {0}")]
    Request(String),
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
        })
    }

    /// The officer named in the `x-officer` header of every request.
    pub fn with_officer(mut self, officer: &str) -> Self {
        self.officer = officer.to_string();
        self
    }

    /// Send one request; returns the status and the whole body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), ClientError> {
        self.sender
            .ready()
            .await
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("x-officer", &self.officer)
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Request(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }
}
