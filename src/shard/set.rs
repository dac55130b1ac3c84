//! Set values, in Valkey's three encodings: `intset` (sorted integers) while every member is
//! an integer and there are at most `set-max-intset-entries`; `listpack` (a small vector, in
//! insertion order) while there are at most `set-max-listpack-entries` members of at most
//! `set-max-listpack-value` bytes; `hashtable` after. The conversions follow Valkey's
//! `setTypeCreate`, `setTypeMaybeConvert` and `setTypeAddAux` exactly, so OBJECT ENCODING
//! answers as Valkey does; a set never converts back on its own (only a STORE result is
//! built afresh, see [`SetObj::maybe_to_intset`]).
//!
//! Members are [`Member`]s: 16 bytes, inline up to 15 bytes. A hashtable is a hashbrown table
//! of them, so a short member costs 17 bytes of table (16 + a control byte) at the table's
//! load, and no allocation of its own.

mod member;

use std::ops::Deref;

use hashbrown::HashTable;

pub use member::Member;

/// Encoding limits, from the `set-max-*` directives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetLimits {
    pub max_intset_entries: usize,
    pub max_listpack_entries: usize,
    pub max_listpack_value: usize,
}

impl Default for SetLimits {
    fn default() -> Self {
        SetLimits {
            max_intset_entries: 512,
            max_listpack_entries: 128,
            max_listpack_value: 64,
        }
    }
}

impl SetLimits {
    /// Valkey caps an intset at 2^30 entries whatever the directive says.
    fn intset_max(&self) -> usize {
        self.max_intset_entries.min(1 << 30)
    }
}

#[derive(Debug, Clone)]
pub enum SetObj {
    IntSet(Vec<i64>),
    Listpack(Vec<Member>),
    Table(Table),
}

/// The hashtable encoding.
#[derive(Debug, Clone, Default)]
pub struct Table {
    members: HashTable<Member>,
    /// Bumped whenever the table may move its members (growth, an in-place rehash, a
    /// shrink): SSCAN cursors carry it (see `shard::scan`).
    epoch: u32,
    /// Heap bytes of the members that are not inline (kept so memory reports are O(1)).
    heap: usize,
}

impl PartialEq for SetObj {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|m| other.contains(&m))
    }
}

impl Default for SetObj {
    fn default() -> Self {
        SetObj::IntSet(Vec::new())
    }
}

fn hash_member(m: &[u8]) -> u64 {
    // Process-wide random key: members are user input, and a set moves between cores.
    static STATE: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(ahash::RandomState::new).hash_one(m)
}

/// The integer a member is stored as in an intset (canonical decimal only, as Valkey's
/// string2ll).
fn as_int(m: &[u8]) -> Option<i64> {
    crate::util::parse_i64(m)
}

/// The length of `i` in decimal (Valkey's sdigits10).
fn decimal_len(i: i64) -> usize {
    itoa::Buffer::new().format(i).len()
}

/// One member as read from a set: borrowed bytes, or an intset integer in decimal. Derefs
/// to the member's bytes.
#[derive(Clone, Copy)]
pub struct Elem<'a>(ElemRepr<'a>);

#[derive(Clone, Copy)]
enum ElemRepr<'a> {
    Bytes(&'a [u8]),
    Int { value: i64, text: [u8; 20], len: u8 },
}

impl<'a> Elem<'a> {
    fn bytes(b: &'a [u8]) -> Elem<'a> {
        Elem(ElemRepr::Bytes(b))
    }

    fn int(value: i64) -> Elem<'static> {
        let mut text = [0u8; 20];
        let mut buf = itoa::Buffer::new();
        let s = buf.format(value).as_bytes();
        text[..s.len()].copy_from_slice(s);
        Elem(ElemRepr::Int {
            value,
            text,
            len: s.len() as u8,
        })
    }

    /// The integer, when the member came from an intset (saves parsing it again).
    pub fn as_int(&self) -> Option<i64> {
        match self.0 {
            ElemRepr::Int { value, .. } => Some(value),
            ElemRepr::Bytes(_) => None,
        }
    }
}

impl Deref for Elem<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            ElemRepr::Bytes(b) => b,
            ElemRepr::Int { text, len, .. } => &text[..*len as usize],
        }
    }
}

impl std::fmt::Debug for Elem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

/// The members of a set, in its encoding's order (ascending for an intset, insertion order
/// for a listpack, table order for a hashtable).
pub enum Iter<'a> {
    Ints(std::slice::Iter<'a, i64>),
    Members(std::slice::Iter<'a, Member>),
    Table(hashbrown::hash_table::Iter<'a, Member>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = Elem<'a>;

    fn next(&mut self) -> Option<Elem<'a>> {
        match self {
            Iter::Ints(i) => i.next().map(|v| Elem::int(*v)),
            Iter::Members(i) => i.next().map(|m| Elem::bytes(m)),
            Iter::Table(i) => i.next().map(|m| Elem::bytes(m)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Ints(i) => i.size_hint(),
            Iter::Members(i) => i.size_hint(),
            Iter::Table(i) => i.size_hint(),
        }
    }
}

impl Table {
    fn with_capacity(n: usize) -> Table {
        Table {
            members: HashTable::with_capacity(n),
            epoch: 0,
            heap: 0,
        }
    }

    fn contains(&self, m: &[u8]) -> bool {
        self.members.find(hash_member(m), |x| &**x == m).is_some()
    }

    fn insert(&mut self, m: &[u8]) -> bool {
        let hash = hash_member(m);
        if self.members.find(hash, |x| &**x == m).is_some() {
            return false;
        }
        if self.members.capacity() == self.members.len() {
            // The insert grows the table or rehashes it in place: members move.
            self.epoch = self.epoch.wrapping_add(1);
        }
        let member = Member::new(m);
        self.heap += member.heap_size();
        self.members.insert_unique(hash, member, |x| hash_member(x));
        true
    }

    fn remove(&mut self, m: &[u8]) -> bool {
        match self.members.find_entry(hash_member(m), |x| &**x == m) {
            Ok(found) => {
                let (member, _) = found.remove();
                self.heap -= member.heap_size();
                self.maybe_shrink();
                true
            }
            Err(_) => false,
        }
    }

    /// Gives memory back once the table is mostly empty (Valkey shrinks below 1/8 full too),
    /// which also keeps random picks by bucket cheap: at least one bucket in eight is full.
    fn maybe_shrink(&mut self) {
        let buckets = self.members.num_buckets();
        if buckets > 64 && self.members.len() * 8 < buckets {
            self.members
                .shrink_to(self.members.len() * 2, |x| hash_member(x));
            self.epoch = self.epoch.wrapping_add(1);
        }
    }

    fn random(&self) -> &Member {
        let buckets = self.members.num_buckets();
        loop {
            if let Some(m) = self.members.get_bucket(fastrand::usize(..buckets)) {
                return m;
            }
        }
    }
}

impl SetObj {
    pub fn new() -> SetObj {
        SetObj::default()
    }

    /// The empty set Valkey's setTypeCreate makes for a first member `first` when about
    /// `size_hint` members are coming (SADD's argument count).
    pub fn create(first: &[u8], size_hint: usize, limits: SetLimits) -> SetObj {
        if as_int(first).is_some() && size_hint <= limits.intset_max() {
            SetObj::IntSet(Vec::new())
        } else if size_hint <= limits.max_listpack_entries {
            SetObj::Listpack(Vec::new())
        } else {
            SetObj::Table(Table::with_capacity(size_hint))
        }
    }

    /// `create` for a single member (SMOVE's destination, loading a stored set).
    pub fn for_first(first: &[u8], limits: SetLimits) -> SetObj {
        SetObj::create(first, 1, limits)
    }

    /// Valkey's setTypeMaybeConvert: a small encoding becomes a table up front when
    /// `size_hint` members are about to be added and would not fit it.
    pub fn maybe_convert(&mut self, size_hint: usize, limits: SetLimits) {
        let too_many = match self {
            SetObj::IntSet(_) => size_hint > limits.intset_max(),
            SetObj::Listpack(_) => size_hint > limits.max_listpack_entries,
            SetObj::Table(_) => false,
        };
        if too_many {
            self.convert_to_table(size_hint);
        }
    }

    /// SADD's effect: `maybe_convert` for the argument count, then each member in turn.
    /// Returns how many were new.
    pub fn add_all(&mut self, members: &[&[u8]], limits: SetLimits) -> usize {
        self.maybe_convert(members.len(), limits);
        members.iter().filter(|m| self.insert(m, limits)).count()
    }

    pub fn len(&self) -> usize {
        match self {
            SetObj::IntSet(v) => v.len(),
            SetObj::Listpack(v) => v.len(),
            SetObj::Table(t) => t.members.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            SetObj::IntSet(_) => "intset",
            SetObj::Listpack(_) => "listpack",
            SetObj::Table(_) => "hashtable",
        }
    }

    pub fn contains(&self, m: &[u8]) -> bool {
        match self {
            SetObj::IntSet(v) => as_int(m).is_some_and(|i| v.binary_search(&i).is_ok()),
            SetObj::Listpack(v) => v.iter().any(|x| &**x == m),
            SetObj::Table(t) => t.contains(m),
        }
    }

    /// `contains` for a member read from another set (an intset's integer is not parsed
    /// again).
    pub fn contains_elem(&self, e: &Elem<'_>) -> bool {
        match (self, e.as_int()) {
            (SetObj::IntSet(v), Some(i)) => v.binary_search(&i).is_ok(),
            _ => self.contains(e),
        }
    }

    /// Adds `m`; true when it is new. Converts the encoding as Valkey's setTypeAddAux does.
    pub fn insert(&mut self, m: &[u8], limits: SetLimits) -> bool {
        match self {
            SetObj::IntSet(v) => {
                if let Some(i) = as_int(m) {
                    let Err(pos) = v.binary_search(&i) else {
                        return false;
                    };
                    v.insert(pos, i);
                    if v.len() > limits.intset_max() {
                        self.convert_to_table(0);
                    }
                    return true;
                }
                // A string joins: a listpack if everything (the integers in decimal too)
                // fits one, a table otherwise.
                let widest = match (v.first(), v.last()) {
                    (Some(&lo), Some(&hi)) => decimal_len(lo).max(decimal_len(hi)),
                    _ => 0,
                };
                if v.len() < limits.max_listpack_entries
                    && m.len() <= limits.max_listpack_value
                    && widest <= limits.max_listpack_value
                {
                    let mut members: Vec<Member> = Vec::with_capacity(v.len() + 1);
                    members.extend(v.iter().map(|i| Member::new(&Elem::int(*i))));
                    members.push(Member::new(m));
                    *self = SetObj::Listpack(members);
                } else {
                    let n = v.len() + 1;
                    self.convert_to_table(n);
                    self.table_insert(m);
                }
                true
            }
            SetObj::Listpack(v) => {
                if v.iter().any(|x| &**x == m) {
                    return false;
                }
                if v.len() < limits.max_listpack_entries && m.len() <= limits.max_listpack_value {
                    v.push(Member::new(m));
                } else {
                    let n = v.len() + 1;
                    self.convert_to_table(n);
                    self.table_insert(m);
                }
                true
            }
            SetObj::Table(t) => t.insert(m),
        }
    }

    fn table_insert(&mut self, m: &[u8]) {
        if let SetObj::Table(t) = self {
            t.insert(m);
        }
    }

    /// Removes `m`; true when it was there. A listpack keeps its order, as Valkey's does.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        match self {
            SetObj::IntSet(v) => match as_int(m).map(|i| v.binary_search(&i)) {
                Some(Ok(pos)) => {
                    v.remove(pos);
                    true
                }
                _ => false,
            },
            SetObj::Listpack(v) => match v.iter().position(|x| &**x == m) {
                Some(pos) => {
                    v.remove(pos);
                    true
                }
                None => false,
            },
            SetObj::Table(t) => t.remove(m),
        }
    }

    /// Converts to a table sized for `capacity` members (at least the current ones).
    fn convert_to_table(&mut self, capacity: usize) {
        if matches!(self, SetObj::Table(_)) {
            return;
        }
        let mut t = Table::with_capacity(capacity.max(self.len()));
        for m in self.iter() {
            t.insert(&m);
        }
        *self = SetObj::Table(t);
    }

    /// Valkey's maybeConvertToIntset, for a STORE result known to hold only integers: an
    /// intset when it has few enough members.
    pub fn maybe_to_intset(&mut self, limits: SetLimits) {
        if matches!(self, SetObj::IntSet(_)) || self.len() > limits.intset_max() {
            return;
        }
        let mut ints: Vec<i64> = self.iter().filter_map(|m| as_int(&m)).collect();
        debug_assert_eq!(
            ints.len(),
            self.len(),
            "maybe_to_intset on a non-integer set"
        );
        ints.sort_unstable();
        *self = SetObj::IntSet(ints);
    }

    /// The members, in the encoding's order.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            SetObj::IntSet(v) => Iter::Ints(v.iter()),
            SetObj::Listpack(v) => Iter::Members(v.iter()),
            SetObj::Table(t) => Iter::Table(t.members.iter()),
        }
    }

    /// A uniformly random member, None when empty.
    pub fn random(&self) -> Option<Elem<'_>> {
        if self.is_empty() {
            return None;
        }
        Some(match self {
            SetObj::IntSet(v) => Elem::int(v[fastrand::usize(..v.len())]),
            SetObj::Listpack(v) => Elem::bytes(&v[fastrand::usize(..v.len())]),
            SetObj::Table(t) => Elem::bytes(t.random()),
        })
    }

    /// `count` distinct members chosen uniformly at random (every member when `count` is at
    /// least the size), in no meaningful order. Never allocates more than the set's size.
    pub fn sample_distinct(&self, count: usize) -> Vec<Elem<'_>> {
        let n = self.len();
        if count >= n {
            return self.iter().collect();
        }
        fn partial_shuffle(mut all: Vec<Elem<'_>>, count: usize) -> Vec<Elem<'_>> {
            // The first `count` places of a Fisher-Yates shuffle are a uniform sample.
            for i in 0..count {
                let j = i + fastrand::usize(..all.len() - i);
                all.swap(i, j);
            }
            all.truncate(count);
            all
        }
        match self {
            SetObj::IntSet(_) | SetObj::Listpack(_) => {
                partial_shuffle(self.iter().collect(), count)
            }
            // Most of the table: shuffle references to all of it.
            SetObj::Table(_) if count * 3 > n => partial_shuffle(self.iter().collect(), count),
            // A small part of a big table: random picks, repeats rejected (each member is
            // told apart by its address, which cannot change while the set is borrowed).
            SetObj::Table(t) => {
                let mut seen = hashbrown::HashSet::with_capacity(count);
                let mut out = Vec::with_capacity(count);
                while out.len() < count {
                    let m = t.random();
                    if seen.insert(m as *const Member as usize) {
                        out.push(Elem::bytes(m));
                    }
                }
                out
            }
        }
    }

    /// One step of SSCAN: small encodings whole (cursor 0), a table by bucket.
    pub fn scan(&self, cursor: u64, count: usize, mut emit: impl FnMut(&[u8])) -> u64 {
        match self {
            SetObj::Table(t) => {
                super::scan::scan_table_at(&t.members, t.epoch, cursor, count, |m| emit(m))
            }
            _ => {
                for m in self.iter() {
                    emit(&m);
                }
                0
            }
        }
    }

    /// Bytes this set holds on the heap (an estimate for memory reports; O(1)).
    pub fn heap_size(&self) -> usize {
        match self {
            SetObj::IntSet(v) => v.capacity() * 8,
            SetObj::Listpack(v) => {
                v.capacity() * 16 + v.iter().map(Member::heap_size).sum::<usize>()
            }
            // A slot and a control byte per bucket, plus the members kept outside.
            SetObj::Table(t) => t.members.num_buckets() * 17 + t.heap,
        }
    }

    /// Bytes this set's contents take in allocations (MEMORY USAGE; see `shard::usage`):
    /// exact for the small encodings, the table plus sampled members for a hashtable.
    pub fn mem_usage(&self, samples: usize) -> usize {
        use super::usage::{alloc_size, sampled, table_bytes, vec_bytes};
        let outside = |m: &Member| alloc_size(m.heap_size());
        match self {
            SetObj::IntSet(v) => vec_bytes(v.capacity(), 8),
            SetObj::Listpack(v) => {
                vec_bytes(v.capacity(), 16) + v.iter().map(outside).sum::<usize>()
            }
            SetObj::Table(t) => {
                table_bytes(t.members.num_buckets(), std::mem::size_of::<Member>())
                    + sampled(t.members.iter().map(outside), t.members.len(), samples)
            }
        }
    }

    /// Valkey's free effort (lazyfreeGetFreeEffort): a hashtable frees member by member,
    /// the compact encodings in one go.
    pub fn free_effort(&self) -> usize {
        match self {
            SetObj::Table(t) => t.members.len(),
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests;
