//! Ingest: normalise pulled rows field by field (raw kept beside the
//! normalised value), resolve subjects by exact identifier and, for person
//! records whose ID number fails validation, probabilistically (`link`),
//! and merge one golden record per subject with per-field provenance. Rejects go to
//! quarantine, disagreements between agencies become data-quality findings.
//! Pure: batches in, batches out, no I/O (architecture invariant 8).

pub mod link;
pub mod normalise;
pub mod resolve;
pub mod score;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};

use crate::catalog::{Catalog, Field, FieldKind, SubjectKind};
use crate::connectors::{
    COL_AS_OF, COL_POSITION, COL_RECORD_ID, COL_SUBJECT, ConnectorSpec, Pulled, Rejected,
};

pub use resolve::{Decision, Decisions, Golden, Resolver, ReviewItem, SubjectRegistry};

/// Golden-record columns besides the per-field ones.
pub const COL_SUBJECT_ID: &str = "subject_id";
pub const COL_KEY: &str = "key";
/// Suffixes of a field's provenance columns: `population.name#src` …
pub const SUFFIX_RAW: &str = "#raw";
pub const SUFFIX_SOURCE: &str = "#src";
pub const SUFFIX_RECORD: &str = "#rec";
pub const SUFFIX_AS_OF: &str = "#asof";

/// A record or a value that did not pass: where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    pub source: String,
    pub agency: String,
    pub position: u64,
    pub record_id: String,
    /// The field whose value was rejected; empty when the whole record was.
    pub field: String,
    pub reason: String,
    pub raw: String,
}

/// Normalise one raw value for a catalogue field. Empty input means "no
/// value" (`Ok(None)`), not an error.
pub fn normalise_value(field: &Field, raw: &str) -> Result<Option<String>, String> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    let v = match field.kind {
        FieldKind::IdNumber => normalise::id_number(raw)
            .map(|id| id.value)
            .map_err(|e| e.to_string())?,
        FieldKind::CreditCode => normalise::credit_code(raw)
            .map(|c| c.value)
            .map_err(|e| e.to_string())?,
        FieldKind::PersonName => normalise::person_name(raw),
        FieldKind::Sex => normalise::sex(raw)
            .map(|s| s.label().to_string())
            .ok_or_else(|| "not a recognised sex code".to_string())?,
        FieldKind::Date => normalise::date(raw)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .map_err(|e| e.to_string())?,
        FieldKind::Phone => normalise::phone(raw).map_err(|e| e.to_string())?,
        FieldKind::AreaCode => {
            let t = normalise::text(raw);
            if !crate::model::areas::plausible_area_code(&t) {
                return Err("not a six-digit area code".to_string());
            }
            t
        }
        FieldKind::Address | FieldKind::Text => normalise::text(raw),
        FieldKind::Enum => {
            let t = normalise::text(raw);
            if !field.values.contains(&t) {
                return Err(format!("`{t}` is not one of {}", field.values.join(", ")));
            }
            t
        }
    };
    Ok(Some(v))
}

/// Normalise a subject identifier to the key records are merged on.
pub fn subject_key(kind: SubjectKind, raw: &str) -> Result<String, String> {
    match kind {
        SubjectKind::Person => normalise::id_number(raw)
            .map(|id| id.value)
            .map_err(|e| format!("resident id number: {e}")),
        SubjectKind::Organisation => normalise::credit_code(raw)
            .map(|c| c.value)
            .map_err(|e| format!("unified social credit code: {e}")),
    }
}

/// Why an identifier is invalid, in words that carry none of its digits:
/// safe to return to a client and to keep in the audit log.
pub fn identifier_problem(kind: SubjectKind, raw: &str) -> &'static str {
    use normalise::{CreditCodeError as C, IdNumberError as I};
    match kind {
        SubjectKind::Person => match normalise::id_number(raw) {
            Ok(_) => "valid",
            Err(I::Empty) => "the resident id number is empty",
            Err(I::Length { .. }) => {
                "the resident id number has the wrong length (18 characters, or 15 for a legacy number)"
            }
            Err(I::Character { .. }) => {
                "the resident id number has a character other than digits and a final X"
            }
            Err(I::Checksum { .. }) => {
                "the resident id number's check character does not match (a typing error?)"
            }
            Err(I::BirthDate { .. }) => "the resident id number's birth date is not a real date",
            Err(I::AreaCode { .. }) => "the resident id number's area code is not plausible",
        },
        SubjectKind::Organisation => match normalise::credit_code(raw) {
            Ok(_) => "valid",
            Err(C::Empty) => "the unified social credit code is empty",
            Err(C::Length { .. }) => {
                "the unified social credit code has the wrong length (18 characters)"
            }
            Err(C::Character { .. }) => {
                "the unified social credit code has a character outside its alphabet"
            }
        },
    }
}

/// Normalise an as-of timestamp to `YYYY-MM-DD HH:MM:SS`, which sorts.
pub fn as_of_key(raw: &str) -> Result<String, String> {
    normalise::datetime(raw)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .map_err(|e| e.to_string())
}

/// A mapped source column: its catalogue field, value map and values.
type MappedColumn<'a> = (
    &'a Field,
    Option<&'a HashMap<String, String>>,
    &'a StringArray,
);

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    crate::store::column(batch, name).ok()
}

/// Accumulates pulled batches of every source, then resolves them into
/// golden records. One per pull run.
pub struct Ingest<'c> {
    catalog: &'c Catalog,
    resolvers: Vec<Resolver<'c>>,
    pub quarantine: Vec<QuarantineEntry>,
    /// With [`Ingest::tracking`]: the (source, record id) of every row
    /// added, for an incremental resolve to know which records changed.
    pub touched: Vec<(String, String)>,
    track: bool,
}

impl<'c> Ingest<'c> {
    pub fn new(catalog: &'c Catalog) -> Self {
        let resolvers = [SubjectKind::Person, SubjectKind::Organisation]
            .into_iter()
            .map(|k| Resolver::new(catalog, k))
            .collect();
        Ingest {
            catalog,
            resolvers,
            quarantine: Vec::new(),
            touched: Vec::new(),
            track: false,
        }
    }

    /// An ingest that keeps the (source, record id) of each row it adds.
    pub fn tracking(catalog: &'c Catalog) -> Self {
        Ingest {
            track: true,
            ..Ingest::new(catalog)
        }
    }

    /// The subject keys added so far, with their kind.
    pub fn keys(&self) -> Vec<(SubjectKind, String)> {
        self.resolvers
            .iter()
            .flat_map(|r| r.keys().map(|k| (r.kind(), k.to_string())))
            .collect()
    }

    /// The resolver of one subject kind.
    pub fn resolver_mut(&mut self, kind: SubjectKind) -> &mut Resolver<'c> {
        self.resolvers
            .iter_mut()
            .find(|r| r.kind() == kind)
            .expect("a resolver per subject kind")
    }

    /// Normalise one pulled batch of `spec`'s source and add its records.
    /// A batch without the columns its spec promises is an error, never
    /// silently skipped.
    pub fn add(&mut self, spec: &ConnectorSpec, pulled: &Pulled) -> Result<(), String> {
        for Rejected {
            position,
            reason,
            raw,
        } in &pulled.rejected
        {
            self.quarantine.push(QuarantineEntry {
                source: spec.name.clone(),
                agency: spec.agency.clone(),
                position: *position,
                record_id: String::new(),
                field: String::new(),
                reason: reason.clone(),
                raw: raw.clone(),
            });
        }
        let dataset = self
            .catalog
            .dataset(&spec.dataset)
            .ok_or_else(|| format!("dataset `{}` is not in the catalogue", spec.dataset))?;
        let kind = dataset.subject;
        let batch = &pulled.batch;
        let (Some(positions), Some(ids), Some(as_ofs), Some(subjects)) = (
            batch
                .column_by_name(COL_POSITION)
                .and_then(|c| c.as_any().downcast_ref::<UInt64Array>()),
            strings(batch, COL_RECORD_ID),
            strings(batch, COL_AS_OF),
            strings(batch, COL_SUBJECT),
        ) else {
            return Err("batch lacks the position, record id, as-of or subject column".into());
        };
        let catalog = self.catalog;
        let resolver = self
            .resolvers
            .iter_mut()
            .find(|r| r.kind() == kind)
            .expect("a resolver per subject kind");
        let columns: Vec<MappedColumn> = spec
            .columns
            .iter()
            .map(|(_, target)| {
                let (_, field) = catalog
                    .field(target)
                    .ok_or_else(|| format!("`{target}` is not a catalogue field"))?;
                let values = strings(batch, target)
                    .ok_or_else(|| format!("batch lacks the text column `{target}`"))?;
                Ok((field, spec.values.get(target), values))
            })
            .collect::<Result<_, String>>()?;
        let mut values = Vec::with_capacity(columns.len());
        for row in 0..batch.num_rows() {
            let position = positions.value(row);
            let record_id = ids.value(row);
            if self.track {
                self.touched
                    .push((spec.name.clone(), record_id.to_string()));
            }
            let quarantine = |field: &str, reason: String, raw: &str| QuarantineEntry {
                source: spec.name.clone(),
                agency: spec.agency.clone(),
                position,
                record_id: record_id.to_string(),
                field: field.to_string(),
                reason,
                raw: raw.to_string(),
            };
            let key = subject_key(kind, subjects.value(row));
            if let Err(reason) = &key
                && !resolver.links_unkeyed()
            {
                self.quarantine.push(quarantine(
                    "",
                    format!(
                        "{reason}; records of this kind without a valid identifier are not linked"
                    ),
                    subjects.value(row),
                ));
                continue;
            }
            let as_of = match as_of_key(as_ofs.value(row)) {
                Ok(t) => t,
                Err(reason) => {
                    self.quarantine.push(quarantine(
                        COL_AS_OF,
                        format!("as-of time: {reason}; the record ranks oldest"),
                        as_ofs.value(row),
                    ));
                    String::new()
                }
            };
            values.clear();
            for (field, map, array) in &columns {
                let raw = array.value(row);
                let mapped = map
                    .and_then(|m| m.get(raw.trim()))
                    .map(String::as_str)
                    .unwrap_or(raw);
                match normalise_value(field, mapped) {
                    Ok(Some(v)) => values.push((*field, v, raw)),
                    Ok(None) => {}
                    Err(reason) => self
                        .quarantine
                        .push(quarantine(&field.qualified, reason, raw)),
                }
            }
            match key {
                Ok(key) => resolver.add(&key, &spec.name, &spec.agency, record_id, &as_of, &values),
                Err(reason) => resolver.add_unkeyed(
                    &spec.name,
                    &spec.agency,
                    record_id,
                    &as_of,
                    position,
                    subjects.value(row),
                    &reason,
                    &values,
                ),
            }
        }
        Ok(())
    }

    /// Resolve everything added so far into golden records, keeping the
    /// subject ids of `registry` (which gains the new subjects) and
    /// applying the stewards' `decisions`.
    pub fn finish(self, registry: &mut SubjectRegistry, decisions: &Decisions) -> IngestOutcome {
        self.finish_with(registry, decisions, None)
    }

    /// [`Ingest::finish`]; with `buckets`, golden rows and resolve state
    /// in that many partitions (see [`Golden::state`]).
    pub fn finish_with(
        self,
        registry: &mut SubjectRegistry,
        decisions: &Decisions,
        buckets: Option<u32>,
    ) -> IngestOutcome {
        let mut quarantine = self.quarantine;
        let mut review = Vec::new();
        let goldens = self
            .resolvers
            .into_iter()
            .map(|r| {
                let mut g = r.finish_with(registry, decisions, buckets);
                quarantine.append(&mut g.quarantine);
                review.append(&mut g.review);
                g
            })
            .collect();
        IngestOutcome {
            goldens,
            quarantine,
            review,
        }
    }
}

pub struct IngestOutcome {
    pub goldens: Vec<Golden>,
    pub quarantine: Vec<QuarantineEntry>,
    /// Records for a steward to link or reject (`sharebroker review`).
    pub review: Vec<ReviewItem>,
}

/// The quarantine as one Arrow batch, for the store.
pub fn quarantine_batch(entries: &[QuarantineEntry]) -> RecordBatch {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        ArrowField::new("source", DataType::Utf8, false),
        ArrowField::new("agency", DataType::Utf8, false),
        ArrowField::new("position", DataType::UInt64, false),
        ArrowField::new("record_id", DataType::Utf8, false),
        ArrowField::new("field", DataType::Utf8, false),
        ArrowField::new("reason", DataType::Utf8, false),
        ArrowField::new("raw", DataType::Utf8, false),
    ]));
    let col = |f: fn(&QuarantineEntry) -> &str| {
        Arc::new(entries.iter().map(|e| Some(f(e))).collect::<StringArray>()) as Arc<dyn Array>
    };
    RecordBatch::try_new(
        schema,
        vec![
            col(|e| &e.source),
            col(|e| &e.agency),
            Arc::new(entries.iter().map(|e| e.position).collect::<UInt64Array>()),
            col(|e| &e.record_id),
            col(|e| &e.field),
            col(|e| &e.reason),
            col(|e| &e.raw),
        ],
    )
    .expect("columns match the schema")
}
