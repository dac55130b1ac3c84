//! Sorted-set values, ordered by (score, member) as Valkey orders them. Small sets are one
//! packed buffer ([`packed`]; `listpack`); a set that would grow past `zset-max-listpack-entries`
//! members, or gain a member longer than `zset-max-listpack-value` bytes, becomes a member →
//! score table plus an order with O(log n) ranks ([`ranked`]; `skiplist` in OBJECT
//! ENCODING), and never converts back — Valkey's rules (zsetAdd, zsetTypeCreate).
//!
//! Scores are never NaN here (commands refuse NaN before they reach a set), so the order
//! below is total.

mod packed;
mod ranked;

use std::cmp::Ordering;

pub use packed::Packed;
pub use ranked::Ranked;

type Member = Box<[u8]>;

/// Encoding limits, from `zset-max-listpack-entries` / `zset-max-listpack-value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZSetLimits {
    pub max_listpack_entries: usize,
    pub max_listpack_value: usize,
}

impl Default for ZSetLimits {
    fn default() -> Self {
        ZSetLimits {
            max_listpack_entries: 128,
            max_listpack_value: 64,
        }
    }
}

impl ZSetLimits {
    /// Whether `len` members of at most `max_member` bytes fit the listpack encoding.
    pub fn fits_listpack(&self, len: usize, max_member: usize) -> bool {
        len <= self.max_listpack_entries && max_member <= self.max_listpack_value
    }
}

/// Valkey's order: by score, then by member bytes.
pub fn cmp_entry(a_score: f64, a: &[u8], b_score: f64, b: &[u8]) -> Ordering {
    a_score
        .partial_cmp(&b_score)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a.cmp(b))
}

fn hash_member(m: &[u8]) -> u64 {
    // Process-wide random key: members are user input, and a sorted set moves between cores.
    static STATE: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(ahash::RandomState::new).hash_one(m)
}

/// A score as a listpack keeps it: Valkey stores an integral score as an integer there, so
/// -0 comes back as 0 (the skiplist encoding keeps the sign).
fn listpack_score(score: f64) -> f64 {
    if score == 0.0 { 0.0 } else { score }
}

/// Members with their scores in order, lowest first (either end).
pub type ScoredIter<'a> = Box<dyn DoubleEndedIterator<Item = (&'a [u8], f64)> + 'a>;

#[derive(Debug, Clone)]
pub enum ZSetObj {
    Listpack(Packed),
    /// Boxed: most sorted sets are small, and a listpack should not carry a skiplist's size.
    SkipList(Box<Ranked>),
}

impl PartialEq for ZSetObj {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(m, s)| other.score(m).is_some_and(|o| o == s))
    }
}

impl Default for ZSetObj {
    fn default() -> Self {
        ZSetObj::Listpack(Packed::default())
    }
}

impl ZSetObj {
    pub fn new() -> ZSetObj {
        ZSetObj::default()
    }

    /// An empty set in the encoding Valkey's zsetTypeCreate picks for `size` members of at
    /// most `max_member` bytes.
    pub fn with_hint(size: usize, max_member: usize, limits: ZSetLimits) -> ZSetObj {
        if limits.fits_listpack(size, max_member) {
            ZSetObj::Listpack(Packed::default())
        } else {
            ZSetObj::SkipList(Box::new(Ranked::with_capacity(size)))
        }
    }

    /// Converts up front when a write names more members, or a longer one, than the listpack
    /// encoding holds (Valkey's zsetTypeMaybeConvert, before a ZADD).
    pub fn prepare(&mut self, size: usize, max_member: usize, limits: ZSetLimits) {
        if matches!(self, ZSetObj::Listpack(_)) && !limits.fits_listpack(size, max_member) {
            self.convert_to_skiplist(size);
        }
    }

    /// A set of the distinct `pairs`, already in order (a STORE command's result), in the
    /// encoding Valkey ends up with for it: listpack when it fits.
    pub fn from_sorted(pairs: Vec<(f64, Member)>, limits: ZSetLimits) -> ZSetObj {
        let longest = pairs.iter().map(|(_, m)| m.len()).max().unwrap_or(0);
        if limits.fits_listpack(pairs.len(), longest) {
            ZSetObj::Listpack(Packed::from_sorted(
                pairs.into_iter().map(|(s, m)| (listpack_score(s), m)),
            ))
        } else {
            ZSetObj::SkipList(Box::new(Ranked::from_sorted(pairs)))
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ZSetObj::Listpack(p) => p.len(),
            ZSetObj::SkipList(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            ZSetObj::Listpack(_) => "listpack",
            ZSetObj::SkipList(_) => "skiplist",
        }
    }

    pub fn score(&self, m: &[u8]) -> Option<f64> {
        match self {
            ZSetObj::Listpack(p) => p.score(m),
            ZSetObj::SkipList(r) => r.score(m),
        }
    }

    /// Sets `m`'s score; true when `m` is new. As Valkey's zsetAdd: an equal score (0 and -0
    /// included) changes nothing, and only a new member converts a listpack.
    pub fn insert(&mut self, m: &[u8], score: f64, limits: ZSetLimits) -> bool {
        debug_assert!(
            !score.is_nan(),
            "NaN scores are refused before they get here"
        );
        if let ZSetObj::Listpack(p) = self {
            let score = listpack_score(score);
            match p.score(m) {
                Some(old) => {
                    if old != score {
                        p.remove(m);
                        p.insert_new(m, score);
                    }
                    return false;
                }
                None if p.len() < limits.max_listpack_entries
                    && m.len() <= limits.max_listpack_value =>
                {
                    p.insert_new(m, score);
                    return true;
                }
                None => self.convert_to_skiplist(self.len() + 1),
            }
        }
        match self {
            ZSetObj::SkipList(r) => r.insert(m, score),
            ZSetObj::Listpack(_) => unreachable!("converted above"),
        }
    }

    /// Removes `m`; true when it was there.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        match self {
            ZSetObj::Listpack(p) => p.remove(m).is_some(),
            ZSetObj::SkipList(r) => r.remove(m).is_some(),
        }
    }

    /// Removes the members of ranks `start..end` (clamped to the set).
    pub fn remove_range(&mut self, start: usize, end: usize) {
        let end = end.min(self.len());
        if start >= end {
            return;
        }
        match self {
            ZSetObj::Listpack(p) => p.remove_range(start, end),
            ZSetObj::SkipList(r) => r.remove_range(start, end),
        }
    }

    fn convert_to_skiplist(&mut self, capacity: usize) {
        if let ZSetObj::Listpack(p) = self {
            let mut r = Ranked::with_capacity(capacity.max(p.len()));
            for (m, s) in p.iter() {
                r.insert(m, s);
            }
            *self = ZSetObj::SkipList(Box::new(r));
        }
    }

    /// Members with their scores, lowest first.
    pub fn iter(&self) -> ScoredIter<'_> {
        self.range(0, self.len())
    }

    /// Members of ranks `start..end` (clamped to the set), lowest first.
    pub fn range(&self, start: usize, end: usize) -> ScoredIter<'_> {
        let end = end.min(self.len());
        let start = start.min(end);
        match self {
            ZSetObj::Listpack(p) => Box::new(p.range(start, end).into_iter()),
            ZSetObj::SkipList(r) => Box::new(r.range(start, end)),
        }
    }

    /// The member at `rank` (0-based, lowest score first) and its score.
    pub fn get(&self, rank: usize) -> Option<(&[u8], f64)> {
        match self {
            ZSetObj::Listpack(p) => p.get(rank),
            ZSetObj::SkipList(r) => r.get(rank),
        }
    }

    /// The 0-based rank of `m`, lowest score first.
    pub fn rank(&self, m: &[u8]) -> Option<usize> {
        match self {
            ZSetObj::Listpack(p) => p.rank(m),
            ZSetObj::SkipList(r) => r.rank(m),
        }
    }

    /// How many leading members satisfy `pred` (which must hold for a prefix of the order,
    /// e.g. "score below the range's minimum"): the rank where a range starts or ends.
    pub fn partition_point(&self, pred: impl Fn(f64, &[u8]) -> bool) -> usize {
        match self {
            ZSetObj::Listpack(p) => p.partition_point(pred),
            ZSetObj::SkipList(r) => r.partition_point(pred),
        }
    }

    /// A uniformly random member with its score (None when empty).
    pub fn random(&self) -> Option<(&[u8], f64)> {
        match self {
            ZSetObj::Listpack(p) if p.is_empty() => None,
            ZSetObj::Listpack(p) => p.get(fastrand::usize(..p.len())),
            ZSetObj::SkipList(r) => r.random(),
        }
    }

    /// ZSCAN: emits about `count` members from `cursor` and returns the next cursor (0 when
    /// done). A listpack is returned whole in one call, as in Valkey.
    pub fn scan(&self, cursor: u64, count: usize, mut emit: impl FnMut(&[u8], f64)) -> u64 {
        match self {
            ZSetObj::Listpack(p) => {
                for (m, s) in p.iter() {
                    emit(m, s);
                }
                0
            }
            ZSetObj::SkipList(r) => r.scan(cursor, count, emit),
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            ZSetObj::Listpack(p) => p.heap_size(),
            ZSetObj::SkipList(r) => r.heap_size(),
        }
    }

    /// Bytes this sorted set's contents take in allocations (MEMORY USAGE; see
    /// `shard::usage`).
    pub fn mem_usage(&self, samples: usize) -> usize {
        match self {
            ZSetObj::Listpack(p) => p.mem_usage(),
            ZSetObj::SkipList(r) => {
                super::usage::alloc_size(std::mem::size_of::<Ranked>()) + r.mem_usage(samples)
            }
        }
    }

    /// Valkey's free effort: a skiplist frees member by member, a listpack in one go.
    pub fn free_effort(&self) -> usize {
        match self {
            ZSetObj::SkipList(r) => r.len(),
            ZSetObj::Listpack(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    const TINY: ZSetLimits = ZSetLimits {
        max_listpack_entries: 4,
        max_listpack_value: 8,
    };

    fn check(z: &ZSetObj) {
        if let ZSetObj::SkipList(r) = z {
            r.check();
        }
    }

    fn members(z: &ZSetObj) -> Vec<(String, f64)> {
        z.iter()
            .map(|(m, s)| (String::from_utf8(m.to_vec()).unwrap(), s))
            .collect()
    }

    #[test]
    fn converts_past_the_limits_and_never_back() {
        let mut z = ZSetObj::new();
        for (i, m) in ["d", "c", "b", "a"].iter().enumerate() {
            assert!(z.insert(m.as_bytes(), i as f64, TINY));
        }
        assert_eq!(z.encoding(), "listpack");
        // Updating an existing member never converts.
        assert!(!z.insert(b"a", 9.0, TINY));
        assert_eq!(z.encoding(), "listpack");
        assert!(z.insert(b"e", 0.5, TINY));
        assert_eq!(z.encoding(), "skiplist");
        assert_eq!(
            members(&z),
            [("d", 0.0), ("e", 0.5), ("c", 1.0), ("b", 2.0), ("a", 9.0)]
                .map(|(m, s)| (m.to_string(), s))
        );
        for m in ["a", "b", "c", "d"] {
            assert!(z.remove(m.as_bytes()));
        }
        assert_eq!(z.encoding(), "skiplist");

        let mut long = ZSetObj::new();
        long.insert(b"123456789", 1.0, TINY);
        assert_eq!(long.encoding(), "skiplist");

        // ZADD naming more pairs than a listpack holds converts up front.
        let mut up = ZSetObj::new();
        up.prepare(5, 1, TINY);
        assert_eq!(up.encoding(), "skiplist");
        assert_eq!(ZSetObj::with_hint(4, 8, TINY).encoding(), "listpack");
        assert_eq!(ZSetObj::with_hint(4, 9, TINY).encoding(), "skiplist");
    }

    #[test]
    fn equal_scores_order_by_member_and_minus_zero_is_zero() {
        for limits in [TINY, ZSetLimits::default()] {
            let mut z = ZSetObj::new();
            for m in ["b", "a", "c", "", "\u{0}"] {
                z.insert(m.as_bytes(), 1.0, limits);
            }
            z.insert(b"z", 0.0, limits);
            assert!(!z.insert(b"z", -0.0, limits));
            assert_eq!(z.score(b"z").unwrap().to_bits(), 0.0f64.to_bits());
            // A listpack forgets the sign of -0, as Valkey's does; a skiplist keeps it.
            z.insert(b"m", -0.0, limits);
            let kept = z.score(b"m").unwrap().is_sign_negative();
            assert_eq!(kept, z.encoding() == "skiplist");
            z.remove(b"m");
            let order: Vec<String> = members(&z).into_iter().map(|(m, _)| m).collect();
            assert_eq!(order, ["z", "", "\u{0}", "a", "b", "c"]);
            assert_eq!(z.rank(b"a"), Some(3));
            assert_eq!(z.get(3).map(|(m, _)| m.to_vec()), Some(b"a".to_vec()));
            check(&z);
        }
    }

    #[test]
    fn sorted_builds_pick_the_encoding_that_fits() {
        let pairs = |n: usize| -> Vec<(f64, Member)> {
            (0..n)
                .map(|i| (i as f64, format!("m{i:03}").into_bytes().into()))
                .collect()
        };
        let z = ZSetObj::from_sorted(pairs(4), TINY);
        assert_eq!(z.encoding(), "listpack");
        let z = ZSetObj::from_sorted(pairs(100), TINY);
        assert_eq!(z.encoding(), "skiplist");
        check(&z);
        assert_eq!(z.rank(b"m057"), Some(57));
        assert_eq!(z.score(b"m099"), Some(99.0));
    }

    #[test]
    fn a_scan_misses_nothing_while_the_set_changes_and_compacts() {
        let mut z = ZSetObj::new();
        for i in 0..2000 {
            z.insert(format!("k{i}").as_bytes(), i as f64, TINY);
        }
        let mut seen = HashSet::new();
        let mut cursor = 0;
        let mut round = 0;
        loop {
            cursor = z.scan(cursor, 50, |m, _| {
                seen.insert(m.to_vec());
            });
            // Remove members the scan need not return (k400 and up), enough to compact the
            // slab (renumbering every member), and churn the free slots.
            round += 1;
            if round == 3 {
                let ZSetObj::SkipList(r) = &z else {
                    panic!("2000 members are a skiplist")
                };
                let before = r.generation();
                z.remove_range(400, 2000);
                let ZSetObj::SkipList(r) = &z else {
                    panic!("a skiplist stays one")
                };
                assert_ne!(r.generation(), before, "compacted");
                for i in 0..700 {
                    z.insert(format!("t{i}").as_bytes(), -1.0, TINY);
                    z.remove(format!("t{i}").as_bytes());
                }
                check(&z);
            }
            if cursor == 0 {
                break;
            }
        }
        for i in 0..400 {
            assert!(seen.contains(format!("k{i}").as_bytes()), "k{i} missed");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, usize),
        Remove(u16),
        RemoveRange(usize, usize),
        Pop(usize, bool),
    }

    const SCORES: [f64; 8] = [
        f64::NEG_INFINITY,
        -1.5,
        -0.0,
        0.0,
        1.0,
        1.0,
        2.25,
        f64::INFINITY,
    ];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u16..300, 0usize..SCORES.len()).prop_map(|(m, s)| Op::Insert(m, s)),
            2 => (0u16..300).prop_map(Op::Remove),
            1 => (0usize..400, 0usize..60).prop_map(|(s, n)| Op::RemoveRange(s, s + n)),
            1 => (1usize..30, any::<bool>()).prop_map(|(n, max)| Op::Pop(n, max)),
        ]
    }

    fn name(m: u16) -> Vec<u8> {
        // Some members share prefixes, some are long enough to convert a TINY listpack.
        match m % 3 {
            0 => format!("{m}").into_bytes(),
            1 => format!("m{m:05}").into_bytes(),
            _ => format!("long-member-{m}").into_bytes(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// The object against a BTreeMap model over random streams, in both encodings.
        #[test]
        fn behaves_like_a_sorted_map(ops in proptest::collection::vec(op(), 1..600), tiny in any::<bool>()) {
            let limits = if tiny { TINY } else { ZSetLimits::default() };
            let mut z = ZSetObj::new();
            let mut model: BTreeMap<Vec<u8>, f64> = BTreeMap::new();
            let sorted = |model: &BTreeMap<Vec<u8>, f64>| {
                let mut v: Vec<(f64, Vec<u8>)> = model.iter().map(|(m, s)| (*s, m.clone())).collect();
                v.sort_by(|a, b| cmp_entry(a.0, &a.1, b.0, &b.1));
                v
            };
            for op in ops {
                match op {
                    Op::Insert(m, s) => {
                        let (m, score) = (name(m), SCORES[s]);
                        let old = model.get(&m).copied();
                        let new = z.insert(&m, score, limits);
                        prop_assert_eq!(new, old.is_none());
                        if old.is_none_or(|o| o != score) {
                            model.insert(m, score);
                        }
                    }
                    Op::Remove(m) => {
                        let m = name(m);
                        prop_assert_eq!(z.remove(&m), model.remove(&m).is_some());
                    }
                    Op::RemoveRange(start, end) => {
                        let all = sorted(&model);
                        for (_, m) in all.iter().skip(start).take(end.saturating_sub(start)) {
                            model.remove(m);
                        }
                        z.remove_range(start, end);
                    }
                    Op::Pop(n, max) => {
                        let all = sorted(&model);
                        let n = n.min(all.len());
                        let (start, end) = if max { (all.len() - n, all.len()) } else { (0, n) };
                        let got: Vec<(Vec<u8>, f64)> = z.range(start, end).map(|(m, s)| (m.to_vec(), s)).collect();
                        let want: Vec<(Vec<u8>, f64)> = all[start..end].iter().map(|(s, m)| (m.clone(), *s)).collect();
                        prop_assert_eq!(got, want);
                        for (_, m) in &all[start..end] {
                            model.remove(m);
                        }
                        z.remove_range(start, end);
                    }
                }
                prop_assert_eq!(z.len(), model.len());
            }
            check(&z);
            let all = sorted(&model);
            let got: Vec<(f64, Vec<u8>)> = z.iter().map(|(m, s)| (s, m.to_vec())).collect();
            prop_assert_eq!(&got, &all);
            let back: Vec<(f64, Vec<u8>)> = z.iter().rev().map(|(m, s)| (s, m.to_vec())).collect();
            prop_assert!(back.iter().rev().eq(all.iter()));
            for (rank, (s, m)) in all.iter().enumerate() {
                prop_assert_eq!(z.rank(m), Some(rank));
                prop_assert_eq!(z.score(m), Some(*s));
                prop_assert_eq!(z.get(rank), Some((&m[..], *s)));
            }
            prop_assert_eq!(z.get(all.len()), None);
            for t in SCORES {
                let below = all.iter().filter(|(s, _)| *s < t).count();
                prop_assert_eq!(z.partition_point(|s, _| s < t), below);
            }
            // Sub-ranges, both directions.
            for start in (0..all.len()).step_by(7) {
                let end = (start + 11).min(all.len());
                let got: Vec<&[u8]> = z.range(start, end).rev().map(|(m, _)| m).collect();
                let want: Vec<&[u8]> = all[start..end].iter().rev().map(|(_, m)| &m[..]).collect();
                prop_assert_eq!(got, want);
            }
            // A full scan returns every member once (no changes during it).
            let mut seen = Vec::new();
            let mut cursor = 0;
            loop {
                cursor = z.scan(cursor, 5, |m, s| seen.push((s, m.to_vec())));
                if cursor == 0 { break; }
            }
            seen.sort_by(|a, b| cmp_entry(a.0, &a.1, b.0, &b.1));
            prop_assert_eq!(seen, all);
        }
    }
}
