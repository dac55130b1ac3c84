//! Sorted-set values, ordered by (score, member) as Valkey orders them. Small sets are one
//! sorted vector (`listpack`); past `zset-max-listpack-entries` members or a member longer
//! than `zset-max-listpack-value` bytes they become a member → score table plus an ordered
//! index (`skiplist` in OBJECT ENCODING), and never convert back.
//!
//! Scores are never NaN here (commands refuse NaN before they reach a set), so the order
//! below is total.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use hashbrown::HashTable;

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

/// A (score, member) pair in the set's order.
#[derive(Debug, Clone)]
pub struct Scored(f64, Member);

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_entry(self.0, &self.1, other.0, &other.1)
    }
}

/// Valkey's order: by score, then by member bytes.
pub fn cmp_entry(a_score: f64, a: &[u8], b_score: f64, b: &[u8]) -> Ordering {
    a_score
        .partial_cmp(&b_score)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a.cmp(b))
}

#[derive(Debug, Clone)]
pub enum ZSetObj {
    Listpack(Vec<(f64, Member)>),
    SkipList {
        scores: HashTable<(Member, f64)>,
        order: BTreeSet<Scored>,
    },
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
        ZSetObj::Listpack(Vec::new())
    }
}

fn hash_member(m: &[u8]) -> u64 {
    static STATE: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(ahash::RandomState::new).hash_one(m)
}

impl ZSetObj {
    pub fn new() -> ZSetObj {
        ZSetObj::default()
    }

    pub fn len(&self) -> usize {
        match self {
            ZSetObj::Listpack(v) => v.len(),
            ZSetObj::SkipList { scores, .. } => scores.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            ZSetObj::Listpack(_) => "listpack",
            ZSetObj::SkipList { .. } => "skiplist",
        }
    }

    pub fn score(&self, m: &[u8]) -> Option<f64> {
        match self {
            ZSetObj::Listpack(v) => v.iter().find(|(_, x)| &**x == m).map(|(s, _)| *s),
            ZSetObj::SkipList { scores, .. } => {
                scores.find(hash_member(m), |(x, _)| &**x == m).map(|e| e.1)
            }
        }
    }

    /// Sets `m`'s score; true when `m` is new.
    pub fn insert(&mut self, m: &[u8], score: f64, limits: ZSetLimits) -> bool {
        if let ZSetObj::Listpack(v) = self
            && (m.len() > limits.max_listpack_value
                || (v.len() >= limits.max_listpack_entries && !v.iter().any(|(_, x)| &**x == m)))
        {
            self.convert_to_skiplist();
        }
        let old = self.remove_returning(m);
        match self {
            ZSetObj::Listpack(v) => {
                let pos = v
                    .binary_search_by(|(s, x)| cmp_entry(*s, x, score, m))
                    .unwrap_or_else(|p| p);
                v.insert(pos, (score, m.into()));
            }
            ZSetObj::SkipList { scores, order } => {
                scores.insert_unique(hash_member(m), (m.into(), score), |(x, _)| hash_member(x));
                order.insert(Scored(score, m.into()));
            }
        }
        old.is_none()
    }

    /// Removes `m`; true when it was there.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        self.remove_returning(m).is_some()
    }

    fn remove_returning(&mut self, m: &[u8]) -> Option<f64> {
        match self {
            ZSetObj::Listpack(v) => {
                let pos = v.iter().position(|(_, x)| &**x == m)?;
                Some(v.remove(pos).0)
            }
            ZSetObj::SkipList { scores, order } => {
                let entry = scores.find_entry(hash_member(m), |(x, _)| &**x == m).ok()?;
                let ((member, score), _) = entry.remove();
                order.remove(&Scored(score, member));
                Some(score)
            }
        }
    }

    fn convert_to_skiplist(&mut self) {
        if let ZSetObj::Listpack(v) = self {
            let mut scores = HashTable::with_capacity(v.len() + 1);
            let mut order = BTreeSet::new();
            for (s, m) in v.drain(..) {
                scores.insert_unique(hash_member(&m), (m.clone(), s), |(x, _)| hash_member(x));
                order.insert(Scored(s, m));
            }
            *self = ZSetObj::SkipList { scores, order };
        }
    }

    /// Members with their scores, lowest first.
    pub fn iter(&self) -> Box<dyn DoubleEndedIterator<Item = (&[u8], f64)> + '_> {
        match self {
            ZSetObj::Listpack(v) => Box::new(v.iter().map(|(s, m)| (&**m, *s))),
            ZSetObj::SkipList { order, .. } => Box::new(order.iter().map(|e| (&*e.1, e.0))),
        }
    }

    /// The 0-based rank of `m`, lowest score first.
    pub fn rank(&self, m: &[u8]) -> Option<usize> {
        let score = self.score(m)?;
        match self {
            ZSetObj::Listpack(v) => v.iter().position(|(_, x)| &**x == m),
            ZSetObj::SkipList { order, .. } => Some(order.range(..Scored(score, m.into())).count()),
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            ZSetObj::Listpack(v) => v.iter().map(|(_, m)| m.len() + 24).sum(),
            ZSetObj::SkipList { scores, .. } => scores.iter().map(|(m, _)| 2 * m.len() + 80).sum(),
        }
    }
}
