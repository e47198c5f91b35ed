//! The pull run: every connector → ingest (normalise, resolve) → a new
//! version of each golden table, the quarantine and the findings in the
//! store. Glue between the I/O modules and the pure ingest stage.

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::catalog::{Catalog, SubjectKind};
use crate::config::Settings;
use crate::connectors::{self, ConnectorConfig, ConnectorError, PullStats};
use crate::ingest::resolve::findings_batch;
use crate::ingest::{Golden, Ingest, SubjectRegistry, quarantine_batch};
use crate::store::{LocalStore, Manifest, StoreError, TableStore};

pub const QUARANTINE_TABLE: &str = "quarantine";
pub const FINDINGS_TABLE: &str = "findings";
/// Every subject id ever handed out (kind, key, subject id).
pub const SUBJECTS_TABLE: &str = "subjects";

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
pub struct PullReport {
    pub sources: Vec<(String, PullStats)>,
    pub subjects: Vec<(SubjectKind, usize, usize)>,
    pub quarantined: usize,
    pub findings: usize,
    pub manifests: Vec<Manifest>,
    pub elapsed: Duration,
}

/// The subject registry as of the current version (empty before the
/// first pull).
pub fn load_registry(store: &dyn TableStore) -> Result<SubjectRegistry, StoreError> {
    let Some(m) = store.current(SUBJECTS_TABLE)? else {
        return Ok(SubjectRegistry::default());
    };
    let batches = store.read(&m)?;
    SubjectRegistry::from_batches(&batches).map_err(|reason| StoreError::Corrupt {
        path: format!("{SUBJECTS_TABLE} v{}", m.version).into(),
        reason,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum PullSetupError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("unknown source `{name}` (sources: {known})")]
    UnknownSource { name: String, known: String },
    #[error(
        "pulling some sources only is not supported until incremental ingest lands: each run rebuilds the golden records from every source; run `sharebroker pull` without names"
    )]
    PartialPull,
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Pull the sources configured under `s` (all, or those named in `only`)
/// into the store under `s`.
pub fn run_configured(
    s: &Settings,
    only: &[String],
    progress: bool,
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
    // A run rebuilds every golden table from what it pulled, so pulling a
    // subset would drop the other sources' data from the new version.
    if !only.is_empty() && configs.iter().any(|c| !only.contains(&c.spec.name)) {
        return Err(PullSetupError::PartialPull);
    }
    let store = LocalStore::open(&s.store_dir())?;
    Ok(run(&catalog, &configs, &s.data_dir, &store, progress)?)
}

/// Pull every source in `configs`, resolve, and commit new table versions.
/// A source that fails aborts the run before anything is committed, so the
/// store never holds a version built from part of a source.
pub fn run(
    catalog: &Catalog,
    configs: &[ConnectorConfig],
    data_dir: &Path,
    store: &dyn TableStore,
    progress: bool,
) -> Result<PullReport, PullError> {
    let started = Instant::now();
    let mut ingest = Ingest::new(catalog);
    let mut sources = Vec::new();
    for config in configs {
        let connector = connectors::build(config, data_dir);
        let bar = if progress {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix:>24} {pos:>9} rows  {per_sec}  {elapsed}",
                )
                .expect("a valid progress template"),
            );
            b.set_prefix(config.spec.name.clone());
            b
        } else {
            ProgressBar::hidden()
        };
        let spec = connector.spec().clone();
        let stats = connector.pull(None, &mut |pulled| {
            bar.inc(pulled.batch.num_rows() as u64);
            ingest
                .add(&spec, &pulled)
                .map_err(|reason| ConnectorError::Sink {
                    source_name: spec.name.clone(),
                    reason,
                })
        })?;
        bar.finish();
        tracing::info!(source = %spec.name, rows = stats.rows, rejected = stats.rejected, bytes = stats.bytes, elapsed_ms = stats.elapsed.as_millis() as u64, "pulled");
        sources.push((spec.name.clone(), stats));
    }
    let mut registry = load_registry(store)?;
    let outcome = ingest.finish(&mut registry);
    // The registry first: a crash after it only reserves ids, never reuses one.
    let mut manifests = vec![store.commit(SUBJECTS_TABLE, &[registry.to_batch()])?];
    let mut subjects = Vec::new();
    let mut findings = Vec::new();
    for g in &outcome.goldens {
        manifests.push(store.commit(Golden::table(g.kind), &g.batches)?);
        subjects.push((g.kind, g.subjects, g.new_subjects));
        findings.extend(g.findings.iter().cloned());
    }
    manifests.push(store.commit(QUARANTINE_TABLE, &[quarantine_batch(&outcome.quarantine)])?);
    manifests.push(store.commit(FINDINGS_TABLE, &[findings_batch(&findings)])?);
    Ok(PullReport {
        sources,
        subjects,
        quarantined: outcome.quarantine.len(),
        findings: findings.len(),
        manifests,
        elapsed: started.elapsed(),
    })
}
