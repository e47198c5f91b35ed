//! Resolve: merge normalised records into one golden record per subject.
//! Records with a valid identifier merge on it; a person record whose ID
//! number fails validation is linked to one subject by the model in
//! [`super::link`], sent to review, or quarantined. Two different valid ID
//! numbers are never merged automatically (architecture invariant 5): only
//! a steward's merge does that. Per field, the authoritative agency's value
//! wins, then the most recent, over every value the subject's records give;
//! a value from another agency that disagrees with the winner becomes a
//! data-quality finding. Subject ids are stable: a key seen before keeps
//! its id, and a merged id redirects.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};

use super::link::{self, Band, LEVELS, Model, NameForms, NameLevel};
use super::{
    COL_KEY, COL_SUBJECT_ID, QuarantineEntry, SUFFIX_AS_OF, SUFFIX_RAW, SUFFIX_RECORD,
    SUFFIX_SOURCE, normalise,
};
use crate::catalog::{Catalog, Field, FieldKind, SubjectKind};

/// Rows per golden batch.
const GOLDEN_BATCH_ROWS: usize = 65_536;

/// The partition of a subject key among `buckets`: FNV-1a, so that it is
/// the same in every build and on every platform (a stored table's
/// partitions outlive the binary that wrote them).
pub fn bucket_of(key: &str, buckets: u32) -> u32 {
    (link::fnv1a(key) % u64::from(buckets.max(1))) as u32
}

/// Columns of the resolve state (one row per record, see
/// [`Golden::state`]) besides the per-field value and raw value.
pub const STATE_SOURCE: &str = "source";
pub const STATE_AGENCY: &str = "agency";
pub const STATE_RECORD: &str = "record_id";
pub const STATE_AS_OF: &str = "as_of";
pub const STATE_POSITION: &str = "position";
pub const STATE_LINK: &str = "link";
pub const STATE_WRITTEN_ID: &str = "written_id";
pub const STATE_PROBLEM: &str = "problem";

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

/// A record whose ID number failed validation and whose best candidate
/// subject is neither certain nor unlikely: a steward decides.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewItem {
    pub source: String,
    pub agency: String,
    pub record_id: String,
    /// The ID number as the record wrote it.
    pub written_id: String,
    pub name: String,
    pub subject_id: String,
    pub subject_name: String,
    pub probability: f64,
    pub evidence: String,
    /// Candidates the record had in all.
    pub candidates: usize,
}

/// A steward's decision about a record (`sharebroker review`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Link the record to this subject.
    Link(String),
    /// Never link the record automatically (a split, when it was linked).
    Reject,
}

/// The stewards' standing decisions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decisions {
    /// About records, by (source, record id).
    pub records: HashMap<(String, String), Decision>,
    /// Merged subjects: subject id → the subject id it redirects to. Only
    /// a steward merges two subjects (two valid identifiers of one
    /// person); the merged id stays reserved and redirects.
    pub merges: HashMap<String, String>,
}

impl Decisions {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id a subject id stands for now, following merges.
    pub fn resolve_id<'a>(&'a self, id: &'a str) -> &'a str {
        let mut at = id;
        // A chain can't be longer than the merges; a cycle (refused when
        // deciding) stops there too.
        for _ in 0..=self.merges.len() {
            match self.merges.get(at) {
                Some(next) => at = next,
                None => return at,
            }
        }
        at
    }
}

/// Where a record went: its subject, and how it got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A valid identifier.
    Exact,
    /// Linked by the probabilistic model.
    Probable,
    /// Linked by a steward.
    Steward,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Exact => "exact",
            LinkKind::Probable => "probable",
            LinkKind::Steward => "steward",
        }
    }
}

/// One record's outcome: (source, record id, subject id or none, how).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLink {
    pub source: String,
    pub record_id: String,
    pub subject_id: Option<String>,
    pub kind: Option<LinkKind>,
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

    /// The next number `id_for` gives a new subject of `kind`.
    pub fn next_number(&self, kind: SubjectKind) -> u64 {
        self.next.get(&kind).copied().unwrap_or(1)
    }

    /// Never give a new subject of `kind` a number below `next` (a
    /// registry loaded in part still hands out only unused ids).
    pub fn reserve(&mut self, kind: SubjectKind, next: u64) {
        let n = self.next.entry(kind).or_insert(1);
        *n = (*n).max(next);
    }

    /// Whether `key` of `kind` was ever given an id.
    pub fn contains(&self, kind: SubjectKind, key: &str) -> bool {
        self.ids.contains_key(&(kind, key.to_string()))
    }

    /// The id of `key` of `kind`, if it was ever given one.
    pub fn id_of(&self, kind: SubjectKind, key: &str) -> Option<&str> {
        self.ids.get(&(kind, key.to_string())).map(String::as_str)
    }

    /// Keep only the keys in these of `buckets` buckets.
    pub fn retain_buckets(&mut self, buckets: u32, keep: &std::collections::HashSet<u32>) {
        self.ids
            .retain(|(_, key), _| keep.contains(&bucket_of(key, buckets)));
    }

    /// The ids of the registry, whatever their kind.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.ids.values().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether `id` was ever handed out.
    pub fn has_id(&self, id: &str) -> bool {
        self.ids.values().any(|v| v == id)
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
        Self::batch_of(&rows)
    }

    /// The registry as batches by the bucket of each key, sorted within a
    /// bucket.
    pub fn to_partitions(&self, buckets: u32) -> Vec<(u32, RecordBatch)> {
        let mut rows: Vec<(u32, &str, &str, &str)> = self
            .ids
            .iter()
            .map(|((k, key), id)| {
                (
                    bucket_of(key, buckets),
                    k.as_str(),
                    key.as_str(),
                    id.as_str(),
                )
            })
            .collect();
        rows.sort_unstable();
        rows.chunk_by(|a, b| a.0 == b.0)
            .map(|run| {
                let rows: Vec<(&str, &str, &str)> = run.iter().map(|r| (r.1, r.2, r.3)).collect();
                (run[0].0, Self::batch_of(&rows))
            })
            .collect()
    }

    fn batch_of(rows: &[(&str, &str, &str)]) -> RecordBatch {
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
                crate::store::column::<StringArray>(b, name)
                    .map_err(|e| format!("subject registry has {e}"))
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

/// The golden table of one subject kind, and what resolving it found.
pub struct Golden {
    pub kind: SubjectKind,
    pub batches: Vec<RecordBatch>,
    pub findings: Vec<Finding>,
    pub review: Vec<ReviewItem>,
    /// Records that could not be linked to any subject.
    pub quarantine: Vec<QuarantineEntry>,
    /// Every record's subject, in the order records were added.
    pub links: Vec<RecordLink>,
    pub subjects: usize,
    pub new_subjects: usize,
    /// Records linked by the probabilistic model / by a steward.
    pub probable_links: usize,
    pub steward_links: usize,
    /// The linking model (fitted, or the one given by
    /// [`Resolver::use_model`]), when there was anything to link or
    /// [`Resolver::keep_model`] asked for it.
    pub model: Option<Model>,
    /// With partitions: each golden batch's partition (the bucket of its
    /// subjects' keys); empty otherwise.
    pub partitions: Vec<u32>,
    /// With partitions: every record as normalised, the subject key it
    /// belongs to and how it was linked, by partition: the bucket of its
    /// key, or the extra partition `buckets` for the records without a
    /// valid identifier. An incremental resolve re-reads only the
    /// partitions a change touches, instead of normalising every record.
    pub state: Vec<(u32, RecordBatch)>,
    /// With partitions: the subjects (not counting merged keys) per bucket.
    pub bucket_subjects: Vec<u64>,
}

impl Golden {
    /// The store table name for a subject kind.
    pub fn table(kind: SubjectKind) -> &'static str {
        kind.as_str()
    }
}

/// Where a record came from and when; shared by all its values.
struct RecordMeta {
    agency: u16,
    source: u16,
    record: Box<str>,
    as_of: Box<str>,
}

/// One value a record gives for a field.
#[derive(Clone)]
struct Cand {
    field: u16,
    rec: u32,
    value: Box<str>,
    /// `None` when the raw value is the normalised one.
    raw: Option<Box<str>>,
}

impl Cand {
    fn raw(&self) -> &str {
        self.raw.as_deref().unwrap_or(&self.value)
    }
}

/// A record without a valid identifier, waiting to be linked.
struct Unkeyed {
    rec: u32,
    position: u64,
    written_id: String,
    problem: String,
    values: Vec<Cand>,
}

/// Linked-by-ID name pairs kept to learn `m` (enough for its four shares).
const TRUE_PAIR_SAMPLE: u64 = 200_000;
/// Subjects whose neighbourhood is searched to measure the density `E`.
const DENSITY_SAMPLE: usize = 20_000;

pub struct Resolver<'c> {
    kind: SubjectKind,
    fields: Vec<&'c Field>,
    field_index: HashMap<&'c str, u16>,
    /// The field records are compared on when linking: the kind's first
    /// person-name field in catalogue order (`population.name`).
    name_field: Option<u16>,
    agencies: Vec<String>,
    sources: Vec<String>,
    records: Vec<RecordMeta>,
    index: HashMap<Box<str>, u32>,
    keys: Vec<Box<str>>,
    cands: Vec<Vec<Cand>>,
    /// Each record's subject (index into `keys`), `u32::MAX` if none yet.
    record_subject: Vec<u32>,
    /// Where each linked record's values sit in its subject's `cands`
    /// (start, length), until steward merges move them.
    rec_span: Vec<(u32, u32)>,
    record_kind: Vec<Option<LinkKind>>,
    unkeyed: Vec<Unkeyed>,
    true_pairs: [u64; LEVELS],
    /// A model to link with instead of fitting one (an incremental
    /// resolve scores with the model of the last full one).
    model: Option<Model>,
    /// Fit the model even with nothing to link, to store it.
    keep_model: bool,
}

fn intern(list: &mut Vec<String>, s: &str) -> u16 {
    match list.iter().position(|a| a == s) {
        Some(i) => i as u16,
        None => {
            list.push(s.to_string());
            (list.len() - 1) as u16
        }
    }
}

const NONE: u32 = u32::MAX;

impl<'c> Resolver<'c> {
    pub fn new(catalog: &'c Catalog, kind: SubjectKind) -> Self {
        let fields: Vec<&Field> = catalog.fields_of_kind(kind).collect();
        let field_index = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.qualified.as_str(), i as u16))
            .collect();
        let name_field = (kind == SubjectKind::Person)
            .then(|| fields.iter().position(|f| f.kind == FieldKind::PersonName))
            .flatten()
            .map(|i| i as u16);
        Resolver {
            kind,
            fields,
            field_index,
            name_field,
            agencies: Vec::new(),
            sources: Vec::new(),
            records: Vec::new(),
            index: HashMap::new(),
            keys: Vec::new(),
            cands: Vec::new(),
            record_subject: Vec::new(),
            rec_span: Vec::new(),
            record_kind: Vec::new(),
            unkeyed: Vec::new(),
            true_pairs: [0; LEVELS],
            model: None,
            keep_model: false,
        }
    }

    pub fn kind(&self) -> SubjectKind {
        self.kind
    }

    /// Whether records without a valid identifier can be linked
    /// probabilistically (persons, by ID number and name).
    pub fn links_unkeyed(&self) -> bool {
        self.name_field.is_some()
    }

    fn record(&mut self, source: &str, agency: &str, record: &str, as_of: &str) -> u32 {
        let meta = RecordMeta {
            agency: intern(&mut self.agencies, agency),
            source: intern(&mut self.sources, source),
            record: record.into(),
            as_of: as_of.into(),
        };
        self.records.push(meta);
        self.record_subject.push(NONE);
        self.rec_span.push((0, 0));
        self.record_kind.push(None);
        (self.records.len() - 1) as u32
    }

    fn cands_of(&self, rec: u32, values: &[(&Field, String, &str)]) -> Vec<Cand> {
        values
            .iter()
            .filter_map(|(field, value, raw)| {
                let &f = self.field_index.get(field.qualified.as_str())?;
                Some(Cand {
                    field: f,
                    rec,
                    raw: (*raw != value.as_str()).then(|| (*raw).into()),
                    value: value.as_str().into(),
                })
            })
            .collect()
    }

    /// Add one normalised record with a valid identifier `key`:
    /// (field, normalised value, raw value).
    pub fn add(
        &mut self,
        key: &str,
        source: &str,
        agency: &str,
        record: &str,
        as_of: &str,
        values: &[(&Field, String, &str)],
    ) {
        self.add_linked(key, LinkKind::Exact, source, agency, record, as_of, values);
    }

    /// Add a record to the subject of `key` as linked earlier by `kind`
    /// (an incremental resolve re-adding a record that the model or a
    /// steward linked without a valid identifier of its own).
    #[allow(clippy::too_many_arguments)]
    pub fn add_linked(
        &mut self,
        key: &str,
        kind: LinkKind,
        source: &str,
        agency: &str,
        record: &str,
        as_of: &str,
        values: &[(&Field, String, &str)],
    ) {
        let rec = self.record(source, agency, record, as_of);
        let cands = self.cands_of(rec, values);
        let subject = match self.index.get(key) {
            Some(&s) => s,
            None => {
                let s = self.keys.len() as u32;
                self.keys.push(key.into());
                self.index.insert(key.into(), s);
                self.cands.push(Vec::new());
                s
            }
        };
        self.link(rec, subject, kind, cands);
    }

    /// Add a record whose identifier failed validation (`problem` says
    /// why); it is linked, sent to review or quarantined in `finish`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_unkeyed(
        &mut self,
        source: &str,
        agency: &str,
        record: &str,
        as_of: &str,
        position: u64,
        written_id: &str,
        problem: &str,
        values: &[(&Field, String, &str)],
    ) {
        let rec = self.record(source, agency, record, as_of);
        let values = self.cands_of(rec, values);
        self.unkeyed.push(Unkeyed {
            rec,
            position,
            written_id: written_id.to_string(),
            problem: problem.to_string(),
            values,
        });
    }

    fn link(&mut self, rec: u32, subject: u32, kind: LinkKind, cands: Vec<Cand>) {
        self.record_subject[rec as usize] = subject;
        self.record_kind[rec as usize] = Some(kind);
        let slot = &mut self.cands[subject as usize];
        // Names that a valid ID number links teach the model what a true
        // match's names look like.
        if kind == LinkKind::Exact
            && let Some(nf) = self.name_field
            && self.true_pairs.iter().sum::<u64>() < TRUE_PAIR_SAMPLE
            && let Some(new) = cands.iter().find(|c| c.field == nf)
            && let Some(old) = slot.iter().find(|c| c.field == nf)
            && self.records[old.rec as usize].agency != self.records[rec as usize].agency
        {
            let level = link::compare(&NameForms::of(&old.value), &NameForms::of(&new.value));
            self.true_pairs[level as usize] += 1;
        }
        self.rec_span[rec as usize] = (slot.len() as u32, cands.len() as u32);
        slot.extend(cands);
    }

    /// Whether `a` outranks `b` for field `f`: authority first, then the
    /// later as-of time, then the larger record id (numbers compare as
    /// numbers: shorter is smaller), then the source's name: a total order,
    /// so the winner never depends on the order records were added in.
    fn outranks(&self, f: u16, a: &Cand, b: &Cand) -> bool {
        let authority = &self.fields[f as usize].authority;
        let rank = |c: &Cand| {
            let r = &self.records[c.rec as usize];
            (
                self.agencies[r.agency as usize] == *authority,
                &*r.as_of,
                r.record.len(),
                &*r.record,
                &self.sources[r.source as usize],
            )
        };
        rank(a) > rank(b)
    }

    /// The winner among the values of records linked by their own valid
    /// identifier: what the linking model compares names with, so that a
    /// record's link never depends on which other unkeyed records were
    /// linked before it.
    fn keyed_winner<'a>(&self, cands: &'a [Cand], f: u16) -> Option<&'a Cand> {
        cands
            .iter()
            .filter(|c| c.field == f && self.record_kind[c.rec as usize] == Some(LinkKind::Exact))
            .reduce(|best, c| if self.outranks(f, c, best) { c } else { best })
    }

    /// Link the records without a valid identifier: steward decisions
    /// first, then the model.
    fn link_unkeyed(
        &mut self,
        ids: &[String],
        decisions: &Decisions,
        alias: &[u32],
    ) -> (Vec<ReviewItem>, Vec<QuarantineEntry>, Option<Model>) {
        let mut review = Vec::new();
        let mut quarantine = Vec::new();
        let unkeyed = std::mem::take(&mut self.unkeyed);
        if unkeyed.is_empty() {
            return (review, quarantine, None);
        }
        let model = match self.model.take() {
            Some(m) => Some(m),
            None => self.name_field.map(|nf| self.fit(nf)),
        };
        let by_id: HashMap<&str, u32> = if decisions.records.is_empty() {
            HashMap::new()
        } else {
            let wanted: std::collections::HashSet<&str> = decisions
                .records
                .values()
                .filter_map(|d| match d {
                    Decision::Link(id) => Some(decisions.resolve_id(id)),
                    Decision::Reject => None,
                })
                .collect();
            ids.iter()
                .enumerate()
                .filter(|(_, id)| wanted.contains(id.as_str()))
                .map(|(i, id)| (id.as_str(), i as u32))
                .collect()
        };
        for u in unkeyed {
            let meta = &self.records[u.rec as usize];
            let source = self.sources[meta.source as usize].clone();
            let agency = self.agencies[meta.agency as usize].clone();
            let record_id = meta.record.to_string();
            let quarantined = |reason: String| QuarantineEntry {
                source: source.clone(),
                agency: agency.clone(),
                position: u.position,
                record_id: record_id.clone(),
                field: String::new(),
                reason,
                raw: u.written_id.clone(),
            };
            match decisions.records.get(&(source.clone(), record_id.clone())) {
                Some(Decision::Link(id)) => {
                    let id = decisions.resolve_id(id);
                    if let Some(&s) = by_id.get(id) {
                        self.link(u.rec, s, LinkKind::Steward, u.values);
                    } else {
                        quarantine.push(quarantined(format!(
                            "{}; a steward linked it to {id}, which has no records now",
                            u.problem
                        )));
                    }
                    continue;
                }
                Some(Decision::Reject) => {
                    quarantine.push(quarantined(format!(
                        "{}; a steward decided it matches no subject",
                        u.problem
                    )));
                    continue;
                }
                None => {}
            }
            let (Some(model), Some(nf)) = (&model, self.name_field) else {
                quarantine.push(quarantined(format!(
                    "{}; records of this kind without a valid identifier are not linked",
                    u.problem
                )));
                continue;
            };
            let candidates: Vec<u32> = normalise::id_digits(&u.written_id)
                .map(|d| link::id_neighbours(&d))
                .unwrap_or_default()
                .iter()
                .filter_map(|k| self.index.get(k.as_str()).map(|&s| alias[s as usize]))
                .collect::<std::collections::BTreeSet<u32>>()
                .into_iter()
                .collect::<Vec<u32>>();
            // In key order: candidates that score alike are offered in the
            // same order however the records were added.
            let mut candidates = candidates;
            candidates.sort_unstable_by(|a, b| self.keys[*a as usize].cmp(&self.keys[*b as usize]));
            if candidates.is_empty() {
                quarantine.push(quarantined(format!(
                    "{}; no subject's ID number is one edit away",
                    u.problem
                )));
                continue;
            }
            let record_name = u
                .values
                .iter()
                .find(|c| c.field == nf)
                .map(|c| NameForms::of(&c.value));
            let cand_names: Vec<Option<(&Cand, NameForms)>> = candidates
                .iter()
                .map(|&s| {
                    self.keyed_winner(&self.cands[s as usize], nf)
                        .map(|c| (c, NameForms::of(&c.value)))
                })
                .collect();
            let forms: Vec<Option<&NameForms>> = cand_names
                .iter()
                .map(|c| c.as_ref().map(|(_, f)| f))
                .collect();
            let scored = link::score(model, record_name.as_ref(), &forms);
            let best = &scored[0];
            let subject = candidates[best.candidate];
            let evidence = format!(
                "ID number one edit away, {}",
                best.level.map_or("no name to compare", NameLevel::as_str)
            );
            match link::band(best.probability) {
                Band::Link => self.link(u.rec, subject, LinkKind::Probable, u.values),
                Band::Review => review.push(ReviewItem {
                    source,
                    agency,
                    record_id,
                    written_id: u.written_id,
                    name: u
                        .values
                        .iter()
                        .find(|c| c.field == nf)
                        .map(|c| c.value.to_string())
                        .unwrap_or_default(),
                    subject_id: ids[subject as usize].clone(),
                    subject_name: cand_names[best.candidate]
                        .as_ref()
                        .map(|(c, _)| c.value.to_string())
                        .unwrap_or_default(),
                    probability: best.probability,
                    evidence,
                    candidates: candidates.len(),
                }),
                Band::NoLink => quarantine.push(quarantined(format!(
                    "{}; no confident match (best candidate {} at p={:.3}: {evidence})",
                    u.problem, ids[subject as usize], best.probability
                ))),
            }
        }
        (review, quarantine, model)
    }

    /// Fit the linking model on the subjects added so far.
    fn fit(&self, nf: u16) -> Model {
        let names: Vec<NameForms> = self
            .cands
            .iter()
            .filter_map(|c| self.keyed_winner(c, nf))
            .map(|c| NameForms::of(&c.value))
            .collect();
        let step = (self.keys.len() / DENSITY_SAMPLE).max(1);
        let (mut sampled, mut neighbours) = (0usize, 0usize);
        for key in self.keys.iter().step_by(step) {
            sampled += 1;
            neighbours += link::id_neighbours(key)
                .iter()
                .filter(|k| self.index.contains_key(k.as_str()))
                .count();
        }
        let density = if sampled == 0 {
            0.0
        } else {
            neighbours as f64 / sampled as f64
        };
        Model::fit(&names, self.true_pairs, density)
    }

    /// The keys of the subjects added so far.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &**k)
    }

    /// Fit the linking model in `finish` even when no record needs it, so
    /// that it can be stored for incremental resolves ([`Golden::model`]).
    pub fn keep_model(&mut self) {
        self.keep_model = true;
    }

    /// Link the records without a valid identifier with `model` instead of
    /// one fitted on the subjects added.
    pub fn use_model(&mut self, model: Model) {
        self.model = Some(model);
    }

    /// The written ID numbers of the records without a valid identifier
    /// added so far.
    pub fn unkeyed_ids(&self) -> impl Iterator<Item = &str> {
        self.unkeyed.iter().map(|u| u.written_id.as_str())
    }

    /// Link what can be linked, assign subject ids from `registry` (adding
    /// the new ones to it) and build the golden table.
    pub fn finish(self, registry: &mut SubjectRegistry, decisions: &Decisions) -> Golden {
        self.finish_with(registry, decisions, None)
    }

    /// [`Resolver::finish`]; with `buckets`, the golden rows and the
    /// resolve state are grouped in that many partitions by key (see
    /// [`Golden::state`]).
    pub fn finish_with(
        mut self,
        registry: &mut SubjectRegistry,
        decisions: &Decisions,
        buckets: Option<u32>,
    ) -> Golden {
        let buckets = buckets.map(|n| n.max(1));
        // Subject ids in key order (within a bucket, when partitioned).
        let bucket: Vec<u32> = match buckets {
            Some(n) => self.keys.iter().map(|k| bucket_of(k, n)).collect(),
            None => Vec::new(),
        };
        let bucket_of_subject = |s: u32| bucket.get(s as usize).copied().unwrap_or(0);
        let mut order: Vec<u32> = (0..self.keys.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            (bucket_of_subject(a), &self.keys[a as usize])
                .cmp(&(bucket_of_subject(b), &self.keys[b as usize]))
        });
        let mut new_subjects = 0;
        let mut ids = vec![String::new(); self.keys.len()];
        for &s in &order {
            let (id, new) = registry.id_for(self.kind, &self.keys[s as usize]);
            new_subjects += usize::from(new);
            ids[s as usize] = id;
        }
        // The records linked by their own valid identifier, by bucket,
        // before steward merges move their values.
        let mut state = Vec::new();
        let mut unkeyed_state = Vec::new();
        if let Some(n) = buckets {
            let mut by_bucket: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
            for (rec, (&s, &kind)) in self
                .record_subject
                .iter()
                .zip(&self.record_kind)
                .enumerate()
            {
                if s != NONE && kind == Some(LinkKind::Exact) {
                    by_bucket[bucket[s as usize] as usize].push(rec as u32);
                }
            }
            for (b, recs) in by_bucket.iter().enumerate() {
                for chunk in recs.chunks(GOLDEN_BATCH_ROWS) {
                    let rows: Vec<StateRow> = chunk
                        .iter()
                        .map(|&rec| {
                            let s = self.record_subject[rec as usize];
                            let (start, len) = self.rec_span[rec as usize];
                            StateRow {
                                rec,
                                key: Some(&self.keys[s as usize]),
                                link: Some(LinkKind::Exact),
                                unkeyed: None,
                                values: &self.cands[s as usize]
                                    [start as usize..(start + len) as usize],
                            }
                        })
                        .collect();
                    state.push((b as u32, self.state_batch(&rows)));
                }
            }
            // The records without one: their values now, their links after
            // linking.
            unkeyed_state = self
                .unkeyed
                .iter()
                .map(|u| {
                    (
                        u.rec,
                        u.position,
                        u.written_id.clone(),
                        u.problem.clone(),
                        u.values.iter().map(Cand::clone).collect::<Vec<_>>(),
                    )
                })
                .collect::<Vec<_>>();
        }
        // Steward merges: a merged subject's records join the one it
        // redirects to, and its key serves that subject's record.
        let mut alias: Vec<u32> = (0..self.keys.len() as u32).collect();
        if !decisions.merges.is_empty() {
            let by_id: HashMap<&str, u32> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), i as u32))
                .collect();
            for (s, id) in ids.iter().enumerate() {
                let target = decisions.resolve_id(id);
                if target != id
                    && let Some(&t) = by_id.get(target)
                {
                    alias[s] = t;
                }
            }
            for (s, &t) in alias.iter().enumerate() {
                let t = t as usize;
                if t != s {
                    let moved = std::mem::take(&mut self.cands[s]);
                    self.cands[t].extend(moved);
                }
            }
            for r in self.record_subject.iter_mut() {
                if *r != NONE {
                    *r = alias[*r as usize];
                }
            }
        }
        let (review, quarantine, mut model) = self.link_unkeyed(&ids, decisions, &alias);
        if model.is_none()
            && self.keep_model
            && let Some(nf) = self.name_field
        {
            model = Some(self.fit(nf));
        }
        if let Some(n) = buckets
            && !unkeyed_state.is_empty()
        {
            let rows: Vec<StateRow> = unkeyed_state
                .iter()
                .map(|(rec, position, written, problem, values)| {
                    let s = self.record_subject[*rec as usize];
                    StateRow {
                        rec: *rec,
                        key: (s != NONE).then(|| &*self.keys[s as usize]),
                        link: self.record_kind[*rec as usize],
                        unkeyed: Some((*position, written, problem)),
                        values,
                    }
                })
                .collect();
            for chunk in rows.chunks(GOLDEN_BATCH_ROWS) {
                state.push((n, self.state_batch(chunk)));
            }
        }
        let mut bucket_subjects = vec![0u64; buckets.unwrap_or(0) as usize];
        if buckets.is_some() {
            for (s, &t) in alias.iter().enumerate() {
                if t as usize == s {
                    bucket_subjects[bucket[s] as usize] += 1;
                }
            }
        }

        let schema = golden_schema(&self.fields);
        let mut batches = Vec::new();
        let mut partitions = Vec::new();
        let mut findings = Vec::new();
        let nfields = self.fields.len();
        // Chunks that never straddle two buckets.
        let chunks = order
            .chunk_by(|&a, &b| bucket_of_subject(a) == bucket_of_subject(b))
            .flat_map(|run| run.chunks(GOLDEN_BATCH_ROWS));
        for chunk in chunks {
            if buckets.is_some() {
                partitions.push(bucket_of_subject(chunk[0]));
            }
            // Per subject of the chunk, each field's winner.
            let winners: Vec<Vec<Option<&Cand>>> = chunk
                .iter()
                .map(|&s| {
                    let primary = alias[s as usize] == s;
                    let s = alias[s as usize];
                    let cands = &self.cands[s as usize];
                    let mut w: Vec<Option<&Cand>> = vec![None; nfields];
                    for c in cands {
                        let slot = &mut w[c.field as usize];
                        if slot.is_none_or(|best| self.outranks(c.field, c, best)) {
                            *slot = Some(c);
                        }
                    }
                    // A value from another agency that disagrees with the
                    // final winner is a finding for the field's owner
                    // (once per subject, not again under a merged key).
                    for c in cands.iter().filter(|_| primary) {
                        let Some(kept) = w[c.field as usize] else {
                            continue;
                        };
                        let (kr, cr) = (
                            &self.records[kept.rec as usize],
                            &self.records[c.rec as usize],
                        );
                        if kr.agency != cr.agency && kept.value != c.value {
                            let field = self.fields[c.field as usize];
                            findings.push(Finding {
                                subject_id: ids[s as usize].clone(),
                                field: field.qualified.clone(),
                                owner: field.authority.clone(),
                                kept_value: kept.value.to_string(),
                                kept_agency: self.agencies[kr.agency as usize].clone(),
                                kept_record: kr.record.to_string(),
                                other_value: c.value.to_string(),
                                other_agency: self.agencies[cr.agency as usize].clone(),
                                other_record: cr.record.to_string(),
                            });
                        }
                    }
                    w
                })
                .collect();
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
            columns.push(text_column(
                chunk
                    .iter()
                    .map(|&s| Some(ids[alias[s as usize] as usize].as_str())),
            ));
            columns.push(text_column(
                chunk.iter().map(|&s| Some(&*self.keys[s as usize])),
            ));
            for f in 0..nfields {
                let meta = |c: &Cand| &self.records[c.rec as usize];
                columns.push(text_column(winners.iter().map(|w| w[f].map(|c| &*c.value))));
                columns.push(text_column(winners.iter().map(|w| w[f].map(Cand::raw))));
                columns.push(text_column(winners.iter().map(|w| {
                    w[f].map(|c| self.agencies[meta(c).agency as usize].as_str())
                })));
                columns.push(text_column(
                    winners.iter().map(|w| w[f].map(|c| &*meta(c).record)),
                ));
                columns.push(text_column(
                    winners.iter().map(|w| w[f].map(|c| &*meta(c).as_of)),
                ));
            }
            batches.push(
                RecordBatch::try_new(schema.clone(), columns)
                    .expect("columns match the golden schema"),
            );
        }
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema.clone()));
        }
        let links = self
            .records
            .iter()
            .zip(self.record_subject.iter().zip(&self.record_kind))
            .map(|(m, (&s, &kind))| RecordLink {
                source: self.sources[m.source as usize].clone(),
                record_id: m.record.to_string(),
                subject_id: (s != NONE).then(|| ids[s as usize].clone()),
                kind,
            })
            .collect();
        let count = |k: LinkKind| self.record_kind.iter().filter(|&&x| x == Some(k)).count();
        Golden {
            kind: self.kind,
            batches,
            findings,
            review,
            quarantine,
            links,
            subjects: alias
                .iter()
                .enumerate()
                .filter(|&(s, &t)| s == t as usize)
                .count(),
            new_subjects,
            probable_links: count(LinkKind::Probable),
            steward_links: count(LinkKind::Steward),
            model,
            partitions,
            state,
            bucket_subjects,
        }
    }

    /// Resolve-state rows as one batch (schema [`state_schema`]).
    fn state_batch(&self, rows: &[StateRow]) -> RecordBatch {
        let meta = |r: &StateRow| &self.records[r.rec as usize];
        let mut columns: Vec<ArrayRef> = vec![
            text_column(
                rows.iter()
                    .map(|r| Some(self.sources[meta(r).source as usize].as_str())),
            ),
            text_column(
                rows.iter()
                    .map(|r| Some(self.agencies[meta(r).agency as usize].as_str())),
            ),
            text_column(rows.iter().map(|r| Some(&*meta(r).record))),
            text_column(rows.iter().map(|r| Some(&*meta(r).as_of))),
            Arc::new(
                rows.iter()
                    .map(|r| r.unkeyed.map(|u| u.0))
                    .collect::<UInt64Array>(),
            ),
            text_column(rows.iter().map(|r| r.key)),
            text_column(rows.iter().map(|r| r.link.map(LinkKind::as_str))),
            text_column(rows.iter().map(|r| r.unkeyed.map(|u| u.1))),
            text_column(rows.iter().map(|r| r.unkeyed.map(|u| u.2))),
        ];
        for f in 0..self.fields.len() as u16 {
            fn of<'r>(r: &StateRow<'r>, f: u16) -> Option<&'r Cand> {
                r.values.iter().find(|c| c.field == f)
            }
            columns.push(text_column(
                rows.iter().map(|r| of(r, f).map(|c| &*c.value)),
            ));
            columns.push(text_column(
                rows.iter().map(|r| of(r, f).and_then(|c| c.raw.as_deref())),
            ));
        }
        RecordBatch::try_new(state_schema(&self.fields), columns)
            .expect("columns match the state schema")
    }

    /// Add the records of resolve-state rows (see [`Golden::state`]) as
    /// `use_row` says (given source, record id and the subject key the
    /// record belongs to, if any): as linked before (by its own identifier,
    /// the model or a steward), as a record without a valid identifier to
    /// be linked again, or not at all. A record that was left unlinked is
    /// added only to be linked again.
    pub fn add_state(
        &mut self,
        batch: &RecordBatch,
        use_row: &mut dyn FnMut(&str, &str, Option<&str>) -> StateUse,
    ) -> Result<(), String> {
        let text = |name: &str| {
            crate::store::column::<StringArray>(batch, name)
                .map_err(|e| format!("resolve state has {e}"))
        };
        let (sources, agencies, records, as_ofs, keys, links) = (
            text(STATE_SOURCE)?,
            text(STATE_AGENCY)?,
            text(STATE_RECORD)?,
            text(STATE_AS_OF)?,
            text(COL_KEY)?,
            text(STATE_LINK)?,
        );
        let (written, problems) = (text(STATE_WRITTEN_ID)?, text(STATE_PROBLEM)?);
        let positions = crate::store::column::<UInt64Array>(batch, STATE_POSITION)
            .map_err(|e| format!("resolve state has {e}"))?;
        let fields = self.fields.clone();
        let columns = fields
            .iter()
            .map(|f| {
                Ok((
                    *f,
                    text(&f.qualified)?,
                    text(&format!("{}{SUFFIX_RAW}", f.qualified))?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut values: Vec<(&Field, String, &str)> = Vec::with_capacity(columns.len());
        for row in 0..batch.num_rows() {
            let (source, record) = (sources.value(row), records.value(row));
            let key = (!keys.is_null(row) && !links.is_null(row)).then(|| keys.value(row));
            let how = use_row(source, record, key);
            if how == StateUse::Skip || (how == StateUse::Keep && key.is_none()) {
                continue;
            }
            let relink = how == StateUse::Relink;
            if relink && (written.is_null(row) || problems.is_null(row)) {
                return Err(format!(
                    "record `{record}` of `{source}` has a valid identifier and cannot be linked again"
                ));
            }
            let kind = match (relink, key.map(|_| links.value(row))) {
                (true, _) => None,
                (false, Some("exact")) => Some(LinkKind::Exact),
                (false, Some("probable")) => Some(LinkKind::Probable),
                (false, Some("steward")) => Some(LinkKind::Steward),
                (false, other) => {
                    return Err(format!(
                        "resolve state has an unknown link kind `{other:?}`"
                    ));
                }
            };
            values.clear();
            for (f, value, raw) in &columns {
                if value.is_null(row) {
                    continue;
                }
                let v = value.value(row);
                values.push((
                    *f,
                    v.to_string(),
                    if raw.is_null(row) { v } else { raw.value(row) },
                ));
            }
            match (kind, key) {
                (Some(kind), Some(key)) => self.add_linked(
                    key,
                    kind,
                    source,
                    agencies.value(row),
                    record,
                    as_ofs.value(row),
                    &values,
                ),
                _ => self.add_unkeyed(
                    source,
                    agencies.value(row),
                    record,
                    as_ofs.value(row),
                    if positions.is_null(row) {
                        0
                    } else {
                        positions.value(row)
                    },
                    written.value(row),
                    problems.value(row),
                    &values,
                ),
            }
        }
        Ok(())
    }
}

/// How [`Resolver::add_state`] adds a record of the resolve state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateUse {
    /// As it was linked (not at all if it was not).
    Keep,
    /// As a record without a valid identifier, to be linked again.
    Relink,
    Skip,
}

/// One record in the resolve state.
struct StateRow<'a> {
    rec: u32,
    /// The subject key it belongs to, if linked.
    key: Option<&'a str>,
    link: Option<LinkKind>,
    /// For a record without a valid identifier: its position in the
    /// source, the identifier as written and what is wrong with it.
    unkeyed: Option<(u64, &'a str, &'a str)>,
    values: &'a [Cand],
}

/// Schema of the resolve state: one row per record (see [`Golden::state`]).
pub fn state_schema(fields: &[&Field]) -> SchemaRef {
    let mut cols = vec![
        ArrowField::new(STATE_SOURCE, DataType::Utf8, false),
        ArrowField::new(STATE_AGENCY, DataType::Utf8, false),
        ArrowField::new(STATE_RECORD, DataType::Utf8, false),
        ArrowField::new(STATE_AS_OF, DataType::Utf8, false),
        ArrowField::new(STATE_POSITION, DataType::UInt64, true),
        ArrowField::new(COL_KEY, DataType::Utf8, true),
        ArrowField::new(STATE_LINK, DataType::Utf8, true),
        ArrowField::new(STATE_WRITTEN_ID, DataType::Utf8, true),
        ArrowField::new(STATE_PROBLEM, DataType::Utf8, true),
    ];
    for f in fields {
        for suffix in ["", SUFFIX_RAW] {
            cols.push(ArrowField::new(
                format!("{}{suffix}", f.qualified),
                DataType::Utf8,
                true,
            ));
        }
    }
    Arc::new(Schema::new(cols))
}

/// One text column from optional values.
fn text_column<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
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

/// The columns of the findings table, in [`Finding`]'s field order.
pub const FINDING_COLUMNS: [&str; 9] = [
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

/// The findings of all golden tables as one Arrow batch, for the store.
pub fn findings_batch(findings: &[Finding]) -> RecordBatch {
    let names = FINDING_COLUMNS;
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
            "src",
            "xj-gat",
            "GA1",
            "2020-01-01 00:00:00",
            &[(name, "麦麦提·艾力".into(), "麦麦提·艾力")],
        );
        r.add(
            "650102198506150010",
            "src",
            "xj-mzt",
            "MZ1",
            "2024-01-01 00:00:00",
            &[(name, "买买提·艾力".into(), "买买提.艾力")],
        );
        r.add(
            "11010519491231002X",
            "src",
            "xj-mzt",
            "MZ2",
            "2024-01-01 00:00:00",
            &[(name, "张三".into(), "张三")],
        );
        let g = r.finish(&mut SubjectRegistry::default(), &Decisions::new());
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
                r.add(
                    k,
                    "src",
                    "xj-gat",
                    "1",
                    "",
                    &[(name, "张三".into(), "张三")],
                );
            }
            let g = r.finish(registry, &Decisions::new());
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

    /// A valid ID number with one digit changed (the check no longer fits).
    fn typo(id: &str) -> String {
        let mut b = id.as_bytes().to_vec();
        b[10] = if b[10] == b'9' { b'1' } else { b[10] + 1 };
        let t = String::from_utf8(b).expect("ascii");
        assert!(crate::ingest::normalise::id_number(&t).is_err());
        t
    }

    #[test]
    fn records_with_a_mistyped_id_are_linked_reviewed_or_quarantined() {
        let cat = catalog();
        let name = cat.field("population.name").expect("field").1;
        let status = cat.field("marriage.marital_status").expect("field").1;
        let ids = [
            "650102198506150010",
            "11010519491231002X",
            "650102199001010011",
        ];
        let names = ["买买提·艾力", "张三", "阿依古丽·吐尔逊"];
        // The registry's three persons, in a fresh resolver.
        let registered = || {
            let mut r = Resolver::new(&cat, SubjectKind::Person);
            for (i, (id, n)) in ids.iter().zip(names).enumerate() {
                r.add(
                    id,
                    "gat",
                    "xj-gat",
                    &format!("GA{i}"),
                    "2020-01-01 00:00:00",
                    &[(name, n.into(), n)],
                );
            }
            r
        };
        let mut r = registered();
        let unkeyed = |r: &mut Resolver, rec: &str, written: &str, n: &str| {
            r.add_unkeyed(
                "mzt",
                "xj-mzt",
                rec,
                "2024-01-01 00:00:00",
                7,
                written,
                "checksum",
                &[
                    (name, crate::ingest::normalise::person_name(n), n),
                    (status, "已婚".into(), "结婚"),
                ],
            )
        };
        // Same person, dot variant: linked.
        unkeyed(&mut r, "MZ1", &typo(ids[0]), "买买提.艾力");
        // Another name entirely: a steward decides.
        unkeyed(&mut r, "MZ2", &typo(ids[1]), "李四");
        // Nobody one edit away: quarantined.
        unkeyed(&mut r, "MZ3", "650102200001019999", "王五");
        let g = r.finish(&mut SubjectRegistry::default(), &Decisions::new());
        assert_eq!(g.subjects, 3);
        assert_eq!(g.probable_links, 1);
        let link = |rec: &str| {
            g.links
                .iter()
                .find(|l| l.record_id == rec)
                .expect("link")
                .clone()
        };
        assert_eq!(link("MZ1").kind, Some(LinkKind::Probable));
        assert_eq!(link("MZ1").subject_id, link("GA0").subject_id);
        // Its marriage status is in the subject's golden record.
        let row = (0..3)
            .find(|&i| value(&g, i, "key").as_deref() == Some(ids[0]))
            .expect("row");
        assert_eq!(
            value(&g, row, "marriage.marital_status").as_deref(),
            Some("已婚")
        );
        assert_eq!(
            value(&g, row, "marriage.marital_status#rec").as_deref(),
            Some("MZ1")
        );
        assert_eq!(g.review.len(), 1);
        assert_eq!(g.review[0].record_id, "MZ2");
        assert_eq!(Some(g.review[0].subject_id.clone()), link("GA1").subject_id);
        assert!(g.review[0].probability < link::AUTO_LINK);
        assert_eq!(link("MZ2").subject_id, None);
        assert_eq!(g.quarantine.len(), 1);
        assert_eq!(g.quarantine[0].record_id, "MZ3");
        assert!(
            g.quarantine[0]
                .reason
                .contains("no subject's ID number is one edit away")
        );

        // The steward links MZ2 and rejects MZ1: a split.
        let mut r = registered();
        unkeyed(&mut r, "MZ1", &typo(ids[0]), "买买提.艾力");
        unkeyed(&mut r, "MZ2", &typo(ids[1]), "李四");
        let mut registry = SubjectRegistry::default();
        let p2 = registry.id_for(SubjectKind::Person, ids[1]).0;
        let mut decisions = Decisions::new();
        decisions
            .records
            .insert(("mzt".into(), "MZ2".into()), Decision::Link(p2.clone()));
        decisions
            .records
            .insert(("mzt".into(), "MZ1".into()), Decision::Reject);
        let g = r.finish(&mut registry, &decisions);
        let link = |rec: &str| {
            g.links
                .iter()
                .find(|l| l.record_id == rec)
                .expect("link")
                .clone()
        };
        assert_eq!(link("MZ2").subject_id, Some(p2));
        assert_eq!(link("MZ2").kind, Some(LinkKind::Steward));
        assert_eq!(link("MZ1").subject_id, None);
        assert!(
            g.quarantine
                .iter()
                .any(|q| q.record_id == "MZ1" && q.reason.contains("steward"))
        );
        assert!(g.review.is_empty());
        // The steward-linked name disagrees with the registry's: a finding.
        assert!(
            g.findings
                .iter()
                .any(|f| f.other_record == "MZ2" && f.kept_value == "张三")
        );
    }

    #[test]
    fn findings_compare_with_the_final_winner() {
        let cat = catalog();
        let name = cat.field("population.name").expect("field").1;
        let mut r = Resolver::new(&cat, SubjectKind::Person);
        let key = "650102198506150010";
        // Two lower-ranked agencies agree with each other first; the
        // registry then says otherwise. Both must be findings against it.
        r.add(
            key,
            "mzt",
            "xj-mzt",
            "MZ1",
            "2024-01-01 00:00:00",
            &[(name, "买买提·艾力".into(), "买买提·艾力")],
        );
        r.add(
            key,
            "rst",
            "xj-rst",
            "RS1",
            "2024-02-01 00:00:00",
            &[(name, "买买提·艾力".into(), "买买提·艾力")],
        );
        r.add(
            key,
            "gat",
            "xj-gat",
            "GA1",
            "2020-01-01 00:00:00",
            &[(name, "麦麦提·艾力".into(), "麦麦提·艾力")],
        );
        let g = r.finish(&mut SubjectRegistry::default(), &Decisions::new());
        assert_eq!(
            value(&g, 0, "population.name").as_deref(),
            Some("麦麦提·艾力")
        );
        let mut others: Vec<&str> = g.findings.iter().map(|f| f.other_record.as_str()).collect();
        others.sort_unstable();
        assert_eq!(others, ["MZ1", "RS1"]);
        assert!(g.findings.iter().all(|f| f.kept_record == "GA1"));
    }

    #[test]
    fn a_steward_merge_redirects_and_serves_one_record_under_both_keys() {
        let cat = catalog();
        let name = cat.field("population.name").expect("field").1;
        let status = cat.field("marriage.marital_status").expect("field").1;
        let (a, b) = ("650102198506150010", "11010519491231002X");
        let run = |decisions: &Decisions, registry: &mut SubjectRegistry| {
            let mut r = Resolver::new(&cat, SubjectKind::Person);
            r.add(
                a,
                "gat",
                "xj-gat",
                "GA1",
                "2020-01-01 00:00:00",
                &[(name, "张三".into(), "张三")],
            );
            r.add(
                b,
                "mzt",
                "xj-mzt",
                "MZ1",
                "2024-01-01 00:00:00",
                &[(status, "已婚".into(), "结婚")],
            );
            r.finish(registry, decisions)
        };
        let mut registry = SubjectRegistry::default();
        let g = run(&Decisions::new(), &mut registry);
        assert_eq!(g.subjects, 2);
        let (pa, pb) = (
            registry.id_for(SubjectKind::Person, a).0,
            registry.id_for(SubjectKind::Person, b).0,
        );
        let mut d = Decisions::new();
        d.merges.insert(pb.clone(), pa.clone());
        let g = run(&d, &mut registry);
        assert_eq!(g.subjects, 1);
        // Both keys serve the merged record, under the surviving id.
        for row in 0..2 {
            assert_eq!(value(&g, row, "subject_id"), Some(pa.clone()));
            assert_eq!(value(&g, row, "population.name").as_deref(), Some("张三"));
            assert_eq!(
                value(&g, row, "marriage.marital_status").as_deref(),
                Some("已婚")
            );
        }
        let mz1 = g.links.iter().find(|l| l.record_id == "MZ1").expect("link");
        assert_eq!(mz1.subject_id, Some(pa.clone()));
        // Ids are never reused, and undoing the merge restores both.
        let g = run(&Decisions::new(), &mut registry);
        assert_eq!(g.subjects, 2);
        assert_eq!(g.new_subjects, 0);
        assert_eq!(value(&g, 0, "subject_id"), Some(pb));
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        // Stored partitions outlive the binary: these values never change.
        assert_eq!(bucket_of("", 16), (0xcbf2_9ce4_8422_2325u64 % 16) as u32);
        assert_eq!(bucket_of("650102198506150010", 1), 0);
        let a = bucket_of("650102198506150010", 1024);
        assert_eq!(a, bucket_of("650102198506150010", 1024));
        assert!(a < 1024);
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            seen.insert(bucket_of(&format!("65010219850615{i:04}"), 16));
        }
        assert_eq!(seen.len(), 16, "a thousand keys reach every bucket");
    }

    #[test]
    fn the_resolve_state_resolves_again_to_the_same_golden_rows() {
        let cat = catalog();
        let name = cat.field("population.name").expect("field").1;
        let sex = cat.field("population.sex").expect("field").1;
        let add_all = |r: &mut Resolver| {
            for (i, (key, agency, name_raw)) in [
                ("650102198506150010", "xj-gat", "麦麦提·艾力"),
                ("650102198506150010", "xj-mzt", "买买提.艾力"),
                ("11010519491231002X", "xj-mzt", "张三"),
                ("650102199001010015", "xj-gat", "王芳"),
            ]
            .into_iter()
            .enumerate()
            {
                r.add(
                    key,
                    "src",
                    agency,
                    &format!("R{i}"),
                    "2024-01-01 00:00:00",
                    &[
                        (
                            name,
                            super::super::normalise::person_name(name_raw),
                            name_raw,
                        ),
                        (sex, "男".into(), "1"),
                    ],
                );
            }
        };
        let mut r = Resolver::new(&cat, SubjectKind::Person);
        add_all(&mut r);
        let mut registry = SubjectRegistry::default();
        let g = r.finish_with(&mut registry, &Decisions::new(), Some(4));
        assert_eq!(g.batches.len(), g.partitions.len());
        let rows: usize = g.state.iter().map(|(_, b)| b.num_rows()).sum();
        assert_eq!(rows, 4, "one state row per record");
        assert_eq!(g.bucket_subjects.iter().sum::<u64>(), 3);
        for (p, b) in &g.state {
            let keys = b
                .column_by_name(COL_KEY)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .expect("keys");
            for k in keys.iter() {
                assert_eq!(bucket_of(k.expect("a key"), 4), *p);
            }
        }
        // Fed back, the state gives the same golden rows, ids and findings.
        let mut again = Resolver::new(&cat, SubjectKind::Person);
        for (_, b) in &g.state {
            again
                .add_state(b, &mut |_, _, _| StateUse::Keep)
                .expect("state");
        }
        let g2 = again.finish_with(&mut registry, &Decisions::new(), Some(4));
        assert_eq!(g2.new_subjects, 0);
        assert_eq!(g2.batches, g.batches);
        assert_eq!(g2.partitions, g.partitions);
        assert_eq!(g2.findings, g.findings);
        // And `keep` leaves a record out.
        let mut less = Resolver::new(&cat, SubjectKind::Person);
        for (_, b) in &g.state {
            less.add_state(b, &mut |_, record, _| {
                if record == "R3" {
                    StateUse::Skip
                } else {
                    StateUse::Keep
                }
            })
            .expect("state");
        }
        let g3 = less.finish_with(&mut registry, &Decisions::new(), Some(4));
        assert_eq!(g3.bucket_subjects.iter().sum::<u64>(), 2);
    }
}
