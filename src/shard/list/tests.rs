//! The packed list against a plain `Vec` model, and Valkey's encoding conversion points.

use proptest::prelude::*;

use super::*;

const DEFAULT: ListLimits = ListLimits {
    max_listpack_size: -2,
};

fn fill(n: i64) -> ListLimits {
    ListLimits {
        max_listpack_size: n,
    }
}

fn contents(l: &ListObj) -> Vec<Vec<u8>> {
    l.iter().map(|e| e.to_vec()).collect()
}

/// The structure's own rules: lengths add up, no empty node, a listpack is one packed node,
/// a plain node holds one large element.
fn check_invariants(l: &ListObj, limits: ListLimits) {
    let counted: usize = l.nodes.iter().map(|n| n.count as usize).sum();
    assert_eq!(counted, l.len);
    assert!(l.nodes.iter().all(|n| n.count > 0), "an empty node");
    if !l.quicklist {
        assert!(l.nodes.len() <= 1, "a listpack of {} nodes", l.nodes.len());
        assert!(l.nodes.iter().all(|n| !n.plain));
    }
    for n in &l.nodes {
        if n.plain {
            assert_eq!(n.count, 1);
            assert!(limits.is_large(n.data.len()));
        } else {
            // Walking the node's entries lands exactly on its end.
            let mut pos = 0;
            for _ in 0..n.count {
                pos += pack::len_at(&n.data, pos);
            }
            assert_eq!(pos, n.data.len());
        }
    }
}

fn push_n(l: &mut ListObj, n: usize, v: &[u8], limits: ListLimits) {
    for _ in 0..n {
        l.push_back(v, limits);
    }
}

#[test]
fn default_limit_converts_where_valkey_does() {
    // "xxx" takes 5 bytes as an entry: 1637 of them make a listpack of 7 + 8185 = 8192
    // bytes; one more (8192 + 3 > 8192) makes it a quicklist.
    let mut l = ListObj::new();
    push_n(&mut l, 1637, b"xxx", DEFAULT);
    assert_eq!(l.lp_bytes(), 8192);
    assert_eq!(l.encoding(), "listpack");
    l.push_back(b"xxx", DEFAULT);
    assert_eq!(l.encoding(), "quicklist");
    // The old listpack is the first node; the new element did not fit it.
    assert_eq!(l.nodes.len(), 2);
    check_invariants(&l, DEFAULT);
    // Back to a listpack only at half the budget: 7 + 5 × 817 = 4092 ≤ 4096.
    l.pop_many(false, 1637 + 1 - 818, DEFAULT);
    assert_eq!((l.len(), l.encoding()), (818, "quicklist"));
    l.pop_many(true, 1, DEFAULT);
    assert_eq!((l.len(), l.encoding()), (817, "listpack"));
    check_invariants(&l, DEFAULT);
}

#[test]
fn one_push_command_is_checked_as_a_whole() {
    // Valkey adds the raw lengths of all the command's elements before pushing any: 3000
    // one-byte elements (3007 ≤ 8192) stay a listpack although they take 9007 bytes.
    let elems: Vec<&[u8]> = vec![b"a"; 3000];
    let mut l = ListObj::new();
    l.push(&elems, false, DEFAULT);
    assert_eq!(l.encoding(), "listpack");
    assert_eq!(l.lp_bytes(), 7 + 3 * 3000);
    let mut one_by_one = ListObj::new();
    push_n(&mut one_by_one, 3000, b"a", DEFAULT);
    assert_eq!(one_by_one.encoding(), "quicklist");
    assert_eq!(l, one_by_one);
}

#[test]
fn integers_are_packed_as_integers() {
    let mut l = ListObj::new();
    for i in 0..100 {
        l.push_back(i.to_string().as_bytes(), DEFAULT);
    }
    // 0..=99 all fit the 7-bit form: one byte plus the back-length.
    assert_eq!(l.lp_bytes(), 7 + 2 * 100);
    assert_eq!(&*l.get(42).unwrap(), b"42");
    l.push_back(b"-9223372036854775808", DEFAULT);
    assert_eq!(&*l.get(100).unwrap(), b"-9223372036854775808");
    assert_eq!(l.matches(b"42").position(|m| m), Some(42));
    assert_eq!(l.matches(b"042").position(|m| m), None);
}

#[test]
fn count_limit_and_its_safety_cap() {
    let f5 = fill(5);
    let mut l = ListObj::new();
    push_n(&mut l, 5, b"e", f5);
    assert_eq!(l.encoding(), "listpack");
    l.push_back(b"e", f5);
    assert_eq!(l.encoding(), "quicklist");
    push_n(&mut l, 9, b"e", f5);
    // Nodes of at most 5 elements.
    assert_eq!(
        l.nodes.iter().map(|n| n.count).collect::<Vec<_>>(),
        [5, 5, 5]
    );
    l.retain_range(0, 3, f5);
    assert_eq!(l.encoding(), "quicklist", "3 > 5 / 2");
    l.pop_many(true, 1, f5);
    assert_eq!(l.encoding(), "listpack");
    // Whatever the count, a listpack past 8 KiB converts.
    let mut big = ListObj::new();
    big.push_back(&[b'x'; 8000], f5);
    assert_eq!(big.encoding(), "listpack");
    big.push_back(&[b'y'; 200], f5);
    assert_eq!(big.encoding(), "quicklist");
    // LSET counts its value as an added element, as Valkey's check does.
    let mut s = ListObj::new();
    push_n(&mut s, 5, b"e", f5);
    s.set(0, b"f", f5);
    assert_eq!(s.encoding(), "quicklist");
    assert_eq!(contents(&s), [b"f", b"e", b"e", b"e", b"e"]);
}

#[test]
fn large_elements_live_in_plain_nodes() {
    let mut l = ListObj::new();
    let big = vec![b'z'; 9000];
    l.push_back(b"a", DEFAULT);
    l.push_back(&big, DEFAULT);
    assert_eq!(l.encoding(), "quicklist");
    l.push_back(b"b", DEFAULT);
    l.push_front(&big, DEFAULT);
    assert_eq!(
        l.nodes
            .iter()
            .map(|n| (n.plain, n.count))
            .collect::<Vec<_>>(),
        [(true, 1), (false, 1), (true, 1), (false, 1)]
    );
    check_invariants(&l, DEFAULT);
    assert_eq!(&*l.get(2).unwrap(), &big[..]);
    // Replacing a large element by a small one, and inserting a large one mid-node.
    l.set(2, b"small", DEFAULT);
    l.insert(1, &big, DEFAULT);
    assert_eq!(
        contents(&l),
        [
            big.clone(),
            big.clone(),
            b"a".to_vec(),
            b"small".to_vec(),
            b"b".to_vec()
        ]
    );
    check_invariants(&l, DEFAULT);
    // Down to one small packed node: a listpack again.
    l.remove_matching(0, &big, DEFAULT);
    assert_eq!(
        contents(&l),
        [b"a".to_vec(), b"small".to_vec(), b"b".to_vec()]
    );
    assert_eq!(l.encoding(), "listpack");
    check_invariants(&l, DEFAULT);
}

#[test]
fn node_splits_keep_order_and_merge_back() {
    let f4 = fill(4);
    let mut l = ListObj::new();
    push_n(&mut l, 12, b"x", f4);
    // Full nodes: inserting mid-node splits it.
    l.insert(6, b"new", f4);
    assert_eq!(&*l.get(6).unwrap(), b"new");
    assert_eq!(l.len(), 13);
    check_invariants(&l, f4);
    let big = vec![b'q'; 9000];
    l.set(3, &big, f4);
    assert_eq!(&*l.get(3).unwrap(), &big[..]);
    check_invariants(&l, f4);
    l.set(3, b"back", f4);
    check_invariants(&l, f4);
    let mut model = vec![b"x".to_vec(); 12];
    model.insert(6, b"new".to_vec());
    model[3] = b"back".to_vec();
    assert_eq!(contents(&l), model);
}

#[test]
fn ranges_and_reverse_walks() {
    let f3 = fill(3);
    let mut l = ListObj::new();
    for i in 0..20 {
        l.push_back(format!("e{i}").as_bytes(), f3);
    }
    let got: Vec<Vec<u8>> = l.range(4, 11).map(|e| e.to_vec()).collect();
    let want: Vec<Vec<u8>> = (4..11).map(|i| format!("e{i}").into_bytes()).collect();
    assert_eq!(got, want);
    let rev: Vec<Vec<u8>> = l.range(4, 11).rev().map(|e| e.to_vec()).collect();
    assert_eq!(rev, want.iter().rev().cloned().collect::<Vec<_>>());
    assert_eq!(l.range(5, 5).count(), 0);
    assert_eq!(l.range(18, 99).len(), 2);
    // Meeting in the middle yields every element once.
    let mut it = l.iter();
    let mut seen = 0;
    while let (Some(_), back) = (it.next(), it.next_back()) {
        seen += 1 + back.is_some() as usize;
    }
    assert_eq!(seen, 20);
}

#[test]
fn pops_return_what_they_take() {
    let mut l = ListObj::new();
    for v in [b"1".as_slice(), b"two", b"3"] {
        l.push_back(v, DEFAULT);
    }
    assert_eq!(l.pop_front(DEFAULT).unwrap(), b"1");
    assert_eq!(l.pop_back(DEFAULT).unwrap(), b"3");
    assert_eq!(l.pop_back(DEFAULT).unwrap(), b"two");
    assert_eq!(l.pop_back(DEFAULT), None);
    assert!(l.is_empty());
    assert_eq!(l.pop_many(true, 5, DEFAULT), 0);
}

#[test]
fn a_million_small_elements_stay_compact() {
    let mut l = ListObj::new();
    for _ in 0..1_000_000 {
        l.push_back(b"xxx", DEFAULT);
    }
    // 5 bytes an element in nodes of up to 8 KiB: well under 6 bytes an element in all.
    assert!(l.heap_size() < 6_000_000, "{}", l.heap_size());
    assert_eq!(&*l.get(999_999).unwrap(), b"xxx");
    assert_eq!(l.pop_many(true, 999_990, DEFAULT), 999_990);
    assert_eq!(l.encoding(), "listpack");
}

// ---- against a model ----

#[derive(Debug, Clone)]
enum Op {
    Push(bool, Vec<Vec<u8>>),
    Pop(bool, usize),
    Set(usize, Vec<u8>),
    Insert(usize, Vec<u8>),
    Rem(i64, Vec<u8>),
    Trim(usize, usize),
}

fn elem() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b')], 0..4),
        3 => (-70_000i64..70_000).prop_map(|i| i.to_string().into_bytes()),
        1 => any::<i64>().prop_map(|i| i.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..80),
        1 => (4090usize..4110).prop_map(|n| vec![b'L'; n]),
        1 => (8190usize..8200).prop_map(|n| vec![b'H'; n]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), proptest::collection::vec(elem(), 1..40))
            .prop_map(|(l, v)| Op::Push(l, v)),
        2 => (any::<bool>(), 0usize..30).prop_map(|(l, n)| Op::Pop(l, n)),
        2 => (0usize..200, elem()).prop_map(|(i, v)| Op::Set(i, v)),
        2 => (0usize..200, elem()).prop_map(|(i, v)| Op::Insert(i, v)),
        1 => (-3i64..4, elem()).prop_map(|(c, v)| Op::Rem(c, v)),
        1 => (0usize..100, 0usize..200).prop_map(|(s, e)| Op::Trim(s, e)),
    ]
}

fn limits() -> impl Strategy<Value = ListLimits> {
    prop_oneof![
        Just(-2i64),
        Just(-1),
        Just(-5),
        Just(1),
        Just(3),
        Just(16),
        Just(128)
    ]
    .prop_map(fill)
}

fn apply(l: &mut ListObj, m: &mut Vec<Vec<u8>>, op: &Op, limits: ListLimits) {
    match op {
        Op::Push(left, vs) => {
            let slices: Vec<&[u8]> = vs.iter().map(|v| &v[..]).collect();
            l.push(&slices, *left, limits);
            for v in vs {
                if *left {
                    m.insert(0, v.clone());
                } else {
                    m.push(v.clone());
                }
            }
        }
        Op::Pop(left, n) => {
            let k = (*n).min(m.len());
            assert_eq!(l.pop_many(*left, *n, limits), k);
            if *left {
                m.drain(..k);
            } else {
                m.truncate(m.len() - k);
            }
        }
        Op::Set(i, v) => {
            if *i < m.len() {
                l.set(*i, v, limits);
                m[*i] = v.clone();
            }
        }
        Op::Insert(i, v) => {
            let i = (*i).min(m.len());
            l.insert(i, v, limits);
            m.insert(i, v.clone());
        }
        Op::Rem(count, v) => {
            let limit = if *count == 0 {
                usize::MAX
            } else {
                count.unsigned_abs() as usize
            };
            let mut hits: Vec<usize> = (0..m.len()).filter(|&i| m[i] == *v).collect();
            if *count < 0 {
                hits.reverse();
            }
            hits.truncate(limit);
            hits.sort_unstable();
            for &i in hits.iter().rev() {
                m.remove(i);
            }
            assert_eq!(l.remove_matching(*count, v, limits), hits.len());
        }
        Op::Trim(s, e) => {
            l.retain_range(*s, *e, limits);
            let e = (*e).min(m.len());
            let s = (*s).min(e);
            m.truncate(e);
            m.drain(..s);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn behaves_like_a_vec(limits in limits(), ops in proptest::collection::vec(op(), 1..40)) {
        let mut l = ListObj::new();
        let mut m: Vec<Vec<u8>> = Vec::new();
        for op in &ops {
            apply(&mut l, &mut m, op, limits);
            check_invariants(&l, limits);
            prop_assert_eq!(l.len(), m.len());
            prop_assert_eq!(&contents(&l), &m);
            let rev: Vec<Vec<u8>> = l.iter().rev().map(|e| e.to_vec()).collect();
            let mrev: Vec<Vec<u8>> = m.iter().rev().cloned().collect();
            prop_assert_eq!(rev, mrev);
            if !m.is_empty() {
                let i = m.len() / 3;
                prop_assert_eq!(&l.get(i).unwrap()[..], &m[i][..]);
                let j = m.len() - 1 - i;
                let got: Vec<Vec<u8>> = l.range(i, j + 1).map(|e| e.to_vec()).collect();
                prop_assert_eq!(&got[..], &m[i.min(j + 1)..j + 1]);
                let probe = &m[i];
                let hits: Vec<bool> = l.matches(probe).collect();
                let want: Vec<bool> = m.iter().map(|x| x == probe).collect();
                prop_assert_eq!(hits, want);
            }
            prop_assert_eq!(l.clone(), l.clone());
        }
    }
}

#[test]
fn size_classes_are_the_allocators() {
    let classes: Vec<usize> = [
        1, 8, 9, 16, 17, 20, 33, 100, 1000, 4096, 4097, 8172, 8192, 9007,
    ]
    .iter()
    .map(|&n| size_class(n))
    .collect();
    assert_eq!(
        classes,
        [
            8, 8, 16, 16, 20, 20, 40, 112, 1024, 4096, 5120, 8192, 8192, 10240
        ]
    );
    // Full 8 KiB nodes of 18-byte entries sit in 8 KiB blocks.
    let mut l = ListObj::new();
    for i in 0..10_000 {
        l.push_back(format!("{i:016}").as_bytes(), DEFAULT);
    }
    assert!(
        l.nodes
            .iter()
            .rev()
            .skip(1)
            .all(|n| n.data.capacity() == 8192)
    );
}
