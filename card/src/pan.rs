//! A primary account number: parsed from what people type, Luhn-checked, wiped from memory
//! when dropped, and printed only masked.

use std::fmt;
use std::str::FromStr;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::mask::{MaskPolicy, mask_digits};

/// The fewest digits a brand issues (some Maestro cards; ISO/IEC 7812 allows 8, no brand does).
pub const MIN_PAN_DIGITS: usize = 12;
/// The most digits a brand issues (ISO/IEC 7812).
pub const MAX_PAN_DIGITS: usize = 19;

/// Why a text is not a card number. The messages never quote the input: it may be a real PAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PanError {
    #[error("a card number is digits, optionally grouped by single spaces or dashes")]
    Malformed,
    #[error("a card number has 12 to 19 digits, this one has {0}")]
    WrongLength(usize),
    #[error("the card number fails its Luhn check digit")]
    Luhn,
}

/// A card number of 12–19 digits that passed the Luhn check.
///
/// The digits live in a fixed array that is zeroized on drop (no heap copy is made while
/// parsing); `Debug` and `Display` print the last-4 masked form, so a `Pan` that reaches a log
/// line or a panic message does not leak. [`Pan::expose_digits`] is the one way to the digits.
pub struct Pan {
    digits: [u8; MAX_PAN_DIGITS],
    len: u8,
}

impl Pan {
    /// Parses digits optionally grouped by single spaces or dashes ("4111 1111 1111 1111",
    /// "4111-1111-1111-1111"); whitespace around the number is ignored.
    pub fn parse(text: &str) -> Result<Pan, PanError> {
        Pan::parse_bytes(text.as_bytes())
    }

    /// [`Pan::parse`] over bytes (a value read from Redis, a line of stdin).
    pub fn parse_bytes(text: &[u8]) -> Result<Pan, PanError> {
        let text = text.trim_ascii();
        // Built in place so that a failed parse is zeroized by Drop like a good one.
        let mut pan = Pan {
            digits: [0; MAX_PAN_DIGITS],
            len: 0,
        };
        let mut count = 0usize;
        let mut after_separator = false;
        for (i, &b) in text.iter().enumerate() {
            match b {
                b'0'..=b'9' => {
                    if count < MAX_PAN_DIGITS {
                        pan.digits[count] = b;
                    }
                    count += 1;
                    after_separator = false;
                }
                // A separator sits between two digits: not first, not doubled (the last
                // byte cannot be one either: checked after the loop).
                b' ' | b'-' if i > 0 && !after_separator => after_separator = true,
                _ => return Err(PanError::Malformed),
            }
        }
        if after_separator || count == 0 {
            return Err(PanError::Malformed);
        }
        if !(MIN_PAN_DIGITS..=MAX_PAN_DIGITS).contains(&count) {
            return Err(PanError::WrongLength(count));
        }
        pan.len = count as u8; // count <= 19, checked just above
        if !luhn_valid(pan.digits()) {
            return Err(PanError::Luhn);
        }
        Ok(pan)
    }

    /// The digits, without separators, as ASCII. Everything that prints or stores them is
    /// handling a plaintext PAN.
    pub fn expose_digits(&self) -> &str {
        // Only ASCII digits are ever stored in `digits`.
        std::str::from_utf8(self.digits()).expect("PAN digits are ASCII")
    }

    /// How many digits the number has (12–19).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Always false: a `Pan` has at least 12 digits (here for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number masked under `policy`, e.g. `411111******1111` or `************1111`.
    pub fn masked(&self, policy: MaskPolicy) -> String {
        mask_digits(self.digits(), policy)
    }

    fn digits(&self) -> &[u8] {
        &self.digits[..self.len as usize]
    }
}

impl Drop for Pan {
    fn drop(&mut self) {
        self.digits.zeroize();
        self.len.zeroize();
    }
}

impl ZeroizeOnDrop for Pan {}

impl FromStr for Pan {
    type Err = PanError;

    fn from_str(s: &str) -> Result<Pan, PanError> {
        Pan::parse(s)
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked(MaskPolicy::Last4))
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked(MaskPolicy::Last4))
    }
}

/// The Luhn (mod 10) check over ASCII digits: doubling every second digit from the right,
/// the sum is a multiple of 10. False for an empty slice or a non-digit byte.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Appends the Luhn check digit to `body` (ASCII digits).
    pub(crate) fn with_check_digit(body: &str) -> String {
        (0..=9)
            .map(|d| format!("{body}{d}"))
            .find(|s| luhn_valid(s.as_bytes()))
            .expect("one of ten check digits is valid")
    }

    #[test]
    fn parses_test_pans_in_every_usual_format() {
        for text in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "  4111 1111-1111 1111\n",
            "378282246310005",     // Amex, 15
            "3782 822463 10005",   // Amex grouping
            "6011111111111117",    // Discover
            "5555555555554444",    // Mastercard
            "2223003122003222",    // Mastercard 2-series
            "4222222222222",       // Visa, 13
            "6759649826438453",    // Maestro
            "4000000000000000006", // 19 digits
        ] {
            let pan = Pan::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(!pan.expose_digits().contains([' ', '-']));
        }
    }

    #[test]
    fn refuses_what_is_not_a_card_number() {
        assert_eq!(Pan::parse("").unwrap_err(), PanError::Malformed);
        assert_eq!(Pan::parse("   ").unwrap_err(), PanError::Malformed);
        assert_eq!(
            Pan::parse("4111x1111111111111").unwrap_err(),
            PanError::Malformed
        );
        assert_eq!(
            Pan::parse("4111  1111111111111").unwrap_err(),
            PanError::Malformed
        );
        assert_eq!(
            Pan::parse("4111--1111111111111").unwrap_err(),
            PanError::Malformed
        );
        assert_eq!(
            Pan::parse("-4111111111111111").unwrap_err(),
            PanError::Malformed
        );
        assert_eq!(
            Pan::parse("4111111111111111-").unwrap_err(),
            PanError::Malformed
        );
        assert_eq!(
            Pan::parse("41111111111").unwrap_err(),
            PanError::WrongLength(11)
        );
        assert_eq!(
            Pan::parse("41111111111111111111").unwrap_err(),
            PanError::WrongLength(20)
        );
        assert_eq!(Pan::parse("4111111111111112").unwrap_err(), PanError::Luhn);
        assert_eq!(
            Pan::parse("٤١١١١١١١١١١١١١١١").unwrap_err(),
            PanError::Malformed
        );
    }

    #[test]
    fn debug_and_display_never_show_more_than_the_last_four() {
        let pan = Pan::parse("4111 1111 1111 1111").unwrap();
        assert_eq!(format!("{pan}"), "************1111");
        assert_eq!(format!("{pan:?}"), "Pan(************1111)");
        assert_eq!(pan.masked(MaskPolicy::First6Last4), "411111******1111");
    }

    #[test]
    fn luhn_known_answers() {
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"79927398710"));
        assert!(luhn_valid(b"0"));
        assert!(!luhn_valid(b""));
        assert!(!luhn_valid(b"12a4"));
    }

    proptest! {
        #[test]
        fn a_luhn_completed_number_parses_in_any_grouping(
            body in "[0-9]{11,18}",
            seps in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("-")], 19),
        ) {
            let digits = with_check_digit(&body);
            let mut text = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 {
                    text.push_str(seps[i]);
                }
                text.push(c);
            }
            let pan = Pan::parse(&text).unwrap();
            prop_assert_eq!(pan.expose_digits(), digits.as_str());
            prop_assert_eq!(pan.len(), digits.len());
        }

        #[test]
        fn changing_one_digit_breaks_luhn(body in "[0-9]{11,18}", pos in 0usize..19, delta in 1u8..10) {
            let digits = with_check_digit(&body).into_bytes();
            let mut changed = digits.clone();
            let pos = pos % changed.len();
            changed[pos] = b'0' + (changed[pos] - b'0' + delta) % 10;
            prop_assert!(!luhn_valid(&changed));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = Pan::parse(&text);
        }
    }
}
