//! Micro-benchmark of the KMS asymmetric primitives: Sign and Verify per
//! second for each signing key spec (and GenerateMac for HMAC_256).
//!
//! Usage: `cargo run --release --example asym_bench -- [--seconds S] [--json] [SPEC...]`
//! Each figure runs for S seconds (default 1) on one thread over a 64-byte
//! RAW message; SPEC filters by KeySpec name (e.g. RSA_2048 ECC_NIST_P256).

use std::time::{Duration, Instant};

use keyvol::kms::asym::{self, KeySpec, MessageType, PrivateKeyMaterial};

struct Row {
    spec: KeySpec,
    algorithm: String,
    sign_per_s: f64,
    verify_per_s: f64,
}

/// Calls `op` repeatedly for `budget` and returns calls per second.
fn rate(budget: Duration, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget || n == 0 {
        op();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn bench(spec: KeySpec, budget: Duration) -> Result<Row, String> {
    let key = PrivateKeyMaterial::generate(spec).map_err(|e| e.to_string())?;
    let message = [0x5au8; 64];
    if let Some(mac_alg) = spec.mac_algorithm() {
        let tag = asym::generate_mac(&key, mac_alg, &message).map_err(|e| e.to_string())?;
        let sign_per_s = rate(budget, || {
            let _ = asym::generate_mac(&key, mac_alg, &message);
        });
        let verify_per_s = rate(budget, || {
            assert!(matches!(
                asym::verify_mac(&key, mac_alg, &message, &tag),
                Ok(true)
            ));
        });
        return Ok(Row {
            spec,
            algorithm: mac_alg.to_string(),
            sign_per_s,
            verify_per_s,
        });
    }
    let alg = spec.signing_algorithms()[0];
    let sig = asym::sign(&key, alg, MessageType::Raw, &message).map_err(|e| e.to_string())?;
    let sign_per_s = rate(budget, || {
        let _ = asym::sign(&key, alg, MessageType::Raw, &message);
    });
    let verify_per_s = rate(budget, || {
        let ok = asym::verify(&key, alg, MessageType::Raw, &message, &sig);
        assert!(matches!(ok, Ok(true)), "benchmark signature must verify");
    });
    Ok(Row {
        spec,
        algorithm: alg.to_string(),
        sign_per_s,
        verify_per_s,
    })
}

fn main() {
    let mut seconds = 1.0f64;
    let mut json = false;
    let mut only: Vec<KeySpec> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = match args.next().and_then(|s| s.parse().ok()) {
                    Some(s) if s > 0.0 => s,
                    _ => {
                        eprintln!("--seconds needs a positive number");
                        std::process::exit(2);
                    }
                }
            }
            "--json" => json = true,
            name => match name.parse::<KeySpec>() {
                Ok(spec) => only.push(spec),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
            },
        }
    }
    let specs = [
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
        KeySpec::EccNistP256,
        KeySpec::EccNistP384,
        KeySpec::EccNistP521,
        KeySpec::EccSecgP256k1,
        KeySpec::EccNistEdwards25519,
        KeySpec::Hmac256,
    ];
    let budget = Duration::from_secs_f64(seconds);
    if !json {
        println!(
            "{:<22} {:<26} {:>12} {:>12}",
            "KeySpec", "Algorithm", "Sign/s", "Verify/s"
        );
    }
    let mut rows = Vec::new();
    for spec in specs {
        if !only.is_empty() && !only.contains(&spec) {
            continue;
        }
        match bench(spec, budget) {
            Ok(r) => {
                if !json {
                    println!(
                        "{:<22} {:<26} {:>12.0} {:>12.0}",
                        r.spec.as_str(),
                        r.algorithm,
                        r.sign_per_s,
                        r.verify_per_s
                    );
                }
                rows.push(r);
            }
            Err(e) => {
                eprintln!("{spec}: {e}");
                std::process::exit(1);
            }
        }
    }
    if json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "KeySpec": r.spec.as_str(),
                    "Algorithm": r.algorithm,
                    "SignPerSecond": r.sign_per_s.round(),
                    "VerifyPerSecond": r.verify_per_s.round(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(out));
    }
}
