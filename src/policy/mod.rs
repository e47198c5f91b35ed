//! Purpose-bound access policy: casbin model and rules from `policies/`,
//! catalogue share types, approved conditional-sharing applications, and
//! the decision plans compiled from them for the request path; cases; and
//! masking. [`Authorized`] can only be made here: a request that passed the
//! policy is a different type from one that has not.

pub mod applications;
pub mod cases;
pub mod corrections;
pub mod mask;
pub mod steward;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use toml::Spanned;

use crate::catalog::{Agency, Catalog, Field, MaskKind, ShareType};
use crate::config::{ConfigError, ConfigErrors, Source};
use cases::{Applicant, Case, CaseBook};

pub const MODEL_FILE: &str = "model.conf";
pub const RULES_FILE: &str = "policy.csv";
pub const APPLICATIONS_FILE: &str = "applications.toml";

pub const READ_CLEAR: &str = "read_clear";
pub const READ_MASKED: &str = "read_masked";

/// One `p` line of the rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub line: usize,
    pub role: String,
    pub object: String,
    pub action: String,
    pub purpose: String,
    pub allow: bool,
}

impl Rule {
    fn describe(&self) -> String {
        format!(
            "{RULES_FILE}:{} p, {}, {}, {}, {}, {}",
            self.line,
            self.role,
            self.object,
            self.action,
            self.purpose,
            if self.allow { "allow" } else { "deny" }
        )
    }
}

/// An approved application for conditional sharing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub id: String,
    pub agency: String,
    pub fields: Vec<String>,
    pub purpose: String,
    pub approved_by: String,
    /// In force from this day to `valid_until`, inclusive.
    pub approved_on: NaiveDate,
    pub valid_until: NaiveDate,
    /// Row filter: only subjects whose area code starts with this.
    pub area_prefix: Option<String>,
}

/// The reach of one approved application: the days it is in force and,
/// with a row filter, the area-code prefix of the subjects it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub from: NaiveDate,
    pub until: NaiveDate,
    pub area_prefix: Option<String>,
}

/// How one field may be read under one (role, purpose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldDecision {
    /// `windows`: for a conditional field, the reach of the approved
    /// applications that cover it; empty when no application is needed.
    Clear {
        rule: String,
        windows: Vec<Window>,
    },
    Masked {
        rule: String,
        mask: MaskKind,
        windows: Vec<Window>,
    },
    Denied {
        reason: String,
    },
}

/// The compiled decision for every field of a dataset, for one role and
/// one purpose, in catalogue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub fields: Vec<(String, FieldDecision)>,
}

impl Plan {
    pub fn decision(&self, field: &str) -> Option<&FieldDecision> {
        self.fields.iter().find(|(f, _)| f == field).map(|(_, d)| d)
    }

    /// How `field` may be read on `today`: see [`FieldDecision::access`].
    pub fn access(&self, field: &str, today: NaiveDate) -> Result<(Access, &str), Cow<'_, str>> {
        match self.decision(field) {
            Some(d) => d.access(today),
            None => Err(Cow::Borrowed("no decision in the plan (default deny)")),
        }
    }
}

impl FieldDecision {
    /// How the field may be read on `today`, whatever the subject (for
    /// stewards' tools): see [`FieldDecision::access_for`].
    pub fn access(&self, today: NaiveDate) -> Result<(Access, &str), Cow<'_, str>> {
        self.access_for(today, None)
    }

    /// How the field may be read on `today` about a subject of area code
    /// `area` (the request path always names it): an application must be
    /// in force that day and, if it has a row filter, cover the subject's
    /// area. The access and its deciding rule, or why it is withheld.
    /// Allocates only to explain an application that does not apply.
    pub fn access_for(
        &self,
        today: NaiveDate,
        area: Option<&str>,
    ) -> Result<(Access, &str), Cow<'_, str>> {
        match self {
            FieldDecision::Clear { windows, .. } | FieldDecision::Masked { windows, .. }
                if !windows.is_empty()
                    && !windows.iter().any(|w| {
                        (w.from..=w.until).contains(&today)
                            && area.is_none_or(|a| {
                                w.area_prefix.as_deref().is_none_or(|p| a.starts_with(p))
                            })
                    }) =>
            {
                let spans: Vec<String> = windows
                    .iter()
                    .map(|w| match &w.area_prefix {
                        Some(p) => format!("{} to {}, area {p}…", w.from, w.until),
                        None => format!("{} to {}", w.from, w.until),
                    })
                    .collect();
                Err(Cow::Owned(format!(
                    "no sharing application for this field is in force today for this subject (approved for {})",
                    spans.join("; ")
                )))
            }
            FieldDecision::Clear { rule, .. } => Ok((Access::Clear, rule)),
            FieldDecision::Masked { rule, mask, .. } => Ok((Access::Masked(*mask), rule)),
            FieldDecision::Denied { reason } => Err(Cow::Borrowed(reason)),
        }
    }
}

/// Whether `prefix` can be an area-code row filter: 2 to 6 digits.
pub fn valid_area_prefix(prefix: &str) -> bool {
    (2..=6).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_digit())
}

/// The area code in a subject's identifier: the first six digits of a
/// resident ID number, characters 3–8 of a unified social credit code.
pub fn subject_area(subject: &Applicant) -> &str {
    key_area(subject.kind, &subject.key)
}

/// [`subject_area`] of a subject key of `kind` (bulk exports filter rows
/// by it without building an [`Applicant`]).
pub fn key_area(kind: crate::catalog::SubjectKind, key: &str) -> &str {
    let range = match kind {
        crate::catalog::SubjectKind::Person => 0..6,
        crate::catalog::SubjectKind::Organisation => 2..8,
    };
    key.get(range).unwrap_or("")
}

/// The calendar date in Xinjiang's offices (China Standard Time, UTC+8),
/// by which applications expire.
pub fn local_date(now: DateTime<Utc>) -> NaiveDate {
    (now + chrono::Duration::hours(8)).date_naive()
}

/// Plans by role, then service item, then dataset: looked up by `&str`
/// on the request path, without building a key.
type Plans = HashMap<String, HashMap<String, HashMap<String, Arc<Plan>>>>;

/// The policy in force: rules, applications, and their compiled plans.
pub struct PolicySet {
    /// SHA-256 over every policy and catalogue file, hex: recorded with
    /// every decision.
    pub version: String,
    pub rules: Vec<Rule>,
    pub applications: Vec<Application>,
    plans: Plans,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApplications {
    #[serde(default)]
    application: Vec<RawApplication>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApplication {
    id: String,
    agency: Spanned<String>,
    fields: Vec<Spanned<String>>,
    purpose: Spanned<String>,
    approved_by: Spanned<String>,
    approved_on: Spanned<toml::value::Datetime>,
    valid_until: Spanned<toml::value::Datetime>,
    /// Row filter: 2–6 digits of an area code.
    #[serde(default)]
    area_prefix: Option<Spanned<String>>,
}

/// Client text quoted in a refusal, which is returned and audited: only
/// when it looks like a catalogue name (letters, digits, `_.:-`, at least
/// one letter, no long run of digits), never an identifier pasted by mistake.
pub fn shown(text: &str) -> String {
    let name_like = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        && text.bytes().any(|b| b.is_ascii_alphabetic())
        && text
            .split(|c: char| !c.is_ascii_digit())
            .all(|run| run.len() < 15);
    if name_like {
        format!("`{text}`")
    } else {
        "(a name not shown)".to_string()
    }
}

fn purpose_known(catalog: &Catalog, purpose: &str) -> bool {
    match purpose.strip_prefix("purpose:") {
        Some(cat) => catalog.items.iter().any(|i| i.purpose_category == cat),
        None => catalog.item(purpose).is_some(),
    }
}

fn parse_rules(src: &Source, catalog: &Catalog, errors: &mut Vec<ConfigError>) -> Vec<Rule> {
    let mut rules = Vec::new();
    for (i, line) in src.text.lines().enumerate() {
        let line_no = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = t.split(',').map(str::trim).collect();
        let err = |key: &str, reason: String| {
            ConfigError::new(&src.path, key, reason).at_line(Some(line_no))
        };
        if parts[0] != "p" {
            errors.push(err(
                "",
                format!(
                    "only `p` lines belong here (groupings come from the catalogue), found `{}`",
                    parts[0]
                ),
            ));
            continue;
        }
        if parts.len() != 6 {
            errors.push(err(
                "",
                format!(
                    "a rule has 6 parts `p, role, object, action, purpose, allow|deny`, found {}",
                    parts.len()
                ),
            ));
            continue;
        }
        let (role, object, action, purpose, effect) =
            (parts[1], parts[2], parts[3], parts[4], parts[5]);
        if !catalog
            .agencies
            .iter()
            .any(|a| a.roles.iter().any(|r| r == role))
        {
            errors.push(err(
                "role",
                format!("unknown role `{role}` (roles are `agency:role` from agencies.toml)"),
            ));
        }
        let object_ok = if let Some(ds) = object.strip_prefix("dataset:") {
            catalog.dataset(ds).is_some()
        } else if let Some(tag) = object.strip_prefix("tag:") {
            catalog
                .datasets
                .iter()
                .flat_map(|d| &d.fields)
                .any(|f| f.sensitivity == tag)
        } else {
            catalog.field(object).is_some()
        };
        if !object_ok {
            errors.push(err("object", format!("unknown object `{object}` (a `dataset.field`, `dataset:<id>` or `tag:<sensitivity>`)")));
        }
        if action != READ_CLEAR && action != READ_MASKED {
            errors.push(err(
                "action",
                format!("unknown action `{action}` (read_clear or read_masked)"),
            ));
        }
        if !purpose_known(catalog, purpose) {
            errors.push(err(
                "purpose",
                format!(
                    "unknown purpose `{purpose}` (a service item code or `purpose:<category>`)"
                ),
            ));
        }
        if effect != "allow" && effect != "deny" {
            errors.push(err(
                "effect",
                format!("unknown effect `{effect}` (allow or deny)"),
            ));
        }
        rules.push(Rule {
            line: line_no,
            role: role.to_string(),
            object: object.to_string(),
            action: action.to_string(),
            purpose: purpose.to_string(),
            allow: effect == "allow",
        });
    }
    rules
}

fn toml_date(d: &toml::value::Datetime) -> Option<NaiveDate> {
    let date = d.date?;
    NaiveDate::from_ymd_opt(
        i32::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    )
}

fn parse_applications(
    src: &Source,
    catalog: &Catalog,
    errors: &mut Vec<ConfigError>,
) -> Vec<Application> {
    let raw: RawApplications = match src.parse_toml() {
        Ok(r) => r,
        Err(e) => {
            errors.push(e);
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, a) in raw.application.into_iter().enumerate() {
        let key = format!("application[{i}]");
        if catalog.agency(a.agency.get_ref()).is_none() {
            errors.push(src.error_at(
                a.agency.span(),
                format!("{key}.agency"),
                format!("unknown agency `{}`", a.agency.get_ref()),
            ));
        }
        if !purpose_known(catalog, a.purpose.get_ref()) {
            errors.push(src.error_at(
                a.purpose.span(),
                format!("{key}.purpose"),
                format!("unknown purpose `{}`", a.purpose.get_ref()),
            ));
        }
        for (j, f) in a.fields.iter().enumerate() {
            match catalog.field(f.get_ref()) {
                None => errors.push(src.error_at(
                    f.span(),
                    format!("{key}.fields[{j}]"),
                    format!("unknown catalogue field `{}`", f.get_ref()),
                )),
                Some((d, field)) => {
                    if field.share != ShareType::Conditional {
                        errors.push(src.error_at(f.span(), format!("{key}.fields[{j}]"), format!("`{}` is not a conditional field; applications are for conditional sharing", f.get_ref())));
                    }
                    if d.provider != *a.approved_by.get_ref() {
                        errors.push(src.error_at(
                            a.approved_by.span(),
                            format!("{key}.approved_by"),
                            format!(
                                "`{}` is provided by `{}`, whose steward must approve",
                                f.get_ref(),
                                d.provider
                            ),
                        ));
                    }
                }
            }
        }
        let (Some(approved_on), Some(valid_until)) = (
            toml_date(a.approved_on.get_ref()),
            toml_date(a.valid_until.get_ref()),
        ) else {
            errors.push(src.error_at(
                a.valid_until.span(),
                format!("{key}.approved_on / valid_until"),
                "expected dates like 2027-03-01",
            ));
            continue;
        };
        if approved_on > valid_until {
            errors.push(src.error_at(
                a.valid_until.span(),
                format!("{key}.valid_until"),
                "ends before `approved_on`",
            ));
        }
        if let Some(p) = &a.area_prefix
            && !valid_area_prefix(p.get_ref())
        {
            errors.push(src.error_at(
                p.span(),
                format!("{key}.area_prefix"),
                "expected 2 to 6 digits of an area code",
            ));
        }
        out.push(Application {
            id: a.id,
            agency: a.agency.into_inner(),
            fields: a.fields.into_iter().map(Spanned::into_inner).collect(),
            purpose: a.purpose.into_inner(),
            approved_by: a.approved_by.into_inner(),
            approved_on,
            valid_until,
            area_prefix: a.area_prefix.map(Spanned::into_inner),
        });
    }
    out
}

/// A casbin enforcer holding `rules` and the catalogue's groupings (`g`:
/// field → `dataset:`/`tag:`; `g2`: service item → `purpose:` category):
/// the reference that plans are compiled from and checked against.
pub async fn build_enforcer(
    model_text: &str,
    rules: &[Rule],
    catalog: &Catalog,
) -> casbin::Result<Enforcer> {
    let model = DefaultModel::from_str(model_text).await?;
    let mut enforcer = Enforcer::new(model, MemoryAdapter::default()).await?;
    let p: Vec<Vec<String>> = rules
        .iter()
        .map(|r| {
            vec![
                r.role.clone(),
                r.object.clone(),
                r.action.clone(),
                r.purpose.clone(),
                if r.allow { "allow" } else { "deny" }.into(),
            ]
        })
        .collect();
    if !p.is_empty() {
        enforcer.add_policies(p).await?;
    }
    let mut g = Vec::new();
    for d in &catalog.datasets {
        for f in &d.fields {
            g.push(vec![f.qualified.clone(), format!("dataset:{}", d.id)]);
            g.push(vec![f.qualified.clone(), format!("tag:{}", f.sensitivity)]);
        }
    }
    enforcer.add_named_grouping_policies("g", g).await?;
    let g2: Vec<Vec<String>> = catalog
        .items
        .iter()
        .map(|i| vec![i.code.clone(), format!("purpose:{}", i.purpose_category)])
        .collect();
    enforcer.add_named_grouping_policies("g2", g2).await?;
    Ok(enforcer)
}

/// One decision to make: may `role` read `field` for service item `item`?
pub struct Request<'a> {
    pub role: &'a str,
    pub field: &'a Field,
    pub dataset: &'a str,
    pub item: &'a str,
    pub category: &'a str,
}

/// What the rules say about one request and action.
pub struct Evaluation<'r> {
    pub allowed: bool,
    /// The first allow rule that matched.
    pub allow: Option<&'r Rule>,
    /// The first deny rule that matched.
    pub deny: Option<&'r Rule>,
}

/// Whether `rule` matches `req` for `action`: the shipped model's matcher
/// (`model.conf`), with the catalogue's groupings — a field belongs to
/// `dataset:<id>` and `tag:<sensitivity>`, an item to `purpose:<category>`,
/// and a deny of `read_masked` also matches `read_clear`.
fn rule_matches(rule: &Rule, req: &Request<'_>, action: &str) -> bool {
    rule.role == req.role
        && object_covers(&rule.object, req.dataset, req.field)
        && (rule.action == action
            || (action == READ_CLEAR && rule.action == READ_MASKED && !rule.allow))
        && (rule.purpose == req.item || rule.purpose.strip_prefix("purpose:") == Some(req.category))
}

/// Whether a rule's object names `field` of dataset `dataset`: the field
/// itself, its `dataset:<id>` or its `tag:<sensitivity>` (the `g` groupings).
pub fn object_covers(object: &str, dataset: &str, field: &Field) -> bool {
    object == field.qualified
        || object.strip_prefix("dataset:") == Some(dataset)
        || object.strip_prefix("tag:") == Some(field.sensitivity.as_str())
}

/// The shipped model's effect over `rules` (all of one role): allowed when
/// some allow matches and no deny does.
pub fn evaluate<'r>(rules: &[&'r Rule], req: &Request<'_>, action: &str) -> Evaluation<'r> {
    let mut allow = None;
    let mut deny = None;
    for r in rules
        .iter()
        .copied()
        .filter(|r| rule_matches(r, req, action))
    {
        if r.allow {
            allow.get_or_insert(r);
        } else {
            deny.get_or_insert(r);
        }
        if allow.is_some() && deny.is_some() {
            break;
        }
    }
    Evaluation {
        allowed: allow.is_some() && deny.is_none(),
        allow,
        deny,
    }
}

/// The model the compiled plans implement (`policies/model.conf` as
/// shipped), compared without comments and white space.
const SHIPPED_MODEL: &str = include_str!("../../policies/model.conf");

fn model_essence(text: &str) -> String {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect()
}

impl PolicySet {
    /// Load, validate and compile the policy in `dir` against `catalog`.
    pub async fn load(dir: &Path, catalog: &Catalog) -> Result<PolicySet, ConfigErrors> {
        PolicySet::load_with(dir, catalog, &[]).await
    }

    /// [`PolicySet::load`] plus applications approved through the API
    /// (they count towards the policy version too).
    pub async fn load_with(
        dir: &Path,
        catalog: &Catalog,
        approved: &[Application],
    ) -> Result<PolicySet, ConfigErrors> {
        let model_path = dir.join(MODEL_FILE);
        let model_src = Source::read(&model_path)?;
        let rules_src = Source::read(&dir.join(RULES_FILE))?;
        let apps_src = Source::read(&dir.join(APPLICATIONS_FILE))?;
        let mut errors = Vec::new();
        let rules = parse_rules(&rules_src, catalog, &mut errors);
        let mut applications = parse_applications(&apps_src, catalog, &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        // The catalogue as loaded, not as it may be on disk now.
        hasher.update(catalog.fingerprint.as_bytes());
        for s in [&model_src, &rules_src, &apps_src] {
            hasher.update(s.text.as_bytes());
        }
        for a in approved {
            hasher.update(
                format!(
                    "{}|{}|{}|{}|{}|{}\n",
                    a.id,
                    a.agency,
                    a.fields.join(","),
                    a.purpose,
                    a.approved_on,
                    a.valid_until
                )
                .as_bytes(),
            );
        }
        applications.extend(approved.iter().cloned());
        let version = hex::encode(hasher.finish().as_ref());

        PolicySet::from_parts(catalog, &model_src.text, rules, applications, version)
            .await
            .map_err(|e| ConfigError::new(&model_path, "", e).into())
    }

    /// Compile a policy from parts already validated against `catalog`
    /// (what `load` does after reading the files; benchmarks and property
    /// tests use it with generated rules).
    pub async fn from_parts(
        catalog: &Catalog,
        model_text: &str,
        rules: Vec<Rule>,
        applications: Vec<Application>,
        version: String,
    ) -> Result<PolicySet, String> {
        // Plans implement the shipped model; a changed matcher or effect
        // would be silently ignored, so it is refused (access changes in
        // policy.csv). casbin still parses model and rules, as the reference.
        if model_essence(model_text) != model_essence(SHIPPED_MODEL) {
            return Err("this model differs from the one the decision plans implement (the shipped model.conf): change access in policy.csv, not the model".into());
        }
        build_enforcer(model_text, &rules, catalog)
            .await
            .map_err(|e| format!("casbin rejected the model or rules: {e}"))?;
        let mut set = PolicySet {
            version,
            rules,
            applications,
            plans: HashMap::new(),
        };
        set.compile(catalog);
        Ok(set)
    }

    /// Compile a plan for every (role, service item, dataset) from the rules
    /// directly: casbin costs about a microsecond per rule per field, which
    /// at 10,000 rules is too slow even for compiling. The evaluation below
    /// is the shipped model's matcher and effect; a property test holds
    /// it to casbin's answers, and a changed model is refused at load.
    fn compile(&mut self, catalog: &Catalog) {
        let mut by_role: HashMap<&str, Vec<&Rule>> = HashMap::new();
        for r in &self.rules {
            by_role.entry(r.role.as_str()).or_default().push(r);
        }
        let mut plans: Plans = HashMap::new();
        for agency in &catalog.agencies {
            for role in &agency.roles {
                let rules = by_role
                    .get(role.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for item in &catalog.items {
                    for dataset in &catalog.datasets {
                        let fields = dataset
                            .fields
                            .iter()
                            .map(|f| {
                                let request = Request {
                                    role,
                                    field: f,
                                    dataset: &dataset.id,
                                    item: &item.code,
                                    category: &item.purpose_category,
                                };
                                (
                                    f.name.clone(),
                                    self.decide(rules, agency, &dataset.provider, &request),
                                )
                            })
                            .collect();
                        plans
                            .entry(role.clone())
                            .or_default()
                            .entry(item.code.clone())
                            .or_default()
                            .insert(dataset.id.clone(), Arc::new(Plan { fields }));
                    }
                }
            }
        }
        self.plans = plans;
    }

    fn decide(
        &self,
        rules: &[&Rule],
        agency: &Agency,
        provider: &str,
        req: &Request<'_>,
    ) -> FieldDecision {
        let (field, item) = (req.field, req.item);
        let windows = match field.share {
            ShareType::NotShared => {
                return FieldDecision::Denied {
                    reason: format!(
                        "`{}` is not shared (不予共享) in the catalogue",
                        field.qualified
                    ),
                };
            }
            ShareType::Unconditional => Vec::new(),
            ShareType::Conditional if agency.id == provider => Vec::new(),
            ShareType::Conditional => {
                let purpose_cat = format!("purpose:{}", req.category);
                // Every covering application counts: one expired or not yet
                // in force must not hide another that is.
                let windows: Vec<Window> = self
                    .applications
                    .iter()
                    .filter(|a| {
                        a.agency == agency.id
                            && a.fields.contains(&field.qualified)
                            && (a.purpose == item || a.purpose == purpose_cat)
                    })
                    .map(|a| Window {
                        from: a.approved_on,
                        until: a.valid_until,
                        area_prefix: a.area_prefix.clone(),
                    })
                    .collect();
                if windows.is_empty() {
                    return FieldDecision::Denied {
                        reason: format!(
                            "`{}` is shared conditionally (有条件共享) and no approved application of `{}` covers it for `{item}`",
                            field.qualified, agency.id
                        ),
                    };
                }
                windows
            }
        };
        let clear = evaluate(rules, req, READ_CLEAR);
        if clear.allowed {
            return FieldDecision::Clear {
                rule: clear.allow.map(Rule::describe).unwrap_or_default(),
                windows,
            };
        }
        let masked = evaluate(rules, req, READ_MASKED);
        if masked.allowed {
            return FieldDecision::Masked {
                rule: masked.allow.map(Rule::describe).unwrap_or_default(),
                mask: field.mask,
                windows,
            };
        }
        FieldDecision::Denied {
            reason: match clear.deny.or(masked.deny) {
                Some(r) => format!("denied by {}", r.describe()),
                None => format!(
                    "no rule allows `{}` to read `{}` for `{item}` (default deny)",
                    req.role, field.qualified
                ),
            },
        }
    }

    /// The plan for a role reading a dataset for a service item.
    pub fn plan(&self, role: &str, item: &str, dataset: &str) -> Option<&Arc<Plan>> {
        self.plans.get(role)?.get(item)?.get(dataset)
    }

    pub fn plan_count(&self) -> usize {
        self.plans
            .values()
            .flat_map(HashMap::values)
            .map(HashMap::len)
            .sum()
    }
}

/// How one granted field is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Clear,
    Masked(MaskKind),
}

/// A lookup that passed the case check and the policy: only this module
/// makes one.
#[derive(Debug, Clone)]
pub struct Authorized {
    case: Case,
    dataset: String,
    granted: Vec<(String, Access, String)>,
    withheld: Vec<(String, String)>,
}

impl Authorized {
    pub fn case(&self) -> &Case {
        &self.case
    }
    pub fn dataset(&self) -> &str {
        &self.dataset
    }
    /// (field name, access, deciding rule) for every field to serve.
    pub fn granted(&self) -> &[(String, Access, String)] {
        &self.granted
    }
    /// (field name, reason) for every requested field that is withheld.
    pub fn withheld(&self) -> &[(String, String)] {
        &self.withheld
    }
}

/// Why a request was refused: a stable code and a human reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub reason: String,
    /// Per-field reasons, when fields were denied.
    pub withheld: Vec<(String, String)>,
}

impl Refusal {
    fn new(code: &'static str, reason: String) -> Self {
        Refusal {
            code,
            reason,
            withheld: Vec::new(),
        }
    }
}

/// Check that `case_id` is an open case of `agency` naming `subject_key`,
/// and that `purpose` (when the client states one) is the case's.
pub fn check_case(
    cases: &CaseBook,
    agency: &Agency,
    case_id: &str,
    subject: Option<&Applicant>,
    purpose: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Case, Refusal> {
    let case = cases.get(&agency.id, case_id).ok_or_else(|| {
        Refusal::new(
            "case_not_found",
            format!(
                "`{}` has no case `{case_id}`: open a case for the applicant first",
                agency.id
            ),
        )
    })?;
    if let Some(closed) = case.closed_at {
        return Err(Refusal::new(
            "case_closed",
            format!("case `{case_id}` was closed at {}", closed.to_rfc3339()),
        ));
    }
    if !case.is_open_at(now) {
        return Err(Refusal::new(
            "case_expired",
            format!(
                "case `{case_id}` expired at {}",
                case.expires_at.to_rfc3339()
            ),
        ));
    }
    if let Some(p) = purpose
        && p != case.service_item
    {
        return Err(Refusal::new(
            "purpose_mismatch",
            format!(
                "the stated purpose {} is not the service item of case `{case_id}` (`{}`)",
                shown(p),
                case.service_item
            ),
        ));
    }
    if let Some(subject) = subject
        && !case.has_applicant(subject)
    {
        return Err(Refusal::new(
            "subject_not_in_case",
            format!("the subject is not an applicant of case `{case_id}`"),
        ));
    }
    Ok(case)
}

/// Decide a point lookup: the case check, then the plan for the case's
/// role, the case's service item and the dataset, field by field.
#[allow(clippy::too_many_arguments)]
pub fn authorize_lookup(
    policy: &PolicySet,
    catalog: &Catalog,
    cases: &CaseBook,
    agency: &Agency,
    case_id: &str,
    subject: &Applicant,
    dataset: &str,
    fields: Option<&[String]>,
    purpose: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Authorized, Refusal> {
    let case = check_case(cases, agency, case_id, Some(subject), purpose, now)?;
    let role = case.role.as_str();
    let ds = catalog.dataset(dataset).ok_or_else(|| {
        Refusal::new(
            "unknown_dataset",
            format!("there is no dataset {} in the catalogue", shown(dataset)),
        )
    })?;
    if ds.subject != subject.kind {
        return Err(Refusal::new(
            "wrong_subject_kind",
            format!(
                "dataset `{dataset}` is about a {}, not a {}",
                ds.subject.as_str(),
                subject.kind.as_str()
            ),
        ));
    }
    let plan = policy
        .plan(role, &case.service_item, dataset)
        .ok_or_else(|| {
            Refusal::new(
                "no_plan",
                format!("no policy covers `{role}` for `{}`", case.service_item),
            )
        })?;
    let wanted: Vec<&str> = match fields {
        Some(fs) if !fs.is_empty() => {
            for f in fs {
                if ds.field(f).is_none() {
                    return Err(Refusal::new(
                        "unknown_field",
                        format!("dataset `{dataset}` has no field {}", shown(f)),
                    ));
                }
            }
            // Each field once, in the order asked.
            let mut seen = std::collections::HashSet::new();
            fs.iter()
                .map(String::as_str)
                .filter(|f| seen.insert(*f))
                .collect()
        }
        _ => ds.fields.iter().map(|f| f.name.as_str()).collect(),
    };
    let today = local_date(now);
    let mut granted = Vec::new();
    let mut withheld = Vec::new();
    // The whole dataset: walk the plan in order, no lookups by name.
    let decisions: Vec<(&str, &FieldDecision)> =
        if wanted.len() == ds.fields.len() && fields.is_none_or(<[String]>::is_empty) {
            plan.fields.iter().map(|(f, d)| (f.as_str(), d)).collect()
        } else {
            wanted
                .iter()
                .filter_map(|name| plan.decision(name).map(|d| (*name, d)))
                .collect()
        };
    for (name, decision) in decisions {
        match decision.access_for(today, Some(subject_area(subject))) {
            Ok((access, rule)) => granted.push((name.to_string(), access, rule.to_string())),
            Err(reason) => withheld.push((name.to_string(), reason.into_owned())),
        }
    }
    if granted.is_empty() {
        return Err(Refusal {
            code: "fields_denied",
            reason: format!(
                "no requested field of `{dataset}` may be read by `{role}` for `{}`",
                case.service_item
            ),
            withheld,
        });
    }
    Ok(Authorized {
        case,
        dataset: dataset.to_string(),
        granted,
        withheld,
    })
}

/// One field of a material, as the policy lets the case's role read it.
#[derive(Debug, Clone)]
pub struct MaterialField {
    /// `dataset.field`.
    pub qualified: String,
    /// The access and deciding rule, or the reason it is withheld.
    pub access: Result<(Access, String), String>,
}

/// A pre-fill that passed the case check: for each material of the case's
/// service item, how each of its fields may be read. Only this module makes
/// one.
#[derive(Debug, Clone)]
pub struct AuthorizedPrefill {
    case: Case,
    subject: Applicant,
    materials: Vec<(String, Vec<MaterialField>)>,
}

impl AuthorizedPrefill {
    pub fn case(&self) -> &Case {
        &self.case
    }
    pub fn subject(&self) -> &Applicant {
        &self.subject
    }
    /// (material name, its fields); an empty field list means only the
    /// applicant can supply the material.
    pub fn materials(&self) -> &[(String, Vec<MaterialField>)] {
        &self.materials
    }
}

/// Decide a pre-fill for `subject` (by default the case's only applicant).
pub fn authorize_prefill(
    policy: &PolicySet,
    catalog: &Catalog,
    cases: &CaseBook,
    agency: &Agency,
    case_id: &str,
    subject: Option<Applicant>,
    now: DateTime<Utc>,
) -> Result<AuthorizedPrefill, Refusal> {
    let case = check_case(cases, agency, case_id, None, None, now)?;
    let subject = match subject {
        Some(s) => s,
        None if case.applicants.len() == 1 => case.applicants[0].clone(),
        None => {
            return Err(Refusal::new(
                "subject_required",
                format!("case `{case_id}` has several applicants: name the `subject`"),
            ));
        }
    };
    if !case.has_applicant(&subject) {
        return Err(Refusal::new(
            "subject_not_in_case",
            format!("the subject is not an applicant of case `{case_id}`"),
        ));
    }
    let item = catalog.item(&case.service_item).ok_or_else(|| {
        Refusal::new(
            "unknown_service_item",
            format!(
                "service item `{}` of case `{case_id}` is no longer in the catalogue",
                case.service_item
            ),
        )
    })?;
    let today = local_date(now);
    let materials = item
        .materials
        .iter()
        .map(|m| {
            let fields = m
                .fields
                .iter()
                .map(|q| {
                    let access = match catalog.field(q) {
                        None => Err(format!("`{q}` is no longer in the catalogue")),
                        Some((d, _)) if d.subject != subject.kind => Err(format!(
                            "`{q}` is about a {}; this applicant is a {}",
                            d.subject.as_str(),
                            subject.kind.as_str()
                        )),
                        Some((d, f)) => match policy.plan(&case.role, &case.service_item, &d.id) {
                            Some(plan) => match plan.decision(&f.name) {
                                Some(decision) => decision
                                    .access_for(today, Some(subject_area(&subject)))
                                    .map(|(a, r)| (a, r.to_string()))
                                    .map_err(Cow::into_owned),
                                None => Err("no decision in the plan (default deny)".into()),
                            },
                            None => Err("no decision in the plan (default deny)".into()),
                        },
                    };
                    MaterialField {
                        qualified: q.clone(),
                        access,
                    }
                })
                .collect();
            (m.name.clone(), fields)
        })
        .collect();
    Ok(AuthorizedPrefill {
        case,
        subject,
        materials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SubjectKind;

    fn policies() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
    }

    async fn demo() -> (Catalog, PolicySet) {
        let c = Catalog::load(&policies()).expect("catalogue");
        let p = PolicySet::load(&policies(), &c).await.expect("policy");
        (c, p)
    }

    #[tokio::test]
    async fn plans_follow_rules_share_types_and_applications() {
        let (_, p) = demo().await;
        let plan = p
            .plan("xj-mzt:marriage_registry", "XJ-MZ-0201", "population")
            .expect("plan");
        assert!(matches!(
            plan.decision("name"),
            Some(FieldDecision::Clear { .. })
        ));
        // not shared beats any allow
        assert!(
            matches!(plan.decision("phone"), Some(FieldDecision::Denied { reason }) if reason.contains("不予共享"))
        );
        // conditional without an application
        assert!(
            matches!(plan.decision("ethnicity"), Some(FieldDecision::Denied { reason }) if reason.contains("有条件共享"))
        );
        // conditional: the provider reads its own without an application …
        let plan = p
            .plan("xj-mzt:social_assistance", "XJ-MZ-0305", "marriage")
            .expect("plan");
        assert!(matches!(
            plan.decision("spouse_name"),
            Some(FieldDecision::Clear { windows, .. }) if windows.is_empty()
        ));
        // … another agency needs one, and is bound by its validity
        let plan = p
            .plan("xj-mzt:social_assistance", "XJ-MZ-0305", "social_insurance")
            .expect("plan");
        assert!(matches!(
            plan.decision("contribution_months"),
            Some(FieldDecision::Clear { windows, .. }) if windows.len() == 1
        ));
        let plan = p
            .plan("xj-zrzyt:real_estate", "XJ-ZR-0107", "marriage")
            .expect("plan");
        assert!(matches!(
            plan.decision("spouse_name"),
            Some(FieldDecision::Clear { windows, .. }) if windows.len() == 1
        ));
        assert!(matches!(
            plan.decision("spouse_id_number"),
            Some(FieldDecision::Denied { .. })
        ));
        // deny overrides allow, masked allow still applies
        let plan = p
            .plan("wlmq-zwfw:counter", "WLMQ-ZW-0001", "population")
            .expect("plan");
        assert!(matches!(
            plan.decision("household_address"),
            Some(FieldDecision::Masked {
                mask: MaskKind::Address,
                ..
            })
        ));
        assert!(matches!(
            plan.decision("id_number"),
            Some(FieldDecision::Masked {
                mask: MaskKind::IdNumber,
                ..
            })
        ));
        // another purpose: nothing
        let plan = p
            .plan("xj-mzt:marriage_registry", "XJ-GJJ-0203", "population")
            .expect("plan");
        assert!(
            plan.fields
                .iter()
                .all(|(_, d)| matches!(d, FieldDecision::Denied { .. }))
        );
        assert_eq!(p.version.len(), 64);
    }

    /// A copy of the demo policy directory with `policy.csv` replaced.
    fn with_rules(rules: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in std::fs::read_dir(policies()).expect("dir") {
            let f = f.expect("entry").path();
            if f.is_file() {
                std::fs::copy(&f, dir.path().join(f.file_name().expect("name"))).expect("copy");
            }
        }
        std::fs::write(dir.path().join(RULES_FILE), rules).expect("write");
        dir
    }

    mod agree_with_casbin {
        use super::*;
        use proptest::prelude::*;

        /// Rules over three roles of the demo catalogue, with objects among
        /// fields, `dataset:` and `tag:` groups and purposes among items and
        /// categories, so that allows and denies overlap.
        fn rules() -> impl Strategy<Value = Vec<(usize, usize, bool, usize, bool)>> {
            prop::collection::vec(
                (
                    0usize..3,
                    0usize..40,
                    any::<bool>(),
                    0usize..12,
                    prop::bool::weighted(0.75),
                ),
                0..40,
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

            /// The compiled evaluation and casbin's `enforce` agree on every
            /// request of every role, item, field and action.
            #[test]
            fn plans_and_casbin_agree(raw in rules()) {
                let c = Catalog::load(&policies()).expect("catalogue");
                let roles = ["xj-mzt:marriage_registry", "xj-mzt:social_assistance", "wlmq-zwfw:counter"];
                let mut objects: Vec<String> = c.datasets.iter().flat_map(|d| d.fields.iter().map(|f| f.qualified.clone())).collect();
                objects.extend(c.datasets.iter().map(|d| format!("dataset:{}", d.id)));
                objects.extend(["tag:public", "tag:personal", "tag:identifier", "tag:sensitive", "tag:internal"].map(String::from));
                let mut purposes: Vec<String> = c.items.iter().map(|i| i.code.clone()).collect();
                purposes.extend(c.items.iter().map(|i| format!("purpose:{}", i.purpose_category)));
                let rules: Vec<Rule> = raw
                    .iter()
                    .enumerate()
                    .map(|(line, &(r, o, clear, p, allow))| Rule {
                        line,
                        role: roles[r].to_string(),
                        object: objects[o % objects.len()].clone(),
                        action: if clear { READ_CLEAR } else { READ_MASKED }.to_string(),
                        purpose: purposes[p % purposes.len()].clone(),
                        allow,
                    })
                    .collect();
                let model = std::fs::read_to_string(policies().join(MODEL_FILE)).expect("model");
                let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
                let enforcer = rt.block_on(build_enforcer(&model, &rules, &c)).expect("enforcer");
                for role in roles {
                    let of_role: Vec<&Rule> = rules.iter().filter(|r| r.role == role).collect();
                    for item in &c.items {
                        for d in &c.datasets {
                            for f in &d.fields {
                                let req = Request { role, field: f, dataset: &d.id, item: &item.code, category: &item.purpose_category };
                                for action in [READ_CLEAR, READ_MASKED] {
                                    let ours = evaluate(&of_role, &req, action).allowed;
                                    let theirs = enforcer.enforce((role, f.qualified.as_str(), action, item.code.as_str())).expect("enforce");
                                    prop_assert_eq!(ours, theirs, "({}, {}, {}, {}) under {:?}", role, f.qualified, action, item.code, rules);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn applications_grant_only_inside_their_windows() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        // An expired application listed first must not hide a valid one.
        let w = |from: &str, until: &str, area: Option<&str>| Window {
            from: d(from),
            until: d(until),
            area_prefix: area.map(str::to_string),
        };
        let windows = vec![
            w("2025-01-01", "2025-12-31", None),
            w("2026-03-01", "2026-12-31", None),
        ];
        let plan = Plan {
            fields: vec![(
                "f".into(),
                FieldDecision::Clear {
                    rule: "r".into(),
                    windows,
                },
            )],
        };
        assert!(plan.access("f", d("2026-06-01")).is_ok());
        assert!(plan.access("f", d("2025-06-01")).is_ok());
        // Not yet approved, and after every window: withheld, with the reason.
        let err = plan.access("f", d("2026-02-01")).unwrap_err();
        assert!(
            err.contains("in force") && err.contains("2026-03-01 to 2026-12-31"),
            "{err}"
        );
        assert!(plan.access("f", d("2027-01-01")).is_err());
        // A row filter: only subjects of its area, on its days.
        let filtered = FieldDecision::Masked {
            rule: "r".into(),
            mask: MaskKind::Full,
            windows: vec![w("2026-01-01", "2026-12-31", Some("6531"))],
        };
        assert!(filtered.access_for(d("2026-06-01"), Some("653101")).is_ok());
        let err = filtered
            .access_for(d("2026-06-01"), Some("650102"))
            .unwrap_err();
        assert!(err.contains("area 6531"), "{err}");
        assert!(
            filtered
                .access_for(d("2027-06-01"), Some("653101"))
                .is_err()
        );
    }

    #[test]
    fn client_text_is_quoted_only_when_it_is_name_like() {
        assert_eq!(shown("population"), "`population`");
        assert_eq!(shown("XJ-MZ-0201"), "`XJ-MZ-0201`");
        assert_eq!(shown("650102198506150010"), "(a name not shown)");
        assert_eq!(shown("x650102198506150010"), "(a name not shown)");
        assert_eq!(shown(&"a".repeat(65)), "(a name not shown)");
        assert_eq!(shown("张三"), "(a name not shown)");
    }

    #[tokio::test]
    async fn a_changed_model_is_refused_at_load() {
        // A matcher without the masked-deny clause decides differently from
        // the compiled plans on the demo rules: the load must say so.
        let dir = with_rules(&std::fs::read_to_string(policies().join(RULES_FILE)).expect("rules"));
        let model = std::fs::read_to_string(policies().join(MODEL_FILE)).expect("model");
        let changed = model.replace(
            r#" || (r.act == "read_clear" && p.act == "read_masked" && p.eft == "deny")"#,
            "",
        );
        assert_ne!(model, changed);
        std::fs::write(dir.path().join(MODEL_FILE), changed).expect("write");
        let c = Catalog::load(dir.path()).expect("catalogue");
        let err = PolicySet::load(dir.path(), &c)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("model.conf")
                && err.contains("differs from the one the decision plans implement"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_masked_deny_also_denies_clear() {
        let dir = with_rules(
            "p, xj-mzt:marriage_registry, dataset:population, read_clear, XJ-MZ-0201, allow\n\
             p, xj-mzt:marriage_registry, population.household_address, read_masked, XJ-MZ-0201, deny\n\
             p, xj-mzt:marriage_registry, tag:identifier, read_clear, purpose:civil_registration, deny\n\
             p, xj-mzt:marriage_registry, tag:identifier, read_masked, purpose:civil_registration, allow\n",
        );
        let c = Catalog::load(dir.path()).expect("catalogue");
        let p = PolicySet::load(dir.path(), &c).await.expect("policy");
        let plan = p
            .plan("xj-mzt:marriage_registry", "XJ-MZ-0201", "population")
            .expect("plan");
        assert!(
            matches!(plan.decision("household_address"), Some(FieldDecision::Denied { reason }) if reason.contains("read_masked")),
            "{plan:?}"
        );
        // A clear deny leaves a masked allow standing.
        assert!(
            matches!(
                plan.decision("id_number"),
                Some(FieldDecision::Masked {
                    mask: MaskKind::IdNumber,
                    ..
                })
            ),
            "{plan:?}"
        );
        assert!(matches!(
            plan.decision("name"),
            Some(FieldDecision::Clear { .. })
        ));
    }

    #[tokio::test]
    async fn bad_rules_are_reported_with_line() {
        let dir = with_rules(
            "# rules\np, xj-mzt:nobody, population.name, read_clear, XJ-MZ-0201, allow\np, xj-mzt:marriage_registry, population.name, read, XJ-MZ-0201, allow\np, xj-mzt:marriage_registry, population.name, read_clear, XJ-NOPE, allow\np, a, b\n",
        );
        let c = Catalog::load(dir.path()).expect("catalogue");
        let err = PolicySet::load(dir.path(), &c)
            .await
            .err()
            .expect("error")
            .to_string();
        assert!(
            err.contains("policy.csv:2: role: unknown role `xj-mzt:nobody`"),
            "{err}"
        );
        assert!(
            err.contains("policy.csv:3: action: unknown action `read`"),
            "{err}"
        );
        assert!(
            err.contains("policy.csv:4: purpose: unknown purpose `XJ-NOPE`"),
            "{err}"
        );
        assert!(err.contains("policy.csv:5: a rule has 6 parts"), "{err}");
    }

    #[tokio::test]
    async fn lookups_need_an_open_case_of_the_caller_for_its_applicant() {
        let (c, p) = demo().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let book = CaseBook::open(&dir.path().join("cases.jsonl")).expect("cases");
        let now = Utc::now();
        let person = |k: &str| Applicant {
            kind: SubjectKind::Person,
            key: k.into(),
        };
        let subject = person("650102198506150010");
        let key = &subject;
        let applicants = vec![subject.clone()];
        book.open_case(
            "MZ-1",
            "xj-mzt",
            "xj-mzt:marriage_registry",
            "XJ-MZ-0201",
            applicants,
            "o",
            30,
            now,
        )
        .expect("open");
        let mzt = c.agency("xj-mzt").expect("agency");
        let gjj = c.agency("xj-gjj").expect("agency");
        let ok = authorize_lookup(
            &p,
            &c,
            &book,
            mzt,
            "MZ-1",
            key,
            "population",
            None,
            None,
            now,
        )
        .expect("allowed");
        assert!(
            ok.granted()
                .iter()
                .any(|(f, a, _)| f == "name" && *a == Access::Clear)
        );
        assert!(ok.withheld().iter().any(|(f, _)| f == "phone"));
        let code = |r: Result<Authorized, Refusal>| r.err().map(|e| e.code);
        assert_eq!(
            code(authorize_lookup(
                &p,
                &c,
                &book,
                mzt,
                "MZ-9",
                key,
                "population",
                None,
                None,
                now
            )),
            Some("case_not_found")
        );
        assert_eq!(
            code(authorize_lookup(
                &p,
                &c,
                &book,
                gjj,
                "MZ-1",
                key,
                "population",
                None,
                None,
                now
            )),
            Some("case_not_found")
        );
        assert_eq!(
            code(authorize_lookup(
                &p,
                &c,
                &book,
                mzt,
                "MZ-1",
                &person("11010519491231002X"),
                "population",
                None,
                None,
                now
            )),
            Some("subject_not_in_case")
        );
        assert_eq!(
            code(authorize_lookup(
                &p,
                &c,
                &book,
                mzt,
                "MZ-1",
                key,
                "population",
                None,
                Some("XJ-GJJ-0203"),
                now
            )),
            Some("purpose_mismatch")
        );
        let phone = vec!["phone".to_string()];
        assert_eq!(
            code(authorize_lookup(
                &p,
                &c,
                &book,
                mzt,
                "MZ-1",
                key,
                "population",
                Some(&phone),
                None,
                now
            )),
            Some("fields_denied")
        );
        // The same digits named as a credit code are another subject.
        let as_org = Applicant {
            kind: SubjectKind::Organisation,
            key: subject.key.clone(),
        };
        assert_eq!(
            code(authorize_lookup(
                &p,
                &c,
                &book,
                mzt,
                "MZ-1",
                &as_org,
                "population",
                None,
                None,
                now
            )),
            Some("subject_not_in_case")
        );
        book.close_case("xj-mzt", "MZ-1", now).expect("close");
        assert_eq!(
            code(authorize_lookup(
                &p,
                &c,
                &book,
                mzt,
                "MZ-1",
                key,
                "population",
                None,
                None,
                now
            )),
            Some("case_closed")
        );
    }
}
