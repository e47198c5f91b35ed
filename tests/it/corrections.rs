//! Corrections (Article 17) end to end over mutual TLS: the handling agency
//! disputes a served value, lookups and pre-fills mark it, the owning agency
//! lists and decides it, a new version from the owner closes it as fixed,
//! and everything survives a restart. Every response is checked against
//! the OpenAPI document.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use sharebroker::api::{AppState, client};
use sharebroker::audit::AuditFilter;
use sharebroker::config::Settings;
use sharebroker::pki::PkiPaths;
use sharebroker::pull;
use sharebroker::seal;

use crate::fixture::{Prepared, check_openapi, prepare};

struct Running {
    state: Arc<AppState>,
    addr: std::net::SocketAddr,
    pki: std::path::PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(settings: &Settings) -> Running {
    let state = Arc::new(AppState::open(settings).await.expect("state"));
    let crate::fixture::Served { addr, stop, server } =
        crate::fixture::serve_tls(settings, state.clone()).await;
    Running {
        state,
        addr,
        pki: settings.pki_dir(),
        stop,
        server,
    }
}

async fn stop(r: Running) {
    let _ = r.stop.send(());
    tokio::time::timeout(Duration::from_secs(15), r.server)
        .await
        .expect("server stops")
        .expect("server task");
    r.state.audit.shutdown();
}

/// One request as `agency` (its own certificate and officer token), checked
/// against the OpenAPI document: (status, JSON body).
async fn call(
    r: &Running,
    agency: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> (u16, Value) {
    let paths = PkiPaths::new(&r.pki);
    let config = client::config(
        &r.pki.join("ca.pem"),
        &paths.client_cert(agency),
        &paths.client_key(agency),
    )
    .expect("client config");
    let mut conn = client::MtlsClient::connect(r.addr, "localhost", config)
        .await
        .expect("connect")
        .with_officer(&format!("{agency}-officer"))
        .with_token_signer(Arc::new(
            client::token_signer(&paths.client_key(agency), agency).expect("token key"),
        ));
    let (status, headers, bytes) = conn
        .request_full(method, path, &[], body.map(Bytes::from))
        .await
        .expect("request");
    check_openapi(method, path, status, &headers, &bytes);
    let v: Value = serde_json::from_slice(&bytes).expect("JSON");
    (status, v)
}

async fn post(r: &Running, agency: &str, path: &str, body: Value) -> (u16, Value) {
    call(r, agency, "POST", path, Some(body.to_string())).await
}

async fn get(r: &Running, agency: &str, path: &str) -> (u16, Value) {
    call(r, agency, "GET", path, None).await
}

fn refused(resp: &(u16, Value), status: u16, code: &str) {
    assert_eq!(resp.0, status, "{}", resp.1);
    assert_eq!(resp.1["error"]["code"], code, "{}", resp.1);
    assert!(resp.1["audit_entry"].is_u64(), "audited: {}", resp.1);
}

async fn open_case(r: &Running, agency: &str, case: &str, item: &str, id: &str) {
    let body = json!({ "case_id": case, "service_item": item, "officer": "o-1", "applicants": [{ "id_number": id }] });
    let resp = post(r, agency, "/v1/cases", body).await;
    assert_eq!(resp.0, 201, "{}", resp.1);
}

/// One field of a lookup under `case`.
async fn field(r: &Running, agency: &str, case: &str, id: &str, dataset: &str, f: &str) -> Value {
    let body = json!({ "subject": { "id_number": id }, "dataset": dataset, "fields": [f] });
    let resp = post(r, agency, &format!("/v1/cases/{case}/lookup"), body).await;
    assert_eq!(resp.0, 200, "{}", resp.1);
    resp.1["data"]["fields"][f].clone()
}

fn corrections_of(resp: &(u16, Value)) -> Vec<Value> {
    assert_eq!(resp.0, 200, "{}", resp.1);
    resp.1["corrections"]
        .as_array()
        .expect("corrections")
        .clone()
}

/// Append a later marriage registration for `id` to the GBK source, so
/// that the next pull serves a different marital status from its owner.
fn register_new_status(sources: &Path, id: &str, name: &str, status: &str) {
    let path = sources.join("marriage_gbk.csv");
    let bytes = std::fs::read(&path).expect("read marriage source");
    let (text, _, bad) = encoding_rs::GBK.decode(&bytes);
    assert!(!bad, "the source is GBK");
    let mut text = text.into_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "CR-TEST-1,{id},{name},,{status},,,2026-11-01,乌鲁木齐市天山区民政局,2026-11-01 09:00:00\n"
    ));
    let (encoded, _, unmappable) = encoding_rs::GBK.encode(&text);
    assert!(!unmappable);
    std::fs::write(&path, encoded).expect("write marriage source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrections_are_filed_marked_routed_decided_and_kept() {
    let Prepared {
        dir: _dir,
        settings,
        applicants,
    } = prepare();
    let r = start(&settings).await;
    let (id1, name1) = applicants[0].clone();
    let (id2, _) = applicants[1].clone();
    let (id3, name3) = applicants[2].clone();

    // Civil affairs handles a marriage registration for id1.
    open_case(&r, "xj-mzt", "MZ-CR-1", "XJ-MZ-0201", &id1).await;
    let name = field(&r, "xj-mzt", "MZ-CR-1", &id1, "population", "name").await;
    assert_eq!(name["value"], name1.as_str());
    assert_eq!(name["source"], "xj-gat");
    assert!(name.get("disputed").is_none(), "{name}");

    let file = |subject: &str, dataset: &str, f: &str, value: &str| {
        json!({
            "subject": { "id_number": subject }, "dataset": dataset, "field": f,
            "disputed_value": value, "claimed_value": "阿不都热依木·买买提",
            "reason": "申请人出示户口簿，姓名与共享数据不一致",
        })
    };
    let path = "/v1/cases/MZ-CR-1/corrections";

    // Bad filings: each precise, audited, and nothing filed.
    refused(
        &post(
            &r,
            "xj-mzt",
            path,
            file(&id1, "population", "name", "someone else"),
        )
        .await,
        409,
        "stale_value",
    );
    refused(
        &post(
            &r,
            "xj-mzt",
            path,
            file(&id1, "population", "nickname", &name1),
        )
        .await,
        422,
        "unknown_field",
    );
    refused(
        &post(&r, "xj-mzt", path, file(&id1, "nowhere", "name", &name1)).await,
        422,
        "unknown_dataset",
    );
    refused(
        &post(&r, "xj-mzt", path, file(&id1, "population", "phone", "x")).await,
        403,
        "fields_denied",
    );
    refused(
        &post(&r, "xj-mzt", path, file(&id2, "population", "name", &name1)).await,
        403,
        "subject_not_in_case",
    );
    refused(
        &post(
            &r,
            "xj-mzt",
            "/v1/cases/NO-SUCH/corrections",
            file(&id1, "population", "name", &name1),
        )
        .await,
        404,
        "case_not_found",
    );
    let mut no_reason = file(&id1, "population", "name", &name1);
    no_reason["reason"] = json!("   ");
    refused(
        &post(&r, "xj-mzt", path, no_reason).await,
        422,
        "invalid_request",
    );
    let mut same = file(&id1, "population", "name", &name1);
    same["claimed_value"] = json!(name1);
    refused(
        &post(&r, "xj-mzt", path, same).await,
        422,
        "invalid_request",
    );
    let mut unknown_key = file(&id1, "population", "name", &name1);
    unknown_key["value"] = json!("x");
    refused(
        &post(&r, "xj-mzt", path, unknown_key).await,
        422,
        "invalid_request",
    );
    refused(
        &call(&r, "xj-mzt", "POST", path, Some("{\"subject\":".into())).await,
        400,
        "malformed_json",
    );
    assert!(corrections_of(&get(&r, "xj-gat", "/v1/corrections").await).is_empty());

    // Filed: open, routed to the household registry (the field's owner).
    let filed = post(&r, "xj-mzt", path, file(&id1, "population", "name", &name1)).await;
    assert_eq!(filed.0, 201, "{}", filed.1);
    let c = &filed.1["correction"];
    let cid = c["id"].as_str().expect("id").to_string();
    assert_eq!(c["state"], "open");
    assert_eq!(c["owner"], "xj-gat");
    assert_eq!(c["agency"], "xj-mzt");
    assert_eq!(c["officer"], "xj-mzt-officer");
    assert_eq!(c["case_id"], "MZ-CR-1");
    assert_eq!(c["field"], "population.name");
    assert_eq!(c["disputed_value"], name1.as_str());
    assert_eq!(c["access"], "clear");
    assert_eq!(c["source"], "xj-gat");
    assert!(c["record"].is_string());
    refused(
        &post(&r, "xj-mzt", path, file(&id1, "population", "name", &name1)).await,
        409,
        "already_disputed",
    );

    // Every response serving the value marks it; the value is untouched.
    let lookup = post(
        &r,
        "xj-mzt",
        "/v1/cases/MZ-CR-1/lookup",
        json!({ "subject": { "id_number": id1 }, "dataset": "population" }),
    )
    .await;
    assert_eq!(lookup.0, 200, "{}", lookup.1);
    let fields = &lookup.1["data"]["fields"];
    assert_eq!(fields["name"]["value"], name1.as_str());
    assert_eq!(fields["name"]["disputed"]["correction"], cid.as_str());
    assert_eq!(fields["name"]["disputed"]["state"], "open");
    assert!(fields["sex"].get("disputed").is_none(), "{fields}");
    seal::verify(&r.state.signer.verifying_key(), &lookup.1).expect("still sealed");
    let prefill = post(&r, "xj-mzt", "/v1/cases/MZ-CR-1/prefill", json!({})).await;
    assert_eq!(prefill.0, 200, "{}", prefill.1);
    let marked: Vec<&Value> = prefill.1["data"]["materials"]
        .as_array()
        .expect("materials")
        .iter()
        .filter_map(|m| m["fields"].get("population.name"))
        .collect();
    assert!(!marked.is_empty(), "{}", prefill.1);
    assert!(
        marked
            .iter()
            .all(|f| f["disputed"]["correction"] == cid.as_str())
    );

    // Routed to the owner only: the filer and a bystander cannot decide.
    let decide = |verb: &str| format!("/v1/corrections/{cid}/{verb}");
    for agency in ["xj-mzt", "xj-gjj"] {
        refused(
            &post(&r, agency, &decide("confirm"), json!({ "reason": "无误" })).await,
            403,
            "not_owner",
        );
    }
    refused(
        &post(&r, "xj-gat", &decide("withdraw"), json!({})).await,
        403,
        "not_filer",
    );
    refused(
        &post(
            &r,
            "xj-gat",
            "/v1/corrections/CR-999999/confirm",
            json!({ "reason": "x" }),
        )
        .await,
        404,
        "correction_not_found",
    );
    refused(
        &post(
            &r,
            "xj-gat",
            "/v1/corrections/CR%20%2F1/confirm",
            json!({ "reason": "x" }),
        )
        .await,
        422,
        "invalid_request",
    );
    refused(
        &call(&r, "xj-gat", "GET", &decide("confirm"), None).await,
        405,
        "method_not_allowed",
    );
    let routed = corrections_of(&get(&r, "xj-gat", "/v1/corrections?state=open").await);
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0]["id"], cid.as_str());
    assert!(
        routed[0]["case_id"].is_null(),
        "the filer's case number is its own"
    );
    assert_eq!(routed[0]["subject"]["key"], id1.as_str());
    assert!(corrections_of(&get(&r, "xj-gjj", "/v1/corrections").await).is_empty());
    assert_eq!(
        corrections_of(&get(&r, "xj-mzt", "/v1/corrections").await).len(),
        1
    );
    refused(
        &get(&r, "xj-gat", "/v1/corrections?state=closed").await,
        400,
        "bad_query",
    );
    refused(
        &get(&r, "xj-gat", "/v1/corrections?limit=0").await,
        400,
        "bad_query",
    );
    refused(
        &post(&r, "xj-gat", &decide("confirm"), json!({})).await,
        422,
        "invalid_request",
    );
    refused(
        &post(
            &r,
            "xj-gat",
            &decide("confirm"),
            json!({ "reason": "x", "fixed_value": "y" }),
        )
        .await,
        422,
        "invalid_request",
    );

    // The owner confirms: no longer disputed.
    let confirmed = post(
        &r,
        "xj-gat",
        &decide("confirm"),
        json!({ "reason": "户籍档案核实无误" }),
    )
    .await;
    assert_eq!(confirmed.0, 200, "{}", confirmed.1);
    assert_eq!(confirmed.1["correction"]["state"], "confirmed");
    assert_eq!(confirmed.1["correction"]["decided_by"], "xj-gat");
    assert_eq!(
        confirmed.1["correction"]["decided_officer"],
        "xj-gat-officer"
    );
    refused(
        &post(&r, "xj-gat", &decide("fix"), json!({})).await,
        409,
        "already_decided",
    );
    let name = field(&r, "xj-mzt", "MZ-CR-1", &id1, "population", "name").await;
    assert!(name.get("disputed").is_none(), "{name}");
    assert!(corrections_of(&get(&r, "xj-gat", "/v1/corrections?state=open").await).is_empty());

    // The filing and the decision are in the audit log.
    let entries = r
        .state
        .audit
        .query(&AuditFilter {
            case_id: Some("MZ-CR-1".into()),
            ..AuditFilter::default()
        })
        .expect("query");
    let filing = entries
        .iter()
        .map(|(_, e)| e)
        .find(|e| e.route == "/v1/cases/{case}/corrections" && e.status == 201)
        .expect("the filing is audited");
    assert_eq!(filing.decision, "allow");
    assert_eq!(filing.fields_clear, vec!["population.name".to_string()]);
    assert!(filing.subject_commitment.is_some());
    let decisions = r
        .state
        .audit
        .query(&AuditFilter {
            agency: Some("xj-gat".into()),
            ..AuditFilter::default()
        })
        .expect("query");
    assert!(
        decisions
            .iter()
            .any(|(_, e)| e.route == "/v1/corrections/{id}/confirm"
                && e.status == 200
                && e.subject_commitment == filing.subject_commitment)
    );

    // A value served masked is disputed as served; a fix is marked until
    // the fix is pulled, and the filer sees the fixed value masked too.
    open_case(&r, "wlmq-zwfw", "ZW-CR-1", "WLMQ-ZW-0001", &id2).await;
    let addr = field(
        &r,
        "wlmq-zwfw",
        "ZW-CR-1",
        &id2,
        "population",
        "household_address",
    )
    .await;
    assert_eq!(addr["access"], "masked");
    let masked = addr["value"].as_str().expect("address").to_string();
    let address_dispute = json!({ "subject": { "id_number": id2 }, "dataset": "population", "field": "household_address",
                "disputed_value": masked, "reason": "申请人已迁居" });
    let filed = post(
        &r,
        "wlmq-zwfw",
        "/v1/cases/ZW-CR-1/corrections",
        address_dispute.clone(),
    )
    .await;
    assert_eq!(filed.0, 201, "{}", filed.1);
    assert_eq!(filed.1["correction"]["access"], "masked");
    assert!(
        filed.1["correction"]["record"].is_null(),
        "a masked value names no record"
    );
    let mid = filed.1["correction"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let new_address = "新疆维吾尔自治区乌鲁木齐市沙依巴克区友好南路1号";
    let fixed = post(
        &r,
        "xj-gat",
        &format!("/v1/corrections/{mid}/fix"),
        json!({ "fixed_value": new_address }),
    )
    .await;
    assert_eq!(fixed.0, 200, "{}", fixed.1);
    assert_eq!(fixed.1["correction"]["state"], "fixed");
    assert_eq!(fixed.1["correction"]["fixed_value"], new_address);
    let seen = corrections_of(&get(&r, "wlmq-zwfw", "/v1/corrections").await);
    assert_eq!(seen.len(), 1);
    assert_ne!(
        seen[0]["fixed_value"], new_address,
        "masked for a masked reader"
    );
    assert!(
        seen[0]["fixed_value"]
            .as_str()
            .expect("masked")
            .contains('*')
    );
    let addr = field(
        &r,
        "wlmq-zwfw",
        "ZW-CR-1",
        &id2,
        "population",
        "household_address",
    )
    .await;
    assert_eq!(
        addr["value"],
        masked.as_str(),
        "stored data is never altered"
    );
    assert_eq!(addr["disputed"]["correction"], mid.as_str());
    assert_eq!(addr["disputed"]["state"], "fixed");
    // Fixed at source, not yet pulled: the same value is not disputed again.
    refused(
        &post(
            &r,
            "wlmq-zwfw",
            "/v1/cases/ZW-CR-1/corrections",
            address_dispute,
        )
        .await,
        409,
        "already_disputed",
    );

    // The housing fund disputes a marital status; a later registration at
    // civil affairs (the owner) is pulled, and the correction closes itself.
    open_case(&r, "xj-gjj", "GJJ-CR-1", "XJ-GJJ-0203", &id3).await;
    let status = field(&r, "xj-gjj", "GJJ-CR-1", &id3, "marriage", "marital_status").await;
    let old = status["value"].as_str().expect("a status").to_string();
    let filed = post(
        &r,
        "xj-gjj",
        "/v1/cases/GJJ-CR-1/corrections",
        json!({ "subject": { "id_number": id3 }, "dataset": "marriage", "field": "marital_status",
                "disputed_value": old, "reason": "申请人出示离婚证" }),
    )
    .await;
    assert_eq!(filed.0, 201, "{}", filed.1);
    assert_eq!(filed.1["correction"]["owner"], "xj-mzt");
    let gid = filed.1["correction"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (raw, new) = if old == "已婚" {
        ("离婚", "离婚")
    } else {
        ("结婚", "已婚")
    };
    register_new_status(&settings.sources_dir(), &id3, &name3, raw);
    let pulling = settings.clone();
    tokio::task::spawn_blocking(move || pull::run_configured(&pulling, &[], false))
        .await
        .expect("join")
        .expect("pull");
    // Loaded and settled when this returns (or by the broker's own poll,
    // which this waits for).
    r.state.reload_tables().await;
    let status = field(&r, "xj-gjj", "GJJ-CR-1", &id3, "marriage", "marital_status").await;
    assert_eq!(status["value"], new);
    assert!(status.get("disputed").is_none(), "{status}");
    let mine = corrections_of(&get(&r, "xj-gjj", "/v1/corrections?state=fixed").await);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["id"], gid.as_str());
    assert_eq!(mine[0]["decided_by"], "xj-mzt");
    assert!(mine[0]["decided_officer"].is_null());
    assert!(mine[0]["fixed_in_version"].is_u64(), "{}", mine[0]);

    // A restart keeps every correction and what is still marked.
    stop(r).await;
    let r = start(&settings).await;
    let all = corrections_of(&get(&r, "xj-gat", "/v1/corrections").await);
    let states: Vec<(&str, &str)> = all
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or(""),
                c["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![(cid.as_str(), "confirmed"), (mid.as_str(), "fixed")]
    );
    let addr = field(
        &r,
        "wlmq-zwfw",
        "ZW-CR-1",
        &id2,
        "population",
        "household_address",
    )
    .await;
    assert_eq!(addr["disputed"]["state"], "fixed");
    let name = field(&r, "xj-mzt", "MZ-CR-1", &id1, "population", "name").await;
    assert!(name.get("disputed").is_none(), "{name}");
    stop(r).await;
}
