//! Bulk-export throughput (issue 7, DESIGN.md §7): the population dataset
//! of PERSONS persons (default 1,000,000, generated and pulled once, cached
//! under BENCH_DIR like `store_lookup`) exported as an Arrow IPC stream over
//! mutual TLS on loopback, through the whole path (certificate, officer
//! token, grant, plan, row selection, durable audit entry, masking in the
//! stream, encoding, SHA-256 and the seal trailer), by an in-process broker
//! to an in-process client that reads every byte.
//!
//! Two grants over the same six columns, run alternately in the same
//! process: **masked** — the Ürümqi counter, which reads names in clear and
//! ID numbers, addresses, sex, birth date and 民族 masked — and the
//! **baseline** — the housing-fund centre, which reads all six in clear (the
//! same export path without masking). Reported: MB/s (10^6 bytes of body
//! per second) and rows/s of each, their ratio, and the process's CPU
//! seconds per export (broker and client share the two cores). The first
//! export of each kind is checked, not timed: its seal verifies and its
//! Arrow stream decodes to the announced rows.
//!
//! ```sh
//! cargo bench --bench export_throughput                     # 1,000,000 persons, 5 rounds
//! PERSONS=100000 ROUNDS=3 cargo bench --bench export_throughput
//! FORMAT=parquet cargo bench --bench export_throughput      # the Parquet encoding instead
//! ```

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;

use sharebroker::api::export::{self, SEAL_TRAILER};
use sharebroker::api::{self, AppState, client};
use sharebroker::config::Settings;
use sharebroker::pki::PkiPaths;

use common::{cpu_seconds, env_or, prepared_store, status_mib};

/// The allocator of the `sharebroker` binary (src/main.rs): the broker runs
/// in this process, and with glibc malloc every 1 MiB body chunk and batch
/// column was a fresh mapping, zeroed page by page.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rules and grants added to a copy of the repo's policies: one agency
/// reads every shared population field in clear, the other masked (the
/// counter's own rules keep names in clear and addresses masked).
const BENCH_RULES: &str = "
# export_throughput bench
p, xj-gjj:fund, dataset:population, read_clear, XJ-GJJ-0203, allow
p, wlmq-zwfw:counter, dataset:population, read_masked, WLMQ-ZW-0001, allow
";
const BENCH_GRANTS: &str = "
[[application]]
id = \"BENCH-CLEAR\"
agency = \"xj-gjj\"
fields = [\"population.ethnicity\"]
purpose = \"XJ-GJJ-0203\"
approved_by = \"xj-gat\"
approved_on = 2026-01-01
valid_until = 2099-12-31

[[application]]
id = \"BENCH-MASKED\"
agency = \"wlmq-zwfw\"
fields = [\"population.ethnicity\"]
purpose = \"WLMQ-ZW-0001\"
approved_by = \"xj-gat\"
approved_on = 2026-01-01
valid_until = 2099-12-31
";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// A broker's data directory over the cached store (linked, not copied),
/// with its own audit log, PKI and bench policies.
fn broker_settings(cached: &Settings, dir: &Path) -> Settings {
    let policies = dir.join("policies");
    copy_dir(&cached.policies_dir, &policies);
    let append = |file: &str, text: &str| {
        let path = policies.join(file);
        let mut s = std::fs::read_to_string(&path).expect("policy file");
        s.push_str(text);
        std::fs::write(&path, s).expect("write policy file");
    };
    append("policy.csv", BENCH_RULES);
    append("applications.toml", BENCH_GRANTS);
    let s = Settings {
        policies_dir: policies,
        connectors_dir: cached.connectors_dir.clone(),
        data_dir: dir.join("data"),
        rate_limit_per_agency_rps: 1e9,
        rate_limit_burst: u32::MAX,
        request_timeout_secs: 60,
        ..Settings::default()
    };
    std::fs::create_dir_all(&s.data_dir).expect("data dir");
    std::os::unix::fs::symlink(cached.store_dir(), s.store_dir()).expect("link the store");
    common::init_pki(&s);
    s
}

struct Export {
    bytes: u64,
    rows: u64,
    secs: f64,
}

/// One export over a keep-alive mTLS connection; with `check`, the whole
/// body is kept, its seal verified and its Arrow stream decoded.
async fn export_once(
    conn: &mut client::MtlsClient,
    path: &str,
    public: &sharebroker::seal::PublicKey,
    check: bool,
) -> Export {
    let started = Instant::now();
    let resp = conn
        .send("GET", path, &[("te", "trailers")], None)
        .await
        .expect("export");
    assert_eq!(resp.status(), 200);
    let rows: u64 = resp.headers()["x-sharebroker-rows"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("rows");
    let mut body = resp.into_body();
    let (mut bytes, mut kept, mut seal) = (0u64, Vec::new(), None);
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        match frame.into_data() {
            Ok(data) => {
                bytes += data.len() as u64;
                if check {
                    kept.extend_from_slice(&data);
                }
            }
            Err(frame) => {
                seal = frame
                    .into_trailers()
                    .ok()
                    .and_then(|t| t.get(SEAL_TRAILER).cloned())
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let seal = seal.expect("every complete export ends with its seal");
    if check {
        let seal = export::parse_export_seal(seal.to_str().expect("ascii")).expect("seal");
        export::verify_export_seal(public, &seal, &mut kept.as_slice()).expect("seal verifies");
        if !path.contains("format=parquet") {
            let reader = arrow_ipc::reader::StreamReader::try_new(
                std::io::Cursor::new(Bytes::from(kept)),
                None,
            )
            .expect("arrow stream");
            let decoded: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
            assert_eq!(decoded as u64, rows, "the stream holds the announced rows");
        }
    }
    Export { bytes, rows, secs }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let persons: usize = env_or("PERSONS", 1_000_000);
    let rounds: usize = env_or("ROUNDS", 5);
    let format: String = env_or("FORMAT", "arrow".to_string());
    let cached = prepared_store(persons);
    let dir = tempfile::tempdir().expect("tempdir");
    let s = broker_settings(&cached, dir.path());
    let t = Instant::now();
    let state = Arc::new(AppState::open(&s).await.expect("state"));
    let public = state.signer.verifying_key();
    println!(
        "broker loaded {persons} persons in {:.1} s; RSS {:.0} MiB",
        t.elapsed().as_secs_f64(),
        status_mib("VmRSS:")
    );
    let tls = api::tls_config_from(&s).expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(api::run(listener, tls, state, std::future::pending()));

    let paths = PkiPaths::new(&s.pki_dir());
    let connect = |agency: &'static str| {
        let paths = &paths;
        async move {
            let config = client::config(
                &paths.ca_cert(),
                &paths.client_cert(agency),
                &paths.client_key(agency),
            )
            .expect("client config");
            client::MtlsClient::connect(addr, "localhost", config)
                .await
                .expect("connect")
                .with_token_signer(Arc::new(
                    client::token_signer(&paths.client_key(agency), agency).expect("key"),
                ))
        }
    };
    let mut masked_conn = connect("wlmq-zwfw").await;
    let mut clear_conn = connect("xj-gjj").await;
    let masked_path = format!("/v1/exports/population?grant=BENCH-MASKED&format={format}");
    let clear_path = format!("/v1/exports/population?grant=BENCH-CLEAR&format={format}");

    // Checked, not timed: both verify and decode, and carry the same rows.
    let m = export_once(&mut masked_conn, &masked_path, &public, true).await;
    let c = export_once(&mut clear_conn, &clear_path, &public, true).await;
    assert_eq!(m.rows, c.rows, "the same rows either way");
    println!(
        "{} rows × 6 columns ({format}); body {:.1} MB masked, {:.1} MB clear; seals verify, streams decode",
        m.rows,
        m.bytes as f64 / 1e6,
        c.bytes as f64 / 1e6
    );

    let (mut masked, mut clear) = (Vec::new(), Vec::new());
    let (mut cpu_masked, mut cpu_clear) = (0.0, 0.0);
    for _ in 0..rounds {
        let cpu = cpu_seconds();
        clear.push(export_once(&mut clear_conn, &clear_path, &public, false).await);
        cpu_clear += cpu_seconds() - cpu;
        let cpu = cpu_seconds();
        masked.push(export_once(&mut masked_conn, &masked_path, &public, false).await);
        cpu_masked += cpu_seconds() - cpu;
    }
    let summary = |label: &str, runs: &[Export], cpu: f64| -> f64 {
        let bytes: u64 = runs.iter().map(|r| r.bytes).sum();
        let rows: u64 = runs.iter().map(|r| r.rows).sum();
        let secs: f64 = runs.iter().map(|r| r.secs).sum();
        let mut each: Vec<f64> = runs.iter().map(|r| r.bytes as f64 / 1e6 / r.secs).collect();
        each.sort_by(f64::total_cmp);
        let mbps = bytes as f64 / 1e6 / secs;
        println!(
            "{label:>8}: {mbps:7.1} MB/s, {:10.0} rows/s over {} exports (per export {:.0}–{:.0} MB/s, {:.2} s); process CPU {:.2} s per export",
            rows as f64 / secs,
            runs.len(),
            each.first().copied().unwrap_or(0.0),
            each.last().copied().unwrap_or(0.0),
            secs / runs.len() as f64,
            cpu / runs.len() as f64
        );
        mbps
    };
    let mbps_masked = summary("masked", &masked, cpu_masked);
    let mbps_clear = summary("baseline", &clear, cpu_clear);
    let rows_ratio = {
        let rate = |runs: &[Export]| {
            runs.iter().map(|r| r.rows).sum::<u64>() as f64
                / runs.iter().map(|r| r.secs).sum::<f64>()
        };
        rate(&masked) / rate(&clear)
    };
    println!(
        "masked / baseline: {:.2}× in MB/s, {rows_ratio:.2}× in rows/s (targets: ≥ 500 MB/s masked, ≥ 0.8×); peak RSS {:.0} MiB",
        mbps_masked / mbps_clear,
        status_mib("VmHWM:")
    );
}
