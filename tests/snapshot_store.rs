//! The snapshot chunk store against a local directory and a real
//! S3-compatible server (moto, started here on a free 127.0.0.1 port): the
//! same scenarios run on both.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyvol::ids::{AccountId, Region, SnapshotId, VolumeId};
use keyvol::secret::{SecretBytes, VolumeDataKey};
use keyvol::snapshot::manifest::{now_rfc3339, BLOCK_SIZE};
use keyvol::snapshot::{
    changed_blocks, manifest_mac_key, ChunkRef, ChunkStore, Manifest, SnapshotError, SnapshotState,
    StoreConfig,
};
use rand::RngCore;

const BUCKET: &str = "keyvol-test";

/// Raw access to the objects behind a store, to tamper with them the way an
/// attacker or a broken disk would.
enum Backend {
    Local { root: PathBuf },
    S3 { port: u16 },
}

struct Harness {
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    fn local() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Harness {
            backend: Backend::Local {
                root: dir.path().to_path_buf(),
            },
            _dir: Some(dir),
        }
    }

    /// A fresh store (its own namespace) for one scenario.
    fn store(&self, name: &str, grace: Duration) -> ChunkStore {
        let config = match &self.backend {
            Backend::Local { root } => {
                StoreConfig::parse(root.join(name).to_str().unwrap()).unwrap()
            }
            Backend::S3 { port } => StoreConfig::parse(&format!(
                "s3://{BUCKET}/{name}?endpoint=http://127.0.0.1:{port}"
            ))
            .unwrap()
            .with_credentials("testing", SecretBytes::from_slice(b"testing-secret")),
        };
        ChunkStore::open(&config, &Region::default_region())
            .unwrap()
            .with_gc_grace(grace)
    }

    fn read_object(&self, name: &str, location: &str) -> Vec<u8> {
        match &self.backend {
            Backend::Local { root } => std::fs::read(root.join(name).join(location)).unwrap(),
            Backend::S3 { port } => {
                let (status, body) = http(*port, "GET", &format!("/{BUCKET}/{location}"), b"");
                assert_eq!(status, 200, "GET {location}");
                body
            }
        }
    }

    fn write_object(&self, name: &str, location: &str, bytes: &[u8]) {
        match &self.backend {
            Backend::Local { root } => {
                // The folder may be gone: the store removes empty folders.
                let path = root.join(name).join(location);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap()
            }
            Backend::S3 { port } => {
                let (status, _) = http(*port, "PUT", &format!("/{BUCKET}/{location}"), bytes);
                assert_eq!(status, 200, "PUT {location}");
            }
        }
    }

    fn delete_object(&self, name: &str, location: &str) {
        match &self.backend {
            Backend::Local { root } => {
                std::fs::remove_file(root.join(name).join(location)).unwrap()
            }
            Backend::S3 { port } => {
                let (status, _) = http(*port, "DELETE", &format!("/{BUCKET}/{location}"), b"");
                assert_eq!(status, 204, "DELETE {location}");
            }
        }
    }
}

/// A moto S3 server on a free port, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let bin = std::env::var("KEYVOL_MOTO_SERVER").unwrap_or_else(|_| {
        format!(
            "{}/.cache/keyvol-venv/bin/moto_server",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    assert!(
        std::path::Path::new(&bin).exists(),
        "moto_server not found at {bin}: run scripts/setup.sh (pip install 'moto[server]') or set KEYVOL_MOTO_SERVER"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() && http(port, "GET", "/", b"").0 == 200 {
            break;
        }
        assert!(
            moto.child.try_wait().unwrap().is_none(),
            "moto_server exited during start-up"
        );
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = http(port, "PUT", &format!("/{BUCKET}"), b"");
    assert_eq!(
        status,
        200,
        "create bucket: {}",
        String::from_utf8_lossy(&body)
    );
    moto
}

/// One HTTP/1.1 request with a dummy SigV4 header: moto does not verify
/// signatures but refuses anonymous reads of private objects.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(_) => return (0, Vec::new()),
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes()).is_err() || s.write_all(body).is_err() {
        return (0, Vec::new());
    }
    let mut resp = Vec::new();
    if s.read_to_end(&mut resp).is_err() {
        return (0, Vec::new());
    }
    let Some(split) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, Vec::new());
    };
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked responses are not handled by this test client"
    );
    (status, resp[split + 4..].to_vec())
}

fn random_chunk() -> Vec<u8> {
    let mut v = vec![0u8; BLOCK_SIZE as usize];
    rand::rngs::OsRng.fill_bytes(&mut v);
    v
}

fn manifest(volume: &VolumeId, blocks: BTreeMap<u64, ChunkRef>, state: SnapshotState) -> Manifest {
    Manifest {
        snapshot_id: SnapshotId::generate(),
        volume_id: volume.clone(),
        volume_size_bytes: 16 * u64::from(BLOCK_SIZE),
        block_size: BLOCK_SIZE,
        parent_snapshot_id: None,
        lineage_id: "lineage-test".into(),
        source_snapshot_id: None,
        source_region: None,
        owner_id: AccountId::default_account(),
        region: Region::default_region(),
        kms_key_id: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            .into(),
        encrypted_data_key: vec![9; 40],
        encryption_context: [("aws:ebs:id".to_string(), volume.to_string())].into(),
        description: "test snapshot".into(),
        start_time: now_rfc3339(),
        state,
        state_message: None,
        progress: if state == SnapshotState::Completed {
            100
        } else {
            0
        },
        create_volume_permissions: BTreeSet::from(["444455556666".parse().unwrap()]),
        blocks,
    }
}

fn put_get_and_dedup(h: &Harness) {
    let store = h.store("dedup", Duration::from_secs(3600));
    let (a, b) = (random_chunk(), random_chunk());
    let ra = store.put_chunk(&a).unwrap();
    let rb = store.put_chunk(&b).unwrap();
    assert_eq!(ra, ChunkRef::of(&a));
    assert_eq!(store.get_chunk(&ra).unwrap(), a);
    assert_eq!(store.get_chunk(&rb).unwrap(), b);
    let two = 2 * u64::from(BLOCK_SIZE);
    assert_eq!(store.stored_bytes().unwrap(), two);
    let before = store.transfer_stats();
    assert_eq!(before.chunks_uploaded, 2);

    // The same chunk again: nothing uploaded, nothing more stored.
    assert_eq!(store.put_chunk(&a).unwrap(), ra);
    let after = store.transfer_stats();
    assert_eq!(after.bytes_uploaded, before.bytes_uploaded);
    assert_eq!(after.chunks_deduplicated, 1);
    assert_eq!(store.stored_bytes().unwrap(), two);

    // Batches keep input order and deduplicate too; a short last chunk is fine.
    let c = random_chunk();
    let tail = vec![7u8; 1000];
    let refs = store.put_chunks(&[&c, &a, &tail, &c]).unwrap();
    assert_eq!(
        refs,
        vec![ChunkRef::of(&c), ra, ChunkRef::of(&tail), ChunkRef::of(&c)]
    );
    let usage = store.usage().unwrap();
    assert_eq!(usage.chunks, 4);
    assert_eq!(usage.bytes, 3 * u64::from(BLOCK_SIZE) + 1000);
    assert_eq!(
        store.get_chunks(&refs).unwrap(),
        vec![c.clone(), a, tail, c]
    );
    assert_eq!(
        store
            .missing_chunks(&[ra, ChunkRef::of(b"never stored")])
            .unwrap(),
        vec![ChunkRef::of(b"never stored")]
    );
}

fn manifest_round_trip_and_tamper(h: &Harness) {
    let store = h.store("manifest", Duration::from_secs(3600));
    let dek = VolumeDataKey::random();
    let key = manifest_mac_key(&dek);
    let vol = VolumeId::generate();
    let chunks: Vec<Vec<u8>> = (0..3).map(|_| random_chunk()).collect();
    let refs = store
        .put_chunks(&chunks.iter().map(|c| c.as_slice()).collect::<Vec<_>>())
        .unwrap();
    let blocks: BTreeMap<u64, ChunkRef> = [(0, refs[0]), (5, refs[1]), (15, refs[2])].into();
    let m = manifest(&vol, blocks, SnapshotState::Completed);
    let id = store.put_manifest(&m.seal(&key)).unwrap();
    assert_eq!(id, m.snapshot_id);
    assert_eq!(store.list_manifests().unwrap(), vec![id.clone()]);
    let sealed = store.get_manifest(&id).unwrap();
    assert_eq!(Manifest::open(&sealed, &key).unwrap(), m);
    let peek = Manifest::peek_unauthenticated(&sealed).unwrap();
    assert_eq!(peek.owner_id, m.owner_id);
    assert_eq!(peek.create_volume_permissions, m.create_volume_permissions);

    // Wrong key: authentication error.
    let wrong = manifest_mac_key(&VolumeDataKey::random());
    assert!(matches!(
        Manifest::open(&sealed, &wrong),
        Err(SnapshotError::ManifestAuthentication { .. })
    ));

    // Edit a stored manifest (point block 5 at another chunk): detected.
    let loc = store.manifest_location(&id);
    let text = String::from_utf8(h.read_object("manifest", &loc)).unwrap();
    let edited = text.replace(&refs[1].to_hex(), &refs[2].to_hex());
    assert_ne!(edited, text);
    h.write_object("manifest", &loc, edited.as_bytes());
    let got = store.get_manifest(&id).unwrap();
    let err = Manifest::open(&got, &key).unwrap_err();
    assert!(
        matches!(err, SnapshotError::ManifestAuthentication { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(id.as_str()), "{err}");

    // Another snapshot's (authentic) manifest stored under this id: refused.
    let other = manifest(&vol, BTreeMap::new(), SnapshotState::Completed);
    h.write_object("manifest", &loc, &other.seal(&key));
    let err = store.get_manifest(&id).unwrap_err();
    assert!(
        matches!(err, SnapshotError::ManifestMismatch { .. }),
        "{err}"
    );

    // Garbage instead of a manifest: invalid, naming the snapshot.
    h.write_object("manifest", &loc, b"{\"not\": \"a manifest\"}");
    let err = store.get_manifest(&id).unwrap_err();
    assert!(
        matches!(err, SnapshotError::ManifestInvalid { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(id.as_str()), "{err}");

    // Missing manifest.
    store.delete_manifest(&id).unwrap();
    store.delete_manifest(&id).unwrap();
    assert!(matches!(
        store.get_manifest(&id),
        Err(SnapshotError::ManifestMissing { .. })
    ));
    assert!(store.list_manifests().unwrap().is_empty());

    // A flipped byte in a stored chunk: an error naming the chunk (and,
    // with the caller's context, the snapshot and block).
    let loc = store.chunk_location(&refs[0]);
    let mut bytes = h.read_object("manifest", &loc);
    bytes[12345] ^= 0x01;
    h.write_object("manifest", &loc, &bytes);
    let err = store.get_chunk(&refs[0]).unwrap_err();
    assert!(matches!(err, SnapshotError::ChunkCorrupt { .. }), "{err}");
    assert!(err.to_string().contains(&refs[0].to_hex()), "{err}");
    let err = err.in_block(&id, 0);
    assert!(err.is_corruption());
    let msg = err.to_string();
    assert!(
        msg.contains(id.as_str()) && msg.contains("block 0") && msg.contains(&refs[0].to_hex()),
        "{msg}"
    );
    // A truncated copy is also detected, and putting the chunk again
    // repairs it (a stored size that differs is never taken as a dedup hit).
    h.write_object("manifest", &loc, &chunks[0][..100]);
    assert!(matches!(
        store.get_chunk(&refs[0]),
        Err(SnapshotError::ChunkCorrupt { .. })
    ));
    store.put_chunk(&chunks[0]).unwrap();
    assert_eq!(store.get_chunk(&refs[0]).unwrap(), chunks[0]);

    // A deleted chunk: missing, naming the chunk.
    h.delete_object("manifest", &store.chunk_location(&refs[1]));
    let err = store.get_chunk(&refs[1]).unwrap_err();
    assert!(matches!(err, SnapshotError::ChunkMissing { .. }), "{err}");
    assert!(err.to_string().contains(&refs[1].to_hex()), "{err}");
}

fn incremental_and_garbage_collection(h: &Harness) {
    let store = h.store("gc", Duration::ZERO);
    let key = manifest_mac_key(&VolumeDataKey::random());
    let vol = VolumeId::generate();
    let c: Vec<Vec<u8>> = (0..5).map(|_| random_chunk()).collect();
    let r: Vec<ChunkRef> = c.iter().map(|x| store.put_chunk(x).unwrap()).collect();

    // s1 = blocks 0,1,2 -> c0,c1,c2; s2 (incremental) changes block 0 and
    // adds block 3: it shares c1, c2 with s1.
    let s1 = manifest(
        &vol,
        [(0, r[0]), (1, r[1]), (2, r[2])].into(),
        SnapshotState::Completed,
    );
    let mut s2 = manifest(
        &vol,
        [(0, r[3]), (1, r[1]), (2, r[2]), (3, r[4])].into(),
        SnapshotState::Completed,
    );
    s2.parent_snapshot_id = Some(s1.snapshot_id.clone());
    store.put_manifest(&s1.seal(&key)).unwrap();
    store.put_manifest(&s2.seal(&key)).unwrap();
    assert_eq!(changed_blocks(&s1, &s2), vec![0, 3]);
    // Five distinct chunks stored for seven block references.
    assert_eq!(store.stored_bytes().unwrap(), 5 * u64::from(BLOCK_SIZE));

    // An orphan (a crashed upload) is the only thing collected.
    let orphan = store.put_chunk(&random_chunk()).unwrap();
    let report = store.garbage_collect().unwrap();
    assert_eq!(report.manifests_scanned, 2);
    assert_eq!(report.chunks_deleted, 1, "{report:?}");
    assert_eq!(report.bytes_freed, u64::from(BLOCK_SIZE));
    assert_eq!(report.chunks_referenced, 5);
    assert!(report.chunks_missing.is_empty());
    assert!(matches!(
        store.get_chunk(&orphan),
        Err(SnapshotError::ChunkMissing { .. })
    ));

    // Deleting s1 frees only c0, which s2 does not use.
    store.delete_manifest(&s1.snapshot_id).unwrap();
    let report = store.garbage_collect().unwrap();
    assert_eq!(report.chunks_deleted, 1, "{report:?}");
    assert!(matches!(
        store.get_chunk(&r[0]),
        Err(SnapshotError::ChunkMissing { .. })
    ));
    let s2_back = Manifest::open(&store.get_manifest(&s2.snapshot_id).unwrap(), &key).unwrap();
    for (i, chunk) in &s2_back.blocks {
        assert!(store.get_chunk(chunk).is_ok(), "block {i} of s2 lost");
    }
    assert!(store
        .missing_chunks(&s2_back.blocks.values().copied().collect::<Vec<_>>())
        .unwrap()
        .is_empty());

    // A second collection finds nothing more.
    assert_eq!(store.garbage_collect().unwrap().chunks_deleted, 0);

    // Deleting s2 empties the store.
    store.delete_manifest(&s2.snapshot_id).unwrap();
    assert_eq!(store.garbage_collect().unwrap().chunks_deleted, 4);
    assert_eq!(store.stored_bytes().unwrap(), 0);

    // A manifest nobody can parse stops collection before any deletion.
    let keep = store.put_chunk(&random_chunk()).unwrap();
    let bad_id = SnapshotId::generate();
    h.write_object("gc", &store.manifest_location(&bad_id), b"corrupt");
    let err = store.garbage_collect().unwrap_err();
    assert!(matches!(err, SnapshotError::GcBlocked { .. }), "{err}");
    assert!(err.to_string().contains(bad_id.as_str()), "{err}");
    assert!(store.get_chunk(&keep).is_ok());
    store.delete_manifest(&bad_id).unwrap();
}

fn crash_before_manifest(h: &Harness) {
    // A snapshot that crashed after uploading chunks and before writing its
    // manifest: nothing lists it; collection with the normal grace period
    // keeps its chunks (a writer may still be running), cleanup after the
    // grace period removes them.
    let store = h.store("crash", Duration::from_secs(3600));
    let key = manifest_mac_key(&VolumeDataKey::random());
    let vol = VolumeId::generate();
    let done = manifest(
        &vol,
        [(0, store.put_chunk(&random_chunk()).unwrap())].into(),
        SnapshotState::Completed,
    );
    store.put_manifest(&done.seal(&key)).unwrap();
    let crashed: Vec<ChunkRef> = (0..3)
        .map(|_| store.put_chunk(&random_chunk()).unwrap())
        .collect();

    let ids = store.list_manifests().unwrap();
    assert_eq!(ids, vec![done.snapshot_id.clone()]);
    for id in &ids {
        let m = Manifest::open(&store.get_manifest(id).unwrap(), &key).unwrap();
        assert!(crashed.iter().all(|c| !m.blocks.values().any(|b| b == c)));
    }

    let report = store.garbage_collect().unwrap();
    assert_eq!(report.chunks_deleted, 0);
    assert_eq!(report.chunks_in_grace, 3);

    // A pending manifest also protects its chunks, and once past the grace
    // period it is reported as stale for the caller to resume or fail.
    let pending = manifest(&vol, [(0, crashed[0])].into(), SnapshotState::Pending);
    store.put_manifest(&pending.seal(&key)).unwrap();
    let cleanup = h.store("crash", Duration::ZERO);
    let report = cleanup.garbage_collect().unwrap();
    assert_eq!(report.chunks_deleted, 2, "{report:?}");
    assert_eq!(report.stale_pending, vec![pending.snapshot_id.clone()]);
    assert!(cleanup.get_chunk(&crashed[0]).is_ok());
    assert!(cleanup.get_chunk(&crashed[1]).is_err());
    // The completed snapshot is whole.
    for c in done.blocks.values() {
        assert!(cleanup.get_chunk(c).is_ok());
    }
    // A local write interrupted by a crash leaves a file written aside;
    // cleanup removes it too.
    if let Backend::Local { root } = &h.backend {
        let loc = cleanup.chunk_location(&crashed[1]);
        let partial = root.join("crash").join(format!("{loc}#3"));
        std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
        std::fs::write(&partial, b"half a chunk").unwrap();
        assert_eq!(cleanup.garbage_collect().unwrap().partial_writes_removed, 1);
        assert!(!partial.exists());
    }
    // Only the one snapshot that finished is completed.
    let completed: Vec<SnapshotId> = cleanup
        .list_manifests()
        .unwrap()
        .into_iter()
        .filter(|id| {
            Manifest::peek_unauthenticated(&cleanup.get_manifest(id).unwrap())
                .unwrap()
                .state
                == SnapshotState::Completed
        })
        .collect();
    assert_eq!(completed, vec![done.snapshot_id.clone()]);
}

fn run_all(h: &Harness) {
    put_get_and_dedup(h);
    manifest_round_trip_and_tamper(h);
    incremental_and_garbage_collection(h);
    crash_before_manifest(h);
}

#[test]
fn local_directory_store() {
    run_all(&Harness::local());
}

#[test]
fn s3_store_on_moto() {
    let moto = start_moto();
    let h = Harness {
        backend: Backend::S3 { port: moto.port },
        _dir: None,
    };
    run_all(&h);

    // A bucket that does not exist: `check` says so, naming the store.
    let config = StoreConfig::parse(&format!(
        "s3://no-such-bucket/p?endpoint=http://127.0.0.1:{}",
        moto.port
    ))
    .unwrap()
    .with_credentials("testing", SecretBytes::from_slice(b"testing-secret"));
    let store = ChunkStore::open(&config, &Region::default_region()).unwrap();
    let err = store.check().unwrap_err();
    eprintln!("missing bucket: {err}");
    assert!(matches!(err, SnapshotError::Store { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("s3://no-such-bucket/p/us-east-1/manifests"),
        "{err}"
    );
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
    drop(moto);
}

#[test]
fn s3_store_reports_unreachable_endpoint() {
    // Nothing listens on this port once the listener is dropped.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = StoreConfig::parse(&format!("s3://{BUCKET}/x?endpoint=http://127.0.0.1:{port}"))
        .unwrap()
        .with_credentials("testing", SecretBytes::from_slice(b"testing-secret"));
    let store = ChunkStore::open(&config, &Region::default_region()).unwrap();
    let start = Instant::now();
    let err = store.put_chunk(b"data").unwrap_err();
    assert!(matches!(err, SnapshotError::Store { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
}
