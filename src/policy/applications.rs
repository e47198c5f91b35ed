//! Conditional sharing (有条件共享), apply and approve: an agency applies
//! for conditional fields of one dataset for a purpose, with a validity and
//! optionally a row filter; the providing agency's steward approves or
//! refuses with a reason. Approved applications join the policy (they are
//! what a conditional field needs besides a rule) and are the grants bulk
//! exports will require. Kept in memory, journalled to a JSON-lines file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::Application;
use crate::journal::{self, Appender};

#[derive(Debug, thiserror::Error)]
pub enum ApplicationError {
    #[error("application journal {path}: {reason}")]
    Journal { path: PathBuf, reason: String },
    #[error("there is no application `{0}`")]
    NotFound(String),
    #[error("application `{id}` is for data of `{provider}`: only its steward decides")]
    NotProvider { id: String, provider: String },
    #[error("application `{0}` was already decided")]
    AlreadyDecided(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Refused,
}

/// One application and, once decided, its decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharingApplication {
    pub id: String,
    /// What was applied for (flattened: one JSON object).
    #[serde(flatten)]
    pub request: NewApplication,
    pub applied_at: DateTime<Utc>,
    pub status: Status,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_reason: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum JournalLine {
    Apply {
        application: SharingApplication,
    },
    Decide {
        id: String,
        status: Status,
        by: String,
        at: DateTime<Utc>,
        reason: Option<String>,
    },
}

/// What an agency applies for, as validated by the caller against the
/// catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewApplication {
    /// The applying agency.
    pub agency: String,
    pub dataset: String,
    /// The agency providing `dataset`, whose steward decides.
    pub provider: String,
    /// Qualified conditional fields of `dataset`.
    pub fields: Vec<String>,
    /// A service item code or `purpose:<category>`.
    pub purpose: String,
    pub valid_from: NaiveDate,
    pub valid_until: NaiveDate,
    /// Row filter: the approval covers only subjects whose area code
    /// starts with this.
    pub area_prefix: Option<String>,
    /// Why the applicant needs the data (its legal basis).
    pub reason: String,
}

/// The applications in a journal's complete lines.
fn replay(bytes: &[u8]) -> Result<BTreeMap<String, SharingApplication>, String> {
    let mut apps = BTreeMap::new();
    for (line_no, line) in journal::complete_lines(bytes) {
        match serde_json::from_slice::<JournalLine>(line)
            .map_err(|e| format!("line {line_no}: {e}"))?
        {
            JournalLine::Apply { application } => {
                apps.insert(application.id.clone(), application);
            }
            JournalLine::Decide {
                id,
                status,
                by,
                at,
                reason,
            } => {
                if let Some(a) = apps.get_mut(&id) {
                    a.status = status;
                    a.decided_by = Some(by);
                    a.decided_at = Some(at);
                    a.decision_reason = reason;
                }
            }
        }
    }
    Ok(apps)
}

/// Applications approved in a journal, read without opening it for writing
/// (beside a running broker); none if there is no journal.
pub fn read_approved(path: &Path) -> Result<Vec<Application>, ApplicationError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ApplicationError::Journal {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    let apps = replay(&bytes).map_err(|reason| ApplicationError::Journal {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(apps
        .values()
        .filter(|a| a.status == Status::Approved)
        .map(as_policy)
        .collect())
}

/// An approved application as the policy uses it: in force from the later
/// of the day asked for and the day of the approval (China Standard Time).
fn as_policy(a: &SharingApplication) -> Application {
    Application {
        id: a.id.clone(),
        agency: a.request.agency.clone(),
        fields: a.request.fields.clone(),
        purpose: a.request.purpose.clone(),
        approved_by: a.request.provider.clone(),
        approved_on: a.decided_at.map_or(a.request.valid_from, |t| {
            a.request.valid_from.max(super::local_date(t))
        }),
        valid_until: a.request.valid_until,
        area_prefix: a.request.area_prefix.clone(),
    }
}

pub struct ApplicationBook {
    path: PathBuf,
    // std Mutex: no await while held; each change is an append + fsync.
    inner: Mutex<(BTreeMap<String, SharingApplication>, Appender)>,
}

impl ApplicationBook {
    /// Open the journal, replaying every complete line (a torn tail is cut).
    pub fn open(path: &Path) -> Result<ApplicationBook, ApplicationError> {
        let (apps, appender) = journal::open_replayed(path, "application journal", replay)
            .map_err(|reason| ApplicationError::Journal {
                path: path.to_path_buf(),
                reason,
            })?;
        Ok(ApplicationBook {
            path: path.to_path_buf(),
            inner: Mutex::new((apps, appender)),
        })
    }

    fn append(&self, journal: &mut Appender, line: &JournalLine) -> Result<(), ApplicationError> {
        let bytes = serde_json::to_vec(line).expect("a journal line serialises");
        journal
            .append(&bytes)
            .map_err(|e| ApplicationError::Journal {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// File an application: durable when this returns.
    pub fn apply(
        &self,
        new: NewApplication,
        now: DateTime<Utc>,
    ) -> Result<SharingApplication, ApplicationError> {
        let mut guard = self.inner.lock().expect("application book lock poisoned");
        let (apps, journal) = &mut *guard;
        let application = SharingApplication {
            id: format!("SA-{:06}", apps.len() + 1),
            request: new,
            applied_at: now,
            status: Status::Pending,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
        };
        self.append(
            journal,
            &JournalLine::Apply {
                application: application.clone(),
            },
        )?;
        apps.insert(application.id.clone(), application.clone());
        Ok(application)
    }

    /// Approve or refuse, as `steward_agency`: only the providing agency
    /// decides, and only once. Durable when this returns.
    pub fn decide(
        &self,
        id: &str,
        steward_agency: &str,
        approve: bool,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<SharingApplication, ApplicationError> {
        let mut guard = self.inner.lock().expect("application book lock poisoned");
        let (apps, journal) = &mut *guard;
        let app = apps
            .get(id)
            .ok_or_else(|| ApplicationError::NotFound(id.to_string()))?;
        if app.request.provider != steward_agency {
            return Err(ApplicationError::NotProvider {
                id: id.to_string(),
                provider: app.request.provider.clone(),
            });
        }
        if app.status != Status::Pending {
            return Err(ApplicationError::AlreadyDecided(id.to_string()));
        }
        let status = if approve {
            Status::Approved
        } else {
            Status::Refused
        };
        let line = JournalLine::Decide {
            id: id.to_string(),
            status,
            by: steward_agency.to_string(),
            at: now,
            reason: reason.clone(),
        };
        self.append(journal, &line)?;
        let app = apps.get_mut(id).expect("checked above, under the lock");
        app.status = status;
        app.decided_by = Some(steward_agency.to_string());
        app.decided_at = Some(now);
        app.decision_reason = reason;
        Ok(app.clone())
    }

    /// The applications an agency filed or must decide, newest first.
    pub fn for_agency(&self, agency: &str) -> Vec<SharingApplication> {
        let guard = self.inner.lock().expect("application book lock poisoned");
        let mut out: Vec<SharingApplication> = guard
            .0
            .values()
            .filter(|a| a.request.agency == agency || a.request.provider == agency)
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            b.applied_at
                .cmp(&a.applied_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        out
    }

    /// Approved applications, as the policy uses them.
    pub fn approved(&self) -> Vec<Application> {
        let guard = self.inner.lock().expect("application book lock poisoned");
        guard
            .0
            .values()
            .filter(|a| a.status == Status::Approved)
            .map(as_policy)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_app() -> NewApplication {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        NewApplication {
            agency: "xj-mzt".into(),
            dataset: "population".into(),
            provider: "xj-gat".into(),
            fields: vec!["population.ethnicity".into()],
            purpose: "XJ-MZ-0201".into(),
            valid_from: d("2026-01-01"),
            valid_until: d("2027-12-31"),
            area_prefix: Some("6531".into()),
            reason: "民族 is a field of the marriage register".into(),
        }
    }

    #[test]
    fn apply_decide_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("applications.jsonl");
        let now = Utc::now();
        {
            let book = ApplicationBook::open(&path).expect("open");
            let a = book.apply(new_app(), now).expect("apply");
            assert_eq!((a.id.as_str(), a.status), ("SA-000001", Status::Pending));
            assert!(book.approved().is_empty());
            assert!(matches!(
                book.decide("SA-000001", "xj-mzt", true, None, now),
                Err(ApplicationError::NotProvider { .. })
            ));
            let b = book.apply(new_app(), now).expect("apply");
            book.decide(&b.id, "xj-gat", false, Some("no legal basis".into()), now)
                .expect("refuse");
            book.decide("SA-000001", "xj-gat", true, None, now)
                .expect("approve");
            assert!(matches!(
                book.decide("SA-000001", "xj-gat", false, None, now),
                Err(ApplicationError::AlreadyDecided(_))
            ));
        }
        let book = ApplicationBook::open(&path).expect("reopen");
        let approved = book.approved();
        assert_eq!(approved.len(), 1);
        assert_eq!(
            (approved[0].id.as_str(), approved[0].approved_by.as_str()),
            ("SA-000001", "xj-gat")
        );
        let refused = book
            .for_agency("xj-mzt")
            .into_iter()
            .find(|a| a.id == "SA-000002")
            .expect("refused one");
        assert_eq!(refused.status, Status::Refused);
        assert_eq!(refused.decision_reason.as_deref(), Some("no legal basis"));
        assert_eq!(
            book.for_agency("xj-gat").len(),
            2,
            "the provider sees what it must decide"
        );
        assert!(book.for_agency("xj-gjj").is_empty());
    }
}
