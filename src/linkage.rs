//! The resolver on its own, over plain CSV files, so anyone can reproduce
//! and score it (`sharebroker resolve`):
//! - `records`: the person records of the configured sources as one CSV
//!   (`source, record_id, id_number, name`), through the same connectors a
//!   pull uses; `source` is the record's dataset, as the generator's
//!   `truth.csv` names it;
//! - `link`: any CSV with `source`, `record_id`, `id_number` and
//!   optionally `name`, `agency` and `as_of` columns → `source, record_id,
//!   subject_id, link` (the link kind: exact, probable, or empty when the
//!   record was not linked), through the same resolver as a pull;
//! - `score`: those links against a ground truth.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::{Array, StringArray};

use crate::catalog::{Catalog, SubjectKind};
use crate::connectors::{self, COL_RECORD_ID, COL_SUBJECT, ConnectorConfig};
use crate::ingest::link::Model;
use crate::ingest::score::{LinkRow, Report, TruthRow};
use crate::ingest::{Decisions, Resolver, SubjectRegistry, normalise_value, subject_key};

#[derive(Debug, thiserror::Error)]
pub enum LinkageError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: line {line}: {reason}")]
    Row {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("source `{source_name}`: {reason}")]
    Source { source_name: String, reason: String },
    #[error("the catalogue has no person-name field to link on")]
    NoNameField,
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> LinkageError {
    LinkageError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The person records of `configs` as one CSV at `out`; the number written.
pub fn write_records(
    catalog: &Catalog,
    configs: &[ConnectorConfig],
    data_dir: &Path,
    out: &Path,
) -> Result<usize, LinkageError> {
    let name_field = person_name_field(catalog)?;
    let mut w = csv::Writer::from_path(out).map_err(|e| file_err(out, e))?;
    w.write_record(["source", "record_id", "id_number", "name"])
        .map_err(|e| file_err(out, e))?;
    let mut written = 0;
    for config in configs {
        let spec = &config.spec;
        let is_person = catalog
            .dataset(&spec.dataset)
            .is_some_and(|d| d.subject == SubjectKind::Person);
        if !is_person {
            continue;
        }
        let name_col = spec
            .columns
            .iter()
            .find(|(_, target)| *target == name_field)
            .map(|(_, t)| t.clone());
        let connector = connectors::build(config, data_dir);
        let source_err = |reason: String| LinkageError::Source {
            source_name: spec.name.clone(),
            reason,
        };
        let mut sink_err = None;
        connector
            .pull(None, &mut |pulled| {
                let b = &pulled.batch;
                let col = |n: &str| {
                    b.column_by_name(n)
                        .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                };
                let (Some(ids), Some(subjects)) = (col(COL_RECORD_ID), col(COL_SUBJECT)) else {
                    return Err(connectors::ConnectorError::Sink {
                        source_name: spec.name.clone(),
                        reason: "batch lacks the record id or subject column".into(),
                    });
                };
                let names = name_col.as_deref().and_then(col);
                for r in 0..b.num_rows() {
                    let name = names
                        .as_ref()
                        .map_or("", |n| if n.is_null(r) { "" } else { n.value(r) });
                    if let Err(e) = w.write_record([
                        spec.dataset.as_str(),
                        ids.value(r),
                        subjects.value(r),
                        name,
                    ]) {
                        sink_err = Some(file_err(out, e));
                        return Err(connectors::ConnectorError::Sink {
                            source_name: spec.name.clone(),
                            reason: "cannot write the records file".into(),
                        });
                    }
                    written += 1;
                }
                Ok(())
            })
            .map_err(|e| sink_err.take().unwrap_or_else(|| source_err(e.to_string())))?;
    }
    w.flush().map_err(|e| file_err(out, e))?;
    Ok(written)
}

fn person_name_field(catalog: &Catalog) -> Result<String, LinkageError> {
    catalog
        .fields_of_kind(SubjectKind::Person)
        .find(|f| f.kind == crate::catalog::FieldKind::PersonName)
        .map(|f| f.qualified.clone())
        .ok_or(LinkageError::NoNameField)
}

/// What [`link_csv`] did.
#[derive(Debug)]
pub struct LinkStats {
    pub records: usize,
    pub subjects: usize,
    pub exact: usize,
    pub probable: usize,
    pub review: usize,
    pub unlinked: usize,
    pub elapsed: Duration,
    pub model: Option<Model>,
}

/// Resolve the person records of the CSV at `input` and write each
/// record's subject to `out`.
pub fn link_csv(catalog: &Catalog, input: &Path, out: &Path) -> Result<LinkStats, LinkageError> {
    let started = Instant::now();
    let name_field = person_name_field(catalog)?;
    let (_, name_field) = catalog
        .field(&name_field)
        .ok_or(LinkageError::NoNameField)?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(input)
        .map_err(|e| file_err(input, e))?;
    let headers = rdr.headers().map_err(|e| file_err(input, e))?.clone();
    let col = |n: &str| headers.iter().position(|h| h.trim() == n);
    let need = |n: &str| {
        col(n).ok_or_else(|| {
            file_err(
                input,
                format!("no `{n}` column (needs source, record_id, id_number; optional name, agency, as_of)"),
            )
        })
    };
    let (c_source, c_record, c_id) = (need("source")?, need("record_id")?, need("id_number")?);
    let (c_name, c_agency, c_as_of) = (col("name"), col("agency"), col("as_of"));
    let mut resolver = Resolver::new(catalog, SubjectKind::Person);
    let mut row = csv::StringRecord::new();
    let mut records = 0;
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    loop {
        match rdr.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Err(LinkageError::Row {
                    path: input.to_path_buf(),
                    line,
                    reason: e.to_string(),
                });
            }
        }
        let line = row.position().map_or(0, |p| p.line());
        let get = |c: Option<usize>| c.and_then(|c| row.get(c)).unwrap_or("");
        let (source, record, id) = (get(Some(c_source)), get(Some(c_record)), get(Some(c_id)));
        if source.is_empty() || record.is_empty() {
            return Err(LinkageError::Row {
                path: input.to_path_buf(),
                line,
                reason: "empty source or record_id".into(),
            });
        }
        if let Some(first) = seen.insert((source.to_string(), record.to_string()), line) {
            return Err(LinkageError::Row {
                path: input.to_path_buf(),
                line,
                reason: format!("record ({source}, {record}) already on line {first}"),
            });
        }
        let agency = match get(c_agency) {
            "" => source,
            a => a,
        };
        let as_of = get(c_as_of);
        let raw_name = get(c_name);
        let name = normalise_value(name_field, raw_name).ok().flatten();
        let values: Vec<_> = name
            .into_iter()
            .map(|n| (name_field, n, raw_name))
            .collect();
        match subject_key(SubjectKind::Person, id) {
            Ok(key) => resolver.add(&key, source, agency, record, as_of, &values),
            Err(problem) => {
                resolver.add_unkeyed(source, agency, record, as_of, line, id, &problem, &values)
            }
        }
        records += 1;
    }
    let golden = resolver.finish(&mut SubjectRegistry::default(), &Decisions::new());
    let mut w = csv::Writer::from_path(out).map_err(|e| file_err(out, e))?;
    w.write_record(["source", "record_id", "subject_id", "link"])
        .map_err(|e| file_err(out, e))?;
    let (mut exact, mut probable, mut unlinked) = (0, 0, 0);
    for l in &golden.links {
        match l.kind {
            Some(crate::ingest::resolve::LinkKind::Probable) => probable += 1,
            Some(_) => exact += 1,
            None => unlinked += 1,
        }
        w.write_record([
            l.source.as_str(),
            l.record_id.as_str(),
            l.subject_id.as_deref().unwrap_or(""),
            l.kind.map_or("", |k| k.as_str()),
        ])
        .map_err(|e| file_err(out, e))?;
    }
    w.flush().map_err(|e| file_err(out, e))?;
    Ok(LinkStats {
        records,
        subjects: golden.subjects,
        exact,
        probable,
        review: golden.review.len(),
        unlinked,
        elapsed: started.elapsed(),
        model: golden.model,
    })
}

/// Read a generator `truth.csv` (rows of `kind`) and a links file, and
/// score them.
pub fn score_files(truth: &Path, links: &Path, kind: &str) -> Result<Report, LinkageError> {
    let read = |path: &Path,
                need: &[&str]|
     -> Result<(Vec<usize>, Vec<csv::StringRecord>), LinkageError> {
        let mut rdr = csv::Reader::from_path(path).map_err(|e| file_err(path, e))?;
        let headers = rdr.headers().map_err(|e| file_err(path, e))?.clone();
        let cols = need
            .iter()
            .map(|n| {
                headers
                    .iter()
                    .position(|h| h == *n)
                    .ok_or_else(|| file_err(path, format!("no `{n}` column")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rows = rdr
            .records()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_err(path, e))?;
        Ok((cols, rows))
    };
    let (tc, trows) = read(
        truth,
        &[
            "source",
            "record_id",
            "entity_id",
            "kind",
            "name_has_dot",
            "id_valid",
        ],
    )?;
    let truth_rows: Vec<TruthRow> = trows
        .iter()
        .filter(|r| &r[tc[3]] == kind)
        .map(|r| TruthRow {
            source: r[tc[0]].to_string(),
            record_id: r[tc[1]].to_string(),
            entity: r[tc[2]].to_string(),
            has_dot: &r[tc[4]] == "true",
            id_valid: &r[tc[5]] == "true",
        })
        .collect();
    let (lc, lrows) = read(links, &["source", "record_id", "subject_id", "link"])?;
    let link_rows: Vec<LinkRow> = lrows
        .iter()
        .map(|r| LinkRow {
            source: r[lc[0]].to_string(),
            record_id: r[lc[1]].to_string(),
            subject: (!r[lc[2]].is_empty()).then(|| r[lc[2]].to_string()),
            probable: &r[lc[3]] == "probable",
        })
        .collect();
    crate::ingest::score::score(&truth_rows, &link_rows).map_err(|e| file_err(links, e))
}
