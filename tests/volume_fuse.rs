//! End-to-end tests of the FUSE device file: fio crc32c verify with
//! iodepth > 1 directly on the file, a pattern through `losetup
//! --direct-io=on`, ext4 made and remounted across a re-attach, and fstrim
//! punching holes in the backing file. Need root, /dev/fuse and the tools
//! from scripts/setup.sh; under CI=true a missing one is a failure.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use keyvol::fuse::{serve, FuseHandle, FuseOptions};
use keyvol::secret::VolumeDataKey;
use keyvol::volume::mount::{mount_volume, unmount_volume, FsType, MountedVolume};
use keyvol::volume::{ChangeLog, EncryptedDevice, SectorCipher, CHUNK_SIZE};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;
const TOOLS: &[&str] = &[
    "fio",
    "losetup",
    "mkfs.ext4",
    "e2fsck",
    "fstrim",
    "blkid",
    "mount",
    "umount",
    "dd",
];

/// Loop devices and mounts are machine-wide: run these tests one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the serial lock if the environment can run FUSE tests. Returns
/// `None` (test passes vacuously, with a note) only outside CI.
fn prerequisites() -> Option<MutexGuard<'static, ()>> {
    let mut missing = Vec::new();
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_string());
    }
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse".to_string());
    }
    for tool in TOOLS {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push((*tool).to_string());
        }
    }
    if !missing.is_empty() {
        let msg = format!(
            "FUSE tests need: {} (run scripts/setup.sh as root)",
            missing.join(", ")
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("NOT RUN outside CI: {msg}");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|p| p.into_inner()))
}

/// A device served over FUSE at `<dir>/device` (mounted over a file).
struct Attached {
    device: Arc<EncryptedDevice>,
    handle: Option<FuseHandle>,
    path: PathBuf,
}

impl Attached {
    fn new(dir: &Path, size: u64, key: &VolumeDataKey) -> Attached {
        let changes = ChangeLog::open(&dir.join("vol.changes"), size.div_ceil(CHUNK_SIZE)).unwrap();
        let cipher = SectorCipher::new(key).unwrap();
        let device =
            Arc::new(EncryptedDevice::open(&dir.join("vol.img"), size, cipher, changes).unwrap());
        let path = dir.join("device");
        std::fs::write(&path, b"").unwrap();
        let handle = serve(device.clone(), &path, &FuseOptions::default()).unwrap();
        assert_eq!(handle.device_path(), path);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            size,
            "device file has the volume size"
        );
        Attached {
            device,
            handle: Some(handle),
            path,
        }
    }

    fn detach(mut self) {
        if let Some(h) = self.handle.take() {
            h.unmount().unwrap();
        }
        self.device.close().unwrap();
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.unmount();
        }
    }
}

/// Undoes a mount on drop, so a failing test leaves no loop device behind.
struct MountGuard(Option<MountedVolume>);

impl MountGuard {
    fn undo(mut self) {
        if let Some(m) = self.0.take() {
            unmount_volume(&m).unwrap();
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            let _ = unmount_volume(&m);
        }
    }
}

struct LoopGuard(String);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn sh(cmd: &str) -> String {
    // Run in a scratch directory: fio writes verify state files to its cwd.
    let cwd = std::env::temp_dir();
    let out = Command::new("sh")
        .args(["-c", cmd])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn fio_crc32c_verify_on_device_file() {
    let Some(_serial) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let att = Attached::new(dir.path(), 96 * MIB, &VolumeDataKey::random());
    let dev = att.path.display().to_string();
    let common = "--ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 --verify_fatal=1 \
                  --verify_state_save=0 --group_reporting --output-format=terse";
    // Small random writes at queue depth 16, then mixed sizes up to 1 MiB.
    sh(&format!(
        "fio --name=rand --filename={dev} --rw=randwrite --bs=4k --iodepth=16 --size=32M {common}"
    ));
    sh(&format!(
        "fio --name=mixed --filename={dev} --rw=randwrite --bssplit=4k/20:64k/30:1m/50 \
         --iodepth=8 --offset=32M --size=64M {common}"
    ));
    att.detach();
}

#[test]
fn pattern_through_direct_io_loop_device() {
    let Some(_serial) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let att = Attached::new(dir.path(), 64 * MIB, &VolumeDataKey::random());
    let dev = att.path.display().to_string();
    let loopdev = sh(&format!(
        "losetup --find --show --direct-io=on --sector-size 4096 {dev}"
    ))
    .trim()
    .to_string();
    let guard = LoopGuard(loopdev.clone());
    let info = sh(&format!("losetup -J -l -O NAME,DIO,LOG-SEC {loopdev}"));
    assert!(info.contains("4096"), "sector size 4096: {info}");

    let d = dir.path().display();
    sh(&format!(
        "head -c 8388608 /dev/urandom > {d}/p1; head -c 8388608 /dev/urandom > {d}/p2"
    ));
    // O_DIRECT writes at queue depth 1, then buffered writes with fsync.
    sh(&format!(
        "dd if={d}/p1 of={loopdev} bs=1M oflag=direct status=none"
    ));
    sh(&format!(
        "dd if={d}/p2 of={loopdev} bs=64k seek=256 conv=fsync status=none"
    ));
    // Concurrent direct writes through the loop device (iodepth 8), verified.
    sh(&format!(
        "fio --name=loop --filename={loopdev} --rw=randwrite --bs=16k --iodepth=8 \
         --ioengine=libaio --direct=1 --offset=32M --size=24M --verify=crc32c --do_verify=1 \
         --verify_fatal=1 --verify_state_save=0 --output-format=terse"
    ));
    sh("echo 3 > /proc/sys/vm/drop_caches");
    sh(&format!(
        "dd if={loopdev} bs=1M count=8 iflag=direct status=none | cmp - {d}/p1"
    ));
    sh(&format!(
        "dd if={loopdev} bs=64k skip=256 count=128 iflag=direct status=none | cmp - {d}/p2"
    ));
    // The device file and the library read the same bytes.
    sh(&format!(
        "dd if={dev} bs=1M skip=16 count=8 status=none | cmp - {d}/p2"
    ));
    let mut buf = vec![0u8; 8 * MIB as usize];
    att.device.read_at(&mut buf, 0).unwrap();
    assert!(buf == std::fs::read(dir.path().join("p1")).unwrap());
    drop(guard);
    att.detach();
}

fn write_tree(root: &Path, rng: &mut StdRng) -> BTreeMap<PathBuf, Vec<u8>> {
    let sizes = [
        0usize,
        1,
        100,
        4095,
        4096,
        4097,
        65536,
        200_000,
        MIB as usize + 7,
        3 * MIB as usize,
    ];
    let mut sums = BTreeMap::new();
    for i in 0..400 {
        let sub = root.join(format!("d{}/e{}", i % 7, i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        let size = if i % 10 == 0 {
            sizes[rng.gen_range(0..sizes.len())]
        } else {
            rng.gen_range(0..20_000)
        };
        let mut data = vec![0u8; size];
        rng.fill_bytes(&mut data);
        let path = sub.join(format!("f{i}.bin"));
        std::fs::write(&path, &data).unwrap();
        sums.insert(
            path.strip_prefix(root).unwrap().to_path_buf(),
            Sha256::digest(&data).to_vec(),
        );
    }
    sums
}

#[test]
fn ext4_tree_survives_remount_and_fsck() {
    let Some(_serial) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let key = VolumeDataKey::random();
    let seed: u64 = rand::thread_rng().gen();
    println!("ext4 tree seed: {seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let att = Attached::new(dir.path(), 192 * MIB, &key);
    let mounted = mount_volume(&att.path, &mnt, FsType::Ext4).unwrap();
    assert!(mounted.formatted(), "first mount makes the filesystem");
    assert!(mounted.loop_device().is_some());
    let guard = MountGuard(Some(mounted));
    let sums = write_tree(&mnt, &mut rng);
    sh("sync");
    guard.undo();
    att.detach();

    // Re-attach from the backing file with the same key: the data is there.
    let att = Attached::new(dir.path(), 192 * MIB, &key);
    let mounted = mount_volume(&att.path, &mnt, FsType::Ext4).unwrap();
    assert!(!mounted.formatted(), "an existing filesystem is kept");
    let guard = MountGuard(Some(mounted));
    for (rel, sum) in &sums {
        let data = std::fs::read(mnt.join(rel)).unwrap();
        assert_eq!(
            &Sha256::digest(&data).to_vec(),
            sum,
            "{} (seed {seed})",
            rel.display()
        );
    }
    guard.undo();
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(&att.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn reports problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    att.detach();
}

#[test]
fn fstrim_punches_holes_in_backing_file() {
    let Some(_serial) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let img = dir.path().join("vol.img");
    let att = Attached::new(dir.path(), 128 * MIB, &VolumeDataKey::random());
    let guard = MountGuard(Some(mount_volume(&att.path, &mnt, FsType::Ext4).unwrap()));
    let after_mkfs = allocated(&img);
    assert!(
        after_mkfs < 16 * MIB,
        "mkfs keeps the backing file thin: {after_mkfs}"
    );
    sh(&format!(
        "head -c 50331648 /dev/urandom > {}/big; sync",
        mnt.display()
    ));
    let full = allocated(&img);
    assert!(full >= after_mkfs + 48 * MIB, "data allocated: {full}");
    sh(&format!(
        "rm {}/big; sync; fstrim {}",
        mnt.display(),
        mnt.display()
    ));
    att.device.sync().unwrap();
    let trimmed = allocated(&img);
    assert!(
        trimmed + 44 * MIB <= full,
        "fstrim freed the space: {full} -> {trimmed}"
    );
    guard.undo();
    att.detach();
}

#[test]
fn directory_mountpoint_exposes_named_file() {
    let Some(_serial) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let size = 16 * MIB;
    let changes =
        ChangeLog::open(&dir.path().join("vol.changes"), size.div_ceil(CHUNK_SIZE)).unwrap();
    let cipher = SectorCipher::new(&VolumeDataKey::random()).unwrap();
    let device = Arc::new(
        EncryptedDevice::open(&dir.path().join("vol.img"), size, cipher, changes).unwrap(),
    );
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let opts = FuseOptions {
        file_name: "disk0".into(),
        ..FuseOptions::default()
    };
    let handle = serve(device.clone(), &mnt, &opts).unwrap();
    assert_eq!(handle.device_path(), mnt.join("disk0"));
    let names: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["disk0".to_string()]);
    assert_eq!(std::fs::metadata(mnt.join("disk0")).unwrap().len(), size);
    assert!(std::fs::metadata(mnt.join("other")).is_err());
    // Unaligned write through the file, read back through the library.
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("disk0"))
        .unwrap();
    f.write_all_at(b"hello, sector boundary", 4096 - 5).unwrap();
    f.sync_all().unwrap();
    // The device never grows: writing past its end fails.
    assert!(f.write_all_at(b"x", size).is_err());
    drop(f);
    let mut back = [0u8; 22];
    device.read_at(&mut back, 4096 - 5).unwrap();
    assert_eq!(&back, b"hello, sector boundary");
    assert_eq!(device.changes().changed(), vec![0]);
    handle.unmount().unwrap();
    assert!(
        std::fs::read_dir(&mnt).unwrap().next().is_none(),
        "unmounted"
    );
}
