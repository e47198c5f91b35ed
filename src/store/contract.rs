//! The contract every table-store backend meets, run against the local
//! filesystem and memory (quickwit's storage test suite pattern).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use super::*;

fn batch(keys: &[&str]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("key", DataType::Utf8, false)]));
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(keys))]).expect("batch")
}

fn keys_of(store: &TableStore, m: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    for b in store.read(m).expect("read") {
        let col = b
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("strings");
        out.extend(col.iter().map(|v| v.expect("not null").to_string()));
    }
    out
}

/// Every backend, fresh. The local one keeps its folder alive.
fn backends() -> Vec<(TableStore, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = TableStore::open_local(dir.path()).expect("open");
    vec![(local, Some(dir)), (TableStore::in_memory(), None)]
}

#[test]
fn versions_commit_read_back_and_stay_immutable() {
    for (store, _dir) in backends() {
        assert_eq!(store.current("t").expect("current"), None);
        assert!(store.versions("t").expect("versions").is_empty());
        let m1 = store.commit("t", &[batch(&["a", "b"])]).expect("commit");
        let m2 = store.commit("t", &[batch(&["c"])]).expect("commit");
        assert_eq!((m1.version, m2.version), (1, 2), "{store:?}");
        assert_eq!(store.current("t").expect("current"), Some(m2.clone()));
        assert_eq!(store.versions("t").expect("versions"), vec![1, 2]);
        assert_eq!(store.tables().expect("tables"), vec!["t".to_string()]);
        assert_eq!(keys_of(&store, &m1), ["a", "b"]);
        assert_eq!(keys_of(&store, &m2), ["c"]);
        assert_eq!(store.manifest("t", 1).expect("manifest"), m1);
        assert_eq!(m2.columns[0].name, "key");
        store.verify(&m1).expect("verifies");
    }
}

#[test]
fn large_writes_are_split_into_parts_and_read_back_in_order() {
    for (store, _dir) in backends() {
        let store = store.with_part_rows(3);
        let keys: Vec<String> = (0..10).map(|i| format!("k{i:02}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let m = store
            .commit("t", &[batch(&refs[..4]), batch(&refs[4..])])
            .expect("commit");
        assert_eq!(m.files.len(), 4, "{store:?}");
        assert_eq!(m.rows, 10);
        assert_eq!(
            m.files.iter().map(|f| f.rows).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        assert_eq!(keys_of(&store, &m), keys);
    }
}

#[test]
fn an_empty_table_is_a_version_with_zero_rows_and_its_columns() {
    for (store, _dir) in backends() {
        let m = store.commit("t", &[batch(&[])]).expect("commit");
        assert_eq!((m.rows, m.files.len()), (0, 1));
        assert!(keys_of(&store, &m).is_empty());
        assert!(store.commit("t", &[]).is_err(), "no batches: no schema");
    }
}

#[test]
fn appends_share_earlier_parts_and_carry_meta_atomically() {
    for (store, _dir) in backends() {
        let m1 = store.commit("s", &[batch(&["a"])]).expect("commit");
        let mut w = store
            .writer("s", batch(&[]).schema(), Some(m1.version))
            .expect("writer");
        w.write(&batch(&["b", "c"])).expect("write");
        let meta = BTreeMap::from([("checkpoint".to_string(), "{\"id\":3}".to_string())]);
        let m2 = w.commit(meta.clone()).expect("commit");
        assert_eq!(m2.rows, 3);
        assert_eq!(m2.files[0], m1.files[0], "the first part is shared");
        assert_eq!(keys_of(&store, &m2), ["a", "b", "c"]);
        assert_eq!(
            store.current("s").expect("current").expect("some").meta,
            meta
        );
        // Appending to a version that is no longer current is refused.
        let err = store
            .writer("s", batch(&[]).schema(), Some(m1.version))
            .unwrap_err();
        assert!(err.to_string().contains("not the current version"), "{err}");
        // So are rows of another shape.
        let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, false)]));
        let err = store.writer("s", other, Some(m2.version)).unwrap_err();
        assert!(err.to_string().contains("columns differ"), "{err}");
    }
}

#[test]
fn an_uncommitted_write_is_invisible_and_its_files_are_collected() {
    for (store, _dir) in backends() {
        let store = store.with_part_rows(1);
        store.commit("t", &[batch(&["a"])]).expect("commit");
        {
            let mut w = store
                .writer("t", batch(&[]).schema(), None)
                .expect("writer");
            w.write(&batch(&["x", "y"])).expect("write");
            // Dropped: as if the process died before the manifest.
        }
        assert_eq!(store.versions("t").expect("versions"), vec![1]);
        let report = store.recover().expect("recover");
        assert_eq!(report[0].files_removed.len(), 2, "{store:?}: {report:?}");
        assert!(report[0].versions_removed.is_empty());
        // The next write takes the next number, and the old version reads.
        let m = store.commit("t", &[batch(&["b"])]).expect("commit");
        assert_eq!(m.version, 2);
        assert_eq!(keys_of(&store, &store.manifest("t", 1).expect("m")), ["a"]);
    }
}

#[test]
fn a_concurrent_writer_of_the_same_version_gets_a_conflict() {
    // Two store handles over one object store, without a shared lock: the
    // manifest's create-if-absent is the last line of defence.
    let objects: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::memory::InMemory::new());
    let a = TableStore::with_object_store(objects.clone(), "memory:", std::time::Duration::ZERO);
    let b = TableStore::with_object_store(objects, "memory:", std::time::Duration::ZERO);
    let mut wa = a.writer("t", batch(&[]).schema(), None).expect("writer");
    let mut wb = b.writer("t", batch(&[]).schema(), None).expect("writer");
    wa.write(&batch(&["a"])).expect("write");
    wb.write(&batch(&["b"])).expect("write");
    wa.commit(BTreeMap::new()).expect("first commit wins");
    let err = wb.commit(BTreeMap::new()).unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { version: 1, .. }),
        "{err}"
    );
    assert_eq!(
        keys_of(&a, &a.current("t").expect("c").expect("some")),
        ["a"]
    );
}

#[test]
fn damaged_files_are_named_and_the_last_good_version_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = TableStore::open_local(dir.path()).expect("open");
    store.commit("t", &[batch(&["a"])]).expect("commit");
    let m2 = store.commit("t", &[batch(&["b"])]).expect("commit");
    let path = dir.path().join("t").join(&m2.files[0].path);
    let bytes = std::fs::read(&path).expect("read");

    // Truncated.
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
    let err = store.read(&m2).unwrap_err().to_string();
    assert!(err.contains(&m2.files[0].path), "{err}");
    assert!(err.contains("bytes where the manifest says"), "{err}");
    let (loaded, failures) = load_latest_good(&store, "t", "key", None).expect("load");
    assert_eq!(loaded.expect("v1 loads").manifest.version, 1);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, 2);

    // Same length, one byte flipped.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x55;
    std::fs::write(&path, &flipped).expect("write");
    let err = store.read(&m2).unwrap_err().to_string();
    assert!(err.contains("checksum does not match"), "{err}");

    // Missing.
    std::fs::remove_file(&path).expect("rm");
    let err = store.read(&m2).unwrap_err().to_string();
    assert!(err.contains("the file is missing"), "{err}");

    // An unreadable manifest.
    std::fs::write(dir.path().join("t/manifests/v000002.json"), b"{\"tab").expect("write");
    let err = store.manifest("t", 2).unwrap_err().to_string();
    assert!(err.contains("v000002.json: unreadable manifest"), "{err}");
    let (loaded, _) = load_latest_good(&store, "t", "key", None).expect("load");
    assert_eq!(loaded.expect("v1 loads").manifest.version, 1);
    // Only versions newer than one already held are tried.
    let (loaded, failures) = load_latest_good(&store, "t", "key", Some(1)).expect("load");
    assert!(loaded.is_none() && failures.len() == 1);
}

#[test]
fn time_travel_finds_the_version_current_at_a_time() {
    for (store, _dir) in backends() {
        let before = chrono::Utc::now() - chrono::Duration::seconds(1);
        let m1 = store.commit("t", &[batch(&["a"])]).expect("commit");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let between = chrono::Utc::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let m2 = store.commit("t", &[batch(&["b"])]).expect("commit");
        let at = |a: AsOf| manifest_as_of(&store, "t", &a).map(|m| m.version);
        assert_eq!(at(AsOf::Current).expect("current"), m2.version);
        assert_eq!(at(AsOf::Version(1)).expect("v1"), m1.version);
        assert_eq!(at(AsOf::Time(between)).expect("between"), 1);
        assert_eq!(at(AsOf::Time(chrono::Utc::now())).expect("now"), 2);
        let err = at(AsOf::Time(before)).unwrap_err().to_string();
        assert!(err.contains("no version committed at or before"), "{err}");
        let err = at(AsOf::Version(9)).unwrap_err().to_string();
        assert!(err.contains("has no version 9 (versions: 1..=2)"), "{err}");
    }
}

#[test]
fn as_of_parses_versions_times_and_says_what_it_expected() {
    assert_eq!(AsOf::parse("current"), Ok(AsOf::Current));
    assert_eq!(AsOf::parse("7"), Ok(AsOf::Version(7)));
    assert_eq!(AsOf::parse("v000007"), Ok(AsOf::Version(7)));
    let t = AsOf::parse("2026-11-27T10:00:00+08:00").expect("time");
    assert_eq!(t, AsOf::Time("2026-11-27T02:00:00Z".parse().expect("utc")));
    let err = AsOf::parse("yesterday").unwrap_err();
    assert!(err.contains("RFC 3339"), "{err}");
}

#[test]
fn gc_keeps_the_retained_versions_and_the_files_they_share() {
    for (store, _dir) in backends() {
        let m1 = store.commit("t", &[batch(&["a"])]).expect("commit");
        let mut w = store.writer("t", batch(&[]).schema(), Some(1)).expect("w");
        w.write(&batch(&["b"])).expect("write");
        let m2 = w.commit(BTreeMap::new()).expect("commit");
        let m3 = store.commit("t", &[batch(&["c"])]).expect("commit");
        let m4 = store.commit("t", &[batch(&["d"])]).expect("commit");
        // Young versions are kept whatever their number.
        let young = Retention {
            keep_versions: 1,
            keep_days: 1,
        };
        let r = store.gc("t", &young, false).expect("gc");
        assert!(
            r.versions_removed.is_empty() && r.files_removed.is_empty(),
            "{r:?}"
        );
        // keep_days = 0: only the newest two stay. v1 and v2 go, with the
        // parts only they listed; v3 and v4 stay.
        let old = Retention {
            keep_versions: 2,
            keep_days: 0,
        };
        let dry = store.gc("t", &old, true).expect("dry run");
        assert_eq!(dry.versions_removed, vec![1, 2]);
        assert_eq!(store.versions("t").expect("v"), vec![1, 2, 3, 4], "dry run");
        let r = store.gc("t", &old, false).expect("gc");
        assert_eq!(r.versions_removed, vec![1, 2]);
        assert_eq!(r.files_removed.len(), 2, "v1's and v2's own parts: {r:?}");
        assert!(r.bytes_freed > 0);
        assert_eq!(store.versions("t").expect("v"), vec![3, 4]);
        assert_eq!(keys_of(&store, &m3), ["c"]);
        assert_eq!(keys_of(&store, &m4), ["d"]);
        assert!(store.read(&m1).is_err() && store.read(&m2).is_err());
        // The current version is never removed.
        let none = Retention {
            keep_versions: 0,
            keep_days: 0,
        };
        store.gc("t", &none, false).expect("gc");
        assert_eq!(store.versions("t").expect("v"), vec![4]);
    }
}

#[test]
fn gc_keeps_a_part_that_a_retained_append_still_lists() {
    for (store, _dir) in backends() {
        store.commit("t", &[batch(&["a"])]).expect("commit");
        let mut w = store.writer("t", batch(&[]).schema(), Some(1)).expect("w");
        w.write(&batch(&["b"])).expect("write");
        let m2 = w.commit(BTreeMap::new()).expect("commit");
        let r = store
            .gc(
                "t",
                &Retention {
                    keep_versions: 1,
                    keep_days: 0,
                },
                false,
            )
            .expect("gc");
        assert_eq!(r.versions_removed, vec![1]);
        assert!(r.files_removed.is_empty(), "v2 lists v1's part: {r:?}");
        assert_eq!(keys_of(&store, &m2), ["a", "b"]);
    }
}

#[test]
fn concurrent_local_commits_get_distinct_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let root = root.clone();
            std::thread::spawn(move || {
                // A store handle per thread, as separate processes would.
                let store = TableStore::open_local(&root).expect("open");
                let key = format!("k{i}");
                store
                    .commit("t", &[batch(&[key.as_str()])])
                    .expect("commit")
                    .version
            })
        })
        .collect();
    let mut versions: Vec<u64> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    let store = TableStore::open_local(&root).expect("open");
    for v in 1..=4 {
        let m = store.manifest("t", v).expect("manifest");
        assert_eq!(keys_of(&store, &m).len(), 1);
    }
}

#[test]
fn table_names_are_checked() {
    let store = TableStore::in_memory();
    for bad in ["", "../x", "A", ".hidden", "a/b", "名"] {
        let err = store.versions(bad).unwrap_err().to_string();
        assert!(err.contains("is not a valid table name"), "{bad}: {err}");
    }
}

#[test]
fn a_partition_is_replaced_and_the_others_kept() {
    for (store, _dir) in backends() {
        let schema = batch(&[]).schema();
        let mut w = store.writer("p", schema.clone(), None).expect("writer");
        for (p, keys) in [(0, &["a0", "b0"][..]), (1, &["a1"]), (2, &["a2", "b2"])] {
            w.partition(p).expect("partition");
            w.write(&batch(keys)).expect("write");
        }
        let m1 = w.commit(BTreeMap::new()).expect("commit");
        assert_eq!(m1.rows, 5);
        let parts: Vec<_> = m1.files.iter().map(|f| f.partition).collect();
        assert_eq!(parts, [Some(0), Some(1), Some(2)], "one file per partition");

        // Version 2: partition 1 rewritten, partition 2 emptied, 3 added.
        let mut w = store
            .writer("p", schema.clone(), Some(m1.version))
            .expect("writer");
        w.replace_partitions(&[1, 2].into_iter().collect());
        for (p, keys) in [(1, &["c1"][..]), (3, &["a3"])] {
            w.partition(p).expect("partition");
            w.write(&batch(keys)).expect("write");
        }
        let m2 = w.commit(BTreeMap::new()).expect("commit");
        assert_eq!(m2.rows, 4);
        let mut keys = keys_of(&store, &m2);
        keys.sort();
        assert_eq!(keys, ["a0", "a3", "b0", "c1"]);
        assert_eq!(m2.files[0], m1.files[0], "partition 0's file is shared");
        assert_eq!(keys_of(&store, &m1).len(), 5, "version 1 is unchanged");

        // One partition read alone.
        let mut one = Vec::new();
        store
            .read_each_where(&m2, &|f| f.partition == Some(3), &mut |b| {
                one.push(b.num_rows());
                Ok(())
            })
            .expect("read");
        assert_eq!(one, [1]);

        // An append that writes nothing keeps every file and adds none.
        let w = store.writer("p", schema, Some(m2.version)).expect("writer");
        let m3 = w.commit(BTreeMap::new()).expect("commit");
        assert_eq!(m3.files, m2.files);
    }
}
