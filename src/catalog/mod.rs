//! The catalogue (datasets and fields with share types), the agencies and
//! their roles, and the service items with their required materials: loaded
//! from `policies/*.toml`, validated, and held immutable.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigError, ConfigErrors, Source};

pub const AGENCIES_FILE: &str = "agencies.toml";
pub const CATALOG_FILE: &str = "catalog.toml";
pub const SERVICE_ITEMS_FILE: &str = "service_items.toml";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agency {
    pub id: String,
    pub name: String,
    pub name_en: String,
    /// Full role names, `agency:role`.
    pub roles: Vec<String>,
    /// Client-certificate common names that authenticate as this agency.
    pub certificate_names: Vec<String>,
    /// May query the audit log.
    pub auditor: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// Keyed by resident ID number.
    Person,
    /// Keyed by unified social credit code.
    Organisation,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Person => "person",
            SubjectKind::Organisation => "organisation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    IdNumber,
    CreditCode,
    PersonName,
    Sex,
    Date,
    Phone,
    Address,
    AreaCode,
    Text,
    Enum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareType {
    /// 无条件共享: served when a policy line allows it.
    Unconditional,
    /// 有条件共享: also needs an approved sharing application.
    Conditional,
    /// 不予共享: never served.
    NotShared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskKind {
    /// Keep the first 6 and last 4 characters.
    IdNumber,
    /// Keep the first character (and the middle dot of a minority name).
    Name,
    /// Keep the first 3 and last 4 digits.
    Phone,
    /// Keep the address down to the county.
    Address,
    /// Hide everything.
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// `dataset.field`, the name policies and materials use.
    pub qualified: String,
    pub label: String,
    pub kind: FieldKind,
    /// Allowed values, for `kind = "enum"`.
    pub values: Vec<String>,
    pub sensitivity: String,
    pub share: ShareType,
    pub mask: MaskKind,
    /// The agency whose value wins over other sources.
    pub authority: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub id: String,
    pub name: String,
    pub provider: String,
    pub subject: SubjectKind,
    pub fields: Vec<Field>,
}

impl Dataset {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub name: String,
    /// Qualified catalogue fields that satisfy it; empty when the applicant
    /// supplies it.
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceItem {
    pub code: String,
    pub name: String,
    pub agency: String,
    pub purpose_category: String,
    pub case_valid_days: u32,
    pub materials: Vec<Material>,
}

/// Everything in the three catalogue files, validated and cross-checked.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub agencies: Vec<Agency>,
    pub datasets: Vec<Dataset>,
    pub items: Vec<ServiceItem>,
    /// SHA-256 (hex) of the three files as loaded: what a policy version
    /// names, even if the files change on disk afterwards.
    pub fingerprint: String,
    by_certificate_name: HashMap<String, usize>,
}

impl Catalog {
    /// Load and validate `agencies.toml`, `catalog.toml` and
    /// `service_items.toml` from a policy directory. Every problem found is
    /// reported, each naming its file, key and line.
    pub fn load(dir: &Path) -> Result<Catalog, ConfigErrors> {
        let agencies_src = Source::read(&dir.join(AGENCIES_FILE))?;
        let catalog_src = Source::read(&dir.join(CATALOG_FILE))?;
        let items_src = Source::read(&dir.join(SERVICE_ITEMS_FILE))?;
        let raw_agencies: RawAgencies = agencies_src.parse_toml()?;
        let raw_catalog: RawCatalog = catalog_src.parse_toml()?;
        let raw_items: RawItems = items_src.parse_toml()?;

        let mut errors = Vec::new();
        let agencies = validate_agencies(&agencies_src, raw_agencies, &mut errors);
        let agency_ids: Vec<&str> = agencies.iter().map(|a| a.id.as_str()).collect();
        let datasets = validate_datasets(&catalog_src, raw_catalog, &agency_ids, &mut errors);
        let items = validate_items(&items_src, raw_items, &agency_ids, &datasets, &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let mut by_certificate_name = HashMap::new();
        for (i, a) in agencies.iter().enumerate() {
            for n in &a.certificate_names {
                by_certificate_name.insert(n.clone(), i);
            }
        }
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        for src in [&agencies_src, &catalog_src, &items_src] {
            hasher.update(src.text.as_bytes());
        }
        Ok(Catalog {
            agencies,
            datasets,
            items,
            fingerprint: hex::encode(hasher.finish().as_ref()),
            by_certificate_name,
        })
    }

    pub fn agency(&self, id: &str) -> Option<&Agency> {
        self.agencies.iter().find(|a| a.id == id)
    }

    /// The agency a client certificate with this common name belongs to.
    pub fn agency_by_certificate_name(&self, name: &str) -> Option<&Agency> {
        self.by_certificate_name
            .get(name)
            .map(|&i| &self.agencies[i])
    }

    pub fn dataset(&self, id: &str) -> Option<&Dataset> {
        self.datasets.iter().find(|d| d.id == id)
    }

    /// A field by its qualified name `dataset.field`.
    pub fn field(&self, qualified: &str) -> Option<(&Dataset, &Field)> {
        let (ds, f) = qualified.split_once('.')?;
        let dataset = self.dataset(ds)?;
        dataset.field(f).map(|field| (dataset, field))
    }

    pub fn item(&self, code: &str) -> Option<&ServiceItem> {
        self.items.iter().find(|i| i.code == code)
    }

    /// Every field of every dataset about this kind of subject, in catalogue
    /// order: the columns of that kind's golden record.
    pub fn fields_of_kind(&self, kind: SubjectKind) -> impl Iterator<Item = &Field> {
        self.datasets
            .iter()
            .filter(move |d| d.subject == kind)
            .flat_map(|d| d.fields.iter())
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

// ---- agencies.toml ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgencies {
    agency: Vec<RawAgency>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgency {
    id: Spanned<String>,
    name: String,
    #[serde(default)]
    name_en: String,
    roles: Spanned<Vec<String>>,
    #[serde(default)]
    certificate_names: Option<Vec<String>>,
    #[serde(default)]
    auditor: bool,
}

fn validate_agencies(src: &Source, raw: RawAgencies, errors: &mut Vec<ConfigError>) -> Vec<Agency> {
    let mut out: Vec<Agency> = Vec::new();
    let mut cert_names: HashMap<String, String> = HashMap::new();
    for (i, a) in raw.agency.into_iter().enumerate() {
        let key = format!("agency[{i}]");
        let id = a.id.get_ref().clone();
        if !is_identifier(&id) {
            errors.push(src.error_at(
                a.id.span(),
                format!("{key}.id"),
                format!("`{id}` is not a valid id (lower-case letters, digits, `-`, `_`)"),
            ));
        }
        if out.iter().any(|o| o.id == id) {
            errors.push(src.error_at(
                a.id.span(),
                format!("{key}.id"),
                format!("duplicate agency `{id}`"),
            ));
        }
        if a.roles.get_ref().is_empty() {
            errors.push(src.error_at(
                a.roles.span(),
                format!("{key}.roles"),
                "an agency needs at least one role",
            ));
        }
        for r in a.roles.get_ref() {
            if !is_identifier(r) {
                errors.push(src.error_at(
                    a.roles.span(),
                    format!("{key}.roles"),
                    format!("`{r}` is not a valid role name"),
                ));
            }
        }
        let certificate_names = a.certificate_names.unwrap_or_else(|| vec![id.clone()]);
        for n in &certificate_names {
            if let Some(other) = cert_names.insert(n.clone(), id.clone()) {
                errors.push(src.error_at(
                    a.id.span(),
                    format!("{key}.certificate_names"),
                    format!("certificate name `{n}` is already used by agency `{other}`"),
                ));
            }
        }
        out.push(Agency {
            roles: a
                .roles
                .get_ref()
                .iter()
                .map(|r| format!("{id}:{r}"))
                .collect(),
            id,
            name: a.name,
            name_en: a.name_en,
            certificate_names,
            auditor: a.auditor,
        });
    }
    out
}

// ---- catalog.toml ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    dataset: Vec<RawDataset>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    id: Spanned<String>,
    name: String,
    provider: Spanned<String>,
    subject: SubjectKind,
    field: Vec<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: Spanned<String>,
    label: String,
    kind: FieldKind,
    #[serde(default)]
    values: Vec<String>,
    sensitivity: Spanned<String>,
    share: ShareType,
    mask: MaskKind,
    #[serde(default)]
    authority: Option<Spanned<String>>,
}

const SENSITIVITIES: &[&str] = &["public", "internal", "personal", "identifier", "sensitive"];

fn validate_datasets(
    src: &Source,
    raw: RawCatalog,
    agencies: &[&str],
    errors: &mut Vec<ConfigError>,
) -> Vec<Dataset> {
    let mut out: Vec<Dataset> = Vec::new();
    for (i, d) in raw.dataset.into_iter().enumerate() {
        let key = format!("dataset[{i}]");
        let id = d.id.get_ref().clone();
        if !is_identifier(&id) || id.contains('-') {
            errors.push(src.error_at(
                d.id.span(),
                format!("{key}.id"),
                format!("`{id}` is not a valid dataset id (lower-case letters, digits, `_`)"),
            ));
        }
        if out.iter().any(|o| o.id == id) {
            errors.push(src.error_at(
                d.id.span(),
                format!("{key}.id"),
                format!("duplicate dataset `{id}`"),
            ));
        }
        let provider = d.provider.get_ref().clone();
        if !agencies.contains(&provider.as_str()) {
            errors.push(src.error_at(
                d.provider.span(),
                format!("{key}.provider"),
                format!("unknown agency `{provider}`"),
            ));
        }
        if d.field.is_empty() {
            errors.push(src.error_at(
                d.id.span(),
                format!("{key}.field"),
                "a dataset needs at least one field",
            ));
        }
        let mut fields: Vec<Field> = Vec::new();
        for (j, f) in d.field.into_iter().enumerate() {
            let fkey = format!("{key}.field[{j}]");
            let name = f.name.get_ref().clone();
            if !is_identifier(&name) || name.contains('-') {
                errors.push(src.error_at(
                    f.name.span(),
                    format!("{fkey}.name"),
                    format!("`{name}` is not a valid field name"),
                ));
            }
            if fields.iter().any(|o| o.name == name) {
                errors.push(src.error_at(
                    f.name.span(),
                    format!("{fkey}.name"),
                    format!("duplicate field `{name}` in dataset `{id}`"),
                ));
            }
            if !SENSITIVITIES.contains(&f.sensitivity.get_ref().as_str()) {
                errors.push(src.error_at(
                    f.sensitivity.span(),
                    format!("{fkey}.sensitivity"),
                    format!(
                        "unknown sensitivity `{}`, expected one of {}",
                        f.sensitivity.get_ref(),
                        SENSITIVITIES.join(", ")
                    ),
                ));
            }
            if (f.kind == FieldKind::Enum) == f.values.is_empty() {
                errors.push(src.error_at(
                    f.name.span(),
                    format!("{fkey}.values"),
                    "`values` is required for kind = \"enum\" and only for it",
                ));
            }
            let authority = match f.authority {
                Some(a) => {
                    if !agencies.contains(&a.get_ref().as_str()) {
                        errors.push(src.error_at(
                            a.span(),
                            format!("{fkey}.authority"),
                            format!("unknown agency `{}`", a.get_ref()),
                        ));
                    }
                    a.into_inner()
                }
                None => provider.clone(),
            };
            fields.push(Field {
                qualified: format!("{id}.{name}"),
                name,
                label: f.label,
                kind: f.kind,
                values: f.values,
                sensitivity: f.sensitivity.into_inner(),
                share: f.share,
                mask: f.mask,
                authority,
            });
        }
        out.push(Dataset {
            id,
            name: d.name,
            provider,
            subject: d.subject,
            fields,
        });
    }
    out
}

// ---- service_items.toml ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItems {
    item: Vec<RawItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    code: Spanned<String>,
    name: String,
    agency: Spanned<String>,
    purpose_category: Spanned<String>,
    case_valid_days: Spanned<u32>,
    material: Vec<RawMaterial>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaterial {
    name: Spanned<String>,
    #[serde(default)]
    fields: Vec<Spanned<String>>,
    #[serde(default)]
    applicant_supplies: bool,
}

fn validate_items(
    src: &Source,
    raw: RawItems,
    agencies: &[&str],
    datasets: &[Dataset],
    errors: &mut Vec<ConfigError>,
) -> Vec<ServiceItem> {
    let mut out: Vec<ServiceItem> = Vec::new();
    for (i, it) in raw.item.into_iter().enumerate() {
        let key = format!("item[{i}]");
        let code = it.code.get_ref().clone();
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            errors.push(src.error_at(
                it.code.span(),
                format!("{key}.code"),
                format!("`{code}` is not a valid item code (ASCII letters, digits, `-`)"),
            ));
        }
        if out.iter().any(|o| o.code == code) {
            errors.push(src.error_at(
                it.code.span(),
                format!("{key}.code"),
                format!("duplicate service item `{code}`"),
            ));
        }
        if !agencies.contains(&it.agency.get_ref().as_str()) {
            errors.push(src.error_at(
                it.agency.span(),
                format!("{key}.agency"),
                format!("unknown agency `{}`", it.agency.get_ref()),
            ));
        }
        if !is_identifier(it.purpose_category.get_ref()) {
            errors.push(src.error_at(
                it.purpose_category.span(),
                format!("{key}.purpose_category"),
                "not a valid purpose category name",
            ));
        }
        if *it.case_valid_days.get_ref() == 0 {
            errors.push(src.error_at(
                it.case_valid_days.span(),
                format!("{key}.case_valid_days"),
                "must be at least 1",
            ));
        }
        if it.material.is_empty() {
            errors.push(src.error_at(
                it.code.span(),
                format!("{key}.material"),
                "a service item needs at least one material",
            ));
        }
        let mut materials = Vec::new();
        for (j, m) in it.material.into_iter().enumerate() {
            let mkey = format!("{key}.material[{j}]");
            if m.applicant_supplies != m.fields.is_empty() {
                errors.push(src.error_at(
                    m.name.span(),
                    mkey.clone(),
                    "a material needs either `fields` or `applicant_supplies = true`, not both",
                ));
            }
            for (k, f) in m.fields.iter().enumerate() {
                let known = f
                    .get_ref()
                    .split_once('.')
                    .and_then(|(d, name)| {
                        datasets
                            .iter()
                            .find(|x| x.id == d)
                            .and_then(|x| x.field(name))
                    })
                    .is_some();
                if !known {
                    errors.push(src.error_at(
                        f.span(),
                        format!("{mkey}.fields[{k}]"),
                        format!(
                            "unknown catalogue field `{}` (expected `dataset.field`)",
                            f.get_ref()
                        ),
                    ));
                }
            }
            materials.push(Material {
                name: m.name.into_inner(),
                fields: m.fields.into_iter().map(Spanned::into_inner).collect(),
            });
        }
        out.push(ServiceItem {
            code,
            name: it.name,
            agency: it.agency.into_inner(),
            purpose_category: it.purpose_category.into_inner(),
            case_valid_days: it.case_valid_days.into_inner(),
            materials,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn policies_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
    }

    #[test]
    fn demo_catalogue_loads() {
        let c = Catalog::load(&policies_dir()).expect("demo catalogue is valid");
        assert!(c.agencies.len() >= 7);
        assert!(c.items.len() >= 6);
        let (d, f) = c.field("population.name").expect("population.name");
        assert_eq!(d.provider, "xj-gat");
        assert_eq!(f.authority, "xj-gat");
        assert_eq!(
            c.agency_by_certificate_name("xj-mzt")
                .map(|a| a.id.as_str()),
            Some("xj-mzt")
        );
    }

    /// Copy the demo policy directory with one file replaced.
    fn with_file(name: &str, text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in [AGENCIES_FILE, CATALOG_FILE, SERVICE_ITEMS_FILE] {
            std::fs::copy(policies_dir().join(f), dir.path().join(f)).expect("copy");
        }
        std::fs::write(dir.path().join(name), text).expect("write");
        dir
    }

    fn load_error(name: &str, text: &str) -> String {
        let dir = with_file(name, text);
        Catalog::load(dir.path()).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_name_file_key_line_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            (
                AGENCIES_FILE,
                "[[agency]]\nid = \"a\"\nname = \"A\"\nroles = [\"r\"]\ncolour = \"red\"\n",
                "agencies.toml:5: unknown field `colour`",
            ),
            (
                AGENCIES_FILE,
                "[[agency]]\nid = \"a\"\nname = \"A\"\n",
                "agencies.toml:1: missing field `roles`",
            ),
            (
                AGENCIES_FILE,
                "[[agency]]\nid = \"Bad Id\"\nname = \"A\"\nroles = [\"r\"]\n",
                "agencies.toml:2: agency[0].id: `Bad Id` is not a valid id",
            ),
            (
                CATALOG_FILE,
                "[[dataset]]\nid = \"d\"\nname = \"D\"\nprovider = \"nobody\"\nsubject = \"person\"\n[[dataset.field]]\nname = \"x\"\nlabel = \"X\"\nkind = \"text\"\nsensitivity = \"public\"\nshare = \"unconditional\"\nmask = \"full\"\n",
                "catalog.toml:4: dataset[0].provider: unknown agency `nobody`",
            ),
            (
                CATALOG_FILE,
                "[[dataset]]\nid = \"d\"\nname = \"D\"\nprovider = \"xj-gat\"\nsubject = \"person\"\n[[dataset.field]]\nname = \"x\"\nlabel = \"X\"\nkind = \"text\"\nsensitivity = \"public\"\nshare = \"sometimes\"\nmask = \"full\"\n",
                "catalog.toml:11: unknown variant `sometimes`",
            ),
            (
                SERVICE_ITEMS_FILE,
                "[[item]\ncode = 1\n",
                "service_items.toml:1: ",
            ),
        ];
        for (file, text, want) in cases {
            let got = load_error(file, text);
            assert!(got.contains(want), "{file}: want `{want}` in `{got}`");
        }
    }

    #[test]
    fn unknown_material_field_is_reported() {
        let text = std::fs::read_to_string(policies_dir().join(SERVICE_ITEMS_FILE))
            .expect("read")
            .replace(
                "\"marriage.marital_status\", \"marriage.registration_date\"",
                "\"marriage.colour\"",
            );
        let got = load_error(SERVICE_ITEMS_FILE, &text);
        assert!(
            got.contains("unknown catalogue field `marriage.colour`"),
            "{got}"
        );
        assert!(got.contains("service_items.toml:"), "{got}");
    }
}
