//! Sign and Verify per second of the KMS asymmetric primitives (what a Sign
//! or Verify call runs once authorized: hashing the RAW message and the
//! signature operation) for the key specs `openssl speed rsa2048 ecdsap256
//! ed25519` measures, and the three ML-DSA specs, on one thread.
//!
//! Rates are per second of this thread's CPU time, as `openssl speed`
//! counts them (its default), so the ratio holds on a shared machine.
//! Prints `asym SPEC SIGN_PER_S VERIFY_PER_S` lines for
//! scripts/bench-kms.sh. Env: BENCH_SECS (CPU seconds per figure, 2).

use keyvol::kms::asym::{self, KeySpec, MessageType, PrivateKeyMaterial};

/// CPU time of the calling thread, in seconds.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Calls `op` until `secs` of CPU time have passed; calls per CPU second.
fn rate(secs: f64, mut op: impl FnMut()) -> f64 {
    for _ in 0..10 {
        op();
    }
    let start = cpu_seconds();
    let mut n = 0u64;
    while cpu_seconds() - start < secs {
        op();
        n += 1;
    }
    n as f64 / (cpu_seconds() - start)
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    // openssl speed signs 36-byte inputs; a short RAW message keeps the
    // hash out of the comparison.
    let message = [0x5au8; 64];
    for spec in [
        KeySpec::Rsa2048,
        KeySpec::EccNistP256,
        KeySpec::EccNistEdwards25519,
        KeySpec::MlDsa44,
        KeySpec::MlDsa65,
        KeySpec::MlDsa87,
    ] {
        let key = PrivateKeyMaterial::generate(spec).expect("key generation");
        let alg = spec.signing_algorithms()[0];
        let sig = asym::sign(&key, alg, MessageType::Raw, &message).expect("sign");
        let sign = rate(secs, || {
            asym::sign(&key, alg, MessageType::Raw, &message).expect("sign");
        });
        let verify = rate(secs, || {
            let ok = asym::verify(&key, alg, MessageType::Raw, &message, &sig);
            assert!(matches!(ok, Ok(true)), "benchmark signature must verify");
        });
        println!("asym {spec} {sign:.0} {verify:.0}");
    }
}
