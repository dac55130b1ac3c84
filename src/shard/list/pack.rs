//! One list element in Valkey's listpack entry format: an encoding header, the data, and a
//! back-length so the entry can also be walked from its end. A canonical decimal integer is
//! stored as an integer of 1 to 9 bytes, anything else as a length-prefixed string.
//!
//! Using the very format Valkey uses (rather than something merely similar) gives two things:
//! the bytes a node takes are exactly Valkey's `lpBytes`, so the listpack/quicklist conversion
//! points and node splits land where Valkey's do; and small elements cost what they cost in
//! Valkey — 2 bytes for "42", 5 for "xxx".

/// A listpack's header (total bytes + element count) and terminator, counted in a node's size
/// as Valkey counts them (our nodes do not store them).
pub const LP_HDR: usize = 6;
pub const LP_EOF: usize = 1;

const STR6: u8 = 0x80;
const INT13: u8 = 0xC0;
const STR12: u8 = 0xE0;
const STR32: u8 = 0xF0;
const INT16: u8 = 0xF1;
const INT24: u8 = 0xF2;
const INT32: u8 = 0xF3;
const INT64: u8 = 0xF4;

/// An entry as stored: a string, or an integer that reads back as its decimal text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw<'a> {
    Str(&'a [u8]),
    Int(i64),
}

impl Raw<'_> {
    /// Whether this entry holds `v`. A string that is a canonical integer is always stored as
    /// an integer, so an integer entry matches exactly the text of its value.
    #[inline]
    pub fn matches(&self, v: &[u8], v_int: Option<i64>) -> bool {
        match *self {
            Raw::Str(s) => v_int.is_none() && s == v,
            Raw::Int(i) => v_int == Some(i),
        }
    }
}

/// The integer `v` is stored as, if it is one (Valkey's lpStringToInt64: canonical decimal).
#[inline]
pub fn as_int(v: &[u8]) -> Option<i64> {
    if v.is_empty() || !(v[0].is_ascii_digit() || v[0] == b'-') {
        return None;
    }
    crate::util::parse_i64(v)
}

/// Bytes of the header and data of an integer entry.
fn int_len(i: i64) -> usize {
    match i {
        0..=127 => 1,
        -4096..=4095 => 2,
        -32768..=32767 => 3,
        -8_388_608..=8_388_607 => 4,
        -2_147_483_648..=2_147_483_647 => 5,
        _ => 9,
    }
}

/// Bytes of the header and data of a string entry.
fn str_len(n: usize) -> usize {
    match n {
        0..64 => 1 + n,
        64..4096 => 2 + n,
        _ => 5 + n,
    }
}

/// Bytes of the back-length that follows an entry of `l` header and data bytes.
fn backlen_size(l: usize) -> usize {
    match l {
        0..=127 => 1,
        128..16383 => 2,
        16383..2_097_151 => 3,
        2_097_151..268_435_455 => 4,
        _ => 5,
    }
}

/// Bytes `v` takes as an entry (header, data and back-length).
#[inline]
pub fn entry_len(v: &[u8]) -> usize {
    let l = match as_int(v) {
        Some(i) => int_len(i),
        None => str_len(v.len()),
    };
    l + backlen_size(l)
}

/// Writes the entry for `v` into `out`, which is exactly `entry_len(v)` bytes long.
pub fn write(v: &[u8], out: &mut [u8]) {
    let l = match as_int(v) {
        Some(i) => write_int(i, out),
        None => write_str(v, out),
    };
    write_backlen(l, &mut out[l..]);
}

fn write_int(i: i64, out: &mut [u8]) -> usize {
    let len = int_len(i);
    match len {
        1 => out[0] = i as u8,
        2 => {
            let u = (i as u64) & 0x1FFF;
            out[0] = INT13 | (u >> 8) as u8;
            out[1] = u as u8;
        }
        _ => {
            out[0] = match len {
                3 => INT16,
                4 => INT24,
                5 => INT32,
                _ => INT64,
            };
            out[1..len].copy_from_slice(&i.to_le_bytes()[..len - 1]);
        }
    }
    len
}

fn write_str(v: &[u8], out: &mut [u8]) -> usize {
    let n = v.len();
    let h = match n {
        0..64 => {
            out[0] = STR6 | n as u8;
            1
        }
        64..4096 => {
            out[0] = STR12 | (n >> 8) as u8;
            out[1] = n as u8;
            2
        }
        _ => {
            out[0] = STR32;
            out[1..5].copy_from_slice(&(n as u32).to_le_bytes());
            5
        }
    };
    out[h..h + n].copy_from_slice(v);
    h + n
}

/// The back-length: `l` in 7-bit groups, most significant first, every byte but the first
/// flagged with the high bit, so it reads right to left from the entry's last byte.
fn write_backlen(l: usize, out: &mut [u8]) {
    let n = backlen_size(l);
    for (k, b) in out[..n].iter_mut().enumerate() {
        let shift = 7 * (n - 1 - k);
        *b = ((l >> shift) & 127) as u8 | if k == 0 { 0 } else { 128 };
    }
}

/// The entry starting at `pos`: its value and its total length.
#[inline]
pub fn read(buf: &[u8], pos: usize) -> (Raw<'_>, usize) {
    let b = buf[pos];
    let (raw, l) = if b & 0x80 == 0 {
        (Raw::Int(i64::from(b)), 1)
    } else if b & 0xC0 == STR6 {
        let n = usize::from(b & 0x3F);
        (Raw::Str(&buf[pos + 1..pos + 1 + n]), 1 + n)
    } else if b & 0xE0 == INT13 {
        let u = (u16::from(b & 0x1F) << 8) | u16::from(buf[pos + 1]);
        // Sign-extend the 13-bit two's complement value.
        (Raw::Int(i64::from(((u << 3) as i16) >> 3)), 2)
    } else if b & 0xF0 == STR12 {
        let n = (usize::from(b & 0x0F) << 8) | usize::from(buf[pos + 1]);
        (Raw::Str(&buf[pos + 2..pos + 2 + n]), 2 + n)
    } else if b == STR32 {
        let n = u32::from_le_bytes(buf[pos + 1..pos + 5].try_into().expect("4 bytes")) as usize;
        (Raw::Str(&buf[pos + 5..pos + 5 + n]), 5 + n)
    } else {
        let n = match b {
            INT16 => 2,
            INT24 => 3,
            INT32 => 4,
            _ => 8,
        };
        let mut le = [0u8; 8];
        le[..n].copy_from_slice(&buf[pos + 1..pos + 1 + n]);
        // Sign-extend from n bytes.
        let shift = 64 - 8 * n as u32;
        (Raw::Int((i64::from_le_bytes(le) << shift) >> shift), 1 + n)
    };
    (raw, l + backlen_size(l))
}

/// Where the entry that ends at `end` starts.
#[inline]
pub fn start_of_entry_ending_at(buf: &[u8], end: usize) -> usize {
    let mut l = 0usize;
    let mut shift = 0;
    let mut p = end - 1;
    loop {
        l |= usize::from(buf[p] & 127) << shift;
        if buf[p] & 128 == 0 {
            break;
        }
        shift += 7;
        p -= 1;
    }
    end - backlen_size(l) - l
}

/// The length of the entry starting at `pos`.
#[inline]
pub fn len_at(buf: &[u8], pos: usize) -> usize {
    read(buf, pos).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: &[u8]) -> usize {
        let n = entry_len(v);
        let mut buf = vec![0u8; n + 3];
        buf[0] = 0xAA;
        write(v, &mut buf[1..1 + n]);
        let (raw, len) = read(&buf, 1);
        assert_eq!(len, n, "{v:?}");
        match raw {
            Raw::Str(s) => assert_eq!(s, v),
            Raw::Int(i) => assert_eq!(i.to_string().as_bytes(), v),
        }
        assert!(raw.matches(v, as_int(v)));
        assert_eq!(start_of_entry_ending_at(&buf, 1 + n), 1, "{v:?}");
        n
    }

    #[test]
    fn entries_take_valkeys_sizes_and_read_back_both_ways() {
        // Valkey's listpack sizes: header + data + back-length.
        assert_eq!(roundtrip(b"0"), 2);
        assert_eq!(roundtrip(b"127"), 2);
        assert_eq!(roundtrip(b"128"), 3);
        assert_eq!(roundtrip(b"-1"), 3);
        assert_eq!(roundtrip(b"-4096"), 3);
        assert_eq!(roundtrip(b"4095"), 3);
        assert_eq!(roundtrip(b"4096"), 4);
        assert_eq!(roundtrip(b"-32768"), 4);
        assert_eq!(roundtrip(b"32768"), 5);
        assert_eq!(roundtrip(b"-8388608"), 5);
        assert_eq!(roundtrip(b"8388608"), 6);
        assert_eq!(roundtrip(b"-2147483648"), 6);
        assert_eq!(roundtrip(b"2147483648"), 10);
        assert_eq!(roundtrip(b"-9223372036854775808"), 10);
        assert_eq!(roundtrip(b"9223372036854775807"), 10);
        assert_eq!(roundtrip(b""), 2);
        assert_eq!(roundtrip(b"xxx"), 5);
        assert_eq!(roundtrip(b"01"), 4);
        assert_eq!(roundtrip(b"-0"), 4);
        assert_eq!(roundtrip(b"+1"), 4);
        assert_eq!(roundtrip(b"9223372036854775808"), 21);
        assert_eq!(roundtrip(&[b'x'; 63]), 65);
        assert_eq!(roundtrip(&[b'x'; 64]), 67);
        assert_eq!(roundtrip(&[b'x'; 125]), 128);
        assert_eq!(roundtrip(&[b'x'; 126]), 130);
        assert_eq!(roundtrip(&[b'x'; 4095]), 4097 + 2);
        assert_eq!(roundtrip(&[b'x'; 4096]), 4101 + 2);
        assert_eq!(roundtrip(&[b'y'; 20000]), 20005 + 3);
        assert_eq!(roundtrip(&[0u8, 255, 13, 10]), 6);
    }

    #[test]
    fn every_small_integer_round_trips() {
        for i in -70_000i64..70_000 {
            roundtrip(i.to_string().as_bytes());
        }
        for i in [
            i64::MIN,
            i64::MAX,
            1 << 40,
            -(1 << 40),
            8_388_607,
            -8_388_609,
        ] {
            roundtrip(i.to_string().as_bytes());
        }
    }
}
