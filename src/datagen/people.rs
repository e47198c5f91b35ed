//! Persons: a collision-free ID-number space over `AREAS`, ethnicity by
//! area, and the attributes the household registry holds. A person is a pure
//! function of (seed, index), so any stage can regenerate one on demand
//! instead of keeping every person in memory.

use super::calendar::{Date, timestamp};
use super::names::{MIDDLE_DOT, person_name};
use super::rng::{Permutation, Rng, Stream};
use crate::model::areas::{AREAS, Area};
use crate::model::ids::id_number_check_char;

/// First possible birth date.
pub(crate) const FIRST_BIRTH: Date = Date::new(1940, 1, 1);
/// Last possible birth date.
pub(crate) const LAST_BIRTH: Date = Date::new(2010, 12, 31);
/// "Today" for the generated world: ages, registration and update times are
/// relative to this date, never to the wall clock (determinism).
pub(crate) const TODAY: Date = Date::new(2025, 6, 30);

/// Ethnic groups the generator uses (民族).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Ethnicity {
    Han,
    Uyghur,
    Kazakh,
    Hui,
    Kyrgyz,
    Mongol,
}

impl Ethnicity {
    /// The registry's `MZ` value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Ethnicity::Han => "汉族",
            Ethnicity::Uyghur => "维吾尔族",
            Ethnicity::Kazakh => "哈萨克族",
            Ethnicity::Hui => "回族",
            Ethnicity::Kyrgyz => "柯尔克孜族",
            Ethnicity::Mongol => "蒙古族",
        }
    }
}

/// Relative population of a county (1..=19); unknown codes get 4. Each unit
/// buys 50 ID sequence numbers per birth day, so the weight is also the
/// area's share of persons.
fn area_weight(code: &str) -> u64 {
    match code {
        "650102" => 12,
        "650103" | "650104" | "653101" => 14,
        "650105" | "652301" => 8,
        "650106" | "650109" | "653121" | "653122" | "653201" => 7,
        "650107" | "650121" | "650204" => 1,
        "650202" | "652823" | "654004" | "654321" => 2,
        "650203" | "650402" | "653221" | "654003" => 6,
        "650421" | "652701" | "652922" | "652924" | "653001" | "653226" => 5,
        "650502" | "654002" | "659001" => 10,
        "652302" | "654201" => 3,
        "652801" => 12,
        "652901" => 11,
        "653125" => 18,
        "654021" => 8,
        "654202" | "654301" | "659002" | "652323" => 4,
        _ => 4,
    }
}

type Mix = &'static [(Ethnicity, u64)];

/// Ethnic composition (percent) by prefecture, from the area code's first
/// four digits: the south (Kashgar, Hotan, Aksu, Kizilsu) mostly Uyghur and
/// Kyrgyz in Kizilsu; the north (Ili, Tacheng, Altay) many Kazakh; Ürümqi,
/// Changji, Karamay and Shihezi mostly Han; Hui everywhere.
fn ethnic_mix(code: &str) -> Mix {
    use Ethnicity::*;
    match code.get(..4).unwrap_or("") {
        "6501" => &[
            (Han, 72),
            (Uyghur, 12),
            (Hui, 9),
            (Kazakh, 5),
            (Mongol, 1),
            (Kyrgyz, 1),
        ],
        "6502" => &[(Han, 77), (Uyghur, 13), (Kazakh, 5), (Hui, 3), (Mongol, 2)],
        "6504" => &[(Uyghur, 70), (Han, 22), (Hui, 7), (Kazakh, 1)],
        "6505" => &[(Han, 67), (Uyghur, 19), (Kazakh, 9), (Hui, 5)],
        "6523" => &[(Han, 74), (Hui, 11), (Kazakh, 10), (Uyghur, 4), (Mongol, 1)],
        "6527" => &[(Han, 66), (Uyghur, 13), (Kazakh, 9), (Mongol, 6), (Hui, 6)],
        "6528" => &[(Han, 57), (Uyghur, 33), (Hui, 5), (Mongol, 4), (Kazakh, 1)],
        "6529" => &[(Uyghur, 80), (Han, 18), (Hui, 2)],
        "6530" => &[(Uyghur, 64), (Kyrgyz, 28), (Han, 7), (Hui, 1)],
        "6531" => &[(Uyghur, 92), (Han, 7), (Hui, 1)],
        "6532" => &[(Uyghur, 96), (Han, 3), (Hui, 1)],
        "6540" => &[
            (Han, 40),
            (Kazakh, 27),
            (Uyghur, 18),
            (Hui, 10),
            (Mongol, 3),
            (Kyrgyz, 2),
        ],
        "6542" => &[(Han, 56), (Kazakh, 27), (Hui, 7), (Uyghur, 5), (Mongol, 5)],
        "6543" => &[(Kazakh, 52), (Han, 40), (Hui, 4), (Uyghur, 2), (Mongol, 2)],
        "6590" => &[(Han, 92), (Uyghur, 4), (Hui, 3), (Kazakh, 1)],
        _ => &[(Han, 70), (Uyghur, 20), (Hui, 6), (Kazakh, 4)],
    }
}

/// An area chosen in proportion to its population weight.
pub(crate) fn random_area(rng: &mut Rng) -> &'static Area {
    &AREAS[rng.weighted(AREAS.iter().map(|a| area_weight(a.code)))]
}

struct AreaBlock {
    area: &'static Area,
    /// First slot of this area within one birth day.
    start: u64,
    /// Sequence numbers this area uses per birth day (1..=seqs).
    seqs: u64,
}

/// The space of ID numbers: every (birth day, area, sequence number) slot,
/// permuted by a keyed bijection so person `i` gets slot `perm(i)`. Distinct
/// persons therefore always get distinct ID numbers.
pub(crate) struct IdSpace {
    seed: u64,
    blocks: Vec<AreaBlock>,
    per_day: u64,
    days: u64,
    permutation: Permutation,
}

/// A generated person, as the household registry knows them.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    pub(crate) index: usize,
    /// Clean 18-character ID number.
    pub(crate) id: String,
    pub(crate) birth: Date,
    pub(crate) male: bool,
    /// Household area (usually the ID's area; people move).
    pub(crate) home: &'static Area,
    pub(crate) ethnicity: Ethnicity,
    /// Official form of the name (U+00B7 for transliterated names).
    pub(crate) name: String,
    pub(crate) has_dot: bool,
    /// Mobile number, or empty.
    pub(crate) phone: String,
    /// Household address.
    pub(crate) address: String,
    /// Registry update time: day number and second of the day.
    pub(crate) updated: (i64, u32),
}

impl Person {
    /// Entity id in the ground truth.
    pub(crate) fn entity_id(&self) -> String {
        format!("P{:07}", self.index + 1)
    }

    /// Age in whole years on `TODAY`.
    pub(crate) fn age(&self) -> i32 {
        let mut age = TODAY.year - self.birth.year;
        if (TODAY.month, TODAY.day) < (self.birth.month, self.birth.day) {
            age -= 1;
        }
        age
    }
}

/// Share of persons whose household area differs from their ID's area.
const MOVED_RATE: f64 = 0.15;
/// Share of registry records without a mobile number.
const PHONE_MISSING_RATE: f64 = 0.08;

impl IdSpace {
    pub(crate) fn new(seed: u64) -> Self {
        let mut blocks = Vec::with_capacity(AREAS.len());
        let mut start = 0;
        for area in AREAS {
            let seqs = 50 * area_weight(area.code).clamp(1, 19);
            blocks.push(AreaBlock { area, start, seqs });
            start += seqs;
        }
        let days = (LAST_BIRTH.days() - FIRST_BIRTH.days() + 1) as u64;
        let capacity = start * days;
        IdSpace {
            seed,
            blocks,
            per_day: start,
            days,
            permutation: Permutation::new(seed, capacity),
        }
    }

    /// How many distinct persons the space holds.
    pub(crate) fn capacity(&self) -> u64 {
        self.per_day * self.days
    }

    /// Person `index` (must be below the capacity).
    pub(crate) fn person(&self, index: usize) -> Person {
        let slot = self.permutation.apply(index as u64);
        let day = slot / self.per_day;
        let within = slot % self.per_day;
        let b = self
            .blocks
            .partition_point(|b| b.start + b.seqs <= within)
            .min(self.blocks.len() - 1);
        let block = &self.blocks[b];
        let seq = within - block.start + 1;
        let birth = Date::from_days(FIRST_BIRTH.days() + day as i64);
        let male = seq % 2 == 1;
        let first17 = format!("{}{}{:03}", block.area.code, birth.compact(), seq);
        let check = id_number_check_char(first17.as_bytes())
            .expect("first17 is 6 area digits + 8 date digits + 3 sequence digits");
        let mut id = first17;
        id.push(char::from(check));

        let mut rng = Rng::derive(self.seed, Stream::Person, index as u64);
        let mix = ethnic_mix(block.area.code);
        let ethnicity = mix[rng.weighted(mix.iter().map(|m| m.1))].0;
        let name = person_name(ethnicity, male, &mut rng);
        let home = if rng.chance(MOVED_RATE) {
            random_area(&mut rng)
        } else {
            block.area
        };
        let phone = if rng.chance(PHONE_MISSING_RATE) {
            String::new()
        } else {
            mobile_number(&mut rng)
        };
        let address = address(home, &mut rng);
        // At least 30 days before TODAY, so a later duplicate record fits.
        let updated = (
            rng.between(Date::new(2016, 1, 1).days(), TODAY.days() - 30),
            rng.below(86_400) as u32,
        );
        Person {
            index,
            has_dot: name.contains(MIDDLE_DOT),
            id,
            birth,
            male,
            home,
            ethnicity,
            name,
            phone,
            address,
            updated,
        }
    }
}

/// A timestamp uniformly between two dates (inclusive).
pub(crate) fn random_timestamp(rng: &mut Rng, from: Date, to: Date) -> String {
    let day = rng.between(from.days(), to.days());
    timestamp(day, rng.below(86_400) as u32)
}

/// An 11-digit mainland mobile number.
pub(crate) fn mobile_number(rng: &mut Rng) -> String {
    const PREFIXES: &[&str] = &[
        "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "155",
        "156", "157", "158", "159", "177", "180", "181", "182", "183", "186", "187", "188", "189",
        "199",
    ];
    format!("{}{:08}", rng.pick(PREFIXES), rng.below(100_000_000))
}

const STREETS: &[&str] = &[
    "人民路",
    "解放路",
    "团结路",
    "光明路",
    "友好路",
    "新华路",
    "建设路",
    "文化路",
    "胜利路",
    "迎宾路",
    "幸福路",
    "和平路",
    "北京路",
    "天津路",
    "长江路",
    "黄河路",
    "西域大道",
    "丝绸之路大道",
    "天山路",
    "昆仑路",
    "南湖路",
    "青年路",
    "健康路",
    "前进路",
    "东风路",
    "五一路",
    "红旗路",
    "振兴路",
];
const TOWNS: &[&str] = &[
    "团结",
    "幸福",
    "光明",
    "红旗",
    "胜利",
    "新华",
    "阿克",
    "托万",
    "英阿瓦提",
    "巴格",
    "吐格曼",
    "塔什",
    "阿热勒",
    "喀拉苏",
    "恰尔巴格",
    "古勒巴格",
];

/// A household or business address in `area`: region + prefecture + county
/// + street and number (or township, village and group in rural counties).
pub(crate) fn address(area: &Area, rng: &mut Rng) -> String {
    let mut s = String::from("新疆维吾尔自治区");
    if area.prefecture != "自治区直辖县级行政区划" {
        s.push_str(area.prefecture);
    }
    s.push_str(area.county);
    if area.county.ends_with('县') && rng.chance(0.5) {
        let kind = if rng.chance(0.6) { "乡" } else { "镇" };
        s.push_str(&format!(
            "{}{kind}{}村{}组{}号",
            rng.pick(TOWNS),
            rng.between(1, 24),
            rng.between(1, 9),
            rng.between(1, 120)
        ));
    } else {
        s.push_str(&format!("{}{}号", rng.pick(STREETS), rng.between(1, 899)));
        if rng.chance(0.6) {
            s.push_str(&format!(
                "{}栋{}单元{}室",
                rng.between(1, 40),
                rng.between(1, 6),
                rng.between(1, 18) * 100 + rng.between(1, 4)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persons_have_valid_unique_ids_matching_sex_and_birth() {
        let space = IdSpace::new(9);
        let mut ids = std::collections::HashSet::new();
        for i in 0..5000 {
            let p = space.person(i);
            let check = id_number_check_char(&p.id.as_bytes()[..17]);
            assert_eq!(check, Some(p.id.as_bytes()[17]));
            assert_eq!(&p.id[6..14], p.birth.compact());
            assert_eq!((p.id.as_bytes()[16] - b'0') % 2 == 1, p.male);
            assert!(p.birth >= FIRST_BIRTH && p.birth <= LAST_BIRTH);
            assert!(AREAS.iter().any(|a| a.code == &p.id[..6]));
            assert!(ids.insert(p.id));
        }
    }

    #[test]
    fn kashgar_is_mostly_uyghur_and_urumqi_mostly_han() {
        let share = |code: &str, e: Ethnicity| {
            let mix = ethnic_mix(code);
            let total: u64 = mix.iter().map(|m| m.1).sum();
            mix.iter().filter(|m| m.0 == e).map(|m| m.1).sum::<u64>() * 100 / total
        };
        assert!(share("653101", Ethnicity::Uyghur) > 80);
        assert!(share("650102", Ethnicity::Han) > 60);
        assert!(share("653001", Ethnicity::Kyrgyz) > 20);
    }
}
