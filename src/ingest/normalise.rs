//! Normalisation of messy field values from agency exports: ID numbers,
//! credit codes, person names, dates, phone numbers, sex codes, addresses and
//! free text. Pure functions, no I/O (architecture invariant 8).

use aho_corasick::Anchored;
use aho_corasick::automaton::Automaton;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use thiserror::Error;
use unicode_normalization::UnicodeNormalization;

use crate::model::areas::{self, Area};
use crate::model::ids;

/// Earliest birth year accepted in an ID number.
const MIN_BIRTH_YEAR: i32 = 1900;
/// Latest birth year accepted in an ID number. A fixed bound keeps this module
/// pure (no clock); the resolver can compare with today if it needs to.
const MAX_BIRTH_YEAR: i32 = 2100;

/// The official middle dot of transliterated minority names (U+00B7).
const NAME_DOT: char = '\u{00B7}';
/// Longest dot-free Han name whose inner spaces are treated as padding.
const MAX_PADDED_HAN_NAME: usize = 3;

// ---------------------------------------------------------------------------
// Character helpers
// ---------------------------------------------------------------------------

/// Whitespace plus the invisible characters that turn up in exported cells
/// (zero-width space, byte-order mark).
fn is_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{200B}' | '\u{FEFF}')
}

/// A full-width ASCII form (U+FF01–U+FF5E) mapped to ASCII, with a flag
/// saying whether it was full-width.
fn fold_full_width(c: char) -> (char, bool) {
    if ('\u{FF01}'..='\u{FF5E}').contains(&c) {
        (char::from_u32(c as u32 - 0xFEE0).unwrap_or(c), true)
    } else {
        (c, false)
    }
}

/// Han ideographs (CJK Unified Ideographs, extensions, compatibility).
fn is_cjk(c: char) -> bool {
    matches!(
        c,
        '\u{3007}'
            | '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{F900}'..='\u{FAFF}'
            | '\u{20000}'..='\u{2FA1F}'
            | '\u{30000}'..='\u{3134F}'
    )
}

/// Latin letters (ASCII and the Latin-1 / Extended-A / Extended-B letters).
fn is_latin(c: char) -> bool {
    c.is_ascii_alphabetic()
        || (matches!(c, '\u{00C0}'..='\u{024F}') && !matches!(c, '\u{00D7}' | '\u{00F7}'))
}

/// Every character seen (after NFKC) where a name's middle dot should be.
/// NFKC already maps U+FF0E, U+FE52 and U+2024 to `.`, U+FF65 to U+30FB,
/// U+0387 to U+00B7 and U+FF61 to U+3002; the pre-NFKC forms stay listed so
/// the set is also right on un-normalised text.
fn is_dot_variant(c: char) -> bool {
    matches!(
        c,
        '\u{00B7}' // middle dot (official)
            | '.'
            | '\u{0387}' // Greek ano teleia
            | '\u{2022}' // bullet
            | '\u{2024}' // one dot leader
            | '\u{2027}' // hyphenation point (Big5 A145)
            | '\u{2219}' // bullet operator
            | '\u{22C5}' // dot operator
            | '\u{25CF}' // black circle
            | '\u{2E30}' // ring point
            | '\u{2E31}' // word separator middle dot
            | '\u{3002}' // ideographic full stop
            | '\u{30FB}' // katakana middle dot (GB2312 A1A4 via iconv)
            | '\u{A78F}' // Latin letter sinological dot
            | '\u{FE52}' // small full stop
            | '\u{FF0E}' // full-width full stop
            | '\u{FF61}' // half-width ideographic full stop
            | '\u{FF65}' // half-width katakana middle dot
    )
}

fn nfkc(raw: &str) -> String {
    raw.nfkc().collect()
}

// ---------------------------------------------------------------------------
// Resident identity card number
// ---------------------------------------------------------------------------

/// Sex as recorded on an ID number or in a sex field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    Male,
    Female,
}

impl Sex {
    /// The Chinese label used in registry data.
    pub fn label(self) -> &'static str {
        match self {
            Sex::Male => "男",
            Sex::Female => "女",
        }
    }
}

/// Something that was repaired or is worth a warning in an accepted ID number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdNote {
    /// A legacy 15-digit number was converted to 18 digits.
    ConvertedFrom15,
    /// The check character was a lower-case `x`.
    LowerCaseX,
    /// Full-width digits or letters were folded to ASCII.
    FullWidth,
    /// Whitespace inside the number was removed (surrounding whitespace is
    /// trimmed without a note).
    Whitespace,
    /// The area code is plausible but not in `model::areas::AREAS`
    /// (retired county codes, other provinces, residence permits, foreign
    /// permanent resident cards).
    UnknownArea,
}

/// A validated 18-character resident ID number and what it encodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdNumber {
    /// 18 characters, check character upper-case.
    pub value: String,
    /// The first six digits.
    pub area_code: String,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    pub notes: Vec<IdNote>,
}

/// Why an ID number was rejected. Positions are 1-based and count characters
/// after whitespace removal.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdNumberError {
    #[error("empty id number")]
    Empty,
    #[error("id number has {len} characters, expected 15 or 18")]
    Length { len: usize },
    #[error("invalid character {ch:?} at position {position} of id number")]
    Character { ch: char, position: usize },
    #[error("id number check character is {found}, expected {expected}")]
    Checksum { expected: char, found: char },
    #[error("invalid birth date {digits} in id number")]
    BirthDate { digits: String },
    #[error("implausible area code {code} in id number")]
    AreaCode { code: String },
}

/// Normalise and validate a resident ID number (GB 11643-1999), also the
/// Hong Kong / Macau / Taiwan residence permit and the foreign permanent
/// resident card, which share the layout and check.
///
/// Checks run in this order: characters, length, area code, birth date,
/// check character — so a typo that breaks a structural field is reported
/// where it is rather than as a bare checksum failure.
pub fn id_number(raw: &str) -> Result<IdNumber, IdNumberError> {
    let trimmed = raw.trim_matches(is_space);
    if trimmed.is_empty() {
        return Err(IdNumberError::Empty);
    }
    let mut notes = Vec::new();
    let mut chars = Vec::with_capacity(18);
    for c in trimmed.chars() {
        if is_space(c) {
            if !notes.contains(&IdNote::Whitespace) {
                notes.push(IdNote::Whitespace);
            }
            continue;
        }
        let (folded, was_full_width) = fold_full_width(c);
        if was_full_width && !notes.contains(&IdNote::FullWidth) {
            notes.push(IdNote::FullWidth);
        }
        chars.push((c, folded));
    }
    for (i, &(orig, folded)) in chars.iter().enumerate() {
        if !(folded.is_ascii_digit() || folded == 'X' || folded == 'x') {
            return Err(IdNumberError::Character {
                ch: orig,
                position: i + 1,
            });
        }
    }
    let len = chars.len();
    if len != 15 && len != 18 {
        return Err(IdNumberError::Length { len });
    }
    // X/x is only allowed as the 18th character.
    let digit_positions = if len == 18 { 17 } else { 15 };
    if let Some((i, &(orig, _))) = chars[..digit_positions]
        .iter()
        .enumerate()
        .find(|(_, (_, f))| !f.is_ascii_digit())
    {
        return Err(IdNumberError::Character {
            ch: orig,
            position: i + 1,
        });
    }

    let folded: String = chars.iter().map(|&(_, f)| f).collect();
    let (first17, found) = if len == 15 {
        notes.push(IdNote::ConvertedFrom15);
        (format!("{}19{}", &folded[..6], &folded[6..]), None)
    } else {
        let last = chars[17].1;
        if last == 'x' {
            notes.push(IdNote::LowerCaseX);
        }
        (folded[..17].to_string(), Some(last.to_ascii_uppercase()))
    };

    let area_code = first17[..6].to_string();
    if !areas::plausible_area_code(&area_code) {
        return Err(IdNumberError::AreaCode { code: area_code });
    }
    if areas::area_by_code(&area_code).is_none() {
        notes.push(IdNote::UnknownArea);
    }

    let birth_digits = &first17[6..14];
    let birth_date = parse_ymd_digits(birth_digits)
        .filter(|d| (MIN_BIRTH_YEAR..=MAX_BIRTH_YEAR).contains(&d.year()))
        .ok_or_else(|| IdNumberError::BirthDate {
            digits: birth_digits.to_string(),
        })?;

    let expected = char::from(
        ids::id_number_check_char(first17.as_bytes())
            .expect("first17 is 17 ASCII digits, checked above"),
    );
    if let Some(found) = found
        && found != expected
    {
        return Err(IdNumberError::Checksum { expected, found });
    }

    let sequence_digit = first17.as_bytes()[16] - b'0';
    let sex = if sequence_digit % 2 == 1 {
        Sex::Male
    } else {
        Sex::Female
    };
    let mut value = first17;
    value.push(expected);
    Ok(IdNumber {
        value,
        area_code,
        birth_date,
        sex,
        notes,
    })
}

/// `YYYYMMDD` (exactly eight ASCII digits) as a calendar date.
fn parse_ymd_digits(digits: &str) -> Option<NaiveDate> {
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y = digits[..4].parse().ok()?;
    let m = digits[4..6].parse().ok()?;
    let d = digits[6..8].parse().ok()?;
    NaiveDate::from_ymd_opt(y, m, d)
}

// ---------------------------------------------------------------------------
// Unified social credit code
// ---------------------------------------------------------------------------

/// A normalised unified social credit code (GB 32100-2015).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditCode {
    /// 18 characters, upper-case.
    pub value: String,
    /// Whether the check character is right. Some codes issued before 2016
    /// fail the check; they are flagged, never rejected.
    pub checksum_ok: bool,
    /// Characters 3–8.
    pub area_code: String,
}

/// Why a credit code was rejected. Positions are 1-based and count
/// characters after whitespace removal.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CreditCodeError {
    #[error("empty credit code")]
    Empty,
    #[error("credit code has {len} characters, expected 18")]
    Length { len: usize },
    #[error("invalid character {ch:?} at position {position} of credit code")]
    Character { ch: char, position: usize },
}

/// Normalise a unified social credit code: strip whitespace, fold
/// full-width forms, upper-case, check the alphabet and length, and flag
/// (not reject) a wrong check character.
pub fn credit_code(raw: &str) -> Result<CreditCode, CreditCodeError> {
    let mut value = String::with_capacity(18);
    let mut len = 0;
    for c in raw.chars().filter(|&c| !is_space(c)) {
        len += 1;
        let upper = fold_full_width(c).0.to_ascii_uppercase();
        if !upper.is_ascii() || ids::credit_code_char_value(upper as u8).is_none() {
            return Err(CreditCodeError::Character {
                ch: c,
                position: len,
            });
        }
        value.push(upper);
    }
    if len == 0 {
        return Err(CreditCodeError::Empty);
    }
    if len != 18 {
        return Err(CreditCodeError::Length { len });
    }
    // All characters are ASCII, so byte and character indices agree.
    let expected = ids::credit_code_check_char(&value.as_bytes()[..17]);
    let checksum_ok = expected == Some(value.as_bytes()[17]);
    let area_code = value[2..8].to_string();
    Ok(CreditCode {
        value,
        checksum_ok,
        area_code,
    })
}

// ---------------------------------------------------------------------------
// Person names
// ---------------------------------------------------------------------------

/// The display form of a person name: NFKC, every middle-dot variant and
/// every space between two Han name parts turned into U+00B7, spaces around
/// dots dropped, repeated dots merged, dots and spaces trimmed at the ends,
/// `.` kept after a Latin letter (`B. 盖茨` → `B.盖茨`, `B. Gates` stays),
/// other whitespace runs collapsed to one space. Idempotent.
///
/// Exception: a dot-free name of at most three Han characters with spaces in
/// it (`王  芳`, padded to align with three-character names in fixed-width
/// exports) is a Han name, not a transliteration; its spaces are dropped.
pub fn person_name(raw: &str) -> String {
    let chars: Vec<char> = raw.nfkc().collect();
    let han_only = chars.iter().all(|&c| is_cjk(c) || is_space(c));
    if han_only && chars.iter().filter(|&&c| is_cjk(c)).count() <= MAX_PADDED_HAN_NAME {
        return chars.into_iter().filter(|&c| !is_space(c)).collect();
    }
    let mut out = String::with_capacity(raw.len());
    let mut prev: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_space(c) || is_dot_variant(c) {
            let start = i;
            while i < chars.len() && (is_space(chars[i]) || is_dot_variant(chars[i])) {
                i += 1;
            }
            out.push_str(name_separator(
                prev,
                &chars[start..i],
                chars.get(i).copied(),
            ));
        } else {
            out.push(c);
            prev = Some(c);
            i += 1;
        }
    }
    out
}

/// What a run of spaces and dots between `prev` and `next` becomes.
fn name_separator(prev: Option<char>, run: &[char], next: Option<char>) -> &'static str {
    let has_space = run.iter().any(|&c| is_space(c));
    let has_ascii_dot = run.contains(&'.');
    let has_other_dot = run.iter().any(|&c| c != '.' && is_dot_variant(c));
    let latin_initial_dot = has_ascii_dot && !has_other_dot && prev.is_some_and(is_latin);
    match (prev, next) {
        (None, _) => "",
        (Some(_), None) => {
            if latin_initial_dot {
                "."
            } else {
                ""
            }
        }
        (Some(l), Some(r)) => {
            if is_cjk(l) && is_cjk(r) {
                "\u{00B7}"
            } else if latin_initial_dot {
                if has_space && !is_cjk(r) { ". " } else { "." }
            } else if has_ascii_dot || has_other_dot {
                "\u{00B7}"
            } else {
                " "
            }
        }
    }
}

/// The exact-match key of a name: its `person_name` form with dots and
/// spaces removed and Latin letters lower-cased, so `买买提·艾力`,
/// `买买提・艾力`, `买买提 艾力` and `买买提艾力` share a key. Accepts raw
/// input too (it normalises first).
pub fn name_match_key(name: &str) -> String {
    person_name(name)
        .chars()
        .filter(|&c| !is_space(c) && c != NAME_DOT && c != '.')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Readings a general-purpose pinyin table gets wrong in names: the
/// transliteration syllables of Uyghur and Kazakh names (阿不都/阿卜都 are both
/// "abudu"), and surnames whose reading differs from the common one. The
/// surname readings apply to the first character only.
const NAME_READINGS: &[(char, &str)] = &[('都', "du"), ('卜', "bu"), ('合', "he"), ('克', "ke")];
const SURNAME_READINGS: &[(char, &str)] = &[
    ('单', "shan"),
    ('曾', "zeng"),
    ('解', "xie"),
    ('仇', "qiu"),
    ('朴', "piao"),
    ('查', "zha"),
    ('区', "ou"),
    ('盖', "ge"),
    ('乐', "yue"),
    ('覃', "qin"),
    ('缪', "miao"),
    ('翟', "zhai"),
    ('尉', "yu"),
    ('万', "wan"),
    ('员', "yun"),
];

/// The toneless pinyin key of a name: each Han character's reading (name
/// readings for polyphones, see `NAME_READINGS`), Latin letters lower-cased,
/// digits kept, dots, spaces and other marks dropped. Transliteration
/// spellings that changed over time (买买提/麦麦提, 阿不都/阿卜都) share a key;
/// 肉孜/若孜 (rouzi/ruozi) and 吐尔逊/图尔荪 (tuerxun/tuersun) do not, but
/// score high on Jaro–Winkler over the key, which the resolver uses.
pub fn name_pinyin(name: &str) -> String {
    use pinyin::ToPinyin;
    let key = name_match_key(name);
    let mut out = String::with_capacity(key.len() * 2);
    for (i, c) in key.chars().enumerate() {
        let table = |t: &[(char, &'static str)]| t.iter().find(|(h, _)| *h == c).map(|(_, r)| *r);
        let reading = (if i == 0 {
            table(SURNAME_READINGS)
        } else {
            None
        })
        .or_else(|| table(NAME_READINGS))
        .or_else(|| c.to_pinyin().map(|p| p.plain()));
        match reading {
            Some(r) => out.push_str(r),
            None if c.is_alphanumeric() => out.push(c),
            None => {}
        }
    }
    out
}

/// The characters of an ID number as written, for matching a number that
/// failed validation against valid ones: full-width forms folded, spaces
/// dropped, `x` upper-cased. `None` when anything but digits and X remains
/// or the length is far from 18 (a neighbour search makes no sense then).
pub fn id_digits(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(18);
    for c in raw.chars() {
        if is_space(c) {
            continue;
        }
        let (c, _) = fold_full_width(c);
        match c {
            '0'..='9' => out.push(c),
            'x' | 'X' => out.push('X'),
            _ => return None,
        }
    }
    (17..=19).contains(&out.len()).then_some(out)
}

// ---------------------------------------------------------------------------
// Dates and times
// ---------------------------------------------------------------------------

/// Why a date or date-time was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DateError {
    #[error("empty date")]
    Empty,
    #[error("unrecognised date format {raw:?}")]
    Format { raw: String },
    #[error("not a valid date or time {raw:?}")]
    Invalid { raw: String },
}

enum DateFault {
    Format,
    Invalid,
}

/// The date part of a value and what follows it.
struct DatePrefix<'a> {
    date: NaiveDate,
    /// Time digits glued to a compact date (`20240105130405` → `130405`).
    compact_time: Option<&'a str>,
    /// Text after the date and its separator (`T` or whitespace), trimmed.
    rest: &'a str,
}

/// Leading ASCII digits of `s` and the remainder.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

fn ymd(y: &str, m: &str, d: &str) -> Result<NaiveDate, DateFault> {
    let y = y.parse().map_err(|_| DateFault::Format)?;
    let m = m.parse().map_err(|_| DateFault::Format)?;
    let d = d.parse().map_err(|_| DateFault::Format)?;
    NaiveDate::from_ymd_opt(y, m, d).ok_or(DateFault::Invalid)
}

/// After a date: nothing, or a `T` / whitespace separator and a time part.
fn date_tail(rest: &str) -> Result<&str, DateFault> {
    if rest.is_empty() {
        Ok("")
    } else if let Some(r) = rest.strip_prefix('T') {
        Ok(r.trim())
    } else if rest.starts_with(is_space) {
        Ok(rest.trim())
    } else {
        Err(DateFault::Format)
    }
}

/// Parse the date at the start of an NFKC-normalised, trimmed value.
fn date_prefix(s: &str) -> Result<DatePrefix<'_>, DateFault> {
    let (lead, after) = split_digits(s);
    match lead.len() {
        8 => Ok(DatePrefix {
            date: ymd(&lead[..4], &lead[4..6], &lead[6..8])?,
            compact_time: None,
            rest: date_tail(after)?,
        }),
        12 | 14 if after.is_empty() => Ok(DatePrefix {
            date: ymd(&lead[..4], &lead[4..6], &lead[6..8])?,
            compact_time: Some(&lead[8..]),
            rest: "",
        }),
        4 => {
            let mut it = after.chars();
            let sep = it.next().ok_or(DateFault::Format)?;
            let second_sep = match sep {
                '-' | '/' | '.' => sep,
                '年' => '月',
                _ => return Err(DateFault::Format),
            };
            let (month, after) = split_digits(it.as_str());
            let after = after.strip_prefix(second_sep).ok_or(DateFault::Format)?;
            let (day, mut after) = split_digits(after);
            if !(1..=2).contains(&month.len()) || !(1..=2).contains(&day.len()) {
                return Err(DateFault::Format);
            }
            let date = ymd(lead, month, day)?;
            if sep == '年' {
                after = after.strip_prefix('日').unwrap_or(after);
                // `2024年1月5日13:04` needs no separator before the time.
                if !after.starts_with('T') {
                    after = after.trim_start();
                    return Ok(DatePrefix {
                        date,
                        compact_time: None,
                        rest: after,
                    });
                }
            }
            Ok(DatePrefix {
                date,
                compact_time: None,
                rest: date_tail(after)?,
            })
        }
        _ => Err(DateFault::Format),
    }
}

/// `H:MM`, `HH:MM:SS` or `HH:MM:SS.fff` (up to nine fraction digits).
fn separated_time(s: &str) -> Result<NaiveTime, DateFault> {
    let (hour, after) = split_digits(s);
    let after = after.strip_prefix(':').ok_or(DateFault::Format)?;
    let (minute, after) = split_digits(after);
    let (second, nanos, after) = match after.strip_prefix(':') {
        Some(a) => {
            let (second, a) = split_digits(a);
            match a.strip_prefix('.') {
                Some(f) => {
                    let (fraction, a) = split_digits(f);
                    if fraction.is_empty() || fraction.len() > 9 {
                        return Err(DateFault::Format);
                    }
                    let scale = 10u32.pow(9 - fraction.len() as u32);
                    let n: u32 = fraction.parse().map_err(|_| DateFault::Format)?;
                    (second, n * scale, a)
                }
                None => (second, 0, a),
            }
        }
        None => ("00", 0, after),
    };
    if !after.is_empty() || !(1..=2).contains(&hour.len()) || minute.len() != 2 || second.len() != 2
    {
        return Err(DateFault::Format);
    }
    hms(hour, minute, second, nanos)
}

fn hms(h: &str, m: &str, s: &str, nanos: u32) -> Result<NaiveTime, DateFault> {
    let h = h.parse().map_err(|_| DateFault::Format)?;
    let m = m.parse().map_err(|_| DateFault::Format)?;
    let s = s.parse().map_err(|_| DateFault::Format)?;
    NaiveTime::from_hms_nano_opt(h, m, s, nanos).ok_or(DateFault::Invalid)
}

fn date_error(fault: DateFault, raw: &str) -> DateError {
    let raw = raw.trim().to_string();
    match fault {
        DateFault::Format => DateError::Format { raw },
        DateFault::Invalid => DateError::Invalid { raw },
    }
}

/// A calendar date in the forms agencies use: `2024-01-05`, `2024-1-5`,
/// `2024/1/5`, `2024.01.05`, `20240105`, `2024年1月5日`, full-width digits.
/// A trailing time part (after `T` or whitespace, or glued to a 14-digit
/// compact value) is ignored without being checked.
pub fn date(raw: &str) -> Result<NaiveDate, DateError> {
    let s = nfkc(raw);
    let s = s.trim_matches(is_space);
    if s.is_empty() {
        return Err(DateError::Empty);
    }
    date_prefix(s)
        .map(|p| p.date)
        .map_err(|f| date_error(f, raw))
}

/// A date and time: `2024-01-05 13:04:05`, `2024-01-05T13:04:05`,
/// `2024/1/5 13:04`, `20240105130405`, fractional seconds, or a bare date
/// (midnight). Agencies' clocks are China Standard Time, so a value with
/// an explicit offset (`Z`, `+08:00`, `+0800`, `-05`, as database
/// `timestamptz` columns give) is converted to it rather than dropped or
/// misread.
pub fn datetime(raw: &str) -> Result<NaiveDateTime, DateError> {
    let s = nfkc(raw);
    let s = s.trim_matches(is_space);
    if s.is_empty() {
        return Err(DateError::Empty);
    }
    let (s, offset) = split_offset(s).map_err(|f| date_error(f, raw))?;
    let parse = || -> Result<NaiveDateTime, DateFault> {
        let p = date_prefix(s)?;
        let time = match p.compact_time {
            Some(t) if t.len() == 6 => hms(&t[..2], &t[2..4], &t[4..6], 0)?,
            Some(t) => hms(&t[..2], &t[2..4], "00", 0)?,
            None if p.rest.is_empty() => NaiveTime::MIN,
            None => separated_time(p.rest)?,
        };
        let local = p.date.and_time(time);
        Ok(match offset {
            Some(seconds) => {
                local - chrono::Duration::seconds(i64::from(seconds - CHINA_STANDARD_TIME))
            }
            None => local,
        })
    };
    parse().map_err(|f| date_error(f, raw))
}

/// UTC+8, in seconds.
const CHINA_STANDARD_TIME: i32 = 8 * 3600;

/// A time value without its UTC offset suffix, and the offset in seconds.
/// Only a suffix after the time's first `:` counts, so the `-` of a date
/// is never taken for one.
fn split_offset(s: &str) -> Result<(&str, Option<i32>), DateFault> {
    let Some(colon) = s.find(':') else {
        return Ok((s, None));
    };
    if let Some(rest) = s.strip_suffix(['Z', 'z']) {
        return Ok((rest.trim_end(), Some(0)));
    }
    let Some(sign_at) = s[colon..].rfind(['+', '-']).map(|i| i + colon) else {
        return Ok((s, None));
    };
    let sign = if s.as_bytes()[sign_at] == b'-' { -1 } else { 1 };
    let digits: String = s[sign_at + 1..].chars().filter(|&c| c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return Err(DateFault::Format);
    }
    let hours: i32 = digits[..2].parse().map_err(|_| DateFault::Format)?;
    let minutes: i32 = match &digits[2..] {
        "" => 0,
        m => m.parse().map_err(|_| DateFault::Format)?,
    };
    if hours > 14 || minutes > 59 {
        return Err(DateFault::Invalid);
    }
    Ok((
        s[..sign_at].trim_end(),
        Some(sign * (hours * 3600 + minutes * 60)),
    ))
}

// ---------------------------------------------------------------------------
// Phone numbers
// ---------------------------------------------------------------------------

/// Why a phone number was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PhoneError {
    #[error("empty phone number")]
    Empty,
    #[error("unrecognised phone number with {digits} digits")]
    Format { digits: usize },
}

fn is_mobile(d: &str) -> bool {
    d.len() == 11 && d.starts_with('1')
}

/// `0991-1234567` when `d` is a Xinjiang area code (0990–0999, 0901–0909)
/// followed by a 7- or 8-digit local number.
fn xinjiang_landline(d: &str) -> Option<String> {
    let b = d.as_bytes();
    if !(11..=12).contains(&b.len()) || &b[..2] != b"09" {
        return None;
    }
    let known_code = b[2] == b'9' || (b[2] == b'0' && b[3] != b'0');
    known_code.then(|| format!("{}-{}", &d[..4], &d[4..]))
}

/// A mobile number as 11 digits (`13912345678`) or a Xinjiang landline as
/// `0991-1234567`. Spaces, dashes, parentheses and full-width forms are
/// stripped; `+86` / `0086` / `86` before a mobile is dropped, and `+86` /
/// `0086` before a landline written without its leading `0` is handled.
pub fn phone(raw: &str) -> Result<String, PhoneError> {
    let s: String = raw
        .nfkc()
        .filter(|&c| {
            !is_space(c) && !matches!(c, '-' | '(' | ')' | '\u{2010}'..='\u{2015}' | '\u{2212}')
        })
        .collect();
    if s.is_empty() {
        return Err(PhoneError::Empty);
    }
    let format_error = || PhoneError::Format {
        digits: s.chars().filter(char::is_ascii_digit).count(),
    };
    let (international, body) = match s.strip_prefix("+86").or_else(|| s.strip_prefix("0086")) {
        Some(body) => (true, body),
        None => (false, s.as_str()),
    };
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format_error());
    }
    if is_mobile(body) {
        return Ok(body.to_string());
    }
    if !international && body.len() == 13 && body.starts_with("86") && is_mobile(&body[2..]) {
        return Ok(body[2..].to_string());
    }
    let landline = if international && !body.starts_with('0') {
        xinjiang_landline(&format!("0{body}"))
    } else {
        xinjiang_landline(body)
    };
    landline.ok_or_else(format_error)
}

// ---------------------------------------------------------------------------
// Sex, addresses, free text
// ---------------------------------------------------------------------------

/// A sex code: `男`/`女` (also `男性`/`女性`), GB/T 2261.1 `1`/`2`, `M`/`F`,
/// `male`/`female`, any case and width. `0` (unknown), `9` (unstated) and
/// anything else give `None`.
pub fn sex(raw: &str) -> Option<Sex> {
    let s = nfkc(raw);
    match s.trim_matches(is_space).to_lowercase().as_str() {
        "男" | "男性" | "1" | "m" | "male" => Some(Sex::Male),
        "女" | "女性" | "2" | "f" | "female" => Some(Sex::Female),
        _ => None,
    }
}

/// A prefecture name without its administrative suffix (`喀什地区` → `喀什`).
fn prefecture_stem(prefecture: &str) -> &str {
    const SUFFIXES: [&str; 7] = [
        "回族自治州",
        "蒙古自治州",
        "柯尔克孜自治州",
        "哈萨克自治州",
        "自治州",
        "地区",
        "市",
    ];
    SUFFIXES
        .iter()
        .find_map(|s| prefecture.strip_suffix(s))
        .filter(|stem| !stem.is_empty())
        .unwrap_or(prefecture)
}

/// The known county-level area an address names, matched by full county
/// name (`天山区`, `疏附县`). When several match, prefer one whose
/// prefecture (full name or stem) is named before it, then the earliest
/// match, then the longest.
///
/// One pass of an Aho–Corasick automaton over the address finds every
/// county name and every prefecture stem, up to where no later county
/// could win (masking calls this for every address of a bulk export). The
/// same pass checks that the address is plain text NFKC leaves alone, as
/// nearly all are: only when it is not is it normalised (copied) and
/// searched again.
pub fn address_area(raw: &str) -> Option<&'static Area> {
    match scan_areas(raw, true) {
        Ok(found) => found.map(|(area, _)| area),
        Err(NotPlain) => normalised_address_area(raw),
    }
}

/// Where the county name of the area [`address_area`] finds first ends in
/// `raw` (masking keeps an address up to there); `None` when there is none
/// or `raw` has the name only once normalised.
pub fn address_area_end(raw: &str) -> Option<usize> {
    match scan_areas(raw, true) {
        // The address is its own normal form: the scan's place is in `raw`.
        Ok(found) => found.map(|(area, start)| start + area.county.len()),
        Err(NotPlain) => normalised_area_end(raw),
    }
}

/// [`address_area_end`] of an address that is not plain.
fn normalised_area_end(raw: &str) -> Option<usize> {
    let area = normalised_address_area(raw)?;
    Some(raw.find(area.county)? + area.county.len())
}

/// [`address_area`] of an address that may need normalising first.
fn normalised_address_area(raw: &str) -> Option<&'static Area> {
    let unchanged = !raw.chars().any(is_space)
        && unicode_normalization::is_nfkc_quick(raw.chars())
            == unicode_normalization::IsNormalized::Yes;
    let normalised: String;
    let addr = if unchanged {
        raw
    } else {
        normalised = raw.nfkc().filter(|&c| !is_space(c)).collect();
        normalised.as_str()
    };
    scan_areas(addr, false)
        .unwrap_or(None)
        .map(|(area, _)| area)
}

/// [`scan_areas`] met a byte of text that normalising might change.
struct NotPlain;

/// Bytes of text that NFKC and space removal leave alone: ASCII other
/// than whitespace, the lead bytes of U+4000–U+9FFF (CJK ideographs and
/// Yijing symbols, none with a decomposition) and continuation bytes,
/// which follow a lead byte already checked.
const PLAIN_BYTE: [bool; 256] = {
    let mut plain = [false; 256];
    let mut b = 0;
    while b < 256 {
        plain[b] = match b as u8 {
            b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' => false,
            0x00..=0x7F => true,
            0x80..=0xBF => true,
            0xE4..=0xE9 => true,
            _ => false,
        };
        b += 1;
    }
    plain
};

/// The search of [`address_area`] over `addr` as it is; with
/// `check_plain`, `NotPlain` as soon as a byte shows the address might
/// need normalising first. Bytes past the point where no county could beat
/// the best one found are not read: normalising them could not change the
/// result either.
fn scan_areas(addr: &str, check_plain: bool) -> Result<Option<(&'static Area, usize)>, NotPlain> {
    scan_names(AreaNames::get(), addr, check_plain).map(|(found, _)| found)
}

/// What [`scan_names`] found (the area and where its county's name
/// starts), and how many bytes of the address it read: the result is a
/// function of those bytes alone (and, when it read them all, of their
/// being all).
type Scan = (Option<(&'static Area, usize)>, usize);

/// [`scan_areas`] over the names of `names`, with the bytes it read.
fn scan_names(names: &AreaNames, addr: &str, check_plain: bool) -> Result<Scan, NotPlain> {
    // Only a county's first occurrence counts (as `str::find` would).
    let mut seen = [0u64; AREA_SLOTS / 64];
    // Where each prefecture stem first ends: a prefecture is named before
    // a county at `pos` when its stem (a prefix of its full name, so the
    // full name counts too) ends at or before `pos`. Matches come in order
    // of their end, so every such stem is seen before the county.
    let mut stem_end = [usize::MAX; STEM_SLOTS];
    // (area, (prefecture not named before it, position, longest first), reach)
    type Ranked = (
        &'static Area,
        (bool, usize, std::cmp::Reverse<usize>),
        usize,
    );
    let mut best: Option<Ranked> = None;
    // Every match of every name, in order of where it ends (what an
    // overlapping search reports), walking the DFA by hand: the crate's
    // overlapping iterator, through its generic state, costs a third more.
    let dfa = &names.automaton;
    // Nearly every address starts with the region's name, which names no
    // area: start from the state after it instead of walking it again.
    let (mut state, from) = match names.after_region {
        Some(after) if addr.starts_with(REGION) => (after, REGION.len()),
        _ => (
            dfa.start_state(Anchored::No)
                .expect("an unanchored DFA has an unanchored start"),
            0,
        ),
    };
    let mut read = addr.len();
    for (at, &byte) in addr.as_bytes().iter().enumerate().skip(from) {
        // Once the best so far has its prefecture named before it, only a
        // county starting at or before it could beat it, so one whose name
        // holds the best's: none ends from here on (the best's `reach`).
        // The rest is not read, not even to check that it is plain, since
        // normalising it could not move anything before it.
        if let Some((_, (false, start, _), reach)) = best
            && at >= start + reach
        {
            read = at;
            break;
        }
        if check_plain && !PLAIN_BYTE[usize::from(byte)] {
            return Err(NotPlain);
        }
        state = dfa.next_state(Anchored::No, state, byte);
        if !dfa.is_special(state) || !dfa.is_match(state) {
            continue;
        }
        let end = at + 1;
        for k in 0..dfa.match_len(state) {
            let pattern = dfa.match_pattern(state, k);
            let start = end - dfa.pattern_len(pattern);
            let name = &names.patterns[pattern.as_usize()];
            if let Some(stem) = name.stem {
                stem_end[stem] = stem_end[stem].min(end);
            }
            for &i in &name.counties {
                if seen[i / 64] & (1 << (i % 64)) != 0 {
                    continue;
                }
                seen[i / 64] |= 1 << (i % 64);
                let area = &names.areas[i];
                let prefecture_named = stem_end[names.stem_of[i]] <= start;
                let key = (
                    !prefecture_named,
                    start,
                    std::cmp::Reverse(area.county.len()),
                );
                // Ties keep the earlier area of the list, as `min_by_key` did.
                if best.as_ref().is_none_or(|(_, b, _)| key < *b) {
                    best = Some((area, key, name.reach));
                }
            }
        }
    }
    // A county counts at its first occurrence: where `str::find` finds it.
    Ok((best.map(|(area, (_, start, _), _)| (area, start)), read))
}

/// [`address_area_end`] for many addresses, as a bulk export masks them:
/// each search's result is remembered with the bytes it read, and an
/// address that begins with the same bytes has the same result without a
/// search (the search is a function of the bytes it reads). Addresses of
/// one county begin alike, so nearly every address after the first few of
/// its county is answered by one comparison; not those that name no
/// prefecture before the county (a city the region administers directly),
/// whose search reads to the end in case a later county names one.
pub struct AreaEndMemo {
    /// Two ways a set: an address's set holds the last two prefixes met there.
    slots: Box<[[MemoSlot; 2]]>,
    /// Per set, the way used last; a miss replaces the other.
    recent: Box<[u8]>,
}

/// Sets of an [`AreaEndMemo`], chosen by the bytes after [`REGION`]: more
/// than the counties of the list, so those of one export rarely share one.
const MEMO_SETS: usize = 512;
/// The longest prefix remembered; a search that read more is not.
const MEMO_PREFIX: usize = 96;

#[derive(Clone, Copy)]
struct MemoSlot {
    /// Bytes read by the search (0: empty slot).
    len: u8,
    /// The search read the whole address: only that very address matches.
    whole: bool,
    end: Option<u8>,
    prefix: [u8; MEMO_PREFIX],
}

impl MemoSlot {
    /// The remembered result, if `bytes` begins with the bytes its search read.
    fn answers(&self, bytes: &[u8]) -> Option<Option<usize>> {
        let n = usize::from(self.len);
        let fits = if self.whole {
            bytes.len() == n
        } else {
            bytes.len() >= n
        };
        (n > 0 && fits && bytes[..n] == self.prefix[..n]).then(|| self.end.map(usize::from))
    }
}

/// Empty, and without its sets until the first address.
impl Default for AreaEndMemo {
    fn default() -> Self {
        AreaEndMemo {
            slots: Box::new([]),
            recent: Box::new([]),
        }
    }
}

impl AreaEndMemo {
    /// [`address_area_end`] of `raw`.
    pub fn area_end(&mut self, raw: &str) -> Option<usize> {
        self.area_end_in(AreaNames::get(), raw)
    }

    /// [`AreaEndMemo::area_end`] over the names of `names` (a memo is for
    /// one list of names).
    fn area_end_in(&mut self, names: &AreaNames, raw: &str) -> Option<usize> {
        if self.slots.is_empty() {
            let empty = MemoSlot {
                len: 0,
                whole: false,
                end: None,
                prefix: [0; MEMO_PREFIX],
            };
            self.slots = vec![[empty; 2]; MEMO_SETS].into_boxed_slice();
            self.recent = vec![0; MEMO_SETS].into_boxed_slice();
        }
        let bytes = raw.as_bytes();
        let set = memo_set(bytes);
        for (way, slot) in self.slots[set].iter().enumerate() {
            if let Some(end) = slot.answers(bytes) {
                self.recent[set] = way as u8;
                return end;
            }
        }
        let (found, read) = match scan_names(names, raw, true) {
            Ok(scan) => scan,
            // Rare: normalised first, and not remembered.
            Err(NotPlain) => return normalised_area_end(raw),
        };
        let end = found.map(|(area, start)| start + area.county.len());
        // The county's name is among the bytes read, so `end <= read`.
        if (REGION.len()..=MEMO_PREFIX).contains(&read) {
            let way = 1 - self.recent[set];
            self.recent[set] = way;
            let slot = &mut self.slots[set][usize::from(way)];
            slot.len = read as u8;
            slot.whole = read == bytes.len();
            slot.end = end.map(|e| e as u8);
            slot.prefix[..read].copy_from_slice(&bytes[..read]);
        }
        end
    }
}

/// The set of an address: a hash of the 16 bytes after where the region's
/// name would end (the prefecture's and the county's names, mostly).
fn memo_set(bytes: &[u8]) -> usize {
    let from = REGION.len().min(bytes.len());
    let key = &bytes[from..(from + 16).min(bytes.len())];
    let mut words = [0u8; 16];
    words[..key.len()].copy_from_slice(key);
    let [a, b] =
        [&words[..8], &words[8..]].map(|w| u64::from_le_bytes(w.try_into().expect("eight bytes")));
    let h = (a ^ b.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 40) as usize % MEMO_SETS
}

/// Areas [`address_area`] can track (a test holds the list below it).
const AREA_SLOTS: usize = 512;
/// Distinct prefecture stems [`address_area`] can track.
const STEM_SLOTS: usize = 64;

/// One distinct name [`address_area`] looks for: the counties of that name
/// (indices into `AREAS`, in order) and the prefecture stem it is, if any.
struct AreaName {
    counties: Vec<usize>,
    stem: Option<usize>,
    /// For a county name: how far past its start a county name holding it
    /// (itself included) reaches, in bytes. Past that no match can start
    /// at or before it.
    reach: usize,
}

/// Every county name and prefecture stem in one automaton.
struct AreaNames {
    /// The areas searched for (`AREAS`, but for tests).
    areas: &'static [Area],
    automaton: aho_corasick::dfa::DFA,
    patterns: Vec<AreaName>,
    /// Per area, the number of its prefecture's stem.
    stem_of: Vec<usize>,
    /// The automaton's state after [`REGION`], when walking it meets no
    /// name and no byte that is not plain.
    after_region: Option<aho_corasick::automaton::StateID>,
}

/// The region's name, which begins nearly every address.
const REGION: &str = "新疆维吾尔自治区";

impl AreaNames {
    fn get() -> &'static AreaNames {
        static NAMES: std::sync::OnceLock<AreaNames> = std::sync::OnceLock::new();
        NAMES.get_or_init(|| AreaNames::new(areas::AREAS))
    }

    fn new(list: &'static [Area]) -> AreaNames {
        let mut strings: Vec<&'static str> = Vec::new();
        let mut patterns: Vec<AreaName> = Vec::new();
        let mut stems: Vec<&'static str> = Vec::new();
        let mut stem_of = Vec::with_capacity(list.len());
        let mut pattern_of = |name: &'static str, patterns: &mut Vec<AreaName>| {
            let at = index_or_push(&mut strings, name);
            if at == patterns.len() {
                patterns.push(AreaName {
                    counties: Vec::new(),
                    stem: None,
                    reach: name.len(),
                });
            }
            at
        };
        for (i, area) in list.iter().enumerate() {
            let county = pattern_of(area.county, &mut patterns);
            patterns[county].counties.push(i);
            let prefecture = prefecture_stem(area.prefecture);
            let stem = index_or_push(&mut stems, prefecture);
            let named = pattern_of(prefecture, &mut patterns);
            patterns[named].stem = Some(stem);
            stem_of.push(stem);
        }
        for (name, pattern) in strings.iter().zip(patterns.iter_mut()) {
            for holder in list.iter().map(|a| a.county) {
                for (at, _) in holder.match_indices(name) {
                    pattern.reach = pattern.reach.max(holder.len() - at);
                }
            }
        }
        assert!(
            list.len() <= AREA_SLOTS && stems.len() <= STEM_SLOTS,
            "the area list outgrew address_area's slots"
        );
        // No prefilter: the search walks every byte itself, and without
        // one the start state is not a special state to test for.
        let automaton = aho_corasick::dfa::DFA::builder()
            .prefilter(false)
            .build(&strings)
            .expect("county and prefecture names build an automaton");
        let start = automaton
            .start_state(Anchored::No)
            .expect("an unanchored DFA has an unanchored start");
        let after_region = REGION.bytes().try_fold(start, |state, byte| {
            let next = automaton.next_state(Anchored::No, state, byte);
            let named = automaton.is_special(next) && automaton.is_match(next);
            (PLAIN_BYTE[usize::from(byte)] && !named).then_some(next)
        });
        AreaNames {
            areas: list,
            automaton,
            patterns,
            stem_of,
            after_region,
        }
    }
}

/// The position of `item` in `list`, pushed at the end if it is not there.
fn index_or_push<T: PartialEq>(list: &mut Vec<T>, item: T) -> usize {
    list.iter().position(|x| *x == item).unwrap_or_else(|| {
        list.push(item);
        list.len() - 1
    })
}

/// Free text: NFKC, trimmed, internal whitespace runs collapsed to one space.
pub fn text(raw: &str) -> String {
    nfkc(raw)
        .split(is_space)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdNote::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
    }

    fn dt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").expect("test datetime")
    }

    fn id_ok(
        value: &str,
        birth: &str,
        sex: Sex,
        notes: &[IdNote],
    ) -> Result<IdNumber, IdNumberError> {
        Ok(IdNumber {
            value: value.to_string(),
            area_code: value[..6].to_string(),
            birth_date: d(birth),
            sex,
            notes: notes.to_vec(),
        })
    }

    #[test]
    fn id_numbers() {
        use IdNumberError as E;
        use Sex::*;
        let cases: Vec<(&str, Result<IdNumber, IdNumberError>)> = vec![
            // DOMAIN.md examples.
            (
                "11010519491231002X",
                id_ok("11010519491231002X", "1949-12-31", Female, &[UnknownArea]),
            ),
            (
                "650102198506150010",
                id_ok("650102198506150010", "1985-06-15", Male, &[]),
            ),
            (
                "650102850615001",
                id_ok("650102198506150010", "1985-06-15", Male, &[ConvertedFrom15]),
            ),
            // Messy forms.
            (
                "11010519491231002x",
                id_ok(
                    "11010519491231002X",
                    "1949-12-31",
                    Female,
                    &[LowerCaseX, UnknownArea],
                ),
            ),
            (
                "６５０１０２１９８５０６１５００１０",
                id_ok("650102198506150010", "1985-06-15", Male, &[FullWidth]),
            ),
            (
                "１１０１０５１９４９１２３１００２ｘ",
                id_ok(
                    "11010519491231002X",
                    "1949-12-31",
                    Female,
                    &[FullWidth, LowerCaseX, UnknownArea],
                ),
            ),
            (
                " 650102 19850615 0010 ",
                id_ok("650102198506150010", "1985-06-15", Male, &[Whitespace]),
            ),
            (
                "650102\u{3000}198506150010",
                id_ok("650102198506150010", "1985-06-15", Male, &[Whitespace]),
            ),
            (
                "650102\u{200B}198506150010",
                id_ok("650102198506150010", "1985-06-15", Male, &[Whitespace]),
            ),
            (
                "\t650102198506150010\u{3000}",
                id_ok("650102198506150010", "1985-06-15", Male, &[]),
            ),
            (
                "653101199001010021",
                id_ok("653101199001010021", "1990-01-01", Female, &[]),
            ),
            (
                "653199199001010035",
                id_ok("653199199001010035", "1990-01-01", Male, &[UnknownArea]),
            ),
            (
                "810000199001010019",
                id_ok("810000199001010019", "1990-01-01", Male, &[UnknownArea]),
            ),
            (
                "930156199001010013",
                id_ok("930156199001010013", "1990-01-01", Male, &[UnknownArea]),
            ),
            (
                "650102200002290028",
                id_ok("650102200002290028", "2000-02-29", Female, &[]),
            ),
            // Rejections.
            ("", Err(E::Empty)),
            (" \u{3000} ", Err(E::Empty)),
            (
                "650102198506150011",
                Err(E::Checksum {
                    expected: '0',
                    found: '1',
                }),
            ),
            (
                "110105194912310021",
                Err(E::Checksum {
                    expected: 'X',
                    found: '1',
                }),
            ),
            (
                "650102198506150019",
                Err(E::Checksum {
                    expected: '0',
                    found: '9',
                }),
            ),
            ("65010219850615001", Err(E::Length { len: 17 })),
            ("6501021985061500100", Err(E::Length { len: 19 })),
            (
                "65010219850615001A",
                Err(E::Character {
                    ch: 'A',
                    position: 18,
                }),
            ),
            (
                "6501021985061X0010",
                Err(E::Character {
                    ch: 'X',
                    position: 14,
                }),
            ),
            (
                "65010285061500X",
                Err(E::Character {
                    ch: 'X',
                    position: 15,
                }),
            ),
            (
                "650102-198506150010",
                Err(E::Character {
                    ch: '-',
                    position: 7,
                }),
            ),
            (
                "650102198502300018",
                Err(E::BirthDate {
                    digits: "19850230".to_string(),
                }),
            ),
            (
                "650102850230001",
                Err(E::BirthDate {
                    digits: "19850230".to_string(),
                }),
            ),
            (
                "650102190002290021",
                Err(E::BirthDate {
                    digits: "19000229".to_string(),
                }),
            ),
            (
                "650102189912310011",
                Err(E::BirthDate {
                    digits: "18991231".to_string(),
                }),
            ),
            (
                "650102210101010019",
                Err(E::BirthDate {
                    digits: "21010101".to_string(),
                }),
            ),
            (
                "000102199001010016",
                Err(E::AreaCode {
                    code: "000102".to_string(),
                }),
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(id_number(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn id_number_error_messages() {
        assert_eq!(
            id_number("650102198506150011").unwrap_err().to_string(),
            "id number check character is 1, expected 0"
        );
        assert_eq!(
            id_number("6501").unwrap_err().to_string(),
            "id number has 4 characters, expected 15 or 18"
        );
    }

    #[test]
    fn credit_codes() {
        use CreditCodeError as E;
        let ok = |value: &str, checksum_ok: bool| {
            Ok(CreditCode {
                value: value.to_string(),
                checksum_ok,
                area_code: value[2..8].to_string(),
            })
        };
        let cases: Vec<(&str, Result<CreditCode, CreditCodeError>)> = vec![
            ("91350100M000100Y43", ok("91350100M000100Y43", true)),
            ("91650100MA7777775D", ok("91650100MA7777775D", true)),
            ("91650100ma7777775d", ok("91650100MA7777775D", true)),
            (
                " 9165 0100 MA77 7777 5D\u{3000}",
                ok("91650100MA7777775D", true),
            ),
            (
                "９１６５０１００ＭＡ７７７７７７５Ｄ",
                ok("91650100MA7777775D", true),
            ),
            ("92653101MA12345671", ok("92653101MA12345671", true)),
            ("93652301MA00000017", ok("93652301MA00000017", true)),
            ("91650100MA7777775E", ok("91650100MA7777775E", false)),
            ("91350100M000100Y44", ok("91350100M000100Y44", false)),
            ("", Err(E::Empty)),
            ("   ", Err(E::Empty)),
            ("91650100MA777777", Err(E::Length { len: 16 })),
            ("91650100MA7777775D1", Err(E::Length { len: 19 })),
            (
                "91650100MI7777775D",
                Err(E::Character {
                    ch: 'I',
                    position: 10,
                }),
            ),
            (
                "91650100MA7777775O",
                Err(E::Character {
                    ch: 'O',
                    position: 18,
                }),
            ),
            (
                "91650100-MA7777775D",
                Err(E::Character {
                    ch: '-',
                    position: 9,
                }),
            ),
            (
                "9165010０MＡ7777775Ｓ",
                Err(E::Character {
                    ch: 'Ｓ',
                    position: 18,
                }),
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(credit_code(raw), expected, "input {raw:?}");
        }
    }

    /// Every middle-dot variant from DOMAIN.md plus the optional extras.
    const DOT_VARIANTS: [char; 16] = [
        '\u{00B7}', '\u{30FB}', '\u{FF65}', '\u{2022}', '\u{2027}', '\u{FF0E}', '.', '\u{FE52}',
        '\u{2219}', '\u{25CF}', '\u{0387}', '\u{2E31}', '\u{2E30}', '\u{22C5}', '\u{FF61}',
        '\u{2024}',
    ];

    #[test]
    fn every_dot_variant_becomes_u00b7() {
        for v in DOT_VARIANTS {
            for raw in [
                format!("买买提{v}艾力"),
                format!("买买提{v}{v}艾力"),
                format!("买买提 {v} 艾力"),
                format!("买买提\u{3000}{v}艾力"),
                format!("{v}买买提{v}艾力{v}"),
                format!("阿不都热合曼{v}买买提{v}艾力"),
            ] {
                let expected = if raw.starts_with("阿") {
                    "阿不都热合曼·买买提·艾力"
                } else {
                    "买买提·艾力"
                };
                assert_eq!(
                    person_name(&raw),
                    expected,
                    "variant U+{:04X} in {raw:?}",
                    v as u32
                );
                assert_eq!(
                    name_match_key(&raw),
                    expected.replace('·', ""),
                    "key of {raw:?}"
                );
            }
        }
    }

    #[test]
    fn person_names() {
        let cases = [
            ("买买提·艾力", "买买提·艾力"),
            ("买买提・艾力", "买买提·艾力"),
            ("买买提･艾力", "买买提·艾力"),
            ("买买提•艾力", "买买提·艾力"),
            ("买买提‧艾力", "买买提·艾力"),
            ("买买提．艾力", "买买提·艾力"),
            ("买买提.艾力", "买买提·艾力"),
            ("买买提﹒艾力", "买买提·艾力"),
            ("买买提∙艾力", "买买提·艾力"),
            ("买买提●艾力", "买买提·艾力"),
            ("买买提\u{0387}艾力", "买买提·艾力"),
            ("买买提⸱艾力", "买买提·艾力"),
            ("买买提 艾力", "买买提·艾力"),
            ("买买提\u{3000}艾力", "买买提·艾力"),
            ("买买提   艾力", "买买提·艾力"),
            ("买买提··艾力", "买买提·艾力"),
            ("买买提・・艾力", "买买提·艾力"),
            ("买买提 · 艾力", "买买提·艾力"),
            ("·买买提·艾力·", "买买提·艾力"),
            ("  买买提 . 艾力  ", "买买提·艾力"),
            ("阿不都热合曼・买买提 艾力", "阿不都热合曼·买买提·艾力"),
            ("买买提艾力", "买买提艾力"),
            ("买买提•", "买买提"),
            ("张三", "张三"),
            ("欧阳明华", "欧阳明华"),
            ("王  芳", "王芳"),
            (" 王 小明 ", "王小明"),
            ("ＺＨＡＮＧ　Ｓａｎ", "ZHANG San"),
            ("B. 盖茨", "B.盖茨"),
            ("B.盖茨", "B.盖茨"),
            ("B．盖茨", "B.盖茨"),
            ("J.K.罗琳", "J.K.罗琳"),
            ("B. Gates", "B. Gates"),
            ("John   Smith", "John Smith"),
            ("Smith Jr.", "Smith Jr."),
            ("", ""),
        ];
        for (raw, expected) in cases {
            let got = person_name(raw);
            assert_eq!(got, expected, "input {raw:?}");
            assert_eq!(person_name(&got), got, "idempotent on {raw:?}");
        }
    }

    #[test]
    fn name_match_keys() {
        let cases = [
            ("买买提·艾力", "买买提艾力"),
            ("买买提 艾力", "买买提艾力"),
            ("买买提艾力", "买买提艾力"),
            ("B. 盖茨", "b盖茨"),
            ("B.盖茨", "b盖茨"),
            ("John Smith", "johnsmith"),
            ("JOHN SMITH", "johnsmith"),
            ("王  芳", "王芳"),
        ];
        for (raw, expected) in cases {
            assert_eq!(name_match_key(raw), expected, "input {raw:?}");
            assert_eq!(
                name_match_key(&person_name(raw)),
                expected,
                "normalised {raw:?}"
            );
        }
    }

    #[test]
    fn name_pinyin_keys() {
        let cases = [
            // Spelling reforms (DB65/T 2189-2005) that sound the same.
            ("买买提·艾力", "maimaitiaili"),
            ("麦麦提・艾力", "maimaitiaili"),
            ("阿不都·热合曼", "abudureheman"),
            ("阿卜都 热合曼", "abudureheman"),
            // Dots, spaces and case never matter.
            ("B. 盖茨", "bgaici"),
            ("JOHN SMITH", "johnsmith"),
            // Surname readings.
            ("单雄信", "shanxiongxin"),
            ("曾国藩", "zengguofan"),
            ("解缙", "xiejin"),
            ("", ""),
        ];
        for (raw, expected) in cases {
            assert_eq!(name_pinyin(raw), expected, "input {raw:?}");
        }
        // A surname reading applies to the first character only.
        assert_eq!(name_pinyin("王单"), "wangdan");
        // Reforms that change the sound still score high.
        for (old, new) in [
            ("肉孜·买买提", "若孜·麦麦提"),
            ("吐尔逊·阿不都", "图尔荪·阿卜都"),
        ] {
            let (a, b) = (name_pinyin(old), name_pinyin(new));
            assert_ne!(a, b);
            assert!(strsim::jaro_winkler(&a, &b) > 0.9, "{a} {b}");
        }
    }

    #[test]
    fn id_digit_forms() {
        assert_eq!(
            id_digits(" 650102 19850615001x ").as_deref(),
            Some("65010219850615001X")
        );
        assert_eq!(
            id_digits("６５０１０２１９８５０６１５００１０").as_deref(),
            Some("650102198506150010")
        );
        assert_eq!(
            id_digits("65010219850615001").as_deref(),
            Some("65010219850615001")
        );
        assert_eq!(
            id_digits("6501021985061500101").as_deref(),
            Some("6501021985061500101")
        );
        assert_eq!(id_digits("650102-198506150010"), None);
        assert_eq!(id_digits("6501021985"), None);
        assert_eq!(id_digits(""), None);
    }

    #[test]
    fn dates() {
        let fmt = |raw: &str| {
            Err(DateError::Format {
                raw: raw.trim().to_string(),
            })
        };
        let inv = |raw: &str| {
            Err(DateError::Invalid {
                raw: raw.trim().to_string(),
            })
        };
        let jan5 = Ok(d("2024-01-05"));
        let cases = [
            ("2024-01-05", jan5.clone()),
            ("2024/1/5", jan5.clone()),
            ("2024.01.05", jan5.clone()),
            ("2024.1.5", jan5.clone()),
            ("20240105", jan5.clone()),
            ("2024年1月5日", jan5.clone()),
            ("2024年01月05日", jan5.clone()),
            ("2024年1月5", jan5.clone()),
            ("2024-1-5", jan5.clone()),
            ("２０２４－０１－０５", jan5.clone()),
            ("２０２４年１月５日", jan5.clone()),
            (" 2024-01-05\u{3000}", jan5.clone()),
            ("2024-01-05 13:04:05", jan5.clone()),
            ("2024-01-05T13:04:05Z", jan5.clone()),
            ("2024/1/5 0:00", jan5.clone()),
            ("20240105 13:04", jan5.clone()),
            ("20240105130405", jan5.clone()),
            ("2024年1月5日 08:00", jan5.clone()),
            ("2000-02-29", Ok(d("2000-02-29"))),
            ("", Err(DateError::Empty)),
            ("  ", Err(DateError::Empty)),
            ("19850230", inv("19850230")),
            ("2024-13-01", inv("2024-13-01")),
            ("2023-02-29", inv("2023-02-29")),
            ("0000-00-00", inv("0000-00-00")),
            ("2024年2月30日", inv("2024年2月30日")),
            ("2024-01", fmt("2024-01")),
            ("05/01/2024", fmt("05/01/2024")),
            ("2024-01/05", fmt("2024-01/05")),
            ("2024-001-05", fmt("2024-001-05")),
            ("2024-01-05x", fmt("2024-01-05x")),
            ("240105", fmt("240105")),
            ("abc", fmt("abc")),
            (" 45296 ", fmt("45296")),
        ];
        for (raw, expected) in cases {
            assert_eq!(date(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn datetimes() {
        let fmt = |raw: &str| {
            Err(DateError::Format {
                raw: raw.to_string(),
            })
        };
        let inv = |raw: &str| {
            Err(DateError::Invalid {
                raw: raw.to_string(),
            })
        };
        let t = |s: &str| Ok(dt(s));
        let cases = [
            ("2024-01-05 13:04:05", t("2024-01-05 13:04:05")),
            ("2024-01-05T13:04:05", t("2024-01-05 13:04:05")),
            ("2024/1/5 13:04", t("2024-01-05 13:04:00")),
            ("2024/1/5 9:04", t("2024-01-05 09:04:00")),
            ("20240105130405", t("2024-01-05 13:04:05")),
            ("202401051304", t("2024-01-05 13:04:00")),
            ("20240105 13:04:05", t("2024-01-05 13:04:05")),
            ("2024-01-05", t("2024-01-05 00:00:00")),
            ("2024年1月5日", t("2024-01-05 00:00:00")),
            ("2024-01-05 13:04:05.250", t("2024-01-05 13:04:05.250")),
            ("２０２４年１月５日　１３：０４", t("2024-01-05 13:04:00")),
            ("2024年1月5日13:04:05", t("2024-01-05 13:04:05")),
            ("2024-01-05   13:04:05", t("2024-01-05 13:04:05")),
            ("", Err(DateError::Empty)),
            ("2024-01-05 25:00", inv("2024-01-05 25:00")),
            ("2024-01-05 13:60", inv("2024-01-05 13:60")),
            ("20240105250000", inv("20240105250000")),
            ("2024-02-30 10:00", inv("2024-02-30 10:00")),
            // Explicit offsets are converted to China Standard Time.
            ("2024-01-05T13:04:05+08:00", t("2024-01-05 13:04:05")),
            ("2024-01-05T13:04:05+0800", t("2024-01-05 13:04:05")),
            ("2024-01-05 05:04:05Z", t("2024-01-05 13:04:05")),
            ("2024-01-05 05:04:05+00", t("2024-01-05 13:04:05")),
            (
                "2024-01-05 20:04:05.250-05:00",
                t("2024-01-06 09:04:05.250"),
            ),
            ("2024-01-05 13:04:05+8", fmt("2024-01-05 13:04:05+8")),
            (
                "2024-01-05 13:04:05+08:00x",
                fmt("2024-01-05 13:04:05+08:00x"),
            ),
            (
                "2024-01-05 13:04:05+15:00",
                inv("2024-01-05 13:04:05+15:00"),
            ),
            ("2024-01-05 13", fmt("2024-01-05 13")),
            ("2024-01-05 13:4", fmt("2024-01-05 13:4")),
            ("2024010513", fmt("2024010513")),
        ];
        for (raw, expected) in cases {
            assert_eq!(datetime(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn phones() {
        let fmt = |digits| Err(PhoneError::Format { digits });
        let m = Ok("13912345678".to_string());
        let cases = [
            ("13912345678", m.clone()),
            ("139 1234 5678", m.clone()),
            ("139-1234-5678", m.clone()),
            ("+86 139 1234 5678", m.clone()),
            ("+8613912345678", m.clone()),
            ("0086 13912345678", m.clone()),
            ("8613912345678", m.clone()),
            ("(+86)139-1234-5678", m.clone()),
            ("１３９１２３４５６７８", m.clone()),
            ("139\u{3000}1234\u{3000}5678", m.clone()),
            ("0991-1234567", Ok("0991-1234567".to_string())),
            ("(0991)1234567", Ok("0991-1234567".to_string())),
            ("（０９９１）１２３４５６７", Ok("0991-1234567".to_string())),
            ("0991 12345678", Ok("0991-12345678".to_string())),
            ("09011234567", Ok("0901-1234567".to_string())),
            ("0998—2345678", Ok("0998-2345678".to_string())),
            ("0990-6234567", Ok("0990-6234567".to_string())),
            ("+86 991 1234567", Ok("0991-1234567".to_string())),
            ("", Err(PhoneError::Empty)),
            (" - ", Err(PhoneError::Empty)),
            ("1234567", fmt(7)),
            ("010-12345678", fmt(11)),
            ("0900-1234567", fmt(11)),
            ("0910-1234567", fmt(11)),
            ("1391234567", fmt(10)),
            ("139123456789", fmt(12)),
            ("0991-123456", fmt(10)),
            ("23912345678", fmt(11)),
            ("abc", fmt(0)),
            ("139x1234x5678", fmt(11)),
        ];
        for (raw, expected) in cases {
            assert_eq!(phone(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn sex_codes() {
        let cases = [
            ("男", Some(Sex::Male)),
            ("女", Some(Sex::Female)),
            (" 男 ", Some(Sex::Male)),
            ("男性", Some(Sex::Male)),
            ("女性", Some(Sex::Female)),
            ("1", Some(Sex::Male)),
            ("2", Some(Sex::Female)),
            ("１", Some(Sex::Male)),
            ("M", Some(Sex::Male)),
            ("f", Some(Sex::Female)),
            ("male", Some(Sex::Male)),
            ("Female", Some(Sex::Female)),
            ("MALE\u{3000}", Some(Sex::Male)),
            ("0", None),
            ("9", None),
            ("未知", None),
            ("", None),
            ("x", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(sex(raw), expected, "input {raw:?}");
        }
        assert_eq!(Sex::Male.label(), "男");
        assert_eq!(Sex::Female.label(), "女");
    }

    #[test]
    fn address_areas() {
        let cases = [
            (
                "新疆维吾尔自治区乌鲁木齐市天山区解放北路1号",
                Some("650102"),
            ),
            ("乌鲁木齐市沙依巴克区阿克苏路12号", Some("650103")),
            ("乌鲁木齐 新市区 北京南路", Some("650104")),
            ("喀什地区疏附县托克扎克镇", Some("653121")),
            ("和田地区和田县拉依喀乡", Some("653221")),
            ("和田地区和田市北京西路", Some("653201")),
            ("伊犁哈萨克自治州伊宁县", Some("654021")),
            ("伊宁市解放路", Some("654002")),
            ("石河子市北子午路", Some("659001")),
            ("巴州库尔勒市人民东路", Some("652801")),
            // Earliest match wins when neither names its prefecture first.
            ("乌苏市塔城市路", Some("654202")),
            // A county whose prefecture is named before it beats an earlier one.
            ("伊宁市路 阿克苏地区温宿县", Some("652922")),
            ("北京市朝阳区", None),
            ("", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(address_area(raw).map(|a| a.code), expected, "input {raw:?}");
        }
    }

    /// The one-pass search answers as the plain one (every county `find`
    /// in the whole normalised address) on every address the generator
    /// writes, noise included, and on county names run together.
    #[test]
    fn address_areas_match_the_plain_search() {
        fn plain(raw: &str) -> Option<&'static Area> {
            let addr: String = raw.nfkc().filter(|&c| !is_space(c)).collect();
            areas::AREAS
                .iter()
                .filter_map(|area| {
                    let pos = addr.find(area.county)?;
                    let before = &addr[..pos];
                    let named = before.contains(area.prefecture)
                        || before.contains(prefecture_stem(area.prefecture));
                    Some((area, !named, pos, std::cmp::Reverse(area.county.len())))
                })
                .min_by_key(|&(_, not_named, pos, len)| (not_named, pos, len))
                .map(|(area, ..)| area)
        }
        let names = AreaNames::get();
        assert!(names.stem_of.len() == areas::AREAS.len());
        let mut inputs: Vec<String> = Vec::new();
        for a in areas::AREAS {
            for b in areas::AREAS.iter().step_by(7) {
                inputs.push(format!("{}{}{}路3号", a.county, b.prefecture, b.county));
                inputs.push(format!(
                    "新疆维吾尔自治区{}　{} ５号",
                    a.prefecture, a.county
                ));
                inputs.push(format!("{}{}", prefecture_stem(b.prefecture), a.county));
                // A named county, then another one and text to normalise.
                inputs.push(format!(
                    "{}{}{}{}·５号",
                    a.prefecture, a.county, b.prefecture, b.county
                ));
                // The stem right before the county still names it.
                inputs.push(format!(
                    "{}{}{}路",
                    a.county,
                    prefecture_stem(b.prefecture),
                    b.county
                ));
            }
            // Text the one pass must hand to normalisation: a middle dot
            // (left alone by NFKC), spaces inside a county's name, full-width
            // digits, a no-break space, and an ideograph outside the plain
            // range.
            inputs.push(format!("{}·{}买买提·艾力路", a.prefecture, a.county));
            let split = a.county.chars().next().map_or(0, char::len_utf8);
            let (head, tail) = a.county.split_at(split);
            inputs.push(format!("{}{head}\u{b}{tail}12号", a.prefecture));
            inputs.push(format!("{head}\u{3000}{tail}{}", a.prefecture));
            inputs.push(format!(
                "{}{}１２号",
                prefecture_stem(a.prefecture),
                a.county
            ));
            inputs.push(format!("{}\u{a0}{}㐀路", a.prefecture, a.county));
        }
        // As the data generator writes them.
        for a in areas::AREAS {
            inputs.push(format!(
                "新疆维吾尔自治区{}{}英阿瓦提乡3村5组12号",
                a.prefecture, a.county
            ));
            inputs.push(format!(
                "新疆维吾尔自治区{}人民路88号3栋2单元1502室",
                a.county
            ));
        }
        for raw in &inputs {
            let found = plain(raw);
            assert_eq!(
                address_area(raw).map(|a| a.code),
                found.map(|a| a.code),
                "{raw}"
            );
            assert_eq!(
                address_area_end(raw),
                found.and_then(|a| raw.find(a.county).map(|at| at + a.county.len())),
                "{raw}"
            );
        }
        // Nearly every address starts with the region's name: the scan
        // starts after it, and the inputs above cover both.
        assert!(AreaNames::get().after_region.is_some());

        // The memo answers as the search does: through all of them twice,
        // and through every prefix of some of them, longest and shortest
        // first (an address that ends where another's search stopped, or
        // goes on past where another's read all of it).
        let mut memo = AreaEndMemo::default();
        for raw in inputs.iter().chain(&inputs) {
            assert_eq!(memo.area_end(raw), address_area_end(raw), "memo: {raw}");
        }
        for raw in inputs.iter().step_by(5) {
            let cuts: Vec<usize> = raw.char_indices().map(|(at, _)| at).skip(1).collect();
            for at in cuts.iter().rev().chain(&cuts) {
                let cut = &raw[..*at];
                assert_eq!(memo.area_end(cut), address_area_end(cut), "memo: {cut}");
            }
        }
    }

    /// The scan stops once no county could beat the best found, which
    /// depends on which names hold others. No two counties of the real list
    /// nest, so a list where they do checks where it stops.
    #[test]
    fn a_county_whose_name_holds_the_best_one_is_still_found() {
        const fn area(code: &'static str, prefecture: &'static str, county: &'static str) -> Area {
            Area {
                code,
                prefecture,
                county,
            }
        }
        static NESTED: [Area; 4] = [
            area("659901", "甲地区", "乙县"),
            area("659902", "甲地区", "乙县城区"),
            area("659903", "甲地区", "县城"),
            area("659904", "丁地区", "戊县"),
        ];
        let names = AreaNames::new(&NESTED);
        let found = |addr: &str| {
            scan_names(&names, addr, true)
                .unwrap_or_else(|NotPlain| panic!("{addr} is plain"))
                .0
                .map(|(area, at)| (area.code, at))
        };
        let at = |addr: &str, county: &str| addr.find(county).expect("county in address");
        // Named as early and longer: the longer name wins, though it ends
        // past where the shorter one would have stopped the scan.
        let a = "新疆维吾尔自治区甲地区乙县城区5号";
        assert_eq!(found(a), Some(("659902", at(a, "乙县城区"))));
        // Starting later, a county whose name overlaps the best's loses.
        let b = "甲地区乙县城3号";
        assert_eq!(found(b), Some(("659901", at(b, "乙县"))));
        // Once the best is settled nothing after it is read: not a county,
        // nor text that would need normalising.
        let c = "甲地区乙县戊县　１２号";
        assert_eq!(found(c), Some(("659901", at(c, "乙县"))));
        // Without its prefecture before it, a county can still be beaten by
        // a later one that has it, so the scan reads on: here into text
        // that needs normalising, and here to a county that beats it.
        assert!(scan_names(&names, "乙县１２号丁地区戊县", true).is_err());
        let d = "乙县丁地区戊县１２号";
        assert_eq!(found(d), Some(("659904", at(d, "戊县"))));

        // A memo over these names answers as the search does, where a
        // shorter name's search must read on to where a longer one ends:
        // every prefix of such addresses, in both orders, twice.
        let mut memo = AreaEndMemo::default();
        let addresses = [
            "新疆维吾尔自治区甲地区乙县城区5号",
            "新疆维吾尔自治区甲地区乙县城5号",
            "新疆维吾尔自治区甲地区乙县5号",
            "新疆维吾尔自治区甲地区县城乙县5号",
            "新疆维吾尔自治区乙县丁地区戊县5号",
            "新疆维吾尔自治区丁地区戊县甲地区乙县城区",
        ];
        let mut cuts: Vec<&str> = addresses
            .iter()
            .flat_map(|a| a.char_indices().map(|(at, _)| &a[..at]).skip(1))
            .chain(addresses)
            .collect();
        let want = |addr: &str| {
            found(addr).map(|(code, start)| {
                let area = NESTED.iter().find(|a| a.code == code).expect("listed");
                start + area.county.len()
            })
        };
        for _ in 0..2 {
            for addr in cuts.iter().chain(cuts.iter().rev()) {
                assert_eq!(memo.area_end_in(&names, addr), want(addr), "memo: {addr}");
            }
            cuts.reverse();
        }
        // And each one right after each other one, in a memo of their own:
        // nothing between them to push the first out.
        for first in &cuts {
            for then in &cuts {
                let mut memo = AreaEndMemo::default();
                memo.area_end_in(&names, first);
                assert_eq!(
                    memo.area_end_in(&names, then),
                    want(then),
                    "memo: {then} after {first}"
                );
            }
        }
    }

    #[test]
    fn texts() {
        let cases = [
            ("  a  b\t c  ", "a b c"),
            ("ＡＢＣ　１２３", "ABC 123"),
            ("\u{3000}库尔勒市\u{3000}\n", "库尔勒市"),
            ("line one\r\nline two", "line one line two"),
            ("", ""),
        ];
        for (raw, expected) in cases {
            assert_eq!(text(raw), expected, "input {raw:?}");
        }
    }
}
