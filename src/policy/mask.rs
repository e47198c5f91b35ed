//! Masking of field values for `read_masked` access, per the catalogue's
//! mask kind. Works on characters, never bytes, so Chinese text and the
//! middle dot of minority names stay intact.

use crate::catalog::MaskKind;
use crate::ingest::normalise::AreaEndMemo;

const STAR: char = '*';

/// Keep `head` characters and `tail` characters, star the rest.
fn keep_ends(value: &str, head: usize, tail: usize, out: &mut String) {
    // ASCII (ID and phone numbers): one byte a character, nothing to count.
    let ascii = value.is_ascii();
    let n = if ascii {
        value.len()
    } else {
        value.chars().count()
    };
    if n <= head + tail {
        out.extend(std::iter::repeat_n(STAR, n));
        return;
    }
    // The byte offset of character `i` (< n).
    let at = |i: usize| {
        if ascii {
            i
        } else {
            value.char_indices().nth(i).map_or(value.len(), |(b, _)| b)
        }
    };
    out.push_str(&value[..at(head)]);
    out.extend(std::iter::repeat_n(STAR, n - head - tail));
    out.push_str(&value[at(n - tail)..]);
}

/// The masked form of a value.
pub fn mask(kind: MaskKind, value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    mask_with(
        kind,
        value,
        &mut out,
        crate::ingest::normalise::address_area_end,
    );
    out
}

/// Masks the many values of a bulk export: what [`mask`] returns, appended
/// to a buffer without allocating, with the search for an address's area
/// remembered from address to address ([`AreaEndMemo`]).
#[derive(Default)]
pub struct Masker {
    areas: AreaEndMemo,
}

impl Masker {
    /// Append the masked form of `value` to `out`.
    pub fn mask_into(&mut self, kind: MaskKind, value: &str, out: &mut String) {
        mask_with(kind, value, out, |v| self.areas.area_end(v));
    }
}

/// Append the masked form of `value` to `out`, finding where an address's area ends with `area_end`.
fn mask_with(
    kind: MaskKind,
    value: &str,
    out: &mut String,
    area_end: impl FnOnce(&str) -> Option<usize>,
) {
    match kind {
        MaskKind::IdNumber => keep_ends(value, 6, 4, out),
        MaskKind::Phone => keep_ends(value, 3, 4, out),
        MaskKind::Name => {
            // 买买提·艾力 → 买**·**: keep the first character and every dot.
            out.extend(
                value
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if i == 0 || c == '\u{b7}' { c } else { STAR }),
            );
        }
        MaskKind::Address => {
            // Keep the address up to the county-level area it names, known
            // from the area list; anything else could be a street or a
            // building, so an address naming no known county is hidden.
            if let Some(end) = area_end(value) {
                out.push_str(&value[..end]);
            }
            out.push_str("****");
        }
        MaskKind::Full => out.push_str("****"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let cases: &[(MaskKind, &str, &str)] = &[
            (
                MaskKind::IdNumber,
                "650102198506150010",
                "650102********0010",
            ),
            (MaskKind::IdNumber, "12345", "*****"),
            (MaskKind::IdNumber, "1234567890", "**********"),
            (MaskKind::IdNumber, "12345678901", "123456*8901"),
            (
                MaskKind::IdNumber,
                "６５０１０２１９８５０６１５００１Ｘ",
                "６５０１０２********００１Ｘ",
            ),
            (MaskKind::Phone, "139 1234 5678", "139******5678"),
            (MaskKind::Phone, "13912345678", "139****5678"),
            (MaskKind::Name, "买买提·艾力", "买**·**"),
            (MaskKind::Name, "张三", "张*"),
            (
                MaskKind::Address,
                "新疆维吾尔自治区喀什地区喀什市解放北路12号",
                "新疆维吾尔自治区喀什地区喀什市****",
            ),
            (
                MaskKind::Address,
                "新疆维吾尔自治区乌鲁木齐市天山区和平路5号",
                "新疆维吾尔自治区乌鲁木齐市天山区****",
            ),
            (MaskKind::Address, "无地址", "****"),
            (
                MaskKind::Address,
                "新疆维吾尔自治区石河子市幸福小区3栋",
                "新疆维吾尔自治区石河子市****",
            ),
            (MaskKind::Address, "新疆维吾尔自治区某某市场小区3栋", "****"),
            (
                MaskKind::Address,
                "和田地区和田县拉依喀乡5村",
                "和田地区和田县****",
            ),
            (MaskKind::Full, "已婚", "****"),
        ];
        let mut out = String::from("prefix:");
        for (kind, value, want) in cases {
            assert_eq!(mask(*kind, value), *want, "{kind:?} {value}");
            // Appended, twice: the second address is answered from the memo.
            let mut masker = Masker::default();
            for _ in 0..2 {
                out.truncate("prefix:".len());
                masker.mask_into(*kind, value, &mut out);
                assert_eq!(out, format!("prefix:{want}"), "masker: {kind:?} {value}");
            }
        }
    }
}
