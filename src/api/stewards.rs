//! Steward decisions into the audit log. A link, reject, merge or split a
//! steward records with `sharebroker review` is a row of the store table
//! `review.decisions`; the CLI cannot write the audit log the broker holds,
//! so the running broker appends one entry per new row when it polls the
//! store (and at start, for rows recorded while it was down). Decision
//! `steward`, the steward as officer, what was decided in `rule`, the note
//! in `reason`; no subject commitment (the entry names subject ids and
//! record ids, never a person's identifier), so it does not appear in a
//! person's access report. Each row is logged at least once: the count of
//! rows logged is kept beside the log after their entries are durable.

use std::path::{Path, PathBuf};

use super::AppState;
use crate::audit::{AuditEntry, AuditSink};
use crate::review::DecisionRow;

/// The file beside the audit log holding how many decision rows are in it.
const LOGGED_FILE: &str = "steward-decisions.logged";

/// Why steward decisions could not be logged (they are tried again at
/// the next poll).
#[derive(Debug, thiserror::Error)]
pub enum StewardLogError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: `{text}` is not a count of decisions")]
    Count { path: PathBuf, text: String },
}

/// The audit entry of one steward decision.
pub fn decision_entry(row: &DecisionRow) -> AuditEntry {
    let what = match row.decision.as_str() {
        "link" => format!(
            "link record {}/{} to {}",
            row.source, row.record_id, row.subject_id
        ),
        "reject" => format!("record {}/{} matches no subject", row.source, row.record_id),
        "merge" => format!("merge {} into {}", row.record_id, row.subject_id),
        "unmerge" => format!("split {} off again", row.record_id),
        other => format!(
            "{other} {}/{} {}",
            row.source, row.record_id, row.subject_id
        ),
    };
    // As request entries write their time, so that time bounds compare.
    let time = chrono::DateTime::parse_from_rfc3339(&row.decided_at)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        })
        .unwrap_or_else(|_| row.decided_at.clone());
    AuditEntry {
        time,
        agency: String::new(),
        role: "steward".into(),
        officer: Some(row.steward.clone()),
        officer_token: None,
        certificate: String::new(),
        method: "CLI".into(),
        route: format!("review {}", row.decision),
        status: 0,
        service_item: None,
        case_id: None,
        dataset: None,
        dataset_version: None,
        fields_clear: Vec::new(),
        fields_masked: Vec::new(),
        fields_withheld: Vec::new(),
        subject_commitment: None,
        decision: "steward".into(),
        code: None,
        reason: (!row.note.is_empty()).then(|| row.note.clone()),
        rule: Some(what),
        policy_version: None,
        response_sha256: None,
        bytes_out: 0,
        rows_out: 0,
    }
}

fn read_count(path: &Path) -> Result<usize, StewardLogError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_err(|_| StewardLogError::Count {
            path: path.to_path_buf(),
            text: text.trim().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(StewardLogError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Write the count durably: a temporary file, fsync, rename, fsync the
/// directory.
fn write_count(path: &Path, n: usize) -> Result<(), StewardLogError> {
    let io = |source| StewardLogError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        std::io::Write::write_all(&mut f, format!("{n}\n").as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

impl AppState {
    /// Append an audit entry for every steward decision not yet in the log;
    /// how many.
    pub async fn log_steward_decisions(&self) -> Result<usize, StewardLogError> {
        let _one_at_a_time = self.logging_decisions.lock().await;
        let path = self.audit_dir.join(LOGGED_FILE);
        let (store, p) = (self.store.clone(), path.clone());
        let (rows, logged) = tokio::task::spawn_blocking(move || {
            Ok::<_, StewardLogError>((crate::review::load_decision_rows(&store)?, read_count(&p)?))
        })
        .await
        .map_err(|e| StewardLogError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
        if logged > rows.len() {
            tracing::warn!(
                logged,
                rows = rows.len(),
                "fewer steward decisions in the store than already logged: is this the store the audit log belongs to?"
            );
        }
        let new = rows.get(logged..).unwrap_or_default();
        for row in new {
            AuditSink::append(&*self.audit, decision_entry(row)).await?;
        }
        if !new.is_empty() {
            let (p, n) = (path.clone(), rows.len());
            tokio::task::spawn_blocking(move || write_count(&p, n))
                .await
                .map_err(|e| StewardLogError::Io {
                    path,
                    source: std::io::Error::other(e.to_string()),
                })??;
            tracing::info!(decisions = new.len(), "steward decisions logged");
        }
        Ok(new.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(decision: &str, subject: &str) -> DecisionRow {
        DecisionRow {
            source: "mzt-marriage".into(),
            record_id: "MZ1".into(),
            decision: decision.into(),
            subject_id: subject.into(),
            steward: "王芳".into(),
            note: String::new(),
            decided_at: "2026-11-28T08:00:00+08:00".into(),
        }
    }

    #[test]
    fn an_entry_says_what_was_decided_by_whom_and_when() {
        let e = decision_entry(&row("link", "P-00000001"));
        assert_eq!(e.route, "review link");
        assert_eq!(
            e.rule.as_deref(),
            Some("link record mzt-marriage/MZ1 to P-00000001")
        );
        assert_eq!(e.decision, "steward");
        assert_eq!(e.officer.as_deref(), Some("王芳"));
        assert_eq!(e.reason, None, "an empty note is no reason");
        assert_eq!(e.time, "2026-11-28T00:00:00.000000Z");
        assert_eq!(e.subject_commitment, None);
        let e = decision_entry(&row("reject", ""));
        assert_eq!(
            e.rule.as_deref(),
            Some("record mzt-marriage/MZ1 matches no subject")
        );
    }

    #[test]
    fn the_count_survives_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(LOGGED_FILE);
        assert_eq!(read_count(&path).expect("missing is zero"), 0);
        write_count(&path, 7).expect("write");
        assert_eq!(read_count(&path).expect("read"), 7);
        std::fs::write(&path, "seven").expect("write");
        let e = read_count(&path).unwrap_err().to_string();
        assert!(e.contains("`seven` is not a count"), "{e}");
    }
}
