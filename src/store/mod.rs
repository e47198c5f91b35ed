//! Versioned tables: immutable Parquet files (zstd) with a manifest per
//! version, made visible by an atomic switch of the table's `CURRENT`
//! pointer; and the in-memory form (Arrow batches plus a subject-key index)
//! that lookups read.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use arrow_array::{Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

const CURRENT: &str = "CURRENT";
const MANIFEST: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("store: {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("store: cannot encode table {table}: {reason}")]
    Encode { table: String, reason: String },
    #[error("store: table {table} has no column `{column}`")]
    MissingColumn { table: String, column: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// What one version of a table consists of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub table: String,
    pub version: u64,
    pub created_at: String,
    pub rows: u64,
    pub files: Vec<FileEntry>,
}

/// The table store seam: local files today, object storage when the broker
/// runs as several replicas (DESIGN.md §8).
pub trait TableStore: Send + Sync + 'static {
    /// Write `batches` as a new version of `table` and make it current.
    fn commit(&self, table: &str, batches: &[RecordBatch]) -> Result<Manifest, StoreError>;
    /// The current version's manifest, if the table exists.
    fn current(&self, table: &str) -> Result<Option<Manifest>, StoreError>;
    /// Read a version back, checking every file against its manifest.
    fn read(&self, manifest: &Manifest) -> Result<Vec<RecordBatch>, StoreError>;
}

/// Tables under one local directory:
/// `<root>/<table>/v000001/{part-00000.parquet,manifest.json}` and
/// `<root>/<table>/CURRENT` naming the visible version.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    fn version_dir(&self, table: &str, version: u64) -> PathBuf {
        self.root.join(table).join(format!("v{version:06}"))
    }
}

/// Write `bytes` to `path` durably via a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// A writer that hashes what passes through it.
struct HashingWriter {
    file: File,
    digest: ring::digest::Context,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.digest.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl TableStore for LocalStore {
    fn commit(&self, table: &str, batches: &[RecordBatch]) -> Result<Manifest, StoreError> {
        // One writer per table at a time, across processes: two pulls must
        // not pick the same version number.
        let table_dir = self.root.join(table);
        fs::create_dir_all(&table_dir).map_err(io_err(&table_dir))?;
        let lock_path = table_dir.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        let version = self.current(table)?.map_or(1, |m| m.version + 1);
        let dir = self.version_dir(table, version);
        if dir.exists() {
            // Left over by a crash before CURRENT moved: never visible.
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let name = "part-00000.parquet".to_string();
        let path = dir.join(&name);
        let file = File::create(&path).map_err(io_err(&path))?;
        let writer = HashingWriter {
            file,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
        };
        let encode = |e: parquet::errors::ParquetError| StoreError::Encode {
            table: table.to_string(),
            reason: e.to_string(),
        };
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| StoreError::Encode {
                table: table.to_string(),
                reason: "no batches to write (an empty table still needs one, with zero rows)"
                    .into(),
            })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let mut w = ArrowWriter::try_new(writer, schema, Some(props)).map_err(encode)?;
        let mut rows = 0u64;
        for b in batches {
            w.write(b).map_err(encode)?;
            rows += b.num_rows() as u64;
        }
        let hw = w.into_inner().map_err(encode)?;
        hw.file.sync_all().map_err(io_err(&path))?;
        let entry = FileEntry {
            name,
            bytes: hw.bytes,
            sha256: hex::encode(hw.digest.finish().as_ref()),
        };
        let manifest = Manifest {
            table: table.to_string(),
            version,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            rows,
            files: vec![entry],
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
        write_atomic(&dir.join(MANIFEST), &json)?;
        write_atomic(
            &self.root.join(table).join(CURRENT),
            format!("v{version:06}\n").as_bytes(),
        )?;
        Ok(manifest)
    }

    fn current(&self, table: &str) -> Result<Option<Manifest>, StoreError> {
        let pointer = self.root.join(table).join(CURRENT);
        let name = match fs::read_to_string(&pointer) {
            Ok(s) => s.trim().to_string(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&pointer)(e)),
        };
        let path = self.root.join(table).join(&name).join(MANIFEST);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: format!("unreadable manifest: {e}"),
            })?;
        Ok(Some(manifest))
    }

    fn read(&self, manifest: &Manifest) -> Result<Vec<RecordBatch>, StoreError> {
        let dir = self.version_dir(&manifest.table, manifest.version);
        let mut out = Vec::new();
        for entry in &manifest.files {
            let path = dir.join(&entry.name);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let corrupt = |reason: String| StoreError::Corrupt {
                path: path.clone(),
                reason,
            };
            if bytes.len() as u64 != entry.bytes {
                return Err(corrupt(format!(
                    "{} bytes where the manifest says {}",
                    bytes.len(),
                    entry.bytes
                )));
            }
            let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
            if digest != entry.sha256 {
                return Err(corrupt("checksum does not match the manifest".into()));
            }
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                .and_then(|b| b.with_batch_size(65_536).build())
                .map_err(|e| corrupt(e.to_string()))?;
            for b in reader {
                out.push(b.map_err(|e| corrupt(e.to_string()))?);
            }
        }
        Ok(out)
    }
}

/// The current version of `table`, loaded and indexed by `key`; `None`
/// before the table's first version.
pub fn load_current(
    store: &dyn TableStore,
    table: &str,
    key: &str,
) -> Result<Option<LoadedTable>, StoreError> {
    match store.current(table)? {
        Some(m) => {
            let batches = store.read(&m)?;
            LoadedTable::new(m, batches, key).map(Some)
        }
        None => Ok(None),
    }
}

/// A table version held in memory with an index from a key column to rows.
#[derive(Debug)]
pub struct LoadedTable {
    pub manifest: Manifest,
    pub batches: Vec<RecordBatch>,
    index: HashMap<String, (u32, u32)>,
}

impl LoadedTable {
    /// Index `batches` by the string column `key`.
    pub fn new(
        manifest: Manifest,
        batches: Vec<RecordBatch>,
        key: &str,
    ) -> Result<Self, StoreError> {
        // The manifest's row count only sizes the index; it is not trusted.
        let mut index = HashMap::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
        for (b, batch) in batches.iter().enumerate() {
            let col = batch
                .column_by_name(key)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| StoreError::MissingColumn {
                    table: manifest.table.clone(),
                    column: key.to_string(),
                })?;
            for r in 0..col.len() {
                index.insert(col.value(r).to_string(), (b as u32, r as u32));
            }
        }
        Ok(LoadedTable {
            manifest,
            batches,
            index,
        })
    }

    /// The batch and row of a key.
    pub fn row(&self, key: &str) -> Option<(&RecordBatch, usize)> {
        self.index
            .get(key)
            .map(|&(b, r)| (&self.batches[b as usize], r as usize))
    }

    /// A string cell of a row, `None` when the column is missing or null.
    pub fn cell<'a>(batch: &'a RecordBatch, row: usize, column: &str) -> Option<&'a str> {
        let col = batch
            .column_by_name(column)?
            .as_any()
            .downcast_ref::<StringArray>()?;
        (!col.is_null(row)).then(|| col.value(row))
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::StringArray;
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(keys: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("key", DataType::Utf8, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(keys.to_vec()))])
            .expect("batch")
    }

    #[test]
    fn versions_commit_read_back_and_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("open");
        assert_eq!(store.current("t").expect("current"), None);
        let m1 = store.commit("t", &[batch(&["a", "b"])]).expect("commit");
        let m2 = store.commit("t", &[batch(&["c"])]).expect("commit");
        assert_eq!((m1.version, m2.version), (1, 2));
        assert_eq!(store.current("t").expect("current"), Some(m2.clone()));
        // The old version stays readable: versions are immutable.
        let old =
            LoadedTable::new(m1.clone(), store.read(&m1).expect("read"), "key").expect("load");
        assert!(old.row("b").is_some() && old.row("c").is_none());
        let new =
            LoadedTable::new(m2.clone(), store.read(&m2).expect("read"), "key").expect("load");
        assert_eq!(new.len(), 1);
    }

    #[test]
    fn concurrent_commits_get_distinct_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let store = LocalStore::open(&root).expect("open");
                    let key = format!("k{i}");
                    store
                        .commit("t", &[batch(&[key.as_str()])])
                        .expect("commit")
                        .version
                })
            })
            .collect();
        let mut versions: Vec<u64> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        versions.sort_unstable();
        assert_eq!(versions, vec![1, 2, 3, 4]);
        let store = LocalStore::open(&root).expect("open");
        for v in 1..=4 {
            let m: Manifest = serde_json::from_slice(
                &fs::read(root.join(format!("t/v{v:06}/manifest.json"))).expect("manifest"),
            )
            .expect("json");
            assert_eq!(
                store.read(&m).expect("every version stays readable").len(),
                1
            );
        }
    }

    #[test]
    fn a_damaged_file_is_named_on_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("open");
        let m = store.commit("t", &[batch(&["a"])]).expect("commit");
        let path = dir.path().join("t/v000001/part-00000.parquet");
        let mut bytes = fs::read(&path).expect("read");
        bytes.truncate(bytes.len() / 2);
        fs::write(&path, bytes).expect("write");
        let err = store.read(&m).unwrap_err().to_string();
        assert!(err.contains("t/v000001/part-00000.parquet"), "{err}");
        assert!(err.contains("bytes where the manifest says"), "{err}");
    }
}
