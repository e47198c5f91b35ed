//! Check-character algorithms for the two national identifiers: the resident
//! identity card number (GB 11643-1999) and the unified social credit code
//! (GB 32100-2015). Pure functions over ASCII; normalisation of messy input
//! lives in `ingest::normalise`.

/// Weights of the first 17 digits of a resident ID number.
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// `S mod 11` → check character.
const ID_CHECK: [u8; 11] = *b"10X98765432";

/// The check character of a resident ID number from its first 17 ASCII
/// digits, or `None` when `first17` is not 17 ASCII digits.
pub fn id_number_check_char(first17: &[u8]) -> Option<u8> {
    if first17.len() != 17 || !first17.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = first17
        .iter()
        .zip(ID_WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    Some(ID_CHECK[(sum % 11) as usize])
}

/// The alphabet of unified social credit codes; a character's value is its
/// position (no I, O, S, V, Z).
pub const CREDIT_CODE_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const CREDIT_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// Value of one credit-code character, or `None` outside the alphabet.
pub fn credit_code_char_value(c: u8) -> Option<u32> {
    CREDIT_CODE_ALPHABET
        .iter()
        .position(|&a| a == c)
        .map(|p| p as u32)
}

/// The check character of a unified social credit code from its first 17
/// characters, or `None` when they are not 17 characters of the alphabet.
pub fn credit_code_check_char(first17: &[u8]) -> Option<u8> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (&c, w) in first17.iter().zip(CREDIT_WEIGHTS) {
        sum += credit_code_char_value(c)? * w;
    }
    let check = (31 - sum % 31) % 31;
    Some(CREDIT_CODE_ALPHABET[check as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_number_examples_from_domain_md() {
        assert_eq!(id_number_check_char(b"11010519491231002"), Some(b'X'));
        assert_eq!(id_number_check_char(b"65010219850615001"), Some(b'0'));
        assert_eq!(id_number_check_char(b"6501021985061500"), None);
        assert_eq!(id_number_check_char(b"6501021985061500a"), None);
    }

    #[test]
    fn credit_code_examples_from_domain_md() {
        assert_eq!(credit_code_check_char(b"91350100M000100Y4"), Some(b'3'));
        assert_eq!(credit_code_check_char(b"91650100MA7777775"), Some(b'D'));
        assert_eq!(credit_code_check_char(b"91650100MA777777I"), None);
    }
}
