//! The `sharebroker` command line: a thin layer over the library.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use sharebroker::api::{self, AppState};
use sharebroker::audit::{self, AuditFilter};
use sharebroker::catalog::{Catalog, SubjectKind};
use sharebroker::config::Settings;
use sharebroker::connectors;
use sharebroker::datagen::{GenOptions, generate};
use sharebroker::ingest::{identifier_problem, subject_key};
use sharebroker::pki;
use sharebroker::policy::{PolicySet, steward};
use sharebroker::pull;
use sharebroker::seal;
use sharebroker::store::{self, AsOf, TableStore};
use sharebroker::{linkage, review};

/// mimalloc instead of glibc malloc: a lookup allocates a few hundred small
/// objects (JSON values, audit entry strings) on two async workers while the
/// audit writer frees batches on its own thread; under load glibc's arena
/// locks, consolidation and chunk unlinking were about 13% of the broker's
/// CPU (`PERF_OUT=… cargo bench --bench load_lookup`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sharebroker",
    version,
    about = "Purpose-bound data sharing between government agencies"
)]
struct Cli {
    /// Catalogue, agencies, service items and casbin policy.
    #[arg(long, global = true, default_value = "policies")]
    policies: PathBuf,
    /// One TOML file per agency source.
    #[arg(long, global = true, default_value = "connectors")]
    connectors: PathBuf,
    /// Sources, store, audit log, cases, PKI and seal key.
    #[arg(long, global = true, default_value = "data")]
    data_dir: PathBuf,
    /// Broker settings file (TOML; see broker.example.toml): limits, TLS,
    /// store retention. Command-line options win over it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Generate each agency's source data (deterministic) into <data-dir>/sources.
    Gen {
        #[arg(long, default_value_t = 20_000)]
        persons: usize,
        #[arg(long, default_value_t = 2021)]
        seed: u64,
        /// Output directory (default: <data-dir>/sources).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Pull every source (or the named ones), then resolve every source's
    /// staged rows and store new golden versions.
    Pull {
        sources: Vec<String>,
        /// Pull incremental sources from scratch instead of from their checkpoint.
        #[arg(long)]
        full: bool,
        /// Only check that each source can be reached and has its mapped
        /// columns (a health check); pull nothing.
        #[arg(long)]
        check: bool,
    },
    /// Development PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Serve the HTTPS API with mutual TLS.
    Serve {
        /// Listen address (default 127.0.0.1:8443).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// How often a signed audit tree head is published, in seconds (default 10).
        #[arg(long)]
        tree_head_interval_secs: Option<u64>,
        /// Size at which the audit log starts a new segment file, in bytes (default 64 MiB).
        #[arg(long)]
        audit_segment_max_bytes: Option<u64>,
    },
    /// Generate data if absent, pull, and serve, printing commands to try.
    Demo {
        #[arg(long, default_value_t = 20_000)]
        persons: usize,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
    },
    /// Check the catalogue, policy and connector files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Verify a sealed response offline.
    Seal {
        #[command(subcommand)]
        command: SealCommand,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Versioned tables: list, show or export a version (time travel), collect old ones.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Steward review: records the resolver could not link with certainty,
    /// and records quarantined for their identifier.
    Review {
        #[command(subcommand)]
        command: ReviewCommand,
    },
    /// The resolver on plain CSV files, to reproduce and score it.
    Resolve {
        #[command(subcommand)]
        command: ResolveCommand,
    },
    /// Disputed values (Article 17 corrections), read from the journal
    /// beside a running broker.
    Corrections {
        #[command(subcommand)]
        command: CorrectionsCommand,
    },
}

#[derive(Subcommand)]
enum ReviewCommand {
    /// The review queue (default), or the quarantine with --quarantine.
    List {
        #[arg(long)]
        quarantine: bool,
        /// Only this source's records.
        #[arg(long)]
        source: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Link a record to a subject (the reviewed candidate or another).
    Link {
        source: String,
        record_id: String,
        subject_id: String,
        #[arg(long)]
        steward: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Decide that a record matches no subject; if it was linked, this
    /// splits it off (the decision stays on record).
    Reject {
        source: String,
        record_id: String,
        #[arg(long)]
        steward: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Merge a subject into another (two identifiers of one person): the
    /// merged id redirects, and both identifiers serve one record.
    Merge {
        subject_id: String,
        #[arg(long)]
        into: String,
        #[arg(long)]
        steward: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Undo a merge (a split); the decision stays on record.
    Unmerge {
        subject_id: String,
        #[arg(long)]
        steward: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Every decision made so far, oldest first.
    Decisions,
    /// Resolve the staged sources again (no pull), applying the decisions.
    Apply {
        /// Resolve every record from scratch, refitting the linking model,
        /// even where only some changed.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum ResolveCommand {
    /// Write the person records of the configured sources as one CSV
    /// (source, record_id, id_number, name).
    Records {
        #[arg(long)]
        out: PathBuf,
    },
    /// Resolve a CSV with source, record_id, id_number (and optionally
    /// name, agency, as_of) columns; write source, record_id, subject_id, link.
    Link {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Score links against a generator truth.csv: pairwise precision,
    /// recall and F1, B-cubed, by middle dot and ID validity.
    Score {
        #[arg(long)]
        truth: PathBuf,
        #[arg(long)]
        links: PathBuf,
        #[arg(long, default_value = "person")]
        kind: String,
    },
}

#[derive(Subcommand)]
enum CorrectionsCommand {
    /// Corrections, oldest first: routed to an owning agency, filed by an agency, in a state.
    List {
        /// open, confirmed, fixed or withdrawn.
        #[arg(long)]
        state: Option<String>,
        /// Only those routed to this agency (the field's owner).
        #[arg(long)]
        owner: Option<String>,
        /// Only those filed by this agency.
        #[arg(long)]
        filed_by: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Every table with its current version, or one table's versions.
    Ls {
        table: Option<String>,
        /// One JSON manifest per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A version's manifest (files, columns, checkpoint); with --key, one
    /// subject's row as it was in that version.
    Show {
        table: String,
        /// `current`, a version number, or an RFC 3339 time (the version
        /// current then).
        #[arg(long, default_value = "current")]
        as_of: String,
        /// Print the row with this key (a normalised ID number or credit code).
        #[arg(long)]
        key: Option<String>,
        /// The key column.
        #[arg(long, default_value = "key")]
        key_column: String,
        /// Also read every file and check it against the manifest.
        #[arg(long)]
        verify: bool,
    },
    /// Write a version of a table to one Parquet file (zstd).
    Export {
        table: String,
        #[arg(long, default_value = "current")]
        as_of: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Remove versions beyond the retention and files that no version lists.
    Gc {
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep at least this many newest versions of each table (default:
        /// the settings' store_keep_versions, 10).
        #[arg(long)]
        keep_versions: Option<usize>,
        /// Keep every version younger than this many days (default: the
        /// settings' store_keep_days, 365).
        #[arg(long)]
        keep_days: Option<u32>,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// A development CA, a server certificate and one client certificate per agency.
    Init {
        #[arg(long)]
        force: bool,
    },
    /// Print an officer token for `curl -H "x-officer-token: …"`, signed with the
    /// agency's client-certificate key from <data-dir>/pki.
    Token {
        /// Agency id (its first certificate name picks the key).
        #[arg(long)]
        agency: String,
        /// The officer's id within the agency.
        #[arg(long)]
        officer: String,
        /// Lifetime in seconds (at most 600).
        #[arg(long, default_value_t = 600)]
        lifetime_secs: i64,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate every policy, catalogue and connector file, and report rules that can never
    /// match, allows shadowed by denies, sensitive fields open to every purpose and duplicate
    /// rules (exit 1 on errors; warnings are listed).
    Check,
    /// Run the expected decisions in <policies>/tests/*.toml (or DIR) against the policy.
    Test {
        /// Directory of test files (default: <policies>/tests).
        dir: Option<PathBuf>,
    },
    /// Which rule, share type or application decides one field, and why.
    Explain {
        #[arg(long)]
        agency: String,
        /// `agency:role` or the short role name (default: the agency's first role).
        #[arg(long)]
        role: Option<String>,
        /// A service item code.
        #[arg(long)]
        purpose: String,
        /// `dataset.field`.
        #[arg(long)]
        field: String,
    },
    /// Access gained and lost between two policy directories (each with its catalogue).
    Diff { old: PathBuf, new: PathBuf },
}

#[derive(Subcommand)]
enum SealCommand {
    /// Verify a response saved as JSON against the broker's published key: either seal form
    /// (per response or per audit batch), Ed25519 or SM2/SM3, offline. With --body, an
    /// export: RESPONSE is then its seal (the `x-sharebroker-seal` trailer's value, a header
    /// dump holding it such as `curl -D`, or the decoded JSON).
    Verify {
        /// The published key file (from GET /v1/seal/key or <data-dir>/seal/seal-key.pub).
        #[arg(long)]
        key: PathBuf,
        /// The saved export body (Arrow IPC stream or Parquet) the seal covers.
        #[arg(long)]
        body: Option<PathBuf>,
        /// The saved response body, or with --body the export's seal.
        response: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every leaf hash and the tree root of a log (or a copy), and check every
    /// signed tree head against the rebuilt tree (and its signature, given --key).
    Verify {
        /// Log directory (default: <data-dir>/audit).
        dir: Option<PathBuf>,
        /// The broker's published key file (from GET /v1/seal/key or
        /// <data-dir>/seal/seal-key.pub); without it, head signatures are not checked.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Entries matching the filters, oldest first.
    Query {
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The applicant-facing report of every access to one person's (or organisation's) data.
    Report {
        #[command(flatten)]
        filter: AuditFilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Lookups outside any case, unusual volumes, off-hours access, repeated denials.
    Anomalies {
        #[command(flatten)]
        filter: AuditFilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Erase a subject's salt so that no entry can be linked to them any more
    /// (the tree and its proofs stay intact). Needs the broker stopped.
    Erase {
        /// Log directory (default: <data-dir>/audit).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        id_number: Option<String>,
        #[arg(long)]
        credit_code: Option<String>,
    },
    /// Write the matching entries to a Parquet file.
    Export {
        #[command(flatten)]
        filter: AuditFilterArgs,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Filters shared by the audit commands.
#[derive(clap::Args)]
struct AuditFilterArgs {
    /// Log directory (default: <data-dir>/audit); a copy works too.
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long)]
    agency: Option<String>,
    #[arg(long)]
    officer: Option<String>,
    /// The subject, by resident ID number.
    #[arg(long)]
    id_number: Option<String>,
    /// The subject, by unified social credit code.
    #[arg(long)]
    credit_code: Option<String>,
    #[arg(long)]
    service_item: Option<String>,
    #[arg(long = "case")]
    case_id: Option<String>,
    /// allow, deny or error (requests), or steward (a decision recorded with `sharebroker review`).
    #[arg(long)]
    decision: Option<String>,
    /// From this time (RFC 3339, or a date such as 2026-11-27), UTC.
    #[arg(long)]
    since: Option<String>,
    /// Before this time (RFC 3339, or a date), UTC.
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    limit: Option<usize>,
}

impl AuditFilterArgs {
    fn dir(&self, s: &Settings) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| s.audit_dir())
    }

    fn filter(&self, s: &Settings) -> anyhow::Result<AuditFilter> {
        let subject = match (&self.id_number, &self.credit_code) {
            (Some(id), None) => Some((SubjectKind::Person, id)),
            (None, Some(code)) => Some((SubjectKind::Organisation, code)),
            (None, None) => None,
            _ => bail!("name the subject by --id-number or --credit-code, not both"),
        };
        let subject_commitment = match subject {
            Some((kind, raw)) => {
                let key = subject_key(kind, raw)
                    .map_err(|_| anyhow::anyhow!("{}", identifier_problem(kind, raw)))?;
                // A subject without a salt was never named in the log.
                Some(audit::commitment_in_dir(&self.dir(s), &key)?.unwrap_or_else(|| "none".into()))
            }
            None => None,
        };
        Ok(AuditFilter {
            agency: self.agency.clone(),
            subject_commitment,
            case_id: self.case_id.clone(),
            decision: self.decision.clone(),
            officer: self.officer.clone(),
            service_item: self.service_item.clone(),
            since: self
                .since
                .as_deref()
                .map(audit::time_bound)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            until: self
                .until
                .as_deref()
                .map(audit::time_bound)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            limit: self.limit,
        })
    }
}

fn audit_command(s: &Settings, command: &AuditCommand) -> anyhow::Result<()> {
    let read = |f: &AuditFilterArgs| -> anyhow::Result<Vec<(u64, audit::AuditEntry)>> {
        Ok(audit::scan_dir(&f.dir(s), &f.filter(s)?)?)
    };
    match command {
        AuditCommand::Verify { .. } => unreachable!("handled in main"),
        AuditCommand::Query { filter, json } => {
            for (i, e) in read(filter)? {
                if *json {
                    println!("{}", serde_json::json!({ "index": i, "entry": e }));
                } else {
                    println!(
                        "#{i:<7} {}  {:<10} {:<14} {:<26} {:<14} {:<6} {}",
                        e.time,
                        e.agency,
                        e.officer.as_deref().unwrap_or("-"),
                        e.route,
                        e.case_id.as_deref().unwrap_or("-"),
                        e.decision,
                        e.code.as_deref().unwrap_or("")
                    );
                }
            }
        }
        AuditCommand::Report { filter, json } => {
            if filter.id_number.is_none() && filter.credit_code.is_none() {
                bail!("a report is about one subject: give --id-number or --credit-code");
            }
            let catalog = Catalog::load(&s.policies_dir)?;
            let lines = audit::report::subject_report(&read(filter)?, &catalog);
            if *json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                print!("{}", audit::report::render_report(&lines));
            }
        }
        AuditCommand::Anomalies { filter, json } => {
            let found =
                audit::report::anomalies(&read(filter)?, &audit::report::AnomalyRules::default());
            if *json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else if found.is_empty() {
                println!("no anomalies");
            } else {
                for a in &found {
                    println!(
                        "{:<17} {:<10} {:<14} {}  entries {:?}",
                        format!("{:?}", a.kind),
                        a.agency,
                        a.officer.as_deref().unwrap_or("-"),
                        a.detail,
                        a.entries
                    );
                }
            }
        }
        AuditCommand::Erase {
            dir,
            id_number,
            credit_code,
        } => {
            let (kind, raw) = match (id_number, credit_code) {
                (Some(id), None) => (SubjectKind::Person, id),
                (None, Some(code)) => (SubjectKind::Organisation, code),
                _ => bail!("name the subject by --id-number or --credit-code"),
            };
            let key = subject_key(kind, raw)
                .map_err(|_| anyhow::anyhow!("{}", identifier_problem(kind, raw)))?;
            let dir = dir.clone().unwrap_or_else(|| s.audit_dir());
            let log = audit::AuditLog::open(&dir).with_context(
                || "the audit log must not be open elsewhere: stop the broker first",
            )?;
            if log.erase_subject(&key)? {
                println!("erased: entries about this subject can no longer be linked to them");
            } else {
                println!("no entry names this subject: nothing to erase");
            }
        }
        AuditCommand::Export { filter, out } => {
            let n = audit::report::export_parquet(&read(filter)?, out)?;
            println!("wrote {n} entries to {}", out.display());
        }
    }
    Ok(())
}

fn corrections_command(s: &Settings, command: &CorrectionsCommand) -> anyhow::Result<()> {
    use sharebroker::policy::corrections::{self, State};
    let CorrectionsCommand::List {
        state,
        owner,
        filed_by,
        json,
    } = command;
    let state = state
        .as_deref()
        .map(|v| {
            State::parse(v)
                .with_context(|| format!("--state {v:?}: one of open, confirmed, fixed, withdrawn"))
        })
        .transpose()?;
    let path = s.corrections_file();
    let all = corrections::read(&path)?;
    let found = all.iter().filter(|c| {
        state.is_none_or(|st| c.state == st)
            && owner.as_ref().is_none_or(|o| &c.filed.owner == o)
            && filed_by.as_ref().is_none_or(|a| &c.filed.agency == a)
    });
    let mut n = 0;
    for c in found {
        n += 1;
        if *json {
            println!("{}", serde_json::to_string(c)?);
        } else {
            println!(
                "{}  {:<9} {}  {:<32} owner {:<10} filed by {:<10} {}  {}",
                c.id,
                c.state.as_str(),
                c.filed_at.format("%Y-%m-%d %H:%M"),
                c.filed.field,
                c.filed.owner,
                c.filed.agency,
                c.filed.subject.key,
                c.decision_reason.as_deref().unwrap_or(&c.filed.reason),
            );
        }
    }
    if !*json && n == 0 {
        println!("no corrections match ({})", path.display());
    }
    Ok(())
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let s = Settings {
        policies_dir: cli.policies.clone(),
        connectors_dir: cli.connectors.clone(),
        data_dir: cli.data_dir.clone(),
        ..Settings::default()
    };
    Ok(match &cli.config {
        Some(path) => Settings::load(path, s)?,
        None => s,
    })
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let s = settings(&cli)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match &cli.command {
        Command::Gen { persons, seed, out } => generate_sources(&s, *persons, *seed, out.clone()),
        Command::Pull {
            sources,
            check: true,
            ..
        } => check_sources(&s, sources),
        Command::Pull { sources, full, .. } => pull_sources(&s, sources, *full).map(|_| ()),
        Command::Pki {
            command: PkiCommand::Init { force },
        } => pki_init(&s, *force),
        Command::Pki {
            command:
                PkiCommand::Token {
                    agency,
                    officer,
                    lifetime_secs,
                },
        } => {
            println!("{}", officer_token(&s, agency, officer, *lifetime_secs)?);
            Ok(())
        }
        Command::Serve {
            listen,
            tree_head_interval_secs,
            audit_segment_max_bytes,
        } => {
            let mut s = s;
            if let Some(l) = listen {
                s.listen = *l;
            }
            if let Some(n) = tree_head_interval_secs {
                s.tree_head_interval_secs = *n;
            }
            if let Some(n) = audit_segment_max_bytes {
                s.audit_segment_max_bytes = *n;
            }
            rt.block_on(serve(s, None))
        }
        Command::Demo { persons, listen } => {
            let s = Settings {
                listen: *listen,
                ..s
            };
            if !s.sources_dir().join("truth.csv").exists() {
                generate_sources(&s, *persons, 2021, None)?;
            }
            pki_init(&s, false)?;
            pull_sources(&s, &[], false)?;
            let demo = demo_script(&s)?;
            rt.block_on(serve(s, Some(demo)))
        }
        Command::Policy {
            command: PolicyCommand::Check,
        } => {
            let catalog = Catalog::load(&s.policies_dir)?;
            // With the applications approved through the API, as served.
            let approved =
                sharebroker::policy::applications::read_approved(&s.applications_file())?;
            let policy = rt.block_on(PolicySet::load_with(&s.policies_dir, &catalog, &approved))?;
            let conns = connectors::load_dir(&s.connectors_dir, &catalog)?;
            let findings = steward::check(&catalog, &policy);
            for f in &findings {
                println!("{f}");
            }
            let errors = findings
                .iter()
                .filter(|f| f.severity == steward::Severity::Error)
                .count();
            if errors > 0 {
                bail!(
                    "{errors} errors, {} warnings in the policy",
                    findings.len() - errors
                );
            }
            println!(
                "ok: {} agencies, {} datasets, {} service items, {} rules, {} applications, {} plans, {} connectors; policy version {}",
                catalog.agencies.len(),
                catalog.datasets.len(),
                catalog.items.len(),
                policy.rules.len(),
                policy.applications.len(),
                policy.plan_count(),
                conns.len(),
                policy.version
            );
            if !findings.is_empty() {
                println!("{} warning(s), no errors", findings.len());
            }
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Test { dir },
        } => {
            let catalog = Catalog::load(&s.policies_dir)?;
            let policy = rt.block_on(PolicySet::load(&s.policies_dir, &catalog))?;
            let dir = dir
                .clone()
                .unwrap_or_else(|| s.policies_dir.join(steward::TESTS_DIR));
            let files = steward::test_files(&dir)?;
            if files.is_empty() {
                bail!("no test files (*.toml) in {}", dir.display());
            }
            let (mut cases, mut failed) = (0, 0);
            for f in &files {
                let these = steward::load_cases(f, &catalog)?;
                cases += these.len();
                for m in steward::run_cases(&catalog, &policy, &these) {
                    println!("FAIL {m}");
                    failed += 1;
                }
            }
            if failed > 0 {
                bail!("{failed} of {cases} expected decisions failed");
            }
            println!("ok: {cases} expected decisions in {} files", files.len());
            Ok(())
        }
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    agency,
                    role,
                    purpose,
                    field,
                },
        } => {
            let catalog = Catalog::load(&s.policies_dir)?;
            // With the applications approved through the API, as served.
            let approved =
                sharebroker::policy::applications::read_approved(&s.applications_file())?;
            let policy = rt.block_on(PolicySet::load_with(&s.policies_dir, &catalog, &approved))?;
            let today = sharebroker::policy::local_date(chrono::Utc::now());
            let e = steward::explain(
                &catalog,
                &policy,
                agency,
                role.as_deref(),
                purpose,
                field,
                today,
            )?;
            println!("{e}");
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Diff { old, new },
        } => {
            let load = |dir: &PathBuf| -> anyhow::Result<PolicySet> {
                let catalog = Catalog::load(dir)
                    .with_context(|| format!("loading the catalogue in {}", dir.display()))?;
                rt.block_on(PolicySet::load(dir, &catalog))
                    .with_context(|| format!("loading the policy in {}", dir.display()))
            };
            let (a, b) = (load(old)?, load(new)?);
            println!("{}", steward::diff(&a, &b));
            Ok(())
        }
        Command::Seal {
            command:
                SealCommand::Verify {
                    key,
                    body: Some(body),
                    response,
                },
        } => {
            let public = read_public_key(key)?;
            let text = std::fs::read_to_string(response)
                .with_context(|| format!("reading {}", response.display()))?;
            let seal = sharebroker::api::export::parse_export_seal(&text)
                .with_context(|| format!("reading the export seal in {}", response.display()))?;
            let mut file =
                std::fs::File::open(body).with_context(|| format!("reading {}", body.display()))?;
            let doc = sharebroker::api::export::verify_export_seal(&public, &seal, &mut file)
                .with_context(|| format!("verifying {}", body.display()))?;
            let e = &doc["export"];
            println!(
                "export seal ok: {} rows, {} bytes of `{}` version {} ({}), audit entry {}, policy {}",
                e["rows"],
                e["bytes"],
                e["dataset"].as_str().unwrap_or("?"),
                e["dataset_version"],
                e["format"].as_str().unwrap_or("?"),
                doc["meta"]["audit_entry"],
                doc["meta"]["policy_version"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Command::Seal {
            command:
                SealCommand::Verify {
                    key,
                    body: None,
                    response,
                },
        } => {
            let public = read_public_key(key)?;
            let doc: serde_json::Value = serde_json::from_slice(
                &std::fs::read(response)
                    .with_context(|| format!("reading {}", response.display()))?,
            )
            .with_context(|| format!("{} is not JSON", response.display()))?;
            seal::verify(&public, &doc)
                .with_context(|| format!("{} does not verify", response.display()))?;
            let form = match doc["seal"]["batch_size"].as_u64() {
                Some(n) => format!(
                    "batch seal, one {} signature over {n} responses and the audit log at size {}",
                    public.alg(),
                    doc["seal"]["log_size"]
                ),
                None => format!("{} signature over this response", public.alg()),
            };
            println!(
                "seal ok: the response is as the broker signed it ({form}; key {})",
                public.key_id()
            );
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { dir, key },
        } => {
            let dir = dir.clone().unwrap_or_else(|| s.audit_dir());
            let key = key.as_deref().map(read_public_key).transpose()?;
            let report = sharebroker::audit::verify_dir(&dir, key.as_ref())?;
            let signatures = match &key {
                Some(key) => format!("signatures checked with {} key {}", key.alg(), key.key_id()),
                None => "signatures not checked (no --key)".to_string(),
            };
            println!(
                "audit log ok: {} entries, root {}; {} tree heads consistent, {signatures}",
                report.entries, report.root_hex, report.tree_heads
            );
            if report.torn_tail_bytes > 0 {
                println!(
                    "note: {} bytes of an unfinished last line were ignored",
                    report.torn_tail_bytes
                );
            }
            Ok(())
        }
        Command::Audit { command } => audit_command(&s, command),
        Command::Store { command } => store_command(&s, command),
        Command::Review { command } => review_command(&s, command),
        Command::Resolve { command } => resolve_command(&s, command),
        Command::Corrections { command } => corrections_command(&s, command),
    }
}

/// The store of `s`, which a pull must have made.
fn open_store(s: &Settings) -> anyhow::Result<TableStore> {
    let dir = s.store_dir();
    if !dir.exists() {
        bail!(
            "no store at {}: run `sharebroker pull` first",
            dir.display()
        );
    }
    Ok(TableStore::open_local(&dir)?)
}

fn review_command(s: &Settings, command: &ReviewCommand) -> anyhow::Result<()> {
    let store = open_store(s)?;
    match command {
        ReviewCommand::List {
            quarantine,
            source,
            limit,
        } => {
            let wanted = |src: &str| source.as_deref().is_none_or(|s| s == src);
            if *quarantine {
                let q = review::load_quarantine(&store)?;
                let shown: Vec<_> = q.iter().filter(|e| wanted(&e.source)).collect();
                println!("{} quarantined records or values", shown.len());
                for e in shown.iter().take(*limit) {
                    let field = if e.field.is_empty() {
                        "(record)"
                    } else {
                        &e.field
                    };
                    println!(
                        "{}\t{}\tline/position {}\t{field}\t{:?}\t{}",
                        e.source, e.record_id, e.position, e.raw, e.reason
                    );
                }
            } else {
                let items = review::load_review(&store)?;
                let shown: Vec<_> = items.iter().filter(|r| wanted(&r.source)).collect();
                println!("{} records to review", shown.len());
                for r in shown.iter().take(*limit) {
                    println!(
                        "{}\t{}\twritten {:?} name {:?}\n  → {} {:?}  p={:.3}  {} ({} candidate(s))",
                        r.source,
                        r.record_id,
                        r.written_id,
                        r.name,
                        r.subject_id,
                        r.subject_name,
                        r.probability,
                        r.evidence,
                        r.candidates
                    );
                }
            }
            Ok(())
        }
        ReviewCommand::Link {
            source,
            record_id,
            subject_id,
            steward,
            note,
        } => {
            review::decide(&store, source, record_id, Some(subject_id), steward, note)?;
            println!(
                "decided: link {source}/{record_id} to {subject_id}; takes effect at the next resolve (`sharebroker review apply` or `sharebroker pull`)"
            );
            Ok(())
        }
        ReviewCommand::Reject {
            source,
            record_id,
            steward,
            note,
        } => {
            review::decide(&store, source, record_id, None, steward, note)?;
            println!(
                "decided: {source}/{record_id} matches no subject; takes effect at the next resolve (`sharebroker review apply` or `sharebroker pull`)"
            );
            Ok(())
        }
        ReviewCommand::Merge {
            subject_id,
            into,
            steward,
            note,
        } => {
            review::merge(&store, subject_id, Some(into), steward, note)?;
            println!(
                "decided: {subject_id} merges into {into}; takes effect at the next resolve (`sharebroker review apply` or `sharebroker pull`)"
            );
            Ok(())
        }
        ReviewCommand::Unmerge {
            subject_id,
            steward,
            note,
        } => {
            review::merge(&store, subject_id, None, steward, note)?;
            println!(
                "decided: {subject_id} is split off again; takes effect at the next resolve (`sharebroker review apply` or `sharebroker pull`)"
            );
            Ok(())
        }
        ReviewCommand::Decisions => {
            for d in review::load_decision_rows(&store)? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    d.decided_at,
                    d.steward,
                    d.decision,
                    d.source,
                    d.record_id,
                    d.subject_id,
                    d.note
                );
            }
            Ok(())
        }
        ReviewCommand::Apply { all } => {
            let catalog = Catalog::load(&s.policies_dir)?;
            let configs = connectors::load_dir(&s.connectors_dir, &catalog)?;
            let report = if *all {
                pull::resolve_all(&catalog, &configs, &store)?
            } else {
                pull::resolve(&catalog, &configs, &store)?
            };
            print_resolve_report(&report);
            Ok(())
        }
    }
}

fn resolve_command(s: &Settings, command: &ResolveCommand) -> anyhow::Result<()> {
    let catalog = Catalog::load(&s.policies_dir)?;
    match command {
        ResolveCommand::Records { out } => {
            let configs = connectors::load_dir(&s.connectors_dir, &catalog)?;
            let n = linkage::write_records(&catalog, &configs, &s.data_dir, out)?;
            eprintln!("wrote {n} person records to {}", out.display());
        }
        ResolveCommand::Link { input, out } => {
            let st = linkage::link_csv(&catalog, input, out)?;
            eprintln!(
                "{} records → {} subjects: {} exact, {} probable, {} to review, {} not linked; {:.2?}, peak RSS {} MiB",
                st.records,
                st.subjects,
                st.exact,
                st.probable,
                st.review,
                st.unlinked,
                st.elapsed,
                peak_rss_mib()
            );
            if let Some(m) = &st.model {
                eprintln!(
                    "model: m={:.4?} u={:.6?} neighbour density {:.5} ({} linked name pairs, {} subjects)",
                    m.m, m.u, m.density, m.true_pairs, m.subjects
                );
            }
        }
        ResolveCommand::Score { truth, links, kind } => {
            let r = linkage::score_files(truth, links, kind)?;
            println!("{r}");
        }
    }
    Ok(())
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// Reads a published key: the raw `seal-key.pub` text or the JSON served at /v1/seal/key.
fn read_public_key(path: &std::path::Path) -> anyhow::Result<seal::PublicKey> {
    let key_text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let key_text = serde_json::from_str::<serde_json::Value>(&key_text)
        .ok()
        .and_then(|v| v.get("key").and_then(|k| k.as_str()).map(str::to_string))
        .unwrap_or(key_text);
    seal::parse_public_key_file(&key_text).with_context(|| format!("reading {}", path.display()))
}

fn generate_sources(
    s: &Settings,
    persons: usize,
    seed: u64,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let out_dir = out.unwrap_or_else(|| s.sources_dir());
    let summary = generate(&GenOptions {
        out_dir: out_dir.clone(),
        persons,
        seed,
        progress: true,
    })?;
    eprintln!(
        "generated {} persons, {} organisations into {}",
        summary.persons,
        summary.organisations,
        out_dir.display()
    );
    for (file, rows) in &summary.rows {
        eprintln!("  {file:<28} {rows:>9} rows");
    }
    Ok(())
}

/// Each source's health check: reachable, with the mapped columns.
fn check_sources(s: &Settings, only: &[String]) -> anyhow::Result<()> {
    let catalog = Catalog::load(&s.policies_dir)?;
    let configs = connectors::load_dir(&s.connectors_dir, &catalog)?;
    let mut failed = 0;
    for config in &configs {
        if !only.is_empty() && !only.contains(&config.spec.name) {
            continue;
        }
        match connectors::build(config, &s.data_dir).check() {
            Ok(()) => println!("  {:<24} ok", config.spec.name),
            Err(e) => {
                failed += 1;
                println!("  {:<24} FAILED: {e}", config.spec.name);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} source(s) failed their check");
    }
    Ok(())
}

fn pull_sources(s: &Settings, only: &[String], full: bool) -> anyhow::Result<pull::PullReport> {
    let report = pull::run_configured_with(
        s,
        only,
        &pull::PullOptions {
            full,
            progress: true,
            ..pull::PullOptions::default()
        },
    )?;
    for (name, st) in &report.sources {
        eprintln!(
            "  {name:<24} {:>9} rows  {:>6} rejected  {:>6.1} MB  {:.2?}",
            st.rows,
            st.rejected,
            st.bytes as f64 / 1e6,
            st.elapsed
        );
    }
    for name in &report.never_pulled {
        eprintln!(
            "  {name:<24} never pulled: not in the golden records (run `sharebroker pull {name}`)"
        );
    }
    print_resolve_report(&report);
    Ok(report)
}

fn print_resolve_report(report: &pull::PullReport) {
    if report.unchanged {
        eprintln!(
            "  no staged source, mapping or decision changed: the golden records stay as they are"
        );
        return;
    }
    if let Some(t) = &report.touched {
        eprintln!(
            "  resolved only what changed: {} new staged rows, {} of {} key buckets rewritten",
            t.records, t.partitions, t.buckets
        );
    }
    for (kind, n, new) in &report.subjects {
        eprintln!("  {:<24} {n:>9} subjects ({new} new)", kind.as_str());
    }
    eprintln!(
        "  {} records linked without a valid identifier ({} by stewards), {} to review (`sharebroker review list`)",
        report.probable_links + report.steward_links,
        report.steward_links,
        report.review
    );
    eprintln!(
        "  quarantined {} records or values, {} data-quality findings; stored in {:.2?}",
        report.quarantined, report.findings, report.elapsed
    );
}

fn store_command(s: &Settings, command: &StoreCommand) -> anyhow::Result<()> {
    let store = open_store(s)?;
    let as_of = |a: &str| AsOf::parse(a).map_err(|e| anyhow::anyhow!("--as-of: {e}"));
    match command {
        StoreCommand::Ls { table, json } => {
            let tables = match table {
                Some(t) => vec![t.clone()],
                None => store.tables()?,
            };
            if !json {
                println!(
                    "{:<24} {:>8} {:>10} {:>12} {:>6} {:>9}  created",
                    "table", "version", "rows", "bytes", "files", "versions"
                );
            }
            for t in &tables {
                let versions = store.versions(t)?;
                let shown: Vec<u64> = match table {
                    Some(_) => versions.clone(),
                    None => versions.last().copied().into_iter().collect(),
                };
                if shown.is_empty() && !json {
                    println!("{t:<24} (no committed version)");
                }
                for v in shown {
                    match store.manifest(t, v) {
                        Ok(m) if *json => println!("{}", serde_json::to_string(&m)?),
                        Ok(m) => println!(
                            "{:<24} {:>8} {:>10} {:>12} {:>6} {:>9}  {}",
                            t,
                            m.version,
                            m.rows,
                            m.bytes(),
                            m.files.len(),
                            versions.len(),
                            m.created_at
                        ),
                        Err(e) => println!("{t:<24} {v:>8}  unreadable: {e}"),
                    }
                }
            }
            Ok(())
        }
        StoreCommand::Show {
            table,
            as_of: at,
            key,
            key_column,
            verify,
        } => {
            let m = store::manifest_as_of(&store, table, &as_of(at)?)?;
            if *verify {
                store.verify(&m)?;
                eprintln!("every file of {table} v{} matches its manifest", m.version);
            }
            match key {
                None => println!("{}", serde_json::to_string_pretty(&m)?),
                Some(k) => {
                    let t = store::LoadedTable::load(&store, m, key_column)?;
                    let row = t.row(k).with_context(|| {
                        format!(
                            "no row with {key_column} = the given key in {table} v{}",
                            t.manifest.version
                        )
                    })?;
                    let out = serde_json::json!({
                        "table": table,
                        "version": t.manifest.version,
                        "created_at": t.manifest.created_at,
                        "row": row.to_json(),
                    });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                }
            }
            Ok(())
        }
        StoreCommand::Export {
            table,
            as_of: at,
            out,
        } => {
            let m = store::manifest_as_of(&store, table, &as_of(at)?)?;
            let rows = store.export_parquet(&m, out)?;
            eprintln!(
                "wrote {table} v{} ({rows} rows, checked against its manifest) to {}",
                m.version,
                out.display()
            );
            Ok(())
        }
        StoreCommand::Gc {
            dry_run,
            keep_versions,
            keep_days,
        } => {
            let retention = store::Retention {
                keep_versions: keep_versions.unwrap_or(s.store_retention.keep_versions),
                keep_days: keep_days.unwrap_or(s.store_retention.keep_days),
            };
            for r in store.gc_all(&retention, *dry_run)? {
                let verb = if *dry_run { "would remove" } else { "removed" };
                if r.busy {
                    println!("{:<24} skipped: a writer holds the table", r.table);
                } else {
                    println!(
                        "{:<24} {verb} versions {:?} and {} files ({} bytes)",
                        r.table,
                        r.versions_removed,
                        r.files_removed.len(),
                        r.bytes_freed
                    );
                }
            }
            Ok(())
        }
    }
}

fn client_names(catalog: &Catalog) -> Vec<String> {
    catalog
        .agencies
        .iter()
        .flat_map(|a| a.certificate_names.iter().cloned())
        .collect()
}

fn pki_init(s: &Settings, force: bool) -> anyhow::Result<()> {
    let catalog = Catalog::load(&s.policies_dir)?;
    let mut names = client_names(&catalog);
    names.push("unregistered-agency".into());
    let summary = pki::init(
        &s.pki_dir(),
        &names,
        &["localhost".to_string(), "127.0.0.1".to_string()],
        force,
    )?;
    eprintln!("pki in {}: {summary:?}", s.pki_dir().display());
    Ok(())
}

/// A token naming `officer` of `agency`, signed with the key of the
/// agency's first client certificate in the development PKI.
fn officer_token(
    s: &Settings,
    agency: &str,
    officer: &str,
    lifetime_secs: i64,
) -> anyhow::Result<String> {
    if !(1..=api::token::MAX_LIFETIME_SECS).contains(&lifetime_secs) {
        bail!(
            "--lifetime-secs is 1 to {} (the broker refuses longer tokens)",
            api::token::MAX_LIFETIME_SECS
        );
    }
    let catalog = Catalog::load(&s.policies_dir)?;
    let a = catalog
        .agencies
        .iter()
        .find(|a| a.id == agency)
        .with_context(|| format!("no agency `{agency}` in {}", s.policies_dir.display()))?;
    let cert_name = a
        .certificate_names
        .first()
        .with_context(|| format!("agency `{agency}` has no certificate name"))?;
    let key = pki::PkiPaths::new(&s.pki_dir()).client_key(cert_name);
    let signer = api::client::token_signer(&key, agency)?;
    Ok(signer.mint(officer, lifetime_secs)?)
}

async fn serve(s: Settings, demo: Option<String>) -> anyhow::Result<()> {
    s.check_listen().map_err(anyhow::Error::msg)?;
    let state = Arc::new(AppState::open(&s).await?);
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("binding {}", s.listen))?;
    if let Some(text) = demo {
        println!("{text}");
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // Sources with `pull_interval_secs` are pulled on their schedule; the
    // broker loads each new golden version by itself.
    let schedule = pull::spawn_schedule(&s)?;
    if s.insecure_plain_http {
        api::run_plain(listener, pki::PkiPaths::new(&s.pki_dir()), state, shutdown).await?;
    } else {
        let tls = api::tls_config_from(&s)?;
        tracing::info!(listen = %s.listen, tls_min_version = ?s.tls_min_version, policy_version = %state.policy().version, "serving with mutual TLS");
        api::run(listener, tls, state, shutdown).await?;
    }
    for task in schedule {
        task.abort();
    }
    Ok(())
}

/// Copy-pasteable commands for the demo, with a real applicant.
fn demo_script(s: &Settings) -> anyhow::Result<String> {
    let path = s.sources_dir().join("applicants.csv");
    let mut rdr =
        csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    let rows: Vec<csv::StringRecord> = rdr.records().collect::<Result<_, _>>()?;
    if rows.len() < 2 {
        bail!("{} lists fewer than two applicants", path.display());
    }
    let cell = |r: usize, c: usize| {
        rows[r]
            .get(c)
            .with_context(|| format!("{}: row {} lacks column {}", path.display(), r + 2, c + 1))
    };
    let (id1, name1, id2) = (cell(0, 1)?, cell(0, 2)?, cell(1, 1)?);
    let case = format!("MZ-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let url = format!("https://{}", demo_host(s));
    let pki = s.pki_dir();
    // Each agency's requests carry an officer token signed with its
    // certificate's key; the printed commands mint them into shell variables.
    let tls = |agency: &str| {
        format!(
            "curl -s --cacert {ca} --cert {d}/clients/{agency}.pem --key {d}/clients/{agency}.key -H \"x-officer-token: ${var}\"",
            ca = pki.join("ca.pem").display(),
            d = pki.display(),
            var = token_var(agency),
        )
    };
    let mint = |agency: &str, officer: &str| {
        format!(
            "{var}=$(cargo run --release -q -- --policies {pol} --data-dir {data} pki token --agency {agency} --officer {officer})",
            var = token_var(agency),
            pol = s.policies_dir.display(),
            data = s.data_dir.display(),
        )
    };
    let mzt = tls("xj-mzt");
    let post = "-H 'content-type: application/json' -d";
    Ok(format!(
        r#"
sharebroker demo is up on {url} (mutual TLS; Ctrl-C stops it).
Applicant: {name1} ({id1}). Civil affairs (xj-mzt) handles a marriage registration (XJ-MZ-0201).

# 0. Officer tokens (valid 10 minutes; run these again when they expire):
#    which officer asks, signed with the agency's client-certificate key
{mint_mzt}
{mint_gjj}
{mint_sjj}

# 1. Open a case for the applicant (purpose binding: service item + applicant)
{mzt} {url}/v1/cases {post} '{{"case_id":"{case}","service_item":"XJ-MZ-0201","officer":"mz-officer-007","applicants":[{{"id_number":"{id1}"}}]}}'

# 2. Look up the applicant's household-registry record for that case (sealed; phone and ethnicity withheld with reasons)
{mzt} {url}/v1/cases/{case}/lookup {post} '{{"subject":{{"id_number":"{id1}"}},"dataset":"population"}}' | tee lookup.json

# 3. Verify the seal offline
curl -s --cacert {ca} --cert {pkid}/clients/xj-mzt.pem --key {pkid}/clients/xj-mzt.key {url}/v1/seal/key > seal-key.json && cargo run --release -q -- seal verify --key seal-key.json lookup.json

# 4. Pre-fill every material the service item needs; the rest is what the applicant must still bring
{mzt} {url}/v1/cases/{case}/prefill {post} '{{}}'

# 5. Refused, with a reason and no data:
#    a person who is not an applicant of the case
{mzt} {url}/v1/cases/{case}/lookup {post} '{{"subject":{{"id_number":"{id2}"}},"dataset":"population"}}'
#    a purpose other than the case's
{mzt} {url}/v1/cases/{case}/lookup {post} '{{"subject":{{"id_number":"{id1}"}},"dataset":"population","purpose":"XJ-GJJ-0203"}}'
#    a field the catalogue does not share
{mzt} {url}/v1/cases/{case}/lookup {post} '{{"subject":{{"id_number":"{id1}"}},"dataset":"population","fields":["phone"]}}'
#    another agency using this case
{gjj} {url}/v1/cases/{case}/lookup {post} '{{"subject":{{"id_number":"{id1}"}},"dataset":"population"}}'

# 6. The auditor's view: every access to this applicant's data, the applicant-facing report, a signed tree head
{sjj} '{url}/v1/audit?id_number={id1}'
{sjj} '{url}/v1/audit/report?id_number={id1}'
{sjj} '{url}/v1/audit/tree-head'
#    and offline, on the log itself:
cargo run --release -q -- --data-dir {data} audit report --id-number {id1}
cargo run --release -q -- --data-dir {data} audit verify --key {seal_pub}

# 7. Operations (a client certificate, no officer token, not audited): readiness, Prometheus metrics, the OpenAPI document
curl -s --cacert {ca} --cert {pkid}/clients/xj-mzt.pem --key {pkid}/clients/xj-mzt.key {url}/v1/ready
curl -s --cacert {ca} --cert {pkid}/clients/xj-mzt.pem --key {pkid}/clients/xj-mzt.key {url}/v1/metrics
curl -s --cacert {ca} --cert {pkid}/clients/xj-mzt.pem --key {pkid}/clients/xj-mzt.key {url}/v1/openapi.json
"#,
        mint_mzt = mint("xj-mzt", "mz-officer-007"),
        mint_gjj = mint("xj-gjj", "gjj-officer-012"),
        mint_sjj = mint("xj-sjj", "auditor-003"),
        gjj = tls("xj-gjj"),
        data = s.data_dir.display(),
        seal_pub = s.seal_key_file().with_extension("pub").display(),
        sjj = tls("xj-sjj"),
        ca = pki.join("ca.pem").display(),
        pkid = pki.display(),
    ))
}

/// The shell variable holding an agency's officer token in the demo commands.
fn token_var(agency: &str) -> String {
    format!("{}_TOKEN", agency.replace('-', "_").to_uppercase())
}

/// Where the printed commands reach the demo: the certificate names
/// localhost and 127.0.0.1, so an unspecified listen address is shown as
/// 127.0.0.1.
fn demo_host(s: &Settings) -> String {
    let ip = if s.listen.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        s.listen.ip()
    };
    std::net::SocketAddr::new(ip, s.listen.port()).to_string()
}
