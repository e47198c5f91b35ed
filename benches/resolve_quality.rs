//! Entity resolution, quality and speed (issue 4, DESIGN.md §7): the
//! resolver over about 1,000,000 person records, scored against the
//! generator's ground truth — pairwise precision, recall and F1, B-cubed,
//! by names with and without a middle dot and by records with and without
//! a valid ID number, and the precision of the links the probabilistic
//! model made on its own. The resolver runs in a fresh child process, so
//! its time and peak memory are its own.
//!
//! The baseline in the same run is exact resolution on valid ID numbers
//! only (what the broker did before probabilistic linking), timed and
//! scored the same way.
//!
//! The records are the real sources': `gen` of PERSONS persons (default
//! 470,000, which gives about 1,000,000 person records across the
//! household registry, marriage and social insurance), written out through
//! the configured connectors by `sharebroker resolve records`, cached under
//! BENCH_DIR (default /var/tmp/sharebroker-bench).
//!
//! ```sh
//! cargo bench --bench resolve_quality
//! PERSONS=50000 cargo bench --bench resolve_quality    # quicker
//! ```

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sharebroker::catalog::{Catalog, SubjectKind};
use sharebroker::connectors;
use sharebroker::datagen::{GenOptions, TRUTH_FILE, generate};
use sharebroker::ingest::subject_key;
use sharebroker::linkage;

use common::{env_or, status_mib};

const CHILD_ENV: &str = "RESOLVE_BENCH_CHILD";

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Generated sources and their person records, reused if present.
fn prepared(persons: usize) -> PathBuf {
    let base: PathBuf = std::env::var("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/tmp/sharebroker-bench"));
    let dir = base.join(format!("resolve-{persons}"));
    let records = dir.join("records.csv");
    if dir.join("prepared").exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("preparing {persons} persons in {} (once)", dir.display());
    let t = Instant::now();
    generate(&GenOptions {
        out_dir: dir.join("sources"),
        persons,
        seed: 2021,
        progress: false,
    })
    .expect("gen");
    let catalog = Catalog::load(&repo("policies")).expect("catalogue");
    let configs = connectors::load_dir(&repo("connectors"), &catalog).expect("connectors");
    linkage::write_records(&catalog, &configs, &dir, &records).expect("records");
    std::fs::write(dir.join("prepared"), b"").expect("marker");
    eprintln!("prepared in {:.1?}", t.elapsed());
    dir
}

/// In a fresh process: resolve, report time and peak memory.
fn child(dir: &Path) {
    let catalog = Catalog::load(&repo("policies")).expect("catalogue");
    let st = linkage::link_csv(&catalog, &dir.join("records.csv"), &dir.join("links.csv"))
        .expect("link");
    println!(
        "{} {} {} {} {} {} {} {}",
        st.elapsed.as_secs_f64(),
        status_mib("VmHWM:"),
        st.records,
        st.subjects,
        st.exact,
        st.probable,
        st.review,
        st.unlinked
    );
    if let Some(m) = st.model {
        eprintln!(
            "model: m={:.4?} u={:.6?} neighbour density {:.5} ({} name pairs linked by ID, {} subjects)",
            m.m, m.u, m.density, m.true_pairs, m.subjects
        );
    }
}

/// The baseline: records linked by valid ID number only.
fn exact_only(dir: &Path) -> f64 {
    let t = Instant::now();
    let mut rdr = csv::Reader::from_path(dir.join("records.csv")).expect("records");
    let mut w = csv::Writer::from_path(dir.join("links-exact.csv")).expect("links");
    w.write_record(["source", "record_id", "subject_id", "link"])
        .expect("write");
    let mut ids: HashMap<String, usize> = HashMap::new();
    for r in rdr.records() {
        let r = r.expect("row");
        let subject = match subject_key(SubjectKind::Person, &r[2]) {
            Ok(key) => {
                let n = ids.len();
                format!("S{}", ids.entry(key).or_insert(n))
            }
            Err(_) => String::new(),
        };
        let kind = if subject.is_empty() { "" } else { "exact" };
        w.write_record([&r[0], &r[1], subject.as_str(), kind])
            .expect("write");
    }
    w.flush().expect("flush");
    t.elapsed().as_secs_f64()
}

fn print_report(label: &str, r: &sharebroker::ingest::score::Report) {
    println!("\n{label}");
    for line in r.to_string().lines() {
        println!("  {line}");
    }
}

fn main() {
    let persons: usize = env_or("PERSONS", 470_000);
    let dir = prepared(persons);
    if std::env::var_os(CHILD_ENV).is_some() {
        child(&dir);
        return;
    }
    let out = Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, "1")
        .env("PERSONS", persons.to_string())
        .output()
        .expect("child");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "resolver child failed");
    let line = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().expect("number"))
        .collect();
    let (secs, peak) = (f[0], f[1]);
    let exact_secs = exact_only(&dir);
    let truth = dir.join("sources").join(TRUTH_FILE);
    let full = linkage::score_files(&truth, &dir.join("links.csv"), "person").expect("score");
    let base = linkage::score_files(&truth, &dir.join("links-exact.csv"), "person").expect("score");

    println!(
        "resolve_quality: {} records of {persons} persons → {} subjects: {} exact, {} probable, {} to review, {} not linked",
        f[2], f[3], f[4], f[5], f[6], f[7]
    );
    println!(
        "  resolver (CSV in, links out, child process): {secs:.2} s = {:.0} records/s, peak RSS {peak:.0} MiB",
        f[2] / secs
    );
    println!("  baseline, exact ID only (same CSV in, links out): {exact_secs:.2} s");
    print_report("resolver", &full);
    print_report("baseline: exact ID only", &base);
    println!(
        "\nratio: F1 {:.6} vs {:.6}; time {:.2}× the baseline's. Targets: model-link precision ≥ 0.999, F1 ≥ 0.995, 1,000,000 records ≤ 20 s",
        full.all.f1(),
        base.all.f1(),
        secs / exact_secs
    );
}
