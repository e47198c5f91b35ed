//! Enterprises as the market-regulation register holds them: unified social
//! credit codes (unique by construction), names, legal representatives drawn
//! from the generated persons, status, capital and dates.

use super::PRE_2016_CODE_RATE;
use super::calendar::Date;
use super::people::{IdSpace, TODAY, address, random_area, random_timestamp};
use super::rng::{Rng, Stream};
use crate::model::areas::Area;
use crate::model::ids::{CREDIT_CODE_ALPHABET, credit_code_check_char};

/// What other sources know about an enterprise: code and name.
#[derive(Debug, Clone)]
pub(crate) struct OrgIdentity {
    pub(crate) index: usize,
    pub(crate) code: String,
    /// Whether the code passes the GB 32100 check.
    pub(crate) code_valid: bool,
    pub(crate) name: String,
    pub(crate) area: &'static Area,
}

impl OrgIdentity {
    pub(crate) fn entity_id(&self) -> String {
        format!("O{:06}", self.index + 1)
    }
}

/// The full register entry.
#[derive(Debug, Clone)]
pub(crate) struct Enterprise {
    pub(crate) identity: OrgIdentity,
    /// Index of the legal representative among the persons.
    pub(crate) rep: usize,
    pub(crate) status: &'static str,
    pub(crate) capital: String,
    pub(crate) founded: Date,
    pub(crate) address: String,
    pub(crate) updated: String,
}

const TRADE_NAMES: &[&str] = &[
    "丝路",
    "天山",
    "昆仑",
    "金桥",
    "博格达",
    "雪莲",
    "胡杨",
    "西域",
    "绿洲",
    "天润",
    "瑞丰",
    "恒信",
    "华泰",
    "鑫源",
    "宏达",
    "博远",
    "汇通",
    "嘉禾",
    "众和",
    "金穗",
    "阳光",
    "远方",
    "同心",
    "新丝路",
    "帕米尔",
    "塔里木",
    "阿尔泰",
    "伊力",
    "石榴籽",
    "葡萄沟",
    "天马",
    "大漠",
    "金沙",
    "银河",
    "丰源",
    "祥和",
    "和顺",
    "聚鑫",
    "盛达",
    "润泽",
    "美丽",
    "康源",
    "富民",
    "长安",
    "亚欧",
    "金丝带",
    "雪峰",
    "玉龙",
    "驼铃",
    "沙棘",
    "红枣",
    "果香",
    "白杨",
    "天池",
    "喀拉峻",
    "那拉提",
    "赛里木",
    "金阳",
];
const INDUSTRIES: &[&str] = &[
    "商贸",
    "农业科技",
    "建筑工程",
    "物流",
    "餐饮管理",
    "纺织",
    "农牧业",
    "新能源",
    "信息技术",
    "旅游开发",
    "果业",
    "棉业",
    "矿业",
    "汽车服务",
    "房地产开发",
    "电子商务",
    "食品",
    "乳业",
    "文化传媒",
    "医药",
    "环保科技",
    "机械设备",
    "劳务服务",
    "装饰工程",
];
const STATUSES: &[(&str, u64)] = &[("存续", 55), ("在业", 25), ("吊销", 8), ("注销", 12)];
const CAPITALS_WAN: &[u64] = &[
    3, 10, 30, 50, 100, 100, 200, 300, 500, 500, 1000, 2000, 5000,
];

/// 31^7: the number of distinct 7-character tails after `MA`.
const TAIL_SPACE: u64 = 27_512_614_111;

/// Code and name of enterprise `index`. Enterprise 0 always has a valid
/// code (it may be the demo applicant's company).
pub(crate) fn org_identity(seed: u64, index: usize) -> OrgIdentity {
    let mut rng = Rng::derive(seed, Stream::OrgIdentity, index as u64);
    let area = random_area(&mut rng);
    let pre_2016 = index != 0 && rng.chance(PRE_2016_CODE_RATE);
    let org_code = if pre_2016 {
        old_organisation_code(seed, index)
    } else {
        // `MA` + 7 characters of a bijective image of the index: unique.
        let offset = seed % TAIL_SPACE;
        let mut x =
            ((index as u128 * 1_000_003 + u128::from(offset)) % u128::from(TAIL_SPACE)) as u64;
        let mut tail = [b'0'; 7];
        for slot in tail.iter_mut().rev() {
            *slot = CREDIT_CODE_ALPHABET[(x % 31) as usize];
            x /= 31;
        }
        format!("MA{}", String::from_utf8_lossy(&tail))
    };
    let first17 = format!("91{}{org_code}", area.code);
    let check = credit_code_check_char(first17.as_bytes())
        .expect("first17 is built from the credit-code alphabet");
    let written = if pre_2016 {
        // A pre-2016 code whose check character does not fit today's rule.
        let right = CREDIT_CODE_ALPHABET
            .iter()
            .position(|&c| c == check)
            .unwrap_or(0);
        CREDIT_CODE_ALPHABET[(right + 1 + rng.index(30)) % 31]
    } else {
        check
    };
    let mut code = first17;
    code.push(char::from(written));
    let prefix = if rng.chance(0.3) {
        "新疆".to_string()
    } else if area.county.ends_with('区') {
        area.prefecture.trim_end_matches('市').to_string()
    } else {
        area.county.to_string()
    };
    let suffix = match rng.below(10) {
        0..=6 => "有限公司",
        7 | 8 => "有限责任公司",
        _ => "股份有限公司",
    };
    let name = format!(
        "{prefix}{}{}{suffix}",
        rng.pick(TRADE_NAMES),
        rng.pick(INDUSTRIES)
    );
    OrgIdentity {
        index,
        code,
        code_valid: !pre_2016,
        name,
        area,
    }
}

/// A GB 11714 organisation code (8 digits + check): unique per index.
fn old_organisation_code(seed: u64, index: usize) -> String {
    let body = (index as u64 * 7_654_321 + seed % 100_000_000) % 100_000_000;
    let digits = format!("{body:08}");
    const WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = digits
        .bytes()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let check = match 11 - sum % 11 {
        10 => 'X',
        11 => '0',
        c => char::from_digit(c, 10).unwrap_or('0'),
    };
    format!("{digits}{check}")
}

/// The full register entry of enterprise `index`; `rep_override` names the
/// legal representative (the demo applicant) instead of drawing one.
pub(crate) fn enterprise(
    seed: u64,
    index: usize,
    space: &IdSpace,
    persons: usize,
    rep_override: Option<usize>,
) -> Enterprise {
    let identity = org_identity(seed, index);
    let mut rng = Rng::derive(seed, Stream::OrgDetail, index as u64);
    let last_year = if identity.code_valid {
        TODAY.year
    } else {
        2015
    };
    // Draw a representative old enough to have founded the company in time.
    let mut rep = rep_override.unwrap_or(0);
    let mut first_year = 1990;
    for _ in 0..64 {
        let candidate = rep_override.unwrap_or_else(|| rng.index(persons));
        let birth_year = space.person(candidate).birth.year;
        rep = candidate;
        first_year = (birth_year + 20).max(if identity.code_valid { 2000 } else { 1990 });
        if first_year <= last_year || rep_override.is_some() {
            break;
        }
    }
    let first = Date::new(first_year.min(last_year), 1, 1).days();
    let last = if last_year == TODAY.year {
        TODAY.days()
    } else {
        Date::new(last_year, 12, 31).days()
    };
    let founded = Date::from_days(rng.between(first, last));
    let status = STATUSES[rng.weighted(STATUSES.iter().map(|s| s.1))].0;
    let capital = if rng.chance(0.8) {
        format!("{}.00", rng.pick(CAPITALS_WAN))
    } else {
        let cents = rng.between(100, 1_000_000);
        format!("{}.{:02}", cents / 100, cents % 100)
    };
    let address = address(identity.area, &mut rng);
    let updated = random_timestamp(&mut rng, founded.max(Date::new(2016, 1, 1)), TODAY);
    Enterprise {
        identity,
        rep,
        status,
        capital,
        founded,
        address,
        updated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_mostly_valid() {
        let mut seen = std::collections::HashSet::new();
        let mut invalid = 0;
        for i in 0..20_000 {
            let o = org_identity(5, i);
            assert_eq!(o.code.len(), 18);
            let check = credit_code_check_char(&o.code.as_bytes()[..17]);
            assert_eq!(check == Some(o.code.as_bytes()[17]), o.code_valid);
            invalid += usize::from(!o.code_valid);
            assert!(seen.insert(o.code));
        }
        assert!((100..=300).contains(&invalid), "{invalid}");
        assert!(org_identity(5, 0).code_valid);
    }

    #[test]
    fn old_organisation_codes_carry_a_gb11714_check() {
        for i in [1, 2, 77, 9999] {
            let code = old_organisation_code(3, i);
            assert_eq!(code.len(), 9);
            assert!(code[..8].bytes().all(|b| b.is_ascii_digit()));
        }
        assert_ne!(old_organisation_code(3, 1), old_organisation_code(3, 2));
    }
}
