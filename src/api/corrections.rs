//! Corrections over the API (Article 17): the handling agency files a
//! dispute of a value it was served for its open case; the field's owning
//! agency lists what is routed to it and confirms or fixes; the filer may
//! withdraw. Lookups and pre-fills mark a disputed value (`mark_disputed`).
//! A child of `routes`: it shares that module's error shape and helpers.

use std::sync::Arc;

use chrono::Utc;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    ApiError, Reply, SubjectRef, blocking, commitment, invalid, record_refusal, record_served,
    table,
};
use crate::api::AppState;
use crate::audit::AuditEntry;
use crate::catalog::{Agency, Catalog};
use crate::ingest::{SUFFIX_AS_OF, SUFFIX_RECORD, SUFFIX_SOURCE};
use crate::policy::corrections::{
    Correction, CorrectionError, Disputes, NewCorrection, Served, State, Verdict,
};
use crate::policy::{Access, authorize_lookup, mask::mask};

/// The longest reason, claimed or fixed value accepted, in characters.
const MAX_TEXT_CHARS: usize = 500;

/// Mark a served field as disputed when an open correction (or a fix not yet
/// pulled) covers the value served now. `value` is the stored value.
pub(super) fn mark_disputed(
    field: &mut Value,
    disputes: Option<&Disputes>,
    qualified: &str,
    value: Option<&str>,
) {
    if let Some(mark) = disputed(disputes, qualified, value) {
        field["disputed"] = serde_json::to_value(mark).expect("a dispute mark serialises");
    }
}

/// The `disputed` member of a served field, when an open correction (or a
/// fix not yet pulled) covers `value`, the stored value served now.
pub(super) fn disputed<'a>(
    disputes: Option<&'a Disputes>,
    qualified: &str,
    value: Option<&str>,
) -> Option<DisputedMark<'a>> {
    let (disputes, value) = (disputes?, value?);
    disputes
        .iter()
        .find(|d| d.field == qualified && d.covers(value))
        .map(|d| DisputedMark {
            correction: &d.correction,
            since: d.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            state: d.state.as_str(),
        })
}

/// How a served value is marked as disputed; members in the order of their
/// names, as canonical JSON has them.
#[derive(Serialize)]
pub(super) struct DisputedMark<'a> {
    correction: &'a str,
    since: String,
    state: &'static str,
}

/// A dispute as the handling agency files it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCorrection {
    subject: SubjectRef,
    dataset: String,
    field: String,
    /// The value as it is served to the caller now (masked if it is).
    disputed_value: String,
    /// What the applicant says the value is.
    #[serde(default)]
    claimed_value: Option<String>,
    reason: String,
}

/// Trimmed text of 1 to `MAX_TEXT_CHARS` characters, or a 422 naming `what`.
fn text(value: &str, what: &str) -> Result<String, ApiError> {
    let t = value.trim();
    if t.is_empty() || t.chars().count() > MAX_TEXT_CHARS {
        return Err(invalid(format!(
            "`{what}` is 1 to {MAX_TEXT_CHARS} characters"
        )));
    }
    Ok(t.to_string())
}

pub(super) async fn file(
    state: &Arc<AppState>,
    agency: &Agency,
    case_id: &str,
    body: FileCorrection,
    entry: &mut AuditEntry,
) -> Result<Reply, ApiError> {
    let policy = state.policy();
    entry.policy_version = Some(policy.version.clone());
    if state.catalog.dataset(&body.dataset).is_some() {
        entry.dataset = Some(body.dataset.clone());
    }
    let subject = body.subject.resolve()?;
    if let Some(case) = state.cases.get(&agency.id, case_id) {
        entry.service_item = Some(case.service_item.clone());
        entry.role.clone_from(&case.role);
        entry.officer.get_or_insert(case.officer);
    }
    let reason = text(&body.reason, "reason")?;
    let claimed = body
        .claimed_value
        .as_deref()
        .map(|c| text(c, "claimed_value"))
        .transpose()?;
    if body.disputed_value.is_empty() {
        return Err(invalid(
            "`disputed_value` is the value as it is served to you now",
        ));
    }
    // The same checks as a lookup of this one field: an open case of the
    // caller, the subject its applicant, the field readable for its purpose.
    let authorized = authorize_lookup(
        &policy,
        &state.catalog,
        &state.cases,
        agency,
        case_id,
        &subject,
        &body.dataset,
        Some(std::slice::from_ref(&body.field)),
        None,
        Utc::now(),
    )
    .map_err(|refusal| record_refusal(state, entry, &body.dataset, &subject.key, refusal))?;
    entry.subject_commitment = Some(commitment(state, &subject.key).await?);
    let (name, access, rule) = authorized
        .granted()
        .first()
        .cloned()
        .expect("an authorized lookup grants at least one field");
    let (dataset, field) = state
        .catalog
        .dataset(authorized.dataset())
        .and_then(|d| d.field(&name).map(|f| (d, f)))
        .expect("authorized fields exist");
    entry.rule = Some(rule);
    let loaded = table(&state.tables(), dataset.subject)?;
    entry.dataset_version = Some(loaded.manifest.version);
    let row = loaded.row(&subject.key).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "subject_not_found",
            format!(
                "no agency has shared a record of this subject in `{}`",
                dataset.id
            ),
        )
    })?;
    let qualified = &field.qualified;
    let stored = row.get(qualified).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_value",
            format!(
                "no value of `{qualified}` is shared for this subject: there is nothing to dispute (the applicant supplies it)"
            ),
        )
    })?;
    let served = match access {
        Access::Clear => stored.to_string(),
        Access::Masked(kind) => mask(kind, stored),
    };
    if body.disputed_value != served {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_value",
            format!(
                "`disputed_value` is not the value of `{qualified}` served now (version {}); look it up again",
                loaded.manifest.version
            ),
        ));
    }
    // Compared with what the caller was served only: a masked reader must
    // not learn whether a guess equals the stored value.
    if claimed.as_deref() == Some(served.as_str()) {
        return Err(invalid(
            "`claimed_value` is the value served now: there is nothing to dispute",
        ));
    }
    let case = authorized.case();
    let cell = |suffix: &str| row.get(&format!("{qualified}{suffix}")).map(str::to_string);
    let new = NewCorrection {
        subject: subject.clone(),
        field: qualified.clone(),
        owner: field.authority.clone(),
        agency: agency.id.clone(),
        officer: entry.officer.clone(),
        case_id: case.id.clone(),
        service_item: case.service_item.clone(),
        disputed_value: served,
        access: match access {
            Access::Clear => Served::Clear,
            Access::Masked(_) => Served::Masked,
        },
        source: cell(SUFFIX_SOURCE),
        // As in a response: a masked value does not name its record.
        record: match access {
            Access::Clear => cell(SUFFIX_RECORD),
            Access::Masked(_) => None,
        },
        as_of: cell(SUFFIX_AS_OF),
        dataset_version: loaded.manifest.version,
        claimed_value: claimed,
        reason,
    };
    // The response repeats the value served and its provenance.
    record_served(entry, qualified, access);
    entry.rows_out = 1;
    let (st, stored) = (state.clone(), stored.to_string());
    let correction = blocking(move || st.corrections.file(new, &stored, Utc::now()))
        .await?
        .map_err(correction_error)?;
    Ok(Reply {
        status: StatusCode::CREATED,
        body: json!({ "correction": view(&state.catalog, &correction, &agency.id) }).into(),
        sealed: false,
    })
}

/// A correction as `agency` sees it. The owner is not told the filer's case
/// number (another agency's case does not exist for it); the filer sees a
/// fixed value masked if it was served the disputed one masked.
fn view(catalog: &Catalog, c: &Correction, agency: &str) -> Value {
    let filer = c.filed.agency == agency;
    let field = catalog.field(&c.filed.field).map(|(_, f)| f);
    let fixed_value = match (&c.fixed_value, c.filed.access, field) {
        (Some(v), Served::Masked, Some(f)) if filer && c.filed.owner != agency => {
            Some(mask(f.mask, v))
        }
        (v, _, _) => v.clone(),
    };
    let subject = json!({ "kind": c.filed.subject.kind.as_str(), "key": c.filed.subject.key });
    json!({
        "id": c.id,
        "state": c.state.as_str(),
        "subject": subject,
        "field": c.filed.field,
        "label": field.map(|f| f.label.as_str()),
        "owner": c.filed.owner,
        "agency": c.filed.agency,
        "officer": c.filed.officer,
        "case_id": filer.then_some(c.filed.case_id.as_str()),
        "service_item": c.filed.service_item,
        "disputed_value": c.filed.disputed_value,
        "access": match c.filed.access { Served::Clear => "clear", Served::Masked => "masked" },
        "source": c.filed.source,
        "record": c.filed.record,
        "as_of": c.filed.as_of,
        "dataset_version": c.filed.dataset_version,
        "claimed_value": c.filed.claimed_value,
        "reason": c.filed.reason,
        "filed_at": c.filed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "decided_by": c.decided_by,
        "decided_officer": c.decided_officer,
        "decided_at": c.decided_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "decision_reason": c.decision_reason,
        "fixed_value": fixed_value,
        "fixed_in_version": c.fixed_in_version,
    })
}

/// `GET /v1/corrections?state=&limit=`: routed to the caller (it owns the
/// field) or filed by it, oldest first.
pub(super) fn list(state: &AppState, agency: &Agency, query: &str) -> Result<Reply, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", m);
    let (mut wanted, mut limit) = (None, 1000usize);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "state" => {
                wanted = Some(State::parse(v).ok_or_else(|| {
                    bad("`state` is one of open, confirmed, fixed, withdrawn".into())
                })?)
            }
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| bad("`limit` is a number from 1 to 10000".into()))?
            }
            _ => return Err(bad("unknown query parameter".into())),
        }
    }
    let found = state.corrections.for_agency(&agency.id, wanted, limit);
    let truncated = found.len() >= limit;
    let corrections: Vec<Value> = found
        .iter()
        .map(|c| view(&state.catalog, c, &agency.id))
        .collect();
    Ok(Reply {
        status: StatusCode::OK,
        body: json!({ "corrections": corrections, "truncated": truncated }).into(),
        sealed: false,
    })
}

/// What the owner (confirm, fix) or the filer (withdraw) says.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Decision {
    #[serde(default)]
    reason: Option<String>,
    /// Fix only: the corrected value, as now held at source.
    #[serde(default)]
    fixed_value: Option<String>,
}

pub(super) async fn decide(
    state: &Arc<AppState>,
    agency: &Agency,
    id: &str,
    verb: &str,
    body: Decision,
    entry: &mut AuditEntry,
) -> Result<Reply, ApiError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(invalid(
            "a correction id is ASCII letters, digits and `-`, such as `CR-000001`",
        ));
    }
    let reason = body
        .reason
        .as_deref()
        .map(|r| text(r, "reason"))
        .transpose()?;
    let verdict = match verb {
        "confirm" => {
            if reason.is_none() {
                return Err(invalid(
                    "a confirmation states its `reason` (why the served value is right)",
                ));
            }
            Verdict::Confirm
        }
        "fix" => Verdict::Fix {
            fixed_value: body
                .fixed_value
                .as_deref()
                .map(|v| text(v, "fixed_value"))
                .transpose()?,
        },
        _ => Verdict::Withdraw,
    };
    if body.fixed_value.is_some() && !matches!(verdict, Verdict::Fix { .. }) {
        return Err(invalid("only a fix states a `fixed_value`"));
    }
    if let Some(c) = state.corrections.get(id) {
        entry.dataset = c.filed.field.split_once('.').map(|(d, _)| d.to_string());
        entry.subject_commitment = state.audit.lookup_commitment(&c.filed.subject.key);
    }
    let (st, agency_id, id, officer) = (
        state.clone(),
        agency.id.clone(),
        id.to_string(),
        entry.officer.clone(),
    );
    let correction = blocking(move || {
        st.corrections
            .decide(&id, &agency_id, officer, verdict, reason, Utc::now())
    })
    .await?
    .map_err(correction_error)?;
    Ok(Reply {
        status: StatusCode::OK,
        body: json!({ "correction": view(&state.catalog, &correction, &agency.id) }).into(),
        sealed: false,
    })
}

fn correction_error(e: CorrectionError) -> ApiError {
    match e {
        CorrectionError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "correction_not_found", e.to_string())
        }
        CorrectionError::AlreadyOpen(_) => {
            ApiError::new(StatusCode::CONFLICT, "already_disputed", e.to_string())
        }
        CorrectionError::NotOwner { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "not_owner", e.to_string())
        }
        CorrectionError::NotFiler { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "not_filer", e.to_string())
        }
        CorrectionError::AlreadyDecided { .. } => {
            ApiError::new(StatusCode::CONFLICT, "already_decided", e.to_string())
        }
        CorrectionError::Journal { .. } => {
            tracing::error!(error = %e, "correction journal write failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the correction journal cannot be written; try again later",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_trimmed_and_bounded() {
        assert_eq!(text("  户口簿  ", "reason").expect("ok"), "户口簿");
        for bad in ["", "   ", &"字".repeat(MAX_TEXT_CHARS + 1)] {
            let e = text(bad, "reason").expect_err("refused");
            assert_eq!(
                (e.status, e.code),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
            );
            assert!(e.message.contains("`reason`"), "{}", e.message);
        }
        assert!(text(&"字".repeat(MAX_TEXT_CHARS), "reason").is_ok());
    }
}
