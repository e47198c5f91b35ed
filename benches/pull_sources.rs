//! The source side of the ingest benchmark (DESIGN.md §7, issue 3): how
//! fast the `postgres` and `mysql` connectors stream a population-shaped
//! table into Arrow batches, against the databases' own dump tools run on
//! the same query in the same command.
//!
//! It creates a ROWS-row table (default 1,000,000: id number, name, sex,
//! birth date, ethnicity, address, phone, update time) in a schema of the
//! local PostgreSQL (`test` database) and in a database of the local
//! MariaDB, both generated in SQL, then times:
//!
//! - PostgreSQL: `psql -c "COPY (SELECT …) TO STDOUT" > /dev/null`, the same
//!   COPY read through the client library (bytes only, no parsing), and the
//!   connector pulling the table as a snapshot and incrementally (ordered by
//!   update time and id, from an index); rows/s and the ratio to psql COPY.
//! - MariaDB: `mariadb --quick -e "SELECT …" > /dev/null` and the connector
//!   (snapshot and incremental); rows/s and the ratio.
//!
//! The connector's batches are counted and dropped for those lines. Then
//! the whole path of DESIGN.md §7 (target ≥ 0.5× COPY): `pull::run` of the
//! PostgreSQL table into a fresh store — staged as Parquet, normalised,
//! resolved into golden records, committed — rows/s against the same psql
//! COPY, with the staging and resolving times apart. The ID numbers are
//! valid (check digit computed in SQL), so every row becomes a person.
//!
//!   cargo bench --bench pull_sources
//!   ROWS=100000 cargo bench --bench pull_sources
//!
//! Both database servers share the machine's two cores with the bench.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use sharebroker::connectors::{
    Connector, ConnectorConfig, ConnectorSpec, DbSource, SourceKind, build,
};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn spec() -> ConnectorSpec {
    let columns = [
        ("id_number", "population.id_number"),
        ("name", "population.name"),
        ("sex", "population.sex"),
        ("birth_date", "population.birth_date"),
        ("ethnicity", "population.ethnicity"),
        ("address", "population.household_address"),
        ("phone", "population.phone"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    ConnectorSpec {
        name: "bench".into(),
        file: "bench.toml".into(),
        agency: "xj-gat".into(),
        dataset: "population".into(),
        subject_column: "id_number".into(),
        record_id_column: "rid".into(),
        as_of_column: "updated".into(),
        columns,
        values: Default::default(),
        pull_interval: None,
    }
}

const COLUMNS: &str = "rid, id_number, name, sex, birth_date, ethnicity, address, phone, updated";

/// Pull everything; (rows, seconds).
fn time_pull(c: &dyn Connector) -> (u64, f64) {
    let started = Instant::now();
    let mut rows = 0u64;
    let stats = c
        .pull(None, &mut |p| {
            rows += p.batch.num_rows() as u64;
            Ok(())
        })
        .expect("connector pull");
    assert_eq!(stats.rejected, 0, "no row of the bench table is bad");
    (rows, started.elapsed().as_secs_f64())
}

/// Run a shell command with stdout to /dev/null; seconds.
fn time_command(program: &str, args: &[&str]) -> f64 {
    let started = Instant::now();
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(status.success(), "{program} failed: {status}");
    started.elapsed().as_secs_f64()
}

fn connector(
    dir: &Path,
    url: &str,
    kind: &str,
    table: &str,
    wm: Option<&str>,
) -> Box<dyn Connector> {
    std::fs::write(dir.join(format!("{kind}.url")), url).expect("write url file");
    let db = DbSource {
        table: Some(table.to_string()),
        url_file: Some(format!("{kind}.url").into()),
        watermark_column: wm.map(str::to_string),
        connect_timeout_secs: 10,
        ..Default::default()
    };
    let source = if kind == "postgres" {
        SourceKind::Postgres(db)
    } else {
        SourceKind::Mysql(db)
    };
    build(
        &ConnectorConfig {
            spec: spec(),
            source,
        },
        dir,
    )
}

fn report(label: &str, rows: u64, secs: f64, baseline: f64) {
    println!(
        "  {label:<44} {:>10.0} rows/s  {secs:>7.2} s  ratio {:.2}×",
        rows as f64 / secs,
        baseline / secs
    );
}

fn postgres(rows: u64, dir: &Path) {
    let mut admin = postgres::Client::connect(PG_URL, postgres::NoTls)
        .expect("PostgreSQL at 127.0.0.1:5432 (user postgres, database test) is unreachable");
    let schema = format!("sb_bench_{}", std::process::id());
    let started = Instant::now();
    create_people_table(&mut admin, &schema, rows);
    let bytes: i64 = admin
        .query_one(
            &format!("SELECT pg_total_relation_size('{schema}.people')"),
            &[],
        )
        .expect("size")
        .get(0);
    println!(
        "PostgreSQL: {rows} rows, {:.0} MiB with index, made in {:.1} s",
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    let query = format!("SELECT {COLUMNS} FROM {schema}.people");
    // Warm the cache once so that the first timed reader is not penalised.
    let _ = time_command(
        "psql",
        &[
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-qAt",
            "-c",
            &format!("COPY ({query}) TO STDOUT"),
        ],
    );
    let psql = time_command(
        "psql",
        &[
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-qAt",
            "-c",
            &format!("COPY ({query}) TO STDOUT"),
        ],
    );
    report(
        "psql COPY (SELECT …) TO STDOUT > /dev/null",
        rows,
        psql,
        psql,
    );
    let started = Instant::now();
    let mut copied = 0u64;
    {
        use std::io::Read;
        let mut reader = admin
            .copy_out(&format!("COPY ({query}) TO STDOUT"))
            .expect("copy out");
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).expect("read copy");
            if n == 0 {
                break;
            }
            copied += n as u64;
        }
    }
    let lib_copy = started.elapsed().as_secs_f64();
    report("client library COPY text, bytes only", rows, lib_copy, psql);
    println!("    ({:.0} MiB of COPY text)", copied as f64 / 1048576.0);
    let table = format!("{schema}.people");
    let (n, secs) = time_pull(connector(dir, PG_URL, "postgres", &table, None).as_ref());
    assert_eq!(n, rows);
    report("connector snapshot → Arrow batches", n, secs, psql);
    let (n, secs) = time_pull(connector(dir, PG_URL, "postgres", &table, Some("updated")).as_ref());
    assert_eq!(n, rows);
    report(
        "connector incremental (ORDER BY updated, rid)",
        n,
        secs,
        psql,
    );
    // The whole path: into stored golden records.
    let catalog = sharebroker::catalog::Catalog::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
    )
    .expect("catalogue");
    std::fs::write(dir.join("postgres.url"), PG_URL).expect("write url file");
    let config = ConnectorConfig {
        spec: spec(),
        source: SourceKind::Postgres(DbSource {
            table: Some(table.clone()),
            url_file: Some("postgres.url".into()),
            connect_timeout_secs: 10,
            ..Default::default()
        }),
    };
    let store_dir = dir.join("store");
    let store = sharebroker::store::TableStore::open_local(&store_dir).expect("store");
    let started = Instant::now();
    let pulled = sharebroker::pull::run(
        &catalog,
        std::slice::from_ref(&config),
        &[],
        dir,
        &store,
        &sharebroker::pull::PullOptions::default(),
    )
    .expect("pull into golden records");
    let whole = started.elapsed().as_secs_f64();
    let staged = pulled.sources[0].1.elapsed.as_secs_f64();
    let persons = pulled
        .subjects
        .iter()
        .find(|(k, _, _)| *k == sharebroker::catalog::SubjectKind::Person)
        .map_or(0, |(_, n, _)| *n);
    report(
        "pull → staged → resolved → stored golden",
        rows,
        whole,
        psql,
    );
    println!(
        "    ({persons} golden persons, {} quarantined; staging {staged:.1} s, resolving and storing {:.1} s)",
        pulled.quarantined,
        whole - staged
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&store_dir);
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .expect("drop bench schema");
}

fn mariadb(rows: u64, dir: &Path) {
    use mysql::prelude::Queryable;
    let mut admin =
        mysql::Conn::new(mysql::Opts::from_url("mysql://root@127.0.0.1:3306/test").expect("url"))
            .expect("MariaDB at 127.0.0.1:3306 (user root, database test) is unreachable");
    let db = format!("sb_bench_{}", std::process::id());
    let started = Instant::now();
    for stmt in [
        format!("CREATE DATABASE {db} CHARACTER SET utf8mb4"),
        format!("CREATE TABLE {db}.digits (i int)"),
        format!("INSERT INTO {db}.digits VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)"),
        format!(
            "CREATE TABLE {db}.people (rid bigint PRIMARY KEY, id_number char(18), name varchar(40), sex char(1), birth_date date, ethnicity varchar(2), address varchar(200), phone varchar(11), updated datetime NOT NULL, KEY (updated, rid))"
        ),
        format!(
            "INSERT INTO {db}.people
               SELECT g, CONCAT('6501', LPAD(g * 7919 % 100000000000000, 14, '0')),
                      CONCAT(ELT(1 + g % 5, '买买提','阿依古丽','王','李','张'), ELT(1 + (g DIV 5) % 5, '·艾力','·吐尔逊','建国','秀英','伟')),
                      1 + g % 2, DATE_ADD('1950-01-01', INTERVAL g % 25000 DAY), LPAD(1 + g % 56, 2, '0'),
                      CONCAT('新疆维吾尔自治区乌鲁木齐市天山区', g % 999, '号', g % 30, '栋', g % 200, '室'),
                      CONCAT('13', LPAD(g * 104729 % 1000000000, 9, '0')),
                      DATE_ADD('2024-01-01', INTERVAL g DIV 10 SECOND)
               FROM (SELECT a.i + 10*b.i + 100*c.i + 1000*d.i + 10000*e.i + 100000*f.i + 1000000*h.i + 1 AS g
                     FROM {db}.digits a, {db}.digits b, {db}.digits c, {db}.digits d, {db}.digits e, {db}.digits f,
                          (SELECT i FROM {db}.digits WHERE i < {}) h) t
               WHERE g <= {rows}",
            rows.div_ceil(1_000_000).clamp(1, 10)
        ),
        format!("ANALYZE TABLE {db}.people"),
    ] {
        admin.query_drop(&stmt).expect("create bench table");
    }
    println!(
        "MariaDB: {rows} rows, made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let query = format!("SELECT {COLUMNS} FROM {db}.people");
    let args = ["--quick", "-h", "127.0.0.1", "-uroot", "-e", query.as_str()];
    let _ = time_command("mariadb", &args);
    let dump = time_command("mariadb", &args);
    report(
        "mariadb --quick -e 'SELECT …' > /dev/null",
        rows,
        dump,
        dump,
    );
    let url = format!("mysql://root@127.0.0.1:3306/{db}");
    let (n, secs) = time_pull(connector(dir, &url, "mysql", "people", None).as_ref());
    assert_eq!(n, rows);
    report("connector snapshot → Arrow batches", n, secs, dump);
    let (n, secs) = time_pull(connector(dir, &url, "mysql", "people", Some("updated")).as_ref());
    assert_eq!(n, rows);
    report(
        "connector incremental (ORDER BY updated, rid)",
        n,
        secs,
        dump,
    );
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .expect("drop bench database");
}

fn main() {
    let rows: u64 = env_or("ROWS", 1_000_000);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "pull_sources: {rows} rows; {} cores ({cpu}); ratio = dump tool's time ÷ this reader's time",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let dir = tempfile::tempdir().expect("tempdir");
    postgres(rows, dir.path());
    mariadb(rows, dir.path());
    println!(
        "peak RSS of the bench process: {:.0} MiB; CPU {:.1} s",
        status_mib("VmHWM:"),
        cpu_seconds()
    );
}
