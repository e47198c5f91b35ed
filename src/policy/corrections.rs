//! Corrections (校核纠错, Article 17): an applicant disputes a shared value;
//! the handling agency files the dispute, the field's owning agency (its
//! authority in the catalogue) confirms the value or fixes it at source, or
//! the filer withdraws it. Kept in memory, journalled to a JSON-lines file
//! (fsync'd before a change is acknowledged), with an index of the disputes
//! that responses must mark, read on every lookup without I/O.
//!
//! The broker never alters stored data (architecture invariant 3): a fix is
//! made at the owner's source and arrives with the next pull. Until then a
//! fixed value that is still served stays marked.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::cases::Applicant;
use crate::journal::{self, Appender};

#[derive(Debug, thiserror::Error)]
pub enum CorrectionError {
    #[error("correction journal {path}: {reason}")]
    Journal { path: PathBuf, reason: String },
    #[error("there is no correction `{0}`")]
    NotFound(String),
    #[error(
        "this value is already disputed by correction `{0}` (open, or fixed at source and not yet pulled)"
    )]
    AlreadyOpen(String),
    #[error("correction `{id}` is routed to `{owner}`, the field's owning agency: only it decides")]
    NotOwner { id: String, owner: String },
    #[error("correction `{id}` was filed by `{filer}`: only it withdraws it")]
    NotFiler { id: String, filer: String },
    #[error("correction `{id}` is already {state}")]
    AlreadyDecided { id: String, state: &'static str },
}

/// Where a correction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Filed, waiting for the owning agency.
    Open,
    /// The owner says the served value is right.
    Confirmed,
    /// The owner corrected the value at its source (or a new version from
    /// the owner serves a different value).
    Fixed,
    /// The filing agency took the dispute back.
    Withdrawn,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Confirmed => "confirmed",
            State::Fixed => "fixed",
            State::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [
            State::Open,
            State::Confirmed,
            State::Fixed,
            State::Withdrawn,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// How the disputed value was served to the filing agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Served {
    Clear,
    Masked,
}

/// A dispute as the API layer validated it against the case, the policy and
/// the value served now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCorrection {
    pub subject: Applicant,
    /// Qualified field, `dataset.field`.
    pub field: String,
    /// The field's authority in the catalogue: the agency that decides.
    pub owner: String,
    /// The filing (handling) agency.
    pub agency: String,
    pub officer: Option<String>,
    pub case_id: String,
    pub service_item: String,
    /// The value as it was served to the filer (masked if it was).
    pub disputed_value: String,
    pub access: Served,
    /// Provenance of the served value: source agency, source record (only
    /// when served in clear), as-of time, and the dataset version read.
    pub source: Option<String>,
    pub record: Option<String>,
    pub as_of: Option<String>,
    pub dataset_version: u64,
    /// What the applicant says the value is.
    pub claimed_value: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correction {
    pub id: String,
    #[serde(flatten)]
    pub filed: NewCorrection,
    pub filed_at: DateTime<Utc>,
    /// SHA-256 over the correction id and the stored value disputed (see
    /// [`value_digest`]): whether a version still serves it, without the
    /// journal repeating a value the filer may have seen only masked.
    pub stored_digest: String,
    pub state: State,
    pub decided_by: Option<String>,
    pub decided_officer: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_reason: Option<String>,
    /// The corrected value, as the owner stated it (optional).
    pub fixed_value: Option<String>,
    /// Set when a new golden version from the owner closed it as fixed.
    pub fixed_in_version: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum JournalLine {
    File {
        correction: Box<Correction>,
    },
    Decide {
        id: String,
        state: State,
        agency: String,
        officer: Option<String>,
        at: DateTime<Utc>,
        reason: Option<String>,
        fixed_value: Option<String>,
        version: Option<u64>,
    },
}

/// The digest of a stored value disputed by correction `id`.
pub fn value_digest(id: &str, value: &str) -> String {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(b"sharebroker-correction-v1\0");
    h.update(id.as_bytes());
    h.update(b"\0");
    h.update(value.as_bytes());
    hex::encode(h.finish().as_ref())
}

/// One disputed field of a subject, as responses mark it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute {
    pub field: String,
    pub correction: String,
    pub since: DateTime<Utc>,
    /// `Open`, or `Fixed` while the value fixed at source is still served.
    pub state: State,
    stored_digest: String,
}

impl Dispute {
    /// Whether `value` (the stored value served now) is the one disputed.
    pub fn covers(&self, value: &str) -> bool {
        value_digest(&self.correction, value) == self.stored_digest
    }
}

/// The disputes of one subject.
pub type Disputes = Arc<Vec<Dispute>>;

/// What the golden table serves now for a correction's subject and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub value: Option<String>,
    pub source: Option<String>,
    pub version: u64,
}

fn applies(c: &Correction) -> bool {
    matches!(c.state, State::Open | State::Fixed)
}

fn dispute(c: &Correction) -> Dispute {
    Dispute {
        field: c.filed.field.clone(),
        correction: c.id.clone(),
        since: c.filed_at,
        state: c.state,
        stored_digest: c.stored_digest.clone(),
    }
}

/// The corrections in a journal's complete lines.
fn replay(bytes: &[u8]) -> Result<BTreeMap<String, Correction>, String> {
    let mut all = BTreeMap::new();
    for (line_no, line) in journal::complete_lines(bytes) {
        match serde_json::from_slice::<JournalLine>(line)
            .map_err(|e| format!("line {line_no}: {e}"))?
        {
            JournalLine::File { correction } => {
                all.insert(correction.id.clone(), *correction);
            }
            JournalLine::Decide {
                id,
                state,
                agency,
                officer,
                at,
                reason,
                fixed_value,
                version,
            } => {
                let c = all
                    .get_mut(&id)
                    .ok_or_else(|| format!("line {line_no}: decides unknown correction `{id}`"))?;
                c.state = state;
                c.decided_by = Some(agency);
                c.decided_officer = officer;
                c.decided_at = Some(at);
                c.decision_reason = reason;
                c.fixed_value = fixed_value;
                c.fixed_in_version = version;
            }
        }
    }
    Ok(all)
}

/// Every correction in a journal, read without opening it for writing
/// (beside a running broker); none if there is no journal.
pub fn read(path: &Path) -> Result<Vec<Correction>, CorrectionError> {
    let err = |reason: String| CorrectionError::Journal {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    Ok(replay(&bytes).map_err(err)?.into_values().collect())
}

/// A decision on an open correction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The owner: the served value is right.
    Confirm,
    /// The owner: corrected at source, optionally stating the new value.
    Fix { fixed_value: Option<String> },
    /// The filer takes the dispute back.
    Withdraw,
}

struct Inner {
    all: BTreeMap<String, Correction>,
    /// Subject key → ids of its corrections, oldest first.
    by_subject: HashMap<String, Vec<String>>,
    journal: Appender,
}

impl Inner {
    fn new(all: BTreeMap<String, Correction>, journal: Appender) -> Inner {
        let mut by_subject: HashMap<String, Vec<String>> = HashMap::new();
        for c in all.values() {
            by_subject
                .entry(c.filed.subject.key.clone())
                .or_default()
                .push(c.id.clone());
        }
        Inner {
            all,
            by_subject,
            journal,
        }
    }
}

/// All corrections, their journal and the index responses read.
pub struct CorrectionBook {
    path: PathBuf,
    // std Mutex: no await while held; each change is an append + fsync.
    inner: Mutex<Inner>,
    /// Subject key → disputes to mark (open, or fixed and not yet
    /// superseded). Written under `inner`; std RwLock, held only to clone
    /// an `Arc` or replace one entry.
    index: RwLock<HashMap<String, Disputes>>,
    /// Entries in `index`: lookups skip the lock while there are none.
    indexed: AtomicUsize,
}

impl CorrectionBook {
    /// Open the journal, replaying every complete line. A torn last line (a
    /// crash mid-write, never acknowledged) is cut off; a complete line that
    /// does not parse is an error naming it.
    pub fn open(path: &Path) -> Result<CorrectionBook, CorrectionError> {
        let (all, journal) =
            journal::open_replayed(path, "correction journal", replay).map_err(|reason| {
                CorrectionError::Journal {
                    path: path.to_path_buf(),
                    reason,
                }
            })?;
        let book = CorrectionBook {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner::new(all, journal)),
            index: RwLock::new(HashMap::new()),
            indexed: AtomicUsize::new(0),
        };
        let inner = book.inner.lock().expect("correction book lock poisoned");
        for key in inner.by_subject.keys() {
            book.reindex(&inner, key, &[]);
        }
        drop(inner);
        Ok(book)
    }

    /// Rebuild the index entry of one subject, leaving out the corrections
    /// named in `superseded`.
    fn reindex(&self, inner: &Inner, key: &str, superseded: &[String]) {
        let disputes: Vec<Dispute> = inner
            .by_subject
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.all.get(id))
            .filter(|c| applies(c) && !superseded.contains(&c.id))
            .map(dispute)
            .collect();
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        if disputes.is_empty() {
            index.remove(key);
        } else {
            index.insert(key.to_string(), Arc::new(disputes));
        }
        self.indexed.store(index.len(), Ordering::Release);
    }

    fn append(&self, journal: &mut Appender, line: &JournalLine) -> Result<(), CorrectionError> {
        let bytes = serde_json::to_vec(line).expect("a journal line serialises");
        journal
            .append(&bytes)
            .map_err(|e| CorrectionError::Journal {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// The disputes to mark in a response about subject `key`: no I/O, and
    /// no lock at all while nothing is disputed.
    pub fn disputes(&self, key: &str) -> Option<Disputes> {
        if self.indexed.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// File a dispute of `stored_value` (the stored, unmasked value served
    /// now): durable when this returns. One open correction per subject and
    /// field; a value its owner has fixed at source, still served until the
    /// next pull, is not disputed again.
    pub fn file(
        &self,
        new: NewCorrection,
        stored_value: &str,
        now: DateTime<Utc>,
    ) -> Result<Correction, CorrectionError> {
        let mut guard = self.inner.lock().expect("correction book lock poisoned");
        // Every open correction is in the index (written under this lock).
        if let Some(open) = self.disputes(&new.subject.key).and_then(|ds| {
            ds.iter()
                .find(|d| {
                    d.field == new.field
                        && (d.state == State::Open
                            || (d.state == State::Fixed && d.covers(stored_value)))
                })
                .map(|d| d.correction.clone())
        }) {
            return Err(CorrectionError::AlreadyOpen(open));
        }
        let inner = &mut *guard;
        let id = format!("CR-{:06}", inner.all.len() + 1);
        let correction = Correction {
            stored_digest: value_digest(&id, stored_value),
            id,
            filed: new,
            filed_at: now,
            state: State::Open,
            decided_by: None,
            decided_officer: None,
            decided_at: None,
            decision_reason: None,
            fixed_value: None,
            fixed_in_version: None,
        };
        self.append(
            &mut inner.journal,
            &JournalLine::File {
                correction: Box::new(correction.clone()),
            },
        )?;
        let key = correction.filed.subject.key.clone();
        inner
            .by_subject
            .entry(key.clone())
            .or_default()
            .push(correction.id.clone());
        inner.all.insert(correction.id.clone(), correction.clone());
        self.reindex(inner, &key, &[]);
        Ok(correction)
    }

    /// Decide an open correction as `agency`: confirm or fix (the owner
    /// only), withdraw (the filer only). Durable when this returns.
    pub fn decide(
        &self,
        id: &str,
        agency: &str,
        officer: Option<String>,
        verdict: Verdict,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Correction, CorrectionError> {
        let mut guard = self.inner.lock().expect("correction book lock poisoned");
        let inner = &mut *guard;
        let c = inner
            .all
            .get(id)
            .ok_or_else(|| CorrectionError::NotFound(id.to_string()))?;
        match verdict {
            Verdict::Withdraw if c.filed.agency != agency => {
                return Err(CorrectionError::NotFiler {
                    id: id.to_string(),
                    filer: c.filed.agency.clone(),
                });
            }
            Verdict::Confirm | Verdict::Fix { .. } if c.filed.owner != agency => {
                return Err(CorrectionError::NotOwner {
                    id: id.to_string(),
                    owner: c.filed.owner.clone(),
                });
            }
            _ => {}
        }
        if c.state != State::Open {
            return Err(CorrectionError::AlreadyDecided {
                id: id.to_string(),
                state: c.state.as_str(),
            });
        }
        let (state, fixed_value) = match verdict {
            Verdict::Confirm => (State::Confirmed, None),
            Verdict::Fix { fixed_value } => (State::Fixed, fixed_value),
            Verdict::Withdraw => (State::Withdrawn, None),
        };
        let line = JournalLine::Decide {
            id: id.to_string(),
            state,
            agency: agency.to_string(),
            officer: officer.clone(),
            at: now,
            reason: reason.clone(),
            fixed_value: fixed_value.clone(),
            version: None,
        };
        self.append(&mut inner.journal, &line)?;
        let c = inner
            .all
            .get_mut(id)
            .expect("checked above, under the lock");
        c.state = state;
        c.decided_by = Some(agency.to_string());
        c.decided_officer = officer;
        c.decided_at = Some(now);
        c.decision_reason = reason;
        c.fixed_value = fixed_value;
        let (c, key) = (c.clone(), c.filed.subject.key.clone());
        self.reindex(inner, &key, &[]);
        Ok(c)
    }

    /// Bring the corrections in line with what the golden tables serve now
    /// (after a new version is loaded, and at start). `current` answers for
    /// a correction, or `None` when its table is not loaded (left alone).
    ///
    /// - an open correction whose field now serves a different value that
    ///   came from the owner is closed as fixed (journalled, naming the
    ///   version);
    /// - a fixed correction whose value is no longer served stops being
    ///   marked (the fix has arrived);
    /// - an open correction whose value changed through another source stays
    ///   open for the owner, but is not marked while the value it disputes
    ///   is not served.
    ///
    /// Returns the ids closed as fixed.
    pub fn settle(
        &self,
        now: DateTime<Utc>,
        current: impl Fn(&Correction) -> Option<Current>,
    ) -> Result<Vec<String>, CorrectionError> {
        let mut guard = self.inner.lock().expect("correction book lock poisoned");
        let inner = &mut *guard;
        let mut fixed = Vec::new();
        let mut superseded = Vec::new();
        let mut touched = Vec::new();
        for c in inner.all.values().filter(|c| applies(c)) {
            let Some(now_served) = current(c) else {
                continue;
            };
            let still = now_served
                .value
                .as_deref()
                .is_some_and(|v| value_digest(&c.id, v) == c.stored_digest);
            if still {
                continue;
            }
            if c.state == State::Fixed {
                superseded.push(c.id.clone());
                touched.push(c.filed.subject.key.clone());
            } else if now_served.value.is_some()
                && now_served.source.as_deref() == Some(c.filed.owner.as_str())
            {
                fixed.push((c.id.clone(), c.filed.owner.clone(), now_served.version));
            }
        }
        let mut closed = Vec::new();
        for (id, owner, version) in fixed {
            let line = JournalLine::Decide {
                id: id.clone(),
                state: State::Fixed,
                agency: owner.clone(),
                officer: None,
                at: now,
                reason: Some(format!(
                    "version {version} serves a new value from the owning agency"
                )),
                fixed_value: None,
                version: Some(version),
            };
            self.append(&mut inner.journal, &line)?;
            let c = inner.all.get_mut(&id).expect("found above, under the lock");
            c.state = State::Fixed;
            c.decided_by = Some(owner);
            c.decided_officer = None;
            c.decided_at = Some(now);
            c.decision_reason = match &line {
                JournalLine::Decide { reason, .. } => reason.clone(),
                JournalLine::File { .. } => None,
            };
            c.fixed_value = None;
            c.fixed_in_version = Some(version);
            // Its value is no longer served: nothing to mark.
            superseded.push(id.clone());
            touched.push(c.filed.subject.key.clone());
            closed.push(id);
        }
        // Superseded fixes leave the index only (in memory): at the next
        // start they are found superseded again.
        touched.sort();
        touched.dedup();
        for key in touched {
            self.reindex(inner, &key, &superseded);
        }
        Ok(closed)
    }

    /// The corrections routed to `agency` (it owns the field) or filed by
    /// it, oldest first, optionally in one state, at most `limit`.
    pub fn for_agency(&self, agency: &str, state: Option<State>, limit: usize) -> Vec<Correction> {
        let inner = self.inner.lock().expect("correction book lock poisoned");
        inner
            .all
            .values()
            .filter(|c| c.filed.owner == agency || c.filed.agency == agency)
            .filter(|c| state.is_none_or(|s| c.state == s))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Correction> {
        let inner = self.inner.lock().expect("correction book lock poisoned");
        inner.all.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SubjectKind;

    const ID: &str = "650102198506150010";

    fn new(field: &str, filer: &str) -> NewCorrection {
        NewCorrection {
            subject: Applicant {
                kind: SubjectKind::Person,
                key: ID.into(),
            },
            field: field.into(),
            owner: "xj-gat".into(),
            agency: filer.into(),
            officer: Some("mz-007".into()),
            case_id: "MZ-1".into(),
            service_item: "XJ-MZ-0201".into(),
            disputed_value: "买买提·艾力".into(),
            access: Served::Clear,
            source: Some("xj-gat".into()),
            record: Some("R1".into()),
            as_of: Some("2024-01-01".into()),
            dataset_version: 3,
            claimed_value: Some("买买提·艾力江".into()),
            reason: "申请人提供户口簿".into(),
        }
    }

    fn served(value: &str, source: &str, version: u64) -> Option<Current> {
        Some(Current {
            value: Some(value.into()),
            source: Some(source.into()),
            version,
        })
    }

    fn marked(book: &CorrectionBook, field: &str, value: &str) -> Option<(String, State)> {
        book.disputes(ID).and_then(|ds| {
            ds.iter()
                .find(|d| d.field == field && d.covers(value))
                .map(|d| (d.correction.clone(), d.state))
        })
    }

    #[test]
    fn the_state_machine_allows_only_the_owner_or_the_filer_and_only_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let book = CorrectionBook::open(&dir.path().join("c.jsonl")).expect("open");
        let now = Utc::now();
        assert!(book.disputes(ID).is_none(), "nothing indexed yet");
        let c = book
            .file(new("population.name", "xj-mzt"), "买买提·艾力", now)
            .expect("file");
        assert_eq!((c.id.as_str(), c.state), ("CR-000001", State::Open));
        assert_eq!(
            marked(&book, "population.name", "买买提·艾力"),
            Some(("CR-000001".into(), State::Open))
        );
        assert_eq!(marked(&book, "population.name", "买买提·艾力江"), None);
        assert_eq!(marked(&book, "population.sex", "买买提·艾力"), None);
        // One open dispute per subject and field, whoever files it.
        assert!(matches!(
            book.file(new("population.name", "xj-gjj"), "买买提·艾力", now),
            Err(CorrectionError::AlreadyOpen(id)) if id == "CR-000001"
        ));
        let verdicts = [
            Verdict::Confirm,
            Verdict::Fix { fixed_value: None },
            Verdict::Withdraw,
        ];
        // The filer neither confirms nor fixes; the owner does not withdraw;
        // a bystander does nothing.
        for (agency, verdict) in [
            ("xj-mzt", &verdicts[0]),
            ("xj-mzt", &verdicts[1]),
            ("xj-gjj", &verdicts[0]),
        ] {
            assert!(matches!(
                book.decide(&c.id, agency, None, verdict.clone(), None, now),
                Err(CorrectionError::NotOwner { owner, .. }) if owner == "xj-gat"
            ));
        }
        for agency in ["xj-gat", "xj-gjj"] {
            assert!(matches!(
                book.decide(&c.id, agency, None, Verdict::Withdraw, None, now),
                Err(CorrectionError::NotFiler { filer, .. }) if filer == "xj-mzt"
            ));
        }
        assert!(matches!(
            book.decide("CR-999999", "xj-gat", None, Verdict::Confirm, None, now),
            Err(CorrectionError::NotFound(_))
        ));
        let confirmed = book
            .decide(
                &c.id,
                "xj-gat",
                Some("gat-1".into()),
                Verdict::Confirm,
                Some("户籍记录无误".into()),
                now,
            )
            .expect("confirm");
        assert_eq!(confirmed.state, State::Confirmed);
        assert_eq!(confirmed.decided_officer.as_deref(), Some("gat-1"));
        assert!(
            book.disputes(ID).is_none(),
            "a confirmed value is not marked"
        );
        for (agency, v) in [("xj-gat", &verdicts[1]), ("xj-mzt", &verdicts[2])] {
            assert!(matches!(
                book.decide(&c.id, agency, None, v.clone(), None, now),
                Err(CorrectionError::AlreadyDecided {
                    state: "confirmed",
                    ..
                })
            ));
        }
        // Decided: the same value may be disputed again.
        let again = book
            .file(new("population.name", "xj-gjj"), "买买提·艾力", now)
            .expect("refile");
        assert_eq!(again.id, "CR-000002");
        let withdrawn = book
            .decide(&again.id, "xj-gjj", None, Verdict::Withdraw, None, now)
            .expect("withdraw");
        assert_eq!(withdrawn.state, State::Withdrawn);
        assert!(book.disputes(ID).is_none());
        // A fix stays marked while the fixed value is still served.
        let third = book
            .file(new("population.name", "xj-mzt"), "买买提·艾力", now)
            .expect("file");
        let fixed = book
            .decide(
                &third.id,
                "xj-gat",
                None,
                Verdict::Fix {
                    fixed_value: Some("买买提·艾力江".into()),
                },
                None,
                now,
            )
            .expect("fix");
        assert_eq!(fixed.fixed_value.as_deref(), Some("买买提·艾力江"));
        assert_eq!(
            marked(&book, "population.name", "买买提·艾力"),
            Some((third.id.clone(), State::Fixed))
        );
        // Fixed at source but still served: not disputed again.
        assert!(matches!(
            book.file(new("population.name", "xj-gjj"), "买买提·艾力", now),
            Err(CorrectionError::AlreadyOpen(id)) if id == third.id
        ));
        assert_eq!(book.for_agency("xj-gat", None, 100).len(), 3);
        assert_eq!(book.for_agency("xj-gjj", None, 100).len(), 1);
        assert_eq!(book.for_agency("xj-gat", Some(State::Open), 100).len(), 0);
        assert_eq!(book.for_agency("xj-zrzyt", None, 100).len(), 0);
        assert_eq!(book.for_agency("xj-gat", None, 2).len(), 2);
    }

    #[test]
    fn a_new_version_from_the_owner_closes_as_fixed_and_others_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.jsonl");
        let book = CorrectionBook::open(&path).expect("open");
        let now = Utc::now();
        let name = book
            .file(new("population.name", "xj-mzt"), "买买提·艾力", now)
            .expect("file");
        let addr = book
            .file(
                new("population.household_address", "xj-mzt"),
                "乌鲁木齐",
                now,
            )
            .expect("file");
        let sex = book
            .file(new("population.sex", "xj-mzt"), "男", now)
            .expect("file");
        let fixed_by_owner = book
            .file(new("population.birth_date", "xj-mzt"), "1985-06-15", now)
            .expect("file");
        book.decide(
            &fixed_by_owner.id,
            "xj-gat",
            None,
            Verdict::Fix { fixed_value: None },
            None,
            now,
        )
        .expect("fix");
        let current = |c: &Correction| match c.filed.field.as_str() {
            // The owner's new value.
            "population.name" => served("买买提·艾力江", "xj-gat", 4),
            // A new value from another source.
            "population.household_address" => served("喀什", "xj-mzt", 4),
            // Unchanged.
            "population.sex" => served("男", "xj-gat", 4),
            // The fix arrived.
            "population.birth_date" => served("1985-06-16", "xj-gat", 4),
            _ => None,
        };
        let closed = book.settle(now, current).expect("settle");
        assert_eq!(closed, vec![name.id.clone()]);
        let n = book.get(&name.id).expect("name");
        assert_eq!((n.state, n.fixed_in_version), (State::Fixed, Some(4)));
        assert_eq!(n.decided_by.as_deref(), Some("xj-gat"));
        assert_eq!(book.get(&addr.id).expect("addr").state, State::Open);
        assert_eq!(book.get(&sex.id).expect("sex").state, State::Open);
        let ds = book.disputes(ID).expect("still disputed");
        let mut ids: Vec<&str> = ds.iter().map(|d| d.correction.as_str()).collect();
        ids.sort();
        // The fix that arrived and the auto-fixed one are gone; the address
        // stays for the owner (but covers only the old value).
        assert_eq!(ids, vec![addr.id.as_str(), sex.id.as_str()]);
        assert!(!ds.iter().any(|d| d.covers("喀什")));
        // Idempotent.
        assert!(book.settle(now, current).expect("settle").is_empty());
        drop(book);
        let book = CorrectionBook::open(&path).expect("reopen");
        assert_eq!(book.get(&name.id).expect("name").fixed_in_version, Some(4));
        assert!(book.settle(now, current).expect("settle").is_empty());
        let ds = book.disputes(ID).expect("still disputed");
        assert_eq!(ds.len(), 2, "{ds:?}");
    }

    #[test]
    fn corrections_survive_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("corrections.jsonl");
        let now = Utc::now();
        {
            let book = CorrectionBook::open(&path).expect("open");
            book.file(new("population.name", "xj-mzt"), "买买提·艾力", now)
                .expect("file");
            let c = book
                .file(new("population.sex", "xj-mzt"), "男", now)
                .expect("file");
            book.decide(
                &c.id,
                "xj-gat",
                None,
                Verdict::Confirm,
                Some("ok".into()),
                now,
            )
            .expect("confirm");
        }
        // A crash mid-write: a torn line, cut inside a multi-byte character.
        let mut bytes = std::fs::read(&path).expect("read");
        let good = bytes.len();
        bytes.extend_from_slice(
            "{\"op\":\"decide\",\"id\":\"CR-000001\",\"state\":\"fixed\",\"reason\":\"户"
                .as_bytes(),
        );
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&path, &bytes).expect("write torn line");
        assert_eq!(read(&path).expect("read beside").len(), 2);
        let book = CorrectionBook::open(&path).expect("reopen");
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len() as usize,
            good,
            "torn tail cut"
        );
        let first = book.get("CR-000001").expect("first");
        assert_eq!(first.state, State::Open, "the torn decision never happened");
        assert_eq!(first.filed.reason, "申请人提供户口簿");
        assert_eq!(
            book.get("CR-000002").expect("second").state,
            State::Confirmed
        );
        assert_eq!(
            marked(&book, "population.name", "买买提·艾力"),
            Some(("CR-000001".into(), State::Open)),
            "the index is rebuilt from the journal"
        );
        assert_eq!(marked(&book, "population.sex", "男"), None);
        let c = book
            .file(new("population.birth_date", "xj-mzt"), "1985-06-15", now)
            .expect("journal still appends");
        assert_eq!(c.id, "CR-000003");
        drop(book);
        let all = read(&path).expect("read");
        assert_eq!(
            all.iter().map(|c| c.state).collect::<Vec<_>>(),
            vec![State::Open, State::Confirmed, State::Open]
        );
    }

    #[test]
    fn a_damaged_complete_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.jsonl");
        {
            let book = CorrectionBook::open(&path).expect("open");
            book.file(new("population.name", "xj-mzt"), "x", Utc::now())
                .expect("file");
        }
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("not json\n");
        std::fs::write(&path, &text).expect("write");
        let err = CorrectionBook::open(&path)
            .err()
            .expect("error")
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        // A decision about a correction the journal never filed is damage too.
        std::fs::write(
            &path,
            "{\"op\":\"decide\",\"id\":\"CR-000009\",\"state\":\"confirmed\",\"agency\":\"a\",\"officer\":null,\"at\":\"2026-01-01T00:00:00Z\",\"reason\":null,\"fixed_value\":null,\"version\":null}\n",
        )
        .expect("write");
        let err = CorrectionBook::open(&path)
            .err()
            .expect("error")
            .to_string();
        assert!(err.contains("line 1") && err.contains("CR-000009"), "{err}");
    }
}
