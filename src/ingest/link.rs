//! Probabilistic linking of person records whose ID number failed
//! validation (a mistyped digit, a dropped or doubled one) to the subjects
//! keyed by valid ID numbers. Pure: no I/O.
//!
//! **Blocking.** A record's candidates are the subjects whose ID number is
//! one edit away from what the record wrote: one character substituted,
//! two adjacent ones swapped, one inserted or one dropped. Only strings that
//! pass the GB 11643 check can be subjects, so a record has about fifteen
//! strings to look up and, in practice, zero to two candidates.
//!
//! **Scoring (Fellegi–Sunter, with term frequencies).** For a record with
//! candidates `C`, the hypotheses are "candidate `c` is the same person"
//! (one per candidate) and "none is". With `π` the prior that the record's
//! person is a subject at all and `E` the expected number of *other*
//! subjects within one edit of an ID number (measured on the data), the
//! posterior odds of `c` against "none" are `π/(1−π) · 1/E · m(l)/u(l)`,
//! where `l` is how the names compare:
//! - `m(l)`, the share of true matches whose names compare at level `l`, is
//!   learnt from the records that valid ID numbers already link (free,
//!   exact training labels);
//! - `u(l)`, the share of non-matches that do, is the frequency of the
//!   candidate's name (its match key, or its pinyin key) among all subjects
//!   for the "same" and "same pinyin" levels — a common name is weak
//!   evidence, a rare one strong — and is measured on random subject pairs
//!   for the others.
//!
//! Each candidate's probability is its odds over `1 + Σ odds`. Two
//! candidates with the same name share the probability, so neither is
//! linked automatically. The bands: at least [`AUTO_LINK`] links
//! automatically, at least [`REVIEW`] goes to a steward's review queue,
//! below it nothing is linked and the record stays in quarantine. Records
//! are only ever linked to a subject; two subjects (two valid ID numbers)
//! are never merged here (architecture invariant 5).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field as ArrowField, Schema};

use super::normalise::{name_match_key, name_pinyin};
use crate::model::ids::id_number_check_char;

/// Probability at or above which a record is linked automatically.
pub const AUTO_LINK: f64 = 0.999;
/// Probability at or above which a candidate goes to review; below it the
/// record is not linked.
pub const REVIEW: f64 = 0.2;
/// Prior probability that a record's person is among the subjects at all.
/// Deliberately conservative (the household registry covers about 98%):
/// a lower prior means fewer automatic links.
pub const PRIOR_PRESENT: f64 = 0.9;
/// Lower bound of the measured neighbour density `E`: small data sets show
/// no neighbours at all, which must not make every link look certain.
pub const MIN_DENSITY: f64 = 1e-3;
/// Jaro–Winkler similarity of pinyin keys at or above which two names are
/// "similar" (吐尔逊/图尔荪 score 0.93, 王伟/王强 0.80).
pub const SIMILAR_PINYIN: f64 = 0.9;

/// How two names compare, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameLevel {
    /// The same name up to dots, spaces and case.
    Same = 0,
    /// Written differently, pronounced the same (买买提/麦麦提, homophones).
    Pinyin = 1,
    /// Pinyin close (吐尔逊/图尔荪, 肉孜/若孜).
    Similar = 2,
    Different = 3,
}

pub const LEVELS: usize = 4;

impl NameLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            NameLevel::Same => "same name",
            NameLevel::Pinyin => "same pinyin",
            NameLevel::Similar => "similar pinyin",
            NameLevel::Different => "different name",
        }
    }
}

/// The comparison forms of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameForms {
    pub key: String,
    pub pinyin: String,
}

impl NameForms {
    pub fn of(name: &str) -> NameForms {
        NameForms {
            key: name_match_key(name),
            pinyin: name_pinyin(name),
        }
    }
}

pub fn compare(a: &NameForms, b: &NameForms) -> NameLevel {
    if a.key == b.key {
        NameLevel::Same
    } else if !a.pinyin.is_empty() && a.pinyin == b.pinyin {
        NameLevel::Pinyin
    } else if strsim::jaro_winkler(&a.pinyin, &b.pinyin) >= SIMILAR_PINYIN {
        NameLevel::Similar
    } else {
        NameLevel::Different
    }
}

fn passes_check(id: &[u8]) -> bool {
    id.len() == 18 && id_number_check_char(&id[..17]) == Some(id[17])
}

/// Every string one edit away from `digits` (as [`super::normalise::id_digits`]
/// gives it: digits and `X`, 17 to 19 long) that is a well-formed ID number
/// passing the check character; sorted, each once, never `digits` itself.
pub fn id_neighbours(digits: &str) -> Vec<String> {
    const ALPHABET: &[u8] = b"0123456789X";
    let s = digits.as_bytes();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut keep = |t: Vec<u8>| {
        if passes_check(&t) && t != s {
            out.push(t);
        }
    };
    match s.len() {
        18 => {
            for pos in 0..18 {
                for &c in ALPHABET {
                    if c != s[pos] {
                        let mut t = s.to_vec();
                        t[pos] = c;
                        keep(t);
                    }
                }
            }
            for pos in 0..17 {
                if s[pos] != s[pos + 1] {
                    let mut t = s.to_vec();
                    t.swap(pos, pos + 1);
                    keep(t);
                }
            }
        }
        17 => {
            for pos in 0..=17 {
                for &c in ALPHABET {
                    let mut t = s.to_vec();
                    t.insert(pos, c);
                    keep(t);
                }
            }
        }
        19 => {
            for pos in 0..19 {
                let mut t = s.to_vec();
                t.remove(pos);
                keep(t);
            }
        }
        _ => {}
    }
    out.sort_unstable();
    out.dedup();
    out.into_iter()
        .map(|t| String::from_utf8(t).expect("ASCII digits and X"))
        .collect()
}

/// FNV-1a, 64 bits: the same in every build, so a stored model's name
/// frequencies stay valid.
pub fn fnv1a(s: &str) -> u64 {
    fnv1a_extend(FNV_OFFSET, s)
}

/// FNV-1a's starting value.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of what `h` hashed so far followed by `s`.
pub fn fnv1a_extend(mut h: u64, s: &str) -> u64 {
    for &b in s.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn hash_of(s: &str) -> u64 {
    fnv1a(s)
}

/// A small deterministic generator for sampling (xorshift64*).
struct Sampler(u64);

impl Sampler {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

/// Manifest meta of a stored model: its parameters as JSON.
pub const MODEL_META: &str = "parameters";

/// Random subject pairs compared to measure `u` of the weaker levels.
const U_SAMPLE_PAIRS: usize = 100_000;

/// The fitted parameters, and what they were fitted on (for the report).
#[derive(Debug, Clone)]
pub struct Model {
    pub m: [f64; LEVELS],
    pub u: [f64; LEVELS],
    pub density: f64,
    pub true_pairs: usize,
    pub subjects: usize,
    key_tf: HashMap<u64, u32>,
    pinyin_tf: HashMap<u64, u32>,
}

impl Model {
    /// Fit the model. `subject_names`: the name of each subject that has
    /// one; `true_pairs`: counts of name levels between records that valid
    /// ID numbers link (see [`compare`]); `density`: measured mean number
    /// of other subjects within one edit of a subject's ID number.
    pub fn fit(subject_names: &[NameForms], true_pairs: [u64; LEVELS], density: f64) -> Model {
        let mut key_tf: HashMap<u64, u32> = HashMap::with_capacity(subject_names.len());
        let mut pinyin_tf: HashMap<u64, u32> = HashMap::with_capacity(subject_names.len());
        for n in subject_names {
            *key_tf.entry(hash_of(&n.key)).or_default() += 1;
            *pinyin_tf.entry(hash_of(&n.pinyin)).or_default() += 1;
        }
        // m: Laplace-smoothed shares among true matches; with no linked
        // pairs at all, a prior that trusts names moderately.
        let n_true: u64 = true_pairs.iter().sum();
        let m = if n_true == 0 {
            [0.95, 0.03, 0.015, 0.005]
        } else {
            true_pairs.map(|c| (c as f64 + 1.0) / (n_true as f64 + LEVELS as f64))
        };
        // u of the weaker levels from random pairs (the "same" levels use
        // term frequencies instead).
        let mut counts = [0u64; LEVELS];
        let n = subject_names.len();
        let mut sampled = 0u64;
        if n >= 2 {
            let mut rng = Sampler(0x9E37_79B9_7F4A_7C15);
            for _ in 0..U_SAMPLE_PAIRS.min(n * (n - 1) / 2) {
                let (a, b) = (rng.below(n), rng.below(n));
                if a == b {
                    continue;
                }
                counts[compare(&subject_names[a], &subject_names[b]) as usize] += 1;
                sampled += 1;
            }
        }
        let u = counts.map(|c| (c as f64 + 0.5) / (sampled as f64 + 1.0));
        Model {
            m,
            u,
            density: density.max(MIN_DENSITY),
            true_pairs: n_true as usize,
            subjects: n,
            key_tf,
            pinyin_tf,
        }
    }

    /// The model as a table of name frequencies (`form` "key" or "pinyin",
    /// `hash`, `count`) and its parameters as manifest meta, for a later
    /// incremental resolve to score new records with.
    pub fn to_store(&self) -> (RecordBatch, BTreeMap<String, String>) {
        let mut rows: Vec<(&str, u64, u32)> = self
            .key_tf
            .iter()
            .map(|(&h, &n)| ("key", h, n))
            .chain(self.pinyin_tf.iter().map(|(&h, &n)| ("pinyin", h, n)))
            .collect();
        rows.sort_unstable();
        let schema = Arc::new(Schema::new(vec![
            ArrowField::new("form", DataType::Utf8, false),
            ArrowField::new("hash", DataType::UInt64, false),
            ArrowField::new("count", DataType::UInt32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(rows.iter().map(|r| Some(r.0)).collect::<StringArray>()),
                Arc::new(rows.iter().map(|r| r.1).collect::<UInt64Array>()),
                Arc::new(rows.iter().map(|r| r.2).collect::<UInt32Array>()),
            ],
        )
        .expect("columns match the model schema");
        // Floats as their bits: a stored model scores exactly as it did.
        let params = serde_json::json!({
            "m": self.m.map(f64::to_bits),
            "u": self.u.map(f64::to_bits),
            "density": self.density.to_bits(),
            "true_pairs": self.true_pairs,
            "subjects": self.subjects,
        });
        let meta = BTreeMap::from([(MODEL_META.to_string(), params.to_string())]);
        (batch, meta)
    }

    /// A model written by [`Model::to_store`].
    pub fn from_store(
        batches: &[RecordBatch],
        meta: &BTreeMap<String, String>,
    ) -> Result<Model, String> {
        #[derive(serde::Deserialize)]
        struct Params {
            m: [u64; LEVELS],
            u: [u64; LEVELS],
            density: u64,
            true_pairs: usize,
            subjects: usize,
        }
        let p: Params = meta
            .get(MODEL_META)
            .ok_or_else(|| format!("no `{MODEL_META}` in the model's manifest"))
            .and_then(|t| serde_json::from_str(t).map_err(|e| format!("`{MODEL_META}`: {e}")))?;
        let (mut key_tf, mut pinyin_tf) = (HashMap::new(), HashMap::new());
        for b in batches {
            let (Some(form), Some(hash), Some(count)) = (
                b.column_by_name("form")
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>()),
                b.column_by_name("hash")
                    .and_then(|c| c.as_any().downcast_ref::<UInt64Array>()),
                b.column_by_name("count")
                    .and_then(|c| c.as_any().downcast_ref::<UInt32Array>()),
            ) else {
                return Err("the model's columns are not (form, hash, count)".into());
            };
            for i in 0..b.num_rows() {
                let map = match form.value(i) {
                    "key" => &mut key_tf,
                    "pinyin" => &mut pinyin_tf,
                    other => return Err(format!("unknown name form `{other}` in the model")),
                };
                map.insert(hash.value(i), count.value(i));
            }
        }
        Ok(Model {
            m: p.m.map(f64::from_bits),
            u: p.u.map(f64::from_bits),
            density: f64::from_bits(p.density),
            true_pairs: p.true_pairs,
            subjects: p.subjects,
            key_tf,
            pinyin_tf,
        })
    }

    /// `u` of a level for this candidate name: its frequency among the
    /// subjects for the "same" levels.
    fn u_for(&self, level: NameLevel, candidate: &NameForms) -> f64 {
        let tf = |map: &HashMap<u64, u32>, s: &str| {
            f64::from(map.get(&hash_of(s)).copied().unwrap_or(1).max(1))
                / self.subjects.max(1) as f64
        };
        match level {
            NameLevel::Same => tf(&self.key_tf, &candidate.key),
            NameLevel::Pinyin => tf(&self.pinyin_tf, &candidate.pinyin).max(self.u[1]),
            other => self.u[other as usize],
        }
    }

    /// Odds that `candidate` is the record's person rather than nobody.
    pub fn odds(
        &self,
        record: Option<&NameForms>,
        candidate: Option<&NameForms>,
    ) -> (f64, Option<NameLevel>) {
        let prior = PRIOR_PRESENT / (1.0 - PRIOR_PRESENT) / self.density;
        match (record, candidate) {
            (Some(r), Some(c)) => {
                let level = compare(r, c);
                (
                    prior * self.m[level as usize] / self.u_for(level, c),
                    Some(level),
                )
            }
            // No name to compare: the ID number alone.
            _ => (prior, None),
        }
    }
}

/// A scored candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Index of the candidate in the list given to [`score`].
    pub candidate: usize,
    pub probability: f64,
    pub level: Option<NameLevel>,
}

/// What to do with a record's best candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    Link,
    Review,
    NoLink,
}

pub fn band(probability: f64) -> Band {
    if probability >= AUTO_LINK {
        Band::Link
    } else if probability >= REVIEW {
        Band::Review
    } else {
        Band::NoLink
    }
}

/// Posterior probabilities of each candidate, best first.
pub fn score(
    model: &Model,
    record: Option<&NameForms>,
    candidates: &[Option<&NameForms>],
) -> Vec<Scored> {
    let odds: Vec<(f64, Option<NameLevel>)> =
        candidates.iter().map(|c| model.odds(record, *c)).collect();
    let total: f64 = 1.0 + odds.iter().map(|o| o.0).sum::<f64>();
    let mut out: Vec<Scored> = odds
        .into_iter()
        .enumerate()
        .map(|(i, (o, level))| Scored {
            candidate: i,
            probability: o / total,
            level,
        })
        .collect();
    out.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then(a.candidate.cmp(&b.candidate))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_cover_every_single_edit() {
        let id = "650102198506150010";
        assert!(passes_check(id.as_bytes()));
        // A substituted digit, two swapped digits, a dropped and a doubled
        // digit all lead back to the number.
        let mut typo = id.as_bytes().to_vec();
        typo[9] = b'7';
        let typo = String::from_utf8(typo).expect("ascii");
        assert!(!passes_check(typo.as_bytes()));
        for written in [
            typo.as_str(),
            "650102195806150010",
            "65010219850615010",
            "6501021985061550010",
        ] {
            let n = id_neighbours(written);
            assert!(n.contains(&id.to_string()), "{written}: {n:?}");
            assert!(n.iter().all(|t| passes_check(t.as_bytes())));
            assert!(!n.contains(&written.to_string()));
        }
        // About 17·10/11 substitutions pass the check: a handful, not all.
        let n = id_neighbours(&typo);
        assert!((5..40).contains(&n.len()), "{}", n.len());
        assert!(id_neighbours("6501").is_empty());
    }

    #[test]
    fn names_compare_by_level() {
        let f = NameForms::of;
        assert_eq!(
            compare(&f("买买提·艾力"), &f("买买提.艾力")),
            NameLevel::Same
        );
        assert_eq!(
            compare(&f("买买提·艾力"), &f("麦麦提・艾力")),
            NameLevel::Pinyin
        );
        assert_eq!(compare(&f("王伟明"), &f("王维明")), NameLevel::Pinyin);
        assert_eq!(
            compare(&f("吐尔逊·艾力"), &f("图尔荪·艾力")),
            NameLevel::Similar
        );
        assert_eq!(compare(&f("王伟"), &f("李强")), NameLevel::Different);
    }

    fn model(names: &[&str]) -> Model {
        let forms: Vec<NameForms> = names.iter().map(|n| NameForms::of(n)).collect();
        Model::fit(&forms, [950, 30, 15, 5], 0.005)
    }

    #[test]
    fn a_rare_same_name_links_a_different_one_goes_to_review() {
        let mut names = Vec::new();
        for _ in 0..5 {
            names.extend([
                "张伟",
                "王秀英",
                "李娜",
                "刘洋",
                "陈静",
                "杨勇",
                "赵磊",
                "黄敏",
            ]);
        }
        names.extend(["买买提·艾力", "李强", "王芳"]);
        let m = model(&names);
        let rec = NameForms::of("买买提.艾力");
        let same = NameForms::of("买买提·艾力");
        let other = NameForms::of("李强");
        let s = score(&m, Some(&rec), &[Some(&same)]);
        assert_eq!(band(s[0].probability), Band::Link, "{s:?}");
        let s = score(&m, Some(&rec), &[Some(&other)]);
        assert_eq!(band(s[0].probability), Band::Review, "{s:?}");
        // Two candidates with the same name: neither is linked automatically.
        let s = score(&m, Some(&rec), &[Some(&same), Some(&same)]);
        assert_eq!(band(s[0].probability), Band::Review, "{s:?}");
        // The true match among an unrelated neighbour wins.
        let s = score(&m, Some(&rec), &[Some(&other), Some(&same)]);
        assert_eq!(
            (s[0].candidate, band(s[0].probability)),
            (1, Band::Link),
            "{s:?}"
        );
    }

    #[test]
    fn a_common_name_is_weaker_evidence_than_a_rare_one() {
        let mut names = vec!["张伟"; 500];
        names.extend(["阿依古丽·吐尔逊"; 1]);
        names.extend(["李强"; 499]);
        let m = model(&names);
        let common = NameForms::of("张伟");
        let rare = NameForms::of("阿依古丽·吐尔逊");
        let (o_common, _) = m.odds(Some(&common), Some(&common));
        let (o_rare, _) = m.odds(Some(&rare), Some(&rare));
        assert!(o_rare > o_common * 100.0, "{o_rare} {o_common}");
    }

    #[test]
    fn m_is_learnt_from_linked_pairs() {
        let forms = [NameForms::of("王芳"), NameForms::of("李强")];
        let m = Model::fit(&forms, [90, 5, 3, 2], 0.0);
        assert!((m.m[0] - 91.0 / 104.0).abs() < 1e-12);
        assert_eq!(m.density, MIN_DENSITY);
        assert_eq!(m.true_pairs, 100);
    }

    #[test]
    fn a_stored_model_scores_exactly_as_the_fitted_one() {
        let m = model(&[
            "买买提·艾力",
            "阿依古丽·吐尔逊",
            "王建国",
            "王建国",
            "李秀英",
        ]);
        let (batch, meta) = m.to_store();
        let back = Model::from_store(&[batch], &meta).expect("reads back");
        for (record, candidate) in [
            ("买买提·艾力", "麦麦提·艾力"),
            ("王建国", "王建国"),
            ("李秀英", "张伟"),
        ] {
            let (r, c) = (NameForms::of(record), NameForms::of(candidate));
            assert_eq!(m.odds(Some(&r), Some(&c)), back.odds(Some(&r), Some(&c)));
        }
        assert_eq!((back.m, back.u, back.density), (m.m, m.u, m.density));
        let mut bad = meta.clone();
        bad.insert(MODEL_META.into(), "{}".into());
        assert!(Model::from_store(&[], &bad).is_err());
    }
}
