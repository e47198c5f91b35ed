//! Connectors: one per agency source, configured by one file in
//! `connectors/`, each streaming Arrow record batches of the source's rows
//! mapped to catalogue fields. The registry in [`build`] is the one place
//! where source kinds are named.

mod csv;
mod parquet;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};
use serde::Deserialize;
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

/// A source kind. Implementations stream the whole source through `emit`,
/// in order, with bounded memory.
pub trait Connector: Send + Sync + 'static {
    fn spec(&self) -> &ConnectorSpec;
    /// Whether the source can be reached and has the mapped columns.
    fn check(&self) -> Result<(), ConnectorError>;
    fn pull(
        &self,
        emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<PullStats, ConnectorError>;
}

/// Builds rows of strings into batches of [`BATCH_ROWS`]; shared by every
/// row-oriented connector.
pub(crate) struct BatchBuilder {
    source_name: String,
    schema: SchemaRef,
    positions: Vec<u64>,
    columns: Vec<Vec<String>>,
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
            columns: (0..n).map(|_| Vec::with_capacity(BATCH_ROWS)).collect(),
            rejected: Vec::new(),
            stats: PullStats::default(),
            started: Instant::now(),
        }
    }

    /// Add a row whose values are in [`ConnectorSpec::source_columns`] order.
    pub(crate) fn push(
        &mut self,
        position: u64,
        values: impl Iterator<Item = String>,
        emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<(), ConnectorError> {
        self.positions.push(position);
        for (col, v) in self.columns.iter_mut().zip(values) {
            col.push(v);
        }
        self.stats.rows += 1;
        if self.positions.len() >= BATCH_ROWS {
            self.flush(emit)?;
        }
        Ok(())
    }

    pub(crate) fn reject(&mut self, r: Rejected) {
        self.stats.rejected += 1;
        self.rejected.push(r);
    }

    fn flush(
        &mut self,
        emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<(), ConnectorError> {
        if self.positions.is_empty() && self.rejected.is_empty() {
            return Ok(());
        }
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(std::mem::take(
            &mut self.positions,
        )))];
        for col in &mut self.columns {
            arrays.push(Arc::new(StringArray::from(std::mem::take(col))));
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
        })
    }

    pub(crate) fn finish(
        mut self,
        emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<PullStats, ConnectorError> {
        self.flush(emit)?;
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
}

type RawSourceKind = SourceKind;

fn default_encoding() -> String {
    "utf-8".to_string()
}

fn default_delimiter() -> char {
    ','
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
    let raw: RawConnectorFile = src.parse_toml()?;
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
