//! Xinjiang administrative area codes (GB/T 2260) the broker knows by name.
//! The list is deliberately partial: an ID number whose area code is missing
//! here is warned about, never rejected (retired county codes live on).

/// One county-level area: code, prefecture name, county name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub code: &'static str,
    pub prefecture: &'static str,
    pub county: &'static str,
}

const fn area(code: &'static str, prefecture: &'static str, county: &'static str) -> Area {
    Area {
        code,
        prefecture,
        county,
    }
}

/// County-level areas, sorted by code.
pub const AREAS: &[Area] = &[
    area("650102", "乌鲁木齐市", "天山区"),
    area("650103", "乌鲁木齐市", "沙依巴克区"),
    area("650104", "乌鲁木齐市", "新市区"),
    area("650105", "乌鲁木齐市", "水磨沟区"),
    area("650106", "乌鲁木齐市", "头屯河区"),
    area("650107", "乌鲁木齐市", "达坂城区"),
    area("650109", "乌鲁木齐市", "米东区"),
    area("650121", "乌鲁木齐市", "乌鲁木齐县"),
    area("650202", "克拉玛依市", "独山子区"),
    area("650203", "克拉玛依市", "克拉玛依区"),
    area("650204", "克拉玛依市", "白碱滩区"),
    area("650402", "吐鲁番市", "高昌区"),
    area("650421", "吐鲁番市", "鄯善县"),
    area("650502", "哈密市", "伊州区"),
    area("652301", "昌吉回族自治州", "昌吉市"),
    area("652302", "昌吉回族自治州", "阜康市"),
    area("652323", "昌吉回族自治州", "呼图壁县"),
    area("652701", "博尔塔拉蒙古自治州", "博乐市"),
    area("652801", "巴音郭楞蒙古自治州", "库尔勒市"),
    area("652823", "巴音郭楞蒙古自治州", "尉犁县"),
    area("652901", "阿克苏地区", "阿克苏市"),
    area("652922", "阿克苏地区", "温宿县"),
    area("652924", "阿克苏地区", "沙雅县"),
    area("653001", "克孜勒苏柯尔克孜自治州", "阿图什市"),
    area("653101", "喀什地区", "喀什市"),
    area("653121", "喀什地区", "疏附县"),
    area("653122", "喀什地区", "疏勒县"),
    area("653125", "喀什地区", "莎车县"),
    area("653201", "和田地区", "和田市"),
    area("653221", "和田地区", "和田县"),
    area("653226", "和田地区", "于田县"),
    area("654002", "伊犁哈萨克自治州", "伊宁市"),
    area("654003", "伊犁哈萨克自治州", "奎屯市"),
    area("654004", "伊犁哈萨克自治州", "霍尔果斯市"),
    area("654021", "伊犁哈萨克自治州", "伊宁县"),
    area("654201", "塔城地区", "塔城市"),
    area("654202", "塔城地区", "乌苏市"),
    area("654301", "阿勒泰地区", "阿勒泰市"),
    area("654321", "阿勒泰地区", "布尔津县"),
    area("659001", "自治区直辖县级行政区划", "石河子市"),
    area("659002", "自治区直辖县级行政区划", "阿拉尔市"),
];

/// The area with this six-digit code, if the broker knows it.
pub fn area_by_code(code: &str) -> Option<&'static Area> {
    AREAS
        .binary_search_by(|a| a.code.cmp(code))
        .ok()
        .map(|i| &AREAS[i])
}

/// Whether a six-digit code is plausible as an area code: Chinese mainland
/// province prefixes 11–65, or the residence-permit codes 810000 / 820000 /
/// 830000, or a foreign permanent resident card (leading 9).
pub fn plausible_area_code(code: &str) -> bool {
    let b = code.as_bytes();
    if b.len() != 6 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    matches!(code, "810000" | "820000" | "830000")
        || b[0] == b'9'
        || (b"11".as_slice()..=b"65".as_slice()).contains(&&b[..2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn areas_are_sorted_and_unique() {
        assert!(AREAS.windows(2).all(|w| w[0].code < w[1].code));
    }

    #[test]
    fn lookup_and_plausibility() {
        assert_eq!(area_by_code("653101").map(|a| a.county), Some("喀什市"));
        assert_eq!(area_by_code("653199"), None);
        assert!(plausible_area_code("653199"));
        assert!(plausible_area_code("810000"));
        assert!(!plausible_area_code("000000"));
        assert!(!plausible_area_code("6501"));
    }
}
