//! Crash safety of the audit log: the broker binary is killed with SIGKILL
//! while clients are being served; after each kill the log must verify,
//! every response a client received must have its entry — same index, same
//! response digest — in the log (the clients' receipts), and every signed
//! tree head a client saw must still describe the log.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use sharebroker::api::client::{self, MtlsClient};
use sharebroker::api::token::TokenSigner;
use sharebroker::audit::{self, AuditFilter, AuditLog, TreeHead};
use sharebroker::pki::PkiPaths;

use crate::fixture::{Prepared, Receipt, prepare, receipt, repo};

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// The broker binary, with small audit segments (so that kills land across
/// segment rotations) and a tree head every second.
fn spawn_broker(p: &Prepared, addr: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sharebroker"))
        .arg("--policies")
        .arg(repo("policies"))
        .arg("--connectors")
        .arg(repo("connectors"))
        .arg("--data-dir")
        .arg(&p.settings.data_dir)
        .args(["serve", "--listen", &addr.to_string()])
        .args([
            "--audit-segment-max-bytes",
            "65536",
            "--tree-head-interval-secs",
            "1",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the broker binary")
}

async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    signer: &Arc<TokenSigner>,
) -> MtlsClient {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match MtlsClient::connect(addr, "localhost", config.clone()).await {
            Ok(c) => return c.with_token_signer(signer.clone()),
            Err(e) if Instant::now() > deadline => panic!("broker did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("JSON response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_received_response_survives_kill_9() {
    let p = prepare();
    let paths = PkiPaths {
        dir: p.settings.pki_dir(),
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
    let mut receipts: Vec<Receipt> = Vec::new();
    let mut heads: Vec<TreeHead> = Vec::new();
    // Kill points before and after the first published heads; bounded: 4 rounds.
    for (round, kill_after_ms) in [1_300u64, 370, 2_100, 800].into_iter().enumerate() {
        let addr = free_port();
        let mut broker = spawn_broker(&p, addr);
        let mut setup = connect(addr, config.clone(), &signer).await;
        let mut clients = Vec::new();
        // Eight clients, each with its own applicant and case, so no two
        // responses are alike and a swapped entry would show.
        for c in 0..8 {
            let (id, _) = &p.applicants[c % p.applicants.len()];
            let case = format!("CRASH-{round}-{c}");
            let open = format!(
                r#"{{"case_id":"{case}","service_item":"XJ-MZ-0201","officer":"o{c}","applicants":[{{"id_number":"{id}"}}]}}"#
            );
            let (status, body) = setup
                .request("POST", "/v1/cases", Some(Bytes::from(open)))
                .await
                .expect("open case");
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            receipts.push(receipt(&json(&body)));
            let mut conn = connect(addr, config.clone(), &signer).await;
            let path = format!("/v1/cases/{case}/lookup");
            let lookup = Bytes::from(format!(
                r#"{{"subject":{{"id_number":"{id}"}},"dataset":"population"}}"#
            ));
            clients.push(tokio::spawn(async move {
                let mut got: Vec<Receipt> = Vec::new();
                let until = Instant::now() + Duration::from_secs(10);
                while Instant::now() < until {
                    match conn.request("POST", &path, Some(lookup.clone())).await {
                        Ok((200, body)) => got.push(receipt(&json(&body))),
                        Ok((status, body)) => {
                            panic!("unexpected {status}: {}", String::from_utf8_lossy(&body))
                        }
                        Err(_) => break, // the broker died under us
                    }
                }
                // One client's requests are sequential: its entries ascend.
                assert!(
                    got.windows(2).all(|w| w[0].index < w[1].index),
                    "a client's entries out of order"
                );
                got
            }));
        }
        // Meanwhile a client keeps the signed tree heads it is shown.
        let mut watcher = connect(addr, config.clone(), &signer).await;
        let watch = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Ok((200, body)) = watcher.request("GET", "/v1/audit/tree-head", None).await {
                let head: TreeHead =
                    serde_json::from_value(json(&body)["tree_head"].clone()).expect("tree head");
                seen.push(head);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            seen
        });
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        broker.kill().expect("SIGKILL the broker");
        broker.wait().expect("reap");
        for c in clients {
            receipts.extend(c.await.expect("client task"));
        }
        heads.extend(watch.await.expect("watcher"));

        // The log verifies after every crash and holds every receipt.
        let dir = p.settings.audit_dir();
        let report = audit::verify_dir(&dir, None).expect("the log verifies after kill -9");
        let entries = audit::scan_dir(&dir, &AuditFilter::default()).expect("scan");
        assert_eq!(entries.len() as u64, report.entries);
        for r in &receipts {
            let (index, entry) = entries.get(r.index as usize).unwrap_or_else(|| {
                panic!(
                    "round {round}: receipt {} beyond the log ({} entries)",
                    r.index,
                    entries.len()
                )
            });
            assert_eq!(*index, r.index);
            assert_eq!(
                entry.response_sha256.as_deref(),
                Some(r.sha256.as_str()),
                "round {round}: entry {} is not what the client received",
                r.index
            );
        }
        // Every head a client was shown still describes the log.
        let log = AuditLog::open(&dir).expect("reopens after kill -9");
        for h in &heads {
            assert_eq!(
                hex::encode(log.root_at(h.size).expect("head within the log")),
                h.root,
                "round {round}: head at size {}",
                h.size
            );
        }
    }
    let segments = std::fs::read_dir(p.settings.audit_dir())
        .expect("audit dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("log-"))
        })
        .count();
    assert!(
        receipts.len() > 40,
        "the clients were served before the kills: {} receipts",
        receipts.len()
    );
    assert!(
        segments > 1,
        "the kills landed across segment rotations: {segments} segment(s)"
    );
    assert!(
        heads.iter().any(|h| h.size > 0),
        "clients were shown non-empty tree heads"
    );
}
