//! Finding plaintext card numbers inside arbitrary bytes (key names, values, members): what
//! `tallykv-card scan` reports, and how it masks names it prints.
//!
//! A candidate is a run of digits, optionally grouped by single spaces or dashes, delimited by
//! anything that is not a digit (a longer run of digits is not a PAN). A run whose digits
//! number 13–19 and pass Luhn is reported; if the grouped run as a whole does not qualify,
//! each of its ungrouped digit groups is tried on its own ("2024-01-15 4111111111111111" holds
//! one). The brand is named when the leading digits and length match one; callers that gate a
//! deployment on the result may ask for brand matches only, because one in ten 13-digit
//! numbers (say, millisecond timestamps) passes Luhn.

use std::fmt;
use std::ops::Range;

use zeroize::Zeroizing;

use crate::mask::{MaskPolicy, mask_digits};
use crate::pan::luhn_valid;

/// The digit counts a discovered number may have (the 13–19; 12-digit Maestro numbers
/// are too rare to be worth the false positives).
pub const FIND_DIGITS: Range<usize> = 13..20;

/// A card brand, recognised from a number's leading digits and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    Diners,
    UnionPay,
    Maestro,
}

impl Brand {
    pub fn name(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::Diners => "diners",
            Brand::UnionPay => "unionpay",
            Brand::Maestro => "maestro",
        }
    }
}

impl fmt::Display for Brand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of the brand table: numbers whose first `digits` digits lie in `low..=high` and
/// whose length is in `lengths`.
struct BrandRange {
    brand: Brand,
    digits: usize,
    low: u32,
    high: u32,
    lengths: Range<usize>,
}

const fn row(
    brand: Brand,
    digits: usize,
    low: u32,
    high: u32,
    lengths: Range<usize>,
) -> BrandRange {
    BrandRange {
        brand,
        digits,
        low,
        high,
        lengths,
    }
}

/// The issuer ranges the brands publish, most specific first (Discover's 622126–622925 sits
/// inside UnionPay's 62). Visa issues 13, 16 and 19 digits; the table lists 13–19 and
/// `brand_of` narrows it.
const BRANDS: &[BrandRange] = &[
    row(Brand::Visa, 1, 4, 4, 13..20),
    row(Brand::Mastercard, 2, 51, 55, 16..17),
    row(Brand::Mastercard, 4, 2221, 2720, 16..17),
    row(Brand::Amex, 2, 34, 34, 15..16),
    row(Brand::Amex, 2, 37, 37, 15..16),
    row(Brand::Discover, 4, 6011, 6011, 16..20),
    row(Brand::Discover, 6, 622126, 622925, 16..20),
    row(Brand::Discover, 3, 644, 649, 16..20),
    row(Brand::Discover, 2, 65, 65, 16..20),
    row(Brand::Jcb, 4, 3528, 3589, 16..20),
    row(Brand::Diners, 3, 300, 305, 14..20),
    row(Brand::Diners, 4, 3095, 3095, 14..20),
    row(Brand::Diners, 2, 36, 36, 14..20),
    row(Brand::Diners, 2, 38, 39, 14..20),
    row(Brand::UnionPay, 2, 62, 62, 16..20),
    row(Brand::Maestro, 4, 5018, 5018, 12..20),
    row(Brand::Maestro, 4, 5020, 5020, 12..20),
    row(Brand::Maestro, 4, 5038, 5038, 12..20),
    row(Brand::Maestro, 4, 5893, 5893, 12..20),
    row(Brand::Maestro, 4, 6304, 6304, 12..20),
    row(Brand::Maestro, 4, 6759, 6759, 12..20),
    row(Brand::Maestro, 4, 6761, 6763, 12..20),
];

/// The brand whose range and length `digits` (ASCII) match, if any.
pub fn brand_of(digits: &[u8]) -> Option<Brand> {
    BRANDS.iter().find_map(|r| {
        if !r.lengths.contains(&digits.len()) || digits.len() < r.digits {
            return None;
        }
        if r.brand == Brand::Visa && ![13, 16, 19].contains(&digits.len()) {
            return None;
        }
        let prefix = digits[..r.digits]
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d.wrapping_sub(b'0')));
        (r.low..=r.high).contains(&prefix).then_some(r.brand)
    })
}

/// A plaintext card number found in a byte string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where the number sits, separators included.
    pub range: Range<usize>,
    /// The number with at most its first six and last four digits shown.
    pub masked: String,
    pub brand: Option<Brand>,
}

/// Every Luhn-valid run of 13–19 digits in `bytes` (see the module comment); with
/// `brands_only`, only those that also match a brand's range and length.
pub fn find_pans(bytes: &[u8], brands_only: bool) -> Vec<Found> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut groups: Vec<Range<usize>> = Vec::new();
        loop {
            let g = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            groups.push(g..i);
            let grouped = i + 1 < bytes.len()
                && matches!(bytes[i], b' ' | b'-')
                && bytes[i + 1].is_ascii_digit();
            if !grouped {
                break;
            }
            i += 1;
        }
        let digits: Zeroizing<Vec<u8>> = Zeroizing::new(
            groups
                .iter()
                .flat_map(|g| bytes[g.clone()].iter().copied())
                .collect(),
        );
        if let Some(f) = candidate(&digits, start..i, brands_only) {
            found.push(f);
        } else if groups.len() > 1 {
            found.extend(
                groups
                    .into_iter()
                    .filter_map(|g| candidate(&bytes[g.clone()], g, brands_only)),
            );
        }
    }
    found
}

fn candidate(digits: &[u8], range: Range<usize>, brands_only: bool) -> Option<Found> {
    if !FIND_DIGITS.contains(&digits.len()) || !luhn_valid(digits) {
        return None;
    }
    let brand = brand_of(digits);
    if brands_only && brand.is_none() {
        return None;
    }
    Some(Found {
        range,
        masked: mask_digits(digits, MaskPolicy::First6Last4),
        brand,
    })
}

/// `bytes` with every number `find_pans` finds masked in place (first six and last four
/// shown, separators kept): how a key or field name that holds a PAN is printed.
pub fn mask_pans(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for f in find_pans(bytes, false) {
        let total = bytes[f.range.clone()]
            .iter()
            .filter(|b| b.is_ascii_digit())
            .count();
        let mut n = 0;
        for b in &mut out[f.range.clone()] {
            if b.is_ascii_digit() {
                if n >= 6 && n < total - 4 {
                    *b = b'*';
                }
                n += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(text: &str) -> Vec<String> {
        find_pans(text.as_bytes(), false)
            .into_iter()
            .map(|f| f.masked)
            .collect()
    }

    #[test]
    fn finds_test_pans_with_and_without_separators() {
        assert_eq!(masked("4111111111111111"), ["411111******1111"]);
        assert_eq!(masked("card=4111 1111 1111 1111;"), ["411111******1111"]);
        assert_eq!(
            masked("{\"pan\":\"5555-5555-5555-4444\"}"),
            ["555555******4444"]
        );
        assert_eq!(masked("amex 3782 822463 10005 ok"), ["378282*****0005"]);
        assert_eq!(masked("a4222222222222b"), ["422222***2222"]);
        assert_eq!(masked("2024-01-15 4111111111111111"), ["411111******1111"]);
    }

    #[test]
    fn ignores_what_is_not_a_pan() {
        assert!(
            masked("41111111111111111111").is_empty(),
            "a 20-digit run is not a PAN"
        );
        assert!(masked("4111111111111112").is_empty(), "Luhn");
        assert!(
            masked("411111111111").is_empty(),
            "12 digits are not reported"
        );
        assert!(
            masked("4111  1111 1111 1111").is_empty(),
            "a double space splits the run"
        );
        assert!(masked("amount 1234.56 at 2024-01-15T10:20:30Z").is_empty());
        assert!(masked("").is_empty());
    }

    #[test]
    fn brands() {
        assert_eq!(brand_of(b"4111111111111111"), Some(Brand::Visa));
        assert_eq!(brand_of(b"4222222222222"), Some(Brand::Visa));
        assert_eq!(
            brand_of(b"41111111111111"),
            None,
            "Visa issues no 14-digit numbers"
        );
        assert_eq!(brand_of(b"5555555555554444"), Some(Brand::Mastercard));
        assert_eq!(brand_of(b"2223003122003222"), Some(Brand::Mastercard));
        assert_eq!(brand_of(b"378282246310005"), Some(Brand::Amex));
        assert_eq!(brand_of(b"6011111111111117"), Some(Brand::Discover));
        assert_eq!(brand_of(b"6221260000000000"), Some(Brand::Discover));
        assert_eq!(brand_of(b"6200000000000005"), Some(Brand::UnionPay));
        assert_eq!(brand_of(b"3530111333300000"), Some(Brand::Jcb));
        assert_eq!(brand_of(b"30569309025904"), Some(Brand::Diners));
        assert_eq!(brand_of(b"6759649826438453"), Some(Brand::Maestro));
        // A millisecond timestamp matches no brand, Luhn-valid or not.
        assert_eq!(brand_of(b"1714000000000"), None);
    }

    #[test]
    fn brands_only_drops_luhn_valid_timestamps() {
        let ts = "1714000000005"; // a Luhn-valid 13-digit millisecond timestamp
        assert!(luhn_valid(ts.as_bytes()));
        assert_eq!(find_pans(ts.as_bytes(), false).len(), 1);
        assert!(find_pans(ts.as_bytes(), true).is_empty());
    }

    #[test]
    fn mask_pans_keeps_the_rest_of_a_name() {
        assert_eq!(
            mask_pans(b"card:4111-1111-1111-1111:exp"),
            b"card:4111-11**-****-1111:exp"
        );
        assert_eq!(mask_pans(b"user:42"), b"user:42");
    }
}
