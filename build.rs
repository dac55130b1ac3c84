//! Build script: compiles the tiny C helper that gives tallykv access to the
//! platform's `long double` (80-bit x87 extended precision on x86_64), which
//! INCRBYFLOAT / HINCRBYFLOAT need in order to match Valkey byte for byte.

fn main() {
    println!("cargo:rerun-if-changed=src/util/longdouble.c");
    cc::Build::new()
        .file("src/util/longdouble.c")
        // Plain IEEE semantics: never let the C compiler relax float math.
        .flag_if_supported("-fno-fast-math")
        .flag_if_supported("-ffp-contract=off")
        .warnings(true)
        .compile("tallykv_longdouble");
}
