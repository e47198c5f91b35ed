//! Data-steward tooling over a catalogue and a compiled [`PolicySet`]: `check` (findings about the rules), expected
//! decisions (`policies/tests/*.toml`), `explain` (which rule or share type decided a field) and `diff` (access
//! gained and lost between two policy versions). Pure functions over loaded values; the CLI prints them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Deserialize;
use toml::Spanned;

use super::{
    FieldDecision, PolicySet, READ_CLEAR, READ_MASKED, Request, Rule, evaluate, object_covers,
};
use crate::catalog::{Agency, Catalog, Dataset, Field, MaskKind, ServiceItem, ShareType};
use crate::config::{ConfigError, ConfigErrors, Source};

/// Where expected decisions live, inside a policy directory.
pub const TESTS_DIR: &str = "tests";

#[derive(Debug, thiserror::Error)]
pub enum StewardError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("unknown agency `{0}`")]
    UnknownAgency(String),
    #[error("`{role}` is not a role of `{agency}` (roles: {roles})")]
    UnknownRole {
        agency: String,
        role: String,
        roles: String,
    },
    #[error("unknown service item `{0}`")]
    UnknownItem(String),
    #[error("unknown catalogue field `{0}` (expected `dataset.field`)")]
    UnknownField(String),
}

// ---- check ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One problem `check` found in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{s}: {}", self.message)
    }
}

/// The agency part of an `agency:role` name.
fn agency_of(role: &str) -> &str {
    role.split_once(':').map_or(role, |(a, _)| a)
}

/// The service items a rule's purpose names: one item, or every item of a
/// `purpose:` category.
fn purpose_items<'c>(catalog: &'c Catalog, purpose: &str) -> Vec<&'c ServiceItem> {
    match purpose.strip_prefix("purpose:") {
        Some(cat) => catalog
            .items
            .iter()
            .filter(|i| i.purpose_category == cat)
            .collect(),
        None => catalog.items.iter().filter(|i| i.code == purpose).collect(),
    }
}

/// The fields a rule's object names: one field, a `dataset:`, or a `tag:`.
fn object_fields<'c>(catalog: &'c Catalog, object: &str) -> Vec<(&'c Dataset, &'c Field)> {
    catalog
        .datasets
        .iter()
        .flat_map(|d| d.fields.iter().map(move |f| (d, f)))
        .filter(|(d, f)| object_covers(object, &d.id, f))
        .collect()
}

/// Findings about `policy`, errors first, each naming its rule's line.
/// Unknown names are load errors already; this finds rules that can never
/// match, allows wholly shadowed by denies, sensitive fields readable for
/// every item a role handles, and duplicate rules.
pub fn check(catalog: &Catalog, policy: &PolicySet) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut by_role: HashMap<&str, Vec<&Rule>> = HashMap::new();
    for r in &policy.rules {
        by_role.entry(r.role.as_str()).or_default().push(r);
    }
    let mut seen: HashMap<(&str, &str, &str, &str, bool), usize> = HashMap::new();
    for rule in &policy.rules {
        let agency = agency_of(&rule.role);
        // (d) duplicates
        let key = (
            rule.role.as_str(),
            rule.object.as_str(),
            rule.action.as_str(),
            rule.purpose.as_str(),
            rule.allow,
        );
        if let Some(first) = seen.get(&key) {
            findings.push(Finding {
                severity: Severity::Warning,
                message: format!("{}: duplicates policy.csv:{first}", rule.describe()),
            });
            continue;
        }
        seen.insert(key, rule.line);
        // (a) never matches: cases are opened only by an item's handling
        // agency, so no lookup of this role is ever for these items.
        let items: Vec<&ServiceItem> = purpose_items(catalog, &rule.purpose)
            .into_iter()
            .filter(|i| i.agency == agency)
            .collect();
        if items.is_empty() {
            let handlers: Vec<String> = purpose_items(catalog, &rule.purpose)
                .iter()
                .map(|i| format!("{} by `{}`", i.code, i.agency))
                .collect();
            findings.push(Finding {
                severity: Severity::Error,
                message: format!(
                    "{}: can never match: `{agency}` handles no item of `{}` ({}), and only an item's handling agency opens cases for it",
                    rule.describe(),
                    rule.purpose,
                    handlers.join(", ")
                ),
            });
            continue;
        }
        // (b) an allow every one of whose (item, field) pairs a deny overrides
        if rule.allow {
            let rules = by_role
                .get(rule.role.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut denies: Vec<usize> = Vec::new();
            let mut shadowed = true;
            'pairs: for item in &items {
                for (d, f) in object_fields(catalog, &rule.object) {
                    let req = Request {
                        role: &rule.role,
                        field: f,
                        dataset: &d.id,
                        item: &item.code,
                        category: &item.purpose_category,
                    };
                    match evaluate(rules, &req, &rule.action).deny {
                        Some(deny) => denies.push(deny.line),
                        None => {
                            shadowed = false;
                            break 'pairs;
                        }
                    }
                }
            }
            if shadowed {
                denies.sort_unstable();
                denies.dedup();
                let lines: Vec<String> = denies.iter().map(|l| format!("policy.csv:{l}")).collect();
                findings.push(Finding {
                    severity: Severity::Warning,
                    message: format!(
                        "{}: shadowed: every field and item it allows is denied by {}",
                        rule.describe(),
                        lines.join(", ")
                    ),
                });
            }
        }
    }
    // (c) sensitive or identifying fields readable for every item a role's
    // agency handles (at least two): the purpose no longer limits them.
    for agency in &catalog.agencies {
        let handled: Vec<&ServiceItem> = catalog
            .items
            .iter()
            .filter(|i| i.agency == agency.id)
            .collect();
        if handled.len() < 2 {
            continue;
        }
        for role in &agency.roles {
            for d in &catalog.datasets {
                for f in &d.fields {
                    if f.sensitivity != "sensitive" && f.sensitivity != "identifier" {
                        continue;
                    }
                    let open = handled.iter().all(|i| {
                        policy
                            .plan(role, &i.code, &d.id)
                            .and_then(|p| p.decision(&f.name))
                            .is_some_and(|dec| Outcome::of(dec) != Outcome::Denied)
                    });
                    if open {
                        findings.push(Finding {
                            severity: Severity::Warning,
                            message: format!(
                                "`{}` ({}) is readable by `{role}` for every item `{}` handles ({}): the purpose does not limit it",
                                f.qualified,
                                f.sensitivity,
                                agency.id,
                                handled.iter().map(|i| i.code.as_str()).collect::<Vec<_>>().join(", ")
                            ),
                        });
                    }
                }
            }
        }
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    findings
}

// ---- expected decisions ----

/// A decision's outcome, ordered by how much it gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Denied,
    Masked,
    Clear,
}

impl Outcome {
    pub fn of(d: &FieldDecision) -> Outcome {
        match d {
            FieldDecision::Clear { .. } => Outcome::Clear,
            FieldDecision::Masked { .. } => Outcome::Masked,
            FieldDecision::Denied { .. } => Outcome::Denied,
        }
    }

    fn parse(s: &str) -> Option<Outcome> {
        match s {
            "clear" => Some(Outcome::Clear),
            "masked" => Some(Outcome::Masked),
            "denied" => Some(Outcome::Denied),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Denied => "denied",
            Outcome::Masked => "masked",
            Outcome::Clear => "clear",
        })
    }
}

/// One expected decision from a `policies/tests/*.toml` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    pub file: PathBuf,
    pub line: usize,
    pub role: String,
    pub item: String,
    /// `dataset.field`.
    pub field: String,
    pub expect: Outcome,
}

/// A case whose decision is not the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub case: TestCase,
    pub got: Outcome,
    /// The deciding rule, or why the field is denied.
    pub why: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.case;
        write!(
            f,
            "{}:{}: `{}` reading `{}` for `{}`: expected {}, got {} ({})",
            c.file.display(),
            c.line,
            c.role,
            c.field,
            c.item,
            c.expect,
            self.got,
            self.why
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCases {
    #[serde(default)]
    case: Vec<RawCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    agency: Spanned<String>,
    /// `agency:role` or `role`; default: the agency's first role.
    #[serde(default)]
    role: Option<Spanned<String>>,
    /// A service item code.
    purpose: Spanned<String>,
    /// `dataset.field`.
    field: Spanned<String>,
    /// `clear`, `masked` or `denied`.
    expect: Spanned<String>,
}

/// Every `*.toml` file in `dir`, sorted by name.
pub fn test_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::new(dir, "", format!("cannot read directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Read and validate the cases of one file against `catalog`; every problem
/// names the file, the key and the line.
pub fn load_cases(path: &Path, catalog: &Catalog) -> Result<Vec<TestCase>, ConfigErrors> {
    let src = Source::read(path)?;
    let raw: RawCases = src.parse_toml()?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, c) in raw.case.into_iter().enumerate() {
        let key = format!("case[{i}]");
        let line = src.line_of(c.agency.span().start);
        let agency = catalog.agency(c.agency.get_ref());
        if agency.is_none() {
            errors.push(src.error_at(
                c.agency.span(),
                format!("{key}.agency"),
                format!("unknown agency `{}`", c.agency.get_ref()),
            ));
        }
        let role = match (agency, &c.role) {
            (None, _) => None,
            (Some(a), None) => a.roles.first().cloned(),
            (Some(a), Some(r)) => {
                let full = full_role(a, r.get_ref());
                if full.is_none() {
                    errors.push(src.error_at(
                        r.span(),
                        format!("{key}.role"),
                        format!(
                            "`{}` is not a role of `{}` (roles: {})",
                            r.get_ref(),
                            a.id,
                            a.roles.join(", ")
                        ),
                    ));
                }
                full
            }
        };
        if catalog.item(c.purpose.get_ref()).is_none() {
            errors.push(src.error_at(
                c.purpose.span(),
                format!("{key}.purpose"),
                format!(
                    "unknown service item `{}` (a case's purpose is an item code)",
                    c.purpose.get_ref()
                ),
            ));
        }
        if catalog.field(c.field.get_ref()).is_none() {
            errors.push(src.error_at(
                c.field.span(),
                format!("{key}.field"),
                format!(
                    "unknown catalogue field `{}` (`dataset.field`)",
                    c.field.get_ref()
                ),
            ));
        }
        let expect = Outcome::parse(c.expect.get_ref());
        if expect.is_none() {
            errors.push(src.error_at(
                c.expect.span(),
                format!("{key}.expect"),
                format!(
                    "unknown decision `{}` (clear, masked or denied)",
                    c.expect.get_ref()
                ),
            ));
        }
        if let (Some(role), Some(expect)) = (role, expect) {
            out.push(TestCase {
                file: path.to_path_buf(),
                line,
                role,
                item: c.purpose.into_inner(),
                field: c.field.into_inner(),
                expect,
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// `agency:role` for a role given in full or by its short name.
fn full_role(agency: &Agency, role: &str) -> Option<String> {
    agency
        .roles
        .iter()
        .find(|r| *r == role || r.split_once(':').is_some_and(|(_, short)| short == role))
        .cloned()
}

/// The compiled plan's decision for one (role, item, field).
fn decision<'p>(
    catalog: &Catalog,
    policy: &'p PolicySet,
    role: &str,
    item: &str,
    field: &str,
) -> Option<&'p FieldDecision> {
    let (d, f) = catalog.field(field)?;
    policy.plan(role, item, &d.id)?.decision(&f.name)
}

fn why(d: Option<&FieldDecision>) -> String {
    match d {
        Some(FieldDecision::Clear { rule, .. } | FieldDecision::Masked { rule, .. }) => {
            format!("allowed by {rule}")
        }
        Some(FieldDecision::Denied { reason }) => reason.clone(),
        None => "no decision in the plan (default deny)".into(),
    }
}

/// Run `cases` against the compiled plans: the mismatches, in order. A
/// conditional field's application counts whatever its validity window.
pub fn run_cases(catalog: &Catalog, policy: &PolicySet, cases: &[TestCase]) -> Vec<Mismatch> {
    cases
        .iter()
        .filter_map(|c| {
            let d = decision(catalog, policy, &c.role, &c.item, &c.field);
            let got = d.map_or(Outcome::Denied, Outcome::of);
            (got != c.expect).then(|| Mismatch {
                case: c.clone(),
                got,
                why: why(d),
            })
        })
        .collect()
}

// ---- explain ----

/// Why one field is, or is not, readable by a role for a service item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub role: String,
    pub item: String,
    pub field: String,
    pub outcome: Outcome,
    pub mask: Option<MaskKind>,
    /// One line each: the deciding rule or reason, then the details.
    pub lines: Vec<String>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` reading `{}` for `{}`: {}",
            self.role, self.field, self.item, self.outcome
        )?;
        if let Some(m) = self.mask {
            write!(f, " ({m:?} mask)")?;
        }
        for l in &self.lines {
            write!(f, "\n  {l}")?;
        }
        Ok(())
    }
}

/// Explain the decision for `agency` (as `role`, default its first role)
/// reading `field` (`dataset.field`) for service item `item`, as of `today`
/// for application windows. The decision is the compiled plan's; the rule
/// evaluations beside it are what a steward needs to change it.
pub fn explain(
    catalog: &Catalog,
    policy: &PolicySet,
    agency: &str,
    role: Option<&str>,
    item: &str,
    field: &str,
    today: NaiveDate,
) -> Result<Explanation, StewardError> {
    let a = catalog
        .agency(agency)
        .ok_or_else(|| StewardError::UnknownAgency(agency.into()))?;
    let role = match role {
        None => a.roles.first().cloned(),
        Some(r) => full_role(a, r),
    }
    .ok_or_else(|| StewardError::UnknownRole {
        agency: a.id.clone(),
        role: role.unwrap_or_default().into(),
        roles: a.roles.join(", "),
    })?;
    let it = catalog
        .item(item)
        .ok_or_else(|| StewardError::UnknownItem(item.into()))?;
    let (d, f) = catalog
        .field(field)
        .ok_or_else(|| StewardError::UnknownField(field.into()))?;
    let decided = decision(catalog, policy, &role, item, field);
    let outcome = decided.map_or(Outcome::Denied, Outcome::of);
    let rules: Vec<&Rule> = policy.rules.iter().filter(|r| r.role == role).collect();
    let req = Request {
        role: &role,
        field: f,
        dataset: &d.id,
        item: &it.code,
        category: &it.purpose_category,
    };
    let clear = evaluate(&rules, &req, READ_CLEAR);
    let masked = evaluate(&rules, &req, READ_MASKED);
    let no_rule = clear.allow.is_none()
        && clear.deny.is_none()
        && masked.allow.is_none()
        && masked.deny.is_none();
    let mut lines = Vec::new();
    let mut mask = None;
    match decided {
        Some(FieldDecision::Clear { rule, .. }) => lines.push(format!("decided by {rule}")),
        Some(FieldDecision::Masked { rule, mask: m, .. }) => {
            mask = Some(*m);
            lines.push(format!("decided by {rule}"));
        }
        Some(FieldDecision::Denied { .. }) | None if no_rule && f.share != ShareType::NotShared => {
            lines.push(format!(
                "default deny: no rule of `{role}` matches `{}` for `{}` (category `purpose:{}`)",
                f.qualified, it.code, it.purpose_category
            ));
        }
        Some(FieldDecision::Denied { reason }) => lines.push(reason.clone()),
        None => lines.push("no decision in the plan (default deny)".into()),
    }
    for (action, e) in [(READ_CLEAR, &clear), (READ_MASKED, &masked)] {
        let verdict = match (e.allow, e.deny) {
            (_, Some(deny)) => format!("denied by {}", deny.describe()),
            (Some(allow), None) => format!("allowed by {}", allow.describe()),
            (None, None) => "no rule matches".into(),
        };
        lines.push(format!("{action}: {verdict}"));
    }
    match f.share {
        ShareType::Unconditional => {}
        ShareType::NotShared => lines.push(format!(
            "`{}` is not shared (不予共享): no rule can open it",
            f.qualified
        )),
        ShareType::Conditional if d.provider == a.id => lines.push(format!(
            "conditional (有条件共享), but `{}` provides `{}`: no application needed",
            a.id, d.id
        )),
        ShareType::Conditional => {
            let cat = format!("purpose:{}", it.purpose_category);
            let apps: Vec<_> = policy
                .applications
                .iter()
                .filter(|ap| {
                    ap.agency == a.id
                        && ap.fields.contains(&f.qualified)
                        && (ap.purpose == it.code || ap.purpose == cat)
                })
                .collect();
            // Without one, the plan's reason above already says so.
            for ap in apps {
                let state = if (ap.approved_on..=ap.valid_until).contains(&today) {
                    "in force today"
                } else {
                    "NOT in force today"
                };
                lines.push(format!(
                    "conditional (有条件共享): covered by application {} (approved by `{}` for `{}`), valid {} to {}: {state} ({today})",
                    ap.id, ap.approved_by, ap.purpose, ap.approved_on, ap.valid_until
                ));
            }
        }
    }
    // What would open it: the role's rules naming this field for other purposes.
    let elsewhere: Vec<String> = rules
        .iter()
        .filter(|r| r.allow && object_covers(&r.object, &d.id, f))
        .filter(|r| r.purpose != it.code && r.purpose != format!("purpose:{}", it.purpose_category))
        .map(|r| format!("policy.csv:{} ({}, {})", r.line, r.purpose, r.action))
        .collect();
    if !elsewhere.is_empty() && outcome == Outcome::Denied {
        lines.push(format!(
            "`{role}` may read it for other purposes: {}",
            elsewhere.join(", ")
        ));
    }
    Ok(Explanation {
        role,
        item: it.code.clone(),
        field: f.qualified.clone(),
        outcome,
        mask,
        lines,
    })
}

// ---- diff ----

/// One (role, item, field) whose outcome differs between two policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub role: String,
    pub item: String,
    /// `dataset.field`.
    pub field: String,
    pub old: Outcome,
    pub new: Outcome,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}: {} → {}",
            self.role, self.item, self.field, self.old, self.new
        )
    }
}

/// Access gained and lost from an old policy to a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub gained: Vec<Change>,
    pub lost: Vec<Change>,
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.gained {
            writeln!(f, "+ gained {c}")?;
        }
        for c in &self.lost {
            writeln!(f, "- lost   {c}")?;
        }
        write!(f, "{} gained, {} lost", self.gained.len(), self.lost.len())
    }
}

/// Every decision of a policy, by (role, item, `dataset.field`); absent
/// means denied.
fn outcomes(policy: &PolicySet) -> BTreeMap<(String, String, String), Outcome> {
    let mut out = BTreeMap::new();
    for (role, items) in &policy.plans {
        for (item, datasets) in items {
            for (dataset, plan) in datasets {
                for (field, d) in &plan.fields {
                    out.insert(
                        (role.clone(), item.clone(), format!("{dataset}.{field}")),
                        Outcome::of(d),
                    );
                }
            }
        }
    }
    out
}

/// Compare every (role, item, field) decision of two policies (their
/// catalogues may differ: what one lacks is denied there), in sorted order.
pub fn diff(old: &PolicySet, new: &PolicySet) -> Diff {
    let (old, new) = (outcomes(old), outcomes(new));
    let mut keys: Vec<&(String, String, String)> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Diff::default();
    for k in keys {
        let o = old.get(k).copied().unwrap_or(Outcome::Denied);
        let n = new.get(k).copied().unwrap_or(Outcome::Denied);
        if o == n {
            continue;
        }
        let change = Change {
            role: k.0.clone(),
            item: k.1.clone(),
            field: k.2.clone(),
            old: o,
            new: n,
        };
        if n > o {
            out.gained.push(change);
        } else {
            out.lost.push(change);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
    }

    async fn load(dir: &Path) -> (Catalog, PolicySet) {
        let c = Catalog::load(dir).expect("catalogue");
        let p = PolicySet::load(dir, &c).await.expect("policy");
        (c, p)
    }

    /// A copy of the demo policy directory (files only) with `policy.csv`
    /// rewritten by `edit`.
    fn copy_with_rules(edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in std::fs::read_dir(policies()).expect("dir") {
            let f = f.expect("entry").path();
            if f.is_file() {
                std::fs::copy(&f, dir.path().join(f.file_name().expect("name"))).expect("copy");
            }
        }
        let rules =
            std::fs::read_to_string(policies().join(super::super::RULES_FILE)).expect("rules");
        std::fs::write(dir.path().join(super::super::RULES_FILE), edit(rules)).expect("write");
        dir
    }

    /// CI: every expected decision in `policies/tests/` holds.
    #[tokio::test]
    async fn demo_policy_meets_every_expected_decision() {
        let (c, p) = load(&policies()).await;
        let files = test_files(&policies().join(TESTS_DIR)).expect("tests dir");
        assert!(!files.is_empty(), "no files in policies/tests");
        let mut total = 0;
        let mut mismatches = Vec::new();
        for f in &files {
            let cases = load_cases(f, &c).unwrap_or_else(|e| panic!("{e}"));
            total += cases.len();
            mismatches.extend(run_cases(&c, &p, &cases));
        }
        assert!(total >= 20, "only {total} cases");
        let text: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
        assert!(mismatches.is_empty(), "{}", text.join("\n"));
    }

    #[tokio::test]
    async fn a_wrong_expectation_is_reported_with_file_and_line() {
        let (c, p) = load(&policies()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wrong.toml");
        std::fs::write(
            &path,
            "[[case]]\nagency = \"xj-mzt\"\npurpose = \"XJ-MZ-0201\"\nfield = \"population.name\"\nexpect = \"clear\"\n\n\
             [[case]]\nagency = \"wlmq-zwfw\"\npurpose = \"WLMQ-ZW-0001\"\nfield = \"population.household_address\"\nexpect = \"clear\"\n",
        )
        .expect("write");
        let cases = load_cases(&path, &c).expect("cases");
        let m = run_cases(&c, &p, &cases);
        assert_eq!(m.len(), 1, "{m:?}");
        let text = m[0].to_string();
        assert!(
            text.contains("wrong.toml:8:")
                && text.contains("`wlmq-zwfw:counter`")
                && text.contains("expected clear, got masked"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn bad_cases_name_file_key_and_line() {
        let (c, _) = load(&policies()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[[case]]\nagency = \"xj-nope\"\npurpose = \"XJ-MZ-0201\"\nfield = \"population.name\"\nexpect = \"clear\"\n\
             [[case]]\nagency = \"xj-mzt\"\nrole = \"fund\"\npurpose = \"XJ-NOPE\"\nfield = \"population.shoe_size\"\nexpect = \"maybe\"\n",
        )
        .expect("write");
        let err = load_cases(&path, &c).expect_err("invalid").to_string();
        for want in [
            "bad.toml:2: case[0].agency: unknown agency `xj-nope`",
            "bad.toml:8: case[1].role: `fund` is not a role of `xj-mzt`",
            "bad.toml:9: case[1].purpose: unknown service item `XJ-NOPE`",
            "bad.toml:10: case[1].field: unknown catalogue field `population.shoe_size`",
            "bad.toml:11: case[1].expect: unknown decision `maybe`",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
        std::fs::write(&path, "[[case]]\nagency = \"xj-mzt\"\npurpos = \"x\"\n").expect("write");
        let err = load_cases(&path, &c).expect_err("unknown key").to_string();
        assert!(
            err.contains("bad.toml:3") && err.contains("purpos"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_demo_policy_has_no_errors() {
        let (c, p) = load(&policies()).await;
        let findings = check(&c, &p);
        assert!(
            findings.iter().all(|f| f.severity == Severity::Warning),
            "{findings:?}"
        );
        // The counter's clear allow of the household address is overridden
        // on purpose (it shows deny-overrides); check says so.
        assert!(
            findings.iter().any(|f| f.message.contains(
                "population.household_address, read_clear, WLMQ-ZW-0001, allow: shadowed"
            )),
            "{findings:?}"
        );
    }

    #[tokio::test]
    async fn check_finds_dead_shadowed_open_and_duplicate_rules() {
        let dir = copy_with_rules(|r| {
            r + "p, xj-gjj:fund, population.name, read_clear, XJ-MZ-0201, allow\n\
                 p, xj-gjj:fund, population.sex, read_masked, purpose:housing_fund, allow\n\
                 p, xj-gjj:fund, population.sex, read_masked, purpose:housing_fund, deny\n\
                 p, xj-mzt:marriage_registry, tag:identifier, read_masked, purpose:social_assistance, allow\n\
                 p, xj-gjj:fund, population.name, read_clear, purpose:housing_fund, allow\n"
        });
        let (c, p) = load(dir.path()).await;
        let findings = check(&c, &p);
        let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
        let text = text.join("\n");
        let base = std::fs::read_to_string(policies().join("policy.csv"))
            .expect("rules")
            .lines()
            .count();
        let line = |n: usize| format!("policy.csv:{}", base + n);
        assert!(
            findings[0].severity == Severity::Error
                && findings[0].message.contains(&line(1))
                && findings[0].message.contains("can never match"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "warning: {} p, xj-gjj:fund, population.sex",
                line(2)
            )) && text.contains(&format!(
                "shadowed: every field and item it allows is denied by {}",
                line(3)
            )),
            "{text}"
        );
        assert!(
            text.contains("`population.id_number` (identifier) is readable by `xj-mzt:marriage_registry` for every item `xj-mzt` handles"),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} p, xj-gjj:fund, population.name, read_clear, purpose:housing_fund, allow: duplicates policy.csv:", line(5))),
            "{text}"
        );
    }

    #[tokio::test]
    async fn explain_names_the_rule_the_share_type_or_default_deny() {
        let (c, p) = load(&policies()).await;
        let today = NaiveDate::from_ymd_opt(2026, 6, 1).expect("date");
        let e = explain(
            &c,
            &p,
            "xj-zrzyt",
            None,
            "XJ-ZR-0107",
            "marriage.spouse_name",
            today,
        )
        .expect("explain");
        let text = e.to_string();
        assert_eq!(e.outcome, Outcome::Clear);
        assert!(
            text.contains("decided by policy.csv:")
                && text.contains("APP-2026-0007")
                && text.contains("2026-03-02 to 2027-03-01: in force today"),
            "{text}"
        );
        let e = explain(
            &c,
            &p,
            "wlmq-zwfw",
            Some("counter"),
            "WLMQ-ZW-0001",
            "population.household_address",
            today,
        )
        .expect("explain");
        let text = e.to_string();
        assert!(
            e.outcome == Outcome::Masked
                && text.contains("read_clear: denied by policy.csv:")
                && text.contains("(Address mask)"),
            "{text}"
        );
        let e = explain(
            &c,
            &p,
            "xj-mzt",
            None,
            "XJ-MZ-0201",
            "population.phone",
            today,
        )
        .expect("explain");
        assert!(e.to_string().contains("不予共享"), "{e}");
        let e = explain(
            &c,
            &p,
            "xj-mzt",
            None,
            "XJ-MZ-0305",
            "population.name",
            today,
        )
        .expect("explain");
        let text = e.to_string();
        assert!(
            text.contains("default deny: no rule of `xj-mzt:marriage_registry` matches `population.name` for `XJ-MZ-0305`")
                && text.contains("for other purposes: policy.csv:"),
            "{text}"
        );
        assert!(matches!(
            explain(
                &c,
                &p,
                "xj-mzt",
                Some("fund"),
                "XJ-MZ-0201",
                "population.name",
                today
            ),
            Err(StewardError::UnknownRole { .. })
        ));
    }

    #[tokio::test]
    async fn diff_reports_access_gained_and_lost() {
        let old = copy_with_rules(|r| r);
        let new = copy_with_rules(|r| {
            r.replace(
                "p, xj-gjj:fund, population.name, read_clear, purpose:housing_fund, allow\n",
                "",
            ) + "p, xj-gjj:fund, population.birth_date, read_masked, XJ-GJJ-0203, allow\n"
        });
        let (_, a) = load(old.path()).await;
        let (_, b) = load(new.path()).await;
        let d = diff(&a, &b);
        assert_eq!(
            d.gained,
            vec![Change {
                role: "xj-gjj:fund".into(),
                item: "XJ-GJJ-0203".into(),
                field: "population.birth_date".into(),
                old: Outcome::Denied,
                new: Outcome::Masked,
            }]
        );
        assert_eq!(
            d.lost,
            vec![Change {
                role: "xj-gjj:fund".into(),
                item: "XJ-GJJ-0203".into(),
                field: "population.name".into(),
                old: Outcome::Clear,
                new: Outcome::Denied,
            }]
        );
        assert!(d.to_string().ends_with("1 gained, 1 lost"), "{d}");
        assert_eq!(diff(&a, &a), Diff::default());
    }
}
