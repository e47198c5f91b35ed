//! What marking disputed values costs a lookup (Article 17 corrections):
//! the index check every lookup and pre-fill makes, with nothing disputed,
//! with many disputes elsewhere, and for a disputed subject (one of five
//! fields marked), against building the five served fields' JSON — work
//! every lookup does anyway — in the same run.
//!
//!   cargo bench --bench corrections_index
//!   CORRECTIONS=1000 ROUNDS=200000 cargo bench --bench corrections_index
//!
//! The book is a real journal in a temporary directory (one fsync per
//! correction filed, so filing is slow; only the reads are timed).

mod common;
use common::*;

use std::hint::black_box;
use std::time::Instant;

use chrono::Utc;
use serde_json::{Value, json};
use sharebroker::catalog::SubjectKind;
use sharebroker::policy::cases::Applicant;
use sharebroker::policy::corrections::{CorrectionBook, NewCorrection, Served};

const FIELDS: [&str; 5] = [
    "population.id_number",
    "population.name",
    "population.sex",
    "population.birth_date",
    "population.household_address",
];

fn key(i: usize) -> String {
    format!("65010219850615{i:04}")
}

fn new(i: usize) -> NewCorrection {
    NewCorrection {
        subject: Applicant {
            kind: SubjectKind::Person,
            key: key(i),
        },
        field: "population.name".into(),
        owner: "xj-gat".into(),
        agency: "xj-mzt".into(),
        officer: Some("o".into()),
        case_id: format!("C{i}"),
        service_item: "XJ-MZ-0201".into(),
        disputed_value: "买买提·艾力".into(),
        access: Served::Clear,
        source: Some("xj-gat".into()),
        record: Some(format!("R{i}")),
        as_of: Some("2024-01-01".into()),
        dataset_version: 1,
        claimed_value: None,
        reason: "bench".into(),
    }
}

/// The five fields of one lookup: the value and provenance, as served.
fn fields_json(values: &[&str; 5]) -> Vec<Value> {
    FIELDS
        .iter()
        .zip(values)
        .map(|(f, v)| {
            json!({ "value": v, "access": "clear", "source": "xj-gat", "record": f, "as_of": "2024-01-01" })
        })
        .collect()
}

/// The check a lookup makes per subject and per served field.
fn mark(book: &CorrectionBook, subject: &str, values: &[&str; 5], out: &mut [Value]) {
    let Some(disputes) = book.disputes(subject) else {
        return;
    };
    for ((f, v), field) in FIELDS.iter().zip(values).zip(out.iter_mut()) {
        if let Some(d) = disputes.iter().find(|d| d.field == *f && d.covers(v)) {
            field["disputed"] = json!({ "correction": d.correction, "state": d.state.as_str() });
        }
    }
}

fn time_ns(rounds: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..rounds / 10 {
        f(i);
    }
    let t = Instant::now();
    for i in 0..rounds {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / rounds as f64
}

fn main() {
    let n: usize = env_or("CORRECTIONS", 10_000);
    let rounds: usize = env_or("ROUNDS", 1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let values = [
        "650102198506150010",
        "买买提·艾力",
        "男",
        "1985-06-15",
        "乌鲁木齐市天山区",
    ];

    let empty = CorrectionBook::open(&dir.path().join("empty.jsonl")).expect("open");
    let book = CorrectionBook::open(&dir.path().join("full.jsonl")).expect("open");
    let started = Instant::now();
    for i in 0..n {
        book.file(new(i), "买买提·艾力", Utc::now()).expect("file");
    }
    println!(
        "filed {n} corrections in {:.2} s (one fsync each)",
        started.elapsed().as_secs_f64()
    );
    let undisputed = "650102199001010000";
    let disputed = key(n / 2);

    let baseline = time_ns(rounds, |_| {
        black_box(fields_json(black_box(&values)));
    });
    let mut out = fields_json(&values);
    let nothing = time_ns(rounds, |_| {
        mark(black_box(&empty), black_box(undisputed), &values, &mut out);
    });
    let elsewhere = time_ns(rounds, |_| {
        mark(black_box(&book), black_box(undisputed), &values, &mut out);
    });
    let hit = time_ns(rounds, |_| {
        let mut out = out.clone();
        mark(black_box(&book), black_box(&disputed), &values, &mut out);
        black_box(out);
    });
    let clone_only = time_ns(rounds, |_| {
        black_box(out.clone());
    });
    let hit = hit - clone_only;
    assert!(out.iter().all(|f| f.get("disputed").is_none()));
    let mut check = fields_json(&values);
    mark(&book, &disputed, &values, &mut check);
    assert!(
        check[1]["disputed"].is_object(),
        "the disputed field is marked"
    );

    println!("per lookup of 5 fields, {rounds} rounds, 1 thread");
    println!("  baseline: build the 5 fields' JSON          {baseline:8.1} ns");
    for (what, ns) in [
        ("nothing disputed at all", nothing),
        (&*format!("{n} disputes, not this subject"), elsewhere),
        ("this subject disputed (1 of 5 marked)", hit),
    ] {
        println!(
            "  marking: {what:<36} {ns:8.1} ns  ({:.3}× baseline)",
            ns / baseline
        );
    }
}
