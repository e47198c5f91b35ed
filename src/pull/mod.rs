//! The pull run, in two steps. **Stage**: each pulled source's rows go to
//! its own table in the store, `source.<name>` — a snapshot source replaces
//! its table, an incremental one appends to it in steps, each step's rows
//! and the checkpoint reached after them committed together in one version
//! (so a checkpoint is durable only once its rows are, and a pull that dies
//! resumes from the last step). Rows a connector rejected are staged beside
//! the others, with their reason and raw text. **Resolve** (`resolve.rs`):
//! the staged rows → ingest (normalise, resolve) → new versions of the
//! golden tables, the registry, quarantine, findings and review queue;
//! after an incremental pull only what the new rows touch. Glue between
//! the I/O modules and the pure ingest stage.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};

use indicatif::{ProgressBar, ProgressStyle};

use crate::catalog::{Catalog, SubjectKind};
use crate::config::Settings;
use crate::connectors::{
    self, COL_POSITION, COL_RECORD_ID, Checkpoint, Connector, ConnectorConfig, ConnectorError,
    ConnectorSpec, PullMode, PullStats, Pulled, Rejected,
};
use crate::ingest::SubjectRegistry;
use crate::store::{Manifest, StoreError, TableStore};

mod resolve;

pub use resolve::{
    META_INPUTS, MODEL_TABLE, RECORDS_TABLE, Touched, resolve, resolve_all, state_table,
};

pub const QUARANTINE_TABLE: &str = "quarantine";
pub const FINDINGS_TABLE: &str = "findings";
/// Every subject id ever handed out (kind, key, subject id).
pub const SUBJECTS_TABLE: &str = "subjects";

/// Staged rows of one source: `source.<connector name>`.
pub fn source_table(name: &str) -> String {
    format!("source.{name}")
}
/// Staged-row columns after the source's batch columns: set on a row the
/// connector rejected (its other columns are empty).
pub const COL_REJECT_REASON: &str = "__reject_reason";
pub const COL_REJECT_RAW: &str = "__reject_raw";
/// Manifest meta of a staged version: how it was pulled, and for an
/// incremental source the checkpoint reached.
pub const META_MODE: &str = "mode";
pub const META_CHECKPOINT: &str = "checkpoint";
/// `"false"` on the steps of an incremental pull that started from scratch
/// and has not finished: such a version holds only part of the source, so
/// resolving reads the newest complete version instead.
pub const META_COMPLETE: &str = "complete";
/// Rows per durable step of an incremental pull.
pub const DEFAULT_COMMIT_EVERY_ROWS: usize = 100_000;

/// How to run a pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Pull incremental sources from scratch, replacing what was staged
    /// (after a change of mapping, or to see deletions at the source).
    pub full: bool,
    /// Rows per durable step of an incremental pull.
    pub commit_every_rows: usize,
    pub progress: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            full: false,
            commit_every_rows: DEFAULT_COMMIT_EVERY_ROWS,
            progress: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
pub struct PullReport {
    /// The sources pulled in this run.
    pub sources: Vec<(String, PullStats)>,
    /// Configured sources never pulled: not in the golden records.
    pub never_pulled: Vec<String>,
    pub subjects: Vec<(SubjectKind, usize, usize)>,
    pub quarantined: usize,
    pub findings: usize,
    /// Records waiting in the review queue.
    pub review: usize,
    /// Records without a valid identifier linked by the model / by a steward.
    pub probable_links: usize,
    pub steward_links: usize,
    /// Nothing the golden records are made of changed: nothing was written.
    pub unchanged: bool,
    /// Set when only what changed was resolved again.
    pub touched: Option<Touched>,
    pub manifests: Vec<Manifest>,
    pub elapsed: Duration,
}

/// The subject registry as of the current version (empty before the
/// first pull).
pub fn load_registry(store: &TableStore) -> Result<SubjectRegistry, StoreError> {
    let Some(m) = store.current(SUBJECTS_TABLE)? else {
        return Ok(SubjectRegistry::default());
    };
    let batches = store.read(&m)?;
    SubjectRegistry::from_batches(&batches).map_err(|reason| StoreError::Corrupt {
        path: format!("{SUBJECTS_TABLE} v{}", m.version),
        reason,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum PullSetupError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("unknown source `{name}` (sources: {known})")]
    UnknownSource { name: String, known: String },
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Pull every source configured under `s`, or those named in `only`, into
/// the store under `s`, and rebuild the golden records from every source.
pub fn run_configured(
    s: &Settings,
    only: &[String],
    progress: bool,
) -> Result<PullReport, PullSetupError> {
    run_configured_with(
        s,
        only,
        &PullOptions {
            progress,
            ..PullOptions::default()
        },
    )
}

/// [`run_configured`] with options.
pub fn run_configured_with(
    s: &Settings,
    only: &[String],
    options: &PullOptions,
) -> Result<PullReport, PullSetupError> {
    let catalog = Catalog::load(&s.policies_dir)?;
    let configs = connectors::load_dir(&s.connectors_dir, &catalog)?;
    for name in only {
        if !configs.iter().any(|c| &c.spec.name == name) {
            return Err(PullSetupError::UnknownSource {
                name: name.clone(),
                known: configs
                    .iter()
                    .map(|c| c.spec.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let store = TableStore::open_local(&s.store_dir())?;
    // What a killed earlier pull left behind goes first; then the pull;
    // then versions beyond the retention setting.
    store.recover()?;
    let report = run(&catalog, &configs, only, &s.data_dir, &store, options)?;
    for gc in store.gc_all(&s.store_retention, false)? {
        if !gc.versions_removed.is_empty() || !gc.files_removed.is_empty() {
            tracing::info!(table = %gc.table, versions = ?gc.versions_removed, files = gc.files_removed.len(), bytes = gc.bytes_freed, "retention applied");
        }
    }
    Ok(report)
}

/// Stage the sources in `configs` named in `only` (all when empty), then
/// resolve every configured source's staged rows and commit new versions
/// of the golden tables, the quarantine and the findings. A source that
/// fails stops the run: what earlier steps committed stays (an incremental
/// source resumes from it), and no golden table changes.
pub fn run(
    catalog: &Catalog,
    configs: &[ConnectorConfig],
    only: &[String],
    data_dir: &Path,
    store: &TableStore,
    options: &PullOptions,
) -> Result<PullReport, PullError> {
    let started = Instant::now();
    let mut sources = Vec::new();
    for config in configs {
        if !only.is_empty() && !only.contains(&config.spec.name) {
            continue;
        }
        let connector = connectors::build(config, data_dir);
        let bar = progress_bar(options.progress, &config.spec.name);
        let stats = stage(store, connector.as_ref(), options, &bar)?;
        bar.finish();
        tracing::info!(source = %config.spec.name, rows = stats.rows, rejected = stats.rejected, bytes = stats.bytes, elapsed_ms = stats.elapsed.as_millis() as u64, "pulled");
        sources.push((config.spec.name.clone(), stats));
    }
    let mut report = resolve(catalog, configs, store)?;
    report.sources = sources;
    report.elapsed = started.elapsed();
    Ok(report)
}

fn progress_bar(progress: bool, name: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new_spinner();
    b.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>24} {pos:>9} rows  {per_sec}  {elapsed}")
            .expect("a valid progress template"),
    );
    b.set_prefix(name.to_string());
    b
}

/// The staged table's schema: the source's batch columns, then the reject
/// columns.
pub fn staged_schema(spec: &ConnectorSpec) -> SchemaRef {
    let mut fields: Vec<ArrowField> = spec
        .batch_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(ArrowField::new(COL_REJECT_REASON, DataType::Utf8, true));
    fields.push(ArrowField::new(COL_REJECT_RAW, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// A pulled batch as staged rows: the accepted rows, then one row per
/// rejected row.
fn staged_batches(schema: &SchemaRef, pulled: &Pulled) -> Result<Vec<RecordBatch>, String> {
    let mut out = Vec::with_capacity(2);
    let n = pulled.batch.num_rows();
    if n > 0 {
        let mut cols: Vec<ArrayRef> = pulled.batch.columns().to_vec();
        cols.push(arrow_array::new_null_array(&DataType::Utf8, n));
        cols.push(arrow_array::new_null_array(&DataType::Utf8, n));
        out.push(RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())?);
    }
    let r = pulled.rejected.len();
    if r > 0 {
        let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(
            pulled.rejected.iter().map(|x| x.position),
        ))];
        let empty: ArrayRef = Arc::new(StringArray::from_iter_values(std::iter::repeat_n("", r)));
        cols.extend(std::iter::repeat_n(empty, schema.fields().len() - 3));
        cols.push(Arc::new(StringArray::from_iter_values(
            pulled.rejected.iter().map(|x| x.reason.as_str()),
        )));
        cols.push(Arc::new(StringArray::from_iter_values(
            pulled.rejected.iter().map(|x| x.raw.as_str()),
        )));
        out.push(RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn meta(mode: PullMode, checkpoint: &Option<String>, complete: bool) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(META_COMPLETE.to_string(), complete.to_string());
    m.insert(
        META_MODE.to_string(),
        match mode {
            PullMode::Snapshot => "snapshot",
            PullMode::Incremental => "incremental",
        }
        .to_string(),
    );
    if let Some(c) = checkpoint {
        m.insert(META_CHECKPOINT.to_string(), c.clone());
    }
    m
}

/// Pull one source into its staged table (see the module doc).
fn stage(
    store: &TableStore,
    connector: &dyn Connector,
    options: &PullOptions,
    bar: &ProgressBar,
) -> Result<PullStats, PullError> {
    let spec = connector.spec();
    let table = source_table(&spec.name);
    let schema = staged_schema(spec);
    let mode = connector.mode();
    let incremental = mode == PullMode::Incremental;
    let current = store.current(&table)?;
    // Resume from the last committed step, unless told to start again or
    // what is staged was not pulled incrementally.
    let resume = current.filter(|m| {
        incremental
            && !options.full
            && m.meta.get(META_MODE).map(String::as_str) == Some("incremental")
            && m.meta.contains_key(META_CHECKPOINT)
    });
    let mut checkpoint: Option<String> = resume
        .as_ref()
        .and_then(|m| m.meta.get(META_CHECKPOINT).cloned());
    let from = checkpoint
        .as_deref()
        .map(|t| Checkpoint::from_json(&spec.name, t))
        .transpose()?;
    let sink = |e: String| ConnectorError::Sink {
        source_name: spec.name.clone(),
        reason: e,
    };
    let resuming = resume.is_some();
    // Steps appended to a complete version keep it complete (they only add
    // newer rows); steps of a load from scratch are not, until it ends.
    let steps_complete = resume
        .as_ref()
        .is_some_and(|m| m.meta.get(META_COMPLETE).map(String::as_str) != Some("false"));
    let mut writer = Some(store.writer(&table, schema.clone(), resume.map(|m| m.version))?);
    let mut pending = 0usize;
    let mut committed_any = false;
    let stats = connector.pull(from.as_ref(), &mut |pulled| {
        bar.inc(pulled.batch.num_rows() as u64);
        let w = writer.as_mut().expect("a writer is open between steps");
        for b in staged_batches(&schema, &pulled).map_err(sink)? {
            w.write(&b).map_err(|e| sink(e.to_string()))?;
        }
        if let Some(c) = &pulled.checkpoint {
            checkpoint = Some(c.to_json());
        }
        pending += pulled.batch.num_rows() + pulled.rejected.len();
        if incremental && pending >= options.commit_every_rows {
            // A durable step: these rows and the checkpoint after them.
            let m = writer
                .take()
                .expect("a writer is open between steps")
                .commit(meta(mode, &checkpoint, steps_complete))
                .map_err(|e| sink(e.to_string()))?;
            committed_any = true;
            writer = Some(
                store
                    .writer(&table, schema.clone(), Some(m.version))
                    .map_err(|e| sink(e.to_string()))?,
            );
            pending = 0;
        }
        Ok(())
    })?;
    let w = writer.take().expect("a writer is open between steps");
    // An incremental pull that found nothing after its last step changes
    // nothing; every other pull ends with a version.
    let nothing_new = incremental && pending == 0 && (resuming || committed_any);
    if !nothing_new {
        w.commit(meta(mode, &checkpoint, true))?;
    } else if !steps_complete {
        // The load from scratch ended exactly on a step: mark it complete.
        drop(w);
        if let Some(m) = store.current(&table)? {
            let mut done = store.writer(&table, schema.clone(), Some(m.version))?;
            done.write(&RecordBatch::new_empty(schema.clone()))?;
            done.commit(meta(mode, &checkpoint, true))?;
        }
    }
    Ok(stats)
}

/// A staged version read back as the connector emitted it: accepted rows
/// (for an incremental source, only the latest row of each record id) and
/// rejected rows.
fn unstage(
    store: &TableStore,
    spec: &ConnectorSpec,
    manifest: &Manifest,
    each: &mut dyn FnMut(Pulled) -> Result<(), String>,
) -> Result<(), PullError> {
    let incremental = manifest.meta.get(META_MODE).map(String::as_str) == Some("incremental");
    let batches = store.read(manifest)?;
    let corrupt = |reason: String| {
        PullError::Store(StoreError::Corrupt {
            path: format!("{} v{}", manifest.table, manifest.version),
            reason,
        })
    };
    let n_source = spec.batch_schema().fields().len();
    let string_col = |b: &RecordBatch, name: &str| -> Result<StringArray, PullError> {
        b.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .cloned()
            .ok_or_else(|| corrupt(format!("no string column `{name}`")))
    };
    // For an incremental source, the last staged row of each record id.
    let mut latest: HashMap<String, (usize, usize)> = HashMap::new();
    if incremental {
        for (bi, b) in batches.iter().enumerate() {
            let (ids, reasons) = (
                string_col(b, COL_RECORD_ID)?,
                string_col(b, COL_REJECT_REASON)?,
            );
            for r in 0..b.num_rows() {
                if reasons.is_null(r) {
                    latest.insert(ids.value(r).to_string(), (bi, r));
                }
            }
        }
    }
    for (bi, b) in batches.iter().enumerate() {
        if b.num_columns() != n_source + 2 {
            return Err(corrupt(format!(
                "{} columns where the connector now emits {}: pull it again with --full",
                b.num_columns(),
                n_source + 2
            )));
        }
        let (ids, reasons, raws) = (
            string_col(b, COL_RECORD_ID)?,
            string_col(b, COL_REJECT_REASON)?,
            string_col(b, COL_REJECT_RAW)?,
        );
        let positions = b
            .column_by_name(COL_POSITION)
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .cloned()
            .ok_or_else(|| corrupt(format!("no position column `{COL_POSITION}`")))?;
        let keep: BooleanArray = (0..b.num_rows())
            .map(|r| {
                Some(
                    reasons.is_null(r)
                        && (!incremental || latest.get(ids.value(r)) == Some(&(bi, r))),
                )
            })
            .collect();
        let accepted = arrow_select::filter::filter_record_batch(
            &b.project(&(0..n_source).collect::<Vec<_>>())
                .map_err(|e| corrupt(e.to_string()))?,
            &keep,
        )
        .map_err(|e| corrupt(e.to_string()))?;
        let accepted = RecordBatch::try_new(spec.batch_schema(), accepted.columns().to_vec())
            .map_err(|e| {
                corrupt(format!(
                    "staged columns no longer match the connector: {e}; pull it again with --full"
                ))
            })?;
        let rejected = (0..b.num_rows())
            .filter(|&r| !reasons.is_null(r))
            .map(|r| Rejected {
                position: positions.value(r),
                reason: reasons.value(r).to_string(),
                raw: if raws.is_null(r) {
                    String::new()
                } else {
                    raws.value(r).to_string()
                },
            })
            .collect();
        each(Pulled {
            batch: accepted,
            rejected,
            checkpoint: None,
        })
        .map_err(|reason| ConnectorError::Sink {
            source_name: spec.name.clone(),
            reason,
        })?;
    }
    Ok(())
}

/// Pull each source whose connector file sets `pull_interval_secs`, every
/// so often, for as long as the returned tasks run (a running broker's
/// schedule; `serve` picks up the new golden versions on its own). Pulls
/// never overlap within the process; one that fails is logged and tried
/// again at its next turn, resuming from its last stored checkpoint.
pub fn spawn_schedule(s: &Settings) -> Result<Vec<tokio::task::JoinHandle<()>>, PullSetupError> {
    let catalog = Catalog::load(&s.policies_dir)?;
    let configs = connectors::load_dir(&s.connectors_dir, &catalog)?;
    let one_at_a_time = Arc::new(tokio::sync::Mutex::new(()));
    let mut tasks = Vec::new();
    for config in configs {
        let Some(every) = config.spec.pull_interval else {
            continue;
        };
        let (s, name, lock) = (s.clone(), config.spec.name.clone(), one_at_a_time.clone());
        tracing::info!(source = %name, every_secs = every.as_secs(), "scheduled pulls");
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; the first pull waits one interval
            loop {
                tick.tick().await;
                let _turn = lock.lock().await;
                let (s2, only) = (s.clone(), vec![name.clone()]);
                let outcome = tokio::task::spawn_blocking(move || {
                    run_configured_with(&s2, &only, &PullOptions::default())
                })
                .await;
                match outcome {
                    Ok(Ok(r)) => {
                        let rows = r.sources.first().map_or(0, |(_, st)| st.rows);
                        tracing::info!(source = %name, rows, elapsed_ms = r.elapsed.as_millis() as u64, "scheduled pull done");
                    }
                    Ok(Err(e)) => {
                        tracing::error!(source = %name, error = %e, "scheduled pull failed; the next turn resumes from the last stored checkpoint")
                    }
                    Err(e) => tracing::error!(source = %name, error = %e, "scheduled pull panicked"),
                }
            }
        }));
    }
    Ok(tasks)
}
