//! Cases (办件): one application being handled by one agency for one service
//! item and named applicants. A case is what binds a lookup to a purpose.
//! Cases are kept in memory and journalled to a JSON-lines file, fsync'd
//! before the open or close is acknowledged.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::SubjectKind;

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("case journal {path}: {reason}")]
    Journal { path: PathBuf, reason: String },
    #[error("case `{0}` already exists")]
    Exists(String),
    #[error("case `{0}` not found")]
    NotFound(String),
    #[error("case `{0}` belongs to another agency")]
    OtherAgency(String),
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

    pub fn has_applicant(&self, key: &str) -> bool {
        self.applicants.iter().any(|a| a.key == key)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum JournalLine {
    Open { case: Case },
    Close { id: String, at: DateTime<Utc> },
}

/// All cases, with their journal.
pub struct CaseBook {
    path: PathBuf,
    // std Mutex: no await while held; each operation is an append + fsync.
    inner: Mutex<(HashMap<String, Case>, File)>,
}

impl CaseBook {
    /// Open the journal, replaying every line. A torn last line (a crash
    /// mid-write, never acknowledged) is ignored; any other bad line is an
    /// error naming the line.
    pub fn open(path: &Path) -> Result<CaseBook, CaseError> {
        let err = |reason: String| CaseError::Journal {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let mut cases = HashMap::new();
        let mut good_len = 0u64;
        if path.exists() {
            let f = File::open(path).map_err(|e| err(e.to_string()))?;
            let lines: Vec<String> = BufReader::new(f)
                .lines()
                .collect::<Result<_, _>>()
                .map_err(|e| err(e.to_string()))?;
            let text_len = std::fs::metadata(path)
                .map_err(|e| err(e.to_string()))?
                .len();
            for (i, line) in lines.iter().enumerate() {
                match serde_json::from_str::<JournalLine>(line) {
                    Ok(JournalLine::Open { case }) => {
                        cases.insert(case.id.clone(), case);
                    }
                    Ok(JournalLine::Close { id, at }) => {
                        if let Some(c) = cases.get_mut(&id) {
                            c.closed_at = Some(at);
                        }
                    }
                    Err(e) if i + 1 == lines.len() => {
                        tracing::warn!(line = i + 1, error = %e, "ignoring torn last line of the case journal");
                        break;
                    }
                    Err(e) => return Err(err(format!("line {}: {e}", i + 1))),
                }
                good_len += line.len() as u64 + 1;
            }
            if good_len < text_len {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| err(e.to_string()))?;
                f.set_len(good_len).map_err(|e| err(e.to_string()))?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        Ok(CaseBook {
            path: path.to_path_buf(),
            inner: Mutex::new((cases, file)),
        })
    }

    fn append(&self, file: &mut File, line: &JournalLine) -> Result<(), CaseError> {
        let mut bytes = serde_json::to_vec(line).expect("a journal line serialises");
        bytes.push(b'\n');
        file.write_all(&bytes)
            .and_then(|_| file.sync_data())
            .map_err(|e| CaseError::Journal {
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
        let mut guard = self.inner.lock().expect("case book lock poisoned");
        let (cases, file) = &mut *guard;
        if cases.contains_key(id) {
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
        self.append(file, &JournalLine::Open { case: case.clone() })?;
        cases.insert(id.to_string(), case.clone());
        Ok(case)
    }

    /// Close a case of `agency`: durable when this returns.
    pub fn close_case(
        &self,
        id: &str,
        agency: &str,
        now: DateTime<Utc>,
    ) -> Result<Case, CaseError> {
        let mut guard = self.inner.lock().expect("case book lock poisoned");
        let (cases, file) = &mut *guard;
        let case = cases
            .get(id)
            .ok_or_else(|| CaseError::NotFound(id.to_string()))?;
        if case.agency != agency {
            return Err(CaseError::OtherAgency(id.to_string()));
        }
        if case.closed_at.is_some() {
            return Err(CaseError::AlreadyClosed(id.to_string()));
        }
        self.append(
            file,
            &JournalLine::Close {
                id: id.to_string(),
                at: now,
            },
        )?;
        let case = cases.get_mut(id).expect("checked above");
        case.closed_at = Some(now);
        Ok(case.clone())
    }

    pub fn get(&self, id: &str) -> Option<Case> {
        self.inner
            .lock()
            .expect("case book lock poisoned")
            .0
            .get(id)
            .cloned()
    }

    /// The cases of one agency, newest first.
    pub fn of_agency(&self, agency: &str) -> Vec<Case> {
        let guard = self.inner.lock().expect("case book lock poisoned");
        let mut out: Vec<Case> = guard
            .0
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
        {
            let book = CaseBook::open(&path).expect("open");
            book.open_case(
                "C1",
                "xj-mzt",
                "xj-mzt:marriage_registry",
                "XJ-MZ-0201",
                applicant(),
                "officer-1",
                30,
                now,
            )
            .expect("open case");
            book.open_case(
                "C2",
                "xj-mzt",
                "xj-mzt:marriage_registry",
                "XJ-MZ-0201",
                applicant(),
                "officer-1",
                30,
                now,
            )
            .expect("open case");
            assert!(matches!(
                book.open_case("C1", "xj-gjj", "xj-gjj:fund", "X", vec![], "o", 1, now),
                Err(CaseError::Exists(_))
            ));
            assert!(matches!(
                book.close_case("C2", "xj-gjj", now),
                Err(CaseError::OtherAgency(_))
            ));
            book.close_case("C2", "xj-mzt", now).expect("close");
        }
        let mut f = OpenOptions::new().append(true).open(&path).expect("append");
        f.write_all(b"{\"op\":\"open\",\"case\":{\"id\":")
            .expect("write torn line");
        let book = CaseBook::open(&path).expect("reopen");
        assert!(book.get("C1").expect("C1").is_open_at(now));
        assert!(!book.get("C2").expect("C2").is_open_at(now));
        assert!(
            !book
                .get("C1")
                .expect("C1")
                .is_open_at(now + Duration::days(31))
        );
        book.open_case(
            "C3",
            "xj-mzt",
            "xj-mzt:marriage_registry",
            "XJ-MZ-0201",
            applicant(),
            "o",
            1,
            now,
        )
        .expect("journal still appends");
        drop(book);
        assert!(CaseBook::open(&path).expect("reopen").get("C3").is_some());
    }
}
