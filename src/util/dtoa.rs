//! `d2string()` / `fpconv_dtoa()` as used by Valkey 8 for double replies.
//!
//! Valkey formats doubles with the Grisu2 algorithm (Florian Loitsch,
//! "Printing Floating-Point Numbers Quickly and Accurately with Integers",
//! PLDI 2010) followed by its own layout rules.  Grisu2 is *not* always the
//! shortest representation (Ryu / Rust's `Display` are), so to be byte
//! compatible this module reimplements the exact same arithmetic: the same
//! cached-power selection, boundary computation, rounded 64x64 multiply,
//! digit generation and "round towards w" weeding, and the same layout
//! thresholds.

/// Normalized 64-bit approximations (rounded to nearest) of 10^k for
/// k = -348, -340, ..., 340, as (significand, binary exponent):
/// 10^k ~= significand * 2^exponent.
const CACHED_POW10: [(u64, i32); 87] = [
    (18054884314459144840, -1220),
    (13451937075301367670, -1193),
    (10022474136428063862, -1166),
    (14934650266808366570, -1140),
    (11127181549972568877, -1113),
    (16580792590934885855, -1087),
    (12353653155963782858, -1060),
    (18408377700990114895, -1034),
    (13715310171984221708, -1007),
    (10218702384817765436, -980),
    (15227053142812498563, -954),
    (11345038669416679861, -927),
    (16905424996341287883, -901),
    (12595523146049147757, -874),
    (9384396036005875287, -847),
    (13983839803942852151, -821),
    (10418772551374772303, -794),
    (15525180923007089351, -768),
    (11567161174868858868, -741),
    (17236413322193710309, -715),
    (12842128665889583758, -688),
    (9568131466127621947, -661),
    (14257626930069360058, -635),
    (10622759856335341974, -608),
    (15829145694278690180, -582),
    (11793632577567316726, -555),
    (17573882009934360870, -529),
    (13093562431584567480, -502),
    (9755464219737475723, -475),
    (14536774485912137811, -449),
    (10830740992659433045, -422),
    (16139061738043178685, -396),
    (12024538023802026127, -369),
    (17917957937422433684, -343),
    (13349918974505688015, -316),
    (9946464728195732843, -289),
    (14821387422376473014, -263),
    (11042794154864902060, -236),
    (16455045573212060422, -210),
    (12259964326927110867, -183),
    (18268770466636286478, -157),
    (13611294676837538539, -130),
    (10141204801825835212, -103),
    (15111572745182864684, -77),
    (11258999068426240000, -50),
    (16777216000000000000, -24),
    (12500000000000000000, 3),
    (9313225746154785156, 30),
    (13877787807814456755, 56),
    (10339757656912845936, 83),
    (15407439555097886824, 109),
    (11479437019748901445, 136),
    (17105694144590052135, 162),
    (12744735289059618216, 189),
    (9495567745759798747, 216),
    (14149498560666738074, 242),
    (10542197943230523224, 269),
    (15709099088952724970, 295),
    (11704190886730495818, 322),
    (17440603504673385349, 348),
    (12994262207056124023, 375),
    (9681479787123295682, 402),
    (14426529090290212157, 428),
    (10748601772107342003, 455),
    (16016664761464807395, 481),
    (11933345169920330789, 508),
    (17782069995880619868, 534),
    (13248674568444952270, 561),
    (9871031767461413346, 588),
    (14708983551653345445, 614),
    (10959046745042015199, 641),
    (16330252207878254650, 667),
    (12166986024289022870, 694),
    (18130221999122236476, 720),
    (13508068024458167312, 747),
    (10064294952495520794, 774),
    (14996968138956309548, 800),
    (11173611982879273257, 827),
    (16649979327439178909, 853),
    (12405201291620119593, 880),
    (9242595204427927429, 907),
    (13772540099066387757, 933),
    (10261342003245940623, 960),
    (15290591125556738113, 986),
    (11392378155556871081, 1013),
    (16975966327722178521, 1039),
    (12648080533535911531, 1066),
];

const FIRST_CACHED_POW: i32 = -348;
const CACHED_POW_STEP: i32 = 8;
const CACHED_POW_COUNT: i32 = 87;
/// Target window for the binary exponent of the scaled upper boundary.
const TARGET_EXP_MIN: i32 = -60;
const TARGET_EXP_MAX: i32 = -32;

const FRAC_MASK: u64 = 0x000F_FFFF_FFFF_FFFF;
const EXP_MASK: u64 = 0x7FF0_0000_0000_0000;
const HIDDEN_BIT: u64 = 0x0010_0000_0000_0000;
const SIGN_MASK: u64 = 0x8000_0000_0000_0000;
const EXP_BIAS: i32 = 1023 + 52;

/// 10^19 ... 10^0.
const POW10_U64: [u64; 20] = [
    10_000_000_000_000_000_000,
    1_000_000_000_000_000_000,
    100_000_000_000_000_000,
    10_000_000_000_000_000,
    1_000_000_000_000_000,
    100_000_000_000_000,
    10_000_000_000_000,
    1_000_000_000_000,
    100_000_000_000,
    10_000_000_000,
    1_000_000_000,
    100_000_000,
    10_000_000,
    1_000_000,
    100_000,
    10_000,
    1_000,
    100,
    10,
    1,
];

/// A "do-it-yourself" floating point number: `f * 2^e`.
#[derive(Clone, Copy, Debug)]
struct DiyFp {
    f: u64,
    e: i32,
}

/// Split a finite, non-zero double into significand and binary exponent.
fn decompose(d: f64) -> DiyFp {
    let bits = d.to_bits();
    let frac = bits & FRAC_MASK;
    let biased = ((bits & EXP_MASK) >> 52) as i32;
    if biased != 0 {
        DiyFp {
            f: frac + HIDDEN_BIT,
            e: biased - EXP_BIAS,
        }
    } else {
        // Subnormal.
        DiyFp {
            f: frac,
            e: 1 - EXP_BIAS,
        }
    }
}

/// Shift `v` left until bit 52 is set, then by 11 more so bit 63 is set.
fn normalize(mut v: DiyFp) -> DiyFp {
    while v.f & HIDDEN_BIT == 0 {
        v.f <<= 1;
        v.e -= 1;
    }
    v.f <<= 11;
    v.e -= 11;
    v
}

/// Boundaries m- and m+ (half way to the neighbouring doubles), both with
/// the exponent of the normalized m+.
fn boundaries(v: DiyFp) -> (DiyFp, DiyFp) {
    let mut upper = DiyFp {
        f: (v.f << 1) + 1,
        e: v.e - 1,
    };
    while upper.f & (HIDDEN_BIT << 1) == 0 {
        upper.f <<= 1;
        upper.e -= 1;
    }
    upper.f <<= 10;
    upper.e -= 10;

    // The gap below a power of two is half the gap above it.  (This is
    // applied to the smallest normal too, exactly like fpconv does.)
    let lower_shift = if v.f == HIDDEN_BIT { 2 } else { 1 };
    let mut lower = DiyFp {
        f: (v.f << lower_shift) - 1,
        e: v.e - lower_shift,
    };
    lower.f <<= (lower.e - upper.e) as u32;
    lower.e = upper.e;
    (lower, upper)
}

/// 64x64 -> upper 64 bits, rounded half up on bit 63 of the low half.
fn multiply(a: DiyFp, b: DiyFp) -> DiyFp {
    let product = u128::from(a.f) * u128::from(b.f) + (1u128 << 63);
    DiyFp {
        f: (product >> 64) as u64,
        e: a.e + b.e + 64,
    }
}

/// Pick the cached power of ten that brings `exp` into the target window.
/// Returns it with its decimal exponent k.
fn cached_pow10(exp: i32) -> (DiyFp, i32) {
    const LOG10_2: f64 = 0.30102999566398114;
    // Same estimate (and truncations) as the reference implementation.
    let approx = (f64::from(-(exp + CACHED_POW_COUNT)) * LOG10_2) as i32;
    let mut idx = (approx - FIRST_CACHED_POW) / CACHED_POW_STEP;
    loop {
        let (f, e) = CACHED_POW10[idx as usize];
        let current = exp + e + 64;
        if current < TARGET_EXP_MIN {
            idx += 1;
        } else if current > TARGET_EXP_MAX {
            idx -= 1;
        } else {
            return (DiyFp { f, e }, FIRST_CACHED_POW + idx * CACHED_POW_STEP);
        }
    }
}

/// Move the last generated digit down while that brings the number closer
/// to `w` (distance `w_dist` from the upper boundary) and stays inside the
/// boundaries.  All arithmetic is modulo 2^64, as in the C original.
fn round_weed(
    digits: &mut [u8],
    len: usize,
    delta: u64,
    mut rest: u64,
    ten_kappa: u64,
    w_dist: u64,
) {
    if len == 0 {
        return;
    }
    while rest < w_dist
        && delta.wrapping_sub(rest) >= ten_kappa
        && (rest.wrapping_add(ten_kappa) < w_dist
            || w_dist.wrapping_sub(rest) > rest.wrapping_add(ten_kappa).wrapping_sub(w_dist))
    {
        digits[len - 1] = digits[len - 1].wrapping_sub(1);
        rest = rest.wrapping_add(ten_kappa);
    }
}

/// Digit generation of Grisu2.  Returns the number of digits written; the
/// value is `digits * 10^k` on return.
fn generate_digits(
    w: DiyFp,
    upper: DiyFp,
    lower: DiyFp,
    digits: &mut [u8; 32],
    k: &mut i32,
) -> usize {
    let w_dist = upper.f.wrapping_sub(w.f);
    let mut delta = upper.f.wrapping_sub(lower.f);

    let shift = (-upper.e) as u32;
    let one = 1u64 << shift;
    let mut integral = upper.f >> shift;
    let mut fractional = upper.f & (one - 1);

    let mut len = 0usize;
    let mut kappa: i32 = 10;

    // Integral part: divisors 10^9 down to 10^0.
    for &div in &POW10_U64[10..] {
        let digit = integral / div;
        if digit != 0 || len != 0 {
            digits[len] = b'0' + digit as u8;
            len += 1;
        }
        integral -= digit * div;
        kappa -= 1;

        let rest = (integral << shift).wrapping_add(fractional);
        if rest <= delta {
            *k += kappa;
            round_weed(digits, len, delta, rest, div << shift, w_dist);
            return len;
        }
    }

    // Fractional part.
    let mut unit_idx = 18usize; // POW10_U64[18] == 10
    loop {
        fractional = fractional.wrapping_mul(10);
        delta = delta.wrapping_mul(10);
        kappa -= 1;

        let digit = fractional >> shift;
        if digit != 0 || len != 0 {
            digits[len] = b'0' + digit as u8;
            len += 1;
        }
        fractional &= one - 1;
        if fractional < delta {
            *k += kappa;
            round_weed(
                digits,
                len,
                delta,
                fractional,
                one,
                w_dist.wrapping_mul(POW10_U64[unit_idx]),
            );
            return len;
        }
        unit_idx = unit_idx.saturating_sub(1);
    }
}

/// Grisu2 for a finite non-zero double (sign ignored): digits and decimal
/// exponent k such that |d| ~= digits * 10^k.
fn grisu2(d: f64, digits: &mut [u8; 32]) -> (usize, i32) {
    let v = decompose(d);
    let (lower, upper) = boundaries(v);
    let w = normalize(v);

    let (cached, cached_k) = cached_pow10(upper.e);
    let w = multiply(w, cached);
    let mut upper = multiply(upper, cached);
    let mut lower = multiply(lower, cached);
    lower.f = lower.f.wrapping_add(1);
    upper.f = upper.f.wrapping_sub(1);

    let mut k = -cached_k;
    let len = generate_digits(w, upper, lower, digits, &mut k);
    (len, k)
}

/// fpconv's layout of `digits * 10^k`.
fn emit_digits(digits: &[u8], mut ndigits: usize, k: i32, neg: bool, out: &mut Vec<u8>) {
    let nd = ndigits as i32;
    let mut exp = (k + nd - 1).abs();

    // Plain integer, padded with zeros.
    if k >= 0 && exp < nd + 7 {
        out.extend_from_slice(&digits[..ndigits]);
        out.resize(out.len() + k as usize, b'0');
        return;
    }

    // Plain decimal.
    if k < 0 && (k > -7 || exp < 4) {
        let offset = nd - k.abs();
        if offset <= 0 {
            // Below 1: "0." then zeros then the digits.
            out.extend_from_slice(b"0.");
            out.resize(out.len() + (-offset) as usize, b'0');
            out.extend_from_slice(&digits[..ndigits]);
        } else {
            let offset = offset as usize;
            out.extend_from_slice(&digits[..offset]);
            out.push(b'.');
            out.extend_from_slice(&digits[offset..ndigits]);
        }
        return;
    }

    // Scientific: d[.ddd]e(+|-)x, exponent without zero padding.
    ndigits = ndigits.min(18 - usize::from(neg));
    out.push(digits[0]);
    if ndigits > 1 {
        out.push(b'.');
        out.extend_from_slice(&digits[1..ndigits]);
    }
    out.push(b'e');
    out.push(if k + ndigits as i32 - 1 < 0 {
        b'-'
    } else {
        b'+'
    });
    let mut hundreds = 0;
    if exp > 99 {
        hundreds = exp / 100;
        out.push(b'0' + hundreds as u8);
        exp -= hundreds * 100;
    }
    if exp > 9 {
        let tens = exp / 10;
        out.push(b'0' + tens as u8);
        exp -= tens * 10;
    } else if hundreds != 0 {
        out.push(b'0');
    }
    out.push(b'0' + (exp % 10) as u8);
}

/// `fpconv_dtoa()`: append the Grisu2 rendering of `d`.
pub(crate) fn fpconv_dtoa(d: f64, out: &mut Vec<u8>) {
    let neg = d.to_bits() & SIGN_MASK != 0;
    if neg {
        out.push(b'-');
    }
    if d == 0.0 {
        out.push(b'0');
        return;
    }
    if d.is_nan() {
        out.extend_from_slice(b"nan");
        return;
    }
    if d.is_infinite() {
        out.extend_from_slice(b"inf");
        return;
    }
    let mut digits = [0u8; 32];
    let (len, k) = grisu2(d, &mut digits);
    emit_digits(&digits, len, k, neg, out);
}

/// `double2ll()`: the integer value of `d` if it is integral and within
/// +-(i64::MAX / 2) (as a double, i.e. +-2^62).
fn double_to_i64(d: f64) -> Option<i64> {
    const LIMIT: f64 = (i64::MAX / 2) as f64;
    if !(-LIMIT..=LIMIT).contains(&d) {
        return None;
    }
    let ll = d as i64;
    if ll as f64 == d { Some(ll) } else { None }
}

/// Valkey's `d2string()`.
pub(crate) fn d2string(d: f64, out: &mut Vec<u8>) {
    if d.is_nan() {
        out.extend_from_slice(b"nan");
    } else if d.is_infinite() {
        out.extend_from_slice(if d < 0.0 { b"-inf" } else { b"inf" });
    } else if d == 0.0 {
        out.extend_from_slice(if d.is_sign_negative() { b"-0" } else { b"0" });
    } else if let Some(ll) = double_to_i64(d) {
        super::num::format_i64(ll, out);
    } else {
        fpconv_dtoa(d, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dtoa(d: f64) -> String {
        let mut out = Vec::new();
        fpconv_dtoa(d, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Tiny deterministic PRNG (xorshift64*), so tests need no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    #[test]
    fn cached_powers_are_normalized_and_increasing() {
        for (i, &(f, e)) in CACHED_POW10.iter().enumerate() {
            assert!(f >> 63 == 1, "entry {i} not normalized");
            if i > 0 {
                // 10^8 ~= 2^26.6: consecutive exponents differ by 26 or 27.
                let de = e - CACHED_POW10[i - 1].1;
                assert!(de == 26 || de == 27, "entry {i}");
            }
        }
        // 10^0 is not in the table, 10^4 is: 10000 = 0x9C40 << 48.
        let (f, e) = CACHED_POW10[((4 - FIRST_CACHED_POW) / CACHED_POW_STEP) as usize];
        assert_eq!((f, e), (10000u64 << 50, -50));
    }

    #[test]
    fn grisu_layout() {
        assert_eq!(dtoa(0.0), "0");
        assert_eq!(dtoa(-0.0), "-0");
        assert_eq!(dtoa(1.0), "1");
        assert_eq!(dtoa(100.0), "100");
        assert_eq!(dtoa(1e7), "10000000");
        assert_eq!(dtoa(1e8), "1e+8");
        assert_eq!(dtoa(12345e8), "1.2345e+12");
        assert_eq!(dtoa(12345e7), "123450000000");
        assert_eq!(dtoa(0.5), "0.5");
        assert_eq!(dtoa(0.001), "0.001");
        assert_eq!(dtoa(1e-6), "0.000001");
        assert_eq!(dtoa(1.5e-6), "1.5e-6");
        assert_eq!(dtoa(1.5e-5), "0.000015");
        assert_eq!(dtoa(1e-7), "1e-7");
        assert_eq!(dtoa(1.25e-7), "1.25e-7");
        assert_eq!(dtoa(1.234e-10), "1.234e-10");
        assert_eq!(dtoa(1e100), "1e+100");
        assert_eq!(dtoa(1e-100), "1e-100");
        assert_eq!(dtoa(1e-105), "1e-105");
        assert_eq!(dtoa(-2.5e-200), "-2.5e-200");
        assert_eq!(dtoa(123.456), "123.456");
    }

    /// Digits of Rust's shortest round-trip representation and its exponent.
    fn shortest_digits(d: f64) -> (String, i32) {
        let s = format!("{:e}", d.abs());
        let (mant, exp) = s.split_once('e').unwrap();
        let digits: String = mant.chars().filter(|c| *c != '.').collect();
        let exp: i32 = exp.parse().unwrap();
        (digits.clone(), exp - (digits.len() as i32 - 1))
    }

    #[test]
    fn grisu_round_trips_and_is_nearly_shortest() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut not_shortest = 0u32;
        let n = 300_000;
        for i in 0..n {
            let d = if i % 2 == 0 {
                // Uniform over all finite bit patterns.
                let d = f64::from_bits(rng.next());
                if !d.is_finite() || d == 0.0 {
                    continue;
                }
                d
            } else {
                // "Human" numbers: few digits, moderate exponents.
                let mant = (rng.next() % 1_000_000) as f64;
                let exp = (rng.next() % 40) as i32 - 20;
                let d = mant * 10f64.powi(exp);
                if d == 0.0 {
                    continue;
                }
                d
            };
            let mut digits = [0u8; 32];
            let (len, k) = grisu2(d, &mut digits);
            assert!((1..=17).contains(&len), "{d:e}: {len} digits");
            assert_ne!(digits[0], b'0', "{d:e}");
            let text = format!("{}e{}", std::str::from_utf8(&digits[..len]).unwrap(), k);
            let back: f64 = text.parse().unwrap();
            assert_eq!(back, d.abs(), "{d:e} -> {text}");
            let (sd, sk) = shortest_digits(d);
            if sd.len() != len {
                not_shortest += 1;
                assert!(len > sd.len(), "{d:e}: grisu {text} vs shortest {sd}e{sk}");
            }
            // Full rendering must parse back too.
            let full = dtoa(d);
            assert_eq!(full.parse::<f64>().unwrap(), d, "{full}");
        }
        // Grisu2 is non-shortest for a small fraction of inputs.
        assert!(not_shortest < n / 100, "{not_shortest}");
    }

    #[test]
    fn subnormals_and_extremes() {
        for d in [
            5e-324,
            1e-323,
            f64::from_bits(0x000F_FFFF_FFFF_FFFF), // largest subnormal
            f64::MIN_POSITIVE,
            f64::MAX,
            -f64::MAX,
            f64::EPSILON,
        ] {
            let s = dtoa(d);
            assert_eq!(s.parse::<f64>().unwrap(), d, "{s}");
        }
    }

    #[test]
    fn d2string_paths() {
        let f = |d: f64| {
            let mut out = Vec::new();
            d2string(d, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(f(1e8), "100000000");
        assert_eq!(f(-1e8), "-100000000");
        assert_eq!(f(4611686018427387904.0), "4611686018427387904");
        assert_eq!(f(1.5), "1.5");
        assert_eq!(f(f64::NAN), "nan");
        assert_eq!(f(-0.0), "-0");
    }
}
