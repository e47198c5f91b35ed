//! A first figure, not a target: point lookups per second from a simple
//! client loop over mutual-TLS keep-alive connections, through the full
//! path (certificate → case check → plan → mask → seal → durable audit).
//!
//! By default it builds its own broker: generates PERSONS persons (default
//! 100,000), pulls them, and serves in this process on an ephemeral port,
//! timing `gen` and `pull` on the way. With `--target HOST:PORT --pki DIR`
//! it drives an already running broker instead (for example `sharebroker
//! demo`, whose PKI is `data/pki`).
//!
//!   cargo bench --bench lookup_loop
//!   PERSONS=100000 SECONDS=10 CONNS=4 cargo bench --bench lookup_loop
//!   cargo bench --bench lookup_loop -- --target 127.0.0.1:8443 --pki data/pki --sources data/sources
//!
//! The client shares the process (and the machine's two cores) with an
//! in-process broker, so req/s understates the broker; CPU time per request
//! is reported for the whole process.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sharebroker::api::{self, AppState, client};
use sharebroker::config::Settings;
use sharebroker::datagen::{GenOptions, generate};
use sharebroker::pki::PkiPaths;
use sharebroker::pull;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn applicants(sources: &Path) -> Vec<String> {
    let mut rdr = csv::Reader::from_path(sources.join("applicants.csv")).expect("applicants.csv");
    rdr.records()
        .map(|r| r.expect("row")[1].to_string())
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = env_or("SECONDS", 10);
    let conns: usize = env_or("CONNS", 4);
    let (addr, pki_dir, sources, _keep): (SocketAddr, PathBuf, PathBuf, Option<tempfile::TempDir>) =
        match arg("--target") {
            Some(target) => (
                target.parse().expect("--target HOST:PORT"),
                PathBuf::from(arg("--pki").unwrap_or_else(|| "data/pki".into())),
                PathBuf::from(arg("--sources").unwrap_or_else(|| "data/sources".into())),
                None,
            ),
            None => {
                let persons: usize = env_or("PERSONS", 100_000);
                let dir = tempfile::tempdir().expect("tempdir");
                let root = Path::new(env!("CARGO_MANIFEST_DIR"));
                let s = Settings {
                    policies_dir: root.join("policies"),
                    connectors_dir: root.join("connectors"),
                    data_dir: dir.path().to_path_buf(),
                    // One agency drives every lookup: no rate limit here.
                    rate_limit_per_agency_rps: 1e9,
                    rate_limit_burst: u32::MAX,
                    ..Settings::default()
                };
                let t = Instant::now();
                generate(&GenOptions {
                    out_dir: s.sources_dir(),
                    persons,
                    seed: 2021,
                    progress: false,
                })
                .expect("gen");
                let gen_time = t.elapsed();
                let t = Instant::now();
                let report = pull::run_configured(&s, &[], false).expect("pull");
                let pull_time = t.elapsed();
                let rows: u64 = report.sources.iter().map(|(_, st)| st.rows).sum();
                println!(
                    "gen {persons} persons: {gen_time:.2?}; pull {rows} source rows → {} golden records: {pull_time:.2?}; peak RSS so far {:.0} MiB",
                    report.subjects.iter().map(|(_, n, _)| n).sum::<usize>(),
                    status_mib("VmHWM:")
                );
                common::init_pki(&s);
                let state = Arc::new(AppState::open(&s).await.expect("state"));
                let tls = api::tls_config_from(&s).expect("tls");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                tokio::spawn(api::run(listener, tls, state, std::future::pending()));
                (addr, s.pki_dir(), s.sources_dir(), Some(dir))
            }
        };

    let paths = PkiPaths {
        dir: pki_dir.clone(),
    };
    let config = client::config(
        &paths.ca_cert(),
        &paths.client_cert("xj-mzt"),
        &paths.client_key("xj-mzt"),
    )
    .expect("client config");
    let signer = Arc::new(
        client::token_signer(&paths.client_key("xj-mzt"), "xj-mzt").expect("officer token key"),
    );
    let ids = applicants(&sources);
    let run = std::process::id();
    // One open case per applicant, so every lookup is legitimately bound.
    let mut setup = client::MtlsClient::connect(addr, "localhost", config.clone())
        .await
        .expect("connect")
        .with_token_signer(signer.clone());
    let mut cases = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let case = format!("BENCH-{run}-{i}");
        let body = format!(
            r#"{{"case_id":"{case}","service_item":"XJ-MZ-0201","officer":"bench","applicants":[{{"id_number":"{id}"}}]}}"#
        );
        let (status, resp) = setup
            .request("POST", "/v1/cases", Some(Bytes::from(body)))
            .await
            .expect("open case");
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&resp));
        cases.push((case, id.clone()));
    }
    let cases = Arc::new(cases);

    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let config = config.clone();
        let cases = cases.clone();
        let signer = signer.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = client::MtlsClient::connect(addr, "localhost", config)
                .await
                .expect("connect")
                .with_token_signer(signer);
            let mut latencies = Vec::with_capacity(100_000);
            let mut i = c;
            while Instant::now() < deadline {
                let (case, id) = &cases[i % cases.len()];
                i += 1;
                let body = Bytes::from(format!(
                    r#"{{"subject":{{"id_number":"{id}"}},"dataset":"population"}}"#
                ));
                let t = Instant::now();
                let (status, resp) = conn
                    .request("POST", &format!("/v1/cases/{case}/lookup"), Some(body))
                    .await
                    .expect("lookup");
                latencies.push(t.elapsed().as_micros() as u32);
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "lookups: {} in {elapsed:.1} s over {conns} keep-alive mTLS connections = {:.0} req/s; p50 {} µs, p99 {} µs; process CPU {:.1} µs/request{}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        cpu * 1e6 / all.len().max(1) as f64,
        if arg("--target").is_some() {
            " (client only)"
        } else {
            " (broker and client together)"
        },
    );
    println!("peak RSS {:.0} MiB", status_mib("VmHWM:"));
}
