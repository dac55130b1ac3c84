//! Masking policies for logs and screens: what PCI DSS allows to be shown of a PAN.

use std::fmt;
use std::str::FromStr;

/// How much of a card number may be shown. PCI DSS allows at most the first six (the BIN) and
/// the last four digits; `Last4` is the default for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskPolicy {
    /// `************1111`
    #[default]
    Last4,
    /// `411111******1111`: the BIN and the last four, for support screens and fraud review.
    First6Last4,
}

impl MaskPolicy {
    /// The policy's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            MaskPolicy::Last4 => "last4",
            MaskPolicy::First6Last4 => "first6-last4",
        }
    }
}

impl fmt::Display for MaskPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text names no masking policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown masking policy '{0}' (expected last4 or first6-last4)")]
pub struct UnknownPolicy(pub String);

impl FromStr for MaskPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<MaskPolicy, UnknownPolicy> {
        match s {
            "last4" => Ok(MaskPolicy::Last4),
            "first6-last4" | "first6+last4" => Ok(MaskPolicy::First6Last4),
            other => Err(UnknownPolicy(other.to_owned())),
        }
    }
}

/// Masks ASCII digits under `policy`, one `*` per hidden digit. A run shorter than a PAN
/// shows less: the first six only from 12 digits up, the last four only from 8 up, so a
/// short number is never shown whole.
pub fn mask_digits(digits: &[u8], policy: MaskPolicy) -> String {
    let len = digits.len();
    let head = match policy {
        MaskPolicy::First6Last4 if len >= 12 => 6,
        _ => 0,
    };
    let tail = if len >= 8 { 4 } else { 0 };
    let mut out = String::with_capacity(len);
    for (i, &d) in digits.iter().enumerate() {
        if i < head || i >= len - tail {
            out.push(char::from(d));
        } else {
            out.push('*');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn policies() {
        assert_eq!(
            mask_digits(b"4111111111111111", MaskPolicy::Last4),
            "************1111"
        );
        assert_eq!(
            mask_digits(b"4111111111111111", MaskPolicy::First6Last4),
            "411111******1111"
        );
        assert_eq!(
            mask_digits(b"378282246310005", MaskPolicy::First6Last4),
            "378282*****0005"
        );
        assert_eq!(
            mask_digits(b"675964982643", MaskPolicy::First6Last4),
            "675964**2643"
        );
        assert_eq!(mask_digits(b"1234567", MaskPolicy::First6Last4), "*******");
        assert_eq!("first6-last4".parse(), Ok(MaskPolicy::First6Last4));
        assert_eq!("last4".parse(), Ok(MaskPolicy::Last4));
        assert!("all".parse::<MaskPolicy>().is_err());
    }

    proptest! {
        #[test]
        fn masking_keeps_length_and_hides_at_least_the_middle(digits in "[0-9]{12,19}") {
            for policy in [MaskPolicy::Last4, MaskPolicy::First6Last4] {
                let m = mask_digits(digits.as_bytes(), policy);
                prop_assert_eq!(m.len(), digits.len());
                prop_assert_eq!(&m[m.len() - 4..], &digits[digits.len() - 4..]);
                let shown = m.bytes().filter(u8::is_ascii_digit).count();
                prop_assert!(shown <= 10);
                prop_assert!(m[6..m.len() - 4].bytes().all(|b| b == b'*'));
            }
        }
    }
}
