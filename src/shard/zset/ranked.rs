//! The large sorted-set encoding (`skiplist` in OBJECT ENCODING): a member → score table plus
//! an order with O(log n) rank and index access, each member stored once.
//!
//! Valkey keeps a hash table of skiplist nodes; the skiplist's spans give ranks. Here:
//!
//! * `nodes` is a slab of (score, member): a member's id is its slot, stable for its life.
//! * `index` is a hash table of ids, hashed by member bytes (the bytes live in `nodes`).
//! * `order` is the ids sorted by (score, member), cut into chunks of at most [`CHUNK`] ids,
//!   with a Fenwick tree over the chunk lengths: a rank or an index is a Fenwick walk plus a
//!   binary search in one chunk. An insert or removal moves at most a chunk's worth of ids;
//!   a full chunk splits in two and an emptied one goes, rebuilding the Fenwick tree (O(n /
//!   CHUNK), amortized over the CHUNK / 2 changes that must happen between two rebuilds).
//!
//! Per member that is 24 bytes of slab, the member's own allocation, ~5 bytes of order and
//! 5–10 bytes of hash table, against Valkey's skiplist node, sds and dict entry. Measured
//! (INFO used_memory, 1M members `member:N`, random scores): ~57 bytes per member here,
//! ~110 in redis-server 7.0.
//!
//! Ids also make ZSCAN simple and exact: a cursor is the next slab slot, so a member present
//! for a whole scan is returned exactly once. Ids change only when the slab is compacted
//! (after three quarters of it emptied); a cursor carries the compaction generation and an
//! outdated one restarts the walk, which may repeat members but never misses one.

use hashbrown::HashTable;

use super::{cmp_entry, hash_member};

/// Most ids one chunk of the order holds (tiny in unit tests, so that small sets split,
/// drain and repack chunks).
const CHUNK: usize = if cfg!(test) { 8 } else { 256 };

/// A slab slot: a member and its score, or a free slot (NaN score, empty member: a real score
/// is never NaN).
#[derive(Debug, Clone)]
struct Node {
    score: f64,
    member: Box<[u8]>,
}

impl Node {
    fn is_free(&self) -> bool {
        self.score.is_nan()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Ranked {
    nodes: Vec<Node>,
    free: Vec<u32>,
    index: HashTable<u32>,
    order: Order,
    /// Sum of the members' lengths (for `heap_size`).
    member_bytes: usize,
    /// Bumped whenever ids are renumbered (compaction): stamps ZSCAN cursors.
    generation: u32,
}

/// Cursor bits below the slot number: the low bits of the generation.
const GENERATION_BITS: u32 = 12;

impl Ranked {
    pub fn with_capacity(n: usize) -> Ranked {
        Ranked {
            nodes: Vec::with_capacity(n),
            index: HashTable::with_capacity(n),
            ..Ranked::default()
        }
    }

    /// Builds from (score, member) pairs already in order, with distinct members.
    pub fn from_sorted(pairs: Vec<(f64, Box<[u8]>)>) -> Ranked {
        let mut r = Ranked::with_capacity(pairs.len());
        for (score, member) in pairs {
            r.member_bytes += member.len();
            r.nodes.push(Node { score, member });
        }
        let nodes = &r.nodes;
        for id in 0..nodes.len() as u32 {
            let h = hash_member(&nodes[id as usize].member);
            r.index
                .insert_unique(h, id, |&x| hash_member(&nodes[x as usize].member));
        }
        let ids: Vec<u32> = (0..nodes.len() as u32).collect();
        r.order.chunks = ids.chunks(CHUNK * 3 / 4).map(<[u32]>::to_vec).collect();
        r.order.len = ids.len();
        r.order.rebuild();
        r
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }

    fn find(&self, m: &[u8]) -> Option<u32> {
        self.index
            .find(hash_member(m), |&id| *self.nodes[id as usize].member == *m)
            .copied()
    }

    pub fn score(&self, m: &[u8]) -> Option<f64> {
        self.find(m).map(|id| self.node(id).score)
    }

    /// Sets `m`'s score; true when `m` is new. An equal score (0 and -0 included) changes
    /// nothing, as in Valkey.
    pub fn insert(&mut self, m: &[u8], score: f64) -> bool {
        if let Some(id) = self.find(m) {
            let old = self.node(id).score;
            if old != score {
                let nodes = &self.nodes;
                self.order.remove(id, |x| less(&nodes[x as usize], old, m));
                self.nodes[id as usize].score = score;
                let nodes = &self.nodes;
                self.order
                    .insert(id, |x| less(&nodes[x as usize], score, m));
            }
            return false;
        }
        let node = Node {
            score,
            member: m.into(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = node;
                id
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.member_bytes += m.len();
        let nodes = &self.nodes;
        self.index.insert_unique(hash_member(m), id, |&x| {
            hash_member(&nodes[x as usize].member)
        });
        self.order
            .insert(id, |x| less(&nodes[x as usize], score, m));
        true
    }

    /// Removes `m`, returning its score.
    pub fn remove(&mut self, m: &[u8]) -> Option<f64> {
        let nodes = &self.nodes;
        let entry = self
            .index
            .find_entry(hash_member(m), |&id| *nodes[id as usize].member == *m)
            .ok()?;
        let (id, _) = entry.remove();
        let score = self.node(id).score;
        let nodes = &self.nodes;
        self.order
            .remove(id, |x| less(&nodes[x as usize], score, m));
        self.release(id);
        self.maybe_compact();
        Some(score)
    }

    /// Frees slot `id` (already out of the index and the order).
    fn release(&mut self, id: u32) {
        let node = std::mem::replace(
            &mut self.nodes[id as usize],
            Node {
                score: f64::NAN,
                member: Box::default(),
            },
        );
        self.member_bytes -= node.member.len();
        self.free.push(id);
    }

    /// The 0-based rank of `m`, lowest score first.
    pub fn rank(&self, m: &[u8]) -> Option<usize> {
        let id = self.find(m)?;
        let node = self.node(id);
        Some(
            self.order
                .partition_point(|x| less(self.node(x), node.score, &node.member)),
        )
    }

    /// The member at `rank` and its score.
    pub fn get(&self, rank: usize) -> Option<(&[u8], f64)> {
        (rank < self.len()).then(|| {
            let n = self.node(self.order.at(rank));
            (&*n.member, n.score)
        })
    }

    /// How many leading members (in order) satisfy `pred`, which must hold for a prefix.
    pub fn partition_point(&self, pred: impl Fn(f64, &[u8]) -> bool) -> usize {
        self.order.partition_point(|x| {
            let n = self.node(x);
            pred(n.score, &n.member)
        })
    }

    /// Members of ranks `start..end` in order (end ≤ len).
    pub fn range(
        &self,
        start: usize,
        end: usize,
    ) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + '_ {
        self.order.ids(start, end).map(|&id| {
            let n = self.node(id);
            (&*n.member, n.score)
        })
    }

    /// Removes the members of ranks `start..end` (end ≤ len).
    pub fn remove_range(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        for id in self.order.drain(start, end) {
            let nodes = &self.nodes;
            let member = &nodes[id as usize].member;
            if let Ok(e) = self.index.find_entry(hash_member(member), |&x| x == id) {
                e.remove();
            }
            self.release(id);
        }
        self.maybe_compact();
    }

    /// When three quarters of the slab are free slots, renumbers the members densely and
    /// shrinks the table (Valkey's dict shrinks too). Ids change: bump the scan generation.
    fn maybe_compact(&mut self) {
        let slots = self.nodes.len();
        if slots < 64 || self.free.len() * 4 < slots * 3 {
            return;
        }
        let mut remap = vec![u32::MAX; slots];
        let mut next = 0u32;
        for (old, n) in self.nodes.iter().enumerate() {
            if !n.is_free() {
                remap[old] = next;
                next += 1;
            }
        }
        self.nodes.retain(|n| !n.is_free());
        self.nodes.shrink_to_fit();
        self.free = Vec::new();
        for id in self.index.iter_mut() {
            *id = remap[*id as usize];
        }
        let nodes = &self.nodes;
        self.index
            .shrink_to_fit(|&x| hash_member(&nodes[x as usize].member));
        self.order.renumber(&remap);
        self.generation = self.generation.wrapping_add(1);
    }

    /// A uniformly random member.
    pub fn random(&self) -> Option<(&[u8], f64)> {
        self.get(fastrand::usize(..self.len().max(1)))
    }

    /// ZSCAN: walks slab slots from `cursor`, emitting about `count` members; returns the
    /// next cursor (0 when done). See the module notes for why no member is missed.
    pub fn scan(&self, cursor: u64, count: usize, mut emit: impl FnMut(&[u8], f64)) -> u64 {
        let stamp = (self.generation & ((1 << GENERATION_BITS) - 1)) as u64;
        let mut slot = if cursor & ((1 << GENERATION_BITS) - 1) == stamp {
            (cursor >> GENERATION_BITS) as usize
        } else {
            0
        };
        let want = count.max(1);
        let mut emitted = 0;
        // Like Valkey, bound the number of empty slots visited per call.
        let mut budget = want.saturating_mul(10);
        while slot < self.nodes.len() && emitted < want && budget > 0 {
            let n = &self.nodes[slot];
            if !n.is_free() {
                emit(&n.member, n.score);
                emitted += 1;
            }
            slot += 1;
            budget -= 1;
        }
        if slot >= self.nodes.len() {
            0
        } else {
            ((slot as u64) << GENERATION_BITS) | stamp
        }
    }

    /// Bytes held on the heap, roughly (for eviction and memory estimates).
    pub fn heap_size(&self) -> usize {
        self.member_bytes
            + self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.free.capacity() * 4
            + self.index.capacity() * 5
            + self.order.heap_size()
    }

    /// Bytes held in allocations (MEMORY USAGE; see `shard::usage`): the slab, the free
    /// list, the index and the order exactly, the members' own allocations and the order's
    /// chunks sampled.
    pub fn mem_usage(&self, samples: usize) -> usize {
        use crate::shard::usage::{alloc_size, sampled, table_bytes, vec_bytes};
        let members = self
            .nodes
            .iter()
            .filter(|n| !n.is_free())
            .map(|n| alloc_size(n.member.len()));
        vec_bytes(self.nodes.capacity(), std::mem::size_of::<Node>())
            + vec_bytes(self.free.capacity(), 4)
            + table_bytes(self.index.num_buckets(), 4)
            + sampled(members, self.len(), samples)
            + self.order.mem_usage(samples)
    }

    #[cfg(test)]
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Checks every invariant (tests).
    #[cfg(test)]
    pub fn check(&self) {
        assert_eq!(self.order.len, self.index.len());
        assert_eq!(self.nodes.len(), self.index.len() + self.free.len());
        self.order.check();
        let ids: Vec<u32> = self.order.ids(0, self.order.len).copied().collect();
        for w in ids.windows(2) {
            let (a, b) = (self.node(w[0]), self.node(w[1]));
            assert_eq!(
                cmp_entry(a.score, &a.member, b.score, &b.member),
                std::cmp::Ordering::Less
            );
        }
        for &id in &ids {
            assert_eq!(self.find(&self.node(id).member), Some(id));
        }
        let bytes: usize = ids.iter().map(|&id| self.node(id).member.len()).sum();
        assert_eq!(bytes, self.member_bytes);
    }
}

/// Whether `n` sorts before (score, member).
fn less(n: &Node, score: f64, member: &[u8]) -> bool {
    cmp_entry(n.score, &n.member, score, member).is_lt()
}

/// Ids in order, in chunks, with a Fenwick tree over the chunk lengths.
#[derive(Debug, Clone, Default)]
struct Order {
    /// Never holds an empty chunk.
    chunks: Vec<Vec<u32>>,
    /// Fenwick tree (1-based in the usual way: `sums[i - 1]` covers chunks `(i - lowbit(i),
    /// i]`).
    sums: Vec<usize>,
    len: usize,
}

impl Order {
    fn rebuild(&mut self) {
        let k = self.chunks.len();
        self.sums.clear();
        self.sums.extend(self.chunks.iter().map(Vec::len));
        for i in 1..=k {
            let parent = i + (i & i.wrapping_neg());
            if parent <= k {
                self.sums[parent - 1] += self.sums[i - 1];
            }
        }
    }

    fn add(&mut self, chunk: usize, delta: isize) {
        let mut i = chunk + 1;
        while i <= self.sums.len() {
            self.sums[i - 1] = self.sums[i - 1].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// The number of ids in chunks `0..chunk`.
    fn prefix(&self, chunk: usize) -> usize {
        let mut i = chunk;
        let mut sum = 0;
        while i > 0 {
            sum += self.sums[i - 1];
            i &= i - 1;
        }
        sum
    }

    /// The chunk holding rank `rank` (< len) and the offset in it.
    fn find(&self, mut rank: usize) -> (usize, usize) {
        let k = self.sums.len();
        let mut pos = 0;
        let mut step = if k == 0 { 0 } else { 1 << k.ilog2() };
        while step > 0 {
            if pos + step <= k && self.sums[pos + step - 1] <= rank {
                pos += step;
                rank -= self.sums[pos - 1];
            }
            step >>= 1;
        }
        (pos, rank)
    }

    fn at(&self, rank: usize) -> u32 {
        let (c, off) = self.find(rank);
        self.chunks[c][off]
    }

    /// Appends a chunk at the end in O(log k): the last Fenwick entry covers the chunks after
    /// the previous power-of-two boundary.
    fn push_chunk(&mut self, chunk: Vec<u32>) {
        let i = self.chunks.len() + 1;
        let low = i - (i & i.wrapping_neg());
        let sum = chunk.len() + self.prefix(i - 1) - self.prefix(low);
        self.chunks.push(chunk);
        self.sums.push(sum);
    }

    /// The chunk and offset where the ids satisfying `pred` (a prefix) end.
    fn locate(&self, pred: impl Fn(u32) -> bool) -> (usize, usize) {
        let c = self
            .chunks
            .partition_point(|ch| pred(*ch.last().expect("chunks are never empty")));
        if c == self.chunks.len() {
            return match c {
                0 => (0, 0),
                _ => (c - 1, self.chunks[c - 1].len()),
            };
        }
        (c, self.chunks[c].partition_point(|&x| pred(x)))
    }

    fn partition_point(&self, pred: impl Fn(u32) -> bool) -> usize {
        let (c, off) = self.locate(pred);
        self.prefix(c) + off
    }

    /// Inserts `id` after the ids for which `less` holds.
    fn insert(&mut self, id: u32, less: impl Fn(u32) -> bool) {
        self.len += 1;
        if self.chunks.is_empty() {
            self.push_chunk(vec![id]);
            return;
        }
        let (c, off) = self.locate(less);
        let last = c + 1 == self.chunks.len();
        let chunk = &mut self.chunks[c];
        if chunk.len() < CHUNK {
            insert_capped(chunk, off, id);
            self.add(c, 1);
        } else if last && off == CHUNK {
            // Appending past a full last chunk starts a new one: members added in order (a
            // growing timestamp, a restore) leave full chunks behind, not half-full ones.
            self.push_chunk(vec![id]);
        } else {
            let mut tail = chunk.split_off(CHUNK / 2);
            if off <= CHUNK / 2 {
                insert_capped(chunk, off, id);
            } else {
                insert_capped(&mut tail, off - CHUNK / 2, id);
            }
            self.chunks.insert(c + 1, tail);
            self.rebuild();
        }
    }

    /// Removes `id`, found where the ids for which `less` holds end.
    fn remove(&mut self, id: u32, less: impl Fn(u32) -> bool) {
        let (c, off) = self.locate(less);
        assert_eq!(
            self.chunks[c].get(off),
            Some(&id),
            "a member's order entry sits where its score and name sort"
        );
        self.chunks[c].remove(off);
        self.len -= 1;
        if !self.chunks[c].is_empty() {
            self.add(c, -1);
        } else if c + 1 == self.chunks.len() {
            self.chunks.pop();
            self.sums.pop();
        } else {
            self.chunks.remove(c);
            self.rebuild();
        }
        self.maybe_repack();
    }

    /// Removes ranks `start..end` (start < end ≤ len), returning their ids.
    fn drain(&mut self, start: usize, end: usize) -> Vec<u32> {
        let (cs, os) = self.find(start);
        let (ce, oe) = self.find(end - 1);
        let mut out = Vec::with_capacity(end - start);
        self.len -= end - start;
        if cs == ce {
            out.extend(self.chunks[cs].drain(os..=oe));
            if !self.chunks[cs].is_empty() {
                self.add(cs, -((end - start) as isize));
                return out;
            }
        } else {
            out.extend(self.chunks[cs].drain(os..));
            for ch in &mut self.chunks[cs + 1..ce] {
                out.append(ch);
            }
            out.extend(self.chunks[ce].drain(..=oe));
        }
        self.chunks.retain(|ch| !ch.is_empty());
        self.rebuild();
        self.maybe_repack();
        out
    }

    /// Repacks when chunks average under an eighth full (after many removals), so a
    /// shrunken set does not keep thousands of near-empty chunks.
    fn maybe_repack(&mut self) {
        if self.chunks.len() <= 4 || self.len >= self.chunks.len() * CHUNK / 8 {
            return;
        }
        let ids: Vec<u32> = self.chunks.drain(..).flatten().collect();
        self.chunks = ids.chunks(CHUNK * 3 / 4).map(<[u32]>::to_vec).collect();
        self.rebuild();
    }

    fn renumber(&mut self, remap: &[u32]) {
        for ch in &mut self.chunks {
            for id in ch.iter_mut() {
                *id = remap[*id as usize];
            }
        }
        self.maybe_repack();
    }

    /// The ids of ranks `start..end` (end ≤ len), double-ended.
    fn ids(&self, start: usize, end: usize) -> impl DoubleEndedIterator<Item = &u32> + '_ {
        let none: (&[u32], &[Vec<u32>], &[u32]) = (&[], &[], &[]);
        let (first, middle, last) = if start >= end {
            none
        } else {
            let (cs, os) = self.find(start);
            let (ce, oe) = self.find(end - 1);
            if cs == ce {
                (&self.chunks[cs][os..=oe], &[][..], &[][..])
            } else {
                (
                    &self.chunks[cs][os..],
                    &self.chunks[cs + 1..ce],
                    &self.chunks[ce][..=oe],
                )
            }
        };
        first
            .iter()
            .chain(middle.iter().flatten())
            .chain(last.iter())
    }

    fn heap_size(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.capacity() * 4 + 24)
            .sum::<usize>()
            + self.sums.capacity() * 8
    }

    fn mem_usage(&self, samples: usize) -> usize {
        use crate::shard::usage::{sampled, vec_bytes};
        vec_bytes(self.chunks.capacity(), std::mem::size_of::<Vec<u32>>())
            + vec_bytes(self.sums.capacity(), 8)
            + sampled(
                self.chunks.iter().map(|c| vec_bytes(c.capacity(), 4)),
                self.chunks.len(),
                samples,
            )
    }

    #[cfg(test)]
    fn check(&self) {
        assert!(
            self.chunks
                .iter()
                .all(|c| !c.is_empty() && c.len() <= CHUNK)
        );
        assert_eq!(self.chunks.iter().map(Vec::len).sum::<usize>(), self.len);
        for c in 0..=self.chunks.len() {
            assert_eq!(
                self.prefix(c),
                self.chunks[..c].iter().map(Vec::len).sum::<usize>()
            );
        }
        for r in 0..self.len {
            let (c, off) = self.find(r);
            assert_eq!(self.prefix(c) + off, r);
        }
    }
}

/// `Vec::insert` that grows the chunk by doubling but never past [`CHUNK`] ids (the default
/// growth would round a chunk of 192 up to 384).
fn insert_capped(chunk: &mut Vec<u32>, at: usize, id: u32) {
    if chunk.len() == chunk.capacity() {
        let grow = chunk.capacity().max(4).min(CHUNK - chunk.len()).max(1);
        chunk.reserve_exact(grow);
    }
    chunk.insert(at, id);
}
