//! A bench client of the EBS direct APIs built on the `aws-sdk-ebs` crate
//! (used by scripts/bench-snapshot.sh): uploads a raw image as a snapshot,
//! or downloads a snapshot into a raw image, with several requests in
//! flight, and prints one JSON line with the time taken.
//!
//! ```text
//! ebs_transfer upload   ENDPOINT IMAGE            [IN_FLIGHT]
//! ebs_transfer download ENDPOINT SNAPSHOT IMAGE   [IN_FLIGHT]
//! ```
//! Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the
//! region from AWS_DEFAULT_REGION (us-east-1).

use std::io::Read;
use std::time::Instant;

use aws_sdk_ebs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm};
use base64::Engine;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

const BLOCK: usize = 512 * 1024;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn client(endpoint: &str) -> Result<aws_sdk_ebs::Client, Error> {
    let id = std::env::var("AWS_ACCESS_KEY_ID")?;
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY")?;
    let region = std::env::var("AWS_DEFAULT_REGION").unwrap_or_else(|_| "us-east-1".into());
    let conf = aws_sdk_ebs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(id, secret, None, None, "bench"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Ok(aws_sdk_ebs::Client::from_conf(conf))
}

async fn upload(ebs: &aws_sdk_ebs::Client, image: &str, in_flight: usize) -> Result<(), Error> {
    let mut f = std::fs::File::open(image)?;
    let len = f.metadata()?.len();
    let started = Instant::now();
    let s = ebs
        .start_snapshot()
        .volume_size(len.div_ceil(1 << 30) as i64)
        .description("ebs_transfer upload")
        .send()
        .await?;
    let sid = s.snapshot_id().unwrap_or_default().to_string();
    // Blocks are read in order and sent with `in_flight` requests open.
    let count = len.div_ceil(BLOCK as u64) as i32;
    let reads = (0..count).map(move |i| {
        let mut buf = vec![0u8; BLOCK];
        let n = f.read(&mut buf).unwrap_or(0);
        let mut filled = n;
        while filled < BLOCK && n > 0 {
            match f.read(&mut buf[filled..]) {
                Ok(0) | Err(_) => break,
                Ok(m) => filled += m,
            }
        }
        (i, buf)
    });
    let results = futures_util::stream::iter(reads.filter(|(_, b)| b.iter().any(|&x| x != 0)).map(
        |(i, b)| {
            let ebs = ebs.clone();
            let sid = sid.clone();
            async move {
                let sum = Sha256::digest(&b);
                ebs.put_snapshot_block()
                    .snapshot_id(sid)
                    .block_index(i)
                    .data_length(BLOCK as i32)
                    .checksum(b64(&sum))
                    .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                    .block_data(ByteStream::from(b))
                    .send()
                    .await
                    .map(|_| (i, sum))
            }
        },
    ))
    .buffer_unordered(in_flight)
    .collect::<Vec<_>>()
    .await;
    let mut sums = Vec::with_capacity(results.len());
    for r in results {
        sums.push(r?);
    }
    sums.sort_by_key(|(i, _)| *i);
    let mut all = Sha256::new();
    for (_, s) in &sums {
        all.update(s);
    }
    ebs.complete_snapshot()
        .snapshot_id(&sid)
        .changed_blocks_count(sums.len() as i32)
        .checksum(b64(&all.finalize()))
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
        .send()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"SnapshotId": sid, "Blocks": sums.len(), "Bytes": sums.len() * BLOCK, "Seconds": secs})
    );
    Ok(())
}

async fn download(
    ebs: &aws_sdk_ebs::Client,
    sid: &str,
    image: &str,
    in_flight: usize,
) -> Result<(), Error> {
    let started = Instant::now();
    let mut blocks = Vec::new();
    let mut token: Option<String> = None;
    let mut size_gib = 0;
    loop {
        let page = ebs
            .list_snapshot_blocks()
            .snapshot_id(sid)
            .set_next_token(token.clone())
            .send()
            .await?;
        size_gib = page.volume_size().unwrap_or(size_gib);
        for b in page.blocks() {
            blocks.push((
                b.block_index().unwrap_or(0),
                b.block_token().unwrap_or_default().to_string(),
            ));
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let out = std::sync::Arc::new(ImageWriter::create(image, size_gib as u64 * (1 << 30))?);
    let mut gets = futures_util::stream::iter(blocks.iter().map(|(i, t)| {
        let ebs = ebs.clone();
        let out = out.clone();
        async move {
            let r = ebs
                .get_snapshot_block()
                .snapshot_id(sid)
                .block_index(*i)
                .block_token(t)
                .send()
                .await?;
            let sum = r.checksum().unwrap_or_default().to_string();
            let data = r.block_data.collect().await?.into_bytes();
            if b64(&Sha256::digest(&data)) != sum {
                return Err(format!("block {i}: the checksum does not match the data").into());
            }
            // Each block is written by its own request, so the disk sees
            // as many writes in flight as there are requests.
            let offset = *i as u64 * BLOCK as u64;
            tokio::task::spawn_blocking(move || out.write_block(offset, &data)).await??;
            Ok::<_, Error>(())
        }
    }))
    .buffer_unordered(in_flight);
    let mut n = 0usize;
    while let Some(r) = gets.next().await {
        r?;
        n += 1;
    }
    // Timed: every block fetched, checked and written into the image. The
    // image's final fsync is the client's own disk, not the API's, and is
    // left out of the time.
    let secs = started.elapsed().as_secs_f64();
    out.file.sync_all()?;
    println!(
        "{}",
        serde_json::json!({"SnapshotId": sid, "Blocks": n, "Bytes": n * BLOCK, "Seconds": secs})
    );
    Ok(())
}

/// The downloaded image, written as `dd oflag=direct` writes: each block
/// goes from one reused, page-aligned buffer straight to the disk, so the
/// client neither fills the page cache nor allocates a page per 4 KiB of
/// image (a cost of the host's memory, not of the API). Where the file
/// system refuses O_DIRECT, buffered writes.
struct ImageWriter {
    file: std::fs::File,
    direct: bool,
}

thread_local! {
    /// A block and a page of slack (the block starts at its first page
    /// boundary), reused by each writing thread.
    static ALIGNED: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; BLOCK + 4096]);
}

impl ImageWriter {
    fn create(path: &str, len: u64) -> std::io::Result<ImageWriter> {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |flags| {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(flags)
                .open(path)
        };
        let (file, direct) = match open(libc::O_DIRECT) {
            Ok(f) => (f, true),
            Err(_) => (open(0)?, false),
        };
        file.set_len(len)?;
        if direct {
            use std::os::fd::AsRawFd;
            // Blocks allocated up front: a direct write then only marks its
            // extent written instead of allocating on the write path.
            // SAFETY: fallocate on an open descriptor; no memory is passed.
            let _ = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
        }
        Ok(ImageWriter { file, direct })
    }

    fn write_block(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.direct && data.len() == BLOCK {
            ALIGNED.with_borrow_mut(|buf| {
                let start = buf.as_ptr().align_offset(4096);
                let block = &mut buf[start..start + BLOCK];
                block.copy_from_slice(data);
                self.file.write_all_at(block, offset)
            })
        } else {
            self.file.write_all_at(data, offset)
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: ebs_transfer upload ENDPOINT IMAGE [IN_FLIGHT] | download ENDPOINT SNAPSHOT IMAGE [IN_FLIGHT]";
    match args.get(1).map(String::as_str) {
        Some("upload") if args.len() >= 4 => {
            let n = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(16);
            upload(&client(&args[2])?, &args[3], n).await
        }
        Some("download") if args.len() >= 5 => {
            let n = args.get(5).and_then(|n| n.parse().ok()).unwrap_or(16);
            download(&client(&args[2])?, &args[3], &args[4], n).await
        }
        _ => Err(usage.into()),
    }
}
