//! A table version held in memory: its Arrow batches and an index from a
//! key column to rows. The index keeps a 64-bit hash of each key and its
//! row (16 bytes a key), not the keys themselves; every hit is confirmed
//! against the key column, and the rare keys whose hash collides with
//! another key's are kept whole in a side map.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use arrow_array::{Array, RecordBatch, StringArray};

use super::{Manifest, StoreError, TableStore};

/// The keys of the index are already hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; keep a sane fallback anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// SipHash with fixed keys: the same key hashes the same in every process,
/// and keys (ID numbers) are not attacker-chosen in bulk.
fn key_hash(key: &str) -> u64 {
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    h.write(key.as_bytes());
    h.finish()
}

/// The batch and row of a global row number, given each batch's first row.
fn locate(starts: &[u32], global: u32) -> (usize, usize) {
    let b = starts.partition_point(|&s| s <= global) - 1;
    (b, (global - starts[b]) as usize)
}

#[derive(Debug)]
pub struct LoadedTable {
    pub manifest: Manifest,
    pub batches: Vec<RecordBatch>,
    /// First global row of each batch, for mapping a row to its batch.
    starts: Vec<u32>,
    keys: Vec<StringArray>,
    index: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    /// Keys whose hash another key already had.
    collided: HashMap<String, u32>,
    columns: HashMap<String, usize>,
    len: usize,
}

impl LoadedTable {
    /// Read `manifest`'s version from `store` (every file checked) and
    /// index it by the string column `key`.
    pub fn load(store: &TableStore, manifest: Manifest, key: &str) -> Result<Self, StoreError> {
        let mut batches = Vec::new();
        store.read_each(&manifest, &mut |b| {
            batches.push(b);
            Ok(())
        })?;
        LoadedTable::new(manifest, batches, key)
    }

    /// Index `batches` by the string column `key`. A key that appears twice
    /// resolves to its last row.
    pub fn new(
        manifest: Manifest,
        batches: Vec<RecordBatch>,
        key: &str,
    ) -> Result<Self, StoreError> {
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if total > u32::MAX as usize {
            return Err(StoreError::Encode {
                table: manifest.table.clone(),
                reason: format!("{total} rows is more than one table can index"),
            });
        }
        let mut keys = Vec::with_capacity(batches.len());
        let mut starts = Vec::with_capacity(batches.len());
        let mut start = 0u32;
        for batch in &batches {
            let col = batch
                .column_by_name(key)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| StoreError::MissingColumn {
                    table: manifest.table.clone(),
                    column: key.to_string(),
                })?;
            keys.push(col.clone());
            starts.push(start);
            start += batch.num_rows() as u32;
        }
        let columns = batches
            .first()
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (f.name().clone(), i))
                    .collect()
            })
            .unwrap_or_default();
        let mut t = LoadedTable {
            manifest,
            batches,
            starts,
            keys,
            index: HashMap::with_capacity_and_hasher(total, BuildHasherDefault::default()),
            collided: HashMap::new(),
            columns,
            len: 0,
        };
        for b in 0..t.keys.len() {
            let col = t.keys[b].clone();
            for r in 0..col.len() {
                if col.is_null(r) {
                    continue;
                }
                let k = col.value(r);
                let global = t.starts[b] + r as u32;
                match t.index.entry(key_hash(k)) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(global);
                        t.len += 1;
                    }
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        let (ob, or) = locate(&t.starts, *o.get());
                        if t.keys[ob].value(or) == k {
                            o.insert(global);
                        } else if t.collided.insert(k.to_string(), global).is_none() {
                            t.len += 1;
                        }
                    }
                }
            }
        }
        Ok(t)
    }

    fn locate(&self, global: u32) -> (usize, usize) {
        locate(&self.starts, global)
    }

    /// The batch and row of a key.
    pub fn row(&self, key: &str) -> Option<(&RecordBatch, usize)> {
        let global = match self.index.get(&key_hash(key)) {
            Some(&g) => {
                let (b, r) = self.locate(g);
                if self.keys[b].value(r) == key {
                    Some(g)
                } else {
                    self.collided.get(key).copied()
                }
            }
            None => None,
        }?;
        let (b, r) = self.locate(global);
        Some((&self.batches[b], r))
    }

    /// The position of a column in every batch.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.get(name).copied()
    }

    /// A string cell by column position, `None` when null or not a string.
    pub fn cell_at(batch: &RecordBatch, row: usize, column: usize) -> Option<&str> {
        let col = batch
            .column(column)
            .as_any()
            .downcast_ref::<StringArray>()?;
        (!col.is_null(row)).then(|| col.value(row))
    }

    /// A string cell of a row, `None` when the column is missing or null.
    pub fn cell<'a>(batch: &'a RecordBatch, row: usize, column: &str) -> Option<&'a str> {
        let col = batch
            .column_by_name(column)?
            .as_any()
            .downcast_ref::<StringArray>()?;
        (!col.is_null(row)).then(|| col.value(row))
    }

    /// Distinct keys indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held: the Arrow buffers plus the index.
    pub fn memory_bytes(&self) -> usize {
        let data: usize = self
            .batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        let index = self.index.capacity() * (std::mem::size_of::<(u64, u32)>() + 1);
        data + index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, Schema};

    fn manifest() -> Manifest {
        Manifest {
            table: "t".into(),
            version: 1,
            created_at: "2026-11-27T00:00:00.000Z".into(),
            rows: 0,
            columns: vec![],
            files: vec![],
            meta: Default::default(),
        }
    }

    fn batch(keys: &[&str], values: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(StringArray::from(values.to_vec())),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn keys_across_batches_resolve_to_their_rows_and_the_last_duplicate_wins() {
        let t = LoadedTable::new(
            manifest(),
            vec![
                batch(&["a", "b"], &["1", "2"]),
                batch(&["c", "a"], &["3", "4"]),
            ],
            "key",
        )
        .expect("index");
        assert_eq!(t.len(), 3);
        let v = t.column("v").expect("column");
        let get = |k: &str| t.row(k).and_then(|(b, r)| LoadedTable::cell_at(b, r, v));
        assert_eq!(get("a"), Some("4"));
        assert_eq!(get("b"), Some("2"));
        assert_eq!(get("c"), Some("3"));
        assert_eq!(get("d"), None);
        assert_eq!(get(""), None);
    }

    #[test]
    fn colliding_hashes_are_resolved_by_the_key_itself() {
        let mut t =
            LoadedTable::new(manifest(), vec![batch(&["a", "b"], &["1", "2"])], "key").expect("x");
        // Force a collision: make "b"'s slot hold "a"'s row, as if both keys
        // hashed alike, with "b" kept in the side map.
        let b_row = t.index[&key_hash("b")];
        t.index.insert(key_hash("b"), t.index[&key_hash("a")]);
        t.collided.insert("b".into(), b_row);
        let v = t.column("v").expect("column");
        let get = |k: &str| t.row(k).and_then(|(b, r)| LoadedTable::cell_at(b, r, v));
        assert_eq!(get("b"), Some("2"));
        assert_eq!(get("a"), Some("1"));
    }

    #[test]
    fn a_missing_key_column_is_named() {
        let err = LoadedTable::new(manifest(), vec![batch(&["a"], &["1"])], "id").unwrap_err();
        assert_eq!(err.to_string(), "store: table t has no column `id`");
    }
}
