//! Connectors: one per agency source, configured by one file in
//! `connectors/`, each streaming Arrow record batches of the source's rows
//! mapped to catalogue fields. The registry in [`build`] is the one place
//! where source kinds are named.

mod csv;
#[cfg(feature = "excel")]
mod excel;
mod http_json;
#[cfg(feature = "mysql")]
mod mysql;
mod parquet;
#[cfg(feature = "postgres")]
mod postgres;
mod sql;

pub use http_json::{EnvRef, HeaderSource, HttpJsonSource, Pagination};
pub use sql::DbSource;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::catalog::Catalog;
use crate::config::{ConfigError, ConfigErrors, Source};

/// Rows per emitted batch.
pub const BATCH_ROWS: usize = 8192;

/// Columns every pulled batch starts with, before the mapped fields.
pub const COL_POSITION: &str = "__position";
pub const COL_RECORD_ID: &str = "__record_id";
pub const COL_AS_OF: &str = "__as_of";
pub const COL_SUBJECT: &str = "__subject";

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("source {source_name}: cannot open {path}: {reason}")]
    Open {
        source_name: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "source {source_name}: column `{column}` named in the connector file is not in the source (columns found: {found})"
    )]
    MissingColumn {
        source_name: String,
        column: String,
        found: String,
    },
    #[error("source {source_name}: read failed at {position}: {reason}")]
    Read {
        source_name: String,
        position: String,
        reason: String,
    },
    #[error("source {source_name}: {reason}")]
    Sink { source_name: String, reason: String },
    #[error("source {source_name}: cannot connect: {reason}")]
    Connect { source_name: String, reason: String },
    #[error("source {source_name}: credentials: {reason}")]
    Credentials { source_name: String, reason: String },
    #[error("source {source_name}: checkpoint: {reason}")]
    Checkpoint { source_name: String, reason: String },
    #[error("source {source_name}: {reason}")]
    Unsupported { source_name: String, reason: String },
    /// A web API request that failed; `url` has no query string.
    #[error("source {source_name}: page {page} ({url}): {reason}")]
    Http {
        source_name: String,
        page: u64,
        url: String,
        reason: String,
    },
}

/// A source row that could not be read as a record: it goes to quarantine
/// with its position and reason, and the rest of the batch continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Line number (CSV) or row number (Parquet), 1-based.
    pub position: u64,
    pub reason: String,
    /// The raw row, lossily decoded, for the steward who fixes it.
    pub raw: String,
}

/// One batch from a source: rows as an Arrow batch (schema from
/// [`ConnectorSpec::batch_schema`]) plus the rows rejected on the way.
#[derive(Debug)]
pub struct Pulled {
    pub batch: RecordBatch,
    pub rejected: Vec<Rejected>,
    /// For an incremental source, the point reached after the last row of
    /// this batch (accepted or rejected): store the batch, then this, and a
    /// later pull from it neither repeats nor skips a row. `None` for
    /// snapshot sources.
    pub checkpoint: Option<Checkpoint>,
}

/// How a pull relates to what was pulled before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMode {
    /// The pull returns the whole source; it replaces what was held.
    Snapshot,
    /// The pull returns only rows after the checkpoint it started from, in
    /// checkpoint order; they are upserted by record id. Deletions at the
    /// source are not seen: a periodic snapshot pull catches them.
    Incremental,
}

/// Where an incremental pull got to: opaque to callers, who store it as the
/// JSON string of [`Checkpoint::to_json`] and hand it back to the next pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint(CheckpointKind);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum CheckpointKind {
    /// The (watermark, record id) of the last row emitted, as the source's
    /// own text for them, and the watermark column they belong to.
    Watermark {
        column: String,
        watermark: String,
        record_id: String,
    },
}

#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
impl Checkpoint {
    pub(crate) fn watermark(column: &str, watermark: &str, record_id: &str) -> Self {
        Checkpoint(CheckpointKind::Watermark {
            column: column.to_string(),
            watermark: watermark.to_string(),
            record_id: record_id.to_string(),
        })
    }

    /// The (watermark, record id) pair of a watermark checkpoint taken on
    /// `column`; an error for a checkpoint of another column, which would
    /// resume at a meaningless point.
    pub(crate) fn watermark_pair(
        &self,
        source_name: &str,
        column: &str,
    ) -> Result<(&str, &str), ConnectorError> {
        let CheckpointKind::Watermark {
            column: c,
            watermark,
            record_id,
        } = &self.0;
        if c != column {
            return Err(ConnectorError::Checkpoint {
                source_name: source_name.to_string(),
                reason: format!(
                    "the checkpoint is on watermark column `{c}` but the connector now uses `{column}`; pull a snapshot to start again"
                ),
            });
        }
        Ok((watermark, record_id))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a checkpoint is plain strings")
    }

    pub fn from_json(source_name: &str, text: &str) -> Result<Self, ConnectorError> {
        serde_json::from_str(text).map_err(|e| ConnectorError::Checkpoint {
            source_name: source_name.to_string(),
            reason: format!("cannot read checkpoint: {e}"),
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullStats {
    pub rows: u64,
    pub rejected: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// What every connector file says besides its source kind: who provides the
/// rows, for which dataset, and how source columns map to catalogue fields.
#[derive(Debug, Clone)]
pub struct ConnectorSpec {
    pub name: String,
    pub file: PathBuf,
    pub agency: String,
    pub dataset: String,
    /// Source column holding the subject's identifier.
    pub subject_column: String,
    pub record_id_column: String,
    pub as_of_column: String,
    /// (source column, qualified catalogue field), in file order.
    pub columns: Vec<(String, String)>,
    /// Per catalogue field: source value → catalogue value.
    pub values: HashMap<String, HashMap<String, String>>,
    /// How often a running broker pulls this source, if it does.
    pub pull_interval: Option<Duration>,
}

impl ConnectorSpec {
    /// Source columns to read, in batch order after `__position`: record id,
    /// as-of, subject, then the mapped fields.
    pub fn source_columns(&self) -> Vec<&str> {
        let mut cols = vec![
            self.record_id_column.as_str(),
            self.as_of_column.as_str(),
            self.subject_column.as_str(),
        ];
        cols.extend(self.columns.iter().map(|(s, _)| s.as_str()));
        cols
    }

    /// The schema of every batch this source emits.
    pub fn batch_schema(&self) -> SchemaRef {
        let mut fields = vec![
            ArrowField::new(COL_POSITION, DataType::UInt64, false),
            ArrowField::new(COL_RECORD_ID, DataType::Utf8, false),
            ArrowField::new(COL_AS_OF, DataType::Utf8, false),
            ArrowField::new(COL_SUBJECT, DataType::Utf8, false),
        ];
        fields.extend(
            self.columns
                .iter()
                .map(|(_, target)| ArrowField::new(target, DataType::Utf8, false)),
        );
        Arc::new(Schema::new(fields))
    }
}

/// A source kind. Implementations stream the source through `emit`, in
/// order, with bounded memory.
pub trait Connector: Send + Sync + 'static {
    fn spec(&self) -> &ConnectorSpec;
    /// Whether the source can be reached and has the mapped columns.
    fn check(&self) -> Result<(), ConnectorError>;
    /// Whether a pull returns the whole source or only what changed.
    fn mode(&self) -> PullMode {
        PullMode::Snapshot
    }
    /// Stream the source through `emit`. A snapshot source ignores `from`
    /// and emits everything; an incremental one emits only rows after
    /// `from` (everything when `None`), each batch with the checkpoint after
    /// its last row. An error from `emit` stops the pull and is returned.
    fn pull(
        &self,
        from: Option<&Checkpoint>,
        emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<PullStats, ConnectorError>;
}

/// Builds rows of strings into batches of [`BATCH_ROWS`]; shared by every
/// row-oriented connector.
pub(crate) struct BatchBuilder {
    source_name: String,
    schema: SchemaRef,
    positions: Vec<u64>,
    columns: Vec<StringBuilder>,
    rejected: Vec<Rejected>,
    pub(crate) stats: PullStats,
    started: Instant,
}

impl BatchBuilder {
    pub(crate) fn new(spec: &ConnectorSpec) -> Self {
        let schema = spec.batch_schema();
        let n = schema.fields().len() - 1;
        BatchBuilder {
            source_name: spec.name.clone(),
            schema,
            positions: Vec::with_capacity(BATCH_ROWS),
            columns: (0..n)
                .map(|_| StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16))
                .collect(),
            rejected: Vec::new(),
            stats: PullStats::default(),
            started: Instant::now(),
        }
    }

    /// Add a row whose values are in [`ConnectorSpec::source_columns`]
    /// order, emitting a batch (without checkpoint) when one is full. For
    /// snapshot sources.
    pub(crate) fn push<S: AsRef<str>>(
        &mut self,
        position: u64,
        values: impl IntoIterator<Item = S>,
        emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<(), ConnectorError> {
        self.push_row(position, values);
        if self.is_full() {
            self.flush(None, emit)?;
        }
        Ok(())
    }

    /// Add a row without flushing: the caller checks [`Self::is_full`] and
    /// flushes with the checkpoint after this row.
    pub(crate) fn push_row<S: AsRef<str>>(
        &mut self,
        position: u64,
        values: impl IntoIterator<Item = S>,
    ) {
        self.positions.push(position);
        for (col, v) in self.columns.iter_mut().zip(values) {
            col.append_value(v.as_ref());
        }
        self.stats.rows += 1;
    }

    pub(crate) fn reject(&mut self, r: Rejected) {
        self.stats.rejected += 1;
        self.rejected.push(r);
    }

    /// Whether the pending rows and rejections make a full batch.
    pub(crate) fn is_full(&self) -> bool {
        self.positions.len() + self.rejected.len() >= BATCH_ROWS
    }

    /// Emit the pending rows and rejections, if any, as one batch.
    pub(crate) fn flush(
        &mut self,
        checkpoint: Option<Checkpoint>,
        emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<(), ConnectorError> {
        if self.positions.is_empty() && self.rejected.is_empty() {
            return Ok(());
        }
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(std::mem::replace(
            &mut self.positions,
            Vec::with_capacity(BATCH_ROWS),
        )))];
        for col in &mut self.columns {
            arrays.push(Arc::new(col.finish()));
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| {
            ConnectorError::Sink {
                source_name: self.source_name.clone(),
                reason: format!("cannot build batch: {e}"),
            }
        })?;
        emit(Pulled {
            batch,
            rejected: std::mem::take(&mut self.rejected),
            checkpoint,
        })
    }

    pub(crate) fn finish(
        mut self,
        checkpoint: Option<Checkpoint>,
        emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<PullStats, ConnectorError> {
        self.flush(checkpoint, emit)?;
        self.stats.elapsed = self.started.elapsed();
        Ok(self.stats)
    }
}

// ---- connector files ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnectorFile {
    #[serde(default)]
    name: Option<String>,
    agency: Spanned<String>,
    dataset: Spanned<String>,
    subject_column: String,
    record_id_column: String,
    as_of_column: String,
    columns: Spanned<BTreeMap<String, Spanned<String>>>,
    #[serde(default)]
    values: BTreeMap<String, Spanned<BTreeMap<String, String>>>,
    /// `serve` pulls this source every so many seconds (absent: only
    /// `sharebroker pull` does).
    #[serde(default)]
    pull_interval_secs: Option<Spanned<i64>>,
    source: RawSourceKind,
}

/// The source kinds, tagged by `type`. Adding one: a file in this folder and
/// one variant here plus one arm in [`build`].
#[derive(Deserialize, Debug, Clone)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceKind {
    Csv {
        /// Relative paths are resolved against the data directory.
        path: PathBuf,
        /// `utf-8` (default), `gbk`, `gb18030` or any WHATWG label.
        #[serde(default = "default_encoding")]
        encoding: String,
        /// One ASCII character; default `,`.
        #[serde(default = "default_delimiter")]
        delimiter: char,
    },
    Parquet {
        path: PathBuf,
    },
    /// An `.xlsx` workbook (cargo feature `excel`).
    Excel {
        /// Relative paths are resolved against the data directory.
        path: PathBuf,
        /// The sheet to read; default the first.
        #[serde(default)]
        sheet: Option<String>,
        /// 1-based row number of the header; data rows follow it. Default 1.
        #[serde(default = "default_header_row")]
        header_row: u32,
    },
    /// A PostgreSQL table or query (cargo feature `postgres`).
    Postgres(DbSource),
    /// A MariaDB / MySQL table or query (cargo feature `mysql`).
    Mysql(DbSource),
    /// A paginated JSON web API.
    HttpJson(HttpJsonSource),
}

impl SourceKind {
    /// The `type` value of this kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceKind::Csv { .. } => "csv",
            SourceKind::Parquet { .. } => "parquet",
            SourceKind::Excel { .. } => "excel",
            SourceKind::Postgres(_) => "postgres",
            SourceKind::Mysql(_) => "mysql",
            SourceKind::HttpJson(_) => "http_json",
        }
    }

    /// The cargo feature this kind needs, if it is not compiled in.
    fn missing_feature(&self) -> Option<&'static str> {
        match self {
            SourceKind::Postgres(_) if !cfg!(feature = "postgres") => Some("postgres"),
            SourceKind::Mysql(_) if !cfg!(feature = "mysql") => Some("mysql"),
            SourceKind::Excel { .. } if !cfg!(feature = "excel") => Some("excel"),
            _ => None,
        }
    }
}

type RawSourceKind = SourceKind;

fn default_encoding() -> String {
    "utf-8".to_string()
}

fn default_delimiter() -> char {
    ','
}

fn default_header_row() -> u32 {
    1
}

/// A validated connector file: its spec and source kind.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    pub spec: ConnectorSpec,
    pub source: SourceKind,
}

/// Load and validate every `*.toml` in a connectors directory against the
/// catalogue, in file-name order.
pub fn load_dir(dir: &Path, catalog: &Catalog) -> Result<Vec<ConnectorConfig>, ConfigErrors> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::new(dir, "", format!("cannot read connectors directory: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut errors = Vec::new();
    let mut out: Vec<ConnectorConfig> = Vec::new();
    for p in paths {
        match load_file(&p, catalog) {
            Ok(c) => {
                if out.iter().any(|o| o.spec.name == c.spec.name) {
                    errors.push(ConfigError::new(
                        &p,
                        "name",
                        format!("duplicate connector name `{}`", c.spec.name),
                    ));
                }
                out.push(c)
            }
            Err(mut e) => errors.append(&mut e.0),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Load and validate one connector file.
pub fn load_file(path: &Path, catalog: &Catalog) -> Result<ConnectorConfig, ConfigErrors> {
    let src = Source::read(path)?;
    let raw: RawConnectorFile = src.parse_toml().map_err(|mut e| {
        // Inside the tagged `[source]` table serde loses spans, and the
        // error points at the table; find the offending key's own line.
        if let Some(key) = e
            .reason
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            && let Some(line) = sql::source_key_line(&src, key)
        {
            e.line = Some(line);
        }
        e
    })?;
    let mut errors = Vec::new();
    let name = raw.name.unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    if catalog.agency(raw.agency.get_ref()).is_none() {
        errors.push(src.error_at(
            raw.agency.span(),
            "agency",
            format!("unknown agency `{}`", raw.agency.get_ref()),
        ));
    }
    let dataset = catalog.dataset(raw.dataset.get_ref());
    if dataset.is_none() {
        errors.push(src.error_at(
            raw.dataset.span(),
            "dataset",
            format!("unknown dataset `{}`", raw.dataset.get_ref()),
        ));
    }
    let columns_span = raw.columns.span();
    let mut columns = Vec::new();
    for (source_col, target) in raw.columns.into_inner() {
        let key = format!("columns.{source_col}");
        match (catalog.field(target.get_ref()), dataset) {
            (None, _) => errors.push(src.error_at(
                target.span(),
                key,
                format!(
                    "unknown catalogue field `{}` (expected `dataset.field`)",
                    target.get_ref()
                ),
            )),
            (Some((d, _)), Some(own)) if d.subject != own.subject => errors.push(src.error_at(
                target.span(),
                key,
                format!(
                    "field `{}` is about a {} but dataset `{}` is about a {}",
                    target.get_ref(),
                    d.subject.as_str(),
                    own.id,
                    own.subject.as_str()
                ),
            )),
            _ => {}
        }
        if columns
            .iter()
            .any(|(_, t): &(String, String)| t == target.get_ref())
        {
            errors.push(src.error_at(
                target.span(),
                format!("columns.{source_col}"),
                format!("field `{}` is mapped twice", target.get_ref()),
            ));
        }
        columns.push((source_col, target.into_inner()));
    }
    if columns.is_empty() {
        errors.push(src.error_at(
            columns_span,
            "columns",
            "map at least one source column to a catalogue field",
        ));
    }
    let mut values = HashMap::new();
    for (target, map) in raw.values {
        if !columns.iter().any(|(_, t)| *t == target) {
            errors.push(src.error_at(
                map.span(),
                format!("values.{target}"),
                format!("`{target}` is not a mapped field of this connector"),
            ));
        }
        values.insert(target, map.into_inner().into_iter().collect());
    }
    let mut pull_interval = None;
    if let Some(secs) = &raw.pull_interval_secs {
        match u64::try_from(*secs.get_ref()) {
            Ok(n) if (1..=31_536_000).contains(&n) => pull_interval = Some(Duration::from_secs(n)),
            _ => errors.push(src.error_at(
                secs.span(),
                "pull_interval_secs",
                format!(
                    "must be from 1 to 31536000 seconds (a year), found {}",
                    secs.get_ref()
                ),
            )),
        }
    }
    if let SourceKind::Csv {
        delimiter,
        encoding,
        ..
    } = &raw.source
    {
        if !delimiter.is_ascii() {
            errors.push(ConfigError::new(
                path,
                "source.delimiter",
                "the delimiter must be one ASCII character",
            ));
        }
        if encoding_rs::Encoding::for_label(encoding.as_bytes()).is_none() {
            errors.push(ConfigError::new(
                path,
                "source.encoding",
                format!("unknown encoding `{encoding}`"),
            ));
        }
    }
    if let SourceKind::Excel { header_row: 0, .. } = &raw.source {
        errors.push(
            ConfigError::new(path, "source.header_row", "row numbers start at 1")
                .at_line(sql::source_key_line(&src, "header_row")),
        );
    }
    if let SourceKind::Postgres(db) | SourceKind::Mysql(db) = &raw.source {
        db.validate(&src, &mut errors);
    }
    if let SourceKind::HttpJson(http) = &raw.source {
        http.validate(&src, &mut errors);
    }
    if let Some(feature) = raw.source.missing_feature() {
        errors.push(ConfigError::new(
            path,
            "source.type",
            format!(
                "this build has no `{}` connector (cargo feature `{feature}`)",
                raw.source.type_name()
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(ConnectorConfig {
        spec: ConnectorSpec {
            name,
            file: path.to_path_buf(),
            agency: raw.agency.into_inner(),
            dataset: raw.dataset.into_inner(),
            subject_column: raw.subject_column,
            record_id_column: raw.record_id_column,
            as_of_column: raw.as_of_column,
            columns,
            values,
            pull_interval,
        },
        source: raw.source,
    })
}

/// The registry: the one place that turns a source kind into a connector.
/// Relative paths are resolved against `data_dir`.
pub fn build(config: &ConnectorConfig, data_dir: &Path) -> Box<dyn Connector> {
    let spec = config.spec.clone();
    match &config.source {
        SourceKind::Csv {
            path,
            encoding,
            delimiter,
        } => Box::new(csv::CsvConnector::new(
            spec,
            data_dir.join(path),
            encoding,
            *delimiter as u8,
        )),
        SourceKind::Parquet { path } => {
            Box::new(parquet::ParquetConnector::new(spec, data_dir.join(path)))
        }
        #[cfg(feature = "excel")]
        SourceKind::Excel {
            path,
            sheet,
            header_row,
        } => Box::new(excel::ExcelConnector::new(
            spec,
            data_dir.join(path),
            sheet.clone(),
            *header_row,
        )),
        #[cfg(feature = "postgres")]
        SourceKind::Postgres(db) => Box::new(postgres::PostgresConnector::new(
            spec,
            db.clone(),
            data_dir.to_path_buf(),
        )),
        #[cfg(feature = "mysql")]
        SourceKind::Mysql(db) => Box::new(mysql::MysqlConnector::new(
            spec,
            db.clone(),
            data_dir.to_path_buf(),
        )),
        SourceKind::HttpJson(http) => Box::new(http_json::HttpJsonConnector::new(
            spec,
            http.clone(),
            data_dir,
        )),
        #[allow(unreachable_patterns)]
        other => Box::new(Unavailable {
            spec,
            kind: other.type_name(),
        }),
    }
}

/// A kind whose cargo feature is off: loading its file already reports
/// that; a connector built anyway says so on every call.
#[allow(dead_code)]
struct Unavailable {
    spec: ConnectorSpec,
    kind: &'static str,
}

impl Connector for Unavailable {
    fn spec(&self) -> &ConnectorSpec {
        &self.spec
    }
    fn check(&self) -> Result<(), ConnectorError> {
        Err(ConnectorError::Unsupported {
            source_name: self.spec.name.clone(),
            reason: format!("this build has no `{}` connector", self.kind),
        })
    }
    fn pull(
        &self,
        _from: Option<&Checkpoint>,
        _emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<PullStats, ConnectorError> {
        self.check().map(|_| PullStats::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).expect("catalogue")
    }

    #[test]
    fn demo_connectors_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
        let all = load_dir(&dir, &catalog()).expect("demo connectors are valid");
        assert!(all.len() >= 4);
    }

    #[test]
    fn example_connectors_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/examples");
        let all = load_dir(&dir, &catalog()).expect("example connectors are valid");
        let kinds: Vec<&str> = all.iter().map(|c| c.source.type_name()).collect();
        for kind in ["postgres", "mysql", "excel", "http_json"] {
            assert!(kinds.contains(&kind), "no example for {kind}: {kinds:?}");
        }
    }

    #[test]
    fn bad_database_sources_name_key_and_line() {
        let head = "agency = \"xj-gat\"\ndataset = \"population\"\nsubject_column = \"A\"\nrecord_id_column = \"B\"\nas_of_column = \"C\"\n[columns]\nXM = \"population.name\"\n[source]\n";
        let cases: &[(&str, &str)] = &[
            (
                "type = \"postgres\"\ntable = \"t\"\nquery = \"SELECT 1\"\nurl_env = \"U\"\n",
                "x.toml:11: source.query: give either `table` or `query`, not both",
            ),
            (
                "type = \"mysql\"\ntable = \"t\"\nhost = \"h\"\nuser = \"u\"\ndatabase = \"d\"\npassword = \"hunter2\"\n",
                "x.toml:14: unknown field `password`",
            ),
            (
                "type = \"postgres\"\ntable = \"t\"\nurl_env = \"U\"\nhost = \"h\"\n",
                "x.toml:11: source.url_env: give exactly one of `url_env`, `url_file` or `host`",
            ),
            (
                "type = \"mysql\"\ntable = \"t\"\nhost = \"h\"\nuser = \"u\"\n",
                "x.toml:11: source.host: `host` needs `database`",
            ),
            (
                "type = \"postgres\"\nquery = \"SELECT 1\"\nurl_file = \"u\"\npassword_env = \"P\"\n",
                "x.toml:12: source.password_env: `password_env` goes with `host`",
            ),
            (
                "type = \"excel\"\npath = \"x.xlsx\"\nheader_row = 0\n",
                "x.toml:11: source.header_row: row numbers start at 1",
            ),
            (
                "type = \"excel\"\npath = \"x.xlsx\"\nsheets = \"a\"\n",
                "x.toml:11: unknown field `sheets`",
            ),
            (
                "type = \"postgres\"\ntable = \"a..b\"\nurl_env = \"U\"\nwatermark_column = \"\"\n",
                "x.toml:10: source.table: `a..b` is not a table name",
            ),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = catalog();
        for (text, want) in cases {
            let p = dir.path().join("x.toml");
            std::fs::write(&p, format!("{head}{text}")).expect("write");
            let got = load_file(&p, &cat).unwrap_err().to_string();
            assert!(got.contains(want), "want `{want}` in `{got}`");
            assert!(!got.contains("hunter2"), "{got}");
        }
    }

    #[test]
    fn checkpoints_round_trip_as_json_and_refuse_another_column() {
        let cp = Checkpoint::watermark("gxsj", "2024-01-02T03:04:05", "42");
        let text = cp.to_json();
        assert_eq!(
            text,
            r#"{"kind":"watermark","column":"gxsj","watermark":"2024-01-02T03:04:05","record_id":"42"}"#
        );
        let back = Checkpoint::from_json("s", &text).expect("parse");
        assert_eq!(back, cp);
        assert_eq!(
            back.watermark_pair("s", "gxsj").expect("pair"),
            ("2024-01-02T03:04:05", "42")
        );
        let err = back.watermark_pair("s", "updated").unwrap_err().to_string();
        assert!(
            err.contains("checkpoint is on watermark column `gxsj`"),
            "{err}"
        );
        assert!(Checkpoint::from_json("s", "{}").is_err());
    }

    #[test]
    fn bad_connector_files_name_key_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: &[(&str, &str)] = &[
            (
                "agency = \"xj-gat\"\ndataset = \"population\"\nsubject_column = \"A\"\nrecord_id_column = \"B\"\nas_of_column = \"C\"\n[columns]\nXM = \"population.nmae\"\n[source]\ntype = \"csv\"\npath = \"x.csv\"\n",
                "x.toml:7: columns.XM: unknown catalogue field `population.nmae`",
            ),
            (
                "agency = \"xj-gat\"\ndataset = \"population\"\nsubject_column = \"A\"\nrecord_id_column = \"B\"\nas_of_column = \"C\"\n[columns]\nXM = \"population.name\"\n[source]\ntype = \"ftp\"\npath = \"x.csv\"\n",
                "x.toml:9: unknown variant `ftp`",
            ),
            (
                "agency = \"xj-nobody\"\ndataset = \"population\"\nsubject_column = \"A\"\nrecord_id_column = \"B\"\nas_of_column = \"C\"\n[columns]\nXM = \"population.name\"\n[source]\ntype = \"csv\"\npath = \"x.csv\"\n",
                "x.toml:1: agency: unknown agency `xj-nobody`",
            ),
            (
                "agency = \"xj-gat\"\ndataset = \"population\"\nsubject_column = \"A\"\nrecord_id_column = \"B\"\nas_of_column = \"C\"\n[columns]\nXM = \"enterprise.name\"\n[source]\ntype = \"csv\"\npath = \"x.csv\"\n",
                "field `enterprise.name` is about a organisation but dataset `population` is about a person",
            ),
            (
                "agency = \"xj-gat\"\ndataset = \"population\"\nsubject_column = \"A\"\nrecord_id_column = \"B\"\nas_of_column = \"C\"\n[columns]\nXM = \"population.name\"\n[source]\ntype = \"csv\"\npath = \"x.csv\"\nencoding = \"klingon\"\n",
                "x.toml: source.encoding: unknown encoding `klingon`",
            ),
            (
                "agency = \"xj-gat\"\ndataset = \"population\"\nsubject_column = \"A\"\nrecord_id_column = \"B\"\nas_of_column = \"C\"\npull_interval_secs = 0\n[columns]\nXM = \"population.name\"\n[source]\ntype = \"csv\"\npath = \"x.csv\"\n",
                "x.toml:6: pull_interval_secs: must be from 1 to 31536000 seconds (a year), found 0",
            ),
        ];
        let cat = catalog();
        for (text, want) in cases {
            let p = dir.path().join("x.toml");
            std::fs::write(&p, text).expect("write");
            let got = load_file(&p, &cat).unwrap_err().to_string();
            assert!(got.contains(want), "want `{want}` in `{got}`");
        }
    }
}
