//! Cross-checks `SectorCipher` against an independent AES-XTS: Python's
//! `cryptography` (OpenSSL) with key = the 64-byte data key and tweak =
//! sector index as 16 little-endian bytes, i.e. dm-crypt aes-xts-plain64.
//! Python comes from $KEYVOL_VENV or ~/.cache/keyvol-venv.

use std::path::PathBuf;
use std::process::Command;

use keyvol::secret::VolumeDataKey;
use keyvol::volume::{SectorCipher, SECTOR_SIZE};
use rand::RngCore;

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("KEYVOL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/keyvol-venv")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup.sh (venv with the cryptography package)",
        py.display()
    );
    py
}

const SCRIPT: &str = r#"
import sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key = bytes.fromhex(sys.argv[1]); first = int(sys.argv[2]); mode = sys.argv[3]
src, dst = sys.argv[4], sys.argv[5]
data = open(src, 'rb').read(); out = bytearray()
for i in range(len(data) // 4096):
    c = Cipher(algorithms.AES(key), modes.XTS((first + i).to_bytes(16, 'little')))
    op = c.encryptor() if mode == 'enc' else c.decryptor()
    out += op.update(data[i * 4096:(i + 1) * 4096]) + op.finalize()
open(dst, 'wb').write(out)
"#;

fn python(key_hex: &str, first: u64, mode: &str, input: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&src, input).unwrap();
    let out = Command::new(venv_python())
        .args(["-c", SCRIPT, key_hex, &first.to_string(), mode])
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dst).unwrap()
}

#[test]
fn python_cryptography_agrees_both_ways() {
    let mut raw = [0u8; 64];
    rand::thread_rng().fill_bytes(&mut raw);
    let key = VolumeDataKey::from_slice(&raw).unwrap();
    let key_hex = hex::encode(raw);
    let cipher = SectorCipher::new(&key).unwrap();

    // Sector numbers near 2^32 and 2^40 exercise the 64-bit tweak bytes.
    for first in [0u64, 1, 0xffff_fffe, (1 << 40) + 3] {
        let mut plain = vec![0u8; 5 * SECTOR_SIZE];
        rand::thread_rng().fill_bytes(&mut plain);

        let mut ours = plain.clone();
        cipher.encrypt_sectors(first, &mut ours).unwrap();
        assert_ne!(ours, plain);
        assert_eq!(
            python(&key_hex, first, "dec", &ours),
            plain,
            "python decrypts ours at {first}"
        );

        let theirs = python(&key_hex, first, "enc", &plain);
        assert_eq!(theirs, ours, "same ciphertext at sector {first}");
        let mut back = theirs;
        cipher.decrypt_sectors(first, &mut back).unwrap();
        assert_eq!(back, plain, "we decrypt python's at {first}");
    }
}
