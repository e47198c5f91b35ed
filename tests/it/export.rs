//! Bulk exports end to end over mutual TLS: a grant applied for and
//! approved through the API, the export streamed with exactly the granted
//! columns and masked values masked, sealed by a trailer that verifies
//! (and fails on a tampered body), audited with its row count before the
//! data; refusals carry no data; Arrow and Parquet both decode; HTTP/2
//! carries the seal without `TE: trailers`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StringArray};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use sharebroker::api::export::{self, SEAL_TRAILER};
use sharebroker::api::{AppState, client};
use sharebroker::audit::{AuditFilter, AuditLog};
use sharebroker::catalog::{MaskKind, SubjectKind};
use sharebroker::ingest::{COL_KEY, Golden};
use sharebroker::pki::PkiPaths;
use sharebroker::policy::mask::mask;
use sharebroker::store::{LoadedTable, TableStore};

use crate::fixture::{Prepared, check_openapi, prepare};

struct Broker {
    addr: std::net::SocketAddr,
    pki: std::path::PathBuf,
    store: std::path::PathBuf,
    audit: Arc<AuditLog>,
    public: sharebroker::seal::PublicKey,
    applicants: Vec<(String, String)>,
    state: Arc<AppState>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Broker {
    start_with(|_| {}).await
}

async fn start_with(change: impl FnOnce(&mut sharebroker::config::Settings)) -> Broker {
    let Prepared {
        dir,
        mut settings,
        applicants,
    } = prepare();
    change(&mut settings);
    let state = Arc::new(AppState::open(&settings).await.expect("state"));
    let (audit, public) = (state.audit.clone(), state.signer.verifying_key());
    let crate::fixture::Served { addr, stop, server } =
        crate::fixture::serve_tls(&settings, state.clone()).await;
    Broker {
        addr,
        state,
        pki: settings.pki_dir(),
        store: settings.store_dir(),
        audit,
        public,
        applicants,
        stop,
        server,
        _dir: dir,
    }
}

async fn connect(b: &Broker, agency: &str) -> client::MtlsClient {
    let paths = PkiPaths::new(&b.pki);
    let config = client::config(
        &paths.ca_cert(),
        &paths.client_cert(agency),
        &paths.client_key(agency),
    )
    .expect("client config");
    client::MtlsClient::connect(b.addr, "localhost", config)
        .await
        .expect("connect")
        .with_token_signer(Arc::new(
            client::token_signer(&paths.client_key(agency), agency).expect("token key"),
        ))
}

/// One response: status, headers, whole body, trailers; checked against
/// the OpenAPI document.
struct Got {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
    trailers: Option<hyper::HeaderMap>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no header {name}"))
    }

    fn seal(&self) -> Value {
        let trailer = self
            .trailers
            .as_ref()
            .and_then(|t| t.get(SEAL_TRAILER))
            .and_then(|v| v.to_str().ok())
            .expect("a complete export ends with its seal trailer");
        export::parse_export_seal(trailer).expect("seal parses")
    }
}

async fn get(b: &Broker, agency: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut conn = connect(b, agency).await;
    let resp = conn
        .send("GET", path, headers, None)
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let resp_headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.expect("whole body");
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    check_openapi("GET", path, status, &resp_headers, &body);
    Got {
        status,
        headers: resp_headers,
        body,
        trailers,
    }
}

const TE: &[(&str, &str)] = &[("te", "trailers")];

async fn post(b: &Broker, agency: &str, path: &str, body: Value) -> Value {
    let mut conn = connect(b, agency).await;
    let (status, headers, bytes) = conn
        .request_full("POST", path, &[], Some(Bytes::from(body.to_string())))
        .await
        .expect("request");
    check_openapi("POST", path, status, &headers, &bytes);
    assert!(
        status < 300,
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).expect("json")
}

fn column<'a>(batches: &'a [RecordBatch], name: &str) -> Vec<Option<&'a str>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}"))
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("strings");
            (0..c.len()).map(move |i| (!c.is_null(i)).then(|| c.value(i)))
        })
        .collect()
}

/// The keys of the current person version in stored order, duplicates
/// included.
fn stored_keys(store: &TableStore) -> Vec<String> {
    let manifest = store
        .current(Golden::table(SubjectKind::Person))
        .expect("manifest")
        .expect("a person table");
    let mut keys = Vec::new();
    store
        .read_each(&manifest, &mut |batch| {
            let col = batch
                .column_by_name(COL_KEY)
                .expect("key column")
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("strings")
                .clone();
            keys.extend(
                (0..col.len())
                    .filter(|&i| !col.is_null(i))
                    .map(|i| col.value(i).to_string()),
            );
            Ok(())
        })
        .expect("read");
    keys
}

fn refused(g: &Got, status: u16, code: &str) {
    assert_eq!(g.status, status, "{}", String::from_utf8_lossy(&g.body));
    let v = g.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v.get("data").is_none() && v["audit_entry"].is_u64(), "{v}");
    assert!(g.headers.get("x-sharebroker-rows").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_stream_granted_fields_masked_sealed_and_audited() {
    let b = start().await;
    // The one-window counter applies for 民族 in bulk; public security approves.
    let applied = post(
        &b,
        "wlmq-zwfw",
        "/v1/applications",
        json!({ "dataset": "population", "fields": ["ethnicity"], "purpose": "WLMQ-ZW-0001",
                "valid_until": "2099-12-31", "reason": "counter statistics by 民族" }),
    )
    .await;
    let grant = applied["application"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let path = format!("/v1/exports/population?grant={grant}");
    // Not yet approved: no grant, no data.
    refused(&get(&b, "wlmq-zwfw", &path, TE).await, 403, "no_grant");
    post(
        &b,
        "xj-gat",
        &format!("/v1/applications/{grant}/approve"),
        json!({}),
    )
    .await;

    let g = get(&b, "wlmq-zwfw", &path, TE).await;
    assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
    assert_eq!(g.header("content-type"), export::ARROW_STREAM);
    // Exactly the granted columns: the counter reads names in clear,
    // identifiers and addresses masked; 民族 has an application but no rule.
    let fields: Value = serde_json::from_str(g.header("x-sharebroker-fields")).expect("json");
    assert_eq!(
        fields,
        json!([
            { "field": "id_number", "access": "masked" },
            { "field": "name", "access": "clear" },
            { "field": "household_address", "access": "masked" },
        ])
    );
    let withheld: Value = serde_json::from_str(g.header("x-sharebroker-withheld")).expect("json");
    let withheld: BTreeSet<&str> = withheld
        .as_array()
        .expect("array")
        .iter()
        .map(|w| w["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        withheld,
        BTreeSet::from(["sex", "birth_date", "ethnicity", "phone"])
    );
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(g.body.clone()), None)
            .expect("an Arrow IPC stream");
    let schema = reader.schema();
    assert_eq!(
        schema.metadata()["sharebroker.audit_entry"],
        g.header("x-sharebroker-audit-entry")
    );
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id_number", "name", "household_address"]);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows.to_string(), g.header("x-sharebroker-rows"));
    assert!(rows >= b.applicants.len(), "{rows} rows");
    // Row for row what the stored version holds, read through lookups'
    // own path (`row(key)`), masked as the catalogue says.
    let store = TableStore::open_local(&b.store).expect("store");
    let manifest = store
        .current(Golden::table(SubjectKind::Person))
        .expect("manifest")
        .expect("a person table");
    assert_eq!(
        manifest.version.to_string(),
        g.header("x-sharebroker-dataset-version")
    );
    let table = LoadedTable::load(&store, manifest, COL_KEY).expect("load");
    let keys = stored_keys(&store);
    // A key stored twice is served (and exported) at its last row.
    let last: HashMap<&str, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let mut expected: Vec<[Option<String>; 3]> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if last[key.as_str()] != i {
            continue;
        }
        let row = table.row(key).expect("row of a stored key");
        let cell = |f: &str| row.get(&format!("population.{f}"));
        let values = [
            cell("id_number").map(|v| mask(MaskKind::IdNumber, v)),
            cell("name").map(str::to_string),
            cell("household_address").map(|v| mask(MaskKind::Address, v)),
        ];
        if values.iter().any(Option::is_some) {
            expected.push(values);
        }
    }
    let ids = column(&batches, "id_number");
    let got: Vec<[Option<String>; 3]> = ids
        .iter()
        .zip(column(&batches, "name"))
        .zip(column(&batches, "household_address"))
        .map(|((i, n), a)| {
            [
                i.map(str::to_string),
                n.map(str::to_string),
                a.map(str::to_string),
            ]
        })
        .collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the export is the stored rows, masked");
    for (id, _) in &b.applicants {
        assert!(
            ids.contains(&Some(mask(MaskKind::IdNumber, id).as_str())),
            "an applicant's row is exported"
        );
        assert!(
            !ids.contains(&Some(id.as_str())),
            "no ID number leaves in clear"
        );
    }
    for addr in column(&batches, "household_address").into_iter().flatten() {
        assert!(addr.ends_with("****"), "address masked: {addr}");
    }
    // The seal: signed by the broker over the body's SHA-256, the version,
    // the audit entry and the policy; a tampered body fails.
    let seal = g.seal();
    let sealed = export::verify_export_seal(&b.public, &seal, &mut g.body.as_ref())
        .expect("the export verifies");
    assert_eq!(sealed["export"]["rows"], json!(rows));
    assert_eq!(
        sealed["export"]["dataset_version"].to_string(),
        g.header("x-sharebroker-dataset-version")
    );
    assert_eq!(
        sealed["meta"]["audit_entry"].to_string(),
        g.header("x-sharebroker-audit-entry")
    );
    assert_eq!(
        sealed["meta"]["policy_version"],
        g.header("x-sharebroker-policy-version")
    );
    let mut tampered = g.body.to_vec();
    let last = tampered.len() - 20;
    tampered[last] ^= 0x01;
    assert!(matches!(
        export::verify_export_seal(&b.public, &seal, &mut tampered.as_slice()),
        Err(export::ExportSealError::Digest)
    ));
    // One audit entry, durable, with who, what, why and how many.
    let index: u64 = g
        .header("x-sharebroker-audit-entry")
        .parse()
        .expect("index");
    let entries: HashMap<u64, _> = b
        .audit
        .query(&AuditFilter::default())
        .expect("query")
        .into_iter()
        .collect();
    let e = &entries[&index];
    assert_eq!(
        (e.agency.as_str(), e.route.as_str(), e.decision.as_str()),
        ("wlmq-zwfw", "/v1/exports/{dataset}", "allow")
    );
    assert_eq!(e.rows_out as usize, rows);
    assert_eq!(e.service_item.as_deref(), Some("WLMQ-ZW-0001"));
    assert_eq!(
        e.fields_masked,
        ["population.id_number", "population.household_address"]
    );
    assert_eq!(e.fields_clear, ["population.name"]);
    assert!(
        e.rule
            .as_deref()
            .expect("rule")
            .contains(&format!("grant {grant}"))
    );
    assert_eq!(
        e.dataset_version.map(|v| v.to_string()).as_deref(),
        Some(g.header("x-sharebroker-dataset-version"))
    );

    // Parquet, narrowed to two fields, in the order asked.
    let g = get(
        &b,
        "wlmq-zwfw",
        &format!("{path}&format=parquet&fields=name,id_number"),
        TE,
    )
    .await;
    assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
    assert_eq!(g.header("content-type"), export::PARQUET);
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(g.body.clone())
            .expect("a Parquet file")
            .build()
            .expect("reader");
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
    let names: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["name", "id_number"]);
    assert_eq!(
        batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        rows
    );
    assert_eq!(column(&batches, "id_number"), ids, "same rows, same order");
    export::verify_export_seal(&b.public, &g.seal(), &mut g.body.as_ref())
        .expect("the Parquet export verifies");

    // Refusals: a clear error, audited, and no data.
    let other = "/v1/exports/marriage?grant=APP-2026-0007";
    refused(&get(&b, "wlmq-zwfw", other, TE).await, 403, "no_grant");
    refused(
        &get(&b, "wlmq-zwfw", "/v1/exports/population", TE).await,
        400,
        "bad_query",
    );
    refused(
        &get(&b, "wlmq-zwfw", &format!("{path}&format=csv"), TE).await,
        400,
        "bad_query",
    );
    refused(&get(&b, "wlmq-zwfw", &path, &[]).await, 400, "bad_query");
    refused(
        &get(
            &b,
            "wlmq-zwfw",
            &format!("/v1/exports/nope?grant={grant}"),
            TE,
        )
        .await,
        404,
        "dataset_not_found",
    );
    refused(
        &get(&b, "wlmq-zwfw", &format!("{path}&fields=shoe_size"), TE).await,
        422,
        "unknown_field",
    );
    let g = get(&b, "wlmq-zwfw", &format!("{path}&fields=phone,sex"), TE).await;
    refused(&g, 403, "fields_denied");
    assert_eq!(
        g.json()["error"]["withheld"].as_array().map(Vec::len),
        Some(2)
    );
    refused(
        &get(&b, "wlmq-zwfw", &format!("{path}&purpose=XJ-MZ-0201"), TE).await,
        403,
        "purpose_mismatch",
    );
    // The grant is the counter's: another agency cannot use it.
    refused(&get(&b, "xj-gjj", &path, TE).await, 403, "no_grant");
    // A conditional field under a grant in the repo's applications.toml,
    // for the agency that holds it.
    let g = get(&b, "xj-zrzyt", other, TE).await;
    assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
    let fields: Value = serde_json::from_str(g.header("x-sharebroker-fields")).expect("json");
    assert!(
        fields
            .as_array()
            .expect("array")
            .contains(&json!({ "field": "spouse_name", "access": "clear" })),
        "{fields}"
    );
    export::verify_export_seal(&b.public, &g.seal(), &mut g.body.as_ref()).expect("verifies");

    // A client that goes away mid-stream: the broker carries on.
    let mut conn = connect(&b, "wlmq-zwfw").await;
    let resp = conn.send("GET", &path, TE, None).await.expect("request");
    assert_eq!(resp.status(), 200);
    drop(resp);
    drop(conn);
    let g = get(&b, "wlmq-zwfw", &path, TE).await;
    assert_eq!(g.status, 200);
    export::verify_export_seal(&b.public, &g.seal(), &mut g.body.as_ref()).expect("verifies");

    let _ = b.stop.send(());
    b.server.await.expect("server stops");
}

/// Past the agency's cap 429, past the broker's 503, both before any work,
/// not audited, counted; a finished export gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_past_a_cap_are_refused_until_a_slot_is_free() {
    let b = start_with(|s| {
        s.export_max_running = 2;
        s.export_max_running_per_agency = 1;
    })
    .await;
    let slots = &b.state.limits.exports;
    let path = "/v1/exports/marriage?grant=APP-2026-0007";
    let busy = |g: &Got, status: u16, code: &str| {
        assert_eq!(g.status, status, "{}", String::from_utf8_lossy(&g.body));
        let v = g.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v.get("audit_entry").is_none(), "not audited: {v}");
        assert_eq!(g.header("retry-after"), "5");
        assert!(g.headers.get("x-sharebroker-rows").is_none());
    };
    let entries = b.audit.size();
    // The agency's one slot is held by an export still running.
    let running = slots.take("xj-zrzyt").expect("a free slot");
    busy(
        &get(&b, "xj-zrzyt", path, TE).await,
        429,
        "too_many_exports",
    );
    // Another agency's export holds the broker's second slot: a third
    // agency finds none, whatever it asks for.
    let other = slots.take("wlmq-zwfw").expect("a free slot");
    busy(&get(&b, "xj-gjj", path, TE).await, 503, "exports_busy");
    assert_eq!(b.audit.size(), entries, "refusals by a cap are not audited");
    drop((running, other));

    let g = get(&b, "xj-zrzyt", path, TE).await;
    assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
    export::verify_export_seal(&b.public, &g.seal(), &mut g.body.as_ref()).expect("verifies");
    // The producer gives the slot back right after the trailer.
    let t = std::time::Instant::now();
    while slots.running() > 0 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "a finished export still holds its slot"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let metrics = String::from_utf8(get(&b, "xj-zrzyt", "/v1/metrics", &[]).await.body.to_vec())
        .expect("text");
    for line in [
        "sharebroker_exports_refused_total{agency=\"xj-zrzyt\",cap=\"agency\"} 1",
        "sharebroker_exports_refused_total{agency=\"xj-gjj\",cap=\"broker\"} 1",
        "sharebroker_exports_running 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }

    let _ = b.stop.send(());
    b.server.await.expect("server stops");
}

/// Over HTTP/2 trailers need no `TE` header: the seal arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_exports_carry_the_seal_trailer() {
    let b = start().await;
    let paths = PkiPaths::new(&b.pki);
    let config = client::config(
        &paths.ca_cert(),
        &paths.client_cert("xj-zrzyt"),
        &paths.client_key("xj-zrzyt"),
    )
    .expect("config");
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(b.addr).await.expect("tcp");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("tls");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let token = client::token_signer(&paths.client_key("xj-zrzyt"), "xj-zrzyt")
        .expect("key")
        .mint_at("officer-2", chrono::Utc::now().timestamp(), 300)
        .expect("token");
    let path = "/v1/exports/marriage?grant=APP-2026-0007&format=parquet";
    let req = hyper::Request::builder()
        .method("GET")
        .uri(format!("https://localhost{path}"))
        .header(sharebroker::api::token::HEADER, token)
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let collected = resp.into_body().collect().await.expect("body");
    let seal = collected
        .trailers()
        .and_then(|t| t.get(SEAL_TRAILER))
        .and_then(|v| v.to_str().ok())
        .map(|t| export::parse_export_seal(t).expect("parses"))
        .expect("the seal trailer");
    let body = collected.to_bytes();
    check_openapi("GET", path, status, &headers, &body);
    assert_eq!(status, 200);
    export::verify_export_seal(&b.public, &seal, &mut body.as_ref()).expect("verifies");
    let _ = b.stop.send(());
    b.server.await.expect("server stops");
}
