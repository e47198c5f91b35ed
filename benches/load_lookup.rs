//! The full-path load benchmark of issue 7 (DESIGN.md §7): point lookups
//! over mutual TLS through everything a real lookup goes through — client
//! certificate → officer token → open-case check → policy plan → masking →
//! seal → durable (fsync'd, group-committed) audit — against PostgreSQL
//! answering a primary-key select of the same person's record over TLS
//! (pgbench, prepared statements), in the same command.
//!
//! Data: PERSONS persons (default 1,000,000) generated and pulled through
//! the real pipeline, cached under BENCH_DIR (default
//! /var/tmp/sharebroker-bench; shared with `store_lookup`). The broker is
//! the release `sharebroker serve`, run as a child process on that data so
//! that its CPU time is its own (read from /proc/<pid>/stat); its per-agency
//! rate limit is raised through a `--config` file. A fresh run directory
//! holds its audit log, case journal and seal key.
//!
//! The load generator is this process: hyper + rustls presenting the
//! agency's client certificate, CONNS keep-alive connections (HTTP/1.1, or
//! HTTP/2 streams over H2_CONNS connections with H2=1), closed loop, every
//! latency recorded. First it opens one case per applicant for SAMPLE
//! persons drawn at random from the table and looks each up once (a
//! subject's first lookup creates its audit salt, an fsync); then it looks
//! them up in random order for WARMUP + SECONDS seconds, measuring the
//! last SECONDS.
//!
//! The baseline: the same persons' population records in a PostgreSQL
//! table (loaded once, reused while it holds the same rows), and pgbench
//! with `-M prepared` selecting one row by primary key — a random one of
//! the same SAMPLE persons — over TLS (`sslmode=require`), with the same
//! client count, threads and duration. Its latencies come from
//! `--log` (every transaction), and PostgreSQL's CPU from the postmaster's
//! own and reaped children's CPU time.
//!
//! The two alternate: ROUNDS rounds (default 3) of the broker's window then
//! pgbench's, the broker kept running and its connections open in between.
//! Every figure reported is the median of the rounds', and the ratio is the
//! median of each round's own ratio: the machine's speed drifts by more
//! than ten per cent from one minute to the next, and a single pair of
//! windows can land either side of 1.0x by that alone.
//!
//! ```sh
//! cargo bench --bench load_lookup
//! CONNS=32 SECONDS=20 cargo bench --bench load_lookup
//! ROUNDS=5 cargo bench --bench load_lookup             # more rounds, a steadier median
//! H2=1 cargo bench --bench load_lookup                 # HTTP/2 streams
//! PERSONS=100000 SAMPLE=2000 cargo bench --bench load_lookup   # quicker
//! ```
//!
//! `BROKER_BIN=path` serves with another build of `sharebroker` (before /
//! after a change); `BROKER_SETTINGS='seal_mode = "response"'` adds
//! lines to the broker's settings file (the same build, set otherwise).
//! `PERF_OUT=/tmp/broker.perf` records the broker with `perf record -g`
//! over the first round's measured window (the profiler's own cost is then in the figures);
//! with `PERF_CALLGRAPH=dwarf` it records DWARF call stacks instead, which
//! attribute time to callers in a release build (no frame pointers).
//! `CALLGRIND=1` runs the broker under `valgrind --tool=callgrind` with
//! instrumentation switched on only for the measured windows, and prints the
//! broker's instructions per request: a count that other load on the machine
//! does not change (unlike CPU time), for before / after comparisons. The
//! profile is left in the run directory (`callgrind.out`) for
//! `callgrind_annotate`; req/s and latencies of such a run mean nothing.
//!
//! The broker's audit group commits over the window (entries per fsync) are
//! printed too: per-batch costs (fsync, the batch seal's signature) are
//! shared by that many requests, so CPU per request depends on it. So is
//! the mean time a lookup spends in the broker's handler (its own request
//! histogram; commit wait included): the latency left over is TLS, HTTP,
//! the queues of two shared cores and the client. And the commits' mean
//! time (write to durable end) and how many took over 1 ms and over 10 ms
//! (the broker's commit histogram): every client waits out a slow commit;
//! the audit segment starts (appends queue meanwhile); and the lookups over
//! 10 ms at the load generator against those over 10 ms in the broker's
//! handler, which says whether a stall was the broker's.
//!
//! Targets: ≥ 20,000 req/s, p99 ≤ 10 ms, ≥ 1.0× pgbench, and broker CPU
//! ≤ 15 µs per request. The machine has 2 cores shared by the broker, the
//! load generator and anything else running, so the figures say what else
//! was busy.

mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;

use sharebroker::api::client;
use sharebroker::api::token::{self, TokenSigner};
use sharebroker::catalog::SubjectKind;
use sharebroker::config::Settings;
use sharebroker::ingest::{COL_KEY, COL_SUBJECT_ID, Golden};
use sharebroker::pki::PkiPaths;
use sharebroker::store::{Manifest, TableStore};

use common::*;

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const PG_TABLE: &str = "sharebroker_bench_persons";
/// The agency, service item and dataset of every lookup (the demo's
/// marriage registration at civil affairs).
const AGENCY: &str = "xj-mzt";
const SERVICE_ITEM: &str = "XJ-MZ-0201";
const DATASET: &str = "population";
/// Officer tokens live at most 600 s; connections mint a new one well before.
const TOKEN_LIFETIME_SECS: i64 = 600;
const TOKEN_RENEW_AFTER: Duration = Duration::from_secs(480);

struct Opts {
    persons: usize,
    sample: usize,
    conns: usize,
    jobs: usize,
    seconds: u64,
    warmup: u64,
    rounds: usize,
    http2: bool,
    h2_conns: usize,
}

fn main() {
    let o = Opts {
        persons: env_or("PERSONS", 1_000_000),
        sample: env_or("SAMPLE", 10_000),
        conns: env_or("CONNS", 16),
        jobs: env_or("JOBS", 1),
        seconds: env_or("SECONDS", 10),
        warmup: env_or("WARMUP", 2),
        rounds: env_or("ROUNDS", 3),
        http2: env_or("H2", 0u8) == 1,
        h2_conns: env_or("H2_CONNS", 2),
    };
    assert!(o.conns > 0 && o.jobs > 0 && o.seconds > 0 && o.sample > 0 && o.rounds > 0);
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let settings = prepared_store(o.persons);
    let store = TableStore::open_local(&settings.store_dir()).expect("store");
    let manifest = store
        .current(Golden::table(SubjectKind::Person))
        .expect("current")
        .expect("a person table");
    let keys = shuffled_keys(&settings, &store, &manifest);
    let sample: Vec<String> = keys.iter().take(o.sample).cloned().collect();
    assert_eq!(sample.len(), o.sample, "SAMPLE is larger than the table");
    ensure_pg_table(&store, &manifest, &keys);
    drop(keys);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.jobs)
        .enable_all()
        .build()
        .expect("runtime");
    let rounds = rt.block_on(run_rounds(&settings, &o, &sample));
    // Each figure is the median of the rounds', and so is the ratio: the
    // machine's speed drifts by more than ten per cent between minutes, and
    // a ratio of neighbouring windows follows it better than one of totals.
    let broker = Figures::median(rounds.iter().map(|(b, _)| b));
    let pg = Figures::median(rounds.iter().map(|(_, p)| p));
    let rate_ratio = median(rounds.iter().map(|(b, p)| b.rate / p.rate));
    let cpu_ratio = median(
        rounds
            .iter()
            .map(|(b, p)| b.server_cpu_us / p.server_cpu_us),
    );

    println!();
    println!(
        "load_lookup: {} persons in the table; {} of them applicants of {} open cases ({SERVICE_ITEM}, agency {AGENCY}), looked up in random order",
        manifest.rows, o.sample, o.sample
    );
    println!(
        "  machine: {} cores, load average before the run {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let proto = if o.http2 {
        format!(
            "HTTP/2, {} streams over {} connections",
            o.conns, o.h2_conns
        )
    } else {
        format!("HTTP/1.1, {} keep-alive connections", o.conns)
    };
    for (i, (b, p)) in rounds.iter().enumerate() {
        println!(
            "  round {}: broker {:>6.0} req/s, CPU {:>5.1} µs/request; pgbench {:>6.0} tps, CPU {:>5.1} µs/transaction; ratio {:.2}x req/s, CPU {:.2}x",
            i + 1,
            b.rate,
            b.server_cpu_us,
            p.rate,
            p.server_cpu_us,
            b.rate / p.rate,
            b.server_cpu_us / p.server_cpu_us
        );
    }
    println!(
        "  medians of {} rounds, each {} s after {} s warm-up:",
        o.rounds, o.seconds, o.warmup
    );
    println!(
        "  broker  (mTLS {proto}, {} client thread(s)): {:>8.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  max {:>6.0} µs  broker CPU {:.1} µs/request",
        o.jobs, broker.rate, broker.p50_us, broker.p99_us, broker.max_us, broker.server_cpu_us,
    );
    println!(
        "           setup: {} cases opened in {:.1} s, first lookups (audit salts) in {:.1} s; machine busy {:.2} of 2 cores (broker {:.2}, load generator {:.2}, other processes {:.2})",
        o.sample,
        broker.open_secs,
        broker.first_secs,
        broker.busy.total,
        broker.busy.server,
        broker.busy.client,
        broker.busy.other()
    );
    if let Some(c) = &broker.group_commits {
        println!(
            "           audit: {:.0} entries in {:.0} group commits per window, {:.1} entries per fsync; in the broker's handler {:.0} µs per lookup on average (of the latency above; the rest is TLS, HTTP, queues and the client)",
            c.entries,
            c.batches,
            c.entries / c.batches.max(1.0),
            c.handler_us
        );
        if let Some((mean_us, slow, stalled)) = c.commit {
            println!(
                "           commits: {mean_us:.0} µs each on average (write to durable end), {slow:.0} per window over 1 ms, {stalled:.0} over 10 ms"
            );
        }
        if let Some((n, mean_ms)) = c.segment_starts {
            println!(
                "           audit segment starts: {n:.0} per window, {mean_ms:.1} ms each on average (appends queue meanwhile)"
            );
        }
        println!(
            "           lookups over 10 ms per window: {:.0} at the load generator, {:.0} in the broker's handler",
            c.over_10ms.0, c.over_10ms.1
        );
    }
    if let Some(ir) = broker.instructions_per_request {
        println!(
            "           callgrind: {ir:.0} broker instructions per request over all rounds (req/s and latencies above are under valgrind)"
        );
    }
    println!(
        "  pgbench (-M prepared, TLS, {} clients, {} thread(s)): {:>8.0} tps    p50 {:>6.0} µs  p99 {:>6.0} µs  max {:>6.0} µs  postgres CPU {:.1} µs/transaction",
        o.conns, o.jobs, pg.rate, pg.p50_us, pg.p99_us, pg.max_us, pg.server_cpu_us,
    );
    println!(
        "           machine busy {:.2} of 2 cores (postgres {:.2}, pgbench {:.2}, other processes {:.2})",
        pg.busy.total,
        pg.busy.server,
        pg.busy.client,
        pg.busy.other()
    );
    println!(
        "  ratio broker/pgbench (median of the rounds'): {rate_ratio:.2}x req/s (target >= 1.0x); server CPU per request {cpu_ratio:.2}x of postgres's"
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "  targets: >= 20,000 req/s {}; p99 <= 10 ms {}; >= 1.0x pgbench {}; broker CPU <= 15 µs/request {}",
        verdict(broker.rate >= 20_000.0),
        verdict(broker.p99_us <= 10_000.0),
        verdict(rate_ratio >= 1.0),
        verdict(broker.server_cpu_us <= 15.0),
    );
}

/// What one side of the comparison measured.
struct Figures {
    rate: f64,
    /// Requests (transactions) measured.
    requests: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    server_cpu_us: f64,
    busy: Busy,
    open_secs: f64,
    first_secs: f64,
    /// Audit group commits and the broker's own time per lookup over the window.
    group_commits: Option<Commits>,
    /// Broker instructions per request, under callgrind (CALLGRIND=1).
    instructions_per_request: Option<f64>,
}

/// The broker's audit group commits over a window, and the mean time of a
/// lookup in its handler (from its request-duration histogram: parsed
/// request to response built, commit wait included).
#[derive(Clone, Copy)]
struct Commits {
    entries: f64,
    batches: f64,
    handler_us: f64,
    /// Mean commit time (µs) and the commits over 1 ms and over 10 ms, when the broker
    /// publishes them.
    commit: Option<(f64, f64, f64)>,
    /// Lookups over 10 ms: as the load generator saw them, and in the broker's handler.
    over_10ms: (f64, f64),
    /// Audit segment starts and their mean time (ms), when the broker publishes them.
    segment_starts: Option<(f64, f64)>,
}

/// The broker's counters behind [`Commits`], as its metrics give them
/// (totals since it started).
#[derive(Clone, Copy)]
struct Counters {
    entries: f64,
    batches: f64,
    lookup_secs: f64,
    lookups: f64,
    /// Lookups whose handler took at most 10 ms.
    lookups_within_10ms: f64,
    /// Seconds in commits, and commits of at most 1 ms and 10 ms (`None` from a broker
    /// without them).
    commit: Option<(f64, f64, f64)>,
    /// Seconds in audit segment starts, and their count (`None` from a broker without them).
    segment_starts: Option<(f64, f64)>,
}

/// Cores busy on average over the measured window, and whose.
#[derive(Default)]
struct Busy {
    total: f64,
    server: f64,
    client: f64,
}

impl Busy {
    fn other(&self) -> f64 {
        (self.total - self.server - self.client).max(0.0)
    }
}

impl Figures {
    /// Each figure the median of the rounds'.
    fn median<'a>(rounds: impl Iterator<Item = &'a Figures> + Clone) -> Figures {
        let m = |f: fn(&Figures) -> f64| median(rounds.clone().map(f));
        let first = rounds.clone().next().expect("at least one round");
        Figures {
            rate: m(|f| f.rate),
            requests: m(|f| f.requests),
            p50_us: m(|f| f.p50_us),
            p99_us: m(|f| f.p99_us),
            max_us: m(|f| f.max_us),
            server_cpu_us: m(|f| f.server_cpu_us),
            busy: Busy {
                total: m(|f| f.busy.total),
                server: m(|f| f.busy.server),
                client: m(|f| f.busy.client),
            },
            open_secs: first.open_secs,
            first_secs: first.first_secs,
            group_commits: first.group_commits.as_ref().map(|_| Commits {
                entries: m(|f| f.group_commits.as_ref().map_or(0.0, |g| g.entries)),
                batches: m(|f| f.group_commits.as_ref().map_or(0.0, |g| g.batches)),
                handler_us: m(|f| f.group_commits.as_ref().map_or(0.0, |g| g.handler_us)),
                segment_starts: first
                    .group_commits
                    .as_ref()
                    .and_then(|g| g.segment_starts)
                    .map(|_| {
                        fn starts(f: &Figures) -> Option<(f64, f64)> {
                            f.group_commits.as_ref().and_then(|g| g.segment_starts)
                        }
                        (
                            m(|f| starts(f).map_or(0.0, |c| c.0)),
                            m(|f| starts(f).map_or(0.0, |c| c.1)),
                        )
                    }),
                over_10ms: (
                    m(|f| f.group_commits.as_ref().map_or(0.0, |g| g.over_10ms.0)),
                    m(|f| f.group_commits.as_ref().map_or(0.0, |g| g.over_10ms.1)),
                ),
                commit: first
                    .group_commits
                    .as_ref()
                    .and_then(|g| g.commit)
                    .map(|_| {
                        fn commit(f: &Figures) -> Option<(f64, f64, f64)> {
                            f.group_commits.as_ref().and_then(|g| g.commit)
                        }
                        (
                            m(|f| commit(f).map_or(0.0, |c| c.0)),
                            m(|f| commit(f).map_or(0.0, |c| c.1)),
                            m(|f| commit(f).map_or(0.0, |c| c.2)),
                        )
                    }),
            }),
            instructions_per_request: first.instructions_per_request,
        }
    }
}

/// The median (the mean of the middle two of an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    assert!(!v.is_empty(), "the median of nothing");
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Busy and total jiffies of the whole machine (/proc/stat, first line).
fn machine_ticks() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    let total: f64 = v.iter().take(8).sum();
    (total - idle, total)
}

fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ns.len() as f64 - 1.0) * p).round() as usize;
    sorted_ns[i] as f64 / 1000.0
}

/// xorshift64: a fixed pseudo-random sequence, the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Every person's key in a fixed pseudo-random order; the sample is its
/// head, and PostgreSQL numbers rows in this order. Cached beside the
/// store, per table version.
fn shuffled_keys(settings: &Settings, store: &TableStore, m: &Manifest) -> Vec<String> {
    let cache = settings
        .data_dir
        .join(format!("load-keys-v{}.txt", m.version));
    if let Ok(text) = std::fs::read_to_string(&cache) {
        let keys: Vec<String> = text.lines().map(str::to_string).collect();
        if keys.len() as u64 == m.rows {
            return keys;
        }
    }
    let mut keys = Vec::with_capacity(m.rows as usize);
    store
        .read_each(m, &mut |b| {
            let k = b
                .column_by_name(COL_KEY)
                .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                .expect("a key column of strings");
            keys.extend(k.iter().flatten().map(str::to_string));
            Ok(())
        })
        .expect("read the person table");
    Rng(0x2021_0701_9E37_79B9).shuffle(&mut keys);
    std::fs::write(&cache, keys.join("\n")).expect("write the key cache");
    keys
}

// ---------------------------------------------------------------- PostgreSQL

/// The population columns of the golden person table (values with their
/// raw form and provenance): what a lookup of the population dataset reads.
fn population_columns(m: &Manifest) -> Vec<String> {
    m.columns
        .iter()
        .map(|c| c.name.clone())
        .filter(|n| n.starts_with("population."))
        .collect()
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The baseline table: every person's population record, `n` (the row's
/// place in the shuffled order, so the sample is rows 1..=SAMPLE) as the
/// primary key pgbench draws, the ID number unique. Loaded once; reused
/// while it has the table's row count and numbers the same first person.
fn ensure_pg_table(store: &TableStore, m: &Manifest, keys: &[String]) {
    let mut pg = postgres::Client::connect(PG_URL, postgres::NoTls).unwrap_or_else(|e| {
        panic!("PostgreSQL at {PG_URL} is needed for the baseline and is unreachable: {e}")
    });
    let exists = pg
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&PG_TABLE])
        .expect("check table")
        .get::<_, bool>(0);
    if exists {
        let rows: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {PG_TABLE}"), &[])
            .expect("count")
            .get(0);
        let first: Option<String> = pg
            .query_opt(
                &format!("SELECT id_number FROM {PG_TABLE} WHERE n = 1"),
                &[],
            )
            .expect("first row")
            .map(|r| r.get(0));
        if rows as u64 == m.rows && first.as_deref() == keys.first().map(String::as_str) {
            return;
        }
    }
    eprintln!(
        "loading {} persons into PostgreSQL table {PG_TABLE} (once)",
        m.rows
    );
    let t = Instant::now();
    let cols = population_columns(m);
    let ddl = format!(
        "DROP TABLE IF EXISTS {PG_TABLE};
         CREATE TABLE {PG_TABLE} (n integer PRIMARY KEY, id_number text NOT NULL UNIQUE, subject_id text, {})",
        cols.iter()
            .map(|c| format!("{} text", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    pg.batch_execute(&ddl).expect("create the baseline table");
    let place: HashMap<&str, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i + 1))
        .collect();
    let mut copy = pg
        .copy_in(&format!("COPY {PG_TABLE} FROM STDIN (FORMAT csv)"))
        .expect("copy in");
    {
        let mut w = csv::Writer::from_writer(&mut copy);
        store
            .read_each(m, &mut |b| {
                let text = |name: &str| {
                    b.column_by_name(name)
                        .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                        .unwrap_or_else(|| panic!("column {name} of strings"))
                        .clone()
                };
                let key = text(COL_KEY);
                let subject = text(COL_SUBJECT_ID);
                let values: Vec<_> = cols.iter().map(|c| text(c)).collect();
                let mut record = Vec::with_capacity(cols.len() + 3);
                for r in 0..b.num_rows() {
                    record.clear();
                    let n = place[key.value(r)].to_string();
                    record.push(n);
                    record.push(key.value(r).to_string());
                    record.push(cell(&subject, r).to_string());
                    record.extend(values.iter().map(|a| cell(a, r).to_string()));
                    w.write_record(&record).expect("copy row");
                }
                Ok(())
            })
            .expect("read the person table");
        w.flush().expect("copy flush");
    }
    copy.finish().expect("copy finish");
    pg.batch_execute(&format!("VACUUM ANALYZE {PG_TABLE}"))
        .expect("analyze");
    eprintln!("loaded in {:.1?}", t.elapsed());
}

/// A cell as text, null as empty (an unquoted empty CSV field: NULL).
fn cell(a: &arrow_array::StringArray, r: usize) -> &str {
    use arrow_array::Array;
    if a.is_null(r) { "" } else { a.value(r) }
}

/// The postmaster's pid: the parent of a backend.
fn postmaster_pid() -> String {
    let mut pg = postgres::Client::connect(PG_URL, postgres::NoTls).expect("connect");
    let backend: i32 = pg
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("backend pid")
        .get(0);
    let status = std::fs::read_to_string(format!("/proc/{backend}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(|p| p.trim().to_string())
        .expect("PPid")
}

/// CPU seconds of this process's reaped children (pgbench runs).
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn pgbench_bin() -> PathBuf {
    let versioned = Path::new("/usr/lib/postgresql/15/bin/pgbench");
    if versioned.exists() {
        versioned.to_path_buf()
    } else {
        PathBuf::from("pgbench")
    }
}

fn run_pgbench(o: &Opts) -> Figures {
    let dir = bench_dir().join("load-pgbench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("pgbench dir");
    let script = dir.join("lookup.sql");
    std::fs::write(
        &script,
        format!(
            "\\set k random(1, {})\nSELECT * FROM {PG_TABLE} WHERE n = :k;\n",
            o.sample
        ),
    )
    .expect("script");
    let pgbench = |secs: u64, log: bool| {
        let mut c = Command::new(pgbench_bin());
        c.env("PGSSLMODE", "require")
            .args(["-n", "-M", "prepared", "-h", "127.0.0.1", "-p", "5432"])
            .args(["-U", "postgres"])
            .arg("-c")
            .arg(o.conns.to_string())
            .arg("-j")
            .arg(o.jobs.to_string())
            .arg("-T")
            .arg(secs.to_string())
            .arg("-f")
            .arg(&script);
        if log {
            c.arg("--log")
                .arg(format!("--log-prefix={}", dir.join("tx").display()));
        }
        c.arg("test");
        let out = c.output().expect("run pgbench");
        assert!(
            out.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    if o.warmup > 0 {
        pgbench(o.warmup, false);
    }
    let postmaster = postmaster_pid();
    std::thread::sleep(Duration::from_millis(300)); // the probe's backend is reaped
    let (pg0, client0, m0) = (
        cpu_seconds_with_children(&postmaster),
        children_cpu_seconds(),
        machine_ticks(),
    );
    let started = Instant::now();
    let stdout = pgbench(o.seconds, true);
    let wall = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500)); // backends exit and are reaped
    let (pg1, client1, m1) = (
        cpu_seconds_with_children(&postmaster),
        children_cpu_seconds(),
        machine_ticks(),
    );
    let field = |prefix: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("pgbench printed no `{prefix}`:\n{stdout}"))
    };
    let tps = field("tps = ");
    let txs = field("number of transactions actually processed: ");
    let mut lat = Vec::with_capacity(txs as usize);
    for entry in std::fs::read_dir(&dir).expect("log dir") {
        let path = entry.expect("entry").path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("tx."))
        {
            continue;
        }
        let f = std::io::BufReader::new(std::fs::File::open(&path).expect("log"));
        for line in f.lines() {
            // client_id transaction_no time_us script_no epoch epoch_us
            let line = line.expect("log line");
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                lat.push(us * 1000);
            }
        }
    }
    lat.sort_unstable();
    let ticks = m1.1 - m0.1;
    let cores = |secs: f64| secs / wall;
    Figures {
        rate: tps,
        requests: txs,
        p50_us: percentile_us(&lat, 0.50),
        p99_us: percentile_us(&lat, 0.99),
        max_us: lat.last().map_or(0.0, |&v| v as f64 / 1000.0),
        server_cpu_us: (pg1 - pg0) * 1e6 / txs,
        busy: Busy {
            total: if ticks > 0.0 {
                (m1.0 - m0.0) / ticks * 2.0
            } else {
                0.0
            },
            server: cores(pg1 - pg0),
            client: cores(client1 - client0),
        },
        open_secs: 0.0,
        first_secs: 0.0,
        group_commits: None,
        instructions_per_request: None,
    }
}

// -------------------------------------------------------------------- broker

/// The broker as a child process; stopped (SIGINT: drain, flush the audit
/// log) when dropped.
struct Broker {
    child: Child,
    log: PathBuf,
    /// The callgrind profile, when run under valgrind (CALLGRIND=1).
    callgrind_out: Option<PathBuf>,
}

impl Broker {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // SAFETY: signals our own child by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        // Under callgrind the broker also writes its profile on the way out.
        let wait = if self.callgrind_out.is_some() {
            300
        } else {
            20
        };
        let deadline = Instant::now() + Duration::from_secs(wait);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh run directory over the cached store and PKI, a config raising
/// the rate limit, and `sharebroker serve` on a free port.
fn start_broker(settings: &Settings) -> (Broker, SocketAddr) {
    common::init_pki(settings);
    let run = bench_dir().join("load-run");
    let _ = std::fs::remove_dir_all(&run);
    let data = run.join("data");
    std::fs::create_dir_all(&data).expect("run dir");
    std::os::unix::fs::symlink(settings.store_dir(), data.join("store")).expect("link store");
    std::os::unix::fs::symlink(settings.pki_dir(), data.join("pki")).expect("link pki");
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr")
    };
    let config = run.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "# One agency drives every lookup: the per-agency limit must not be what is measured.\n\
             listen = \"{addr}\"\nrate_limit_per_agency_rps = 10000000.0\nrate_limit_burst = 10000000\n\
             # BROKER_SETTINGS\n{}\n",
            std::env::var("BROKER_SETTINGS").unwrap_or_default()
        ),
    )
    .expect("config");
    let log = run.join("broker.log");
    // BROKER_BIN: another build of the broker (a before/after comparison).
    let bin = std::env::var("BROKER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sharebroker").to_string());
    let callgrind_out = (env_or("CALLGRIND", 0u8) == 1).then(|| run.join("callgrind.out"));
    let mut command = match &callgrind_out {
        Some(out) => {
            let mut c = Command::new("valgrind");
            c.args(["--tool=callgrind", "--instr-atstart=no"])
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let child = command
        .arg("--policies")
        .arg(&settings.policies_dir)
        .arg("--connectors")
        .arg(&settings.connectors_dir)
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start sharebroker serve");
    (
        Broker {
            child,
            log,
            callgrind_out,
        },
        addr,
    )
}

/// How requests travel: one HTTP/1.1 connection, or a stream of a shared
/// HTTP/2 connection.
#[derive(Clone)]
enum Sender {
    H1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>, http2: bool) -> Sender {
        let mut config = (*config).clone();
        config.alpn_protocols = vec![if http2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let tls = connector
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("tls handshake");
        let io = TokioIo::new(tls);
        if http2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("http/1.1 handshake");
            tokio::spawn(conn);
            Sender::H1(Arc::new(tokio::sync::Mutex::new(sender)))
        }
    }

    /// Send and read the whole answer.
    async fn send(&mut self, req: Request<Full<Bytes>>) -> (u16, Bytes) {
        let resp = match self {
            Sender::H1(s) => {
                let mut s = s.lock().await;
                s.ready().await.expect("connection ready");
                s.send_request(req).await.expect("request")
            }
            Sender::H2(s) => {
                s.ready().await.expect("connection ready");
                s.send_request(req).await.expect("request")
            }
        };
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes();
        (status, body)
    }
}

/// One client: a sender and the officer token it names.
struct Agent {
    sender: Sender,
    signer: Arc<TokenSigner>,
    token: HeaderValue,
    minted: Instant,
}

impl Agent {
    fn new(sender: Sender, signer: Arc<TokenSigner>) -> Agent {
        let token = mint(&signer);
        Agent {
            sender,
            signer,
            token,
            minted: Instant::now(),
        }
    }

    async fn post(&mut self, uri: &Uri, body: &Bytes) -> (u16, Bytes) {
        if self.minted.elapsed() > TOKEN_RENEW_AFTER {
            self.token = mint(&self.signer);
            self.minted = Instant::now();
        }
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(HOST, HeaderValue::from_static("localhost"))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(token::HEADER, self.token.clone())
            .body(Full::new(body.clone()))
            .expect("request");
        self.sender.send(req).await
    }
}

fn mint(signer: &TokenSigner) -> HeaderValue {
    let t = signer
        .mint_at(
            "bench-officer",
            chrono::Utc::now().timestamp(),
            TOKEN_LIFETIME_SECS,
        )
        .expect("mint officer token");
    HeaderValue::from_str(&t).expect("token is ascii")
}

/// A lookup request of one sampled applicant, ready to send.
struct Lookup {
    uri: Uri,
    body: Bytes,
}

/// Starts the broker, sets up its cases, then measures ROUNDS rounds, each
/// the broker's window followed by pgbench's.
async fn run_rounds(settings: &Settings, o: &Opts, sample: &[String]) -> Vec<(Figures, Figures)> {
    let (mut broker, addr) = start_broker(settings);
    let paths = PkiPaths {
        dir: settings.pki_dir(),
    };
    let config = client::config(
        &paths.ca_cert(),
        &paths.client_cert(AGENCY),
        &paths.client_key(AGENCY),
    )
    .expect("client tls config");
    let signer =
        Arc::new(client::token_signer(&paths.client_key(AGENCY), AGENCY).expect("token key"));

    // Ready once the 1M-person table is loaded.
    let t = Instant::now();
    loop {
        if let Ok(Some(status)) = broker.child.try_wait() {
            panic!("the broker exited ({status}):\n{}", broker.log_tail());
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let mut a = Agent::new(
                Sender::connect(addr, config.clone(), false).await,
                signer.clone(),
            );
            let (status, _) = a.get_ready().await;
            if status == 200 {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the broker was not ready within 300 s:\n{}",
            broker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("broker ready in {:.1?}", t.elapsed());

    // Setup over 8 connections: open a case per applicant, then look each
    // up once (creates its audit salt).
    let lookups: Arc<Vec<Lookup>> = Arc::new(
        sample
            .iter()
            .enumerate()
            .map(|(i, id)| Lookup {
                uri: format!("/v1/cases/LOAD-{i}/lookup").parse().expect("uri"),
                body: Bytes::from(format!(
                    r#"{{"subject":{{"id_number":"{id}"}},"dataset":"{DATASET}"}}"#
                )),
            })
            .collect(),
    );
    let opens: Arc<Vec<Bytes>> = Arc::new(
        sample
            .iter()
            .enumerate()
            .map(|(i, id)| {
                Bytes::from(format!(
                    r#"{{"case_id":"LOAD-{i}","service_item":"{SERVICE_ITEM}","officer":"bench-officer","applicants":[{{"id_number":"{id}"}}]}}"#
                ))
            })
            .collect(),
    );
    let setup_conns = 8.min(sample.len());
    let mut setup = Vec::new();
    for _ in 0..setup_conns {
        setup.push(Agent::new(
            Sender::connect(addr, config.clone(), false).await,
            signer.clone(),
        ));
    }
    let cases_uri: Uri = "/v1/cases".parse().expect("uri");
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut agent) in setup.into_iter().enumerate() {
        let (opens, lookups, cases_uri) = (opens.clone(), lookups.clone(), cases_uri.clone());
        tasks.push(tokio::spawn(async move {
            for i in (c..opens.len()).step_by(setup_conns) {
                let (status, body) = agent.post(&cases_uri, &opens[i]).await;
                assert_eq!(status, 201, "open case: {}", String::from_utf8_lossy(&body));
            }
            let opened = Instant::now();
            for i in (c..lookups.len()).step_by(setup_conns) {
                let (status, body) = agent.post(&lookups[i].uri, &lookups[i].body).await;
                assert_eq!(status, 200, "lookup: {}", String::from_utf8_lossy(&body));
                if i == 0 {
                    check_lookup(&body);
                }
            }
            opened
        }));
    }
    let mut opened = t;
    for task in tasks {
        opened = opened.max(task.await.expect("setup task"));
    }
    let open_secs = (opened - t).as_secs_f64();
    let first_secs = opened.elapsed().as_secs_f64();

    // The measured rounds, each followed by pgbench's. Each round connects
    // anew: a connection left idle through pgbench's window could meet the
    // broker's timeouts.
    let mut rounds = Vec::new();
    for round in 0..o.rounds {
        let mut agents = Vec::new();
        let mut h2 = Vec::new();
        for c in 0..o.conns {
            let sender = if o.http2 {
                if h2.len() < o.h2_conns {
                    h2.push(Sender::connect(addr, config.clone(), true).await);
                }
                h2[c % h2.len()].clone()
            } else {
                Sender::connect(addr, config.clone(), false).await
            };
            agents.push(Agent::new(sender, signer.clone()));
        }
        let mut probe = Agent::new(
            Sender::connect(addr, config.clone(), false).await,
            signer.clone(),
        );
        let mut figures = measure(&broker, &mut probe, agents, &lookups, o, round).await;
        figures.open_secs = open_secs;
        figures.first_secs = first_secs;
        eprintln!(
            "round {}: broker {:.0} req/s, CPU {:.1} µs/request",
            round + 1,
            figures.rate,
            figures.server_cpu_us
        );
        // On a thread of its own: the postgres client runs a runtime of its own.
        let pg = std::thread::scope(|s| s.spawn(|| run_pgbench(o)).join().expect("pgbench"));
        eprintln!(
            "round {}: pgbench {:.0} tps, CPU {:.1} µs/transaction",
            round + 1,
            pg.rate,
            pg.server_cpu_us
        );
        rounds.push((figures, pg));
    }
    let callgrind_out = broker.callgrind_out.clone();
    drop(broker);
    // The profile is written as the broker exits, over every round's window.
    if let Some(out) = callgrind_out {
        let requests: f64 = rounds.iter().map(|(b, _)| b.requests).sum();
        rounds[0].0.instructions_per_request =
            Some(callgrind_instructions(&out) as f64 / requests.max(1.0));
    }
    rounds
}

/// One measured window: every agent looks up its shuffled applicants in a
/// closed loop for WARMUP + SECONDS seconds. The first round is the one
/// profiled with PERF_OUT.
async fn measure(
    broker: &Broker,
    probe: &mut Agent,
    agents: Vec<Agent>,
    lookups: &Arc<Vec<Lookup>>,
    o: &Opts,
    round: usize,
) -> Figures {
    let start = Instant::now() + Duration::from_secs(o.warmup);
    let end = start + Duration::from_secs(o.seconds);
    let mut tasks = Vec::new();
    for (c, mut agent) in agents.into_iter().enumerate() {
        let lookups = lookups.clone();
        tasks.push(tokio::spawn(async move {
            let mut order: Vec<usize> = (0..lookups.len()).collect();
            Rng(0xA076_1D64_78BD_642F ^ ((c as u64 + 1 + 1000 * round as u64) * 0x9E37_79B9))
                .shuffle(&mut order);
            let mut latencies: Vec<u64> = Vec::with_capacity(1 << 20);
            let mut failures = 0u64;
            let mut first_failure = None;
            let mut i = 0;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let l = &lookups[order[i % order.len()]];
                i += 1;
                let (status, body) = agent.post(&l.uri, &l.body).await;
                let done = Instant::now();
                if status != 200 {
                    failures += 1;
                    first_failure.get_or_insert_with(|| {
                        format!("{status} {}", String::from_utf8_lossy(&body))
                    });
                }
                if t >= start && done <= end {
                    latencies.push((done - t).as_nanos() as u64);
                }
            }
            (latencies, failures, first_failure)
        }));
    }
    let pid = broker.pid();
    tokio::time::sleep_until(start.into()).await;
    if broker.callgrind_out.is_some() {
        callgrind_control(&pid, "on");
    }
    let (cpu0, self0, m0) = (cpu_seconds_of(&pid), cpu_seconds(), machine_ticks());
    let commits0 = probe.group_commits().await;
    // PERF_OUT=file: profile the broker over the first measured window.
    // PERF_CALLGRAPH=dwarf: call stacks from DWARF (release builds keep no
    // frame pointers, so `-g` attributes little beyond the leaf function).
    let perf = std::env::var("PERF_OUT")
        .ok()
        .filter(|_| round == 0)
        .map(|out| {
            let graph = match std::env::var("PERF_CALLGRAPH").as_deref() {
                Ok("dwarf") => "--call-graph=dwarf,32768",
                _ => "--call-graph=fp",
            };
            Command::new("perf")
                .args([
                    "record", "-F", "499", graph, "-o", &out, "-p", &pid, "--", "sleep",
                ])
                .arg(o.seconds.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("perf record")
        });
    tokio::time::sleep_until(end.into()).await;
    let (cpu1, self1, m1) = (cpu_seconds_of(&pid), cpu_seconds(), machine_ticks());
    if broker.callgrind_out.is_some() {
        callgrind_control(&pid, "off");
    }
    let commits1 = probe.group_commits().await;
    if let Some(mut p) = perf {
        let _ = p.wait();
    }
    let mut all = Vec::new();
    let mut failures = 0;
    let mut first_failure = None;
    for task in tasks {
        let (l, f, ff) = task.await.expect("load task");
        all.extend(l);
        failures += f;
        first_failure = first_failure.or(ff);
    }
    assert_eq!(
        failures,
        0,
        "{failures} lookups were not answered 200; the first: {}",
        first_failure.unwrap_or_default()
    );
    all.sort_unstable();
    let secs = o.seconds as f64;
    let ticks = m1.1 - m0.1;
    let requests = all.len().max(1) as f64;
    Figures {
        rate: all.len() as f64 / secs,
        requests: all.len() as f64,
        p50_us: percentile_us(&all, 0.50),
        p99_us: percentile_us(&all, 0.99),
        max_us: all.last().map_or(0.0, |&v| v as f64 / 1000.0),
        server_cpu_us: (cpu1 - cpu0) * 1e6 / requests,
        busy: Busy {
            total: if ticks > 0.0 {
                (m1.0 - m0.0) / ticks * 2.0
            } else {
                0.0
            },
            server: (cpu1 - cpu0) / secs,
            client: (self1 - self0) / secs,
        },
        open_secs: 0.0,
        first_secs: 0.0,
        group_commits: commits0.zip(commits1).map(|(c0, c1)| Commits {
            entries: c1.entries - c0.entries,
            batches: c1.batches - c0.batches,
            handler_us: (c1.lookup_secs - c0.lookup_secs) * 1e6
                / (c1.lookups - c0.lookups).max(1.0),
            commit: c0
                .commit
                .zip(c1.commit)
                .map(|((s0, f0, t0), (s1, f1, t1))| {
                    let batches = c1.batches - c0.batches;
                    (
                        (s1 - s0) * 1e6 / batches.max(1.0),
                        batches - (f1 - f0),
                        batches - (t1 - t0),
                    )
                }),
            segment_starts: c0
                .segment_starts
                .zip(c1.segment_starts)
                .map(|((s0, n0), (s1, n1))| (n1 - n0, (s1 - s0) * 1e3 / (n1 - n0).max(1.0))),
            over_10ms: (
                all.iter().filter(|&&ns| ns > 10_000_000).count() as f64,
                (c1.lookups - c0.lookups) - (c1.lookups_within_10ms - c0.lookups_within_10ms),
            ),
        }),
        instructions_per_request: None,
    }
}

/// Switch callgrind's instrumentation of the broker on or off.
fn callgrind_control(pid: &str, on_off: &str) {
    let out = Command::new("callgrind_control")
        .args(["-i", on_off, pid])
        .output()
        .expect("run callgrind_control");
    assert!(
        out.status.success(),
        "callgrind_control -i {on_off} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The instructions a callgrind profile counted (its `totals:` line).
fn callgrind_instructions(out: &Path) -> u64 {
    let text = std::fs::read_to_string(out)
        .unwrap_or_else(|e| panic!("no callgrind profile at {}: {e}", out.display()));
    text.lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{} has no totals line", out.display()))
}

impl Agent {
    /// Audit entries made durable, group commits, and lookups and their
    /// seconds in the handler so far, from the broker's metrics; `None` if it
    /// does not publish them.
    async fn group_commits(&mut self) -> Option<Counters> {
        let req = Request::builder()
            .method(Method::GET)
            .uri("/v1/metrics")
            .header(HOST, HeaderValue::from_static("localhost"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (status, body) = self.sender.send(req).await;
        if status != 200 {
            return None;
        }
        let text = String::from_utf8_lossy(&body);
        let metric = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let lookup = |what: &str| {
            metric(&format!(
                "sharebroker_http_request_duration_seconds_{what}{{route=\"/v1/cases/{{case}}/lookup\"}}"
            ))
        };
        Some(Counters {
            entries: metric("sharebroker_audit_appends_total")?,
            batches: metric("sharebroker_audit_batch_size_count")?,
            lookup_secs: lookup("sum")?,
            segment_starts: metric("sharebroker_audit_segment_start_duration_seconds_sum").zip(
                metric("sharebroker_audit_segment_start_duration_seconds_count"),
            ),
            lookups_within_10ms: metric(
                "sharebroker_http_request_duration_seconds_bucket{route=\"/v1/cases/{case}/lookup\",le=\"0.01\"}",
            )?,
            commit: (|| {
                let within = |le: &str| {
                    metric(&format!(
                        "sharebroker_audit_commit_duration_seconds_bucket{{le=\"{le}\"}}"
                    ))
                };
                Some((
                    metric("sharebroker_audit_commit_duration_seconds_sum")?,
                    within("0.001")?,
                    within("0.01")?,
                ))
            })(),
            lookups: lookup("count")?,
        })
    }

    async fn get_ready(&mut self) -> (u16, Bytes) {
        let req = Request::builder()
            .method(Method::GET)
            .uri("/v1/ready")
            .header(HOST, HeaderValue::from_static("localhost"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        self.sender.send(req).await
    }
}

/// The answer is the full path's: fields served, an audit entry, a seal.
fn check_lookup(body: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(body).expect("json answer");
    assert!(
        v["data"]["fields"]
            .as_object()
            .is_some_and(|f| !f.is_empty()),
        "a lookup answer without fields: {v}"
    );
    assert!(
        v["meta"]["audit_entry"].is_u64(),
        "a lookup answer without its audit entry: {v}"
    );
    assert!(
        v.get("seal").is_some(),
        "a lookup answer without a seal: {v}"
    );
}
