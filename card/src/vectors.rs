//! card/vectors.json: made here with fixed keys and nonces (seal_fixed), checked byte for
//! byte against the file, and opened. `TALLYKV_CARD_BLESS=1 cargo test -p tallykv-card
//! vectors` rewrites the file after a deliberate format change (which needs a new version).
//! tests/interop.rs opens the same file with Python's `cryptography`, from FORMAT.md alone.

use serde_json::{Value, json};

use crate::keyring::{KEY_LEN, KeyId, Keyring};
use crate::pan::Pan;
use crate::seal::{FixedRandom, Sealer, seal_fixed};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` bytes counting up from `start`: keys and nonces anyone can retype.
fn counting<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

struct Case {
    name: &'static str,
    key: Vec<u8>,
    field: Vec<u8>,
    key_id: &'static str,
    plaintext: Vec<u8>,
    seed: u8,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "a PAN in hash field pan",
            key: b"card:{c42}".to_vec(),
            field: b"pan".to_vec(),
            key_id: "k1",
            plaintext: b"4111111111111111".to_vec(),
            seed: 0x80,
        },
        Case {
            name: "a card blob under the second key",
            key: b"card:{c42}".to_vec(),
            field: b"blob".to_vec(),
            key_id: "kek-2026.b",
            plaintext: br#"{"pan":"5555555555554444","exp":"12/30","name":"A N OTHER"}"#.to_vec(),
            seed: 0x90,
        },
        Case {
            name: "an empty value in a plain string key (empty field)",
            key: b"token:7".to_vec(),
            field: Vec::new(),
            key_id: "k1",
            plaintext: Vec::new(),
            seed: 0xa0,
        },
        Case {
            name: "binary key, field and value over several AES blocks",
            key: vec![0x00, 0xff, 0x10, b'{', b'}', 0xc3],
            field: vec![0xfe, 0x00],
            key_id: "kek-2026.b",
            plaintext: (0..300u32).map(|i| (i * 7 % 256) as u8).collect(),
            seed: 0xb0,
        },
    ]
}

fn keyring_json() -> String {
    let b64 = |start: u8| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(counting::<KEY_LEN>(start))
    };
    json!({
        "format": "tallykv-keyring",
        "version": 1,
        "active": "kek-2026.b",
        "keys": [
            {"id": "k1", "key": b64(0x00)},
            {"id": "kek-2026.b", "key": b64(0x20)},
        ],
        "fingerprint_key": b64(0x40),
    })
    .to_string()
}

fn document() -> Value {
    let keyring =
        Keyring::from_json(keyring_json().as_bytes()).expect("the vectors' keyring parses");
    let mut sealed_cases = Vec::new();
    let mut first = Vec::new();
    for c in cases() {
        let fixed = FixedRandom {
            dek: counting(c.seed),
            wrap_nonce: counting(c.seed.wrapping_add(0x40)),
            data_nonce: counting(c.seed.wrapping_add(0x50)),
        };
        let id = KeyId::new(c.key_id).expect("vector key ids are valid");
        let sealed = seal_fixed(&keyring, &id, &fixed, &c.key, &c.field, &c.plaintext)
            .expect("sealing a vector");
        if first.is_empty() {
            first = sealed.clone();
        }
        sealed_cases.push(json!({
            "name": c.name,
            "key_hex": hex(&c.key),
            "field_hex": hex(&c.field),
            "key_id": c.key_id,
            "dek_hex": hex(&fixed.dek),
            "wrap_nonce_hex": hex(&fixed.wrap_nonce),
            "data_nonce_hex": hex(&fixed.data_nonce),
            "plaintext_hex": hex(&c.plaintext),
            "sealed_hex": hex(&sealed),
        }));
    }
    // Variations of the first vector that must not open, and why.
    let flip_last = {
        let mut s = first.clone();
        *s.last_mut().expect("a sealed value is not empty") ^= 1;
        s
    };
    let other_id = {
        let mut s = first.clone();
        s[6] = b'9'; // "k1" -> "k9"
        s
    };
    let version_2 = {
        let mut s = first.clone();
        s[3] = 2;
        s
    };
    let fail = |name: &str, key: &[u8], field: &[u8], sealed: &[u8], error: &str| {
        json!({
            "name": name,
            "key_hex": hex(key),
            "field_hex": hex(field),
            "sealed_hex": hex(sealed),
            "error": error,
        })
    };
    let here = b"card:{c42}";
    let must_fail = json!([
        fail("copied to another field", here, b"pan2", &first, "tampered"),
        fail(
            "copied to another key",
            b"card:{c43}",
            b"pan",
            &first,
            "tampered"
        ),
        fail(
            "last tag byte flipped",
            here,
            b"pan",
            &flip_last,
            "tampered"
        ),
        fail(
            "key id not in the keyring",
            here,
            b"pan",
            &other_id,
            "unknown_key_id"
        ),
        fail(
            "format version 2",
            here,
            b"pan",
            &version_2,
            "unknown_version"
        ),
        fail(
            "a plaintext PAN",
            here,
            b"pan",
            b"4111111111111111",
            "not_sealed"
        ),
    ]);
    let fingerprints: Vec<Value> = [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "378282246310005",
        "6011111111111117",
    ]
    .iter()
    .map(|text| {
        let pan = Pan::parse(text).expect("vector PANs are valid");
        json!({"pan": text, "fingerprint": keyring.fingerprint_key().fingerprint(&pan).as_str()})
    })
    .collect();
    json!({
        "comment": "tallykv-card test vectors (FORMAT.md). Fixed keys and nonces: never seal real data like this.",
        "keyring_file": serde_json::from_str::<Value>(&keyring_json()).expect("json! output parses"),
        "sealed": sealed_cases,
        "must_fail": must_fail,
        "fingerprints": fingerprints,
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn vectors_file_is_what_this_build_seals() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors.json");
    let text = serde_json::to_string_pretty(&document()).expect("serializing vectors") + "\n";
    if std::env::var_os("TALLYKV_CARD_BLESS").is_some() {
        std::fs::write(path, &text).expect("writing vectors.json");
    }
    let on_disk = std::fs::read_to_string(path).expect("reading card/vectors.json");
    assert!(
        on_disk == text,
        "card/vectors.json differs from what this build seals (see vectors.rs)"
    );
}

#[test]
fn vectors_open() {
    let doc = document();
    let keyring = Keyring::from_json(doc["keyring_file"].to_string().as_bytes()).expect("keyring");
    let sealer = Sealer::new(keyring);
    for c in doc["sealed"].as_array().expect("sealed") {
        let s = |k: &str| unhex(c[k].as_str().expect("string"));
        let opened = sealer
            .open(s("key_hex"), s("field_hex"), &s("sealed_hex"))
            .expect("a vector opens");
        assert_eq!(&opened[..], &s("plaintext_hex")[..]);
    }
    for c in doc["must_fail"].as_array().expect("must_fail") {
        let s = |k: &str| unhex(c[k].as_str().expect("string"));
        let err = sealer
            .open(s("key_hex"), s("field_hex"), &s("sealed_hex"))
            .expect_err("must fail");
        let class = match err {
            crate::SealError::Tampered => "tampered",
            crate::SealError::UnknownKeyId(_) => "unknown_key_id",
            crate::SealError::UnknownVersion(_) => "unknown_version",
            crate::SealError::NotSealed => "not_sealed",
            other => panic!("{other:?}"),
        };
        assert_eq!(class, c["error"], "{}", c["name"]);
    }
}
