//! Connectors against the real PostgreSQL and MariaDB services on
//! 127.0.0.1: every test makes its own schema or database with a unique name
//! and drops it at the end, and fails loudly when a service is unreachable.
//! The same scenarios run against both: snapshot with type mapping,
//! incremental pulls with watermark ties, updates and inserts between pulls
//! arriving exactly once, a re-pull with no changes emitting nothing, the
//! connection killed mid-pull and the pull resumed from the last checkpoint,
//! a bad row quarantined while the rest continue, and errors that never
//! carry a secret.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use arrow_array::{Array, StringArray, UInt64Array};
use sharebroker::connectors::{
    COL_RECORD_ID, Checkpoint, Connector, ConnectorConfig, ConnectorError, ConnectorSpec, DbSource,
    PullMode, PullStats, Rejected, SourceKind, build,
};

const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const MY_ADMIN: &str = "mysql://root@127.0.0.1:3306/test";

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn spec(name: &str, extra: &[(&str, &str)]) -> ConnectorSpec {
    let mut columns = vec![
        ("id_number".to_string(), "population.id_number".to_string()),
        ("name".to_string(), "population.name".to_string()),
    ];
    columns.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    ConnectorSpec {
        name: name.to_string(),
        file: PathBuf::from(format!("{name}.toml")),
        agency: "xj-gat".into(),
        dataset: "population".into(),
        subject_column: "id_number".into(),
        record_id_column: "rid".into(),
        as_of_column: "updated".into(),
        columns,
        values: HashMap::new(),
        pull_interval: None,
    }
}

/// Everything one pull emitted.
#[derive(Default)]
struct Collected {
    /// Per emitted row: record id → every batch column after `__position`.
    rows: Vec<(String, BTreeMap<String, String>)>,
    positions: Vec<u64>,
    rejected: Vec<Rejected>,
    checkpoints: Vec<Option<Checkpoint>>,
}

impl Collected {
    fn last_checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoints.last().cloned().flatten()
    }
}

fn pull_with(
    c: &dyn Connector,
    from: Option<&Checkpoint>,
    mut on_batch: impl FnMut(usize),
) -> (Collected, Result<PullStats, ConnectorError>) {
    let mut got = Collected::default();
    let result = c.pull(from, &mut |p| {
        let schema = p.batch.schema();
        let pos = p
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .expect("u64 positions");
        let cols: Vec<(&str, &StringArray)> = (1..p.batch.num_columns())
            .map(|i| {
                (
                    schema.field(i).name().as_str(),
                    p.batch
                        .column(i)
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .expect("text column"),
                )
            })
            .collect();
        for r in 0..p.batch.num_rows() {
            let row: BTreeMap<String, String> = cols
                .iter()
                .map(|(n, a)| (n.to_string(), a.value(r).to_string()))
                .collect();
            got.positions.push(pos.value(r));
            got.rows.push((row[COL_RECORD_ID].clone(), row));
        }
        got.rejected.extend(p.rejected);
        got.checkpoints.push(p.checkpoint);
        on_batch(got.checkpoints.len());
        Ok(())
    });
    (got, result)
}

fn pull(c: &dyn Connector, from: Option<&Checkpoint>) -> Collected {
    let (got, result) = pull_with(c, from, |_| {});
    result.expect("pull");
    got
}

fn connector(
    name: &str,
    source: SourceKind,
    extra: &[(&str, &str)],
    dir: &Path,
) -> Box<dyn Connector> {
    build(
        &ConnectorConfig {
            spec: spec(name, extra),
            source,
        },
        dir,
    )
}

/// A db source reading its URL from a file in `dir`.
fn db_source(
    dir: &Path,
    url: &str,
    table: Option<&str>,
    query: Option<&str>,
    wm: Option<&str>,
) -> DbSource {
    std::fs::write(dir.join("url"), format!("{url}\n")).expect("write url file");
    DbSource {
        table: table.map(str::to_string),
        query: query.map(str::to_string),
        url_file: Some(PathBuf::from("url")),
        watermark_column: wm.map(str::to_string),
        connect_timeout_secs: 5,
        ..Default::default()
    }
}

/// Upsert rows by record id, failing on a row emitted twice in one list.
fn upsert(into: &mut BTreeMap<String, String>, rows: &[(String, BTreeMap<String, String>)]) {
    for (id, row) in rows {
        into.insert(id.clone(), row["population.name"].clone());
    }
}

fn assert_once(rows: &[(String, BTreeMap<String, String>)]) {
    let mut seen = HashMap::new();
    for (id, _) in rows {
        *seen.entry(id.as_str()).or_insert(0) += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "rows emitted more than once: {dups:?}");
}

/// A test's own schema or database.
trait TestDb {
    fn exec(&mut self, sql: &str);
    /// Record id → name of every row of its `people` table.
    fn names(&mut self) -> BTreeMap<String, String>;
}

impl TestDb for pg::Schema {
    fn exec(&mut self, sql: &str) {
        pg::Schema::exec(self, sql)
    }
    fn names(&mut self) -> BTreeMap<String, String> {
        pg::Schema::names(self)
    }
}

impl TestDb for my::Db {
    fn exec(&mut self, sql: &str) {
        my::Db::exec(self, sql)
    }
    fn names(&mut self) -> BTreeMap<String, String> {
        my::Db::names(self)
    }
}

// ---------------------------------------------------------------- postgres

mod pg {
    use super::*;

    pub fn admin() -> postgres::Client {
        postgres::Client::connect(PG_ADMIN, postgres::NoTls).unwrap_or_else(|e| {
            panic!("PostgreSQL at 127.0.0.1:5432 (user postgres, database test) is unreachable: {e}; these tests need the local service and never skip")
        })
    }

    /// A schema that is dropped when the test ends, however it ends.
    pub struct Schema {
        pub name: String,
        pub client: postgres::Client,
    }

    impl Schema {
        pub fn new() -> Schema {
            let name = unique("sbt");
            let mut client = admin();
            client
                .batch_execute(&format!("CREATE SCHEMA {name}"))
                .expect("create schema");
            Schema { name, client }
        }
        pub fn exec(&mut self, sql: &str) {
            let sql = sql.replace("{s}", &self.name);
            self.client
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        pub fn names(&mut self) -> BTreeMap<String, String> {
            self.client
                .query(
                    &format!("SELECT rid::text, name FROM {}.people", self.name),
                    &[],
                )
                .expect("select")
                .iter()
                .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
                .collect()
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let _ = self
                .client
                .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }

    /// `n` people; the update time is shared by runs of 100 record ids, so
    /// watermark ties cross every batch boundary.
    pub fn people(s: &mut Schema, n: u32, pad: usize) {
        s.exec(&format!(
            "CREATE TABLE {{s}}.people (rid bigint PRIMARY KEY, id_number text, name text, birth date, income numeric(20,2), updated timestamp NOT NULL, address text);
             INSERT INTO {{s}}.people SELECT g, lpad(g::text, 18, '6'), 'p' || g, DATE '1980-01-01' + g % 9000, g * 1000.01, TIMESTAMP '2024-01-01' + (g / 100) * INTERVAL '1 minute', repeat('x', {pad}) FROM generate_series(1, {n}) g"
        ));
    }
}

#[test]
fn postgres_snapshot_maps_types_and_quarantines_rows_without_record_id() {
    let mut s = pg::Schema::new();
    s.exec(
        "CREATE TABLE {s}.people (rid bigint, id_number text, name text, birth date, income numeric(20,2), updated timestamp, address text);
         INSERT INTO {s}.people VALUES
           (1, '650102198506150010', '买买提·艾力', '1985-06-15', 12345678901234567.89, '2024-01-02 03:04:05', 'a'),
           (2, '650102198506150029', NULL, NULL, -0.5, '2024-01-02 03:04:05.25', NULL),
           (NULL, '650102198506150037', 'no id', NULL, NULL, NULL, NULL)",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let table = format!("{}.people", s.name);
    let c = connector(
        &unique("pgsnap"),
        SourceKind::Postgres(db_source(dir.path(), PG_URL, Some(&table), None, None)),
        &[("birth", "population.birth_date"), ("income", "x.income")],
        dir.path(),
    );
    assert_eq!(c.mode(), PullMode::Snapshot);
    c.check().expect("check");
    let got = pull(c.as_ref(), None);
    assert_eq!(
        got.checkpoints,
        vec![None],
        "snapshot batches carry no checkpoint"
    );
    let rows: BTreeMap<_, _> = got.rows.into_iter().collect();
    let one = &rows["1"];
    assert_eq!(one["population.name"], "买买提·艾力");
    assert_eq!(one["population.birth_date"], "1985-06-15");
    assert_eq!(one["x.income"], "12345678901234567.89");
    assert_eq!(one["__as_of"], "2024-01-02T03:04:05");
    assert_eq!(one["__subject"], "650102198506150010");
    let two = &rows["2"];
    assert_eq!(two["population.name"], "");
    assert_eq!(two["x.income"], "-0.50");
    assert_eq!(two["__as_of"], "2024-01-02T03:04:05.250000");
    assert_eq!(got.rejected.len(), 1);
    assert_eq!(got.rejected[0].reason, "the record id is empty");
    assert!(
        got.rejected[0].raw.contains("name=no id"),
        "{}",
        got.rejected[0].raw
    );
}

#[test]
fn postgres_query_source_and_missing_columns() {
    let mut s = pg::Schema::new();
    pg::people(&mut s, 10, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let q = format!(
        "SELECT rid, id_number, upper(name) AS name, updated FROM {}.people WHERE rid <= 5",
        s.name
    );
    let c = connector(
        &unique("pgq"),
        SourceKind::Postgres(db_source(dir.path(), PG_URL, None, Some(&q), None)),
        &[],
        dir.path(),
    );
    let got = pull(c.as_ref(), None);
    assert_eq!(got.rows.len(), 5);
    assert!(
        got.rows
            .iter()
            .all(|(_, r)| r["population.name"].starts_with('P'))
    );
    // A mapped column the source lacks: the error lists what it has.
    let c = connector(
        &unique("pgq"),
        SourceKind::Postgres(db_source(dir.path(), PG_URL, None, Some(&q), None)),
        &[("birth", "population.birth_date")],
        dir.path(),
    );
    let err = c.check().unwrap_err().to_string();
    assert!(
        err.contains("column `birth` named in the connector file is not in the source (columns found: rid, id_number, name, updated)"),
        "{err}"
    );
}

#[test]
fn postgres_incremental_ties_updates_and_inserts_arrive_exactly_once() {
    let mut s = pg::Schema::new();
    pg::people(&mut s, 20_000, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let table = format!("{}.people", s.name);
    let c = connector(
        &unique("pginc"),
        SourceKind::Postgres(db_source(
            dir.path(),
            PG_URL,
            Some(&table),
            None,
            Some("updated"),
        )),
        &[],
        dir.path(),
    );
    assert_eq!(c.mode(), PullMode::Incremental);
    c.check().expect("check");
    incremental_scenario(c.as_ref(), &mut s, "{s}.people");
}

#[test]
fn postgres_connection_killed_mid_pull_resumes_without_loss() {
    let mut s = pg::Schema::new();
    pg::people(&mut s, 100_000, 400);
    let dir = tempfile::tempdir().expect("tempdir");
    let table = format!("{}.people", s.name);
    let name = unique("pgkill");
    let c = connector(
        &name,
        SourceKind::Postgres(db_source(
            dir.path(),
            PG_URL,
            Some(&table),
            None,
            Some("updated"),
        )),
        &[("address", "population.household_address")],
        dir.path(),
    );
    let mut killer = pg::admin();
    let app = format!("sharebroker:{name}");
    let kill = move || {
        let n = killer
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .expect("terminate");
        assert_eq!(n, 1, "the connector's backend was not found");
    };
    let all = s.names();
    killed_scenario(
        c.as_ref(),
        kill,
        all,
        &["terminating connection", "connection lost"],
    );
}

#[test]
fn postgres_undecodable_value_is_quarantined_and_the_rest_continue() {
    // A SQL_ASCII database stores whatever bytes it is given, as legacy
    // agency databases do; the server passes them through unconverted.
    let db = unique("sbt_ascii");
    let mut admin = pg::admin();
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {db} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ))
        .expect("create database");
    struct DropDb(postgres::Client, String);
    impl Drop for DropDb {
        fn drop(&mut self) {
            let _ = self
                .0
                .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.1));
        }
    }
    let _guard = DropDb(admin, db.clone());
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let mut c2 = postgres::Client::connect(&url, postgres::NoTls).expect("connect new database");
    c2.batch_execute(
        "CREATE TABLE people (rid int, id_number text, name text, updated timestamp NOT NULL);
         INSERT INTO people VALUES (1, '650102198506150010', 'ok', '2024-01-01'),
           (2, '650102198506150029', E'ab\\xff', '2024-01-01'),
           (3, '650102198506150037', 'also ok', '2024-01-02')",
    )
    .expect("fill");
    drop(c2);
    let dir = tempfile::tempdir().expect("tempdir");
    let c = connector(
        &unique("pgbad"),
        SourceKind::Postgres(db_source(
            dir.path(),
            &url,
            Some("people"),
            None,
            Some("updated"),
        )),
        &[],
        dir.path(),
    );
    let got = pull(c.as_ref(), None);
    let ids: Vec<&str> = got.rows.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1", "3"]);
    assert_eq!(got.rejected.len(), 1);
    assert_eq!(got.rejected[0].position, 2);
    assert_eq!(
        got.rejected[0].reason,
        "column `name`: not valid UTF-8 at byte 2"
    );
    // The checkpoint is past the rejected row: a re-pull repeats nothing.
    let again = pull(c.as_ref(), got.last_checkpoint().as_ref());
    assert!(again.rows.is_empty() && again.rejected.is_empty());
}

#[test]
fn postgres_errors_never_carry_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "S3cret-Pa55word";
    for url in [
        format!("postgres://postgres:{secret}@127.0.0.1:5432/sbt_no_such_db"),
        format!("postgres://postgres:{secret}@127.0.0.1:1/test"),
        format!("postgres://postgres:{secret}@127.0.0.1:5432/test?bogus_option=1"),
    ] {
        let c = connector(
            &unique("pgsecret"),
            SourceKind::Postgres(db_source(dir.path(), &url, Some("people"), None, None)),
            &[],
            dir.path(),
        );
        let err = c.check().unwrap_err().to_string();
        assert!(!err.contains(secret), "secret in `{err}`");
        assert!(
            err.contains("cannot connect") || err.contains("credentials"),
            "{err}"
        );
    }
    // A password file is read at connect time and never shown either.
    std::fs::write(dir.path().join("pw"), format!("{secret}\n")).expect("write");
    let c = connector(
        &unique("pgsecret"),
        SourceKind::Postgres(DbSource {
            table: Some("people".into()),
            host: Some("127.0.0.1".into()),
            port: Some(1),
            user: Some("postgres".into()),
            database: Some("test".into()),
            password_file: Some("pw".into()),
            connect_timeout_secs: 5,
            ..Default::default()
        }),
        &[],
        dir.path(),
    );
    let err = c.check().unwrap_err().to_string();
    assert!(
        !err.contains(secret) && err.contains("cannot connect"),
        "{err}"
    );
    // A variable that is not set is named, not guessed at.
    let c = connector(
        &unique("pgsecret"),
        SourceKind::Postgres(DbSource {
            table: Some("people".into()),
            url_env: Some("SHAREBROKER_TEST_UNSET_URL".into()),
            connect_timeout_secs: 5,
            ..Default::default()
        }),
        &[],
        dir.path(),
    );
    let err = c.check().unwrap_err().to_string();
    assert!(
        err.contains("environment variable `SHAREBROKER_TEST_UNSET_URL`"),
        "{err}"
    );
}

// ------------------------------------------------------------------- mysql

mod my {
    use super::*;
    use mysql::prelude::Queryable;

    pub fn admin() -> mysql::Conn {
        mysql::Conn::new(mysql::Opts::from_url(MY_ADMIN).expect("url")).unwrap_or_else(|e| {
            panic!("MariaDB at 127.0.0.1:3306 (user root, database test) is unreachable: {e}; these tests need the local service and never skip")
        })
    }

    /// A database that is dropped when the test ends, however it ends.
    pub struct Db {
        pub name: String,
        pub conn: mysql::Conn,
    }

    impl Db {
        pub fn new() -> Db {
            let name = unique("sbt");
            let mut conn = admin();
            conn.query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
                .expect("create database");
            Db { name, conn }
        }
        pub fn url(&self) -> String {
            format!("mysql://root@127.0.0.1:3306/{}", self.name)
        }
        pub fn exec(&mut self, sql: &str) {
            let sql = sql.replace("{s}", &self.name);
            for stmt in sql.split(";\n") {
                if !stmt.trim().is_empty() {
                    self.conn
                        .query_drop(stmt)
                        .unwrap_or_else(|e| panic!("{stmt}: {e}"));
                }
            }
        }
        pub fn names(&mut self) -> BTreeMap<String, String> {
            self.conn
                .query::<(String, Option<String>), _>(format!(
                    "SELECT CAST(rid AS CHAR), name FROM {}.people",
                    self.name
                ))
                .expect("select")
                .into_iter()
                .map(|(a, b)| (a, b.unwrap_or_default()))
                .collect()
        }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            let _ = self.conn.query_drop(format!("DROP DATABASE {}", self.name));
        }
    }

    /// As [`pg::people`]: update times shared by runs of 100 record ids.
    pub fn people(db: &mut Db, n: u32, pad: usize) {
        db.exec(&format!(
            "CREATE TABLE {{s}}.digits (i int);\n\
             INSERT INTO {{s}}.digits VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9);\n\
             CREATE TABLE {{s}}.people (rid bigint PRIMARY KEY, id_number varchar(18), name varchar(100), birth date, income decimal(20,2), updated datetime NOT NULL, address text, KEY (updated, rid));\n\
             INSERT INTO {{s}}.people SELECT g, LPAD(g, 18, '6'), CONCAT('p', g), DATE_ADD('1980-01-01', INTERVAL g % 9000 DAY), g * 1000.01, DATE_ADD('2024-01-01', INTERVAL (g DIV 100) MINUTE), REPEAT('x', {pad}) FROM (SELECT a.i + 10 * b.i + 100 * c.i + 1000 * d.i + 10000 * e.i + 1 AS g FROM {{s}}.digits a, {{s}}.digits b, {{s}}.digits c, {{s}}.digits d, {{s}}.digits e) t WHERE g <= {n}"
        ));
    }
}

#[test]
fn mysql_snapshot_maps_types_and_quarantines_rows_without_record_id() {
    let mut db = my::Db::new();
    db.exec(
        "CREATE TABLE {s}.people (rid bigint, id_number varchar(18), name varchar(100), birth date, income decimal(20,2), updated datetime(6), address text);\n\
         INSERT INTO {s}.people VALUES (1, '650102198506150010', '买买提·艾力', '1985-06-15', 12345678901234567.89, '2024-01-02 03:04:05', 'a'), (2, '650102198506150029', NULL, NULL, -0.5, '2024-01-02 03:04:05.25', NULL), (NULL, '650102198506150037', 'no id', NULL, NULL, NULL, NULL)",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let c = connector(
        &unique("mysnap"),
        SourceKind::Mysql(db_source(dir.path(), &db.url(), Some("people"), None, None)),
        &[("birth", "population.birth_date"), ("income", "x.income")],
        dir.path(),
    );
    assert_eq!(c.mode(), PullMode::Snapshot);
    c.check().expect("check");
    let got = pull(c.as_ref(), None);
    assert_eq!(got.checkpoints, vec![None]);
    let rows: BTreeMap<_, _> = got.rows.into_iter().collect();
    let one = &rows["1"];
    assert_eq!(one["population.name"], "买买提·艾力");
    assert_eq!(one["population.birth_date"], "1985-06-15");
    assert_eq!(one["x.income"], "12345678901234567.89");
    assert_eq!(one["__as_of"], "2024-01-02T03:04:05");
    let two = &rows["2"];
    assert_eq!(two["population.name"], "");
    assert_eq!(two["x.income"], "-0.50");
    assert_eq!(two["__as_of"], "2024-01-02T03:04:05.250000");
    assert_eq!(got.rejected.len(), 1);
    assert_eq!(got.rejected[0].reason, "the record id is empty");
    // A mapped column the source lacks: the error lists what it has.
    let c = connector(
        &unique("mysnap"),
        SourceKind::Mysql(db_source(dir.path(), &db.url(), Some("people"), None, None)),
        &[("gender", "population.sex")],
        dir.path(),
    );
    let err = c.check().unwrap_err().to_string();
    assert!(
        err.contains("column `gender` named in the connector file is not in the source (columns found: rid, id_number, name, birth, income, updated, address)"),
        "{err}"
    );
}

#[test]
fn mysql_incremental_ties_updates_and_inserts_arrive_exactly_once() {
    let mut db = my::Db::new();
    my::people(&mut db, 20_000, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let c = connector(
        &unique("myinc"),
        SourceKind::Mysql(db_source(
            dir.path(),
            &db.url(),
            Some("people"),
            None,
            Some("updated"),
        )),
        &[],
        dir.path(),
    );
    assert_eq!(c.mode(), PullMode::Incremental);
    c.check().expect("check");
    incremental_scenario(c.as_ref(), &mut db, "{s}.people");
}

#[test]
fn mysql_connection_killed_mid_pull_resumes_without_loss() {
    use mysql::prelude::Queryable;
    let mut db = my::Db::new();
    my::people(&mut db, 100_000, 400);
    let dir = tempfile::tempdir().expect("tempdir");
    let c = connector(
        &unique("mykill"),
        SourceKind::Mysql(db_source(
            dir.path(),
            &db.url(),
            Some("people"),
            None,
            Some("updated"),
        )),
        &[("address", "population.household_address")],
        dir.path(),
    );
    let mut killer = my::admin();
    let name = db.name.clone();
    let kill = move || {
        let ids: Vec<u64> = killer
            .exec(
                "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
                (name.as_str(),),
            )
            .expect("processlist");
        assert_eq!(ids.len(), 1, "the connector's connection was not found");
        killer.query_drop(format!("KILL {}", ids[0])).expect("kill");
    };
    let all = db.names();
    killed_scenario(c.as_ref(), kill, all, &["connection lost"]);
}

#[test]
fn mysql_undecodable_value_is_quarantined_and_the_rest_continue() {
    let mut db = my::Db::new();
    db.exec(
        "CREATE TABLE {s}.people (rid int, id_number varchar(18), name varbinary(100), updated datetime NOT NULL);\n\
         INSERT INTO {s}.people VALUES (1, '650102198506150010', 'ok', '2024-01-01'), (2, '650102198506150029', X'6162FF', '2024-01-01'), (3, '650102198506150037', 'also ok', '2024-01-02')",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let c = connector(
        &unique("mybad"),
        SourceKind::Mysql(db_source(
            dir.path(),
            &db.url(),
            Some("people"),
            None,
            Some("updated"),
        )),
        &[],
        dir.path(),
    );
    let got = pull(c.as_ref(), None);
    let ids: Vec<&str> = got.rows.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1", "3"]);
    assert_eq!(got.rejected.len(), 1);
    assert_eq!(got.rejected[0].position, 2);
    assert_eq!(
        got.rejected[0].reason,
        "column `name`: not valid UTF-8 at byte 2"
    );
    let again = pull(c.as_ref(), got.last_checkpoint().as_ref());
    assert!(again.rows.is_empty() && again.rejected.is_empty());
}

#[test]
fn mysql_errors_never_carry_the_password() {
    let _alive = my::admin();
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "S3cret-Pa55word";
    for url in [
        format!("mysql://root:{secret}@127.0.0.1:3306/test"),
        format!("mysql://root:{secret}@127.0.0.1:1/test"),
        format!("mysql://root:{secret}@127.0.0.1:3306/test?bogus_option=1"),
    ] {
        let c = connector(
            &unique("mysecret"),
            SourceKind::Mysql(db_source(dir.path(), &url, Some("people"), None, None)),
            &[],
            dir.path(),
        );
        let err = c.check().unwrap_err().to_string();
        assert!(!err.contains(secret), "secret in `{err}`");
        assert!(
            err.contains("cannot connect") || err.contains("credentials"),
            "{err}"
        );
    }
}

// ---------------------------------------------------- shared scenarios

/// 20,000 rows whose watermark ties in runs of 100 across batch
/// boundaries: a first pull gets every row once; a pull resumed from the
/// first batch's checkpoint gets exactly the rest; updates and inserts
/// between pulls (one tying the last checkpoint's watermark) arrive exactly
/// once; a pull with no changes emits nothing.
fn incremental_scenario(c: &dyn Connector, db: &mut dyn TestDb, table: &str) {
    let first = pull(c, None);
    assert_eq!(first.rows.len(), 20_000);
    assert_once(&first.rows);
    assert!(first.checkpoints.len() >= 3, "several batches");
    assert!(first.checkpoints.iter().all(Option::is_some));
    // Rows come in (watermark, id) order.
    let ids: Vec<u64> = first
        .rows
        .iter()
        .map(|(id, _)| id.parse().expect("int"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    // Resume from the first batch's checkpoint: exactly the rest.
    let cp1 = first.checkpoints[0].clone().expect("checkpoint");
    let n1 = sharebroker::connectors::BATCH_ROWS;
    let rest = pull(c, Some(&cp1));
    let mut joined: Vec<_> = first.rows[..n1].to_vec();
    joined.extend(rest.rows.iter().cloned());
    assert_once(&joined);
    assert_eq!(
        joined.len(),
        20_000,
        "resumed pull skipped or repeated rows"
    );

    let mut held = BTreeMap::new();
    upsert(&mut held, &first.rows);
    let cp = first.last_checkpoint().expect("checkpoint");

    // Changes: two updates, ten inserts tying each other, and one insert
    // tying the checkpoint's own watermark with a larger id.
    let t = table;
    for sql in [
        format!(
            "UPDATE {t} SET name = 'v2', updated = TIMESTAMP '2024-01-01 04:00:00' WHERE rid IN (5, 8150)"
        ),
        format!(
            "INSERT INTO {t} (rid, id_number, name, updated) SELECT rid + 20000, id_number, 'new', TIMESTAMP '2024-01-01 04:00:00' FROM {t} WHERE rid <= 10"
        ),
        format!(
            "INSERT INTO {t} (rid, id_number, name, updated) VALUES (20011, '1', 'tie', TIMESTAMP '2024-01-01 03:20:00')"
        ),
    ] {
        db.exec(&sql);
    }
    let second = pull(c, Some(&cp));
    assert_once(&second.rows);
    let mut got: Vec<&str> = second.rows.iter().map(|(id, _)| id.as_str()).collect();
    got.sort();
    let mut want: Vec<String> = vec!["5".into(), "8150".into(), "20011".into()];
    want.extend((20001..=20010).map(|i| i.to_string()));
    want.sort();
    assert_eq!(got, want);
    upsert(&mut held, &second.rows);
    assert_eq!(held, db.names(), "held rows differ from the table");

    // Nothing changed: nothing emitted.
    let third = pull(c, second.last_checkpoint().as_ref());
    assert!(third.rows.is_empty() && third.checkpoints.is_empty());
}

/// Kill the connector's connection in its first emit; the pull fails with a
/// clear error; a pull from the last checkpoint emitted before the failure
/// completes the table with nothing duplicated or missing.
fn killed_scenario(
    c: &dyn Connector,
    mut kill: impl FnMut(),
    all: BTreeMap<String, String>,
    wanted_error: &[&str],
) {
    let mut killed = false;
    let (partial, result) = pull_with(c, None, |batches| {
        if batches == 1 {
            kill();
            killed = true;
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    });
    assert!(killed);
    let err = result
        .expect_err("the pull survived its connection being killed")
        .to_string();
    assert!(err.contains(&format!("source {}", c.spec().name)), "{err}");
    assert!(
        wanted_error.iter().any(|w| err.contains(w)),
        "unclear error: {err}"
    );
    assert!(partial.rows.len() < all.len());
    let cp = partial
        .last_checkpoint()
        .expect("a checkpoint before the failure");
    let resumed = pull(c, Some(&cp));
    let mut rows = partial.rows.clone();
    rows.extend(resumed.rows.iter().cloned());
    assert_once(&rows);
    let mut held = BTreeMap::new();
    upsert(&mut held, &rows);
    assert_eq!(held, all, "rows missing after the resumed pull");
}
