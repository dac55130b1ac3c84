//! List values. Elements are kept in order in a double-ended queue; OBJECT ENCODING reports
//! `listpack` while the list fits `list-max-listpack-size` (Valkey's rule: a negative size is a
//! byte budget of 4/8/16/32/64 KiB, a positive one an element count) and `quicklist` after.
//! Like Valkey, a list that became a quicklist converts back only when it shrinks to half the
//! limit, so a list hovering at the limit does not flap.

use std::collections::VecDeque;

type Elem = Box<[u8]>;

/// Encoding limit, from `list-max-listpack-size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListLimits {
    pub max_listpack_size: i64,
}

impl Default for ListLimits {
    fn default() -> Self {
        ListLimits {
            max_listpack_size: -2,
        }
    }
}

impl ListLimits {
    /// Whether a list of `len` elements taking `bytes` bytes fits one listpack.
    fn fits(self, len: usize, bytes: usize) -> bool {
        if self.max_listpack_size >= 0 {
            return len <= self.max_listpack_size as usize;
        }
        let budget = match self.max_listpack_size {
            -1 => 4096,
            -2 => 8192,
            -3 => 16384,
            -4 => 32768,
            _ => 65536,
        };
        // Valkey's listpack spends about 2 bytes of header per small element.
        bytes + 2 * len <= budget
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListObj {
    items: VecDeque<Elem>,
    /// Bytes of element data (for the encoding rule and memory reports).
    bytes: usize,
    quicklist: bool,
}

impl PartialEq for ListObj {
    fn eq(&self, other: &Self) -> bool {
        self.items == other.items
    }
}

impl ListObj {
    pub fn new() -> ListObj {
        ListObj::default()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn encoding(&self) -> &'static str {
        if self.quicklist {
            "quicklist"
        } else {
            "listpack"
        }
    }

    fn update_encoding(&mut self, limits: ListLimits) {
        if !self.quicklist {
            self.quicklist = !limits.fits(self.items.len(), self.bytes);
        } else if limits.fits(self.items.len() * 2, self.bytes * 2) {
            self.quicklist = false;
        }
    }

    pub fn push_back(&mut self, v: &[u8], limits: ListLimits) {
        self.bytes += v.len();
        self.items.push_back(v.into());
        self.update_encoding(limits);
    }

    pub fn push_front(&mut self, v: &[u8], limits: ListLimits) {
        self.bytes += v.len();
        self.items.push_front(v.into());
        self.update_encoding(limits);
    }

    pub fn pop_front(&mut self, limits: ListLimits) -> Option<Elem> {
        let v = self.items.pop_front()?;
        self.bytes -= v.len();
        self.update_encoding(limits);
        Some(v)
    }

    pub fn pop_back(&mut self, limits: ListLimits) -> Option<Elem> {
        let v = self.items.pop_back()?;
        self.bytes -= v.len();
        self.update_encoding(limits);
        Some(v)
    }

    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.items.get(index).map(|e| &**e)
    }

    /// Replaces the element at `index` (which must exist).
    pub fn set(&mut self, index: usize, v: &[u8], limits: ListLimits) {
        let slot = &mut self.items[index];
        self.bytes = self.bytes - slot.len() + v.len();
        *slot = v.into();
        self.update_encoding(limits);
    }

    /// Inserts `v` before position `index` (`index == len` appends).
    pub fn insert(&mut self, index: usize, v: &[u8], limits: ListLimits) {
        self.bytes += v.len();
        self.items.insert(index, v.into());
        self.update_encoding(limits);
    }

    /// Removes up to `count` elements equal to `v` (all when `count == 0`), from the head
    /// (`count >= 0`) or the tail (`count < 0`) as LREM; returns how many went.
    pub fn remove_matching(&mut self, count: i64, v: &[u8], limits: ListLimits) -> usize {
        let limit = if count == 0 {
            usize::MAX
        } else {
            count.unsigned_abs() as usize
        };
        let mut removed = 0;
        if count >= 0 {
            let mut i = 0;
            while i < self.items.len() && removed < limit {
                if &*self.items[i] == v {
                    self.items.remove(i);
                    removed += 1;
                } else {
                    i += 1;
                }
            }
        } else {
            let mut i = self.items.len();
            while i > 0 && removed < limit {
                i -= 1;
                if &*self.items[i] == v {
                    self.items.remove(i);
                    removed += 1;
                }
            }
        }
        self.bytes -= removed * v.len();
        self.update_encoding(limits);
        removed
    }

    /// Keeps the elements in `start..end` (clamped) and drops the rest.
    pub fn retain_range(&mut self, start: usize, end: usize, limits: ListLimits) {
        let end = end.min(self.items.len());
        let start = start.min(end);
        self.items.truncate(end);
        self.items.drain(..start);
        self.bytes = self.items.iter().map(|e| e.len()).sum();
        self.update_encoding(limits);
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &[u8]> + ExactSizeIterator + '_ {
        self.items.iter().map(|e| &**e)
    }

    /// Elements `start..end` (clamped), in order.
    pub fn range(&self, start: usize, end: usize) -> impl DoubleEndedIterator<Item = &[u8]> + '_ {
        let end = end.min(self.items.len());
        let start = start.min(end);
        self.items.range(start..end).map(|e| &**e)
    }

    pub fn heap_size(&self) -> usize {
        self.bytes + self.items.len() * (std::mem::size_of::<Elem>() + 8)
    }
}
