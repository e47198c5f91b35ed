//! The pull run: every connector → ingest (normalise, resolve) → a new
//! version of each golden table, the quarantine and the findings in the
//! store. Glue between the I/O modules and the pure ingest stage.

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::catalog::{Catalog, SubjectKind};
use crate::connectors::{self, ConnectorConfig, ConnectorError, PullStats};
use crate::ingest::resolve::findings_batch;
use crate::ingest::{COL_KEY, COL_SUBJECT_ID, Golden, Ingest, PreviousIds, quarantine_batch};
use crate::store::{LoadedTable, Manifest, StoreError, TableStore};

pub const QUARANTINE_TABLE: &str = "quarantine";
pub const FINDINGS_TABLE: &str = "findings";

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

/// Subject ids handed out by the current golden versions.
pub fn previous_ids(store: &dyn TableStore) -> Result<PreviousIds, StoreError> {
    let mut ids = PreviousIds::default();
    for kind in [SubjectKind::Person, SubjectKind::Organisation] {
        let Some(m) = store.current(Golden::table(kind))? else {
            continue;
        };
        let table = LoadedTable::new(m.clone(), store.read(&m)?, COL_KEY)?;
        for batch in &table.batches {
            for row in 0..batch.num_rows() {
                if let (Some(k), Some(id)) = (
                    LoadedTable::cell(batch, row, COL_KEY),
                    LoadedTable::cell(batch, row, COL_SUBJECT_ID),
                ) {
                    ids.insert(kind, k.to_string(), id.to_string());
                }
            }
        }
    }
    Ok(ids)
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
        let stats = connector.pull(&mut |pulled| {
            bar.inc(pulled.batch.num_rows() as u64);
            ingest.add(&spec, &pulled);
            Ok(())
        })?;
        bar.finish();
        tracing::info!(source = %spec.name, rows = stats.rows, rejected = stats.rejected, bytes = stats.bytes, elapsed_ms = stats.elapsed.as_millis() as u64, "pulled");
        sources.push((spec.name.clone(), stats));
    }
    let previous = previous_ids(store)?;
    let outcome = ingest.finish(&previous);
    let mut manifests = Vec::new();
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
