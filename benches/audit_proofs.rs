//! Cost of Merkle proofs at audit-log scale: builds a `MerkleTree` of LEAVES leaf hashes
//! (default 10,000,000; about 640 MB) and times `root_at`, `inclusion_proof`,
//! `consistency_proof` and both verifiers at spread-out indices and sizes.
//!
//!   cargo bench --bench audit_proofs
//!   LEAVES=1000000 ROUNDS=20000 cargo bench --bench audit_proofs
//!
//! Figures are per call, single thread; the machine's other core is shared with whatever
//! else runs, so repeat a run before trusting a small difference.

mod common;
use common::*;

use std::hint::black_box;
use std::time::Instant;

use sharebroker::audit::merkle::{self, MerkleTree};

/// A cheap deterministic stream of indices in 0..n (splitmix64).
fn spread(n: u64, i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % n
}

fn per_call(label: &str, rounds: u64, mut f: impl FnMut(u64)) {
    let start = Instant::now();
    for i in 0..rounds {
        f(i);
    }
    let ns = start.elapsed().as_nanos() as f64 / rounds as f64;
    println!("{label:<28} {:>10.2} µs/call", ns / 1000.0);
}

fn main() {
    let leaves: u64 = env_or("LEAVES", 10_000_000u64).max(2);
    let rounds: u64 = env_or("ROUNDS", 10_000u64);
    let start = Instant::now();
    let mut tree = MerkleTree::new();
    for i in 0..leaves {
        let mut leaf = [0u8; 32];
        leaf[..8].copy_from_slice(&i.to_le_bytes());
        tree.push(leaf);
    }
    let built = start.elapsed();
    println!(
        "built {leaves} leaves in {:.2} s ({:.0} ns/leaf)",
        built.as_secs_f64(),
        built.as_nanos() as f64 / leaves as f64
    );
    let size = tree.size();
    let root = tree.root();

    per_call("root_at", rounds, |i| {
        black_box(tree.root_at(1 + spread(size, i)).expect("size within tree"));
    });
    per_call("inclusion_proof", rounds, |i| {
        black_box(
            tree.inclusion_proof(spread(size, i), size)
                .expect("index within tree"),
        );
    });
    per_call("consistency_proof", rounds, |i| {
        black_box(
            tree.consistency_proof(1 + spread(size - 1, i), size)
                .expect("sizes within tree"),
        );
    });
    let inclusion: Vec<(u64, Vec<[u8; 32]>)> = (0..rounds.min(1000))
        .map(|i| {
            let index = spread(size, i);
            let proof = tree
                .inclusion_proof(index, size)
                .expect("index within tree");
            (index, proof)
        })
        .collect();
    per_call("verify_inclusion", rounds, |i| {
        let (index, proof) = &inclusion[(i as usize) % inclusion.len()];
        let leaf = tree.leaf(*index).expect("index within tree");
        merkle::verify_inclusion(&leaf, *index, size, proof, &root).expect("proof verifies");
    });
    let consistency: Vec<(u64, [u8; 32], Vec<[u8; 32]>)> = (0..rounds.min(1000))
        .map(|i| {
            let old = 1 + spread(size - 1, i);
            let proof = tree
                .consistency_proof(old, size)
                .expect("sizes within tree");
            (old, tree.root_at(old).expect("size within tree"), proof)
        })
        .collect();
    per_call("verify_consistency", rounds, |i| {
        let (old, old_root, proof) = &consistency[(i as usize) % consistency.len()];
        merkle::verify_consistency(*old, size, old_root, &root, proof).expect("proof verifies");
    });
    let sizes = |lens: Vec<usize>| {
        let mean = lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64;
        let max = lens.iter().copied().max().unwrap_or(0);
        format!(
            "mean {mean:.1} hashes ({:.0} bytes), max {max} hashes ({} bytes)",
            mean * 32.0,
            max * 32
        )
    };
    println!(
        "inclusion proof size at {size} entries: {}",
        sizes(inclusion.iter().map(|(_, p)| p.len()).collect())
    );
    println!(
        "consistency proof size to {size} entries: {}",
        sizes(consistency.iter().map(|(_, _, p)| p.len()).collect())
    );
    println!(
        "memory of the tree (peak RSS): {:.0} MiB",
        status_mib("VmHWM:")
    );
}
