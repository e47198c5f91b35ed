//! `sharebroker gen`: the deterministic generator of each agency's source
//! data (household registry, marriage, social insurance, enterprises) plus
//! the ground truth the resolver is measured against.
//!
//! Every person and enterprise is a pure function of (seed, index), so the
//! generator works through persons in chunks of `PERSON_CHUNK` and never
//! holds all rows: memory stays bounded at a million persons. The same seed
//! and person count give byte-identical files.

mod calendar;
mod names;
mod noise;
mod orgs;
mod people;
mod rng;
mod sources;
mod write;

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use orgs::enterprise;
use people::{IdSpace, Person};
use sources::{
    ENTERPRISE_COLUMNS, MARRIAGE_HEADER, Outputs, POPULATION_COLUMNS, SOCIAL_INSURANCE_HEADER,
    TRUTH_HEADER,
};
use write::{CsvSink, ParquetSink, TextEncoding};

// ---- file names -----------------------------------------------------------

/// Household registry (公安厅), Parquet.
pub const POPULATION_FILE: &str = "population.parquet";
/// Marriage registrations (民政厅), GBK CSV.
pub const MARRIAGE_FILE: &str = "marriage_gbk.csv";
/// Social insurance (人社厅), UTF-8 CSV.
pub const SOCIAL_INSURANCE_FILE: &str = "social_insurance.csv";
/// Enterprise register (市场监管局), Parquet.
pub const ENTERPRISES_FILE: &str = "enterprises.parquet";
/// Ground truth: one row per source row.
pub const TRUTH_FILE: &str = "truth.csv";
/// Demo applicants with clean records everywhere.
pub const APPLICANTS_FILE: &str = "applicants.csv";

// ---- coverage and duplication rates ----------------------------------------

/// Share of persons present in the household registry; the rest are known
/// to other agencies only (registry gaps).
pub const POPULATION_COVERAGE: f64 = 0.98;
/// Share of registry persons with a second registry record: same GMSFHM,
/// another RYBH, a different address and a later GXSJ.
pub const POPULATION_DUPLICATE_RATE: f64 = 0.002;
/// Share of adults (men ≥ 22, women ≥ 20) who take part in a marriage;
/// after pairing within a chunk about 55% of all persons have a marriage row.
pub const MARRIAGE_PARTICIPATION: f64 = 0.61;
/// Share of couples who later divorce (a 离婚 row per party).
pub const DIVORCE_RATE: f64 = 0.15;
/// Share of divorced persons who marry again (a second 结婚).
pub const REMARRIAGE_RATE: f64 = 0.35;
/// Share of persons aged 16–70 with a social-insurance record.
pub const SOCIAL_INSURANCE_COVERAGE: f64 = 0.70;
/// Share of insured persons with a second record (another 个人编号 in
/// another 参保地): a duplicate the resolver must merge.
pub const SOCIAL_INSURANCE_DUPLICATE_RATE: f64 = 0.02;
/// One enterprise per this many persons.
pub const PERSONS_PER_ENTERPRISE: usize = 12;
/// Share of enterprises whose credit code is a pre-2016 code failing the
/// GB 32100 check (truth `id_valid` = false).
pub const PRE_2016_CODE_RATE: f64 = 0.01;

// ---- noise in non-authoritative sources (marriage, social insurance, legal
// representatives in the enterprise register); the registry is clean -------

/// Share of ID numbers written in the legacy 15-digit form (only for
/// persons born 1900–1999; others keep 18 digits).
pub const LEGACY_15_DIGIT_RATE: f64 = 0.02;
/// Share of ID numbers ending in `X` written with a lower-case `x`.
pub const LOWERCASE_X_RATE: f64 = 0.25;
/// Share of ID numbers written with full-width digits (U+FF10..U+FF19).
pub const FULL_WIDTH_ID_RATE: f64 = 0.01;
/// Share of ID numbers with a leading, trailing or inner space.
pub const ID_SPACES_RATE: f64 = 0.01;
/// Share of ID numbers mistyped so that they fail validation (truth
/// `id_valid` = false), one keystroke away from the real number: a digit
/// replaced by another (60% of them), two adjacent digits swapped (25%), a
/// digit left out (8%) or typed twice (7%).
pub const ID_TYPO_RATE: f64 = 0.005;
/// Share of records whose ID number field was left blank (truth
/// `id_valid` = false): nothing to link them by but the name.
pub const ID_MISSING_RATE: f64 = 0.001;
/// Share of dotted names written with a middle-dot variant (DOMAIN.md list;
/// in the GBK file mapped to a GBK-encodable look-alike).
pub const DOT_VARIANT_RATE: f64 = 0.30;
/// Share of Uyghur names in the marriage file written in the other
/// transliteration spelling (买买提↔麦麦提, 阿不都↔阿卜都, 肉孜↔若孜,
/// 吐尔逊↔图尔荪); names with none of these spellings are unchanged.
pub const OLD_SPELLING_RATE: f64 = 0.10;
/// Share of Han and Hui names with one given-name character replaced by a
/// homophone.
pub const HAN_NAME_TYPO_RATE: f64 = 0.003;

/// Demo applicants written to `applicants.csv`.
pub const APPLICANT_COUNT: usize = 20;

/// Rows per Arrow record batch / Parquet row group and per CSV flush.
pub(crate) const BATCH_ROWS: usize = 65_536;
/// Persons generated and written together (marriages pair within a chunk).
pub(crate) const PERSON_CHUNK: usize = 65_536;

/// What to generate and where.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Directory the files are written into (created if missing).
    pub out_dir: PathBuf,
    /// Number of persons.
    pub persons: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Show a progress bar over persons on stderr.
    pub progress: bool,
}

/// What was generated.
#[derive(Debug, Clone)]
pub struct GenSummary {
    pub persons: usize,
    pub organisations: usize,
    /// Row count per source file name (the four agency files).
    pub rows: Vec<(String, usize)>,
    /// Every file written, in the order written.
    pub files: Vec<PathBuf>,
}

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("i/o error on {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parquet error writing {}: {source}", .path.display())]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("arrow error building a batch for {}: {source}", .path.display())]
    Arrow {
        path: PathBuf,
        source: arrow_schema::ArrowError,
    },
    #[error("csv error writing {}: {source}", .path.display())]
    Csv { path: PathBuf, source: csv::Error },
    #[error("character U+{:04X} cannot be encoded as gbk in {}", u32::from(*.character), .path.display())]
    Encoding { path: PathBuf, character: char },
    #[error("{persons} persons exceed the id-number space of {capacity}")]
    TooManyPersons { persons: usize, capacity: u64 },
}

impl GenError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        GenError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn parquet(path: &Path, source: parquet::errors::ParquetError) -> Self {
        GenError::Parquet {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn arrow(path: &Path, source: arrow_schema::ArrowError) -> Self {
        GenError::Arrow {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn csv(path: &Path, source: csv::Error) -> Self {
        GenError::Csv {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Generate every source file, the truth and the applicants into
/// `opts.out_dir`. Each file appears under its final name only when
/// complete.
pub fn generate(opts: &GenOptions) -> Result<GenSummary, GenError> {
    let dir = opts.out_dir.as_path();
    std::fs::create_dir_all(dir).map_err(|source| GenError::io(dir, source))?;
    let space = IdSpace::new(opts.seed);
    if opts.persons as u64 > space.capacity() {
        return Err(GenError::TooManyPersons {
            persons: opts.persons,
            capacity: space.capacity(),
        });
    }
    let organisations = opts.persons / PERSONS_PER_ENTERPRISE;
    let mut out = Outputs {
        population: ParquetSink::create(dir, POPULATION_FILE, POPULATION_COLUMNS)?,
        marriage: CsvSink::create(dir, MARRIAGE_FILE, TextEncoding::Gbk, MARRIAGE_HEADER)?,
        social_insurance: CsvSink::create(
            dir,
            SOCIAL_INSURANCE_FILE,
            TextEncoding::Utf8,
            SOCIAL_INSURANCE_HEADER,
        )?,
        enterprises: ParquetSink::create(dir, ENTERPRISES_FILE, ENTERPRISE_COLUMNS)?,
        truth: CsvSink::create(dir, TRUTH_FILE, TextEncoding::Utf8, TRUTH_HEADER)?,
        population_rows: 0,
        marriage_rows: 0,
        social_insurance_rows: 0,
    };
    let bar = if opts.progress {
        let bar = ProgressBar::new(opts.persons as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} gen [{elapsed_precise}] {bar:40} {pos}/{len} persons ({eta})",
            )
            .expect("the progress template is a valid constant"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut applicants: Vec<Person> = Vec::new();
    for start in (0..opts.persons).step_by(PERSON_CHUNK) {
        let end = (start + PERSON_CHUNK).min(opts.persons);
        let people: Vec<Person> = (start..end).map(|i| space.person(i)).collect();
        let coverage = out.write_chunk(opts.seed, &people, organisations)?;
        for (p, cov) in people.iter().zip(&coverage) {
            if applicants.len() < APPLICANT_COUNT && cov.applicant_ready() {
                applicants.push(p.clone());
            }
        }
        bar.inc((end - start) as u64);
    }

    for o in 0..organisations {
        let rep_override = applicants.first().filter(|_| o == 0).map(|p| p.index);
        let e = enterprise(opts.seed, o, &space, opts.persons, rep_override);
        out.write_enterprise(opts.seed, &e, &space, rep_override.is_some())?;
    }
    bar.finish_and_clear();

    let mut applicants_csv = CsvSink::create(
        dir,
        APPLICANTS_FILE,
        TextEncoding::Utf8,
        &["entity_id", "id_number", "name", "credit_code"],
    )?;
    let first_code = if organisations > 0 {
        orgs::org_identity(opts.seed, 0).code
    } else {
        String::new()
    };
    for (k, p) in applicants.iter().enumerate() {
        let code = if k == 0 { first_code.as_str() } else { "" };
        applicants_csv.push(&[&p.entity_id(), &p.id, &p.name, code])?;
    }

    let Outputs {
        population,
        marriage,
        social_insurance,
        enterprises,
        truth,
        ..
    } = out;
    let mut rows = Vec::new();
    let mut files = Vec::new();
    let (path, n) = population.finish()?;
    rows.push((POPULATION_FILE.to_string(), n));
    files.push(path);
    let (path, n) = marriage.finish()?;
    rows.push((MARRIAGE_FILE.to_string(), n));
    files.push(path);
    let (path, n) = social_insurance.finish()?;
    rows.push((SOCIAL_INSURANCE_FILE.to_string(), n));
    files.push(path);
    let (path, n) = enterprises.finish()?;
    rows.push((ENTERPRISES_FILE.to_string(), n));
    files.push(path);
    files.push(truth.finish()?.0);
    files.push(applicants_csv.finish()?.0);
    Ok(GenSummary {
        persons: opts.persons,
        organisations,
        rows,
        files,
    })
}

#[cfg(test)]
mod tests;
