//! The offline `tallykv-card` commands through the built binary: keygen, rotate, seal, open,
//! fingerprint, mask.

mod common;

use std::os::unix::fs::PermissionsExt;

use card::{Envelope, KeyId, Keyring, Pan};
use common::{card, keygen, stderr, stdout};

#[test]
fn keygen_writes_a_0600_keyring_and_never_overwrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = keygen(dir.path());
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let keyring = Keyring::from_file(path.as_ref()).unwrap();
    assert_eq!(
        keyring.key_ids().map(KeyId::as_str).collect::<Vec<_>>(),
        ["k1"]
    );

    let again = card(&["keygen", "--out", &path], b"", &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    // The file is untouched.
    let same = Keyring::from_file(path.as_ref()).unwrap();
    assert_eq!(same.to_json(), keyring.to_json());

    let bad_id = card(
        &[
            "keygen",
            "--out",
            &format!("{path}.2"),
            "--id",
            "4111111111111111",
        ],
        b"",
        &[],
    );
    assert_eq!(bad_id.status.code(), Some(2));
}

#[test]
fn seal_and_open_through_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keygen(dir.path());
    let blob = br#"{"pan":"4111111111111111","exp":"12/30"}"#;

    let sealed = card(
        &["seal", "card:{c1}", "blob", "--keyring", &keys],
        blob,
        &[],
    );
    assert!(sealed.status.success(), "{}", stderr(&sealed));
    assert!(sealed.stdout.starts_with(b"tkc\x01"));
    assert!(!sealed.stdout.windows(16).any(|w| w == b"4111111111111111"));

    let opened = card(
        &["open", "card:{c1}", "blob", "--keyring", &keys],
        &sealed.stdout,
        &[],
    );
    assert!(opened.status.success(), "{}", stderr(&opened));
    assert_eq!(opened.stdout, blob);

    // Bound to its place: the same bytes do not open as another field.
    let moved = card(
        &["open", "card:{c1}", "blob2", "--keyring", &keys],
        &sealed.stdout,
        &[],
    );
    assert_eq!(moved.status.code(), Some(2));
    assert!(
        stderr(&moved).contains("does not open"),
        "{}",
        stderr(&moved)
    );
    assert!(moved.stdout.is_empty());

    // Plaintext handed to open is refused as not sealed.
    let plain = card(
        &["open", "card:{c1}", "blob", "--keyring", &keys],
        blob,
        &[],
    );
    assert_eq!(plain.status.code(), Some(2));
    assert!(
        stderr(&plain).contains("not a sealed value"),
        "{}",
        stderr(&plain)
    );
    assert!(!stderr(&plain).contains("4111"));
}

#[test]
fn base64_and_the_keyring_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keygen(dir.path());
    let json = std::fs::read_to_string(&keys).unwrap();
    let env = [("TALLYKV_CARD_KEYRING", json.as_str())];

    let sealed = card(&["seal", "k", "", "--base64"], b"hello", &env);
    assert!(sealed.status.success(), "{}", stderr(&sealed));
    let text = stdout(&sealed);
    assert!(text.ends_with('\n') && text.trim().bytes().all(|b| b.is_ascii_graphic()));

    let opened = card(&["open", "k", "", "--base64"], text.as_bytes(), &env);
    assert_eq!(opened.stdout, b"hello", "{}", stderr(&opened));

    let none = card(&["open", "k", "", "--base64"], text.as_bytes(), &[]);
    assert_eq!(none.status.code(), Some(2));
    assert!(
        stderr(&none).contains("TALLYKV_CARD_KEYRING"),
        "{}",
        stderr(&none)
    );
}

#[test]
fn rotate_adds_an_active_key_and_old_values_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keygen(dir.path());
    let old = card(&["seal", "k", "f", "--keyring", &keys], b"v1", &[]);

    let rotated = card(&["rotate", "--keyring", &keys], b"", &[]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let new = card(&["seal", "k", "f", "--keyring", &keys], b"v2", &[]);
    assert_eq!(Envelope::parse(&old.stdout).unwrap().key_id.as_str(), "k1");
    assert_eq!(Envelope::parse(&new.stdout).unwrap().key_id.as_str(), "k2");
    assert_eq!(
        card(&["open", "k", "f", "--keyring", &keys], &old.stdout, &[]).stdout,
        b"v1"
    );
    assert_eq!(
        card(&["open", "k", "f", "--keyring", &keys], &new.stdout, &[]).stdout,
        b"v2"
    );

    let named = card(
        &["rotate", "--keyring", &keys, "--id", "kek-2027"],
        b"",
        &[],
    );
    assert!(named.status.success(), "{}", stderr(&named));
    let dup = card(&["rotate", "--keyring", &keys, "--id", "k1"], b"", &[]);
    assert_eq!(dup.status.code(), Some(2));
}

#[test]
fn fingerprint_matches_the_library_and_hides_digits() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keygen(dir.path());
    let out = card(
        &["fingerprint", "--keyring", &keys],
        b"4111 1111 1111 1111\n4111-1111-1111-1111\n378282246310005\n",
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], lines[1], "separators do not change a fingerprint");
    assert_ne!(lines[0], lines[2]);
    let keyring = Keyring::from_file(keys.as_ref()).unwrap();
    let pan = Pan::parse("4111111111111111").unwrap();
    assert_eq!(
        lines[0],
        keyring.fingerprint_key().fingerprint(&pan).as_str()
    );
    assert!(lines.iter().all(|l| l.len() == 43 && !l.contains('=')));
}

#[test]
fn mask_policies_and_bad_lines() {
    let input = b"4111 1111 1111 1111\n378282246310005\n";
    let last4 = card(&["mask"], input, &[]);
    assert_eq!(stdout(&last4), "************1111\n***********0005\n");
    let first6 = card(&["mask", "--policy", "first6-last4"], input, &[]);
    assert_eq!(stdout(&first6), "411111******1111\n378282*****0005\n");

    let bad = card(&["mask"], b"4111111111111111\n4111111111111112\n", &[]);
    assert_eq!(bad.status.code(), Some(2));
    let err = stderr(&bad);
    assert!(err.contains("line 2") && err.contains("Luhn"), "{err}");
    assert!(
        !err.contains("4111111111111112"),
        "an error never quotes the number: {err}"
    );

    let policy = card(&["mask", "--policy", "everything"], input, &[]);
    assert_eq!(policy.status.code(), Some(2));
}
