//! End-to-end tests of `generate`: determinism, ID validity, the GBK file,
//! truth completeness and the demo applicants.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;

use arrow_array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;
use crate::model::ids::{credit_code_check_char, id_number_check_char};

const PERSONS: usize = 2_000;

fn run(dir: &Path, seed: u64) -> GenSummary {
    generate(&GenOptions {
        out_dir: dir.to_path_buf(),
        persons: PERSONS,
        seed,
        progress: false,
    })
    .expect("generation succeeds")
}

/// All columns of a Parquet file of Utf8 columns, by name.
fn read_parquet(path: &Path) -> HashMap<String, Vec<String>> {
    let file = File::open(path).expect("open parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet metadata")
        .build()
        .expect("parquet reader");
    let mut columns: HashMap<String, Vec<String>> = HashMap::new();
    for batch in reader {
        let batch = batch.expect("batch");
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            let strings = array
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("utf8 column");
            assert_eq!(strings.null_count(), 0);
            columns
                .entry(field.name().clone())
                .or_default()
                .extend(strings.iter().map(|v| v.unwrap_or_default().to_string()));
        }
    }
    columns
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).expect("open csv");
    let header = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.expect("record").iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

fn decode_gbk(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read gbk file");
    encoding_rs::GBK
        .decode_without_bom_handling_and_without_replacement(&bytes)
        .expect("the marriage file is valid gbk")
        .into_owned()
}

#[test]
fn same_seed_gives_identical_files_and_another_seed_differs() {
    let (a, b, c) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let sa = run(a.path(), 7);
    run(b.path(), 7);
    run(c.path(), 8);
    assert_eq!(sa.files.len(), 6);
    for path in &sa.files {
        let name = path.file_name().expect("file name");
        let x = std::fs::read(path).expect("read a");
        let y = std::fs::read(b.path().join(name)).expect("read b");
        assert!(
            x == y,
            "{name:?} differs between two runs with the same seed"
        );
        let z = std::fs::read(c.path().join(name)).expect("read c");
        if name != APPLICANTS_FILE && name != TRUTH_FILE {
            assert!(x != z, "{name:?} is the same under another seed");
        }
    }
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(a.path())
        .expect("list dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn population_ids_are_valid_and_only_registry_duplicates_repeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(dir.path(), 11);
    let pop = read_parquet(&dir.path().join(POPULATION_FILE));
    let ids = &pop["GMSFHM"];
    assert!(ids.len() > PERSONS * 95 / 100 && ids.len() < PERSONS);
    for id in ids {
        let b = id.as_bytes();
        assert_eq!(b.len(), 18, "{id}");
        assert_eq!(id_number_check_char(&b[..17]), Some(b[17]), "{id}");
    }
    for (id, sex) in ids.iter().zip(&pop["XB"]) {
        let odd = (id.as_bytes()[16] - b'0') % 2 == 1;
        assert_eq!(sex, if odd { "1" } else { "2" });
    }
    let distinct: HashSet<&String> = ids.iter().collect();
    assert!(ids.len() - distinct.len() <= PERSONS / 100);
    let records: HashSet<&String> = pop["RYBH"].iter().collect();
    assert_eq!(records.len(), ids.len());
    // Official names: U+00B7 only, no variants.
    assert!(pop["XM"].iter().any(|n| n.contains('\u{00B7}')));
    assert!(
        pop["XM"]
            .iter()
            .all(|n| !n.contains('.') && !n.contains('\u{30FB}'))
    );
}

#[test]
fn marriage_file_is_gbk_with_official_dots() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(dir.path(), 12);
    let text = decode_gbk(&dir.path().join(MARRIAGE_FILE));
    let header = text.lines().next().expect("header line");
    assert_eq!(
        header.trim_end(),
        "登记编号,身份证号,姓名,性别,婚姻登记类型,配偶身份证号,配偶姓名,登记日期,登记机关,更新时间"
    );
    assert!(text.contains('\u{00B7}'));
    assert!(text.contains("结婚") && text.contains("离婚"));
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("record")).collect();
    assert!(rows.iter().all(|r| r.len() == 10));
    assert!(rows.iter().all(|r| &r[3] == "男" || &r[3] == "女"));
    // Each registration event gives two rows, one per party (names and IDs
    // are garbled independently per row, so compare the event fields).
    assert_eq!(rows.len() % 2, 0);
    for pair in rows.chunks(2) {
        assert_ne!(&pair[0][3], &pair[1][3]);
        assert_eq!(&pair[0][4], &pair[1][4]);
        assert_eq!(&pair[0][8], &pair[1][8]);
    }
    let same = rows
        .chunks(2)
        .filter(|p| p[0][2] == p[1][6] && p[1][2] == p[0][6])
        .count();
    assert!(
        same * 2 > rows.len() / 2,
        "spouse names mostly match: {same} of {}",
        rows.len() / 2
    );
    // The three date formats occur.
    assert!(rows.iter().any(|r| r[7].contains('年')));
    assert!(rows.iter().any(|r| r[7].contains('/')));
    assert!(rows.iter().any(|r| r[7].contains('-')));
}

#[test]
fn truth_has_one_row_per_source_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = run(dir.path(), 13);
    let (header, truth) = read_csv(&dir.path().join(TRUTH_FILE));
    assert_eq!(
        header,
        [
            "source",
            "record_id",
            "entity_id",
            "kind",
            "name_has_dot",
            "id_valid"
        ]
    );
    let total: usize = summary.rows.iter().map(|r| r.1).sum();
    assert_eq!(truth.len(), total);
    let mut per_source: HashMap<&str, usize> = HashMap::new();
    for row in &truth {
        *per_source.entry(row[0].as_str()).or_default() += 1;
    }
    let count = |name: &str| summary.rows.iter().find(|r| r.0 == name).map(|r| r.1);
    assert_eq!(Some(per_source["population"]), count(POPULATION_FILE));
    assert_eq!(Some(per_source["marriage"]), count(MARRIAGE_FILE));
    assert_eq!(
        Some(per_source["social_insurance"]),
        count(SOCIAL_INSURANCE_FILE)
    );
    assert_eq!(Some(per_source["enterprises"]), count(ENTERPRISES_FILE));
    // Record ids are unique within a source.
    let keys: HashSet<(&str, &str)> = truth
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(keys.len(), truth.len());
    // The files hold as many rows as the summary says.
    let pop = read_parquet(&dir.path().join(POPULATION_FILE));
    assert_eq!(Some(pop["RYBH"].len()), count(POPULATION_FILE));
    let ent = read_parquet(&dir.path().join(ENTERPRISES_FILE));
    assert_eq!(ent["TYSHXYDM"].len(), summary.organisations);
    assert_eq!(summary.organisations, PERSONS / PERSONS_PER_ENTERPRISE);
    let (_, si) = read_csv(&dir.path().join(SOCIAL_INSURANCE_FILE));
    assert_eq!(Some(si.len()), count(SOCIAL_INSURANCE_FILE));
    // Some records are flagged invalid, most are valid.
    let invalid = truth.iter().filter(|r| r[5] == "false").count();
    assert!(invalid > 0 && invalid < truth.len() / 50, "{invalid}");
}

#[test]
fn applicants_are_clean_everywhere_and_the_first_represents_a_company() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(dir.path(), 14);
    let (header, applicants) = read_csv(&dir.path().join(APPLICANTS_FILE));
    assert_eq!(header, ["entity_id", "id_number", "name", "credit_code"]);
    assert_eq!(applicants.len(), APPLICANT_COUNT);
    let pop = read_parquet(&dir.path().join(POPULATION_FILE));
    let pop_ids: HashSet<&String> = pop["GMSFHM"].iter().collect();
    let (_, si) = read_csv(&dir.path().join(SOCIAL_INSURANCE_FILE));
    let marriage = decode_gbk(&dir.path().join(MARRIAGE_FILE));
    let mut marriage_reader = csv::Reader::from_reader(marriage.as_bytes());
    let marriage: Vec<csv::StringRecord> = marriage_reader
        .records()
        .map(|r| r.expect("record"))
        .collect();
    let (_, truth) = read_csv(&dir.path().join(TRUTH_FILE));
    for a in &applicants {
        assert!(pop_ids.contains(&a[1]), "{} not in population", a[0]);
        // Every record of this person in truth has a valid id.
        let records: Vec<&Vec<String>> = truth.iter().filter(|r| r[2] == a[0]).collect();
        for source in ["population", "marriage", "social_insurance"] {
            assert!(
                records.iter().any(|r| r[0] == source),
                "{} lacks {source}",
                a[0]
            );
        }
        assert!(records.iter().all(|r| r[5] == "true"));
        assert!(marriage.iter().any(|r| r[1] == a[1]));
        assert!(si.iter().any(|r| r[1] == a[1]));
    }
    let code = &applicants[0][3];
    assert_eq!(code.len(), 18);
    assert_eq!(
        credit_code_check_char(&code.as_bytes()[..17]),
        Some(code.as_bytes()[17])
    );
    let ent = read_parquet(&dir.path().join(ENTERPRISES_FILE));
    let at = ent["TYSHXYDM"]
        .iter()
        .position(|c| c == code)
        .expect("company listed");
    assert_eq!(ent["FDDBRZJHM"][at], applicants[0][1]);
    assert!(applicants[1..].iter().all(|a| a[3].is_empty()));
}

#[test]
fn noise_appears_in_the_secondary_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(dir.path(), 15);
    let (_, si) = read_csv(&dir.path().join(SOCIAL_INSURANCE_FILE));
    let ids: Vec<&str> = si.iter().map(|r| r[1].as_str()).collect();
    assert!(ids.iter().any(|id| id.len() == 15), "15-digit ids");
    assert!(
        ids.iter()
            .any(|id| id.starts_with(' ') || id.ends_with(' ') || id.contains(' '))
    );
    assert!(
        ids.iter()
            .any(|id| id.chars().any(|c| ('\u{FF10}'..='\u{FF19}').contains(&c)))
    );
    let dotted_variants = si
        .iter()
        .filter(|r| {
            r[2].chars().any(|c| {
                super::noise::DOT_VARIANTS
                    .iter()
                    .any(|v| v.starts_with(c) && c != '\u{00B7}' && c != ' ')
            })
        })
        .count();
    assert!(dotted_variants > 0);
    // Employers are the generated enterprises, or empty for 城乡居民.
    let ent = read_parquet(&dir.path().join(ENTERPRISES_FILE));
    let codes: HashSet<&String> = ent["TYSHXYDM"].iter().collect();
    for r in &si {
        if r[4] == "城乡居民基本养老保险" {
            assert!(r[5].is_empty() && r[6].is_empty());
        } else {
            assert!(codes.contains(&r[5]), "{}", r[5]);
        }
    }
}

#[test]
fn every_name_part_encodes_in_gbk() {
    for part in super::names::all_name_parts() {
        let (_, _, had_errors) = encoding_rs::GBK.encode(part);
        assert!(!had_errors, "{part}");
    }
}

#[test]
fn too_many_persons_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = generate(&GenOptions {
        out_dir: dir.path().to_path_buf(),
        persons: usize::MAX,
        seed: 1,
        progress: false,
    })
    .expect_err("the id space is finite");
    assert!(err.to_string().contains("exceed the id-number space"));
}
