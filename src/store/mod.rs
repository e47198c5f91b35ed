//! Versioned tables: immutable Parquet files (zstd) written through the
//! `object_store` crate, with a manifest per version; the manifest write is
//! the commit point, so a version is either wholly visible or not at all.
//! Also the in-memory form (Arrow batches plus a subject-key index) that
//! lookups read, time travel (a version as of a number or a timestamp),
//! retention and garbage collection.
//!
//! Layout under the store root, one folder per table:
//!
//! ```text
//! <table>/manifests/v000007.json       one per committed version
//! <table>/parts/v000007-00000-<nonce>.parquet
//! <table>/.lock                         local backend: one writer at a time
//! ```
//!
//! A part file is written once and never changed; a version appended to an
//! earlier one lists the earlier version's parts beside its own, so parts
//! can be shared by several versions. A file that no manifest lists is an
//! orphan of a write that never committed; garbage collection removes it.

mod loaded;
mod table_store;

#[cfg(test)]
mod contract;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use loaded::{LoadedTable, Row};
pub use table_store::{TableStore, TableWriter};

/// An Arrow array type a stored column is read as, with the word its error
/// uses for it.
pub trait ColumnType: arrow_array::Array + 'static {
    const KIND: &'static str;
}

impl ColumnType for arrow_array::StringArray {
    const KIND: &'static str = "text";
}
impl ColumnType for arrow_array::UInt64Array {
    const KIND: &'static str = "integer";
}
impl ColumnType for arrow_array::UInt32Array {
    const KIND: &'static str = "integer";
}
impl ColumnType for arrow_array::Float64Array {
    const KIND: &'static str = "float";
}

/// Column `name` of a stored batch as `A`; else what is wrong, as
/// "no text column `name`", for the caller to say where.
pub fn column<'a, A: ColumnType>(
    batch: &'a arrow_array::RecordBatch,
    name: &str,
) -> Result<&'a A, String> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<A>())
        .ok_or_else(|| format!("no {} column `{name}`", A::KIND))
}

/// Rows per Parquet part file: bounds the memory a write or a load holds
/// beyond the table itself.
pub const PART_ROWS: usize = 262_144;
/// Rows per Parquet row group and per batch read back.
pub const ROW_GROUP_ROWS: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {path}: {reason}")]
    Backend { path: String, reason: String },
    #[error("store: {path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("store: cannot encode table {table}: {reason}")]
    Encode { table: String, reason: String },
    #[error("store: table {table} has no column `{column}`")]
    MissingColumn { table: String, column: String },
    #[error(
        "store: table {table}: version {version} was committed by another writer meanwhile; nothing of this write is visible, run it again"
    )]
    Conflict { table: String, version: u64 },
    #[error("store: table {table} has no version {version} (versions: {known})")]
    NoSuchVersion {
        table: String,
        version: u64,
        known: String,
    },
    #[error("store: table {table} has no version committed at or before {at}")]
    NothingAsOf { table: String, at: String },
    #[error("store: `{name}` is not a valid table name: {reason}")]
    InvalidTable { name: String, reason: String },
    #[error("store: table {table}: cannot append: {reason}")]
    Append { table: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the table's folder, e.g. `parts/v000001-00000-….parquet`.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// The partition the file's rows belong to, for tables written in
    /// partitions (see [`TableWriter::partition`]): a later version can
    /// replace one partition's files and keep the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

/// What one version of a table consists of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub table: String,
    pub version: u64,
    /// RFC 3339, UTC, milliseconds.
    pub created_at: String,
    pub rows: u64,
    pub columns: Vec<ColumnInfo>,
    pub files: Vec<FileEntry>,
    /// Written with the version, atomically: e.g. a source's checkpoint.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl Manifest {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// The Arrow schema the manifest's columns describe.
    pub fn schema(&self) -> Result<arrow_schema::SchemaRef, StoreError> {
        let fields = self
            .columns
            .iter()
            .map(|c| {
                let t: arrow_schema::DataType =
                    c.data_type.parse().map_err(|e| StoreError::Corrupt {
                        path: format!("{} v{}", self.table, self.version),
                        reason: format!("column {}: {e}", c.name),
                    })?;
                Ok(arrow_schema::Field::new(&c.name, t, c.nullable))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(std::sync::Arc::new(arrow_schema::Schema::new(fields)))
    }

    pub fn created(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.created_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Which version of a table to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    Current,
    Version(u64),
    /// The newest version committed at or before this time: what a broker
    /// that reloaded at once would have served then.
    Time(DateTime<Utc>),
}

impl AsOf {
    /// `current`, a version number (`7` or `v000007`), or an RFC 3339 time.
    pub fn parse(s: &str) -> Result<AsOf, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("current") {
            return Ok(AsOf::Current);
        }
        let digits = s.strip_prefix('v').unwrap_or(s);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return digits
                .parse()
                .map(AsOf::Version)
                .map_err(|e| format!("`{s}`: {e}"));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| AsOf::Time(t.with_timezone(&Utc)))
            .map_err(|_| {
                format!(
                    "`{s}` is neither `current`, a version number nor an RFC 3339 time such as 2026-11-27T10:00:00+08:00"
                )
            })
    }
}

/// How long old versions are kept. A version is removed only when it is
/// not the current one, not among the newest `keep_versions`, and older
/// than `keep_days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_versions: usize,
    pub keep_days: u32,
}

impl Default for Retention {
    /// Ten versions and a year: auditors reproduce what was served from
    /// versions still held (DESIGN.md §5, invariant 3).
    fn default() -> Self {
        Retention {
            keep_versions: 10,
            keep_days: 365,
        }
    }
}

/// What a garbage collection removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub table: String,
    pub versions_removed: Vec<u64>,
    pub files_removed: Vec<String>,
    pub bytes_freed: u64,
    /// Skipped because another process holds the table's write lock.
    pub busy: bool,
}

/// Table names are folder names: lower-case ASCII letters, digits, `-`,
/// `_` and `.`, not starting with `.`.
pub fn check_table_name(name: &str) -> Result<(), StoreError> {
    let bad = |reason: &str| StoreError::InvalidTable {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name.len() > 128 {
        return Err(bad("must be 1 to 128 characters"));
    }
    if name.starts_with('.') {
        return Err(bad("must not start with `.`"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad(
            "only lower-case ASCII letters, digits, `-`, `_` and `.` are allowed",
        ));
    }
    Ok(())
}

/// The manifest of `table` as of `at`.
pub fn manifest_as_of(store: &TableStore, table: &str, at: &AsOf) -> Result<Manifest, StoreError> {
    let versions = store.versions(table)?;
    let known = || {
        if versions.is_empty() {
            "none".to_string()
        } else {
            format!(
                "{}..={}",
                versions.first().unwrap_or(&0),
                versions.last().unwrap_or(&0)
            )
        }
    };
    match at {
        AsOf::Current => match versions.last() {
            Some(&v) => store.manifest(table, v),
            None => Err(StoreError::NoSuchVersion {
                table: table.to_string(),
                version: 0,
                known: known(),
            }),
        },
        AsOf::Version(v) => {
            if versions.contains(v) {
                store.manifest(table, *v)
            } else {
                Err(StoreError::NoSuchVersion {
                    table: table.to_string(),
                    version: *v,
                    known: known(),
                })
            }
        }
        AsOf::Time(t) => {
            // Versions are committed in order, so created_at grows with them.
            for &v in versions.iter().rev() {
                let m = store.manifest(table, v)?;
                if m.created().is_some_and(|c| c <= *t) {
                    return Ok(m);
                }
            }
            Err(StoreError::NothingAsOf {
                table: table.to_string(),
                at: t.to_rfc3339(),
            })
        }
    }
}

/// What [`load_latest_good`] found: the table, if a version loaded, and
/// each newer version that did not, with why.
pub type LatestGood = (Option<LoadedTable>, Vec<(u64, StoreError)>);

/// The newest version of `table` that loads, newest first, with the error
/// of every newer version that did not (a damaged or truncated file, an
/// unreadable manifest). `None` when no version loads.
pub fn load_latest_good(
    store: &TableStore,
    table: &str,
    key: &str,
    newer_than: Option<u64>,
) -> Result<LatestGood, StoreError> {
    let mut failures = Vec::new();
    for v in store.versions(table)?.into_iter().rev() {
        if newer_than.is_some_and(|n| v <= n) {
            break;
        }
        let loaded = store
            .manifest(table, v)
            .and_then(|m| LoadedTable::load(store, m, key));
        match loaded {
            Ok(t) => return Ok((Some(t), failures)),
            Err(e) => failures.push((v, e)),
        }
    }
    Ok((None, failures))
}
