//! Personal names: Han and Hui names, Uyghur / Kazakh / Kyrgyz names in the
//! official "given·father" form with U+00B7, Mongol names, and the spelling
//! and homophone tables the noise stage uses.

use super::people::Ethnicity;
use super::rng::Rng;

/// The official separator in transliterated minority names (GB 18030 A1A4).
pub(crate) const MIDDLE_DOT: char = '\u{00B7}';

/// Common Han surnames, most frequent first.
const HAN_SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "高", "林", "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹", "彭", "曾",
    "肖", "田", "董", "袁", "潘", "于", "蒋", "蔡", "余", "杜", "叶", "程", "苏", "魏", "吕", "丁",
    "任", "沈", "姚", "卢", "姜", "崔", "钟", "谭", "陆", "汪", "范", "金", "石", "廖", "贾", "夏",
    "韦", "付", "方", "白", "邹", "孟", "熊", "秦", "邱", "江", "尹", "薛", "闫", "段", "雷", "侯",
    "龙", "史", "陶", "黎", "贺", "顾", "毛", "郝", "龚", "邵", "万", "钱", "严", "武", "戴",
    "欧阳",
];

/// Surnames common among Hui families, most frequent first.
const HUI_SURNAMES: &[&str] = &[
    "马", "杨", "李", "王", "白", "丁", "海", "韩", "金", "周", "冶", "穆", "沙", "哈", "纳", "张",
    "刘", "苏", "锁", "妥", "喇", "米",
];

const HAN_MALE_GIVEN: &[&str] = &[
    "伟", "明", "军", "强", "磊", "涛", "斌", "勇", "刚", "辉", "鹏", "峰", "杰", "建", "志", "文",
    "海", "平", "国", "华", "东", "新", "波", "宁", "超", "亮", "成", "林", "浩", "宇", "俊", "龙",
    "飞", "江", "疆", "振", "德", "庆", "春", "晓",
];

const HAN_FEMALE_GIVEN: &[&str] = &[
    "丽", "芳", "静", "敏", "燕", "艳", "霞", "娟", "红", "玲", "婷", "欣", "梅", "兰", "英", "秀",
    "玉", "凤", "萍", "雪", "琳", "洁", "慧", "琴", "莉", "月", "佳", "颖", "晶", "春", "晓", "华",
];

/// Uyghur male given names, in the spellings found in registry data (both
/// pre- and post-DB65/T 2189-2005 forms occur among living people).
const UYGHUR_MALE: &[&str] = &[
    "买买提",
    "买买提明",
    "买买提江",
    "麦麦提",
    "麦麦提依明",
    "艾力",
    "艾合买提",
    "阿不都热合曼",
    "阿不都拉",
    "阿不都外力",
    "阿不都热西提",
    "阿卜都克尤木",
    "吐尔逊",
    "吐尔洪",
    "图尔荪",
    "肉孜",
    "肉孜买买提",
    "若孜",
    "艾买提",
    "艾尔肯",
    "艾山",
    "艾则孜",
    "阿里木",
    "阿布来提",
    "巴拉提",
    "迪力夏提",
    "尼加提",
    "努尔买买提",
    "帕尔哈提",
    "热合曼",
    "热西提",
    "如则",
    "赛买提",
    "塔依尔",
    "吐尔地",
    "托合提",
    "外力",
    "吾买尔",
    "伊力哈木",
    "依明",
    "玉素甫",
    "玉苏普",
    "亚森",
    "阿不力孜",
    "库尔班",
    "麦合木提",
    "米吉提",
    "木合塔尔",
    "努尔艾力",
    "斯迪克",
    "卡德尔",
    "克力木",
    "艾克拜尔",
    "阿迪力",
];

const UYGHUR_FEMALE: &[&str] = &[
    "热依拉",
    "古丽米热",
    "阿依古丽",
    "努尔",
    "迪丽努尔",
    "帕提古丽",
    "阿依努尔",
    "古丽娜尔",
    "古丽巴哈尔",
    "古再丽努尔",
    "热孜万古丽",
    "麦尔哈巴",
    "米热古丽",
    "努尔古丽",
    "帕孜来提",
    "热娜",
    "热比古丽",
    "吐尔逊古丽",
    "祖力胡玛尔",
    "祖丽皮亚",
    "阿孜古丽",
    "布阿依谢姆",
    "海丽其汗",
    "古丽扎尔",
    "玛依拉",
    "米娜瓦尔",
    "努尔比亚",
    "排孜丽亚",
    "茹仙古丽",
    "再努尔",
    "佐热古丽",
    "阿尔祖古丽",
    "迪娜",
    "古丽皮亚",
    "美合日班",
    "阿米娜",
    "汗克孜",
    "肉孜古丽",
];

const KAZAKH_MALE: &[&str] = &[
    "叶尔兰",
    "努尔兰",
    "哈力木",
    "别克",
    "叶尔波力",
    "达吾列提",
    "加尔肯",
    "吾拉尔",
    "哈那提",
    "努尔波拉提",
    "阿合买提",
    "阿斯卡尔",
    "巴合提别克",
    "波拉提",
    "达尼亚尔",
    "叶尔江",
    "叶尔肯",
    "哈德尔",
    "哈布力",
    "加肯",
    "卡那提",
    "吾买尔别克",
    "马合沙提",
    "努尔江",
    "赛力克",
    "塔布斯",
    "铁列克",
    "托列根",
    "吾拉孜别克",
    "叶尔克西",
    "哈米提",
    "胡安德克",
    "杰恩斯",
    "库尔曼",
    "马木尔",
    "穆拉提",
    "那比",
    "沙力木",
    "达列力汗",
    "阿依达尔",
    "木拉提别克",
    "黑扎提",
    "居马汗",
];

const KAZAKH_FEMALE: &[&str] = &[
    "阿依达娜",
    "古丽娜孜",
    "阿依古丽",
    "加娜尔",
    "巴合提古丽",
    "阿丽玛",
    "古丽巴依",
    "阿依努尔",
    "玛丽亚",
    "卡丽玛",
    "沙吾列",
    "阿克努尔",
    "古丽沙拉",
    "达娜",
    "阿依夏",
    "哈丽娜",
    "加米拉",
    "库拉依",
    "玛依努尔",
    "努尔古丽",
    "萨尔坦娜",
    "阿勒腾",
    "阿依江",
    "吉别克",
    "赛丽",
    "热依汗",
    "阿拉腾古丽",
    "阿尔达克",
    "玛尔江",
    "胡玛尔",
    "古丽扎达",
    "娜孜古丽",
];

/// Kyrgyz-specific given names; Kyrgyz names are also drawn from the shared
/// Turkic (Kazakh) lists.
const KYRGYZ_MALE: &[&str] = &[
    "吐尔地别克",
    "玛纳斯",
    "阿地里",
    "买买提居马",
    "居素甫",
    "阿不都卡德尔",
    "托合托逊",
    "苏云",
    "吐尔干",
    "阿曼吐尔",
    "克亚斯",
    "阿依提别克",
    "巴克特",
    "艾山江",
    "热孜克",
    "玉山",
    "卡斯木",
    "托合提别克",
    "库尔曼别克",
    "吐尔逊别克",
];

const KYRGYZ_FEMALE: &[&str] = &[
    "阿依吐鲁克",
    "古丽加玛丽",
    "热依汗古丽",
    "阿依吉勒",
    "玛依拉古丽",
    "布茹力",
    "阿依沙",
    "加米拉汗",
    "吐尔逊阿依",
    "古丽孜巴",
];

const MONGOL_MALE: &[&str] = &[
    "巴特尔",
    "巴音",
    "乌力吉",
    "那顺",
    "孟克",
    "额尔敦",
    "吉日格勒",
    "布和",
    "朝鲁",
    "达来",
    "苏和",
    "宝音",
    "巴图",
    "阿拉坦",
    "额尔德尼",
    "其木德",
];

const MONGOL_FEMALE: &[&str] = &[
    "其其格",
    "萨仁",
    "乌兰",
    "托娅",
    "斯琴",
    "图雅",
    "高娃",
    "娜仁",
    "其米格",
    "阿拉坦其其格",
    "乌云",
    "格日勒",
];

/// Old and new transliteration spellings (DB65/T 2189-2005): old first.
pub(crate) const SPELLING_PAIRS: &[(&str, &str)] = &[
    ("买买提", "麦麦提"),
    ("阿不都", "阿卜都"),
    ("肉孜", "若孜"),
    ("吐尔逊", "图尔荪"),
];

/// Homophone substitutions for Han given-name characters (same pinyin
/// syllable), as a clerk typing with a pinyin IME mis-picks them.
const HOMOPHONES: &[(char, char)] = &[
    ('伟', '玮'),
    ('明', '铭'),
    ('军', '君'),
    ('强', '蔷'),
    ('磊', '垒'),
    ('涛', '滔'),
    ('斌', '彬'),
    ('勇', '永'),
    ('刚', '钢'),
    ('辉', '晖'),
    ('鹏', '朋'),
    ('峰', '锋'),
    ('杰', '洁'),
    ('建', '健'),
    ('志', '智'),
    ('文', '雯'),
    ('平', '萍'),
    ('华', '桦'),
    ('东', '冬'),
    ('新', '欣'),
    ('波', '博'),
    ('超', '潮'),
    ('成', '诚'),
    ('林', '琳'),
    ('浩', '皓'),
    ('宇', '雨'),
    ('俊', '骏'),
    ('龙', '隆'),
    ('飞', '菲'),
    ('江', '疆'),
    ('疆', '江'),
    ('振', '震'),
    ('德', '得'),
    ('庆', '青'),
    ('春', '椿'),
    ('晓', '小'),
    ('丽', '莉'),
    ('芳', '方'),
    ('静', '婧'),
    ('敏', '民'),
    ('燕', '艳'),
    ('艳', '燕'),
    ('霞', '侠'),
    ('娟', '鹃'),
    ('红', '宏'),
    ('玲', '铃'),
    ('婷', '亭'),
    ('欣', '馨'),
    ('梅', '玫'),
    ('兰', '岚'),
    ('英', '莹'),
    ('秀', '绣'),
    ('玉', '钰'),
    ('凤', '风'),
    ('萍', '平'),
    ('雪', '薛'),
    ('琳', '林'),
    ('洁', '杰'),
    ('慧', '惠'),
    ('琴', '勤'),
    ('莉', '丽'),
    ('月', '悦'),
    ('佳', '家'),
    ('颖', '影'),
    ('晶', '精'),
    ('国', '果'),
    ('宁', '凝'),
    ('亮', '靓'),
    ('海', '亥'),
];

fn given_lists(
    ethnicity: Ethnicity,
    male: bool,
) -> (&'static [&'static str], &'static [&'static str]) {
    match (ethnicity, male) {
        (Ethnicity::Uyghur, true) => (UYGHUR_MALE, UYGHUR_MALE),
        (Ethnicity::Uyghur, false) => (UYGHUR_FEMALE, UYGHUR_FEMALE),
        (Ethnicity::Kazakh, true) => (KAZAKH_MALE, KAZAKH_MALE),
        (Ethnicity::Kazakh, false) => (KAZAKH_FEMALE, KAZAKH_FEMALE),
        (Ethnicity::Kyrgyz, true) => (KYRGYZ_MALE, KAZAKH_MALE),
        (Ethnicity::Kyrgyz, false) => (KYRGYZ_FEMALE, KAZAKH_FEMALE),
        (Ethnicity::Mongol, true) => (MONGOL_MALE, MONGOL_MALE),
        (Ethnicity::Mongol, false) => (MONGOL_FEMALE, MONGOL_FEMALE),
        (Ethnicity::Han | Ethnicity::Hui, true) => (HAN_MALE_GIVEN, HAN_MALE_GIVEN),
        (Ethnicity::Han | Ethnicity::Hui, false) => (HAN_FEMALE_GIVEN, HAN_FEMALE_GIVEN),
    }
}

/// A Turkic given name: half from the group's own list, half from the
/// shared list (the same list for Uyghur and Kazakh).
fn turkic_given(ethnicity: Ethnicity, male: bool, rng: &mut Rng) -> &'static str {
    let (own, shared) = given_lists(ethnicity, male);
    if rng.chance(0.5) {
        rng.pick::<&str>(own)
    } else {
        rng.pick::<&str>(shared)
    }
}

/// The official (registry) form of a new person's name.
pub(crate) fn person_name(ethnicity: Ethnicity, male: bool, rng: &mut Rng) -> String {
    match ethnicity {
        Ethnicity::Han | Ethnicity::Hui => {
            let surnames = if ethnicity == Ethnicity::Hui {
                HUI_SURNAMES
            } else {
                HAN_SURNAMES
            };
            let (given, _) = given_lists(ethnicity, male);
            let mut name = String::from(*rng.pick_common(surnames));
            name.push_str(rng.pick::<&str>(given));
            if rng.chance(0.7) {
                name.push_str(rng.pick::<&str>(given));
            }
            name
        }
        Ethnicity::Uyghur | Ethnicity::Kazakh | Ethnicity::Kyrgyz => {
            let given = turkic_given(ethnicity, male, rng);
            let father = turkic_given(ethnicity, true, rng);
            format!("{given}{MIDDLE_DOT}{father}")
        }
        Ethnicity::Mongol => {
            let (given, _) = given_lists(ethnicity, male);
            String::from(*rng.pick(given))
        }
    }
}

/// The name with every transliteration spelling swapped to its other form
/// (old → new and new → old); unchanged when it contains none.
pub(crate) fn swap_spelling(name: &str) -> String {
    let mut out = name.to_string();
    for &(old, new) in SPELLING_PAIRS {
        if out.contains(old) {
            out = out.replace(old, new);
        } else if out.contains(new) {
            out = out.replace(new, old);
        }
    }
    out
}

/// The name with one given-name character replaced by a homophone; the
/// surname (first character) is kept. Unchanged when no character has one.
pub(crate) fn homophone_typo(name: &str, rng: &mut Rng) -> String {
    let chars: Vec<char> = name.chars().collect();
    let candidates: Vec<usize> = (1..chars.len())
        .filter(|&i| HOMOPHONES.iter().any(|&(a, _)| a == chars[i]))
        .collect();
    if candidates.is_empty() {
        return name.to_string();
    }
    let at = *rng.pick(&candidates);
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if i == at {
                HOMOPHONES
                    .iter()
                    .find(|&&(a, _)| a == c)
                    .map_or(c, |&(_, b)| b)
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) fn all_name_parts() -> Vec<&'static str> {
    let mut all = Vec::new();
    for list in [
        HAN_SURNAMES,
        HUI_SURNAMES,
        HAN_MALE_GIVEN,
        HAN_FEMALE_GIVEN,
        UYGHUR_MALE,
        UYGHUR_FEMALE,
        KAZAKH_MALE,
        KAZAKH_FEMALE,
        KYRGYZ_MALE,
        KYRGYZ_FEMALE,
        MONGOL_MALE,
        MONGOL_FEMALE,
    ] {
        all.extend_from_slice(list);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_sizes_meet_the_brief() {
        assert!(UYGHUR_MALE.len() >= 40 && UYGHUR_FEMALE.len() >= 30);
        assert!(KAZAKH_MALE.len() >= 40 && KAZAKH_FEMALE.len() >= 30);
        assert!(KYRGYZ_MALE.len() + KAZAKH_MALE.len() >= 40);
        assert!(KYRGYZ_FEMALE.len() + KAZAKH_FEMALE.len() >= 30);
    }

    #[test]
    fn spelling_swaps_both_ways() {
        assert_eq!(swap_spelling("买买提·吐尔逊"), "麦麦提·图尔荪");
        assert_eq!(swap_spelling("阿卜都克尤木·若孜"), "阿不都克尤木·肉孜");
        assert_eq!(swap_spelling("艾力·外力"), "艾力·外力");
    }

    #[test]
    fn homophone_typo_changes_one_given_char() {
        let mut rng = Rng::new(3);
        let typo = homophone_typo("王伟明", &mut rng);
        assert_ne!(typo, "王伟明");
        assert!(typo.starts_with('王'));
        assert_eq!(typo.chars().count(), 3);
    }
}
