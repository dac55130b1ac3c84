//! FUNCTION DUMP / RESTORE payloads, in Valkey's format so a dump moves between tallykv and
//! Valkey either way: per library the RDB opcode `FUNCTION2` and the library's code as an RDB
//! string, then the RDB version (2 bytes, little endian) and a CRC-64 (Redis's Jones
//! polynomial, little endian) of everything before it.
//!
//! Dumps written here keep their strings plain; Valkey compresses longer ones with LZF, so a
//! reader understands every RDB string encoding (plain, integer, LZF).

/// `RDB_OPCODE_FUNCTION2`: a library follows.
const OPCODE_FUNCTION2: u8 = 245;
/// `RDB_OPCODE_FUNCTION_PRE_GA`: Redis 7.0 release candidates' format.
const OPCODE_FUNCTION_PRE_GA: u8 = 246;
/// The RDB version stamped on dumps: Valkey 8's, so Valkey 8 and later restore them.
const RDB_VERSION: u16 = 11;
/// The newest RDB version read (Valkey 9 writes 80).
const MAX_RDB_VERSION: u16 = 80;

const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);

/// Why a payload could not be read (the reply text without its `ERR `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// Too short, an unknown RDB version or a wrong checksum.
    Footer,
    /// The records themselves: Valkey's message.
    Records(&'static str),
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadError::Footer => f.write_str("DUMP payload version or checksum are wrong"),
            PayloadError::Records(msg) => f.write_str(msg),
        }
    }
}

/// A dump of the libraries whose codes are given, in that order.
pub fn dump<'a>(codes: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for code in codes {
        out.push(OPCODE_FUNCTION2);
        put_len(&mut out, code.len() as u64);
        out.extend_from_slice(code);
    }
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = CRC64.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The library codes of a dump, in order (Valkey's `verifyDumpPayload` and the loop of
/// `functionRestoreCommand`).
pub fn read(payload: &[u8]) -> Result<Vec<Vec<u8>>, PayloadError> {
    if payload.len() < 10 {
        return Err(PayloadError::Footer);
    }
    let (body, footer) = payload.split_at(payload.len() - 10);
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    let mut crc = [0u8; 8];
    crc.copy_from_slice(&footer[2..]);
    if version > MAX_RDB_VERSION
        || CRC64.checksum(&payload[..payload.len() - 8]) != u64::from_le_bytes(crc)
    {
        return Err(PayloadError::Footer);
    }
    let mut r = Reader { buf: body, pos: 0 };
    let mut codes = Vec::new();
    while r.pos < body.len() {
        let kind = r
            .byte()
            .ok_or(PayloadError::Records("can not read data type"))?;
        match kind {
            OPCODE_FUNCTION2 => {}
            OPCODE_FUNCTION_PRE_GA => {
                return Err(PayloadError::Records(
                    "Pre-GA function format not supported",
                ));
            }
            _ => return Err(PayloadError::Records("given type is not a function")),
        }
        let code = r
            .string()
            .ok_or(PayloadError::Records("Failed loading library payload"))?;
        codes.push(code);
    }
    Ok(codes)
}

/// An RDB length: 6 bits, 14 bits, or a marker byte and 32 or 64 big-endian bits.
fn put_len(out: &mut Vec<u8>, len: u64) {
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.push(0x40 | (len >> 8) as u8);
        out.push(len as u8);
    } else if len <= u32::MAX as u64 {
        out.push(0x80);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// An RDB length, or a special string encoding (`11xxxxxx`: integer or LZF).
enum Len {
    Plain(u64),
    Encoded(u8),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn len(&mut self) -> Option<Len> {
        let first = self.byte()?;
        Some(match first >> 6 {
            0 => Len::Plain((first & 0x3f) as u64),
            1 => Len::Plain(((first as u64 & 0x3f) << 8) | self.byte()? as u64),
            2 => match first {
                0x80 => Len::Plain(u32::from_be_bytes(self.take(4)?.try_into().ok()?) as u64),
                0x81 => Len::Plain(u64::from_be_bytes(self.take(8)?.try_into().ok()?)),
                _ => return None,
            },
            _ => Len::Encoded(first & 0x3f),
        })
    }

    fn plain_len(&mut self) -> Option<usize> {
        match self.len()? {
            Len::Plain(n) => usize::try_from(n).ok(),
            Len::Encoded(_) => None,
        }
    }

    /// An RDB string (`rdbGenericLoadStringObject`).
    fn string(&mut self) -> Option<Vec<u8>> {
        match self.len()? {
            Len::Plain(n) => Some(self.take(usize::try_from(n).ok()?)?.to_vec()),
            // RDB_ENC_INT8 / INT16 / INT32: a little-endian integer, as text.
            Len::Encoded(0) => Some((self.byte()? as i8).to_string().into_bytes()),
            Len::Encoded(1) => Some(
                i16::from_le_bytes(self.take(2)?.try_into().ok()?)
                    .to_string()
                    .into_bytes(),
            ),
            Len::Encoded(2) => Some(
                i32::from_le_bytes(self.take(4)?.try_into().ok()?)
                    .to_string()
                    .into_bytes(),
            ),
            // RDB_ENC_LZF: compressed length, original length, data.
            Len::Encoded(3) => {
                let clen = self.plain_len()?;
                let len = self.plain_len()?;
                lzf_decompress(self.take(clen)?, len)
            }
            Len::Encoded(_) => None,
        }
    }
}

/// LZF decompression (liblzf's format, as RDB uses it): a control byte below 32 copies that
/// many + 1 literal bytes; otherwise its top 3 bits are a back reference's length - 2 (7: one
/// more length byte follows) and the low 5 bits with the next byte its distance - 1. None
/// unless the data decompresses to exactly `len` bytes.
fn lzf_decompress(data: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while i < data.len() {
        let ctrl = data[i] as usize;
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            out.extend_from_slice(data.get(i..i + n)?);
            i += n;
        } else {
            let mut n = ctrl >> 5;
            if n == 7 {
                n += *data.get(i)? as usize;
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + *data.get(i)? as usize + 1;
            i += 1;
            let start = out.len().checked_sub(back)?;
            // Overlapping copies repeat what they just wrote, byte by byte.
            for k in 0..n + 2 {
                let b = out[start + k];
                out.push(b);
            }
        }
        if out.len() > len {
            return None;
        }
    }
    (out.len() == len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_read_back() {
        let a = b"#!lua name=a\nredis.register_function('a', function() return 1 end)".to_vec();
        let b = vec![b'x'; 70_000];
        let payload = dump([a.as_slice(), b.as_slice()]);
        assert_eq!(read(&payload).unwrap(), vec![a, b]);
        assert_eq!(read(&dump([])).unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn bad_payloads_are_refused_as_valkey() {
        assert_eq!(read(b"bad_payload"), Err(PayloadError::Footer));
        let mut p = dump([b"#!lua name=a\n".as_slice()]);
        let n = p.len();
        p[n - 1] ^= 1;
        assert_eq!(read(&p), Err(PayloadError::Footer));
        // A valid footer over records that are not functions.
        let mut body = vec![0u8, 1, b'x'];
        body.extend_from_slice(&RDB_VERSION.to_le_bytes());
        let crc = CRC64.checksum(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            read(&body),
            Err(PayloadError::Records("given type is not a function"))
        );
        let mut truncated = vec![OPCODE_FUNCTION2, 20, b'x'];
        truncated.extend_from_slice(&RDB_VERSION.to_le_bytes());
        let crc = CRC64.checksum(&truncated);
        truncated.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            read(&truncated),
            Err(PayloadError::Records("Failed loading library payload"))
        );
    }

    #[test]
    fn crc64_is_redis_jones() {
        // Redis's crc64 self-test vector.
        assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn reads_valkeys_compressed_strings() {
        // "abcabcabcabcabcabc..." as liblzf compresses it: 3 literals, then a back reference
        // of distance 3 and length 2 + 7 + 10 - 2... built by hand: literal "abc", then
        // (len 7+6=13 → ctrl top bits 7, extra 6), distance 3.
        let data = [2, b'a', b'b', b'c', 0xe0, 6, 2];
        assert_eq!(
            lzf_decompress(&data, 18).unwrap(),
            b"abcabcabcabcabcabc".to_vec()
        );
        let mut r = Reader {
            buf: &[0xc3, 7, 18, 2, b'a', b'b', b'c', 0xe0, 6, 2],
            pos: 0,
        };
        assert_eq!(r.string().unwrap(), b"abcabcabcabcabcabc".to_vec());
        let mut r = Reader {
            buf: &[0xc0, 0xfe, 0xc1, 0x39, 0x30],
            pos: 0,
        };
        assert_eq!(r.string().unwrap(), b"-2".to_vec());
        assert_eq!(r.string().unwrap(), b"12345".to_vec());
        assert!(
            lzf_decompress(&[0xe0, 6, 2], 18).is_none(),
            "reference before data"
        );
    }
}
