//! Set values, in Valkey's three encodings: `intset` (sorted integers) while every member is
//! an integer and there are at most `set-max-intset-entries`; `listpack` (a small vector)
//! while there are at most `set-max-listpack-entries` members of at most
//! `set-max-listpack-value` bytes; `hashtable` after. A set never converts back, as in Valkey.

use std::borrow::Cow;

use hashbrown::HashTable;

type Member = Box<[u8]>;

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

#[derive(Debug, Clone)]
pub enum SetObj {
    IntSet(Vec<i64>),
    Listpack(Vec<Member>),
    Table(HashTable<Member>),
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

/// The integer a member is stored as in an intset (canonical decimal only, as Valkey).
fn as_int(m: &[u8]) -> Option<i64> {
    crate::util::parse_i64(m).filter(|_| m.len() <= 20)
}

impl SetObj {
    pub fn new() -> SetObj {
        SetObj::default()
    }

    /// An empty set in the encoding Valkey picks for a first member `first` (SADD and the
    /// STORE commands start from here).
    pub fn for_first(first: &[u8], limits: SetLimits) -> SetObj {
        if as_int(first).is_some() && limits.max_intset_entries > 0 {
            SetObj::IntSet(Vec::new())
        } else if first.len() <= limits.max_listpack_value && limits.max_listpack_entries > 0 {
            SetObj::Listpack(Vec::new())
        } else {
            SetObj::Table(HashTable::new())
        }
    }

    pub fn len(&self) -> usize {
        match self {
            SetObj::IntSet(v) => v.len(),
            SetObj::Listpack(v) => v.len(),
            SetObj::Table(t) => t.len(),
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
            SetObj::Table(t) => t.find(hash_member(m), |x| &**x == m).is_some(),
        }
    }

    /// Adds `m`; true when it is new. Converts the encoding as Valkey's setTypeAdd does.
    pub fn insert(&mut self, m: &[u8], limits: SetLimits) -> bool {
        if self.contains(m) {
            return false;
        }
        match self {
            SetObj::IntSet(v) => {
                if let Some(i) = as_int(m)
                    && v.len() < limits.max_intset_entries
                {
                    let pos = v.binary_search(&i).unwrap_or_else(|p| p);
                    v.insert(pos, i);
                    return true;
                }
                let fits_listpack = as_int(m).is_none()
                    && v.len() < limits.max_listpack_entries
                    && m.len() <= limits.max_listpack_value;
                if fits_listpack {
                    self.convert_to_listpack();
                } else {
                    self.convert_to_table();
                }
            }
            SetObj::Listpack(v) => {
                if v.len() >= limits.max_listpack_entries || m.len() > limits.max_listpack_value {
                    self.convert_to_table();
                }
            }
            SetObj::Table(_) => {}
        }
        match self {
            SetObj::IntSet(_) => unreachable!("converted above"),
            SetObj::Listpack(v) => v.push(m.into()),
            SetObj::Table(t) => {
                t.insert_unique(hash_member(m), m.into(), |x| hash_member(x));
            }
        }
        true
    }

    /// Removes `m`; true when it was there.
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
                    v.swap_remove(pos);
                    true
                }
                None => false,
            },
            SetObj::Table(t) => match t.find_entry(hash_member(m), |x| &**x == m) {
                Ok(o) => {
                    o.remove();
                    true
                }
                Err(_) => false,
            },
        }
    }

    fn convert_to_listpack(&mut self) {
        if let SetObj::IntSet(v) = self {
            let members = v
                .iter()
                .map(|i| itoa::Buffer::new().format(*i).as_bytes().into())
                .collect();
            *self = SetObj::Listpack(members);
        }
    }

    fn convert_to_table(&mut self) {
        let members: Vec<Member> = self.iter().map(|m| m.into_owned().into()).collect();
        let mut t = HashTable::with_capacity(members.len() + 1);
        for m in members {
            t.insert_unique(hash_member(&m), m, |x| hash_member(x));
        }
        *self = SetObj::Table(t);
    }

    /// The members (integers of an intset formatted in decimal).
    pub fn iter(&self) -> Box<dyn Iterator<Item = Cow<'_, [u8]>> + '_> {
        match self {
            SetObj::IntSet(v) => Box::new(
                v.iter()
                    .map(|i| Cow::Owned(itoa::Buffer::new().format(*i).as_bytes().to_vec())),
            ),
            SetObj::Listpack(v) => Box::new(v.iter().map(|m| Cow::Borrowed(&**m))),
            SetObj::Table(t) => Box::new(t.iter().map(|m| Cow::Borrowed(&**m))),
        }
    }

    /// A uniformly random member, None when empty.
    pub fn random(&self) -> Option<Cow<'_, [u8]>> {
        match self {
            SetObj::IntSet(v) if !v.is_empty() => Some(Cow::Owned(
                itoa::Buffer::new()
                    .format(v[fastrand::usize(..v.len())])
                    .as_bytes()
                    .to_vec(),
            )),
            SetObj::Listpack(v) if !v.is_empty() => {
                Some(Cow::Borrowed(&*v[fastrand::usize(..v.len())]))
            }
            SetObj::Table(t) if !t.is_empty() => loop {
                if let Some(m) = t.get_bucket(fastrand::usize(..t.num_buckets())) {
                    return Some(Cow::Borrowed(&**m));
                }
            },
            _ => None,
        }
    }

    /// One step of SSCAN: small encodings whole (cursor 0), a table by bucket.
    pub fn scan(&self, cursor: u64, count: usize, mut emit: impl FnMut(&[u8])) -> u64 {
        match self {
            SetObj::Table(t) => super::scan::scan_table(t, cursor, count, |m| emit(m)),
            _ => {
                for m in self.iter() {
                    emit(&m);
                }
                0
            }
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            SetObj::IntSet(v) => v.len() * 8,
            SetObj::Listpack(v) => v.iter().map(|m| m.len() + 16).sum(),
            SetObj::Table(t) => t.iter().map(|m| m.len() + 24).sum(),
        }
    }
}
