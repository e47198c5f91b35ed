//! End to end: gen → pull → store → policy → HTTPS with mutual TLS → audit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use sharebroker::api::token::{self, TokenSigner};
use sharebroker::api::{self, AppState, client};
use sharebroker::audit::{self, AuditLog};
use sharebroker::config::Settings;
use sharebroker::pki::{self, PkiPaths};
use sharebroker::pull;
use sharebroker::seal;

use crate::fixture::{Prepared, check_openapi, prepare, receipt};

struct Broker {
    addr: std::net::SocketAddr,
    pki: PathBuf,
    other_pki: PathBuf,
    audit: Arc<AuditLog>,
    audit_dir: PathBuf,
    signer_public: seal::PublicKey,
    applicants: Vec<(String, String)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// A broker on generated data in a temporary directory, with the repo's
/// policies and connectors, serving in this process on an ephemeral port.
async fn start() -> Broker {
    start_with(|s| s).await
}

/// [`start`] with settings changed by `tweak` (seal algorithm, seal mode).
async fn start_with(tweak: impl FnOnce(Settings) -> Settings) -> Broker {
    let Prepared {
        dir,
        settings,
        applicants,
    } = prepare();
    let data = dir.path().to_path_buf();
    pki::issue_test_client(&settings.pki_dir(), "xj-mzt-expired", true).expect("expired client");
    let servers = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    pki::init(
        &data.join("other-pki"),
        &["xj-mzt".to_string()],
        &servers,
        false,
    )
    .expect("other pki");
    // Pulling one source restages it alone; the golden records are still
    // built from every source, so nothing of the others is lost.
    let partial = pull::run_configured(&settings, &["gat-population".to_string()], false)
        .expect("a partial pull");
    assert_eq!(partial.sources.len(), 1);
    assert!(partial.never_pulled.is_empty(), "{partial:?}");
    assert!(
        partial.subjects.iter().all(|(_, _, new)| *new == 0),
        "same sources, no new subjects: {partial:?}"
    );
    let unknown = pull::run_configured(&settings, &["nope".to_string()], false);
    assert!(
        matches!(unknown, Err(pull::PullSetupError::UnknownSource { .. })),
        "{unknown:?}"
    );

    let settings = tweak(Settings {
        tree_head_interval_secs: 1,
        // Slow request bodies are cut off after 2 s (408).
        request_timeout_secs: 2,
        ..settings
    });
    let state = Arc::new(AppState::open(&settings).await.expect("state"));
    let audit = state.audit.clone();
    let signer_public = state.signer.verifying_key();
    let crate::fixture::Served { addr, stop, server } =
        crate::fixture::serve_tls(&settings, state).await;
    Broker {
        addr,
        pki: settings.pki_dir(),
        other_pki: data.join("other-pki"),
        audit,
        audit_dir: settings.audit_dir(),
        signer_public,
        applicants,
        stop: Some(stop),
        server,
        _dir: dir,
    }
}

/// The officer token a test request carries.
enum Token {
    /// Minted with the client's own key for its agency (officer-1).
    Own,
    /// Exactly this one.
    Fixed(String),
    /// None at all.
    Missing,
}

/// One request on a fresh mutual-TLS connection presenting `client`'s
/// certificate from `pki_dir`, with an officer token minted by the client's
/// own key: (status, JSON body), or an error when the connection or
/// handshake is refused. Every response is checked against the OpenAPI
/// document.
async fn call(
    b: &Broker,
    pki_dir: &Path,
    client: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Value), String> {
    let (status, _, bytes) =
        call_with(b, pki_dir, client, Token::Own, method, path, &[], body).await?;
    Ok((status, json_of(&bytes)?))
}

fn json_of(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

#[allow(clippy::too_many_arguments)]
async fn call_with(
    b: &Broker,
    pki_dir: &Path,
    client: &str,
    token: Token,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<(u16, hyper::HeaderMap, Bytes), String> {
    let paths = PkiPaths {
        dir: pki_dir.to_path_buf(),
    };
    let config = client::config(
        &b.pki.join("ca.pem"),
        &paths.client_cert(client),
        &paths.client_key(client),
    )
    .map_err(|e| e.to_string())?;
    let conn = client::MtlsClient::connect(b.addr, "localhost", config)
        .await
        .map_err(|e| e.to_string())?;
    let mut conn = match token {
        Token::Own => conn.with_token_signer(Arc::new(
            client::token_signer(&paths.client_key(client), client).map_err(|e| e.to_string())?,
        )),
        Token::Fixed(t) => conn.with_fixed_token(Some(t)),
        Token::Missing => conn.with_fixed_token(None),
    };
    let (status, resp_headers, bytes) = conn
        .request_full(method, path, headers, body.map(Bytes::from))
        .await
        .map_err(|e| e.to_string())?;
    check_openapi(method, path, status, &resp_headers, &bytes);
    if status >= 400 {
        // No internal detail in an error: no file path, source location or panic.
        let text = String::from_utf8_lossy(&bytes);
        let data_dir = b
            .audit_dir
            .parent()
            .expect("data dir")
            .display()
            .to_string();
        for leak in [data_dir.as_str(), ".rs:", "panicked", "/tmp/", "os error"] {
            assert!(!text.contains(leak), "error body leaks {leak:?}: {text}");
        }
    }
    Ok((status, resp_headers, bytes))
}

/// A token signer with `client`'s key from the broker's PKI, naming `agency`.
fn signer(b: &Broker, client: &str, agency: &str) -> Arc<TokenSigner> {
    Arc::new(
        client::token_signer(&PkiPaths::new(&b.pki).client_key(client), agency).expect("token key"),
    )
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
    // By default the seal is the audit group commit's: one Ed25519 signature over the
    // batch's Merkle root and the log's head after it, this response's leaf and path.
    assert_eq!(r.1["seal"]["type"], "batch", "{}", r.1["seal"]);
    assert_eq!(r.1["seal"]["alg"], "ed25519");
    check_batch_seal_head(&b, &r.1);
    verify_offline_with_cli(&b, &r.1).await;
    let mut tampered = r.1.clone();
    tampered["data"]["fields"]["name"]["value"] = json!("someone else");
    assert!(
        seal::verify(&b.signer_public, &tampered).is_err(),
        "an altered response fails the seal"
    );

    // Officer tokens: missing, forged, expired, for another agency, too
    // long-lived or garbage → 401 with a specific code, no data, audited.
    let now = chrono::Utc::now().timestamp();
    let own = signer(&b, "xj-mzt", "xj-mzt");
    let bad_tokens = [
        (Token::Missing, "token_missing"),
        // Another agency's key claiming to be xj-mzt's officer: a forgery.
        (
            Token::Fixed(
                signer(&b, "xj-gjj", "xj-mzt")
                    .mint("mz-007", 300)
                    .expect("mint"),
            ),
            "token_invalid",
        ),
        // xj-gjj's own valid token, replayed over xj-mzt's connection.
        (
            Token::Fixed(
                signer(&b, "xj-gjj", "xj-gjj")
                    .mint("gjj-1", 300)
                    .expect("mint"),
            ),
            "token_invalid",
        ),
        (
            Token::Fixed(own.mint_at("mz-007", now - 900, 600).expect("mint")),
            "token_expired",
        ),
        // xj-mzt's key, but naming another agency.
        (
            Token::Fixed(
                signer(&b, "xj-mzt", "xj-gjj")
                    .mint("mz-007", 300)
                    .expect("mint"),
            ),
            "token_wrong_agency",
        ),
        (
            Token::Fixed(own.mint_at("mz-007", now, 3600).expect("mint")),
            "token_invalid",
        ),
        (Token::Fixed("garbage".into()), "token_invalid"),
    ];
    for (t, code) in bad_tokens {
        let (status, headers, bytes) = call_with(
            &b,
            &b.pki,
            "xj-mzt",
            t,
            "POST",
            "/v1/cases/MZ-T-1/lookup",
            &[],
            Some(lookup(&id1, json!({})).to_string().into_bytes()),
        )
        .await
        .expect("request");
        answered += 1;
        let v = json_of(&bytes).expect("json");
        assert_refused(&(status, v.clone()), 401, code);
        assert!(headers.get("www-authenticate").is_some(), "{code}");
        assert!(
            !v.to_string().contains(&name1),
            "no data with a bad token: {v}"
        );
    }

    // Pre-fill: shared materials carry values, the rest is listed.
    let lookup_receipt = receipt(&r.1);
    let lookup_entry = lookup_receipt.index;
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
    // Another agency cannot use this case: for it, the case does not exist.
    assert_refused(&r, 404, "case_not_found");
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

    // The same digits named as a credit code are another subject: a case
    // about "organisation <digits>" opens no door to the person.
    let r = post(&b, "xj-mzt", "/v1/cases", json!({ "case_id": "MZ-T-ORG", "service_item": "XJ-MZ-0201", "officer": "o", "applicants": [{ "credit_code": id2 }] })).await;
    answered += 1;
    assert_eq!(r.0, 201, "{}", r.1);
    let r = post(
        &b,
        "xj-mzt",
        "/v1/cases/MZ-T-ORG/lookup",
        lookup(&id2, json!({})),
    )
    .await;
    answered += 1;
    assert_refused(&r, 403, "subject_not_in_case");
    let r = post(
        &b,
        "xj-mzt",
        "/v1/cases/MZ-T-ORG/lookup",
        json!({ "subject": { "credit_code": id2 }, "dataset": "population" }),
    )
    .await;
    answered += 1;
    assert_refused(&r, 422, "wrong_subject_kind");

    // Conditional sharing, apply and approve: the marriage registry may not
    // read 民族 (conditional) until public security approves an application.
    let ethnicity = lookup(&id1, json!({ "fields": ["ethnicity"] }));
    let r = post(&b, "xj-mzt", "/v1/cases/MZ-T-1/lookup", ethnicity.clone()).await;
    answered += 1;
    assert_refused(&r, 403, "fields_denied");
    let apply = json!({ "dataset": "population", "fields": ["ethnicity"], "purpose": "XJ-MZ-0201", "valid_until": "2099-12-31", "reason": "民族 is recorded on the marriage certificate" });
    let r = post(&b, "xj-mzt", "/v1/applications", apply).await;
    answered += 1;
    assert_eq!(r.0, 201, "{}", r.1);
    assert_eq!(r.1["application"]["status"], "pending");
    assert_eq!(r.1["application"]["provider"], "xj-gat");
    let app_id = r.1["application"]["id"].as_str().expect("id").to_string();
    // A row filter: an approval for area 81… (Hong Kong residence permits)
    // does not open a Xinjiang resident's 民族 under another purpose.
    let with_filter = json!({ "dataset": "population", "fields": ["ethnicity"], "purpose": "XJ-MZ-0305", "valid_until": "2099-12-31", "reason": "r", "area_prefix": "81" });
    let r = post(&b, "xj-mzt", "/v1/applications", with_filter).await;
    answered += 1;
    assert_eq!(r.0, 201, "{}", r.1);
    let filtered_id = r.1["application"]["id"].as_str().expect("id").to_string();
    let r = post(
        &b,
        "xj-gat",
        &format!("/v1/applications/{filtered_id}/approve"),
        json!({}),
    )
    .await;
    answered += 1;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = post(&b, "xj-mzt", "/v1/cases", json!({ "case_id": "MZ-T-SA", "service_item": "XJ-MZ-0305", "role": "social_assistance", "officer": "o", "applicants": [{ "id_number": id1 }] })).await;
    answered += 1;
    assert_eq!(r.0, 201, "{}", r.1);
    let r = post(
        &b,
        "xj-mzt",
        "/v1/cases/MZ-T-SA/lookup",
        lookup(&id1, json!({ "fields": ["ethnicity"] })),
    )
    .await;
    answered += 1;
    assert_refused(&r, 403, "fields_denied");
    assert!(
        r.1["error"]["withheld"][0]["reason"]
            .as_str()
            .expect("reason")
            .contains("area 81"),
        "{}",
        r.1
    );
    let r = post(&b, "xj-mzt", "/v1/applications", json!({ "dataset": "population", "fields": ["ethnicity"], "purpose": "XJ-MZ-0305", "valid_until": "2099-12-31", "reason": "r", "area_prefix": "65x" })).await;
    answered += 1;
    assert_refused(&r, 422, "invalid_request");
    let r = post(
        &b,
        "xj-mzt",
        &format!("/v1/applications/{app_id}/approve"),
        json!({}),
    )
    .await;
    answered += 1;
    assert_refused(&r, 403, "not_provider");
    let r = post(
        &b,
        "xj-gat",
        &format!("/v1/applications/{app_id}/refuse"),
        json!({}),
    )
    .await;
    answered += 1;
    assert_refused(&r, 422, "invalid_request");
    let r = post(
        &b,
        "xj-gat",
        &format!("/v1/applications/{app_id}/approve"),
        json!({ "reason": "Art. 31: for this item only" }),
    )
    .await;
    answered += 1;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["in_force"], true);
    let r = post(&b, "xj-mzt", "/v1/cases/MZ-T-1/lookup", ethnicity).await;
    answered += 1;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(
        keys(&r.1["data"]["fields"]),
        ["ethnicity".to_string()].into_iter().collect()
    );
    let r = post(
        &b,
        "xj-gat",
        &format!("/v1/applications/{app_id}/approve"),
        json!({}),
    )
    .await;
    answered += 1;
    assert_refused(&r, 409, "already_decided");
    let r = post(&b, "xj-gat", "/v1/applications", json!({ "dataset": "population", "fields": ["ethnicity"], "purpose": "XJ-MZ-0201", "valid_until": "2099-12-31", "reason": "x" })).await;
    answered += 1;
    assert_refused(&r, 422, "invalid_request");

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
    let message = r.1["error"]["message"].as_str().expect("message");
    assert!(message.contains("check character"), "{}", r.1);
    assert!(
        !message.chars().any(|c| c.is_ascii_digit()),
        "no digit of the number is echoed: {message}"
    );
    let r = post(&b, "xj-mzt", "/v1/cases", json!({ "case_id": "X", "service_item": "XJ-MZ-0201", "officer": "o", "applicants": [{ "id_number": id1 }], "colour": 1 })).await;
    answered += 1;
    assert_refused(&r, 422, "invalid_request");
    assert!(
        r.1["error"]["message"]
            .as_str()
            .expect("message")
            .contains("unknown field `colour`"),
        "{}",
        r.1
    );
    let r = post(
        &b,
        "xj-mzt",
        "/v1/cases",
        json!({ "case_id": "X", "service_item": "XJ-MZ-0201", "officer": "o", "applicants": [] }),
    )
    .await;
    answered += 1;
    assert_refused(&r, 422, "invalid_request");
    assert!(
        r.1["error"]["message"]
            .as_str()
            .expect("message")
            .contains("1 to 16 applicants"),
        "{}",
        r.1
    );
    let r = post(&b, "xj-gjj", "/v1/cases", json!({ "case_id": "G-1", "service_item": "XJ-MZ-0201", "officer": "o", "applicants": [{ "id_number": id1 }] })).await;
    answered += 1;
    assert_refused(&r, 403, "not_handling_agency");

    // The one-window counter sees identities masked, as its rules say.
    let r = post(&b, "wlmq-zwfw", "/v1/cases", json!({ "case_id": "ZW-1", "service_item": "WLMQ-ZW-0001", "officer": "zw-3", "applicants": [{ "id_number": id2 }] })).await;
    answered += 1;
    assert_eq!(r.0, 201, "{}", r.1);
    let r = post(
        &b,
        "wlmq-zwfw",
        "/v1/cases/ZW-1/lookup",
        lookup(&id2, json!({})),
    )
    .await;
    answered += 1;
    assert_eq!(r.0, 200, "{}", r.1);
    let fields = &r.1["data"]["fields"];
    assert_eq!(
        keys(fields),
        ["household_address", "id_number", "name"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let masked_id = fields["id_number"]["value"].as_str().expect("id");
    assert_eq!(fields["id_number"]["access"], "masked");
    assert_eq!(masked_id, format!("{}********{}", &id2[..6], &id2[14..]));
    assert_eq!(fields["household_address"]["access"], "masked");
    assert!(
        fields["household_address"]["value"]
            .as_str()
            .expect("address")
            .ends_with("****")
    );
    assert_eq!(fields["name"]["access"], "clear");

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

    // Every answered request has exactly one audit entry, and the log holds
    // no identifier in clear: no run of 15 or more digits anywhere.
    assert_eq!(b.audit.size(), answered);
    let log = std::fs::read_to_string(b.audit_dir.join("log-000001.jsonl")).expect("audit log");
    // Hashes are long hex tokens; an ID number is a token of 15 or 18
    // characters that passes the ID check.
    let id_like = log
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| matches!(t.len(), 15 | 18))
        .find(|t| sharebroker::ingest::normalise::id_number(t).is_ok());
    assert_eq!(id_like, None, "an ID number is in the audit log");
    assert!(!log.contains(&id1) && !log.contains(&id2));

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
        10,
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
    // A signed tree head for anyone; an inclusion proof of the lookup's entry
    // for the auditor, checked here against the head, from the entry itself.
    // The publisher signs a head every second here; wait for one that
    // covers the lookup (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let head = loop {
        let r = call(&b, &b.pki, "xj-gjj", "GET", "/v1/audit/tree-head", None)
            .await
            .expect("tree head");
        assert_eq!(r.0, 200, "{}", r.1);
        let head: audit::TreeHead =
            serde_json::from_value(r.1["tree_head"].clone()).expect("tree head");
        if head.size > lookup_entry {
            break head;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no tree head covers entry {lookup_entry}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    audit::verify_tree_head(&b.signer_public, &head).expect("the head is signed by the broker");
    let r = call(
        &b,
        &b.pki,
        "xj-sjj",
        "GET",
        "/v1/audit?case_id=MZ-T-1",
        None,
    )
    .await
    .expect("entries");
    let stored = r.1["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["index"] == lookup_entry)
        .expect("the lookup's entry");
    let stored: audit::AuditEntry = serde_json::from_value(stored["entry"].clone()).expect("entry");
    assert_eq!(
        stored.response_sha256.as_deref(),
        Some(lookup_receipt.sha256.as_str()),
        "the proven entry is the lookup the client received"
    );
    // The entry proves which officer asked: its token verifies with the
    // agency's certificate (named by fingerprint in the entry).
    assert_eq!(stored.officer.as_deref(), Some("officer-1"));
    let cert_pem = std::fs::read(PkiPaths::new(&b.pki).client_cert("xj-mzt")).expect("cert");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&cert_pem).expect("pem");
    let cert = pem.parse_x509().expect("x509");
    let fingerprint =
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &pem.contents).as_ref());
    assert!(
        stored.certificate.ends_with(&fingerprint),
        "{}",
        stored.certificate
    );
    let at = chrono::DateTime::parse_from_rfc3339(&stored.time)
        .expect("time")
        .timestamp();
    let claims = token::verify(
        stored.officer_token.as_deref().expect("token kept"),
        token::certificate_key(&cert).as_deref(),
        "xj-mzt",
        at,
    )
    .expect("the kept token verifies with the certificate");
    assert_eq!(claims.officer, "officer-1");
    let leaf = audit::merkle::leaf_hash(&serde_json::to_vec(&stored).expect("bytes"));
    let r = call(
        &b,
        &b.pki,
        "xj-sjj",
        "GET",
        &format!(
            "/v1/audit/proof/inclusion?index={lookup_entry}&size={}",
            head.size
        ),
        None,
    )
    .await
    .expect("proof");
    assert_eq!(r.0, 200, "{}", r.1);
    let proof: Vec<Vec<u8>> = r.1["proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(|h| hex::decode(h.as_str().expect("hex")).expect("hex"))
        .collect();
    assert_eq!(
        r.1["leaf_hash"],
        hex::encode(leaf),
        "the leaf the auditor computed is the stored one"
    );
    let root = head.root_bytes().expect("root");
    audit::merkle::verify_inclusion(&leaf, lookup_entry, head.size, &proof, &root)
        .expect("the lookup's entry is in the signed tree");
    let r = call(
        &b,
        &b.pki,
        "xj-mzt",
        "GET",
        "/v1/audit/proof/inclusion?index=0",
        None,
    )
    .await
    .expect("proof");
    assert_refused(&r, 403, "not_auditor");

    // The applicant-facing report and the anomalies, through the API.
    let r = call(
        &b,
        &b.pki,
        "xj-sjj",
        "GET",
        &format!("/v1/audit/report?id_number={id1}"),
        None,
    )
    .await
    .expect("report");
    assert_eq!(r.0, 200, "{}", r.1);
    let accesses = r.1["accesses"].as_array().expect("accesses");
    assert_eq!(accesses.len(), 10);
    assert_eq!(accesses[0]["agency_name"], "新疆维吾尔自治区民政厅");
    assert_eq!(accesses[0]["service_item_name"], "内地居民结婚登记");
    assert!(
        accesses[0]["received"]
            .as_array()
            .expect("labels")
            .iter()
            .any(|l| l == "姓名")
    );
    let r = call(&b, &b.pki, "xj-sjj", "GET", "/v1/audit/anomalies", None)
        .await
        .expect("anomalies");
    assert_eq!(r.0, 200, "{}", r.1);
    let outside = r.1["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .filter(|a| a["kind"] == "outside_case")
        .count();
    assert_eq!(
        outside, 6,
        "lookups refused for want of an open case: {}",
        r.1
    );
    let r = call(&b, &b.pki, "xj-mzt", "GET", "/v1/audit", None)
        .await
        .expect("audit");
    assert_refused(&r, 403, "not_auditor");

    // Operations: the document served is the one embedded; ready; metrics
    // count what was answered (none of these is audited).
    let logged = b.audit.size();
    let (status, _, doc) = call_with(
        &b,
        &b.pki,
        "xj-mzt",
        Token::Missing,
        "GET",
        "/v1/openapi.json",
        &[],
        None,
    )
    .await
    .expect("openapi");
    assert_eq!(status, 200);
    assert_eq!(&json_of(&doc).expect("json"), api::openapi::document());
    let (status, _, ready) = call_with(
        &b,
        &b.pki,
        "unregistered-agency",
        Token::Missing,
        "GET",
        "/v1/ready",
        &[],
        None,
    )
    .await
    .expect("ready");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&ready));
    let (status, headers, metrics) = call_with(
        &b,
        &b.pki,
        "xj-mzt",
        Token::Missing,
        "GET",
        "/v1/metrics",
        &[],
        None,
    )
    .await
    .expect("metrics");
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain")
    );
    let metrics = String::from_utf8(metrics.to_vec()).expect("utf-8");
    let sample = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
            .parse()
            .expect("number")
    };
    assert_eq!(
        sample("sharebroker_audit_appends_total") as u64,
        b.audit.size()
    );
    assert_eq!(
        sample("sharebroker_http_requests_total{route=\"/v1/cases/{case}/lookup\",status=\"401\"}"),
        7.0
    );
    assert!(
        sample("sharebroker_http_requests_total{route=\"/v1/cases/{case}/lookup\",status=\"200\"}")
            >= 3.0
    );
    assert!(sample("sharebroker_audit_batch_size_count") >= 1.0);
    assert_eq!(sample("sharebroker_audit_writable"), 1.0);
    assert!(metrics.contains("sharebroker_table_version{table=\"person\"}"));
    assert!(!metrics.contains(&id1[..10]), "no identifier in metrics");
    assert_eq!(b.audit.size(), logged, "operations routes are not audited");

    // A request body that does not arrive in time: 408, audited, no data.
    let (status, _, bytes) = slow_body(&b, "xj-mzt").await;
    assert_refused(
        &(status, json_of(&bytes).expect("json")),
        408,
        "request_timeout",
    );
    assert_eq!(b.audit.size(), logged + 1);

    // If the audit log cannot be written, nothing is served.
    b.audit.shutdown();
    let r = post(
        &b,
        "wlmq-zwfw",
        "/v1/cases/ZW-1/lookup",
        lookup(&id2, json!({})),
    )
    .await;
    assert_eq!(r.0, 503, "{}", r.1);
    assert_eq!(r.1["error"]["code"], "audit_unavailable");
    let (status, _, ready) = call_with(
        &b,
        &b.pki,
        "xj-mzt",
        Token::Missing,
        "GET",
        "/v1/ready",
        &[],
        None,
    )
    .await
    .expect("ready");
    let ready = json_of(&ready).expect("json");
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["error"]["code"], "not_ready");
    assert!(
        ready["error"]["message"]
            .as_str()
            .expect("message")
            .contains("audit log"),
        "{ready}"
    );
    assert!(
        r.1.get("data").is_none() && !r.1.to_string().contains(&id2[..6]),
        "no data without audit: {}",
        r.1
    );

    let _ = b.stop.take().map(|s| s.send(()));
    tokio::time::timeout(Duration::from_secs(15), &mut b.server)
        .await
        .expect("server stops")
        .expect("server task");
}

/// A batch seal's signed log head is a real head of the broker's audit log, and the
/// response's entry lies within it.
fn check_batch_seal_head(b: &Broker, body: &Value) {
    let log_size = body["seal"]["log_size"].as_u64().expect("log_size");
    let entry = receipt(body).index;
    assert!(entry < log_size, "{}", body["seal"]);
    assert_eq!(
        body["seal"]["log_root"].as_str(),
        Some(hex::encode(b.audit.root_at(log_size).expect("root at size")).as_str())
    );
}

/// `sharebroker seal verify` accepts the response with the key the broker serves at
/// /v1/seal/key, and refuses it once altered, naming why.
async fn verify_offline_with_cli(b: &Broker, body: &Value) {
    let r = call(b, &b.pki, "xj-mzt", "GET", "/v1/seal/key", None)
        .await
        .expect("seal key");
    assert_eq!(r.0, 200, "{}", r.1);
    let published = seal::parse_public_key_file(r.1["key"].as_str().expect("key")).expect("key");
    assert_eq!(published, b.signer_public);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("seal-key.json");
    std::fs::write(&key, r.1.to_string()).expect("write key");
    let run = |doc: &Value| {
        let path = dir.path().join("response.json");
        std::fs::write(&path, doc.to_string()).expect("write response");
        std::process::Command::new(env!("CARGO_BIN_EXE_sharebroker"))
            .args(["seal", "verify", "--key"])
            .arg(&key)
            .arg(&path)
            .output()
            .expect("run sharebroker seal verify")
    };
    let ok = run(body);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success() && stdout.starts_with("seal ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains(b.signer_public.alg().name()), "{stdout}");
    let mut altered = body.clone();
    altered["data"]["altered"] = json!(true);
    let bad = run(&altered);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "an altered response verifies");
    assert!(stderr.contains("does not verify"), "{stderr}");
}

/// SM2/SM3 seals (batch form), and per-response Ed25519 seals, from real responses: each
/// verifies offline with the published key, through the library and the CLI; the signed
/// tree heads use the configured algorithm too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seals_in_sm2_and_per_response_modes() {
    let modes = [
        (seal::Alg::Sm2Sm3, seal::SealMode::Batch),
        (seal::Alg::Ed25519, seal::SealMode::Response),
    ];
    for (alg, mode) in modes {
        let mut b = start_with(|s| Settings {
            seal_algorithm: alg,
            seal_mode: mode,
            ..s
        })
        .await;
        assert_eq!(b.signer_public.alg(), alg);
        let (id1, _) = b.applicants[0].clone();
        let case = json!({ "case_id": "MZ-S-1", "service_item": "XJ-MZ-0201", "officer": "mz-007", "applicants": [{ "id_number": id1 }] });
        let r = post(&b, "xj-mzt", "/v1/cases", case).await;
        assert_eq!(r.0, 201, "{}", r.1);
        let lookup = json!({ "subject": { "id_number": id1 }, "dataset": "population" });
        let r = post(&b, "xj-mzt", "/v1/cases/MZ-S-1/lookup", lookup).await;
        assert_eq!(r.0, 200, "{}", r.1);
        let prefill = post(&b, "xj-mzt", "/v1/cases/MZ-S-1/prefill", json!({})).await;
        assert_eq!(prefill.0, 200, "{}", prefill.1);
        for body in [&r.1, &prefill.1] {
            assert_eq!(body["seal"]["alg"], alg.name(), "{}", body["seal"]);
            match mode {
                seal::SealMode::Batch => {
                    assert_eq!(body["seal"]["type"], "batch");
                    check_batch_seal_head(&b, body);
                }
                seal::SealMode::Response => assert!(body["seal"].get("type").is_none()),
            }
            seal::verify(&b.signer_public, body).expect("the seal verifies");
            let mut tampered = body.clone();
            tampered["meta"]["dataset_version"] = json!(999);
            assert!(seal::verify(&b.signer_public, &tampered).is_err());
            verify_offline_with_cli(&b, body).await;
        }
        // The broker's tree heads are signed with the same key and algorithm.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let head = loop {
            let r = call(&b, &b.pki, "xj-gjj", "GET", "/v1/audit/tree-head", None)
                .await
                .expect("tree head");
            assert_eq!(r.0, 200, "{}", r.1);
            if let Ok(head) = serde_json::from_value::<audit::TreeHead>(r.1["tree_head"].clone()) {
                break head;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no tree head: {}",
                r.1
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(head.alg, alg.name());
        audit::verify_tree_head(&b.signer_public, &head).expect("the head verifies");

        let _ = b.stop.take().map(|s| s.send(()));
        tokio::time::timeout(Duration::from_secs(15), &mut b.server)
            .await
            .expect("server stops")
            .expect("server task");
        let report = audit::verify_dir(&b.audit_dir, Some(&b.signer_public))
            .expect("the log and its heads verify with the published key");
        assert!(report.tree_heads > 0);
    }
}

/// A lookup whose body never finishes arriving: the head says 64 bytes,
/// 10 are sent, then nothing. Returns what the broker answers.
async fn slow_body(b: &Broker, client: &str) -> (u16, hyper::HeaderMap, Bytes) {
    use http_body_util::BodyExt;
    let paths = PkiPaths::new(&b.pki);
    let config = client::config(
        &b.pki.join("ca.pem"),
        &paths.client_cert(client),
        &paths.client_key(client),
    )
    .expect("config");
    let tcp = tokio::net::TcpStream::connect(b.addr)
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("handshake");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("http");
    tokio::spawn(conn);
    let body = Stalled(Some(Bytes::from_static(b"{\"subject\"")));
    let t = signer(b, client, client)
        .mint("officer-1", 300)
        .expect("mint");
    let req = hyper::Request::builder()
        .method("POST")
        .uri("/v1/cases/MZ-T-1/lookup")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("content-length", "64")
        .header(token::HEADER, t)
        .body(body)
        .expect("request");
    let resp = sender
        .send_request(req)
        .await
        .expect("an answer before the body ends");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    check_openapi("POST", "/v1/cases/MZ-T-1/lookup", status, &headers, &bytes);
    (status, headers, bytes)
}

/// A request body that sends its first bytes and then never another.
struct Stalled(Option<Bytes>);

impl hyper::body::Body for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(b) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
            // Never ready again (and never woken): the body stalls.
            None => std::task::Poll::Pending,
        }
    }
}
