//! Per-response cost of sealing: one signature per response (`seal_mode = "response"`)
//! against one signature per audit group commit over the batch's Merkle tree
//! (`seal_mode = "batch"`), for Ed25519 and SM2/SM3, in the same run (DESIGN.md §4).
//!
//! Sections, in order:
//! 1. Sealing alone, one thread, no disk: a realistic lookup response (5 fields with
//!    provenance, 2 withheld with reasons, meta; about 1 KB of canonical JSON).
//!    - response: `seal::seal` per response (canonical JSON of the body + one signature).
//!    - batch of B (B = 1, 8, 64, 256): what the writer does once per batch (B leaf hashes,
//!      the batch tree, one signature) plus what each caller does (its inclusion path and
//!      the seal member), divided by B.
//! 2. Through the audit log, as the broker does it: W = 64 tokio tasks on 2 worker threads,
//!    each answering "responses" in a loop for SECONDS (default 5) against a fresh
//!    `AuditLog` (group commit, fdatasync per batch): canonical JSON + SHA-256 of the body,
//!    durable append, then the seal. Runs: unsealed (baseline), then response and batch
//!    mode for each algorithm. Reported: responses/s, process CPU µs per response, the
//!    seal's share (CPU µs per response above the unsealed run) and the mean batch size.
//!
//! Logs go in a temp dir under BENCH_DIR (default /var/tmp).
//!
//!   cargo bench --bench seal_modes
//!   SECONDS=10 cargo bench --bench seal_modes

mod common;
use common::*;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ring::digest::{SHA256, digest};
use serde_json::{Value, json};
use sharebroker::audit::{AuditEntry, AuditLog, AuditSink};
use sharebroker::seal::{self, Alg, SealMode, Signer, batch};

const WRITERS: usize = 64;
const BATCH_SIZES: [usize; 4] = [1, 8, 64, 256];

/// A lookup response as `api::routes` builds it, before its entry number and seal.
fn response(i: u64) -> Value {
    let field =
        |v: String, src: &str| json!({"value": v, "source": src, "as_of": "2025-07-31T16:00:00Z"});
    json!({
        "data": {
            "fields": {
                "id_number": field(format!("65010219900101{:04}", i % 10_000), "xj-gat"),
                "name": field(format!("阿依古丽·{i}"), "xj-gat"),
                "sex": field("女".into(), "xj-gat"),
                "birth_date": field("1990-01-01".into(), "xj-gat"),
                "household_address": field(format!("乌鲁木齐市天山区解放南路{}号", i % 500), "xj-gat"),
            },
            "withheld": [
                {"field": "ethnicity", "reason": "not allowed for purpose XJ-MZ-0201 (rule p12)"},
                {"field": "phone", "reason": "not allowed for purpose XJ-MZ-0201 (rule p14)"},
            ],
        },
        "meta": {
            "dataset": "population",
            "dataset_version": 3,
            "policy_version": hex::encode(digest(&SHA256, b"policy").as_ref()),
            "case_id": format!("MZ-20250801-{:06}", i % 100_000),
            "service_item": "XJ-MZ-0201",
        },
    })
}

fn entry(i: u64, sha_hex: String, bytes_out: u64) -> AuditEntry {
    AuditEntry {
        time: "2025-08-01T08:00:00.000000Z".into(),
        agency: "xj-mzt".into(),
        role: "marriage_registry".into(),
        officer: Some(format!("mz-{:04}", i % 731)),
        certificate: format!("xj-mzt:{}", "ab".repeat(32)),
        method: "POST".into(),
        route: "/v1/cases/{case}/lookup".into(),
        status: 200,
        service_item: Some("XJ-MZ-0201".into()),
        case_id: Some(format!("MZ-20250801-{:06}", i % 100_000)),
        dataset: Some("population".into()),
        dataset_version: Some(3),
        fields_clear: [
            "id_number",
            "name",
            "sex",
            "birth_date",
            "household_address",
        ]
        .iter()
        .map(|f| format!("population.{f}"))
        .collect(),
        fields_withheld: vec!["population.ethnicity".into(), "population.phone".into()],
        subject_commitment: Some(hex::encode(digest(&SHA256, &i.to_be_bytes()).as_ref())),
        decision: "allow".into(),
        policy_version: Some("cd".repeat(32)),
        response_sha256: Some(sha_hex),
        bytes_out,
        rows_out: 1,
        ..AuditEntry::default()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// Mean µs per call of `f` over at least `min` seconds.
fn time_per(min: Duration, mut f: impl FnMut(u64)) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < min {
        for _ in 0..16 {
            f(n);
            n += 1;
        }
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn section_sealing_alone(signers: &[(Alg, Arc<dyn Signer>)]) {
    println!("\n## 1. sealing alone (one thread, no disk), µs per response\n");
    println!(
        "| alg | per response | batch of 1 | batch of 8 | batch of 64 | batch of 256 | ratio per-response ÷ batch of 64 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let min = Duration::from_millis(1500);
    let mut seal_sizes = Vec::new();
    for (alg, signer) in signers {
        let bodies: Vec<Value> = (0..256).map(response).collect();
        let per_response = time_per(min, |n| {
            let mut body = bodies[(n % 256) as usize].clone();
            body["meta"]["audit_entry"] = json!(n);
            seal::seal(signer.as_ref(), &mut body);
            black_box(&body);
        }) - time_per(min, |n| {
            // The clone and entry number are not sealing: measured apart and subtracted.
            let mut body = bodies[(n % 256) as usize].clone();
            body["meta"]["audit_entry"] = json!(n);
            black_box(&body);
        });
        let shas: Vec<[u8; 32]> = bodies
            .iter()
            .map(|b| sha256(&seal::canonical_json(b)))
            .collect();
        let mut row = format!("| {alg} | {per_response:.2} |");
        let mut at64 = 0.0;
        for b in BATCH_SIZES {
            let per_batch = time_per(min, |n| {
                let first = n * b as u64;
                let leaves = (0..b).map(|k| batch::leaf(first + k as u64, &shas[k % shas.len()]));
                let signed = Arc::new(batch::SignedBatch::sign(
                    leaves,
                    first + b as u64,
                    &[9u8; 32],
                    signer.as_ref(),
                ));
                for k in 0..b {
                    let mut body = Value::Object(serde_json::Map::new());
                    batch::BatchSeal {
                        batch: Arc::clone(&signed),
                        leaf_index: k as u64,
                    }
                    .apply(&mut body);
                    black_box(&body);
                }
            });
            let per = per_batch / b as f64;
            if b == 64 {
                at64 = per;
            }
            row.push_str(&format!(" {per:.2} |"));
        }
        row.push_str(&format!(" {:.1}× |", per_response / at64));
        println!("{row}");
        // What the seal adds to each response on the wire.
        let mut single = bodies[0].clone();
        seal::seal(signer.as_ref(), &mut single);
        let leaves = (0..64).map(|k| batch::leaf(k, &shas[k as usize]));
        let signed = Arc::new(batch::SignedBatch::sign(
            leaves,
            64,
            &[9u8; 32],
            signer.as_ref(),
        ));
        let mut batched = Value::Object(serde_json::Map::new());
        batch::BatchSeal {
            batch: signed,
            leaf_index: 17,
        }
        .apply(&mut batched);
        seal_sizes.push(format!(
            "{alg}: seal member {} bytes per response, {} bytes in a batch of 64",
            single["seal"].to_string().len(),
            batched["seal"].to_string().len()
        ));
    }
    println!();
    for line in seal_sizes {
        println!("{line}");
    }
}

struct Run {
    responses: u64,
    wall: f64,
    cpu: f64,
    mean_batch: f64,
}

async fn run_through_log(
    base: &std::path::Path,
    signer: Option<(Arc<dyn Signer>, SealMode)>,
    seconds: f64,
) -> Run {
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let batch_signer = match &signer {
        Some((s, SealMode::Batch)) => Some(Arc::clone(s)),
        _ => None,
    };
    let log = Arc::new(
        AuditLog::open_sealing(dir.path(), 64 << 20, batch_signer).expect("open audit log"),
    );
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS as u64 {
        let log = Arc::clone(&log);
        let done = Arc::clone(&done);
        let signer = signer.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < deadline {
                let mut body = response(i);
                let canonical = seal::canonical_json(&body);
                let sha = sha256(&canonical);
                let e = entry(i, hex::encode(sha), canonical.len() as u64);
                match &signer {
                    None => {
                        let index = log.append(e).await.expect("append");
                        body["meta"]["audit_entry"] = json!(index);
                    }
                    Some((s, SealMode::Response)) => {
                        let index = log.append(e).await.expect("append");
                        body["meta"]["audit_entry"] = json!(index);
                        seal::seal(s.as_ref(), &mut body);
                    }
                    Some((_, SealMode::Batch)) => {
                        let a = log.append_sealed(e, sha).await.expect("append");
                        body["meta"]["audit_entry"] = json!(a.index);
                        a.seal.expect("batch signer set").apply(&mut body);
                    }
                }
                // What leaves the process: the serialised response.
                black_box(serde_json::to_vec(&body).expect("serialise"));
                done.fetch_add(1, Ordering::Relaxed);
                i += WRITERS as u64;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let stats = log.stats();
    let mean_batch = stats.appends.load(Ordering::Relaxed) as f64
        / stats.batches.load(Ordering::Relaxed).max(1) as f64;
    log.shutdown();
    Run {
        responses: done.load(Ordering::Relaxed),
        wall,
        cpu,
        mean_batch,
    }
}

fn main() {
    let seconds: f64 = env_or("SECONDS", 5.0);
    let base = PathBuf::from(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()));
    let keys = tempfile::tempdir().expect("key dir");
    let signers: Vec<(Alg, Arc<dyn Signer>)> = Alg::ALL
        .iter()
        .map(|&alg| {
            let s = seal::load_or_create(alg, &keys.path().join(alg.name())).expect("key");
            (alg, s)
        })
        .collect();
    println!("# seal modes: per-response signatures against one signature per audit group commit");
    println!(
        "machine: {} cores; response ≈ {} bytes canonical JSON",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        seal::canonical_json(&response(1)).len()
    );
    section_sealing_alone(&signers);

    println!(
        "\n## 2. through the audit log: {WRITERS} concurrent tasks, 2 worker threads, {seconds} s per run, fdatasync per group commit\n"
    );
    println!("| run | responses/s | CPU µs/response | seal CPU µs/response | mean batch |");
    println!("|---|---|---|---|---|");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let baseline = rt.block_on(run_through_log(&base, None, seconds));
    let per = |r: &Run| r.cpu * 1e6 / r.responses.max(1) as f64;
    println!(
        "| unsealed (baseline) | {:.0} | {:.1} | — | {:.1} |",
        baseline.responses as f64 / baseline.wall,
        per(&baseline),
        baseline.mean_batch
    );
    let mut ratios = Vec::new();
    for (alg, signer) in &signers {
        let mut seal_cost = [0.0f64; 2];
        for (k, mode) in [SealMode::Response, SealMode::Batch]
            .into_iter()
            .enumerate()
        {
            let r = rt.block_on(run_through_log(
                &base,
                Some((Arc::clone(signer), mode)),
                seconds,
            ));
            seal_cost[k] = per(&r) - per(&baseline);
            println!(
                "| {alg} {} | {:.0} | {:.1} | {:.1} | {:.1} |",
                mode.name(),
                r.responses as f64 / r.wall,
                per(&r),
                seal_cost[k],
                r.mean_batch
            );
        }
        ratios.push((*alg, seal_cost));
    }
    println!();
    for (alg, [response_cost, batch_cost]) in ratios {
        println!(
            "{alg}: seal CPU per response, per-response mode ÷ batch mode = {:.1}× ({response_cost:.1} µs vs {batch_cost:.1} µs; CPU time is sampled at 10 ms, so small differences are noise)",
            response_cost / batch_cost.max(0.01)
        );
    }
    println!(
        "\ncommand: SECONDS={seconds} BENCH_DIR={} cargo bench --bench seal_modes",
        base.display()
    );
}
