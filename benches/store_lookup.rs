//! The store's figures for 1,000,000 persons (issue 5, DESIGN.md §7):
//! in-process point lookups per second on one core (criterion, plus p50/p99
//! of single lookups), load time of the table, RSS after load measured in a
//! fresh child process, and Parquet bytes on disk against CSV bytes of the
//! same rows. The baseline in the same run is the columnar form this store
//! served lookups from before: Arrow batches and a `HashMap<String,
//! (batch, row)>`, reading the same cells.
//!
//! The data is the real pipeline's: `gen` then `pull` of PERSONS persons
//! (default 1,000,000), cached under BENCH_DIR (default
//! /var/tmp/sharebroker-bench) so that later runs skip the minute it takes.
//!
//! ```sh
//! cargo bench --bench store_lookup                   # 1,000,000 persons
//! PERSONS=100000 cargo bench --bench store_lookup    # quicker
//! ```

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow_array::{Array, RecordBatch, StringArray};
use criterion::{Criterion, Throughput};

use sharebroker::catalog::SubjectKind;
use sharebroker::ingest::{COL_KEY, Golden};
use sharebroker::store::{LoadedTable, TableStore};

use common::{env_or, prepared_store as prepared, status_mib};

const CHILD_ENV: &str = "STORE_LOOKUP_BENCH_LOAD";

/// In a fresh process: load the person table, report time and memory.
fn child_load(store_dir: &Path) {
    let rss_before = status_mib("VmRSS:");
    let store = TableStore::open_local(store_dir).expect("store");
    let t = Instant::now();
    let m = store
        .current(Golden::table(SubjectKind::Person))
        .expect("current")
        .expect("a person table");
    let table = LoadedTable::load(&store, m, COL_KEY).expect("load");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{secs} {rss_before} {} {} {} {}",
        status_mib("VmRSS:"),
        status_mib("VmHWM:"),
        table.len(),
        table.memory_bytes()
    );
}

/// The same rows as CSV (header, every column, RFC 4180 quoting): what an
/// agency would otherwise export.
fn csv_bytes(batches: &[RecordBatch]) -> u64 {
    let mut w = csv::Writer::from_writer(CountingSink(0));
    if let Some(b) = batches.first() {
        w.write_record(b.schema().fields().iter().map(|f| f.name().as_str()))
            .expect("header");
    }
    for b in batches {
        let cols: Vec<&StringArray> = b
            .columns()
            .iter()
            .map(|c| c.as_any().downcast_ref::<StringArray>().expect("strings"))
            .collect();
        for r in 0..b.num_rows() {
            w.write_record(
                cols.iter()
                    .map(|c| if c.is_null(r) { "" } else { c.value(r) }),
            )
            .expect("row");
        }
    }
    w.into_inner().map(|s| s.0).unwrap_or(0)
}

struct CountingSink(u64);
impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Column names of the person golden table a full-record lookup reads:
/// every population field with its raw value and provenance.
fn record_columns(schema: &arrow_schema::Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n.starts_with("population."))
        .collect()
}

/// One field with its provenance, as a one-field lookup reads it.
fn field_columns() -> Vec<String> {
    ["", "#src", "#rec", "#asof"]
        .iter()
        .map(|s| format!("population.name{s}"))
        .collect()
}

/// One lookup: the index probe and every listed cell of the record.
#[inline]
fn lookup(t: &LoadedTable, cols: &[usize], key: &str) -> usize {
    match t.row(key) {
        Some(row) => cols
            .iter()
            .map(|&c| row.get_at(c).map_or(0, str::len))
            .sum(),
        None => 0,
    }
}

/// The baseline: the columnar form this store served from before — Arrow
/// batches and every key copied into a `String`-keyed map.
struct Columnar {
    batches: Vec<RecordBatch>,
    index: HashMap<String, (u32, u32)>,
}
impl Columnar {
    fn new(batches: Vec<RecordBatch>) -> Self {
        let mut index = HashMap::new();
        for (b, batch) in batches.iter().enumerate() {
            let keys = batch
                .column_by_name(COL_KEY)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .expect("keys");
            for r in 0..keys.len() {
                index.insert(keys.value(r).to_string(), (b as u32, r as u32));
            }
        }
        Columnar { batches, index }
    }
    #[inline]
    fn lookup(&self, cols: &[usize], key: &str) -> usize {
        match self.index.get(key) {
            Some(&(b, r)) => {
                let batch = &self.batches[b as usize];
                cols.iter()
                    .map(|&c| {
                        let a = batch
                            .column(c)
                            .as_any()
                            .downcast_ref::<StringArray>()
                            .expect("strings");
                        if a.is_null(r as usize) {
                            0
                        } else {
                            a.value(r as usize).len()
                        }
                    })
                    .sum()
            }
            None => 0,
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_load(Path::new(&dir));
        return;
    }
    let persons: usize = env_or("PERSONS", 1_000_000);
    let settings = prepared(persons);
    let store_dir = settings.store_dir();

    // Load time and RSS, in a fresh process (median of three).
    let mut loads = Vec::new();
    for _ in 0..3 {
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env(CHILD_ENV, &store_dir)
            .output()
            .expect("child");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let v: Vec<f64> = line
            .split(' ')
            .map(|x| x.parse().expect("number"))
            .collect();
        loads.push(v);
    }
    loads.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let load = &loads[1];

    let store = TableStore::open_local(&store_dir).expect("store");
    let m = store
        .current(Golden::table(SubjectKind::Person))
        .expect("current")
        .expect("a person table");
    let parquet_bytes = m.bytes();
    let batches = store.read(&m).expect("read");
    let csv = csv_bytes(&batches);
    let table = LoadedTable::load(&store, m, COL_KEY).expect("load");
    let schema = table.schema().clone();
    let positions = |names: &[String]| -> Vec<usize> {
        names
            .iter()
            .map(|n| schema.index_of(n).expect("column"))
            .collect()
    };
    let record = positions(&record_columns(&schema));
    let field = positions(&field_columns());

    // Keys in a random order, plus 10% that are not in the table.
    let mut keys: Vec<String> = Vec::with_capacity(table.len() * 11 / 10);
    for b in &batches {
        let k = b
            .column_by_name(COL_KEY)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .expect("keys");
        keys.extend(k.iter().flatten().map(str::to_string));
    }
    let n_present = keys.len();
    for i in 0..n_present / 10 {
        keys.push(format!("65010219900101{i:04}"));
    }
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..keys.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        keys.swap(i, (x % (i as u64 + 1)) as usize);
    }

    let baseline = Columnar::new(batches);
    // Both forms give the same cells for every key.
    for k in keys.iter().step_by(97) {
        assert_eq!(
            lookup(&table, &record, k),
            baseline.lookup(&record, k),
            "the row store and the columnar form disagree"
        );
    }

    // Single full-record lookups timed one by one, for the distribution.
    let timer_overhead = {
        let t = Instant::now();
        for _ in 0..1_000_000 {
            black_box(Instant::now());
        }
        t.elapsed().as_nanos() as u64 / 1_000_000
    };
    let mut samples: Vec<u64> = Vec::with_capacity(keys.len());
    for k in &keys {
        let t = Instant::now();
        black_box(lookup(&table, &record, black_box(k)));
        samples.push(t.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();

    // Throughput on one core: criterion, over all keys in random order.
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(10);
    let mut g = c.benchmark_group(format!("store_lookup/{persons}_persons"));
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("row store: full record", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| lookup(&table, &record, k))
                .sum::<usize>()
        })
    });
    g.bench_function("row store: one field with provenance", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| lookup(&table, &field, k))
                .sum::<usize>()
        })
    });
    g.finish();

    // Plain timings of the same loops for the ratio lines.
    let per_sec = |f: &dyn Fn() -> usize| {
        let t = Instant::now();
        let mut rounds = 0;
        while rounds < 2 || t.elapsed() < Duration::from_secs(3) {
            black_box(f());
            rounds += 1;
        }
        (rounds * keys.len()) as f64 / t.elapsed().as_secs_f64()
    };
    let ours_record = per_sec(&|| keys.iter().map(|k| lookup(&table, &record, k)).sum());
    let ours_field = per_sec(&|| keys.iter().map(|k| lookup(&table, &field, k)).sum());
    let base_record = per_sec(&|| keys.iter().map(|k| baseline.lookup(&record, k)).sum());
    let base_field = per_sec(&|| keys.iter().map(|k| baseline.lookup(&field, k)).sum());

    println!();
    println!(
        "store_lookup: {} persons ({} keys looked up in random order, {} absent), one core",
        table.len(),
        keys.len(),
        keys.len() - n_present
    );
    println!(
        "  full record ({} cells)   {:>10.0} lookups/s   (columnar baseline {:.0}/s; ratio {:.1}x)",
        record.len(),
        ours_record,
        base_record,
        ours_record / base_record
    );
    println!(
        "  one field + provenance  {:>10.0} lookups/s   (columnar baseline {:.0}/s; ratio {:.1}x; target >= 2,000,000/s)",
        ours_field,
        base_field,
        ours_field / base_field
    );
    println!(
        "  single full-record lookup  p50 {} ns, p99 {} ns, max {} ns (timer overhead ~{} ns included)",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
        timer_overhead
    );
    println!(
        "  load (fresh process)    {:.2} s for {} rows (read, checksum, decode, pack, index; median of 3)",
        load[0], load[4] as u64
    );
    println!(
        "  RSS after load          {:.0} MiB (peak {:.0} MiB; before load {:.0} MiB; table + index {:.0} MiB; target <= 1536 MiB)",
        load[2],
        load[3],
        load[1],
        load[5] / 1_048_576.0
    );
    println!(
        "  on disk                 {:.1} MB Parquet+zstd vs {:.1} MB CSV of the same rows ({:.1}x smaller)",
        parquet_bytes as f64 / 1e6,
        csv as f64 / 1e6,
        csv as f64 / parquet_bytes as f64
    );
}
