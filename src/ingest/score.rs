//! Scoring a resolution against ground truth: pairwise precision, recall
//! and F1 over record pairs, B-cubed over records, broken down by names
//! with and without a middle dot and by records with and without a valid
//! ID number, and the precision of the links the model made on its own.
//! Pure: rows in, figures out.

use std::collections::HashMap;

/// One record as the truth knows it.
#[derive(Debug, Clone)]
pub struct TruthRow {
    pub source: String,
    pub record_id: String,
    pub entity: String,
    pub has_dot: bool,
    pub id_valid: bool,
}

/// One record as the resolver placed it; `subject` `None` when unlinked
/// (a cluster of its own). `probable` marks a link made by the model.
#[derive(Debug, Clone)]
pub struct LinkRow {
    pub source: String,
    pub record_id: String,
    pub subject: Option<String>,
    pub probable: bool,
}

/// Pairwise and B-cubed figures for one group of records.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub records: usize,
    /// Record pairs both in one predicted cluster / one true entity / both.
    pub predicted_pairs: u64,
    pub true_pairs: u64,
    pub correct_pairs: u64,
    pub bcubed_precision: f64,
    pub bcubed_recall: f64,
}

impl Figures {
    pub fn precision(&self) -> f64 {
        ratio(self.correct_pairs, self.predicted_pairs)
    }
    pub fn recall(&self) -> f64 {
        ratio(self.correct_pairs, self.true_pairs)
    }
    pub fn f1(&self) -> f64 {
        f1(self.precision(), self.recall())
    }
    pub fn bcubed_f1(&self) -> f64 {
        f1(self.bcubed_precision, self.bcubed_recall)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub all: Figures,
    pub with_dot: Figures,
    pub without_dot: Figures,
    pub valid_id: Figures,
    pub invalid_id: Figures,
    /// Links made by the model, and how many joined the right entity
    /// (its entity's other records are, for the most part, in the subject).
    pub probable_links: usize,
    pub probable_correct: usize,
    /// Truth records the links file does not mention.
    pub missing: usize,
}

impl Report {
    pub fn probable_precision(&self) -> f64 {
        ratio(self.probable_correct as u64, self.probable_links as u64)
    }
}

impl std::fmt::Display for Report {
    /// The report as a table, one row per breakdown.
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            out,
            "{:<22} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "records", "n", "precision", "recall", "F1", "B3 prec", "B3 rec", "B3 F1"
        )?;
        for (name, f) in [
            ("all", &self.all),
            ("name with middle dot", &self.with_dot),
            ("name without dot", &self.without_dot),
            ("valid ID number", &self.valid_id),
            ("invalid ID number", &self.invalid_id),
        ] {
            writeln!(
                out,
                "{name:<22} {:>9} {:>10.6} {:>9.6} {:>9.6} {:>9.6} {:>9.6} {:>9.6}",
                f.records,
                f.precision(),
                f.recall(),
                f.f1(),
                f.bcubed_precision,
                f.bcubed_recall,
                f.bcubed_f1()
            )?;
        }
        write!(
            out,
            "links made by the model: {} ({} right, precision {:.6}); truth records missing from the links: {}",
            self.probable_links,
            self.probable_correct,
            self.probable_precision(),
            self.missing
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("record ({0}, {1}) appears twice in the links")]
    DuplicateLink(String, String),
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Score `links` against `truth`, over the records of `truth` (of the kind
/// the caller selected). Records missing from `links` count as unlinked.
pub fn score(truth: &[TruthRow], links: &[LinkRow]) -> Result<Report, ScoreError> {
    let mut by_record: HashMap<(&str, &str), &LinkRow> = HashMap::with_capacity(links.len());
    for l in links {
        if by_record
            .insert((l.source.as_str(), l.record_id.as_str()), l)
            .is_some()
        {
            return Err(ScoreError::DuplicateLink(
                l.source.clone(),
                l.record_id.clone(),
            ));
        }
    }
    // Cluster ids: the subject, or the record itself when unlinked.
    let mut missing = 0;
    let cluster: Vec<String> = truth
        .iter()
        .map(
            |t| match by_record.get(&(t.source.as_str(), t.record_id.as_str())) {
                Some(LinkRow {
                    subject: Some(s), ..
                }) => format!("S{s}"),
                found => {
                    missing += usize::from(found.is_none());
                    format!("R{}\u{1f}{}", t.source, t.record_id)
                }
            },
        )
        .collect();
    let mut cluster_size: HashMap<&str, u64> = HashMap::new();
    let mut entity_size: HashMap<&str, u64> = HashMap::new();
    let mut both: HashMap<(&str, &str), u64> = HashMap::new();
    for (t, c) in truth.iter().zip(&cluster) {
        *cluster_size.entry(c).or_default() += 1;
        *entity_size.entry(&t.entity).or_default() += 1;
        *both.entry((c, &t.entity)).or_default() += 1;
    }
    let group = |keep: &dyn Fn(&TruthRow) -> bool| -> Figures {
        // Pairs count in a group when their entity (true pairs), cluster
        // (predicted pairs) or both hold group records; restricted to the
        // records of the group so each breakdown is self-contained.
        let mut cs: HashMap<&str, u64> = HashMap::new();
        let mut es: HashMap<&str, u64> = HashMap::new();
        let mut bs: HashMap<(&str, &str), u64> = HashMap::new();
        let mut records = 0;
        let (mut bp, mut br) = (0.0, 0.0);
        for (t, c) in truth.iter().zip(&cluster) {
            if !keep(t) {
                continue;
            }
            records += 1;
            *cs.entry(c).or_default() += 1;
            *es.entry(&t.entity).or_default() += 1;
            *bs.entry((c, &t.entity)).or_default() += 1;
            // B-cubed over the whole data, averaged over the group.
            let common = both[&(c.as_str(), t.entity.as_str())] as f64;
            bp += common / cluster_size[c.as_str()] as f64;
            br += common / entity_size[t.entity.as_str()] as f64;
        }
        let n = records.max(1) as f64;
        Figures {
            records,
            predicted_pairs: cs.values().map(|&n| pairs(n)).sum(),
            true_pairs: es.values().map(|&n| pairs(n)).sum(),
            correct_pairs: bs.values().map(|&n| pairs(n)).sum(),
            bcubed_precision: if records == 0 { 1.0 } else { bp / n },
            bcubed_recall: if records == 0 { 1.0 } else { br / n },
        }
    };
    // A model link is right when the subject's records are, in majority,
    // the linked record's entity.
    let mut majority: HashMap<&str, (&str, u64)> = HashMap::new();
    for ((c, e), &n) in &both {
        let m = majority.entry(c).or_insert((e, 0));
        if n > m.1 || (n == m.1 && *e < m.0) {
            *m = (e, n);
        }
    }
    let (mut probable_links, mut probable_correct) = (0, 0);
    for (t, c) in truth.iter().zip(&cluster) {
        if let Some(l) = by_record.get(&(t.source.as_str(), t.record_id.as_str()))
            && l.probable
        {
            probable_links += 1;
            probable_correct += usize::from(majority[c.as_str()].0 == t.entity);
        }
    }
    Ok(Report {
        all: group(&|_| true),
        with_dot: group(&|t| t.has_dot),
        without_dot: group(&|t| !t.has_dot),
        valid_id: group(&|t| t.id_valid),
        invalid_id: group(&|t| !t.id_valid),
        probable_links,
        probable_correct,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rec: &str, entity: &str, has_dot: bool, id_valid: bool) -> TruthRow {
        TruthRow {
            source: "s".into(),
            record_id: rec.into(),
            entity: entity.into(),
            has_dot,
            id_valid,
        }
    }

    fn l(rec: &str, subject: Option<&str>, probable: bool) -> LinkRow {
        LinkRow {
            source: "s".into(),
            record_id: rec.into(),
            subject: subject.map(String::from),
            probable,
        }
    }

    #[test]
    fn figures_by_hand() {
        // Entities: A = {1,2,3}, B = {4,5}. Predicted: {1,2}, {3,4}, 5 alone.
        let truth = [
            t("1", "A", true, true),
            t("2", "A", true, true),
            t("3", "A", true, false),
            t("4", "B", false, true),
            t("5", "B", false, true),
        ];
        let links = [
            l("1", Some("P1"), false),
            l("2", Some("P1"), false),
            l("3", Some("P2"), true),
            l("4", Some("P2"), false),
            l("5", None, false),
        ];
        let r = score(&truth, &links).expect("score");
        // Predicted pairs: (1,2), (3,4) = 2; true: (1,2),(1,3),(2,3),(4,5) = 4;
        // correct: (1,2) = 1.
        assert_eq!(
            (r.all.predicted_pairs, r.all.true_pairs, r.all.correct_pairs),
            (2, 4, 1)
        );
        assert!((r.all.precision() - 0.5).abs() < 1e-12);
        assert!((r.all.recall() - 0.25).abs() < 1e-12);
        // B-cubed precision: 1:1, 2:1, 3:1/2, 4:1/2, 5:1 → 4/5.
        assert!((r.all.bcubed_precision - 0.8).abs() < 1e-12);
        // Recall: 1:2/3, 2:2/3, 3:1/3, 4:1/2, 5:1/2 → 8/3/5 ... = 0.5333.
        assert!((r.all.bcubed_recall - (2.0 / 3.0 * 2.0 + 1.0 / 3.0 + 1.0) / 5.0).abs() < 1e-12);
        assert_eq!(r.with_dot.records, 3);
        assert_eq!(r.invalid_id.records, 1);
        // Record 3 was linked by the model into a subject whose majority
        // is ... a tie of A and B; the tie goes to A, so it counts correct.
        assert_eq!((r.probable_links, r.probable_correct), (1, 1));
        assert_eq!(r.missing, 0);
    }

    #[test]
    fn perfect_and_missing() {
        let truth = [
            t("1", "A", false, true),
            t("2", "A", false, true),
            t("3", "B", false, true),
        ];
        let links = [l("1", Some("P1"), false), l("2", Some("P1"), false)];
        let r = score(&truth, &links).expect("score");
        assert_eq!(r.all.f1(), 1.0);
        assert_eq!(r.missing, 1);
        let dup = [l("1", Some("P1"), false), l("1", Some("P2"), false)];
        assert!(score(&truth, &dup).is_err());
    }
}
