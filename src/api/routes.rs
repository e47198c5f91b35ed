//! Routes under `/v1`, the one error shape, and the request tail every
//! answered request goes through: audit (durable) → seal → respond.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::token::{self, TokenError};
use super::{AppState, Caller, Tables};
use crate::audit::{AuditEntry, AuditFilter, AuditSink};
use crate::catalog::{Agency, SubjectKind};
use crate::ingest::{SUFFIX_AS_OF, SUFFIX_RECORD, SUFFIX_SOURCE, identifier_problem, subject_key};
use crate::policy::cases::{Applicant, Case, CaseError};
use crate::policy::{Access, Refusal, authorize_lookup, authorize_prefill, mask::mask};
use crate::seal;
use crate::store::{LoadedTable, Row};

#[path = "corrections.rs"]
mod corrections;

/// A refused or failed request: status, stable code, clear message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub withheld: Vec<(String, String)>,
    /// A policy or case refusal (audited as `deny`), not a failure.
    pub refusal: bool,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            withheld: Vec::new(),
            // Refused for who is asking, not failed: audited as a `deny`.
            refusal: status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED,
        }
    }
}

/// Officer tokens that do not pass are 401s, each with its own code.
impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        let code = match e {
            TokenError::Missing => "token_missing",
            TokenError::Expired => "token_expired",
            TokenError::WrongAgency { .. } => "token_wrong_agency",
            TokenError::Malformed(_)
            | TokenError::BadSignature
            | TokenError::UnsupportedKey
            | TokenError::NotYetValid
            | TokenError::TooLong
            | TokenError::Signing(_) => "token_invalid",
        };
        ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
    }
}

/// The one place where policy refusals become HTTP statuses. Whatever the
/// status, a refusal is audited as a `deny`.
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let status = match r.code {
            "case_not_found" => StatusCode::NOT_FOUND,
            "unknown_dataset" | "unknown_field" | "wrong_subject_kind" | "subject_required" => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            "unknown_service_item" => StatusCode::CONFLICT,
            _ => StatusCode::FORBIDDEN,
        };
        ApiError {
            status,
            code: r.code,
            message: r.reason,
            withheld: r.withheld,
            refusal: true,
        }
    }
}

impl From<CaseError> for ApiError {
    fn from(e: CaseError) -> Self {
        match e {
            CaseError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "case_exists", e.to_string())
            }
            CaseError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "case_not_found", e.to_string())
            }
            CaseError::AlreadyClosed(_) => {
                ApiError::new(StatusCode::CONFLICT, "case_closed", e.to_string())
            }
            CaseError::Journal { .. } => {
                tracing::error!(error = %e, "case journal write failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the case journal cannot be written; try again later",
                )
            }
        }
    }
}

/// The body of every response: a whole JSON (or text) body, or an
/// export's stream.
pub type ResponseBody = Either<Full<Bytes>, super::export::ExportBody>;

/// An error answered without an audit entry (the audit log failed).
pub(super) fn error_response(e: &ApiError) -> Response<ResponseBody> {
    json_response(e.status, &error_body(e)).map(Either::Left)
}

/// What a route produced: status, JSON body, whether to seal it.
struct Reply {
    status: StatusCode,
    body: Body,
    sealed: bool,
}

/// A route's JSON body: a value, or already written as canonical JSON.
enum Body {
    Value(Value),
    Canonical(CanonicalBody),
}

impl From<Value> for Body {
    fn from(v: Value) -> Body {
        Body::Value(v)
    }
}

/// A response body as canonical JSON (`seal::canonical_json`: what its
/// `response_sha256` covers), and where its `audit_entry` number goes: just
/// after the `{` of its `meta` object, or of the body when it has none.
struct CanonicalBody {
    bytes: Vec<u8>,
    entry_at: usize,
}

impl CanonicalBody {
    /// The canonical form of a body; `None` if it is not a JSON object.
    fn of(body: &Value) -> Option<CanonicalBody> {
        debug_assert!(
            body.get(seal::SEAL_KEY).is_none()
                && body.get("audit_entry").is_none()
                && body
                    .get("meta")
                    .is_none_or(|m| m.get("audit_entry").is_none()),
            "a route's body carries no seal or audit entry number of its own"
        );
        seal::canonical_response(body).map(|(bytes, entry_at)| CanonicalBody { bytes, entry_at })
    }

    /// `{"data":…,"meta":…}` written straight from two serialisable parts,
    /// whose members must be declared in the byte order of their names (as
    /// canonical JSON sorts them; checked in debug builds).
    fn data_meta(data: &impl serde::Serialize, meta: &impl serde::Serialize) -> CanonicalBody {
        let mut bytes = Vec::with_capacity(2048);
        bytes.extend_from_slice(b"{\"data\":");
        serde_json::to_writer(&mut bytes, data).expect("writing JSON into a vec cannot fail");
        bytes.extend_from_slice(b",\"meta\":");
        let entry_at = bytes.len() + 1;
        serde_json::to_writer(&mut bytes, meta).expect("writing JSON into a vec cannot fail");
        bytes.push(b'}');
        debug_assert_eq!(
            seal::canonical_json(&serde_json::from_slice(&bytes).expect("written as JSON")),
            bytes,
            "a body written directly is not canonical: are its members declared in name order?"
        );
        CanonicalBody { bytes, entry_at }
    }

    /// The bytes sent: the body with its `audit_entry` number and, when it
    /// is sealed in a batch, its `seal` (written without building a value).
    fn finish(&self, audit_entry: u64, seal: Option<&seal::batch::BatchSeal>) -> Vec<u8> {
        let (head, rest) = self.bytes.split_at(self.entry_at);
        let mut out =
            Vec::with_capacity(self.bytes.len() + 32 + if seal.is_some() { 1024 } else { 0 });
        out.extend_from_slice(head);
        let _ = write!(out, "\"audit_entry\":{audit_entry}");
        if rest.first() != Some(&b'}') {
            out.push(b',');
        }
        // `rest` ends with the body's closing brace; the seal goes before it.
        out.extend_from_slice(&rest[..rest.len() - 1]);
        if let Some(seal) = seal {
            out.extend_from_slice(b",\"seal\":");
            seal.batch.write_seal_json(seal.leaf_index, &mut out);
        }
        out.push(b'}');
        out
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    bytes_response(
        status,
        serde_json::to_vec(body).expect("a JSON value serialises"),
    )
}

fn bytes_response(status: StatusCode, json: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(json)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_body(e: &ApiError) -> Value {
    let mut err = json!({ "code": e.code, "message": e.message });
    if !e.withheld.is_empty() {
        err["withheld"] = withheld_json(&e.withheld);
    }
    json!({ "error": err })
}

fn withheld_json(w: &[(String, String)]) -> Value {
    Value::Array(
        w.iter()
            .map(|(f, r)| json!({ "field": f, "reason": r }))
            .collect(),
    )
}

/// Entry point for every request on every connection: answer, and count
/// the answer in the metrics.
pub async fn handle(
    state: Arc<AppState>,
    caller: Arc<Caller>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let route = route_template(req.uri().path());
    let resp = answer(&state, &caller, req, route).await;
    state
        .metrics
        .record(route, resp.status().as_u16(), started.elapsed());
    resp
}

/// The verified officer token of a request: the signature is checked once
/// per token and connection (of the last [`token::VerifiedTokens::CAPACITY`]
/// distinct ones); time and agency on every request.
fn officer_token(
    caller: &Caller,
    agency: &Agency,
    headers: &hyper::HeaderMap,
) -> Result<(token::Claims, String), TokenError> {
    let raw = headers
        .get(token::HEADER)
        .ok_or(TokenError::Missing)?
        .to_str()
        .map_err(|_| TokenError::Malformed("the header is not visible ascii"))?
        .trim();
    let now = Utc::now().timestamp();
    // std Mutex: a lookup or a store, never held across an `.await`.
    let mut verified = caller
        .verified_tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(claims) = verified.get(raw) {
        token::check_claims(claims, &agency.id, now)?;
        return Ok((claims.clone(), raw.to_string()));
    }
    let claims = token::verify(raw, caller.token_key.as_deref(), &agency.id, now)?;
    verified.insert(raw, claims.clone());
    Ok((claims, raw.to_string()))
}

/// Liveness, readiness, metrics, this API's description and the public seal
/// key carry no data: answered without an agency or officer token, not
/// audited, not rate-limited.
fn operations_route(
    state: &AppState,
    method: &Method,
    path: &str,
) -> Option<Response<Full<Bytes>>> {
    if method != Method::GET {
        return None;
    }
    Some(match path {
        "/v1/health" => json_response(StatusCode::OK, &json!({ "status": "ok" })),
        "/v1/ready" => ready(state),
        "/v1/metrics" => {
            let snapshot = super::metrics::Snapshot {
                audit: state.audit.stats(),
                audit_accepting: state.audit.accepting(),
                audit_entries: state.audit.size(),
                policy_version: &state.policy().version,
                tables: table_versions(state),
                exports_running: state.limits.exports.running(),
            };
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.render(&snapshot))));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/v1/openapi.json" => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                super::openapi::DOCUMENT.as_bytes(),
            )));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        "/v1/seal/key" => {
            let mut r = json_response(
                StatusCode::OK,
                &json!({ "key": seal::public_key_file_contents(state.signer.as_ref()) }),
            );
            r.headers_mut()
                .insert("cache-control", HeaderValue::from_static("max-age=3600"));
            r
        }
        _ => return None,
    })
}

/// (table, version) of every loaded golden table.
fn table_versions(state: &AppState) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = state
        .tables()
        .iter()
        .map(|(k, t)| {
            (
                crate::ingest::Golden::table(*k).to_string(),
                t.manifest.version,
            )
        })
        .collect();
    v.sort();
    v
}

/// Ready once every golden table is loaded and the audit log accepts
/// appends (the policy is loaded before the server starts at all).
fn ready(state: &AppState) -> Response<Full<Bytes>> {
    let mut missing = Vec::new();
    let tables = state.tables();
    for kind in [SubjectKind::Person, SubjectKind::Organisation] {
        if !tables.contains_key(&kind) {
            missing.push(format!(
                "table `{}` is not loaded",
                crate::ingest::Golden::table(kind)
            ));
        }
    }
    if !state.audit.accepting() {
        missing.push("the audit log is not writable".to_string());
    }
    if missing.is_empty() {
        let tables: serde_json::Map<String, Value> = table_versions(state)
            .into_iter()
            .map(|(t, v)| (t, json!(v)))
            .collect();
        json_response(
            StatusCode::OK,
            &json!({ "status": "ready", "policy_version": state.policy().version, "tables": tables }),
        )
    } else {
        let e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("not ready: {}", missing.join("; ")),
        );
        json_response(e.status, &error_body(&e))
    }
}

/// What a request came to before the tail: a JSON reply, or an export
/// ready to stream (its audit entry not yet written).
enum Answered {
    Reply(Reply),
    Export(Box<super::export::Prepared>),
}

/// How long a client refused an export slot should wait: exports take
/// seconds, so sooner is pointless.
const EXPORT_RETRY_AFTER_SECS: u64 = 5;

/// 429 when the agency runs as many exports as it may, 503 when the broker
/// does; both with `Retry-After`.
fn exports_busy(
    state: &AppState,
    agency: &str,
    busy: super::limits::ExportsBusy,
) -> Response<Full<Bytes>> {
    use super::limits::ExportsBusy;
    let secs = EXPORT_RETRY_AFTER_SECS;
    let (status, code, cap, what) = match busy {
        ExportsBusy::Agency(n) => (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_exports",
            "agency",
            format!("this agency already runs {n} exports, as many as it may at once"),
        ),
        ExportsBusy::Broker(n) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "exports_busy",
            "broker",
            format!("the broker already runs {n} exports, as many as it runs at once"),
        ),
    };
    state.metrics.record_export_refused(agency, cap);
    let e = ApiError::new(status, code, format!("{what}; retry after {secs} s"));
    let mut r = json_response(e.status, &error_body(&e));
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    r
}

async fn answer(
    state: &Arc<AppState>,
    caller: &Caller,
    req: Request<Incoming>,
    route: &str,
) -> Response<ResponseBody> {
    let method = req.method().clone();
    if let Some(r) = operations_route(state, &method, req.uri().path()) {
        return r.map(Either::Left);
    }
    // Rate limit per agency, before any work: a 429 is not audited (the
    // audit log must not be the way to flood the broker), only counted.
    let limit_key = caller.agency.as_ref().map_or("unknown", |a| a.id.as_str());
    if let Err(wait) = state.limits.rate.check(limit_key, Instant::now()) {
        state.metrics.record_rate_limited(limit_key);
        let secs = super::limits::retry_after_secs(wait);
        let e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from this agency; retry after {secs} s"),
        );
        let mut r = json_response(e.status, &error_body(&e));
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        return r.map(Either::Left);
    }
    // An export holds a slot from here to its last byte (through its row
    // selection even if the request is given up). Over a cap it is refused
    // before any work and, like a 429 above, not audited.
    let export = super::export::dataset_of(&method, req.uri().path()).map(str::to_string);
    let slot = match (&export, &caller.agency) {
        (Some(_), Some(agency)) => match state.limits.exports.take(&agency.id) {
            Ok(slot) => Some(slot),
            Err(busy) => return exports_busy(state, &agency.id, busy).map(Either::Left),
        },
        _ => None,
    };
    let mut entry = AuditEntry {
        time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        agency: caller
            .agency
            .as_ref()
            .map(|a| a.id.clone())
            .unwrap_or_else(|| "unknown".into()),
        certificate: caller.certificate.clone(),
        method: method.to_string(),
        route: route.to_string(),
        ..AuditEntry::default()
    };
    // Which officer asks: a token signed with the certificate's key. A
    // certificate of no known agency is refused (403) in `dispatch`.
    let officer = caller
        .agency
        .as_ref()
        .map(|agency| officer_token(caller, agency, req.headers()))
        .transpose();
    let result = match officer {
        Err(e) => Err(ApiError::from(e)),
        Ok(claims) => {
            if let Some((claims, token)) = claims {
                entry.officer = Some(claims.officer);
                entry.officer_token = Some(token);
            }
            // One deadline for the whole request: past it while the body
            // is still arriving, the client was slow (408); otherwise the
            // broker was (503).
            let reading_body = AtomicBool::new(false);
            let work = async {
                match &export {
                    Some(dataset) => {
                        super::export::prepare(state, caller, &req, dataset, &mut entry, slot)
                            .await
                            .map(|p| Answered::Export(Box::new(p)))
                    }
                    None => dispatch(state, caller, req, &mut entry, &reading_body)
                        .await
                        .map(Answered::Reply),
                }
            };
            match tokio::time::timeout(state.request_timeout, work).await {
                Ok(r) => r,
                Err(_) if reading_body.load(Ordering::Relaxed) => Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body took too long to arrive",
                )),
                Err(_) => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_timeout",
                    "the broker could not answer in time; try again later",
                )),
            }
        }
    };
    let reply = match result {
        // Exports write their audit entry and stream on their own.
        Ok(Answered::Export(prepared)) => {
            return super::export::respond(state, *prepared, entry).await;
        }
        Ok(Answered::Reply(r)) => match r.body {
            Body::Canonical(c) => Ok((r.status, c, r.sealed)),
            Body::Value(v) => CanonicalBody::of(&v)
                .map(|c| (r.status, c, r.sealed))
                .ok_or_else(|| {
                    tracing::error!(route, "a route answered a body that is not a JSON object");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "internal failure; try again",
                    )
                }),
        },
        Err(e) => Err(e),
    };
    let (status, canonical, sealed) = match reply {
        Ok(reply) => {
            entry.decision = "allow".into();
            reply
        }
        Err(e) => {
            entry.decision = if e.refusal { "deny" } else { "error" }.into();
            entry.code = Some(e.code.to_string());
            entry.reason = Some(e.message.clone());
            // Nothing was released, whatever a route had noted before failing.
            entry.fields_clear.clear();
            entry.fields_masked.clear();
            entry.rows_out = 0;
            let body = CanonicalBody::of(&error_body(&e)).expect("an error body is an object");
            (e.status, body, false)
        }
    };
    entry.status = status.as_u16();
    let mut response_sha256 = [0u8; 32];
    response_sha256
        .copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &canonical.bytes).as_ref());
    entry.response_sha256 = Some(crate::audit::merkle::to_hex(&response_sha256));
    entry.bytes_out = canonical.bytes.len() as u64;
    // Audit before data (invariant 2): nothing leaves until this is durable.
    // A batch-sealed response gets its seal from the group commit that made it durable.
    let appended = if sealed && state.seal_mode == seal::SealMode::Batch {
        state.audit.append_sealed(entry, response_sha256).await
    } else {
        state
            .audit
            .append(entry)
            .await
            .map(|index| crate::audit::Appended { index, seal: None })
    };
    let appended = match appended {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "audit append failed: refusing to serve");
            return error_response(&audit_unavailable());
        }
    };
    let bytes = match (sealed, appended.seal) {
        (true, Some(batch)) => canonical.finish(appended.index, Some(&batch)),
        (true, None) => {
            // A seal per response signs the canonical body with its entry number.
            let mut body: Value = serde_json::from_slice(&canonical.finish(appended.index, None))
                .expect("a finished body is JSON");
            seal::seal(state.signer.as_ref(), &mut body);
            serde_json::to_vec(&body).expect("a JSON value serialises")
        }
        (false, _) => canonical.finish(appended.index, None),
    };
    let mut r = bytes_response(status, bytes);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("OfficerToken header=\"x-officer-token\""),
        );
    }
    r.map(Either::Left)
}

/// The route with ids replaced, for the audit log: never a raw path, which
/// could carry anything a client put in it.
fn route_template(path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "v1", "cases", _, "close"] => "/v1/cases/{case}/close",
        ["", "v1", "cases", _, "lookup"] => "/v1/cases/{case}/lookup",
        ["", "v1", "cases", _, "prefill"] => "/v1/cases/{case}/prefill",
        ["", "v1", "cases", _, "corrections"] => "/v1/cases/{case}/corrections",
        ["", "v1", "cases"] => "/v1/cases",
        ["", "v1", "catalog"] => "/v1/catalog",
        ["", "v1", "audit"] => "/v1/audit",
        ["", "v1", "applications"] => "/v1/applications",
        ["", "v1", "corrections"] => "/v1/corrections",
        ["", "v1", "health"] => "/v1/health",
        ["", "v1", "ready"] => "/v1/ready",
        ["", "v1", "metrics"] => "/v1/metrics",
        ["", "v1", "openapi.json"] => "/v1/openapi.json",
        ["", "v1", "seal", "key"] => "/v1/seal/key",
        ["", "v1", "exports", _] => super::export::ROUTE,
        ["", "v1", "applications", _, "approve"] => "/v1/applications/{id}/approve",
        ["", "v1", "applications", _, "refuse"] => "/v1/applications/{id}/refuse",
        ["", "v1", "corrections", _, "confirm"] => "/v1/corrections/{id}/confirm",
        ["", "v1", "corrections", _, "fix"] => "/v1/corrections/{id}/fix",
        ["", "v1", "corrections", _, "withdraw"] => "/v1/corrections/{id}/withdraw",
        ["", "v1", "audit", "report"] => "/v1/audit/report",
        ["", "v1", "audit", "anomalies"] => "/v1/audit/anomalies",
        ["", "v1", "audit", "tree-head"] => "/v1/audit/tree-head",
        ["", "v1", "audit", "proof", "inclusion"] => "/v1/audit/proof/inclusion",
        ["", "v1", "audit", "proof", "consistency"] => "/v1/audit/proof/consistency",
        _ => "/unmatched",
    }
}

/// A case number as clients send it, in a path or a body: 1–64 ASCII
/// letters, digits, `-` or `_` (anything else never reaches the audit log).
fn valid_case_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "a case id is 1–64 ASCII letters, digits, `-` or `_`",
        ));
    }
    Ok(())
}

/// Read a JSON body of at most `limit` bytes; `reading` is set while the
/// body is arriving (the request deadline is kept by the caller).
async fn read_json<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
    limit: usize,
    reading: &AtomicBool,
) -> Result<T, ApiError> {
    reading.store(true, Ordering::Relaxed);
    let body = Limited::new(req.into_body(), limit).collect().await;
    reading.store(false, Ordering::Relaxed);
    let body = body.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {limit} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "the request body could not be read",
            )
        }
    })?;
    let bytes = body.to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        let code = if e.is_data() {
            "invalid_request"
        } else {
            "malformed_json"
        };
        ApiError::new(status, code, format!("request body: {e}"))
    })
}

/// Run blocking work (fsync, file scans) off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "blocking task failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "internal failure; try again",
        )
    })
}

/// Only auditing agencies read the log and its proofs.
fn require_auditor(agency: &Agency) -> Result<(), ApiError> {
    if agency.auditor {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_auditor",
            format!("`{}` is not an auditing agency", agency.id),
        ))
    }
}

/// The refusal when the audit log cannot be written: fail closed.
pub(super) fn audit_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        "the audit log cannot be written, so no data is served",
    )
}

pub(super) fn require_agency(caller: &Caller) -> Result<&Agency, ApiError> {
    caller.agency.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "unknown_agency",
            "the client certificate is valid but names no agency known to this broker",
        )
    })
}

async fn dispatch(
    state: &Arc<AppState>,
    caller: &Caller,
    req: Request<Incoming>,
    entry: &mut AuditEntry,
    reading: &AtomicBool,
) -> Result<Reply, ApiError> {
    let agency = require_agency(caller)?;
    entry.role = agency.roles.first().cloned().unwrap_or_default();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let parts: Vec<&str> = path.split('/').collect();
    let limit = state.max_body_bytes;
    match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["", "v1", "catalog"]) => Ok(catalog(state)),
        (Method::POST, ["", "v1", "cases"]) => {
            let body: OpenCase = read_json(req, limit, reading).await?;
            open_case(state, agency, body, entry).await
        }
        (Method::GET, ["", "v1", "cases"]) => Ok(Reply {
            status: StatusCode::OK,
            body: json!({ "cases": state.cases.of_agency(&agency.id) }).into(),
            sealed: false,
        }),
        (Method::POST, ["", "v1", "cases", id, "close"]) => {
            valid_case_id(id)?;
            entry.case_id = Some(id.to_string());
            let (st, agency_id, id) = (state.clone(), agency.id.clone(), id.to_string());
            let case = blocking(move || st.cases.close_case(&agency_id, &id, Utc::now())).await??;
            entry.service_item = Some(case.service_item.clone());
            entry.role.clone_from(&case.role);
            Ok(Reply {
                status: StatusCode::OK,
                body: json!({ "case": case }).into(),
                sealed: false,
            })
        }
        (Method::POST, ["", "v1", "cases", id, "lookup"]) => {
            valid_case_id(id)?;
            entry.case_id = Some(id.to_string());
            let id = id.to_string();
            let body: Lookup = read_json(req, limit, reading).await?;
            lookup(state, agency, &id, body, entry).await
        }
        (Method::POST, ["", "v1", "cases", id, "prefill"]) => {
            valid_case_id(id)?;
            entry.case_id = Some(id.to_string());
            let id = id.to_string();
            let body: Prefill = read_json(req, limit, reading).await?;
            prefill(state, agency, &id, body, entry).await
        }
        (Method::POST, ["", "v1", "cases", id, "corrections"]) => {
            valid_case_id(id)?;
            entry.case_id = Some(id.to_string());
            let id = id.to_string();
            let body: corrections::FileCorrection = read_json(req, limit, reading).await?;
            corrections::file(state, agency, &id, body, entry).await
        }
        (Method::GET, ["", "v1", "corrections"]) => corrections::list(state, agency, &query),
        (
            Method::POST,
            [
                "",
                "v1",
                "corrections",
                id,
                verb @ ("confirm" | "fix" | "withdraw"),
            ],
        ) => {
            let (id, verb) = (id.to_string(), verb.to_string());
            let body: corrections::Decision = read_json(req, limit, reading).await?;
            corrections::decide(state, agency, &id, &verb, body, entry).await
        }
        (Method::POST, ["", "v1", "applications"]) => {
            let body: Apply = read_json(req, limit, reading).await?;
            apply(state, agency, body, entry).await
        }
        (Method::GET, ["", "v1", "applications"]) => Ok(Reply {
            status: StatusCode::OK,
            body: json!({ "applications": state.applications.for_agency(&agency.id) }).into(),
            sealed: false,
        }),
        (
            Method::POST,
            [
                "",
                "v1",
                "applications",
                id,
                verdict @ ("approve" | "refuse"),
            ],
        ) => {
            valid_case_id(id)?;
            let (id, approve) = (id.to_string(), *verdict == "approve");
            let body: Decide = read_json(req, limit, reading).await?;
            decide(state, agency, &id, approve, body, entry).await
        }
        (Method::GET, ["", "v1", "audit"]) => {
            audit_view(state, agency, &query, AuditView::Entries).await
        }
        (Method::GET, ["", "v1", "audit", "report"]) => {
            audit_view(state, agency, &query, AuditView::Report).await
        }
        (Method::GET, ["", "v1", "audit", "anomalies"]) => {
            audit_view(state, agency, &query, AuditView::Anomalies).await
        }
        (Method::GET, ["", "v1", "audit", "tree-head"]) => tree_head(state).await,
        (
            Method::GET,
            [
                "",
                "v1",
                "audit",
                "proof",
                kind @ ("inclusion" | "consistency"),
            ],
        ) => {
            let kind = kind.to_string();
            proof(state, agency, &kind, &query)
        }
        (
            _,
            ["", "v1", "catalog"]
            | ["", "v1", "cases"]
            | [
                "",
                "v1",
                "cases",
                _,
                "close" | "lookup" | "prefill" | "corrections",
            ]
            | ["", "v1", "corrections"]
            | ["", "v1", "corrections", _, "confirm" | "fix" | "withdraw"]
            | ["", "v1", "audit"]
            | ["", "v1", "applications"]
            | ["", "v1", "applications", _, "approve" | "refuse"]
            | ["", "v1", "audit", "report" | "anomalies" | "tree-head"]
            | ["", "v1", "audit", "proof", "inclusion" | "consistency"]
            | ["", "v1", "health" | "ready" | "metrics" | "openapi.json"]
            | ["", "v1", "seal", "key"]
            | ["", "v1", "exports", _],
        ) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route; see /v1/openapi.json",
        )),
    }
}

fn catalog(state: &AppState) -> Reply {
    let datasets: Vec<Value> = state
        .catalog
        .datasets
        .iter()
        .map(|d| {
            json!({
                "id": d.id, "name": d.name, "provider": d.provider, "subject": d.subject.as_str(),
                "fields": d.fields.iter().map(|f| json!({
                    "name": f.name, "label": f.label, "sensitivity": f.sensitivity,
                    "share": format!("{:?}", f.share).to_lowercase(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let items: Vec<Value> = state
        .catalog
        .items
        .iter()
        .map(|i| json!({ "code": i.code, "name": i.name, "agency": i.agency, "materials": i.materials.iter().map(|m| &m.name).collect::<Vec<_>>() }))
        .collect();
    Reply {
        status: StatusCode::OK,
        body: json!({ "datasets": datasets, "service_items": items, "policy_version": state.policy().version }).into(),
        sealed: false,
    }
}

/// A subject as a client names it: exactly one identifier.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectRef {
    id_number: Option<String>,
    credit_code: Option<String>,
}

impl SubjectRef {
    /// The normalised identifier, or a 422 whose message carries none of
    /// the identifier's digits (it is returned to the client and audited).
    fn resolve(&self) -> Result<Applicant, ApiError> {
        let (kind, raw) = match (&self.id_number, &self.credit_code) {
            (Some(id), None) => (SubjectKind::Person, id),
            (None, Some(code)) => (SubjectKind::Organisation, code),
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    "a subject names exactly one of `id_number` or `credit_code`",
                ));
            }
        };
        let key = subject_key(kind, raw).map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_identifier",
                identifier_problem(kind, raw),
            )
        })?;
        Ok(Applicant { kind, key })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenCase {
    case_id: String,
    service_item: String,
    applicants: Vec<SubjectRef>,
    officer: String,
    #[serde(default)]
    role: Option<String>,
}

/// A role the caller names, `role` or `agency:role`, as the agency's full
/// role name; 422 when the agency has no such role.
pub(super) fn agency_role(agency: &Agency, role: &str) -> Result<String, ApiError> {
    let full = if role.contains(':') {
        role.to_string()
    } else {
        format!("{}:{role}", agency.id)
    };
    if !agency.roles.contains(&full) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_role",
            format!(
                "{} is not a role of `{}`",
                crate::policy::shown(&full),
                agency.id
            ),
        ));
    }
    Ok(full)
}

async fn open_case(
    state: &Arc<AppState>,
    agency: &Agency,
    body: OpenCase,
    entry: &mut AuditEntry,
) -> Result<Reply, ApiError> {
    valid_case_id(&body.case_id)?;
    entry.case_id = Some(body.case_id.clone());
    if body.officer.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "`officer` names the handling officer",
        ));
    }
    let item = state.catalog.item(&body.service_item).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_service_item",
            format!(
                "there is no service item {}",
                crate::policy::shown(&body.service_item)
            ),
        )
    })?;
    entry.service_item = Some(item.code.clone());
    if item.agency != agency.id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_handling_agency",
            format!(
                "service item `{}` is handled by `{}`, not `{}`",
                item.code, item.agency, agency.id
            ),
        ));
    }
    let role = match &body.role {
        Some(r) => agency_role(agency, r)?,
        None => agency.roles.first().cloned().unwrap_or_default(),
    };
    entry.role.clone_from(&role);
    if body.applicants.is_empty() || body.applicants.len() > 16 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "a case names 1 to 16 applicants",
        ));
    }
    let applicants = body
        .applicants
        .iter()
        .map(SubjectRef::resolve)
        .collect::<Result<Vec<_>, _>>()?;
    let (code, valid_days) = (item.code.clone(), item.case_valid_days);
    let (agency_id, officer) = (agency.id.clone(), body.officer.trim().to_string());
    let st = state.clone();
    // The journal append fsyncs: off the async workers.
    let case = blocking(move || {
        st.cases.open_case(
            &body.case_id,
            &agency_id,
            &role,
            &code,
            applicants,
            &officer,
            valid_days,
            Utc::now(),
        )
    })
    .await??;
    entry.officer.get_or_insert_with(|| case.officer.clone());
    Ok(Reply {
        status: StatusCode::CREATED,
        body: json!({ "case": case }).into(),
        sealed: false,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lookup {
    subject: SubjectRef,
    dataset: String,
    #[serde(default)]
    fields: Option<Vec<String>>,
    #[serde(default)]
    purpose: Option<String>,
}

/// The loaded table of a subject kind in a snapshot of the tables.
fn table(tables: &Tables, kind: SubjectKind) -> Result<Arc<LoadedTable>, ApiError> {
    tables.get(&kind).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no data has been loaded yet: run `sharebroker pull`; the broker picks up a new version within seconds",
        )
    })
}

/// The subject's audit commitment. Creating one fsyncs a salt, so it runs
/// off the async workers; it is asked only for applicants of an open case
/// of the caller. If it cannot be written, nothing is served.
async fn commitment(state: &Arc<AppState>, key: &str) -> Result<String, ApiError> {
    // Hot path: the salt exists (a lookup in memory, no I/O).
    if let Some(c) = state.audit.lookup_commitment(key) {
        return Ok(c);
    }
    let (st, key) = (state.clone(), key.to_string());
    blocking(move || st.audit.commit_subject(&key))
        .await?
        .map_err(|e| {
            tracing::error!(error = %e, "audit salt write failed: refusing to serve");
            audit_unavailable()
        })
}

/// Record a served field in the audit entry, by qualified name.
fn record_served(entry: &mut AuditEntry, qualified: &str, access: Access) {
    match access {
        Access::Clear => entry.fields_clear.push(qualified.to_string()),
        Access::Masked(_) => entry.fields_masked.push(qualified.to_string()),
    }
}

/// One served field: value (masked as granted) and provenance.
fn field_json(row: &Row<'_>, qualified: &str, access: Access) -> Value {
    let value = row.get(qualified);
    let shown = match (value, access) {
        (Some(v), Access::Clear) => json!(v),
        (Some(v), Access::Masked(kind)) => json!(mask(kind, v)),
        (None, _) => Value::Null,
    };
    let cell = |suffix: &str| row.get(&format!("{qualified}{suffix}"));
    // A source record id can be the masked value itself (a register keyed
    // by credit code), so masked fields do not name their record.
    let record = match access {
        Access::Clear => cell(SUFFIX_RECORD),
        Access::Masked(_) => None,
    };
    json!({
        "value": shown,
        "access": match access { Access::Clear => "clear", Access::Masked(_) => "masked" },
        "source": cell(SUFFIX_SOURCE),
        "record": record,
        "as_of": cell(SUFFIX_AS_OF),
    })
}

/// A refused lookup in its audit entry: the fields withheld and, for a
/// subject already in the log, its commitment (no salt is created for a
/// subject nobody was served).
/// A field the request names that the dataset does not have (422).
pub(super) fn unknown_field(dataset: &str, field: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_field",
        format!(
            "dataset `{dataset}` has no field {}",
            crate::policy::shown(field)
        ),
    )
}

pub(super) fn record_refusal(
    state: &AppState,
    entry: &mut AuditEntry,
    dataset: &str,
    subject_key: &str,
    refusal: Refusal,
) -> ApiError {
    entry.fields_withheld = refusal
        .withheld
        .iter()
        .map(|(f, _)| format!("{dataset}.{f}"))
        .collect();
    entry.subject_commitment = state.audit.lookup_commitment(subject_key);
    ApiError::from(refusal)
}

async fn lookup(
    state: &Arc<AppState>,
    agency: &Agency,
    case_id: &str,
    body: Lookup,
    entry: &mut AuditEntry,
) -> Result<Reply, ApiError> {
    let policy = state.policy(); // one policy for the whole request
    entry.policy_version = Some(policy.version.clone());
    if state.catalog.dataset(&body.dataset).is_some() {
        entry.dataset = Some(body.dataset.clone());
    }
    let subject = body.subject.resolve()?;
    let authorized = match authorize_lookup(
        &policy,
        &state.catalog,
        &state.cases,
        agency,
        case_id,
        &subject,
        &body.dataset,
        body.fields.as_deref(),
        body.purpose.as_deref(),
        Utc::now(),
    ) {
        Ok(authorized) => authorized,
        Err(refusal) => {
            // The case as it stands (if any) names the refusal's purpose.
            if let Some(case) = state.cases.get(&agency.id, case_id) {
                note_case(entry, &case);
            }
            return Err(record_refusal(
                state,
                entry,
                &body.dataset,
                &subject.key,
                refusal,
            ));
        }
    };
    note_case(entry, authorized.case());
    // The subject is an applicant of the caller's open case: name it.
    entry.subject_commitment = Some(commitment(state, &subject.key).await?);
    let dataset = state
        .catalog
        .dataset(authorized.dataset())
        .expect("authorized datasets exist");
    let table = table(&state.tables(), dataset.subject)?;
    entry.dataset_version = Some(table.manifest.version);
    entry.fields_withheld = authorized
        .withheld()
        .iter()
        .map(|(f, _)| format!("{}.{f}", dataset.id))
        .collect();
    let row = table.row(&subject.key).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "subject_not_found",
            format!(
                "no agency has shared a record of this subject in `{}`",
                dataset.id
            ),
        )
    })?;
    let mut fields = BTreeMap::new();
    let mut rules = BTreeSet::new();
    let disputes = state.corrections.disputes(&subject.key);
    // `dataset.field`, then with a provenance suffix: one buffer for every column name.
    let mut column = String::with_capacity(64);
    for (name, access, rule) in authorized.granted() {
        column.clear();
        column.push_str(&dataset.id);
        column.push('.');
        column.push_str(name);
        let qualified = column.len();
        let stored = row.get(&column);
        let mut cell = |suffix: &str| {
            column.truncate(qualified);
            column.push_str(suffix);
            let cell = row.get(&column);
            column.truncate(qualified);
            cell
        };
        let (source, as_of) = (cell(SUFFIX_SOURCE), cell(SUFFIX_AS_OF));
        // A source record id can be the masked value itself (a register keyed
        // by credit code), so masked fields do not name their record.
        let (shown, record) = match (stored, access) {
            (Some(v), Access::Clear) => (Some(Cow::Borrowed(v)), cell(SUFFIX_RECORD)),
            (Some(v), Access::Masked(kind)) => (Some(Cow::Owned(mask(*kind, v))), None),
            (None, Access::Clear) => (None, cell(SUFFIX_RECORD)),
            (None, Access::Masked(_)) => (None, None),
        };
        let disputed = corrections::disputed(disputes.as_ref(), &column, stored);
        // Only values that were there count as released.
        if stored.is_some() {
            record_served(entry, &column, *access);
        }
        fields.insert(
            name.as_str(),
            ServedField {
                access: access_name(*access),
                as_of,
                disputed,
                record,
                source,
                value: shown,
            },
        );
        rules.insert(rule.as_str());
    }
    entry.rule = Some(rules.into_iter().collect::<Vec<_>>().join("; "));
    entry.rows_out = 1;
    let case = authorized.case();
    let data = LookupData {
        dataset: &dataset.id,
        fields,
        subject_id: row.get(crate::ingest::COL_SUBJECT_ID),
        withheld: authorized
            .withheld()
            .iter()
            .map(|(field, reason)| Withheld { field, reason })
            .collect(),
    };
    let meta = LookupMeta {
        case_id: &case.id,
        dataset_version: table.manifest.version,
        policy_version: &policy.version,
        served_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        service_item: &case.service_item,
    };
    Ok(Reply {
        status: StatusCode::OK,
        body: Body::Canonical(CanonicalBody::data_meta(&data, &meta)),
        sealed: true,
    })
}

/// The case a request is bound to, in its audit entry: purpose, role and
/// (when the token named none) officer.
fn note_case(entry: &mut AuditEntry, case: &Case) {
    entry.service_item = Some(case.service_item.clone());
    entry.role.clone_from(&case.role);
    entry.officer.get_or_insert_with(|| case.officer.clone());
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Clear => "clear",
        Access::Masked(_) => "masked",
    }
}

// A lookup's answer, serialised straight to canonical JSON: in each struct the
// members are declared in the byte order of their names, as canonical JSON
// sorts them (`CanonicalBody::data_meta` checks it in debug builds).

#[derive(Serialize)]
struct LookupData<'a> {
    dataset: &'a str,
    fields: BTreeMap<&'a str, ServedField<'a>>,
    subject_id: Option<&'a str>,
    withheld: Vec<Withheld<'a>>,
}

/// One served field: value (masked as granted) and provenance; as
/// `field_json` writes it for a pre-fill.
#[derive(Serialize)]
struct ServedField<'a> {
    access: &'static str,
    as_of: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disputed: Option<corrections::DisputedMark<'a>>,
    record: Option<&'a str>,
    source: Option<&'a str>,
    value: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct Withheld<'a> {
    field: &'a str,
    reason: &'a str,
}

#[derive(Serialize)]
struct LookupMeta<'a> {
    case_id: &'a str,
    dataset_version: u64,
    policy_version: &'a str,
    served_at: String,
    service_item: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Prefill {
    #[serde(default)]
    subject: Option<SubjectRef>,
}

async fn prefill(
    state: &Arc<AppState>,
    agency: &Agency,
    case_id: &str,
    body: Prefill,
    entry: &mut AuditEntry,
) -> Result<Reply, ApiError> {
    let policy = state.policy(); // one policy for the whole request
    entry.policy_version = Some(policy.version.clone());
    let subject = body.subject.as_ref().map(SubjectRef::resolve).transpose()?;
    let named = subject.as_ref().map(|s| s.key.clone());
    let authorized = authorize_prefill(
        &policy,
        &state.catalog,
        &state.cases,
        agency,
        case_id,
        subject,
        Utc::now(),
    )
    .map_err(|refusal| {
        entry.subject_commitment = named.and_then(|k| state.audit.lookup_commitment(&k));
        ApiError::from(refusal)
    })?;
    let case = authorized.case();
    entry.service_item = Some(case.service_item.clone());
    entry.role.clone_from(&case.role);
    entry.officer.get_or_insert_with(|| case.officer.clone());
    let subject = authorized.subject();
    entry.subject_commitment = Some(commitment(state, &subject.key).await?);
    // One snapshot of the tables for the whole request: the versions named
    // in the response are the ones read.
    let tables = state.tables();
    let loaded = table(&tables, subject.kind)?;
    let row = loaded.row(&subject.key);
    let disputes = state.corrections.disputes(&subject.key);
    let mut materials = Vec::new();
    let mut must_supply = Vec::new();
    let mut rules = BTreeSet::new();
    for (name, wanted) in authorized.materials() {
        if wanted.is_empty() {
            must_supply.push(name.clone());
            materials.push(json!({ "name": name, "status": "applicant_supplies" }));
            continue;
        }
        let mut fields = serde_json::Map::new();
        let mut missing = Vec::new();
        for f in wanted {
            let (access, rule) = match &f.access {
                Ok(granted) => granted,
                Err(reason) => {
                    entry.fields_withheld.push(f.qualified.clone());
                    missing.push((f.qualified.clone(), reason.clone()));
                    continue;
                }
            };
            match row.as_ref().filter(|r| r.get(&f.qualified).is_some()) {
                Some(r) => {
                    let mut value = field_json(r, &f.qualified, *access);
                    let stored = r.get(&f.qualified);
                    corrections::mark_disputed(&mut value, disputes.as_ref(), &f.qualified, stored);
                    fields.insert(f.qualified.clone(), value);
                    record_served(entry, &f.qualified, *access);
                    rules.insert(rule.clone());
                }
                None => missing.push((
                    f.qualified.clone(),
                    "no agency has shared this value".to_string(),
                )),
            }
        }
        let status = match (missing.is_empty(), fields.is_empty()) {
            (true, _) => "shared",
            (false, true) => "applicant_supplies",
            (false, false) => "partly_shared",
        };
        if !missing.is_empty() {
            must_supply.push(name.clone());
        }
        materials.push(json!({ "name": name, "status": status, "fields": fields, "missing": withheld_json(&missing) }));
    }
    entry.rule = Some(rules.into_iter().collect::<Vec<_>>().join("; "));
    entry.rows_out = u64::from(!entry.fields_clear.is_empty() || !entry.fields_masked.is_empty());
    let item = state.catalog.item(&case.service_item);
    let versions: serde_json::Map<String, Value> = tables
        .iter()
        .map(|(k, t)| (k.as_str().to_string(), json!(t.manifest.version)))
        .collect();
    Ok(Reply {
        status: StatusCode::OK,
        body: json!({
            "data": {
                "service_item": { "code": case.service_item, "name": item.map(|i| i.name.as_str()) },
                "materials": materials,
                "applicant_must_supply": must_supply,
            },
            "meta": {
                "case_id": case.id,
                "dataset_versions": versions,
                "policy_version": policy.version,
                "served_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            },
        }).into(),
        sealed: true,
    })
}

/// Decode `%XX` escapes and `+` in a query value; bad escapes stay as text.
pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse the auditor's query string into a filter (the same filters as
/// `sharebroker audit query`).
fn audit_filter(state: &AppState, query: &str) -> Result<AuditFilter, ApiError> {
    let mut filter = AuditFilter::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "agency" => filter.agency = Some(v),
            "officer" => filter.officer = Some(v),
            "service_item" => filter.service_item = Some(v),
            "case_id" => filter.case_id = Some(v),
            "decision" => filter.decision = Some(v),
            "since" | "until" => {
                let bound = crate::audit::time_bound(&v)
                    .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", m))?;
                if k == "since" {
                    filter.since = Some(bound);
                } else {
                    filter.until = Some(bound);
                }
            }
            "limit" => {
                filter.limit = Some(v.parse().map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, "bad_query", "`limit` is a number")
                })?)
            }
            "id_number" | "credit_code" => {
                let kind = if k == "id_number" {
                    SubjectKind::Person
                } else {
                    SubjectKind::Organisation
                };
                let key = subject_key(kind, &v).map_err(|_| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_identifier",
                        identifier_problem(kind, &v),
                    )
                })?;
                // No salt means no entry ever named this subject.
                filter.subject_commitment = Some(
                    state
                        .audit
                        .lookup_commitment(&key)
                        .unwrap_or_else(|| "none".into()),
                );
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_query",
                    "unknown query parameter",
                ));
            }
        }
    }
    Ok(filter)
}

#[derive(Clone, Copy)]
enum AuditView {
    Entries,
    Report,
    Anomalies,
}

/// The auditor's views of the log: entries, the applicant-facing report of
/// one subject, and anomalies.
async fn audit_view(
    state: &Arc<AppState>,
    agency: &Agency,
    query: &str,
    view: AuditView,
) -> Result<Reply, ApiError> {
    require_auditor(agency)?;
    let mut filter = audit_filter(state, query)?;
    if matches!(view, AuditView::Report) && filter.subject_commitment.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "a report is about one subject: give `id_number` or `credit_code`",
        ));
    }
    // Bounded scans: entries page at 10,000; a report or an anomaly pass
    // reads at most 200,000 entries (narrow it with since/until).
    let cap = match view {
        AuditView::Entries => filter.limit.unwrap_or(1000).min(10_000),
        AuditView::Report | AuditView::Anomalies => filter.limit.unwrap_or(200_000).min(200_000),
    };
    filter.limit = Some(cap);
    let st = state.clone();
    let entries = blocking(move || st.audit.query(&filter))
        .await?
        .map_err(|e| {
            tracing::error!(error = %e, "audit query failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the audit log cannot be read right now",
            )
        })?;
    let truncated = entries.len() >= cap;
    let mut body = match view {
        AuditView::Entries => {
            let entries: Vec<Value> = entries
                .into_iter()
                .map(|(i, e)| json!({ "index": i, "entry": e }))
                .collect();
            json!({ "entries": entries, "log_size": state.audit.size(), "root": hex::encode(state.audit.root()) })
        }
        AuditView::Report => {
            json!({ "accesses": crate::audit::report::subject_report(&entries, &state.catalog) })
        }
        AuditView::Anomalies => {
            json!({ "anomalies": crate::audit::report::anomalies(&entries, &crate::audit::report::AnomalyRules::default()) })
        }
    };
    body["truncated"] = json!(truncated);
    Ok(Reply {
        status: StatusCode::OK,
        body: body.into(),
        sealed: false,
    })
}

/// The latest signed tree head, for any agency to keep: every later head
/// must be consistent with it. The publisher signs one every
/// `tree_head_every`; a request publishes only when none exists yet, so
/// callers cannot make the broker sign and fsync per request.
async fn tree_head(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let head = match state.audit.latest_tree_head() {
        Some(head) => head,
        None => {
            let st = state.clone();
            blocking(move || st.audit.publish_tree_head(st.signer.as_ref()))
                .await?
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot publish an audit tree head");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "no tree head can be published right now",
                    )
                })?
        }
    };
    Ok(Reply {
        status: StatusCode::OK,
        body: json!({ "tree_head": head, "published_every_secs": state.tree_head_every.as_secs() })
            .into(),
        sealed: false,
    })
}

fn query_u64(query: &str, name: &str) -> Result<Option<u64>, ApiError> {
    match query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
    {
        None => Ok(None),
        Some((_, v)) => v.parse().map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("`{name}` is a number"),
            )
        }),
    }
}

/// Inclusion and consistency proofs, for auditors checking the log against
/// tree heads they hold.
fn proof(state: &AppState, agency: &Agency, kind: &str, query: &str) -> Result<Reply, ApiError> {
    require_auditor(agency)?;
    let bad = |e: crate::audit::AuditError| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_proof_request",
            e.to_string(),
        )
    };
    let hexes = |p: Vec<[u8; 32]>| p.iter().map(hex::encode).collect::<Vec<_>>();
    let size = state.audit.size();
    let body = if kind == "inclusion" {
        let index = query_u64(query, "index")?.ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_query", "`index` is required")
        })?;
        let at = query_u64(query, "size")?.unwrap_or(size);
        let proof = state.audit.inclusion_proof(index, at).map_err(bad)?;
        let leaf = state.audit.leaf(index).map(hex::encode);
        json!({ "index": index, "size": at, "leaf_hash": leaf, "root": hex::encode(state.audit.root_at(at).map_err(bad)?), "proof": hexes(proof) })
    } else {
        let old = query_u64(query, "old")?.ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_query", "`old` is required")
        })?;
        let new = query_u64(query, "new")?.unwrap_or(size);
        let proof = state.audit.consistency_proof(old, new).map_err(bad)?;
        json!({
            "old": old, "new": new,
            "old_root": hex::encode(state.audit.root_at(old).map_err(bad)?),
            "new_root": hex::encode(state.audit.root_at(new).map_err(bad)?),
            "proof": hexes(proof),
        })
    };
    Ok(Reply {
        status: StatusCode::OK,
        body: body.into(),
        sealed: false,
    })
}

/// An application for conditional fields of one dataset.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Apply {
    dataset: String,
    fields: Vec<String>,
    /// A service item code or `purpose:<category>`.
    purpose: String,
    #[serde(default)]
    valid_from: Option<chrono::NaiveDate>,
    valid_until: chrono::NaiveDate,
    /// Row filter: only subjects of this area-code prefix (2–6 digits).
    #[serde(default)]
    area_prefix: Option<String>,
    reason: String,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
}

async fn apply(
    state: &Arc<AppState>,
    agency: &Agency,
    body: Apply,
    entry: &mut AuditEntry,
) -> Result<Reply, ApiError> {
    let catalog = &state.catalog;
    let ds = catalog.dataset(&body.dataset).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_dataset",
            format!(
                "there is no dataset {}",
                crate::policy::shown(&body.dataset)
            ),
        )
    })?;
    entry.dataset = Some(ds.id.clone());
    if ds.provider == agency.id {
        return Err(invalid(
            "a providing agency reads its own conditional data without an application",
        ));
    }
    if body.fields.is_empty() {
        return Err(invalid("name at least one field"));
    }
    let mut fields = Vec::new();
    for f in &body.fields {
        let field = ds.field(f).ok_or_else(|| unknown_field(&ds.id, f))?;
        if field.share != crate::catalog::ShareType::Conditional {
            return Err(invalid(format!(
                "`{}` is not shared conditionally: applications are for 有条件共享 fields only",
                field.qualified
            )));
        }
        if !fields.contains(&field.qualified) {
            fields.push(field.qualified.clone());
        }
    }
    let purpose_known = match body.purpose.strip_prefix("purpose:") {
        Some(cat) => catalog.items.iter().any(|i| i.purpose_category == cat),
        None => catalog.item(&body.purpose).is_some(),
    };
    if !purpose_known {
        return Err(invalid(format!(
            "unknown purpose {} (a service item code or `purpose:<category>`)",
            crate::policy::shown(&body.purpose)
        )));
    }
    let today = crate::policy::local_date(Utc::now());
    let valid_from = body.valid_from.unwrap_or(today);
    if body.valid_until < valid_from.max(today) {
        return Err(invalid(
            "`valid_until` must not be before `valid_from` or today",
        ));
    }
    // A row filter: the approval covers only subjects of this area.
    if body
        .area_prefix
        .as_deref()
        .is_some_and(|p| !crate::policy::valid_area_prefix(p))
    {
        return Err(invalid("`area_prefix` is 2 to 6 digits of an area code"));
    }
    let reason = body.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(invalid(
            "`reason` states the legal basis, in 1 to 500 characters",
        ));
    }
    let new = crate::policy::applications::NewApplication {
        agency: agency.id.clone(),
        dataset: ds.id.clone(),
        provider: ds.provider.clone(),
        fields,
        purpose: body.purpose,
        valid_from,
        valid_until: body.valid_until,
        area_prefix: body.area_prefix,
        reason,
    };
    let st = state.clone();
    let application = blocking(move || st.applications.apply(new, Utc::now()))
        .await?
        .map_err(application_error)?;
    Ok(Reply {
        status: StatusCode::CREATED,
        body: json!({ "application": application }).into(),
        sealed: false,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decide {
    #[serde(default)]
    reason: Option<String>,
}

/// The providing agency's steward approves or refuses; an approval is in
/// force as soon as the policy is recompiled with it (here, before the
/// answer).
async fn decide(
    state: &Arc<AppState>,
    agency: &Agency,
    id: &str,
    approve: bool,
    body: Decide,
    entry: &mut AuditEntry,
) -> Result<Reply, ApiError> {
    let reason = body
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    if !approve && reason.is_none() {
        return Err(invalid("a refusal states its `reason`"));
    }
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(invalid("`reason` is at most 500 characters"));
    }
    let (st, agency_id, app_id) = (state.clone(), agency.id.clone(), id.to_string());
    let handle = tokio::runtime::Handle::current();
    // Decision and recompilation run together off the request: even if the
    // client goes away, a recorded approval is compiled into the policy.
    let (decided, reloaded) = blocking(move || {
        let decided = st
            .applications
            .decide(&app_id, &agency_id, approve, reason, Utc::now());
        let reloaded = decided
            .is_ok()
            .then(|| handle.block_on(st.reload_policy(true)));
        (decided, reloaded)
    })
    .await?;
    let application = decided.map_err(application_error)?;
    entry.dataset = Some(application.request.dataset.clone());
    let today = crate::policy::local_date(Utc::now());
    let in_force =
        approve
            && !matches!(reloaded, Some(crate::api::Reload::Rejected(_)) | None)
            && state.applications.approved().iter().any(|a| {
                a.id == application.id && (a.approved_on..=a.valid_until).contains(&today)
            });
    entry.policy_version = Some(state.policy().version.clone());
    Ok(Reply {
        status: StatusCode::OK,
        body: json!({ "application": application, "in_force": in_force, "policy_version": state.policy().version }).into(),
        sealed: false,
    })
}

fn application_error(e: crate::policy::applications::ApplicationError) -> ApiError {
    use crate::policy::applications::ApplicationError as E;
    match e {
        E::NotFound(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            "application_not_found",
            e.to_string(),
        ),
        E::NotProvider { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "not_provider", e.to_string())
        }
        E::AlreadyDecided(_) => {
            ApiError::new(StatusCode::CONFLICT, "already_decided", e.to_string())
        }
        E::Journal { .. } => {
            tracing::error!(error = %e, "application journal write failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the application journal cannot be written; try again later",
            )
        }
    }
}
