//! Seal, open and fingerprint per second on one core (criterion): what a payment service's
//! thread spends per card field.
//!
//!     cargo bench -p tallykv-card --bench seal

use std::hint::black_box;

use card::{KeyId, Keyring, Pan, Sealer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let keyring = Keyring::generate(KeyId::new("k1").expect("key id")).expect("keyring");
    let fingerprints = card::FingerprintKey::from_bytes(&[7; 32]);
    let sealer = Sealer::new(keyring);
    // A card blob as payment services cache it (PAN, expiry, name, network token).
    let blob = br#"{"pan":"4111111111111111","exp":"12/29","name":"ANN EXAMPLE","token":"tok_3f9a8c2e7b1d4056"}"#;
    let sealed = sealer.seal("card:{c42}", "blob", blob).expect("seal");
    let pan: Pan = "4111 1111 1111 1111".parse().expect("PAN");
    let mut g = c.benchmark_group("card");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seal 100-byte blob", |b| {
        b.iter(|| sealer.seal(black_box("card:{c42}"), "blob", black_box(blob)))
    });
    g.bench_function("open 100-byte blob", |b| {
        b.iter(|| sealer.open(black_box("card:{c42}"), "blob", black_box(&sealed)))
    });
    g.bench_function("fingerprint PAN", |b| {
        b.iter(|| fingerprints.fingerprint(black_box(&pan)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
