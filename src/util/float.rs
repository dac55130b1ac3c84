//! Floating point helpers that must match Valkey byte for byte.
//!
//! * [`incr_by_float`] / [`hincr_by_float`]: INCRBYFLOAT and HINCRBYFLOAT.
//!   Valkey computes them in C `long double` (80-bit x87 extended precision on
//!   x86_64) and renders the result with `ld2string(LD_STR_HUMAN)` ("%.17Lf",
//!   trailing zeros and dot trimmed, never an exponent).  Rust has no long
//!   double, so parse + add + format happen in `longdouble.c` (built by
//!   `build.rs` with the `cc` crate) and only bytes cross the FFI boundary.
//! * [`format_double`]: how Valkey 8 renders a double reply (`addReplyDouble`,
//!   i.e. `d2string()`), for both RESP3 `,` doubles and RESP2 bulk strings.

use std::ffi::c_int;
use std::fmt;

use super::dtoa;

/// Valkey's `MAX_LONG_DOUBLE_CHARS`: input length limit (exclusive) and
/// output buffer size of `ld2string`.
const MAX_LONG_DOUBLE_CHARS: usize = 5 * 1024;

// Return codes of longdouble.c (keep in sync).
const TKV_OK: c_int = 0;
const TKV_BAD_CURRENT: c_int = 1;
const TKV_BAD_INCREMENT: c_int = 2;
const TKV_RESULT_NOT_FINITE: c_int = 3;
const TKV_INCREMENT_NOT_FINITE: c_int = 4;
const TKV_DECLINED: c_int = 6;
const TKV_BAD_LBOUND: c_int = 7;
const TKV_BAD_UBOUND: c_int = 8;
const TKV_BOUNDS_INVERTED: c_int = 9;
const TKV_CURRENT_NOT_FINITE: c_int = 10;
const TKV_APPLIED_NOT_FINITE: c_int = 11;

unsafe extern "C" {
    fn tallykv_ld_is_valid(s: *const u8, len: usize) -> c_int;
    fn tallykv_ld_check_hash_increment(incr: *const u8, incr_len: usize) -> c_int;
    fn tallykv_ld_incr(
        current: *const u8,
        current_len: usize,
        has_current: c_int,
        incr: *const u8,
        incr_len: usize,
        hash_mode: c_int,
        out: *mut u8,
        out_cap: usize,
        out_len: *mut usize,
    ) -> c_int;
    fn tallykv_ld_increx(
        current: *const u8,
        current_len: usize,
        has_current: c_int,
        incr: *const u8,
        incr_len: usize,
        lbound: *const u8,
        lbound_len: usize,
        has_lbound: c_int,
        ubound: *const u8,
        ubound_len: usize,
        has_ubound: c_int,
        saturate: c_int,
        mode: c_int,
        value_out: *mut u8,
        value_cap: usize,
        value_len: *mut usize,
        applied_out: *mut u8,
        applied_cap: usize,
        applied_len: *mut usize,
    ) -> c_int;
}

/// Why a float increment was refused.  Each variant maps to exactly one
/// Valkey error reply; use [`FloatError::incrbyfloat_msg`] or
/// [`FloatError::hincrbyfloat_msg`] to get it (texts include the `ERR `
/// prefix, no leading `-`, no CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatError {
    /// The stored value is not a valid float.
    /// INCRBYFLOAT: `ERR value is not a valid float`;
    /// HINCRBYFLOAT: `ERR hash value is not a float`.
    InvalidCurrent,
    /// The increment argument is not a valid float.
    /// Both commands: `ERR value is not a valid float`.
    InvalidIncrement,
    /// HINCRBYFLOAT only: the increment itself is infinite (e.g. `inf`).
    /// `ERR value is NaN or Infinity`.  (INCRBYFLOAT accepts `inf` as an
    /// increment and then fails with [`FloatError::NanOrInfinity`].)
    IncrementNotFinite,
    /// The sum is NaN or +-Infinity.
    /// Both commands: `ERR increment would produce NaN or Infinity`.
    NanOrInfinity,
}

impl FloatError {
    /// Error text for INCRBYFLOAT.
    pub fn incrbyfloat_msg(self) -> &'static str {
        match self {
            FloatError::InvalidCurrent | FloatError::InvalidIncrement => {
                "ERR value is not a valid float"
            }
            FloatError::IncrementNotFinite => "ERR value is NaN or Infinity",
            FloatError::NanOrInfinity => "ERR increment would produce NaN or Infinity",
        }
    }

    /// Error text for HINCRBYFLOAT.
    pub fn hincrbyfloat_msg(self) -> &'static str {
        match self {
            FloatError::InvalidCurrent => "ERR hash value is not a float",
            FloatError::InvalidIncrement => "ERR value is not a valid float",
            FloatError::IncrementNotFinite => "ERR value is NaN or Infinity",
            FloatError::NanOrInfinity => "ERR increment would produce NaN or Infinity",
        }
    }
}

impl fmt::Display for FloatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.incrbyfloat_msg())
    }
}

impl std::error::Error for FloatError {}

fn code_to_error(code: c_int) -> FloatError {
    match code {
        TKV_BAD_CURRENT => FloatError::InvalidCurrent,
        TKV_BAD_INCREMENT => FloatError::InvalidIncrement,
        TKV_INCREMENT_NOT_FINITE => FloatError::IncrementNotFinite,
        TKV_RESULT_NOT_FINITE => FloatError::NanOrInfinity,
        // TKV_NO_ROOM cannot happen: the largest finite long double needs
        // ~4950 bytes with "%.17Lf", below MAX_LONG_DOUBLE_CHARS.
        _ => FloatError::NanOrInfinity,
    }
}

fn ld_incr(current: Option<&[u8]>, incr: &[u8], hash_mode: bool) -> Result<Vec<u8>, FloatError> {
    let mut buf = [0u8; MAX_LONG_DOUBLE_CHARS];
    let mut len = 0usize;
    let (cur_ptr, cur_len) = current.map_or((std::ptr::null(), 0), |c| (c.as_ptr(), c.len()));
    // SAFETY: all pointers are valid for the lengths passed; the C side only
    // reads `current`/`incr`, writes at most `buf.len()` bytes into `buf`
    // and stores the written length (<= buf.len()) into `len`.
    let code = unsafe {
        tallykv_ld_incr(
            cur_ptr,
            cur_len,
            c_int::from(current.is_some()),
            incr.as_ptr(),
            incr.len(),
            c_int::from(hash_mode),
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        )
    };
    if code == TKV_OK {
        Ok(buf[..len].to_vec())
    } else {
        Err(code_to_error(code))
    }
}

/// INCRBYFLOAT: `current + incr`, rendered like Valkey stores and replies it.
///
/// `current` is the stored string value, `None` when the key does not exist
/// (treated as 0).  An *existing empty* value (`Some(b"")`) is invalid, as
/// in Valkey.  Integer-encoded values can be passed in their decimal form:
/// every i64 is exact in a long double.  Check order is Valkey's: stored
/// value first, then the increment (both yield
/// `ERR value is not a valid float`); the caller does the WRONGTYPE check
/// before calling.  The returned bytes are the new value (also the bulk
/// reply and what Valkey propagates as `SET key <value> KEEPTTL`).
pub fn incr_by_float(current: Option<&[u8]>, incr: &[u8]) -> Result<Vec<u8>, FloatError> {
    ld_incr(current, incr, false)
}

/// HINCRBYFLOAT: like [`incr_by_float`] but with HINCRBYFLOAT's checks:
/// the increment is validated first (invalid -> `InvalidIncrement`, infinite
/// -> `IncrementNotFinite`), then the stored field (`InvalidCurrent`, whose
/// text is `ERR hash value is not a float`).  `current` is `None` when the
/// field is absent.
///
/// Valkey validates the increment *before* the key lookup/WRONGTYPE check;
/// call [`check_hincrbyfloat_increment`] first to reproduce that ordering.
pub fn hincr_by_float(current: Option<&[u8]>, incr: &[u8]) -> Result<Vec<u8>, FloatError> {
    ld_incr(current, incr, true)
}

/// The part of HINCRBYFLOAT that runs before the key lookup: the increment
/// must parse (`InvalidIncrement`) and be finite (`IncrementNotFinite`).
pub fn check_hincrbyfloat_increment(incr: &[u8]) -> Result<(), FloatError> {
    // SAFETY: `incr` is valid for `incr.len()` bytes; the C side only reads.
    let code = unsafe { tallykv_ld_check_hash_increment(incr.as_ptr(), incr.len()) };
    if code == TKV_OK {
        Ok(())
    } else {
        Err(code_to_error(code))
    }
}

/// Why INCREX BYFLOAT refused to run.  The command room owns the reply texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrexFloatError {
    /// The BYFLOAT argument does not parse (NaN and overflow included).
    BadIncrement,
    /// The BYFLOAT argument is +-inf.
    IncrementNotFinite,
    BadLbound,
    BadUbound,
    /// LBOUND > UBOUND (the missing one defaulting to -+LDBL_MAX).
    BoundsInverted,
    /// The stored value does not parse as a long double.
    BadCurrent,
    /// The stored value is +-inf.
    CurrentNotFinite,
    /// SATURATE clamped to a bound so far away that new - old is infinite.
    AppliedNotFinite,
}

/// What INCREX BYFLOAT did: both fields rendered as Valkey's human long double.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncrexFloat {
    /// The stored value after the command (the old one when declined).
    pub value: Vec<u8>,
    /// The increment actually applied (`0` when declined).
    pub applied: Vec<u8>,
    /// False when the result fell outside the bounds without SATURATE, or the caller asked
    /// for a decline (NX/XX not met): nothing is written.
    pub written: bool,
}

/// The arguments for the long double INCREX: current value (None = missing key, i.e. 0),
/// increment, optional LBOUND and UBOUND, SATURATE.
pub struct IncrexFloatArgs<'a> {
    pub current: Option<&'a [u8]>,
    pub incr: &'a [u8],
    pub lbound: Option<&'a [u8]>,
    pub ubound: Option<&'a [u8]>,
    pub saturate: bool,
}

fn increx_call(a: &IncrexFloatArgs<'_>, mode: c_int) -> Result<IncrexFloat, IncrexFloatError> {
    let mut value = [0u8; MAX_LONG_DOUBLE_CHARS];
    let mut applied = [0u8; MAX_LONG_DOUBLE_CHARS];
    let (mut value_len, mut applied_len) = (0usize, 0usize);
    let ptr = |o: Option<&[u8]>| o.map_or((std::ptr::null(), 0), |s| (s.as_ptr(), s.len()));
    let (cur, cur_len) = ptr(a.current);
    let (lb, lb_len) = ptr(a.lbound);
    let (ub, ub_len) = ptr(a.ubound);
    // SAFETY: every input pointer is valid for the length passed next to it (or null with
    // its `has_` flag 0, never read); the C side writes at most `*_cap` bytes into each
    // output buffer and stores the written lengths (<= cap).
    let code = unsafe {
        tallykv_ld_increx(
            cur,
            cur_len,
            c_int::from(a.current.is_some()),
            a.incr.as_ptr(),
            a.incr.len(),
            lb,
            lb_len,
            c_int::from(a.lbound.is_some()),
            ub,
            ub_len,
            c_int::from(a.ubound.is_some()),
            c_int::from(a.saturate),
            mode,
            value.as_mut_ptr(),
            value.len(),
            &mut value_len,
            applied.as_mut_ptr(),
            applied.len(),
            &mut applied_len,
        )
    };
    let written = match code {
        TKV_OK => true,
        TKV_DECLINED => false,
        TKV_BAD_INCREMENT => return Err(IncrexFloatError::BadIncrement),
        TKV_INCREMENT_NOT_FINITE => return Err(IncrexFloatError::IncrementNotFinite),
        TKV_BAD_LBOUND => return Err(IncrexFloatError::BadLbound),
        TKV_BAD_UBOUND => return Err(IncrexFloatError::BadUbound),
        TKV_BOUNDS_INVERTED => return Err(IncrexFloatError::BoundsInverted),
        TKV_BAD_CURRENT => return Err(IncrexFloatError::BadCurrent),
        TKV_CURRENT_NOT_FINITE => return Err(IncrexFloatError::CurrentNotFinite),
        TKV_APPLIED_NOT_FINITE => return Err(IncrexFloatError::AppliedNotFinite),
        // TKV_NO_ROOM cannot happen (see code_to_error); treat it as the infinite case.
        _ => return Err(IncrexFloatError::AppliedNotFinite),
    };
    Ok(IncrexFloat {
        value: value[..value_len].to_vec(),
        applied: applied[..applied_len].to_vec(),
        written,
    })
}

/// INCREX BYFLOAT's argument checks, which run before the key is looked up: increment,
/// then LBOUND, then UBOUND, then LBOUND <= UBOUND.
pub fn increx_float_check(a: &IncrexFloatArgs<'_>) -> Result<(), IncrexFloatError> {
    // Mode 0 returns before touching the output buffers.
    increx_call(a, 0).map(|_| ())
}

/// INCREX BYFLOAT: old + incr in long double, declined or saturated at the bounds.
pub fn increx_float(a: &IncrexFloatArgs<'_>) -> Result<IncrexFloat, IncrexFloatError> {
    increx_call(a, 1)
}

/// The stored value rendered as INCREX replies it when NX/XX is not met.
pub fn increx_float_declined(a: &IncrexFloatArgs<'_>) -> Result<IncrexFloat, IncrexFloatError> {
    increx_call(a, 2)
}

/// True if `s` is accepted by Valkey's `string2ld()` (long double parse used
/// by INCRBYFLOAT / HINCRBYFLOAT).  `inf` is accepted, NaN is not.
pub fn is_valid_long_double(s: &[u8]) -> bool {
    // SAFETY: `s` is valid for `s.len()` bytes; the C side only reads.
    unsafe { tallykv_ld_is_valid(s.as_ptr(), s.len()) == 1 }
}

/// Append the text Valkey 8 uses for a double reply (`addReplyDouble`, which
/// is `d2string()` for both RESP3 `,<text>\r\n` and the RESP2 bulk string):
///
/// * NaN -> `nan`, +-infinity -> `inf` / `-inf`, +-0 -> `0` / `-0`;
/// * integral values with |v| <= 2^62 -> plain integer (`3`, `-17`,
///   `10000000000000000`);
/// * everything else -> `fpconv_dtoa` (Grisu2): shortest-ish round-trip
///   digits, plain notation for moderate exponents (`0.1`, `1.5`, `0.0001`,
///   `9223372036854775800`) and `1.5e-7` / `1e+300` style otherwise (no
///   exponent zero padding).
pub fn format_double(v: f64, out: &mut Vec<u8>) {
    dtoa::d2string(v, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(cur: Option<&str>, inc: &str) -> Result<String, FloatError> {
        incr_by_float(cur.map(str::as_bytes), inc.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    fn hincr(cur: Option<&str>, inc: &str) -> Result<String, FloatError> {
        hincr_by_float(cur.map(str::as_bytes), inc.as_bytes())
            .map(|v| String::from_utf8(v).unwrap())
    }

    fn fd(v: f64) -> String {
        let mut out = Vec::new();
        format_double(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn incrbyfloat_known_valkey_outputs() {
        assert_eq!(incr(Some("10.50"), "0.1").unwrap(), "10.6");
        assert_eq!(incr(Some("10.6"), "-5").unwrap(), "5.6");
        assert_eq!(incr(Some("5.0e3"), "2.0e2").unwrap(), "5200");
        assert_eq!(incr(Some("0.1"), "0.2").unwrap(), "0.3");
        assert_eq!(incr(Some("3.0e3"), "1").unwrap(), "3001");
        assert_eq!(incr(Some("1"), "1.5").unwrap(), "2.5");
        assert_eq!(incr(None, "1.5").unwrap(), "1.5");
        assert_eq!(incr(Some("10"), "-10").unwrap(), "0");
        assert_eq!(incr(Some("0"), "-0").unwrap(), "0");
        assert_eq!(incr(None, "-1e-30").unwrap(), "0");
        assert_eq!(incr(Some("-1"), "0.5").unwrap(), "-0.5");
        assert_eq!(incr(Some("1e20"), "0").unwrap(), "100000000000000000000");
        assert_eq!(incr(Some("0x10"), "1").unwrap(), "17");
        assert_eq!(incr(Some("+5"), ".5").unwrap(), "5.5");
        assert_eq!(incr(Some("5."), "1").unwrap(), "6");
        assert_eq!(
            incr(Some("9223372036854775807"), "1").unwrap(),
            "9223372036854775808"
        );
        // 17 digits after the dot, then trimmed.
        assert_eq!(incr(Some("1"), "1e-17").unwrap(), "1.00000000000000001");
        assert_eq!(incr(Some("1"), "1e-18").unwrap(), "1");
    }

    #[test]
    fn incrbyfloat_errors() {
        assert_eq!(incr(Some("abc"), "1"), Err(FloatError::InvalidCurrent));
        assert_eq!(incr(Some("1"), "abc"), Err(FloatError::InvalidIncrement));
        assert_eq!(incr(Some("abc"), "abc"), Err(FloatError::InvalidCurrent));
        assert_eq!(incr(Some(""), "1"), Err(FloatError::InvalidCurrent));
        assert_eq!(incr(None, ""), Err(FloatError::InvalidIncrement));
        assert_eq!(incr(None, "  1"), Err(FloatError::InvalidIncrement));
        assert_eq!(incr(None, " 1"), Err(FloatError::InvalidIncrement));
        assert_eq!(incr(None, "\t1"), Err(FloatError::InvalidIncrement));
        assert_eq!(incr(None, "1 "), Err(FloatError::InvalidIncrement));
        assert_eq!(incr(None, "1\0"), Err(FloatError::InvalidIncrement));
        assert_eq!(incr(None, "1x"), Err(FloatError::InvalidIncrement));
        assert_eq!(incr(None, "nan"), Err(FloatError::InvalidIncrement));
        assert_eq!(incr(None, "-nan"), Err(FloatError::InvalidIncrement));
        assert_eq!(incr(Some("nan"), "1"), Err(FloatError::InvalidCurrent));
        // Overflow / underflow-to-zero of the long double parse.
        assert_eq!(incr(None, "1e5000"), Err(FloatError::InvalidIncrement));
        assert_eq!(incr(None, "1e-5000"), Err(FloatError::InvalidIncrement));
        // inf parses, but the sum is infinite.
        assert_eq!(incr(None, "inf"), Err(FloatError::NanOrInfinity));
        assert_eq!(incr(Some("1"), "-inf"), Err(FloatError::NanOrInfinity));
        assert_eq!(incr(Some("inf"), "-inf"), Err(FloatError::NanOrInfinity));
        // 1.7976931348623157e308 * 2 fits a long double (no overflow), so we
        // need to go beyond LDBL_MAX (~1.19e4932) to get the error.
        assert_eq!(
            incr(Some("1.7976931348623157e308"), "1.7976931348623157e308")
                .unwrap()
                .len(),
            309
        );
        assert_eq!(
            incr(Some("1.1e4932"), "1.1e4932"),
            Err(FloatError::NanOrInfinity)
        );
        // Length limit: 5119 bytes ok, 5120 rejected.
        let long_ok = format!("1.{}", "0".repeat(5117));
        assert_eq!(incr(None, &long_ok).unwrap(), "1");
        let too_long = format!("1.{}", "0".repeat(5118));
        assert_eq!(incr(None, &too_long), Err(FloatError::InvalidIncrement));
        assert_eq!(
            FloatError::InvalidCurrent.incrbyfloat_msg(),
            "ERR value is not a valid float"
        );
        assert_eq!(
            FloatError::NanOrInfinity.incrbyfloat_msg(),
            "ERR increment would produce NaN or Infinity"
        );
    }

    #[test]
    fn huge_values_are_rendered_without_exponent() {
        // 1e4000 is not exact in a long double; its nearest neighbour is
        // printed in full.
        let v = incr(None, "1e4000").unwrap();
        assert!(v.len() == 4000 || v.len() == 4001, "{}", v.len());
        assert!(v.bytes().all(|b| b.is_ascii_digit()));
        let max = incr(None, "1.18973149535723176502e+4932").unwrap();
        assert_eq!(max.len(), 4933);
    }

    #[test]
    fn hincrbyfloat_semantics() {
        assert_eq!(hincr(None, "10.5").unwrap(), "10.5");
        assert_eq!(hincr(Some("10.5"), "0.1").unwrap(), "10.6");
        assert_eq!(hincr(Some("abc"), "1"), Err(FloatError::InvalidCurrent));
        // Increment is checked first.
        assert_eq!(hincr(Some("abc"), "xyz"), Err(FloatError::InvalidIncrement));
        assert_eq!(hincr(Some("1"), "inf"), Err(FloatError::IncrementNotFinite));
        assert_eq!(
            hincr(Some("abc"), "inf"),
            Err(FloatError::IncrementNotFinite)
        );
        assert_eq!(hincr(Some("inf"), "1"), Err(FloatError::NanOrInfinity));
        assert_eq!(
            hincr(Some("1.1e4932"), "1.1e4932"),
            Err(FloatError::NanOrInfinity)
        );
        assert_eq!(
            FloatError::InvalidCurrent.hincrbyfloat_msg(),
            "ERR hash value is not a float"
        );
        assert_eq!(
            FloatError::InvalidIncrement.hincrbyfloat_msg(),
            "ERR value is not a valid float"
        );
        assert_eq!(
            FloatError::IncrementNotFinite.hincrbyfloat_msg(),
            "ERR value is NaN or Infinity"
        );
        assert_eq!(check_hincrbyfloat_increment(b"1.5"), Ok(()));
        assert_eq!(
            check_hincrbyfloat_increment(b"x"),
            Err(FloatError::InvalidIncrement)
        );
        assert_eq!(
            check_hincrbyfloat_increment(b"-infinity"),
            Err(FloatError::IncrementNotFinite)
        );
    }

    fn increx(
        cur: Option<&str>,
        inc: &str,
        lb: Option<&str>,
        ub: Option<&str>,
        saturate: bool,
    ) -> Result<(String, String, bool), IncrexFloatError> {
        let a = IncrexFloatArgs {
            current: cur.map(str::as_bytes),
            incr: inc.as_bytes(),
            lbound: lb.map(str::as_bytes),
            ubound: ub.map(str::as_bytes),
            saturate,
        };
        increx_float(&a).map(|r| {
            (
                String::from_utf8(r.value).unwrap(),
                String::from_utf8(r.applied).unwrap(),
                r.written,
            )
        })
    }

    #[test]
    fn increx_float_bounds_and_saturation() {
        let ok = |v: &str, a: &str, w: bool| Ok((v.to_string(), a.to_string(), w));
        assert_eq!(
            increx(None, "2.5", None, None, false),
            ok("2.5", "2.5", true)
        );
        assert_eq!(
            increx(Some("10"), "5.5", None, Some("12.5"), false),
            ok("10", "0", false)
        );
        assert_eq!(
            increx(Some("10"), "5.5", None, Some("12.5"), true),
            ok("12.5", "2.5", true)
        );
        assert_eq!(
            increx(Some("10"), "-6", Some("8"), None, true),
            ok("8", "-2", true)
        );
        // Overflow to infinity is out of bounds even without explicit bounds.
        assert_eq!(
            increx(Some("1e4932"), "1e4932", None, None, false)
                .unwrap()
                .1,
            "0"
        );
        let sat = increx(Some("1e4932"), "1e4932", None, None, true).unwrap();
        assert_eq!(sat.0.len(), 4933);
        assert!(sat.2);
        assert_eq!(
            increx(Some("-1e4932"), "1e4932", Some("1e4932"), None, true),
            Err(IncrexFloatError::AppliedNotFinite)
        );
        assert_eq!(
            increx(Some("inf"), "1", None, None, false),
            Err(IncrexFloatError::CurrentNotFinite)
        );
        assert_eq!(
            increx(Some("x"), "1", None, None, false),
            Err(IncrexFloatError::BadCurrent)
        );
        assert_eq!(
            increx(None, "inf", None, None, false),
            Err(IncrexFloatError::IncrementNotFinite)
        );
        assert_eq!(
            increx(None, "nan", None, None, false),
            Err(IncrexFloatError::BadIncrement)
        );
        assert_eq!(
            increx(None, "1", Some("x"), None, false),
            Err(IncrexFloatError::BadLbound)
        );
        assert_eq!(
            increx(None, "1", None, Some("x"), false),
            Err(IncrexFloatError::BadUbound)
        );
        assert_eq!(
            increx(None, "1", Some("inf"), None, false),
            Err(IncrexFloatError::BoundsInverted)
        );
        let declined = increx_float_declined(&IncrexFloatArgs {
            current: Some(b"10.50"),
            incr: b"1",
            lbound: None,
            ubound: None,
            saturate: true,
        })
        .unwrap();
        assert_eq!(
            (declined.value, declined.applied, declined.written),
            (b"10.5".to_vec(), b"0".to_vec(), false)
        );
    }

    #[test]
    fn long_double_validity() {
        for ok in [
            "1",
            "-1.5",
            "1e10",
            "inf",
            "-Infinity",
            "0x1p3",
            ".5",
            "5.",
            "+3",
        ] {
            assert!(is_valid_long_double(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", " 1", "1 ", "nan", "1e", "e1", ".", "-", "1,5", "1e99999",
        ] {
            assert!(!is_valid_long_double(bad.as_bytes()), "{bad}");
        }
        // Subnormal long doubles are accepted (ERANGE but not zero).
        assert!(is_valid_long_double(b"1e-4940"));
    }

    #[test]
    fn format_double_special_values() {
        assert_eq!(fd(f64::NAN), "nan");
        assert_eq!(fd(f64::INFINITY), "inf");
        assert_eq!(fd(f64::NEG_INFINITY), "-inf");
        assert_eq!(fd(0.0), "0");
        assert_eq!(fd(-0.0), "-0");
    }

    #[test]
    fn format_double_integers() {
        assert_eq!(fd(1.0), "1");
        assert_eq!(fd(-17.0), "-17");
        assert_eq!(fd(1e15), "1000000000000000");
        assert_eq!(fd(1e16), "10000000000000000");
        assert_eq!(fd(4611686018427387904.0), "4611686018427387904");
        assert_eq!(fd(-4611686018427387904.0), "-4611686018427387904");
        // Beyond 2^62 fpconv takes over.
        assert_eq!(fd(9223372036854775808.0), "9223372036854776000");
        assert_eq!(fd(1e19), "1e+19");
        assert_eq!(fd(1.2e19), "1.2e+19");
        assert_eq!(fd(-4611686018427388928.0), "-4611686018427389000");
        assert_eq!(fd(1e20), "1e+20");
        assert_eq!(fd(1.5e20), "1.5e+20");
        assert_eq!(fd(123456789012345680000.0), "123456789012345680000");
    }

    #[test]
    fn format_double_fractions() {
        assert_eq!(fd(0.1), "0.1");
        assert_eq!(fd(-0.1), "-0.1");
        assert_eq!(fd(1.5), "1.5");
        assert_eq!(fd(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(fd(2.71), "2.71");
        assert_eq!(fd(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(fd(2.0 / 3.0), "0.6666666666666666");
        assert_eq!(fd(0.0001), "0.0001");
        assert_eq!(fd(0.000001), "0.000001");
        assert_eq!(fd(1e-7), "1e-7");
        assert_eq!(fd(1.5e-7), "1.5e-7");
        assert_eq!(fd(-1.5e-7), "-1.5e-7");
        assert_eq!(fd(123.456e-10), "1.23456e-8");
        assert_eq!(fd(1e300), "1e+300");
        assert_eq!(fd(1e-300), "1e-300");
        assert_eq!(fd(f64::MAX), "1.7976931348623157e+308");
        assert_eq!(fd(f64::MIN_POSITIVE), "2.2250738585072014e-308");
        assert_eq!(fd(5e-324), "5e-324");
        assert_eq!(fd(1234567.125), "1234567.125");
        assert_eq!(fd(4611686018427387904.5), "4611686018427387904");
    }
}
