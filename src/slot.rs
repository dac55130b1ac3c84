//! CRC16 key slots, exactly as Redis Cluster computes them (hash tags included).

/// A hash slot, 0..16384.
pub type Slot = u16;

/// Number of hash slots, fixed by the Redis Cluster protocol.
pub const SLOT_COUNT: usize = 16384;

/// The slot of `key`: CRC16-XMODEM of the key (or of the first non-empty `{hash tag}`) mod 16384.
pub fn key_slot(key: &[u8]) -> Slot {
    let hashed = hash_tag(key).unwrap_or(key);
    (XMODEM.checksum(hashed) as usize % SLOT_COUNT) as Slot
}

/// CRC16-XMODEM (the CCITT polynomial Redis Cluster uses), slice-by-16 tables: every command
/// hashes its keys, so the table-per-byte variant showed up at ~6% of a SET profile.
static XMODEM: crc::Crc<u16, crc::Table<16>> =
    crc::Crc::<u16, crc::Table<16>>::new(&crc::CRC_16_XMODEM);

/// The part of the key between the first `{` and the next `}`, if that part is non-empty.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let close = key[open + 1..].iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_slots_from_the_cluster_spec() {
        // Values as printed by `CLUSTER KEYSLOT` on Redis/Valkey.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
        // Empty tag: the whole key is hashed.
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            XMODEM.checksum(b"foo{}{bar}") % 16384
        );
        // Only the first tag counts.
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }
}
