//! Signed tree heads: the log's size and root signed by the broker's seal key, appended to
//! `tree-heads.jsonl`, checked against the tree and against each other, and published
//! periodically.
//!
//! A head signs exactly the bytes `sharebroker-tree-head-v1\n{size}\n{root_hex}\n{time}\n`
//! (lowercase hex root, RFC 3339 UTC time), so anyone holding the published key can check a
//! head offline and then hold the log to it with consistency and inclusion proofs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde::{Deserialize, Serialize};

use super::merkle::{self, MerkleTree};
use super::{AuditError, AuditLog, lock};
use crate::journal::{self, Appender};
use crate::seal::{self, Signer};

/// File name of the tree-head journal inside the audit directory.
pub const TREE_HEADS_FILE: &str = "tree-heads.jsonl";
/// First line of every signed tree-head message; names the format version.
pub const TREE_HEAD_CONTEXT: &str = "sharebroker-tree-head-v1";

/// A signed statement "the log had `size` entries with root `root` at `time`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeHead {
    /// Number of entries covered.
    pub size: u64,
    /// Lowercase hex RFC 6962 root over those entries.
    pub root: String,
    /// RFC 3339 UTC time of signing.
    pub time: String,
    /// Id of the signing key ([`seal::key_id_of`]).
    pub key_id: String,
    /// Signature algorithm ("ed25519" or "sm2-sm3").
    pub alg: String,
    /// Standard base64 signature over [`TreeHead::signed_message`].
    pub signature: String,
}

impl TreeHead {
    /// Signs `size` and `root` at `time` with `signer`.
    pub fn sign(size: u64, root: &[u8; 32], time: String, signer: &dyn Signer) -> TreeHead {
        let root = hex::encode(root);
        let signature = signer.sign(&tree_head_message(size, &root, &time));
        TreeHead {
            size,
            root,
            time,
            key_id: signer.key_id().to_string(),
            alg: signer.alg().name().to_string(),
            signature: BASE64_STANDARD.encode(signature),
        }
    }

    /// The exact bytes the signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        tree_head_message(self.size, &self.root, &self.time)
    }

    /// The root as bytes; an error text if it is not 64 lowercase hex digits.
    pub fn root_bytes(&self) -> Result<[u8; 32], String> {
        let mut root = [0u8; 32];
        if self.root.len() != 64 || self.root.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "root {:?} is not 64 lowercase hex digits",
                self.root
            ));
        }
        hex::decode_to_slice(&self.root, &mut root)
            .map_err(|e| format!("root {:?} is not hex: {e}", self.root))?;
        Ok(root)
    }
}

/// `sharebroker-tree-head-v1\n{size}\n{root_hex}\n{time}\n`.
pub fn tree_head_message(size: u64, root_hex: &str, time: &str) -> Vec<u8> {
    format!("{TREE_HEAD_CONTEXT}\n{size}\n{root_hex}\n{time}\n").into_bytes()
}

/// Checks a head's algorithm, key id, root and time formats and its signature against the
/// broker's published key. Says nothing about whether the root matches any log: see
/// [`super::verify_dir`] and the proofs for that.
pub fn verify_tree_head(public_key: &seal::PublicKey, head: &TreeHead) -> Result<(), AuditError> {
    let invalid = |reason: String| AuditError::InvalidTreeHead {
        size: head.size,
        reason,
    };
    public_key
        .check_names(&head.alg, &head.key_id)
        .map_err(|e| invalid(e.to_string()))?;
    head.root_bytes().map_err(invalid)?;
    check_time(&head.time).map_err(invalid)?;
    let signature = BASE64_STANDARD
        .decode(&head.signature)
        .map_err(|e| invalid(format!("signature is not base64: {e}")))?;
    public_key
        .verify_signature(&head.signed_message(), &signature)
        .map_err(|_| invalid("signature does not verify (head altered or wrong key)".into()))
}

fn check_time(time: &str) -> Result<(), String> {
    match chrono::DateTime::parse_from_rfc3339(time) {
        Ok(t) if t.offset().local_minus_utc() == 0 && time.ends_with('Z') => Ok(()),
        Ok(_) => Err(format!("time {time:?} is not in UTC (\"Z\")")),
        Err(e) => Err(format!("time {time:?} is not RFC 3339: {e}")),
    }
}

/// The heads journal: parsed complete lines (numbered from 1) and the length of the part
/// that ends in a newline.
pub(crate) struct HeadsFile {
    pub(crate) heads: Vec<(usize, TreeHead)>,
    pub(crate) good_len: usize,
    pub(crate) len: usize,
}

/// Reads `path` (absent = no heads), parsing every complete line; an unterminated last line
/// (a write torn by a crash) is not returned.
pub(crate) fn read_heads(path: &Path) -> Result<HeadsFile, AuditError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(AuditError::Io {
                action: "read tree heads",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut heads = Vec::new();
    for (line_no, line) in journal::complete_lines(&text) {
        let head: TreeHead = serde_json::from_slice(line).map_err(|e| AuditError::Corrupt {
            path: path.to_path_buf(),
            line: line_no as u64,
            reason: format!("tree head does not parse: {e}"),
        })?;
        heads.push((line_no, head));
    }
    Ok(HeadsFile {
        heads,
        good_len: journal::complete_len(&text),
        len: text.len(),
    })
}

/// Checks every head against `tree` (which must hold at least the entries the heads were
/// made from): size within the tree, root equal to the recomputed root at that size, time
/// format, sizes never shrinking, each head consistent with the one before it (a consistency
/// proof from `tree` verifies between their roots) and, given a key, a valid signature.
pub(crate) fn check_heads(
    path: &Path,
    heads: &[(usize, TreeHead)],
    tree: &MerkleTree,
    public_key: Option<&seal::PublicKey>,
) -> Result<(), AuditError> {
    let mut previous: Option<(usize, &TreeHead, [u8; 32])> = None;
    for (line_no, head) in heads {
        let corrupt = |reason: String| AuditError::Corrupt {
            path: path.to_path_buf(),
            line: *line_no as u64,
            reason,
        };
        let root = head.root_bytes().map_err(&corrupt)?;
        let recomputed = tree.root_at(head.size).map_err(|_| {
            corrupt(format!(
                "tree head size {} exceeds the {} entries in the log",
                head.size,
                tree.size()
            ))
        })?;
        if recomputed != root {
            return Err(corrupt(format!(
                "tree head root {} at size {} differs from the recomputed root {}",
                head.root,
                head.size,
                hex::encode(recomputed)
            )));
        }
        check_time(&head.time).map_err(&corrupt)?;
        if let Some(key) = public_key {
            verify_tree_head(key, head).map_err(|e| corrupt(e.to_string()))?;
        }
        if let Some((prev_line, prev, prev_root)) = previous {
            if head.size < prev.size {
                return Err(corrupt(format!(
                    "tree head size {} is smaller than the size {} of the head on line {prev_line}",
                    head.size, prev.size
                )));
            }
            // Every tree extends the empty one; RFC 9162 has no proof for old size 0.
            if prev.size > 0 {
                let proof = tree
                    .consistency_proof(prev.size, head.size)
                    .map_err(|e| corrupt(format!("no consistency proof: {e}")))?;
                merkle::verify_consistency(prev.size, head.size, &prev_root, &root, &proof)
                    .map_err(|e| {
                        corrupt(format!(
                            "tree head is not consistent with the head on line {prev_line}: {e}"
                        ))
                    })?;
            }
        }
        previous = Some((*line_no, head, root));
    }
    Ok(())
}

/// The open heads journal and the last head, owned by an [`AuditLog`].
pub(crate) struct HeadStore {
    path: PathBuf,
    file: Appender,
    last: Option<TreeHead>,
}

impl HeadStore {
    /// Opens `path`, cutting a torn last line, and checks every head against `tree`.
    pub(crate) fn open(path: &Path, tree: &MerkleTree) -> Result<HeadStore, AuditError> {
        let io = |action: &'static str| {
            move |source| AuditError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let file = read_heads(path)?;
        check_heads(path, &file.heads, tree, None)?;
        if file.good_len < file.len {
            tracing::warn!(path = %path.display(), "truncating torn last line of tree heads");
            journal::truncate(path, file.good_len as u64).map_err(io("truncate torn tail of"))?;
        }
        Ok(HeadStore {
            path: path.to_path_buf(),
            file: Appender::open(path).map_err(io("open"))?,
            last: file.heads.into_iter().next_back().map(|(_, head)| head),
        })
    }
}

impl AuditLog {
    /// Signs the current size and root and appends the head durably to `tree-heads.jsonl`.
    /// When the size has not changed since the last head, writes nothing and returns that
    /// head. Blocks on the fsync: call it from `spawn_blocking` in async code.
    pub fn publish_tree_head(&self, signer: &dyn Signer) -> Result<TreeHead, AuditError> {
        // std Mutex: held across signing and a small append + fsync, never an `.await`.
        let mut heads = lock(&self.heads);
        let (size, root) = {
            let tree = lock(&self.tree);
            (tree.merkle.size(), tree.root)
        };
        if let Some(last) = &heads.last
            && last.size == size
        {
            return Ok(last.clone());
        }
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let head = TreeHead::sign(size, &root, time, signer);
        let line = serde_json::to_vec(&head).map_err(AuditError::Encode)?;
        let path = heads.path.clone();
        heads.file.append(&line).map_err(|source| AuditError::Io {
            action: "append to tree heads",
            path,
            source,
        })?;
        heads.last = Some(head.clone());
        Ok(head)
    }

    /// The last head published (or found on open), if any.
    pub fn latest_tree_head(&self) -> Option<TreeHead> {
        lock(&self.heads).last.clone()
    }
}

/// Publishes a tree head every `every` (the first at once), on the blocking pool. Failures
/// are logged and retried next period. Abort the handle to stop; publish once more at
/// shutdown so the last entries are covered.
pub fn spawn_tree_head_publisher(
    log: Arc<AuditLog>,
    signer: Arc<dyn Signer>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let log = Arc::clone(&log);
            let signer = Arc::clone(&signer);
            match tokio::task::spawn_blocking(move || log.publish_tree_head(signer.as_ref())).await
            {
                Ok(Ok(head)) => tracing::debug!(size = head.size, "tree head published"),
                Ok(Err(err)) => tracing::error!(%err, "cannot publish audit tree head"),
                Err(err) => tracing::error!(%err, "tree head publisher task failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEntry, AuditSink, SEGMENT_FILE, verify_dir};
    use crate::seal::Ed25519Signer;
    use std::fs;
    use std::io::Write;

    fn signer(dir: &Path) -> Ed25519Signer {
        Ed25519Signer::load_or_create(&dir.join("seal.key")).unwrap()
    }

    async fn append(log: &AuditLog, n: u64) {
        for i in 0..n {
            let entry = AuditEntry {
                time: "2025-08-01T00:00:00Z".into(),
                agency: format!("agency-{i}"),
                decision: "allow".into(),
                ..Default::default()
            };
            log.append(entry).await.unwrap();
        }
    }

    fn head_lines(dir: &Path) -> Vec<String> {
        fs::read_to_string(dir.join(TREE_HEADS_FILE))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn signed_message_is_the_documented_bytes() {
        let root = "ab".repeat(32);
        assert_eq!(
            tree_head_message(42, &root, "2025-08-01T00:00:00.000001Z"),
            format!("sharebroker-tree-head-v1\n42\n{root}\n2025-08-01T00:00:00.000001Z\n")
                .into_bytes()
        );
        let keys = tempfile::tempdir().unwrap();
        let signer = signer(keys.path());
        let head = TreeHead::sign(42, &[0xab; 32], "2025-08-01T00:00:00Z".into(), &signer);
        assert_eq!(head.root, root);
        let signature = BASE64_STANDARD.decode(&head.signature).unwrap();
        signer
            .verifying_key()
            .verify_signature(
                format!("sharebroker-tree-head-v1\n42\n{root}\n2025-08-01T00:00:00Z\n").as_bytes(),
                &signature,
            )
            .unwrap();
        verify_tree_head(&signer.verifying_key(), &head).unwrap();
    }

    #[tokio::test]
    async fn publish_skips_unchanged_sizes_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let signer = signer(keys.path());
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.latest_tree_head(), None);
        append(&log, 5).await;
        let first = log.publish_tree_head(&signer).unwrap();
        assert_eq!(first.size, 5);
        assert_eq!(first.root, hex::encode(log.root()));
        assert_eq!(first.key_id, signer.key_id());
        assert_eq!(first.alg, "ed25519");
        assert!(first.time.ends_with('Z'), "{}", first.time);
        verify_tree_head(&signer.verifying_key(), &first).unwrap();
        assert_eq!(log.publish_tree_head(&signer).unwrap(), first);
        assert_eq!(head_lines(dir.path()).len(), 1);

        append(&log, 3).await;
        let second = log.publish_tree_head(&signer).unwrap();
        assert_eq!(second.size, 8);
        assert_eq!(log.latest_tree_head(), Some(second.clone()));
        let lines = head_lines(dir.path());
        assert_eq!(lines.len(), 2);
        assert_eq!(serde_json::from_str::<TreeHead>(&lines[1]).unwrap(), second);
        drop(log);

        let report = verify_dir(dir.path(), Some(&signer.verifying_key())).unwrap();
        assert_eq!((report.entries, report.tree_heads), (8, 2));
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.latest_tree_head(), Some(second.clone()));
        assert_eq!(log.publish_tree_head(&signer).unwrap(), second);
    }

    #[tokio::test]
    async fn empty_log_head_then_growth_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let signer = signer(keys.path());
        let log = AuditLog::open(dir.path()).unwrap();
        let empty = log.publish_tree_head(&signer).unwrap();
        assert_eq!(empty.size, 0);
        assert_eq!(empty.root, hex::encode(merkle::empty_root()));
        append(&log, 1).await;
        log.publish_tree_head(&signer).unwrap();
        drop(log);
        let report = verify_dir(dir.path(), Some(&signer.verifying_key())).unwrap();
        assert_eq!(report.tree_heads, 2);
    }

    /// Writes a log of 6 entries with heads at 2, 4 and 6; returns the key.
    async fn log_with_heads(dir: &Path) -> Ed25519Signer {
        let signer = signer(&dir.join("keys"));
        let log = AuditLog::open(dir).unwrap();
        for _ in 0..3 {
            append(&log, 2).await;
            log.publish_tree_head(&signer).unwrap();
        }
        signer
    }

    fn rewrite_heads(dir: &Path, edit: impl Fn(usize, TreeHead) -> Option<TreeHead>) {
        let text: String = head_lines(dir)
            .into_iter()
            .enumerate()
            .filter_map(|(i, l)| edit(i, serde_json::from_str(&l).unwrap()))
            .map(|h| serde_json::to_string(&h).unwrap() + "\n")
            .collect();
        fs::write(dir.join(TREE_HEADS_FILE), text).unwrap();
    }

    fn assert_corrupt_line(err: AuditError, want_line: u64, needle: &str) {
        let msg = err.to_string();
        assert!(
            matches!(&err, AuditError::Corrupt { line, .. } if *line == want_line),
            "{msg}"
        );
        assert!(
            msg.contains(TREE_HEADS_FILE) && msg.contains(needle),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn altered_heads_fail_verification_naming_the_line() {
        type Edit = fn(usize, TreeHead) -> Option<TreeHead>;
        let cases: Vec<(&str, Edit, u64, &str, bool)> = vec![
            (
                "root",
                |i, mut h| {
                    if i == 1 {
                        h.root = "00".repeat(32);
                    }
                    Some(h)
                },
                2,
                "differs from the recomputed root",
                true,
            ),
            (
                "size beyond log",
                |i, mut h| {
                    if i == 2 {
                        h.size = 7;
                    }
                    Some(h)
                },
                3,
                "exceeds the 6 entries",
                true,
            ),
            (
                "order",
                |i, h| if i == 0 { None } else { Some(h) },
                0,
                "",
                false,
            ),
            (
                "time",
                |i, mut h| {
                    if i == 0 {
                        h.time = "2020-01-01T00:00:00Z".into();
                    }
                    Some(h)
                },
                1,
                "signature does not verify",
                false,
            ),
        ];
        for (name, edit, line, needle, fails_without_key) in cases {
            let dir = tempfile::tempdir().unwrap();
            let signer = log_with_heads(dir.path()).await;
            verify_dir(dir.path(), Some(&signer.verifying_key())).unwrap();
            rewrite_heads(dir.path(), edit);
            let with_key = verify_dir(dir.path(), Some(&signer.verifying_key()));
            if line == 0 {
                assert!(with_key.is_ok(), "{name}: dropping a head is allowed");
                continue;
            }
            assert_corrupt_line(with_key.unwrap_err(), line, needle);
            let without_key = verify_dir(dir.path(), None);
            assert_eq!(without_key.is_err(), fails_without_key, "{name}");
            assert_eq!(
                AuditLog::open(dir.path()).is_err(),
                fails_without_key,
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn shrinking_heads_fail_verification() {
        let dir = tempfile::tempdir().unwrap();
        let signer = log_with_heads(dir.path()).await;
        let mut lines = head_lines(dir.path());
        lines.swap(1, 2);
        fs::write(dir.path().join(TREE_HEADS_FILE), lines.join("\n") + "\n").unwrap();
        let err = verify_dir(dir.path(), Some(&signer.verifying_key())).unwrap_err();
        assert_corrupt_line(err, 3, "smaller than the size 6 of the head on line 2");
        assert!(AuditLog::open(dir.path()).is_err());
    }

    #[tokio::test]
    async fn edited_entry_under_a_head_fails_even_if_the_leaf_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let signer = log_with_heads(dir.path()).await;
        // Rewrite entry 1 and its leaf hash consistently: the lines verify, the heads do not.
        let path = dir.path().join(SEGMENT_FILE);
        let text = fs::read_to_string(&path).unwrap();
        let mut out = String::new();
        for (i, line) in text.lines().enumerate() {
            if i == 1 {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let mut entry: AuditEntry = serde_json::from_value(v["entry"].clone()).unwrap();
                entry.decision = "deny".into();
                let bytes = serde_json::to_vec(&entry).unwrap();
                let leaf = hex::encode(merkle::leaf_hash(&bytes));
                out.push_str(&format!(
                    "{{\"index\":1,\"leaf\":\"{leaf}\",\"entry\":{}}}\n",
                    String::from_utf8(bytes).unwrap()
                ));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        fs::write(&path, out).unwrap();
        let err = verify_dir(dir.path(), Some(&signer.verifying_key())).unwrap_err();
        assert_corrupt_line(err, 1, "differs from the recomputed root");
        assert!(AuditLog::open(dir.path()).is_err());
    }

    #[tokio::test]
    async fn wrong_key_and_malformed_heads_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let signer = log_with_heads(dir.path()).await;
        let other_dir = tempfile::tempdir().unwrap();
        let other = self::signer(other_dir.path());
        let err = verify_dir(dir.path(), Some(&other.verifying_key())).unwrap_err();
        assert_corrupt_line(err, 1, "does not match the verifying key");

        let log = AuditLog::open(dir.path()).unwrap();
        let head = log.latest_tree_head().unwrap();
        let pk = signer.verifying_key();
        let invalid = |h: &TreeHead| {
            let err = verify_tree_head(&pk, h).unwrap_err();
            assert!(matches!(err, AuditError::InvalidTreeHead { .. }), "{err}");
            err.to_string()
        };
        let mut h = head.clone();
        h.alg = "rsa".into();
        assert!(invalid(&h).contains("\"rsa\" does not match the verifying key's"));
        let mut h = head.clone();
        h.alg = "sm2-sm3".into();
        assert!(invalid(&h).contains("does not match the verifying key's (\"ed25519\")"));
        let mut h = head.clone();
        h.signature = "not base64!".into();
        assert!(invalid(&h).contains("not base64"));
        let mut h = head.clone();
        h.size = 7;
        assert!(invalid(&h).contains("does not verify"));
        let mut h = head.clone();
        h.root = h.root.to_uppercase();
        assert!(invalid(&h).contains("lowercase hex"));
        let mut h = head.clone();
        h.time = "2025-08-01T08:00:00+08:00".into();
        assert!(invalid(&h).contains("UTC"));
        verify_tree_head(&pk, &head).unwrap();
    }

    #[tokio::test]
    async fn torn_head_line_is_ignored_and_cut_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let signer = log_with_heads(dir.path()).await;
        let path = dir.path().join(TREE_HEADS_FILE);
        let good = fs::read(&path).unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"size\":9,\"ro").unwrap();
        drop(f);
        let report = verify_dir(dir.path(), Some(&signer.verifying_key())).unwrap();
        assert_eq!(report.tree_heads, 3);
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), good);
        assert_eq!(log.latest_tree_head().unwrap().size, 6);
        append(&log, 1).await;
        log.publish_tree_head(&signer).unwrap();
        drop(log);
        assert_eq!(
            verify_dir(dir.path(), Some(&signer.verifying_key()))
                .unwrap()
                .tree_heads,
            4
        );
    }

    #[tokio::test]
    async fn publisher_task_publishes_periodically() {
        let dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let signer: Arc<dyn Signer> = Arc::new(signer(keys.path()));
        let log = Arc::new(AuditLog::open(dir.path()).unwrap());
        let task = spawn_tree_head_publisher(
            Arc::clone(&log),
            Arc::clone(&signer),
            Duration::from_millis(5),
        );
        append(&log, 4).await;
        for _ in 0..400 {
            if log.latest_tree_head().is_some_and(|h| h.size == 4) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        assert_eq!(log.latest_tree_head().map(|h| h.size), Some(4));
        let final_head = log.publish_tree_head(signer.as_ref()).unwrap();
        assert_eq!(final_head.size, 4);
        // Heads at whatever sizes the ticks saw, never shrinking, the last at 4.
        let report = verify_dir(dir.path(), Some(&signer.verifying_key())).unwrap();
        assert_eq!(report.tree_heads as usize, head_lines(dir.path()).len());
    }
}
