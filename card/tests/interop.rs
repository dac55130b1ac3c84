//! Another language reads what Rust sealed: tests/open_vectors.py, written from FORMAT.md
//! alone, opens vectors.json with Python's `cryptography` package (and re-seals each vector
//! byte for byte, checks the must-fail cases and the fingerprints).
//!
//! This test fails — it does not skip — when python3 or `cryptography` is missing; CI installs
//! them with `python3 -m pip install --break-system-packages cryptography`.

use std::process::Command;

#[test]
fn python_cryptography_opens_the_vectors() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{dir}/tests/open_vectors.py"))
        .arg(format!("{dir}/vectors.json"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): the interop test needs python3 with `cryptography`")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "open_vectors.py failed:\n{text}");
    assert!(text.contains("14 vectors checked, 0 failures"), "{text}");
}

/// The script is not a rubber stamp: a vectors file with one byte changed fails it.
#[test]
fn python_check_fails_on_a_changed_vector() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let vectors = std::fs::read_to_string(format!("{dir}/vectors.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&vectors).unwrap();
    let sealed = doc["sealed"][1]["sealed_hex"].as_str().unwrap();
    // Flip the last hex digit (part of the tag).
    let last = sealed.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &sealed[..sealed.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vectors.json");
    std::fs::write(&path, vectors.replace(sealed, &flipped)).unwrap();
    let out = Command::new("python3")
        .arg(format!("{dir}/tests/open_vectors.py"))
        .arg(&path)
        .output()
        .expect("python3");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not open (tampered)"));
}
