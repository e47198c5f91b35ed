//! A prepared data directory: generated sources, development PKI and one
//! pull, with the repo's policies and connectors.

use std::path::{Path, PathBuf};

use sharebroker::api::openapi;
use sharebroker::catalog::Catalog;
use sharebroker::config::Settings;
use sharebroker::datagen::{GenOptions, generate};
use sharebroker::pki;
use sharebroker::pull;
use sharebroker::seal;

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

pub struct Prepared {
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    /// (ID number, name) of applicants present in every person source.
    pub applicants: Vec<(String, String)>,
}

/// Generate 1,500 persons, issue certificates for every agency (and one
/// valid certificate naming no agency), and pull everything once.
pub fn prepare() -> Prepared {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        policies_dir: repo("policies"),
        connectors_dir: repo("connectors"),
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    generate(&GenOptions {
        out_dir: settings.sources_dir(),
        persons: 1_500,
        seed: 7,
        progress: false,
    })
    .expect("gen");
    let catalog = Catalog::load(&settings.policies_dir).expect("catalogue");
    let mut names: Vec<String> = catalog
        .agencies
        .iter()
        .flat_map(|a| a.certificate_names.clone())
        .collect();
    names.push("unregistered-agency".into());
    let servers = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    pki::init(&settings.pki_dir(), &names, &servers, false).expect("pki");
    let report = pull::run_configured(&settings, &[], false).expect("pull");
    assert!(report.sources.iter().all(|(_, s)| s.rows > 0), "{report:?}");
    let mut rdr =
        csv::Reader::from_path(settings.sources_dir().join("applicants.csv")).expect("applicants");
    let applicants = rdr
        .records()
        .map(|r| {
            let r = r.expect("row");
            (r[1].to_string(), r[2].to_string())
        })
        .collect();
    Prepared {
        dir,
        settings,
        applicants,
    }
}

/// What a client can prove it received: the audit entry its response
/// named, and the digest the broker audited — the response body without
/// its seal and its entry number, canonical JSON, SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub index: u64,
    pub sha256: String,
}

pub fn receipt(body: &serde_json::Value) -> Receipt {
    let mut v = body.clone();
    let obj = v.as_object_mut().expect("object");
    obj.remove("seal");
    let index = match obj
        .get_mut("meta")
        .and_then(serde_json::Value::as_object_mut)
    {
        Some(meta) => meta.remove("audit_entry"),
        None => obj.remove("audit_entry"),
    }
    .and_then(|i| i.as_u64())
    .expect("every answered request names its audit entry");
    let digest = ring::digest::digest(&ring::digest::SHA256, &seal::canonical_json(&v));
    Receipt {
        index,
        sha256: hex::encode(digest.as_ref()),
    }
}

/// Hold one response to the OpenAPI document the broker serves: its status
/// is declared for the operation, its content type too, and its body is
/// valid against the declared schema. Panics with the reason otherwise.
pub fn check_openapi(
    method: &str,
    path: &str,
    status: u16,
    headers: &hyper::HeaderMap,
    body: &[u8],
) {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Err(e) = openapi::check_response(
        openapi::document(),
        method,
        path,
        status,
        content_type,
        body,
    ) {
        panic!(
            "response does not match the OpenAPI document: {e}\n{}",
            String::from_utf8_lossy(body)
        );
    }
    if let Err(e) =
        openapi::check_response_headers(openapi::document(), method, path, status, headers)
    {
        panic!("response headers do not match the OpenAPI document: {e}");
    }
}

/// A broker serving `state` over mutual TLS on an ephemeral loopback port
/// until `stop` is sent.
pub struct Served {
    pub addr: std::net::SocketAddr,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub server: tokio::task::JoinHandle<()>,
}

pub async fn serve_tls(
    settings: &Settings,
    state: std::sync::Arc<sharebroker::api::AppState>,
) -> Served {
    let tls = sharebroker::api::tls_config_from(settings).expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        sharebroker::api::run(listener, tls, state, async {
            let _ = stopped.await;
        })
        .await
        .expect("server");
    });
    Served { addr, stop, server }
}
