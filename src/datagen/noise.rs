//! Data-quality noise for the non-authoritative sources: how clerks and
//! legacy systems write ID numbers and names. Every rate is a documented
//! constant in the parent module.

use super::names::{MIDDLE_DOT, homophone_typo, swap_spelling};
use super::people::{Ethnicity, Person};
use super::rng::Rng;
use super::{
    DOT_VARIANT_RATE, FULL_WIDTH_ID_RATE, HAN_NAME_TYPO_RATE, ID_MISSING_RATE, ID_SPACES_RATE,
    ID_TYPO_RATE, LEGACY_15_DIGIT_RATE, LOWERCASE_X_RATE, OLD_SPELLING_RATE,
};

/// Middle-dot variants seen in practice (DOMAIN.md), replacing U+00B7.
pub(crate) const DOT_VARIANTS: &[&str] = &[
    "\u{30FB}",         // ・ katakana middle dot (GB2312 decoders in glibc / Python)
    "\u{FF65}",         // ･ half-width katakana middle dot
    "\u{2022}",         // • bullet
    "\u{2027}",         // ‧ hyphenation point (Big5 A145)
    "\u{FF0E}",         // ． full-width full stop
    ".",                // ASCII full stop
    "\u{FE52}",         // ﹒ small full stop
    "\u{2219}",         // ∙ bullet operator
    "\u{25CF}",         // ● black circle
    "\u{0387}",         // Greek ano teleia
    "\u{2E31}",         // word separator middle dot
    " ",                // a space
    "\u{00B7}\u{00B7}", // doubled dot
    "",                 // no dot at all
];

/// The variant as it can appear in a GBK file: variants GBK cannot encode
/// are mapped to the look-alike a GBK system would have stored instead.
pub(crate) fn gbk_safe_dot(variant: &str) -> &str {
    match variant {
        "\u{30FB}" | "\u{2027}" => "\u{FE52}",
        "\u{FF65}" => "\u{FF0E}",
        "\u{2022}" | "\u{2219}" => "\u{25CF}",
        "\u{0387}" | "\u{2E31}" => ".",
        other => other,
    }
}

/// How one source garbles names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameNoise {
    /// Swap transliteration spellings in `OLD_SPELLING_RATE` of Uyghur names.
    pub(crate) old_spelling: bool,
    /// Only characters GBK can encode.
    pub(crate) gbk: bool,
}

/// A name as a non-authoritative source writes it.
pub(crate) fn noisy_name(person: &Person, rng: &mut Rng, noise: NameNoise) -> String {
    let mut name = person.name.clone();
    if noise.old_spelling && person.ethnicity == Ethnicity::Uyghur && rng.chance(OLD_SPELLING_RATE)
    {
        name = swap_spelling(&name);
    }
    if person.has_dot {
        if rng.chance(DOT_VARIANT_RATE) {
            let mut variant = *rng.pick(DOT_VARIANTS);
            if noise.gbk {
                variant = gbk_safe_dot(variant);
            }
            name = name.replace(MIDDLE_DOT, variant);
        }
    } else if matches!(person.ethnicity, Ethnicity::Han | Ethnicity::Hui)
        && rng.chance(HAN_NAME_TYPO_RATE)
    {
        name = homophone_typo(&name, rng);
    }
    name
}

/// An ID number as written in a record, and whether it survives
/// normalisation (false only for a checksum-breaking typo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WrittenId {
    pub(crate) text: String,
    pub(crate) valid: bool,
}

/// An ID number as a non-authoritative source writes it.
pub(crate) fn noisy_id(person: &Person, rng: &mut Rng) -> WrittenId {
    let id = person.id.as_bytes();
    let mut valid = true;
    let roll = rng.below(1_000_000) as f64 / 1_000_000.0;
    if roll < ID_MISSING_RATE {
        return WrittenId {
            text: String::new(),
            valid: false,
        };
    }
    let roll = roll - ID_MISSING_RATE;
    let mut text = if roll < ID_TYPO_RATE {
        valid = false;
        typo(id, rng)
    } else if roll < ID_TYPO_RATE + LEGACY_15_DIGIT_RATE
        && (1900..=1999).contains(&person.birth.year)
    {
        // Area code, two-digit year, month, day, sequence; no check character.
        format!(
            "{}{}{}",
            &person.id[..6],
            &person.id[8..14],
            &person.id[14..17]
        )
    } else {
        person.id.clone()
    };
    if text.ends_with('X') && rng.chance(LOWERCASE_X_RATE) {
        text.pop();
        text.push('x');
    }
    if rng.chance(FULL_WIDTH_ID_RATE) {
        text = text
            .chars()
            .map(|c| match c.to_digit(10) {
                Some(d) => char::from_u32(0xFF10 + d).unwrap_or(c),
                None => c,
            })
            .collect();
    }
    if rng.chance(ID_SPACES_RATE) {
        text = match rng.below(5) {
            0 => format!(" {text}"),
            1 => format!("{text} "),
            2 => format!(" {text} "),
            3 => insert_space(&text, 6),
            _ => insert_space(&text, 14),
        };
    }
    WrittenId { text, valid }
}

/// A space after the `at`-th character (or at the end when shorter).
fn insert_space(text: &str, at: usize) -> String {
    let mut out = String::with_capacity(text.len() + 1);
    for (i, c) in text.chars().enumerate() {
        if i == at {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// One keystroke wrong in the first 17 digits, always failing validation:
/// a digit replaced (every weight is non-zero mod 11 and 11 is prime, so
/// the check character no longer fits), two different adjacent digits
/// swapped (adjacent weights differ mod 11, so again), or a digit left out
/// or typed twice (the length is wrong).
fn typo(id: &[u8], rng: &mut Rng) -> String {
    let mut out = id.to_vec();
    let kind = rng.below(100);
    let pos = rng.index(17);
    if kind < 25 {
        // The first adjacent pair of different digits from `pos` on.
        if let Some(i) = (0..16)
            .map(|k| (pos + k) % 16)
            .find(|&i| out[i] != out[i + 1])
        {
            out.swap(i, i + 1);
            return String::from_utf8_lossy(&out).into_owned();
        }
    } else if kind < 33 {
        out.remove(pos);
        return String::from_utf8_lossy(&out).into_owned();
    } else if kind < 40 {
        out.insert(pos, out[pos]);
        return String::from_utf8_lossy(&out).into_owned();
    }
    let d = out[pos] - b'0';
    out[pos] = b'0' + (d + 1 + rng.below(9) as u8) % 10;
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::id_number_check_char;

    #[test]
    fn typos_always_fail_validation_and_are_one_keystroke_away() {
        let mut rng = Rng::new(1);
        let id = "650102198506150010";
        let mut kinds = [0usize; 3]; // same length, shorter, longer
        for _ in 0..4000 {
            let t = typo(id.as_bytes(), &mut rng);
            assert!(
                crate::ingest::normalise::id_number(&t).is_err(),
                "{t} passes"
            );
            assert!(
                crate::ingest::link::id_neighbours(&t).contains(&id.to_string()),
                "{t} is not one edit from {id}"
            );
            kinds[match t.len() {
                18 => 0,
                17 => 1,
                _ => 2,
            }] += 1;
            if t.len() == 18 {
                assert_ne!(
                    id_number_check_char(&t.as_bytes()[..17]),
                    Some(t.as_bytes()[17])
                );
            }
        }
        assert!(kinds.iter().all(|&k| k > 100), "{kinds:?}");
    }

    #[test]
    fn gbk_safe_variants_encode_in_gbk() {
        for v in DOT_VARIANTS {
            let (_, _, had_errors) = encoding_rs::GBK.encode(gbk_safe_dot(v));
            assert!(!had_errors, "{v:?}");
            assert_ne!(gbk_safe_dot(v), "\u{00B7}");
        }
    }
}
