//! Transport and limits: TLS 1.3 only by default, TLS 1.2 when configured,
//! plain HTTP only on loopback and only when configured; the per-agency
//! rate limit (429 + Retry-After) and the request-head size limit.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

use sharebroker::api::{self, AppState, ServeError, client, token};
use sharebroker::config::{Settings, TlsMinVersion};
use sharebroker::pki::PkiPaths;

use crate::fixture::{check_openapi, prepare};

struct Running {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), ServeError>>,
}

/// Serve `settings` (TLS or, when configured, plain HTTP) on an ephemeral
/// loopback port.
async fn start(settings: &Settings) -> Running {
    let state = Arc::new(AppState::open(settings).await.expect("state"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let server = if settings.insecure_plain_http {
        // Refused off loopback, before anything is served.
        let wide = tokio::net::TcpListener::bind("0.0.0.0:0")
            .await
            .expect("bind");
        let refused = api::run_plain(
            wide,
            PkiPaths::new(&settings.pki_dir()),
            state.clone(),
            std::future::pending(),
        )
        .await;
        assert!(
            matches!(refused, Err(ServeError::PlainNotLoopback(_))),
            "{refused:?}"
        );
        let pki = PkiPaths::new(&settings.pki_dir());
        tokio::spawn(async move { api::run_plain(listener, pki, state, shutdown).await })
    } else {
        let tls = api::tls_config_from(settings).expect("tls");
        tokio::spawn(async move { api::run(listener, tls, state, shutdown).await })
    };
    Running { addr, stop, server }
}

async fn stop(r: Running) {
    let _ = r.stop.send(());
    tokio::time::timeout(Duration::from_secs(15), r.server)
        .await
        .expect("server stops")
        .expect("server task")
        .expect("server");
}

/// A client config for `client`, offering only `versions`.
fn client_config(
    pki: &Path,
    client: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let paths = PkiPaths::new(pki);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(paths.ca_cert()).expect("ca") {
        roots.add(c.expect("ca cert")).expect("root");
    }
    let certs = CertificateDer::pem_file_iter(paths.client_cert(client))
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(paths.client_key(client)).expect("key");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client auth"),
    )
}

/// Handshake with `config`; the negotiated TLS version, or the refusal.
async fn handshake(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<rustls::ProtocolVersion, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    // The server may refuse only after the client's last flight: one
    // request and its answer show the connection really works.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /v1/health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Err(format!("answer: {}", String::from_utf8_lossy(&answer)));
    }
    tls.get_ref()
        .1
        .protocol_version()
        .ok_or_else(|| "no version".to_string())
}

/// One plain-HTTP request naming `client` in the identity header (or not).
async fn plain(
    addr: std::net::SocketAddr,
    client: Option<&str>,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("http");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    if let Some(c) = client {
        req = req.header(api::PLAIN_CLIENT_HEADER, c);
    }
    if let Some(t) = token {
        req = req.header(token::HEADER, t);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("answer");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    check_openapi(method, path, status, &headers, &bytes);
    (status, serde_json::from_slice(&bytes).expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_versions_plain_http_rate_and_header_limits() {
    let p = prepare();
    let pki = p.settings.pki_dir();
    let tls13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let tls12: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

    // Default: TLS 1.3 only. A tight rate limit and the smallest head limit.
    let settings = Settings {
        rate_limit_per_agency_rps: 0.2,
        rate_limit_burst: 3,
        max_header_bytes: 8192,
        ..p.settings.clone()
    };
    let broker = start(&settings).await;
    assert_eq!(
        handshake(broker.addr, client_config(&pki, "xj-mzt", tls13)).await,
        Ok(rustls::ProtocolVersion::TLSv1_3)
    );
    let refused = handshake(broker.addr, client_config(&pki, "xj-mzt", tls12)).await;
    assert!(
        refused.is_err(),
        "TLS 1.2 is refused by default: {refused:?}"
    );

    let connect = |client: &'static str| {
        let pki = pki.clone();
        async move {
            let paths = PkiPaths::new(&pki);
            let config = client::config(
                &paths.ca_cert(),
                &paths.client_cert(client),
                &paths.client_key(client),
            )
            .expect("config");
            let signer = client::token_signer(&paths.client_key(client), client).expect("key");
            client::MtlsClient::connect(broker.addr, "localhost", config)
                .await
                .expect("connect")
                .with_token_signer(Arc::new(signer))
        }
    };
    // The rate limit: a burst of 3, then 429 with Retry-After, not audited;
    // another agency has its own bucket; operations routes are not limited.
    let mut mzt = connect("xj-mzt").await;
    for _ in 0..3 {
        let (status, headers, body) = mzt
            .request_full("GET", "/v1/cases", &[], None)
            .await
            .expect("request");
        check_openapi("GET", "/v1/cases", status, &headers, &body);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let (status, headers, body) = mzt
        .request_full("GET", "/v1/cases", &[], None)
        .await
        .expect("request");
    check_openapi("GET", "/v1/cases", status, &headers, &body);
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=5).contains(&retry), "{retry}");
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "rate_limited");
    assert!(v.get("audit_entry").is_none(), "a 429 is not audited: {v}");
    let (status, _, _) = mzt
        .request_full("GET", "/v1/health", &[], None)
        .await
        .expect("request");
    assert_eq!(status, 200);
    let mut gjj = connect("xj-gjj").await;
    let (status, _) = gjj
        .request("GET", "/v1/cases", None)
        .await
        .expect("request");
    assert_eq!(status, 200);
    let (_, metrics) = gjj
        .request("GET", "/v1/metrics", None)
        .await
        .expect("metrics");
    let metrics = String::from_utf8(metrics.to_vec()).expect("utf-8");
    assert!(
        metrics.contains("sharebroker_rate_limited_requests_total{agency=\"xj-mzt\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sharebroker_audit_appends_total 4\n"),
        "{metrics}"
    );

    // A request head over the limit: 431 from the HTTP layer, no data.
    let mut fresh = connect("xj-gjj").await;
    let pad = "x".repeat(9000);
    match fresh
        .request_full("GET", "/v1/cases", &[("x-pad", pad.as_str())], None)
        .await
    {
        Ok((status, _, _)) => assert_eq!(status, 431),
        Err(e) => panic!("a large head is answered 431, not dropped: {e}"),
    }
    stop(broker).await;

    // TLS 1.2 when configured.
    let settings = Settings {
        tls_min_version: TlsMinVersion::Tls12,
        ..p.settings.clone()
    };
    let broker = start(&settings).await;
    assert_eq!(
        handshake(broker.addr, client_config(&pki, "xj-mzt", tls12)).await,
        Ok(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        handshake(broker.addr, client_config(&pki, "xj-mzt", tls13)).await,
        Ok(rustls::ProtocolVersion::TLSv1_3)
    );
    stop(broker).await;

    // Plain HTTP, loopback only: the client names its certificate; the
    // officer token is still verified against that certificate's key.
    let settings = Settings {
        insecure_plain_http: true,
        ..p.settings.clone()
    };
    let broker = start(&settings).await;
    let signer =
        client::token_signer(&PkiPaths::new(&pki).client_key("xj-mzt"), "xj-mzt").expect("key");
    let t = signer.mint("mz-1", 300).expect("mint");
    let (status, v) = plain(
        broker.addr,
        Some("xj-mzt"),
        Some(&t),
        "GET",
        "/v1/cases",
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = plain(broker.addr, Some("xj-mzt"), None, "GET", "/v1/cases", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("token_missing")),
        "{v}"
    );
    let (status, v) = plain(
        broker.addr,
        Some("xj-gjj"),
        Some(&t),
        "GET",
        "/v1/cases",
        None,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("token_invalid")),
        "{v}"
    );
    let (status, v) = plain(broker.addr, None, Some(&t), "GET", "/v1/cases", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("unknown_agency")),
        "{v}"
    );
    let (status, v) = plain(
        broker.addr,
        Some("../../etc/passwd"),
        Some(&t),
        "GET",
        "/v1/cases",
        None,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("unknown_agency")),
        "{v}"
    );
    stop(broker).await;
}
