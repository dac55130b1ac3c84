//! The times to live of a hash's fields (Valkey 9's hash field expiry).
//!
//! Two views of the same set of (field, absolute expiry) pairs: a table answering "when does
//! this field expire" in O(1) for every read, and an ordered set answering "which fields
//! expire next" for the expiry paths, without scanning the hash. Only a hash that has at least
//! one field with a TTL owns one of these; a hash without drops it, so the cost stays with the
//! hashes that use the feature.

use std::collections::BTreeSet;

use hashbrown::HashTable;

use super::{Field, hash_field};

#[derive(Debug, Clone, Default)]
pub(super) struct FieldTtls {
    /// Field → absolute expiry, Unix milliseconds.
    at: HashTable<(Field, u64)>,
    /// The same pairs ordered by expiry, earliest first.
    queue: BTreeSet<(u64, Field)>,
}

impl FieldTtls {
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The expiry of `field`, None when it has none.
    pub fn get(&self, field: &[u8]) -> Option<u64> {
        self.at
            .find(hash_field(field), |(f, _)| &**f == field)
            .map(|&(_, at)| at)
    }

    /// Gives `field` the expiry `at`, replacing any it had.
    pub fn set(&mut self, field: &[u8], at: u64) {
        match self.at.entry(
            hash_field(field),
            |(f, _)| &**f == field,
            |(f, _)| hash_field(f),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                let old = std::mem::replace(&mut o.get_mut().1, at);
                if old != at {
                    let name = self
                        .queue
                        .take(&(old, Box::from(field)))
                        .map(|(_, f)| f)
                        .unwrap_or_else(|| field.into());
                    self.queue.insert((at, name));
                }
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert((field.into(), at));
                self.queue.insert((at, field.into()));
            }
        }
    }

    /// Removes the expiry of `field`; returns the one it had.
    pub fn remove(&mut self, field: &[u8]) -> Option<u64> {
        let found = self
            .at
            .find_entry(hash_field(field), |(f, _)| &**f == field)
            .ok()?;
        let ((name, at), _) = found.remove();
        self.queue.remove(&(at, name));
        Some(at)
    }

    /// The earliest expiry.
    pub fn first(&self) -> Option<u64> {
        self.queue.first().map(|&(at, _)| at)
    }

    /// The fields expired at `now` (expiry strictly before it, as a key's), earliest first.
    pub fn expired(&self, now: u64) -> impl Iterator<Item = &[u8]> {
        self.queue
            .range(..(now, Field::default()))
            .map(|(_, f)| &**f)
    }

    /// How many fields are expired at `now`.
    pub fn count_expired(&self, now: u64) -> usize {
        self.expired(now).count()
    }

    /// Bytes owned on the heap (an estimate: the field names twice, the two nodes' overhead).
    pub fn heap_size(&self) -> usize {
        self.at.iter().map(|(f, _)| 2 * f.len() + 64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_views_stay_in_step() {
        let mut t = FieldTtls::default();
        t.set(b"a", 30);
        t.set(b"b", 10);
        t.set(b"c", 20);
        assert_eq!((t.len(), t.first()), (3, Some(10)));
        // Re-setting moves the field in the queue.
        t.set(b"b", 40);
        assert_eq!((t.get(b"b"), t.first()), (Some(40), Some(20)));
        assert_eq!(t.expired(31).collect::<Vec<_>>(), vec![&b"c"[..], b"a"]);
        // "Expired" is strictly after the expiry, as for keys.
        assert_eq!(t.count_expired(30), 1);
        assert_eq!(t.remove(b"c"), Some(20));
        assert_eq!(t.remove(b"c"), None);
        assert_eq!((t.len(), t.first()), (2, Some(30)));
        t.remove(b"a");
        t.remove(b"b");
        assert!(t.is_empty() && t.first().is_none() && t.queue.is_empty());
    }
}
