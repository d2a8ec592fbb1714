//! Streaming envelope encryption for files of any size.
//!
//! A data key from GenerateDataKey encrypts the file in 64 KiB chunks with
//! AES-256-GCM (the STREAM construction): each chunk's nonce holds its index
//! and a last-chunk flag, and every chunk authenticates the whole header, so
//! truncation, reordering, chunk swapping between files and any tampered
//! byte are detected. Memory stays at one chunk whatever the file size.
//!
//! File format (integers little-endian):
//!
//! | size    | field                                                      |
//! |---------|------------------------------------------------------------|
//! | 8       | magic `KVENVLP1`                                           |
//! | 2       | length C of the encryption context                         |
//! | C       | encryption context, canonical JSON (keys sorted)           |
//! | 2       | length W of the wrapped data key                           |
//! | W       | wrapped data key: a KMS ciphertext blob (see ciphertext.rs)|
//! | 4       | chunk size S in bytes (65536)                              |
//! | 32      | salt (random)                                              |
//! | ...     | chunks: min(S, rest) bytes of ciphertext + 16-byte GCM tag |
//!
//! Payload key = HKDF-SHA256(ikm = data key, salt = salt,
//! info = "keyvol envelope v1"). Chunk i's nonce = i as u64 LE (8 bytes) ||
//! 0x00 0x00 0x00 || last flag (0x01 for the final chunk, else 0x00).
//! AAD of every chunk = SHA-256 of the header bytes. The final chunk may be
//! shorter than S (and is empty for an empty file); a file always has one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::kms::api::{Blob, DecryptRequest, GenerateDataKeyRequest};
use crate::kms::{ErrorCode, Kms, KmsError, KmsResult, RequestContext};

pub const MAGIC: &[u8; 8] = b"KVENVLP1";
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

fn io_err(what: &str, e: std::io::Error) -> KmsError {
    KmsError::validation(format!("{what}: {e}"))
}

fn cipher(data_key: &[u8], salt: &[u8]) -> KmsResult<Aes256Gcm> {
    let hk = Hkdf::<Sha256>::new(Some(salt), data_key);
    let mut k = Zeroizing::new([0u8; 32]);
    hk.expand(b"keyvol envelope v1", &mut k[..])
        .map_err(|_| KmsError::internal("key derivation failed"))?;
    Aes256Gcm::new_from_slice(&k[..]).map_err(|_| KmsError::internal("key derivation failed"))
}

fn nonce(i: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&i.to_le_bytes());
    n[11] = last as u8;
    n
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Encrypts `input` to `output` under a new data key of `key_id`.
pub fn encrypt(
    kms: &Kms,
    ctx: &RequestContext,
    key_id: &str,
    context: BTreeMap<String, String>,
    input: &mut impl Read,
    output: &mut impl Write,
) -> KmsResult<u64> {
    let dk = kms.generate_data_key(
        ctx,
        GenerateDataKeyRequest {
            key_id: Some(key_id.to_string()),
            encryption_context: Some(context.clone()),
            key_spec: Some("AES_256".into()),
            ..Default::default()
        },
    )?;
    let plaintext_key = dk
        .plaintext
        .ok_or_else(|| KmsError::internal("GenerateDataKey returned no plaintext"))?;
    let ctx_json = serde_json::to_vec(&context).unwrap_or_default();
    let wrapped = dk.ciphertext_blob.0;
    if ctx_json.len() > u16::MAX as usize || wrapped.len() > u16::MAX as usize {
        return Err(KmsError::validation(
            "encryption context too large for the envelope header",
        ));
    }
    let mut salt = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let mut header = Vec::new();
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&(ctx_json.len() as u16).to_le_bytes());
    header.extend_from_slice(&ctx_json);
    header.extend_from_slice(&(wrapped.len() as u16).to_le_bytes());
    header.extend_from_slice(&wrapped);
    header.extend_from_slice(&(CHUNK as u32).to_le_bytes());
    header.extend_from_slice(&salt);
    let aad = Sha256::digest(&header);
    output
        .write_all(&header)
        .map_err(|e| io_err("writing the output", e))?;
    let c = cipher(plaintext_key.0.expose(), &salt)?;
    // Read one chunk ahead to know which chunk is the last.
    let mut cur = Zeroizing::new(vec![0u8; CHUNK]);
    let mut next = Zeroizing::new(vec![0u8; CHUNK]);
    let mut cur_len = read_full(input, &mut cur).map_err(|e| io_err("reading the input", e))?;
    let mut i = 0u64;
    let mut total = 0u64;
    loop {
        let next_len = if cur_len == CHUNK {
            read_full(input, &mut next).map_err(|e| io_err("reading the input", e))?
        } else {
            0
        };
        let last = next_len == 0;
        let ct = c
            .encrypt(
                Nonce::from_slice(&nonce(i, last)),
                Payload {
                    msg: &cur[..cur_len],
                    aad: &aad,
                },
            )
            .map_err(|_| KmsError::internal("encryption failed"))?;
        output
            .write_all(&ct)
            .map_err(|e| io_err("writing the output", e))?;
        total += cur_len as u64;
        if last {
            break;
        }
        std::mem::swap(&mut cur, &mut next);
        cur_len = next_len;
        i += 1;
    }
    output
        .flush()
        .map_err(|e| io_err("writing the output", e))?;
    Ok(total)
}

/// Decrypts an envelope file. `expected_context`, when given, must equal the
/// context the file was made with. Output is written chunk by chunk only
/// after each chunk authenticates; a failure part-way leaves a partial
/// output the caller must discard (the CLI writes to a temporary file and
/// renames it only on success).
pub fn decrypt(
    kms: &Kms,
    ctx: &RequestContext,
    key_id: Option<&str>,
    expected_context: Option<&BTreeMap<String, String>>,
    input: &mut impl Read,
    output: &mut impl Write,
) -> KmsResult<u64> {
    let bad = KmsError::invalid_ciphertext;
    let mut header = Vec::new();
    let mut take = |n: usize, header: &mut Vec<u8>| -> KmsResult<Vec<u8>> {
        let mut b = vec![0u8; n];
        let got = read_full(input, &mut b).map_err(|e| io_err("reading the input", e))?;
        if got != n {
            return Err(bad());
        }
        header.extend_from_slice(&b);
        Ok(b)
    };
    if take(8, &mut header)? != MAGIC {
        return Err(KmsError::new(
            ErrorCode::InvalidCiphertextException,
            "not a keyvol envelope file (bad magic)",
        ));
    }
    let cl = u16::from_le_bytes(take(2, &mut header)?.try_into().map_err(|_| bad())?) as usize;
    let ctx_json = take(cl, &mut header)?;
    let context: BTreeMap<String, String> = serde_json::from_slice(&ctx_json).map_err(|_| bad())?;
    if let Some(exp) = expected_context {
        if exp != &context {
            return Err(bad());
        }
    }
    let wl = u16::from_le_bytes(take(2, &mut header)?.try_into().map_err(|_| bad())?) as usize;
    let wrapped = take(wl, &mut header)?;
    let chunk = u32::from_le_bytes(take(4, &mut header)?.try_into().map_err(|_| bad())?) as usize;
    if chunk == 0 || chunk > 16 * 1024 * 1024 {
        return Err(bad());
    }
    let salt = take(32, &mut header)?;
    let aad = Sha256::digest(&header);
    let dk = kms.decrypt(
        ctx,
        DecryptRequest {
            key_id: key_id.map(str::to_string),
            ciphertext_blob: Some(Blob(wrapped)),
            encryption_context: Some(context),
            ..Default::default()
        },
    )?;
    let c = cipher(dk.plaintext.0.expose(), &salt)?;
    let mut cur = vec![0u8; chunk + TAG];
    let mut next = vec![0u8; chunk + TAG];
    let mut cur_len = read_full(input, &mut cur).map_err(|e| io_err("reading the input", e))?;
    let mut i = 0u64;
    let mut total = 0u64;
    loop {
        if cur_len < TAG {
            return Err(bad());
        }
        let next_len = if cur_len == chunk + TAG {
            read_full(input, &mut next).map_err(|e| io_err("reading the input", e))?
        } else {
            0
        };
        let last = next_len == 0;
        let pt = Zeroizing::new(
            c.decrypt(
                Nonce::from_slice(&nonce(i, last)),
                Payload {
                    msg: &cur[..cur_len],
                    aad: &aad,
                },
            )
            .map_err(|_| bad())?,
        );
        output
            .write_all(&pt)
            .map_err(|e| io_err("writing the output", e))?;
        total += pt.len() as u64;
        if last {
            break;
        }
        std::mem::swap(&mut cur, &mut next);
        cur_len = next_len;
        i = i.checked_add(1).ok_or_else(bad)?;
    }
    output
        .flush()
        .map_err(|e| io_err("writing the output", e))?;
    Ok(total)
}

/// The output file of an envelope command, written safely beside its
/// target: a new temporary file in the target's directory with a random
/// name, created with `O_CREAT|O_EXCL|O_NOFOLLOW` and mode 0600 (so a
/// planted symlink or a file someone else created there is never followed
/// or reused, and no other user can read the plaintext while it is
/// written), renamed over the target only by [`OutputFile::commit`]. A
/// file dropped without commit is removed: a failed decryption leaves no
/// unauthenticated plaintext behind. The target ends with mode 0600; a
/// symlink at the target is replaced, never written through.
#[derive(Debug)]
pub struct OutputFile {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl OutputFile {
    /// Creates the temporary file for `target`.
    pub fn create(target: &Path) -> std::io::Result<OutputFile> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let name = target.file_name().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the output path names no file",
            )
        })?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut last = None;
        // A name taken (AlreadyExists) is skipped: 16 random bytes make a
        // collision without an attacker practically impossible.
        for _ in 0..8 {
            let mut r = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut r);
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".keyvol-{}.tmp", hex::encode(r)));
            let tmp = dir.join(tmp_name);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)
            {
                Ok(file) => {
                    let out = OutputFile {
                        file,
                        tmp,
                        target: target.to_path_buf(),
                        committed: false,
                    };
                    // The umask may only take bits away; make it exactly 0600.
                    out.file
                        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
                    return Ok(out);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary name")))
    }

    /// The temporary file to write to.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Makes the written data durable and renames it over the target.
    pub fn commit(mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, &self.target)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
