//! Helpers shared by the whole-system benchmarks: settings from the
//! environment, the process's own CPU time and memory (Linux /proc), and a
//! generated and pulled data directory cached between runs.
#![allow(dead_code)] // each bench uses a subset

use std::path::{Path, PathBuf};
use std::time::Instant;

use sharebroker::catalog::Catalog;
use sharebroker::config::Settings;
use sharebroker::datagen::{GenOptions, generate};

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// A data directory with `persons` generated (seed 2021) and pulled with
/// the repo's policies and connectors, under BENCH_DIR (default
/// /var/tmp/sharebroker-bench): made once, reused by later runs.
pub fn prepared_store(persons: usize) -> Settings {
    let base: PathBuf = std::env::var("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/tmp/sharebroker-bench"));
    let settings = Settings {
        policies_dir: repo("policies"),
        connectors_dir: repo("connectors"),
        data_dir: base.join(format!("store-{persons}")),
        ..Settings::default()
    };
    let done = settings.data_dir.join("pulled");
    if done.exists() {
        return settings;
    }
    let _ = std::fs::remove_dir_all(&settings.data_dir);
    eprintln!(
        "preparing {persons} persons in {} (once)",
        settings.data_dir.display()
    );
    let t = Instant::now();
    generate(&GenOptions {
        out_dir: settings.sources_dir(),
        persons,
        seed: 2021,
        progress: false,
    })
    .expect("gen");
    Catalog::load(&settings.policies_dir).expect("catalogue");
    sharebroker::pull::run_configured(&settings, &[], false).expect("pull");
    std::fs::write(&done, b"").expect("marker");
    eprintln!("prepared in {:.1?}", t.elapsed());
    settings
}

/// An environment variable parsed as `T`, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of this process so far.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&k| fields.get(k).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// A `/proc/self/status` memory line (`VmRSS:`, `VmHWM:` …) in MiB.
pub fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}
