use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;

fn limits() -> SetLimits {
    SetLimits::default()
}

fn members(x: &SetObj) -> BTreeSet<Vec<u8>> {
    x.iter().map(|m| m.to_vec()).collect()
}

fn filled(items: impl IntoIterator<Item = String>) -> SetObj {
    let items: Vec<String> = items.into_iter().collect();
    let mut x = SetObj::create(items[0].as_bytes(), 1, limits());
    for m in &items {
        x.insert(m.as_bytes(), limits());
    }
    x
}

#[test]
fn integers_stay_an_intset_up_to_the_limit() {
    let mut x = filled((0..512).map(|i| (i * 3).to_string()));
    assert_eq!(x.encoding(), "intset");
    assert!(!x.insert(b"0", limits()), "a repeat is not new");
    assert!(x.contains(b"3") && !x.contains(b"4") && !x.contains(b"03"));
    assert!(x.insert(b"1", limits()));
    assert_eq!(x.encoding(), "hashtable", "the 513th integer");
    assert_eq!(x.len(), 513);
    assert!(x.contains(b"1") && x.contains(b"1533"));
}

#[test]
fn an_intset_iterates_in_ascending_order() {
    let x = filled(["5", "-3", "100", "0"].map(String::from));
    let order: Vec<Vec<u8>> = x.iter().map(|m| m.to_vec()).collect();
    assert_eq!(order, [&b"-3"[..], b"0", b"5", b"100"]);
}

#[test]
fn a_string_turns_an_intset_into_a_listpack_or_a_table() {
    let mut x = filled((0..127).map(|i| i.to_string()));
    assert!(x.insert(b"a", limits()));
    assert_eq!(x.encoding(), "listpack");
    assert_eq!(x.len(), 128);
    assert!(x.contains(b"126") && x.contains(b"a"));

    // 128 integers: the listpack would hold 129.
    let mut x = filled((0..128).map(|i| i.to_string()));
    x.insert(b"a", limits());
    assert_eq!(x.encoding(), "hashtable");

    // A long string goes straight to a table.
    let mut x = filled(["1".to_string()]);
    x.insert(&[b'x'; 65], limits());
    assert_eq!(x.encoding(), "hashtable");

    // Integers wider than set-max-listpack-value also force a table (Valkey's maxelelen).
    let small = SetLimits {
        max_listpack_value: 3,
        ..limits()
    };
    let mut x = SetObj::create(b"1000", 1, small);
    x.insert(b"1000", small);
    x.insert(b"ab", small);
    assert_eq!(x.encoding(), "hashtable");
}

#[test]
fn a_listpack_converts_on_the_129th_member_or_a_long_one() {
    let mut x = filled((0..128).map(|i| format!("m{i}")));
    assert_eq!(x.encoding(), "listpack");
    assert!(!x.insert(b"m5", limits()));
    assert_eq!(x.encoding(), "listpack", "a repeat converts nothing");
    x.insert(b"m128", limits());
    assert_eq!(x.encoding(), "hashtable");
    assert_eq!(x.len(), 129);

    let mut x = filled(["a".to_string()]);
    x.insert(&[b'y'; 64], limits());
    assert_eq!(x.encoding(), "listpack", "64 bytes still fit");
    x.insert(&[b'y'; 65], limits());
    assert_eq!(x.encoding(), "hashtable");
}

#[test]
fn sadd_size_hints_pick_the_encoding_up_front() {
    // setTypeCreate: a first integer with at most 512 arguments is an intset...
    let x = SetObj::create(b"1", 512, limits());
    assert_eq!(x.encoding(), "intset");
    // ...more arguments than an intset holds start a table, even if they repeat.
    let mut x = SetObj::create(b"1", 513, limits());
    let args: Vec<&[u8]> = vec![b"1"; 513];
    assert_eq!(x.add_all(&args, limits()), 1);
    assert_eq!(x.encoding(), "hashtable");
    // setTypeMaybeConvert on an existing listpack.
    let mut x = filled(["a".to_string()]);
    let args: Vec<&[u8]> = vec![b"a"; 129];
    assert_eq!(x.add_all(&args, limits()), 0);
    assert_eq!(x.encoding(), "hashtable");
    // A first string with few arguments: a listpack (a long one converts as it is added).
    assert_eq!(SetObj::create(b"abc", 128, limits()).encoding(), "listpack");
    assert_eq!(
        SetObj::create(b"abc", 129, limits()).encoding(),
        "hashtable"
    );
}

#[test]
fn a_listpack_keeps_insertion_order_through_removals() {
    let mut x = filled(["c", "a", "b", "d"].map(String::from));
    x.insert(b"x", limits());
    assert!(x.remove(b"a"));
    assert!(!x.remove(b"a"));
    let order: Vec<Vec<u8>> = x.iter().map(|m| m.to_vec()).collect();
    assert_eq!(order, [&b"c"[..], b"b", b"d", b"x"]);
}

#[test]
fn store_results_become_intsets_when_they_can() {
    let mut x = filled((0..200).map(|i| i.to_string()).chain(["z".to_string()]));
    assert_eq!(x.encoding(), "hashtable");
    x.remove(b"z");
    x.maybe_to_intset(limits());
    assert_eq!(x.encoding(), "intset");
    assert_eq!(x.len(), 200);
    let order: Vec<i64> = x.iter().map(|m| m.as_int().unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn a_table_shrinks_as_it_empties_and_random_picks_stay_uniform() {
    let mut x = filled((0..10_000).map(|i| format!("member:{i}")));
    let SetObj::Table(t) = &x else { panic!() };
    let big = t.members.num_buckets();
    for i in 10..10_000 {
        assert!(x.remove(format!("member:{i}").as_bytes()));
    }
    let SetObj::Table(t) = &x else { panic!() };
    assert!(t.members.num_buckets() * 16 < big, "shrunk");
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for _ in 0..10_000 {
        *seen.entry(x.random().unwrap().to_vec()).or_default() += 1;
    }
    assert_eq!(seen.len(), 10);
    // Each of 10 members ~1000 times; a fair pick is far inside these bounds.
    assert!(seen.values().all(|&n| (700..1300).contains(&n)), "{seen:?}");
}

#[test]
fn distinct_samples_are_distinct_and_fair() {
    for x in [
        filled((0..100).map(|i| i.to_string())),
        filled((0..100).map(|i| format!("m{i}"))),
        filled((0..100).map(|i| format!("a-member-longer-than-fifteen-{i}"))),
        filled((0..3000).map(|i| format!("m{i}"))),
    ] {
        let n = x.len();
        for count in [0, 1, 10, n / 3 + 1, n - 1, n, n + 5] {
            let s = x.sample_distinct(count);
            assert_eq!(s.len(), count.min(n));
            let set: BTreeSet<Vec<u8>> = s.iter().map(|m| m.to_vec()).collect();
            assert_eq!(set.len(), s.len(), "distinct");
            assert!(set.iter().all(|m| x.contains(m)));
        }
        // Fairness: over many samples of 10, every member turns up about as often.
        let mut hits: HashMap<Vec<u8>, usize> = HashMap::new();
        let rounds = 2000 * n / 100;
        for _ in 0..rounds {
            for m in x.sample_distinct(10) {
                *hits.entry(m.to_vec()).or_default() += 1;
            }
        }
        let expected = rounds * 10 / n;
        assert_eq!(hits.len(), n);
        assert!(
            hits.values().all(|&h| h * 2 > expected && h < expected * 2),
            "expected ~{expected} each, got {:?}",
            hits.values().min()
        );
    }
}

#[test]
fn scan_of_a_growing_table_misses_nothing() {
    let mut x = filled((0..1000).map(|i| format!("k{i}")));
    let mut seen = BTreeSet::new();
    let mut cursor = 0;
    let mut grown = 0;
    loop {
        cursor = x.scan(cursor, 10, |m| {
            seen.insert(m.to_vec());
        });
        if grown < 3000 {
            for _ in 0..300 {
                x.insert(format!("new{grown}").as_bytes(), limits());
                grown += 1;
            }
        }
        if cursor == 0 {
            break;
        }
    }
    for i in 0..1000 {
        assert!(seen.contains(format!("k{i}").as_bytes()), "k{i} missed");
    }
}

#[test]
fn heap_size_tracks_long_members() {
    let mut x = filled((0..200).map(|i| format!("m{i}")));
    let before = x.heap_size();
    x.insert(&[b'q'; 100], limits());
    assert!(x.heap_size() >= before + 100);
    x.remove(&[b'q'; 100]);
    assert_eq!(x.heap_size(), before);
}

#[derive(Debug, Clone)]
enum Op {
    Add(Vec<Vec<u8>>),
    Rem(Vec<u8>),
    ToIntset,
}

fn member() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (-20i64..20).prop_map(|i| i.to_string().into_bytes()),
        Just(b"007".to_vec()),
        Just(b"-0".to_vec()),
        "[a-e]{1,2}".prop_map(String::into_bytes),
        (0u8..4).prop_map(|c| vec![b'L' + c; 20]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(member(), 1..6).prop_map(Op::Add),
        3 => member().prop_map(Op::Rem),
        1 => Just(Op::ToIntset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any stream of adds and removes keeps the set equal to a BTreeSet, in an encoding that
    /// can hold what it holds (small limits so every conversion happens).
    #[test]
    fn behaves_like_a_btreeset(ops in proptest::collection::vec(op(), 1..60)) {
        let limits = SetLimits { max_intset_entries: 8, max_listpack_entries: 6, max_listpack_value: 10 };
        let mut x: Option<SetObj> = None;
        let mut model: BTreeSet<Vec<u8>> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Add(ms) => {
                    let refs: Vec<&[u8]> = ms.iter().map(|m| &m[..]).collect();
                    let set = x.get_or_insert_with(|| SetObj::create(refs[0], refs.len(), limits));
                    let added = set.add_all(&refs, limits);
                    let before = model.len();
                    model.extend(ms.iter().cloned());
                    prop_assert_eq!(added, model.len() - before);
                }
                Op::Rem(m) => {
                    let removed = x.as_mut().is_some_and(|s| s.remove(&m));
                    prop_assert_eq!(removed, model.remove(&m));
                }
                Op::ToIntset => {
                    if let Some(s) = x.as_mut()
                        && model.iter().all(|m| as_int(m).is_some())
                    {
                        s.maybe_to_intset(limits);
                    }
                }
            }
            let Some(s) = &x else { continue };
            prop_assert_eq!(members(s), model.clone());
            prop_assert_eq!(s.len(), model.len());
            for m in &model {
                prop_assert!(s.contains(m));
            }
            match s {
                SetObj::IntSet(v) => {
                    prop_assert!(v.len() <= limits.max_intset_entries);
                    prop_assert!(v.windows(2).all(|w| w[0] < w[1]));
                }
                SetObj::Listpack(v) => {
                    prop_assert!(v.len() <= limits.max_listpack_entries);
                    prop_assert!(v.iter().all(|m| m.len() <= limits.max_listpack_value));
                }
                SetObj::Table(_) => {}
            }
            if !model.is_empty() {
                let r = s.random().unwrap();
                prop_assert!(model.contains(&r[..]));
            }
        }
    }
}
