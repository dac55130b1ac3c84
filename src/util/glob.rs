//! Glob-style matching with the exact semantics of Valkey's `stringmatchlen()`
//! (KEYS, SCAN MATCH, PSUBSCRIBE, CONFIG GET, ACL key/channel patterns, ...).
//!
//! Supported syntax:
//! * `*` any run of bytes (possibly empty), `?` exactly one byte;
//! * `[abc]` set, `[^abc]` negated set, `[a-z]` range (reversed ranges such
//!   as `[z-a]` work too), `\x` inside brackets matches `x` literally;
//! * `\x` outside brackets matches `x` literally; a lone trailing `\`
//!   matches a backslash.
//!
//! Quirks reproduced on purpose:
//! * an unterminated `[` set ends at the end of the pattern (`"a[bc"`
//!   matches `"ab"`); `"[]"` never matches; `"[^]"` / `"[^"` match any one
//!   byte; in `"[a-]"` the `]` is the end of the range, leaving the set
//!   unterminated;
//! * ranges compare bytes as C `char`, which is *signed* on x86_64: bytes
//!   >= 0x80 sort before `0x00` (so `[\x00-\x7f]` does not match `0xff`);
//! * with `nocase`, only ASCII letters fold; inside ranges the bounds are
//!   lower-cased *after* ordering them (so `[Z-a]` matches nothing), and a
//!   `\x` escape inside brackets is always case-sensitive;
//! * an empty string matches only the empty pattern: Valkey's loop never
//!   runs for it, so even `glob_match(b"*", b"", _)` is false (KEYS handles a
//!   bare `*` itself before calling the matcher; callers that need "`*`
//!   matches everything" must special-case it the same way);
//! * ranges and sets compare single bytes, never UTF-8 characters.
//!
//! Complexity: Valkey's recursive matcher stops trying longer prefixes for
//! earlier `*`s once a later `*` has failed at every position
//! (`skipLongerMatches`), and gives up (no match) once `*`s nest more than
//! 1000 deep.  Together these mean only the innermost `*` ever backtracks,
//! so this implementation keeps just that one backtrack point: no
//! recursion, O(pattern * string) time in the worst case, O(1) memory.

/// Valkey refuses (no match) once `*`-recursion gets deeper than this.
const MAX_STAR_NESTING: u32 = 1000;

/// Outcome of matching from a position up to the next `*`.
enum Step {
    Match,
    NoMatch,
    /// Hit a non-trailing `*` (after collapsing runs of `*`): the rest of
    /// the pattern starts at `rest`, and the string position is `s`.
    Star {
        rest: usize,
        s: usize,
    },
}

/// C `tolower()` in the "C" locale on a (possibly negative) `char` value.
fn c_tolower(c: i32) -> i32 {
    if (i32::from(b'A')..=i32::from(b'Z')).contains(&c) {
        c + 32
    } else {
        c
    }
}

/// Byte as a C `char` on x86_64 (signed).
fn c_char(b: u8) -> i32 {
    i32::from(b as i8)
}

fn byte_eq(a: u8, b: u8, nocase: bool) -> bool {
    a == b || (nocase && a.eq_ignore_ascii_case(&b))
}

/// One activation of Valkey's `stringmatchlen_impl` loop, starting at
/// pattern index `p` and string index `s`, stopping at the first `*`.
fn step(pat: &[u8], mut p: usize, st: &[u8], mut s: usize, nocase: bool) -> Step {
    // Reads past the end see the C string terminator.
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);

    while p < pat.len() && s < st.len() {
        match pat[p] {
            b'*' => {
                while p < pat.len() && at(p + 1) == b'*' {
                    p += 1;
                }
                if pat.len() - p == 1 {
                    return Step::Match; // trailing '*' eats the rest
                }
                return Step::Star { rest: p + 1, s };
            }
            b'?' => s += 1,
            b'[' => {
                let c = st[s];
                p += 1;
                let negate = p < pat.len() && pat[p] == b'^';
                if negate {
                    p += 1;
                }
                let mut matched = false;
                loop {
                    let left = pat.len() - p;
                    if left >= 2 && pat[p] == b'\\' {
                        p += 1;
                        if pat[p] == c {
                            matched = true;
                        }
                    } else if left == 0 {
                        // Unterminated set: step back so the common
                        // advance below lands exactly on the end.
                        p -= 1;
                        break;
                    } else if pat[p] == b']' {
                        break;
                    } else if left >= 3 && pat[p + 1] == b'-' {
                        let mut start = c_char(pat[p]);
                        let mut end = c_char(pat[p + 2]);
                        let mut cc = c_char(c);
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        if nocase {
                            start = c_tolower(start);
                            end = c_tolower(end);
                            cc = c_tolower(cc);
                        }
                        p += 2;
                        if cc >= start && cc <= end {
                            matched = true;
                        }
                    } else if byte_eq(pat[p], c, nocase) {
                        matched = true;
                    }
                    p += 1;
                }
                if negate {
                    matched = !matched;
                }
                if !matched {
                    return Step::NoMatch;
                }
                s += 1;
            }
            b'\\' if pat.len() - p >= 2 => {
                p += 1;
                if !byte_eq(pat[p], st[s], nocase) {
                    return Step::NoMatch;
                }
                s += 1;
            }
            other => {
                if !byte_eq(other, st[s], nocase) {
                    return Step::NoMatch;
                }
                s += 1;
            }
        }
        p += 1;
        if s == st.len() {
            while p < pat.len() && pat[p] == b'*' {
                p += 1;
            }
            break;
        }
    }
    if p == pat.len() && s == st.len() {
        Step::Match
    } else {
        Step::NoMatch
    }
}

/// Glob match `string` against `pattern` exactly like Valkey's
/// `stringmatchlen(pattern, plen, string, slen, nocase)`.
pub fn glob_match(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    let mut p = 0;
    let mut s = 0;
    // Innermost '*' still able to backtrack: (pattern after it, string
    // position of its current attempt).  Outer ones never resume: once the
    // innermost exhausts the string, Valkey's skipLongerMatches fails them.
    let mut backtrack: Option<(usize, usize)> = None;
    // Recursion depth of the current attempt in Valkey's terms.
    let mut nesting: u32 = 0;
    loop {
        match step(pattern, p, string, s, nocase) {
            Step::Match => return true,
            Step::Star { rest, s: at } => {
                nesting += 1;
                if nesting > MAX_STAR_NESTING {
                    // Every attempt below this '*' is refused, so it exhausts.
                    return false;
                }
                backtrack = Some((rest, at));
                p = rest;
                s = at;
            }
            Step::NoMatch => {
                let Some((rest, from)) = backtrack.as_mut() else {
                    return false;
                };
                *from += 1;
                if *from >= string.len() {
                    return false;
                }
                p = *rest;
                s = *from;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        glob_match(p.as_bytes(), s.as_bytes(), false)
    }

    fn mi(p: &str, s: &str) -> bool {
        glob_match(p.as_bytes(), s.as_bytes(), true)
    }

    /// Direct recursive transcription of Valkey's algorithm (skip flag and
    /// nesting limit included), used as an oracle on small inputs.
    fn reference(pat: &[u8], st: &[u8], nocase: bool) -> bool {
        fn lower(c: i32) -> i32 {
            if (65..=90).contains(&c) { c + 32 } else { c }
        }
        fn imp(pat: &[u8], st: &[u8], nocase: bool, skip: &mut bool, nesting: u32) -> bool {
            if nesting > MAX_STAR_NESTING {
                return false;
            }
            let at = |i: usize| pat.get(i).copied().unwrap_or(0);
            let (mut p, mut s) = (0usize, 0usize);
            let (mut plen, mut slen) = (pat.len(), st.len());
            while plen > 0 && slen > 0 {
                match at(p) {
                    b'*' => {
                        while plen > 0 && at(p + 1) == b'*' {
                            p += 1;
                            plen -= 1;
                        }
                        if plen == 1 {
                            return true;
                        }
                        while slen > 0 {
                            if imp(&pat[p + 1..], &st[s..], nocase, skip, nesting + 1) {
                                return true;
                            }
                            if *skip {
                                return false;
                            }
                            s += 1;
                            slen -= 1;
                        }
                        *skip = true;
                        return false;
                    }
                    b'?' => {
                        s += 1;
                        slen -= 1;
                    }
                    b'[' => {
                        p += 1;
                        plen -= 1;
                        let not = plen > 0 && at(p) == b'^';
                        if not {
                            p += 1;
                            plen -= 1;
                        }
                        let mut hit = false;
                        loop {
                            if plen >= 2 && at(p) == b'\\' {
                                p += 1;
                                plen -= 1;
                                if at(p) == st[s] {
                                    hit = true;
                                }
                            } else if plen == 0 {
                                p -= 1;
                                plen += 1;
                                break;
                            } else if at(p) == b']' {
                                break;
                            } else if plen >= 3 && at(p + 1) == b'-' {
                                let mut a = i32::from(at(p) as i8);
                                let mut b = i32::from(at(p + 2) as i8);
                                let mut c = i32::from(st[s] as i8);
                                if a > b {
                                    std::mem::swap(&mut a, &mut b);
                                }
                                if nocase {
                                    a = lower(a);
                                    b = lower(b);
                                    c = lower(c);
                                }
                                p += 2;
                                plen -= 2;
                                if c >= a && c <= b {
                                    hit = true;
                                }
                            } else if at(p) == st[s]
                                || (nocase
                                    && lower(i32::from(at(p) as i8))
                                        == lower(i32::from(st[s] as i8)))
                            {
                                hit = true;
                            }
                            p += 1;
                            plen -= 1;
                        }
                        if not {
                            hit = !hit;
                        }
                        if !hit {
                            return false;
                        }
                        s += 1;
                        slen -= 1;
                    }
                    c => {
                        let mut c = c;
                        if c == b'\\' && plen >= 2 {
                            p += 1;
                            plen -= 1;
                            c = at(p);
                        }
                        let eq = c == st[s]
                            || (nocase
                                && lower(i32::from(c as i8)) == lower(i32::from(st[s] as i8)));
                        if !eq {
                            return false;
                        }
                        s += 1;
                        slen -= 1;
                    }
                }
                p += 1;
                plen -= 1;
                if slen == 0 {
                    while plen > 0 && at(p) == b'*' {
                        p += 1;
                        plen -= 1;
                    }
                    break;
                }
            }
            plen == 0 && slen == 0
        }
        let mut skip = false;
        imp(pat, st, nocase, &mut skip, 0)
    }

    #[test]
    fn literals_and_wildcards() {
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(!m("a", ""));
        assert!(!m("*", ""));
        assert!(!m("?", ""));
        assert!(m("*", "anything"));
        assert!(m("**", "x"));
        assert!(m("hello", "hello"));
        assert!(!m("hello", "hell"));
        assert!(!m("hell", "hello"));
        assert!(m("h?llo", "hello"));
        assert!(m("h?llo", "hallo"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("*llo", "hello"));
        assert!(m("he*", "hello"));
        assert!(m("he**", "he"));
        assert!(m("h*", "h"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("*a*", "bab"));
        assert!(m("a*a", "aa"));
        assert!(!m("a*a", "a"));
        assert!(m("*?", "a"));
        assert!(!m("?*?", "a"));
        assert!(m("user:*:name", "user:1000:name"));
        assert!(!m("user:*:name", "user:1000:age"));
    }

    #[test]
    fn brackets() {
        assert!(m("h[ae]llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("h[b-a]llo", "hallo"), "reversed range");
        assert!(m("[z-a]", "q"));
        assert!(m("[^a-c]", "d"));
        assert!(!m("[^a-c]", "b"));
        // "c-]" is a range c..']' (93..=99), so the set is unterminated and
        // '-' is NOT in it, while '_' (95) is.
        assert!(!m("[abc-]", "-"));
        assert!(m("[abc-]", "_"));
        assert!(m("[abc-]", "a"));
        assert!(m("[-a]", "-"));
        assert!(m("[a-cx-z]", "y"));
        assert!(m("[\\]]", "]"), "escaped ] inside set");
        assert!(m("[\\-]", "-"));
        assert!(m("[\\\\]", "\\"));
        assert!(!m("[]", "a"), "empty set never matches");
        assert!(!m("[]", "]"));
        assert!(!m("[]]", "]"), "']' right after '[' closes an empty set");
        assert!(m("[^]", "x"), "[^] matches any byte");
        assert!(m("[^", "x"), "unterminated [^ matches any byte");
        assert!(!m("[^", ""));
        assert!(!m("[", "["), "lone [ never matches");
        assert!(!m("[", "a"));
        assert!(m("a[bc", "ab"), "unterminated set");
        assert!(m("a[bc", "ac"));
        assert!(!m("a[bc", "abc"));
        assert!(m("[a-", "a"), "unterminated after range start");
        assert!(m("[a-", "-"));
        assert!(m("[a-]", "]"), "']' ends the range, set is unterminated");
        assert!(m("[a-]", "a"));
        assert!(m("[a-]", "^"), "range ]..a");
        assert!(!m("[a-]", "b"));
        assert!(m("[\\", "\\"), "lone backslash at end of set is literal");
        assert!(m("[a\\", "\\"));
        assert!(m("x[*]y", "x*y"));
        assert!(m("x[?]y", "x?y"));
        assert!(!m("x[?]y", "xay"));
    }

    #[test]
    fn range_edge_semantics() {
        // ']' right after '[' (or '[^') ends the set before any range.
        assert!(!m("[]-a]", "^"));
        assert!(m("[^]-a]", "x-a]"));
        // ']' as range end is consumed, so the set runs to the pattern end.
        assert!(m("[a-]b", "b"));
        assert!(!m("[a-]b", "ab"));
        // Signed char ranges: 0xff is -1 as a C char.
        assert!(!glob_match(b"[\x00-\x7f]", b"\xff", false));
        assert!(glob_match(b"[\x80-\x7f]", b"\xff", false));
        assert!(glob_match(b"[\x80-\xff]", b"\x90", false));
        assert!(glob_match(b"[a-\xff]", b"\x01", false), "-1..97 contains 1");
        assert!(!glob_match(b"[a-\xff]", b"\x80", false));
        assert!(glob_match(b"\xc3\xa9", "é".as_bytes(), true));
    }

    #[test]
    fn escapes() {
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "a"));
        assert!(m("\\?", "?"));
        assert!(!m("\\?", "a"));
        assert!(m("\\[a]", "[a]"));
        assert!(m("a\\", "a\\"), "lone trailing backslash is literal");
        assert!(!m("a\\", "a"));
        assert!(m("\\a", "a"));
        assert!(m("*\\*", "abc*"));
        assert!(!m("*\\*", "abc"));
        assert!(m("\\\\", "\\"));
    }

    #[test]
    fn nocase() {
        assert!(mi("HELLO", "hello"));
        assert!(mi("hello", "HeLLo"));
        assert!(!m("HELLO", "hello"));
        assert!(mi("h?LLO", "HeLlo"));
        assert!(mi("[A-C]", "b"));
        assert!(mi("[a-c]", "B"));
        assert!(mi("[ABC]", "b"));
        assert!(mi("[^ABC]", "d"));
        assert!(!mi("[^ABC]", "b"));
        assert!(mi("\\A", "a"), "escape outside set folds case");
        assert!(!mi("[\\A]", "a"), "escape inside set is case-sensitive");
        assert!(mi("[\\a]", "a"));
        assert!(!mi("[Z-a]", "z"), "bounds fold after ordering -> empty");
        assert!(!mi("[Z-a]", "_"));
        assert!(m("[Z-a]", "_"), "case-sensitive: Z(90)..a(97) has _(95)");
        assert!(!mi("é", "É"), "only ASCII folds");
    }

    #[test]
    fn trailing_stars_after_string_end() {
        assert!(m("a*", "a"));
        assert!(m("a***", "a"));
        assert!(m("a*b*", "ab"));
        assert!(!m("a*?", "a"));
        assert!(m("?*", "a"));
        assert!(!m("a*[", "a"));
    }

    #[test]
    fn pathological_patterns_terminate() {
        // Classic exponential case for naive backtracking.
        let pat = format!("{}b", "a*".repeat(30));
        let s = "a".repeat(60);
        assert!(!m(&pat, &s));

        // 20k-byte pattern against a long string: no recursion, no hang.
        let pat = format!("{}b", "a*".repeat(10_000));
        let s = "a".repeat(20_000);
        assert!(!m(&pat, &s));

        let pat = "*".repeat(20_000);
        assert!(m(&pat, "x"));
        let pat = format!("{}x", "*?".repeat(10_000));
        assert!(!m(&pat, &"y".repeat(30_000)));
        let pat = "[".repeat(20_000);
        assert!(!m(&pat, &"[".repeat(20_000)));
    }

    #[test]
    fn star_nesting_limit() {
        // 1000 nested stars still match, 1001 refuse (Valkey >= 8 behaviour).
        let ok = format!("{}b", "a*".repeat(1000));
        let s = format!("{}b", "a".repeat(1000));
        assert!(m(&ok, &s));
        let too_deep = format!("{}b", "a*".repeat(1001));
        let s = format!("{}b", "a".repeat(1001));
        assert!(!m(&too_deep, &s));
        // A trailing star past the limit still matches (returns before
        // recursing), like Valkey.
        let trailing = format!("{}*", "a*".repeat(1001));
        assert!(m(&trailing, &"a".repeat(1002)));
        // Consecutive stars collapse and do not count.
        let collapsed = format!("a{}b", "*".repeat(5000));
        assert!(m(&collapsed, "axxxb"));
    }

    #[test]
    fn matches_recursive_reference_on_random_inputs() {
        let alphabet = b"ab*?[]^-\\Ac";
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..200_000 {
            let plen = next(9) as usize;
            let slen = next(7) as usize;
            let pat: Vec<u8> = (0..plen)
                .map(|_| alphabet[next(alphabet.len() as u64) as usize])
                .collect();
            let st: Vec<u8> = (0..slen).map(|_| b"abAc-]"[next(6) as usize]).collect();
            for nocase in [false, true] {
                assert_eq!(
                    glob_match(&pat, &st, nocase),
                    reference(&pat, &st, nocase),
                    "pattern {:?} string {:?} nocase {nocase}",
                    String::from_utf8_lossy(&pat),
                    String::from_utf8_lossy(&st)
                );
            }
        }
    }
}
