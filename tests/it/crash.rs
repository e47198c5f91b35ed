//! Crash safety of the audit log: the broker binary is killed with SIGKILL
//! while clients are being served; after each kill the log must verify, and
//! every response a client received must have its entry — same index, same
//! response digest — in the log (the clients' receipts).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use sharebroker::api::client::{self, MtlsClient};
use sharebroker::audit::{self, AuditFilter};
use sharebroker::pki::PkiPaths;
use sharebroker::seal;

use crate::fixture::{Prepared, prepare, repo};

/// What a client can prove it received: the entry index the response named
/// and the digest the broker audited (the body without its seal and entry
/// number).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Receipt {
    index: u64,
    sha256: String,
}

fn receipt(body: &[u8]) -> Receipt {
    let mut v: Value = serde_json::from_slice(body).expect("JSON response");
    let obj = v.as_object_mut().expect("object");
    obj.remove("seal");
    let index = match obj.get_mut("meta").and_then(Value::as_object_mut) {
        Some(meta) => meta.remove("audit_entry"),
        None => obj.remove("audit_entry"),
    }
    .and_then(|i| i.as_u64())
    .expect("every answered request names its audit entry");
    let digest = ring::digest::digest(&ring::digest::SHA256, &seal::canonical_json(&v));
    Receipt {
        index,
        sha256: hex::encode(digest.as_ref()),
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn spawn_broker(p: &Prepared, addr: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sharebroker"))
        .arg("--policies")
        .arg(repo("policies"))
        .arg("--connectors")
        .arg(repo("connectors"))
        .arg("--data-dir")
        .arg(&p.settings.data_dir)
        .args(["serve", "--listen", &addr.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the broker binary")
}

async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> MtlsClient {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match MtlsClient::connect(addr, "localhost", config.clone()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("broker did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
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
    let mut receipts: Vec<Receipt> = Vec::new();
    // Kill points spread over the first second of load; bounded: 4 rounds.
    for (round, kill_after_ms) in [120u64, 370, 55, 800].into_iter().enumerate() {
        let addr = free_port();
        let mut broker = spawn_broker(&p, addr);
        let mut setup = connect(addr, config.clone()).await;
        let (id, _) = &p.applicants[round % p.applicants.len()];
        let case = format!("CRASH-{round}");
        let open = format!(
            r#"{{"case_id":"{case}","service_item":"XJ-MZ-0201","officer":"o","applicants":[{{"id_number":"{id}"}}]}}"#
        );
        let (status, body) = setup
            .request("POST", "/v1/cases", Some(Bytes::from(open)))
            .await
            .expect("open case");
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        receipts.push(receipt(&body));

        let mut clients = Vec::new();
        for _ in 0..8 {
            let mut c = connect(addr, config.clone()).await;
            let path = format!("/v1/cases/{case}/lookup");
            let lookup = Bytes::from(format!(
                r#"{{"subject":{{"id_number":"{id}"}},"dataset":"population"}}"#
            ));
            clients.push(tokio::spawn(async move {
                let mut got = Vec::new();
                // Until the broker dies under us (bounded by time as well).
                let until = Instant::now() + Duration::from_secs(10);
                while Instant::now() < until {
                    match c.request("POST", &path, Some(lookup.clone())).await {
                        Ok((200, body)) => got.push(receipt(&body)),
                        Ok((status, body)) => {
                            panic!("unexpected {status}: {}", String::from_utf8_lossy(&body))
                        }
                        Err(_) => break,
                    }
                }
                got
            }));
        }
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        broker.kill().expect("SIGKILL the broker");
        broker.wait().expect("reap");
        for c in clients {
            receipts.extend(c.await.expect("client task"));
        }

        // The log verifies after every crash, and holds every receipt.
        let report = audit::verify_dir(&p.settings.audit_dir(), None)
            .expect("the log verifies after kill -9");
        let entries =
            audit::scan_dir(&p.settings.audit_dir(), &AuditFilter::default()).expect("scan");
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
    }
    assert!(
        receipts.len() > 20,
        "the clients were served before the kills: {} receipts",
        receipts.len()
    );
}
