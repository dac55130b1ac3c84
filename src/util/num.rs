//! Integer / double parsing and integer formatting with Valkey's exact rules.

/// Valkey's `LONG_STR_SIZE`: strings of this length or longer never parse.
const LONG_STR_SIZE: usize = 21;

/// Parse a signed 64-bit integer exactly like Valkey's `string2ll()`:
///
/// * optional `-`, then digits; no `+`, no spaces anywhere, nothing after;
/// * no leading zeros (only `"0"` itself), so `"-0"`, `"00"`, `"01"` fail;
/// * empty input or input of 21+ bytes fails;
/// * values outside `i64` fail (`"-9223372036854775808"` is accepted).
///
/// Valkey replies `ERR value is not an integer or out of range` when this
/// fails on a command argument or on a stored value.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= LONG_STR_SIZE {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let (&first, rest) = digits.split_first()?;
    if !(b'1'..=b'9').contains(&first) {
        return None;
    }
    let mut v = u64::from(first - b'0');
    for &c in rest {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    if negative {
        if v > 1u64 << 63 {
            None
        } else {
            // v == 2^63 wraps to i64::MIN, which is the intended value.
            Some((v as i64).wrapping_neg())
        }
    } else {
        i64::try_from(v).ok()
    }
}

/// Parse a double like Valkey's `string2d()` (used by `getDoubleFromObject`,
/// e.g. ZADD/ZINCRBY scores, ZUNIONSTORE weights, GEOADD coordinates;
/// failure reply: `ERR value is not a valid float`).
///
/// Accepted: `[+-]` then decimal digits with optional `.` fraction (`1.`,
/// `.5` are fine) and optional `e`/`E` exponent; `inf`/`infinity`
/// (any case, optionally signed).  Rejected: empty input, leading or
/// trailing spaces or any other trailing byte, NaN in any spelling, values
/// overflowing to infinity (`1e309`) and non-zero values underflowing to
/// zero (`1e-400`); subnormals are accepted.  Hexadecimal floats (`0x1p3`)
/// are rejected, as in Valkey >= 8.1 which parses with fast_float (Valkey
/// 8.0 used `strtod()` and accepted them).
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    // Rust's grammar (sign, digits, optional fraction and exponent, inf,
    // infinity, nan; case-insensitive words; no spaces, no hex) is the same
    // as fast_float's general format with a leading '+' allowed.
    let text = std::str::from_utf8(s).ok()?;
    let v: f64 = text.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    let has_digit = s.iter().any(u8::is_ascii_digit);
    if v.is_infinite() && has_digit {
        // A numeric literal that overflowed (ERANGE); only the words
        // "inf"/"infinity" may produce an infinity.
        return None;
    }
    if v == 0.0 {
        let mantissa = s
            .iter()
            .take_while(|&&c| c != b'e' && c != b'E')
            .any(|&c| (b'1'..=b'9').contains(&c));
        if mantissa {
            // Non-zero literal rounded to zero: underflow (ERANGE).
            return None;
        }
    }
    Some(v)
}

/// Append the decimal form of `v` (same bytes as Valkey's `ll2string()`).
pub fn format_i64(v: i64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[pos..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<i64> {
        parse_i64(s.as_bytes())
    }

    #[test]
    fn parse_i64_accepts_canonical() {
        assert_eq!(p("0"), Some(0));
        assert_eq!(p("1"), Some(1));
        assert_eq!(p("-1"), Some(-1));
        assert_eq!(p("10"), Some(10));
        assert_eq!(p("1234567890"), Some(1_234_567_890));
        assert_eq!(p("9223372036854775807"), Some(i64::MAX));
        assert_eq!(p("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(p("-9223372036854775807"), Some(-i64::MAX));
    }

    #[test]
    fn parse_i64_rejects_non_canonical() {
        for s in [
            "", "-", "+1", " 1", "1 ", " ", "01", "00", "-0", "-01", "0x10", "1e3", "1.0", "1.",
            "--1", "1-", "a", "1a", "\u{0}", "1\u{0}", "١", "٣",
        ] {
            assert_eq!(p(s), None, "{s:?}");
        }
    }

    #[test]
    fn parse_i64_overflow_and_length() {
        assert_eq!(p("9223372036854775808"), None);
        assert_eq!(p("-9223372036854775809"), None);
        assert_eq!(p("18446744073709551615"), None);
        assert_eq!(p("18446744073709551616"), None);
        assert_eq!(p("99999999999999999999"), None);
        // 21 bytes is too long even if it would fit semantically elsewhere.
        assert_eq!(p("-99999999999999999999"), None);
        assert_eq!(p("123456789012345678901"), None);
    }

    #[test]
    fn parse_i64_round_trips() {
        for v in [0, 1, -1, 42, -42, i64::MAX, i64::MIN, 1 << 40, -(1 << 53)] {
            let mut out = Vec::new();
            format_i64(v, &mut out);
            assert_eq!(parse_i64(&out), Some(v));
            assert_eq!(out, v.to_string().into_bytes());
        }
    }

    fn d(s: &str) -> Option<f64> {
        parse_f64(s.as_bytes())
    }

    #[test]
    fn parse_f64_accepts() {
        assert_eq!(d("1"), Some(1.0));
        assert_eq!(d("-1.5"), Some(-1.5));
        assert_eq!(d("+1.5"), Some(1.5));
        assert_eq!(d("1."), Some(1.0));
        assert_eq!(d(".5"), Some(0.5));
        assert_eq!(d("-.5"), Some(-0.5));
        assert_eq!(d("1e3"), Some(1000.0));
        assert_eq!(d("1E3"), Some(1000.0));
        assert_eq!(d("1e+3"), Some(1000.0));
        assert_eq!(d("1.5e-3"), Some(0.0015));
        assert_eq!(d("007"), Some(7.0));
        assert_eq!(d("0"), Some(0.0));
        assert_eq!(d("-0").map(f64::is_sign_negative), Some(true));
        assert_eq!(d("0e999999"), Some(0.0));
        assert_eq!(d("0.000e-999"), Some(0.0));
        assert_eq!(d("inf"), Some(f64::INFINITY));
        assert_eq!(d("+inf"), Some(f64::INFINITY));
        assert_eq!(d("-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(d("Infinity"), Some(f64::INFINITY));
        assert_eq!(d("-INF"), Some(f64::NEG_INFINITY));
        assert_eq!(d("1.7976931348623157e308"), Some(f64::MAX));
        assert_eq!(d("5e-324"), Some(5e-324));
        assert_eq!(d("3e-324"), Some(5e-324));
        assert_eq!(d("0.1"), Some(0.1));
    }

    #[test]
    fn parse_f64_rejects() {
        for s in [
            "", " ", " 1", "1 ", "\t1", "1\n", "abc", "1a", "1e", "1e+", "e1", ".", "-", "+",
            "+-1", "--1", "1..2", "1,5", "nan", "NaN", "-nan", "nan(1)", "infinit", "infx",
            "1e309", "-1e309", "1e-400", "2e-324", "0x10", "0x1p3", "1\u{0}", "１",
        ] {
            assert_eq!(d(s), None, "{s:?}");
        }
    }

    #[test]
    fn format_i64_matches_display() {
        for v in [0i64, 7, -7, 10, -10, 99, 100, i64::MAX, i64::MIN] {
            let mut out = b"x".to_vec();
            format_i64(v, &mut out);
            assert_eq!(out, format!("x{v}").into_bytes());
        }
    }
}
