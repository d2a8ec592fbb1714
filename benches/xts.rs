//! Sector crypto throughput on one thread: `SectorCipher` encrypting and
//! decrypting in place, one 4096-byte sector per call (the unit of
//! `openssl speed -evp aes-256-xts -bytes 4096`, each call setting its own
//! tweak) and 1 MiB per call (the device's largest request), over a 1 MiB
//! buffer that stays in cache as openssl's does.
//!
//! Rates are per second of this thread's CPU time, as `openssl speed`
//! counts them (its default is CPU time, not wall time), so the ratio holds
//! on a machine shared with other work. Prints
//! `xts_{encrypt,decrypt}_{4k,1m}_gbps X` lines for scripts/bench-volume.sh.
//! Env: BENCH_SECS (CPU seconds per figure, 1.5).

use keyvol::secret::VolumeDataKey;
use keyvol::volume::{SectorCipher, SECTOR_SIZE};

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

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.5);
    let cipher =
        SectorCipher::new(&VolumeDataKey::random()).expect("a random key has distinct halves");
    let mut buf = vec![0x5au8; 1 << 20];
    let sectors = buf.len() / SECTOR_SIZE;
    for (name, per_call) in [("4k", SECTOR_SIZE), ("1m", buf.len())] {
        for (dir, encrypt) in [("encrypt", true), ("decrypt", false)] {
            let run = |b: &mut [u8], first: u64| {
                let r = if encrypt {
                    cipher.encrypt_sectors(first, b)
                } else {
                    cipher.decrypt_sectors(first, b)
                };
                r.expect("whole sectors");
            };
            for (i, chunk) in buf.chunks_exact_mut(per_call).enumerate() {
                run(chunk, i as u64); // warm up
            }
            let start = cpu_seconds();
            let mut bytes = 0usize;
            let mut round = 0u64;
            while cpu_seconds() - start < secs {
                for (i, chunk) in buf.chunks_exact_mut(per_call).enumerate() {
                    run(chunk, round * sectors as u64 + i as u64);
                }
                bytes += buf.len();
                round += 1;
            }
            let gbs = bytes as f64 / (cpu_seconds() - start) / 1e9;
            println!("xts_{dir}_{name}_gbps {gbs:.3}");
        }
    }
}
