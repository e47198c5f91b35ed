//! Resolve: merge normalised records into one golden record per subject.
//! Records are linked by exact, valid identifier only, so two different
//! valid ID numbers are never merged (architecture invariant 5). Per field,
//! the authoritative agency's value wins, then the most recent; a losing
//! value from another agency that disagrees becomes a data-quality finding.
//! Subject ids are stable: a key seen before keeps its id.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};

use super::{COL_KEY, COL_SUBJECT_ID, SUFFIX_AS_OF, SUFFIX_RAW, SUFFIX_RECORD, SUFFIX_SOURCE};
use crate::catalog::{Catalog, Field, SubjectKind};

/// Rows per golden batch.
const GOLDEN_BATCH_ROWS: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    value: String,
    raw: String,
    agency: u16,
    record: String,
    as_of: String,
}

/// A disagreement between agencies about one subject's field, for the
/// field's owning agency to check (校核纠错).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub subject_id: String,
    pub field: String,
    /// The authoritative agency for the field.
    pub owner: String,
    pub kept_value: String,
    pub kept_agency: String,
    pub kept_record: String,
    pub other_value: String,
    pub other_agency: String,
    pub other_record: String,
}

struct PendingFinding {
    key: String,
    field: usize,
    kept: Candidate,
    other: Candidate,
}

/// Every subject id ever handed out, by (kind, key). It only grows: a
/// subject keeps its id across pulls even when it is absent from one, and a
/// number is never given to anyone else.
#[derive(Debug, Default, Clone)]
pub struct SubjectRegistry {
    ids: HashMap<(SubjectKind, String), String>,
    next: HashMap<SubjectKind, u64>,
}

impl SubjectRegistry {
    pub fn insert(&mut self, kind: SubjectKind, key: String, subject_id: String) {
        if let Some(n) = subject_id.get(2..).and_then(|s| s.parse::<u64>().ok()) {
            let next = self.next.entry(kind).or_insert(1);
            *next = (*next).max(n + 1);
        }
        self.ids.insert((kind, key), subject_id);
    }

    /// The subject id of a key, assigning the next free one if it is new;
    /// `true` when it was new.
    pub fn id_for(&mut self, kind: SubjectKind, key: &str) -> (String, bool) {
        if let Some(id) = self.ids.get(&(kind, key.to_string())) {
            return (id.clone(), false);
        }
        let next = self.next.entry(kind).or_insert(1);
        let id = subject_id(kind, *next);
        *next += 1;
        self.ids.insert((kind, key.to_string()), id.clone());
        (id, true)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The registry as a table (kind, key, subject id), sorted, for the store.
    pub fn to_batch(&self) -> RecordBatch {
        let mut rows: Vec<(&str, &str, &str)> = self
            .ids
            .iter()
            .map(|((k, key), id)| (k.as_str(), key.as_str(), id.as_str()))
            .collect();
        rows.sort_unstable();
        let schema = Arc::new(Schema::new(vec![
            ArrowField::new("kind", DataType::Utf8, false),
            ArrowField::new(COL_KEY, DataType::Utf8, false),
            ArrowField::new(COL_SUBJECT_ID, DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|r| Some(r.0)).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| Some(r.1)).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| Some(r.2)).collect::<StringArray>()),
        ];
        RecordBatch::try_new(schema, columns).expect("columns match the registry schema")
    }

    /// Read a registry written by [`SubjectRegistry::to_batch`].
    pub fn from_batches(batches: &[RecordBatch]) -> Result<Self, String> {
        let mut reg = SubjectRegistry::default();
        for b in batches {
            let col = |name: &str| {
                b.column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .ok_or_else(|| format!("subject registry has no text column `{name}`"))
            };
            let (kinds, keys, ids) = (col("kind")?, col(COL_KEY)?, col(COL_SUBJECT_ID)?);
            for i in 0..b.num_rows() {
                let kind = match kinds.value(i) {
                    "person" => SubjectKind::Person,
                    "organisation" => SubjectKind::Organisation,
                    other => return Err(format!("unknown subject kind `{other}` in the registry")),
                };
                reg.insert(kind, keys.value(i).to_string(), ids.value(i).to_string());
            }
        }
        Ok(reg)
    }
}

pub fn subject_id(kind: SubjectKind, n: u64) -> String {
    let prefix = match kind {
        SubjectKind::Person => 'P',
        SubjectKind::Organisation => 'O',
    };
    format!("{prefix}-{n:08}")
}

/// The golden table of one subject kind.
pub struct Golden {
    pub kind: SubjectKind,
    pub batches: Vec<RecordBatch>,
    pub findings: Vec<Finding>,
    pub subjects: usize,
    pub new_subjects: usize,
}

impl Golden {
    /// The store table name for a subject kind.
    pub fn table(kind: SubjectKind) -> &'static str {
        kind.as_str()
    }
}

pub struct Resolver<'c> {
    kind: SubjectKind,
    fields: Vec<&'c Field>,
    field_index: HashMap<&'c str, usize>,
    agencies: Vec<String>,
    subjects: HashMap<String, Vec<Option<Candidate>>>,
    pending: Vec<PendingFinding>,
}

impl<'c> Resolver<'c> {
    pub fn new(catalog: &'c Catalog, kind: SubjectKind) -> Self {
        let fields: Vec<&Field> = catalog.fields_of_kind(kind).collect();
        let field_index = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.qualified.as_str(), i))
            .collect();
        Resolver {
            kind,
            fields,
            field_index,
            agencies: Vec::new(),
            subjects: HashMap::new(),
            pending: Vec::new(),
        }
    }

    pub fn kind(&self) -> SubjectKind {
        self.kind
    }

    fn intern(&mut self, agency: &str) -> u16 {
        match self.agencies.iter().position(|a| a == agency) {
            Some(i) => i as u16,
            None => {
                self.agencies.push(agency.to_string());
                (self.agencies.len() - 1) as u16
            }
        }
    }

    /// Whether `a` outranks `b` for field `f`: authority first, then the
    /// later as-of time, then the larger record id (numbers compare as
    /// numbers: shorter is smaller), a stable tie-break.
    fn outranks(&self, f: usize, a: &Candidate, b: &Candidate) -> bool {
        let authority = &self.fields[f].authority;
        fn rank<'a>(
            agencies: &[String],
            authority: &str,
            c: &'a Candidate,
        ) -> (bool, &'a str, usize, &'a str) {
            (
                agencies[c.agency as usize] == authority,
                c.as_of.as_str(),
                c.record.len(),
                c.record.as_str(),
            )
        }
        rank(&self.agencies, authority, a) > rank(&self.agencies, authority, b)
    }

    /// Add one normalised record: (field, normalised value, raw value).
    pub fn add(
        &mut self,
        key: &str,
        agency: &str,
        record: &str,
        as_of: &str,
        values: &[(&Field, String, &str)],
    ) {
        let agency = self.intern(agency);
        let n = self.fields.len();
        let mut slots = self.subjects.remove(key).unwrap_or_else(|| vec![None; n]);
        for (field, value, raw) in values {
            let Some(&f) = self.field_index.get(field.qualified.as_str()) else {
                continue;
            };
            let new = Candidate {
                value: value.clone(),
                raw: raw.to_string(),
                agency,
                record: record.to_string(),
                as_of: as_of.to_string(),
            };
            match &slots[f] {
                None => slots[f] = Some(new),
                Some(old) => {
                    let replace = self.outranks(f, &new, old);
                    let (kept, other) = if replace { (&new, old) } else { (old, &new) };
                    if kept.value != other.value && kept.agency != other.agency {
                        self.pending.push(PendingFinding {
                            key: key.to_string(),
                            field: f,
                            kept: kept.clone(),
                            other: other.clone(),
                        });
                    }
                    if replace {
                        slots[f] = Some(new);
                    }
                }
            }
        }
        self.subjects.insert(key.to_string(), slots);
    }

    /// Assign subject ids from `registry` (adding the new ones to it) and
    /// build the golden table.
    pub fn finish(self, registry: &mut SubjectRegistry) -> Golden {
        let mut keys: Vec<&String> = self.subjects.keys().collect();
        keys.sort_unstable();
        let mut new_subjects = 0;
        let mut ids: HashMap<&str, String> = HashMap::with_capacity(keys.len());
        for k in &keys {
            let (id, new) = registry.id_for(self.kind, k);
            new_subjects += usize::from(new);
            ids.insert(k.as_str(), id);
        }
        let schema = golden_schema(&self.fields);
        let mut batches = Vec::new();
        // Rows in key order, looked up once.
        let rows: Vec<Row> = keys
            .iter()
            .map(|k| (k.as_str(), self.subjects[k.as_str()].as_slice()))
            .collect();
        for chunk in rows.chunks(GOLDEN_BATCH_ROWS) {
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
            columns.push(text_column(chunk, |(k, _)| Some(ids[*k].as_str())));
            columns.push(text_column(chunk, |(k, _)| Some(*k)));
            for f in 0..self.fields.len() {
                columns.push(text_column(chunk, |(_, slots)| {
                    slots[f].as_ref().map(|c| c.value.as_str())
                }));
                columns.push(text_column(chunk, |(_, slots)| {
                    slots[f].as_ref().map(|c| c.raw.as_str())
                }));
                columns.push(text_column(chunk, |(_, slots)| {
                    slots[f]
                        .as_ref()
                        .map(|c| self.agencies[c.agency as usize].as_str())
                }));
                columns.push(text_column(chunk, |(_, slots)| {
                    slots[f].as_ref().map(|c| c.record.as_str())
                }));
                columns.push(text_column(chunk, |(_, slots)| {
                    slots[f].as_ref().map(|c| c.as_of.as_str())
                }));
            }
            batches.push(
                RecordBatch::try_new(schema.clone(), columns)
                    .expect("columns match the golden schema"),
            );
        }
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema.clone()));
        }
        let findings = self
            .pending
            .iter()
            .map(|p| Finding {
                subject_id: ids[p.key.as_str()].clone(),
                field: self.fields[p.field].qualified.clone(),
                owner: self.fields[p.field].authority.clone(),
                kept_value: p.kept.value.clone(),
                kept_agency: self.agencies[p.kept.agency as usize].clone(),
                kept_record: p.kept.record.clone(),
                other_value: p.other.value.clone(),
                other_agency: self.agencies[p.other.agency as usize].clone(),
                other_record: p.other.record.clone(),
            })
            .collect();
        Golden {
            kind: self.kind,
            batches,
            findings,
            subjects: keys.len(),
            new_subjects,
        }
    }
}

/// A golden row being built: key and per-field winning candidates.
type Row<'a> = (&'a str, &'a [Option<Candidate>]);

/// One text column over `rows`.
fn text_column<'a>(rows: &[Row<'a>], get: impl Fn(&Row<'a>) -> Option<&'a str>) -> ArrayRef {
    Arc::new(rows.iter().map(get).collect::<StringArray>())
}

/// Schema of a golden table: subject id, key, then per field its value,
/// raw value, source agency, source record and as-of time.
pub fn golden_schema(fields: &[&Field]) -> SchemaRef {
    let mut cols = vec![
        ArrowField::new(COL_SUBJECT_ID, DataType::Utf8, false),
        ArrowField::new(COL_KEY, DataType::Utf8, false),
    ];
    for f in fields {
        for suffix in ["", SUFFIX_RAW, SUFFIX_SOURCE, SUFFIX_RECORD, SUFFIX_AS_OF] {
            cols.push(ArrowField::new(
                format!("{}{suffix}", f.qualified),
                DataType::Utf8,
                true,
            ));
        }
    }
    Arc::new(Schema::new(cols))
}

/// The findings of all golden tables as one Arrow batch, for the store.
pub fn findings_batch(findings: &[Finding]) -> RecordBatch {
    let names = [
        "subject_id",
        "field",
        "owner",
        "kept_value",
        "kept_agency",
        "kept_record",
        "other_value",
        "other_agency",
        "other_record",
    ];
    let getters: [fn(&Finding) -> &str; 9] = [
        |f| &f.subject_id,
        |f| &f.field,
        |f| &f.owner,
        |f| &f.kept_value,
        |f| &f.kept_agency,
        |f| &f.kept_record,
        |f| &f.other_value,
        |f| &f.other_agency,
        |f| &f.other_record,
    ];
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| ArrowField::new(*n, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ));
    let columns = getters
        .iter()
        .map(|g| Arc::new(findings.iter().map(|f| Some(g(f))).collect::<StringArray>()) as ArrayRef)
        .collect();
    RecordBatch::try_new(schema, columns).expect("columns match the findings schema")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn catalog() -> Catalog {
        Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).expect("catalogue")
    }

    fn value(g: &Golden, row: usize, col: &str) -> Option<String> {
        let a = g.batches[0]
            .column_by_name(col)?
            .as_any()
            .downcast_ref::<StringArray>()?;
        (!arrow_array::Array::is_null(a, row)).then(|| a.value(row).to_string())
    }

    #[test]
    fn authority_wins_and_disagreement_is_a_finding() {
        let cat = catalog();
        let name = cat.field("population.name").expect("field").1;
        let mut r = Resolver::new(&cat, SubjectKind::Person);
        // A newer civil-affairs spelling does not overwrite the registry's.
        r.add(
            "650102198506150010",
            "xj-gat",
            "GA1",
            "2020-01-01 00:00:00",
            &[(name, "麦麦提·艾力".into(), "麦麦提·艾力")],
        );
        r.add(
            "650102198506150010",
            "xj-mzt",
            "MZ1",
            "2024-01-01 00:00:00",
            &[(name, "买买提·艾力".into(), "买买提.艾力")],
        );
        r.add(
            "11010519491231002X",
            "xj-mzt",
            "MZ2",
            "2024-01-01 00:00:00",
            &[(name, "张三".into(), "张三")],
        );
        let g = r.finish(&mut SubjectRegistry::default());
        assert_eq!(g.subjects, 2);
        assert_eq!(value(&g, 1, "key").as_deref(), Some("650102198506150010"));
        assert_eq!(
            value(&g, 1, "population.name").as_deref(),
            Some("麦麦提·艾力")
        );
        assert_eq!(
            value(&g, 1, "population.name#src").as_deref(),
            Some("xj-gat")
        );
        assert_eq!(g.findings.len(), 1);
        assert_eq!(g.findings[0].owner, "xj-gat");
        assert_eq!(g.findings[0].other_value, "买买提·艾力");
        // The lower-ranked source alone still fills the field.
        assert_eq!(
            value(&g, 0, "population.name#src").as_deref(),
            Some("xj-mzt")
        );
    }

    #[test]
    fn subject_ids_are_stable_and_never_reused() {
        let cat = catalog();
        let name = cat.field("population.name").expect("field").1;
        let run = |keys: &[&str], registry: &mut SubjectRegistry| {
            let mut r = Resolver::new(&cat, SubjectKind::Person);
            for k in keys {
                r.add(k, "xj-gat", "1", "", &[(name, "张三".into(), "张三")]);
            }
            let g = r.finish(registry);
            let ids: Vec<String> = (0..keys.len())
                .map(|i| value(&g, i, "subject_id").expect("id"))
                .collect();
            (ids, g.new_subjects)
        };
        let (a, b, c) = (
            "11010519491231002X",
            "650102198506150010",
            "650102198506150029",
        );
        let mut registry = SubjectRegistry::default();
        assert_eq!(
            run(&[a, b], &mut registry),
            (vec!["P-00000001".into(), "P-00000002".into()], 2)
        );
        // b (the highest id) drops out of a pull; c arrives: c must not get b's number.
        assert_eq!(
            run(&[a, c], &mut registry),
            (vec!["P-00000001".into(), "P-00000003".into()], 1)
        );
        // b comes back with its old id, after a round trip through the store's form.
        let mut registry = SubjectRegistry::from_batches(&[registry.to_batch()]).expect("registry");
        assert_eq!(
            run(&[a, b, c], &mut registry),
            (
                vec![
                    "P-00000001".into(),
                    "P-00000002".into(),
                    "P-00000003".into()
                ],
                0
            )
        );
    }
}
