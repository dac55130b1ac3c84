//! Low-level value parsers, each a port of the Valkey helper it is named after,
//! so that the edge cases (what counts as a number, how quotes nest) match what
//! a Valkey user already knows.

/// Valkey's `sdssplitargs`: split a line into arguments.
///
/// Blanks separate arguments. `"double quotes"` understand `\n \r \t \b \a`,
/// `\xHH` and `\<any>`; `'single quotes'` only understand `\'`. A quote may
/// start in the middle of an argument (`a"b c"` is the one argument `ab c`),
/// but a closing quote must be followed by a blank or the end of the line.
/// Returns `None` for unbalanced quotes, which is the only error.
pub(crate) fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    // A NUL ends the line, as it does for the C string Valkey works on.
    let line = &line[..line.iter().position(|&c| c == 0).unwrap_or(line.len())];
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let mut args = Vec::new();
    let mut p = 0;
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let (mut in_dq, mut in_sq) = (false, false);
        loop {
            let c = at(p);
            if in_dq {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && at(p + 2).is_ascii_hexdigit()
                    && at(p + 3).is_ascii_hexdigit()
                {
                    current.push(hex(at(p + 2)) * 16 + hex(at(p + 3)));
                    p += 3;
                } else if c == b'\\' && p + 1 < line.len() {
                    p += 1;
                    current.push(match line[p] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if p + 1 < line.len() && !is_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if p >= line.len() {
                    return None;
                } else {
                    current.push(c);
                }
            } else if in_sq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    current.push(b'\'');
                } else if c == b'\'' {
                    if p + 1 < line.len() && !is_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if p >= line.len() {
                    return None;
                } else {
                    current.push(c);
                }
            } else if p >= line.len() || matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            } else if c == b'"' {
                in_dq = true;
            } else if c == b'\'' {
                in_sq = true;
            } else {
                current.push(c);
            }
            p += 1;
        }
        args.push(current);
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// Valkey's `sdscatrepr`: quote an argument so that [`split_args`] gives it
/// back unchanged. Used to turn command-line values into config-file lines.
pub(crate) fn repr(arg: &[u8]) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for &c in arg {
        match c {
            b'\\' | b'"' => {
                out.push('\\');
                out.push(c as char);
            }
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            0x20..=0x7e => out.push(c as char),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push('"');
    out
}

/// Valkey's `string2ll`: a strict decimal `i64`. No sign other than a leading
/// `-`, no leading zeros, no blanks, no overflow.
pub(crate) fn string2ll(s: &[u8]) -> Option<i64> {
    match s {
        [] => None,
        [b'0'] => Some(0),
        _ => {
            let (negative, digits) = match s.split_first() {
                Some((b'-', rest)) => (true, rest),
                _ => (false, s),
            };
            if !matches!(digits.first(), Some(b'1'..=b'9'))
                || !digits.iter().all(u8::is_ascii_digit)
            {
                return None;
            }
            let mut v: u64 = 0;
            for &d in digits {
                v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            }
            if negative {
                // i64::MIN's magnitude is one more than i64::MAX.
                0i64.checked_sub_unsigned(v)
            } else {
                i64::try_from(v).ok()
            }
        }
    }
}

/// Valkey's `memtoull`: a byte count with an optional unit, case-insensitive:
/// `b` = 1, `k` = 1000, `kb` = 1024, `m` = 1000², `mb` = 1024², `g` = 1000³,
/// `gb` = 1024³. Negative values are rejected. Stricter than Valkey in two
/// corners: at least one digit is required (Valkey reads `""` and `"kb"` as 0)
/// and an overflowing product is an error (Valkey wraps).
pub(crate) fn memtoull(s: &[u8]) -> Option<u64> {
    let split = s
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let unit = unit.to_ascii_lowercase();
    let mul: u64 = match unit.as_slice() {
        b"" | b"b" => 1,
        b"k" => 1000,
        b"kb" => 1024,
        b"m" => 1000 * 1000,
        b"mb" => 1024 * 1024,
        b"g" => 1000 * 1000 * 1000,
        b"gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    v.checked_mul(mul)
}

/// Valkey's `yesnotoi`, case-insensitive.
pub(crate) fn yesno(s: &[u8]) -> Option<bool> {
    if s.eq_ignore_ascii_case(b"yes") {
        Some(true)
    } else if s.eq_ignore_ascii_case(b"no") {
        Some(false)
    } else {
        None
    }
}
