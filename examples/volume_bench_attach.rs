//! Bench helper until `keyvol volume attach` exists: measures sector crypto
//! throughput, or attaches a device with a random data key through the
//! library API and serves it over FUSE until it is unmounted.
//!
//! ```text
//! volume_bench_attach crypto [MIB]
//! volume_bench_attach attach BACKING SIZE_MIB MOUNTPOINT [THREADS]
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use keyvol::fuse::{serve, FuseOptions};
use keyvol::secret::VolumeDataKey;
use keyvol::volume::{ChangeLog, EncryptedDevice, SectorCipher, CHUNK_SIZE, SECTOR_SIZE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("crypto") => crypto(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64)),
        Some("attach") if args.len() >= 4 => attach(
            Path::new(&args[1]),
            args[2].parse().unwrap_or(0),
            Path::new(&args[3]),
            args.get(4).and_then(|s| s.parse().ok()).unwrap_or(4),
        ),
        _ => Err("usage: volume_bench_attach crypto [MIB] | attach BACKING SIZE_MIB MOUNTPOINT [THREADS]".into()),
    };
    if let Err(e) = res {
        eprintln!("volume_bench_attach: {e}");
        std::process::exit(1);
    }
}

fn crypto(mib: usize) -> Result<(), Box<dyn std::error::Error>> {
    let cipher = SectorCipher::new(&VolumeDataKey::random())?;
    let mut buf = vec![0x5au8; mib << 20];
    cipher.encrypt_sectors(0, &mut buf)?; // warm up
    for (name, enc) in [("encrypt", true), ("decrypt", false)] {
        let start = Instant::now();
        let mut bytes = 0usize;
        while start.elapsed().as_secs_f64() < 1.5 {
            if enc {
                cipher.encrypt_sectors(7, &mut buf)?;
            } else {
                cipher.decrypt_sectors(7, &mut buf)?;
            }
            bytes += buf.len();
        }
        let gbs = bytes as f64 / start.elapsed().as_secs_f64() / 1e9;
        println!("xts_{name}_gbps {gbs:.3}");
    }
    println!("sector_size {SECTOR_SIZE}");
    Ok(())
}

fn attach(
    backing: &Path,
    size_mib: u64,
    mountpoint: &Path,
    threads: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let size = size_mib << 20;
    let mut log_path = PathBuf::from(backing);
    log_path.set_extension("changes");
    let changes = ChangeLog::open(&log_path, size.div_ceil(CHUNK_SIZE))?;
    let cipher = SectorCipher::new(&VolumeDataKey::random())?;
    let device = Arc::new(EncryptedDevice::open(backing, size, cipher, changes)?);
    let opts = FuseOptions {
        threads,
        ..FuseOptions::default()
    };
    let handle = serve(device.clone(), mountpoint, &opts)?;
    println!("ready {}", handle.device_path().display());
    std::io::stdout().flush()?;
    handle.wait()?;
    device.close()?;
    Ok(())
}
