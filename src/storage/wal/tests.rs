use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use proptest::prelude::*;

use super::*;
use crate::storage::at_rest::OpenError;

/// A directory on tmpfs when there is one: these tests reopen logs often, and an fsync there
/// costs nothing. The sync tests use a real disk.
fn scratch() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn opts(segment_bytes: u64, cache_bytes: usize) -> WalOptions {
    WalOptions {
        segment_bytes,
        cache_bytes,
        at_rest: None,
    }
}

fn entry(group: GroupId, index: u64, len: usize) -> Bytes {
    let seed = format!("g{group}i{index}.");
    seed.bytes()
        .cycle()
        .take(len.max(1))
        .collect::<Vec<u8>>()
        .into()
}

fn append_run(wal: &mut Wal, group: GroupId, indexes: Range<u64>, len: usize) {
    for i in indexes {
        wal.append(group, i, entry(group, i, len)).unwrap();
    }
}

fn all(wal: &Wal, group: GroupId) -> Vec<Bytes> {
    wal.entries(group, 0..u64::MAX).unwrap()
}

fn expected(group: GroupId, indexes: Range<u64>, len: usize) -> Vec<Bytes> {
    indexes.map(|i| entry(group, i, len)).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    recover::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|s| segment_path(dir, s))
        .collect()
}

/// Waits for the syncer thread to unlink what it was handed.
fn wait_for_segments(dir: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while segment_files(dir).len() != n {
        assert!(Instant::now() < deadline, "{:?}", segment_files(dir));
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn append_and_read_across_groups() {
    let dir = scratch();
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(wal.groups().is_empty());
    for g in [3, 1, 2] {
        append_run(&mut wal, g, 1..11, 50);
    }
    // Readable before the write.
    assert_eq!(wal.entries(1, 3..6).unwrap(), expected(1, 3..6, 50));
    assert_eq!(wal.write().unwrap(), 1);
    assert_eq!(wal.groups(), vec![1, 2, 3]);
    for g in 1..=3 {
        assert_eq!(all(&wal, g), expected(g, 1..11, 50));
        assert_eq!((wal.first_index(g), wal.last_index(g)), (Some(1), Some(10)));
    }
    // Clipped to the log.
    assert_eq!(wal.entries(2, 8..100).unwrap(), expected(2, 8..11, 50));
    assert!(wal.entries(2, 20..30).unwrap().is_empty());
    assert!(wal.entries(9, 0..30).unwrap().is_empty());
    assert_eq!((wal.first_index(9), wal.last_index(9)), (None, None));

    let e = wal.append(1, 12, entry(1, 12, 5)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "group 1: entry 12 does not continue the log (expected 11)"
    );
    let e = wal.append(1, 10, entry(1, 10, 5)).unwrap_err();
    assert!(matches!(
        e,
        WalError::NotContiguous {
            group: 1,
            index: 10,
            expected: Some(11)
        }
    ));
    // A new group may start anywhere.
    wal.append(4, 100, entry(4, 100, 5)).unwrap();
    assert_eq!(wal.first_index(4), Some(100));
    // Nothing queued: the same sequence number, no syscall.
    assert_eq!(wal.write().unwrap(), 2);
    assert_eq!(wal.write().unwrap(), 2);
    assert_eq!(wal.stats().writes, 2);
}

#[test]
fn reopen_restores_everything() {
    let dir = scratch();
    {
        let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        append_run(&mut wal, 1, 1..21, 30);
        append_run(&mut wal, 2, 5..9, 30);
        wal.save_vote(1, b"vote-1");
        wal.save_vote(2, b"vote-2");
        wal.save_vote(2, b"vote-2b");
        wal.save_committed(1, b"c-15");
        wal.purge(1, 4, b"id-4");
        wal.save_vote(7, b"only a vote");
        wal.purge(8, 50, b"id-50");
        wal.write().unwrap();
        block_on(wal.sync()).unwrap();
    }
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(wal.groups(), vec![1, 2, 7, 8]);
    assert_eq!(all(&wal, 1), expected(1, 5..21, 30));
    assert_eq!(all(&wal, 2), expected(2, 5..9, 30));
    assert_eq!(wal.vote(1), Some(&b"vote-1"[..]));
    assert_eq!(wal.vote(2), Some(&b"vote-2b"[..]));
    assert_eq!(wal.committed(1), Some(&b"c-15"[..]));
    assert_eq!(wal.committed(2), None);
    assert_eq!(wal.purged(1), Some((4, &b"id-4"[..])));
    assert_eq!(wal.vote(7), Some(&b"only a vote"[..]));
    assert_eq!(wal.purged(8), Some((50, &b"id-50"[..])));
    assert_eq!(wal.last_index(8), None);
    // Appends go on where they left off; after a purge past the end, one past the purge point.
    wal.append(1, 21, entry(1, 21, 30)).unwrap();
    assert!(wal.append(8, 1, entry(8, 1, 3)).is_err());
    wal.append(8, 51, entry(8, 51, 3)).unwrap();
    wal.write().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(all(&wal, 1), expected(1, 5..22, 30));
    assert_eq!(all(&wal, 8), expected(8, 51..52, 3));
}

#[test]
fn truncate_then_reappend() {
    let dir = scratch();
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    append_run(&mut wal, 1, 1..11, 20);
    wal.write().unwrap();
    wal.truncate_after(1, Some(5));
    assert_eq!(wal.last_index(1), Some(5));
    // Without a truncation an index already in the log is refused.
    assert!(wal.append(1, 5, entry(1, 5, 20)).is_err());
    append_run(&mut wal, 1, 6..9, 77);
    // A truncation past the end changes nothing.
    wal.truncate_after(1, Some(100));
    wal.write().unwrap();
    let want: Vec<Bytes> = expected(1, 1..6, 20)
        .into_iter()
        .chain(expected(1, 6..9, 77))
        .collect();
    assert_eq!(all(&wal, 1), want);
    drop(wal);
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(all(&wal, 1), want);
    // Everything: the log starts over anywhere.
    wal.truncate_after(1, None);
    assert_eq!(wal.last_index(1), None);
    assert!(wal.groups().is_empty());
    wal.append(1, 3, entry(1, 3, 9)).unwrap();
    wal.write().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(all(&wal, 1), expected(1, 3..4, 9));
}

#[test]
fn purge_deletes_dead_segments() {
    let dir = scratch();
    let mut wal = Wal::open(dir.path(), opts(1024, 1 << 20)).unwrap();
    for i in 1..=60u64 {
        wal.append(1, i, entry(1, i, 100)).unwrap();
        wal.append(2, i, entry(2, i, 100)).unwrap();
        wal.write().unwrap();
    }
    let many = segment_files(dir.path()).len();
    assert!(many >= 10, "{many} segments");
    // Group 2 keeps its old entries alive: nothing can go yet.
    wal.purge(1, 55, b"p1");
    wal.write().unwrap();
    block_on(wal.sync()).unwrap();
    wal.write().unwrap();
    assert_eq!(wal.stats().segments, many);
    wal.purge(2, 50, b"p2");
    wal.write().unwrap();
    // Not before the purge is on disk.
    assert_eq!(wal.stats().segments, many);
    block_on(wal.sync()).unwrap();
    wal.write().unwrap();
    let left = wal.stats().segments;
    assert!(left <= 4, "{left} segments left of {many}");
    assert_eq!(wal.stats().segments_deleted as usize, many - left);
    wait_for_segments(dir.path(), left);
    assert_eq!(all(&wal, 1), expected(1, 56..61, 100));
    drop(wal);
    let wal = Wal::open(dir.path(), opts(1024, 1 << 20)).unwrap();
    assert_eq!(all(&wal, 1), expected(1, 56..61, 100));
    assert_eq!(all(&wal, 2), expected(2, 51..61, 100));
    assert_eq!(wal.purged(2), Some((50, &b"p2"[..])));
}

#[test]
fn checkpoint_keeps_state_when_old_segments_go() {
    let dir = scratch();
    let mut wal = Wal::open(dir.path(), opts(512, 1 << 20)).unwrap();
    // Written into the first segment only.
    wal.save_vote(9, b"term 3 for node 2");
    wal.save_committed(9, b"3-41");
    wal.purge(9, 41, b"3-41");
    wal.append(8, 1, entry(8, 1, 10)).unwrap();
    wal.remove_group(8);
    wal.write().unwrap();
    for i in 1..=40u64 {
        wal.append(1, i, entry(1, i, 100)).unwrap();
        wal.write().unwrap();
        wal.purge(1, i, b"x");
    }
    wal.write().unwrap();
    block_on(wal.sync()).unwrap();
    wal.write().unwrap();
    let first = segment_path(dir.path(), 1);
    assert!(wal.stats().segments <= 2, "{:?}", wal.stats());
    wait_for_segments(dir.path(), wal.stats().segments);
    assert!(!first.exists());
    drop(wal);
    let wal = Wal::open(dir.path(), opts(512, 1 << 20)).unwrap();
    assert_eq!(wal.groups(), vec![1, 9]);
    assert_eq!(wal.vote(9), Some(&b"term 3 for node 2"[..]));
    assert_eq!(wal.committed(9), Some(&b"3-41"[..]));
    assert_eq!(wal.purged(9), Some((41, &b"3-41"[..])));
    assert_eq!(wal.purged(1), Some((40, &b"x"[..])));
    assert_eq!(wal.last_index(8), None);
}

/// A copy of `from` (its segments only) in a fresh directory.
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = scratch();
    for f in segment_files(from) {
        fs::copy(&f, to.path().join(f.file_name().unwrap())).unwrap();
    }
    to
}

#[test]
fn torn_tail_is_cut_at_every_offset() {
    let dir = scratch();
    let before;
    {
        let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        append_run(&mut wal, 1, 1..4, 40);
        wal.save_vote(1, b"v");
        wal.write().unwrap();
        before = wal.stats().segment_bytes;
        wal.append(1, 4, entry(1, 4, 40)).unwrap();
        wal.write().unwrap();
    }
    let last = segment_path(dir.path(), 1);
    let after = fs::metadata(&last).unwrap().len();
    assert_eq!(after - before, 8 + 3 + 8 + 40);
    for cut in before..after {
        let copy = copy_dir(dir.path());
        let f = fs::OpenOptions::new()
            .write(true)
            .open(segment_path(copy.path(), 1))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let mut wal = Wal::open(copy.path(), WalOptions::default()).unwrap();
        assert_eq!(all(&wal, 1), expected(1, 1..4, 40), "cut at {cut}");
        assert_eq!(wal.vote(1), Some(&b"v"[..]));
        wal.append(1, 4, entry(1, 4, 7)).unwrap();
        wal.write().unwrap();
        drop(wal);
        let wal = Wal::open(copy.path(), WalOptions::default()).unwrap();
        let mut want = expected(1, 1..4, 40);
        want.push(entry(1, 4, 7));
        assert_eq!(all(&wal, 1), want, "cut at {cut}");
    }
    // Zeros in place of the last record (pages never written back): also a torn tail.
    let copy = copy_dir(dir.path());
    let path = segment_path(copy.path(), 1);
    let mut data = fs::read(&path).unwrap();
    data[before as usize..].fill(0);
    fs::write(&path, data).unwrap();
    let wal = Wal::open(copy.path(), WalOptions::default()).unwrap();
    assert_eq!(all(&wal, 1), expected(1, 1..4, 40));
    assert_eq!(fs::metadata(&path).unwrap().len(), before);
}

#[test]
fn torn_first_write_of_a_new_log() {
    let dir = scratch();
    drop(Wal::open(dir.path(), WalOptions::default()).unwrap());
    let path = segment_path(dir.path(), 1);
    let len = fs::metadata(&path).unwrap().len();
    for cut in 0..len {
        let copy = copy_dir(dir.path());
        let p = segment_path(copy.path(), 1);
        let data = fs::read(&p).unwrap();
        fs::write(&p, &data[..cut as usize]).unwrap();
        let mut wal = Wal::open(copy.path(), WalOptions::default()).unwrap();
        wal.append(5, 1, entry(5, 1, 3)).unwrap();
        wal.write().unwrap();
        drop(wal);
        let wal = Wal::open(copy.path(), WalOptions::default()).unwrap();
        assert_eq!(all(&wal, 5), expected(5, 1..2, 3), "cut at {cut}");
    }
}

#[test]
fn a_lost_checkpoint_after_a_deleted_segment_is_an_error() {
    let dir = scratch();
    {
        let mut wal = Wal::open(dir.path(), opts(300, 1 << 20)).unwrap();
        for i in 1..8 {
            append_run(&mut wal, 1, i..i + 1, 100);
            wal.write().unwrap();
        }
    }
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    // Only a crash right after a rotation leaves a segment without its checkpoint, and then
    // the segment before it is still there.
    fs::remove_file(&segs[segs.len() - 2]).unwrap();
    let last = &segs[segs.len() - 1];
    fs::write(last, record::header()).unwrap();
    let e = Wal::open(dir.path(), opts(300, 1 << 20)).err().unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: corrupt record at offset 16: the segment holds no checkpoint and the segment \
             before it is gone",
            last.display()
        )
    );
}

/// Offsets of the records of a segment.
fn record_offsets(data: &[u8]) -> Vec<usize> {
    let mut at = record::HEADER_LEN;
    let mut out = Vec::new();
    while let Ok(Some(f)) = record::read(data, at) {
        out.push(at);
        at += f.len;
    }
    out
}

#[test]
fn corrupt_record_is_an_error() {
    let dir = scratch();
    {
        let mut wal = Wal::open(dir.path(), opts(600, 1 << 20)).unwrap();
        for i in 1..=12u64 {
            wal.append(1, i, entry(1, i, 100)).unwrap();
            wal.write().unwrap();
        }
    }
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 3);
    // The middle of the last segment: good records follow the bad one.
    let copy = copy_dir(dir.path());
    let last = copy.path().join(segs[segs.len() - 1].file_name().unwrap());
    let mut data = fs::read(&last).unwrap();
    let offs = record_offsets(&data);
    assert!(offs.len() >= 3, "{offs:?}");
    data[offs[1] + 20] ^= 0x40;
    fs::write(&last, &data).unwrap();
    let e = Wal::open(copy.path(), WalOptions::default()).err().unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: corrupt record at offset {}: checksum mismatch, and a good record follows at \
             offset {}",
            last.display(),
            offs[1],
            offs[2]
        )
    );
    // The last record of an older segment: not a torn tail, since the log went on after it.
    let copy = copy_dir(dir.path());
    let first = copy.path().join(segs[0].file_name().unwrap());
    let mut data = fs::read(&first).unwrap();
    let offs = record_offsets(&data);
    let at = *offs.last().unwrap();
    data[at + 15] ^= 1;
    fs::write(&first, &data).unwrap();
    let e = Wal::open(copy.path(), WalOptions::default()).err().unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: corrupt record at offset {at}: checksum mismatch, in a segment that is not \
             the last",
            first.display()
        )
    );
}

#[test]
fn unknown_version_and_magic_are_refused() {
    let dir = scratch();
    drop(Wal::open(dir.path(), WalOptions::default()).unwrap());
    let path = segment_path(dir.path(), 1);
    let good = fs::read(&path).unwrap();
    let mut data = good.clone();
    data[6] = 2;
    fs::write(&path, &data).unwrap();
    let e = Wal::open(dir.path(), WalOptions::default()).err().unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: write-ahead log format version 2 is not one this build reads (1); was it \
             written by a newer tallykv?",
            path.display()
        )
    );
    let mut data = good.clone();
    data[0] = b'X';
    fs::write(&path, &data).unwrap();
    let e = Wal::open(dir.path(), WalOptions::default()).err().unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: not a tallykv write-ahead log segment (bad magic)",
            path.display()
        )
    );
    // Unrelated files are not segments.
    fs::write(&path, &good).unwrap();
    fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    fs::write(dir.path().join("1.wal"), b"hello").unwrap();
    Wal::open(dir.path(), WalOptions::default()).unwrap();
}

#[test]
fn crash_between_rotation_and_sync() {
    let dir = scratch();
    {
        let mut wal = Wal::open(dir.path(), opts(400, 1 << 20)).unwrap();
        for i in 1..=8u64 {
            wal.append(1, i, entry(1, i, 100)).unwrap();
            wal.write().unwrap();
        }
    }
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    // The kernel wrote the newest segment back but not the end of the one before it.
    let victim = &segs[segs.len() - 2];
    let data = fs::read(victim).unwrap();
    let offs = record_offsets(&data);
    let cut = offs.last().unwrap() + 10;
    let copy = copy_dir(dir.path());
    let v = copy.path().join(victim.file_name().unwrap());
    fs::write(&v, &data[..cut]).unwrap();
    let kept_before = {
        // The entries in segments before the victim and in it up to its last record.
        let wal = Wal::open(dir.path(), opts(400, 1 << 20)).unwrap();
        let n = wal.last_index(1).unwrap();
        drop(wal);
        n
    };
    let mut wal = Wal::open(copy.path(), opts(400, 1 << 20)).unwrap();
    let last = wal.last_index(1).unwrap();
    assert!(last < kept_before);
    assert_eq!(all(&wal, 1), expected(1, 1..last + 1, 100));
    let newest = segs[segs.len() - 1].file_name().unwrap().to_str().unwrap();
    assert!(copy.path().join(format!("{newest}.discarded")).exists());
    wal.append(1, last + 1, entry(1, last + 1, 5)).unwrap();
    wal.write().unwrap();
    drop(wal);
    let wal = Wal::open(copy.path(), opts(400, 1 << 20)).unwrap();
    assert_eq!(wal.last_index(1), Some(last + 1));
}

#[test]
fn crash_between_rotation_and_sync_leaving_zeros() {
    let dir = scratch();
    {
        let mut wal = Wal::open(dir.path(), opts(4000, 1 << 20)).unwrap();
        for i in 1..=6u64 {
            wal.append(1, i, entry(1, i, 1500)).unwrap();
            wal.write().unwrap();
        }
    }
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 2, "{segs:?}");
    let victim = &segs[segs.len() - 2];
    let mut data = fs::read(victim).unwrap();
    let at = *record_offsets(&data).last().unwrap();
    // Same length, but the pages of its last record never written back.
    data[at..].fill(0);
    let zeroed = copy_dir(dir.path());
    fs::write(zeroed.path().join(victim.file_name().unwrap()), &data).unwrap();
    let wal = Wal::open(zeroed.path(), opts(4000, 1 << 20)).unwrap();
    let last = wal.last_index(1).unwrap();
    assert_eq!(all(&wal, 1), expected(1, 1..last + 1, 1500));
    assert_eq!(segment_files(zeroed.path()).len(), segs.len() - 1);
    // A flipped bit instead: damage, an error.
    let mut data = fs::read(victim).unwrap();
    data[at + 100] ^= 4;
    let flipped = copy_dir(dir.path());
    let path = flipped.path().join(victim.file_name().unwrap());
    fs::write(&path, &data).unwrap();
    let e = Wal::open(flipped.path(), opts(4000, 1 << 20))
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: corrupt record at offset {at}: checksum mismatch, in a segment that is not \
             the last",
            path.display()
        )
    );
}

#[test]
fn cache_eviction_falls_back_to_pread() {
    let dir = scratch();
    let mut wal = Wal::open(dir.path(), opts(1 << 20, 250)).unwrap();
    append_run(&mut wal, 1, 1..6, 100);
    append_run(&mut wal, 2, 1..6, 100);
    let s = wal.stats();
    assert_eq!((s.cached_entries, s.cache_bytes), (2, 200));
    // Not written yet, not cached: read from the buffer.
    assert_eq!(all(&wal, 1), expected(1, 1..6, 100));
    assert_eq!(wal.stats().preads, 0);
    wal.write().unwrap();
    assert_eq!(all(&wal, 1), expected(1, 1..6, 100));
    assert_eq!(all(&wal, 2), expected(2, 1..6, 100));
    assert_eq!(wal.stats().preads, 5 + 3);
    // Truncation and purge take their entries out of the cache too.
    wal.truncate_after(2, Some(4));
    wal.purge(2, 2, b"x");
    assert_eq!(wal.stats().cached_entries, 1);
    append_run(&mut wal, 2, 5..7, 10);
    assert_eq!(wal.stats().cache_bytes, 120);
    wal.write().unwrap();
    let want: Vec<Bytes> = expected(2, 3..5, 100)
        .into_iter()
        .chain(expected(2, 5..7, 10))
        .collect();
    assert_eq!(all(&wal, 2), want);
    // No cache at all.
    drop(wal);
    let mut wal = Wal::open(dir.path(), opts(1 << 20, 0)).unwrap();
    append_run(&mut wal, 3, 1..4, 10);
    assert_eq!(all(&wal, 3), expected(3, 1..4, 10));
    wal.write().unwrap();
    assert_eq!(all(&wal, 3), expected(3, 1..4, 10));
    assert_eq!(wal.stats().cached_entries, 0);
}

#[test]
fn damaged_entry_read_back_is_an_error() {
    let dir = scratch();
    let mut wal = Wal::open(dir.path(), opts(1 << 20, 0)).unwrap();
    append_run(&mut wal, 1, 1..3, 30);
    wal.write().unwrap();
    let path = segment_path(dir.path(), 1);
    let mut data = fs::read(&path).unwrap();
    let at = record_offsets(&data)[2];
    data[at + 25] ^= 1;
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&data[at..], at as u64)
        .unwrap();
    let e = wal.entries(1, 2..3).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: corrupt record at offset {at}: checksum mismatch",
            path.display()
        )
    );
}

#[test]
fn concurrent_syncs_share_one_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(block_on(wal.sync()).is_ok());
    append_run(&mut wal, 1, 1..101, 100);
    let seq = wal.write().unwrap();
    let waits: Vec<SyncFuture> = (0..50).map(|_| wal.sync()).collect();
    for r in block_on(futures::future::join_all(waits)) {
        r.unwrap();
    }
    let s = wal.stats();
    assert_eq!((s.sync_rounds, s.fdatasyncs), (1, 1), "{s:?}");
    assert_eq!(wal.synced_through(), seq);
    // Everything covered: no request at all.
    block_on(wal.sync()).unwrap();
    assert_eq!(wal.stats().fdatasyncs, 1);
}

#[test]
fn a_sync_after_rotation_covers_both_segments() {
    let dir = scratch();
    let mut wal = Wal::open(dir.path(), opts(300, 1 << 20)).unwrap();
    block_on(wal.sync()).unwrap();
    append_run(&mut wal, 1, 1..4, 100);
    wal.write().unwrap();
    assert_eq!(wal.stats().segments, 2);
    block_on(wal.sync()).unwrap();
    let s = wal.stats();
    assert_eq!((s.sync_rounds, s.fdatasyncs), (1, 2), "{s:?}");
}

#[test]
fn sync_future_resolves_on_a_glommio_executor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let done = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let mut wal = Wal::open(&path, WalOptions::default()).unwrap();
            let mut synced = 0;
            for round in 0..20u64 {
                wal.append(1, round + 1, entry(1, round, 64)).unwrap();
                wal.write().unwrap();
                // The syncer thread completes it; glommio must wake this task.
                wal.sync().await.unwrap();
                synced = wal.synced_through();
            }
            synced
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(done, 20);
}

/// The reference the log is held to: each group's state, plainly.
#[derive(Clone, Debug, Default, PartialEq)]
struct ModelGroup {
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purged: Option<(u64, Vec<u8>)>,
    first: u64,
    entries: Vec<Bytes>,
}

impl ModelGroup {
    fn last(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.first + self.entries.len() as u64 - 1)
    }
    fn is_empty(&self) -> bool {
        *self
            == ModelGroup {
                first: self.first,
                ..Default::default()
            }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append { g: GroupId, n: u8, len: u16 },
    AppendGap { g: GroupId, skip: u8 },
    Vote { g: GroupId, v: u8 },
    Committed { g: GroupId, c: u8 },
    Truncate { g: GroupId, back: Option<u8> },
    Purge { g: GroupId, ahead: u8 },
    Remove { g: GroupId },
    Write,
    Sync,
    Reopen,
    Crash,
    Rotate,
    Reseal { budget: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    let g = 0..4u16;
    prop_oneof![
        6 => (g.clone(), 1..5u8, 0..120u16).prop_map(|(g, n, len)| Op::Append { g, n, len }),
        1 => (g.clone(), 0..3u8).prop_map(|(g, skip)| Op::AppendGap { g, skip }),
        1 => (g.clone(), any::<u8>()).prop_map(|(g, v)| Op::Vote { g, v }),
        1 => (g.clone(), any::<u8>()).prop_map(|(g, c)| Op::Committed { g, c }),
        2 => (g.clone(), proptest::option::weighted(0.8, 0..6u8))
            .prop_map(|(g, back)| Op::Truncate { g, back }),
        3 => (g.clone(), 0..12u8).prop_map(|(g, ahead)| Op::Purge { g, ahead }),
        1 => g.prop_map(|g| Op::Remove { g }),
        4 => Just(Op::Write),
        2 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        // A new active key (a no-op without encryption at rest), and a step moving entries
        // to it.
        1 => Just(Op::Rotate),
        2 => (1..600u16).prop_map(|budget| Op::Reseal { budget }),
    ]
}

fn check(wal: &Wal, model: &BTreeMap<GroupId, ModelGroup>) {
    let live: Vec<GroupId> = model
        .iter()
        .filter(|(_, g)| !g.is_empty())
        .map(|(&id, _)| id)
        .collect();
    assert_eq!(wal.groups(), live);
    for g in 0..4 {
        let m = model.get(&g).cloned().unwrap_or_default();
        assert_eq!(wal.vote(g), m.vote.as_deref(), "vote of {g}");
        assert_eq!(wal.committed(g), m.committed.as_deref(), "committed of {g}");
        assert_eq!(
            wal.purged(g),
            m.purged.as_ref().map(|(i, id)| (*i, &id[..])),
            "purged of {g}"
        );
        assert_eq!(wal.last_index(g), m.last(), "last of {g}");
        assert_eq!(
            wal.first_index(g),
            m.last().map(|_| m.first),
            "first of {g}"
        );
        assert_eq!(all(wal, g), m.entries, "entries of {g}");
        if let Some(last) = m.last()
            && last > m.first
        {
            let mid = m.first + (last - m.first) / 2;
            assert_eq!(
                wal.entries(g, mid..last).unwrap(),
                m.entries[(mid - m.first) as usize..(last - m.first) as usize]
            );
        }
    }
}

/// Runs `ops` against a log and the model; `sealed`: with encryption at rest, rotating keys.
fn run(ops: Vec<Op>, sealed: bool) {
    let dir = scratch();
    let keys = KeyFile::new(&["k1"]);
    let at_rest = sealed.then(|| keys.load());
    let o = || WalOptions {
        at_rest: at_rest.clone(),
        ..opts(300, 200)
    };
    let mut wal = Wal::open(dir.path(), o()).unwrap();
    let mut model: BTreeMap<GroupId, ModelGroup> = BTreeMap::new();
    let mut written = model.clone();
    let mut counter = 0u64;
    for op in ops {
        match op {
            Op::Append { g, n, len } => {
                for _ in 0..n {
                    let m = model.entry(g).or_default();
                    let index = match (m.last(), &m.purged) {
                        (Some(l), _) => l + 1,
                        (None, Some((p, _))) => p + 1,
                        (None, None) => 1 + counter % 5,
                    };
                    counter += 1;
                    let bytes = entry(g, counter, len as usize);
                    wal.append(g, index, bytes.clone()).unwrap();
                    if m.entries.is_empty() {
                        m.first = index;
                    }
                    m.entries.push(bytes);
                }
            }
            Op::AppendGap { g, skip } => {
                let m = model.entry(g).or_default();
                if let Some(last) = m.last().or(m.purged.as_ref().map(|p| p.0)) {
                    let index = if skip == 0 {
                        last
                    } else {
                        last + 1 + skip as u64
                    };
                    let e = wal.append(g, index, entry(g, 0, 3)).unwrap_err();
                    assert!(matches!(e, WalError::NotContiguous { .. }), "{e}");
                }
            }
            Op::Vote { g, v } => {
                wal.save_vote(g, &[v]);
                model.entry(g).or_default().vote = Some(vec![v]);
            }
            Op::Committed { g, c } => {
                wal.save_committed(g, &[c, c]);
                model.entry(g).or_default().committed = Some(vec![c, c]);
            }
            Op::Truncate { g, back } => {
                let m = model.entry(g).or_default();
                let after = match (back, m.last()) {
                    (Some(b), Some(last)) => Some(last.saturating_sub(b as u64)),
                    (Some(b), None) => Some(b as u64),
                    (None, _) => None,
                };
                wal.truncate_after(g, after);
                let keep = match after {
                    Some(a) if a >= m.first => (a - m.first + 1) as usize,
                    _ => 0,
                };
                m.entries.truncate(keep);
            }
            Op::Purge { g, ahead } => {
                let m = model.entry(g).or_default();
                let base = m.purged.as_ref().map_or(m.first, |p| p.0);
                let upto = base + ahead as u64;
                let id = vec![ahead; 3];
                wal.purge(g, upto, &id);
                if m.purged.as_ref().is_none_or(|p| p.0 < upto) {
                    let drop = (upto + 1)
                        .saturating_sub(m.first)
                        .min(m.entries.len() as u64);
                    m.entries.drain(..drop as usize);
                    m.first = m.first.max(upto + 1);
                    m.purged = Some((upto, id));
                }
            }
            Op::Remove { g } => {
                wal.remove_group(g);
                model.remove(&g);
            }
            Op::Write => {
                wal.write().unwrap();
                written = model.clone();
            }
            Op::Sync => {
                wal.write().unwrap();
                written = model.clone();
                block_on(wal.sync()).unwrap();
                wal.write().unwrap();
            }
            Op::Reopen => {
                wal.write().unwrap();
                written = model.clone();
                drop(wal);
                wal = Wal::open(dir.path(), o()).unwrap();
            }
            Op::Crash => {
                // Whatever was not handed to the kernel is lost; the rest survives a process.
                drop(wal);
                model = written.clone();
                wal = Wal::open(dir.path(), o()).unwrap();
            }
            Op::Rotate => {
                if let Some(a) = &at_rest {
                    keys.rotate(a);
                }
            }
            Op::Reseal { budget } => {
                let done = wal.reseal_step(budget as usize).unwrap();
                assert!(done || sealed);
            }
        }
        // Empty models are equal to absent ones.
        model.retain(|_, m| !m.is_empty() || m.first != 0);
        check(&wal, &model);
    }
    wal.write().unwrap();
    drop(wal);
    let mut wal = Wal::open(dir.path(), o()).unwrap();
    check(&wal, &model);
    if let Some(a) = &at_rest {
        // Finish the rotation: then the active key alone opens the same log.
        reseal_all(&mut wal, 500);
        check(&wal, &model);
        drop(wal);
        let active = keys.only(&a.active_key_id());
        let wal = Wal::open(dir.path(), sealed_opts(&active, 300, 200)).unwrap();
        check(&wal, &model);
        assert_eq!(
            entry_keys(dir.path()),
            vec![Some(a.active_key_id()); entry_keys(dir.path()).len()]
        );
    }
}

proptest! {
    // 48 cases unless PROPTEST_CASES asks for more (a longer hunt for a bug).
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
    ))]
    #[test]
    fn behaves_like_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, false);
    }

    #[test]
    fn behaves_like_the_model_encrypted_at_rest(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, true);
    }
}

/// A key file (`encryption-at-rest-key-file`) in a directory of its own.
struct KeyFile {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl KeyFile {
    /// Keys `ids`, the last one active.
    fn new(ids: &[&str]) -> KeyFile {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::storage::at_rest::tests::key_file(dir.path(), "keys", ids);
        KeyFile { dir, path }
    }

    fn load(&self) -> Arc<AtRest> {
        Arc::new(AtRest::load(&self.path).unwrap())
    }

    /// Adds a key to the file, makes it the active one and reloads `a` (a rotation).
    fn rotate(&self, a: &AtRest) -> String {
        let mut ring = card::keyring::Keyring::from_file(&self.path).unwrap();
        let id = ring.rotate(None).unwrap();
        ring.replace_file(&self.path).unwrap();
        a.reload(&self.path).unwrap();
        id.as_str().to_owned()
    }

    /// The keys of this file with `keep` only (the same material): the file after the old
    /// keys were dropped from it.
    fn only(&self, keep: &str) -> Arc<AtRest> {
        let mut json: serde_json::Value =
            serde_json::from_slice(&fs::read(&self.path).unwrap()).unwrap();
        json["keys"]
            .as_array_mut()
            .unwrap()
            .retain(|k| k["id"] == keep);
        json["active"] = keep.into();
        let path = self.dir.path().join(format!("only-{keep}"));
        fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        Arc::new(AtRest::load(&path).unwrap())
    }
}

fn sealed_opts(at_rest: &Arc<AtRest>, segment_bytes: u64, cache_bytes: usize) -> WalOptions {
    WalOptions {
        at_rest: Some(at_rest.clone()),
        ..opts(segment_bytes, cache_bytes)
    }
}

/// Steps the rotation to its end, writing and syncing after each step as a core does;
/// returns the number of steps.
fn reseal_all(wal: &mut Wal, budget: usize) -> usize {
    for steps in 1..100_000 {
        let done = wal.reseal_step(budget).unwrap();
        wal.write().unwrap();
        block_on(wal.sync()).unwrap();
        if done {
            return steps;
        }
    }
    panic!("the rotation does not end");
}

/// The key of every entry record in the segment files, dead or live (None: plaintext).
fn entry_keys(dir: &Path) -> Vec<Option<String>> {
    let mut keys = Vec::new();
    for path in segment_files(dir) {
        let data = fs::read(&path).unwrap();
        let mut at = record::HEADER_LEN;
        while let Ok(Some(f)) = record::read(&data, at) {
            at += f.len;
            match f.record {
                Record::Entry { sealed: false, .. } => keys.push(None),
                Record::Entry { data, .. } | Record::Resealed { data, .. } => {
                    keys.push(Some(at_rest::key_id_of(data).unwrap().to_owned()))
                }
                _ => {}
            }
        }
    }
    keys
}

/// Whether some segment file holds `needle`.
fn files_hold(dir: &Path, needle: &[u8]) -> bool {
    segment_files(dir).iter().any(|p| {
        fs::read(p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    })
}

#[test]
fn sealed_entries_round_trip() {
    let keys = KeyFile::new(&["k1"]);
    let a = keys.load();
    let dir = scratch();
    // No cache: reads come from the write buffer, then from the file.
    let mut wal = Wal::open(dir.path(), sealed_opts(&a, 1 << 20, 0)).unwrap();
    append_run(&mut wal, 1, 1..11, 50);
    append_run(&mut wal, 2, 1..4, 1);
    assert_eq!(all(&wal, 1), expected(1, 1..11, 50));
    wal.write().unwrap();
    assert_eq!(all(&wal, 1), expected(1, 1..11, 50));
    assert_eq!(all(&wal, 2), expected(2, 1..4, 1));
    assert_eq!(wal.stats().preads, 13);
    // Each record is its plaintext one plus the seal.
    let overhead = at_rest::overhead("k1") as u64;
    assert_eq!(
        wal.stats().segment_bytes,
        {
            let plain = Wal::open(scratch().path(), opts(1 << 20, 0)).unwrap();
            plain.stats().segment_bytes
        } + 13 * (8 + 3 + 8 + overhead)
            + 10 * 50
            + 3
    );
    wal.save_vote(1, b"v");
    wal.purge(1, 3, b"p3");
    wal.truncate_after(1, Some(8));
    append_run(&mut wal, 1, 9..10, 7);
    wal.write().unwrap();
    drop(wal);
    for cache in [0, 1 << 20] {
        let wal = Wal::open(dir.path(), sealed_opts(&a, 1 << 20, cache)).unwrap();
        let mut want = expected(1, 4..9, 50);
        want.push(entry(1, 9, 7));
        assert_eq!(all(&wal, 1), want);
        assert_eq!(all(&wal, 2), expected(2, 1..4, 1));
        assert_eq!(wal.vote(1), Some(&b"v"[..]));
        assert_eq!(wal.purged(1), Some((3, &b"p3"[..])));
    }
    assert!(
        entry_keys(dir.path())
            .iter()
            .all(|k| k.as_deref() == Some("k1"))
    );
}

#[test]
fn sealed_segments_hold_no_plaintext_entry() {
    let keys = KeyFile::new(&["k1"]);
    let a = keys.load();
    let secret = |i: u64| Bytes::from(format!("4111111111111111 exp 12/29 #{i:03}"));
    for sealed in [false, true] {
        let dir = scratch();
        let o = match sealed {
            true => sealed_opts(&a, 600, 1 << 20),
            false => opts(600, 1 << 20),
        };
        let mut wal = Wal::open(dir.path(), o).unwrap();
        for i in 1..=30 {
            wal.append(1, i, secret(i)).unwrap();
            wal.write().unwrap();
        }
        wal.save_vote(1, b"vote-in-plaintext");
        wal.truncate_after(1, Some(20));
        wal.write().unwrap();
        drop(wal);
        assert!(segment_files(dir.path()).len() > 2);
        // Live entries and dead ones alike.
        assert_eq!(files_hold(dir.path(), b"4111111111111111"), !sealed);
        assert_eq!(files_hold(dir.path(), b"#025"), !sealed);
        // Votes and ids are no user data: they stay plaintext.
        assert!(files_hold(dir.path(), b"vote-in-plaintext"));
    }
}

#[test]
fn a_sealed_log_does_not_open_without_its_key() {
    let keys = KeyFile::new(&["k1"]);
    let a = keys.load();
    let dir = scratch();
    let mut wal = Wal::open(dir.path(), sealed_opts(&a, 1 << 20, 1 << 20)).unwrap();
    append_run(&mut wal, 1, 1..4, 30);
    wal.write().unwrap();
    drop(wal);
    let seg = segment_path(dir.path(), 1);
    let at = record_offsets(&fs::read(&seg).unwrap())[1];
    let refused = |o: WalOptions, why: OpenError| {
        let e = Wal::open(dir.path(), o).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: entry 1 of group 1 at offset {at}: {why}",
                seg.display()
            )
        );
    };
    refused(WalOptions::default(), OpenError::NoKeyFile("k1".into()));
    let other = KeyFile::new(&["k9"]);
    refused(
        sealed_opts(&other.load(), 1 << 20, 0),
        OpenError::UnknownKey("k1".into()),
    );
    // Another key under the same id.
    let wrong = KeyFile::new(&["k1"]);
    refused(
        sealed_opts(&wrong.load(), 1 << 20, 0),
        OpenError::Tampered("k1".into()),
    );
    assert_eq!(
        OpenError::NoKeyFile("k1".into()).to_string(),
        "the data is encrypted at rest (key id 'k1') and encryption-at-rest-key-file is not set"
    );
    // The right key opens it; dead sealed entries need no key.
    let mut wal = Wal::open(dir.path(), sealed_opts(&a, 1 << 20, 0)).unwrap();
    assert_eq!(all(&wal, 1), expected(1, 1..4, 30));
    wal.truncate_after(1, None);
    wal.save_vote(1, b"v");
    wal.write().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(wal.last_index(1), None);
    assert_eq!(wal.vote(1), Some(&b"v"[..]));
}

#[test]
fn a_plaintext_log_opens_with_at_rest() {
    let keys = KeyFile::new(&["k1"]);
    let a = keys.load();
    let dir = scratch();
    let mut wal = Wal::open(dir.path(), opts(1 << 20, 1 << 20)).unwrap();
    append_run(&mut wal, 1, 1..6, 30);
    wal.save_vote(1, b"v");
    wal.write().unwrap();
    drop(wal);
    let mut wal = Wal::open(dir.path(), sealed_opts(&a, 1 << 20, 0)).unwrap();
    assert_eq!(all(&wal, 1), expected(1, 1..6, 30));
    append_run(&mut wal, 1, 6..9, 30);
    wal.write().unwrap();
    assert_eq!(all(&wal, 1), expected(1, 1..9, 30));
    drop(wal);
    let wal = Wal::open(dir.path(), sealed_opts(&a, 1 << 20, 0)).unwrap();
    assert_eq!(all(&wal, 1), expected(1, 1..9, 30));
    assert_eq!(wal.vote(1), Some(&b"v"[..]));
    drop(wal);
    let mut k = entry_keys(dir.path());
    k.dedup();
    assert_eq!(k, [None, Some("k1".to_string())]);
    // It holds sealed entries now: not without the key file.
    let e = Wal::open(dir.path(), WalOptions::default()).err().unwrap();
    assert!(
        e.to_string()
            .ends_with(&OpenError::NoKeyFile("k1".into()).to_string()),
        "{e}"
    );
}

#[test]
fn a_rotation_moves_every_entry_to_the_new_key() {
    let keys = KeyFile::new(&["k1"]);
    let a = keys.load();
    let dir = scratch();
    // Some entries from before encryption was on.
    {
        let mut wal = Wal::open(dir.path(), opts(1024, 300)).unwrap();
        append_run(&mut wal, 1, 1..6, 100);
        wal.write().unwrap();
    }
    let o = |a: &Arc<AtRest>| sealed_opts(a, 1024, 300);
    let mut wal = Wal::open(dir.path(), o(&a)).unwrap();
    for i in 6..30 {
        append_run(&mut wal, 1, i..i + 1, 100);
        append_run(&mut wal, 2, i..i + 1, 60);
        if i % 3 == 0 {
            wal.write().unwrap();
        }
    }
    wal.purge(1, 3, b"p3");
    wal.truncate_after(2, Some(25));
    wal.save_vote(3, b"v");
    wal.write().unwrap();
    assert!(files_hold(dir.path(), b"g1i4.g1i4."));
    // The first pass encrypts what was written in plaintext.
    assert!(reseal_all(&mut wal, 700) > 1);
    wait_for_segments(dir.path(), wal.stats().segments);
    assert!(!files_hold(dir.path(), b"g1i4.g1i4."));
    assert!(
        entry_keys(dir.path())
            .iter()
            .all(|k| k.as_deref() == Some("k1"))
    );
    // Nothing to do: one step says so.
    assert_eq!(reseal_all(&mut wal, 700), 1);

    let k2 = keys.rotate(&a);
    assert_eq!(k2, "k2");
    let resealed = a.resealed.load(Relaxed);
    // The log goes on while the rotation runs.
    let mut steps = 0;
    let mut next = 30;
    loop {
        steps += 1;
        let done = wal.reseal_step(700).unwrap();
        if steps < 6 {
            append_run(&mut wal, 1, next..next + 1, 100);
            next += 1;
        }
        if steps == 3 {
            wal.truncate_after(1, Some(next - 3));
            next -= 2;
            wal.purge(2, 8, b"p8");
        }
        wal.write().unwrap();
        block_on(wal.sync()).unwrap();
        if done {
            break;
        }
    }
    assert!(steps > 3, "{steps}");
    assert!(a.resealed.load(Relaxed) > resealed);
    let want1 = expected(1, 4..next, 100);
    let want2 = expected(2, 9..26, 60);
    assert_eq!(all(&wal, 1), want1);
    assert_eq!(all(&wal, 2), want2);
    wait_for_segments(dir.path(), wal.stats().segments);
    let keys_left = entry_keys(dir.path());
    assert!(!keys_left.is_empty());
    assert!(keys_left.iter().all(|k| k.as_deref() == Some("k2")));
    drop(wal);
    // A key file without k1 opens the same log.
    let wal = Wal::open(dir.path(), o(&keys.only("k2"))).unwrap();
    assert_eq!(all(&wal, 1), want1);
    assert_eq!(all(&wal, 2), want2);
    assert_eq!(wal.purged(2), Some((8, &b"p8"[..])));
    assert_eq!(wal.vote(3), Some(&b"v"[..]));
}

#[test]
fn a_rewrite_cut_anywhere_recovers_the_same_log() {
    let keys = KeyFile::new(&["k1"]);
    let a = keys.load();
    let dir = scratch();
    let o = |a: &Arc<AtRest>| sealed_opts(a, 1 << 20, 1 << 20);
    let mut wal = Wal::open(dir.path(), o(&a)).unwrap();
    append_run(&mut wal, 1, 1..8, 40);
    append_run(&mut wal, 2, 1..5, 40);
    wal.truncate_after(2, Some(3));
    wal.purge(1, 2, b"p2");
    wal.write().unwrap();
    block_on(wal.sync()).unwrap();
    let want = |wal: &Wal| {
        assert_eq!(all(wal, 1), expected(1, 3..8, 40));
        assert_eq!(all(wal, 2), expected(2, 1..4, 40));
        assert_eq!(wal.purged(1), Some((2, &b"p2"[..])));
    };
    keys.rotate(&a);
    // Its current segment is under k1: the next write closes it.
    assert!(!wal.reseal_step(1 << 20).unwrap());
    wal.write().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
    // Queued, never written: as if nothing had happened.
    assert!(!wal.reseal_step(1 << 20).unwrap());
    want(&wal);
    drop(wal);
    let mut wal = Wal::open(dir.path(), o(&a)).unwrap();
    want(&wal);
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert!(!wal.reseal_step(1 << 20).unwrap());
    wal.write().unwrap();
    // Written, not synced: the old segment stays.
    drop(wal);
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 2);
    let old = fs::read(&segs[0]).unwrap();
    let data = fs::read(&segs[1]).unwrap();
    let offs = record_offsets(&data);
    assert_eq!(offs.len(), 1 + 8, "{offs:?}");
    // Cut anywhere: the moved entries are found at their old place or their new one.
    for cut in 0..=data.len() {
        let copy = copy_dir(dir.path());
        let f = fs::OpenOptions::new()
            .write(true)
            .open(copy.path().join(segs[1].file_name().unwrap()))
            .unwrap();
        f.set_len(cut as u64).unwrap();
        drop(f);
        let mut wal = Wal::open(copy.path(), o(&a)).unwrap();
        want(&wal);
        if cut % 97 == 0 || cut == data.len() {
            // And the rotation goes on from there to its end.
            reseal_all(&mut wal, 100);
            want(&wal);
            drop(wal);
            let wal = Wal::open(copy.path(), o(&keys.only("k2"))).unwrap();
            want(&wal);
        }
    }
    // A dead segment left by a crash between the sync and the unlink needs no old key.
    let mut wal = Wal::open(dir.path(), o(&a)).unwrap();
    reseal_all(&mut wal, 1 << 20);
    drop(wal);
    assert!(!segs[0].exists());
    fs::write(&segs[0], &old).unwrap();
    let wal = Wal::open(dir.path(), o(&keys.only("k2"))).unwrap();
    want(&wal);
    assert!(!segs[0].exists());
}
