//! One card authorization, as a payment service would write it with the card crate:
//!
//! 1. parse the PAN from the request (Luhn-checked; it never prints in the clear);
//! 2. fingerprint it and count the payment in a one-hour velocity window keyed by the
//!    fingerprint — `INCREX vel:{fp}:1h EX 3600 ENX UBOUND 10` where the server has INCREX
//!    (tallykv, Valkey 9.2), else `INCR` + `EXPIRE … NX` in one MULTI;
//! 3. seal the card blob (PAN, expiry, name) into a hash field bound to its key;
//! 4. log the outcome with the PAN masked.
//!
//! Run against a local server (a throwaway keyring is made unless $TALLYKV_CARD_KEYRING holds
//! one):
//!
//! ```text
//! cargo run -p tallykv-card --example payment_auth -- redis://127.0.0.1:6379/
//! ```

use std::error::Error;

use card::{FingerprintKey, KeyId, Keyring, MaskPolicy, Pan, SealedFields, Sealer};
use redis::{Connection, Value};
use zeroize::Zeroizing;

/// Payments one card may make in the window before it is declined.
const VELOCITY_LIMIT: i64 = 10;
const WINDOW_SECONDS: u64 = 3600;
/// How long the sealed card blob is kept for capture and refunds.
const CARD_TTL_SECONDS: i64 = 15 * 60;

/// An authorization request as it arrives (a test card).
struct AuthRequest<'a> {
    pan: &'a str,
    expiry: &'a str,
    name: &'a str,
    amount_cents: u64,
}

fn main() -> Result<(), Box<dyn Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let keyring = std::sync::Arc::new(match Keyring::from_env() {
        Ok(k) => k,
        Err(card::KeyringError::NotSet) => {
            eprintln!("payment_auth: TALLYKV_CARD_KEYRING is not set; using a throwaway keyring");
            Keyring::generate(KeyId::new("k1")?)?
        }
        Err(e) => return Err(e.into()),
    });
    let sealer = Sealer::new(keyring.clone());
    let mut con = redis::Client::open(url.as_str())?.get_connection()?;

    let request = AuthRequest {
        pan: "4111 1111 1111 1111",
        expiry: "12/30",
        name: "A N OTHER",
        amount_cents: 1234,
    };
    authorize(&mut con, &sealer, keyring.fingerprint_key(), &request)
}

fn authorize(
    con: &mut Connection,
    sealer: &Sealer,
    fingerprints: &FingerprintKey,
    req: &AuthRequest<'_>,
) -> Result<(), Box<dyn Error>> {
    let pan: Pan = req.pan.parse()?;
    let fp = fingerprints.fingerprint(&pan);
    let masked = pan.masked(MaskPolicy::First6Last4);

    // The counter and the card blob share the fingerprint as hash tag: one slot on a cluster.
    let velocity_key = format!("vel:{{{fp}}}:1h");
    let (count, allowed) = count_payment(con, &velocity_key)?;
    if !allowed {
        println!("auth declined card={masked} reason=velocity count={count}/{VELOCITY_LIMIT}");
        return Ok(());
    }

    let card_key = format!("card:{{{fp}}}");
    let blob = Zeroizing::new(
        serde_json::json!({"pan": pan.expose_digits(), "exp": req.expiry, "name": req.name})
            .to_string(),
    );
    con.hset_sealed(sealer, &card_key, "blob", blob.as_str())?;
    redis::cmd("EXPIRE")
        .arg(&card_key)
        .arg(CARD_TTL_SECONDS)
        .exec(con)?;

    // What a capture step later reads back.
    let opened = con
        .hget_open(sealer, &card_key, "blob")?
        .ok_or("the card blob vanished")?;
    assert_eq!(opened.as_slice(), blob.as_bytes());

    println!(
        "auth approved card={masked} amount={}.{:02} velocity={count}/{VELOCITY_LIMIT} card_key={card_key}",
        req.amount_cents / 100,
        req.amount_cents % 100
    );
    Ok(())
}

/// Counts one payment in the card's window: (payments in the window, allowed?).
fn count_payment(con: &mut Connection, key: &str) -> Result<(i64, bool), Box<dyn Error>> {
    let info: Vec<Value> = redis::cmd("COMMAND").arg("INFO").arg("INCREX").query(con)?;
    if matches!(info.first(), Some(v) if !matches!(v, Value::Nil)) {
        // One command: the window starts with the first payment (ENX), and past the bound the
        // counter is left alone and the reply's second element is 0.
        let (count, applied): (i64, i64) = redis::cmd("INCREX")
            .arg(key)
            .arg("EX")
            .arg(WINDOW_SECONDS)
            .arg("ENX")
            .arg("UBOUND")
            .arg(VELOCITY_LIMIT)
            .query(con)?;
        return Ok((count, applied != 0));
    }
    // Elsewhere: INCR, and EXPIRE NX so that only the window's first payment sets the TTL.
    let (count, _): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg(key)
        .cmd("EXPIRE")
        .arg(key)
        .arg(WINDOW_SECONDS)
        .arg("NX")
        .query(con)?;
    Ok((count, count <= VELOCITY_LIMIT))
}
