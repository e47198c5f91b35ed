//! The resolve step of a pull run: the staged rows of every configured
//! source → ingest → new versions of the golden tables, the subject
//! registry, the resolve state, quarantine, findings and review queue, all
//! but the last three partitioned by key bucket. After an incremental pull
//! only the buckets the new rows touch are resolved again
//! ([`resolve_incremental`]); otherwise, or when that cannot be done
//! exactly, everything is ([`resolve_full`]). ARCHITECTURE.md describes
//! the tables.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, BooleanArray, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};

use super::{
    FINDINGS_TABLE, META_COMPLETE, META_MODE, PullError, PullReport, QUARANTINE_TABLE,
    SUBJECTS_TABLE, load_registry, source_table, unstage,
};
use crate::catalog::{Catalog, SubjectKind};
use crate::connectors::ConnectorConfig;
use crate::ingest::link::Model;
use crate::ingest::resolve::{Finding, StateUse, bucket_of, findings_batch, state_schema};
use crate::ingest::{Decision, Golden, Ingest, QuarantineEntry, SubjectRegistry, quarantine_batch};
use crate::review::load_findings;
use crate::store::{Manifest, StoreError, TableStore};

/// Manifest meta of the golden tables: what they were resolved from.
pub const META_INPUTS: &str = "inputs";

/// The resolve state of one subject kind: every record as normalised, by
/// partition (see [`crate::ingest::Golden::state`]).
pub fn state_table(kind: SubjectKind) -> String {
    format!("resolve.{}", kind.as_str())
}
/// Where each record's state is: (source, record id, partition), itself
/// partitioned by a hash of the source and record id. Its manifest meta
/// says what the state was resolved from.
pub const RECORDS_TABLE: &str = "resolve.records";
/// Meta of [`RECORDS_TABLE`]: the number of key buckets, each source's
/// staged version, and the digest of everything else a resolve reads.
const META_BUCKETS: &str = "buckets";
/// Meta of [`RECORDS_TABLE`]: the run of the last resolve that wrote the
/// tables (`inputs` is the last resolve's, which may have found nothing to
/// write); each table version a resolve writes carries its run as `run`,
/// so a resolve cut off midway is never taken for a finished one.
const META_WRITTEN: &str = "written";
const META_RUN: &str = "run";
const META_STAGED: &str = "staged";
const META_CONFIG: &str = "config";
/// The linking model a full resolve fitted, for incremental resolves to
/// score new records with; [`RECORDS_TABLE`]'s meta names its version.
pub const MODEL_TABLE: &str = "resolve.model";
const META_MODEL: &str = "model";
/// Meta of a golden table: its subjects per bucket, as a JSON array.
const META_SUBJECTS: &str = "subjects";
/// Meta of the subject registry: the next free number per kind, as JSON.
const META_NEXT: &str = "next";
/// Records per key bucket aimed at by a full resolve: an incremental
/// resolve rewrites the buckets a change touches, so smaller buckets mean
/// less rewritten per change and more files.
const RECORDS_PER_BUCKET: u64 = 2048;
const MAX_BUCKETS: u64 = 1024;

/// The number of key buckets for `records` records: a power of two.
fn buckets_for(records: u64) -> u32 {
    (records / RECORDS_PER_BUCKET)
        .clamp(1, MAX_BUCKETS)
        .next_power_of_two()
        .min(MAX_BUCKETS) as u32
}

/// The partition of a record in [`RECORDS_TABLE`].
fn record_partition(source: &str, record_id: &str, buckets: u32) -> u32 {
    use crate::ingest::link::{FNV_OFFSET, fnv1a_extend};
    // FNV-1a of "source\u{1f}record_id", without building the string.
    let h = [source, "\u{1f}", record_id]
        .iter()
        .fold(FNV_OFFSET, |h, s| fnv1a_extend(h, s));
    (h % u64::from(buckets.max(1))) as u32
}

impl Digests {
    /// The meta every table version this resolve writes carries.
    fn meta(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (META_INPUTS.to_string(), self.inputs.clone()),
            (META_RUN.to_string(), self.run.clone()),
        ])
    }
}

/// What a resolve reads, as two digests: `config` covers each source's
/// mapping, the catalogue's fields and the stewards' decisions; `inputs`
/// adds each source's staged version.
struct Digests {
    config: String,
    inputs: String,
    /// This resolve: its inputs and when it started (unique per run).
    run: String,
}

fn resolve_inputs(
    catalog: &Catalog,
    staged: &[(&ConnectorConfig, Manifest)],
    store: &TableStore,
) -> Result<Digests, StoreError> {
    let mut text = String::new();
    for (config, _) in staged {
        let spec = &config.spec;
        let mut values: Vec<(&String, Vec<(&String, &String)>)> = spec
            .values
            .iter()
            .map(|(k, v)| {
                let mut v: Vec<_> = v.iter().collect();
                v.sort_unstable();
                (k, v)
            })
            .collect();
        values.sort_unstable();
        text.push_str(&format!(
            "{} {} {} {} {} {} {:?} {:?}\n",
            spec.name,
            spec.agency,
            spec.dataset,
            spec.subject_column,
            spec.record_id_column,
            spec.as_of_column,
            spec.columns,
            values
        ));
    }
    for kind in [SubjectKind::Person, SubjectKind::Organisation] {
        for f in catalog.fields_of_kind(kind) {
            text.push_str(&format!(
                "{} {:?} {:?} {}\n",
                f.qualified, f.kind, f.values, f.authority
            ));
        }
    }
    let decisions = store.current(crate::review::DECISIONS_TABLE)?;
    text.push_str(&format!("decisions@{}", decisions.map_or(0, |m| m.version)));
    let digest = |t: &str| hex::encode(ring::digest::digest(&ring::digest::SHA256, t.as_bytes()));
    let config = digest(&text);
    for (_, m) in staged {
        text.push_str(&format!("\n{}@{}", m.table, m.version));
    }
    let inputs = digest(&text);
    let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    Ok(Digests {
        config,
        run: format!("{inputs}@{started}"),
        inputs,
    })
}

/// The newest staged version that holds the whole source: not a step of
/// an unfinished load from scratch.
fn complete_version(store: &TableStore, table: &str) -> Result<Option<Manifest>, StoreError> {
    for v in store.versions(table)?.into_iter().rev() {
        let m = store.manifest(table, v)?;
        if m.meta.get(META_COMPLETE).map(String::as_str) != Some("false") {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// The tables a resolve writes, each version tagged with its inputs.
fn resolved_tables() -> Vec<String> {
    let mut t = vec![SUBJECTS_TABLE.to_string()];
    for kind in [SubjectKind::Person, SubjectKind::Organisation] {
        t.push(Golden::table(kind).to_string());
        t.push(state_table(kind));
    }
    t.extend(
        [
            QUARANTINE_TABLE,
            FINDINGS_TABLE,
            crate::review::REVIEW_TABLE,
            RECORDS_TABLE,
        ]
        .map(String::from),
    );
    t
}

/// How much an incremental resolve re-read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    /// Staged rows read (the new rows of the sources that changed).
    pub records: usize,
    /// Key buckets rewritten, of `buckets`.
    pub partitions: usize,
    pub buckets: u32,
}

/// Resolve the staged rows of every configured source into new versions
/// of the golden tables, the quarantine and the findings. When only
/// incremental sources gained rows since the last resolve (and no mapping,
/// catalogue field or decision changed), only the subjects those rows
/// touch are resolved again: see [`resolve_incremental`].
pub fn resolve(
    catalog: &Catalog,
    configs: &[ConnectorConfig],
    store: &TableStore,
) -> Result<PullReport, PullError> {
    resolve_with(catalog, configs, store, false)
}

/// Resolve every staged record from scratch, whatever changed: what
/// [`resolve`] does when it cannot resolve only what changed (and a check
/// that it gets the same result when it can).
pub fn resolve_all(
    catalog: &Catalog,
    configs: &[ConnectorConfig],
    store: &TableStore,
) -> Result<PullReport, PullError> {
    resolve_with(catalog, configs, store, true)
}

fn resolve_with(
    catalog: &Catalog,
    configs: &[ConnectorConfig],
    store: &TableStore,
    everything: bool,
) -> Result<PullReport, PullError> {
    let started = Instant::now();
    let mut never_pulled = Vec::new();
    let mut staged = Vec::new();
    for config in configs {
        let spec = &config.spec;
        match complete_version(store, &source_table(&spec.name))? {
            Some(m) => staged.push((config, m)),
            None => {
                tracing::warn!(source = %spec.name, "never pulled: its rows are not in the golden records");
                never_pulled.push(spec.name.clone());
            }
        }
    }
    // What the golden tables are made of: if none of it changed since the
    // last resolve, there is nothing to do and nothing is written.
    let digests = resolve_inputs(catalog, &staged, store)?;
    let index = store.current(RECORDS_TABLE)?;
    let unchanged = !everything
        && index
            .as_ref()
            .is_some_and(|m| m.meta.get(META_INPUTS) == Some(&digests.inputs))
        && last_resolve(store, index.as_ref())?.is_some();
    let mut report = if unchanged {
        tracing::info!(
            "no staged source, decision or mapping changed: the golden records stay as they are"
        );
        PullReport::unchanged()
    } else {
        let incremental = match everything {
            true => None,
            // A damaged resolve state is rebuilt from the staged rows.
            false => match resolve_incremental(catalog, store, &staged, &digests) {
                Ok(r) => r,
                Err(PullError::Store(e @ StoreError::Corrupt { .. })) => {
                    tracing::warn!(error = %e, "the resolve state cannot be read: resolving every record");
                    None
                }
                Err(e) => return Err(e),
            },
        };
        match incremental {
            Some(r) => r,
            None => resolve_full(catalog, store, &staged, &digests)?,
        }
    };
    report.never_pulled = never_pulled;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The current version of each table the last resolve wrote, if that
/// resolve finished: every one carries the inputs the index says were
/// last written.
fn last_resolve(
    store: &TableStore,
    index: Option<&Manifest>,
) -> Result<Option<BTreeMap<String, Manifest>>, StoreError> {
    let Some(written) = index.and_then(|m| m.meta.get(META_WRITTEN)) else {
        return Ok(None);
    };
    let mut current = BTreeMap::new();
    for t in resolved_tables() {
        match store.current(&t)? {
            Some(m) if m.meta.get(META_RUN) == Some(written) => {
                current.insert(t, m);
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(current))
}

impl PullReport {
    fn unchanged() -> PullReport {
        PullReport {
            sources: Vec::new(),
            never_pulled: Vec::new(),
            subjects: Vec::new(),
            quarantined: 0,
            findings: 0,
            review: 0,
            probable_links: 0,
            steward_links: 0,
            unchanged: true,
            touched: None,
            manifests: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }
}

/// Write `batches`, each in its partition, as a new version of `table`:
/// over `base` with `replaced` partitions dropped, or from nothing.
fn write_table<'b>(
    store: &TableStore,
    table: &str,
    schema: SchemaRef,
    base: Option<(&Manifest, &HashSet<u32>)>,
    batches: impl IntoIterator<Item = (u32, &'b RecordBatch)>,
    meta: BTreeMap<String, String>,
) -> Result<Manifest, StoreError> {
    let mut w = store.writer(table, schema, base.map(|(m, _)| m.version))?;
    if let Some((_, replaced)) = base {
        w.replace_partitions(replaced);
    }
    for (p, b) in batches {
        w.partition(p)?;
        w.write(b)?;
    }
    w.commit(meta)
}

/// Partitioned batches as [`write_table`] takes them.
fn by_partition(batches: &[(u32, RecordBatch)]) -> impl Iterator<Item = (u32, &RecordBatch)> {
    batches.iter().map(|(p, b)| (*p, b))
}

fn records_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        ArrowField::new("source", DataType::Utf8, false),
        ArrowField::new("record_id", DataType::Utf8, false),
        ArrowField::new("partition", DataType::UInt32, false),
    ]))
}

/// [`RECORDS_TABLE`] rows, by their partition.
fn records_batches(rows: &[(String, String, u32)], buckets: u32) -> Vec<(u32, RecordBatch)> {
    let mut by: BTreeMap<u32, Vec<&(String, String, u32)>> = BTreeMap::new();
    for r in rows {
        by.entry(record_partition(&r.0, &r.1, buckets))
            .or_default()
            .push(r);
    }
    by.into_iter()
        .map(|(p, rows)| {
            let b = RecordBatch::try_new(
                records_schema(),
                vec![
                    Arc::new(
                        rows.iter()
                            .map(|r| Some(r.0.as_str()))
                            .collect::<StringArray>(),
                    ),
                    Arc::new(
                        rows.iter()
                            .map(|r| Some(r.1.as_str()))
                            .collect::<StringArray>(),
                    ),
                    Arc::new(rows.iter().map(|r| r.2).collect::<UInt32Array>()),
                ],
            )
            .expect("columns match the records schema");
            (p, b)
        })
        .collect()
}

/// The (source, record id, partition) of every record in resolve-state
/// batches.
fn state_records(
    state: &[(u32, RecordBatch)],
    out: &mut Vec<(String, String, u32)>,
) -> Result<(), String> {
    use crate::ingest::resolve::{STATE_RECORD, STATE_SOURCE};
    for (p, b) in state {
        let col = |name: &str| {
            crate::store::column::<StringArray>(b, name)
                .map_err(|e| format!("resolve state has {e}"))
        };
        let (sources, records) = (col(STATE_SOURCE)?, col(STATE_RECORD)?);
        for r in 0..b.num_rows() {
            out.push((
                sources.value(r).to_string(),
                records.value(r).to_string(),
                *p,
            ));
        }
    }
    Ok(())
}

fn fields_of(catalog: &Catalog, kind: SubjectKind) -> Vec<&crate::catalog::Field> {
    catalog.fields_of_kind(kind).collect()
}

/// Resolve every staged record from scratch, and write the golden tables,
/// the resolve state and the rest whole, partitioned by key bucket.
fn resolve_full(
    catalog: &Catalog,
    store: &TableStore,
    staged: &[(&ConnectorConfig, Manifest)],
    digests: &Digests,
) -> Result<PullReport, PullError> {
    let mut ingest = Ingest::new(catalog);
    for (config, m) in staged {
        let spec = &config.spec;
        unstage(store, spec, m, &mut |pulled| ingest.add(spec, &pulled))?;
    }
    let mut registry = load_registry(store)?;
    let decisions = crate::review::load_decisions(store)?;
    let buckets = buckets_for(staged.iter().map(|(_, m)| m.rows).sum());
    ingest.resolver_mut(SubjectKind::Person).keep_model();
    let outcome = ingest.finish_with(&mut registry, &decisions, Some(buckets));
    // The registry first: a crash after it only reserves ids, never reuses one.
    let subjects = registry.to_partitions(buckets);
    let mut manifests = vec![write_table(
        store,
        SUBJECTS_TABLE,
        registry.to_batch().schema(),
        None,
        by_partition(&subjects),
        registry_meta(&registry, digests.meta()),
    )?];
    let mut report_subjects = Vec::new();
    let mut findings = Vec::new();
    let mut records = Vec::new();
    for g in &outcome.goldens {
        let mut meta = digests.meta();
        meta.insert(
            META_SUBJECTS.to_string(),
            serde_json::to_string(&g.bucket_subjects).expect("numbers serialise"),
        );
        manifests.push(write_golden(store, g, None, meta)?);
        manifests.push(write_table(
            store,
            &state_table(g.kind),
            state_schema(&fields_of(catalog, g.kind)),
            None,
            by_partition(&g.state),
            digests.meta(),
        )?);
        state_records(&g.state, &mut records).map_err(|reason| StoreError::Corrupt {
            path: state_table(g.kind),
            reason,
        })?;
        report_subjects.push((g.kind, g.subjects, g.new_subjects));
        findings.extend(g.findings.iter().cloned());
    }
    // Records rejected whole (an organisation without a valid credit code)
    // sit with the unkeyed ones.
    let in_state: HashSet<(&str, &str)> = records
        .iter()
        .map(|(s, r, _)| (s.as_str(), r.as_str()))
        .collect();
    let rejected: Vec<(String, String, u32)> = outcome
        .quarantine
        .iter()
        .filter(|q| q.field.is_empty() && !q.record_id.is_empty())
        .filter(|q| !in_state.contains(&(q.source.as_str(), q.record_id.as_str())))
        .map(|q| (q.source.clone(), q.record_id.clone(), buckets))
        .collect();
    records.extend(rejected);
    manifests.push(store.commit_with(
        QUARANTINE_TABLE,
        &[quarantine_batch(&outcome.quarantine)],
        digests.meta(),
    )?);
    manifests.push(store.commit_with(
        FINDINGS_TABLE,
        &[findings_batch(&findings)],
        digests.meta(),
    )?);
    manifests.push(store.commit_with(
        crate::review::REVIEW_TABLE,
        &[crate::review::review_batch(&outcome.review)],
        digests.meta(),
    )?);
    let probable_links: usize = outcome.goldens.iter().map(|g| g.probable_links).sum();
    let steward_links: usize = outcome.goldens.iter().map(|g| g.steward_links).sum();
    let mut meta = digests.meta();
    meta.insert(META_WRITTEN.to_string(), digests.run.clone());
    meta.insert(META_CONFIG.to_string(), digests.config.clone());
    meta.insert(META_BUCKETS.to_string(), buckets.to_string());
    meta.insert(META_STAGED.to_string(), staged_versions(staged));
    if let Some(model) = outcome.goldens.iter().find_map(|g| g.model.as_ref()) {
        let (batch, model_meta) = model.to_store();
        let m = store.commit_with(MODEL_TABLE, &[batch], model_meta)?;
        meta.insert(META_MODEL.to_string(), m.version.to_string());
        manifests.push(m);
    }
    let index = records_batches(&records, buckets);
    manifests.push(write_table(
        store,
        RECORDS_TABLE,
        records_schema(),
        None,
        by_partition(&index),
        meta,
    )?);
    Ok(PullReport {
        sources: Vec::new(),
        never_pulled: Vec::new(),
        subjects: report_subjects,
        quarantined: outcome.quarantine.len(),
        findings: findings.len(),
        review: outcome.review.len(),
        probable_links,
        steward_links,
        unchanged: false,
        touched: None,
        manifests,
        elapsed: Duration::ZERO,
    })
}

fn registry_meta(
    registry: &SubjectRegistry,
    mut meta: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let next: BTreeMap<&str, u64> = [SubjectKind::Person, SubjectKind::Organisation]
        .into_iter()
        .map(|k| (k.as_str(), registry.next_number(k)))
        .collect();
    meta.insert(
        META_NEXT.to_string(),
        serde_json::to_string(&next).expect("numbers serialise"),
    );
    meta
}

fn staged_versions(staged: &[(&ConnectorConfig, Manifest)]) -> String {
    let v: BTreeMap<&str, u64> = staged
        .iter()
        .map(|(c, m)| (c.spec.name.as_str(), m.version))
        .collect();
    serde_json::to_string(&v).expect("versions serialise")
}

fn write_golden(
    store: &TableStore,
    g: &Golden,
    base: Option<(&Manifest, &HashSet<u32>)>,
    meta: BTreeMap<String, String>,
) -> Result<Manifest, StoreError> {
    // No subject, no file: a version with none still gets an empty one
    // from the writer if it would have no file at all.
    let batches = g.partitions.iter().copied().zip(&g.batches);
    let schema = g.batches[0].schema();
    write_table(store, Golden::table(g.kind), schema, base, batches, meta)
}

/// Resolve again only what the new staged rows touch, or say why not
/// (`None`: the caller resolves everything). Possible when the last
/// resolve completed with the same mappings, catalogue and decisions, and
/// every source that changed is incremental and only gained rows since.
/// The new rows are normalised; with them, the resolve state of the key
/// buckets they touch (their subjects', and the old subjects' of records
/// they update) is read back and resolved again; those buckets' golden
/// rows, state and registry entries are replaced, the rest kept as they
/// are. Records without a valid identifier that are new, or whose subject
/// or candidates changed, are linked again with the model the last full
/// resolve stored (their candidates' buckets join the others).
fn resolve_incremental(
    catalog: &Catalog,
    store: &TableStore,
    staged: &[(&ConnectorConfig, Manifest)],
    digests: &Digests,
) -> Result<Option<PullReport>, PullError> {
    let full = |why: &str| {
        tracing::info!(why, "resolving every record");
        Ok(None)
    };
    let Some(index) = store.current(RECORDS_TABLE)? else {
        return full("no resolve state yet");
    };
    if index.meta.get(META_CONFIG) != Some(&digests.config) {
        return full("a mapping, catalogue field or steward decision changed");
    }
    let Some(current) = last_resolve(store, Some(&index))? else {
        return full("the last resolve did not finish");
    };
    let parse_err = |what: &str| StoreError::Corrupt {
        path: RECORDS_TABLE.to_string(),
        reason: format!("its manifest's `{what}` is unreadable"),
    };
    let buckets: u32 = index
        .meta
        .get(META_BUCKETS)
        .and_then(|b| b.parse().ok())
        .filter(|&b| b > 0)
        .ok_or_else(|| parse_err(META_BUCKETS))?;
    let unkeyed = buckets; // the partition of records without a valid identifier
    let before: BTreeMap<String, u64> = index
        .meta
        .get(META_STAGED)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| parse_err(META_STAGED))?;
    let deltas = match staged_deltas(store, staged, &before) {
        Ok(d) => d,
        Err(why) => return full(why),
    };
    if deltas.is_empty() {
        // Snapshots pulled again with the same rows: nothing to resolve;
        // the index records the staged versions they now are.
        let mut meta = index.meta.clone();
        meta.insert(META_INPUTS.to_string(), digests.inputs.clone());
        meta.insert(META_STAGED.to_string(), staged_versions(staged));
        write_table(
            store,
            RECORDS_TABLE,
            records_schema(),
            Some((&index, &HashSet::new())),
            [],
            meta,
        )?;
        tracing::info!(
            "the sources pulled again hold the same rows: the golden records stay as they are"
        );
        return Ok(Some(PullReport::unchanged()));
    }
    let mut ingest = Ingest::tracking(catalog);
    let mut rows = 0;
    for (config, m) in &deltas {
        let spec = &config.spec;
        rows += m.rows as usize;
        unstage(store, spec, m, &mut |pulled| ingest.add(spec, &pulled))?;
    }
    let touched: HashSet<(String, String)> =
        std::mem::take(&mut ingest.touched).into_iter().collect();
    let decisions = crate::review::load_decisions(store)?;
    if touched.iter().any(|k| decisions.records.contains_key(k)) {
        return full("a record a steward decided on changed");
    }
    // Where the touched records were.
    let index_parts: HashSet<u32> = touched
        .iter()
        .map(|(s, r)| record_partition(s, r, buckets))
        .collect();
    let mut index_rows = Vec::new();
    store.read_each_where(
        &index,
        &|f| f.partition.is_some_and(|p| index_parts.contains(&p)),
        &mut |b| {
            let (Some(s), Some(r), Some(p)) = (
                b.column(0).as_any().downcast_ref::<StringArray>(),
                b.column(1).as_any().downcast_ref::<StringArray>(),
                b.column(2).as_any().downcast_ref::<UInt32Array>(),
            ) else {
                return Err(StoreError::Corrupt {
                    path: RECORDS_TABLE.to_string(),
                    reason: "columns are not (source, record_id, partition)".into(),
                });
            };
            for i in 0..b.num_rows() {
                index_rows.push((s.value(i).to_string(), r.value(i).to_string(), p.value(i)));
            }
            Ok(())
        },
    )?;
    let mut parts: HashSet<u32> = index_rows
        .iter()
        .filter(|(s, r, p)| *p != unkeyed && touched.contains(&(s.clone(), r.clone())))
        .map(|(_, _, p)| *p)
        .collect();
    let new_keys = ingest.keys();
    parts.extend(new_keys.iter().map(|(_, k)| bucket_of(k, buckets)));
    // The state of those buckets, and of the records without a valid
    // identifier (few).
    let mut state: Vec<(SubjectKind, u32, RecordBatch)> = Vec::new();
    read_state(
        store,
        &current,
        &|p| p == unkeyed || parts.contains(&p),
        &mut state,
    )?;
    // The subjects whose records changed: the new rows' keys, and the keys
    // the touched records belonged to before.
    // (A changed record that was linked without a valid identifier leaves
    // a subject whose bucket may not be among those yet.)
    let mut affected: HashSet<String> = new_keys.iter().map(|(_, k)| k.clone()).collect();
    let mut linked_to: HashSet<String> = HashSet::new();
    for (_, p, b) in &state {
        let cols = StateColumns::of(b)?;
        for i in 0..b.num_rows() {
            if !cols.key.is_null(i)
                && touched.contains(&(
                    cols.source.value(i).to_string(),
                    cols.record.value(i).to_string(),
                ))
            {
                affected.insert(cols.key.value(i).to_string());
                if *p == unkeyed {
                    linked_to.insert(cols.key.value(i).to_string());
                }
            }
        }
    }
    // Records without a valid identifier to link again: those linked to a
    // changed subject, and (unless a steward decided) those one edit from
    // one; with the new ones, their candidates' buckets join the rest.
    let mut relink: HashSet<(String, String)> = HashSet::new();
    let mut near: HashSet<String> = HashSet::new();
    let neighbours = |written: &str| {
        crate::ingest::normalise::id_digits(written)
            .map(|d| crate::ingest::link::id_neighbours(&d))
            .unwrap_or_default()
    };
    for (_, _, b) in state.iter().filter(|(_, p, _)| *p == unkeyed) {
        let cols = StateColumns::of(b)?;
        for i in 0..b.num_rows() {
            let id = (
                cols.source.value(i).to_string(),
                cols.record.value(i).to_string(),
            );
            if touched.contains(&id) || cols.written.is_null(i) {
                continue;
            }
            let key = (!cols.key.is_null(i)).then(|| cols.key.value(i));
            let around = neighbours(cols.written.value(i));
            let moved = key.is_some_and(|k| affected.contains(k))
                || (!decisions.records.contains_key(&id)
                    && around.iter().any(|k| affected.contains(k)));
            if moved {
                near.extend(around);
                linked_to.extend(key.map(str::to_string));
                relink.insert(id);
            }
        }
    }
    let new_unkeyed: Vec<String> = ingest
        .resolver_mut(SubjectKind::Person)
        .unkeyed_ids()
        .map(str::to_string)
        .collect();
    for written in &new_unkeyed {
        near.extend(neighbours(written));
    }
    // The registry entries of every bucket involved: a candidate is a key
    // the registry knows (whether it still has records is known once its
    // bucket is read).
    let mut wanted = parts.clone();
    wanted.extend(near.iter().chain(&linked_to).map(|k| bucket_of(k, buckets)));
    let subjects_m = &current[SUBJECTS_TABLE];
    let mut registry_batches = Vec::new();
    store.read_each_where(
        subjects_m,
        &|f| f.partition.is_some_and(|p| wanted.contains(&p)),
        &mut |b| {
            registry_batches.push(b);
            Ok(())
        },
    )?;
    let mut registry =
        SubjectRegistry::from_batches(&registry_batches).map_err(|reason| StoreError::Corrupt {
            path: SUBJECTS_TABLE.to_string(),
            reason,
        })?;
    let more: HashSet<u32> = near
        .iter()
        .filter(|k| registry.contains(SubjectKind::Person, k))
        .chain(&linked_to)
        .map(|k| bucket_of(k, buckets))
        .filter(|p| !parts.contains(p))
        .collect();
    read_state(store, &current, &|p| more.contains(&p), &mut state)?;
    parts.extend(more);
    registry.retain_buckets(buckets, &parts);
    let next: BTreeMap<String, u64> = subjects_m
        .meta
        .get(META_NEXT)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| StoreError::Corrupt {
            path: SUBJECTS_TABLE.to_string(),
            reason: format!("its manifest's `{META_NEXT}` is unreadable"),
        })?;
    for kind in [SubjectKind::Person, SubjectKind::Organisation] {
        registry.reserve(kind, next.get(kind.as_str()).copied().unwrap_or(1));
    }
    let part_ids: HashSet<String> = registry.ids().map(str::to_string).collect();
    // A record a steward linked to a subject that had no records then is
    // linked again when that subject changes (it may have records now).
    let changed_ids: HashSet<&str> = affected
        .iter()
        .filter_map(|k| registry.id_of(SubjectKind::Person, k))
        .collect();
    for (_, _, b) in state.iter().filter(|(_, p, _)| *p == unkeyed) {
        let cols = StateColumns::of(b)?;
        for i in (0..b.num_rows()).filter(|&i| cols.key.is_null(i)) {
            let id = (
                cols.source.value(i).to_string(),
                cols.record.value(i).to_string(),
            );
            if let Some(Decision::Link(target)) = decisions.records.get(&id)
                && changed_ids.contains(decisions.resolve_id(target))
                && !touched.contains(&id)
            {
                relink.insert(id);
            }
        }
    }
    if decisions
        .merges
        .iter()
        .any(|(from, into)| part_ids.contains(from) || part_ids.contains(into))
    {
        return full("a steward merge involves a subject the change touches");
    }
    // New links are scored with the model of the last full resolve.
    if !relink.is_empty() || !new_unkeyed.is_empty() {
        match load_model(store, &index)? {
            Some(model) => ingest.resolver_mut(SubjectKind::Person).use_model(model),
            None => return full("no stored linking model"),
        }
    }
    // Everything is known: resolve those buckets again.
    let corrupt_state = |kind: SubjectKind| {
        move |reason: String| StoreError::Corrupt {
            path: state_table(kind),
            reason,
        }
    };
    for (kind, p, b) in &state {
        let in_u = *p == unkeyed;
        let use_row = &mut |source: &str, record: &str, key: Option<&str>| {
            let id = (source.to_string(), record.to_string());
            if touched.contains(&id) {
                StateUse::Skip
            } else if in_u && relink.contains(&id) {
                StateUse::Relink
            } else if !in_u || key.is_some_and(|k| parts.contains(&bucket_of(k, buckets))) {
                StateUse::Keep
            } else {
                StateUse::Skip
            }
        };
        ingest
            .resolver_mut(*kind)
            .add_state(b, use_row)
            .map_err(corrupt_state(*kind))?;
    }
    let outcome = ingest.finish_with(&mut registry, &decisions, Some(buckets));
    // The registry's rewritten buckets, whole (loaded whole above): one
    // file per bucket however many resolves added keys to it.
    let entries = registry.to_partitions(buckets);
    let mut manifests = vec![write_table(
        store,
        SUBJECTS_TABLE,
        registry.to_batch().schema(),
        Some((subjects_m, &parts)),
        by_partition(&entries),
        registry_meta(&registry, digests.meta()),
    )?];
    let mut report_subjects = Vec::new();
    let mut findings = Vec::new();
    let mut new_index: HashMap<(String, String), u32> = HashMap::new();
    // The records without a valid identifier: rewritten when one of them
    // is new, changed or linked again, the others kept as they were.
    let u_changed = !relink.is_empty()
        || !new_unkeyed.is_empty()
        || index_rows
            .iter()
            .any(|(s, r, p)| *p == unkeyed && touched.contains(&(s.clone(), r.clone())));
    let mut replaced = parts.clone();
    if u_changed {
        replaced.insert(unkeyed);
    }
    let (mut probable_links, mut steward_links) = (0usize, 0usize);
    for g in &outcome.goldens {
        let mut kept_u = Vec::new();
        if u_changed {
            for (_, _, b) in state
                .iter()
                .filter(|(k, p, _)| *k == g.kind && *p == unkeyed)
            {
                let cols = StateColumns::of(b)?;
                let keep: BooleanArray = (0..b.num_rows())
                    .map(|i| {
                        let id = (
                            cols.source.value(i).to_string(),
                            cols.record.value(i).to_string(),
                        );
                        Some(!touched.contains(&id) && !relink.contains(&id))
                    })
                    .collect();
                kept_u.push(
                    arrow_select::filter::filter_record_batch(b, &keep)
                        .map_err(|e| corrupt_state(g.kind)(e.to_string()))?,
                );
            }
        }
        let u_rows = kept_u
            .iter()
            .chain(
                g.state
                    .iter()
                    .filter(|(p, _)| *p == unkeyed)
                    .map(|(_, b)| b),
            )
            .chain(
                state
                    .iter()
                    .filter(|(k, p, _)| !u_changed && *k == g.kind && *p == unkeyed)
                    .map(|(_, _, b)| b),
            );
        for b in u_rows {
            let links = crate::store::column::<StringArray>(b, crate::ingest::resolve::STATE_LINK)
                .map_err(corrupt_state(g.kind))?;
            for l in links.iter().flatten() {
                probable_links += usize::from(l == "probable");
                steward_links += usize::from(l == "steward");
            }
        }
        let golden_m = &current[Golden::table(g.kind)];
        let mut counts: Vec<u64> = golden_m
            .meta
            .get(META_SUBJECTS)
            .and_then(|s| serde_json::from_str(s).ok())
            .filter(|c: &Vec<u64>| c.len() == buckets as usize)
            .ok_or_else(|| StoreError::Corrupt {
                path: Golden::table(g.kind).to_string(),
                reason: format!("its manifest's `{META_SUBJECTS}` is unreadable"),
            })?;
        for &p in &parts {
            counts[p as usize] = g.bucket_subjects[p as usize];
        }
        let mut meta = digests.meta();
        meta.insert(
            META_SUBJECTS.to_string(),
            serde_json::to_string(&counts).expect("numbers serialise"),
        );
        manifests.push(write_golden(store, g, Some((golden_m, &parts)), meta)?);
        manifests.push(write_table(
            store,
            &state_table(g.kind),
            state_schema(&fields_of(catalog, g.kind)),
            Some((&current[&state_table(g.kind)], &replaced)),
            by_partition(&g.state).chain(kept_u.iter().map(|b| (unkeyed, b))),
            digests.meta(),
        )?);
        let mut rows = Vec::new();
        state_records(&g.state, &mut rows).map_err(corrupt_state(g.kind))?;
        new_index.extend(rows.into_iter().map(|(s, r, p)| ((s, r), p)));
        report_subjects.push((g.kind, counts.iter().sum::<u64>() as usize, g.new_subjects));
        findings.extend(g.findings.iter().cloned());
    }
    // The quarantine and the findings, small, are rewritten: the touched
    // records' entries and the touched buckets' findings replaced.
    // (A record linked again loses only its linking outcome, not what its
    // values' normalisation found.)
    let mut quarantine: Vec<QuarantineEntry> = crate::review::load_quarantine(store)?
        .into_iter()
        .filter(|q| {
            let id = (q.source.clone(), q.record_id.clone());
            q.record_id.is_empty()
                || !(touched.contains(&id) || (q.field.is_empty() && relink.contains(&id)))
        })
        .collect();
    quarantine.extend(outcome.quarantine.iter().cloned());
    let mut all_findings: Vec<Finding> = load_findings(store)?
        .into_iter()
        .filter(|f| !part_ids.contains(&f.subject_id))
        .collect();
    all_findings.extend(findings);
    manifests.push(store.commit_with(
        QUARANTINE_TABLE,
        &[quarantine_batch(&quarantine)],
        digests.meta(),
    )?);
    manifests.push(store.commit_with(
        FINDINGS_TABLE,
        &[findings_batch(&all_findings)],
        digests.meta(),
    )?);
    let mut review: Vec<crate::ingest::ReviewItem> = crate::review::load_review(store)?
        .into_iter()
        .filter(|r| {
            let id = (r.source.clone(), r.record_id.clone());
            !touched.contains(&id) && !relink.contains(&id)
        })
        .collect();
    review.extend(outcome.review.iter().cloned());
    manifests.push(store.commit_with(
        crate::review::REVIEW_TABLE,
        &[crate::review::review_batch(&review)],
        digests.meta(),
    )?);
    // The index: the touched records where they are now (a record
    // rejected whole sits with the unkeyed ones).
    let mut records: Vec<(String, String, u32)> = index_rows
        .into_iter()
        .filter(|(s, r, _)| !touched.contains(&(s.clone(), r.clone())))
        .collect();
    for (s, r) in &touched {
        let p = new_index
            .get(&(s.clone(), r.clone()))
            .copied()
            .unwrap_or(unkeyed);
        records.push((s.clone(), r.clone(), p));
    }
    let mut meta = index.meta.clone();
    meta.insert(META_INPUTS.to_string(), digests.inputs.clone());
    meta.insert(META_RUN.to_string(), digests.run.clone());
    meta.insert(META_WRITTEN.to_string(), digests.run.clone());
    meta.insert(META_STAGED.to_string(), staged_versions(staged));
    let batches = records_batches(&records, buckets);

    manifests.push(write_table(
        store,
        RECORDS_TABLE,
        records_schema(),
        Some((&index, &index_parts)),
        by_partition(&batches),
        meta,
    )?);
    Ok(Some(PullReport {
        sources: Vec::new(),
        never_pulled: Vec::new(),
        subjects: report_subjects,
        quarantined: quarantine.len(),
        findings: all_findings.len(),
        review: review.len(),
        probable_links,
        steward_links,
        unchanged: false,
        touched: Some(Touched {
            records: rows,
            partitions: parts.len(),
            buckets,
        }),
        manifests,
        elapsed: Duration::ZERO,
    }))
}

/// Each changed source's new rows since the versions `before` names: the
/// files added since, as a manifest of their own; or why an incremental
/// resolve cannot be done.
fn staged_deltas<'c>(
    store: &TableStore,
    staged: &[(&'c ConnectorConfig, Manifest)],
    before: &BTreeMap<String, u64>,
) -> Result<Vec<(&'c ConnectorConfig, Manifest)>, &'static str> {
    if before
        .keys()
        .any(|name| !staged.iter().any(|(c, _)| &c.spec.name == name))
    {
        return Err("a source is no longer staged");
    }
    let mut deltas = Vec::new();
    for (config, m) in staged {
        let added = match before.get(&config.spec.name) {
            Some(&v) if v == m.version => continue,
            Some(&v) => {
                let Ok(old) = store.manifest(&m.table, v) else {
                    return Err("the staged version last resolved is gone");
                };
                // A snapshot pulled again with the same rows.
                let content = |m: &Manifest| -> Vec<(String, u64)> {
                    m.files.iter().map(|f| (f.sha256.clone(), f.rows)).collect()
                };
                if content(m) == content(&old) {
                    continue;
                }
                if m.meta.get(META_MODE).map(String::as_str) != Some("incremental")
                    || !m.files.starts_with(&old.files)
                {
                    return Err("a source was pulled whole again");
                }
                m.files[old.files.len()..].to_vec()
            }
            None => m.files.clone(),
        };
        let delta = Manifest {
            rows: added.iter().map(|f| f.rows).sum(),
            files: added,
            ..m.clone()
        };
        deltas.push((*config, delta));
    }
    Ok(deltas)
}

/// The resolve state of both kinds in the partitions `wanted` picks, each
/// batch with its kind and partition.
fn read_state(
    store: &TableStore,
    current: &BTreeMap<String, Manifest>,
    wanted: &dyn Fn(u32) -> bool,
    out: &mut Vec<(SubjectKind, u32, RecordBatch)>,
) -> Result<(), StoreError> {
    for kind in [SubjectKind::Person, SubjectKind::Organisation] {
        let m = &current[&state_table(kind)];
        for f in &m.files {
            let Some(p) = f.partition.filter(|&p| wanted(p)) else {
                continue;
            };
            store.read_each_where(m, &|e| e.path == f.path, &mut |b| {
                out.push((kind, p, b));
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// The model the last full resolve stored, if it stored one.
fn load_model(store: &TableStore, index: &Manifest) -> Result<Option<Model>, StoreError> {
    let Some(v) = index.meta.get(META_MODEL).and_then(|v| v.parse().ok()) else {
        return Ok(None);
    };
    let Ok(m) = store.manifest(MODEL_TABLE, v) else {
        return Ok(None);
    };
    let batches = store.read(&m)?;
    Model::from_store(&batches, &m.meta)
        .map(Some)
        .map_err(|reason| StoreError::Corrupt {
            path: format!("{MODEL_TABLE} v{v}"),
            reason,
        })
}

/// The text columns of a resolve-state batch an incremental resolve reads.
struct StateColumns<'a> {
    source: &'a StringArray,
    record: &'a StringArray,
    key: &'a StringArray,
    written: &'a StringArray,
}

impl<'a> StateColumns<'a> {
    fn of(b: &'a RecordBatch) -> Result<Self, StoreError> {
        use crate::ingest::COL_KEY;
        use crate::ingest::resolve::{STATE_RECORD, STATE_SOURCE, STATE_WRITTEN_ID};
        let col = |name: &str| {
            crate::store::column::<StringArray>(b, name).map_err(|reason| StoreError::Corrupt {
                path: "resolve state".to_string(),
                reason,
            })
        };
        Ok(StateColumns {
            source: col(STATE_SOURCE)?,
            record: col(STATE_RECORD)?,
            key: col(COL_KEY)?,
            written: col(STATE_WRITTEN_ID)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_counts_are_powers_of_two_within_bounds() {
        assert_eq!(buckets_for(0), 1);
        assert_eq!(buckets_for(5_000), 2);
        assert_eq!(buckets_for(1_017_012), 512);
        assert_eq!(buckets_for(u64::MAX), MAX_BUCKETS as u32);
    }

    #[test]
    fn a_record_partition_hashes_source_and_record_id_as_one_string() {
        // Stored indexes were written with the joined string's hash.
        for (s, r) in [("pg-population", "R0000001"), ("", ""), ("甲", "乙")] {
            assert_eq!(
                record_partition(s, r, 512),
                bucket_of(&format!("{s}\u{1f}{r}"), 512)
            );
        }
    }
}
