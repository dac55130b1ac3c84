//! List values, laid out as Valkey lays them out: a chain of nodes, each node a run of
//! elements packed in listpack entries (a few bytes of overhead per element, see `pack`), with
//! its element count so an index lookup skips whole nodes. Pushes and pops at either end
//! touch only the end node: O(1) amortized; index access is O(nodes + node size).
//!
//! OBJECT ENCODING follows Valkey's `listTypeTryConversion`: a list is a `listpack` (one node,
//! no node limit) until a write would take it past `list-max-listpack-size` — a negative size
//! is a byte budget of 4/8/16/32/64 KiB, a positive one an element count (with an 8 KiB safety
//! cap) — and a `quicklist` after, whose nodes are split at that same limit and whose elements
//! larger than the budget sit alone in a "plain" node. A quicklist becomes a listpack again
//! only when it is down to a single packed node of at most half the limit, so a list
//! hovering at the limit does not flap. Node sizes are Valkey's `lpBytes`, so the conversion
//! points are Valkey's too.

mod pack;

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, Range};

use pack::{LP_EOF, LP_HDR, Raw};

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

/// Byte budgets of the negative `list-max-listpack-size` levels -1..-5.
const OPTIMIZATION_LEVEL: [usize; 5] = [4096, 8192, 16384, 32768, 65536];
/// The byte cap of a node when the limit is an element count.
const SIZE_SAFETY_LIMIT: usize = 8192;
/// What Valkey adds to an element's length when estimating whether it fits a node.
const SIZE_ESTIMATE_OVERHEAD: usize = 8;

impl ListLimits {
    /// (byte limit, element limit) of one node; usize::MAX where there is none
    /// (quicklistNodeLimit).
    fn node_limit(self) -> (usize, usize) {
        let fill = self.max_listpack_size;
        if fill >= 0 {
            (usize::MAX, (fill as usize).max(1))
        } else {
            let level = (fill.unsigned_abs() - 1).min(4) as usize;
            (OPTIMIZATION_LEVEL[level], usize::MAX)
        }
    }

    /// Whether a node of `sz` bytes and `count` elements is past the limit
    /// (quicklistNodeExceedsLimit).
    fn exceeds(self, sz: usize, count: usize) -> bool {
        let (sz_limit, count_limit) = self.node_limit();
        if sz_limit != usize::MAX {
            sz > sz_limit
        } else {
            sz > SIZE_SAFETY_LIMIT || count > count_limit
        }
    }

    /// Whether an element of `n` bytes gets a plain node of its own (isLargeElement).
    fn is_large(self, n: usize) -> bool {
        match self.node_limit() {
            (usize::MAX, _) => n > SIZE_SAFETY_LIMIT,
            (sz_limit, _) => n > sz_limit,
        }
    }
}

/// One element read from a list: its bytes, borrowed, or the text of an integer entry.
#[derive(Clone, Copy)]
pub struct Element<'a>(Repr<'a>);

#[derive(Clone, Copy)]
enum Repr<'a> {
    Bytes(&'a [u8]),
    /// i64::MIN is the longest: 20 characters.
    Int {
        text: [u8; 20],
        len: u8,
    },
}

impl<'a> From<Raw<'a>> for Element<'a> {
    #[inline]
    fn from(raw: Raw<'a>) -> Self {
        match raw {
            Raw::Str(b) => Element(Repr::Bytes(b)),
            Raw::Int(i) => {
                let mut buf = itoa::Buffer::new();
                let s = buf.format(i).as_bytes();
                let mut text = [0u8; 20];
                text[..s.len()].copy_from_slice(s);
                Element(Repr::Int {
                    text,
                    len: s.len() as u8,
                })
            }
        }
    }
}

impl Deref for Element<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Bytes(b) => b,
            Repr::Int { text, len } => &text[..usize::from(*len)],
        }
    }
}

impl fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

/// A run of elements: listpack entries (packed), or the bytes of one large element (plain).
/// Never empty while it is part of a list.
#[derive(Debug, Clone)]
struct Node {
    data: Vec<u8>,
    count: u32,
    plain: bool,
}

impl Node {
    fn packed(v: &[u8]) -> Node {
        let mut n = Node {
            data: Vec::new(),
            count: 0,
            plain: false,
        };
        n.insert_at_byte(0, v);
        n
    }

    fn plain(v: &[u8]) -> Node {
        Node {
            data: v.to_vec(),
            count: 1,
            plain: true,
        }
    }

    /// Valkey's `node->sz`: the listpack's bytes, or the plain element's length.
    fn sz(&self) -> usize {
        if self.plain {
            self.data.len()
        } else {
            LP_HDR + self.data.len() + LP_EOF
        }
    }

    #[inline]
    fn raw_at(&self, pos: usize) -> (Raw<'_>, usize) {
        if self.plain {
            (Raw::Str(&self.data), self.data.len())
        } else {
            pack::read(&self.data, pos)
        }
    }

    #[inline]
    fn start_before(&self, end: usize) -> usize {
        if self.plain {
            0
        } else {
            pack::start_of_entry_ending_at(&self.data, end)
        }
    }

    /// The byte offset of entry `k` (`k == count`: the end), walked from the nearer end.
    fn offset_of(&self, k: usize) -> usize {
        let count = self.count as usize;
        if k >= count {
            return self.data.len();
        }
        if k <= count / 2 {
            let mut pos = 0;
            for _ in 0..k {
                pos += pack::len_at(&self.data, pos);
            }
            pos
        } else {
            let mut end = self.data.len();
            for _ in 0..count - k {
                end = pack::start_of_entry_ending_at(&self.data, end);
            }
            end
        }
    }

    fn insert_at_byte(&mut self, pos: usize, v: &[u8]) {
        let n = pack::entry_len(v);
        let old = self.data.len();
        reserve_for(&mut self.data, n);
        self.data.resize(old + n, 0);
        self.data.copy_within(pos..old, pos + n);
        pack::write(v, &mut self.data[pos..pos + n]);
        self.count += 1;
    }

    fn insert_entry(&mut self, k: usize, v: &[u8]) {
        let pos = self.offset_of(k);
        self.insert_at_byte(pos, v);
    }

    fn replace_entry(&mut self, k: usize, v: &[u8]) {
        let pos = self.offset_of(k);
        let old = pack::len_at(&self.data, pos);
        let n = pack::entry_len(v);
        reserve_for(&mut self.data, n.saturating_sub(old));
        self.data.splice(pos..pos + old, std::iter::repeat_n(0, n));
        pack::write(v, &mut self.data[pos..pos + n]);
    }

    /// Drops the first `k` elements (fewer than `count`).
    fn drop_front(&mut self, k: usize) {
        let pos = self.offset_of(k);
        self.data.drain(..pos);
        shrink_if_sparse(&mut self.data);
        self.count -= k as u32;
    }

    /// Drops the last `k` elements (fewer than `count`).
    fn drop_back(&mut self, k: usize) {
        let pos = self.offset_of(self.count as usize - k);
        self.data.truncate(pos);
        shrink_if_sparse(&mut self.data);
        self.count -= k as u32;
    }

    /// Entries `k..` as a node of their own (0 < k < count).
    fn split_off(&mut self, k: usize) -> Node {
        let pos = self.offset_of(k);
        let tail = self.data.split_off(pos);
        shrink_if_sparse(&mut self.data);
        let moved = self.count - k as u32;
        self.count = k as u32;
        Node {
            data: tail,
            count: moved,
            plain: false,
        }
    }

    /// Removes the entries at `ranges` (byte ranges, ascending, disjoint).
    fn remove_ranges(&mut self, ranges: &[Range<usize>]) {
        let mut write = ranges[0].start;
        let mut read = ranges[0].end;
        for r in &ranges[1..] {
            self.data.copy_within(read..r.start, write);
            write += r.start - read;
            read = r.end;
        }
        let len = self.data.len();
        self.data.copy_within(read..len, write);
        self.data.truncate(write + len - read);
        shrink_if_sparse(&mut self.data);
        self.count -= ranges.len() as u32;
    }
}

/// The allocation size a node of `n` bytes is given: the allocator's size classes (four per
/// doubling, as jemalloc's), so a node's capacity is what it really occupies. Growing from
/// class to class keeps appends amortized O(1) while a full node wastes next to nothing —
/// Vec's doubling from an odd first size would leave an 8 KiB node in a 10 KiB block.
fn size_class(n: usize) -> usize {
    if n <= 16 {
        return if n <= 8 { 8 } else { 16 };
    }
    let step = 1usize << ((n - 1).ilog2() - 2);
    n.div_ceil(step) * step
}

/// Makes room for `extra` more bytes in `data`, by size class.
fn reserve_for(data: &mut Vec<u8>, extra: usize) {
    let n = data.len() + extra;
    if n > data.capacity() {
        data.reserve_exact(size_class(n) - data.len());
    }
}

/// Gives back the memory of a node that shrank to well under its allocation.
fn shrink_if_sparse(data: &mut Vec<u8>) {
    if data.capacity() > 2 * size_class(data.len().max(1)) {
        data.shrink_to(size_class(data.len().max(1)));
    }
}

/// Whether `v` (of `n` bytes) may go into `node` without a new node (_quicklistNodeAllowInsert).
fn allow_insert(node: &Node, n: usize, limits: ListLimits) -> bool {
    !node.plain
        && !limits.is_large(n)
        && !limits.exceeds(
            node.sz() + n + SIZE_ESTIMATE_OVERHEAD,
            node.count as usize + 1,
        )
}

/// Whether two adjacent nodes may become one (_quicklistNodeAllowMerge).
fn allow_merge(a: &Node, b: &Node, limits: ListLimits) -> bool {
    !a.plain
        && !b.plain
        && !limits.exceeds(
            a.sz() + b.sz() - LP_HDR - LP_EOF,
            (a.count + b.count) as usize,
        )
}

#[derive(Debug, Clone, Default)]
pub struct ListObj {
    /// Listpack encoding: at most one node. Quicklist: any number. Never an empty node.
    nodes: VecDeque<Node>,
    len: usize,
    quicklist: bool,
}

impl PartialEq for ListObj {
    fn eq(&self, other: &Self) -> bool {
        // Entries are canonical (an integer text is always an integer entry), so equal raw
        // entries are equal elements.
        self.len == other.len && self.raw_iter(0, self.len).eq(other.raw_iter(0, other.len))
    }
}

impl ListObj {
    pub fn new() -> ListObj {
        ListObj::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn encoding(&self) -> &'static str {
        if self.quicklist {
            "quicklist"
        } else {
            "listpack"
        }
    }

    /// The listpack's bytes (listpack encoding).
    fn lp_bytes(&self) -> usize {
        LP_HDR + LP_EOF + self.nodes.front().map_or(0, |n| n.data.len())
    }

    /// Before a write adds `add_len` elements of `add_bytes` bytes: a listpack that would
    /// pass the limit becomes a quicklist (its listpack the first node). Valkey counts the
    /// added elements' raw lengths, not their encoded size, and so do we.
    fn convert_if_growing_past(&mut self, add_bytes: usize, add_len: usize, limits: ListLimits) {
        if !self.quicklist && limits.exceeds(self.lp_bytes() + add_bytes, self.len + add_len) {
            self.quicklist = true;
        }
    }

    /// After a write removed elements: a quicklist down to one packed node within half the
    /// limit becomes a listpack.
    fn convert_if_shrunk(&mut self, limits: ListLimits) {
        if self.quicklist && self.nodes.len() == 1 && !self.nodes[0].plain {
            let (sz_limit, count_limit) = limits.node_limit();
            if self.nodes[0].sz() <= sz_limit / 2 && self.len <= count_limit / 2 {
                self.quicklist = false;
            }
        }
    }

    /// Pushes `elems` at the head (`left`, each in turn, as LPUSH) or the tail: one push
    /// command, whose encoding check covers all its elements at once as in Valkey.
    pub fn push(&mut self, elems: &[&[u8]], left: bool, limits: ListLimits) {
        let add_bytes = elems.iter().map(|e| e.len()).sum();
        self.convert_if_growing_past(add_bytes, elems.len(), limits);
        for e in elems {
            self.push_one(e, left, limits);
        }
    }

    pub fn push_back(&mut self, v: &[u8], limits: ListLimits) {
        self.push(&[v], false, limits);
    }

    pub fn push_front(&mut self, v: &[u8], limits: ListLimits) {
        self.push(&[v], true, limits);
    }

    /// Makes room for `n` more nodes. The node table grows by a quarter, not double: a node
    /// is 32 bytes, as Valkey's quicklistNode, and a half-empty doubled table would add more.
    fn reserve_nodes(&mut self, n: usize) {
        let cap = self.nodes.capacity();
        if self.nodes.len() + n > cap {
            self.nodes.reserve_exact((cap / 4).max(n).max(4));
        }
    }

    fn push_one(&mut self, v: &[u8], left: bool, limits: ListLimits) {
        self.len += 1;
        self.reserve_nodes(1);
        if !self.quicklist {
            match self.nodes.front_mut() {
                Some(n) => n.insert_at_byte(if left { 0 } else { n.data.len() }, v),
                None => self.nodes.push_back(Node::packed(v)),
            }
            return;
        }
        if limits.is_large(v.len()) {
            let node = Node::plain(v);
            if left {
                self.nodes.push_front(node);
            } else {
                self.nodes.push_back(node);
            }
            return;
        }
        let end = if left {
            self.nodes.front_mut()
        } else {
            self.nodes.back_mut()
        };
        match end {
            Some(n) if allow_insert(n, v.len(), limits) => {
                n.insert_at_byte(if left { 0 } else { n.data.len() }, v)
            }
            _ if left => self.nodes.push_front(Node::packed(v)),
            _ => self.nodes.push_back(Node::packed(v)),
        }
    }

    /// Removes up to `count` elements from the head (`left`) or tail; returns how many went.
    pub fn pop_many(&mut self, left: bool, count: usize, limits: ListLimits) -> usize {
        let n = count.min(self.len);
        if left {
            self.drop_front(n);
        } else {
            self.drop_back(n);
        }
        self.convert_if_shrunk(limits);
        n
    }

    pub fn pop_front(&mut self, limits: ListLimits) -> Option<Vec<u8>> {
        let v = self.get(0)?.to_vec();
        self.pop_many(true, 1, limits);
        Some(v)
    }

    pub fn pop_back(&mut self, limits: ListLimits) -> Option<Vec<u8>> {
        let v = self.get(self.len.checked_sub(1)?)?.to_vec();
        self.pop_many(false, 1, limits);
        Some(v)
    }

    /// Drops the first `n` (≤ len) elements: whole nodes, then part of one.
    fn drop_front(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let node = self.nodes.front_mut().expect("n ≤ len");
            let c = node.count as usize;
            if c <= n {
                self.nodes.pop_front();
                n -= c;
            } else {
                node.drop_front(n);
                n = 0;
            }
        }
    }

    /// Drops the last `n` (≤ len) elements.
    fn drop_back(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let node = self.nodes.back_mut().expect("n ≤ len");
            let c = node.count as usize;
            if c <= n {
                self.nodes.pop_back();
                n -= c;
            } else {
                node.drop_back(n);
                n = 0;
            }
        }
    }

    /// The node holding element `index` (< len) and the element's place in it, counted from
    /// the nearer end of the list.
    fn locate(&self, index: usize) -> (usize, usize) {
        debug_assert!(index < self.len);
        if index < self.len / 2 {
            let mut i = index;
            for (ni, n) in self.nodes.iter().enumerate() {
                let c = n.count as usize;
                if i < c {
                    return (ni, i);
                }
                i -= c;
            }
        } else {
            let mut from_end = self.len - 1 - index;
            for (ni, n) in self.nodes.iter().enumerate().rev() {
                let c = n.count as usize;
                if from_end < c {
                    return (ni, c - 1 - from_end);
                }
                from_end -= c;
            }
        }
        unreachable!("index {index} < len {} is in some node", self.len)
    }

    pub fn get(&self, index: usize) -> Option<Element<'_>> {
        if index >= self.len {
            return None;
        }
        let (ni, k) = self.locate(index);
        let node = &self.nodes[ni];
        Some(node.raw_at(node.offset_of(k)).0.into())
    }

    /// Replaces the element at `index` (which must exist), as LSET.
    pub fn set(&mut self, index: usize, v: &[u8], limits: ListLimits) {
        if index >= self.len {
            return;
        }
        // Valkey checks LSET's value as if it were one more element.
        self.convert_if_growing_past(v.len(), 1, limits);
        let (ni, k) = self.locate(index);
        let node = &mut self.nodes[ni];
        if !self.quicklist {
            node.replace_entry(k, v);
            return;
        }
        if !node.plain && !limits.is_large(v.len()) {
            let pos = node.offset_of(k);
            let projected = node.sz() - pack::len_at(&node.data, pos) + pack::entry_len(v);
            if !limits.exceeds(projected, node.count as usize) {
                node.replace_entry(k, v);
                self.convert_if_shrunk(limits);
                return;
            }
        }
        if node.plain && limits.is_large(v.len()) {
            node.data = v.to_vec();
            return;
        }
        // The node cannot take the new value: it goes into a node of its own at that place.
        let at = self.remove_entry(ni, k);
        self.len += 1;
        let new = if limits.is_large(v.len()) {
            Node::plain(v)
        } else {
            Node::packed(v)
        };
        self.put_node(at, new, limits);
        self.convert_if_shrunk(limits);
    }

    /// Removes entry `k` of node `ni`; returns where a node put in its place goes, as
    /// (node, entry) for `put_node`.
    fn remove_entry(&mut self, ni: usize, k: usize) -> (usize, usize) {
        let node = &mut self.nodes[ni];
        self.len -= 1;
        if node.count == 1 {
            self.nodes.remove(ni);
            return (ni, 0);
        }
        let pos = node.offset_of(k);
        let l = pack::len_at(&node.data, pos);
        node.data.drain(pos..pos + l);
        shrink_if_sparse(&mut node.data);
        node.count -= 1;
        (ni, k)
    }

    /// Puts `new` before entry `k` of node `ni` (after the last node when `ni` is past the
    /// end), splitting that node when `k` is inside it, then merges `new` with its
    /// neighbours where the limit allows (as Valkey's quicklist does after a split).
    fn put_node(&mut self, (ni, k): (usize, usize), new: Node, limits: ListLimits) {
        self.reserve_nodes(2);
        let mut center = if ni >= self.nodes.len() {
            self.nodes.push_back(new);
            self.nodes.len() - 1
        } else if k == 0 {
            self.nodes.insert(ni, new);
            ni
        } else if k >= self.nodes[ni].count as usize {
            self.nodes.insert(ni + 1, new);
            ni + 1
        } else {
            let right = self.nodes[ni].split_off(k);
            self.nodes.insert(ni + 1, new);
            self.nodes.insert(ni + 2, right);
            ni + 1
        };
        if center > 0 && allow_merge(&self.nodes[center - 1], &self.nodes[center], limits) {
            self.merge_with_next(center - 1);
            center -= 1;
        }
        if center + 1 < self.nodes.len()
            && allow_merge(&self.nodes[center], &self.nodes[center + 1], limits)
        {
            self.merge_with_next(center);
        }
    }

    fn merge_with_next(&mut self, ni: usize) {
        let next = self.nodes.remove(ni + 1).expect("a next node");
        let node = &mut self.nodes[ni];
        reserve_for(&mut node.data, next.data.len());
        node.data.extend_from_slice(&next.data);
        node.count += next.count;
    }

    /// Inserts `v` before position `index` (`index >= len` appends), as LINSERT.
    pub fn insert(&mut self, index: usize, v: &[u8], limits: ListLimits) {
        self.convert_if_growing_past(v.len(), 1, limits);
        if index >= self.len {
            self.push_one(v, false, limits);
            return;
        }
        if index == 0 {
            self.push_one(v, true, limits);
            return;
        }
        let (ni, k) = self.locate(index);
        self.len += 1;
        if !self.quicklist {
            self.nodes[ni].insert_entry(k, v);
            return;
        }
        if limits.is_large(v.len()) {
            self.put_node((ni, k), Node::plain(v), limits);
        } else if allow_insert(&self.nodes[ni], v.len(), limits) {
            self.nodes[ni].insert_entry(k, v);
        } else if k == 0 && allow_insert(&self.nodes[ni - 1], v.len(), limits) {
            // ni > 0 here: index 0 was a push.
            let prev = &mut self.nodes[ni - 1];
            prev.insert_at_byte(prev.data.len(), v);
        } else {
            self.put_node((ni, k), Node::packed(v), limits);
        }
    }

    /// Removes up to `count` elements equal to `v` (all when `count == 0`), from the head
    /// (`count >= 0`) or the tail (`count < 0`) as LREM; returns how many went.
    pub fn remove_matching(&mut self, count: i64, v: &[u8], limits: ListLimits) -> usize {
        let limit = if count == 0 {
            usize::MAX
        } else {
            count.unsigned_abs() as usize
        };
        let from_tail = count < 0;
        let v_int = pack::as_int(v);
        let mut removed = 0;
        let mut ranges = Vec::new();
        let nodes = self.nodes.len();
        for i in 0..nodes {
            if removed == limit {
                break;
            }
            let node = &mut self.nodes[if from_tail { nodes - 1 - i } else { i }];
            ranges.clear();
            if from_tail {
                let mut end = node.data.len();
                while end > 0 && removed + ranges.len() < limit {
                    let start = node.start_before(end);
                    if node.raw_at(start).0.matches(v, v_int) {
                        ranges.push(start..end);
                    }
                    end = start;
                }
                ranges.reverse();
            } else {
                let mut pos = 0;
                while pos < node.data.len() && removed + ranges.len() < limit {
                    let (raw, l) = node.raw_at(pos);
                    if raw.matches(v, v_int) {
                        ranges.push(pos..pos + l);
                    }
                    pos += l;
                }
            }
            if !ranges.is_empty() {
                removed += ranges.len();
                node.remove_ranges(&ranges);
            }
        }
        if removed > 0 {
            self.nodes.retain(|n| n.count > 0);
            self.len -= removed;
            self.convert_if_shrunk(limits);
        }
        removed
    }

    /// Keeps the elements in `start..end` (clamped) and drops the rest, as LTRIM.
    pub fn retain_range(&mut self, start: usize, end: usize, limits: ListLimits) {
        let end = end.min(self.len);
        let start = start.min(end);
        self.drop_back(self.len - end);
        self.drop_front(start);
        self.convert_if_shrunk(limits);
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter(self.raw_iter(0, self.len))
    }

    /// Elements `start..end` (clamped), in order.
    pub fn range(&self, start: usize, end: usize) -> Iter<'_> {
        Iter(self.raw_iter(start, end))
    }

    /// For each element in order, whether it equals `v` (no integer entry is rendered as
    /// text to find out): LPOS, LINSERT's pivot.
    pub fn matches<'a>(&'a self, v: &'a [u8]) -> Matches<'a> {
        Matches {
            raw: self.raw_iter(0, self.len),
            v,
            v_int: pack::as_int(v),
        }
    }

    fn raw_iter(&self, start: usize, end: usize) -> RawIter<'_> {
        let end = end.min(self.len);
        let start = start.min(end);
        if start == end {
            return RawIter {
                nodes: &self.nodes,
                front: (0, 0),
                back: (0, 0),
                remaining: 0,
            };
        }
        let (fi, fk) = self.locate(start);
        let (bi, bk) = self.locate(end - 1);
        let back_node = &self.nodes[bi];
        let back_start = back_node.offset_of(bk);
        RawIter {
            nodes: &self.nodes,
            front: (fi, self.nodes[fi].offset_of(fk)),
            back: (bi, back_start + back_node.raw_at(back_start).1),
            remaining: end - start,
        }
    }

    pub fn heap_size(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.nodes.iter().map(|n| n.data.capacity()).sum::<usize>()
    }

    /// Bytes this list's contents take in allocations (MEMORY USAGE; see `shard::usage`):
    /// the node ring plus the nodes' buffers, the first `samples` nodes standing for all of
    /// them as in Valkey's quicklist estimate.
    pub fn mem_usage(&self, samples: usize) -> usize {
        use super::usage::{alloc_size, sampled, vec_bytes};
        vec_bytes(self.nodes.capacity(), std::mem::size_of::<Node>())
            + sampled(
                self.nodes.iter().map(|n| alloc_size(n.data.capacity())),
                self.nodes.len(),
                samples,
            )
    }

    /// Valkey's free effort: a quicklist frees node by node, a listpack in one go.
    pub fn free_effort(&self) -> usize {
        if self.quicklist { self.nodes.len() } else { 1 }
    }
}

/// Walks entries between two cursors: `front` is (node, byte offset) of the next element
/// from the front, `back` (node, byte end) of the next from the back.
#[derive(Clone)]
struct RawIter<'a> {
    nodes: &'a VecDeque<Node>,
    front: (usize, usize),
    back: (usize, usize),
    remaining: usize,
}

impl<'a> Iterator for RawIter<'a> {
    type Item = Raw<'a>;

    #[inline]
    fn next(&mut self) -> Option<Raw<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let (mut ni, mut pos) = self.front;
        if pos >= self.nodes[ni].data.len() {
            ni += 1;
            pos = 0;
        }
        let (raw, l) = self.nodes[ni].raw_at(pos);
        self.front = (ni, pos + l);
        self.remaining -= 1;
        Some(raw)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl DoubleEndedIterator for RawIter<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let (mut ni, mut end) = self.back;
        if end == 0 {
            ni -= 1;
            end = self.nodes[ni].data.len();
        }
        let node = &self.nodes[ni];
        let start = node.start_before(end);
        self.back = (ni, start);
        self.remaining -= 1;
        Some(node.raw_at(start).0)
    }
}

impl ExactSizeIterator for RawIter<'_> {}

/// The elements of a list (or of a range of it), from either end.
#[derive(Clone)]
pub struct Iter<'a>(RawIter<'a>);

impl<'a> Iterator for Iter<'a> {
    type Item = Element<'a>;

    #[inline]
    fn next(&mut self) -> Option<Element<'a>> {
        self.0.next().map(Element::from)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(Element::from)
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// Whether each element equals a value, from either end (see [`ListObj::matches`]).
pub struct Matches<'a> {
    raw: RawIter<'a>,
    v: &'a [u8],
    v_int: Option<i64>,
}

impl Iterator for Matches<'_> {
    type Item = bool;

    #[inline]
    fn next(&mut self) -> Option<bool> {
        self.raw.next().map(|r| r.matches(self.v, self.v_int))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.raw.size_hint()
    }
}

impl DoubleEndedIterator for Matches<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<bool> {
        self.raw.next_back().map(|r| r.matches(self.v, self.v_int))
    }
}

impl ExactSizeIterator for Matches<'_> {}

#[cfg(test)]
mod tests;
