//! Hash values. Small hashes are a flat vector of field/value pairs (what Valkey calls a
//! listpack: compact, linear scans, and OBJECT ENCODING says `listpack`); once a hash exceeds
//! `hash-max-listpack-entries` fields or holds a field or value longer than
//! `hash-max-listpack-value` bytes it becomes a hash table, and never converts back — Valkey's
//! rule, which avoids flapping between encodings.

use hashbrown::HashTable;

type Field = Box<[u8]>;

#[derive(Debug, Clone)]
pub enum HashObj {
    Listpack(Vec<(Field, Field)>),
    Table(HashTable<(Field, Field)>),
}

impl PartialEq for HashObj {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(f, v)| other.get(f) == Some(v))
    }
}

/// Encoding limits, from `hash-max-listpack-entries` / `hash-max-listpack-value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashLimits {
    pub max_listpack_entries: usize,
    pub max_listpack_value: usize,
}

impl Default for HashLimits {
    fn default() -> Self {
        HashLimits {
            max_listpack_entries: 128,
            max_listpack_value: 64,
        }
    }
}

fn hash_field(field: &[u8]) -> u64 {
    // One process-wide key, random per process (field names are user input: no fixed seed an
    // attacker could collide). It must not be per thread: a hash value built on one core moves
    // to another by RENAME or COPY, and its table must still find its fields there.
    static STATE: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(ahash::RandomState::new).hash_one(field)
}

impl HashObj {
    pub fn new() -> HashObj {
        HashObj::Listpack(Vec::new())
    }

    pub fn len(&self) -> usize {
        match self {
            HashObj::Listpack(v) => v.len(),
            HashObj::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            HashObj::Listpack(_) => "listpack",
            HashObj::Table(_) => "hashtable",
        }
    }

    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        match self {
            HashObj::Listpack(v) => v.iter().find(|(f, _)| &**f == field).map(|(_, v)| &**v),
            HashObj::Table(t) => t
                .find(hash_field(field), |(f, _)| &**f == field)
                .map(|(_, v)| &**v),
        }
    }

    /// Sets the field/value `pairs` (alternating) of one HSET-like write. As Valkey's
    /// hashTypeTryConversion, a listpack becomes a table up front when the write names more
    /// pairs than `hash-max-listpack-entries` (even if some repeat) or any argument is longer
    /// than `hash-max-listpack-value` (even one that only updates a field).
    pub fn set_pairs(&mut self, pairs: &[&[u8]], limits: HashLimits) {
        if matches!(self, HashObj::Listpack(_))
            && (pairs.len() / 2 > limits.max_listpack_entries
                || pairs.iter().any(|a| a.len() > limits.max_listpack_value))
        {
            self.convert_to_table();
        }
        for pair in pairs.chunks_exact(2) {
            self.set(pair[0], pair[1], limits);
        }
    }

    /// Sets `field` to `value`; returns true when the field is new. A listpack becomes a table
    /// when the field or value is too long for it (whether the field is new or not) or when it
    /// would hold more than `max_listpack_entries` fields.
    pub fn set(&mut self, field: &[u8], value: &[u8], limits: HashLimits) -> bool {
        if let HashObj::Listpack(v) = self {
            let long =
                field.len() > limits.max_listpack_value || value.len() > limits.max_listpack_value;
            if !long {
                if let Some(slot) = v.iter_mut().find(|(f, _)| &**f == field) {
                    slot.1 = value.into();
                    return false;
                }
                if v.len() < limits.max_listpack_entries {
                    v.push((field.into(), value.into()));
                    return true;
                }
            }
            self.convert_to_table();
        }
        let HashObj::Table(t) = self else {
            unreachable!("converted above")
        };
        match t.entry(
            hash_field(field),
            |(f, _)| &**f == field,
            |(f, _)| hash_field(f),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                o.get_mut().1 = value.into();
                false
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert((field.into(), value.into()));
                true
            }
        }
    }

    /// Removes `field`; returns true when it existed.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        match self {
            HashObj::Listpack(v) => match v.iter().position(|(f, _)| &**f == field) {
                Some(i) => {
                    // Order-preserving, like a listpack delete.
                    v.remove(i);
                    true
                }
                None => false,
            },
            HashObj::Table(t) => match t.find_entry(hash_field(field), |(f, _)| &**f == field) {
                Ok(o) => {
                    o.remove();
                    true
                }
                Err(_) => false,
            },
        }
    }

    fn convert_to_table(&mut self) {
        if let HashObj::Listpack(v) = self {
            let mut t = HashTable::with_capacity(v.len() + 1);
            for (f, val) in v.drain(..) {
                t.insert_unique(hash_field(&f), (f, val), |(f, _)| hash_field(f));
            }
            *self = HashObj::Table(t);
        }
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = (&[u8], &[u8])> + '_> {
        match self {
            HashObj::Listpack(v) => Box::new(v.iter().map(|(f, v)| (&**f, &**v))),
            HashObj::Table(t) => Box::new(t.iter().map(|(f, v)| (&**f, &**v))),
        }
    }

    /// A uniformly random field/value pair, `None` when empty.
    pub fn random(&self) -> Option<(&[u8], &[u8])> {
        match self {
            HashObj::Listpack(v) if !v.is_empty() => {
                let (f, val) = &v[fastrand::usize(..v.len())];
                Some((f, val))
            }
            HashObj::Listpack(_) => None,
            HashObj::Table(t) => {
                if t.is_empty() {
                    return None;
                }
                // Rejection sampling over buckets keeps the choice uniform.
                loop {
                    if let Some((f, v)) = t.get_bucket(fastrand::usize(..t.num_buckets())) {
                        return Some((f, v));
                    }
                }
            }
        }
    }

    /// The element at `index` in iteration order (listpack) — used by HRANDFIELD's unique
    /// sampling, which needs distinct picks.
    pub fn nth(&self, index: usize) -> Option<(&[u8], &[u8])> {
        self.iter().nth(index)
    }

    /// One step of HSCAN. A listpack is returned whole (cursor 0), as Valkey does; a table is
    /// walked by bucket index, with the table's size in the cursor so that a resize restarts
    /// the walk (duplicates are allowed by SCAN's contract, misses are not).
    pub fn scan(&self, cursor: u64, count: usize, mut emit: impl FnMut(&[u8], &[u8])) -> u64 {
        match self {
            HashObj::Listpack(v) => {
                for (f, val) in v {
                    emit(f, val);
                }
                0
            }
            HashObj::Table(t) => super::scan::scan_table(t, cursor, count, |(f, v)| emit(f, v)),
        }
    }

    pub fn heap_size(&self) -> usize {
        self.iter().map(|(f, v)| f.len() + v.len() + 32).sum()
    }

    /// Bytes this hash's contents take in allocations (MEMORY USAGE; see `shard::usage`):
    /// exact for a listpack, the table plus sampled fields for a hashtable.
    pub fn mem_usage(&self, samples: usize) -> usize {
        use super::usage::{alloc_size, sampled, table_bytes, vec_bytes};
        let pair = |(f, v): &(Field, Field)| alloc_size(f.len()) + alloc_size(v.len());
        let slot = std::mem::size_of::<(Field, Field)>();
        match self {
            HashObj::Listpack(v) => {
                vec_bytes(v.capacity(), slot) + v.iter().map(pair).sum::<usize>()
            }
            HashObj::Table(t) => {
                table_bytes(t.num_buckets(), slot) + sampled(t.iter().map(pair), t.len(), samples)
            }
        }
    }

    /// Valkey's free effort: a hashtable frees field by field, a listpack in one go.
    pub fn free_effort(&self) -> usize {
        match self {
            HashObj::Table(t) => t.len(),
            HashObj::Listpack(_) => 1,
        }
    }
}

impl Default for HashObj {
    fn default() -> Self {
        HashObj::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_table_past_limits_and_keeps_contents() {
        let limits = HashLimits {
            max_listpack_entries: 4,
            max_listpack_value: 8,
        };
        let mut h = HashObj::new();
        for i in 0..4 {
            assert!(h.set(format!("f{i}").as_bytes(), b"v", limits));
        }
        assert_eq!(h.encoding(), "listpack");
        assert!(h.set(b"f4", b"v", limits));
        assert_eq!(h.encoding(), "hashtable");
        assert_eq!(h.len(), 5);
        assert!(!h.set(b"f1", b"new", limits));
        assert_eq!(h.get(b"f1"), Some(&b"new"[..]));
        assert!(h.remove(b"f1"));
        assert!(!h.remove(b"f1"));
        assert_eq!(h.len(), 4);

        let mut long = HashObj::new();
        long.set(b"f", b"123456789", limits);
        assert_eq!(long.encoding(), "hashtable");

        // Updating an existing field with a long value converts too.
        let mut update = HashObj::new();
        update.set(b"f", b"short", limits);
        assert!(!update.set(b"f", b"123456789", limits));
        assert_eq!(update.encoding(), "hashtable");
        assert_eq!(update.get(b"f"), Some(&b"123456789"[..]));
    }

    #[test]
    fn a_table_built_on_one_thread_finds_its_fields_on_another() {
        let limits = HashLimits {
            max_listpack_entries: 0,
            max_listpack_value: 0,
        };
        let built = std::thread::spawn(move || {
            let mut h = HashObj::new();
            for i in 0..100 {
                h.set(format!("f{i}").as_bytes(), b"v", limits);
            }
            h
        })
        .join()
        .expect("builder thread");
        assert_eq!(built.encoding(), "hashtable");
        for i in 0..100 {
            assert_eq!(
                built.get(format!("f{i}").as_bytes()),
                Some(&b"v"[..]),
                "f{i}"
            );
        }
    }

    #[test]
    fn a_write_naming_more_pairs_than_the_limit_converts() {
        let limits = HashLimits {
            max_listpack_entries: 2,
            max_listpack_value: 8,
        };
        let mut h = HashObj::new();
        h.set_pairs(&[b"a", b"1", b"a", b"2", b"a", b"3"], limits);
        assert_eq!(h.encoding(), "hashtable");
        assert_eq!((h.len(), h.get(b"a")), (1, Some(&b"3"[..])));

        let mut small = HashObj::new();
        small.set_pairs(&[b"a", b"1", b"b", b"2"], limits);
        assert_eq!(small.encoding(), "listpack");
        small.set_pairs(&[b"a", b"123456789"], limits);
        assert_eq!(small.encoding(), "hashtable");
    }

    #[test]
    fn scan_of_a_growing_table_misses_nothing() {
        let limits = HashLimits {
            max_listpack_entries: 0,
            max_listpack_value: 0,
        };
        let mut h = HashObj::new();
        for i in 0..100 {
            h.set(format!("a{i}").as_bytes(), b"", limits);
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        let mut grow = 0;
        loop {
            cursor = h.scan(cursor, 10, |f, _| {
                seen.insert(f.to_vec());
            });
            // Grow the table mid-scan (a bounded burst: a table that grows faster than it is
            // scanned forever restarts forever, see shard::scan).
            if grow < 2000 {
                for _ in 0..50 {
                    h.set(format!("b{grow}").as_bytes(), b"", limits);
                    grow += 1;
                }
            }
            if cursor == 0 {
                break;
            }
        }
        for i in 0..100 {
            assert!(seen.contains(format!("a{i}").as_bytes()), "missed a{i}");
        }
    }
}
