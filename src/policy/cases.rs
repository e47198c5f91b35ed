//! Cases (办件): one application being handled by one agency for one service
//! item and named applicants. A case is what binds a lookup to a purpose.
//! Cases are kept in memory and journalled to a JSON-lines file, fsync'd
//! before the open or close is acknowledged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::SubjectKind;
use crate::journal::{self, Appender};

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("case journal {path}: {reason}")]
    Journal { path: PathBuf, reason: String },
    #[error("case `{0}` already exists")]
    Exists(String),
    #[error("there is no case `{0}` of this agency")]
    NotFound(String),
    #[error("case `{0}` is already closed")]
    AlreadyClosed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applicant {
    pub kind: SubjectKind,
    /// Normalised identifier: resident ID number or credit code.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// The agency's own case number (办件编号); unique across the broker.
    pub id: String,
    pub agency: String,
    /// The agency role the case is handled in (`agency:role`); lookups
    /// under the case are decided for this role.
    pub role: String,
    pub service_item: String,
    pub applicants: Vec<Applicant>,
    pub officer: String,
    pub opened_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

impl Case {
    pub fn is_open_at(&self, now: DateTime<Utc>) -> bool {
        self.closed_at.is_none() && now < self.expires_at
    }

    /// Whether `subject` (kind and identifier) is an applicant: an ID
    /// number given as a credit code is a different subject.
    pub fn has_applicant(&self, subject: &Applicant) -> bool {
        self.applicants.iter().any(|a| a == subject)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum JournalLine {
    Open {
        case: Case,
    },
    Close {
        agency: String,
        id: String,
        at: DateTime<Utc>,
    },
}

/// Cases are identified by (agency, case number): an agency's case numbers
/// are its own, and another agency's cases are invisible to it.
type CaseKey = (String, String);

/// All cases, with their journal.
pub struct CaseBook {
    path: PathBuf,
    cases: RwLock<HashMap<CaseKey, Case>>,
    // Held across check, append (fsync) and insert so that writes are
    // ordered; readers only take the map's read lock, never wait on a fsync.
    journal: Mutex<Appender>,
}

impl CaseBook {
    /// Open the journal, replaying every complete line. A torn last line (a
    /// crash mid-write, never acknowledged) is cut off; a complete line that
    /// does not parse is an error naming it.
    pub fn open(path: &Path) -> Result<CaseBook, CaseError> {
        let (cases, appender) = journal::open_replayed(path, "case journal", |bytes| {
            let mut cases = HashMap::new();
            for (line_no, line) in journal::complete_lines(bytes) {
                match serde_json::from_slice::<JournalLine>(line) {
                    Ok(JournalLine::Open { case }) => {
                        cases.insert((case.agency.clone(), case.id.clone()), case);
                    }
                    Ok(JournalLine::Close { agency, id, at }) => {
                        if let Some(c) = cases.get_mut(&(agency, id)) {
                            c.closed_at = Some(at);
                        }
                    }
                    Err(e) => return Err(format!("line {line_no}: {e}")),
                }
            }
            Ok(cases)
        })
        .map_err(|reason| CaseError::Journal {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(CaseBook {
            path: path.to_path_buf(),
            cases: RwLock::new(cases),
            journal: Mutex::new(appender),
        })
    }

    fn append(&self, journal: &mut Appender, line: &JournalLine) -> Result<(), CaseError> {
        let bytes = serde_json::to_vec(line).expect("a journal line serialises");
        journal.append(&bytes).map_err(|e| CaseError::Journal {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// Open a case: durable when this returns.
    #[allow(clippy::too_many_arguments)]
    pub fn open_case(
        &self,
        id: &str,
        agency: &str,
        role: &str,
        service_item: &str,
        applicants: Vec<Applicant>,
        officer: &str,
        valid_days: u32,
        now: DateTime<Utc>,
    ) -> Result<Case, CaseError> {
        let mut journal = self.journal.lock().expect("case journal lock poisoned");
        let key = (agency.to_string(), id.to_string());
        if self
            .cases
            .read()
            .expect("case map lock poisoned")
            .contains_key(&key)
        {
            return Err(CaseError::Exists(id.to_string()));
        }
        let case = Case {
            id: id.to_string(),
            agency: agency.to_string(),
            role: role.to_string(),
            service_item: service_item.to_string(),
            applicants,
            officer: officer.to_string(),
            opened_at: now,
            expires_at: now + Duration::days(i64::from(valid_days)),
            closed_at: None,
        };
        self.append(&mut journal, &JournalLine::Open { case: case.clone() })?;
        self.cases
            .write()
            .expect("case map lock poisoned")
            .insert(key, case.clone());
        Ok(case)
    }

    /// Close a case of `agency`: durable when this returns.
    pub fn close_case(
        &self,
        agency: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Case, CaseError> {
        let mut journal = self.journal.lock().expect("case journal lock poisoned");
        let key = (agency.to_string(), id.to_string());
        match self.cases.read().expect("case map lock poisoned").get(&key) {
            None => return Err(CaseError::NotFound(id.to_string())),
            Some(c) if c.closed_at.is_some() => {
                return Err(CaseError::AlreadyClosed(id.to_string()));
            }
            Some(_) => {}
        }
        let line = JournalLine::Close {
            agency: agency.to_string(),
            id: id.to_string(),
            at: now,
        };
        self.append(&mut journal, &line)?;
        let mut cases = self.cases.write().expect("case map lock poisoned");
        let case = cases
            .get_mut(&key)
            .expect("checked above, under the journal lock");
        case.closed_at = Some(now);
        Ok(case.clone())
    }

    /// A case of `agency`.
    pub fn get(&self, agency: &str, id: &str) -> Option<Case> {
        self.cases
            .read()
            .expect("case map lock poisoned")
            .get(&(agency.to_string(), id.to_string()))
            .cloned()
    }

    /// The cases of one agency, newest first.
    pub fn of_agency(&self, agency: &str) -> Vec<Case> {
        let cases = self.cases.read().expect("case map lock poisoned");
        let mut out: Vec<Case> = cases
            .values()
            .filter(|c| c.agency == agency)
            .cloned()
            .collect();
        out.sort_by(|a, b| b.opened_at.cmp(&a.opened_at).then_with(|| a.id.cmp(&b.id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applicant() -> Vec<Applicant> {
        vec![Applicant {
            kind: SubjectKind::Person,
            key: "650102198506150010".into(),
        }]
    }

    #[test]
    fn cases_survive_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cases.jsonl");
        let now = Utc::now();
        let role = "xj-mzt:marriage_registry";
        {
            let book = CaseBook::open(&path).expect("open");
            book.open_case(
                "C1",
                "xj-mzt",
                role,
                "XJ-MZ-0201",
                applicant(),
                "民政官员",
                30,
                now,
            )
            .expect("open case");
            book.open_case(
                "C2",
                "xj-mzt",
                role,
                "XJ-MZ-0201",
                applicant(),
                "officer-1",
                30,
                now,
            )
            .expect("open case");
            assert!(matches!(
                book.open_case("C1", "xj-mzt", role, "X", vec![], "o", 1, now),
                Err(CaseError::Exists(_))
            ));
            // Case numbers are per agency: another agency's C1 is another case.
            book.open_case(
                "C1",
                "xj-gjj",
                "xj-gjj:fund",
                "XJ-GJJ-0203",
                applicant(),
                "o",
                1,
                now,
            )
            .expect("own numbering");
            assert!(matches!(
                book.close_case("xj-gjj", "C2", now),
                Err(CaseError::NotFound(_))
            ));
            book.close_case("xj-mzt", "C2", now).expect("close");
            assert!(matches!(
                book.close_case("xj-mzt", "C2", now),
                Err(CaseError::AlreadyClosed(_))
            ));
        }
        // A crash mid-write: a torn line, cut inside a multi-byte character.
        let mut bytes = std::fs::read(&path).expect("read");
        let good = bytes.len();
        bytes.extend_from_slice(
            "{\"op\":\"open\",\"case\":{\"id\":\"C9\",\"officer\":\"民".as_bytes(),
        );
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&path, &bytes).expect("write torn line");
        let book = CaseBook::open(&path).expect("reopen");
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len() as usize,
            good,
            "torn tail cut"
        );
        assert_eq!(book.get("xj-mzt", "C1").expect("C1").officer, "民政官员");
        assert!(book.get("xj-mzt", "C1").expect("C1").is_open_at(now));
        assert!(!book.get("xj-mzt", "C2").expect("C2").is_open_at(now));
        assert!(book.get("xj-gjj", "C2").is_none());
        assert!(
            !book
                .get("xj-mzt", "C1")
                .expect("C1")
                .is_open_at(now + Duration::days(31))
        );
        book.open_case("C3", "xj-mzt", role, "XJ-MZ-0201", applicant(), "o", 1, now)
            .expect("journal still appends");
        drop(book);
        assert!(
            CaseBook::open(&path)
                .expect("reopen")
                .get("xj-mzt", "C3")
                .is_some()
        );
    }

    #[test]
    fn a_damaged_complete_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cases.jsonl");
        std::fs::write(&path, "{\"op\":\"close\",\"agency\":\"a\",\"id\":\"x\",\"at\":\"2026-01-01T00:00:00Z\"}\nnot json\n").expect("write");
        let err = CaseBook::open(&path).err().expect("error").to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
