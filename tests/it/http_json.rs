//! The `http_json` connector against a local hyper server (127.0.0.1:0, its
//! own runtime) serving generated records: page, offset and cursor
//! pagination; injected 503s, a 429 with `Retry-After` and a response slower
//! than the timeout, all retried with nothing duplicated or missing; a 404
//! failing at once; a server that stops mid-pull; a malformed record
//! quarantined while the rest continue; the rate limit; and a credential
//! header from the environment that never reaches an error.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Array, StringArray, UInt64Array};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sharebroker::connectors::{
    COL_RECORD_ID, Connector, ConnectorConfig, ConnectorError, ConnectorSpec, HeaderSource,
    HttpJsonSource, Pagination, PullStats, Rejected, SourceKind, build,
};

/// What the server does to one request, by its 1-based number.
#[derive(Clone, Debug)]
enum Fault {
    Status(u16),
    TooMany { retry_after_secs: u64 },
    Delay(Duration),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Paging {
    Page,
    Offset,
    Cursor,
}

struct State {
    records: Vec<Value>,
    paging: Paging,
    faults: HashMap<u32, Fault>,
    /// Stop the whole server when this many pages have been served.
    stop_after_pages: Option<u32>,
    /// The header value a request must carry, if any.
    token: Option<String>,
    requests: AtomicU32,
    pages_served: AtomicU32,
    /// (when, path and query) of every request.
    log: Mutex<Vec<(Instant, String)>>,
    stop: tokio::sync::watch::Sender<bool>,
}

struct TestServer {
    state: Arc<State>,
    port: u16,
    /// Dropped last: ends every task of the server.
    _rt: tokio::runtime::Runtime,
    stopped: Arc<AtomicBool>,
}

impl TestServer {
    fn start(
        records: Vec<Value>,
        paging: Paging,
        faults: HashMap<u32, Fault>,
        stop_after_pages: Option<u32>,
        token: Option<String>,
    ) -> TestServer {
        Self::start_tls(records, paging, faults, stop_after_pages, token, None)
    }

    fn start_tls(
        records: Vec<Value>,
        paging: Paging,
        faults: HashMap<u32, Fault>,
        stop_after_pages: Option<u32>,
        token: Option<String>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> TestServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("server runtime");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let state = Arc::new(State {
            records,
            paging,
            faults,
            stop_after_pages,
            token,
            requests: AtomicU32::new(0),
            pages_served: AtomicU32::new(0),
            log: Mutex::new(Vec::new()),
            stop,
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stopped = Arc::new(AtomicBool::new(false));
        let (st, stopped2) = (state.clone(), stopped.clone());
        rt.spawn(async move {
            let mut stop_rx = stop_rx;
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = stop_rx.changed() => break,
                };
                let st = st.clone();
                let mut conn_stop = stop_rx.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req).await) }
                    });
                    let io: Box<dyn Io> = match tls {
                        None => Box::new(tcp),
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(s) => Box::new(s),
                            Err(_) => return,
                        },
                    };
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stop.changed() => {}
                    }
                });
            }
            // The listener is dropped here: new connections are refused.
            drop(listener);
            stopped2.store(true, Ordering::SeqCst);
        });
        TestServer {
            state,
            port,
            _rt: rt,
            stopped,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> u32 {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn log(&self) -> Vec<(Instant, String)> {
        self.state.log.lock().expect("log").clone()
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

fn query_params(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(st: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let n = st.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    st.log
        .lock()
        .expect("log")
        .push((Instant::now(), target.clone()));
    if let Some(limit) = st.stop_after_pages
        && st.pages_served.load(Ordering::SeqCst) >= limit
    {
        // The server goes away with this request unanswered.
        let _ = st.stop.send(true);
        std::future::pending::<()>().await;
    }
    match st.faults.get(&n) {
        Some(Fault::Status(s)) => {
            return json_response(
                StatusCode::from_u16(*s).expect("status"),
                &json!({"error": "injected"}),
            );
        }
        Some(Fault::TooMany { retry_after_secs }) => {
            let mut r = json_response(StatusCode::TOO_MANY_REQUESTS, &json!({"error": "slow"}));
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from(*retry_after_secs),
            );
            return r;
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        None => {}
    }
    if req.uri().path() != "/items" {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "no such path"}));
    }
    if let Some(token) = &st.token
        && req
            .headers()
            .get("x-api-token")
            .is_none_or(|v| v.as_bytes() != token.as_bytes())
    {
        return json_response(StatusCode::UNAUTHORIZED, &json!({"error": "token"}));
    }
    let q = query_params(&req);
    let num = |k: &str, default: usize| -> usize {
        q.get(k).and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let total = st.records.len();
    let (from, to, next) = match st.paging {
        Paging::Page => {
            let (page, size) = (num("page", 1), num("size", 10));
            let from = ((page.max(1) - 1) * size).min(total);
            (from, (from + size).min(total), Value::Null)
        }
        Paging::Offset => {
            let (off, limit) = (num("offset", 0), num("limit", 10));
            let from = off.min(total);
            (from, (from + limit).min(total), Value::Null)
        }
        Paging::Cursor => {
            // The cursor is an opaque token: "c" and the next index.
            let from = q
                .get("cursor")
                .and_then(|c| c.strip_prefix("c-"))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0usize)
                .min(total);
            let to = (from + 4).min(total);
            let next = if to < total {
                json!(format!("c-{to}"))
            } else {
                // The last page: an empty cursor.
                json!("")
            };
            (from, to, next)
        }
    };
    st.pages_served.fetch_add(1, Ordering::SeqCst);
    json_response(
        StatusCode::OK,
        &json!({
            "data": {"items": st.records[from..to], "total": total},
            "next_cursor": next,
        }),
    )
}

/// `n` generated enterprise records with ids 1..=n.
fn records(n: u64) -> Vec<Value> {
    (1..=n)
        .map(|i| {
            json!({
                "id": i,
                "credit": format!("91650100MA{i:08}"),
                "name": format!("企业{i}"),
                "updated": "2024-05-01T08:00:00Z",
                "capital": i * 1000,
                "active": i % 2 == 0,
                "owner": {"name": format!("法人{i}")},
            })
        })
        .collect()
}

fn spec(name: &str) -> ConnectorSpec {
    ConnectorSpec {
        name: name.to_string(),
        file: PathBuf::from(format!("{name}.toml")),
        agency: "xj-scjgj".into(),
        dataset: "enterprise".into(),
        subject_column: "credit".into(),
        record_id_column: "id".into(),
        as_of_column: "updated".into(),
        columns: vec![
            ("credit".into(), "enterprise.credit_code".into()),
            ("name".into(), "enterprise.name".into()),
            ("capital".into(), "enterprise.registered_capital".into()),
            ("active".into(), "enterprise.status".into()),
            (
                "owner/name".into(),
                "enterprise.legal_representative".into(),
            ),
        ],
        values: HashMap::new(),
        pull_interval: None,
    }
}

/// A source with fast retries and a high rate limit, for tests.
fn source(url: String, pagination: Pagination) -> HttpJsonSource {
    HttpJsonSource {
        url,
        records: "/data/items".into(),
        pagination,
        headers: BTreeMap::new(),
        timeout_secs: 5,
        max_attempts: 4,
        rate_limit_per_sec: 1000.0,
        backoff_initial_ms: 10,
        max_page_bytes: 1 << 20,
        ca_file: None,
    }
}

fn page(size: u64) -> Pagination {
    Pagination::Page {
        param: "page".into(),
        size_param: "size".into(),
        size,
        start: 1,
    }
}

fn connector(name: &str, source: HttpJsonSource) -> Box<dyn Connector> {
    build(
        &ConnectorConfig {
            spec: spec(name),
            source: SourceKind::HttpJson(source),
        },
        std::path::Path::new("."),
    )
}

#[derive(Default, Debug)]
struct Collected {
    /// (position, record id, every batch column by name)
    rows: Vec<(u64, String, BTreeMap<String, String>)>,
    rejected: Vec<Rejected>,
}

impl Collected {
    fn ids(&self) -> Vec<u64> {
        self.rows
            .iter()
            .map(|(_, id, _)| id.parse().expect("numeric id"))
            .collect()
    }
}

fn pull(c: &dyn Connector) -> (Collected, Result<PullStats, ConnectorError>) {
    let mut got = Collected::default();
    let result = c.pull(None, &mut |p| {
        assert!(p.checkpoint.is_none(), "http_json pulls are snapshots");
        let schema = p.batch.schema();
        let pos = p
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .expect("positions");
        for r in 0..p.batch.num_rows() {
            let row: BTreeMap<String, String> = (1..p.batch.num_columns())
                .map(|i| {
                    let a = p
                        .batch
                        .column(i)
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .expect("text");
                    (schema.field(i).name().clone(), a.value(r).to_string())
                })
                .collect();
            got.rows
                .push((pos.value(r), row[COL_RECORD_ID].clone(), row));
        }
        got.rejected.extend(p.rejected);
        Ok(())
    });
    (got, result)
}

fn all_ids(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

#[test]
fn http_json_page_pagination_maps_values() {
    let server = TestServer::start(records(23), Paging::Page, HashMap::new(), None, None);
    let c = connector("page", source(server.url("/items?region=650100"), page(5)));
    c.check().expect("check");
    let (got, result) = pull(c.as_ref());
    let stats = result.expect("pull");
    assert_eq!(got.ids(), all_ids(23));
    assert_eq!(stats.rows, 23);
    assert_eq!(stats.rejected, 0);
    assert!(stats.bytes > 23 * 50, "{stats:?}");
    // check: 1 request; pull: 5 pages (the last short).
    assert_eq!(server.requests(), 1 + 5);
    let log = server.log();
    assert_eq!(log[1].1, "/items?region=650100&page=1&size=5");
    assert_eq!(log[5].1, "/items?region=650100&page=5&size=5");
    let (pos, _, row) = &got.rows[6];
    assert_eq!(*pos, 7);
    assert_eq!(row["__subject"], "91650100MA00000007");
    assert_eq!(row["__as_of"], "2024-05-01T08:00:00Z");
    assert_eq!(row["enterprise.name"], "企业7");
    assert_eq!(row["enterprise.registered_capital"], "7000");
    assert_eq!(row["enterprise.status"], "false");
    assert_eq!(row["enterprise.legal_representative"], "法人7");
}

#[test]
fn http_json_page_pagination_ends_on_an_empty_page() {
    // 20 records in pages of 5: the fifth page is empty and ends the pull.
    let server = TestServer::start(records(20), Paging::Page, HashMap::new(), None, None);
    let c = connector("page_exact", source(server.url("/items"), page(5)));
    let (got, result) = pull(c.as_ref());
    result.expect("pull");
    assert_eq!(got.ids(), all_ids(20));
    assert_eq!(server.requests(), 5);
}

#[test]
fn http_json_offset_pagination() {
    let server = TestServer::start(records(17), Paging::Offset, HashMap::new(), None, None);
    let pagination = Pagination::Offset {
        param: "offset".into(),
        limit_param: "limit".into(),
        limit: 4,
    };
    let c = connector("offset", source(server.url("/items"), pagination));
    let (got, result) = pull(c.as_ref());
    result.expect("pull");
    assert_eq!(got.ids(), all_ids(17));
    let targets: Vec<String> = server.log().into_iter().map(|(_, t)| t).collect();
    assert_eq!(targets.len(), 5);
    assert_eq!(targets[0], "/items?offset=0&limit=4");
    assert_eq!(targets[4], "/items?offset=16&limit=4");
}

#[test]
fn http_json_cursor_pagination() {
    let server = TestServer::start(records(10), Paging::Cursor, HashMap::new(), None, None);
    let pagination = Pagination::Cursor {
        param: "cursor".into(),
        next: "/next_cursor".into(),
    };
    let c = connector("cursor", source(server.url("/items"), pagination));
    let (got, result) = pull(c.as_ref());
    result.expect("pull");
    assert_eq!(got.ids(), all_ids(10));
    let targets: Vec<String> = server.log().into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        targets,
        ["/items", "/items?cursor=c-4", "/items?cursor=c-8"],
        "the first page has no cursor; an empty next cursor ends the pull"
    );
}

#[test]
fn http_json_retries_503_429_and_timeouts_without_loss_or_duplicates() {
    // Requests 2 and 3 get 503, 5 gets 429 with Retry-After: 1, 7 is slower
    // than the 1 s timeout: every one is retried.
    let faults = HashMap::from([
        (2, Fault::Status(503)),
        (3, Fault::Status(503)),
        (
            5,
            Fault::TooMany {
                retry_after_secs: 1,
            },
        ),
        (7, Fault::Delay(Duration::from_millis(2500))),
    ]);
    let server = TestServer::start(records(30), Paging::Page, faults, None, None);
    let mut s = source(server.url("/items"), page(6));
    s.timeout_secs = 1;
    let c = connector("flaky", s);
    let started = Instant::now();
    let (got, result) = pull(c.as_ref());
    result.expect("pull despite faults");
    let mut ids = got.ids();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(n, ids.len(), "duplicated records");
    assert_eq!(ids, all_ids(30));
    // 6 pages (the last empty) + 4 failed attempts.
    assert_eq!(server.requests(), 6 + 4);
    let log = server.log();
    assert!(
        log[5].0 - log[4].0 >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "timeout waited"
    );
}

#[test]
fn http_json_gives_up_after_max_attempts() {
    let faults = (1..=10).map(|n| (n, Fault::Status(502))).collect();
    let server = TestServer::start(records(5), Paging::Page, faults, None, None);
    let c = connector("down", source(server.url("/items?key=s3cret"), page(5)));
    let (_, result) = pull(c.as_ref());
    let err = result.unwrap_err().to_string();
    assert_eq!(server.requests(), 4);
    assert!(err.starts_with("source down: page 1"), "{err}");
    assert!(
        err.contains("gave up after 4 attempts: HTTP status 502 Bad Gateway"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn http_json_404_fails_at_once_without_retries() {
    let server = TestServer::start(records(5), Paging::Page, HashMap::new(), None, None);
    let c = connector("missing", source(server.url("/nope?key=s3cret"), page(5)));
    let (got, result) = pull(c.as_ref());
    let err = result.unwrap_err().to_string();
    assert_eq!(server.requests(), 1, "no retry on 404");
    assert!(got.rows.is_empty());
    assert_eq!(
        err,
        format!(
            "source missing: page 1 (http://127.0.0.1:{}/nope): HTTP status 404 Not Found",
            server.port
        )
    );
    let err = c.check().unwrap_err().to_string();
    assert!(err.contains("404 Not Found"), "{err}");
}

#[test]
fn http_json_server_stopping_mid_pull_is_a_clear_error() {
    let server = TestServer::start(records(40), Paging::Page, HashMap::new(), Some(3), None);
    let c = connector("stops", source(server.url("/items"), page(5)));
    let (got, result) = pull(c.as_ref());
    let err = result.unwrap_err().to_string();
    assert!(server.stopped.load(Ordering::SeqCst), "server stopped");
    // Whatever was emitted before the failure is from the pages served (the
    // caller discards it: a failed snapshot replaces nothing).
    assert!(got.ids().iter().all(|&i| i <= 15), "{:?}", got.ids());
    assert!(
        err.starts_with("source stops: page 4 (http://127.0.0.1:"),
        "{err}"
    );
    assert!(
        err.contains("gave up after 4 attempts: cannot connect"),
        "{err}"
    );
}

#[test]
fn http_json_malformed_records_are_quarantined_and_the_rest_continue() {
    let mut recs = records(12);
    recs[3]["name"] = json!({"zh": "企业4"});
    recs[8].as_object_mut().expect("object").remove("credit");
    recs[10] = json!("not a record");
    let server = TestServer::start(recs, Paging::Page, HashMap::new(), None, None);
    let c = connector("bad_rows", source(server.url("/items"), page(5)));
    let (got, result) = pull(c.as_ref());
    let stats = result.expect("pull");
    assert_eq!(stats.rows, 9);
    assert_eq!(stats.rejected, 3);
    let want: Vec<u64> = (1..=12).filter(|i| ![4, 9, 11].contains(i)).collect();
    assert_eq!(got.ids(), want);
    let positions: Vec<u64> = got.rows.iter().map(|r| r.0).collect();
    assert_eq!(positions, want, "positions are record numbers across pages");
    let rejected: Vec<(u64, &str)> = got
        .rejected
        .iter()
        .map(|r| (r.position, r.reason.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [
            (4, "`name` is an object, not a value"),
            (9, "the subject `credit` is missing or empty"),
            (11, "the record is not a JSON object"),
        ]
    );
    assert!(got.rejected[0].raw.contains(r#""zh":"企业4""#));
    assert_eq!(got.rejected[2].raw, r#""not a record""#);
}

#[test]
fn http_json_rate_limit_spaces_requests() {
    // 9 records in pages of 2: 5 requests at 20/s take at least 4 × 50 ms.
    let server = TestServer::start(records(9), Paging::Page, HashMap::new(), None, None);
    let mut s = source(server.url("/items"), page(2));
    s.rate_limit_per_sec = 20.0;
    let c = connector("limited", s);
    let started = Instant::now();
    let (got, result) = pull(c.as_ref());
    result.expect("pull");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(got.ids(), all_ids(9));
    let log = server.log();
    assert_eq!(log.len(), 5);
    for w in log.windows(2) {
        // Client-side spacing is exact; allow for scheduling on arrival.
        assert!(w[1].0 - w[0].0 >= Duration::from_millis(40), "too close");
    }
}

#[test]
fn http_json_check_names_missing_columns_and_bad_pages() {
    let server = TestServer::start(records(3), Paging::Page, HashMap::new(), None, None);
    let mut sp = spec("cols");
    sp.columns
        .push(("phone".into(), "enterprise.address".into()));
    let c = build(
        &ConnectorConfig {
            spec: sp,
            source: SourceKind::HttpJson(source(server.url("/items"), page(5))),
        },
        std::path::Path::new("."),
    );
    let err = c.check().unwrap_err().to_string();
    assert_eq!(
        err,
        "source cols: column `phone` named in the connector file is not in the source (columns found: active, capital, credit, id, name, owner, updated)"
    );
    let mut s = source(server.url("/items"), page(5));
    s.records = "/data/rows".into();
    let err = connector("ptr", s).check().unwrap_err().to_string();
    assert!(
        err.contains("page 1 (http://127.0.0.1:")
            && err.ends_with("/items): the page has no `records` array at `/data/rows`"),
        "{err}"
    );
    let mut s = source(server.url("/items"), page(5));
    s.max_page_bytes = 100;
    let (_, result) = pull(connector("big", s).as_ref());
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("page 1") && err.contains("larger than max_page_bytes (100 bytes)"),
        "{err}"
    );
}

#[test]
fn http_json_header_from_env_is_sent_and_never_shown() {
    const VAR: &str = "SB_TEST_HTTP_JSON_TOKEN";
    const TOKEN: &str = "tok-9f8e7d6c5b4a";
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var(VAR, TOKEN) };
    let server = TestServer::start(
        records(3),
        Paging::Page,
        HashMap::new(),
        None,
        Some(TOKEN.to_string()),
    );
    let mut s = source(server.url("/items"), page(5));
    s.headers.insert(
        "X-Api-Token".into(),
        HeaderSource::Env(sharebroker::connectors::EnvRef { env: VAR.into() }),
    );
    let (got, result) = pull(connector("token", s.clone()).as_ref());
    result.expect("pull with token");
    assert_eq!(got.ids(), all_ids(3));
    // A wrong token: 401 fails at once, naming neither value.
    s.headers.insert(
        "X-Api-Token".into(),
        HeaderSource::Literal("wrong-value".into()),
    );
    let (_, result) = pull(connector("token", s.clone()).as_ref());
    let err = result.unwrap_err().to_string();
    assert!(err.contains("401 Unauthorized"), "{err}");
    assert!(
        !err.contains("wrong-value") && !err.contains(TOKEN),
        "{err}"
    );
    // An unset variable: named, with no value.
    s.headers.insert(
        "X-Api-Token".into(),
        HeaderSource::Env(sharebroker::connectors::EnvRef {
            env: "SB_TEST_HTTP_JSON_UNSET".into(),
        }),
    );
    let err = connector("token", s).check().unwrap_err().to_string();
    assert_eq!(
        err,
        "source token: credentials: environment variable `SB_TEST_HTTP_JSON_UNSET` (header `X-Api-Token`) is not set or not valid unicode"
    );
}

/// A development PKI in `dir` whose server certificate names 127.0.0.1, and
/// a TLS acceptor serving it.
fn tls_server_pki(dir: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    sharebroker::pki::init(dir, &[], &["localhost".into(), "127.0.0.1".into()], false)
        .expect("pki");
    let paths = sharebroker::pki::PkiPaths::new(dir);
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(paths.server_cert())
        .expect("server cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("server cert");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(paths.server_key()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[test]
fn http_json_https_trusts_only_its_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acceptor = tls_server_pki(&dir.path().join("pki"));
    let server = TestServer::start_tls(
        records(7),
        Paging::Page,
        HashMap::new(),
        None,
        None,
        Some(acceptor),
    );
    let url = format!("https://127.0.0.1:{}/items", server.port);
    let mut s = source(url, page(5));
    s.ca_file = Some(dir.path().join("pki/ca.pem"));
    let (got, result) = pull(connector("tls", s.clone()).as_ref());
    result.expect("pull over https");
    assert_eq!(got.ids(), all_ids(7));
    // Another CA: the certificate is refused at once, not retried.
    sharebroker::pki::init(&dir.path().join("other"), &[], &["localhost".into()], false)
        .expect("other pki");
    s.ca_file = Some(dir.path().join("other/ca.pem"));
    let (_, result) = pull(connector("tls", s).as_ref());
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("TLS handshake failed: invalid peer certificate"),
        "{err}"
    );
    assert!(!err.contains("gave up"), "{err}");
    assert_eq!(server.requests(), 2);
}
