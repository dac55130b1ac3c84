//! `rewrap`: moves every sealed value not under the keyring's active key to it, key by key
//! with `card::rewrap::rewrap_key` (compare-and-set), on every node the walk visits.

use std::collections::HashMap;
use std::process::ExitCode;

use card::rewrap::{HashWrite, rewrap_key};
use card::{KeyProvider, Keyring, Sealer};

use crate::error::{At, CliError};
use crate::server::{KeyVisitor, Node, Target, Walk, show, walk_keys};

#[derive(Default)]
struct Counts {
    resealed: u64,
    current: u64,
    plain: u64,
    failed: u64,
    conflicts: u64,
    gave_up: u64,
}

impl Counts {
    fn line(&self) -> String {
        format!(
            "{} re-sealed, {} already current, {} not sealed, {} failed, {} conflicts retried, {} keys left changing",
            self.resealed, self.current, self.plain, self.failed, self.conflicts, self.gave_up
        )
    }
}

pub fn run(target: &Target, keyring: Keyring, walk: &Walk) -> Result<ExitCode, CliError> {
    eprintln!(
        "rewrap: re-sealing under active key {}",
        keyring.active_key_id()
    );
    let mut rewrap = Rewrap {
        sealer: Sealer::new(keyring),
        counts: Counts::default(),
        writes: HashMap::new(),
    };
    walk_keys(target, walk, &mut rewrap)?;
    let c = &rewrap.counts;
    eprintln!("rewrap: finished: {}", c.line());
    Ok(if c.failed + c.gave_up == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

struct Rewrap {
    sealer: Sealer,
    counts: Counts,
    /// How each node (by address) writes hash fields.
    writes: HashMap<String, HashWrite>,
}

impl KeyVisitor for Rewrap {
    const NAME: &'static str = "rewrap";

    fn visit(&mut self, node: &mut Node, key: &[u8]) -> Result<(), CliError> {
        let write = match self.writes.get(&node.addr) {
            Some(&w) => w,
            None => {
                let w = HashWrite::detect(&mut node.con).at(&node.addr)?;
                self.writes.insert(node.addr.clone(), w);
                w
            }
        };
        let r = rewrap_key(&mut node.con, &self.sealer, key, write).at(&node.addr)?;
        for (field, e) in &r.failed {
            eprintln!("rewrap: {} field {}: {e}", show(key), show(field));
        }
        if r.gave_up {
            eprintln!("rewrap: {} kept changing; left for the next run", show(key));
        }
        let c = &mut self.counts;
        c.resealed += r.resealed;
        c.current += r.current;
        c.plain += r.plain;
        c.failed += r.failed.len() as u64;
        c.conflicts += r.conflicts;
        c.gave_up += u64::from(r.gave_up);
        Ok(())
    }

    fn counts(&self) -> String {
        self.counts.line()
    }
}
