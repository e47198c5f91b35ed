//! End to end: gen → pull → store → policy → HTTPS with mutual TLS → audit.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

use sharebroker::api::{self, AppState};
use sharebroker::audit::AuditLog;
use sharebroker::catalog::{Catalog, SubjectKind};
use sharebroker::connectors;
use sharebroker::datagen::{GenOptions, generate};
use sharebroker::ingest::{COL_KEY, Golden};
use sharebroker::pki::{self, PkiPaths};
use sharebroker::policy::PolicySet;
use sharebroker::policy::cases::CaseBook;
use sharebroker::pull;
use sharebroker::seal::{self, Ed25519Signer, Signer};
use sharebroker::store::{LoadedTable, LocalStore, TableStore};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

struct Broker {
    addr: std::net::SocketAddr,
    pki: PathBuf,
    other_pki: PathBuf,
    audit: Arc<AuditLog>,
    signer_public: Vec<u8>,
    applicants: Vec<(String, String)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Broker {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_path_buf();
    generate(&GenOptions {
        out_dir: data.join("sources"),
        persons: 1_500,
        seed: 7,
        progress: false,
    })
    .expect("gen");
    let catalog = Arc::new(Catalog::load(&repo("policies")).expect("catalogue"));
    let mut names: Vec<String> = catalog
        .agencies
        .iter()
        .flat_map(|a| a.certificate_names.clone())
        .collect();
    names.push("unregistered-agency".into());
    let servers = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    pki::init(&data.join("pki"), &names, &servers, false).expect("pki");
    pki::issue_test_client(&data.join("pki"), "xj-mzt-expired", true).expect("expired client");
    pki::init(
        &data.join("other-pki"),
        &["xj-mzt".to_string()],
        &servers,
        false,
    )
    .expect("other pki");

    let configs = connectors::load_dir(&repo("connectors"), &catalog).expect("connectors");
    let store = LocalStore::open(&data.join("store")).expect("store");
    let report = pull::run(&catalog, &configs, &data, &store, false).expect("pull");
    assert!(report.sources.iter().all(|(_, s)| s.rows > 0), "{report:?}");
    let mut tables = HashMap::new();
    for kind in [SubjectKind::Person, SubjectKind::Organisation] {
        let m = store
            .current(Golden::table(kind))
            .expect("current")
            .expect("a version");
        tables.insert(
            kind,
            Arc::new(
                LoadedTable::new(m.clone(), store.read(&m).expect("read"), COL_KEY).expect("load"),
            ),
        );
    }
    let signer = Ed25519Signer::load_or_create(&data.join("seal/key.pk8")).expect("signer");
    let signer_public = signer.public_key();
    let audit = Arc::new(AuditLog::open(&data.join("audit")).expect("audit"));
    let paths = PkiPaths {
        dir: data.join("pki"),
    };
    let tls = api::tls_config(
        &paths.ca_cert(),
        &paths.server_cert(),
        &paths.server_key(),
        false,
    )
    .expect("tls");
    let state = Arc::new(AppState {
        policy: Arc::new(
            PolicySet::load(&repo("policies"), &catalog)
                .await
                .expect("policy"),
        ),
        catalog,
        cases: CaseBook::open(&data.join("cases.jsonl")).expect("cases"),
        tables,
        audit: audit.clone(),
        signer: Arc::new(signer) as Arc<dyn Signer>,
        max_body_bytes: 64 * 1024,
        request_timeout: Duration::from_secs(30),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        api::run(listener, tls, state, async {
            let _ = stopped.await;
        })
        .await
        .expect("server");
    });
    let mut rdr = csv::Reader::from_path(data.join("sources/applicants.csv")).expect("applicants");
    let applicants = rdr
        .records()
        .map(|r| {
            let r = r.expect("row");
            (r[1].to_string(), r[2].to_string())
        })
        .collect();
    Broker {
        addr,
        pki: data.join("pki"),
        other_pki: data.join("other-pki"),
        audit,
        signer_public,
        applicants,
        stop: Some(stop),
        server,
        _dir: dir,
    }
}

/// A TLS client presenting `client`'s certificate from `pki_dir`, trusting
/// the broker's CA.
fn client_config(broker_pki: &Path, pki_dir: &Path, client: &str) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(broker_pki.join("ca.pem")).expect("ca") {
        roots.add(c.expect("cert")).expect("root");
    }
    let paths = PkiPaths {
        dir: pki_dir.to_path_buf(),
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(paths.client_cert(client))
            .expect("client cert")
            .map(|c| c.expect("cert"))
            .collect();
    let key = PrivateKeyDer::from_pem_file(paths.client_key(client)).expect("client key");
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client auth")
}

/// One request on a fresh mutual-TLS connection: (status, JSON body), or
/// an error when the connection or handshake is refused.
async fn call(
    b: &Broker,
    pki_dir: &Path,
    client: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Value), String> {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(&b.pki, pki_dir, client)));
    let tcp = tokio::net::TcpStream::connect(b.addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("x-officer", "officer-42")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))?;
    Ok((status, value))
}

async fn post(b: &Broker, client: &str, path: &str, body: Value) -> (u16, Value) {
    call(
        b,
        &b.pki,
        client,
        "POST",
        path,
        Some(body.to_string().into_bytes()),
    )
    .await
    .expect("request")
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn assert_refused(resp: &(u16, Value), status: u16, code: &str) {
    assert_eq!(resp.0, status, "{}", resp.1);
    assert_eq!(resp.1["error"]["code"], code, "{}", resp.1);
    assert!(
        !resp.1["error"]["message"].as_str().unwrap_or("").is_empty(),
        "a refusal explains itself: {}",
        resp.1
    );
    assert!(
        resp.1.get("data").is_none(),
        "a refusal carries no data: {}",
        resp.1
    );
    assert!(
        resp.1["audit_entry"].is_u64(),
        "a refusal is audited: {}",
        resp.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_through_mutual_tls_follow_case_policy_and_audit() {
    let mut b = start().await;
    let (id1, name1) = b.applicants[0].clone();
    let (id2, _) = b.applicants[1].clone();
    let mut answered = 0u64;

    // Open a case for a marriage registration.
    let case = json!({ "case_id": "MZ-T-1", "service_item": "XJ-MZ-0201", "officer": "mz-007", "applicants": [{ "id_number": id1 }] });
    let r = post(&b, "xj-mzt", "/v1/cases", case.clone()).await;
    answered += 1;
    assert_eq!(r.0, 201, "{}", r.1);
    assert_eq!(r.1["case"]["role"], "xj-mzt:marriage_registry");
    let r = post(&b, "xj-mzt", "/v1/cases", case).await;
    answered += 1;
    assert_refused(&r, 409, "case_exists");

    // An allowed lookup returns exactly the allowed fields, sealed.
    let lookup = |subject: &str, extra: Value| {
        let mut body = json!({ "subject": { "id_number": subject }, "dataset": "population" });
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        body
    };
    let r = post(
        &b,
        "xj-mzt",
        "/v1/cases/MZ-T-1/lookup",
        lookup(&id1, json!({})),
    )
    .await;
    answered += 1;
    assert_eq!(r.0, 200, "{}", r.1);
    let want: BTreeSet<String> = [
        "id_number",
        "name",
        "sex",
        "birth_date",
        "household_address",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(keys(&r.1["data"]["fields"]), want);
    assert_eq!(r.1["data"]["fields"]["id_number"]["value"], id1.as_str());
    assert_eq!(r.1["data"]["fields"]["name"]["value"], name1.as_str());
    assert_eq!(r.1["data"]["fields"]["name"]["source"], "xj-gat");
    let withheld: BTreeSet<String> = r.1["data"]["withheld"]
        .as_array()
        .expect("withheld")
        .iter()
        .map(|w| w["field"].as_str().expect("field").to_string())
        .collect();
    assert_eq!(
        withheld,
        ["ethnicity", "phone"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert!(r.1["meta"]["audit_entry"].is_u64());
    assert_eq!(
        r.1["meta"]["policy_version"].as_str().map(str::len),
        Some(64)
    );
    seal::verify(&b.signer_public, &r.1).expect("the seal verifies");
    let mut tampered = r.1.clone();
    tampered["data"]["fields"]["name"]["value"] = json!("someone else");
    assert!(
        seal::verify(&b.signer_public, &tampered).is_err(),
        "an altered response fails the seal"
    );

    // Pre-fill: shared materials carry values, the rest is listed.
    let r = post(&b, "xj-mzt", "/v1/cases/MZ-T-1/prefill", json!({})).await;
    answered += 1;
    assert_eq!(r.0, 200, "{}", r.1);
    let must = r.1["data"]["applicant_must_supply"]
        .as_array()
        .expect("list")
        .clone();
    assert!(
        must.iter()
            .any(|m| m.as_str().is_some_and(|s| s.contains("照片"))),
        "{must:?}"
    );
    assert!(
        !must.iter().any(|m| m == "居民身份证"),
        "shared data satisfies the ID card: {must:?}"
    );
    seal::verify(&b.signer_public, &r.1).expect("prefill is sealed");

    // Refusals: no data, a specific reason.
    let r = post(
        &b,
        "xj-mzt",
        "/v1/cases/NO-SUCH-CASE/lookup",
        lookup(&id1, json!({})),
    )
    .await;
    answered += 1;
    assert_refused(&r, 404, "case_not_found");
    let r = post(
        &b,
        "xj-mzt",
        "/v1/cases/MZ-T-1/lookup",
        lookup(&id2, json!({})),
    )
    .await;
    answered += 1;
    assert_refused(&r, 403, "subject_not_in_case");
    let r = post(
        &b,
        "xj-gjj",
        "/v1/cases/MZ-T-1/lookup",
        lookup(&id1, json!({})),
    )
    .await;
    answered += 1;
    assert_refused(&r, 403, "case_not_yours");
    let r = post(
        &b,
        "xj-mzt",
        "/v1/cases/MZ-T-1/lookup",
        lookup(&id1, json!({ "fields": ["phone"] })),
    )
    .await;
    answered += 1;
    assert_refused(&r, 403, "fields_denied");
    assert!(
        r.1["error"]["withheld"][0]["reason"]
            .as_str()
            .expect("reason")
            .contains("不予共享"),
        "{}",
        r.1
    );
    let r = post(
        &b,
        "xj-mzt",
        "/v1/cases/MZ-T-1/lookup",
        lookup(&id1, json!({ "purpose": "XJ-GJJ-0203" })),
    )
    .await;
    answered += 1;
    assert_refused(&r, 403, "purpose_mismatch");

    // Bad input.
    let r = call(
        &b,
        &b.pki,
        "xj-mzt",
        "POST",
        "/v1/cases",
        Some(b"{\"case_id\": ".to_vec()),
    )
    .await
    .expect("request");
    answered += 1;
    assert_refused(&r, 400, "malformed_json");
    let big = format!("{{\"case_id\":\"{}\"}}", "x".repeat(70 * 1024));
    let r = call(
        &b,
        &b.pki,
        "xj-mzt",
        "POST",
        "/v1/cases",
        Some(big.into_bytes()),
    )
    .await
    .expect("request");
    answered += 1;
    assert_refused(&r, 413, "body_too_large");
    let bad_id = json!({ "case_id": "MZ-T-2", "service_item": "XJ-MZ-0201", "officer": "o", "applicants": [{ "id_number": "650102198506150011" }] });
    let r = post(&b, "xj-mzt", "/v1/cases", bad_id).await;
    answered += 1;
    assert_refused(&r, 422, "invalid_identifier");
    assert!(
        r.1["error"]["message"]
            .as_str()
            .expect("message")
            .contains("check"),
        "{}",
        r.1
    );
    let r = post(&b, "xj-mzt", "/v1/cases", json!({ "case_id": "X", "service_item": "XJ-MZ-0201", "officer": "o", "applicants": [], "colour": 1 })).await;
    answered += 1;
    assert_refused(&r, 422, "invalid_request");
    let r = post(&b, "xj-gjj", "/v1/cases", json!({ "case_id": "G-1", "service_item": "XJ-MZ-0201", "officer": "o", "applicants": [{ "id_number": id1 }] })).await;
    answered += 1;
    assert_refused(&r, 403, "not_handling_agency");

    // Certificates: valid but unknown agency; expired; from another CA.
    let r = post(&b, "unregistered-agency", "/v1/cases", json!({})).await;
    answered += 1;
    assert_refused(&r, 403, "unknown_agency");
    let expired = call(&b, &b.pki, "xj-mzt-expired", "GET", "/v1/cases", None).await;
    assert!(
        expired.is_err(),
        "an expired certificate gets no answer: {expired:?}"
    );
    let foreign = call(&b, &b.other_pki, "xj-mzt", "GET", "/v1/cases", None).await;
    assert!(
        foreign.is_err(),
        "a certificate from another CA gets no answer: {foreign:?}"
    );

    // After the case closes, lookups are refused.
    let r = post(&b, "xj-mzt", "/v1/cases/MZ-T-1/close", json!({})).await;
    answered += 1;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = post(
        &b,
        "xj-mzt",
        "/v1/cases/MZ-T-1/lookup",
        lookup(&id1, json!({})),
    )
    .await;
    answered += 1;
    assert_refused(&r, 403, "case_closed");

    // Every answered request has exactly one audit entry.
    assert_eq!(b.audit.size(), answered);

    // The auditor sees every access to the applicant, and only auditors may.
    let r = call(
        &b,
        &b.pki,
        "xj-sjj",
        "GET",
        &format!("/v1/audit?id_number={id1}"),
        None,
    )
    .await
    .expect("audit");
    assert_eq!(r.0, 200, "{}", r.1);
    let entries = r.1["entries"].as_array().expect("entries");
    let routes: Vec<&str> = entries
        .iter()
        .map(|e| e["entry"]["route"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        entries.len(),
        7,
        "lookups and prefill naming the applicant: {routes:?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["entry"]["subject_commitment"].is_string())
    );
    let text = r.1.to_string();
    assert!(
        !text.contains(&id1),
        "the audit log keeps commitments, not ID numbers"
    );
    let r = call(&b, &b.pki, "xj-mzt", "GET", "/v1/audit", None)
        .await
        .expect("audit");
    assert_refused(&r, 403, "not_auditor");

    let _ = b.stop.take().map(|s| s.send(()));
    tokio::time::timeout(Duration::from_secs(15), &mut b.server)
        .await
        .expect("server stops")
        .expect("server task");
}
