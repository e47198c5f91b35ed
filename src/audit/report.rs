//! What auditors and applicants read out of the log: the applicant-facing
//! report of every access to one person's data, anomaly detection over
//! access patterns, and export to Parquet for analysis in other tools.
//! Pure functions over entries, except the export's file write.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use chrono::{DateTime, Datelike, Duration, FixedOffset, Timelike, Weekday};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use super::{AuditEntry, AuditError};
use crate::catalog::Catalog;

/// China Standard Time: office hours and report times are local.
fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

fn local_time(entry: &AuditEntry) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(&entry.time)
        .ok()
        .map(|t| t.with_timezone(&cst()))
}

/// One line of an applicant's access report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessLine {
    pub index: u64,
    /// Local time (UTC+8), `YYYY-MM-DD HH:MM`.
    pub time: String,
    pub agency: String,
    pub agency_name: String,
    pub service_item: Option<String>,
    pub service_item_name: Option<String>,
    pub case_id: Option<String>,
    /// "allow", "deny" or "error".
    pub decision: String,
    /// Chinese labels of the fields received in clear, then masked.
    pub received: Vec<String>,
    pub received_masked: Vec<String>,
    pub withheld: Vec<String>,
}

fn label(catalog: &Catalog, qualified: &str) -> String {
    catalog
        .field(qualified)
        .map_or_else(|| qualified.to_string(), |(_, f)| f.label.clone())
}

/// The applicant-facing report: every access recorded against one
/// subject's commitment, oldest first, in the applicant's terms (agency
/// and service-item names, field labels).
pub fn subject_report(entries: &[(u64, AuditEntry)], catalog: &Catalog) -> Vec<AccessLine> {
    entries
        .iter()
        .map(|(index, e)| AccessLine {
            index: *index,
            time: local_time(e).map_or_else(
                || e.time.clone(),
                |t| t.format("%Y-%m-%d %H:%M").to_string(),
            ),
            agency: e.agency.clone(),
            agency_name: catalog
                .agency(&e.agency)
                .map_or_else(|| e.agency.clone(), |a| a.name.clone()),
            service_item: e.service_item.clone(),
            service_item_name: e
                .service_item
                .as_deref()
                .and_then(|c| catalog.item(c))
                .map(|i| i.name.clone()),
            case_id: e.case_id.clone(),
            decision: e.decision.clone(),
            received: e.fields_clear.iter().map(|f| label(catalog, f)).collect(),
            received_masked: e.fields_masked.iter().map(|f| label(catalog, f)).collect(),
            withheld: e
                .fields_withheld
                .iter()
                .map(|f| label(catalog, f))
                .collect(),
        })
        .collect()
}

/// The report as text an applicant can read.
pub fn render_report(lines: &[AccessLine]) -> String {
    if lines.is_empty() {
        return "没有记录：no agency has accessed this person's shared data.\n".to_string();
    }
    let mut out = String::new();
    for l in lines {
        let item = l
            .service_item_name
            .as_deref()
            .or(l.service_item.as_deref())
            .unwrap_or("—");
        let case = l.case_id.as_deref().unwrap_or("—");
        let what = match l.decision.as_str() {
            "allow" if l.received.is_empty() && l.received_masked.is_empty() => {
                "查询，未获取数据".to_string()
            }
            "allow" => {
                let mut s = format!("获取：{}", l.received.join("、"));
                if !l.received_masked.is_empty() {
                    s.push_str(&format!("；脱敏获取：{}", l.received_masked.join("、")));
                }
                s
            }
            _ => "请求被拒绝，未获取数据".to_string(),
        };
        out.push_str(&format!(
            "{}  {}  事项：{}（办件 {}）  {}  [#{}]\n",
            l.time, l.agency_name, item, case, what, l.index
        ));
    }
    out
}

/// Thresholds of [`anomalies`].
#[derive(Debug, Clone)]
pub struct AnomalyRules {
    /// Office hours, local time: [start, end) on weekdays.
    pub office_start_hour: u32,
    pub office_end_hour: u32,
    /// An officer's records served in one day count as unusual above
    /// `max(volume_min, volume_factor × median over all officer-days)`.
    pub volume_factor: f64,
    pub volume_min: usize,
    /// This many denials of one officer within `denial_window` is a pattern.
    pub denial_threshold: usize,
    pub denial_window: Duration,
}

impl Default for AnomalyRules {
    fn default() -> Self {
        AnomalyRules {
            office_start_hour: 8,
            office_end_hour: 20,
            volume_factor: 5.0,
            volume_min: 50,
            denial_threshold: 5,
            denial_window: Duration::hours(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A lookup without an open case of the caller for the subject and purpose.
    OutsideCase,
    /// Data served outside office hours or on a weekend.
    OffHours,
    /// An officer served far more records in a day than officers usually do.
    UnusualVolume,
    /// An officer was refused again and again within a short time.
    RepeatedDenials,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub agency: String,
    pub officer: Option<String>,
    pub detail: String,
    /// The entries that make it up.
    pub entries: Vec<u64>,
}

const OUTSIDE_CASE_CODES: &[&str] = &[
    "case_not_found",
    "case_closed",
    "case_expired",
    "subject_not_in_case",
    "purpose_mismatch",
];

fn served_data(e: &AuditEntry) -> bool {
    e.decision == "allow" && e.rows_out > 0
}

/// (agency, officer): whose pattern an anomaly is about.
type Officer = (String, Option<String>);

/// Flag access patterns an auditor should look at.
pub fn anomalies(entries: &[(u64, AuditEntry)], rules: &AnomalyRules) -> Vec<Anomaly> {
    let mut out = Vec::new();
    // Calls naming no officer are grouped by client certificate, never
    // lumped into one pseudo-officer per agency.
    let who = |e: &AuditEntry| {
        (
            e.agency.clone(),
            e.officer.clone().or_else(|| {
                Some(format!(
                    "(certificate {})",
                    e.certificate.split(':').next().unwrap_or("")
                ))
            }),
        )
    };
    for (i, e) in entries {
        if (e.route.ends_with("/lookup") || e.route.ends_with("/prefill"))
            && let Some(code) = e.code.as_deref().filter(|c| OUTSIDE_CASE_CODES.contains(c))
        {
            out.push(Anomaly {
                kind: AnomalyKind::OutsideCase,
                agency: e.agency.clone(),
                officer: e.officer.clone(),
                detail: format!("{} at {} refused: {code}", e.route, e.time),
                entries: vec![*i],
            });
        }
        if served_data(e)
            && let Some(t) = local_time(e)
        {
            let weekend = matches!(t.weekday(), Weekday::Sat | Weekday::Sun);
            if weekend || t.hour() < rules.office_start_hour || t.hour() >= rules.office_end_hour {
                out.push(Anomaly {
                    kind: AnomalyKind::OffHours,
                    agency: e.agency.clone(),
                    officer: e.officer.clone(),
                    detail: format!(
                        "data served at {} local time{}",
                        t.format("%Y-%m-%d %H:%M"),
                        if weekend { " (weekend)" } else { "" }
                    ),
                    entries: vec![*i],
                });
            }
        }
    }
    // Records served per officer and local day (rows, not requests: one
    // export of 10,000 rows weighs 10,000).
    let mut per_day: BTreeMap<(Officer, String), (u64, Vec<u64>)> = BTreeMap::new();
    for (i, e) in entries.iter().filter(|(_, e)| served_data(e)) {
        let day = local_time(e).map_or_else(
            || e.time.chars().take(10).collect(),
            |t| t.format("%Y-%m-%d").to_string(),
        );
        let slot = per_day.entry((who(e), day)).or_default();
        slot.0 += e.rows_out;
        slot.1.push(*i);
    }
    let mut counts: Vec<u64> = per_day.values().map(|(rows, _)| *rows).collect();
    counts.sort_unstable();
    let median = counts.get(counts.len() / 2).copied().unwrap_or(0);
    let limit = (rules.volume_min as u64).max((rules.volume_factor * median as f64) as u64);
    for (((agency, officer), day), (rows, ids)) in per_day {
        if rows > limit {
            out.push(Anomaly {
                kind: AnomalyKind::UnusualVolume,
                agency,
                officer,
                detail: format!("{rows} records served on {day}; the usual officer-day is {median} (limit {limit})"),
                entries: ids,
            });
        }
    }
    // Bursts of refusals per officer, in time order (entries are numbered
    // when they are appended, which can differ from when requests began).
    // A refusal for want of a case is a 404 `error`, so codes count too.
    let refused = |e: &AuditEntry| {
        e.decision == "deny"
            || e.code
                .as_deref()
                .is_some_and(|c| OUTSIDE_CASE_CODES.contains(&c))
    };
    let mut denials: HashMap<Officer, Vec<(DateTime<FixedOffset>, u64)>> = HashMap::new();
    for (i, e) in entries.iter().filter(|(_, e)| refused(e)) {
        if let Some(t) = local_time(e) {
            denials.entry(who(e)).or_default().push((t, *i));
        }
    }
    let mut bursts: Vec<Anomaly> = Vec::new();
    for ((agency, officer), mut list) in denials {
        list.sort_unstable();
        let mut start = 0;
        let mut reported_until = 0;
        for end in 0..list.len() {
            // A burst already reported is not counted again.
            if end < reported_until {
                continue;
            }
            start = start.max(reported_until);
            while start < end && list[end].0 - list[start].0 > rules.denial_window {
                start += 1;
            }
            if end + 1 - start >= rules.denial_threshold {
                // Extend to the end of this burst, report it once.
                let mut last = end;
                while last + 1 < list.len()
                    && list[last + 1].0 - list[start].0 <= rules.denial_window
                {
                    last += 1;
                }
                bursts.push(Anomaly {
                    kind: AnomalyKind::RepeatedDenials,
                    agency: agency.clone(),
                    officer: officer.clone(),
                    detail: format!(
                        "{} denials between {} and {}",
                        last + 1 - start,
                        list[start].0.format("%Y-%m-%d %H:%M"),
                        list[last].0.format("%H:%M")
                    ),
                    entries: list[start..=last].iter().map(|(_, i)| *i).collect(),
                });
                reported_until = last + 1;
            }
        }
    }
    bursts.sort_by(|a, b| a.entries.first().cmp(&b.entries.first()));
    out.extend(bursts);
    out.sort_by(|a, b| (a.kind, a.entries.first()).cmp(&(b.kind, b.entries.first())));
    out
}

/// Write entries to a Parquet file (zstd), via a temporary file renamed
/// into place. Returns the number of rows written.
pub fn export_parquet(entries: &[(u64, AuditEntry)], path: &Path) -> Result<u64, AuditError> {
    let text = |f: &dyn Fn(&AuditEntry) -> Option<&str>| -> ArrayRef {
        Arc::new(entries.iter().map(|(_, e)| f(e)).collect::<StringArray>())
    };
    let list = |f: &dyn Fn(&AuditEntry) -> &Vec<String>| -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new());
        for (_, e) in entries {
            for v in f(e) {
                b.values().append_value(v);
            }
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let u64s = |f: &dyn Fn(&AuditEntry) -> Option<u64>| -> ArrayRef {
        Arc::new(entries.iter().map(|(_, e)| f(e)).collect::<UInt64Array>())
    };
    let list_type = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    let columns: Vec<(&str, DataType, bool, ArrayRef)> = vec![
        (
            "index",
            DataType::UInt64,
            false,
            Arc::new(entries.iter().map(|(i, _)| *i).collect::<UInt64Array>()),
        ),
        ("time", DataType::Utf8, false, text(&|e| Some(&e.time))),
        ("agency", DataType::Utf8, false, text(&|e| Some(&e.agency))),
        ("role", DataType::Utf8, false, text(&|e| Some(&e.role))),
        (
            "officer",
            DataType::Utf8,
            true,
            text(&|e| e.officer.as_deref()),
        ),
        (
            "certificate",
            DataType::Utf8,
            false,
            text(&|e| Some(&e.certificate)),
        ),
        ("method", DataType::Utf8, false, text(&|e| Some(&e.method))),
        ("route", DataType::Utf8, false, text(&|e| Some(&e.route))),
        (
            "status",
            DataType::UInt32,
            false,
            Arc::new(
                entries
                    .iter()
                    .map(|(_, e)| u32::from(e.status))
                    .collect::<UInt32Array>(),
            ),
        ),
        (
            "service_item",
            DataType::Utf8,
            true,
            text(&|e| e.service_item.as_deref()),
        ),
        (
            "case_id",
            DataType::Utf8,
            true,
            text(&|e| e.case_id.as_deref()),
        ),
        (
            "dataset",
            DataType::Utf8,
            true,
            text(&|e| e.dataset.as_deref()),
        ),
        (
            "dataset_version",
            DataType::UInt64,
            true,
            u64s(&|e| e.dataset_version),
        ),
        (
            "fields_clear",
            list_type.clone(),
            false,
            list(&|e| &e.fields_clear),
        ),
        (
            "fields_masked",
            list_type.clone(),
            false,
            list(&|e| &e.fields_masked),
        ),
        (
            "fields_withheld",
            list_type,
            false,
            list(&|e| &e.fields_withheld),
        ),
        (
            "subject_commitment",
            DataType::Utf8,
            true,
            text(&|e| e.subject_commitment.as_deref()),
        ),
        (
            "decision",
            DataType::Utf8,
            false,
            text(&|e| Some(&e.decision)),
        ),
        ("code", DataType::Utf8, true, text(&|e| e.code.as_deref())),
        (
            "reason",
            DataType::Utf8,
            true,
            text(&|e| e.reason.as_deref()),
        ),
        ("rule", DataType::Utf8, true, text(&|e| e.rule.as_deref())),
        (
            "policy_version",
            DataType::Utf8,
            true,
            text(&|e| e.policy_version.as_deref()),
        ),
        (
            "response_sha256",
            DataType::Utf8,
            true,
            text(&|e| e.response_sha256.as_deref()),
        ),
        (
            "bytes_out",
            DataType::UInt64,
            false,
            u64s(&|e| Some(e.bytes_out)),
        ),
        (
            "rows_out",
            DataType::UInt64,
            false,
            u64s(&|e| Some(e.rows_out)),
        ),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, t, null, _)| Field::new(*n, t.clone(), *null))
            .collect::<Vec<_>>(),
    ));
    let encode = |e: String| AuditError::Io {
        action: "write parquet export",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, _, _, a)| a).collect(),
    )
    .map_err(|e| encode(e.to_string()))?;
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(|source| AuditError::Io {
        action: "create",
        path: tmp.clone(),
        source,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut w =
        ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| encode(e.to_string()))?;
    w.write(&batch).map_err(|e| encode(e.to_string()))?;
    let file = w.into_inner().map_err(|e| encode(e.to_string()))?;
    file.sync_all().map_err(|source| AuditError::Io {
        action: "sync",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| AuditError::Io {
        action: "rename export into",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(entries.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time: &str, officer: &str, decision: &str, code: Option<&str>) -> AuditEntry {
        AuditEntry {
            time: time.into(),
            agency: "xj-mzt".into(),
            role: "xj-mzt:marriage_registry".into(),
            officer: Some(officer.into()),
            route: "/v1/cases/{case}/lookup".into(),
            service_item: Some("XJ-MZ-0201".into()),
            case_id: Some("MZ-1".into()),
            fields_clear: vec!["population.name".into()],
            fields_withheld: vec!["population.phone".into()],
            decision: decision.into(),
            code: code.map(str::to_string),
            rows_out: u64::from(decision == "allow"),
            ..AuditEntry::default()
        }
    }

    fn catalog() -> Catalog {
        Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).expect("catalogue")
    }

    #[test]
    fn report_speaks_the_applicants_language() {
        // 02:00 UTC = 10:00 in Ürümqi office time (UTC+8).
        let lines = subject_report(
            &[(3, entry("2026-11-26T02:00:00.000000Z", "o1", "allow", None))],
            &catalog(),
        );
        assert_eq!(lines[0].time, "2026-11-26 10:00");
        assert_eq!(lines[0].agency_name, "新疆维吾尔自治区民政厅");
        assert_eq!(
            lines[0].service_item_name.as_deref(),
            Some("内地居民结婚登记")
        );
        assert_eq!(lines[0].received, vec!["姓名"]);
        assert_eq!(lines[0].withheld, vec!["联系电话"]);
        let text = render_report(&lines);
        assert!(
            text.contains("新疆维吾尔自治区民政厅")
                && text.contains("获取：姓名")
                && text.contains("[#3]"),
            "{text}"
        );
        assert!(render_report(&[]).contains("没有记录"));
    }

    #[test]
    fn bursts_are_reported_once_in_time_order() {
        // Appended out of time order; a long stream is one burst, not several.
        let mut entries: Vec<(u64, AuditEntry)> = (0..12u64)
            .map(|k| {
                (
                    k,
                    entry(
                        &format!("2026-11-26T04:{:02}:00.000000Z", (11 - k) * 2),
                        "prober",
                        "deny",
                        Some("fields_denied"),
                    ),
                )
            })
            .collect();
        // A refusal for want of a case is logged as an error (404): it counts.
        entries.push((
            12,
            AuditEntry {
                decision: "error".into(),
                ..entry(
                    "2026-11-26T04:30:00.000000Z",
                    "prober",
                    "error",
                    Some("case_not_found"),
                )
            },
        ));
        let found = anomalies(&entries, &AnomalyRules::default());
        let bursts: Vec<_> = found
            .iter()
            .filter(|a| a.kind == AnomalyKind::RepeatedDenials)
            .collect();
        assert_eq!(bursts.len(), 1, "{bursts:?}");
        assert_eq!(bursts[0].entries.len(), 13);
        assert_eq!(bursts[0].entries[0], 11, "earliest first");
    }

    #[test]
    fn anomalies_are_flagged() {
        let mut entries = Vec::new();
        let mut i = 0u64;
        let mut push = |e: AuditEntry| {
            entries.push((i, e));
            i += 1;
        };
        // Thursday 2026-11-26, office hours: 10:00 local = 02:00Z. Ten officers, 3 lookups each.
        for o in 0..10 {
            for k in 0..3 {
                push(entry(
                    &format!("2026-11-26T02:{o:02}:{k:02}.000000Z"),
                    &format!("o{o}"),
                    "allow",
                    None,
                ));
            }
        }
        // One officer serves 200 records that day.
        for k in 0..200 {
            push(entry(
                &format!("2026-11-26T03:{:02}:{:02}.000000Z", k / 60, k % 60),
                "busy",
                "allow",
                None,
            ));
        }
        // 23:30 local on a weekday, and Saturday morning.
        push(entry("2026-11-26T15:30:00.000000Z", "night", "allow", None));
        push(entry(
            "2026-11-28T02:00:00.000000Z",
            "weekend",
            "allow",
            None,
        ));
        // Six denials within 20 minutes, one of them outside any case.
        for k in 0..6 {
            push(entry(
                &format!("2026-11-26T04:{:02}:00.000000Z", k * 4),
                "prober",
                "deny",
                Some(if k == 0 {
                    "case_not_found"
                } else {
                    "fields_denied"
                }),
            ));
        }
        let found = anomalies(&entries, &AnomalyRules::default());
        let of = |kind: AnomalyKind| found.iter().filter(|a| a.kind == kind).collect::<Vec<_>>();
        assert_eq!(of(AnomalyKind::UnusualVolume).len(), 1);
        assert_eq!(
            of(AnomalyKind::UnusualVolume)[0].officer.as_deref(),
            Some("busy")
        );
        assert_eq!(of(AnomalyKind::UnusualVolume)[0].entries.len(), 200);
        let off: Vec<_> = of(AnomalyKind::OffHours)
            .iter()
            .map(|a| a.officer.clone().unwrap_or_default())
            .collect();
        assert_eq!(off, vec!["night", "weekend"]);
        assert_eq!(of(AnomalyKind::OutsideCase).len(), 1);
        let bursts = of(AnomalyKind::RepeatedDenials);
        assert_eq!(bursts.len(), 1, "{bursts:?}");
        assert_eq!(bursts[0].entries.len(), 6);
        // Nothing else: ordinary officers raise nothing.
        assert_eq!(found.len(), 1 + 2 + 1 + 1);
    }

    #[test]
    fn export_writes_every_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.parquet");
        let entries: Vec<(u64, AuditEntry)> = (0..5)
            .map(|i| (i, entry("2026-11-26T02:00:00.000000Z", "o", "allow", None)))
            .collect();
        assert_eq!(export_parquet(&entries, &path).expect("export"), 5);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(&path).expect("open"),
        )
        .expect("parquet")
        .build()
        .expect("reader");
        let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
        assert_eq!(rows, 5);
    }
}
