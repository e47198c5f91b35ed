//! Helpers shared by the whole-system benchmarks: settings from the
//! environment, the cached 1,000,000-person data directory, and a
//! process's CPU time and memory (Linux /proc).
#![allow(dead_code)] // each bench uses a subset

use std::path::{Path, PathBuf};
use std::time::Instant;

use sharebroker::catalog::Catalog;
use sharebroker::config::Settings;
use sharebroker::datagen::{GenOptions, generate};
use sharebroker::pki;

/// A path in this repository.
pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Where the benchmarks cache their data: BENCH_DIR, default
/// /var/tmp/sharebroker-bench (a real disk: the audit log fsyncs there).
pub fn bench_dir() -> PathBuf {
    std::env::var("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/tmp/sharebroker-bench"))
}

/// A data directory with `persons` generated (`gen`, seed 2021) and pulled
/// through the real pipeline, reused if a previous run finished it.
pub fn prepared_store(persons: usize) -> Settings {
    let settings = Settings {
        policies_dir: repo("policies"),
        connectors_dir: repo("connectors"),
        data_dir: bench_dir().join(format!("store-{persons}")),
        ..Settings::default()
    };
    let done = settings.data_dir.join("pulled");
    if done.exists() {
        return settings;
    }
    let _ = std::fs::remove_dir_all(&settings.data_dir);
    eprintln!(
        "preparing {persons} persons in {} (once)",
        settings.data_dir.display()
    );
    let t = Instant::now();
    generate(&GenOptions {
        out_dir: settings.sources_dir(),
        persons,
        seed: 2021,
        progress: false,
    })
    .expect("gen");
    Catalog::load(&settings.policies_dir).expect("catalogue");
    sharebroker::pull::run_configured(&settings, &[], false).expect("pull");
    std::fs::write(&done, b"").expect("marker");
    eprintln!("prepared in {:.1?}", t.elapsed());
    settings
}

/// An environment variable parsed as `T`, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of this process so far.
pub fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// User + system CPU seconds so far of process `pid` (or "self").
pub fn cpu_seconds_of(pid: &str) -> f64 {
    proc_ticks(pid, &[11, 12]) / 100.0
}

/// CPU seconds of process `pid` plus those of its children it has reaped
/// (utime, stime, cutime, cstime): for a server that forks a process per
/// connection, such as PostgreSQL's postmaster.
pub fn cpu_seconds_with_children(pid: &str) -> f64 {
    proc_ticks(pid, &[11, 12, 13, 14]) / 100.0
}

/// Sum of the listed fields of /proc/<pid>/stat, counted after the command
/// name (clock ticks; 100 per second on Linux).
fn proc_ticks(pid: &str, fields_wanted: &[usize]) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    fields_wanted
        .iter()
        .filter_map(|&k| fields.get(k).and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// A `/proc/self/status` memory line (`VmRSS:`, `VmHWM:` …) in MiB.
pub fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// A development PKI under `s`: the CA, a server certificate for
/// localhost / 127.0.0.1 and every agency's client certificate (kept if
/// already there).
pub fn init_pki(s: &Settings) {
    let catalog = Catalog::load(&s.policies_dir).expect("catalogue");
    let names: Vec<String> = catalog
        .agencies
        .iter()
        .flat_map(|a| a.certificate_names.clone())
        .collect();
    pki::init(
        &s.pki_dir(),
        &names,
        &["localhost".to_string(), "127.0.0.1".to_string()],
        false,
    )
    .expect("pki");
}

/// A population-shaped table `{schema}.people` of `rows` rows in the local
/// PostgreSQL (rid, id_number, name, sex, birth_date, ethnicity, address,
/// phone, updated), generated in SQL, with valid ID numbers (check
/// character computed in SQL) and an index for incremental pulls.
#[cfg(feature = "postgres")]
pub fn create_people_table(admin: &mut postgres::Client, schema: &str, rows: u64) {
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.people (rid bigint PRIMARY KEY, id_number char(18), name text, sex char(1), birth_date date, ethnicity varchar(2), address text, phone varchar(11), updated timestamp NOT NULL);
             INSERT INTO {schema}.people
               SELECT g, f17 || substr('10X98765432', 1 + (SELECT sum(substr(f17, i, 1)::int * (ARRAY[7,9,10,5,8,4,2,1,6,3,7,9,10,5,8,4,2])[i]) FROM generate_series(1, 17) i)::int % 11, 1),
                      (ARRAY['买买提','阿依古丽','王','李','张'])[1 + g % 5] || (ARRAY['·艾力','·吐尔逊','建国','秀英','伟'])[1 + g / 5 % 5],
                      (1 + g % 2)::text, DATE '1950-01-01' + (g % 25000)::int, lpad((1 + g % 56)::text, 2, '0'),
                      '新疆维吾尔自治区乌鲁木齐市天山区' || (g % 999) || '号' || (g % 30) || '栋' || (g % 200) || '室',
                      '13' || lpad((g * 104729 % 1000000000)::text, 9, '0'),
                      TIMESTAMP '2024-01-01' + (g / 10) * INTERVAL '1 second'
               FROM (SELECT g, '650102' || to_char(DATE '1950-01-01' + (g % 25000)::int, 'YYYYMMDD') || lpad((g / 25000 % 1000)::text, 3, '0') AS f17
                     FROM generate_series(1::bigint, {rows}) g) AS ids;
             CREATE INDEX ON {schema}.people (updated, rid);
             ANALYZE {schema}.people"
        ))
        .expect("create bench table");
}
