//! The small sorted-set encoding (`listpack` in OBJECT ENCODING): the (member, score)
//! entries in order, packed in one buffer as Valkey's listpack packs them — per entry a
//! LEB128 length, the member's bytes and the score (8 bytes, little-endian). A set of ten
//! short members is one allocation of ~170 bytes instead of eleven. Every operation is a
//! linear walk, fine for the `zset-max-listpack-entries` (128) members such a set holds.

use super::cmp_entry;

#[derive(Debug, Clone, Default)]
pub struct Packed {
    buf: Vec<u8>,
    len: usize,
}

/// An entry as found in the buffer: its bytes `start..end`.
struct Found<'a> {
    start: usize,
    end: usize,
    member: &'a [u8],
    score: f64,
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn encode(member: &[u8], score: f64) -> Vec<u8> {
    let mut e = Vec::with_capacity(member.len() + 10);
    put_len(&mut e, member.len());
    e.extend_from_slice(member);
    e.extend_from_slice(&score.to_le_bytes());
    e
}

impl Packed {
    /// From (score, member) pairs already in order, with distinct members.
    pub fn from_sorted<M: AsRef<[u8]>>(pairs: impl IntoIterator<Item = (f64, M)>) -> Packed {
        let mut p = Packed::default();
        for (score, m) in pairs {
            let m = m.as_ref();
            put_len(&mut p.buf, m.len());
            p.buf.extend_from_slice(m);
            p.buf.extend_from_slice(&score.to_le_bytes());
            p.len += 1;
        }
        p.buf.shrink_to_fit();
        p
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn entries(&self) -> impl Iterator<Item = Found<'_>> + '_ {
        let buf = &self.buf[..];
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= buf.len() {
                return None;
            }
            let start = pos;
            let mut n = 0usize;
            let mut shift = 0;
            loop {
                let b = buf[pos];
                pos += 1;
                n |= ((b & 0x7f) as usize) << shift;
                if b < 0x80 {
                    break;
                }
                shift += 7;
            }
            let member = &buf[pos..pos + n];
            pos += n;
            let score = f64::from_le_bytes(buf[pos..pos + 8].try_into().expect("8 bytes"));
            pos += 8;
            Some(Found {
                start,
                end: pos,
                member,
                score,
            })
        })
    }

    /// Members with their scores, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], f64)> + '_ {
        self.entries().map(|e| (e.member, e.score))
    }

    fn find(&self, m: &[u8]) -> Option<(usize, Found<'_>)> {
        self.entries().enumerate().find(|(_, e)| e.member == m)
    }

    pub fn score(&self, m: &[u8]) -> Option<f64> {
        self.find(m).map(|(_, e)| e.score)
    }

    pub fn rank(&self, m: &[u8]) -> Option<usize> {
        self.find(m).map(|(rank, _)| rank)
    }

    pub fn get(&self, rank: usize) -> Option<(&[u8], f64)> {
        self.iter().nth(rank)
    }

    /// Adds `m`, which must not be present, where its score sorts it.
    pub fn insert_new(&mut self, m: &[u8], score: f64) {
        let at = self
            .entries()
            .find(|e| cmp_entry(e.score, e.member, score, m).is_gt())
            .map_or(self.buf.len(), |e| e.start);
        let entry = encode(m, score);
        // Grow to fit, not by doubling: the allocator's size classes already leave some room.
        self.buf.reserve_exact(entry.len());
        self.buf.splice(at..at, entry);
        self.len += 1;
    }

    /// Removes `m`, returning its score.
    pub fn remove(&mut self, m: &[u8]) -> Option<f64> {
        let (_, e) = self.find(m)?;
        let (start, end, score) = (e.start, e.end, e.score);
        self.buf.drain(start..end);
        self.len -= 1;
        Some(score)
    }

    /// Removes the entries of ranks `start..end` (end ≤ len).
    pub fn remove_range(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        let mut from = self.buf.len();
        let mut to = self.buf.len();
        for (rank, e) in self.entries().enumerate() {
            if rank == start {
                from = e.start;
            }
            if rank + 1 == end {
                to = e.end;
                break;
            }
        }
        self.buf.drain(from..to);
        self.len -= end - start;
    }

    /// How many leading entries satisfy `pred`.
    pub fn partition_point(&self, pred: impl Fn(f64, &[u8]) -> bool) -> usize {
        self.entries()
            .take_while(|e| pred(e.score, e.member))
            .count()
    }

    /// The entries of ranks `start..end`, collected (a listpack is small).
    pub fn range(&self, start: usize, end: usize) -> Vec<(&[u8], f64)> {
        self.iter()
            .skip(start)
            .take(end.saturating_sub(start))
            .collect()
    }

    pub fn heap_size(&self) -> usize {
        self.buf.capacity()
    }

    /// The buffer's allocation (MEMORY USAGE).
    pub fn mem_usage(&self) -> usize {
        crate::shard::usage::alloc_size(self.buf.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_in_order_and_unpacks() {
        let long = vec![b'x'; 300];
        let mut p = Packed::default();
        p.insert_new(b"b", 2.0);
        p.insert_new(b"a", 2.0);
        p.insert_new(&long, -1.0);
        p.insert_new(b"", f64::INFINITY);
        let got: Vec<(Vec<u8>, f64)> = p.iter().map(|(m, s)| (m.to_vec(), s)).collect();
        assert_eq!(
            got,
            [
                (long.clone(), -1.0),
                (b"a".to_vec(), 2.0),
                (b"b".to_vec(), 2.0),
                (Vec::new(), f64::INFINITY)
            ]
        );
        assert_eq!(p.rank(b"b"), Some(2));
        assert_eq!(p.score(&long), Some(-1.0));
        assert_eq!(p.get(3), Some((&b""[..], f64::INFINITY)));
        assert_eq!(p.partition_point(|s, _| s < 2.0), 1);
        assert_eq!(p.remove(b"a"), Some(2.0));
        p.remove_range(0, 2);
        assert_eq!(p.len(), 1);
        assert_eq!(p.range(0, 5), [(&b""[..], f64::INFINITY)]);
        let q = Packed::from_sorted(p.iter().map(|(m, s)| (s, m.to_vec())));
        assert_eq!(q.buf, p.buf);
    }
}
