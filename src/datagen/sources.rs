//! The rows of each agency's source file, produced one chunk of persons at
//! a time: the household registry, marriage registrations (couples paired
//! within the chunk), social insurance, and the enterprise register.

use super::calendar::{Date, timestamp};
use super::names::MIDDLE_DOT;
use super::noise::{NameNoise, WrittenId, noisy_id, noisy_name};
use super::orgs::{Enterprise, org_identity};
use super::people::{
    Ethnicity, IdSpace, Person, TODAY, address, mobile_number, random_area, random_timestamp,
};
use super::rng::{Rng, Stream};
use super::write::{CsvSink, ParquetSink};
use super::{
    DIVORCE_RATE, GenError, MARRIAGE_PARTICIPATION, POPULATION_COVERAGE, POPULATION_DUPLICATE_RATE,
    REMARRIAGE_RATE, SOCIAL_INSURANCE_COVERAGE, SOCIAL_INSURANCE_DUPLICATE_RATE,
};
use crate::model::areas::Area;

pub(crate) const POPULATION_COLUMNS: &[&str] = &[
    "RYBH", "GMSFHM", "XM", "XB", "CSRQ", "MZ", "HJDZ", "LXDH", "GXSJ",
];
pub(crate) const MARRIAGE_HEADER: &[&str] = &[
    "登记编号",
    "身份证号",
    "姓名",
    "性别",
    "婚姻登记类型",
    "配偶身份证号",
    "配偶姓名",
    "登记日期",
    "登记机关",
    "更新时间",
];
pub(crate) const SOCIAL_INSURANCE_HEADER: &[&str] = &[
    "个人编号",
    "公民身份号码",
    "姓名",
    "参保状态",
    "险种",
    "参保单位统一社会信用代码",
    "参保单位名称",
    "累计缴费月数",
    "参保地行政区划",
    "更新时间",
];
pub(crate) const ENTERPRISE_COLUMNS: &[&str] = &[
    "TYSHXYDM",
    "QYMC",
    "FDDBR",
    "FDDBRZJHM",
    "DJZT",
    "ZCZB",
    "CLRQ",
    "ZS",
    "GXSJ",
];
pub(crate) const TRUTH_HEADER: &[&str] = &[
    "source",
    "record_id",
    "entity_id",
    "kind",
    "name_has_dot",
    "id_valid",
];

/// Names as the civil-affairs GBK export writes them (old spellings occur).
const MARRIAGE_NAMES: NameNoise = NameNoise {
    old_spelling: true,
    gbk: true,
};
/// Names as social insurance and the enterprise register write them.
const UTF8_NAMES: NameNoise = NameNoise {
    old_spelling: false,
    gbk: false,
};

/// Per-person record of what the sources wrote, to pick demo applicants.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Coverage {
    pub(crate) population: bool,
    pub(crate) marriage: bool,
    pub(crate) social_insurance: bool,
    /// Every marriage and social-insurance row wrote the clean ID.
    pub(crate) all_ids_clean: bool,
}

impl Coverage {
    fn new() -> Self {
        Coverage {
            population: false,
            marriage: false,
            social_insurance: false,
            all_ids_clean: true,
        }
    }

    pub(crate) fn applicant_ready(&self) -> bool {
        self.population && self.marriage && self.social_insurance && self.all_ids_clean
    }
}

/// All open outputs and row counters.
pub(crate) struct Outputs {
    pub(crate) population: ParquetSink,
    pub(crate) marriage: CsvSink,
    pub(crate) social_insurance: CsvSink,
    pub(crate) enterprises: ParquetSink,
    pub(crate) truth: CsvSink,
    pub(crate) population_rows: usize,
    pub(crate) marriage_rows: usize,
    pub(crate) social_insurance_rows: usize,
}

fn flag(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

impl Outputs {
    fn truth(
        &mut self,
        source: &str,
        record_id: &str,
        entity_id: &str,
        kind: &str,
        has_dot: bool,
        id_valid: bool,
    ) -> Result<(), GenError> {
        self.truth.push(&[
            source,
            record_id,
            entity_id,
            kind,
            flag(has_dot),
            flag(id_valid),
        ])
    }

    /// Everything the sources say about one chunk of persons.
    pub(crate) fn write_chunk(
        &mut self,
        seed: u64,
        people: &[Person],
        organisations: usize,
    ) -> Result<Vec<Coverage>, GenError> {
        let mut coverage = vec![Coverage::new(); people.len()];
        self.write_population(seed, people, &mut coverage)?;
        self.write_marriage(seed, people, &mut coverage)?;
        self.write_social_insurance(seed, people, organisations, &mut coverage)?;
        Ok(coverage)
    }

    fn write_population(
        &mut self,
        seed: u64,
        people: &[Person],
        coverage: &mut [Coverage],
    ) -> Result<(), GenError> {
        for (p, cov) in people.iter().zip(coverage.iter_mut()) {
            let mut rng = Rng::derive(seed, Stream::Population, p.index as u64);
            if !rng.chance(POPULATION_COVERAGE) {
                continue;
            }
            cov.population = true;
            let sex = if p.male { "1" } else { "2" };
            let birth = p.birth.compact();
            let updated = timestamp(p.updated.0, p.updated.1);
            self.population_row(p, sex, &birth, &p.address, &p.phone, &updated)?;
            if rng.chance(POPULATION_DUPLICATE_RATE) {
                // Same person registered again: another address, a later time.
                let area = if rng.chance(0.5) {
                    p.home
                } else {
                    random_area(&mut rng)
                };
                let moved = address(area, &mut rng);
                let phone = if rng.chance(0.5) {
                    p.phone.clone()
                } else {
                    mobile_number(&mut rng)
                };
                let later = timestamp(
                    rng.between(p.updated.0 + 1, TODAY.days()),
                    rng.below(86_400) as u32,
                );
                self.population_row(p, sex, &birth, &moved, &phone, &later)?;
            }
        }
        Ok(())
    }

    fn population_row(
        &mut self,
        p: &Person,
        sex: &str,
        birth: &str,
        address: &str,
        phone: &str,
        updated: &str,
    ) -> Result<(), GenError> {
        self.population_rows += 1;
        let record_id = format!("GA{:07}", self.population_rows);
        self.population.push(&[
            &record_id,
            &p.id,
            &p.name,
            sex,
            birth,
            p.ethnicity.label(),
            address,
            phone,
            updated,
        ])?;
        self.truth(
            "population",
            &record_id,
            &p.entity_id(),
            "person",
            p.has_dot,
            true,
        )
    }

    fn write_marriage(
        &mut self,
        seed: u64,
        people: &[Person],
        coverage: &mut [Coverage],
    ) -> Result<(), GenError> {
        for event in marriage_events(seed, people) {
            let (man, woman) = (&people[event.man], &people[event.woman]);
            for (party, spouse, k) in [(man, woman, event.man), (woman, man, event.woman)] {
                let written = self.marriage_row(seed, &event, party, spouse)?;
                let cov = &mut coverage[k];
                cov.marriage = true;
                cov.all_ids_clean &= written.text == party.id;
            }
        }
        Ok(())
    }

    fn marriage_row(
        &mut self,
        seed: u64,
        event: &MarriageEvent,
        party: &Person,
        spouse: &Person,
    ) -> Result<WrittenId, GenError> {
        self.marriage_rows += 1;
        let mut rng = Rng::derive(seed, Stream::MarriageRow, self.marriage_rows as u64);
        let (letter, kind) = if event.divorce {
            ("L", "离婚")
        } else {
            ("J", "结婚")
        };
        let record_id = format!(
            "{letter}{}-{}-{:07}",
            event.authority.code, event.date.year, self.marriage_rows
        );
        let id = noisy_id(party, &mut rng);
        let name = noisy_name(party, &mut rng, MARRIAGE_NAMES);
        let spouse_id = noisy_id(spouse, &mut rng);
        let spouse_name = noisy_name(spouse, &mut rng, MARRIAGE_NAMES);
        let date = match rng.below(10) {
            0..=4 => event.date.iso(),
            5..=7 => event.date.slashed(),
            _ => event.date.chinese(),
        };
        let authority = format!("{}民政局", area_title(event.authority));
        let updated = random_timestamp(&mut rng, event.date.max(Date::new(2012, 1, 1)), TODAY);
        self.marriage.push(&[
            &record_id,
            &id.text,
            &name,
            if party.male { "男" } else { "女" },
            kind,
            &spouse_id.text,
            &spouse_name,
            &date,
            &authority,
            &updated,
        ])?;
        self.truth(
            "marriage",
            &record_id,
            &party.entity_id(),
            "person",
            party.has_dot,
            id.valid,
        )?;
        Ok(id)
    }

    fn write_social_insurance(
        &mut self,
        seed: u64,
        people: &[Person],
        organisations: usize,
        coverage: &mut [Coverage],
    ) -> Result<(), GenError> {
        const SCHEMES: &[(&str, u64)] = &[
            ("企业职工基本养老保险", 50),
            ("城乡居民基本养老保险", 40),
            ("机关事业单位养老保险", 10),
        ];
        const STATUSES: &[(&str, u64)] = &[("参保缴费", 72), ("暂停缴费", 18), ("终止参保", 10)];
        for (p, cov) in people.iter().zip(coverage.iter_mut()) {
            let mut rng = Rng::derive(seed, Stream::SocialInsurance, p.index as u64);
            let age = p.age();
            if !(16..=70).contains(&age) || !rng.chance(SOCIAL_INSURANCE_COVERAGE) {
                continue;
            }
            cov.social_insurance = true;
            let records = if rng.chance(SOCIAL_INSURANCE_DUPLICATE_RATE) {
                2
            } else {
                1
            };
            let mut first_area: Option<&'static Area> = None;
            for _ in 0..records {
                let area = match first_area {
                    None if rng.chance(0.8) => p.home,
                    None => random_area(&mut rng),
                    Some(first) => {
                        let mut other = random_area(&mut rng);
                        for _ in 0..16 {
                            if other.code != first.code {
                                break;
                            }
                            other = random_area(&mut rng);
                        }
                        other
                    }
                };
                first_area.get_or_insert(area);
                let mut scheme = SCHEMES[rng.weighted(SCHEMES.iter().map(|s| s.1))].0;
                if organisations == 0 {
                    scheme = SCHEMES[1].0;
                }
                let (code, employer) = if scheme == SCHEMES[1].0 {
                    (String::new(), String::new())
                } else {
                    let org = org_identity(seed, rng.index(organisations));
                    (org.code, org.name)
                };
                let status = STATUSES[rng.weighted(STATUSES.iter().map(|s| s.1))].0;
                let months = rng.between(0, i64::from((age - 16) * 12).min(480));
                self.social_insurance_rows += 1;
                let record_id = format!("{}{:010}", &area.code[..4], self.social_insurance_rows);
                let id = noisy_id(p, &mut rng);
                let name = noisy_name(p, &mut rng, UTF8_NAMES);
                let updated = random_timestamp(&mut rng, Date::new(2018, 1, 1), TODAY);
                self.social_insurance.push(&[
                    &record_id,
                    &id.text,
                    &name,
                    status,
                    scheme,
                    &code,
                    &employer,
                    &months.to_string(),
                    area.code,
                    &updated,
                ])?;
                self.truth(
                    "social_insurance",
                    &record_id,
                    &p.entity_id(),
                    "person",
                    p.has_dot,
                    id.valid,
                )?;
                cov.all_ids_clean &= id.text == p.id;
            }
        }
        Ok(())
    }

    /// One enterprise register row; `clean_rep` writes the legal
    /// representative exactly as the registry has them (demo applicant).
    pub(crate) fn write_enterprise(
        &mut self,
        seed: u64,
        enterprise: &Enterprise,
        space: &IdSpace,
        clean_rep: bool,
    ) -> Result<(), GenError> {
        let rep = space.person(enterprise.rep);
        let mut rng = Rng::derive(
            seed,
            Stream::OrgRepresentative,
            enterprise.identity.index as u64,
        );
        let (rep_name, rep_id) = if clean_rep {
            (rep.name.clone(), rep.id.clone())
        } else {
            let id = noisy_id(&rep, &mut rng).text;
            (noisy_name(&rep, &mut rng, UTF8_NAMES), id)
        };
        let identity = &enterprise.identity;
        self.enterprises.push(&[
            &identity.code,
            &identity.name,
            &rep_name,
            &rep_id,
            enterprise.status,
            &enterprise.capital,
            &enterprise.founded.iso(),
            &enterprise.address,
            &enterprise.updated,
        ])?;
        self.truth(
            "enterprises",
            &identity.code,
            &identity.entity_id(),
            "organisation",
            identity.name.contains(MIDDLE_DOT),
            identity.code_valid,
        )
    }
}

/// "Prefecture + county" as in an authority's name (no prefecture for the
/// county-level cities directly under the region).
fn area_title(area: &Area) -> String {
    if area.prefecture == "自治区直辖县级行政区划" {
        area.county.to_string()
    } else {
        format!("{}{}", area.prefecture, area.county)
    }
}

/// One registration event between two persons of the chunk.
#[derive(Debug, Clone)]
struct MarriageEvent {
    man: usize,
    woman: usize,
    divorce: bool,
    date: Date,
    authority: &'static Area,
}

/// (ethnicity, birth day, position in chunk): the pairing sort key.
type Candidate = (Ethnicity, i64, usize);

/// Pair men and women: first within each ethnicity by age rank, then the
/// leftovers across groups by age rank. Returns (man, woman) positions.
fn pair(mut men: Vec<Candidate>, mut women: Vec<Candidate>) -> Vec<(usize, usize)> {
    men.sort_unstable();
    women.sort_unstable();
    let mut couples = Vec::new();
    let (mut left_men, mut left_women) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < men.len() || j < women.len() {
        let group = match (men.get(i), women.get(j)) {
            (Some(m), Some(w)) => m.0.min(w.0),
            (Some(m), None) => m.0,
            (None, Some(w)) => w.0,
            (None, None) => break,
        };
        let m_end = i + men[i..].iter().take_while(|c| c.0 == group).count();
        let w_end = j + women[j..].iter().take_while(|c| c.0 == group).count();
        let n = (m_end - i).min(w_end - j);
        couples.extend((0..n).map(|k| (men[i + k].2, women[j + k].2)));
        left_men.extend_from_slice(&men[i + n..m_end]);
        left_women.extend_from_slice(&women[j + n..w_end]);
        (i, j) = (m_end, w_end);
    }
    left_men.sort_unstable_by_key(|c| (c.1, c.2));
    left_women.sort_unstable_by_key(|c| (c.1, c.2));
    couples.extend(left_men.iter().zip(&left_women).map(|(m, w)| (m.2, w.2)));
    couples
}

/// Marriages, divorces and remarriages among one chunk's persons.
fn marriage_events(seed: u64, people: &[Person]) -> Vec<MarriageEvent> {
    let (mut men, mut women) = (Vec::new(), Vec::new());
    for (k, p) in people.iter().enumerate() {
        let mut rng = Rng::derive(seed, Stream::MarriageChoice, p.index as u64);
        let legal_age = if p.male { 22 } else { 20 };
        if p.age() >= legal_age && rng.chance(MARRIAGE_PARTICIPATION) {
            let c = (p.ethnicity, p.birth.days(), k);
            if p.male { men.push(c) } else { women.push(c) }
        }
    }
    let last = TODAY.days() - 1;
    let mut events = Vec::new();
    let (mut again_men, mut again_women) = (Vec::new(), Vec::new());
    let mut divorced_on = vec![0i64; people.len()];
    for (m, w) in pair(men, women) {
        let (man, woman) = (&people[m], &people[w]);
        let key = ((man.index as u64) << 32) ^ woman.index as u64;
        let mut rng = Rng::derive(seed, Stream::Couple, key);
        let earliest = man
            .birth
            .plus_years(22)
            .max(woman.birth.plus_years(20))
            .days();
        if earliest > last {
            continue;
        }
        let date = Date::from_days(earliest + rng.between(0, (last - earliest).min(8 * 365)));
        let authority = if rng.chance(0.5) {
            man.home
        } else {
            woman.home
        };
        events.push(MarriageEvent {
            man: m,
            woman: w,
            divorce: false,
            date,
            authority,
        });
        if rng.chance(DIVORCE_RATE) {
            let day = date.days() + rng.between(365, 20 * 365);
            if day <= last {
                events.push(MarriageEvent {
                    man: m,
                    woman: w,
                    divorce: true,
                    date: Date::from_days(day),
                    authority,
                });
                divorced_on[m] = day;
                divorced_on[w] = day;
                if rng.chance(REMARRIAGE_RATE) {
                    again_men.push((man.ethnicity, man.birth.days(), m));
                }
                if rng.chance(REMARRIAGE_RATE) {
                    again_women.push((woman.ethnicity, woman.birth.days(), w));
                }
            }
        }
    }
    for (m, w) in pair(again_men, again_women) {
        let key = ((people[m].index as u64) << 32) ^ people[w].index as u64 ^ (1 << 63);
        let mut rng = Rng::derive(seed, Stream::Couple, key);
        let day = divorced_on[m].max(divorced_on[w]) + rng.between(180, 5 * 365);
        if day <= last {
            let authority = if rng.chance(0.5) {
                people[m].home
            } else {
                people[w].home
            };
            events.push(MarriageEvent {
                man: m,
                woman: w,
                divorce: false,
                date: Date::from_days(day),
                authority,
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_prefers_same_group_and_pairs_each_person_once() {
        use Ethnicity::*;
        let men = vec![(Han, 10, 0), (Han, 20, 1), (Uyghur, 5, 2)];
        let women = vec![(Han, 12, 3), (Uyghur, 6, 4), (Uyghur, 30, 5)];
        let couples = pair(men, women);
        assert_eq!(couples.len(), 3);
        assert!(couples.contains(&(0, 3)));
        assert!(couples.contains(&(2, 4)));
        assert!(couples.contains(&(1, 5)));
    }
}
