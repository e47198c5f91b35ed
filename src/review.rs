//! Steward review: the queue of records the resolver could neither link
//! nor rule out, the quarantine, and the stewards' decisions. Glue between
//! `ingest` (pure) and the store, used by `sharebroker review` and `pull`.
//!
//! Decisions are kept in the store table `review.decisions`, one row per
//! decision and never rewritten: each version holds every decision ever
//! made, so retention of old versions loses nothing. The latest decision
//! about a record stands; it takes effect at the next resolve (`sharebroker
//! pull`, or `sharebroker review apply` to resolve without pulling).

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field as ArrowField, Schema};

use crate::ingest::resolve::Finding;
use crate::ingest::{Decision, Decisions, QuarantineEntry, ReviewItem};
use crate::store::{StoreError, TableStore};

/// The current review queue, replaced at every resolve.
pub const REVIEW_TABLE: &str = "review";
/// Every steward decision, in the order made.
pub const DECISIONS_TABLE: &str = "review.decisions";

const REVIEW_TEXT: [&str; 8] = [
    "source",
    "agency",
    "record_id",
    "written_id",
    "name",
    "subject_id",
    "subject_name",
    "evidence",
];

/// The review queue as one Arrow batch, for the store.
pub fn review_batch(items: &[ReviewItem]) -> RecordBatch {
    let getters: [fn(&ReviewItem) -> &str; 8] = [
        |r| &r.source,
        |r| &r.agency,
        |r| &r.record_id,
        |r| &r.written_id,
        |r| &r.name,
        |r| &r.subject_id,
        |r| &r.subject_name,
        |r| &r.evidence,
    ];
    let mut fields: Vec<ArrowField> = REVIEW_TEXT
        .iter()
        .map(|n| ArrowField::new(*n, DataType::Utf8, false))
        .collect();
    fields.push(ArrowField::new("candidates", DataType::UInt64, false));
    fields.push(ArrowField::new("probability", DataType::Float64, false));
    let mut columns: Vec<ArrayRef> = getters
        .iter()
        .map(|g| Arc::new(items.iter().map(|r| Some(g(r))).collect::<StringArray>()) as ArrayRef)
        .collect();
    columns.push(Arc::new(
        items
            .iter()
            .map(|r| r.candidates as u64)
            .collect::<UInt64Array>(),
    ));
    columns.push(Arc::new(
        items
            .iter()
            .map(|r| r.probability)
            .collect::<Float64Array>(),
    ));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .expect("columns match the review schema")
}

/// One steward decision as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRow {
    pub source: String,
    pub record_id: String,
    /// `link` or `reject`.
    pub decision: String,
    /// The subject linked to; empty for `reject`.
    pub subject_id: String,
    pub steward: String,
    pub note: String,
    /// RFC 3339, UTC.
    pub decided_at: String,
}

const DECISION_COLUMNS: [&str; 7] = [
    "source",
    "record_id",
    "decision",
    "subject_id",
    "steward",
    "note",
    "decided_at",
];

fn decisions_batch(rows: &[DecisionRow]) -> RecordBatch {
    let getters: [fn(&DecisionRow) -> &str; 7] = [
        |r| &r.source,
        |r| &r.record_id,
        |r| &r.decision,
        |r| &r.subject_id,
        |r| &r.steward,
        |r| &r.note,
        |r| &r.decided_at,
    ];
    let schema = Arc::new(Schema::new(
        DECISION_COLUMNS
            .iter()
            .map(|n| ArrowField::new(*n, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ));
    let columns = getters
        .iter()
        .map(|g| Arc::new(rows.iter().map(|r| Some(g(r))).collect::<StringArray>()) as ArrayRef)
        .collect();
    RecordBatch::try_new(schema, columns).expect("columns match the decisions schema")
}

/// The columns of one batch of a stored review table, as a loader reads
/// them: its text columns by number, any other by name.
struct Columns<'a> {
    table: &'a str,
    batch: &'a RecordBatch,
    text: Vec<&'a StringArray>,
}

impl Columns<'_> {
    /// The rows of the batch.
    fn rows(&self) -> std::ops::Range<usize> {
        0..self.batch.num_rows()
    }

    /// Row `i` of the `c`th text column the loader named.
    fn text(&self, c: usize, i: usize) -> String {
        self.text[c].value(i).to_string()
    }

    fn typed<A: crate::store::ColumnType>(&self, name: &str) -> Result<&A, StoreError> {
        crate::store::column(self.batch, name).map_err(|reason| corrupt(self.table, reason))
    }
}

fn corrupt(table: &str, reason: String) -> StoreError {
    StoreError::Corrupt {
        path: table.to_string(),
        reason,
    }
}

/// Every row of `table`'s current version (none before its first): `rows`
/// builds a batch's rows from its columns (`text` named up front, others
/// taken once per batch with [`Columns::typed`]).
fn load_rows<T>(
    store: &TableStore,
    table: &str,
    text: &[&str],
    mut rows: impl FnMut(&Columns<'_>) -> Result<Vec<T>, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let Some(m) = store.current(table)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for batch in store.read(&m)? {
        let text = text
            .iter()
            .map(|n| crate::store::column(&batch, n).map_err(|reason| corrupt(table, reason)))
            .collect::<Result<Vec<_>, _>>()?;
        let columns = Columns {
            table,
            batch: &batch,
            text,
        };
        out.extend(rows(&columns)?);
    }
    Ok(out)
}

/// Every decision, oldest first.
pub fn load_decision_rows(store: &TableStore) -> Result<Vec<DecisionRow>, StoreError> {
    load_rows(store, DECISIONS_TABLE, &DECISION_COLUMNS, |c| {
        Ok(c.rows()
            .map(|i| {
                let v = |k: usize| c.text(k, i);
                DecisionRow {
                    source: v(0),
                    record_id: v(1),
                    decision: v(2),
                    subject_id: v(3),
                    steward: v(4),
                    note: v(5),
                    decided_at: v(6),
                }
            })
            .collect())
    })
}

/// The decisions that stand: the latest per record, and per merged subject.
pub fn load_decisions(store: &TableStore) -> Result<Decisions, StoreError> {
    let mut out = Decisions::new();
    for r in load_decision_rows(store)? {
        let key = (r.source, r.record_id);
        match r.decision.as_str() {
            "link" => {
                out.records.insert(key, Decision::Link(r.subject_id));
            }
            "reject" => {
                out.records.insert(key, Decision::Reject);
            }
            // A merge row names the merged subject as its record id.
            "merge" => {
                out.merges.insert(key.1, r.subject_id);
            }
            "unmerge" => {
                out.merges.remove(&key.1);
            }
            other => {
                return Err(StoreError::Corrupt {
                    path: DECISIONS_TABLE.to_string(),
                    reason: format!("unknown decision `{other}`"),
                });
            }
        }
    }
    Ok(out)
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error(
        "record `{record_id}` of source `{source_name}` is neither in the review queue nor quarantined for its identifier; `sharebroker review list` shows what can be decided"
    )]
    UnknownRecord {
        source_name: String,
        record_id: String,
    },
    #[error("subject `{0}` does not exist (subject ids look like P-00000001)")]
    UnknownSubject(String),
    #[error("a decision needs the steward's name (--steward)")]
    NoSteward,
    #[error("merging {0} into {1} would redirect {1} back to itself")]
    Cycle(String, String),
    #[error("{0} is not merged into another subject")]
    NotMerged(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The current review queue.
pub fn load_review(store: &TableStore) -> Result<Vec<ReviewItem>, StoreError> {
    load_rows(store, REVIEW_TABLE, &REVIEW_TEXT, |c| {
        let candidates = c.typed::<UInt64Array>("candidates")?;
        let probability = c.typed::<Float64Array>("probability")?;
        Ok(c.rows()
            .map(|i| {
                let v = |k: usize| c.text(k, i);
                ReviewItem {
                    source: v(0),
                    agency: v(1),
                    record_id: v(2),
                    written_id: v(3),
                    name: v(4),
                    subject_id: v(5),
                    subject_name: v(6),
                    evidence: v(7),
                    candidates: candidates.value(i) as usize,
                    probability: probability.value(i),
                }
            })
            .collect())
    })
}

/// The current quarantine.
pub fn load_quarantine(store: &TableStore) -> Result<Vec<QuarantineEntry>, StoreError> {
    let text = ["source", "agency", "record_id", "field", "reason", "raw"];
    load_rows(store, crate::pull::QUARANTINE_TABLE, &text, |c| {
        let position = c.typed::<UInt64Array>("position")?;
        Ok(c.rows()
            .map(|i| {
                let v = |k: usize| c.text(k, i);
                QuarantineEntry {
                    source: v(0),
                    agency: v(1),
                    position: position.value(i),
                    record_id: v(2),
                    field: v(3),
                    reason: v(4),
                    raw: v(5),
                }
            })
            .collect())
    })
}

/// The current data-quality findings.
pub fn load_findings(store: &TableStore) -> Result<Vec<Finding>, StoreError> {
    let text = crate::ingest::resolve::FINDING_COLUMNS;
    load_rows(store, crate::pull::FINDINGS_TABLE, &text, |c| {
        Ok(c.rows()
            .map(|i| {
                let v = |k: usize| c.text(k, i);
                Finding {
                    subject_id: v(0),
                    field: v(1),
                    owner: v(2),
                    kept_value: v(3),
                    kept_agency: v(4),
                    kept_record: v(5),
                    other_value: v(6),
                    other_agency: v(7),
                    other_record: v(8),
                }
            })
            .collect())
    })
}

/// Record a steward's decision about a record in the review queue or in
/// quarantine for its identifier. `subject_id` `Some` links, `None` rejects.
pub fn decide(
    store: &TableStore,
    source: &str,
    record_id: &str,
    subject_id: Option<&str>,
    steward: &str,
    note: &str,
) -> Result<DecisionRow, DecideError> {
    if steward.trim().is_empty() {
        return Err(DecideError::NoSteward);
    }
    let known = load_review(store)?
        .iter()
        .any(|r| r.source == source && r.record_id == record_id)
        || load_quarantine(store)?
            .iter()
            .any(|q| q.source == source && q.record_id == record_id && q.field.is_empty())
        || load_decisions(store)?
            .records
            .contains_key(&(source.to_string(), record_id.to_string()));
    if !known {
        return Err(DecideError::UnknownRecord {
            source_name: source.to_string(),
            record_id: record_id.to_string(),
        });
    }
    if let Some(id) = subject_id {
        let registry = crate::pull::load_registry(store)?;
        if !registry.has_id(id) {
            return Err(DecideError::UnknownSubject(id.to_string()));
        }
    }
    let row = DecisionRow {
        source: source.to_string(),
        record_id: record_id.to_string(),
        decision: if subject_id.is_some() {
            "link"
        } else {
            "reject"
        }
        .to_string(),
        subject_id: subject_id.unwrap_or_default().to_string(),
        steward: steward.trim().to_string(),
        note: note.to_string(),
        decided_at: now(),
    };
    append(store, row)
}

fn append(store: &TableStore, row: DecisionRow) -> Result<DecisionRow, DecideError> {
    let mut rows = load_decision_rows(store)?;
    rows.push(row.clone());
    store.commit(DECISIONS_TABLE, &[decisions_batch(&rows)])?;
    Ok(row)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Merge subject `from` into `into` (two identifiers of one person, which
/// only a steward may decide): from the next resolve, `from`'s records
/// join `into`, lookups by `from`'s identifier serve `into`'s record, and
/// `from` redirects to `into`. `into = None` undoes an earlier merge (a
/// split); the decision stays on record either way.
pub fn merge(
    store: &TableStore,
    from: &str,
    into: Option<&str>,
    steward: &str,
    note: &str,
) -> Result<DecisionRow, DecideError> {
    if steward.trim().is_empty() {
        return Err(DecideError::NoSteward);
    }
    let registry = crate::pull::load_registry(store)?;
    for id in std::iter::once(from).chain(into) {
        if !registry.has_id(id) {
            return Err(DecideError::UnknownSubject(id.to_string()));
        }
    }
    let decisions = load_decisions(store)?;
    match into {
        Some(into) if decisions.resolve_id(into) == from => {
            return Err(DecideError::Cycle(from.to_string(), into.to_string()));
        }
        None if !decisions.merges.contains_key(from) => {
            return Err(DecideError::NotMerged(from.to_string()));
        }
        _ => {}
    }
    append(
        store,
        DecisionRow {
            source: String::new(),
            record_id: from.to_string(),
            decision: if into.is_some() { "merge" } else { "unmerge" }.to_string(),
            subject_id: into.unwrap_or_default().to_string(),
            steward: steward.trim().to_string(),
            note: note.to_string(),
            decided_at: now(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(record: &str) -> ReviewItem {
        ReviewItem {
            source: "mzt-marriage".into(),
            agency: "xj-mzt".into(),
            record_id: record.into(),
            written_id: "650102198506157010".into(),
            name: "买买提·艾力".into(),
            subject_id: "P-00000001".into(),
            subject_name: "麦麦提·艾力".into(),
            probability: 0.97,
            evidence: "ID number one edit away, same pinyin".into(),
            candidates: 1,
        }
    }

    #[test]
    fn decisions_need_a_known_record_and_subject_and_the_latest_stands() {
        let store = TableStore::in_memory();
        store
            .commit(REVIEW_TABLE, &[review_batch(&[item("MZ1")])])
            .expect("review");
        let mut reg = crate::ingest::SubjectRegistry::default();
        reg.insert(
            crate::catalog::SubjectKind::Person,
            "650102198506150010".into(),
            "P-00000001".into(),
        );
        store
            .commit(crate::pull::SUBJECTS_TABLE, &[reg.to_batch()])
            .expect("registry");
        assert_eq!(load_review(&store).expect("load"), vec![item("MZ1")]);

        let e = decide(&store, "mzt-marriage", "MZ9", None, "steward", "").unwrap_err();
        assert!(matches!(e, DecideError::UnknownRecord { .. }), "{e}");
        let e = decide(
            &store,
            "mzt-marriage",
            "MZ1",
            Some("P-00000009"),
            "steward",
            "",
        )
        .unwrap_err();
        assert!(matches!(e, DecideError::UnknownSubject(_)), "{e}");
        let e = decide(&store, "mzt-marriage", "MZ1", None, " ", "").unwrap_err();
        assert!(matches!(e, DecideError::NoSteward), "{e}");

        decide(
            &store,
            "mzt-marriage",
            "MZ1",
            Some("P-00000001"),
            "王芳",
            "same person",
        )
        .expect("link");
        let key = ("mzt-marriage".to_string(), "MZ1".to_string());
        assert_eq!(
            load_decisions(&store).expect("decisions").records.get(&key),
            Some(&Decision::Link("P-00000001".into()))
        );
        // Reversed later: the latest stands, and both stay on record.
        decide(
            &store,
            "mzt-marriage",
            "MZ1",
            None,
            "王芳",
            "different birth place",
        )
        .expect("reject");
        assert_eq!(
            load_decisions(&store).expect("decisions").records.get(&key),
            Some(&Decision::Reject)
        );
        let rows = load_decision_rows(&store).expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].note, "different birth place");
    }

    #[test]
    fn a_review_table_without_a_typed_column_is_reported() {
        let store = TableStore::in_memory();
        let mut damaged = review_batch(&[item("MZ1")]);
        let at = damaged.schema().index_of("probability").unwrap();
        damaged.remove_column(at);
        store.commit(REVIEW_TABLE, &[damaged]).expect("commit");
        let e = load_review(&store).unwrap_err();
        assert!(
            e.to_string().contains("no float column `probability`"),
            "{e}"
        );
    }

    #[test]
    fn merges_redirect_refuse_cycles_and_can_be_undone() {
        let store = TableStore::in_memory();
        let mut reg = crate::ingest::SubjectRegistry::default();
        for (key, id) in [
            ("650102198506150010", "P-00000001"),
            ("11010519491231002X", "P-00000002"),
        ] {
            reg.insert(crate::catalog::SubjectKind::Person, key.into(), id.into());
        }
        store
            .commit(crate::pull::SUBJECTS_TABLE, &[reg.to_batch()])
            .expect("registry");
        let e = merge(&store, "P-00000002", Some("P-00000009"), "s", "").unwrap_err();
        assert!(matches!(e, DecideError::UnknownSubject(_)), "{e}");
        let e = merge(&store, "P-00000002", None, "s", "").unwrap_err();
        assert!(matches!(e, DecideError::NotMerged(_)), "{e}");
        merge(
            &store,
            "P-00000002",
            Some("P-00000001"),
            "s",
            "one person, two numbers",
        )
        .expect("merge");
        let d = load_decisions(&store).expect("decisions");
        assert_eq!(d.resolve_id("P-00000002"), "P-00000001");
        assert_eq!(d.resolve_id("P-00000001"), "P-00000001");
        let e = merge(&store, "P-00000001", Some("P-00000002"), "s", "").unwrap_err();
        assert!(matches!(e, DecideError::Cycle(..)), "{e}");
        merge(&store, "P-00000002", None, "s", "two people after all").expect("split");
        let d = load_decisions(&store).expect("decisions");
        assert_eq!(d.resolve_id("P-00000002"), "P-00000002");
        assert_eq!(load_decision_rows(&store).expect("rows").len(), 2);
    }
}
