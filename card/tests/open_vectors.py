#!/usr/bin/env python3
"""Opens card/vectors.json with Python's `cryptography` package, written from FORMAT.md alone.

Usage: python3 open_vectors.py vectors.json
Exit status 0 when every vector behaves as the file says; 1 on a mismatch; 3 when the
`cryptography` package is missing.
"""

import base64
import hashlib
import hmac
import json
import struct
import sys

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:
    print(
        "the Python package 'cryptography' is missing: "
        "python3 -m pip install --break-system-packages cryptography",
        file=sys.stderr,
    )
    sys.exit(3)

MAGIC = b"tkc"
VERSION = 1


class OpenError(Exception):
    """Why a value did not open: one of FORMAT.md's four classes."""

    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_keyring(doc):
    """FORMAT.md, "Keyring file"."""
    assert doc["format"] == "tallykv-keyring" and doc["version"] == 1
    keks = {}
    for entry in doc["keys"]:
        key = b64url_decode(entry["key"])
        assert len(key) == 32
        keks[entry["id"]] = key
    assert doc["active"] in keks
    fingerprint_key = b64url_decode(doc["fingerprint_key"])
    assert len(fingerprint_key) == 32
    return keks, fingerprint_key


def valid_key_id(text):
    if not 1 <= len(text) <= 32 or not text[0].isascii() or not text[0].isalpha():
        return False
    if not all(c.isascii() and (c.isalnum() or c in "._-") for c in text):
        return False
    run = longest = 0
    for c in text:
        run = run + 1 if c.isdigit() else 0
        longest = max(longest, run)
    return longest <= 8


def associated_data(key_id, key, field):
    """FORMAT.md, "Associated data"."""
    kid = key_id.encode("ascii")
    return (
        MAGIC
        + bytes([VERSION, len(kid)])
        + kid
        + struct.pack(">I", len(key))
        + key
        + struct.pack(">I", len(field))
        + field
    )


def open_sealed(keks, key, field, sealed):
    """FORMAT.md, "Opening"."""
    if len(sealed) < 4 or sealed[:3] != MAGIC:
        raise OpenError("not_sealed")
    if sealed[3] != VERSION:
        raise OpenError("unknown_version")
    pos = 4

    def take(count):
        nonlocal pos
        if len(sealed) - pos < count:
            raise OpenError("tampered")
        part = sealed[pos : pos + count]
        pos += count
        return part

    n = take(1)[0]
    if not 1 <= n <= 32:
        raise OpenError("tampered")
    try:
        key_id = take(n).decode("ascii")
    except UnicodeDecodeError:
        raise OpenError("tampered")
    if not valid_key_id(key_id):
        raise OpenError("tampered")
    (m,) = struct.unpack(">H", take(2))
    if m == 0:
        raise OpenError("tampered")
    wrapped = take(m)
    nonce = take(12)
    body = sealed[pos:]
    if len(body) < 16:
        raise OpenError("tampered")
    if key_id not in keks:
        raise OpenError("unknown_key_id")
    ad = associated_data(key_id, key, field)
    if len(wrapped) != 60:
        raise OpenError("tampered")
    try:
        dek = AESGCM(keks[key_id]).decrypt(wrapped[:12], wrapped[12:], ad)
        return AESGCM(dek).decrypt(nonce, body, ad)
    except InvalidTag:
        raise OpenError("tampered")


def seal_fixed(keks, key_id, dek, wrap_nonce, data_nonce, key, field, plaintext):
    """FORMAT.md, "Sealing", with the vector's DEK and nonces in place of random ones."""
    ad = associated_data(key_id, key, field)
    wrapped = wrap_nonce + AESGCM(keks[key_id]).encrypt(wrap_nonce, dek, ad)
    kid = key_id.encode("ascii")
    return (
        MAGIC
        + bytes([VERSION, len(kid)])
        + kid
        + struct.pack(">H", len(wrapped))
        + wrapped
        + data_nonce
        + AESGCM(dek).encrypt(data_nonce, plaintext, ad)
    )


def normalize_pan(text):
    """FORMAT.md, "Card numbers"."""
    text = text.strip()
    digits = []
    previous_was_separator = True  # no separator may come first
    for c in text:
        if c in "0123456789":
            digits.append(c)
            previous_was_separator = False
        elif c in " -" and not previous_was_separator:
            previous_was_separator = True
        else:
            raise ValueError("not a card number")
    if previous_was_separator or not 12 <= len(digits) <= 19:
        raise ValueError("not a card number")
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    if total % 10:
        raise ValueError("Luhn")
    return "".join(digits).encode("ascii")


def main(path):
    with open(path) as f:
        doc = json.load(f)
    keks, fingerprint_key = load_keyring(doc["keyring_file"])
    failures = []
    checked = 0
    for v in doc["sealed"]:
        h = lambda name: bytes.fromhex(v[name])  # noqa: E731
        key, field, sealed = h("key_hex"), h("field_hex"), h("sealed_hex")
        try:
            plaintext = open_sealed(keks, key, field, sealed)
        except OpenError as e:
            failures.append(f"{v['name']}: did not open ({e.kind})")
            continue
        if plaintext != h("plaintext_hex"):
            failures.append(f"{v['name']}: opened to the wrong plaintext")
        again = seal_fixed(
            keks, v["key_id"], h("dek_hex"), h("wrap_nonce_hex"), h("data_nonce_hex"), key, field, plaintext
        )
        if again != sealed:
            failures.append(f"{v['name']}: sealing with the vector's DEK and nonces gave other bytes")
        checked += 1
    for v in doc["must_fail"]:
        h = lambda name: bytes.fromhex(v[name])  # noqa: E731
        try:
            open_sealed(keks, h("key_hex"), h("field_hex"), h("sealed_hex"))
            failures.append(f"{v['name']}: opened but must not")
        except OpenError as e:
            if e.kind != v["error"]:
                failures.append(f"{v['name']}: failed as {e.kind}, expected {v['error']}")
        checked += 1
    for v in doc["fingerprints"]:
        mac = hmac.new(fingerprint_key, normalize_pan(v["pan"]), hashlib.sha256).digest()
        if b64url_encode(mac) != v["fingerprint"]:
            failures.append(f"fingerprint of {v['pan']!r} differs")
        checked += 1
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"{checked} vectors checked, {len(failures)} failures")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
