//! A set member as the small encodings and the hashtable store it: 16 bytes, holding up to 15
//! bytes inline and a pointer to a heap copy beyond that.
//!
//! Why: a hashtable-encoded set is one slot per member. With `Box<[u8]>` a slot is 16 bytes
//! plus a jemalloc allocation of at least 8 (usually 16) per member; most members are short
//! (ids, integers in decimal, "user:1234"), so keeping them inline halves the memory of a
//! large set and saves the pointer chase on every lookup and rehash. BENCHMARKS.md /
//! the set family report has the figures.
//!
//! Layout (little-endian, 64-bit): inline, bytes 0..15 are the member (unused bytes zero) and
//! byte 15 its length (0..=15); on the heap, word 0 is the pointer to a boxed `[u8]` and word 1
//! holds the length in its low 56 bits and `HEAP` in its top byte — which is byte 15.

use std::fmt;
use std::ops::Deref;

#[cfg(not(all(target_endian = "little", target_pointer_width = "64")))]
compile_error!("Member's layout assumes a little-endian 64-bit target");

/// The tag in byte 15 of a member whose bytes are on the heap.
const HEAP: u8 = 0xFF;
/// The longest member kept inline.
pub const INLINE_MAX: usize = 15;

#[derive(Clone, Copy)]
#[repr(C)]
struct Heap {
    ptr: *mut u8,
    /// The length, with `HEAP` in the top byte.
    len_tag: u64,
}

#[repr(C)]
union Repr {
    inline: [u8; 16],
    heap: Heap,
}

pub struct Member {
    repr: Repr,
}

const _: () = assert!(std::mem::size_of::<Member>() == 16);

// SAFETY: a Member owns its heap bytes exclusively (as a Box<[u8]> would) and never shares
// them, so moving or sharing it across threads is as safe as for Box<[u8]>.
unsafe impl Send for Member {}
unsafe impl Sync for Member {}

impl Member {
    pub fn new(bytes: &[u8]) -> Member {
        if bytes.len() <= INLINE_MAX {
            let mut inline = [0u8; 16];
            inline[..bytes.len()].copy_from_slice(bytes);
            inline[15] = bytes.len() as u8;
            Member {
                repr: Repr { inline },
            }
        } else {
            let len = bytes.len() as u64;
            assert!(len < 1 << 56, "a set member longer than 2^56 bytes");
            let ptr = Box::into_raw(Box::<[u8]>::from(bytes)) as *mut u8;
            Member {
                repr: Repr {
                    heap: Heap {
                        ptr,
                        len_tag: len | (u64::from(HEAP) << 56),
                    },
                },
            }
        }
    }

    fn tag(&self) -> u8 {
        // SAFETY: all 16 bytes are initialized in both representations (a pointer and a u64
        // on the heap side), so reading them as bytes is always defined.
        unsafe { self.repr.inline[15] }
    }

    fn is_heap(&self) -> bool {
        self.tag() == HEAP
    }

    pub fn as_bytes(&self) -> &[u8] {
        if self.is_heap() {
            // SAFETY: the HEAP tag is only written with a pointer from Box::into_raw of a
            // slice of exactly the recorded length, which this member still owns.
            unsafe {
                let h = self.repr.heap;
                std::slice::from_raw_parts(h.ptr, (h.len_tag & ((1 << 56) - 1)) as usize)
            }
        } else {
            let len = self.tag() as usize;
            // SAFETY: inline representation (tag <= 15), see `tag`.
            unsafe { &self.repr.inline[..len] }
        }
    }

    /// Heap bytes this member owns beyond its 16 (0 when inline).
    pub fn heap_size(&self) -> usize {
        if self.is_heap() { self.len() } else { 0 }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.is_heap() {
            // SAFETY: see `as_bytes`; the box is rebuilt once, here, and never used again.
            unsafe {
                let h = self.repr.heap;
                let len = (h.len_tag & ((1 << 56) - 1)) as usize;
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    h.ptr, len,
                )));
            }
        }
    }
}

impl Deref for Member {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Clone for Member {
    fn clone(&self) -> Member {
        Member::new(self.as_bytes())
    }
}

impl PartialEq for Member {
    fn eq(&self, other: &Member) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Member {}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl From<&[u8]> for Member {
    fn from(b: &[u8]) -> Member {
        Member::new(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length_around_the_inline_limit() {
        for len in [0, 1, 7, 14, 15, 16, 17, 64, 1000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let m = Member::new(&bytes);
            assert_eq!(m.as_bytes(), &bytes[..], "len {len}");
            assert_eq!(m.heap_size(), if len > INLINE_MAX { len } else { 0 });
            let c = m.clone();
            drop(m);
            assert_eq!(&*c, &bytes[..]);
        }
    }

    #[test]
    fn inline_members_may_hold_any_byte() {
        // Byte 15 is the length tag only inline; a 15-byte member ending in 0xFF stays inline.
        let m = Member::new(&[0xFF; 15]);
        assert_eq!(m.as_bytes(), &[0xFF; 15]);
        assert_eq!(m.heap_size(), 0);
        let m = Member::new(&[0xFF; 16]);
        assert_eq!(m.as_bytes(), &[0xFF; 16]);
    }
}
