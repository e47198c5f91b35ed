//! Re-resolving after a pull touches only what changed (issue 4): the
//! resolve after an incremental pull of N changed rows, against resolving
//! every record from scratch (`pull::resolve_all`, what every resolve did
//! before) on the same store in the same run.
//!
//! It creates a ROWS-row population table (default 1,000,000, valid ID
//! numbers) in a schema of the local PostgreSQL (`test` database), pulls
//! it once through an incremental connector (staging, normalising,
//! resolving and storing everything), then for each N in CHANGES (default
//! 10,100,1000,10000) updates N rows spread over the whole table (a new
//! name and update time: the worst case for key buckets), pulls again and
//! times the resolve; then resolves everything from scratch and times it.
//!
//!   cargo bench --bench resolve_incremental
//!   ROWS=200000 CHANGES=10,1000 cargo bench --bench resolve_incremental
//!
//! PostgreSQL shares the machine's two cores with the bench.

mod common;
use common::*;

use std::time::Instant;

use sharebroker::catalog::Catalog;
use sharebroker::config::Settings;
use sharebroker::pull::{self, PullOptions};
use sharebroker::store::TableStore;

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn main() {
    let rows: u64 = env_or("ROWS", 1_000_000);
    let changes: Vec<u64> = std::env::var("CHANGES")
        .unwrap_or_else(|_| "10,100,1000,10000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("CHANGES: numbers separated by commas")
        })
        .collect();
    let mut admin = postgres::Client::connect(PG_URL, postgres::NoTls)
        .expect("PostgreSQL at 127.0.0.1:5432 (user postgres, database test) is unreachable");
    let schema = format!("sb_incr_{}", std::process::id());
    let started = Instant::now();
    create_people_table(&mut admin, &schema, rows);
    println!(
        "PostgreSQL: {rows} rows in {schema}.people, made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let dir = bench_dir().join(format!("incremental-{}", std::process::id()));
    let connectors = dir.join("connectors");
    std::fs::create_dir_all(&connectors).expect("bench dir");
    std::fs::write(
        connectors.join("people.toml"),
        format!(
            r#"agency = "xj-gat"
dataset = "population"
subject_column = "id_number"
record_id_column = "rid"
as_of_column = "updated"

[columns]
id_number = "population.id_number"
name = "population.name"
sex = "population.sex"
birth_date = "population.birth_date"
ethnicity = "population.ethnicity"
address = "population.household_address"
phone = "population.phone"

[source]
type = "postgres"
table = "{schema}.people"
url_env = "SB_BENCH_PG_URL"
watermark_column = "updated"
"#
        ),
    )
    .expect("connector file");
    // SAFETY: set before any other thread starts.
    unsafe { std::env::set_var("SB_BENCH_PG_URL", PG_URL) };
    let s = Settings {
        policies_dir: repo("policies"),
        connectors_dir: connectors,
        data_dir: dir.join("data"),
        ..Settings::default()
    };
    let options = PullOptions::default();

    let r = pull::run_configured_with(&s, &[], &options).expect("first pull");
    let staging = r.sources[0].1.elapsed.as_secs_f64();
    println!(
        "first pull: {} rows staged in {staging:.1} s, resolved and stored in {:.1} s ({} persons)",
        r.sources[0].1.rows,
        r.elapsed.as_secs_f64() - staging,
        r.subjects.iter().map(|(_, n, _)| n).sum::<usize>()
    );
    let catalog = Catalog::load(&s.policies_dir).expect("catalogue");
    let configs =
        sharebroker::connectors::load_dir(&s.connectors_dir, &catalog).expect("connectors");
    let store = TableStore::open_local(&s.store_dir()).expect("store");
    println!(
        "{:>8} {:>12} {:>14} {:>16} {:>12} {:>8}",
        "changed", "staged (s)", "resolved (s)", "buckets touched", "all (s)", "ratio"
    );
    for (round, &n) in changes.iter().enumerate() {
        let step = (rows / n.max(1)).max(1);
        admin
            .batch_execute(&format!(
                "UPDATE {schema}.people SET name = name || '改', updated = TIMESTAMP '2030-01-01' + {round} * INTERVAL '1 day'
                 WHERE rid % {step} = {}",
                round as u64 % step
            ))
            .expect("update");
        let r = pull::run_configured_with(&s, &[], &options).expect("incremental pull");
        let staged = r.sources[0].1.elapsed.as_secs_f64();
        let incremental = r.elapsed.as_secs_f64() - staged;
        let touched = r
            .touched
            .clone()
            .expect("an incremental pull of valid rows resolves only what changed");
        let t = Instant::now();
        let all = pull::resolve_all(&catalog, &configs, &store).expect("resolve everything");
        let everything = t.elapsed().as_secs_f64();
        assert_eq!(
            all.subjects, r.subjects,
            "both resolves count the same subjects"
        );
        println!(
            "{:>8} {staged:>12.2} {incremental:>14.2} {:>11} of {:<4} {everything:>8.2} {:>7.1}×",
            touched.records,
            touched.partitions,
            touched.buckets,
            everything / incremental
        );
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .expect("drop bench schema");
}
