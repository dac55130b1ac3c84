//! Hash values. Small hashes are a flat vector of field/value pairs (what Valkey calls a
//! listpack: compact, linear scans, and OBJECT ENCODING says `listpack`); once a hash exceeds
//! `hash-max-listpack-entries` fields or holds a field or value longer than
//! `hash-max-listpack-value` bytes it becomes a hash table, and never converts back — Valkey's
//! rule, which avoids flapping between encodings.
//!
//! Fields may carry a time to live (Valkey 9's hash field expiry). As in Valkey only a hash
//! table holds them — the first TTL converts a listpack, and OBJECT ENCODING then says
//! `hashtable` — and only a hash with such fields pays for them: their expiries live in a side
//! structure ([`ttl`]) that is absent otherwise. A field whose time has passed stays stored
//! until a record deletes it (the shard's field expiry decides when), but every read that is
//! given `now` skips it: `get`, `live_len`, `iter_live`, `random`, `scan`.

mod ttl;

use hashbrown::HashTable;

use ttl::FieldTtls;

type Field = Box<[u8]>;

#[derive(Debug, Clone)]
pub struct HashObj {
    repr: Repr,
    /// The fields' times to live; None for a hash without any. Invariant: when Some, it is
    /// not empty and `repr` is a table.
    ttl: Option<Box<FieldTtls>>,
}

#[derive(Debug, Clone)]
enum Repr {
    Listpack(Vec<(Field, Field)>),
    Table(HashTable<(Field, Field)>),
}

impl PartialEq for HashObj {
    /// Same fields, values and field expiries (expired or not: the stored state).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.ttl_count() == other.ttl_count()
            && self
                .entries()
                .all(|(f, v, at)| other.stored(f) == Some(v) && other.stored_ttl(f) == at)
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
        HashObj {
            repr: Repr::Listpack(Vec::new()),
            ttl: None,
        }
    }

    /// Fields stored, including expired ones not deleted yet (see `live_len`).
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Listpack(v) => v.len(),
            Repr::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fields not expired at `now`.
    pub fn live_len(&self, now: u64) -> usize {
        self.len() - self.ttl.as_ref().map_or(0, |t| t.count_expired(now))
    }

    pub fn encoding(&self) -> &'static str {
        match &self.repr {
            Repr::Listpack(_) => "listpack",
            Repr::Table(_) => "hashtable",
        }
    }

    /// Whether some field has a time to live (Valkey's "hash with volatile items").
    pub fn has_field_ttls(&self) -> bool {
        self.ttl.is_some()
    }

    fn ttl_count(&self) -> usize {
        self.ttl.as_ref().map_or(0, |t| t.len())
    }

    /// The earliest expiry among the fields, expired or not.
    pub fn next_expiry(&self) -> Option<u64> {
        self.ttl.as_ref().and_then(|t| t.first())
    }

    /// Whether `field` is stored, expired or not.
    pub fn contains(&self, field: &[u8]) -> bool {
        self.stored(field).is_some()
    }

    /// The stored value of `field`, expired or not.
    fn stored(&self, field: &[u8]) -> Option<&[u8]> {
        match &self.repr {
            Repr::Listpack(v) => v.iter().find(|(f, _)| &**f == field).map(|(_, v)| &**v),
            Repr::Table(t) => t
                .find(hash_field(field), |(f, _)| &**f == field)
                .map(|(_, v)| &**v),
        }
    }

    /// The stored expiry of `field`, passed or not.
    fn stored_ttl(&self, field: &[u8]) -> Option<u64> {
        self.ttl.as_ref().and_then(|t| t.get(field))
    }

    /// Whether `field` (stored) is not expired at `now`. Expired means `now` is past the
    /// expiry, the rule keys follow.
    fn is_live(&self, field: &[u8], now: u64) -> bool {
        self.stored_ttl(field).is_none_or(|at| now <= at)
    }

    /// The value of `field` unless it is missing or expired at `now`.
    pub fn get(&self, field: &[u8], now: u64) -> Option<&[u8]> {
        self.stored(field)
            .filter(|_| self.ttl.is_none() || self.is_live(field, now))
    }

    /// The time to live of `field` at `now`: None when it is missing or expired, Some(None)
    /// when it has none, Some(Some(at)) when it expires at `at`.
    pub fn field_ttl(&self, field: &[u8], now: u64) -> Option<Option<u64>> {
        self.stored(field)?;
        match self.stored_ttl(field) {
            Some(at) if now > at => None,
            at => Some(at),
        }
    }

    /// Sets the field/value `pairs` (alternating) of one HSET-like write; the fields lose
    /// any time to live (Valkey's HSET). As Valkey's hashTypeTryConversion, a listpack becomes
    /// a table up front when the write names more pairs than `hash-max-listpack-entries` (even
    /// if some repeat) or any argument is longer than `hash-max-listpack-value` (even one that
    /// only updates a field).
    pub fn set_pairs(&mut self, pairs: &[&[u8]], limits: HashLimits) {
        if matches!(self.repr, Repr::Listpack(_))
            && (pairs.len() / 2 > limits.max_listpack_entries
                || pairs.iter().any(|a| a.len() > limits.max_listpack_value))
        {
            self.convert_to_table();
        }
        for pair in pairs.chunks_exact(2) {
            self.set(pair[0], pair[1], limits);
        }
    }

    /// Sets the field/value `pairs` (alternating), each field expiring at `at` (HSETEX with a
    /// time): the hash becomes a table first, as any hash with a field TTL is.
    pub fn set_pairs_expiring(&mut self, pairs: &[&[u8]], at: u64, limits: HashLimits) {
        self.convert_to_table();
        for pair in pairs.chunks_exact(2) {
            self.set(pair[0], pair[1], limits);
            self.ttl.get_or_insert_default().set(pair[0], at);
        }
    }

    /// Sets `field` to `value`, dropping any time to live it had; returns true when the field
    /// was not stored (an expired field still stored counts as present). A listpack becomes a
    /// table when the field or value is too long for it (whether the field is new or not) or
    /// when it would hold more than `max_listpack_entries` fields.
    pub fn set(&mut self, field: &[u8], value: &[u8], limits: HashLimits) -> bool {
        self.drop_ttl(field);
        if let Repr::Listpack(v) = &mut self.repr {
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
        let Repr::Table(t) = &mut self.repr else {
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

    /// Gives the stored `field` the expiry `at` (converting a listpack to a table), or removes
    /// its expiry (None). False when the field is not stored.
    pub fn set_ttl(&mut self, field: &[u8], at: Option<u64>) -> bool {
        if self.stored(field).is_none() {
            return false;
        }
        match at {
            Some(at) => {
                self.convert_to_table();
                self.ttl.get_or_insert_default().set(field, at);
            }
            None => self.drop_ttl(field),
        }
        true
    }

    fn drop_ttl(&mut self, field: &[u8]) {
        if let Some(t) = &mut self.ttl {
            t.remove(field);
            if t.is_empty() {
                self.ttl = None;
            }
        }
    }

    /// Removes `field` (expired or not) and its time to live; returns true when it was stored.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        let removed = match &mut self.repr {
            Repr::Listpack(v) => match v.iter().position(|(f, _)| &**f == field) {
                Some(i) => {
                    // Order-preserving, like a listpack delete.
                    v.remove(i);
                    true
                }
                None => false,
            },
            Repr::Table(t) => match t.find_entry(hash_field(field), |(f, _)| &**f == field) {
                Ok(o) => {
                    o.remove();
                    true
                }
                Err(_) => false,
            },
        };
        if removed {
            self.drop_ttl(field);
        }
        removed
    }

    /// Up to `max` fields expired at `now`, earliest first (what the expiry paths delete).
    pub fn expired_fields(&self, now: u64, max: usize) -> Vec<Field> {
        self.ttl.as_ref().map_or_else(Vec::new, |t| {
            t.expired(now).take(max).map(Box::from).collect()
        })
    }

    fn convert_to_table(&mut self) {
        if let Repr::Listpack(v) = &mut self.repr {
            let mut t = HashTable::with_capacity(v.len() + 1);
            for (f, val) in v.drain(..) {
                t.insert_unique(hash_field(&f), (f, val), |(f, _)| hash_field(f));
            }
            self.repr = Repr::Table(t);
        }
    }

    /// Every stored field/value pair, expired or not.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&[u8], &[u8])> + '_> {
        match &self.repr {
            Repr::Listpack(v) => Box::new(v.iter().map(|(f, v)| (&**f, &**v))),
            Repr::Table(t) => Box::new(t.iter().map(|(f, v)| (&**f, &**v))),
        }
    }

    /// The field/value pairs not expired at `now`.
    pub fn iter_live(&self, now: u64) -> Box<dyn Iterator<Item = (&[u8], &[u8])> + '_> {
        if self.ttl.is_none() {
            return self.iter();
        }
        Box::new(self.iter().filter(move |(f, _)| self.is_live(f, now)))
    }

    /// Every stored field with its value and expiry (what persistence and records carry).
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8], Option<u64>)> + '_ {
        self.iter().map(|(f, v)| (f, v, self.stored_ttl(f)))
    }

    /// A stored field/value pair, uniformly random; None when empty.
    fn random_stored(&self) -> Option<(&[u8], &[u8])> {
        match &self.repr {
            Repr::Listpack(v) if !v.is_empty() => {
                let (f, val) = &v[fastrand::usize(..v.len())];
                Some((f, val))
            }
            Repr::Listpack(_) => None,
            Repr::Table(t) => {
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

    /// A uniformly random field/value pair not expired at `now`, None when there is none.
    pub fn random(&self, now: u64) -> Option<(&[u8], &[u8])> {
        if self.ttl.is_none() {
            return self.random_stored();
        }
        // Valkey retries up to 100 picks and gives up; past them we pick among the live
        // fields directly, so a live field is always found when there is one.
        for _ in 0..100 {
            let (f, v) = self.random_stored()?;
            if self.is_live(f, now) {
                return Some((f, v));
            }
        }
        let live: Vec<_> = self.iter_live(now).collect();
        (!live.is_empty()).then(|| live[fastrand::usize(..live.len())])
    }

    /// One step of HSCAN over the fields live at `now`. A listpack is returned whole (cursor
    /// 0), as Valkey does; a table is walked by bucket index, with the table's size in the
    /// cursor so that a resize restarts the walk (duplicates are allowed by SCAN's contract,
    /// misses are not).
    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        now: u64,
        mut emit: impl FnMut(&[u8], &[u8]),
    ) -> u64 {
        match &self.repr {
            Repr::Listpack(v) => {
                for (f, val) in v {
                    emit(f, val);
                }
                0
            }
            Repr::Table(t) => super::scan::scan_table(t, cursor, count, |(f, v)| {
                if self.ttl.is_none() || self.is_live(f, now) {
                    emit(f, v)
                }
            }),
        }
    }

    pub fn heap_size(&self) -> usize {
        self.iter()
            .map(|(f, v)| f.len() + v.len() + 32)
            .sum::<usize>()
            + self.ttl.as_ref().map_or(0, |t| t.heap_size())
    }

    /// Bytes this hash's contents take in allocations (MEMORY USAGE; see `shard::usage`):
    /// exact for a listpack, the table plus sampled fields for a hashtable.
    pub fn mem_usage(&self, samples: usize) -> usize {
        use super::usage::{alloc_size, sampled, table_bytes, vec_bytes};
        let pair = |(f, v): &(Field, Field)| alloc_size(f.len()) + alloc_size(v.len());
        let slot = std::mem::size_of::<(Field, Field)>();
        let ttls = self.ttl.as_ref().map_or(0, |t| t.heap_size());
        ttls + match &self.repr {
            Repr::Listpack(v) => vec_bytes(v.capacity(), slot) + v.iter().map(pair).sum::<usize>(),
            Repr::Table(t) => {
                table_bytes(t.num_buckets(), slot) + sampled(t.iter().map(pair), t.len(), samples)
            }
        }
    }

    /// Valkey's free effort: a hashtable frees field by field, a listpack in one go.
    pub fn free_effort(&self) -> usize {
        match &self.repr {
            Repr::Table(t) => t.len(),
            Repr::Listpack(_) => 1,
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
        assert_eq!(h.get(b"f1", 0), Some(&b"new"[..]));
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
        assert_eq!(update.get(b"f", 0), Some(&b"123456789"[..]));
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
                built.get(format!("f{i}").as_bytes(), 0),
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
        assert_eq!((h.len(), h.get(b"a", 0)), (1, Some(&b"3"[..])));

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
            cursor = h.scan(cursor, 10, 0, |f, _| {
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

    #[test]
    fn a_field_ttl_makes_a_table_and_hides_the_field_once_passed() {
        let limits = HashLimits::default();
        let mut h = HashObj::new();
        h.set_pairs(&[b"a", b"1", b"b", b"2", b"c", b"3"], limits);
        assert_eq!(h.encoding(), "listpack");
        assert!(!h.set_ttl(b"missing", Some(10)));
        assert_eq!(h.encoding(), "listpack", "a missing field converts nothing");
        assert!(h.set_ttl(b"a", Some(100)));
        assert_eq!((h.encoding(), h.next_expiry()), ("hashtable", Some(100)));
        // Live up to and including its expiry, gone after (the key rule).
        assert_eq!(h.get(b"a", 100), Some(&b"1"[..]));
        assert_eq!(h.get(b"a", 101), None);
        assert_eq!((h.len(), h.live_len(100), h.live_len(101)), (3, 3, 2));
        assert_eq!(h.field_ttl(b"a", 50), Some(Some(100)));
        assert_eq!(h.field_ttl(b"b", 50), Some(None));
        assert_eq!(h.field_ttl(b"a", 101), None);
        let mut live: Vec<_> = h.iter_live(101).map(|(f, _)| f.to_vec()).collect();
        live.sort();
        assert_eq!(live, vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(h.expired_fields(101, 10), vec![Box::from(&b"a"[..])]);
        for _ in 0..50 {
            assert_ne!(h.random(101).map(|(f, _)| f), Some(&b"a"[..]));
        }
        let mut scanned = Vec::new();
        let mut cursor = 0;
        loop {
            cursor = h.scan(cursor, 1, 101, |f, _| scanned.push(f.to_vec()));
            if cursor == 0 {
                break;
            }
        }
        scanned.sort();
        assert_eq!(scanned, live);
        // HSET semantics: setting a field drops its TTL; the hash stays a table.
        assert!(!h.set(b"a", b"new", limits));
        assert_eq!(
            (h.get(b"a", 101), h.has_field_ttls()),
            (Some(&b"new"[..]), false)
        );
        assert_eq!(h.encoding(), "hashtable");
    }

    #[test]
    fn ttls_follow_their_fields() {
        let limits = HashLimits::default();
        let mut h = HashObj::new();
        h.set_pairs_expiring(&[b"x", b"1", b"y", b"2"], 50, limits);
        assert_eq!(
            (h.encoding(), h.live_len(0), h.next_expiry()),
            ("hashtable", 2, Some(50))
        );
        h.set_ttl(b"x", Some(20));
        assert_eq!(h.next_expiry(), Some(20));
        let copy = h.clone();
        assert_eq!(copy, h);
        h.set_ttl(b"y", Some(21));
        assert_ne!(copy, h, "equality covers the field expiries");
        assert!(h.remove(b"x"));
        assert_eq!(h.next_expiry(), Some(21));
        h.set_ttl(b"y", None);
        assert!(!h.has_field_ttls());
        let entries: Vec<_> = copy.entries().map(|(f, _, at)| (f.to_vec(), at)).collect();
        assert_eq!(entries.len(), 2);
        assert!(entries.contains(&(b"x".to_vec(), Some(20))));
        assert!(entries.contains(&(b"y".to_vec(), Some(50))));
    }
}
