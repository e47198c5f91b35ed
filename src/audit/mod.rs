//! Append-only, tamper-evident audit log: RFC 6962 Merkle leaves in JSON-lines segments,
//! group-committed (one fsync per batch) so an entry is durable before its response leaves.
//!
//! Layout of the log directory:
//! - `log-000001.jsonl`: one line per entry, `{"index":N,"leaf":"<hex>","entry":{...}}`,
//!   where `leaf` = SHA-256(0x00 || entry bytes) and the entry bytes are exactly the
//!   `serde_json::to_vec(&entry)` written on the line (so verification hashes what is stored).
//!   While the writer has a segment open, zeros follow its last line: the writer fills up to
//!   [`ZERO_AHEAD_BYTES`] ahead with zeros, synced, so that a group commit overwrites blocks
//!   the file already has and its fsync writes data only, not the inode. No valid line holds
//!   a NUL byte, so readers stop at the first one; the writer cuts the zeros when it closes
//!   or leaves a segment, and on open.
//! - `next-segment.zeros`: the next segment, zero-filled to the segment size and synced off
//!   the writer's path once the current segment is half full, then linked in under the next
//!   segment's name (and its own name removed) when the writer moves on: no group commit of
//!   the new segment waits for zeros or for the file's blocks to be allocated. Not part of
//!   the log; removed on open and on close.
//! - `salts.jsonl`: one random salt per subject, `{"subject":"<hex sha256(key)>","salt":"<hex>"}`.
//!   Entries carry only `hex(SHA-256(salt || key))`; deleting a subject's salt line erases the
//!   link between the person and their entries without touching the tree.
//! - `tree-heads.jsonl`: signed tree heads ([`sth`]), one per line, sizes never shrinking.
//!
//! In memory the log keeps every level of the Merkle tree ([`merkle::MerkleTree`]), so roots
//! at any past size, inclusion proofs and consistency proofs cost O(log n) hashes.

pub mod merkle;
pub mod report;
pub mod sth;

pub use sth::{TREE_HEADS_FILE, TreeHead, spawn_tree_head_publisher, verify_tree_head};

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, mpsc};
use std::thread::JoinHandle;

use ring::digest::{Context, SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::journal::{self, Appender};

/// File name of the (for now single) log segment.
pub const SEGMENT_FILE: &str = "log-000001.jsonl";
/// Appends waiting for the writer at most; beyond, appends fail fast.
pub const MAX_QUEUED_APPENDS: usize = 65_536;
/// How large a segment grows before the writer starts the next one (64 MiB).
pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 64 << 20;
/// How far past its last line the writer keeps a segment filled with zeros (1 MiB, some
/// hundreds of group commits): a commit that reaches the end writes the next stretch of
/// zeros with its own data, under the same fsync.
pub const ZERO_AHEAD_BYTES: u64 = 1 << 20;
/// File name of the next segment while it is being zero-filled (not a segment yet).
pub const NEXT_SEGMENT_FILE: &str = "next-segment.zeros";
/// How much of the next segment is zero-filled between two syncs (16 MiB). A commit that
/// flushes while a step is written waits for it: larger steps delay fewer commits, a few of
/// them longer. `load_lookup`'s p99 was 0.75–0.83 ms with 16 MiB steps, 1.2 ms with 1 MiB
/// steps and with zeros written by the commits; about 2 commits in 10 s took over 10 ms.
const ZERO_FILL_STEP_BYTES: u64 = 16 << 20;

/// The file name of segment `n` (from 1).
pub fn segment_name(n: u64) -> String {
    format!("log-{n:06}.jsonl")
}

/// The segment files of a log directory, in order. Numbering must run
/// without a gap from 1: a missing segment is damage, never skipped.
fn segments(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AuditError::Io {
                action: "list audit directory",
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut numbers: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("log-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()
        })
        .collect();
    numbers.sort_unstable();
    for (i, n) in numbers.iter().enumerate() {
        if *n != i as u64 + 1 {
            return Err(AuditError::Corrupt {
                path: dir.join(segment_name(i as u64 + 1)),
                line: 0,
                reason: "segment missing: the log's segments must run without a gap".into(),
            });
        }
    }
    Ok(numbers
        .into_iter()
        .map(|n| dir.join(segment_name(n)))
        .collect())
}
/// File name of the subject salt store.
pub const SALTS_FILE: &str = "salts.jsonl";

/// One audited request: who, what, why, the decision and what left the process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditEntry {
    /// RFC 3339 UTC time, set by the caller.
    pub time: String,
    /// Calling agency id.
    pub agency: String,
    /// Role the agency acted in.
    pub role: String,
    /// The officer who asked, from the verified officer token (before
    /// tokens: the case's officer, if the client named none).
    pub officer: Option<String>,
    /// The officer token the request carried, verified against the client
    /// certificate: with that certificate, evidence of which officer of
    /// which agency asked. Absent in entries written before tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub officer_token: Option<String>,
    /// Client certificate common name + ":" + SHA-256 fingerprint hex.
    pub certificate: String,
    /// HTTP method.
    pub method: String,
    /// Route template (never the raw path, which may hold identifiers).
    pub route: String,
    /// HTTP status sent.
    pub status: u16,
    /// Service item code (purpose).
    pub service_item: Option<String>,
    /// Case id the request was bound to.
    pub case_id: Option<String>,
    /// Dataset read.
    pub dataset: Option<String>,
    /// Version of the dataset read.
    pub dataset_version: Option<u64>,
    /// Fields released in clear.
    pub fields_clear: Vec<String>,
    /// Fields released masked.
    pub fields_masked: Vec<String>,
    /// Fields withheld by policy.
    pub fields_withheld: Vec<String>,
    /// Salted subject commitment from [`AuditLog::commit_subject`].
    pub subject_commitment: Option<String>,
    /// "allow" | "deny" | "error"; "steward" for a steward decision (`api::stewards`).
    pub decision: String,
    /// Stable error or denial code.
    pub code: Option<String>,
    /// Human-readable reason.
    pub reason: Option<String>,
    /// Policy rule that decided.
    pub rule: Option<String>,
    /// Hash of the policy set in force.
    pub policy_version: Option<String>,
    /// SHA-256 hex of the response body as canonical JSON (sorted keys),
    /// before its `audit_entry` number and `seal` were added: what a client
    /// recomputes from the response it received.
    pub response_sha256: Option<String>,
    /// Size of that canonical body.
    pub bytes_out: u64,
    /// Rows returned.
    pub rows_out: u64,
}

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file-system operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored line does not verify or does not parse.
    #[error("audit file {path} line {line} is damaged: {reason}")]
    Corrupt {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    /// Writing or syncing a batch failed; every caller in the batch gets this.
    #[error(
        "audit log write to {path} failed, appends refused until the log is reopened: {source}"
    )]
    WriteFailed {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// An earlier batch failed; the writer refuses everything after it (fail closed).
    #[error("audit log {path} failed earlier ({reason}); appends refused until it is reopened")]
    Poisoned { path: PathBuf, reason: String },
    /// Another process (or another `AuditLog`) has the directory open.
    #[error("audit directory {dir} is already open in another process or handle")]
    Locked { dir: PathBuf },
    /// More appends are waiting than the writer's queue holds.
    #[error("audit log overloaded: {MAX_QUEUED_APPENDS} appends already waiting")]
    Overloaded,
    /// The log was shut down or its writer stopped.
    #[error("audit log writer is stopped (shut down); appends are refused")]
    Closed,
    /// An entry could not be serialised.
    #[error("cannot encode audit entry: {0}")]
    Encode(#[source] serde_json::Error),
    /// The system random number generator failed.
    #[error("system random number generator failed while creating a subject salt")]
    Random,
    /// A proof or root was asked for outside the log (index ≥ size, size > entries, ...).
    #[error("cannot answer audit proof request: {0}")]
    ProofRequest(#[source] merkle::ProofError),
    /// A signed tree head does not verify.
    #[error("tree head at size {size} is invalid: {reason}")]
    InvalidTreeHead { size: u64, reason: String },
}

/// Where audit entries go. Resolves only once the entry is durable.
pub trait AuditSink: Send + Sync + 'static {
    /// Append; resolves to the entry's index only once the entry is durable (fsync'd).
    fn append(
        &self,
        entry: AuditEntry,
    ) -> Pin<Box<dyn Future<Output = Result<u64, AuditError>> + Send + '_>>;
}

/// Query filter; every set field must match exactly.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Calling agency.
    pub agency: Option<String>,
    /// Subject commitment (from [`AuditLog::lookup_commitment`]).
    pub subject_commitment: Option<String>,
    /// Case id.
    pub case_id: Option<String>,
    /// "allow" | "deny" | "error" | "steward".
    pub decision: Option<String>,
    /// Officer named in the entry.
    pub officer: Option<String>,
    /// Service item (purpose) of the request.
    pub service_item: Option<String>,
    /// Entries at or after this RFC 3339 time (or date prefix, `2026-11-27`).
    pub since: Option<String>,
    /// Entries before this RFC 3339 time (or date prefix).
    pub until: Option<String>,
    /// At most this many results, oldest first.
    pub limit: Option<usize>,
}

/// A `since` / `until` bound as entries store times: RFC 3339 with any
/// offset becomes UTC (`2026-11-27T08:00:00+08:00` → `2026-11-27T00:00:00.000000Z`);
/// a bare date (`2026-11-27`, a UTC day) is kept. Anything else is an error.
pub fn time_bound(raw: &str) -> Result<String, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string());
    }
    if chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").is_ok() {
        return Ok(raw.to_string());
    }
    Err(format!(
        "`{raw}` is neither an RFC 3339 time nor a date like 2026-11-27"
    ))
}

/// Result of [`verify_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of complete, verified entries.
    pub entries: u64,
    /// Hex RFC 6962 root over them.
    pub root_hex: String,
    /// Bytes of an unterminated last line (a write in progress or torn by a crash), not counted.
    pub torn_tail_bytes: u64,
    /// Number of tree heads checked (size, root, consistency with the previous head, and
    /// signature when a key was given).
    pub tree_heads: u64,
}

/// Every level of the tree, plus the root over all of it (refreshed once per batch).
struct Tree {
    merkle: merkle::MerkleTree,
    root: [u8; 32],
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            merkle: merkle::MerkleTree::new(),
            root: merkle::empty_root(),
        }
    }
}

impl Tree {
    /// Recomputes the cached root after leaves were pushed to `merkle` directly.
    fn refresh_root(&mut self) {
        self.root = self.merkle.root();
    }
}

/// One entry on its way to the writer, already serialised and hashed by
/// the caller, so that the single writer thread only writes and syncs.
struct Job {
    /// The stored line after its index: `,"leaf":"…","entry":{…}}` and newline.
    tail: Vec<u8>,
    leaf: [u8; 32],
    /// SHA-256 of the canonical response, when the response is to be sealed with its batch.
    seal: Option<[u8; 32]>,
    done: oneshot::Sender<Result<Appended, AuditError>>,
}

/// A durable append: the entry's index and, when asked for with
/// [`AuditLog::append_sealed`], the response's place in its signed batch.
#[derive(Debug)]
pub struct Appended {
    /// Index of the entry in the log.
    pub index: u64,
    /// The batch seal of the response; `None` when none was asked for or the log has no
    /// batch signer.
    pub seal: Option<crate::seal::batch::BatchSeal>,
}

/// The file-backed audit log; implements [`AuditSink`].
pub struct AuditLog {
    dir: PathBuf,
    // std Mutex: held only for in-memory pushes and reads, never across an `.await`.
    tree: Arc<Mutex<Tree>>,
    // RwLock: every append only reads it (senders are shared); shutdown takes it.
    sender: RwLock<Option<mpsc::SyncSender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    // std Mutex: held across a small append + fsync on a subject's first use, never an `.await`.
    salts: Mutex<SaltStore>,
    // std Mutex: held across signing and appending a tree head (fsync), never an `.await`.
    heads: Mutex<sth::HeadStore>,
    /// Holds an exclusive lock on `<dir>/LOCK` so only one process writes the log.
    _lock_file: File,
    stats: Arc<AuditStats>,
}

/// Upper bounds of the batch-size histogram buckets (entries per fsync).
pub const BATCH_SIZE_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
/// Upper bounds of the commit-time and segment-start histogram buckets, in microseconds.
pub const COMMIT_MICROS_BUCKETS: [u64; 10] = [
    50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 1_000_000,
];

/// Counters the writer keeps for monitoring, read without locks.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Entries made durable.
    pub appends: std::sync::atomic::AtomicU64,
    /// Group commits (one write + fsync each).
    pub batches: std::sync::atomic::AtomicU64,
    /// Batches of at most `BATCH_SIZE_BUCKETS[i]` entries (not cumulative);
    /// the last slot counts larger ones.
    pub batch_size_counts: [std::sync::atomic::AtomicU64; BATCH_SIZE_BUCKETS.len() + 1],
    /// Durable batches by the time their commit took, from the write to the durable end.
    pub commit_time: MicrosHistogram,
    /// Segment starts by the time the writer spent on them (cutting the old segment's
    /// zeros, waiting for the zero-filled next one, syncing the directory): appends queue
    /// meanwhile.
    pub segment_start_time: MicrosHistogram,
    /// Segments started from a file zero-filled ahead of time ([`NEXT_SEGMENT_FILE`]).
    pub segments_prepared: std::sync::atomic::AtomicU64,
    /// Segments started from an empty file, their zeros written by group commits: the zero
    /// fill failed, or had not been started.
    pub segments_unprepared: std::sync::atomic::AtomicU64,
    /// Set once a write failed: the log refuses appends until reopened.
    pub failed: std::sync::atomic::AtomicBool,
}

impl AuditStats {
    fn record_batch(&self, n: usize, commit: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.appends.fetch_add(n as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        self.batch_size_counts[bucket(&BATCH_SIZE_BUCKETS, n as u64)].fetch_add(1, Relaxed);
        self.commit_time.record(commit);
    }
}

/// Durations counted by [`COMMIT_MICROS_BUCKETS`], read without locks.
#[derive(Debug, Default)]
pub struct MicrosHistogram {
    /// Durations of at most `COMMIT_MICROS_BUCKETS[i]` µs (not cumulative); the last slot
    /// counts longer ones.
    pub counts: [std::sync::atomic::AtomicU64; COMMIT_MICROS_BUCKETS.len() + 1],
    /// Microseconds of all of them together.
    pub sum_micros: std::sync::atomic::AtomicU64,
}

impl MicrosHistogram {
    fn record(&self, took: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(&COMMIT_MICROS_BUCKETS, micros)].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        let counts = self.counts.iter();
        counts
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

/// The histogram slot of `value`: the first bound it does not exceed, or one past the last.
fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds
        .iter()
        .position(|&b| value <= b)
        .unwrap_or(bounds.len())
}

impl AuditLog {
    /// Opens (creating if needed) the log in `dir`, replays and verifies every line,
    /// truncates a torn last line, and starts the writer thread.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(dir, DEFAULT_SEGMENT_MAX_BYTES)
    }

    /// [`AuditLog::open`] with the size at which the writer starts a new
    /// segment file.
    pub fn open_with(dir: &Path, segment_max_bytes: u64) -> Result<AuditLog, AuditError> {
        AuditLog::open_sealing(dir, segment_max_bytes, None)
    }

    /// [`AuditLog::open_with`], and with `batch_signer` the writer signs each group commit
    /// that holds responses appended by [`AuditLog::append_sealed`] once, over a Merkle tree
    /// of them ([`crate::seal::batch`]).
    pub fn open_sealing(
        dir: &Path,
        segment_max_bytes: u64,
        batch_signer: Option<Arc<dyn crate::seal::Signer>>,
    ) -> Result<AuditLog, AuditError> {
        fs::create_dir_all(dir).map_err(|source| AuditError::Io {
            action: "create audit directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let lock_file = take_dir_lock(dir)?;
        remove_next_segment(dir)?;
        let mut tree = Tree::default();
        let replayed = replay_dir(dir, u64::MAX, |_, leaf, _| {
            tree.merkle.push(leaf);
            true
        })?;
        tree.refresh_root();
        let segment = segments(dir)?.len().max(1) as u64;
        let log_path = dir.join(segment_name(segment));
        let existed = log_path.exists();
        if let Some((path, r)) = &replayed.last {
            let len = fs::metadata(path)
                .map_err(|source| AuditError::Io {
                    action: "stat audit log",
                    path: path.clone(),
                    source,
                })?
                .len();
            if r.torn_tail_bytes > 0 {
                tracing::warn!(
                    path = %path.display(),
                    torn_bytes = r.torn_tail_bytes,
                    kept_entries = replayed.entries,
                    "truncating torn last line of audit log"
                );
            } else if len > r.good_len {
                // The zeros a writer that did not close (killed, power cut) kept ahead, and
                // whatever of a never-acknowledged batch lies after them.
                tracing::info!(path = %path.display(), bytes = len - r.good_len, "cutting the zero-filled tail of the audit log");
            }
            if len > r.good_len {
                truncate(path, r.good_len)?;
            }
        }
        // Written at offsets (after the last line), not appended.
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&log_path)
            .map_err(|source| AuditError::Io {
                action: "open audit log",
                path: log_path.clone(),
                source,
            })?;
        if !existed {
            sync_dir(dir)?;
        }
        let salts = SaltStore::open(&dir.join(SALTS_FILE))?;
        let heads = sth::HeadStore::open(&dir.join(TREE_HEADS_FILE), &tree.merkle)?;
        let file_len = file
            .metadata()
            .map_err(|source| AuditError::Io {
                action: "stat audit log",
                path: log_path.clone(),
                source,
            })?
            .len();

        let next_index = tree.merkle.size();
        let frontier = tree.merkle.frontier();
        let tree = Arc::new(Mutex::new(tree));
        let (tx, rx) = mpsc::sync_channel::<Job>(MAX_QUEUED_APPENDS);
        let stats = Arc::new(AuditStats::default());
        let writer = Writer {
            file,
            file_len,
            zeroed_end: file_len,
            path: log_path.clone(),
            dir: dir.to_path_buf(),
            segment,
            segment_max_bytes: segment_max_bytes.max(1),
            next_index,
            tree: Arc::clone(&tree),
            frontier,
            failed: None,
            stats: Arc::clone(&stats),
            batch_signer,
            next: None,
            next_started: false,
        };
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| AuditError::Io {
                action: "start writer thread for",
                path: log_path.clone(),
                source,
            })?;
        Ok(AuditLog {
            dir: dir.to_path_buf(),
            tree,
            sender: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            salts: Mutex::new(salts),
            heads: Mutex::new(heads),
            _lock_file: lock_file,
            stats,
        })
    }

    /// Append and group-commit counters, for metrics.
    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }

    /// Whether appends are being accepted: the writer runs and no write has
    /// failed (a failed log refuses every append until it is reopened).
    pub fn accepting(&self) -> bool {
        !self.stats.failed.load(std::sync::atomic::Ordering::Relaxed)
            && self
                .sender
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
    }

    /// Salted commitment `hex(SHA-256(salt || key))` for a subject, creating (and fsyncing)
    /// the subject's salt on first use. Blocks on that first-use fsync.
    pub fn commit_subject(&self, subject_key: &str) -> Result<String, AuditError> {
        let id = subject_id(subject_key);
        let salt = {
            let mut salts = lock(&self.salts);
            match salts.salts.get(&id) {
                Some(salt) => *salt,
                None => salts.create(id)?,
            }
        };
        Ok(commitment(&salt, subject_key))
    }

    /// Commitment for a subject if a salt exists; never creates one (for queries).
    pub fn lookup_commitment(&self, subject_key: &str) -> Option<String> {
        // Hash outside the lock: only the map lookup is serialised.
        let id = subject_id(subject_key);
        let salt = *lock(&self.salts).salts.get(&id)?;
        Some(commitment(&salt, subject_key))
    }

    /// Erases a subject's salt (rewriting the salt file atomically), so their entries can no
    /// longer be linked to them. Returns whether a salt existed.
    pub fn erase_subject(&self, subject_key: &str) -> Result<bool, AuditError> {
        lock(&self.salts).erase(&subject_id(subject_key))
    }

    /// Entries matching `filter`, oldest first, among those durable when the call began.
    /// Scans the segment file.
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<(u64, AuditEntry)>, AuditError> {
        let size = self.size();
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if limit == 0 || size == 0 {
            return Ok(out);
        }
        replay_dir(&self.dir, size, |index, _, entry| {
            if matches(filter, &entry) {
                out.push((index, entry));
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Number of durable entries.
    pub fn size(&self) -> u64 {
        lock(&self.tree).merkle.size()
    }

    /// RFC 6962 root over all durable entries (cached; no hashing).
    pub fn root(&self) -> [u8; 32] {
        lock(&self.tree).root
    }

    /// Leaf hash of a durable entry, if it exists.
    pub fn leaf(&self, index: u64) -> Option<[u8; 32]> {
        lock(&self.tree).merkle.leaf(index)
    }

    /// RFC 6962 root over the first `size` durable entries; O(log n) hashes.
    pub fn root_at(&self, size: u64) -> Result<[u8; 32], AuditError> {
        lock(&self.tree)
            .merkle
            .root_at(size)
            .map_err(AuditError::ProofRequest)
    }

    /// Inclusion proof (RFC 9162 audit path) of entry `index` in the tree of the first `size`
    /// entries; check it with [`merkle::verify_inclusion`] against [`AuditLog::root_at`].
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<[u8; 32]>, AuditError> {
        lock(&self.tree)
            .merkle
            .inclusion_proof(index, size)
            .map_err(AuditError::ProofRequest)
    }

    /// Consistency proof (RFC 9162) that the tree of the first `old` entries is a prefix of the
    /// tree of the first `new`; check it with [`merkle::verify_consistency`]. `old` must be at
    /// least 1 and at most `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<[u8; 32]>, AuditError> {
        lock(&self.tree)
            .merkle
            .consistency_proof(old, new)
            .map_err(AuditError::ProofRequest)
    }

    /// Flushes queued entries and stops the writer; later appends fail with [`AuditError::Closed`].
    /// Blocks until the writer has finished.
    pub fn shutdown(&self) {
        drop(
            self.sender
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        if let Some(handle) = lock(&self.writer).take()
            && handle.join().is_err()
        {
            tracing::error!(dir = %self.dir.display(), "audit writer thread panicked");
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl AuditSink for AuditLog {
    fn append(
        &self,
        entry: AuditEntry,
    ) -> Pin<Box<dyn Future<Output = Result<u64, AuditError>> + Send + '_>> {
        let appended = self.enqueue(entry, None);
        Box::pin(async move { appended.await.map(|a| a.index) })
    }
}

impl AuditLog {
    /// Appends the entry of a response to be sealed with its batch: `response_sha256` is the
    /// SHA-256 of the canonical response without its seal and entry number (the entry's
    /// `response_sha256`). Resolves once durable, with the batch seal when the log was opened
    /// with a batch signer.
    pub fn append_sealed(
        &self,
        entry: AuditEntry,
        response_sha256: [u8; 32],
    ) -> impl Future<Output = Result<Appended, AuditError>> + Send + 'static {
        self.enqueue(entry, Some(response_sha256))
    }

    fn enqueue(
        &self,
        entry: AuditEntry,
        seal: Option<[u8; 32]>,
    ) -> impl Future<Output = Result<Appended, AuditError>> + Send + 'static {
        let (done, rx) = oneshot::channel();
        // Serialise and hash here, on the caller's thread: the CPU work of a
        // batch is spread over the callers instead of queued on the writer.
        let queued = match line_tail(&entry) {
            Ok((tail, leaf)) => {
                // Enqueue now, not on first poll, so indices follow call order.
                // A full queue sheds load (the caller answers 503) instead of
                // growing without bound or blocking an async worker.
                match self
                    .sender
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                {
                    Some(sender) => match sender.try_send(Job {
                        tail,
                        leaf,
                        seal,
                        done,
                    }) {
                        Ok(()) => Ok(()),
                        Err(mpsc::TrySendError::Full(_)) => Err(AuditError::Overloaded),
                        Err(mpsc::TrySendError::Disconnected(_)) => Err(AuditError::Closed),
                    },
                    None => Err(AuditError::Closed),
                }
            }
            Err(err) => Err(AuditError::Encode(err)),
        };
        async move {
            queued?;
            rx.await.unwrap_or(Err(AuditError::Closed))
        }
    }
}

/// Read the entries of a log directory (or a copy of one) matching
/// `filter`, without opening it for writing: works beside a running broker.
/// Every line is verified against its leaf hash on the way.
pub fn scan_dir(dir: &Path, filter: &AuditFilter) -> Result<Vec<(u64, AuditEntry)>, AuditError> {
    let limit = filter.limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    replay_dir(dir, u64::MAX, |index, _, entry| {
        if matches(filter, &entry) {
            out.push((index, entry));
        }
        out.len() < limit
    })?;
    Ok(out)
}

/// The commitment of a subject in a log directory, read from its salts
/// without opening the log; `None` if no entry ever named the subject.
pub fn commitment_in_dir(dir: &Path, subject_key: &str) -> Result<Option<String>, AuditError> {
    let path = dir.join(SALTS_FILE);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuditError::Io {
                action: "read salt store",
                path,
                source,
            });
        }
    };
    let want = subject_id(subject_key);
    for (line_no, line) in journal::complete_lines(&text) {
        let (id, salt) = parse_salt_line(line).map_err(|reason| AuditError::Corrupt {
            path: path.clone(),
            line: line_no as u64,
            reason,
        })?;
        if id == want {
            return Ok(Some(commitment(&salt, subject_key)));
        }
    }
    Ok(None)
}

/// Re-reads a log directory (or a copy of one): verifies every line's index and leaf hash and
/// recomputes the root; then checks every tree head in `tree-heads.jsonl` (size within the log,
/// root equal to the recomputed root at that size, sizes never shrinking, a consistency proof
/// from the rebuilt tree verifying between successive heads) and, when `public_key` is given,
/// each head's signature. An unterminated last line of either file is ignored. Never modifies
/// anything; safe on a live log (heads are read before entries, and a head only ever covers
/// entries that were already durable).
pub fn verify_dir(
    dir: &Path,
    public_key: Option<&crate::seal::PublicKey>,
) -> Result<VerifyReport, AuditError> {
    let heads_path = dir.join(TREE_HEADS_FILE);
    let heads = sth::read_heads(&heads_path)?;
    let mut tree = merkle::MerkleTree::new();
    let replayed = replay_dir(dir, u64::MAX, |_, leaf, _| {
        tree.push(leaf);
        true
    })?;
    sth::check_heads(&heads_path, &heads.heads, &tree, public_key)?;
    Ok(VerifyReport {
        entries: replayed.entries,
        root_hex: hex::encode(tree.root()),
        torn_tail_bytes: replayed.last.map_or(0, |(_, r)| r.torn_tail_bytes),
        tree_heads: heads.heads.len() as u64,
    })
}

/// The single thread that writes and syncs the current segment, and starts
/// the next one when it is full.
struct Writer {
    file: File,
    /// End of the last complete line: where the next batch goes.
    file_len: u64,
    /// End of the file: `file_len` and the zeros kept ahead of it.
    zeroed_end: u64,
    path: PathBuf,
    dir: PathBuf,
    segment: u64,
    segment_max_bytes: u64,
    next_index: u64,
    tree: Arc<Mutex<Tree>>,
    /// The right edge of `tree`, which the writer alone extends: the head after a batch is
    /// known (and signed) before the batch is durable and the tree is extended.
    frontier: merkle::Frontier,
    failed: Option<String>,
    stats: Arc<AuditStats>,
    /// Signs each batch holding sealed responses once ([`crate::seal::batch`]).
    batch_signer: Option<Arc<dyn crate::seal::Signer>>,
    /// The next segment being zero-filled, from when the current one is half full.
    next: Option<NextSegment>,
    /// Whether the zero fill of the next segment was started (or failed to start) for the
    /// current segment: once per segment.
    next_started: bool,
}

/// The next segment, zero-filled and synced by a thread of its own ([`NEXT_SEGMENT_FILE`]).
struct NextSegment {
    path: PathBuf,
    /// Asks the thread to stop early (the log is closing).
    cancel: Arc<std::sync::atomic::AtomicBool>,
    /// The file, synced with its zeros, and its length.
    handle: JoinHandle<std::io::Result<(File, u64)>>,
}

impl NextSegment {
    /// Starts zero-filling `path` to `len` bytes.
    fn start(path: PathBuf, len: u64) -> std::io::Result<NextSegment> {
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handle = std::thread::Builder::new()
            .name("audit-next-segment".into())
            .spawn({
                let (path, cancel) = (path.clone(), Arc::clone(&cancel));
                move || {
                    // Never an existing file: a name left behind may still be a segment's.
                    let file = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)?;
                    // In steps, each synced: the writeback shares the device with the group
                    // commits a step at a time.
                    let mut at = 0;
                    while at < len {
                        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::Interrupted,
                                "the audit log is closing",
                            ));
                        }
                        let to = (at + ZERO_FILL_STEP_BYTES).min(len);
                        write_zeros(&file, at, to)?;
                        file.sync_data()?;
                        at = to;
                    }
                    file.sync_all()?;
                    Ok((file, len))
                }
            })?;
        Ok(NextSegment {
            path,
            cancel,
            handle,
        })
    }

    /// The zero-filled file, waiting for the thread to finish it.
    fn finish(self) -> std::io::Result<(File, u64)> {
        self.handle
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the thread zero-filling it panicked")))
    }

    /// Stops the thread and removes its file.
    fn abandon(self) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let path = self.path.clone();
        let _ = self.finish();
        let _ = fs::remove_file(path);
    }
}

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Removes a [`NEXT_SEGMENT_FILE`] left by a writer that did not close.
fn remove_next_segment(dir: &Path) -> Result<(), AuditError> {
    let path = dir.join(NEXT_SEGMENT_FILE);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AuditError::Io {
            action: "remove the unfinished next segment",
            path,
            source: e,
        }),
        _ => Ok(()),
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        // Blocks for the first job of a batch, then takes every job already queued.
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            self.write_batch(batch, &mut buf);
            if self.failed.is_none() && self.file_len >= self.segment_max_bytes {
                self.next_segment();
            } else if self.failed.is_none()
                && !self.next_started
                && self.file_len >= self.segment_max_bytes / 2
            {
                self.prepare_next_segment();
            }
        }
        if let Some(next) = self.next.take() {
            next.abandon();
        }
        if self.failed.is_none()
            && let Err(err) = self.file.sync_data().and_then(|()| self.cut_zeros())
        {
            tracing::error!(path = %self.path.display(), %err, "final audit log sync failed");
        }
    }

    /// Starts zero-filling the next segment; without it, the next segment starts empty.
    fn prepare_next_segment(&mut self) {
        self.next_started = true;
        let path = self.dir.join(NEXT_SEGMENT_FILE);
        match NextSegment::start(path, self.segment_max_bytes) {
            Ok(next) => self.next = Some(next),
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), %err, "cannot start zero-filling the next audit segment; it will start empty");
            }
        }
    }

    /// Write the segment's batch `buf` after its last line, and zeros ahead of it when it
    /// reaches the zeros' end (see [`ZERO_AHEAD_BYTES`]); not yet synced.
    fn write_at_end(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = self.file_len + buf.len() as u64;
        self.file.write_all_at(buf, self.file_len)?;
        if end >= self.zeroed_end {
            // Zeros past the segment's size would only be cut at rotation.
            let target = (end + ZERO_AHEAD_BYTES).min(self.segment_max_bytes);
            write_zeros(&self.file, end, target)?;
            self.zeroed_end = target.max(end);
        }
        Ok(())
    }

    /// Cut the zeros after the last line, durably: a closed segment ends on its last line.
    fn cut_zeros(&mut self) -> std::io::Result<()> {
        if self.zeroed_end > self.file_len {
            self.file.set_len(self.file_len)?;
            self.file.sync_all()?;
            self.zeroed_end = self.file_len;
        }
        Ok(())
    }

    /// Start the next segment file. Batches never span segments, so every
    /// segment but the last ends on a complete line. A failure refuses all
    /// further appends, as a failed write does.
    fn next_segment(&mut self) {
        let began = std::time::Instant::now();
        let next = self.dir.join(segment_name(self.segment + 1));
        // Only the last segment may end in zeros: cut them before starting the next.
        let opened = self
            .cut_zeros()
            .and_then(|()| match self.take_prepared(&next) {
                Some(prepared) => Ok(prepared),
                None => OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&next)
                    .map(|f| (f, 0)),
            })
            .and_then(|f| File::open(&self.dir).and_then(|d| d.sync_all()).map(|()| f));
        match opened {
            Ok((file, zeroed)) => {
                self.file = file;
                self.path = next;
                self.file_len = 0;
                self.zeroed_end = zeroed;
                self.segment += 1;
                self.next_started = false;
                self.stats.segment_start_time.record(began.elapsed());
                let started = match zeroed {
                    0 => &self.stats.segments_unprepared,
                    _ => &self.stats.segments_prepared,
                };
                started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(err) => {
                tracing::error!(path = %next.display(), %err, "cannot start the next audit segment; refusing further appends");
                self.failed = Some(format!("cannot start segment {}: {err}", next.display()));
                self.stats
                    .failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// The zero-filled next segment, linked in as `path` (not yet synced in the directory),
    /// with its length; `None` when there is none, having logged why.
    fn take_prepared(&mut self, path: &Path) -> Option<(File, u64)> {
        let next = self.next.take()?;
        let temp = next.path.clone();
        // Started half a segment ago: finished, or nearly (the wait is in the segment start
        // time the stats keep).
        let linked = next
            .finish()
            .and_then(|prepared| fs::hard_link(&temp, path).map(|()| prepared));
        match linked {
            Ok(prepared) => {
                if let Err(err) = fs::remove_file(&temp) {
                    // Harmless: the next zero fill refuses an existing name (and starts the
                    // segment after empty, removing the name), as does the next open.
                    tracing::warn!(path = %temp.display(), %err, "cannot remove the zero-filled segment's temporary name");
                }
                Some(prepared)
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "the zero-filled next audit segment failed; starting it empty");
                let _ = fs::remove_file(&temp);
                None
            }
        }
    }

    fn write_batch(&mut self, batch: Vec<Job>, buf: &mut Vec<u8>) {
        if let Some(reason) = &self.failed {
            for job in batch {
                let _ = job.done.send(Err(AuditError::Poisoned {
                    path: self.path.clone(),
                    reason: reason.clone(),
                }));
            }
            return;
        }
        let started = std::time::Instant::now();
        buf.clear();
        let mut pending: Vec<Pending> = Vec::with_capacity(batch.len());
        let mut index = self.next_index;
        for job in batch {
            buf.extend_from_slice(b"{\"index\":");
            // Writing a number into a Vec cannot fail.
            let _ = write!(buf, "{index}");
            buf.extend_from_slice(&job.tail);
            pending.push((job.done, index, job.leaf, job.seal));
            index += 1;
        }
        if pending.is_empty() {
            return;
        }
        let written = self.write_at_end(buf);
        let mut frontier = self.frontier.clone();
        for (_, _, leaf, _) in &pending {
            frontier.push(*leaf);
        }
        let (log_size, log_root) = (frontier.size(), frontier.root());
        // The batch is signed while the device writes it: the write is started first, and
        // fdatasync then waits for it and the cache flush. The signature is released only
        // with the durable batch; a batch that fails is never answered.
        let batch = match &written {
            Ok(()) => {
                start_writeback(&self.file, self.file_len);
                self.sign_batch(&pending, log_size, &log_root)
            }
            Err(_) => None,
        };
        match written.and_then(|()| self.file.sync_data()) {
            Ok(()) => {
                self.file_len += buf.len() as u64;
                self.next_index = index;
                {
                    let mut tree = lock(&self.tree);
                    for (_, _, leaf, _) in &pending {
                        tree.merkle.push(*leaf);
                    }
                    debug_assert_eq!(tree.merkle.root(), log_root);
                    tree.root = log_root;
                }
                self.frontier = frontier;
                self.stats.record_batch(pending.len(), started.elapsed());
                let mut leaf_index = 0;
                for (done, index, _, seal) in pending {
                    let seal = match (&batch, seal) {
                        (Some(batch), Some(_)) => {
                            leaf_index += 1;
                            Some(crate::seal::batch::BatchSeal {
                                batch: Arc::clone(batch),
                                leaf_index: leaf_index - 1,
                            })
                        }
                        _ => None,
                    };
                    let _ = done.send(Ok(Appended { index, seal }));
                }
            }
            Err(err) => {
                tracing::error!(
                    path = %self.path.display(),
                    %err,
                    batch = pending.len(),
                    "audit log write failed; refusing all further appends"
                );
                // Best effort: drop a partial batch (and the zeros) so the file ends on a
                // line boundary.
                let _ = self.file.set_len(self.file_len);
                self.zeroed_end = self.file_len;
                let source = Arc::new(err);
                self.failed = Some(source.to_string());
                self.stats
                    .failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                for (done, _, _, _) in pending {
                    let _ = done.send(Err(AuditError::WriteFailed {
                        path: self.path.clone(),
                        source: Arc::clone(&source),
                    }));
                }
            }
        }
    }
}

/// Starts writing the file's dirty pages from `from` to the device without waiting
/// (`sync_file_range`), so that work done before the `fdatasync` that follows overlaps the
/// write. Only a head start: errors are left to that `fdatasync`, which reports them.
fn start_writeback(file: &File, from: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on an open descriptor; it reads no memory of ours.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                i64::try_from(from).unwrap_or(i64::MAX),
                0, // to the end of the file
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from);
}

/// A job of a batch being written: reply channel, index, leaf, response hash to seal.
type Pending = (
    oneshot::Sender<Result<Appended, AuditError>>,
    u64,
    [u8; 32],
    Option<[u8; 32]>,
);

impl Writer {
    /// One signature over the sealed responses of a batch and the log's head after it, made
    /// while the batch is written and handed out only once it is durable; `None` when the
    /// batch holds none or the log has no batch signer.
    fn sign_batch(
        &self,
        pending: &[Pending],
        log_size: u64,
        log_root: &[u8; 32],
    ) -> Option<Arc<crate::seal::batch::SignedBatch>> {
        let signer = self.batch_signer.as_deref()?;
        let mut leaves = pending
            .iter()
            .filter_map(|(_, index, _, seal)| {
                seal.map(|sha| crate::seal::batch::leaf(*index, &sha))
            })
            .peekable();
        leaves.peek()?;
        Some(Arc::new(crate::seal::batch::SignedBatch::sign(
            leaves, log_size, log_root, signer,
        )))
    }
}

/// Everything of a stored line after `{"index":N`, built by the caller:
/// `,"leaf":"<hex>","entry":<entry>}` and a newline, with the leaf hash of the
/// entry's bytes. The entry is serialised in place, its leaf's hex filled in
/// after.
fn line_tail(entry: &AuditEntry) -> Result<(Vec<u8>, [u8; 32]), serde_json::Error> {
    const LEAF_AT: usize = b",\"leaf\":\"".len();
    let mut tail = Vec::with_capacity(2048);
    tail.extend_from_slice(b",\"leaf\":\"");
    tail.extend_from_slice(&[b'0'; 64]);
    tail.extend_from_slice(b"\",\"entry\":");
    let entry_at = tail.len();
    serde_json::to_writer(&mut tail, entry)?;
    let leaf = merkle::leaf_hash(&tail[entry_at..]);
    hex::encode_to_slice(leaf, &mut tail[LEAF_AT..LEAF_AT + 64])
        .expect("64 hex digits for 32 bytes");
    tail.extend_from_slice(b"}\n");
    Ok((tail, leaf))
}

/// Splits one stored line (without its newline) into index, stored leaf and entry bytes.
fn split_line(line: &[u8]) -> Result<(u64, [u8; 32], &[u8]), String> {
    let rest = line
        .strip_prefix(b"{\"index\":")
        .ok_or("line does not start with {\"index\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let index = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or("index is not a number")?;
    let rest = rest[digits..]
        .strip_prefix(b",\"leaf\":\"")
        .ok_or("missing \"leaf\" after index")?;
    if rest.len() < 64 {
        return Err("leaf hash is truncated".into());
    }
    let mut leaf = [0u8; 32];
    hex::decode_to_slice(&rest[..64], &mut leaf)
        .map_err(|e| format!("leaf hash is not hex: {e}"))?;
    let entry = rest[64..]
        .strip_prefix(b"\",\"entry\":")
        .ok_or("missing \"entry\" after leaf")?
        .strip_suffix(b"}")
        .ok_or("line does not end with }")?;
    Ok((index, leaf, entry))
}

struct Replay {
    entries: u64,
    /// Byte length of the complete lines read.
    good_len: u64,
    /// Bytes of an unterminated last line, up to the zeros if any.
    torn_tail_bytes: u64,
}

/// Reads complete lines of a segment in order, verifying each, up to `max_entries`;
/// `visit` returns false to stop early. An unterminated last line is reported, not visited.
fn replay(
    path: &Path,
    first_index: u64,
    last_segment: bool,
    max_entries: u64,
    mut visit: impl FnMut(u64, [u8; 32], AuditEntry) -> bool,
) -> Result<Replay, AuditError> {
    let file = File::open(path).map_err(|source| AuditError::Io {
        action: "open audit log",
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut line = Vec::with_capacity(4096);
    let mut replay = Replay {
        entries: 0,
        good_len: 0,
        torn_tail_bytes: 0,
    };
    while replay.entries < max_entries {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| AuditError::Io {
                action: "read audit log",
                path: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            break;
        }
        // The last segment ends at its first NUL byte (nothing valid has one): after it come
        // the zeros the writer keeps ahead, or, after a power cut, blocks of the last,
        // never-acknowledged batch that were not written.
        if last_segment && let Some(zero) = line.iter().position(|&b| b == 0) {
            replay.torn_tail_bytes = zero as u64;
            break;
        }
        if line.last() != Some(&b'\n') {
            replay.torn_tail_bytes = n as u64;
            break;
        }
        let line_no = replay.entries + 1;
        let corrupt = |reason: String| AuditError::Corrupt {
            path: path.to_path_buf(),
            line: line_no,
            reason,
        };
        let (index, leaf, entry_bytes) = split_line(&line[..n - 1]).map_err(corrupt)?;
        if index != first_index + replay.entries {
            return Err(corrupt(format!(
                "index {index} where {} was expected",
                first_index + replay.entries
            )));
        }
        if merkle::leaf_hash(entry_bytes) != leaf {
            return Err(corrupt(format!(
                "entry {index} does not match its leaf hash (altered entry)"
            )));
        }
        let entry: AuditEntry = serde_json::from_slice(entry_bytes)
            .map_err(|e| corrupt(format!("entry {index} does not parse: {e}")))?;
        replay.entries += 1;
        replay.good_len += n as u64;
        if !visit(index, leaf, entry) {
            break;
        }
    }
    Ok(replay)
}

/// What [`replay_dir`] found: entries over all segments, and the last
/// segment read with its own replay (for torn-tail repair).
struct DirReplay {
    entries: u64,
    last: Option<(PathBuf, Replay)>,
}

/// Replays every segment of `dir` in order, indices continuing across
/// segments, up to `max_entries`. An unterminated line is allowed only at
/// the end of the last segment: earlier segments were complete when the
/// writer moved on.
fn replay_dir(
    dir: &Path,
    max_entries: u64,
    mut visit: impl FnMut(u64, [u8; 32], AuditEntry) -> bool,
) -> Result<DirReplay, AuditError> {
    let segs = segments(dir)?;
    let mut out = DirReplay {
        entries: 0,
        last: None,
    };
    for (i, path) in segs.iter().enumerate() {
        if out.entries >= max_entries {
            break;
        }
        let mut stopped = false;
        let last_segment = i + 1 == segs.len();
        let r = replay(
            path,
            out.entries,
            last_segment,
            max_entries - out.entries,
            |index, leaf, entry| {
                let go = visit(index, leaf, entry);
                stopped = !go;
                go
            },
        )?;
        if r.torn_tail_bytes > 0 && i + 1 < segs.len() {
            return Err(AuditError::Corrupt {
                path: path.clone(),
                line: r.entries + 1,
                reason: "unterminated line inside a segment that is not the last".into(),
            });
        }
        out.entries += r.entries;
        out.last = Some((path.clone(), r));
        if stopped {
            break;
        }
    }
    Ok(out)
}

fn matches(filter: &AuditFilter, entry: &AuditEntry) -> bool {
    fn eq(want: &Option<String>, got: Option<&str>) -> bool {
        want.as_deref().is_none_or(|w| got == Some(w))
    }
    // Entry times are RFC 3339 UTC with a fixed format, so they compare as text.
    eq(&filter.agency, Some(&entry.agency))
        && eq(&filter.officer, entry.officer.as_deref())
        && eq(&filter.service_item, entry.service_item.as_deref())
        && filter
            .since
            .as_deref()
            .is_none_or(|t| entry.time.as_str() >= t)
        && filter
            .until
            .as_deref()
            .is_none_or(|t| entry.time.as_str() < t)
        && eq(&filter.decision, Some(&entry.decision))
        && eq(&filter.case_id, entry.case_id.as_deref())
        && eq(
            &filter.subject_commitment,
            entry.subject_commitment.as_deref(),
        )
}

/// Index key of a subject in the salt store (not a protection: subject keys are guessable).
fn subject_id(subject_key: &str) -> [u8; 32] {
    digest(&SHA256, subject_key.as_bytes())
        .as_ref()
        .try_into()
        .expect("sha-256 digests are 32 bytes")
}

fn commitment(salt: &[u8; 32], subject_key: &str) -> String {
    let mut ctx = Context::new(&SHA256);
    ctx.update(salt);
    ctx.update(subject_key.as_bytes());
    merkle::to_hex(
        ctx.finish()
            .as_ref()
            .try_into()
            .expect("sha-256 digests are 32 bytes"),
    )
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SaltLine {
    subject: String,
    salt: String,
}

struct SaltStore {
    path: PathBuf,
    file: Appender,
    salts: HashMap<[u8; 32], [u8; 32]>,
    rng: SystemRandom,
}

impl SaltStore {
    fn open(path: &Path) -> Result<SaltStore, AuditError> {
        let io = |action: &'static str| {
            move |source| AuditError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let mut salts = HashMap::new();
        let text = match fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("read salt store")(e)),
        };
        for (line_no, line) in journal::complete_lines(&text) {
            let (id, salt) = parse_salt_line(line).map_err(|reason| AuditError::Corrupt {
                path: path.to_path_buf(),
                line: line_no as u64,
                reason,
            })?;
            salts.insert(id, salt);
        }
        let good_len = journal::complete_len(&text);
        if good_len < text.len() {
            tracing::warn!(path = %path.display(), "truncating torn last line of salt store");
            journal::truncate(path, good_len as u64).map_err(io("truncate torn tail of"))?;
        }
        Ok(SaltStore {
            path: path.to_path_buf(),
            file: Appender::open(path).map_err(io("open"))?,
            salts,
            rng: SystemRandom::new(),
        })
    }

    fn create(&mut self, id: [u8; 32]) -> Result<[u8; 32], AuditError> {
        let mut salt = [0u8; 32];
        self.rng.fill(&mut salt).map_err(|_| AuditError::Random)?;
        self.file
            .append(&salt_line(&id, &salt))
            .map_err(|source| AuditError::Io {
                action: "append to salt store",
                path: self.path.clone(),
                source,
            })?;
        self.salts.insert(id, salt);
        Ok(salt)
    }

    fn erase(&mut self, id: &[u8; 32]) -> Result<bool, AuditError> {
        if !self.salts.contains_key(id) {
            return Ok(false);
        }
        let mut text = Vec::new();
        for (other, salt) in self.salts.iter().filter(|(other, _)| *other != id) {
            text.extend_from_slice(&salt_line(other, salt));
            text.push(b'\n');
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| AuditError::Io {
                action,
                path,
                source,
            }
        };
        let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(io("write", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(io("replace salt store", &self.path))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.file = Appender::open(&self.path).map_err(io("open", &self.path))?;
        self.salts.remove(id);
        Ok(true)
    }
}

fn salt_line(id: &[u8; 32], salt: &[u8; 32]) -> Vec<u8> {
    serde_json::to_vec(&SaltLine {
        subject: hex::encode(id),
        salt: hex::encode(salt),
    })
    .expect("two strings always serialise")
}

fn parse_salt_line(line: &[u8]) -> Result<([u8; 32], [u8; 32]), String> {
    let parsed: SaltLine = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let mut id = [0u8; 32];
    let mut salt = [0u8; 32];
    hex::decode_to_slice(&parsed.subject, &mut id)
        .map_err(|e| format!("subject is not 32 hex bytes: {e}"))?;
    hex::decode_to_slice(&parsed.salt, &mut salt)
        .map_err(|e| format!("salt is not 32 hex bytes: {e}"))?;
    Ok((id, salt))
}

/// Name of the lock file inside an audit directory.
pub const LOCK_FILE: &str = "LOCK";

fn take_dir_lock(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| AuditError::Io {
            action: "open lock file",
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(AuditError::Io {
            action: "lock",
            path,
            source,
        }),
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), AuditError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(len)?;
            f.sync_all()
        })
        .map_err(|source| AuditError::Io {
            action: "truncate torn tail of",
            path: path.to_path_buf(),
            source,
        })
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| AuditError::Io {
            action: "sync directory",
            path: dir.to_path_buf(),
            source,
        })
}

/// Locks, ignoring poisoning: no critical section here leaves data half-updated on panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Contract tests every [`AuditSink`] implementation runs.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    /// Sequential appends get consecutive indices starting at `first`.
    pub(crate) async fn sequential_indices(sink: &dyn AuditSink, first: u64) {
        for i in 0..5 {
            let entry = AuditEntry {
                agency: format!("contract-{i}"),
                decision: "allow".into(),
                ..Default::default()
            };
            assert_eq!(sink.append(entry).await.unwrap(), first + i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            time: "2025-08-01T00:00:00Z".into(),
            agency: format!("agency-{}", i % 3),
            role: "handler".into(),
            certificate: "cn:abcd".into(),
            method: "GET".into(),
            route: "/v1/lookup".into(),
            status: 200,
            case_id: Some(format!("case-{i}")),
            decision: if i.is_multiple_of(2) { "allow" } else { "deny" }.into(),
            fields_clear: vec!["name".into()],
            bytes_out: i,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn contract_suite() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        assert!(matches!(
            AuditLog::open(dir.path()),
            Err(AuditError::Locked { .. })
        ));
        contract::sequential_indices(&log, 0).await;
        contract::sequential_indices(&log, 5).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_distinct_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::open(dir.path()).unwrap());
        let mut tasks = Vec::new();
        for i in 0..64 {
            let log = Arc::clone(&log);
            tasks.push(tokio::spawn(async move { log.append(entry(i)).await }));
        }
        let mut indices = HashSet::new();
        for t in tasks {
            assert!(indices.insert(t.await.unwrap().unwrap()));
        }
        assert_eq!(indices, (0..64).collect::<HashSet<u64>>());
        assert_eq!(log.size(), 64);
        let root = log.root();
        let leaves: Vec<_> = (0..64).map(|i| log.leaf(i).unwrap()).collect();
        assert_eq!(root, merkle::root(&leaves));
        log.shutdown();
        assert!(matches!(
            log.append(entry(99)).await,
            Err(AuditError::Closed)
        ));
        drop(log);

        let reopened = AuditLog::open(dir.path()).unwrap();
        assert_eq!(reopened.size(), 64);
        assert_eq!(reopened.root(), root);
        let report = verify_dir(dir.path(), None).unwrap();
        assert_eq!(report.entries, 64);
        assert_eq!(report.root_hex, hex::encode(root));
        assert_eq!(reopened.append(entry(64)).await.unwrap(), 64);
    }

    /// Many responses appended at once through the group commit: each comes back with a batch
    /// seal that verifies offline over the response, batches share one signature, and each
    /// signed log head is a real head of the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commits_seal_their_responses_once_per_batch() {
        use crate::seal::{self, Alg};
        for alg in Alg::ALL {
            let dir = tempfile::tempdir().unwrap();
            let signer = seal::load_or_create(alg, &dir.path().join("key")).unwrap();
            let log = Arc::new(
                AuditLog::open_sealing(
                    &dir.path().join("log"),
                    DEFAULT_SEGMENT_MAX_BYTES,
                    Some(Arc::clone(&signer)),
                )
                .unwrap(),
            );
            let mut tasks = Vec::new();
            for i in 0..200u64 {
                let log = Arc::clone(&log);
                tasks.push(tokio::spawn(async move {
                    let mut body = serde_json::json!({"meta": {"n": i}, "data": [i, "值"]});
                    let mut sha = [0u8; 32];
                    sha.copy_from_slice(digest(&SHA256, &seal::canonical_json(&body)).as_ref());
                    if i % 5 == 0 {
                        // Unsealed responses share the batches without taking a leaf.
                        let index = log.append(entry(i)).await.unwrap();
                        return (index, None);
                    }
                    let appended = log.append_sealed(entry(i), sha).await.unwrap();
                    body["meta"]["audit_entry"] = serde_json::json!(appended.index);
                    appended
                        .seal
                        .expect("a batch signer is set")
                        .apply(&mut body);
                    (appended.index, Some(body))
                }));
            }
            let key = signer.verifying_key();
            let mut signatures = HashSet::new();
            let mut sealed = 0;
            for t in tasks {
                let (index, body) = t.await.unwrap();
                let Some(body) = body else { continue };
                sealed += 1;
                seal::verify(&key, &body).unwrap();
                let s = &body["seal"];
                assert_eq!(s["alg"], alg.name());
                signatures.insert(s["signature"].as_str().unwrap().to_string());
                let log_size = s["log_size"].as_u64().unwrap();
                assert!(index < log_size);
                assert_eq!(
                    s["log_root"].as_str().unwrap(),
                    hex::encode(log.root_at(log_size).unwrap())
                );
                let mut forged = body.clone();
                forged["data"][1] = serde_json::json!("改");
                assert!(seal::verify(&key, &forged).is_err());
            }
            assert_eq!(sealed, 160);
            let batches = log
                .stats()
                .batches
                .load(std::sync::atomic::Ordering::Relaxed);
            assert!(
                signatures.len() as u64 <= batches,
                "{} signatures for {batches} group commits",
                signatures.len()
            );
        }
        // Without a batch signer nothing is sealed by the log.
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let appended = log.append_sealed(entry(0), [1; 32]).await.unwrap();
        assert_eq!(appended.index, 0);
        assert!(appended.seal.is_none());
    }

    #[tokio::test]
    async fn a_reopened_log_seals_with_the_head_it_continues() {
        use crate::seal::{self, Alg};
        let dir = tempfile::tempdir().unwrap();
        let signer = seal::load_or_create(Alg::Ed25519, &dir.path().join("key")).unwrap();
        let open = || {
            AuditLog::open_sealing(
                &dir.path().join("log"),
                DEFAULT_SEGMENT_MAX_BYTES,
                Some(Arc::clone(&signer)),
            )
            .unwrap()
        };
        // Sizes whose right edges differ (one, several and a single complete subtree).
        for appends in [5u64, 3, 8, 1] {
            let log = open();
            for i in 0..appends {
                let appended = log.append_sealed(entry(i), [7; 32]).await.unwrap();
                let s = appended.seal.expect("a batch signer is set");
                let mut doc = serde_json::json!({});
                s.apply(&mut doc);
                let log_size = doc["seal"]["log_size"].as_u64().unwrap();
                assert_eq!(log_size, appended.index + 1, "one append at a time");
                // `root_at` hashes the stored levels; `root()` is the head the writer signed.
                let stored = hex::encode(log.root_at(log_size).unwrap());
                assert_eq!(doc["seal"]["log_root"].as_str().unwrap(), stored);
                assert_eq!(hex::encode(log.root()), stored, "size {log_size}");
            }
        }
    }

    #[test]
    fn time_bounds_compare_as_stored() {
        assert_eq!(
            time_bound("2026-11-27T08:00:00+08:00").unwrap(),
            "2026-11-27T00:00:00.000000Z"
        );
        assert_eq!(time_bound("2026-11-27").unwrap(), "2026-11-27");
        assert!(time_bound("yesterday").is_err());
        assert!(
            "2026-11-26T23:59:59.000000Z"
                < time_bound("2026-11-27T08:00:00+08:00").unwrap().as_str()
        );
    }

    #[tokio::test]
    async fn zero_filled_tail_of_the_last_segment_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        for i in 0..3 {
            log.append(entry(i)).await.unwrap();
        }
        drop(log);
        let path = dir.path().join(SEGMENT_FILE);
        let good = fs::read(&path).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0u8; 700]).unwrap();
        f.write_all(b"\n").unwrap();
        drop(f);
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.size(), 3);
        assert_eq!(fs::read(&path).unwrap(), good);
        assert_eq!(log.append(entry(3)).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_live_segment_keeps_zeros_ahead_that_readers_skip_and_closing_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        for i in 0..3 {
            log.append(entry(i)).await.unwrap();
        }
        let path = dir.path().join(SEGMENT_FILE);
        let live = fs::read(&path).unwrap();
        let data = live
            .iter()
            .position(|&b| b == 0)
            .expect("zeros after the last line");
        assert_eq!(live[data - 1], b'\n');
        assert!(live[data..].iter().all(|&b| b == 0));
        // The first commit wrote the zeros; the next two overwrote them.
        let first_line = live.iter().position(|&b| b == b'\n').unwrap() + 1;
        assert_eq!(live.len() as u64, first_line as u64 + ZERO_AHEAD_BYTES);
        // Readers beside the live writer see every entry and no torn line.
        let report = verify_dir(dir.path(), None).unwrap();
        assert_eq!((report.entries, report.torn_tail_bytes), (3, 0));
        assert_eq!(
            scan_dir(dir.path(), &AuditFilter::default()).unwrap().len(),
            3
        );
        assert_eq!(log.query(&AuditFilter::default()).unwrap().len(), 3);

        // A copy taken now is what a killed writer leaves: opening it cuts the zeros and
        // goes on after the last entry.
        let copy = tempfile::tempdir().unwrap();
        let copied = copy.path().join(SEGMENT_FILE);
        fs::copy(&path, &copied).unwrap();
        let reopened = AuditLog::open(copy.path()).unwrap();
        assert_eq!((reopened.size(), reopened.root()), (3, log.root()));
        assert_eq!(reopened.append(entry(3)).await.unwrap(), 3);
        drop(reopened);
        // Closing cuts the zeros: a closed segment ends on its last line.
        let closed = fs::read(&copied).unwrap();
        assert!(!closed.contains(&0) && closed.ends_with(b"\n"));
        assert_eq!(&closed[..data], &live[..data]);
        assert_eq!(verify_dir(copy.path(), None).unwrap().entries, 4);
        drop(log);
        assert_eq!(fs::read(&path).unwrap(), &live[..data]);
    }

    #[tokio::test]
    async fn a_batch_torn_inside_the_zeros_is_cut_on_open() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        for i in 0..2 {
            log.append(entry(i)).await.unwrap();
        }
        let path = dir.path().join(SEGMENT_FILE);
        let live = fs::read(&path).unwrap();
        let data = live.iter().position(|&b| b == 0).unwrap();
        let crashed = |name: &str, writes: &[(usize, &[u8])]| {
            let d = dir.path().join(name);
            fs::create_dir(&d).unwrap();
            fs::write(d.join(SEGMENT_FILE), &live).unwrap();
            let f = OpenOptions::new()
                .write(true)
                .open(d.join(SEGMENT_FILE))
                .unwrap();
            for (at, bytes) in writes {
                f.write_all_at(bytes, (data + at) as u64).unwrap();
            }
            d
        };
        // The start of a line, then zeros: a write cut short.
        let torn = crashed("torn", &[(0, b"{\"index\":2,\"le")]);
        assert_eq!(verify_dir(&torn, None).unwrap().torn_tail_bytes, 14);
        // A whole line after zeros: a batch whose first block was never written.
        let holed = crashed("holed", &[(4096, b"{\"index\":3}\n")]);
        assert_eq!(verify_dir(&holed, None).unwrap().entries, 2);
        for d in [torn, holed] {
            let reopened = AuditLog::open(&d).unwrap();
            assert_eq!(reopened.size(), 2);
            assert_eq!(reopened.append(entry(2)).await.unwrap(), 2);
            drop(reopened);
            let bytes = fs::read(d.join(SEGMENT_FILE)).unwrap();
            assert_eq!(&bytes[..data], &live[..data]);
            assert_eq!(verify_dir(&d, None).unwrap().entries, 3);
        }
    }

    #[tokio::test]
    async fn segments_rotate_and_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_with(dir.path(), 3_000).unwrap();
        for i in 0..40 {
            assert_eq!(log.append(entry(i)).await.unwrap(), i);
        }
        let (root, proof) = (log.root(), log.inclusion_proof(5, 40).unwrap());
        let stats = Arc::clone(&log.stats);
        // The live segment, moved to when it was zero-filled, is zeros after its last line.
        let live = fs::read(segments(dir.path()).unwrap().last().unwrap()).unwrap();
        let end = live.iter().rposition(|&b| b == b'\n').unwrap() + 1;
        assert!(live.len() >= 3_000 && live[end..].iter().all(|&b| b == 0));
        drop(log);
        let segs = segments(dir.path()).unwrap();
        assert!(segs.len() > 3, "{} segments", segs.len());
        // Each segment after the first was zero-filled while the one before filled up, and
        // closing removed the one being zero-filled for the segment after the last.
        assert_eq!(segments_started(&stats), (segs.len() as u64 - 1, 0));
        assert!(!dir.path().join(NEXT_SEGMENT_FILE).exists());
        assert!(
            segs.iter()
                .all(|p| fs::metadata(p).unwrap().len() < 3_000 + 2_000)
        );
        // Closed segments end on their last line: no zeros kept ahead.
        for p in &segs {
            let bytes = fs::read(p).unwrap();
            assert!(
                !bytes.contains(&0) && bytes.ends_with(b"\n"),
                "{}",
                p.display()
            );
        }
        // Reopen continues the indices and the tree, in the last segment.
        let log = AuditLog::open_with(dir.path(), 3_000).unwrap();
        assert_eq!((log.size(), log.root()), (40, root));
        assert_eq!(log.inclusion_proof(5, 40).unwrap(), proof);
        assert_eq!(log.append(entry(40)).await.unwrap(), 40);
        let all = log.query(&AuditFilter::default()).unwrap();
        assert_eq!(
            all.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (0..41).collect::<Vec<_>>()
        );
        drop(log);
        let report = verify_dir(dir.path(), None).unwrap();
        assert_eq!(report.entries, 41);
        assert_eq!(
            scan_dir(dir.path(), &AuditFilter::default()).unwrap().len(),
            41
        );
        // A torn line inside an earlier segment is damage, not a crash tail.
        let first = dir.path().join(segment_name(1));
        let mut f = OpenOptions::new().append(true).open(&first).unwrap();
        f.write_all(b"{\"index\":9").unwrap();
        drop(f);
        let err = verify_dir(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("not the last"), "{err}");
        // A missing segment is damage too.
        fs::remove_file(dir.path().join(segment_name(2))).unwrap();
        let err = AuditLog::open(dir.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("segment missing"), "{err}");
    }

    /// Segments started from a zero-filled file, and empty.
    fn segments_started(stats: &AuditStats) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let prepared = stats.segments_prepared.load(Relaxed);
        (prepared, stats.segments_unprepared.load(Relaxed))
    }

    #[tokio::test]
    async fn a_segment_whose_zero_fill_failed_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_with(dir.path(), 3_000).unwrap();
        // A directory where the zero-filled file would go: creating it fails.
        fs::create_dir(dir.path().join(NEXT_SEGMENT_FILE)).unwrap();
        for i in 0..40 {
            assert_eq!(log.append(entry(i)).await.unwrap(), i);
        }
        let stats = Arc::clone(&log.stats);
        drop(log);
        let segs = segments(dir.path()).unwrap();
        assert!(segs.len() > 3, "{} segments", segs.len());
        assert_eq!(segments_started(&stats), (0, segs.len() as u64 - 1));
        // Opening refuses, naming what is in the way; once it is gone the log goes on.
        let err = AuditLog::open_with(dir.path(), 3_000)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(NEXT_SEGMENT_FILE), "{err}");
        fs::remove_dir(dir.path().join(NEXT_SEGMENT_FILE)).unwrap();
        let log = AuditLog::open_with(dir.path(), 3_000).unwrap();
        assert_eq!(log.append(entry(40)).await.unwrap(), 40);
        drop(log);
        assert_eq!(verify_dir(dir.path(), None).unwrap().entries, 41);
    }

    #[tokio::test]
    async fn a_leftover_name_of_the_live_segment_is_never_zero_filled() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_with(dir.path(), 3_000).unwrap();
        // As if removing the temporary name failed after the live segment was linked in:
        // the next zero fill must not open (and truncate) that file.
        fs::hard_link(
            dir.path().join(segment_name(1)),
            dir.path().join(NEXT_SEGMENT_FILE),
        )
        .unwrap();
        for i in 0..40 {
            assert_eq!(log.append(entry(i)).await.unwrap(), i);
        }
        let stats = Arc::clone(&log.stats);
        drop(log);
        let segs = segments(dir.path()).unwrap();
        // The second segment started empty (its zero fill refused the name, which was then
        // removed); the ones after were zero-filled.
        assert_eq!(segments_started(&stats), (segs.len() as u64 - 2, 1));
        assert_eq!(verify_dir(dir.path(), None).unwrap().entries, 40);
        assert!(!dir.path().join(NEXT_SEGMENT_FILE).exists());
    }

    #[tokio::test]
    async fn a_crash_just_after_moving_to_a_zero_filled_segment_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_with(dir.path(), 3_000).unwrap();
        for i in 0..5 {
            log.append(entry(i)).await.unwrap();
        }
        let root = log.root();
        drop(log);
        // What a writer killed between linking the zero-filled segment in and removing
        // its temporary name leaves: two names for one file of zeros.
        fs::write(dir.path().join(segment_name(2)), vec![0u8; 3_000]).unwrap();
        fs::hard_link(
            dir.path().join(segment_name(2)),
            dir.path().join(NEXT_SEGMENT_FILE),
        )
        .unwrap();
        let log = AuditLog::open_with(dir.path(), 3_000).unwrap();
        assert_eq!((log.size(), log.root()), (5, root));
        assert!(!dir.path().join(NEXT_SEGMENT_FILE).exists());
        assert_eq!(log.append(entry(5)).await.unwrap(), 5);
        drop(log);
        let second = fs::read(dir.path().join(segment_name(2))).unwrap();
        assert!(second.starts_with(b"{\"index\":5,") && second.ends_with(b"\n"));
        assert!(!second.contains(&0));
        assert_eq!(verify_dir(dir.path(), None).unwrap().entries, 6);
    }

    #[tokio::test]
    async fn torn_tail_is_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        for i in 0..3 {
            log.append(entry(i)).await.unwrap();
        }
        let root = log.root();
        drop(log);
        let path = dir.path().join(SEGMENT_FILE);
        let good = fs::read(&path).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"index\":3,\"leaf\":\"ab").unwrap();
        drop(f);
        assert_eq!(verify_dir(dir.path(), None).unwrap().torn_tail_bytes, 21);

        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.size(), 3);
        assert_eq!(log.root(), root);
        assert_eq!(fs::read(&path).unwrap(), good);
        assert_eq!(log.append(entry(3)).await.unwrap(), 3);
        assert_eq!(verify_dir(dir.path(), None).unwrap().entries, 4);
    }

    #[tokio::test]
    async fn edited_entry_fails_verification_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        for i in 0..5 {
            log.append(entry(i)).await.unwrap();
        }
        drop(log);
        let path = dir.path().join(SEGMENT_FILE);
        let text = fs::read_to_string(&path).unwrap();
        let edited: Vec<String> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i == 2 {
                    l.replace("\"decision\":\"allow\"", "\"decision\":\"deny\"")
                } else {
                    l.to_string()
                }
            })
            .collect();
        assert_ne!(edited.join("\n") + "\n", text);
        fs::write(&path, edited.join("\n") + "\n").unwrap();

        let err = verify_dir(dir.path(), None).unwrap_err();
        assert!(matches!(err, AuditError::Corrupt { line: 3, .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("line 3") && msg.contains(SEGMENT_FILE),
            "{msg}"
        );
        assert!(AuditLog::open(dir.path()).is_err());
    }

    #[test]
    fn removed_line_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        rt.block_on(async {
            for i in 0..3 {
                log.append(entry(i)).await.unwrap();
            }
        });
        drop(log);
        let path = dir.path().join(SEGMENT_FILE);
        let text = fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| l)
            .collect();
        fs::write(&path, kept.join("\n") + "\n").unwrap();
        let err = verify_dir(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[tokio::test]
    async fn subject_commitments_stable_and_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.lookup_commitment("650102199001011234"), None);
        let a = log.commit_subject("650102199001011234").unwrap();
        let b = log.commit_subject("91650100MA77XXXX1A").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(log.commit_subject("650102199001011234").unwrap(), a);
        let salts = fs::read_to_string(dir.path().join(SALTS_FILE)).unwrap();
        assert!(!salts.contains("650102199001011234"));
        drop(log);

        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.lookup_commitment("650102199001011234"), Some(a.clone()));
        assert_eq!(log.commit_subject("91650100MA77XXXX1A").unwrap(), b);

        // Erasing the salt unlinks the subject but leaves the tree intact.
        let mut e = entry(0);
        e.subject_commitment = Some(a.clone());
        log.append(e).await.unwrap();
        assert!(log.erase_subject("650102199001011234").unwrap());
        assert_eq!(log.lookup_commitment("650102199001011234"), None);
        assert_eq!(log.lookup_commitment("91650100MA77XXXX1A"), Some(b));
        drop(log);
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.lookup_commitment("650102199001011234"), None);
        assert_ne!(log.commit_subject("650102199001011234").unwrap(), a);
        assert_eq!(verify_dir(dir.path(), None).unwrap().entries, 1);
    }

    #[tokio::test]
    async fn query_filters_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let who = log.commit_subject("subject-1").unwrap();
        for i in 0..10 {
            let mut e = entry(i);
            if i.is_multiple_of(4) {
                e.subject_commitment = Some(who.clone());
            }
            log.append(e).await.unwrap();
        }
        let all = log.query(&AuditFilter::default()).unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[7], (7, entry(7)));

        let by_agency = log
            .query(&AuditFilter {
                agency: Some("agency-1".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            by_agency.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![1, 4, 7]
        );

        let subject = log
            .query(&AuditFilter {
                subject_commitment: log.lookup_commitment("subject-1"),
                decision: Some("allow".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            subject.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 4, 8]
        );

        let limited = log
            .query(&AuditFilter {
                decision: Some("deny".into()),
                limit: Some(2),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            limited.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![1, 3]
        );
        let case = log
            .query(&AuditFilter {
                case_id: Some("case-5".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(case, vec![(5, entry(5))]);
    }

    #[test]
    fn stored_leaf_is_rfc6962_hash_of_stored_entry_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(log.append(entry(1))).unwrap();
        let root = log.root();
        drop(log); // a closed segment: its lines only
        let text = fs::read_to_string(dir.path().join(SEGMENT_FILE)).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        let bytes = serde_json::to_vec(&entry(1)).unwrap();
        assert_eq!(v["index"], 0);
        assert_eq!(v["leaf"], hex::encode(merkle::leaf_hash(&bytes)));
        assert_eq!(v["entry"], serde_json::to_value(entry(1)).unwrap());
        assert_eq!(root, merkle::leaf_hash(&bytes));
    }

    #[tokio::test]
    async fn proofs_from_the_log_verify_against_its_roots() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        for i in 0..21 {
            log.append(entry(i)).await.unwrap();
        }
        assert_eq!(log.root_at(21).unwrap(), log.root());
        assert_eq!(log.root_at(0).unwrap(), merkle::empty_root());
        for size in 1..=21u64 {
            let root = log.root_at(size).unwrap();
            for index in 0..size {
                let proof = log.inclusion_proof(index, size).unwrap();
                let leaf = log.leaf(index).unwrap();
                merkle::verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
            }
            for old in 1..=size {
                let proof = log.consistency_proof(old, size).unwrap();
                let old_root = log.root_at(old).unwrap();
                merkle::verify_consistency(old, size, &old_root, &root, &proof).unwrap();
            }
        }
        let err = log.inclusion_proof(21, 21).unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::ProofRequest(merkle::ProofError::IndexOutOfRange {
                    index: 21,
                    size: 21
                })
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "cannot answer audit proof request: leaf index 21 is not below tree size 21"
        );
        let err = log.root_at(22).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot answer audit proof request: tree size 22 is beyond the 21 leaves held"
        );
        assert!(log.inclusion_proof(0, 22).is_err());
        assert!(log.consistency_proof(3, 22).is_err());
        assert!(log.consistency_proof(0, 5).is_err());
        assert!(log.consistency_proof(6, 5).is_err());

        // The same proofs after a reopen (the tree is rebuilt from the segment).
        let proof = log.inclusion_proof(7, 13).unwrap();
        let root = log.root_at(13).unwrap();
        drop(log);
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.inclusion_proof(7, 13).unwrap(), proof);
        assert_eq!(log.root_at(13).unwrap(), root);
    }
}
