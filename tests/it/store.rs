//! The versioned store under fire: `pull` killed with SIGKILL at random
//! moments, many times, must leave every committed version intact and
//! readable, and the next start must clean up what the killed writes left;
//! a running broker picks up a new version without a restart and keeps
//! serving the last good one when a new file is damaged.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sharebroker::api::AppState;
use sharebroker::catalog::SubjectKind;
use sharebroker::ingest::{COL_KEY, Golden};
use sharebroker::pull;
use sharebroker::store::{LoadedTable, TableStore};

use crate::fixture::{prepare, repo};

/// A small deterministic generator: the seed is printed on failure.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn pull_command(data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sharebroker"));
    c.arg("--policies")
        .arg(repo("policies"))
        .arg("--connectors")
        .arg(repo("connectors"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("pull")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Files under the store's `parts/` and `manifests/` folders.
fn store_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for table in std::fs::read_dir(root).expect("store").flatten() {
        for sub in ["parts", "manifests"] {
            let Ok(entries) = std::fs::read_dir(table.path().join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                out.push(format!(
                    "{}/{sub}/{}",
                    table.file_name().to_string_lossy(),
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    out.sort();
    out
}

/// Files that no committed manifest lists.
fn unlisted(store: &TableStore, root: &Path) -> Vec<String> {
    let mut listed = HashSet::new();
    for t in store.tables().expect("tables") {
        for v in store.versions(&t).expect("versions") {
            listed.insert(format!("{t}/manifests/v{v:06}.json"));
            for f in store.manifest(&t, v).expect("manifest").files {
                listed.insert(format!("{t}/{}", f.path));
            }
        }
    }
    store_files(root)
        .into_iter()
        .filter(|f| !listed.contains(f))
        .collect()
}

/// Every committed version of every table reads back and checks out.
fn assert_intact(store: &TableStore, context: &str) -> usize {
    let mut versions = 0;
    for t in store.tables().expect("tables") {
        let vs = store.versions(&t).expect("versions");
        let expected: Vec<u64> = (1..=vs.len() as u64).collect();
        assert_eq!(
            vs, expected,
            "{context}: {t}: versions are numbered without gaps"
        );
        for v in vs {
            let m = store
                .manifest(&t, v)
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            store
                .verify(&m)
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            versions += 1;
        }
    }
    versions
}

#[test]
fn killing_pulls_at_random_moments_never_damages_a_committed_version() {
    let p = prepare();
    let data = p.settings.data_dir.clone();
    let root = p.settings.store_dir();
    let store = TableStore::open_local(&root).expect("store");
    let persons = store
        .current(Golden::table(SubjectKind::Person))
        .expect("current")
        .expect("the fixture pulled once")
        .rows;

    // How long a whole pull takes here.
    let started = Instant::now();
    assert!(pull_command(&data).status().expect("pull").success());
    let full = started.elapsed();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Lcg(seed);
    let (mut during_writes, mut kills) = (0, 0);
    for round in 0..30 {
        let before: HashSet<String> = store_files(&root).into_iter().collect();
        let mut child = pull_command(&data).spawn().expect("spawn pull");
        if round % 3 == 0 {
            // Anywhere in the pull.
            std::thread::sleep(Duration::from_micros(
                rng.below(full.as_micros() as u64 * 11 / 10),
            ));
        } else {
            // Within 3 ms of the first new file appearing: inside a write
            // (encoding, the put with its fsync, the manifest).
            let deadline = Instant::now() + full * 3;
            while Instant::now() < deadline && store_files(&root).iter().all(|f| before.contains(f))
            {
                if child.try_wait().expect("wait").is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(Duration::from_micros(rng.below(3_000)));
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().expect("wait");
        kills += usize::from(!status.success());
        let context = format!("round {round} (seed {seed})");
        if !unlisted(&store, &root).is_empty() {
            during_writes += 1;
        }
        assert_intact(&store, &context);
        let golden = LoadedTable::load(
            &store,
            store
                .current(Golden::table(SubjectKind::Person))
                .expect("current")
                .expect("some"),
            COL_KEY,
        )
        .unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(
            golden.manifest.rows, persons,
            "{context}: same sources, same golden rows"
        );
    }
    eprintln!("{kills} pulls killed, {during_writes} inside a write (seed {seed})");
    assert!(
        kills >= 20,
        "most pulls must have been killed, not finished: {kills}"
    );
    assert!(
        during_writes >= 3,
        "too few kills landed inside a write to test anything ({during_writes}; seed {seed})"
    );

    // The next start cleans up: nothing unlisted is left, and every
    // committed version still reads.
    let reopened = TableStore::open_local(&root).expect("store");
    reopened.recover().expect("recover");
    assert_eq!(unlisted(&reopened, &root), Vec::<String>::new());
    assert!(assert_intact(&reopened, "after recovery") > 0);
    // And a pull after all that completes and is identical to the first:
    // nothing to resolve, or (if a killed pull left its resolve unfinished)
    // no new subject.
    let report = pull::run_configured(&p.settings, &[], false).expect("pull");
    let person = report
        .subjects
        .iter()
        .find(|(k, _, _)| *k == SubjectKind::Person)
        .map_or(0, |p| p.2);
    assert!(
        report.unchanged || !report.subjects.is_empty(),
        "{report:?}"
    );
    assert_eq!(person, 0, "no new subject ids: re-pulling changes nothing");
}

/// A whole pull, run as `sharebroker pull` would, off the async runtime,
/// after a change at a source (the marriage registry's last row is gone),
/// so that there is something to resolve.
async fn pull_off_runtime(settings: &sharebroker::config::Settings) {
    let csv = settings.sources_dir().join("marriage_gbk.csv");
    let bytes = std::fs::read(&csv).expect("marriage csv");
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let cut = body
        .iter()
        .rposition(|&b| b == b'\n')
        .expect("more than one line");
    std::fs::write(&csv, &bytes[..=cut]).expect("write");
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || pull::run_configured(&settings, &[], false))
        .await
        .expect("join")
        .expect("pull");
}

#[tokio::test]
async fn a_running_broker_loads_new_versions_and_keeps_the_last_good_one() {
    let p = prepare();
    let state = AppState::open(&p.settings).await.expect("state");
    let v1 = state.tables()[&SubjectKind::Person].manifest.version;
    assert!(state.reload_tables().await.is_empty(), "nothing new yet");

    // A new pull: picked up without a restart.
    pull_off_runtime(&p.settings).await;
    let changed = state.reload_tables().await;
    let person = changed
        .iter()
        .find(|c| c.kind == SubjectKind::Person)
        .expect("the person table changed");
    assert_eq!((person.from, person.to), (Some(v1), v1 + 1));
    let before = state.tables();

    // A pull whose person file is then damaged: the broker names the file
    // in its log, does not switch, and keeps serving what it had.
    pull_off_runtime(&p.settings).await;
    let store = TableStore::open_local(&p.settings.store_dir()).expect("store");
    // The store's API blocks: off the async runtime, as the broker does.
    let bad = tokio::task::spawn_blocking(move || {
        store
            .current(Golden::table(SubjectKind::Person))
            .expect("current")
            .expect("some")
    })
    .await
    .expect("join");
    let file = p
        .settings
        .store_dir()
        .join(Golden::table(SubjectKind::Person))
        .join(&bad.files[0].path);
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..bytes.len() - 100]).expect("truncate");
    let changed = state.reload_tables().await;
    assert!(
        changed.iter().all(|c| c.kind != SubjectKind::Person),
        "{changed:?}"
    );
    let now = state.tables();
    assert_eq!(
        now[&SubjectKind::Person].manifest.version,
        v1 + 1,
        "still the last good version"
    );
    assert!(std::sync::Arc::ptr_eq(
        &now[&SubjectKind::Person],
        &before[&SubjectKind::Person]
    ));
    let (applicant, _) = &p.applicants[0];
    let key = sharebroker::ingest::subject_key(SubjectKind::Person, applicant).expect("key");
    assert!(now[&SubjectKind::Person].row(&key).is_some());

    // A restart also falls back to the last good version.
    state.audit.shutdown();
    drop((state, now, before));
    let state = AppState::open(&p.settings).await.expect("state");
    let restarted = &state;
    assert_eq!(
        restarted.tables()[&SubjectKind::Person].manifest.version,
        v1 + 1
    );

    // The next good version is taken.
    pull_off_runtime(&p.settings).await;
    let changed = state.reload_tables().await;
    assert!(
        changed
            .iter()
            .any(|c| c.kind == SubjectKind::Person && c.to == bad.version + 1),
        "{changed:?}"
    );
}

#[tokio::test]
async fn sources_with_an_interval_are_pulled_on_their_schedule() {
    let p = prepare();
    // The repo's connectors, one of them pulled every second.
    let connectors = p.dir.path().join("connectors");
    std::fs::create_dir_all(&connectors).expect("dir");
    for f in std::fs::read_dir(repo("connectors"))
        .expect("connectors")
        .flatten()
    {
        if f.path().extension().is_some_and(|e| e == "toml") {
            let mut text = std::fs::read_to_string(f.path()).expect("read");
            if f.file_name() == "rst-social-insurance.toml" {
                text = format!("pull_interval_secs = 1\n{text}");
            }
            std::fs::write(connectors.join(f.file_name()), text).expect("write");
        }
    }
    let settings = sharebroker::config::Settings {
        connectors_dir: connectors,
        ..p.settings.clone()
    };
    let before = staged_versions(&settings, "rst-social-insurance");
    let other_before = staged_versions(&settings, "gat-population");
    let tasks = pull::spawn_schedule(&settings).expect("schedule");
    assert_eq!(tasks.len(), 1, "one source has an interval");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = settings.clone();
        let now = tokio::task::spawn_blocking(move || staged_versions(&s, "rst-social-insurance"))
            .await
            .expect("join");
        if now >= before + 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled pull within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        t.abort();
    }
    let other_after = staged_versions(&settings, "gat-population");
    assert_eq!(
        other_before, other_after,
        "sources without an interval are left alone"
    );
}

/// How many versions a source's staged table has.
fn staged_versions(s: &sharebroker::config::Settings, source: &str) -> usize {
    TableStore::open_local(&s.store_dir())
        .expect("store")
        .versions(&pull::source_table(source))
        .expect("versions")
        .len()
}

#[tokio::test]
async fn steward_decisions_reach_the_audit_log_once() {
    use sharebroker::audit::AuditFilter;
    let p = prepare();
    let state = AppState::open(&p.settings).await.expect("state");
    assert_eq!(state.log_steward_decisions().await.expect("none yet"), 0);
    // A merge and its split, recorded on the store as `sharebroker review` does.
    let store = TableStore::open_local(&p.settings.store_dir()).expect("store");
    let registry = pull::load_registry(&store).expect("registry");
    let mut persons: Vec<&str> = registry.ids().filter(|id| id.starts_with("P-")).collect();
    persons.sort_unstable();
    let (a, b) = (persons[0], persons[1]);
    sharebroker::review::merge(&store, a, Some(b), "王芳", "one person, two numbers")
        .expect("merge");
    sharebroker::review::merge(&store, a, None, "王芳", "two people after all").expect("split");
    assert_eq!(state.log_steward_decisions().await.expect("logged"), 2);
    assert_eq!(state.log_steward_decisions().await.expect("again"), 0);
    let steward = AuditFilter {
        decision: Some("steward".into()),
        ..AuditFilter::default()
    };
    let entries = state.audit.query(&steward).expect("query");
    let seen: Vec<String> = entries
        .iter()
        .map(|(_, e)| {
            format!(
                "{} by {:?}: {:?} ({:?})",
                e.route, e.officer, e.rule, e.reason
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            format!(
                "review merge by Some(\"王芳\"): Some(\"merge {a} into {b}\") (Some(\"one person, two numbers\"))"
            ),
            format!(
                "review unmerge by Some(\"王芳\"): Some(\"split {a} off again\") (Some(\"two people after all\"))"
            ),
        ]
    );
    assert!(entries.iter().all(|(_, e)| e.subject_commitment.is_none()));
    // A restart logs nothing twice.
    state.audit.shutdown();
    drop(state);
    let state = AppState::open(&p.settings).await.expect("state");
    assert_eq!(state.log_steward_decisions().await.expect("restart"), 0);
    assert_eq!(state.audit.query(&steward).expect("query").len(), 2);
}
