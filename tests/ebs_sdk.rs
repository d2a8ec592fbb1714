//! The `aws-sdk-ebs` crate against `keyvol serve`: a raw ext4 image made
//! by mkfs.ext4 uploaded with concurrent PutSnapshotBlock calls and
//! downloaded again with ListSnapshotBlocks/GetSnapshotBlock into an image
//! that e2fsck finds clean and that matches the original byte for byte;
//! EBS's errors arrive as the SDK's typed errors with their reasons.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use aws_sdk_ebs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ebs::error::ProvideErrorMetadata;
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, ValidationExceptionReason};
use base64::Engine;
use common::serve::{create_account, Key, Served};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

const A: &str = "444455556666";
const BLOCK: usize = 512 * 1024;

fn client(endpoint: &str, key: &Key) -> aws_sdk_ebs::Client {
    let (id, secret) = (key.id.as_str(), key.secret.as_str());
    let conf = aws_sdk_ebs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(id, secret, None, None, "test"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .retry_config(aws_sdk_ebs::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_ebs::Client::from_conf(conf)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A 1 GiB sparse ext4 image populated by mkfs.ext4 -d.
fn make_image(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let mut seed = 0x2026_1201_u64;
    let mut noise = |n: usize| {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect::<Vec<u8>>()
    };
    std::fs::write(src.join("d/big"), noise(6 << 20)).unwrap();
    for i in 0..8 {
        std::fs::write(src.join(format!("d/small{i}")), noise(5000 * (i + 1))).unwrap();
    }
    let img = dir.join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let st = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
            "-d",
        ])
        .arg(&src)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4");
    img
}

fn blocks_of(img: &Path) -> BTreeMap<i32, Vec<u8>> {
    let mut f = std::fs::File::open(img).unwrap();
    let mut out = BTreeMap::new();
    let mut buf = vec![0u8; BLOCK];
    for i in 0..((1 << 30) / BLOCK) as i32 {
        f.read_exact(&mut buf).unwrap();
        if buf.iter().any(|&b| b != 0) {
            out.insert(i, buf.clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sdk_ebs_crate_uploads_and_downloads_an_ext4_image() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let root = create_account(&home, A, "a");
    let served = Served::start(&home, &["serve"]);
    let ebs = client(&served.endpoint(), &root);

    let img = make_image(dir.path());
    let blocks = blocks_of(&img);
    assert!(blocks.len() > 12 && blocks.len() < 400, "{}", blocks.len());

    // Upload: eight PutSnapshotBlock calls in flight.
    let started = ebs
        .start_snapshot()
        .volume_size(1)
        .description("sdk upload")
        .send()
        .await
        .unwrap();
    let sid = started.snapshot_id().unwrap().to_string();
    assert_eq!(started.block_size(), Some(BLOCK as i32));
    assert_eq!(started.status().map(|s| s.as_str()), Some("pending"));
    let puts = futures_util::stream::iter(blocks.iter().map(|(i, b)| {
        let ebs = ebs.clone();
        let sid = sid.clone();
        async move {
            ebs.put_snapshot_block()
                .snapshot_id(sid)
                .block_index(*i)
                .data_length(BLOCK as i32)
                .checksum(b64(&Sha256::digest(b)))
                .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                .block_data(ByteStream::from(b.clone()))
                .send()
                .await
        }
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    for p in puts {
        p.unwrap();
    }
    let mut all = Sha256::new();
    for b in blocks.values() {
        all.update(Sha256::digest(b));
    }
    let done = ebs
        .complete_snapshot()
        .snapshot_id(&sid)
        .changed_blocks_count(blocks.len() as i32)
        .checksum(b64(&all.finalize()))
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status().map(|s| s.as_str()), Some("completed"));

    // Download every listed block into a fresh image.
    let mut listed = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ebs
            .list_snapshot_blocks()
            .snapshot_id(&sid)
            .max_results(100)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(page.volume_size(), Some(1));
        assert!(page.expiry_time().is_some());
        listed.extend(page.blocks().iter().map(|b| {
            (
                b.block_index().unwrap(),
                b.block_token().unwrap().to_string(),
            )
        }));
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(
        listed.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        blocks.keys().copied().collect::<Vec<_>>()
    );
    let out = dir.path().join("downloaded.img");
    let mut f = std::fs::File::create(&out).unwrap();
    f.set_len(1 << 30).unwrap();
    for (i, t) in &listed {
        let r = ebs
            .get_snapshot_block()
            .snapshot_id(&sid)
            .block_index(*i)
            .block_token(t)
            .send()
            .await
            .unwrap();
        let sum = r.checksum().unwrap().to_string();
        assert_eq!(r.data_length(), Some(BLOCK as i32));
        let data = r.block_data.collect().await.unwrap().into_bytes();
        assert_eq!(sum, b64(&Sha256::digest(&data)), "block {i}");
        f.seek(SeekFrom::Start(*i as u64 * BLOCK as u64)).unwrap();
        f.write_all(&data).unwrap();
    }
    drop(f);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&img).unwrap(),
        "the downloaded image differs from the uploaded one"
    );
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );

    // Typed errors with EBS's reasons.
    let e = ebs
        .get_snapshot_block()
        .snapshot_id(&sid)
        .block_index(listed[1].0)
        .block_token(&listed[0].1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    match &e {
        aws_sdk_ebs::operation::get_snapshot_block::GetSnapshotBlockError::ValidationException(
            v,
        ) => {
            assert_eq!(
                v.reason(),
                Some(&ValidationExceptionReason::InvalidBlockToken)
            )
        }
        other => panic!("{other:?}"),
    }
    let e = ebs
        .list_snapshot_blocks()
        .snapshot_id("snap-0123456789abcdef0")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_resource_not_found_exception(), "{e:?}");
    let pending = ebs.start_snapshot().volume_size(1).send().await.unwrap();
    let b = vec![7u8; BLOCK];
    let e = ebs
        .put_snapshot_block()
        .snapshot_id(pending.snapshot_id().unwrap())
        .block_index(0)
        .data_length(BLOCK as i32)
        .checksum(b64(&Sha256::digest(b"not the block")))
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .block_data(ByteStream::from(b))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("ValidationException"), "{e:?}");
    let e = ebs
        .complete_snapshot()
        .snapshot_id(pending.snapshot_id().unwrap())
        .changed_blocks_count(1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_validation_exception(), "{e:?}");
}
