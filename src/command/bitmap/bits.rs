//! Bits of a string, numbered as Valkey numbers them: bit 0 is the most significant bit of the
//! first byte, bit 8 the most significant bit of the second, and so on. A string reads as if
//! it were followed by zero bytes for ever.
//!
//! Pure functions over byte slices: no shard, no reply. The commands in `bitmap.rs` turn
//! their results into replies and mutation records.

/// Number of set bits in `bytes`, a word at a time (and with the CPU's POPCNT instruction
/// when it has one: the portable `count_ones` is a dozen instructions per word).
pub fn popcount(bytes: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has POPCNT, the only feature the function is compiled for.
            return unsafe { popcount_with_popcnt(bytes) };
        }
    }
    popcount_words(bytes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn popcount_with_popcnt(bytes: &[u8]) -> u64 {
    popcount_words(bytes)
}

/// The counting loop. Four independent sums keep several POPCNTs in flight.
#[inline(always)]
fn popcount_words(bytes: &[u8]) -> u64 {
    let mut blocks = bytes.chunks_exact(32);
    let mut sums = [0u64; 4];
    for b in blocks.by_ref() {
        for (sum, w) in sums.iter_mut().zip(b.chunks_exact(8)) {
            *sum += u64::from(word(w).count_ones());
        }
    }
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(8);
    let mut total: u64 = sums.iter().sum();
    for w in words.by_ref() {
        total += u64::from(word(w).count_ones());
    }
    total
        + words
            .remainder()
            .iter()
            .map(|b| u64::from(b.count_ones()))
            .sum::<u64>()
}

/// Eight bytes as one big-endian word: the first byte's bits are the word's high bits, so a
/// word's leading zeros count bits in Valkey's order.
#[inline(always)]
fn word(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("chunks of 8 bytes"))
}

/// The bits of a byte at or after bit `from` (0..8) within it.
fn from_mask(from: u64) -> u8 {
    0xFF >> (from % 8)
}

/// The bits of a byte at or before bit `to` (0..8) within it.
fn through_mask(to: u64) -> u8 {
    !((0xFFu16 >> (to % 8 + 1)) as u8)
}

/// Number of set bits among bits `first..=last`, which must lie within `s`.
pub fn count_range(s: &[u8], first: u64, last: u64) -> u64 {
    debug_assert!(first <= last && last < s.len() as u64 * 8);
    let (a, b) = ((first / 8) as usize, (last / 8) as usize);
    let outside =
        (s[a] & !from_mask(first)).count_ones() + (s[b] & !through_mask(last)).count_ones();
    popcount(&s[a..=b]) - u64::from(outside)
}

/// The first bit equal to `bit` among bits `first..=last` of `s` (which must lie within it),
/// skipping whole words of the other value.
pub fn position(s: &[u8], bit: bool, first: u64, last: u64) -> Option<u64> {
    debug_assert!(first <= last && last < s.len() as u64 * 8);
    // Looked-for bits read as ones from here on.
    let wanted = |b: u8| if bit { b } else { !b };
    let (a, b) = ((first / 8) as usize, (last / 8) as usize);
    let at =
        |i: usize, bits: u8| (bits != 0).then(|| i as u64 * 8 + u64::from(bits.leading_zeros()));

    if a == b {
        return at(a, wanted(s[a]) & from_mask(first) & through_mask(last));
    }
    if let Some(p) = at(a, wanted(s[a]) & from_mask(first)) {
        return Some(p);
    }
    let middle = &s[a + 1..b];
    let mut words = middle.chunks_exact(8);
    for (k, w) in words.by_ref().enumerate() {
        let w = if bit { word(w) } else { !word(w) };
        if w != 0 {
            return Some((a + 1 + k * 8) as u64 * 8 + u64::from(w.leading_zeros()));
        }
    }
    let tail_start = a + 1 + middle.len() - words.remainder().len();
    for (k, &byte) in words.remainder().iter().enumerate() {
        if let Some(p) = at(tail_start + k, wanted(byte)) {
            return Some(p);
        }
    }
    at(b, wanted(s[b]) & through_mask(last))
}

/// Whether bit `offset` is set (false past the end).
pub fn get_bit(s: &[u8], offset: u64) -> bool {
    usize::try_from(offset / 8)
        .ok()
        .and_then(|i| s.get(i))
        .is_some_and(|&byte| byte & (0x80 >> (offset % 8)) != 0)
}

/// A byte with bit `offset % 8` set to `on`.
pub fn with_bit(byte: u8, offset: u64, on: bool) -> u8 {
    let mask = 0x80 >> (offset % 8);
    if on { byte | mask } else { byte & !mask }
}

/// The `bits`-wide (1..=64) unsigned field at bit `offset` of the bytes `byte_at` gives
/// (`byte_at(i)` is byte `i` of the string, 0 past its end).
pub fn get_field(byte_at: impl Fn(u64) -> u8, offset: u64, bits: u32) -> u64 {
    debug_assert!((1..=64).contains(&bits));
    let first = offset / 8;
    let mut buf = [0u8; 16];
    // A field of up to 64 bits starting anywhere in a byte spans at most 9 bytes.
    for (k, b) in buf.iter_mut().take(9).enumerate() {
        *b = byte_at(first + k as u64);
    }
    let v = u128::from_be_bytes(buf) << (offset % 8);
    (v >> (128 - bits)) as u64
}

/// Writes the low `bits` (1..=64) of `value` as the field at bit `offset` of `s`, whose
/// bit 0 is bit `base * 8` of the string; `s` must hold the whole field.
pub fn set_field(s: &mut [u8], base: u64, offset: u64, bits: u32, value: u64) {
    debug_assert!((1..=64).contains(&bits));
    let first = (offset / 8 - base) as usize;
    let shift = offset % 8;
    let len = ((shift + u64::from(bits)).div_ceil(8)) as usize;
    let bytes = &mut s[first..first + len];
    let mut buf = [0u8; 16];
    buf[..len].copy_from_slice(bytes);
    let ones = u128::MAX >> (128 - bits);
    let mask = (ones << (128 - bits)) >> shift;
    let field = ((u128::from(value) & ones) << (128 - bits)) >> shift;
    let v = (u128::from_be_bytes(buf) & !mask) | field;
    bytes.copy_from_slice(&v.to_be_bytes()[..len]);
}

/// A `bits`-wide two's-complement field read as unsigned, sign-extended to i64.
pub fn sign_extend(raw: u64, bits: u32) -> i64 {
    if bits < 64 && raw >> (bits - 1) & 1 == 1 {
        (raw | (u64::MAX << bits)) as i64
    } else {
        raw as i64
    }
}

/// What BITFIELD does when SET or INCRBY leaves the range of the field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Wrap around (modular arithmetic): the default.
    Wrap,
    /// Saturate at the type's minimum or maximum.
    Sat,
    /// Refuse: the field is left alone and the reply is nil.
    Fail,
}

/// The value an unsigned `bits`-wide (1..=63) field takes when `incr` is added to `value`
/// (SET passes the new value with 0), or None when it overflows under `Overflow::Fail`.
///
/// Valkey's checkUnsignedBitfieldOverflow, arithmetic quirks included: a negative SET value
/// is a huge unsigned one, so it saturates at the maximum.
pub fn unsigned_result(value: u64, incr: i64, bits: u32, ow: Overflow) -> Option<u64> {
    let max = u64::MAX >> (64 - bits);
    let max_incr = max.wrapping_sub(value) as i64;
    let min_incr = value.wrapping_neg() as i64;
    let over = value > max || (incr > 0 && incr > max_incr);
    let under = !over && incr < 0 && incr < min_incr;
    if !over && !under {
        return Some(value.wrapping_add(incr as u64));
    }
    match ow {
        Overflow::Wrap => Some(value.wrapping_add(incr as u64) & max),
        Overflow::Sat => Some(if over { max } else { 0 }),
        Overflow::Fail => None,
    }
}

/// As [`unsigned_result`] for a signed `bits`-wide (1..=64) field (Valkey's
/// checkSignedBitfieldOverflow, with its wrapping arithmetic).
pub fn signed_result(value: i64, incr: i64, bits: u32, ow: Overflow) -> Option<i64> {
    let max = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let max_incr = (max as u64).wrapping_sub(value as u64) as i64;
    let min_incr = min.wrapping_sub(value);
    let over = value > max
        || (bits != 64 && incr > max_incr)
        || (value >= 0 && incr > 0 && incr > max_incr);
    let under = !over
        && (value < min
            || (bits != 64 && incr < min_incr)
            || (value < 0 && incr < 0 && incr < min_incr));
    if !over && !under {
        return Some(value.wrapping_add(incr));
    }
    match ow {
        Overflow::Wrap => {
            let sum = value.wrapping_add(incr) as u64;
            Some(if bits < 64 {
                sign_extend(sum & (u64::MAX >> (64 - bits)), bits)
            } else {
                sum as i64
            })
        }
        Overflow::Sat => Some(if over { max } else { min }),
        Overflow::Fail => None,
    }
}

/// A BITOP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitOp {
    And,
    Or,
    Xor,
    Not,
    /// Bits set in the first source and in none of the others.
    Diff,
    /// Bits set in at least one of the other sources but not in the first.
    Diff1,
    /// Bits set in the first source and in at least one of the others.
    AndOr,
    /// Bits set in exactly one source.
    One,
}

impl BitOp {
    pub fn parse(name: &[u8]) -> Option<BitOp> {
        const NAMES: [(&str, BitOp); 8] = [
            ("AND", BitOp::And),
            ("OR", BitOp::Or),
            ("XOR", BitOp::Xor),
            ("NOT", BitOp::Not),
            ("DIFF", BitOp::Diff),
            ("DIFF1", BitOp::Diff1),
            ("ANDOR", BitOp::AndOr),
            ("ONE", BitOp::One),
        ];
        NAMES
            .iter()
            .find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
            .map(|&(_, op)| op)
    }
}

/// `acc[i] = f(acc[i], s[i])` over the bytes `s` has; a loop the compiler vectorizes.
#[inline(always)]
fn fold_into(acc: &mut [u8], s: &[u8], f: impl Fn(u8, u8) -> u8) {
    for (a, &b) in acc.iter_mut().zip(s) {
        *a = f(*a, b);
    }
}

/// BITOP's result: as long as the longest source, shorter ones (and missing keys, which are
/// empty) read as zero bytes. Each source is folded into the result whole, a slice at a
/// time, rather than all sources a byte at a time.
pub fn bitop(op: BitOp, sources: &[&[u8]]) -> Vec<u8> {
    let len = sources.iter().map(|s| s.len()).max().unwrap_or(0);
    let Some((first, rest)) = sources.split_first() else {
        return Vec::new();
    };
    let mut out = vec![0u8; len];
    out[..first.len()].copy_from_slice(first);
    match op {
        BitOp::And => {
            for s in rest {
                fold_into(&mut out, s, |a, b| a & b);
                out[s.len()..].fill(0);
            }
        }
        BitOp::Or => rest
            .iter()
            .for_each(|s| fold_into(&mut out, s, |a, b| a | b)),
        BitOp::Xor => rest
            .iter()
            .for_each(|s| fold_into(&mut out, s, |a, b| a ^ b)),
        BitOp::Not => out.iter_mut().for_each(|b| *b = !*b),
        BitOp::Diff | BitOp::Diff1 | BitOp::AndOr => {
            let mut others = vec![0u8; len];
            for s in rest {
                fold_into(&mut others, s, |a, b| a | b);
            }
            // `out` holds the first source, zero-padded.
            match op {
                BitOp::Diff => fold_into(&mut out, &others, |x, o| x & !o),
                BitOp::Diff1 => fold_into(&mut out, &others, |x, o| !x & o),
                _ => fold_into(&mut out, &others, |x, o| x & o),
            }
        }
        BitOp::One => {
            // `out` gathers the bits of any source, `twice` those seen in two or more.
            let mut twice = vec![0u8; len];
            for s in rest {
                for ((seen, t), &b) in out.iter_mut().zip(twice.iter_mut()).zip(s.iter()) {
                    *t |= *seen & b;
                    *seen |= b;
                }
            }
            fold_into(&mut out, &twice, |seen, t| seen & !t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The model: a string as a vector of bits in Valkey's order.
    fn bits_of(s: &[u8]) -> Vec<bool> {
        (0..s.len() as u64 * 8).map(|i| get_bit(s, i)).collect()
    }

    #[test]
    fn bit_numbering_is_msb_first() {
        assert!(get_bit(&[0x80], 0));
        assert!(!get_bit(&[0x80], 1));
        assert!(get_bit(&[0x00, 0x01], 15));
        assert!(!get_bit(&[0xFF], 8));
        assert!(!get_bit(&[0xFF], u64::MAX));
        assert_eq!(with_bit(0, 1, true), 0x40);
        assert_eq!(with_bit(0xFF, 7, false), 0xFE);
    }

    #[test]
    fn popcount_counts_every_length() {
        for len in 0..80 {
            let s: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let want: u64 = s.iter().map(|b| u64::from(b.count_ones())).sum();
            assert_eq!(popcount(&s), want, "len {len}");
            assert_eq!(popcount_words(&s), want, "len {len}");
        }
    }

    #[test]
    fn range_counts_and_positions() {
        let s = b"foobar";
        assert_eq!(count_range(s, 0, 47), 26);
        assert_eq!(count_range(s, 8, 15), 6);
        assert_eq!(count_range(s, 5, 30), 17);
        assert_eq!(position(&[0xFF, 0xF0, 0x00], false, 0, 23), Some(12));
        assert_eq!(position(&[0x00, 0x00, 0x01], true, 0, 23), Some(23));
        assert_eq!(position(&[0x00, 0x00, 0x01], true, 0, 22), None);
        assert_eq!(position(&[0x80], true, 1, 7), None);
        assert_eq!(position(&[0x7F], false, 0, 7), Some(0));
        assert_eq!(position(&[0x7F], false, 1, 7), None);
    }

    #[test]
    fn fields_read_and_write_across_bytes() {
        // Valkey's example: u5 value 23 at offset 7 of zeros is 00000001|01110000.
        let mut s = [0u8; 2];
        set_field(&mut s, 0, 7, 5, 23);
        assert_eq!(s, [0b0000_0001, 0b0111_0000]);
        assert_eq!(
            get_field(|i| s.get(i as usize).copied().unwrap_or(0), 7, 5),
            23
        );
        let mut s = [0u8; 9];
        set_field(&mut s, 0, 3, 64, u64::MAX);
        assert_eq!(s, [0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xE0]);
        assert_eq!(
            get_field(|i| s.get(i as usize).copied().unwrap_or(0), 3, 64),
            u64::MAX
        );
        assert_eq!(
            sign_extend(
                get_field(|i| s.get(i as usize).copied().unwrap_or(0), 0, 8),
                8
            ),
            0x1F
        );
        assert_eq!(sign_extend(0xFF, 8), -1);
        assert_eq!(sign_extend(0x80, 8), -128);
        assert_eq!(sign_extend(1, 1), -1);
        // A window: bit 0 of the slice is bit 16 of the string.
        let mut w = [0u8; 1];
        set_field(&mut w, 2, 20, 4, 0xF);
        assert_eq!(w, [0x0F]);
    }

    #[test]
    fn overflow_rules_match_valkey() {
        use Overflow::*;
        assert_eq!(unsigned_result(250, 10, 8, Wrap), Some(4));
        assert_eq!(unsigned_result(250, 10, 8, Sat), Some(255));
        assert_eq!(unsigned_result(250, 10, 8, Fail), None);
        assert_eq!(unsigned_result(3, -10, 8, Wrap), Some(249));
        assert_eq!(unsigned_result(3, -10, 8, Sat), Some(0));
        // SET u8 -1: a huge unsigned value.
        assert_eq!(unsigned_result(u64::MAX, 0, 8, Sat), Some(255));
        assert_eq!(unsigned_result(u64::MAX, 0, 8, Wrap), Some(255));
        assert_eq!(unsigned_result(300, 0, 8, Wrap), Some(44));
        assert_eq!(signed_result(120, 10, 8, Wrap), Some(-126));
        assert_eq!(signed_result(120, 10, 8, Sat), Some(127));
        assert_eq!(signed_result(-120, -10, 8, Sat), Some(-128));
        assert_eq!(signed_result(-120, -10, 8, Wrap), Some(126));
        assert_eq!(signed_result(i64::MAX, 1, 64, Wrap), Some(i64::MIN));
        assert_eq!(signed_result(i64::MIN, -1, 64, Sat), Some(i64::MIN));
        assert_eq!(signed_result(i64::MIN, i64::MIN, 64, Fail), None);
        // Valkey's quirk: SET i8 to i64::MIN computes max - value with wrapping, sees an
        // "overflow" and saturates at the maximum (redis-server 7.0 answers 127 too).
        assert_eq!(signed_result(i64::MIN, 0, 8, Sat), Some(127));
        assert_eq!(signed_result(-1, 0, 1, Sat), Some(-1));
        assert_eq!(signed_result(1, 0, 1, Sat), Some(0));
    }

    #[test]
    fn bitop_examples() {
        let a: &[u8] = b"foobar";
        let b: &[u8] = b"abcdef";
        assert_eq!(bitop(BitOp::And, &[a, b]), b"`bc`ab");
        // Redis's documentation example for the Redis 8.2 / Valkey 9 operations.
        let (x, y1, y2) = (
            &[0b1111_0000u8][..],
            &[0b1100_1100u8][..],
            &[0b1010_1010u8][..],
        );
        assert_eq!(bitop(BitOp::Diff, &[x, y1, y2]), [0b0001_0000]);
        assert_eq!(bitop(BitOp::Diff1, &[x, y1, y2]), [0b0000_1110]);
        assert_eq!(bitop(BitOp::AndOr, &[x, y1, y2]), [0b1110_0000]);
        assert_eq!(bitop(BitOp::One, &[x, y1, y2]), [0b0000_0110 | 0b0001_0000]);
        assert_eq!(bitop(BitOp::Not, &[b"\x0f\xff"]), [0xF0, 0x00]);
        assert_eq!(bitop(BitOp::Or, &[b"", b""]), Vec::<u8>::new());
        assert_eq!(BitOp::parse(b"diff1"), Some(BitOp::Diff1));
        assert_eq!(BitOp::parse(b"nand"), None);
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        // Mostly 0x00/0xFF runs, so word skipping and edges get exercised.
        prop::collection::vec(prop_oneof![Just(0u8), Just(0xFF), any::<u8>()], 0..max)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn counts_and_positions_match_the_model(s in bytes(70), a in any::<u64>(), b in any::<u64>(), bit in any::<bool>()) {
            prop_assume!(!s.is_empty());
            let n = s.len() as u64 * 8;
            let (first, last) = { let (x, y) = (a % n, b % n); (x.min(y), x.max(y)) };
            let model = bits_of(&s);
            let range = &model[first as usize..=last as usize];
            prop_assert_eq!(count_range(&s, first, last), range.iter().filter(|&&x| x).count() as u64);
            let want = range.iter().position(|&x| x == bit).map(|p| p as u64 + first);
            prop_assert_eq!(position(&s, bit, first, last), want);
        }

        #[test]
        fn fields_match_the_model(s in bytes(20), offset in 0u64..200, bits in 1u32..=64, value in any::<u64>()) {
            let mut model = bits_of(&s);
            let read = |m: &[bool]| (0..u64::from(bits)).fold(0u64, |acc, i| {
                acc << 1 | u64::from(m.get((offset + i) as usize).copied().unwrap_or(false))
            });
            prop_assert_eq!(get_field(|i| s.get(i as usize).copied().unwrap_or(0), offset, bits), read(&model));
            let end = ((offset + u64::from(bits)).div_ceil(8)) as usize;
            let mut grown = s.clone();
            grown.resize(grown.len().max(end), 0);
            model.resize(grown.len() * 8, false);
            let base = offset / 8;
            let mut window = grown[base as usize..end].to_vec();
            set_field(&mut window, base, offset, bits, value);
            grown[base as usize..end].copy_from_slice(&window);
            for i in 0..u64::from(bits) {
                model[(offset + i) as usize] = value >> (u64::from(bits) - 1 - i) & 1 == 1;
            }
            prop_assert_eq!(bits_of(&grown), model);
        }

        #[test]
        fn bitop_matches_the_model(srcs in prop::collection::vec(bytes(40), 1..5), op in 0usize..8) {
            let op = [BitOp::And, BitOp::Or, BitOp::Xor, BitOp::Not, BitOp::Diff, BitOp::Diff1, BitOp::AndOr, BitOp::One][op];
            let srcs: Vec<&[u8]> = if op == BitOp::Not { vec![&srcs[0][..]] } else { srcs.iter().map(|s| &s[..]).collect() };
            let got = bitop(op, &srcs);
            let len = srcs.iter().map(|s| s.len()).max().unwrap_or(0);
            prop_assert_eq!(got.len(), len);
            for i in 0..len as u64 * 8 {
                let v: Vec<bool> = srcs.iter().map(|s| get_bit(s, i)).collect();
                let others = v[1..].iter().any(|&x| x);
                let want = match op {
                    BitOp::And => v.iter().all(|&x| x),
                    BitOp::Or => v.iter().any(|&x| x),
                    BitOp::Xor => v.iter().filter(|&&x| x).count() % 2 == 1,
                    BitOp::Not => !v[0],
                    BitOp::Diff => v[0] && !others,
                    BitOp::Diff1 => !v[0] && others,
                    BitOp::AndOr => v[0] && others,
                    BitOp::One => v.iter().filter(|&&x| x).count() == 1,
                };
                prop_assert_eq!(get_bit(&got, i), want, "bit {}", i);
            }
        }
    }
}
