//! Incremental pulls end to end, against the running PostgreSQL: rows
//! updated and inserted at the source between pulls arrive exactly once in
//! the golden records; a pull with no source change changes nothing; a
//! pull whose source connection is killed midway fails with a clear error,
//! and the next one resumes from the last stored checkpoint with nothing
//! duplicated or missing.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow_array::{Array, StringArray, UInt64Array};

use sharebroker::catalog::SubjectKind;
use sharebroker::config::Settings;
use sharebroker::ingest::{COL_KEY, Golden};
use sharebroker::model::ids::id_number_check_char;
use sharebroker::pull::{self, COL_REJECT_REASON, PullOptions, source_table};
use sharebroker::store::TableStore;

use crate::fixture::repo;

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const SOURCE: &str = "pg-population";

fn client() -> postgres::Client {
    postgres::Client::connect(PG_URL, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL must be running on 127.0.0.1:5432 (trust auth, database `test`) for this test: {e}"
        )
    })
}

/// A valid resident ID number for person `i` (area 650102, Ürümqi).
fn id_number(i: u32) -> String {
    let first17 = format!(
        "650102{:04}{:02}{:02}{:03}",
        1950 + i / 10_000 % 50,
        1 + i / 1000 % 10,
        1 + i / 100 % 10,
        i % 1000
    );
    let check = id_number_check_char(first17.as_bytes()).expect("digits") as char;
    format!("{first17}{check}")
}

/// A name for person `i`: digits spelled in Chinese numerals, since names
/// hold no digits.
fn name(i: u32) -> String {
    let digits: String = i
        .to_string()
        .chars()
        .map(|d| {
            "零一二三四五六七八九"
                .chars()
                .nth(d as usize - '0' as usize)
                .expect("digit")
        })
        .collect();
    format!("艾力·{digits}")
}

/// A schema of its own, dropped at the end.
struct Schema {
    name: String,
}

impl Schema {
    fn create(db: &mut postgres::Client) -> Schema {
        let name = format!(
            "sbt_pull_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        db.batch_execute(&format!(
            "CREATE SCHEMA {name};
             CREATE TABLE {name}.ryjbxx (
                 rybh text PRIMARY KEY, gmsfhm text NOT NULL, xm text NOT NULL,
                 xb text NOT NULL, csrq text NOT NULL, gxsj timestamp NOT NULL);"
        ))
        .expect("create schema");
        Schema { name }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut db) = postgres::Client::connect(PG_URL, postgres::NoTls) {
            let _ = db.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }
}

/// Insert persons `from..to`, all updated at `at`.
fn insert(db: &mut postgres::Client, schema: &str, from: u32, to: u32, at: &str) {
    let mut copy = db
        .copy_in(&format!(
            "COPY {schema}.ryjbxx (rybh, gmsfhm, xm, xb, csrq, gxsj) FROM STDIN"
        ))
        .expect("copy");
    let mut text = String::new();
    for i in from..to {
        let id = id_number(i);
        let sex = if id.as_bytes()[16] % 2 == 1 { "1" } else { "2" };
        text.push_str(&format!(
            "R{i:07}\t{id}\t{}\t{sex}\t{}-{}-{}\t{at}\n",
            name(i),
            &id[6..10],
            &id[10..12],
            &id[12..14]
        ));
    }
    std::io::Write::write_all(&mut copy, text.as_bytes()).expect("rows");
    copy.finish().expect("finish");
}

fn setup(dir: &Path, schema: &str) -> Settings {
    let connectors = dir.join("connectors");
    std::fs::create_dir_all(&connectors).expect("dir");
    std::fs::write(
        connectors.join(format!("{SOURCE}.toml")),
        format!(
            r#"agency = "xj-gat"
dataset = "population"
subject_column = "gmsfhm"
record_id_column = "rybh"
as_of_column = "gxsj"

[columns]
gmsfhm = "population.id_number"
xm = "population.name"
xb = "population.sex"
csrq = "population.birth_date"

[source]
type = "postgres"
table = "{schema}.ryjbxx"
url_env = "SB_TEST_PULL_PG_URL"
watermark_column = "gxsj"
"#
        ),
    )
    .expect("connector file");
    // SAFETY: set once, before any thread of this test reads it; every
    // test that uses it sets the same value.
    unsafe { std::env::set_var("SB_TEST_PULL_PG_URL", PG_URL) };
    Settings {
        policies_dir: repo("policies"),
        connectors_dir: connectors,
        data_dir: dir.join("data"),
        ..Settings::default()
    }
}

fn options(commit_every_rows: usize) -> PullOptions {
    PullOptions {
        commit_every_rows,
        ..PullOptions::default()
    }
}

/// Person key → name in the current golden table.
fn golden_names(s: &Settings) -> HashMap<String, String> {
    let store = TableStore::open_local(&s.store_dir()).expect("store");
    let m = store
        .current(Golden::table(SubjectKind::Person))
        .expect("current")
        .expect("a person table");
    let mut out = HashMap::new();
    for b in store.read(&m).expect("read") {
        let keys = b
            .column_by_name(COL_KEY)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .expect("keys");
        let names = b
            .column_by_name("population.name")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .expect("names");
        for r in 0..b.num_rows() {
            out.insert(keys.value(r).to_string(), names.value(r).to_string());
        }
    }
    out
}

/// Record id → how many times it is staged (accepted rows only).
fn staged_counts(s: &Settings) -> HashMap<String, usize> {
    let store = TableStore::open_local(&s.store_dir()).expect("store");
    let m = store
        .current(&source_table(SOURCE))
        .expect("current")
        .expect("staged");
    let mut out = HashMap::new();
    for b in store.read(&m).expect("read") {
        let ids = b
            .column_by_name("__record_id")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .expect("ids");
        let rejected = b.column_by_name(COL_REJECT_REASON).expect("reasons");
        for r in 0..b.num_rows() {
            if rejected.is_null(r) {
                *out.entry(ids.value(r).to_string()).or_default() += 1;
            }
        }
    }
    out
}

fn staged_versions(s: &Settings) -> Vec<u64> {
    TableStore::open_local(&s.store_dir())
        .expect("store")
        .versions(&source_table(SOURCE))
        .expect("versions")
}

#[test]
fn incremental_pulls_arrive_exactly_once_and_resume_after_the_source_dies() {
    let mut db = client();
    let schema = Schema::create(&mut db);
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path(), &schema.name);

    // First pull: everything, in durable steps of 500 rows.
    insert(&mut db, &schema.name, 0, 2_000, "2026-01-01 08:00:00");
    let r = pull::run_configured_with(&s, &[], &options(500)).expect("first pull");
    assert_eq!(r.sources[0].1.rows, 2_000);
    assert_eq!(golden_names(&s).len(), 2_000);

    // Rows updated (some sharing one watermark value) and inserted.
    db.batch_execute(&format!(
        "UPDATE {0}.ryjbxx SET xm = xm || '·改', gxsj = '2026-02-01 09:00:00' WHERE rybh < 'R0000100'",
        schema.name
    ))
    .expect("update");
    insert(&mut db, &schema.name, 2_000, 2_050, "2026-02-01 09:00:00");
    let r = pull::run_configured_with(&s, &[], &options(500)).expect("second pull");
    assert_eq!(r.sources[0].1.rows, 150, "only the changed rows are pulled");
    let names = golden_names(&s);
    assert_eq!(names.len(), 2_050);
    assert_eq!(names[&id_number(7)], format!("{}·改", name(7)));
    assert_eq!(names[&id_number(700)], name(700));
    assert_eq!(names[&id_number(2_049)], name(2_049));

    // No change at the source: no new staged version, no resolve, no new
    // golden version, the same golden rows.
    let before = staged_versions(&s);
    let store = TableStore::open_local(&s.store_dir()).expect("store");
    let person_versions = store.versions("person").expect("versions");
    let r = pull::run_configured_with(&s, &[], &options(500)).expect("third pull");
    assert_eq!(r.sources[0].1.rows, 0);
    assert!(r.unchanged, "nothing changed, so nothing is resolved again");
    assert_eq!(staged_versions(&s), before);
    assert_eq!(store.versions("person").expect("versions"), person_versions);
    assert_eq!(golden_names(&s), names);

    // Many new rows; the source connection is killed once a step is stored.
    insert(&mut db, &schema.name, 2_050, 60_000, "2026-03-01 10:00:00");
    let versions_before = staged_versions(&s).len();
    let s2 = s.clone();
    let pulling = std::thread::spawn(move || pull::run_configured_with(&s2, &[], &options(8_192)));
    let deadline = Instant::now() + Duration::from_secs(120);
    while staged_versions(&s).len() == versions_before && !pulling.is_finished() {
        assert!(Instant::now() < deadline, "no step was stored");
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed: i64 = db
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("sharebroker:{SOURCE}")],
        )
        .expect("terminate")
        .get(0);
    let outcome = pulling.join().expect("thread");
    assert_eq!(killed, 1, "the pull was still reading: {outcome:?}");
    let err = outcome
        .expect_err("a pull whose source dies fails")
        .to_string();
    assert!(err.contains(SOURCE), "the error names the source: {err}");
    let partial = staged_counts(&s).len();
    assert!(
        partial > 2_050 && partial < 60_000,
        "steps before the failure are kept: {partial}"
    );

    // The next pull resumes from the last stored checkpoint.
    let r = pull::run_configured_with(&s, &[], &options(8_192)).expect("resumed pull");
    assert_eq!(
        r.sources[0].1.rows as usize,
        60_000 - partial,
        "exactly the rows after the checkpoint"
    );
    let counts = staged_counts(&s);
    assert_eq!(counts.len(), 60_000, "nothing missing");
    let twice: Vec<_> = counts
        .iter()
        .filter(|(id, n)| **n > 1 && id.as_str() >= "R0000100")
        .collect();
    assert!(twice.is_empty(), "nothing staged twice: {twice:?}");
    assert_eq!(golden_names(&s).len(), 60_000);

    // A pull from scratch (--full) that dies midway: its steps are stored
    // but marked incomplete, so resolving meanwhile still reads the last
    // complete version and no person drops out of the golden records.
    let versions_before = staged_versions(&s).len();
    let s2 = s.clone();
    let full = PullOptions {
        full: true,
        ..options(8_192)
    };
    let pulling = std::thread::spawn(move || pull::run_configured_with(&s2, &[], &full));
    let deadline = Instant::now() + Duration::from_secs(120);
    while staged_versions(&s).len() == versions_before && !pulling.is_finished() {
        assert!(Instant::now() < deadline, "no step was stored");
        std::thread::sleep(Duration::from_millis(5));
    }
    db.query_one(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
        &[&format!("sharebroker:{SOURCE}")],
    )
    .expect("terminate");
    assert!(
        pulling.join().expect("thread").is_err(),
        "the full pull was cut"
    );
    assert!(
        staged_counts(&s).len() < 60_000,
        "the current staged version is the partial load"
    );
    let catalog = sharebroker::catalog::Catalog::load(&s.policies_dir).expect("catalogue");
    let configs =
        sharebroker::connectors::load_dir(&s.connectors_dir, &catalog).expect("connectors");
    let store = TableStore::open_local(&s.store_dir()).expect("store");
    pull::resolve(&catalog, &configs, &store).expect("resolve");
    assert_eq!(golden_names(&s).len(), 60_000, "nothing dropped out");
    // Pulled again, the load resumes and completes.
    pull::run_configured_with(&s, &[], &options(8_192)).expect("resumed full pull");
    assert_eq!(staged_counts(&s).len(), 60_000);
    assert_eq!(golden_names(&s).len(), 60_000);
}

/// Every row of a table's current version as text, sorted.
fn table_rows(store: &TableStore, table: &str) -> Vec<Vec<String>> {
    let m = store.current(table).expect("current").expect("a version");
    let mut rows = Vec::new();
    for b in store.read(&m).expect("read") {
        for r in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(r) {
                            "∅".to_string()
                        } else if let Some(s) = c.as_any().downcast_ref::<StringArray>() {
                            s.value(r).to_string()
                        } else if let Some(n) = c.as_any().downcast_ref::<UInt64Array>() {
                            n.value(r).to_string()
                        } else {
                            panic!("{table}: unexpected column type {}", c.data_type())
                        }
                    })
                    .collect(),
            );
        }
    }
    rows.sort();
    rows
}

/// What a resolve produces that a reader sees.
fn resolved(store: &TableStore) -> Vec<(&'static str, Vec<Vec<String>>)> {
    [
        "person",
        "organisation",
        "findings",
        "quarantine",
        "subjects",
    ]
    .into_iter()
    .map(|t| (t, table_rows(store, t)))
    .collect()
}

#[test]
fn an_incremental_resolve_rewrites_only_the_touched_buckets_and_matches_a_full_one() {
    let mut db = client();
    let schema = Schema::create(&mut db);
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path(), &schema.name);
    // A second agency's snapshot (a CSV) naming some of the same persons,
    // some differently (findings), and one with a mistyped ID number.
    let mut csv = String::from("身份证号,登记编号,登记日期,姓名\n");
    for i in 0..300u32 {
        let written = if i == 299 {
            // A typing error: one digit of person 5,000's number.
            let mut id = id_number(5_000).into_bytes();
            id[9] = if id[9] == b'9' { b'0' } else { id[9] + 1 };
            String::from_utf8(id).expect("ascii")
        } else {
            id_number(i)
        };
        let name = if i == 299 {
            name(5_000)
        } else if i % 10 == 0 {
            format!("{}·民", name(i))
        } else {
            name(i)
        };
        csv.push_str(&format!("{written},M{i:05},2025-06-01,{name}\n"));
    }
    civil_source(&s, &csv);
    insert(&mut db, &schema.name, 0, 20_000, "2026-01-01 08:00:00");
    let r = pull::run_configured_with(&s, &[], &options(100_000)).expect("first pull");
    assert!(r.touched.is_none(), "the first resolve reads everything");
    let store = TableStore::open_local(&s.store_dir()).expect("store");
    let first = resolved(&store);
    assert!(
        first[2].1.len() >= 29,
        "the other agency's names disagree: {} findings",
        first[2].1.len()
    );

    // At the source: names changed, one record's ID number corrected to a
    // new person's, one record's to another existing person's, new rows.
    db.batch_execute(&format!(
        "UPDATE {0}.ryjbxx SET xm = xm || '·改', gxsj = '2026-02-01 09:00:00' WHERE rybh IN ('R0000010', 'R0000011', 'R0000100');
         UPDATE {0}.ryjbxx SET gmsfhm = '{1}', gxsj = '2026-02-01 09:00:00' WHERE rybh = 'R0000020';
         UPDATE {0}.ryjbxx SET gmsfhm = '{2}', gxsj = '2026-02-01 09:00:00' WHERE rybh = 'R0000400';",
        schema.name,
        id_number(50_000),
        id_number(401)
    ))
    .expect("update");
    insert(&mut db, &schema.name, 30_000, 30_002, "2026-02-01 09:00:00");
    // And a new record of person 7 with two digits of the number swapped.
    let mut swapped = id_number(7).into_bytes();
    let at = (0..16)
        .find(|&i| swapped[i] != swapped[i + 1])
        .expect("two digits differ");
    swapped.swap(at, at + 1);
    db.execute(
        &format!(
            "INSERT INTO {}.ryjbxx VALUES ('R0200000', $1, $2, '1', '1950-01-01', '2026-02-01 09:00:00')",
            schema.name
        ),
        &[&String::from_utf8(swapped).expect("ascii"), &name(7)],
    )
    .expect("insert");
    // Both sources pulled again: the snapshot is unchanged.
    let r = pull::run_configured_with(&s, &[], &options(100_000)).expect("second pull");
    let t = r
        .touched
        .clone()
        .expect("only what changed is resolved again");
    assert_eq!(t.records, 8, "the five changed and three new rows");
    assert!(
        t.partitions >= 1 && t.partitions <= 9 && (t.partitions as u32) < t.buckets,
        "nine keys at most touch nine of {} buckets: {t:?}",
        t.buckets
    );
    assert_eq!(
        r.probable_links, 2,
        "the new mistyped record is linked by the stored model, the old one stays"
    );
    let incremental = resolved(&store);
    assert_ne!(incremental, first);
    let names = golden_names(&s);
    assert_eq!(names[&id_number(10)], format!("{}·改", name(10)));
    assert_eq!(names[&id_number(50_000)], name(20));
    // Person 20 keeps the other agency's record; person 400 has none left.
    assert_eq!(names[&id_number(20)], format!("{}·民", name(20)));
    assert!(!names.contains_key(&id_number(400)));
    assert_eq!(names.len(), 20_000 - 1 + 1 + 2);

    // Resolving everything from scratch gives the same tables.
    resolve_everything(&s, &store);
    assert_same(&incremental, &resolved(&store));

    // A change to the person a record with a mistyped number is linked
    // to: that record is linked again; and the number of the one linked
    // to person 7 corrected to another person's. Still only the buckets
    // involved are resolved.
    db.batch_execute(&format!(
        "UPDATE {0}.ryjbxx SET xm = xm || '·改', gxsj = '2026-03-01 09:00:00' WHERE rybh = 'R0005000';
         UPDATE {0}.ryjbxx SET gmsfhm = '{1}', gxsj = '2026-03-01 09:00:00' WHERE rybh = 'R0200000';",
        schema.name,
        id_number(60_000)
    ))
    .expect("update");
    let r = pull::run_configured_with(&s, &[], &options(100_000)).expect("third pull");
    let t = r.touched.clone().expect("resolved incrementally");
    assert_eq!(
        (r.probable_links, r.review),
        (0, 1),
        "one record has a valid number now; the other's name no longer agrees: it goes to review"
    );
    assert!((t.partitions as u32) < t.buckets, "{t:?}");
    assert_eq!(
        golden_names(&s)[&id_number(5_000)],
        format!("{}·改", name(5_000))
    );
    let incremental = resolved(&store);
    resolve_everything(&s, &store);
    assert_same(&incremental, &resolved(&store));
}

/// Two resolves' tables are the same, or the first few differences.
fn assert_same(a: &[(&str, Vec<Vec<String>>)], b: &[(&str, Vec<Vec<String>>)]) {
    for ((table, a), (_, b)) in a.iter().zip(b) {
        assert_eq!(a.len(), b.len(), "{table}: row counts differ");
        let diff: Vec<_> = a.iter().zip(b).filter(|(x, y)| x != y).take(3).collect();
        assert!(
            diff.is_empty(),
            "{table}: incremental vs full differ: {diff:?}"
        );
    }
}

/// The subject id of a person key in the current golden table.
fn subject_id_of(store: &TableStore, key: &str) -> String {
    let m = store.current("person").expect("current").expect("person");
    for b in store.read(&m).expect("read") {
        let text = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .cloned()
                .expect("a text column")
        };
        let (keys, ids) = (text(COL_KEY), text("subject_id"));
        if let Some(r) = (0..b.num_rows()).find(|&r| keys.value(r) == key) {
            return ids.value(r).to_string();
        }
    }
    panic!("no golden row for {key}")
}

/// A CSV source beside the PostgreSQL one.
fn csv_source(s: &Settings, name: &str, connector: &str, csv: &str) {
    std::fs::create_dir_all(s.sources_dir()).expect("sources dir");
    std::fs::write(s.sources_dir().join(format!("{name}.csv")), csv).expect("csv");
    std::fs::write(s.connectors_dir.join(format!("{name}.toml")), connector).expect("connector");
}

/// Civil affairs' CSV snapshot (another agency than the PostgreSQL
/// source's) naming persons by ID number and name.
fn civil_source(s: &Settings, csv: &str) {
    csv_source(
        s,
        "mzt-civil",
        r#"agency = "xj-mzt"
dataset = "marriage"
subject_column = "身份证号"
record_id_column = "登记编号"
as_of_column = "登记日期"

[columns]
"姓名" = "population.name"

[source]
type = "csv"
path = "sources/mzt-civil.csv"
"#,
        csv,
    );
}

fn resolve_everything(s: &Settings, store: &TableStore) {
    let catalog = sharebroker::catalog::Catalog::load(&s.policies_dir).expect("catalogue");
    let configs =
        sharebroker::connectors::load_dir(&s.connectors_dir, &catalog).expect("connectors");
    pull::resolve_all(&catalog, &configs, store).expect("full resolve");
}

#[test]
fn a_steward_link_to_a_subject_without_records_holds_when_it_has_records_again() {
    let mut db = client();
    let schema = Schema::create(&mut db);
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path(), &schema.name);
    // Person 5's number with two digits changed: no subject is one edit
    // away, so only a steward can link it.
    let mut far = id_number(5).into_bytes();
    for at in [10, 12] {
        far[at] = if far[at] == b'9' { b'0' } else { far[at] + 1 };
    }
    let far = String::from_utf8(far).expect("ascii");
    civil_source(
        &s,
        &format!("身份证号,登记编号,登记日期,姓名\n{far},M00001,2025-06-01,某某\n"),
    );
    insert(&mut db, &schema.name, 0, 100, "2026-01-01 08:00:00");
    pull::run_configured_with(&s, &[], &options(100_000)).expect("pull 1");
    let store = TableStore::open_local(&s.store_dir()).expect("store");
    let quarantined = |store: &TableStore| -> Vec<String> {
        let mut v: Vec<String> = sharebroker::review::load_quarantine(store)
            .expect("quarantine")
            .into_iter()
            .filter(|q| q.record_id == "M00001")
            .map(|q| q.reason)
            .collect();
        v.sort();
        v
    };
    assert_eq!(quarantined(&store).len(), 1, "no candidate: quarantined");
    let person = subject_id_of(&store, &id_number(5));
    sharebroker::review::decide(&store, "mzt-civil", "M00001", Some(&person), "王芳", "")
        .expect("decide");
    pull::run_configured_with(&s, &[], &options(100_000)).expect("pull 2");
    assert!(quarantined(&store).is_empty(), "the steward's link holds");
    // Person 5's only record moves to another number: nothing to link to…
    let move_to = |db: &mut postgres::Client, id: String, at: &str| {
        db.batch_execute(&format!(
            "UPDATE {0}.ryjbxx SET gmsfhm = '{id}', gxsj = '{at}' WHERE rybh = 'R0000005'",
            schema.name
        ))
        .expect("update");
    };
    move_to(&mut db, id_number(90_000), "2026-02-01 09:00:00");
    let r = pull::run_configured_with(&s, &[], &options(100_000)).expect("pull 3");
    assert!(r.touched.is_some(), "incremental");
    assert_eq!(
        quarantined(&store).len(),
        1,
        "linked to a subject with no records"
    );
    // … and back: the steward's link holds again.
    move_to(&mut db, id_number(5), "2026-03-01 09:00:00");
    let r = pull::run_configured_with(&s, &[], &options(100_000)).expect("pull 4");
    assert!(r.touched.is_some(), "incremental");
    assert!(quarantined(&store).is_empty(), "{:?}", quarantined(&store));
    let incremental = resolved(&store);
    resolve_everything(&s, &store);
    assert_same(&incremental, &resolved(&store));
}

#[test]
fn ties_between_sources_are_broken_the_same_way_incrementally() {
    let mut db = client();
    let schema = Schema::create(&mut db);
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path(), &schema.name);
    // A second source of the same agency, with the same record id and
    // as-of time as person 7's row will have.
    csv_source(
        &s,
        "gat-copy",
        r#"agency = "xj-gat"
dataset = "population"
subject_column = "id"
record_id_column = "rec"
as_of_column = "at"

[columns]
"name" = "population.name"

[source]
type = "csv"
path = "sources/gat-copy.csv"
"#,
        &format!(
            "id,rec,at,name\n{},R0000007,2026-02-01 09:00:00,甲乙\n",
            id_number(7)
        ),
    );
    insert(&mut db, &schema.name, 0, 100, "2026-01-01 08:00:00");
    pull::run_configured_with(&s, &[], &options(100_000)).expect("pull 1");
    db.batch_execute(&format!(
        "UPDATE {0}.ryjbxx SET xm = '丙丁', gxsj = '2026-02-01 09:00:00' WHERE rybh = 'R0000007'",
        schema.name
    ))
    .expect("update");
    let r = pull::run_configured_with(&s, &[], &options(100_000)).expect("pull 2");
    assert!(r.touched.is_some(), "incremental");
    let incremental = golden_names(&s)[&id_number(7)].clone();
    let store = TableStore::open_local(&s.store_dir()).expect("store");
    resolve_everything(&s, &store);
    assert_eq!(incremental, golden_names(&s)[&id_number(7)]);
}
