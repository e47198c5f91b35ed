//! Bulk export of a dataset under a grant, `GET /v1/exports/{dataset}`:
//! the rows of the version being served, projected to the fields the
//! policy grants and masked as it says, streamed batch by batch as an
//! Arrow IPC stream or Parquet, and sealed by a trailer signed over the
//! body's SHA-256.
//!
//! **Grant.** An approved sharing application (from `applications.toml` or
//! approved through the API) of the calling agency that names a field of the
//! dataset and is in force today. Its purpose is the export's purpose (for a
//! `purpose:<category>` grant the client names a service item of that
//! category that it handles); its area filter, if any, is the export's row
//! filter. The fields are those the decision plan of the agency's role for
//! that purpose grants for *every* exported row (unconditional ones by a
//! rule, conditional ones by a rule and an application in force over the
//! grant's area), narrowed by `fields=`; the rest are withheld with their
//! reasons. A subject is a row when one of its exported fields has a value.
//!
//! **Order of events.** Policy and grant checked, the rows selected (a
//! bitmap over the loaded table: exact row count, bounded memory), the audit
//! entry appended and fsync'd, and only then the response head and the first
//! batch leave. Batches are built from the loaded table (the same version
//! lookups serve, held for the whole export), masked cell by cell, on a
//! few builder threads at once, then encoded in row order and sent through
//! a bounded queue, so memory stays at a few batches
//! whatever the table's size; a client that stops reading stalls the
//! producer, and one that goes away (or stalls past the request timeout)
//! ends it.
//!
//! **Seal.** The body's SHA-256 and length, the dataset version, the audit
//! entry, the policy version, the fields and the grant go into a JSON
//! document sealed like any response ([`crate::seal::seal`]) and sent,
//! base64url, in the `x-sharebroker-seal` HTTP trailer (HTTP/2, or
//! HTTP/1.1 with `TE: trailers`). `sharebroker seal verify --key K --body
//! BODY SEAL` checks it offline; [`verify_export_seal`] is the library form.

use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};
use base64::prelude::{BASE64_URL_SAFE_NO_PAD, Engine as _};
use bytes::Bytes;
use chrono::Utc;
use hyper::body::{Body, Frame};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::limits::ExportSlot;
use super::routes::{
    ApiError, agency_role, audit_unavailable, blocking, percent_decode, require_agency,
    unknown_field,
};
use super::{AppState, Caller};
use crate::audit::{AuditEntry, AuditSink};
use crate::catalog::{Agency, Dataset, MaskKind, SubjectKind};
use crate::policy::mask::Masker;
use crate::policy::{Access, Application, local_date};
use crate::store::LoadedTable;

/// The route, as the audit log and the metrics name it.
pub const ROUTE: &str = "/v1/exports/{dataset}";
/// The trailer carrying the export's seal.
pub const SEAL_TRAILER: &str = "x-sharebroker-seal";
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
pub const PARQUET: &str = "application/vnd.apache.parquet";

/// Rows per record batch (and four batches per Parquet row group).
const BATCH_ROWS: usize = 16_384;
/// The body is sent in chunks of about this size.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks queued between the producer and the connection: with the batch
/// being built, what an export holds in memory.
const QUEUE_CHUNKS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Arrow,
    Parquet,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Arrow => "arrow",
            Format::Parquet => "parquet",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Arrow => ARROW_STREAM,
            Format::Parquet => PARQUET,
        }
    }
}

/// The dataset of an export request, if `method` and `path` are one.
pub(super) fn dataset_of<'p>(method: &Method, path: &'p str) -> Option<&'p str> {
    let rest = path.trim_end_matches('/').strip_prefix("/v1/exports/")?;
    (method == Method::GET && !rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// The query of an export request.
#[derive(Debug, PartialEq, Eq)]
struct ExportQuery {
    grant: String,
    format: Format,
    fields: Option<Vec<String>>,
    purpose: Option<String>,
    role: Option<String>,
}

fn bad_query(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_query", message)
}

fn parse_query(query: &str) -> Result<ExportQuery, ApiError> {
    let (mut grant, mut format, mut fields, mut purpose, mut role) = (None, None, None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        let slot = match k {
            "grant" => &mut grant,
            "format" => &mut format,
            "fields" => &mut fields,
            "purpose" => &mut purpose,
            "role" => &mut role,
            _ => {
                return Err(bad_query(format!(
                    "unknown query parameter {}: exports take grant, format, fields, purpose and role",
                    crate::policy::shown(k)
                )));
            }
        };
        if slot.replace(v).is_some() {
            return Err(bad_query(format!("`{k}` is given twice")));
        }
    }
    let grant = grant
        .filter(|g| !g.is_empty())
        .ok_or_else(|| bad_query("name the grant (an approved sharing application) in `grant`"))?;
    let format = match format.as_deref() {
        None | Some("arrow") => Format::Arrow,
        Some("parquet") => Format::Parquet,
        Some(_) => return Err(bad_query("`format` is `arrow` (the default) or `parquet`")),
    };
    let fields = match fields {
        None => None,
        Some(list) => {
            let names: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect();
            if names.is_empty() {
                return Err(bad_query(
                    "`fields` names at least one field, comma-separated",
                ));
            }
            Some(names)
        }
    };
    Ok(ExportQuery {
        grant,
        format,
        fields,
        purpose: purpose.filter(|p| !p.is_empty()),
        role: role.filter(|r| !r.is_empty()),
    })
}

/// One column of the export.
#[derive(Debug, Clone)]
struct OutColumn {
    /// The field name (unqualified), the column's name.
    name: String,
    /// Position in the loaded table.
    position: usize,
    access: Access,
}

/// An export that passed every check, with its rows selected: what the
/// audit entry records and the producer streams. Only [`prepare`] makes one.
pub(super) struct Prepared {
    table: Arc<LoadedTable>,
    dataset: String,
    format: Format,
    columns: Vec<OutColumn>,
    withheld: Vec<(String, String)>,
    /// Bit `r` set: row `r` of the table is exported.
    selected: Vec<u64>,
    rows: u64,
    grant: String,
    purpose: String,
    agency: String,
    area_prefix: Option<String>,
    policy_version: String,
    /// The export's slot under the caps on exports running: held by the
    /// row selection, then by the producer until its last byte.
    _slot: Option<ExportSlot>,
}

fn no_grant(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "no_grant", message)
}

/// The grant named by `id`, checked: an approved application of `agency`
/// naming a field of `dataset`, in force today.
fn check_grant<'a>(
    applications: &'a [Application],
    agency: &Agency,
    dataset: &str,
    id: &str,
    today: chrono::NaiveDate,
) -> Result<&'a Application, ApiError> {
    // Another agency's grant does not exist for the caller.
    let grant = applications
        .iter()
        .find(|a| a.id == id && a.agency == agency.id)
        .ok_or_else(|| {
            no_grant(format!(
                "`{}` holds no approved sharing application {}: apply (POST /v1/applications) and have the providing agency approve it",
                agency.id,
                crate::policy::shown(id)
            ))
        })?;
    let prefix = format!("{dataset}.");
    if !grant.fields.iter().any(|f| f.starts_with(&prefix)) {
        return Err(no_grant(format!(
            "grant `{}` covers no field of `{dataset}`",
            grant.id
        )));
    }
    if !(grant.approved_on..=grant.valid_until).contains(&today) {
        return Err(no_grant(format!(
            "grant `{}` is in force from {} to {}, not today ({today})",
            grant.id, grant.approved_on, grant.valid_until
        )));
    }
    Ok(grant)
}

/// The service item an export under `grant` is for.
fn export_purpose(
    state: &AppState,
    agency: &Agency,
    grant: &Application,
    asked: Option<&str>,
) -> Result<String, ApiError> {
    let mismatch = |m: String| ApiError::new(StatusCode::FORBIDDEN, "purpose_mismatch", m);
    match grant.purpose.strip_prefix("purpose:") {
        None => match asked {
            Some(p) if p != grant.purpose => Err(mismatch(format!(
                "grant `{}` is for `{}`, not {}",
                grant.id,
                grant.purpose,
                crate::policy::shown(p)
            ))),
            _ => Ok(grant.purpose.clone()),
        },
        Some(category) => {
            let handled: Vec<&str> = state
                .catalog
                .items
                .iter()
                .filter(|i| i.purpose_category == category && i.agency == agency.id)
                .map(|i| i.code.as_str())
                .collect();
            match asked {
                Some(p) if handled.contains(&p) => Ok(p.to_string()),
                Some(p) => Err(mismatch(format!(
                    "grant `{}` is for `{}`: {} is not a service item of that category handled by `{}`",
                    grant.id,
                    grant.purpose,
                    crate::policy::shown(p),
                    agency.id
                ))),
                None if handled.len() == 1 => Ok(handled[0].to_string()),
                None => Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "purpose_required",
                    format!(
                        "grant `{}` is for `{}`: name the service item in `purpose` (one of: {})",
                        grant.id,
                        grant.purpose,
                        if handled.is_empty() {
                            "none handled by this agency".to_string()
                        } else {
                            handled.join(", ")
                        }
                    ),
                )),
            }
        }
    }
}

/// How each wanted field may be exported under `plan`, for every row of
/// the grant's area: (granted (name, access, rule), withheld (name, reason)).
type Decided = (Vec<(String, Access, String)>, Vec<(String, String)>);

fn decide_fields(
    plan: &crate::policy::Plan,
    wanted: &[&str],
    today: chrono::NaiveDate,
    area: &str,
) -> Decided {
    let (mut granted, mut withheld) = (Vec::new(), Vec::new());
    for name in wanted {
        // An area prefix stands for every subject of the area: a row filter
        // of an application covers the export only if it covers all of it.
        let decision = match plan.decision(name) {
            Some(d) => d.access_for(today, Some(area)),
            None => Err("no decision in the plan (default deny)".into()),
        };
        match decision {
            Ok((access, rule)) => granted.push((name.to_string(), access, rule.to_string())),
            Err(reason) => withheld.push((name.to_string(), reason.into_owned())),
        }
    }
    (granted, withheld)
}

/// Check an export request and select its rows; fills `entry` as it goes.
/// Nothing is sent yet: the caller appends the audit entry, then streams.
/// `slot` goes with the row selection, which runs to its end on a blocking
/// thread even when this future is dropped (a timeout, a client gone), and
/// then with the returned export.
pub(super) async fn prepare(
    state: &Arc<AppState>,
    caller: &Caller,
    req: &Request<hyper::body::Incoming>,
    dataset_id: &str,
    entry: &mut AuditEntry,
    slot: Option<ExportSlot>,
) -> Result<Prepared, ApiError> {
    let agency = require_agency(caller)?.clone();
    entry.role = agency.roles.first().cloned().unwrap_or_default();
    let query = parse_query(req.uri().query().unwrap_or(""))?;
    // The seal travels in a trailer: HTTP/1.1 clients must say they take one.
    if req.version() < hyper::Version::HTTP_2 && !accepts_trailers(req.headers()) {
        return Err(bad_query(
            "an export's seal is sent in an HTTP trailer: send `TE: trailers` or use HTTP/2",
        ));
    }
    let policy = state.policy(); // one policy for the whole export
    entry.policy_version = Some(policy.version.clone());
    let ds: &Dataset = state.catalog.dataset(dataset_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "dataset_not_found",
            format!(
                "there is no dataset {} in the catalogue",
                crate::policy::shown(dataset_id)
            ),
        )
    })?;
    entry.dataset = Some(ds.id.clone());
    let today = local_date(Utc::now());
    let grant = check_grant(&policy.applications, &agency, &ds.id, &query.grant, today)?;
    let purpose = export_purpose(state, &agency, grant, query.purpose.as_deref())?;
    entry.service_item = Some(purpose.clone());
    let wanted: Vec<&str> = match &query.fields {
        Some(fields) => {
            let mut seen = std::collections::HashSet::new();
            for f in fields {
                if ds.field(f).is_none() {
                    return Err(unknown_field(&ds.id, f));
                }
            }
            fields
                .iter()
                .map(String::as_str)
                .filter(|f| seen.insert(*f))
                .collect()
        }
        None => ds.fields.iter().map(|f| f.name.as_str()).collect(),
    };
    let area = grant.area_prefix.as_deref().unwrap_or("");
    let roles: Vec<String> = match &query.role {
        Some(r) => vec![agency_role(&agency, r)?],
        None => agency.roles.clone(),
    };
    // Without `role`: the first role of the agency the policy lets read
    // anything of the dataset for the purpose.
    let mut decided: Option<(String, Decided)> = None;
    for role in &roles {
        let Some(plan) = policy.plan(role, &purpose, &ds.id) else {
            continue;
        };
        let d = decide_fields(plan, &wanted, today, area);
        let any = !d.0.is_empty();
        if decided.is_none() || any {
            decided = Some((role.clone(), d));
        }
        if any {
            break;
        }
    }
    let Some((role, (granted, mut withheld))) = decided else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "no_plan",
            format!("no policy covers `{}` for `{purpose}`", agency.id),
        ));
    };
    entry.role.clone_from(&role);
    let qualified = |names: &mut dyn Iterator<Item = &String>| -> Vec<String> {
        names.map(|n| format!("{}.{n}", ds.id)).collect()
    };
    if granted.is_empty() {
        entry.fields_withheld = qualified(&mut withheld.iter().map(|(f, _)| f));
        let mut e = ApiError::new(
            StatusCode::FORBIDDEN,
            "fields_denied",
            format!(
                "no requested field of `{}` may be read by `{role}` for `{purpose}`",
                ds.id
            ),
        );
        e.withheld = withheld;
        return Err(e);
    }
    let table = state.tables().get(&ds.subject).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no data has been loaded yet: run `sharebroker pull`; the broker picks up a new version within seconds",
        )
    })?;
    entry.dataset_version = Some(table.manifest.version);
    let mut columns = Vec::new();
    let mut rules = std::collections::BTreeSet::new();
    rules.insert(format!("grant {}", grant.id));
    for (name, access, rule) in granted {
        match table.column(&format!("{}.{name}", ds.id)) {
            Some(position) => {
                rules.insert(rule);
                columns.push(OutColumn {
                    name,
                    position,
                    access,
                });
            }
            None => withheld.push((
                name,
                format!(
                    "the stored version {} has no such column",
                    table.manifest.version
                ),
            )),
        }
    }
    if columns.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the stored version has none of the granted fields; try again after the next pull",
        ));
    }
    let (kind, area_prefix) = (ds.subject, grant.area_prefix.clone());
    let (t, cols) = (table.clone(), columns.clone());
    let filter = area_prefix.clone();
    let (selected, rows, slot) = blocking(move || {
        let (selected, rows) = select_rows(&t, &cols, kind, filter.as_deref());
        (selected, rows, slot)
    })
    .await?;
    for c in &columns {
        let q = format!("{}.{}", ds.id, c.name);
        match c.access {
            Access::Clear => entry.fields_clear.push(q),
            Access::Masked(_) => entry.fields_masked.push(q),
        }
    }
    entry.fields_withheld = qualified(&mut withheld.iter().map(|(f, _)| f));
    entry.rule = Some(rules.into_iter().collect::<Vec<_>>().join("; "));
    entry.rows_out = rows;
    Ok(Prepared {
        table,
        dataset: ds.id.clone(),
        format: query.format,
        columns,
        withheld,
        selected,
        rows,
        grant: grant.id.clone(),
        purpose,
        agency: agency.id.clone(),
        area_prefix,
        policy_version: policy.version.clone(),
        _slot: slot,
    })
}

fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(hyper::header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.split(';').next().unwrap_or("").trim() == "trailers")
        })
    })
}

/// The rows to export: served by lookups (no replaced duplicates), in the
/// grant's area (read from each row's subject key), with a value in at
/// least one exported field. A bitmap (one bit a row) and its count.
fn select_rows(
    table: &LoadedTable,
    columns: &[OutColumn],
    kind: SubjectKind,
    area_prefix: Option<&str>,
) -> (Vec<u64>, u64) {
    let exported: Vec<usize> = columns.iter().map(|c| c.position).collect();
    let mut key = table.reader(&[table.key_column()]);
    let mut bits = vec![0u64; table.rows().div_ceil(64)];
    let mut count = 0u64;
    for (w, word) in bits.iter_mut().enumerate() {
        // Rows with an exported value, 64 at a time; then each one's own checks.
        let mut candidates = table.any_present(w, &exported);
        while candidates != 0 {
            let bit = candidates & candidates.wrapping_neg();
            candidates ^= bit;
            let r = w * 64 + bit.trailing_zeros() as usize;
            if !table.serves_row(r) {
                continue;
            }
            if let Some(prefix) = area_prefix
                && !key.read(r)[0]
                    .is_some_and(|k| crate::policy::key_area(kind, k).starts_with(prefix))
            {
                continue;
            }
            *word |= bit;
            count += 1;
        }
    }
    (bits, count)
}

/// Why a stream stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the client went away")]
    ClientGone,
    #[error("the client read nothing for {0:?}")]
    Stalled(Duration),
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// The streamed body of an export: frames from the producer's queue.
pub struct ExportBody {
    rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, ExportError>>,
}

impl Body for ExportBody {
    type Data = Bytes;
    type Error = ExportError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExportError>>> {
        self.rx.poll_recv(cx)
    }
}

/// What the body writer sends the connection: chunks of about
/// [`CHUNK_BYTES`], each hashed on the way out.
struct ChannelWriter {
    buf: Vec<u8>,
    hash: ring::digest::Context,
    bytes: u64,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, ExportError>>,
    runtime: tokio::runtime::Handle,
    stall: Duration,
    /// Why the stream cannot go on, once it cannot.
    stopped: Option<ExportError>,
}

impl ChannelWriter {
    fn send_buffered(&mut self) -> std::io::Result<()> {
        if let Some(e) = &self.stopped {
            return Err(std::io::Error::other(e.to_string()));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        self.hash.update(&self.buf);
        self.bytes += self.buf.len() as u64;
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 4096));
        let frame = Ok(Frame::data(Bytes::from(chunk)));
        // This runs on a blocking thread, never a runtime worker.
        // The timer is made inside `block_on`, in the runtime's context.
        let (stall, tx) = (self.stall, &self.tx);
        let sent = self
            .runtime
            .block_on(async { tokio::time::timeout(stall, tx.send(frame)).await });
        let stop = match sent {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => ExportError::ClientGone,
            Err(_) => ExportError::Stalled(self.stall),
        };
        let err = std::io::Error::other(stop.to_string());
        self.stopped = Some(stop);
        Err(err)
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buffered()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffered()
    }
}

/// The Arrow schema of an export: one nullable UTF-8 column per field, its
/// access in the field's metadata, what the seal names in the schema's.
fn export_schema(p: &Prepared, audit_entry: u64) -> SchemaRef {
    let fields: Vec<ArrowField> = p
        .columns
        .iter()
        .map(|c| {
            ArrowField::new(&c.name, DataType::Utf8, true).with_metadata(
                std::collections::HashMap::from([(
                    "sharebroker.access".to_string(),
                    access_name(c.access).to_string(),
                )]),
            )
        })
        .collect();
    let meta: std::collections::HashMap<String, String> = [
        ("sharebroker.dataset", p.dataset.clone()),
        (
            "sharebroker.dataset_version",
            p.table.manifest.version.to_string(),
        ),
        ("sharebroker.policy_version", p.policy_version.clone()),
        ("sharebroker.audit_entry", audit_entry.to_string()),
        ("sharebroker.grant", p.grant.clone()),
        ("sharebroker.purpose", p.purpose.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Arc::new(Schema::new_with_metadata(fields, meta))
}

fn access_name(a: Access) -> &'static str {
    match a {
        Access::Clear => "clear",
        Access::Masked(_) => "masked",
    }
}

/// Threads building one export's batches, while the producer thread encodes
/// and sends them in order: building (reading, masking) is most of an
/// export's work, and the connection and the client need cores too.
fn batch_builders() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4))
}

/// The export's batches as runs of words of the row bitmap, each holding
/// about [`BATCH_ROWS`] selected rows, with their row counts.
fn batch_ranges(selected: &[u64]) -> Vec<(std::ops::Range<usize>, usize)> {
    let mut ranges = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (w, word) in selected.iter().enumerate() {
        rows += word.count_ones() as usize;
        if rows >= BATCH_ROWS {
            ranges.push((start..w + 1, rows));
            (start, rows) = (w + 1, 0);
        }
    }
    if rows > 0 {
        ranges.push((start..selected.len(), rows));
    }
    ranges
}

/// What building a batch needs beyond the export: the table's columns to
/// read (one per output column) and each one's mask.
struct BatchPlan {
    positions: Vec<usize>,
    masks: Vec<Option<MaskKind>>,
    /// Per output column, the bytes of value a row took in the batch built
    /// last: the next batch's builders start that large (and an eighth), so
    /// they seldom grow (copying what they hold) while filling.
    row_bytes: Vec<AtomicUsize>,
}

impl BatchPlan {
    fn new(p: &Prepared) -> BatchPlan {
        let positions = p.columns.iter().map(|c| c.position).collect();
        let masks = p
            .columns
            .iter()
            .map(|c| match c.access {
                Access::Clear => None,
                Access::Masked(kind) => Some(kind),
            })
            .collect();
        BatchPlan {
            positions,
            masks,
            row_bytes: p.columns.iter().map(|_| AtomicUsize::new(24)).collect(),
        }
    }

    /// The batch of the selected rows in `words` of the bitmap (`rows` of them).
    fn build(
        &self,
        p: &Prepared,
        schema: &SchemaRef,
        words: std::ops::Range<usize>,
        rows: usize,
    ) -> Result<RecordBatch, ExportError> {
        let mut reader = p.table.reader(&self.positions);
        let (mut masked, mut masker) = (String::new(), Masker::default());
        let mut builders: Vec<StringBuilder> = self
            .row_bytes
            .iter()
            .map(|b| {
                let per_row = b.load(Ordering::Relaxed);
                StringBuilder::with_capacity(rows, rows * (per_row + per_row / 8))
            })
            .collect();
        for w in words {
            let mut bits = p.selected[w];
            while bits != 0 {
                let r = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let cells = reader.read(r);
                for (c, b) in builders.iter_mut().enumerate() {
                    match (cells[c], self.masks[c]) {
                        (None, _) => b.append_null(),
                        (Some(v), None) => b.append_value(v),
                        (Some(v), Some(kind)) => {
                            masked.clear();
                            masker.mask_into(kind, v, &mut masked);
                            b.append_value(&masked);
                        }
                    }
                }
            }
        }
        for (b, per_row) in builders.iter().zip(&self.row_bytes) {
            per_row.store(
                b.values_slice().len().div_ceil(rows.max(1)).max(1),
                Ordering::Relaxed,
            );
        }
        let arrays: Vec<ArrayRef> = builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        RecordBatch::try_new(schema.clone(), arrays).map_err(|e| ExportError::Encode(e.to_string()))
    }
}

/// Build the export's record batches and hand each to `each`, in row
/// order. With more than one builder, builder `t` builds batches `t`,
/// `t + n`, … ahead of `each`, one batch queued each; when `each` fails the
/// queues close and the builders stop at their next batch.
fn batches(
    p: &Prepared,
    schema: &SchemaRef,
    each: &mut dyn FnMut(RecordBatch) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let plan = BatchPlan::new(p);
    let ranges = batch_ranges(&p.selected);
    let n = batch_builders().min(ranges.len());
    if n <= 1 {
        for (words, rows) in ranges {
            each(plan.build(p, schema, words, rows)?)?;
        }
        return Ok(());
    }
    std::thread::scope(|scope| {
        let queues: Vec<_> = (0..n)
            .map(|t| {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                let (plan, ranges) = (&plan, &ranges);
                scope.spawn(move || {
                    for (words, rows) in ranges.iter().skip(t).step_by(n) {
                        let batch = plan.build(p, schema, words.clone(), *rows);
                        if tx.send(batch).is_err() {
                            return;
                        }
                    }
                });
                rx
            })
            .collect();
        for k in 0..ranges.len() {
            let batch = queues[k % n].recv().map_err(|_| {
                ExportError::Encode("a batch builder stopped before its last batch".into())
            })??;
            each(batch)?;
        }
        Ok(())
    })
}

/// Encode every batch into `w` in the export's format; the writer back.
fn encode(
    p: &Prepared,
    schema: &SchemaRef,
    w: ChannelWriter,
) -> Result<ChannelWriter, ExportError> {
    let enc = |e: &dyn std::fmt::Display| ExportError::Encode(e.to_string());
    match p.format {
        Format::Arrow => {
            let mut writer =
                arrow_ipc::writer::StreamWriter::try_new(w, schema).map_err(|e| enc(&e))?;
            batches(p, schema, &mut |b| {
                writer.write(&b).map_err(|e| gone_or(writer.get_mut(), &e))
            })?;
            writer.finish().map_err(|e| gone_or(writer.get_mut(), &e))?;
            writer.into_inner().map_err(|e| enc(&e))
        }
        Format::Parquet => {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(
                    parquet::basic::ZstdLevel::try_new(1).expect("1 is a zstd level"),
                ))
                .set_max_row_group_row_count(Some(BATCH_ROWS * 4))
                .build();
            let mut writer = parquet::arrow::ArrowWriter::try_new(w, schema.clone(), Some(props))
                .map_err(|e| enc(&e))?;
            batches(p, schema, &mut |b| {
                writer
                    .write(&b)
                    .map_err(|e| gone_or(writer.inner_mut(), &e))
            })?;
            writer
                .flush()
                .map_err(|e| gone_or(writer.inner_mut(), &e))?;
            writer.into_inner().map_err(|e| enc(&e))
        }
    }
}

/// The writer's own reason when it stopped (client gone, stalled), else an
/// encoding error.
fn gone_or(w: &mut ChannelWriter, e: &dyn std::fmt::Display) -> ExportError {
    w.stopped
        .take()
        .unwrap_or_else(|| ExportError::Encode(e.to_string()))
}

/// Append the audit entry (durable), then answer with the head and stream
/// the body. If the audit log cannot be written, the client gets 503 and
/// no data.
pub(super) async fn respond(
    state: &Arc<AppState>,
    p: Prepared,
    mut entry: AuditEntry,
) -> Response<super::routes::ResponseBody> {
    entry.decision = "allow".into();
    entry.status = StatusCode::OK.as_u16();
    // The body's digest is not known yet: the seal trailer carries it.
    entry.response_sha256 = None;
    entry.bytes_out = 0;
    // Audit before data (invariant 2): nothing leaves until this is durable.
    let index = match state.audit.append(entry).await {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "audit append failed: refusing to serve");
            return super::routes::error_response(&audit_unavailable());
        }
    };
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put("content-type", p.format.content_type().to_string());
    put("cache-control", "no-store".to_string());
    put("trailer", SEAL_TRAILER.to_string());
    put("x-sharebroker-audit-entry", index.to_string());
    put("x-sharebroker-dataset", p.dataset.clone());
    put(
        "x-sharebroker-dataset-version",
        p.table.manifest.version.to_string(),
    );
    put("x-sharebroker-policy-version", p.policy_version.clone());
    put("x-sharebroker-grant", p.grant.clone());
    put("x-sharebroker-purpose", p.purpose.clone());
    put("x-sharebroker-rows", p.rows.to_string());
    put("x-sharebroker-fields", ascii_json(&fields_json(&p.columns)));
    put(
        "x-sharebroker-withheld",
        ascii_json(&withheld_json(&p.withheld)),
    );
    debug_assert!(headers.contains_key(CONTENT_TYPE));
    let body = start_stream(state, p, index);
    let mut resp = Response::new(super::routes::ResponseBody::Right(body));
    *resp.headers_mut() = headers;
    resp
}

fn fields_json(columns: &[OutColumn]) -> Value {
    Value::Array(
        columns
            .iter()
            .map(|c| json!({ "field": c.name, "access": access_name(c.access) }))
            .collect(),
    )
}

fn withheld_json(w: &[(String, String)]) -> Value {
    Value::Array(
        w.iter()
            .map(|(f, r)| json!({ "field": f, "reason": r }))
            .collect(),
    )
}

/// JSON with every non-ASCII character escaped (`\uXXXX`): still the same
/// JSON, and a valid HTTP header value.
pub fn ascii_json(v: &Value) -> String {
    let text = v.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Spawn the producer of an export's body (on a blocking thread: building,
/// masking and encoding batches is CPU work) and return the body it feeds.
/// The producer holds the export's slot (in `p`) until it is done.
fn start_stream(state: &Arc<AppState>, p: Prepared, audit_entry: u64) -> ExportBody {
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE_CHUNKS);
    let signer = state.signer.clone();
    let stall = state.request_timeout;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        produce(p, audit_entry, signer.as_ref(), tx, runtime, stall)
    });
    ExportBody { rx }
}

/// Stream the export into `tx`, then its seal as a trailer.
fn produce(
    p: Prepared,
    audit_entry: u64,
    signer: &dyn crate::seal::Signer,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, ExportError>>,
    runtime: tokio::runtime::Handle,
    stall: Duration,
) {
    let started = std::time::Instant::now();
    let schema = export_schema(&p, audit_entry);
    let writer = ChannelWriter {
        buf: Vec::with_capacity(CHUNK_BYTES + 4096),
        hash: ring::digest::Context::new(&ring::digest::SHA256),
        bytes: 0,
        tx: tx.clone(),
        runtime: runtime.clone(),
        stall,
        stopped: None,
    };
    let written = encode(&p, &schema, writer).and_then(|mut w| match w.flush() {
        Ok(()) => Ok(w),
        Err(e) => Err(gone_or(&mut w, &e)),
    });
    let w = match written {
        Ok(w) => w,
        Err(e @ (ExportError::ClientGone | ExportError::Stalled(_))) => {
            tracing::info!(audit_entry, dataset = %p.dataset, error = %e, "export ended before its end");
            return;
        }
        Err(e) => {
            tracing::error!(audit_entry, dataset = %p.dataset, error = %e, "export failed mid-stream; the response is cut off");
            // Abort the response: the client sees a broken transfer and no seal.
            let _ = tx.try_send(Err(e));
            return;
        }
    };
    let digest = hex::encode(w.hash.finish().as_ref());
    let mut doc = seal_document(&p, audit_entry, &digest, w.bytes);
    crate::seal::seal(signer, &mut doc);
    let value =
        BASE64_URL_SAFE_NO_PAD.encode(serde_json::to_vec(&doc).expect("a JSON value serialises"));
    let mut trailers = HeaderMap::new();
    trailers.insert(
        HeaderName::from_static(SEAL_TRAILER),
        HeaderValue::from_str(&value).expect("base64url is a valid header value"),
    );
    let sent = runtime.block_on(async {
        tokio::time::timeout(stall, tx.send(Ok(Frame::trailers(trailers)))).await
    });
    match sent {
        Ok(Ok(())) => tracing::info!(
            audit_entry,
            dataset = %p.dataset,
            format = p.format.as_str(),
            rows = p.rows,
            bytes = w.bytes,
            secs = started.elapsed().as_secs_f64(),
            "export sent"
        ),
        _ => tracing::info!(audit_entry, dataset = %p.dataset, "export ended before its seal"),
    }
}

/// The document the seal trailer carries (before sealing).
fn seal_document(p: &Prepared, audit_entry: u64, sha256: &str, bytes: u64) -> Value {
    json!({
        "export": {
            "dataset": p.dataset,
            "dataset_version": p.table.manifest.version,
            "format": p.format.as_str(),
            "content_type": p.format.content_type(),
            "rows": p.rows,
            "bytes": bytes,
            "sha256": sha256,
            "fields": fields_json(&p.columns),
            "withheld": withheld_json(&p.withheld),
            "grant": p.grant,
            "purpose": p.purpose,
            "agency": p.agency,
            "area_prefix": p.area_prefix,
        },
        "meta": {
            "audit_entry": audit_entry,
            "policy_version": p.policy_version,
            "served_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        },
    })
}

/// Why an export does not verify.
#[derive(Debug, thiserror::Error)]
pub enum ExportSealError {
    #[error(
        "no export seal found: give the `{SEAL_TRAILER}` trailer's value, a header dump holding it, or the decoded JSON"
    )]
    NotFound,
    #[error("the export seal is not base64url JSON: {0}")]
    Malformed(String),
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
    #[error("cannot read the body: {0}")]
    Read(#[from] std::io::Error),
    #[error("the body is {found} bytes where the seal says {expected}: cut off or altered")]
    Length { expected: u64, found: u64 },
    #[error("the body's SHA-256 is not the one sealed: the body was altered")]
    Digest,
}

/// Parse an export seal as a client may have saved it: the trailer's
/// base64url value, a header dump (`curl -D`) holding the trailer, or the
/// decoded JSON.
pub fn parse_export_seal(text: &str) -> Result<Value, ExportSealError> {
    let text = text.trim();
    if text.starts_with('{') {
        return serde_json::from_str(text).map_err(|e| ExportSealError::Malformed(e.to_string()));
    }
    let value = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(SEAL_TRAILER))
        .map(|(_, v)| v.trim())
        .or_else(|| (!text.contains(char::is_whitespace) && !text.is_empty()).then_some(text))
        .ok_or(ExportSealError::NotFound)?;
    let json = BASE64_URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|e| ExportSealError::Malformed(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| ExportSealError::Malformed(e.to_string()))
}

/// Verify an export offline: the seal's signature with the broker's
/// public key, then the body's length and SHA-256 against the sealed ones.
/// Returns the sealed document.
pub fn verify_export_seal(
    public_key: &crate::seal::PublicKey,
    seal: &Value,
    body: &mut dyn Read,
) -> Result<Value, ExportSealError> {
    crate::seal::verify(public_key, seal)?;
    let sealed = &seal["export"];
    let (Some(expected), Some(sha)) = (sealed["bytes"].as_u64(), sealed["sha256"].as_str()) else {
        return Err(ExportSealError::Malformed(
            "the sealed document names no `export.bytes` and `export.sha256`".into(),
        ));
    };
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut found = 0u64;
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        found += n as u64;
    }
    if found != expected {
        return Err(ExportSealError::Length { expected, found });
    }
    if hex::encode(hash.finish().as_ref()) != sha {
        return Err(ExportSealError::Digest);
    }
    Ok(seal.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_or_name_what_is_wrong() {
        let q =
            parse_query("grant=APP-1&format=parquet&fields=name,%20id_number&purpose=X-1&role=r")
                .expect("valid");
        assert_eq!(
            q,
            ExportQuery {
                grant: "APP-1".into(),
                format: Format::Parquet,
                fields: Some(vec!["name".into(), "id_number".into()]),
                purpose: Some("X-1".into()),
                role: Some("r".into()),
            }
        );
        assert_eq!(parse_query("grant=G").expect("valid").format, Format::Arrow);
        for (query, want) in [
            ("", "name the grant"),
            ("grant=", "name the grant"),
            ("grant=G&format=csv", "`format` is `arrow`"),
            ("grant=G&grant=H", "`grant` is given twice"),
            ("grant=G&fields=,", "`fields` names at least one field"),
            ("grant=G&limit=3", "unknown query parameter `limit`"),
        ] {
            let e = parse_query(query).expect_err(query);
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "bad_query"));
            assert!(e.message.contains(want), "{query}: {}", e.message);
        }
    }

    #[test]
    fn export_routes_are_get_on_one_segment() {
        assert_eq!(
            dataset_of(&Method::GET, "/v1/exports/population"),
            Some("population")
        );
        assert_eq!(
            dataset_of(&Method::GET, "/v1/exports/population/"),
            Some("population")
        );
        assert_eq!(dataset_of(&Method::POST, "/v1/exports/population"), None);
        assert_eq!(dataset_of(&Method::GET, "/v1/exports/"), None);
        assert_eq!(dataset_of(&Method::GET, "/v1/exports/a/b"), None);
    }

    #[test]
    fn header_json_is_ascii_and_the_same_json() {
        let v = json!([{ "field": "phone", "reason": "`population.phone` is not shared (不予共享) 😀" }]);
        let text = ascii_json(&v);
        assert!(text.is_ascii(), "{text}");
        assert!(HeaderValue::from_str(&text).is_ok());
        assert_eq!(serde_json::from_str::<Value>(&text).expect("json"), v);
    }

    #[test]
    fn batches_cover_every_selected_row_once_in_runs_of_about_batch_rows() {
        // 10 full words, a sparse stretch, an empty tail.
        let mut selected = vec![u64::MAX; BATCH_ROWS / 64 * 2 + 10];
        selected.extend((0..5000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        selected.extend([0; 7]);
        let ranges = batch_ranges(&selected);
        let mut next_word = 0;
        for (i, (words, rows)) in ranges.iter().enumerate() {
            assert_eq!(
                words.start, next_word,
                "batch {i} starts where the last ended"
            );
            next_word = words.end;
            let counted: usize = selected[words.clone()]
                .iter()
                .map(|w| w.count_ones() as usize)
                .sum();
            assert_eq!(counted, *rows, "batch {i}");
            if i + 1 < ranges.len() {
                assert!(
                    (BATCH_ROWS..BATCH_ROWS + 64).contains(rows),
                    "batch {i}: {rows}"
                );
            }
        }
        assert_eq!(next_word, selected.len(), "every word is in a batch");
        assert!(batch_ranges(&[0, 0]).is_empty(), "no rows, no batch");
    }

    #[test]
    fn batches_built_in_parallel_arrive_in_row_order_masked_and_stop_when_told() {
        use arrow_array::{Array, StringArray};
        let n = BATCH_ROWS * 3 + 100;
        let keys: Vec<String> = (0..n).map(|i| format!("k{i:06}")).collect();
        let ids: Vec<String> = (0..n).map(|i| format!("6501021985{i:08}")).collect();
        let schema = Arc::new(Schema::new(vec![
            ArrowField::new("key", DataType::Utf8, true),
            ArrowField::new("d.id", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(&keys)) as ArrayRef,
                Arc::new(StringArray::from_iter_values(&ids)) as ArrayRef,
            ],
        )
        .expect("batch");
        let manifest = crate::store::Manifest {
            table: "t".into(),
            version: 1,
            created_at: "2026-11-27T00:00:00.000Z".into(),
            rows: n as u64,
            columns: vec![],
            files: vec![],
            meta: Default::default(),
        };
        let table = Arc::new(LoadedTable::new(manifest, vec![batch], "key").expect("table"));
        // Every row but each seventh.
        let mut selected = vec![0u64; n.div_ceil(64)];
        for r in (0..n).filter(|r| r % 7 != 3) {
            selected[r / 64] |= 1 << (r % 64);
        }
        let p = Prepared {
            table,
            dataset: "d".into(),
            format: Format::Arrow,
            columns: vec![
                OutColumn {
                    name: "key".into(),
                    position: 0,
                    access: Access::Clear,
                },
                OutColumn {
                    name: "id".into(),
                    position: 1,
                    access: Access::Masked(MaskKind::IdNumber),
                },
            ],
            withheld: vec![],
            rows: selected.iter().map(|w| u64::from(w.count_ones())).sum(),
            selected,
            grant: "g".into(),
            purpose: "p".into(),
            agency: "a".into(),
            area_prefix: None,
            policy_version: "v".into(),
            _slot: None,
        };
        let schema = export_schema(&p, 1);
        let mut got: Vec<(String, String)> = Vec::new();
        let mut batch_count = 0;
        batches(&p, &schema, &mut |b| {
            batch_count += 1;
            let col = |i: usize| {
                let a = b
                    .column(i)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("strings");
                (0..a.len())
                    .map(|r| a.value(r).to_string())
                    .collect::<Vec<_>>()
            };
            got.extend(col(0).into_iter().zip(col(1)));
            Ok(())
        })
        .expect("export");
        let want: Vec<(String, String)> = (0..n)
            .filter(|r| r % 7 != 3)
            .map(|r| {
                (
                    keys[r].clone(),
                    crate::policy::mask::mask(MaskKind::IdNumber, &ids[r]),
                )
            })
            .collect();
        assert_eq!(batch_count, batch_ranges(&p.selected).len());
        assert!(batch_count >= 3, "several batches: {batch_count}");
        assert_eq!(got.len(), want.len());
        assert!(got == want, "rows in order, masked");
        // The consumer stops after the first batch: so does the export.
        let mut seen = 0;
        let stopped = batches(&p, &schema, &mut |_| {
            seen += 1;
            Err(ExportError::ClientGone)
        });
        assert!(matches!(stopped, Err(ExportError::ClientGone)));
        assert_eq!(seen, 1);
    }

    #[test]
    fn rows_are_selected_by_area_and_by_having_an_exported_value() {
        use arrow_array::StringArray;
        let schema = Arc::new(Schema::new(vec![
            ArrowField::new("key", DataType::Utf8, true),
            ArrowField::new("d.a", DataType::Utf8, true),
            ArrowField::new("d.b", DataType::Utf8, true),
        ]));
        let col = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as ArrayRef;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                col(vec![
                    Some("650102x"),
                    Some("653101x"),
                    Some("650103x"),
                    None,
                    Some("650102x"),
                ]),
                col(vec![Some("1"), Some("2"), None, Some("4"), Some("5")]),
                col(vec![None, Some("b"), None, Some("d"), None]),
            ],
        )
        .expect("batch");
        let manifest = crate::store::Manifest {
            table: "t".into(),
            version: 1,
            created_at: "2026-11-27T00:00:00.000Z".into(),
            rows: 5,
            columns: vec![],
            files: vec![],
            meta: Default::default(),
        };
        let table = LoadedTable::new(manifest, vec![batch], "key").expect("table");
        let out = |name: &str, position| OutColumn {
            name: name.into(),
            position,
            access: Access::Clear,
        };
        let rows = |cols: &[OutColumn], prefix: Option<&str>| {
            let (bits, n) = select_rows(&table, cols, SubjectKind::Person, prefix);
            let set: Vec<usize> = (0..table.rows())
                .filter(|r| bits[r / 64] & (1 << (r % 64)) != 0)
                .collect();
            assert_eq!(set.len() as u64, n);
            set
        };
        let both = [out("a", 1), out("b", 2)];
        // Row 0 is replaced by row 4 (same key); row 2 has no value; row 3 no key.
        assert_eq!(rows(&both, None), vec![1, 4]);
        assert_eq!(rows(&both, Some("6501")), vec![4]);
        assert_eq!(rows(&both, Some("6531")), vec![1]);
        assert_eq!(
            rows(&[out("b", 2)], None),
            vec![1],
            "a value in an exported field"
        );
    }

    #[test]
    fn te_trailers_is_recognised_among_other_codings() {
        let mut h = HeaderMap::new();
        assert!(!accepts_trailers(&h));
        h.insert(
            hyper::header::TE,
            HeaderValue::from_static("gzip, trailers;q=1"),
        );
        assert!(accepts_trailers(&h));
        h.insert(hyper::header::TE, HeaderValue::from_static("gzip"));
        assert!(!accepts_trailers(&h));
    }

    fn writer(
        capacity: usize,
        stall: Duration,
        runtime: &tokio::runtime::Runtime,
    ) -> (
        ChannelWriter,
        tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, ExportError>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let w = ChannelWriter {
            buf: Vec::new(),
            hash: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
            tx,
            runtime: runtime.handle().clone(),
            stall,
            stopped: None,
        };
        (w, rx)
    }

    #[test]
    fn the_body_writer_chunks_hashes_and_stops_when_the_client_goes_or_stalls() {
        // Multi-threaded: a `Handle::block_on` from this thread has its
        // timers driven by the runtime's worker.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("runtime");
        let data = vec![7u8; CHUNK_BYTES + 10];
        let (mut w, mut rx) = writer(4, Duration::from_secs(5), &runtime);
        w.write_all(&data).expect("write");
        w.flush().expect("flush");
        let mut got = Vec::new();
        while let Ok(Ok(frame)) = rx.try_recv() {
            got.extend_from_slice(&frame.into_data().expect("data"));
        }
        assert_eq!(got, data, "every byte, in order");
        assert_eq!(w.bytes, data.len() as u64);
        assert_eq!(
            hex::encode(w.hash.clone().finish().as_ref()),
            hex::encode(ring::digest::digest(&ring::digest::SHA256, &data).as_ref())
        );
        // The client went away: the next chunk fails, and so does all after.
        drop(rx);
        assert!(w.write_all(&data).is_err());
        assert!(matches!(w.stopped, Some(ExportError::ClientGone)));
        assert!(w.flush().is_err());
        // The client stopped reading: the queue fills, then the stall limit.
        let (mut w, _rx) = writer(1, Duration::from_millis(50), &runtime);
        w.write_all(&data).expect("the first chunk is queued");
        let started = std::time::Instant::now();
        assert!(w.write_all(&data).is_err());
        assert!(matches!(w.stopped, Some(ExportError::Stalled(_))));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn an_export_seal_verifies_and_any_change_to_the_body_fails() {
        let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .expect("key");
        let signer = crate::seal::Ed25519Signer::from_pkcs8(der.as_ref()).expect("signer");
        let public = crate::seal::Signer::verifying_key(&signer);
        let body = b"ARROW1 rows and rows".to_vec();
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &body).as_ref());
        let mut doc = json!({ "export": { "bytes": body.len(), "sha256": digest, "rows": 2 }, "meta": { "audit_entry": 7 } });
        crate::seal::seal(&signer, &mut doc);
        let trailer = BASE64_URL_SAFE_NO_PAD.encode(serde_json::to_vec(&doc).expect("json"));
        let dump = format!(
            "HTTP/2 200\r\ncontent-type: {ARROW_STREAM}\r\n\r\n{SEAL_TRAILER}: {trailer}\r\n"
        );
        for saved in [trailer.clone(), dump, doc.to_string()] {
            let seal = parse_export_seal(&saved).expect("parses");
            verify_export_seal(&public, &seal, &mut body.as_slice()).expect("verifies");
        }
        let mut altered = body.clone();
        altered[3] ^= 1;
        let seal = parse_export_seal(&trailer).expect("parses");
        assert!(matches!(
            verify_export_seal(&public, &seal, &mut altered.as_slice()),
            Err(ExportSealError::Digest)
        ));
        assert!(matches!(
            verify_export_seal(&public, &seal, &mut &body[..body.len() - 1]),
            Err(ExportSealError::Length { .. })
        ));
        let mut forged = seal.clone();
        forged["export"]["rows"] = json!(3);
        assert!(matches!(
            verify_export_seal(&public, &forged, &mut body.as_slice()),
            Err(ExportSealError::Seal(_))
        ));
        assert!(matches!(
            parse_export_seal("no seal here\nat all"),
            Err(ExportSealError::NotFound)
        ));
    }
}
