//! In-process KMS throughput: operations per second for Encrypt, Decrypt
//! and GenerateDataKey (one thread, then the aggregate of 2 and 4 threads
//! sharing one `Kms`), and Sign and Verify for each asymmetric key spec,
//! through the full request path (authorization, SQLite transaction, audit
//! record, unsealing the key).
//!
//! `BENCH_SECS` sets the seconds per figure (3); `BENCH_SKIP_ASYM=1` skips
//! the Sign/Verify figures (what `benches/asym.rs` measures without the
//! request path).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyvol::clock::Clock;
use keyvol::home::Home;
use keyvol::iam::Iam;
use keyvol::ids::Region;
use keyvol::kms::api::{
    Blob, CreateKeyRequest, DecryptRequest, EncryptRequest, GenerateDataKeyRequest, SecretBlob,
};
use keyvol::kms::asym::KeySpec;
use keyvol::kms::ops::asym::{SignRequest, VerifyRequest};
use keyvol::kms::{Kms, RequestContext};
use keyvol::secret::SecretBytes;

fn rate(name: &str, budget: Duration, mut f: impl FnMut()) -> f64 {
    // Warm up, then run for the budget.
    for _ in 0..20 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    let per_sec = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "{name:<32} {per_sec:>10.0} ops/s  ({:.1} us/op)",
        1e6 / per_sec
    );
    per_sec
}

/// The aggregate rate of `threads` threads each running `f` in a loop for
/// the budget (all start together, after a warm-up of their own).
fn rate_threads(name: &str, threads: usize, budget: Duration, f: impl Fn() + Sync) -> f64 {
    let barrier = std::sync::Barrier::new(threads);
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..20 {
                        f();
                    }
                    barrier.wait();
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < budget {
                        f();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("bench thread"))
            .sum()
    });
    let per_sec = total as f64 / budget.as_secs_f64();
    println!(
        "{:<32} {per_sec:>10.0} ops/s  ({threads} threads, {:.1} us/op each)",
        format!("{name} x{threads}"),
        1e6 * threads as f64 / per_sec
    );
    per_sec
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Clock::system();
    let home = Arc::new(Home::open(dir.path()).expect("home"));
    let iam = Iam::open(home.clone(), clock.clone()).expect("iam");
    let kms = Kms::open(home, clock).expect("kms");
    let ctx = RequestContext::new(
        iam.profile_caller("default").expect("profile"),
        Region::default_region(),
    );
    let key = kms
        .create_key(&ctx, Default::default())
        .expect("create key")
        .key_metadata["KeyId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let budget = Duration::from_secs(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    );
    let enc = || EncryptRequest {
        key_id: Some(key.clone()),
        plaintext: Some(SecretBlob(SecretBytes::random(256))),
        ..Default::default()
    };
    println!("KMS in-process (authorization, audit record, SQLite WAL commit per call), 256-byte plaintexts");
    let encrypt = || {
        kms.encrypt(&ctx, enc()).expect("encrypt");
    };
    let blob = kms.encrypt(&ctx, enc()).expect("encrypt").ciphertext_blob;
    let decrypt = || {
        kms.decrypt(
            &ctx,
            DecryptRequest {
                ciphertext_blob: Some(blob.clone()),
                ..Default::default()
            },
        )
        .expect("decrypt");
    };
    let generate = || {
        kms.generate_data_key(
            &ctx,
            GenerateDataKeyRequest {
                key_id: Some(key.clone()),
                key_spec: Some("AES_256".into()),
                ..Default::default()
            },
        )
        .expect("generate data key");
    };
    rate("Encrypt", budget, encrypt);
    rate("Decrypt", budget, decrypt);
    rate("GenerateDataKey (AES_256)", budget, generate);
    for threads in [2, 4] {
        rate_threads("Encrypt", threads, budget, encrypt);
        rate_threads("Decrypt", threads, budget, decrypt);
        rate_threads("GenerateDataKey (AES_256)", threads, budget, generate);
    }
    if std::env::var_os("BENCH_SKIP_ASYM").is_some_and(|v| v == "1") {
        return;
    }
    beside_rsa_decrypt(&kms, &ctx, budget, &encrypt);
    println!("Sign / Verify, 256-byte RAW messages");
    let message = Blob(vec![0x42; 256]);
    for spec in KeySpec::ALL {
        if !spec.is_asymmetric() {
            continue;
        }
        let key = asymmetric_key(&kms, &ctx, &spec.to_string(), "SIGN_VERIFY");
        let alg = spec.signing_algorithms()[0].to_string();
        let sign = || SignRequest {
            key_id: Some(key.clone()),
            message: Some(message.clone()),
            signing_algorithm: Some(alg.clone()),
            ..Default::default()
        };
        rate(&format!("Sign {spec} ({alg})"), budget, || {
            kms.sign(&ctx, sign()).expect("sign");
        });
        let signature = kms.sign(&ctx, sign()).expect("sign").signature;
        rate(&format!("Verify {spec}"), budget, || {
            kms.verify(
                &ctx,
                VerifyRequest {
                    key_id: Some(key.clone()),
                    message: Some(message.clone()),
                    signature: Some(signature.clone()),
                    signing_algorithm: Some(alg.clone()),
                    ..Default::default()
                },
            )
            .expect("verify");
        });
    }
}

/// A new key of `spec` for `usage`: its key id.
fn asymmetric_key(kms: &Kms, ctx: &RequestContext, spec: &str, usage: &str) -> String {
    kms.create_key(
        ctx,
        CreateKeyRequest {
            key_spec: Some(spec.into()),
            key_usage: Some(usage.into()),
            ..Default::default()
        },
    )
    .expect("create asymmetric key")
    .key_metadata["KeyId"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Encrypt on one thread while another decrypts with an RSA_4096 key in a
/// loop: an RSA decryption takes several ms, and one that held the write
/// connection held every other call up for that long.
fn beside_rsa_decrypt(
    kms: &Kms,
    ctx: &RequestContext,
    budget: Duration,
    encrypt: &(dyn Fn() + Sync),
) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let rsa = asymmetric_key(kms, ctx, "RSA_4096", "ENCRYPT_DECRYPT");
    let alg = Some("RSAES_OAEP_SHA_256".to_string());
    let blob = kms
        .encrypt(
            ctx,
            EncryptRequest {
                key_id: Some(rsa.clone()),
                plaintext: Some(SecretBlob(SecretBytes::random(32))),
                encryption_algorithm: alg.clone(),
                ..Default::default()
            },
        )
        .expect("RSA encrypt")
        .ciphertext_blob;
    let stop = AtomicBool::new(false);
    let decrypted = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                kms.decrypt(
                    ctx,
                    DecryptRequest {
                        key_id: Some(rsa.clone()),
                        ciphertext_blob: Some(blob.clone()),
                        encryption_algorithm: alg.clone(),
                        ..Default::default()
                    },
                )
                .expect("RSA decrypt");
                decrypted.fetch_add(1, Ordering::Relaxed);
            }
        });
        let start = Instant::now();
        rate("Encrypt beside RSA_4096 Decrypt", budget, encrypt);
        stop.store(true, Ordering::Relaxed);
        let n = decrypted.load(Ordering::Relaxed) as f64;
        println!(
            "{:<32} {:>10.0} ops/s  (the other thread)",
            "Decrypt RSA_4096 (RSAES_OAEP_SHA_256)",
            n / start.elapsed().as_secs_f64()
        );
    });
}
