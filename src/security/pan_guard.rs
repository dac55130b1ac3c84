//! `card-pan-guard`: a server that refuses to become a plaintext card store.
//!
//! What a write stores — key names, hash fields, values, members (for APPEND and SETRANGE the
//! stored result) — is scanned for a plaintext card number: a run of 13–19 digits, optionally
//! grouped by single spaces or dashes, delimited by anything that is not a digit, that matches
//! a card brand's range and length and passes Luhn (`card::discover`, the same table the
//! `tallykv-card scan` CLI uses). The brand ranges are what keep millisecond timestamps,
//! amounts and counters clear of it: one 13-digit number in ten passes Luhn, none of them
//! starts like a card brand. A number that matches range, length and Luhn cannot be told from a
//! card number and is caught by design; `card-pan-guard-exempt-keys` exempts keys that hold
//! such ids.
//!
//! `warn` lets the write through and counts, logs (at most a line per 10 s per thread) and
//! audits it with the key name and the number masked (first 6 and last 4 digits); `refuse`
//! answers [`REFUSED`] and writes nothing. Neither ever shows the number or the value.
//!
//! The cost when off is one relaxed atomic load per write command; when on, a pass over the
//! command's arguments that stops at nothing shorter than 13 digits before any allocation.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::command::CommandDef;
use crate::config::{CardPanGuard, Runtime};
use crate::util::log_limit::LogLimit;

/// What a refused write is told: the guard, never the number.
pub const REFUSED: &str = "ERR card-pan-guard: refused to store what looks like a plaintext card \
                           number (PAN); store it sealed (tallykv-card) or exempt the key with \
                           card-pan-guard-exempt-keys";

/// The fewest digits a card number has here (card::discover's range starts at 13).
const SHORTEST: usize = 13;

/// A thread logs at most one detection per this, with the count of those it did not log.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The guard's settings and counters, one per server.
pub struct PanGuard {
    mode: AtomicU8,
    exempt: RwLock<Arc<[Vec<u8>]>>,
    warned: AtomicU64,
    refused: AtomicU64,
}

/// A plaintext card number found in what a write would store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The command's first key (the key name as it would be logged, numbers in it masked).
    pub key: String,
    /// The number, first six and last four digits shown at most.
    pub masked: String,
}

/// What the caller does about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Write,
    Refuse,
}

impl PanGuard {
    /// The guard as `rt` sets it, following every CONFIG SET of its directives.
    pub fn new(rt: &Arc<Runtime>) -> Arc<PanGuard> {
        let guard = Arc::new(PanGuard {
            mode: AtomicU8::new(0),
            exempt: RwLock::new(Arc::from(Vec::new())),
            warned: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        guard.load(rt);
        let weak = Arc::downgrade(&guard);
        let rt_weak = Arc::downgrade(rt);
        rt.on_change(move |name| {
            if name.starts_with("card-pan-guard")
                && let (Some(guard), Some(rt)) = (weak.upgrade(), rt_weak.upgrade())
            {
                guard.load(&rt);
            }
        });
        guard
    }

    fn load(&self, rt: &Runtime) {
        let mode = match rt.card_pan_guard() {
            CardPanGuard::No => 0,
            CardPanGuard::Warn => 1,
            CardPanGuard::Refuse => 2,
        };
        *self.exempt.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::from(rt.card_pan_guard_exempt_keys());
        self.mode.store(mode, Relaxed);
    }

    /// Whether the guard looks at writes at all.
    #[inline]
    pub fn on(&self) -> bool {
        self.mode.load(Relaxed) != 0
    }

    /// Whether a write holding a card number is refused (`refuse`).
    pub fn refusing(&self) -> bool {
        self.mode.load(Relaxed) == 2
    }

    /// Looks at what write command `def` would store with `args`: every argument after its
    /// name (key names, fields, values, members; options and numbers too, which never match a
    /// brand in practice). None when the guard is off, the command's keys are all exempt, or
    /// nothing is found.
    pub fn inspect(&self, def: &CommandDef, args: &[Bytes]) -> Option<Finding> {
        if !self.on() {
            return None;
        }
        let masked = args.get(1..)?.iter().find_map(|a| find(a))?;
        let mut keys = def.keys.positions(args).map(|p| &args[p]).peekable();
        let first = keys.peek().copied().cloned();
        if first.is_some() && keys.all(|k| self.exempt(k)) {
            return None;
        }
        Some(Finding {
            key: first.map(|k| masked_name(&k)).unwrap_or_default(),
            masked,
        })
    }

    /// Looks at `value`, to be stored under `key` (APPEND's and SETRANGE's result).
    pub fn inspect_value(&self, key: &[u8], value: &[u8]) -> Option<Finding> {
        if !self.on() || self.exempt(key) {
            return None;
        }
        Some(Finding {
            key: masked_name(key),
            masked: find(value)?,
        })
    }

    fn exempt(&self, key: &[u8]) -> bool {
        let patterns = self
            .exempt
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        patterns
            .iter()
            .any(|p| crate::util::glob::glob_match(p, key, false))
    }

    /// Counts, logs and audits `finding`; whether the write goes ahead. `context` is
    /// `toplevel`, `multi` or `lua`; `user` and `client` name who sent it.
    pub fn decide(&self, finding: &Finding, context: &str, user: &str, client: &str) -> Verdict {
        let refuse = self.refusing();
        let action = if refuse { "refused" } else { "warned" };
        if refuse {
            self.refused.fetch_add(1, Relaxed);
        } else {
            self.warned.fetch_add(1, Relaxed);
        }
        if crate::security::audit::enabled() {
            crate::security::audit::record(&crate::security::audit::Event::PanDetected {
                action,
                context,
                key: &finding.key,
                masked: &finding.masked,
                user,
                client,
            });
        }
        if let Some(unlogged) = LOG.with(|l| l.borrow_mut().admit(Instant::now())) {
            let more = if unlogged == 0 {
                String::new()
            } else {
                format!(" ({unlogged} more since the last line, not logged)")
            };
            tracing::warn!(
                key = %finding.key,
                number = %finding.masked,
                %client,
                "card-pan-guard: a write carried a plaintext card number: {action}{more}"
            );
        }
        if refuse {
            Verdict::Refuse
        } else {
            Verdict::Write
        }
    }

    /// INFO stats' `card_pan_guard_warnings` and `card_pan_guard_refusals`.
    pub fn counts(&self) -> (u64, u64) {
        (self.warned.load(Relaxed), self.refused.load(Relaxed))
    }

    /// CONFIG RESETSTAT.
    pub fn reset_counts(&self) {
        self.warned.store(0, Relaxed);
        self.refused.store(0, Relaxed);
    }
}

/// The first card number in `bytes`, masked; a pass that allocates nothing unless a run that
/// could be one (at least 13 digits, starting like a card brand) is there.
pub fn find(bytes: &[u8]) -> Option<String> {
    if !has_candidate(bytes) {
        return None;
    }
    card::discover::find_pans(bytes, true)
        .into_iter()
        .next()
        .map(|f| f.masked)
}

/// Whether a card number's first digit can be `d`: the brands' ranges start with 2 to 6
/// (Mastercard's 2-series, Amex/JCB/Diners 3, Visa 4, Mastercard/Maestro 5, Discover,
/// UnionPay and Maestro 6). Millisecond timestamps start with 1, so they stop here.
fn brand_digit(d: u8) -> bool {
    (b'2'..=b'6').contains(&d)
}

/// Whether `bytes` holds a run that `card::discover` could take for a card number: at least
/// [`SHORTEST`] digits starting with a brand's first digit, counted across single space or
/// dash separators (a grouped run), or within one group alone (the finder tries each group
/// of a grouped run that is not a card number as a whole).
fn has_candidate(bytes: &[u8]) -> bool {
    // Most values hold fewer than 13 digits in all: a count the compiler vectorises settles
    // them before the byte-by-byte walk.
    if bytes.len() < SHORTEST || bytes.iter().filter(|b| b.is_ascii_digit()).count() < SHORTEST {
        return false;
    }
    // The grouped run so far: its digits and whether its first digit can start a card
    // number; the same for the current group.
    let (mut run, mut run_ok) = (0usize, false);
    let (mut group, mut group_ok) = (0usize, false);
    let mut previous_digit = false;
    for &b in bytes {
        if b.is_ascii_digit() {
            if run == 0 {
                run_ok = brand_digit(b);
            }
            if group == 0 {
                group_ok = brand_digit(b);
            }
            run += 1;
            group += 1;
            if (run_ok && run >= SHORTEST) || (group_ok && group >= SHORTEST) {
                return true;
            }
            previous_digit = true;
        } else {
            // A single separator between two digits keeps the run going (a second one, or
            // anything else, ends it at the next byte); any non-digit ends the group.
            if !(previous_digit && matches!(b, b' ' | b'-')) {
                run = 0;
            }
            group = 0;
            previous_digit = false;
        }
    }
    false
}

/// A key name as the log and audit show it: lossy UTF-8, card numbers in it masked.
fn masked_name(key: &[u8]) -> String {
    String::from_utf8_lossy(&card::discover::mask_pans(key)).into_owned()
}

thread_local! {
    /// Detections this thread logged: one per [`LOG_EVERY`].
    static LOG: RefCell<LogLimit> = const { RefCell::new(LogLimit::new(LOG_EVERY)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test numbers the brands publish, in the formats people write them.
    const PANS: &[&str] = &[
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4012888888881881",
        "4222222222222",
        "5555555555554444",
        "5105105105105100",
        "2221000000000009",
        "2223003122003222",
        "378282246310005",
        "3782 822463 10005",
        "371449635398431",
        "6011111111111117",
        "6011000990139424",
        "3530111333300000",
        "3566002020360505",
        "30569309025904",
        "38520000023237",
        "6200000000000005",
        "6759649826438453",
    ];

    #[test]
    fn finds_the_brands_test_numbers_in_any_format_and_context() {
        for pan in PANS {
            for text in [
                pan.to_string(),
                format!("card={pan};exp=12/29"),
                format!("{{\"pan\":\"{pan}\",\"cvv\":\"123\"}}"),
                format!("ref {pan}"),
            ] {
                let masked = find(text.as_bytes()).unwrap_or_else(|| panic!("{text}"));
                assert!(
                    masked.chars().filter(char::is_ascii_digit).count() <= 10,
                    "{masked}"
                );
            }
        }
    }

    #[test]
    fn ordinary_numbers_never_trip_it() {
        let now_ms = 1_765_000_000_000u64;
        // Timestamps (ms and µs), amounts, counters, ids: whatever their Luhn digit.
        for n in (0..5000u64).map(|i| now_ms + i * 7919) {
            assert_eq!(find(n.to_string().as_bytes()), None, "{n}");
            assert_eq!(find((n * 1000).to_string().as_bytes()), None, "{n}000");
        }
        for text in [
            "12345",
            "amount=1999.99",
            "-9223372036854775808",
            "9223372036854775807",
            "2026-12-07T21:15:41.123Z",
            "+1 415 555 0100",
            "tkc\u{1}\u{2}sealed",
            // A longer run of digits is not a card number, nor is a part of it.
            "41111111111111110",
            "141111111111111111",
            // Base64url fingerprints.
            "vel:{Zk3p_Qm9aA2bX0-1kq8wVvYx3T4u5s6r7q8p9o0n1m2}:1h",
            "",
        ] {
            assert_eq!(find(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn the_pre_scan_lets_every_card_number_through() {
        // Whatever the finder finds, the pre-scan must not have stopped: every test number,
        // alone, grouped, and as a group of a longer grouped run.
        for pan in PANS {
            for text in [
                pan.to_string(),
                format!("2024-01-15 {pan}"),
                format!("x{pan}x"),
            ] {
                assert!(has_candidate(text.as_bytes()), "{text}");
            }
            assert!(find(format!("x{pan}x").as_bytes()).is_some(), "{pan}");
        }
        assert!(!has_candidate(b"4234 5678 901"));
        assert!(has_candidate(b"4234 5678 9012 3"));
        assert!(!has_candidate(b"4234  5678 9012 3"));
        assert!(!has_candidate(b"1765000000000"));
        assert!(!has_candidate(b"9223372036854775807"));
    }
}
