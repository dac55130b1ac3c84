//! `math.random` / `math.randomseed` on Valkey's own PRNG.
//!
//! Valkey replaces Lua's `rand()`-based functions with `redisLrand48()`, a copy of the classic
//! `lrand48` generator, so a seeded sequence is the same on every platform.
//!
//! Until Redis 6, EVAL reseeded it with 0 before every script, so `math.random` repeated the
//! same numbers in every call (scripts were replicated verbatim and had to be deterministic).
//! Since Redis 7 scripts replicate by effects and the reseed is gone: Valkey 8's own test suite
//! checks that "random numbers are random now" across EVALs. The generator starts from the
//! unseeded `lrand48` state and runs on; `math.randomseed(n)` restarts it. [`reset_random`]
//! reseeds with 0, the old per-call behaviour, for a host that wants it.

use mlua::{Lua, Table};

use super::raise::{LibResult, Raise, lib_function};

/// `lrand48`: X(n+1) = (a·X(n) + c) mod 2^48, output the top 31 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lrand48 {
    x: u64,
}

const A: u64 = 0x5_DEEC_E66D;
const C: u64 = 0xB;
const MASK48: u64 = (1 << 48) - 1;

/// `REDIS_LRAND48_MAX`.
pub const LRAND48_MAX: i32 = i32::MAX;

impl Lrand48 {
    /// `redisSrand48(seed)`: the seed's 32 bits above the fixed low word 0x330E.
    pub fn seeded(seed: i32) -> Lrand48 {
        Lrand48 {
            x: ((seed as u32 as u64) << 16) | 0x330E,
        }
    }

    /// `redisLrand48()`: a value in [0, 2^31).
    pub fn next(&mut self) -> i32 {
        self.x = (A.wrapping_mul(self.x).wrapping_add(C)) & MASK48;
        (self.x >> 17) as i32
    }
}

impl Default for Lrand48 {
    /// The state before any seeding: `rand.c`'s initial words 0x1234, 0xABCD, 0x330E (also
    /// POSIX's for an unseeded `lrand48`).
    fn default() -> Self {
        Lrand48 {
            x: 0x1234_ABCD_330E,
        }
    }
}

/// Reseeds the VM's generator with 0, as EVAL did before every script until Redis 6.
pub fn reset_random(lua: &Lua) {
    lua.set_app_data(Lrand48::seeded(0));
}

fn next_fraction(lua: &Lua) -> f64 {
    let mut rng = lua.app_data_mut::<Lrand48>();
    let r = match rng.as_deref_mut() {
        Some(rng) => rng.next(),
        None => {
            drop(rng);
            let mut fresh = Lrand48::default();
            let r = fresh.next();
            lua.set_app_data(fresh);
            r
        }
    };
    // Lua's own formula with rand() replaced: the `%` avoids returning exactly 1.
    (r % LRAND48_MAX) as f64 / LRAND48_MAX as f64
}

/// Replaces `math.random` and `math.randomseed` in `math` (the real table, before sealing).
pub fn install(lua: &Lua, math: &Table) -> mlua::Result<()> {
    math.raw_set(
        "random",
        lib_function(lua, |lua, args| -> LibResult<f64> {
            let r = next_fraction(lua);
            match args.len() {
                0 => Ok(r),
                1 => {
                    let u = args.check_int(lua, 1)?;
                    if u < 1 {
                        return Err(Raise::arg(1, "interval is empty"));
                    }
                    Ok((r * u as f64).floor() + 1.0)
                }
                2 => {
                    let l = args.check_int(lua, 1)?;
                    let u = args.check_int(lua, 2)?;
                    if l > u {
                        return Err(Raise::arg(2, "interval is empty"));
                    }
                    Ok((r * (u as f64 - l as f64 + 1.0)).floor() + l as f64)
                }
                _ => Err(Raise::error("wrong number of arguments")),
            }
        })?,
    )?;
    math.raw_set(
        "randomseed",
        lib_function(lua, |lua, args| -> LibResult<()> {
            let seed = args.check_int(lua, 1)?;
            lua.set_app_data(Lrand48::seeded(seed));
            Ok(())
        })?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_libc_lrand48() {
        for seed in [0i32, 1, 42, -7, i32::MAX, i32::MIN] {
            let mut ours = Lrand48::seeded(seed);
            // Safety: srand48/lrand48 touch only libc's private generator state; no other
            // test in this crate uses it.
            let theirs: Vec<i64> = unsafe {
                libc::srand48(seed as libc::c_long);
                (0..1000).map(|_| libc::lrand48() as i64).collect()
            };
            let mine: Vec<i64> = (0..1000).map(|_| ours.next() as i64).collect();
            assert_eq!(mine, theirs, "seed {seed}");
        }
    }

    #[test]
    fn unseeded_state_is_rand_c_initial_state() {
        let mut r = Lrand48::default();
        // X1 = (0x5DEECE66D * 0x1234ABCD330E + 0xB) mod 2^48, output X1 >> 17.
        let x1 = (0x5_DEEC_E66Du64.wrapping_mul(0x1234_ABCD_330E) + 0xB) & ((1 << 48) - 1);
        assert_eq!(r.next() as u64, x1 >> 17);
        assert_eq!(Lrand48::seeded(0x1234_ABCD), Lrand48::default());
    }

    #[test]
    fn first_values_after_seed_zero() {
        // lrand48 after srand48(0): 0x330E state; first outputs are fixed forever.
        let mut r = Lrand48::seeded(0);
        assert_eq!(r.next(), 366850414);
        assert_eq!(r.next(), 1610402240);
    }
}
