//! Restores on a volume host whose records are at a control plane on
//! another machine: the snapshot a restored volume hydrates from, read
//! through the control plane's EBS direct APIs, signed with this host's
//! credentials. ListSnapshotBlocks gives the blocks the snapshot holds and
//! their block tokens ([`list_snapshot_blocks`]); GetSnapshotBlock gives a
//! block's plaintext, which is used only once its `x-amz-Checksum`
//! (SHA-256) matches ([`RemoteSnapshotSource`]). The device's lazy
//! hydration ([`crate::volume::device::EncryptedDevice::with_hydration`])
//! does the rest: a chunk is fetched on first read, the attach daemon
//! fetches the others in the background.
//!
//! What must hold: nothing unverified reaches the device (a short block, a
//! checksum that does not match, another algorithm: the read fails with
//! EIO and the chunk stays to be fetched); the control plane decides who
//! may read the snapshot (`ebs:ListSnapshotBlocks`, `ebs:GetSnapshotBlock`,
//! the snapshot's visibility and its key's use), this module decides
//! nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::api_error::{ApiError, ApiResult};
use crate::server::control_plane::{percent_encode as encode, ControlPlaneClient, EbsReply};
use crate::session::Session;
use crate::volume::device::ChunkSource;
use crate::volume::service::{SourceResolver, VolumeRecord};
use crate::volume::{VolumeError, CHUNK_SIZE};

/// What the volumes of a host whose records are at a control plane
/// hydrate through (give it to `Volumes::with_snapshot_source` there).
/// Once a volume is hydrated the control plane is told
/// (`KeyvolReportHostHydrated`), so that it drops its own record of the
/// restore's pending data and the snapshot can be deleted.
pub const SOURCE: SourceResolver = SourceResolver {
    source: remote_source,
    hydrated: report_hydrated,
};

fn report_hydrated(s: &Session, r: &VolumeRecord) -> ApiResult<()> {
    let cp = super::remote::control_plane(s)?
        .ok_or_else(|| ApiError::internal("no control plane is configured (kms-endpoint)"))?;
    let instance = super::remote::own_instance(s, &cp)?;
    cp.ec2(
        crate::ec2::hosts::REPORT_HOST_HYDRATED,
        &[
            ("InstanceId", &instance),
            ("VolumeId", r.volume_id.as_str()),
        ],
    )?;
    Ok(())
}

/// Largest page of ListSnapshotBlocks (EBS allows 100..10000).
const PAGE: u32 = 10_000;

/// A block token is renewed this long before the listing's ExpiryTime.
const RENEW_BEFORE_SECS: i64 = 300;

/// How often a throttled or failed GetSnapshotBlock is tried in all.
const ATTEMPTS: u32 = 5;

/// The blocks a snapshot holds, with the tokens that read them.
#[derive(Debug, Clone, Default)]
pub struct BlockListing {
    /// Block index -> block token.
    pub tokens: BTreeMap<u64, String>,
    /// Unix seconds until which the tokens are good.
    pub expires: i64,
}

/// ListSnapshotBlocks of `snapshot`, every page.
pub fn list_snapshot_blocks(cp: &ControlPlaneClient, snapshot: &str) -> ApiResult<BlockListing> {
    let path = format!("/snapshots/{}/blocks", encode(snapshot));
    let mut out = BlockListing::default();
    let mut page_token: Option<String> = None;
    loop {
        // Sorted, as SigV4's canonical query wants it.
        let mut query = format!("maxResults={PAGE}");
        if let Some(t) = &page_token {
            query.push_str("&pageToken=");
            query.push_str(&encode(t));
        }
        let v = cp.ebs("GET", &path, &query, &[], b"")?.json();
        let block_size = v["BlockSize"].as_u64().unwrap_or(0);
        if block_size != CHUNK_SIZE {
            return Err(ApiError::internal(format!(
                "the control plane at {} listed snapshot {snapshot} with blocks of {block_size} bytes, not {CHUNK_SIZE}",
                cp.endpoint()
            )));
        }
        for b in v["Blocks"].as_array().into_iter().flatten() {
            match (b["BlockIndex"].as_u64(), b["BlockToken"].as_str()) {
                (Some(i), Some(t)) => {
                    out.tokens.insert(i, t.to_string());
                }
                _ => {
                    return Err(ApiError::internal(format!(
                        "the control plane at {} listed a block of snapshot {snapshot} without an index or token",
                        cp.endpoint()
                    )))
                }
            }
        }
        let expires = v["ExpiryTime"].as_f64().unwrap_or(0.0) as i64;
        out.expires = if out.expires == 0 {
            expires
        } else {
            out.expires.min(expires)
        };
        match v["NextToken"].as_str() {
            Some(t) if !t.is_empty() => page_token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

/// The snapshot of a restored volume, read block by block through the
/// control plane's GetSnapshotBlock.
pub struct RemoteSnapshotSource {
    cp: ControlPlaneClient,
    snapshot: String,
    listing: Mutex<BlockListing>,
}

impl std::fmt::Debug for RemoteSnapshotSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSnapshotSource")
            .field("endpoint", &self.cp.endpoint())
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

impl RemoteSnapshotSource {
    /// Lists `snapshot`'s blocks once: a caller who may not read it is
    /// refused here, before any data is served.
    pub fn open(cp: ControlPlaneClient, snapshot: &str) -> ApiResult<Self> {
        let listing = list_snapshot_blocks(&cp, snapshot)?;
        Ok(RemoteSnapshotSource {
            cp,
            snapshot: snapshot.to_string(),
            listing: Mutex::new(listing),
        })
    }

    /// The token of block `index` (`None`: the snapshot does not hold
    /// it), renewing the listing when its tokens are about to expire or
    /// `renew` says one was refused.
    fn token(&self, index: u64, renew: bool) -> Result<Option<String>, VolumeError> {
        let mut l = self
            .listing
            .lock()
            .map_err(|_| self.failed(index, "the block listing is poisoned".into()))?;
        let now = crate::clock::Clock::system().now();
        if renew || now + RENEW_BEFORE_SECS >= l.expires {
            *l = list_snapshot_blocks(&self.cp, &self.snapshot).map_err(|e| {
                self.failed(
                    index,
                    format!("ListSnapshotBlocks: {}: {}", e.code, e.message),
                )
            })?;
        }
        Ok(l.tokens.get(&index).cloned())
    }

    fn failed(&self, index: u64, why: String) -> VolumeError {
        VolumeError::Io {
            op: "hydrating from",
            path: PathBuf::from(format!(
                "{}/snapshots/{}/blocks/{index}",
                self.cp.endpoint(),
                self.snapshot
            )),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
        }
    }

    /// GetSnapshotBlock of block `index` into `out`, checked.
    fn get(&self, index: u64, token: &str, out: &mut [u8]) -> ApiResult<()> {
        let path = format!("/snapshots/{}/blocks/{index}", encode(&self.snapshot));
        let reply = self.cp.ebs(
            "GET",
            &path,
            &format!("blockToken={}", encode(token)),
            &[],
            b"",
        )?;
        verified_block(&reply, out)
    }
}

/// Copies the block of a GetSnapshotBlock answer into `out` once its
/// length, `x-amz-Data-Length`, `x-amz-Checksum-Algorithm` (SHA256) and
/// `x-amz-Checksum` (base64 SHA-256 of the bytes) all agree; `out` is
/// untouched otherwise.
fn verified_block(reply: &EbsReply, out: &mut [u8]) -> ApiResult<()> {
    let bad = |why: String| ApiError::new("SnapshotIntegrityError", why);
    if reply.body.len() != out.len() {
        return Err(bad(format!(
            "GetSnapshotBlock answered {} bytes, not a block of {}",
            reply.body.len(),
            out.len()
        )));
    }
    if let Some(n) = reply.header("x-amz-Data-Length") {
        if n.trim().parse::<usize>().ok() != Some(out.len()) {
            return Err(bad(format!("GetSnapshotBlock said x-amz-Data-Length {n}")));
        }
    }
    match reply.header("x-amz-Checksum-Algorithm").map(str::trim) {
        Some("SHA256") => {}
        other => {
            return Err(bad(format!(
                "GetSnapshotBlock checksum algorithm is {other:?}, not SHA256"
            )))
        }
    }
    let want = reply
        .header("x-amz-Checksum")
        .map(str::trim)
        .ok_or_else(|| bad("GetSnapshotBlock answered no x-amz-Checksum".into()))?;
    let got = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&reply.body));
    if got != want {
        return Err(bad(
            "the block does not match its x-amz-Checksum (SHA-256): it is not used".into(),
        ));
    }
    out.copy_from_slice(&reply.body);
    Ok(())
}

/// Errors worth another try: throttling, a control plane that did not
/// answer or failed inside.
fn transient(e: &ApiError) -> bool {
    matches!(
        e.code.as_str(),
        "RequestThrottledException"
            | "InternalServerException"
            | crate::server::control_plane::UNREACHABLE
    )
}

impl ChunkSource for RemoteSnapshotSource {
    fn fetch(&self, index: u64, out: &mut [u8]) -> Result<(), VolumeError> {
        let mut renew = false;
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            let Some(token) = self.token(index, renew)? else {
                out.fill(0);
                return Ok(());
            };
            renew = false;
            match self.get(index, &token, out) {
                Ok(()) => return Ok(()),
                // An expired or refused token: list again, once.
                Err(e) if e.code == "ValidationException" && attempt == 0 => {
                    renew = true;
                    last = format!("{}: {}", e.code, e.message);
                }
                Err(e) if transient(&e) => {
                    last = format!("{}: {}", e.code, e.message);
                    std::thread::sleep(Duration::from_millis(100 << attempt));
                }
                Err(e) => {
                    return Err(self.failed(
                        index,
                        format!("GetSnapshotBlock: {}: {}", e.code, e.message),
                    ))
                }
            }
        }
        Err(self.failed(index, format!("GetSnapshotBlock: {last}")))
    }
}

/// The source of a restored volume `r` of this host: its snapshot at the
/// control plane.
fn remote_source(s: &Session, r: &VolumeRecord) -> ApiResult<Arc<dyn ChunkSource>> {
    let snapshot = r.snapshot_id.as_deref().unwrap_or_default();
    let cp = super::remote::control_plane(s)?.ok_or_else(|| {
        ApiError::internal(format!(
            "volume {} hydrates from {snapshot} at a control plane, but this home names none (kms-endpoint)",
            r.volume_id
        ))
    })?;
    let source = RemoteSnapshotSource::open(cp, snapshot).map_err(|e| {
        ApiError::new(
            &e.code,
            format!(
                "volume {} cannot hydrate from snapshot {snapshot} at the control plane: {}",
                r.volume_id, e.message
            ),
        )
    })?;
    Ok(Arc::new(source))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Header = (&'static str, String);

    fn reply(body: &[u8], headers: &[Header]) -> EbsReply {
        EbsReply {
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
            body: zeroize::Zeroizing::new(body.to_vec()),
        }
    }

    #[test]
    fn only_a_block_that_matches_its_checksum_is_used() {
        let block = vec![0xa5u8; 4096];
        let b64 = base64::engine::general_purpose::STANDARD;
        let sum = b64.encode(Sha256::digest(&block));
        let good = [
            ("x-amz-Data-Length", "4096".to_string()),
            ("x-amz-Checksum", sum.clone()),
            ("x-amz-Checksum-Algorithm", "SHA256".to_string()),
        ];
        let mut out = vec![0u8; 4096];
        verified_block(&reply(&block, &good), &mut out).unwrap();
        assert_eq!(out, block);

        let mut flipped = block.clone();
        flipped[100] ^= 1;
        let other_sum = [
            ("x-amz-Data-Length", "4096".to_string()),
            ("x-amz-Checksum", b64.encode(Sha256::digest(&flipped))),
            ("x-amz-Checksum-Algorithm", "SHA256".to_string()),
        ];
        let no_sum = [
            ("x-amz-Data-Length", "4096".to_string()),
            ("x-amz-Checksum-Algorithm", "SHA256".to_string()),
        ];
        let other_algorithm = [
            ("x-amz-Data-Length", "4096".to_string()),
            ("x-amz-Checksum", sum.clone()),
            ("x-amz-Checksum-Algorithm", "CRC32".to_string()),
        ];
        let wrong_length = [
            ("x-amz-Data-Length", "4095".to_string()),
            ("x-amz-Checksum", sum.clone()),
            ("x-amz-Checksum-Algorithm", "SHA256".to_string()),
        ];
        let cases: [(&[u8], &[Header]); 5] = [
            (&block, &other_sum),
            (&flipped, &good),
            (&block, &no_sum),
            (&block, &other_algorithm),
            (&block, &wrong_length),
        ];
        for (i, (body, headers)) in cases.iter().enumerate() {
            let mut out = vec![0u8; 4096];
            let e = verified_block(&reply(body, headers), &mut out).unwrap_err();
            assert_eq!(e.code, "SnapshotIntegrityError", "case {i}");
            assert!(out.iter().all(|&b| b == 0), "case {i}: out was written");
        }
        let mut short = vec![0u8; 8192];
        assert!(verified_block(&reply(&block, &good), &mut short).is_err());
    }

    #[test]
    fn tokens_are_encoded_for_the_query() {
        assert_eq!(encode("AbC+/=9"), "AbC%2B%2F%3D9");
        assert_eq!(encode("snap-0123456789abcdef0"), "snap-0123456789abcdef0");
    }

    #[test]
    fn only_throttling_and_outages_are_retried() {
        for code in [
            "RequestThrottledException",
            "InternalServerException",
            crate::server::control_plane::UNREACHABLE,
        ] {
            assert!(transient(&ApiError::new(code, "")), "{code}");
        }
        for code in [
            "AccessDeniedException",
            "ResourceNotFoundException",
            "ValidationException",
            "SnapshotIntegrityError",
        ] {
            assert!(!transient(&ApiError::new(code, "")), "{code}");
        }
    }
}
