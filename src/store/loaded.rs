//! A table version held in memory for point lookups. Columnar batches are
//! the wrong shape here: reading one record touches every column's offsets,
//! validity and values — three cache misses per cell, about ten
//! microseconds for a golden record. So a loaded table keeps each row's
//! cells packed contiguously (a record is a few cache lines), with the
//! columns whose values repeat (source agencies, dates, codes) interned in
//! a per-column dictionary, and an index from a key column to rows that
//! keeps a 64-bit hash of each key and its row (16 bytes a key), not the
//! keys: every hit is confirmed against the stored key, and the rare keys
//! whose hash collides with another key's are kept whole in a side map.
//! Batches are consumed as they are read, so loading holds one batch
//! beside the packed rows.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use arrow_array::{Array, RecordBatch, StringArray};
use arrow_schema::SchemaRef;

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
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
    h.write(key.as_bytes());
    h.finish()
}

// Cell encoding: a tag byte, then for INLINE a LEB128 length and the bytes,
// for INTERNED a LEB128 dictionary id. A row packs its value cells before
// its provenance cells (columns named `field#…`), so a bulk read of a few
// fields stops early: exporting six population fields walks 8 cells of a
// row, not the 28 it would in column order.
const NULL: u8 = 0;
const INLINE: u8 = 1;
const INTERNED: u8 = 2;
/// The same value as the column before it in the schema (a raw value equal
/// to its normalised one), whose cell is packed earlier in the row.
const SAME_AS_PREVIOUS: u8 = 3;

/// A column is interned when its first batch has at most this share of
/// distinct values, and stops taking new dictionary entries at the cap.
const INTERN_MAX_DISTINCT_SHARE: f64 = 0.2;
const INTERN_CAP: usize = 1 << 20;

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(data: &[u8], pos: &mut usize) -> u64 {
    let mut n = 0u64;
    let mut shift = 0;
    loop {
        let b = data[*pos];
        *pos += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return n;
        }
        shift += 7;
    }
}

/// A column's dictionary: values by id, and (while loading) ids by value.
#[derive(Debug, Default)]
struct Dictionary {
    values: Vec<Box<str>>,
    ids: HashMap<Box<str>, u32>,
    open: bool,
}

#[derive(Debug)]
pub struct LoadedTable {
    pub manifest: Manifest,
    schema: SchemaRef,
    columns: HashMap<String, usize>,
    /// Per column (its position in the schema), where its cell is in a
    /// packed row: value columns first, provenance columns after.
    slots: Vec<u32>,
    /// The columns in the order their cells are packed.
    packed: Vec<usize>,
    /// `None` for a column stored inline.
    dictionaries: Vec<Option<Dictionary>>,
    data: Vec<u8>,
    /// Where each row's cells start in `data`; one more entry at the end.
    /// A row holds a cell for every column, in `packed` order.
    row_starts: Vec<u64>,
    /// Per column, one bit a row (row `r` at bit `r % 64` of word `r / 64`):
    /// whether the row has a value there. Bulk reads select rows 64 at a
    /// time from these instead of walking every row's cells.
    present: Vec<Vec<u64>>,
    key_column: usize,
    index: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    /// Keys whose hash another key already had.
    collided: HashMap<String, u32>,
    len: usize,
}

/// One row of a loaded table, its cells located once.
#[derive(Clone)]
pub struct Row<'a> {
    table: &'a LoadedTable,
    cells: &'a [u8],
    /// Per packed cell, where its tag is in `cells`.
    at: Vec<u32>,
}

impl<'a> Row<'a> {
    fn new(table: &'a LoadedTable, cells: &'a [u8]) -> Row<'a> {
        let mut at = Vec::with_capacity(table.columns.len());
        let mut pos = 0;
        while pos < cells.len() {
            at.push(pos as u32);
            skip_cell(cells, &mut pos);
        }
        Row { table, cells, at }
    }

    /// The cell of column position `column`, `None` when null or absent.
    pub fn get_at(&self, column: usize) -> Option<&'a str> {
        self.table.resolve(self.cells, &self.at, column)
    }

    /// The cell of a column by name.
    pub fn get(&self, column: &str) -> Option<&'a str> {
        self.table.column(column).and_then(|c| self.get_at(c))
    }

    /// Every column of the row as a JSON object (nulls as null).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.table
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                (
                    f.name().clone(),
                    self.get_at(i)
                        .map_or(serde_json::Value::Null, serde_json::Value::from),
                )
            })
            .collect()
    }
}

/// One column of a batch as strings: a string column as it is, any other
/// as Arrow displays it.
enum Cells<'a> {
    Str(&'a StringArray),
    Other(Vec<Option<String>>),
}

impl Cells<'_> {
    fn of(col: &arrow_array::ArrayRef) -> Cells<'_> {
        match col.as_any().downcast_ref::<StringArray>() {
            Some(s) => Cells::Str(s),
            None => Cells::Other(
                (0..col.len())
                    .map(|r| {
                        (!col.is_null(r))
                            .then(|| arrow_cast::display::array_value_to_string(col, r).ok())
                            .flatten()
                    })
                    .collect(),
            ),
        }
    }

    fn get(&self, r: usize) -> Option<&str> {
        match self {
            Cells::Str(s) => (!s.is_null(r)).then(|| s.value(r)),
            Cells::Other(v) => v[r].as_deref(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Cells::Str(s) => s.len(),
            Cells::Other(v) => v.len(),
        }
    }
}

impl LoadedTable {
    /// Read `manifest`'s version from `store` (every file checked) and
    /// index it by the string column `key`, one batch at a time.
    pub fn load(store: &TableStore, manifest: Manifest, key: &str) -> Result<Self, StoreError> {
        let mut table: Option<LoadedTable> = None;
        let m = manifest.clone();
        store.read_each(&manifest, &mut |b| {
            if table.is_none() {
                table = Some(LoadedTable::empty(m.clone(), b.schema(), key)?);
            }
            table.as_mut().expect("created above").append(&b)
        })?;
        let mut t = match table {
            Some(t) => t,
            // No rows: the columns come from the manifest.
            None => LoadedTable::empty(manifest.clone(), manifest.schema()?, key)?,
        };
        t.seal();
        Ok(t)
    }

    /// Index `batches` by the string column `key`. A key that appears twice
    /// resolves to its last row.
    pub fn new(
        manifest: Manifest,
        batches: Vec<RecordBatch>,
        key: &str,
    ) -> Result<Self, StoreError> {
        let schema =
            batches
                .first()
                .map(|b| b.schema())
                .ok_or_else(|| StoreError::MissingColumn {
                    table: manifest.table.clone(),
                    column: key.to_string(),
                })?;
        let mut t = LoadedTable::empty(manifest, schema, key)?;
        for b in &batches {
            t.append(b)?;
        }
        t.seal();
        Ok(t)
    }

    fn empty(manifest: Manifest, schema: SchemaRef, key: &str) -> Result<Self, StoreError> {
        let columns: HashMap<String, usize> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().clone(), i))
            .collect();
        let key_column = *columns.get(key).ok_or_else(|| StoreError::MissingColumn {
            table: manifest.table.clone(),
            column: key.to_string(),
        })?;
        if schema.field(key_column).data_type() != &arrow_schema::DataType::Utf8 {
            return Err(StoreError::MissingColumn {
                table: manifest.table.clone(),
                column: format!("{key} (as strings)"),
            });
        }
        let n = schema.fields().len();
        let provenance = |c: &usize| schema.field(*c).name().contains('#');
        let packed: Vec<usize> = (0..n)
            .filter(|c| !provenance(c))
            .chain((0..n).filter(provenance))
            .collect();
        let mut slots = vec![0u32; n];
        for (slot, &c) in packed.iter().enumerate() {
            slots[c] = slot as u32;
        }
        let rows = manifest.rows as usize;
        // Packed rows take about three times their Parquet bytes; reserving
        // up front lets the kernel back them with huge pages from the first
        // touch (random lookups then miss the TLB far less).
        let data = Vec::with_capacity((manifest.bytes() as usize).saturating_mul(3));
        let row_starts = Vec::with_capacity(rows + 1);
        advise_huge_pages(&data);
        advise_huge_pages(&row_starts);
        Ok(LoadedTable {
            dictionaries: (0..schema.fields().len()).map(|_| None).collect(),
            present: (0..schema.fields().len())
                .map(|_| Vec::with_capacity(rows.div_ceil(64)))
                .collect(),
            schema,
            columns,
            slots,
            packed,
            data,
            row_starts,
            key_column,
            index: HashMap::with_capacity_and_hasher(rows, BuildHasherDefault::default()),
            collided: HashMap::new(),
            len: 0,
            manifest,
        })
    }

    fn append(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(StoreError::Corrupt {
                path: format!("{} v{}", self.manifest.table, self.manifest.version),
                reason: "the files of one version differ in their columns".into(),
            });
        }
        let cells: Vec<Cells<'_>> = batch.columns().iter().map(Cells::of).collect();
        if self.row_starts.is_empty() {
            // Decide per column from the first batch whether to intern.
            for (c, col) in cells.iter().enumerate() {
                let mut distinct = std::collections::HashSet::new();
                for r in 0..col.len() {
                    if let Some(v) = col.get(r) {
                        distinct.insert(v);
                    }
                }
                if c != self.key_column
                    && (distinct.len() as f64) <= INTERN_MAX_DISTINCT_SHARE * col.len() as f64
                {
                    self.dictionaries[c] = Some(Dictionary {
                        open: true,
                        ..Dictionary::default()
                    });
                }
            }
        }
        for r in 0..batch.num_rows() {
            let global = self.row_starts.len() as u32;
            self.row_starts.push(self.data.len() as u64);
            let (word, bit) = (global as usize / 64, 1u64 << (global % 64));
            if bit == 1 {
                for p in &mut self.present {
                    p.push(0);
                }
            }
            for &c in &self.packed {
                let value = cells[c].get(r);
                if value.is_some() {
                    self.present[c][word] |= bit;
                }
                // "Same as the column before" only where that column's cell
                // is packed before this one.
                let same_as_previous = |v: &str| {
                    c > 0 && self.slots[c - 1] < self.slots[c] && cells[c - 1].get(r) == Some(v)
                };
                match value {
                    None => self.data.push(NULL),
                    Some(v) if same_as_previous(v) => self.data.push(SAME_AS_PREVIOUS),
                    Some(v) => {
                        let id = match &mut self.dictionaries[c] {
                            Some(d) => match d.ids.get(v) {
                                Some(&id) => Some(id),
                                None if d.open && d.values.len() < INTERN_CAP => {
                                    let id = d.values.len() as u32;
                                    d.values.push(v.into());
                                    d.ids.insert(v.into(), id);
                                    Some(id)
                                }
                                None => None,
                            },
                            None => None,
                        };
                        match id {
                            Some(id) => {
                                self.data.push(INTERNED);
                                put_varint(&mut self.data, u64::from(id));
                            }
                            None => {
                                self.data.push(INLINE);
                                put_varint(&mut self.data, v.len() as u64);
                                self.data.extend_from_slice(v.as_bytes());
                            }
                        }
                    }
                }
            }
            if let Some(k) = cells[self.key_column].get(r) {
                let h = key_hash(k);
                match self.index.get(&h).copied() {
                    None => {
                        self.index.insert(h, global);
                        self.len += 1;
                    }
                    // The same key again (the last row wins), or another
                    // key with the same hash (kept whole aside).
                    Some(held) if self.row_at(held).get_at(self.key_column) == Some(k) => {
                        self.index.insert(h, global);
                    }
                    Some(_) => {
                        if self.collided.insert(k.to_string(), global).is_none() {
                            self.len += 1;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Done loading: close the dictionaries, drop their reverse maps, and
    /// give back spare capacity.
    fn seal(&mut self) {
        self.row_starts.push(self.data.len() as u64);
        for d in self.dictionaries.iter_mut().flatten() {
            d.open = false;
            d.ids = HashMap::new();
            d.values.shrink_to_fit();
        }
        self.data.shrink_to_fit();
        self.row_starts.shrink_to_fit();
        for p in &mut self.present {
            p.shrink_to_fit();
        }
    }

    fn row_at(&self, global: u32) -> Row<'_> {
        Row::new(self, cells_of(&self.data, &self.row_starts, global))
    }

    /// The position of the column the table is indexed by (its subjects' keys).
    pub fn key_column(&self) -> usize {
        self.key_column
    }

    /// The row of a key.
    pub fn row(&self, key: &str) -> Option<Row<'_>> {
        let held = *self.index.get(&key_hash(key))?;
        let row = self.row_at(held);
        if row.get_at(self.key_column) == Some(key) {
            return Some(row);
        }
        self.collided.get(key).map(|&g| self.row_at(g))
    }

    /// Whether row `row` (a position below [`LoadedTable::rows`]) is the
    /// one a lookup of its key answers: false for a row with no key and
    /// for one a later row of the same key replaced. Bulk reads (exports)
    /// walk positions and skip the rest, so they serve what lookups serve.
    pub fn serves_row(&self, row: usize) -> bool {
        if self.len == self.rows() {
            // Every row holds a distinct key: nothing to skip.
            return true;
        }
        let global = row as u32;
        match self.row_at(global).get_at(self.key_column) {
            None => false,
            Some(k) => {
                self.index.get(&key_hash(k)) == Some(&global)
                    || self.collided.get(k) == Some(&global)
            }
        }
    }

    /// A reader of the cells of `columns` (positions, in any order; an
    /// unknown position reads as null) row after row, for bulk reads that
    /// visit every row without building a [`Row`].
    pub fn reader(&self, columns: &[usize]) -> CellReader<'_> {
        let mut wanted: Vec<(u32, u32)> = columns
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c < self.slots.len())
            .map(|(i, &c)| (self.slots[c], i as u32))
            .collect();
        wanted.sort_unstable();
        CellReader {
            table: self,
            walk: wanted.last().map_or(0, |&(slot, _)| slot as usize + 1),
            wanted: wanted
                .into_iter()
                .map(|(_, i)| (columns[i as usize], i as usize))
                .collect(),
            at: Vec::new(),
            walk_bytes: 0,
            out: vec![None; columns.len()],
        }
    }

    /// Which of rows `64 * word ..` (bit `i` for row `64 * word + i`) have
    /// a value in any of `columns` (positions; unknown ones have none):
    /// where a [`CellReader`] would find one, for selecting rows
    /// before reading them.
    pub fn any_present(&self, word: usize, columns: &[usize]) -> u64 {
        columns
            .iter()
            .filter_map(|&c| self.present.get(c)?.get(word))
            .fold(0, |any, bits| any | bits)
    }

    /// The value of column `column` in a row's `cells`, whose packed cells
    /// start at `at` (as far as they were walked): a cell that is the same
    /// as its column's previous one reads that column's, packed before it.
    fn resolve<'a>(&'a self, cells: &'a [u8], at: &[u32], column: usize) -> Option<&'a str> {
        let mut column = column;
        loop {
            let at = *at.get(*self.slots.get(column)? as usize)? as usize;
            if cells[at] != SAME_AS_PREVIOUS {
                return self.cell_value(cells, at, column);
            }
            column = column.checked_sub(1)?;
        }
    }

    /// The value of the cell whose tag is at `at` in `cells`, of column `col`.
    fn cell_value<'a>(&'a self, cells: &'a [u8], at: usize, col: usize) -> Option<&'a str> {
        let mut pos = at + 1;
        match cells[at] {
            INLINE => {
                let n = get_varint(cells, &mut pos) as usize;
                let bytes = &cells[pos..pos + n];
                debug_assert!(std::str::from_utf8(bytes).is_ok());
                // SAFETY: `append` is the only writer of `data`, and it stores
                // an inline cell as a length and the bytes of a whole `&str`;
                // `skip_cell` and this function read back exactly those bytes.
                // Checking them again cost 13% of a bulk export.
                Some(unsafe { std::str::from_utf8_unchecked(bytes) })
            }
            INTERNED => {
                let id = get_varint(cells, &mut pos) as usize;
                self.dictionaries[col]
                    .as_ref()
                    .and_then(|d| d.values.get(id))
                    .map(|v| v.as_ref())
            }
            _ => None,
        }
    }

    /// The position of a column.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.get(name).copied()
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Distinct keys indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows held (a key that appears twice counts twice).
    pub fn rows(&self) -> usize {
        self.row_starts.len().saturating_sub(1)
    }

    /// Bytes held: packed rows, row starts, dictionaries and the index.
    pub fn memory_bytes(&self) -> usize {
        let dictionaries: usize = self
            .dictionaries
            .iter()
            .flatten()
            .map(|d| {
                d.values.capacity() * std::mem::size_of::<Box<str>>()
                    + d.values.iter().map(|v| v.len()).sum::<usize>()
            })
            .sum();
        self.data.capacity()
            + self.row_starts.capacity() * 8
            + self.present.iter().map(|p| p.capacity() * 8).sum::<usize>()
            + dictionaries
            + self.index.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
    }
}

/// Ask Linux for transparent huge pages on a large buffer's reserved
/// capacity (a hint: nothing changes where the kernel declines).
fn advise_huge_pages<T>(v: &Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < 8 << 20 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = v.as_ptr() as usize;
        let aligned = (start + PAGE - 1) & !(PAGE - 1);
        let len = (start + bytes).saturating_sub(aligned) & !(PAGE - 1);
        // SAFETY: the range lies inside this Vec's own allocation; the
        // advice only changes how the kernel backs those pages, never their
        // contents, and a failure is harmless.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
}

/// Step `pos` over the cell whose tag is at `pos`; the tag.
fn skip_cell(cells: &[u8], pos: &mut usize) -> u8 {
    let tag = cells[*pos];
    *pos += 1;
    match tag {
        INLINE => {
            let n = get_varint(cells, pos) as usize;
            *pos += n;
        }
        INTERNED => {
            get_varint(cells, pos);
        }
        _ => {}
    }
    tag
}

/// Reads the same columns of row after row: see [`LoadedTable::reader`].
pub struct CellReader<'t> {
    table: &'t LoadedTable,
    /// The columns asked for and their places in `out`, in packed order.
    wanted: Vec<(usize, usize)>,
    /// How many cells of a row to walk: through the last one wanted.
    walk: usize,
    /// Where each walked cell's tag is, in the row being read.
    at: Vec<u32>,
    /// How many bytes of its row the last read walked: what to prefetch.
    walk_bytes: usize,
    out: Vec<Option<&'t str>>,
}

impl<'t> CellReader<'t> {
    /// The cells of row `row` (a position below [`LoadedTable::rows`]), in
    /// the order the columns were given (`None` for null): one pass over
    /// the row's packed bytes that stops after the last cell wanted and
    /// decodes only the cells wanted.
    pub fn read(&mut self, row: usize) -> &[Option<&'t str>] {
        let table = self.table;
        let cells = cells_of(&table.data, &table.row_starts, row as u32);
        // Bulk reads go up the rows, and loading a row's first tag byte
        // (a cache miss) took 90% of a read: ask for a later row's cells
        // now, as many bytes as this reader walked of the last row.
        if let Some(&start) = table.row_starts.get(row + PREFETCH_ROWS_AHEAD) {
            prefetch(&table.data, start as usize, self.walk_bytes);
        }
        self.at.clear();
        let mut pos = 0;
        while self.at.len() < self.walk && pos < cells.len() {
            self.at.push(pos as u32);
            skip_cell(cells, &mut pos);
        }
        self.walk_bytes = pos;
        for &(column, i) in &self.wanted {
            self.out[i] = table.resolve(cells, &self.at, column);
        }
        &self.out
    }
}

/// How far ahead of the row it reads a [`CellReader`] prefetches.
const PREFETCH_ROWS_AHEAD: usize = 4;

/// Ask the CPU to bring `data[start..start + len]` into its caches: a hint
/// that changes no state a program can see.
#[inline]
fn prefetch(data: &[u8], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let end = start.saturating_add(len).min(data.len());
        if start >= end {
            return;
        }
        let base = data.as_ptr() as usize;
        let mut line = (base + start) & !63;
        while line < base + end {
            // SAFETY: a prefetch reads no memory the program can observe
            // and cannot fault, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
            line += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, start, len);
}

fn cells_of<'a>(data: &'a [u8], starts: &[u64], global: u32) -> &'a [u8] {
    let g = global as usize;
    let end = starts.get(g + 1).map_or(data.len(), |&e| e as usize);
    &data[starts[g] as usize..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::UInt64Array;
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

    fn batch(keys: &[&str], values: &[Option<&str>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("v", DataType::Utf8, true),
            Field::new("v#raw", DataType::Utf8, true),
            Field::new("n", DataType::UInt64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(StringArray::from(values.to_vec())),
                Arc::new(StringArray::from(values.to_vec())),
                Arc::new(UInt64Array::from_iter_values(0..keys.len() as u64)),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn keys_across_batches_resolve_to_their_rows_and_the_last_duplicate_wins() {
        let t = LoadedTable::new(
            manifest(),
            vec![
                batch(&["a", "b"], &[Some("1"), None]),
                batch(&["c", "a"], &[Some("3"), Some("4")]),
            ],
            "key",
        )
        .expect("index");
        assert_eq!((t.len(), t.rows()), (3, 4));
        let get = |k: &str, c: &str| t.row(k).and_then(|r| r.get(c));
        assert_eq!(get("a", "v"), Some("4"));
        assert_eq!(get("a", "v#raw"), Some("4"), "same as the previous cell");
        assert_eq!(get("a", "n"), Some("1"), "non-string columns as displayed");
        assert_eq!(get("b", "v"), None, "null");
        assert_eq!(get("b", "key"), Some("b"));
        assert_eq!(get("c", "v"), Some("3"));
        assert_eq!(get("c", "nope"), None);
        assert!(t.row("d").is_none() && t.row("").is_none());
        let json = t.row("a").expect("row").to_json();
        assert_eq!(json["v"], "4");
        assert_eq!(json["n"], "1");
    }

    #[test]
    fn repeated_values_are_interned_and_read_back_unchanged() {
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let values: Vec<Option<&str>> = (0..1000)
            .map(|i| Some(["xj-gat", "xj-mzt", "中文·名"][i % 3]))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let t = LoadedTable::new(manifest(), vec![batch(&refs, &values)], "key").expect("x");
        assert!(t.dictionaries[1].is_some(), "few distinct values: interned");
        assert!(
            t.dictionaries[0].is_none(),
            "the key column is never interned"
        );
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(t.row(k).and_then(|r| r.get("v")), values[i]);
        }
        // Per row: the key inline (6 bytes), a 2-byte reference, a 1-byte
        // "same as previous", and the number column.
        assert!(t.data.len() < 1000 * 16, "{}", t.data.len());
    }

    #[test]
    fn rows_with_a_value_are_found_64_at_a_time_across_batches() {
        // Batches of 50 and 100 rows: words of the bitmaps span batches.
        let keys: Vec<String> = (0..150).map(|i| format!("k{i}")).collect();
        let value = |i: usize| {
            (!i.is_multiple_of(3)).then_some(if i.is_multiple_of(5) { "x" } else { "yy" })
        };
        let batches = [0..50, 50..150]
            .into_iter()
            .map(|range| {
                let refs: Vec<&str> = keys[range.clone()].iter().map(String::as_str).collect();
                let values: Vec<Option<&str>> = range.map(value).collect();
                batch(&refs, &values)
            })
            .collect();
        let t = LoadedTable::new(manifest(), batches, "key").expect("index");
        for cols in [&[1usize][..], &[1, 2], &[0, 1], &[3], &[]] {
            for word in 0..3 {
                let want = (0..64)
                    .filter(|i| {
                        let r = word * 64 + i;
                        r < t.rows() && t.reader(cols).read(r).iter().any(Option::is_some)
                    })
                    .fold(0u64, |bits, i| bits | 1 << i);
                assert_eq!(t.any_present(word, cols), want, "{cols:?} word {word}");
            }
        }
        assert_eq!(
            t.any_present(1, &[1]).count_ones(),
            43,
            "rows 64..128 with v"
        );
    }

    #[test]
    fn bulk_reads_see_the_rows_and_cells_lookups_see() {
        let t = LoadedTable::new(
            manifest(),
            vec![
                batch(&["a", "b"], &[Some("1"), None]),
                batch(&["c", "a"], &[Some("3"), Some("4")]),
            ],
            "key",
        )
        .expect("index");
        let served: Vec<usize> = (0..t.rows()).filter(|&r| t.serves_row(r)).collect();
        assert_eq!(served, vec![1, 2, 3], "the first `a` was replaced");
        let mut reader = t.reader(&[0, 2, 3]);
        for r in 0..t.rows() {
            let row = t.row_at(r as u32);
            assert_eq!(
                reader.read(r),
                [row.get_at(0), row.get_at(2), row.get_at(3)],
                "row {r}"
            );
        }
        assert_eq!(
            t.reader(&[2, 1]).read(3),
            [Some("4"), Some("4")],
            "same as the previous cell, in the order asked"
        );
        assert_eq!(t.reader(&[1]).read(1), [None], "null");
        // `any_present` says whether a reader would find a value.
        for cols in [&[0usize, 2, 3][..], &[1], &[1, 2], &[2, 3], &[9], &[]] {
            let mut reader = t.reader(cols);
            let mut want = 0u64;
            for r in 0..t.rows() {
                want |= u64::from(reader.read(r).iter().any(Option::is_some)) << r;
            }
            assert_eq!(t.any_present(0, cols), want, "columns {cols:?}");
            assert_eq!(t.any_present(1, cols), 0, "no rows past the last");
        }
        assert_eq!(
            t.reader(&[9, 3]).read(0),
            [None, Some("0")],
            "past the last column"
        );
        let unique = LoadedTable::new(
            manifest(),
            vec![batch(&["a", "b"], &[Some("1"), None])],
            "key",
        )
        .expect("index");
        assert!((0..unique.rows()).all(|r| unique.serves_row(r)));
    }

    #[test]
    fn value_cells_are_packed_first_and_every_read_sees_the_batch() {
        // Provenance columns (`…#…`) pack after the values, so some columns'
        // previous ones are packed later (`b` after `a#src`), and equal
        // neighbours chain (`a#src` = `a#raw` = `a`, `d` = `c`).
        let names = ["key", "a", "a#raw", "a#src", "b", "b#raw", "c", "d", "n"];
        let rows = 60;
        // Each column from the ones before it; `None` is null.
        let mut columns: Vec<Vec<Option<String>>> = Vec::new();
        for c in 0..names.len() {
            let before = |r: usize| columns[c - 1][r].clone();
            let col = (0..rows)
                .map(|r| match names[c] {
                    "key" => Some(format!("k{r}")),
                    "a" => (r % 5 != 0).then(|| format!("v{}", r % 3)),
                    "a#raw" | "a#src" if r % 4 != 1 => before(r),
                    "a#raw" | "a#src" => Some(format!("{}{r}", names[c])),
                    // `b` the same as `a#src` (packed after it) every third row.
                    "b" if r % 3 == 0 => columns[3][r].clone(),
                    "b" => (r % 7 != 0).then(|| format!("v{}", (r + 1) % 3)),
                    "b#raw" => (r % 2 == 0).then(|| before(r)).flatten(),
                    "c" => Some(format!("v{}", r % 2)),
                    "d" if r % 3 != 0 => before(r),
                    "d" => Some("d".into()),
                    _ => Some((r % 4).to_string()),
                })
                .collect();
            columns.push(col);
        }
        let schema = Arc::new(Schema::new(
            names
                .iter()
                .map(|n| Field::new(*n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let arrays = columns
            .iter()
            .map(|col| Arc::new(StringArray::from(col.clone())) as arrow_array::ArrayRef)
            .collect();
        let b = RecordBatch::try_new(schema, arrays).expect("batch");
        let t = LoadedTable::new(manifest(), vec![b.slice(0, 25), b.slice(25, 35)], "key")
            .expect("index");
        assert_eq!(t.packed, [0, 1, 4, 6, 7, 8, 2, 3, 5]);
        let cell = |r: usize, c: usize| columns[c][r].as_deref();
        // A cell is "same as previous" exactly where it equals the column
        // before and that column is packed earlier: `a#raw` after `a` is,
        // `b` after `a#src` is not.
        let mut same = 0;
        for r in 0..rows {
            let cells = cells_of(&t.data, &t.row_starts, r as u32);
            let row = t.row_at(r as u32);
            for c in 1..names.len() {
                let tag = cells[row.at[t.slots[c] as usize] as usize];
                let equal = cell(r, c).is_some() && cell(r, c) == cell(r, c - 1);
                let earlier = t.slots[c - 1] < t.slots[c];
                assert_eq!(
                    tag == SAME_AS_PREVIOUS,
                    equal && earlier,
                    "row {r} {}",
                    names[c]
                );
                same += usize::from(equal && earlier && names[c].ends_with("#raw"));
            }
        }
        assert!(same > rows / 2, "raw values equal to their values: {same}");
        // Every set of columns, in ascending and in reverse order.
        for set in 0u32..1 << names.len() {
            let mut cols: Vec<usize> = (0..names.len()).filter(|c| set & 1 << c != 0).collect();
            for _ in 0..2 {
                let mut reader = t.reader(&cols);
                for r in 0..rows {
                    let want: Vec<Option<&str>> = cols.iter().map(|&c| cell(r, c)).collect();
                    assert_eq!(reader.read(r), want, "row {r}, columns {cols:?}");
                }
                cols.reverse();
            }
        }
        for r in 0..rows {
            let row = t.row(&format!("k{r}")).expect("row");
            for (c, name) in names.iter().enumerate() {
                assert_eq!(row.get(name), cell(r, c), "row {r} {name}");
            }
        }
    }

    #[test]
    fn colliding_hashes_are_resolved_by_the_key_itself() {
        let mut t = LoadedTable::new(
            manifest(),
            vec![batch(&["a", "b"], &[Some("1"), Some("2")])],
            "key",
        )
        .expect("x");
        // Force a collision: make "b"'s slot hold "a"'s row, as if both keys
        // hashed alike, with "b" kept in the side map.
        let b_row = t.index[&key_hash("b")];
        t.index.insert(key_hash("b"), t.index[&key_hash("a")]);
        t.collided.insert("b".into(), b_row);
        let get = |k: &str| t.row(k).and_then(|r| r.get("v"));
        assert_eq!(get("b"), Some("2"));
        assert_eq!(get("a"), Some("1"));
    }

    #[test]
    fn a_missing_key_column_is_named() {
        let err =
            LoadedTable::new(manifest(), vec![batch(&["a"], &[Some("1")])], "id").unwrap_err();
        assert_eq!(err.to_string(), "store: table t has no column `id`");
    }

    #[test]
    fn varints_round_trip() {
        for n in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            let mut pos = 0;
            assert_eq!(get_varint(&out, &mut pos), n);
            assert_eq!(pos, out.len());
        }
    }
}
