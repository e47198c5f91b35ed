//! Prometheus metrics of the API: requests by route and status, request
//! latency, rate-limited requests; rendered together with the audit
//! writer's counters, the policy version and the loaded table versions.
//! Labels are route templates, status codes and agency ids: never a path,
//! an identifier or anything else a client chose.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::audit::{AuditStats, BATCH_SIZE_BUCKETS, COMMIT_MICROS_BUCKETS, MicrosHistogram};

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS_SECS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    /// Non-cumulative bucket counts; the last slot is above every bound.
    buckets: [u64; LATENCY_BUCKETS_SECS.len() + 1],
    sum_secs: f64,
    count: u64,
}

/// The API's own counters.
#[derive(Default)]
pub struct Metrics {
    // std Mutex: held for one map update per request, never across an `.await`.
    routes: Mutex<HashMap<String, RouteStats>>,
    rate_limited: Mutex<BTreeMap<String, u64>>,
    /// Exports refused by a cap, by agency and cap (`agency` or `broker`).
    exports_refused: Mutex<BTreeMap<(String, &'static str), u64>>,
}

/// What else the exposition shows, read from the app state at scrape time.
pub struct Snapshot<'a> {
    pub audit: &'a AuditStats,
    pub audit_accepting: bool,
    pub audit_entries: u64,
    pub policy_version: &'a str,
    /// (table, version) of every loaded table.
    pub tables: Vec<(String, u64)>,
    pub exports_running: usize,
}

impl Metrics {
    /// Count one answered request.
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS_SECS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS_SECS.len());
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let r = match routes.get_mut(route) {
            Some(r) => r,
            None => routes.entry(route.to_string()).or_default(),
        };
        *r.by_status.entry(status).or_default() += 1;
        r.buckets[slot] += 1;
        r.sum_secs += secs;
        r.count += 1;
    }

    /// Count one request refused by the rate limit.
    pub fn record_rate_limited(&self, agency: &str) {
        let mut m = self.rate_limited.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(agency.to_string()).or_default() += 1;
    }

    /// Count one export refused because `cap` (`agency` or `broker`) was reached.
    pub fn record_export_refused(&self, agency: &str, cap: &'static str) {
        let mut m = self
            .exports_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *m.entry((agency.to_string(), cap)).or_default() += 1;
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, snap: &Snapshot<'_>) -> String {
        let mut out = String::with_capacity(8192);
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = routes.keys().collect();
        names.sort();
        head(
            &mut out,
            "sharebroker_http_requests_total",
            "counter",
            "Requests answered, by route template and status.",
        );
        for name in &names {
            for (status, n) in &routes[*name].by_status {
                let _ = writeln!(
                    out,
                    "sharebroker_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    label(name)
                );
            }
        }
        head(
            &mut out,
            "sharebroker_http_request_duration_seconds",
            "histogram",
            "Time from request head to response, by route template.",
        );
        for name in &names {
            let r = &routes[*name];
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BUCKETS_SECS.iter().enumerate() {
                cumulative += r.buckets[i];
                let _ = writeln!(
                    out,
                    "sharebroker_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{bound}\"}} {cumulative}",
                    label(name)
                );
            }
            let route = label(name);
            let _ = writeln!(
                out,
                "sharebroker_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                 sharebroker_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                 sharebroker_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                r.count, r.sum_secs, r.count
            );
        }
        drop(routes);
        head(
            &mut out,
            "sharebroker_rate_limited_requests_total",
            "counter",
            "Requests refused with 429 by the per-agency rate limit.",
        );
        for (agency, n) in self
            .rate_limited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "sharebroker_rate_limited_requests_total{{agency=\"{}\"}} {n}",
                label(agency)
            );
        }
        head(
            &mut out,
            "sharebroker_exports_refused_total",
            "counter",
            "Exports refused because the agency's cap (429) or the broker's (503) was reached.",
        );
        for ((agency, cap), n) in self
            .exports_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "sharebroker_exports_refused_total{{agency=\"{}\",cap=\"{cap}\"}} {n}",
                label(agency)
            );
        }
        head(
            &mut out,
            "sharebroker_exports_running",
            "gauge",
            "Exports running now: selecting their rows or streaming them.",
        );
        let _ = writeln!(out, "sharebroker_exports_running {}", snap.exports_running);
        let a = snap.audit;
        head(
            &mut out,
            "sharebroker_audit_appends_total",
            "counter",
            "Audit entries made durable since start.",
        );
        let _ = writeln!(
            out,
            "sharebroker_audit_appends_total {}",
            a.appends.load(Relaxed)
        );
        head(
            &mut out,
            "sharebroker_audit_entries",
            "gauge",
            "Entries in the audit log.",
        );
        let _ = writeln!(out, "sharebroker_audit_entries {}", snap.audit_entries);
        head(
            &mut out,
            "sharebroker_audit_batch_size",
            "histogram",
            "Entries per group commit (one write and fsync).",
        );
        let batches = a.batches.load(Relaxed);
        audit_histogram(
            &mut out,
            "sharebroker_audit_batch_size",
            BATCH_SIZE_BUCKETS.iter().map(|&b| b as f64),
            &a.batch_size_counts,
            a.appends.load(Relaxed) as f64,
            batches,
        );
        head(
            &mut out,
            "sharebroker_audit_commit_duration_seconds",
            "histogram",
            "Time from a group commit's write to its durable end (the fdatasync included).",
        );
        micros_histogram(
            &mut out,
            "sharebroker_audit_commit_duration_seconds",
            &a.commit_time,
        );
        head(
            &mut out,
            "sharebroker_audit_segment_start_duration_seconds",
            "histogram",
            "Time the writer spent moving on to the next segment, appends queueing meanwhile.",
        );
        micros_histogram(
            &mut out,
            "sharebroker_audit_segment_start_duration_seconds",
            &a.segment_start_time,
        );
        head(
            &mut out,
            "sharebroker_audit_segments_started_total",
            "counter",
            "Segments the writer moved on to: from a file zero-filled ahead of time, or empty (no zero fill, or it failed).",
        );
        let _ = writeln!(
            out,
            "sharebroker_audit_segments_started_total{{file=\"prepared\"}} {}\n\
             sharebroker_audit_segments_started_total{{file=\"empty\"}} {}",
            a.segments_prepared.load(Relaxed),
            a.segments_unprepared.load(Relaxed)
        );
        head(
            &mut out,
            "sharebroker_audit_writable",
            "gauge",
            "1 while the audit log accepts appends; 0 means nothing is served.",
        );
        let _ = writeln!(
            out,
            "sharebroker_audit_writable {}",
            u8::from(snap.audit_accepting)
        );
        head(
            &mut out,
            "sharebroker_policy_info",
            "gauge",
            "The policy version (SHA-256) in force.",
        );
        let _ = writeln!(
            out,
            "sharebroker_policy_info{{version=\"{}\"}} 1",
            label(snap.policy_version)
        );
        head(
            &mut out,
            "sharebroker_table_version",
            "gauge",
            "Version of each loaded golden table.",
        );
        for (table, version) in &snap.tables {
            let _ = writeln!(
                out,
                "sharebroker_table_version{{table=\"{}\"}} {version}",
                label(table)
            );
        }
        out
    }
}

/// The samples of an audit histogram without labels: `counts` per bucket (not cumulative; the
/// last slot is above every bound), their `sum` and `count`.
fn audit_histogram(
    out: &mut String,
    name: &str,
    bounds: impl Iterator<Item = f64>,
    counts: &[std::sync::atomic::AtomicU64],
    sum: f64,
    count: u64,
) {
    let mut cumulative = 0;
    for (bound, n) in bounds.zip(counts) {
        cumulative += n.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
    );
}

/// An audit histogram of durations, in seconds.
fn micros_histogram(out: &mut String, name: &str, h: &MicrosHistogram) {
    audit_histogram(
        out,
        name,
        COMMIT_MICROS_BUCKETS.iter().map(|&b| b as f64 / 1e6),
        &h.counts,
        h.sum_micros.load(Relaxed) as f64 / 1e6,
        h.count(),
    );
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(stats: &AuditStats) -> Snapshot<'_> {
        Snapshot {
            audit: stats,
            audit_accepting: true,
            audit_entries: 7,
            policy_version: "abc",
            tables: vec![("person".into(), 3)],
            exports_running: 2,
        }
    }

    /// Every sample line: `name{labels} value` with a numeric value, and
    /// every name announced by a TYPE line first.
    fn parse(text: &str) -> Vec<(String, f64)> {
        let mut typed = std::collections::HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "{name} has no TYPE line");
            samples.push((series.to_string(), value.parse::<f64>().expect(line)));
        }
        samples
    }

    fn value(samples: &[(String, f64)], series: &str) -> f64 {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .unwrap_or_else(|| panic!("no {series}"))
            .1
    }

    #[test]
    fn counts_and_histograms_render_as_prometheus_text() {
        let m = Metrics::default();
        m.record("/v1/cases", 201, Duration::from_micros(300));
        m.record("/v1/cases", 201, Duration::from_millis(3));
        m.record("/v1/cases", 409, Duration::from_secs(20));
        m.record_rate_limited("xj-mzt");
        m.record_export_refused("xj-mzt", "agency");
        m.record_export_refused("xj-mzt", "agency");
        m.record_export_refused("xj-mzt", "broker");
        let stats = AuditStats::default();
        stats.appends.store(5, Relaxed);
        stats.batches.store(2, Relaxed);
        stats.batch_size_counts[0].store(1, Relaxed); // a batch of 1
        stats.batch_size_counts[2].store(1, Relaxed); // a batch of 3 or 4
        stats.commit_time.counts[1].store(1, Relaxed); // 50-100 µs
        stats.commit_time.counts[5].store(1, Relaxed); // 1-2 ms
        stats.commit_time.sum_micros.store(1_590, Relaxed);
        stats.segment_start_time.counts[10].store(1, Relaxed); // over 1 s
        stats
            .segment_start_time
            .sum_micros
            .store(2_500_000, Relaxed);
        stats.segments_prepared.store(3, Relaxed);
        let text = m.render(&snapshot(&stats));
        let s = parse(&text);
        assert_eq!(
            value(
                &s,
                "sharebroker_http_requests_total{route=\"/v1/cases\",status=\"201\"}"
            ),
            2.0
        );
        assert_eq!(
            value(
                &s,
                "sharebroker_http_requests_total{route=\"/v1/cases\",status=\"409\"}"
            ),
            1.0
        );
        let bucket = |le: &str| {
            value(
                &s,
                &format!(
                    "sharebroker_http_request_duration_seconds_bucket{{route=\"/v1/cases\",le=\"{le}\"}}"
                ),
            )
        };
        assert_eq!(bucket("0.00025"), 0.0);
        assert_eq!(bucket("0.0005"), 1.0);
        assert_eq!(bucket("0.005"), 2.0);
        assert_eq!(bucket("10"), 2.0);
        assert_eq!(bucket("+Inf"), 3.0);
        assert_eq!(
            value(
                &s,
                "sharebroker_http_request_duration_seconds_count{route=\"/v1/cases\"}"
            ),
            3.0
        );
        assert_eq!(
            value(
                &s,
                "sharebroker_rate_limited_requests_total{agency=\"xj-mzt\"}"
            ),
            1.0
        );
        let refused = |cap: &str| {
            value(
                &s,
                &format!("sharebroker_exports_refused_total{{agency=\"xj-mzt\",cap=\"{cap}\"}}"),
            )
        };
        assert_eq!((refused("agency"), refused("broker")), (2.0, 1.0));
        assert_eq!(value(&s, "sharebroker_exports_running"), 2.0);
        assert_eq!(value(&s, "sharebroker_audit_appends_total"), 5.0);
        assert_eq!(
            value(&s, "sharebroker_audit_batch_size_bucket{le=\"1\"}"),
            1.0
        );
        assert_eq!(
            value(&s, "sharebroker_audit_batch_size_bucket{le=\"2\"}"),
            1.0
        );
        assert_eq!(
            value(&s, "sharebroker_audit_batch_size_bucket{le=\"4\"}"),
            2.0
        );
        assert_eq!(
            value(&s, "sharebroker_audit_batch_size_bucket{le=\"+Inf\"}"),
            2.0
        );
        assert_eq!(value(&s, "sharebroker_audit_batch_size_count"), 2.0);
        let commit = |le: &str| {
            value(
                &s,
                &format!("sharebroker_audit_commit_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(
            [commit("0.00005"), commit("0.0001"), commit("0.001")],
            [0.0, 1.0, 1.0]
        );
        assert_eq!(
            [commit("0.002"), commit("1"), commit("+Inf")],
            [2.0, 2.0, 2.0]
        );
        assert_eq!(
            value(&s, "sharebroker_audit_commit_duration_seconds_sum"),
            0.00159
        );
        assert_eq!(
            value(&s, "sharebroker_audit_commit_duration_seconds_count"),
            2.0
        );
        let start = |series: &str| {
            value(
                &s,
                &format!("sharebroker_audit_segment_start_duration_seconds_{series}"),
            )
        };
        assert_eq!(
            [start("bucket{le=\"1\"}"), start("bucket{le=\"+Inf\"}")],
            [0.0, 1.0]
        );
        assert_eq!([start("sum"), start("count")], [2.5, 1.0]);
        let started = |file: &str| {
            value(
                &s,
                &format!("sharebroker_audit_segments_started_total{{file=\"{file}\"}}"),
            )
        };
        assert_eq!((started("prepared"), started("empty")), (3.0, 0.0));
        assert_eq!(value(&s, "sharebroker_audit_writable"), 1.0);
        assert_eq!(value(&s, "sharebroker_policy_info{version=\"abc\"}"), 1.0);
        assert_eq!(
            value(&s, "sharebroker_table_version{table=\"person\"}"),
            3.0
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
