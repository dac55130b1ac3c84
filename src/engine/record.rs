//! The payload of a slot group's log entry: what a leader's evaluation changed, as mutation
//! records grouped in units (one command's records, later one transaction's or script's),
//! applied atomically and in order by every replica. It is also the feed a change stream or a
//! read replica would consume, so it is self-describing and versioned:
//!
//! ```text
//! [u8 format version = 1][u8 kind]
//! kind 1, records:  [varint leader time ms][varint proposal id][varint units]
//!                   per unit: [varint records][varint bytes][records (shard::mutation wire form)]
//! kind 2, opaque:   the rest is for the group's own state machine (the meta group's map)
//! ```
//!
//! The leader time is when the leader evaluated the commands; replicas use it only to stamp
//! the access time of keys the entry creates (LRU/LFU), never to decide anything: every time a
//! record depends on is absolute and inside the record. The proposal id lets the leader
//! recognise its own entries when they commit (it applied them already, see `spec`).

use crate::shard::mutation::{DecodeError, Reader, put_varint};
use crate::shard::{Encodings, Mutation, Shard};

pub const FORMAT_VERSION: u8 = 1;
const KIND_RECORDS: u8 = 1;
const KIND_OPAQUE: u8 = 2;

/// A decoded entry payload.
pub enum Payload<'a> {
    Records(Records<'a>),
    /// Another state machine's data (the meta group's cluster map).
    Opaque(&'a [u8]),
}

/// The records of one entry, not yet applied.
pub struct Records<'a> {
    pub now: u64,
    pub proposal: u64,
    pub units: u64,
    body: &'a [u8],
}

/// Builds a records entry from units appended one after another.
#[derive(Default)]
pub struct Builder {
    body: Vec<u8>,
    units: u64,
    records: u64,
}

impl Builder {
    /// Appends the units of a journal: `records` holds them back to back and `units` says
    /// where each ends and how many records it has.
    pub fn push_units(&mut self, records: &[u8], units: &[(usize, u32)]) {
        let mut start = 0;
        for &(end, count) in units {
            put_varint(&mut self.body, count as u64);
            put_varint(&mut self.body, (end - start) as u64);
            self.body.extend_from_slice(&records[start..end]);
            self.units += 1;
            self.records += count as u64;
            start = end;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.units == 0
    }

    pub fn units(&self) -> u64 {
        self.units
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn len_bytes(&self) -> usize {
        self.body.len()
    }

    /// The entry payload, stamped with the leader's time and the proposal id.
    pub fn finish(self, now: u64, proposal: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 24);
        out.push(FORMAT_VERSION);
        out.push(KIND_RECORDS);
        put_varint(&mut out, now);
        put_varint(&mut out, proposal);
        put_varint(&mut out, self.units);
        out.extend_from_slice(&self.body);
        out
    }
}

/// An opaque payload (for a state machine that is not a slot group's keyspace).
pub fn opaque(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 2);
    out.push(FORMAT_VERSION);
    out.push(KIND_OPAQUE);
    out.extend_from_slice(data);
    out
}

/// Reads an entry payload's envelope.
pub fn decode(payload: &[u8]) -> Result<Payload<'_>, DecodeError> {
    let mut r = Reader::new(payload);
    let version = r.byte("entry version")?;
    if version != FORMAT_VERSION {
        return Err(DecodeError(format!(
            "log entry format version {version}; this build reads version {FORMAT_VERSION} \
             (written by a newer tallykv?)"
        )));
    }
    match r.byte("entry kind")? {
        KIND_RECORDS => {
            let now = r.varint("entry time")?;
            let proposal = r.varint("proposal id")?;
            let units = r.varint("unit count")?;
            Ok(Payload::Records(Records {
                now,
                proposal,
                units,
                body: r.rest(),
            }))
        }
        KIND_OPAQUE => Ok(Payload::Opaque(r.rest())),
        k => Err(DecodeError(format!("unknown log entry kind {k}"))),
    }
}

impl Records<'_> {
    /// Checks that every record decodes, without applying anything: an entry is applied
    /// whole or not at all.
    pub fn validate(&self, limits: Encodings) -> Result<(), DecodeError> {
        self.for_each(limits, |_| {})
    }

    /// Applies every record to `shard`, in order (call [`Records::validate`] first: a
    /// damaged record met half way would leave the entry half applied).
    pub fn apply(&self, shard: &mut Shard) -> Result<(), DecodeError> {
        let limits = shard.limits;
        self.for_each(limits, |m| {
            shard.apply(m);
        })
    }

    fn for_each(
        &self,
        limits: Encodings,
        mut f: impl FnMut(Mutation<'_>),
    ) -> Result<(), DecodeError> {
        let mut r = Reader::new(self.body);
        for _ in 0..self.units {
            let count = r.varint("unit record count")?;
            let unit = r.bytes("unit")?;
            let mut u = Reader::new(unit);
            for _ in 0..count {
                let decoded = Mutation::decode(&mut u, limits)?;
                f(decoded.mutation());
            }
            if !u.is_empty() {
                return Err(DecodeError("bytes left at the end of a unit".into()));
            }
        }
        if !r.is_empty() {
            return Err(DecodeError("bytes left after the last unit".into()));
        }
        Ok(())
    }
}
