//! The decision for one 30-field request: a compiled plan against casbin's
//! `enforce` per field, on the same rules and the same requests, at 100,
//! 1,000 and 10,000 rules (DESIGN.md §7: ≤ 1 µs per request, ≥ 1000× casbin).
//!
//!   cargo bench --bench policy_decision
//!   RULES=100,1000 REQUESTS=20000 cargo bench --bench policy_decision
//!
//! A synthetic policy directory is written for each size: 25 agencies with
//! 2 roles each, 20 service items in 5 purpose categories, a 30-field
//! dataset and three smaller ones, and N random rules over fields,
//! `dataset:` and `tag:` groups, items and categories (about 1 in 8 a deny).
//! Both sides answer the same question per field: clear, else masked, else
//! denied; the bench checks that their answers are identical.

mod common;
use common::*;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use casbin::CoreApi;
use sharebroker::catalog::Catalog;
use sharebroker::policy::{PolicySet, READ_CLEAR, READ_MASKED, build_enforcer};

/// splitmix64: a deterministic stream, so every run measures the same rules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SENSITIVITIES: [&str; 5] = ["public", "internal", "personal", "identifier", "sensitive"];
const AGENCIES: usize = 25;
const ITEMS: usize = 20;
const CATEGORIES: usize = 5;

fn write_policies(dir: &Path, rules: usize, rng: &mut Rng) {
    let mut agencies = String::new();
    for a in 0..AGENCIES {
        writeln!(
            agencies,
            "[[agency]]\nid = \"ag{a:02}\"\nname = \"Agency {a}\"\nroles = [\"r0\", \"r1\"]\n"
        )
        .expect("write");
    }
    let mut catalog = String::new();
    for (d, n) in [("d30", 30), ("da", 10), ("db", 10), ("dc", 10)] {
        writeln!(
            catalog,
            "[[dataset]]\nid = \"{d}\"\nname = \"{d}\"\nprovider = \"ag00\"\nsubject = \"person\"\n"
        )
        .expect("write");
        for f in 0..n {
            let sensitivity = SENSITIVITIES[f % SENSITIVITIES.len()];
            writeln!(
                catalog,
                "  [[dataset.field]]\n  name = \"f{f:02}\"\n  label = \"F{f}\"\n  kind = \"text\"\n  sensitivity = \"{sensitivity}\"\n  share = \"unconditional\"\n  mask = \"full\"\n"
            )
            .expect("write");
        }
    }
    let mut items = String::new();
    for i in 0..ITEMS {
        writeln!(
            items,
            "[[item]]\ncode = \"IT-{i:02}\"\nname = \"Item {i}\"\nagency = \"ag{:02}\"\npurpose_category = \"cat{}\"\ncase_valid_days = 30\n  [[item.material]]\n  name = \"m\"\n  applicant_supplies = true\n",
            i % AGENCIES,
            i % CATEGORIES
        )
        .expect("write");
    }
    let mut policy = String::from("# synthetic rules\n");
    for _ in 0..rules {
        let role = format!("ag{:02}:r{}", rng.below(AGENCIES), rng.below(2));
        let object = match rng.below(10) {
            0 => format!("dataset:{}", ["d30", "da", "db", "dc"][rng.below(4)]),
            1 => format!("tag:{}", SENSITIVITIES[rng.below(5)]),
            _ => {
                let (d, n) = [("d30", 30), ("da", 10), ("db", 10), ("dc", 10)][rng.below(4)];
                format!("{d}.f{:02}", rng.below(n))
            }
        };
        let action = if rng.below(3) == 0 {
            READ_MASKED
        } else {
            READ_CLEAR
        };
        let purpose = if rng.below(4) == 0 {
            format!("purpose:cat{}", rng.below(CATEGORIES))
        } else {
            format!("IT-{:02}", rng.below(ITEMS))
        };
        let effect = if rng.below(8) == 0 { "deny" } else { "allow" };
        writeln!(policy, "p, {role}, {object}, {action}, {purpose}, {effect}").expect("write");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    std::fs::write(dir.join("agencies.toml"), agencies).expect("write");
    std::fs::write(dir.join("catalog.toml"), catalog).expect("write");
    std::fs::write(dir.join("service_items.toml"), items).expect("write");
    std::fs::write(dir.join("policy.csv"), policy).expect("write");
    std::fs::write(dir.join("applications.toml"), "# none\n").expect("write");
    std::fs::copy(root.join("model.conf"), dir.join("model.conf")).expect("model");
}

/// 0 denied, 1 masked, 2 clear — per field, for comparing both sides.
type Answers = Vec<u8>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let sizes: Vec<usize> = std::env::var("RULES")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let requests: usize = env_or("REQUESTS", 200_000);
    let casbin_budget_secs: f64 = env_or("CASBIN_SECONDS", 10.0);
    let today = chrono::Utc::now().date_naive();
    println!(
        "policy_decision: one request = the 30 fields of dataset d30 for a (role, service item); 2 cores; single thread"
    );
    let mut table = Vec::new();
    for &n in &sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = Rng(0x5eed ^ n as u64);
        write_policies(dir.path(), n, &mut rng);
        let catalog = Catalog::load(dir.path()).expect("synthetic catalogue");
        let t = Instant::now();
        let policy = PolicySet::load(dir.path(), &catalog)
            .await
            .expect("synthetic policy");
        let compile = t.elapsed();
        let model = std::fs::read_to_string(dir.path().join("model.conf")).expect("model");
        let enforcer = build_enforcer(&model, &policy.rules, &catalog)
            .await
            .expect("enforcer");
        let fields: Vec<String> = catalog
            .dataset("d30")
            .expect("d30")
            .fields
            .iter()
            .map(|f| f.name.clone())
            .collect();
        let pairs: Vec<(String, String)> = (0..1024)
            .map(|_| {
                (
                    format!("ag{:02}:r{}", rng.below(AGENCIES), rng.below(2)),
                    format!("IT-{:02}", rng.below(ITEMS)),
                )
            })
            .collect();

        // Compiled plans: look the plan up, then every field's access.
        let plan_answers = |role: &str, item: &str| -> Answers {
            let plan = policy
                .plan(role, item, "d30")
                .expect("a plan for every role and item");
            // The plan holds the fields in catalogue order: no search.
            plan.fields
                .iter()
                .map(|(_, d)| match d.access(today) {
                    Ok((sharebroker::policy::Access::Clear, _)) => 2,
                    Ok((sharebroker::policy::Access::Masked(_), _)) => 1,
                    Err(_) => 0,
                })
                .collect()
        };
        let t = Instant::now();
        let mut granted = 0usize;
        for i in 0..requests {
            let (role, item) = &pairs[i % pairs.len()];
            granted += black_box(plan_answers(role, item))
                .iter()
                .filter(|&&a| a > 0)
                .count();
        }
        let plan_ns = t.elapsed().as_nanos() as f64 / requests as f64;

        // casbin: enforce per field, read_clear then read_masked.
        let casbin_answers = |role: &str, item: &str| -> Answers {
            fields
                .iter()
                .map(|f| {
                    let obj = format!("d30.{f}");
                    if enforcer
                        .enforce((role, obj.as_str(), READ_CLEAR, item))
                        .expect("enforce")
                    {
                        2
                    } else if enforcer
                        .enforce((role, obj.as_str(), READ_MASKED, item))
                        .expect("enforce")
                    {
                        1
                    } else {
                        0
                    }
                })
                .collect()
        };
        let t = Instant::now();
        let mut casbin_requests = 0usize;
        let mut differ = 0usize;
        while casbin_requests < pairs.len()
            && (casbin_requests < 3 || t.elapsed().as_secs_f64() < casbin_budget_secs)
        {
            let (role, item) = &pairs[casbin_requests];
            let theirs = black_box(casbin_answers(role, item));
            casbin_requests += 1;
            if theirs != plan_answers(role, item) {
                differ += 1;
            }
        }
        let elapsed = t.elapsed().as_nanos() as f64;
        // The comparison above ran plans too: their cost is negligible next to casbin's.
        let casbin_ns = elapsed / casbin_requests as f64;
        println!(
            "{n:>6} rules: compile {:>8.1} ms ({} plans); plan {:>8.3} µs/request; casbin {:>12.1} µs/request ({} requests); ratio {:>9.0}×; decisions identical: {} ({} fields granted per plan request on average)",
            compile.as_secs_f64() * 1e3,
            policy.plan_count(),
            plan_ns / 1e3,
            casbin_ns / 1e3,
            casbin_requests,
            casbin_ns / plan_ns,
            if differ == 0 {
                "yes".to_string()
            } else {
                format!("NO, {differ} requests differ")
            },
            granted as f64 / requests as f64,
        );
        assert_eq!(differ, 0, "compiled plans and casbin disagree");
        table.push((n, plan_ns, casbin_ns, compile.as_secs_f64()));
    }
    println!("\n| rules | plan µs/request | casbin µs/request | ratio | compile ms |");
    println!("|------:|----------------:|------------------:|------:|-----------:|");
    for (n, p, c, compile) in &table {
        println!(
            "| {n} | {:.3} | {:.1} | {:.0}× | {:.1} |",
            p / 1e3,
            c / 1e3,
            c / p,
            compile * 1e3
        );
    }
    println!("target: ≤ 1 µs per request and ≥ 1000× casbin at 10,000 rules (DESIGN.md §7)");
    println!(
        "peak RSS {:.0} MiB; command: RULES={} REQUESTS={requests} cargo bench --bench policy_decision",
        status_mib("VmHWM:"),
        sizes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
}
