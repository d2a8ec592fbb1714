use keyvol::secret::VolumeDataKey;
use keyvol::volume::{ChangeLog, EncryptedDevice, SectorCipher, CHUNK_SIZE};
use std::path::PathBuf;
use std::time::Instant;
fn main() {
    let dir = PathBuf::from("/tmp/devread");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let size: u64 = 256 << 20;
    let backing = dir.join("vol.img");
    let changes = ChangeLog::open(&dir.join("vol.changes"), size.div_ceil(CHUNK_SIZE)).unwrap();
    let cipher = SectorCipher::new(&VolumeDataKey::random()).unwrap();
    let dev = EncryptedDevice::open(&backing, size, cipher, changes).unwrap();
    let req = 1usize << 20;
    let data: Vec<u8> = (0..req).map(|i| (i * 7 + 1) as u8).collect();
    let mut buf = vec![0u8; req];
    for round in 0..3 {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed().as_secs_f64() < 2.0 {
            let off = (n * req as u64) % size;
            dev.write_at(&data, off).unwrap();
            n += 1;
        }
        let w = n as f64 * req as f64 / t.elapsed().as_secs_f64() / 1e9;
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed().as_secs_f64() < 2.0 {
            let off = (n * req as u64) % size;
            dev.read_at(&mut buf, off).unwrap();
            n += 1;
        }
        let r = n as f64 * req as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!("round {round} write {w:.2} GB/s read {r:.2} GB/s");
    }
}
