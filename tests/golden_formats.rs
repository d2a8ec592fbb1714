//! Golden fixtures of the stored formats, made by keyvol 0.1 and committed
//! under tests/fixtures: every later version must still open them. The
//! home `home-v1` (root key, sealed key material, access keys and audit
//! chain in state.db), a KMS ciphertext blob and an envelope file made with
//! its key, a change log written byte by byte as the README tables it, and
//! a snapshot manifest sealed under a fixed test data key (64 bytes of
//! 0x42). Never regenerate these files: a format change adds a new fixture.
//! `home-v2` (keyvol with multi-Region keys) holds a multi-Region key
//! `mrk-...` with its primary in us-east-1 and a replica in us-west-2, and
//! `kms-ciphertext-v2-multi-region.bin` is a blob of format 0x02 sealed by
//! the primary.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A private copy of the fixture home: opening a home may migrate it.
fn home_copy() -> tempfile::TempDir {
    home_copy_of("home-v1")
}

fn home_copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in ["root.key", "state.db"] {
        let to = dir.path().join(f);
        std::fs::copy(fixture(name).join(f), &to).unwrap();
        // A checkout does not keep modes; a home's files are 0600.
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

const PLAINTEXT: &[u8] = b"keyvol golden plaintext v1";

fn key_id() -> String {
    std::fs::read_to_string(fixture("home-v1.key-id"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn the_v1_ciphertext_blob_keeps_its_layout_and_decrypts() {
    let blob = std::fs::read(fixture("kms-ciphertext-v1.bin")).unwrap();
    // The README's table: version, key id, material version, salt, GCM.
    assert_eq!(blob[0], 0x01, "format version");
    let id = uuid::Uuid::parse_str(&key_id()).unwrap();
    assert_eq!(&blob[1..17], id.as_bytes(), "key id");
    assert_eq!(u32::from_le_bytes(blob[17..21].try_into().unwrap()), 1);
    assert_eq!(blob.len(), 53 + PLAINTEXT.len() + 16);

    let home = home_copy();
    let path = fixture("kms-ciphertext-v1.bin");
    let out = keyvol_json(
        home.path(),
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", path.display()),
            "--encryption-context",
            "purpose=golden",
        ],
    );
    assert_eq!(unb64(&out["Plaintext"]), PLAINTEXT);
    assert!(out["KeyId"].as_str().unwrap().ends_with(&key_id()));
    // The context is bound: another one fails, opaquely.
    let bad = keyvol(
        home.path(),
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", path.display()),
            "--encryption-context",
            "purpose=other",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("(InvalidCiphertextException)"));
}

#[test]
fn the_v1_envelope_file_decrypts() {
    let env = std::fs::read(fixture("envelope-v1.kvenv")).unwrap();
    assert_eq!(&env[..8], b"KVENVLP1", "magic");
    let home = home_copy();
    let out = home.path().join("plain");
    let r = keyvol(
        home.path(),
        &[
            "envelope",
            "decrypt",
            "--in",
            fixture("envelope-v1.kvenv").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--encryption-context",
            "purpose=golden",
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // The plaintext was SHA-256 of 0..4000 (u32 LE), concatenated.
    use sha2::{Digest, Sha256};
    let want: Vec<u8> = (0u32..4000)
        .flat_map(|i| Sha256::digest(i.to_le_bytes()).to_vec())
        .collect();
    assert!(
        std::fs::read(&out).unwrap() == want,
        "envelope plaintext differs"
    );
}

#[test]
fn the_v2_multi_region_blob_keeps_its_layout_and_opens_in_both_regions() {
    let blob = std::fs::read(fixture("kms-ciphertext-v2-multi-region.bin")).unwrap();
    let id = std::fs::read_to_string(fixture("home-v2.key-id"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(blob[0], 0x02, "format: multi-Region key");
    let hex_id = id.strip_prefix("mrk-").unwrap();
    assert_eq!(hex::encode(&blob[1..17]), hex_id, "key id");
    assert_eq!(u32::from_le_bytes(blob[17..21].try_into().unwrap()), 1);
    let home = home_copy_of("home-v2");
    let path = fixture("kms-ciphertext-v2-multi-region.bin");
    for region in ["us-east-1", "us-west-2"] {
        let out = keyvol_json(
            home.path(),
            &[
                "--region",
                region,
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &format!("fileb://{}", path.display()),
                "--encryption-context",
                "purpose=golden",
            ],
        );
        assert_eq!(unb64(&out["Plaintext"]), b"keyvol golden plaintext v2");
        assert_eq!(
            out["KeyId"],
            format!("arn:aws:kms:{region}:111122223333:key/{id}")
        );
    }
    // No related key in eu-west-1: the blob does not open there.
    let out = keyvol(
        home.path(),
        &[
            "--region",
            "eu-west-1",
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", path.display()),
            "--encryption-context",
            "purpose=golden",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("(InvalidCiphertextException)"));
}

#[test]
fn the_v1_home_still_verifies_and_serves() {
    let home = home_copy();
    // The audit chain written by v1 verifies under the same root key.
    let v = keyvol_json(home.path(), &["kms", "audit", "verify"]);
    assert_eq!(v["Valid"], true, "{v}");
    assert!(v["EventsChecked"].as_u64().unwrap() >= 3, "{v}");
    // Its sealed key material still encrypts and decrypts.
    let d = keyvol_json(home.path(), &["kms", "describe-key", "--key-id", &key_id()]);
    assert_eq!(d["KeyMetadata"]["KeyState"], "Enabled");
    let blob = home.path().join("new.bin");
    std::fs::write(home.path().join("pt"), b"new").unwrap();
    let ct = keyvol_json(
        home.path(),
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key_id(),
            "--plaintext",
            &format!("fileb://{}", home.path().join("pt").display()),
        ],
    );
    std::fs::write(&blob, unb64(&ct["CiphertextBlob"])).unwrap();
    let pt = keyvol_json(
        home.path(),
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", blob.display()),
        ],
    );
    assert_eq!(unb64(&pt["Plaintext"]), b"new");
}

#[test]
fn the_v1_change_log_reads_as_tabled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vol.changes");
    std::fs::copy(fixture("changes-v1.bin"), &path).unwrap();
    let log = keyvol::volume::ChangeLog::open(&path, 64).unwrap();
    assert!(!log.opened_unclean(), "state 0 means closed cleanly");
    assert_eq!(log.changed(), vec![3, 4, 5, 40]);
    // Opening marks it open (state word 2: every chunk written is marked
    // durably) before any write.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"KVCHLOG1");
    assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), 64);
    assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 2);
    log.close_clean().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 0);
}

#[test]
fn a_v1_change_log_left_open_by_an_older_keyvol_marks_every_chunk() {
    // State word 1: the bits of an older daemon were not synced before its
    // writes, so nothing in the bitmap can be trusted after its crash.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vol.changes");
    let mut bytes = std::fs::read(fixture("changes-v1.bin")).unwrap();
    bytes[16] = 1;
    std::fs::write(&path, &bytes).unwrap();
    let log = keyvol::volume::ChangeLog::open(&path, 64).unwrap();
    assert_eq!(
        log.found(),
        keyvol::volume::changes::Found::InterruptedLegacy
    );
    assert_eq!(log.changed(), (0..64).collect::<Vec<_>>());
}

/// The stored manifest: opened under its data key's MAC key, every field
/// as sealed, sealed again to the same bytes (the canonical form is
/// stable), and refused under another key or after any edit, an owner or
/// sharing rollback included.
#[test]
fn the_v1_manifest_opens_only_as_sealed() {
    use keyvol::secret::VolumeDataKey;
    use keyvol::snapshot::manifest::{manifest_mac_key, ChunkRef, Manifest, SnapshotState};
    let bytes = std::fs::read(fixture("manifest-v1.json")).unwrap();
    let key = manifest_mac_key(&VolumeDataKey::from_slice(&[0x42; 64]).unwrap());
    let m = Manifest::open(&bytes, &key).expect("the v1 manifest opens");
    assert_eq!(m.snapshot_id.to_string(), "snap-0123456789abcdef0");
    assert_eq!(m.volume_id.to_string(), "vol-0123456789abcdef0");
    assert_eq!(m.volume_size_bytes, 1 << 30);
    assert_eq!(m.block_size, 512 * 1024);
    assert_eq!(
        m.parent_snapshot_id
            .as_ref()
            .map(|p| p.to_string())
            .as_deref(),
        Some("snap-00000000000000001")
    );
    assert_eq!(m.owner_id.as_str(), "111122223333");
    assert_eq!(m.state, SnapshotState::Completed);
    assert_eq!(m.progress, 100);
    assert_eq!(m.encrypted_data_key, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        m.create_volume_permissions
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>(),
        vec!["444455556666"]
    );
    assert_eq!(m.blocks.len(), 2);
    assert_eq!(m.blocks[&0], ChunkRef::of(b"block zero ciphertext"));
    assert_eq!(m.blocks[&5], ChunkRef::of(b"block five ciphertext"));
    assert_eq!(m.seal(&key), bytes, "sealing again gives the stored bytes");

    let other = manifest_mac_key(&VolumeDataKey::from_slice(&[0x43; 64]).unwrap());
    assert!(Manifest::open(&bytes, &other).is_err(), "another data key");
    let text = String::from_utf8(bytes.clone()).unwrap();
    for (from, to) in [
        (
            "\"OwnerId\": \"111122223333\"",
            "\"OwnerId\": \"444455556666\"",
        ),
        ("\"444455556666\"\n", "\"444455556667\"\n"),
        ("\"Progress\": \"100%\"", "\"Progress\": \"99%\""),
        ("golden fixture v1", "golden fixture v2"),
    ] {
        assert!(text.contains(from), "the fixture holds {from}");
        let edited = text.replacen(from, to, 1);
        let e = Manifest::open(edited.as_bytes(), &key).unwrap_err();
        assert!(
            e.to_string().to_lowercase().contains("manifest"),
            "{from} -> {to}: {e}"
        );
    }
}
