//! The table store over an `object_store` backend: local files by default
//! (fsync'd, one writer per table through a lock file), any other
//! `ObjectStore` (S3-compatible storage, memory in tests) through the same
//! code. The object store's own trait is the backend seam; the contract
//! tests in `contract.rs` run against every backend.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{
    ColumnInfo, FileEntry, GcReport, Manifest, PART_ROWS, ROW_GROUP_ROWS, Retention, StoreError,
    check_table_name,
};

const MANIFESTS: &str = "manifests";
const PARTS: &str = "parts";
const LOCK: &str = ".lock";

/// The runtime that drives the object store's futures for the store's
/// blocking API. Static, so it is never dropped inside an async context.
fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("store-io")
            .enable_all()
            .build()
            .expect("the store's I/O runtime starts (threads can be spawned)")
    })
}

/// Run a store future to completion. Callers on an async runtime should
/// call the store from `spawn_blocking`, as for any file I/O; one that does
/// not (a test, start-up glue) gets the work done on a helper thread
/// instead of a panic, at the cost of blocking its own thread meanwhile.
fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return io_runtime().handle().block_on(f);
    }
    std::thread::scope(|s| {
        s.spawn(|| io_runtime().handle().block_on(f))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Versioned tables in one object store. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct TableStore {
    objects: Arc<dyn ObjectStore>,
    /// The local root when the backend is the local filesystem: enables the
    /// per-table lock file and the clean-up of staging files.
    local_root: Option<PathBuf>,
    /// One writer per table within this process when there is no lock file.
    writers: Arc<Mutex<()>>,
    /// Unlisted files younger than this are left alone by garbage
    /// collection when no lock file proves no writer is at work.
    orphan_grace: Duration,
    describe_root: String,
    part_rows: usize,
}

impl std::fmt::Debug for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TableStore({})", self.describe_root)
    }
}

/// Held while writing or collecting one table.
enum TableLock<'a> {
    File(#[allow(dead_code)] File),
    Process(#[allow(dead_code)] MutexGuard<'a, ()>),
}

impl TableStore {
    /// Tables under a local folder (created if missing), written with fsync.
    pub fn open_local(root: &FsPath) -> Result<TableStore, StoreError> {
        std::fs::create_dir_all(root).map_err(|e| StoreError::Backend {
            path: root.display().to_string(),
            reason: e.to_string(),
        })?;
        let fs = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| StoreError::Backend {
                path: root.display().to_string(),
                reason: e.to_string(),
            })?
            .with_fsync(true);
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        Ok(TableStore {
            objects: Arc::new(fs),
            describe_root: root.display().to_string(),
            local_root: Some(root),
            writers: Arc::new(Mutex::new(())),
            orphan_grace: Duration::ZERO,
            part_rows: PART_ROWS,
        })
    }

    /// Tables in any object store (S3-compatible storage in production,
    /// memory in tests). Without a lock file, garbage collection leaves
    /// unlisted files younger than `orphan_grace` alone: they may belong
    /// to a write in progress elsewhere.
    pub fn with_object_store(
        objects: Arc<dyn ObjectStore>,
        describe: &str,
        orphan_grace: Duration,
    ) -> TableStore {
        TableStore {
            objects,
            local_root: None,
            writers: Arc::new(Mutex::new(())),
            orphan_grace,
            describe_root: describe.to_string(),
            part_rows: PART_ROWS,
        }
    }

    /// Smaller part files, so that tests exercise several parts cheaply.
    pub fn with_part_rows(mut self, rows: usize) -> TableStore {
        self.part_rows = rows.max(1);
        self
    }

    /// An empty store in memory, for tests.
    pub fn in_memory() -> TableStore {
        TableStore::with_object_store(Arc::new(InMemory::new()), "memory:", Duration::ZERO)
    }

    /// A path for messages: the file's real location when local.
    pub fn describe(&self, path: &Path) -> String {
        format!("{}/{}", self.describe_root.trim_end_matches('/'), path)
    }

    fn backend(&self, path: &Path) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
        let p = self.describe(path);
        move |e| StoreError::Backend {
            path: p,
            reason: e.to_string(),
        }
    }

    fn manifest_path(table: &str, version: u64) -> Path {
        Path::from(format!("{table}/{MANIFESTS}/v{version:06}.json"))
    }

    fn lock(&self, table: &str, wait: bool) -> Result<Option<TableLock<'_>>, StoreError> {
        let Some(root) = &self.local_root else {
            let guard = if wait {
                Some(self.writers.lock().unwrap_or_else(|p| p.into_inner()))
            } else {
                self.writers.try_lock().ok()
            };
            return Ok(guard.map(TableLock::Process));
        };
        let dir = root.join(table);
        let io = |e: std::io::Error| StoreError::Backend {
            path: dir.join(LOCK).display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .map_err(io)?;
        if wait {
            file.lock().map_err(io)?;
            Ok(Some(TableLock::File(file)))
        } else {
            match file.try_lock() {
                Ok(()) => Ok(Some(TableLock::File(file))),
                Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
            }
        }
    }

    /// Tables that have a folder in the store, sorted.
    pub fn tables(&self) -> Result<Vec<String>, StoreError> {
        let listed = block_on(self.objects.list_with_delimiter(None))
            .map_err(self.backend(&Path::from("")))?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.parts().next_back().map(|s| s.as_ref().to_string()))
            .filter(|n| check_table_name(n).is_ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// The committed versions of `table`, ascending; empty before its first.
    pub fn versions(&self, table: &str) -> Result<Vec<u64>, StoreError> {
        check_table_name(table)?;
        let prefix = Path::from(format!("{table}/{MANIFESTS}"));
        let metas: Vec<_> = block_on(self.objects.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(self.backend(&prefix))?;
        let mut out: Vec<u64> = metas
            .iter()
            .filter_map(|m| {
                let name = m.location.filename()?;
                let digits = name.strip_prefix('v')?.strip_suffix(".json")?;
                digits.parse().ok()
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// One version's manifest.
    pub fn manifest(&self, table: &str, version: u64) -> Result<Manifest, StoreError> {
        check_table_name(table)?;
        let path = Self::manifest_path(table, version);
        let bytes = block_on(async {
            let got = self.objects.get(&path).await?;
            got.bytes().await
        })
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => StoreError::NoSuchVersion {
                table: table.to_string(),
                version,
                known: "see `sharebroker store ls`".into(),
            },
            e => self.backend(&path)(e),
        })?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: self.describe(&path),
            reason: format!("unreadable manifest: {e}"),
        })?;
        if m.table != table || m.version != version {
            return Err(StoreError::Corrupt {
                path: self.describe(&path),
                reason: format!("the manifest says table {} version {}", m.table, m.version),
            });
        }
        Ok(m)
    }

    /// The newest committed version's manifest, if the table has one.
    pub fn current(&self, table: &str) -> Result<Option<Manifest>, StoreError> {
        match self.versions(table)?.last() {
            Some(&v) => self.manifest(table, v).map(Some),
            None => Ok(None),
        }
    }

    /// Write `batches` as a new version of `table` that replaces the rows
    /// of earlier versions, and make it current.
    pub fn commit(&self, table: &str, batches: &[RecordBatch]) -> Result<Manifest, StoreError> {
        self.commit_with(table, batches, Default::default())
    }

    /// [`TableStore::commit`] with `meta` written beside the version.
    pub fn commit_with(
        &self,
        table: &str,
        batches: &[RecordBatch],
        meta: std::collections::BTreeMap<String, String>,
    ) -> Result<Manifest, StoreError> {
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| StoreError::Encode {
                table: table.to_string(),
                reason: "no batches to write (an empty table still needs one, with zero rows)"
                    .into(),
            })?;
        let mut w = self.writer(table, schema, None)?;
        for b in batches {
            w.write(b)?;
        }
        w.commit(meta)
    }

    /// Start a new version of `table`. With `append_to`, the new version
    /// keeps that version's files and adds its own; `append_to` must be the
    /// current version when the writer commits. The new version becomes
    /// visible only at [`TableWriter::commit`]; a writer dropped before
    /// that leaves orphans for garbage collection, never a visible change.
    pub fn writer(
        &self,
        table: &str,
        schema: SchemaRef,
        append_to: Option<u64>,
    ) -> Result<TableWriter<'_>, StoreError> {
        check_table_name(table)?;
        let lock = self
            .lock(table, true)?
            .expect("a waiting lock is always taken");
        let current = self.versions(table)?.last().copied();
        let base = match append_to {
            None => None,
            Some(v) if Some(v) == current => {
                let m = self.manifest(table, v)?;
                let columns = columns_of(&schema);
                if m.columns != columns {
                    return Err(StoreError::Append {
                        table: table.to_string(),
                        reason: format!(
                            "the new rows' columns differ from version {v}'s: {} vs {}",
                            describe_columns(&columns),
                            describe_columns(&m.columns)
                        ),
                    });
                }
                Some(m)
            }
            Some(v) => {
                return Err(StoreError::Append {
                    table: table.to_string(),
                    reason: format!(
                        "version {v} is not the current version ({})",
                        current.map_or("none".into(), |c| c.to_string())
                    ),
                });
            }
        };
        let mut nonce = [0u8; 6];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).map_err(
            |_| StoreError::Encode {
                table: table.to_string(),
                reason: "no randomness for a file name".into(),
            },
        )?;
        Ok(TableWriter {
            store: self,
            _lock: lock,
            table: table.to_string(),
            version: current.map_or(1, |c| c + 1),
            schema,
            base,
            nonce: hex::encode(nonce),
            files: Vec::new(),
            part: None,
            partition: None,
            rows: 0,
        })
    }

    /// Stream the rows of a version, checking each file against its
    /// manifest entry before decoding it. Memory is bounded by one part
    /// file plus what `each` keeps.
    pub fn read_each(
        &self,
        manifest: &Manifest,
        each: &mut dyn FnMut(RecordBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.read_each_where(manifest, &|_| true, each)
    }

    /// [`TableStore::read_each`] over the files `wanted` picks (for
    /// example one partition's), each checked the same way.
    pub fn read_each_where(
        &self,
        manifest: &Manifest,
        wanted: &dyn Fn(&FileEntry) -> bool,
        each: &mut dyn FnMut(RecordBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for entry in manifest.files.iter().filter(|e| wanted(e)) {
            let path = Path::from(format!("{}/{}", manifest.table, entry.path));
            let bytes = block_on(async {
                let got = self.objects.get(&path).await?;
                got.bytes().await
            })
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => StoreError::Corrupt {
                    path: self.describe(&path),
                    reason: "the file is missing".into(),
                },
                e => self.backend(&path)(e),
            })?;
            let corrupt = |reason: String| StoreError::Corrupt {
                path: self.describe(&path),
                reason,
            };
            if bytes.len() as u64 != entry.bytes {
                return Err(corrupt(format!(
                    "{} bytes where the manifest says {} (truncated or replaced)",
                    bytes.len(),
                    entry.bytes
                )));
            }
            let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
            if digest != entry.sha256 {
                return Err(corrupt("checksum does not match the manifest".into()));
            }
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .and_then(|b| b.with_batch_size(ROW_GROUP_ROWS).build())
                .map_err(|e| corrupt(e.to_string()))?;
            let mut rows = 0u64;
            for b in reader {
                let b = b.map_err(|e| corrupt(e.to_string()))?;
                rows += b.num_rows() as u64;
                each(b)?;
            }
            if rows != entry.rows {
                return Err(corrupt(format!(
                    "{rows} rows where the manifest says {}",
                    entry.rows
                )));
            }
        }
        Ok(())
    }

    /// Every row of a version, checked.
    pub fn read(&self, manifest: &Manifest) -> Result<Vec<RecordBatch>, StoreError> {
        let mut out = Vec::new();
        self.read_each(manifest, &mut |b| {
            out.push(b);
            Ok(())
        })?;
        Ok(out)
    }

    /// Write a version's rows (each file checked first) to one local
    /// Parquet file, via a temporary file and a rename. Returns the rows.
    pub fn export_parquet(&self, manifest: &Manifest, out: &FsPath) -> Result<u64, StoreError> {
        let io = |e: std::io::Error| StoreError::Backend {
            path: out.display().to_string(),
            reason: e.to_string(),
        };
        let schema = manifest.schema()?;
        let tmp = out.with_extension("parquet.tmp");
        let file = File::create(&tmp).map_err(io)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let encode = |e: parquet::errors::ParquetError| StoreError::Encode {
            table: manifest.table.clone(),
            reason: e.to_string(),
        };
        let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(encode)?;
        let mut rows = 0u64;
        let written = self.read_each(manifest, &mut |b| {
            rows += b.num_rows() as u64;
            w.write(&b).map_err(encode)
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let file = w.into_inner().map_err(encode)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, out).map_err(io)?;
        Ok(rows)
    }

    /// Check every file of a version without keeping its rows.
    pub fn verify(&self, manifest: &Manifest) -> Result<(), StoreError> {
        self.read_each(manifest, &mut |_| Ok(()))
    }

    /// Remove versions beyond `retention`, then every file no remaining
    /// manifest lists (orphans of writes that never committed, staging
    /// files of a killed process). The current version is never removed.
    /// A table being written by another process is skipped (`busy`).
    pub fn gc(
        &self,
        table: &str,
        retention: &Retention,
        dry_run: bool,
    ) -> Result<GcReport, StoreError> {
        check_table_name(table)?;
        let mut report = GcReport {
            table: table.to_string(),
            ..GcReport::default()
        };
        let Some(_lock) = self.lock(table, false)? else {
            report.busy = true;
            return Ok(report);
        };
        let now = chrono::Utc::now();
        let versions = self.versions(table)?;
        let keep_from = versions
            .len()
            .saturating_sub(retention.keep_versions.max(1));
        let mut keep: BTreeSet<u64> = versions[keep_from..].iter().copied().collect();
        let mut manifests = Vec::new();
        for &v in &versions {
            // An unreadable manifest is kept: it is evidence, and its
            // files stay until an operator looks.
            match self.manifest(table, v) {
                Ok(m) => {
                    let young = m.created().is_none_or(|c| {
                        now.signed_duration_since(c).num_days() < i64::from(retention.keep_days)
                    });
                    if young {
                        keep.insert(v);
                    }
                    manifests.push(m);
                }
                Err(_) => {
                    keep.insert(v);
                }
            }
        }
        for &v in &versions {
            if !keep.contains(&v) {
                report.versions_removed.push(v);
                if !dry_run {
                    let path = Self::manifest_path(table, v);
                    block_on(self.objects.delete(&path)).map_err(self.backend(&path))?;
                }
            }
        }
        let listed: HashSet<&str> = manifests
            .iter()
            .filter(|m| keep.contains(&m.version))
            .flat_map(|m| m.files.iter().map(|f| f.path.as_str()))
            .collect();
        let prefix = Path::from(format!("{table}/{PARTS}"));
        let metas: Vec<_> = block_on(self.objects.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(self.backend(&prefix))?;
        let locked_by_file = self.local_root.is_some();
        for meta in metas {
            let rel = meta
                .location
                .as_ref()
                .strip_prefix(&format!("{table}/"))
                .unwrap_or(meta.location.as_ref())
                .to_string();
            if listed.contains(rel.as_str()) {
                continue;
            }
            let age = now
                .signed_duration_since(meta.last_modified)
                .to_std()
                .unwrap_or_default();
            if !locked_by_file && age < self.orphan_grace {
                continue;
            }
            report.bytes_freed += meta.size;
            report.files_removed.push(rel);
            if !dry_run {
                block_on(self.objects.delete(&meta.location))
                    .map_err(self.backend(&meta.location))?;
            }
        }
        // A killed local write can leave a staging file (`name#N`) that the
        // object store does not list.
        if let Some(root) = &self.local_root {
            for dir in [
                root.join(table).join(PARTS),
                root.join(table).join(MANIFESTS),
            ] {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    let staging = name.rsplit_once('#').is_some_and(|(_, n)| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                    });
                    if !staging {
                        continue;
                    }
                    let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
                    report.bytes_freed += bytes;
                    let rel = e
                        .path()
                        .strip_prefix(root.join(table))
                        .map(|p| p.display().to_string())
                        .unwrap_or(name);
                    report.files_removed.push(rel);
                    if !dry_run {
                        std::fs::remove_file(e.path()).map_err(|err| StoreError::Backend {
                            path: e.path().display().to_string(),
                            reason: err.to_string(),
                        })?;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Garbage-collect every table (see [`TableStore::gc`]).
    pub fn gc_all(
        &self,
        retention: &Retention,
        dry_run: bool,
    ) -> Result<Vec<GcReport>, StoreError> {
        self.tables()?
            .iter()
            .map(|t| self.gc(t, retention, dry_run))
            .collect()
    }

    /// At start: remove what killed writes left behind (orphan parts and
    /// staging files), keeping every committed version.
    pub fn recover(&self) -> Result<Vec<GcReport>, StoreError> {
        let keep_all = Retention {
            keep_versions: usize::MAX,
            keep_days: u32::MAX,
        };
        self.gc_all(&keep_all, false)
    }

    fn put_raw(&self, path: &Path, bytes: Bytes, mode: PutMode) -> object_store::Result<()> {
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        block_on(self.objects.put_opts(path, PutPayload::from(bytes), opts)).map(|_| ())
    }

    fn put(&self, path: &Path, bytes: Bytes, mode: PutMode) -> Result<(), StoreError> {
        self.put_raw(path, bytes, mode).map_err(self.backend(path))
    }
}

fn columns_of(schema: &SchemaRef) -> Vec<ColumnInfo> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnInfo {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

fn describe_columns(c: &[ColumnInfo]) -> String {
    c.iter()
        .map(|c| format!("{} {}", c.name, c.data_type))
        .collect::<Vec<_>>()
        .join(", ")
}

struct OpenPart {
    writer: ArrowWriter<Vec<u8>>,
    rows: u64,
}

impl std::fmt::Debug for TableWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TableWriter({} v{})", self.table, self.version)
    }
}

/// A version being written: rows go to part files as they come; nothing
/// is visible until [`TableWriter::commit`].
pub struct TableWriter<'a> {
    store: &'a TableStore,
    _lock: TableLock<'a>,
    table: String,
    version: u64,
    schema: SchemaRef,
    base: Option<Manifest>,
    nonce: String,
    files: Vec<FileEntry>,
    part: Option<OpenPart>,
    /// The partition rows written now belong to.
    partition: Option<u32>,
    rows: u64,
}

impl TableWriter<'_> {
    /// The version this writer will commit.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn encode_err(&self) -> impl Fn(parquet::errors::ParquetError) -> StoreError + '_ {
        |e| StoreError::Encode {
            table: self.table.clone(),
            reason: e.to_string(),
        }
    }

    /// Rows written from now on belong to `partition` (they start a new
    /// file). A table written in partitions can later be rewritten one
    /// partition at a time with [`TableWriter::replace_partitions`].
    pub fn partition(&mut self, partition: u32) -> Result<(), StoreError> {
        if self.partition != Some(partition) {
            self.finish_part()?;
            self.partition = Some(partition);
        }
        Ok(())
    }

    /// Drop the files of these partitions from the version this writer
    /// appends to: the new version holds what this writer writes for them
    /// instead, and keeps every other file of its base.
    pub fn replace_partitions(&mut self, partitions: &HashSet<u32>) {
        if let Some(base) = self.base.as_mut() {
            base.files
                .retain(|f| f.partition.is_none_or(|p| !partitions.contains(&p)));
            base.rows = base.files.iter().map(|f| f.rows).sum();
        }
    }

    /// Add rows; they must have the writer's schema.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(StoreError::Encode {
                table: self.table.clone(),
                reason: format!(
                    "a batch's columns ({}) differ from the table's ({})",
                    describe_columns(&columns_of(&batch.schema())),
                    describe_columns(&columns_of(&self.schema))
                ),
            });
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.part.is_none() {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                    .build();
                let writer = ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(props))
                    .map_err(self.encode_err())?;
                self.part = Some(OpenPart { writer, rows: 0 });
            }
            let part = self.part.as_mut().expect("a part was just opened");
            let room = self.store.part_rows - part.rows as usize;
            let n = room.min(batch.num_rows() - offset);
            let slice = batch.slice(offset, n);
            let table = self.table.clone();
            part.writer.write(&slice).map_err(|e| StoreError::Encode {
                table,
                reason: e.to_string(),
            })?;
            part.rows += n as u64;
            offset += n;
            if part.rows as usize >= self.store.part_rows {
                self.finish_part()?;
            }
        }
        Ok(())
    }

    fn finish_part(&mut self) -> Result<(), StoreError> {
        let Some(part) = self.part.take() else {
            return Ok(());
        };
        let bytes = part.writer.into_inner().map_err(self.encode_err())?;
        let rel = format!(
            "{PARTS}/v{:06}-{:05}-{}.parquet",
            self.version,
            self.files.len(),
            self.nonce
        );
        let path = Path::from(format!("{}/{rel}", self.table));
        let entry = FileEntry {
            path: rel,
            rows: part.rows,
            bytes: bytes.len() as u64,
            sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()),
            partition: self.partition,
        };
        self.store.put(&path, Bytes::from(bytes), PutMode::Create)?;
        self.rows += part.rows;
        self.files.push(entry);
        Ok(())
    }

    /// Make the version visible, with `meta` (e.g. a source checkpoint)
    /// written atomically beside it.
    pub fn commit(
        mut self,
        meta: std::collections::BTreeMap<String, String>,
    ) -> Result<Manifest, StoreError> {
        if self.part.is_none()
            && self.files.is_empty()
            && self.base.as_ref().is_none_or(|m| m.files.is_empty())
        {
            // An empty version still has one (empty) file, so that its
            // schema can be read back.
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let writer = ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(props))
                .map_err(self.encode_err())?;
            self.part = Some(OpenPart { writer, rows: 0 });
        }
        self.finish_part()?;
        let mut files = self
            .base
            .as_ref()
            .map(|m| m.files.clone())
            .unwrap_or_default();
        let base_rows = self.base.as_ref().map_or(0, |m| m.rows);
        files.append(&mut self.files);
        let manifest = Manifest {
            table: self.table.clone(),
            version: self.version,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            rows: base_rows + self.rows,
            columns: columns_of(&self.schema),
            files,
            meta,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
        let path = TableStore::manifest_path(&self.table, self.version);
        match self
            .store
            .put_raw(&path, Bytes::from(json), PutMode::Create)
        {
            Ok(()) => Ok(manifest),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StoreError::Conflict {
                table: self.table.clone(),
                version: self.version,
            }),
            Err(e) => Err(self.store.backend(&path)(e)),
        }
    }
}
