//! `SectorCipher`: AES-256-XTS over 4096-byte sectors, tweak = sector index
//! as a 128-bit little-endian integer — the layout of dm-crypt's
//! `aes-xts-plain64` with 4096-byte sectors, so anyone holding the data key
//! can recover a volume with standard tools.
//!
//! The bulk work is AWS-LC's `EVP_aes_256_xts` (the AES-NI XTS assembly it
//! shares with OpenSSL): both AES key schedules are expanded once, into a
//! pair of template contexts (encrypt, decrypt); each sector then only sets
//! its tweak on an already keyed context and runs one `EVP_Cipher` call over
//! its 256 blocks. Contexts are mutable while a sector runs, so every
//! concurrent caller works on a context of its own: a small set of slots,
//! each a `Mutex` that a thread normally finds free (one uncontended lock
//! per call, none per sector), filled on first use by copying the template.
//!
//! [`reference`] is the previous pure-Rust implementation (the `aes` crate,
//! tweaks by GF(2^128) doubling). It is kept as the path that answers if
//! AWS-LC ever reports a failure (it only can on allocation failure), so a
//! failure costs speed, never an error or a wrong sector, and as the oracle
//! the tests compare the AWS-LC path with.

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use aws_lc_sys as lc;

use crate::secret::{ct_eq, VolumeDataKey};
use crate::volume::error::VolumeError;

/// Bytes per sector (the XTS data unit).
pub const SECTOR_SIZE: usize = 4096;

/// Context slots per cipher: more than the device's worker threads, so
/// concurrent callers rarely meet on one slot.
const SLOTS: usize = 16;

/// AES-256-XTS over 4096-byte sectors.
pub struct SectorCipher {
    /// Keyed contexts that only serve as the source of slot copies; `None`
    /// if AWS-LC could not allocate them (then every sector takes
    /// `fallback`).
    template: Mutex<Option<CtxPair>>,
    /// Working contexts, copied from `template` on first use.
    slots: Box<[Mutex<Option<CtxPair>>]>,
    /// The pure-Rust implementation of the same cipher.
    fallback: reference::Xts,
}

impl std::fmt::Debug for SectorCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SectorCipher([REDACTED])")
    }
}

impl SectorCipher {
    /// Builds the cipher from the volume's 64-byte data key (key1 = first
    /// half, key2 = second half, as dm-crypt and IEEE 1619 split it).
    /// Refuses a key whose halves are equal.
    pub fn new(key: &VolumeDataKey) -> Result<Self, VolumeError> {
        let k = key.expose();
        let (k1, k2) = k.split_at(32);
        if ct_eq(k1, k2) {
            return Err(VolumeError::EqualKeyHalves);
        }
        let fallback = reference::Xts::new(k1, k2)?;
        #[cfg(feature = "bench-null-cipher")]
        tracing::warn!("bench-null-cipher build: sectors are stored UNENCRYPTED (benchmarks only)");
        // AWS-LC refuses equal halves as well; they were refused above.
        let template = match (EvpCtx::keyed(k, true), EvpCtx::keyed(k, false)) {
            (Some(enc), Some(dec)) => Some(CtxPair { enc, dec }),
            _ => None,
        };
        Ok(SectorCipher {
            template: Mutex::new(template),
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
            fallback,
        })
    }

    /// Encrypts `buf` (whole sectors) in place; its first sector is sector
    /// number `first_sector` of the volume.
    pub fn encrypt_sectors(&self, first_sector: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        self.sectors(first_sector, None, buf, Direction::Encrypt)
    }

    /// Encrypts `plain` (whole sectors) into `out`, which must be as long:
    /// the write path's copy of the plaintext into its buffer and the
    /// encryption are one pass. Its first sector is sector `first_sector`.
    pub fn encrypt_sectors_into(
        &self,
        first_sector: u64,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<(), VolumeError> {
        self.sectors(first_sector, Some(plain), out, Direction::Encrypt)
    }

    /// Decrypts `buf` (whole sectors) in place; see [`Self::encrypt_sectors`].
    pub fn decrypt_sectors(&self, first_sector: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        self.sectors(first_sector, None, buf, Direction::Decrypt)
    }

    /// Runs `dir` over whole sectors into `buf`: from `from` (as long as
    /// `buf`) when given, else in place.
    fn sectors(
        &self,
        first: u64,
        from: Option<&[u8]>,
        buf: &mut [u8],
        dir: Direction,
    ) -> Result<(), VolumeError> {
        if !buf.len().is_multiple_of(SECTOR_SIZE) {
            return Err(VolumeError::NotSectorMultiple {
                len: buf.len(),
                sector_size: SECTOR_SIZE,
            });
        }
        if let Some(src) = from.filter(|f| f.len() != buf.len()) {
            return Err(VolumeError::InvalidInput(format!(
                "cannot run XTS from {} bytes into a buffer of {}",
                src.len(),
                buf.len()
            )));
        }
        // The benchmark-only build measures the device without encryption
        // (the cost of everything but the cipher); never a default feature.
        if cfg!(feature = "bench-null-cipher") {
            if let Some(src) = from {
                buf.copy_from_slice(src);
            }
            return Ok(());
        }
        let mut slot = self.slot();
        for (i, sector) in buf.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            let src = from.map(|f| &f[i * SECTOR_SIZE..(i + 1) * SECTOR_SIZE]);
            self.crypt_unit_with(&mut slot, u128::from(first) + i as u128, src, sector, dir);
        }
        Ok(())
    }

    /// XTS over one data unit of `data.len()` bytes (at least 16; every
    /// unit here is 4096 bytes, or 512 in the IEEE 1619 vectors).
    #[cfg(all(test, not(feature = "bench-null-cipher")))]
    fn crypt_unit(&self, unit: u128, data: &mut [u8], dir: Direction) {
        let mut slot = self.slot();
        self.crypt_unit_with(&mut slot, unit, None, data, dir);
    }

    /// One data unit into `data`, from `from` (as long) or in place.
    fn crypt_unit_with(
        &self,
        slot: &mut Option<CtxPair>,
        unit: u128,
        from: Option<&[u8]>,
        data: &mut [u8],
        dir: Direction,
    ) {
        if slot.is_none() {
            *slot = self.copy_template();
        }
        let done = slot.as_mut().is_some_and(|pair| {
            let ctx = match dir {
                Direction::Encrypt => &mut pair.enc,
                Direction::Decrypt => &mut pair.dec,
            };
            ctx.crypt(unit, from, data)
        });
        if !done {
            if let Some(src) = from {
                data.copy_from_slice(src);
            }
            self.fallback.crypt_unit(unit, data, dir);
        }
    }

    /// A slot for this call: the calling thread's own slot when free, else
    /// the next free one, else (more callers than slots) the thread's own
    /// slot once it is released.
    fn slot(&self) -> MutexGuard<'_, Option<CtxPair>> {
        let home = HOME_SLOT.with(|s| *s);
        for i in 0..SLOTS {
            match self.slots[(home + i) % SLOTS].try_lock() {
                Ok(guard) => return guard,
                // A panic while a context was in use leaves nothing to
                // repair: every sector sets its tweak afresh.
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            }
        }
        self.slots[home % SLOTS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn copy_template(&self) -> Option<CtxPair> {
        let template = self.template.lock().unwrap_or_else(PoisonError::into_inner);
        let t = template.as_ref()?;
        Some(CtxPair {
            enc: t.enc.copy()?,
            dec: t.dec.copy()?,
        })
    }
}

/// The slot a thread tries first: threads take consecutive slots in the
/// order they first encrypt.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static HOME_SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
}

#[derive(Clone, Copy)]
enum Direction {
    Encrypt,
    Decrypt,
}

/// An encrypting and a decrypting context under the same key.
struct CtxPair {
    enc: EvpCtx,
    dec: EvpCtx,
}

/// An AWS-LC cipher context keyed for AES-256-XTS in one direction. It owns
/// both expanded AES keys; dropping it cleanses them (see `Drop`).
struct EvpCtx(NonNull<lc::EVP_CIPHER_CTX>);

// SAFETY: an EVP_CIPHER_CTX has no thread affinity; this type owns it
// uniquely and only mutates it through `&mut self`, so moving it to another
// thread is sound (sharing is done through a `Mutex`).
unsafe impl Send for EvpCtx {}

impl EvpCtx {
    /// A new context keyed with the 64-byte XTS key, for encryption or
    /// decryption. `None` if AWS-LC refuses (allocation failure, or equal
    /// key halves, which the caller refuses first).
    fn keyed(key: &[u8], encrypt: bool) -> Option<Self> {
        if key.len() != 64 {
            return None;
        }
        let ctx = Self::alloc()?;
        // SAFETY: FFI call on a live context we own; the cipher is a static
        // AWS-LC object; `key` is 64 readable bytes (checked above), the
        // AES-256-XTS key length, and is only read during the call (AWS-LC
        // keeps the expanded schedules, not the pointer).
        let ok = unsafe {
            lc::EVP_CipherInit_ex(
                ctx.0.as_ptr(),
                lc::EVP_aes_256_xts(),
                ptr::null_mut(),
                key.as_ptr(),
                ptr::null(),
                i32::from(encrypt),
            )
        };
        (ok == 1).then_some(ctx)
    }

    fn alloc() -> Option<Self> {
        // SAFETY: FFI allocation with no arguments; a null result is
        // handled.
        NonNull::new(unsafe { lc::EVP_CIPHER_CTX_new() }).map(EvpCtx)
    }

    /// A second context with the same cipher, key schedules and direction.
    fn copy(&self) -> Option<Self> {
        let out = Self::alloc()?;
        // SAFETY: FFI call on two live contexts; `self` is only read.
        let ok = unsafe { lc::EVP_CIPHER_CTX_copy(out.0.as_ptr(), self.0.as_ptr()) };
        (ok == 1).then_some(out)
    }

    /// Encrypts or decrypts (the context's direction) one data unit with
    /// tweak `unit` into `data`: from `from` (as long as `data`) when
    /// given, else in place. `false` leaves `data` untouched: AWS-LC checks
    /// its arguments before it writes.
    fn crypt(&mut self, unit: u128, from: Option<&[u8]>, data: &mut [u8]) -> bool {
        if from.is_some_and(|f| f.len() != data.len()) {
            return false;
        }
        let dst = data.as_mut_ptr();
        let src = from.map_or(dst.cast_const(), <[u8]>::as_ptr);
        let iv = unit.to_le_bytes();
        // SAFETY: FFI calls on a live, keyed context owned by `&mut self`.
        // A null cipher, engine and key keep the cipher and key schedules
        // and only set the 16-byte tweak, read from `iv` during the call;
        // enc = -1 keeps the direction. EVP_Cipher reads `data.len()` bytes
        // at `src` and writes as many into `data`: `src` is either `data`
        // itself (AES-XTS allows in == out) or `from`, a shared borrow of
        // the same length, which cannot overlap the exclusive `data`.
        unsafe {
            let ctx = self.0.as_ptr();
            lc::EVP_CipherInit_ex(
                ctx,
                ptr::null(),
                ptr::null_mut(),
                ptr::null(),
                iv.as_ptr(),
                -1,
            ) == 1
                && lc::EVP_Cipher(ctx, dst, src, data.len()) == 1
        }
    }
}

impl Drop for EvpCtx {
    fn drop(&mut self) {
        // SAFETY: FFI free of the context we own, once. EVP_CIPHER_CTX_free
        // runs EVP_CIPHER_CTX_cleanup, whose OPENSSL_free of the cipher data
        // (both AES key schedules) OPENSSL_cleanse-s the allocation, and
        // which zeroes the context itself (tweak included) before freeing
        // it: the key schedules are zeroized on drop.
        unsafe { lc::EVP_CIPHER_CTX_free(self.0.as_ptr()) }
    }
}

/// The pure-Rust AES-256-XTS of earlier versions: the `aes` crate (its
/// round keys zeroize on drop, feature `zeroize`), whole tweak sequences
/// computed first (GF(2^128) doubling), then all blocks of a unit through
/// one `encrypt_blocks` call so AES-NI pipelines them.
mod reference {
    use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
    use aes::{Aes256, Block};

    use super::{Direction, SECTOR_SIZE};
    use crate::volume::error::VolumeError;

    /// AES blocks per sector.
    const BLOCKS_PER_SECTOR: usize = SECTOR_SIZE / 16;

    pub(super) struct Xts {
        /// Key1: encrypts the data blocks.
        data: Aes256,
        /// Key2: encrypts the unit number into the first tweak.
        tweak: Aes256,
    }

    impl Xts {
        pub(super) fn new(k1: &[u8], k2: &[u8]) -> Result<Self, VolumeError> {
            // Both halves are exactly 32 bytes, so `new_from_slice` cannot
            // fail; map the impossible error rather than unwrap.
            let data = Aes256::new_from_slice(k1).map_err(|_| VolumeError::EqualKeyHalves)?;
            let tweak = Aes256::new_from_slice(k2).map_err(|_| VolumeError::EqualKeyHalves)?;
            Ok(Xts { data, tweak })
        }

        /// XTS over one data unit of any whole number of AES blocks (no
        /// ciphertext stealing: every unit here is 4096 bytes, or 512 in
        /// the IEEE 1619 vectors). A trailing partial block is left
        /// untouched (callers check lengths first).
        pub(super) fn crypt_unit(&self, unit: u128, data: &mut [u8], dir: Direction) {
            let mut t = Block::from(unit.to_le_bytes());
            self.tweak.encrypt_block(&mut t);
            let mut tweak = u128::from_le_bytes(t.into());

            let mut blocks = [Block::default(); BLOCKS_PER_SECTOR];
            let mut tweaks = [0u128; BLOCKS_PER_SECTOR];
            let (chunks, _) = data.as_chunks_mut::<16>();
            for run in chunks.chunks_mut(BLOCKS_PER_SECTOR) {
                let n = run.len();
                fill_tweaks(tweak, &mut tweaks[..n]);
                tweak = mul_alpha(tweaks[n - 1]);
                for ((b, t), p) in blocks.iter_mut().zip(tweaks.iter()).zip(run.iter()) {
                    *b = Block::from((u128::from_le_bytes(*p) ^ t).to_le_bytes());
                }
                match dir {
                    Direction::Encrypt => self.data.encrypt_blocks(&mut blocks[..n]),
                    Direction::Decrypt => self.data.decrypt_blocks(&mut blocks[..n]),
                }
                for ((b, t), c) in blocks.iter().zip(tweaks.iter()).zip(run.iter_mut()) {
                    let v: [u8; 16] = (*b).into();
                    *c = (u128::from_le_bytes(v) ^ t).to_le_bytes();
                }
            }
        }
    }

    /// Fills `out` with `first * alpha^j`. Eight independent chains (each
    /// step multiplies by alpha^8) keep the CPU busy where one chain of
    /// doublings would wait on the previous result every block.
    #[inline(always)]
    pub(super) fn fill_tweaks(first: u128, out: &mut [u128]) {
        let mut t = first;
        for slot in out.iter_mut().take(8) {
            *slot = t;
            t = mul_alpha(t);
        }
        for j in 8..out.len() {
            out[j] = mul_alpha8(out[j - 8]);
        }
    }

    /// Multiplies by alpha^8: shift left one byte; the byte shifted out,
    /// `b`, stands for `b * x^128`, which is `b * (x^7 + x^2 + x + 1)`
    /// modulo the polynomial — a carry-less product of at most 15 bits, so
    /// no further reduction is needed.
    #[inline(always)]
    pub(super) fn mul_alpha8(t: u128) -> u128 {
        let b = t >> 120;
        (t << 8) ^ (b << 7) ^ (b << 2) ^ (b << 1) ^ b
    }

    /// Multiplies a tweak by the primitive element alpha of GF(2^128) with
    /// the IEEE 1619 byte order (the tweak is a little-endian 128-bit
    /// integer): shift left one bit and reduce by x^128 + x^7 + x^2 + x + 1.
    #[inline(always)]
    pub(super) fn mul_alpha(t: u128) -> u128 {
        // Arithmetic shift spreads the top bit into an all-ones/all-zeros mask.
        ((((t as i128) >> 127) as u128) & 0x87) ^ (t << 1)
    }
}

// Under the benchmark-only null cipher nothing is encrypted, so the
// known-answer tests do not apply.
#[cfg(all(test, not(feature = "bench-null-cipher")))]
mod tests {
    use super::reference::{fill_tweaks, mul_alpha, mul_alpha8};
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};

    const IEEE_KEY: &str = concat!(
        "2718281828459045235360287471352662497757247093699959574966967627",
        "3141592653589793238462643383279502884197169399375105820974944592",
    );

    /// IEEE 1619-2007 Annex B, vectors 10-14: XTS-AES-256, 512-byte data
    /// units, plaintext 00..ff twice, data unit sequence numbers below.
    const IEEE_VECTORS: &[(u128, &str)] = &[
        (
            0xff,
            concat!(
                "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b",
                "5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd",
                "5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0",
                "c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca",
                "2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0",
                "b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f",
                "93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec",
                "583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a",
                "84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1",
                "505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae",
                "9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29",
                "a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac",
                "6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f",
                "645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed4385",
                "1ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa",
                "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151",
            ),
        ),
        (
            0xffff,
            concat!(
                "77a31251618a15e6b92d1d66dffe7b50b50bad552305ba0217a610688eff7e11",
                "e1d0225438e093242d6db274fde801d4cae06f2092c728b2478559df58e837c2",
                "469ee4a4fa794e4bbc7f39bc026e3cb72c33b0888f25b4acf56a2a9804f1ce6d",
                "3d6e1dc6ca181d4b546179d55544aa7760c40d06741539c7e3cd9d2f6650b201",
                "3fd0eeb8c2b8e3d8d240ccae2d4c98320a7442e1c8d75a42d6e6cfa4c2eca179",
                "8d158c7aecdf82490f24bb9b38e108bcda12c3faf9a21141c3613b58367f922a",
                "aa26cd22f23d708dae699ad7cb40a8ad0b6e2784973dcb605684c08b8d6998c6",
                "9aac049921871ebb65301a4619ca80ecb485a31d744223ce8ddc2394828d6a80",
                "470c092f5ba413c3378fa6054255c6f9df4495862bbb3287681f931b687c888a",
                "bf844dfc8fc28331e579928cd12bd2390ae123cf03818d14dedde5c0c24c8ab0",
                "18bfca75ca096f2d531f3d1619e785f1ada437cab92e980558b3dce1474afb75",
                "bfedbf8ff54cb2618e0244c9ac0d3c66fb51598cd2db11f9be39791abe447c63",
                "094f7c453b7ff87cb5bb36b7c79efb0872d17058b83b15ab0866ad8a58656c5a",
                "7e20dbdf308b2461d97c0ec0024a2715055249cf3b478ddd4740de654f75ca68",
                "6e0d7345c69ed50cdc2a8b332b1f8824108ac937eb050585608ee734097fc090",
                "54fbff89eeaeea791f4a7ab1f9868294a4f9e27b42af8100cb9d59cef9645803",
            ),
        ),
        (
            0xffffff,
            concat!(
                "e387aaa58ba483afa7e8eb469778317ecf4cf573aa9d4eac23f2cdf914e4e200",
                "a8b490e42ee646802dc6ee2b471b278195d60918ececb44bf79966f83faba049",
                "9298ebc699c0c8634715a320bb4f075d622e74c8c932004f25b41e361025b5a8",
                "7815391f6108fc4afa6a05d9303c6ba68a128a55705d415985832fdeaae6c8e1",
                "9110e84d1b1f199a2692119edc96132658f09da7c623efcec712537a3d94c0bf",
                "5d7e352ec94ae5797fdb377dc1551150721adf15bd26a8efc2fcaad56881fa9e",
                "62462c28f30ae1ceaca93c345cf243b73f542e2074a705bd2643bb9f7cc79bb6",
                "e7091ea6e232df0f9ad0d6cf502327876d82207abf2115cdacf6d5a48f6c1879",
                "a65b115f0f8b3cb3c59d15dd8c769bc014795a1837f3901b5845eb491adfefe0",
                "97b1fa30a12fc1f65ba22905031539971a10f2f36c321bb51331cdefb39e3964",
                "c7ef079994f5b69b2edd83a71ef549971ee93f44eac3938fcdd61d01fa71799d",
                "a3a8091c4c48aa9ed263ff0749df95d44fef6a0bb578ec69456aa5408ae32c7a",
                "f08ad7ba8921287e3bbee31b767be06a0e705c864a769137df28292283ea81a2",
                "480241b44d9921cdbec1bc28dc1fda114bd8e5217ac9d8ebafa720e9da4f9ace",
                "231cc949e5b96fe76ffc21063fddc83a6b8679c00d35e09576a875305bed5f36",
                "ed242c8900dd1fa965bc950dfce09b132263a1eef52dd6888c309f5a7d712826",
            ),
        ),
        (
            0xffffffff,
            concat!(
                "bf53d2dade78e822a4d949a9bc6766b01b06a8ef70d26748c6a7fc36d80ae4c5",
                "520f7c4ab0ac8544424fa405162fef5a6b7f229498063618d39f0003cb5fb8d1",
                "c86b643497da1ff945c8d3bedeca4f479702a7a735f043ddb1d6aaade3c4a0ac",
                "7ca7f3fa5279bef56f82cd7a2f38672e824814e10700300a055e1630b8f1cb0e",
                "919f5e942010a416e2bf48cb46993d3cb6a51c19bacf864785a00bc2ecff15d3",
                "50875b246ed53e68be6f55bd7e05cfc2b2ed6432198a6444b6d8c247fab941f5",
                "69768b5c429366f1d3f00f0345b96123d56204c01c63b22ce78baf116e525ed9",
                "0fdea39fa469494d3866c31e05f295ff21fea8d4e6e13d67e47ce722e9698a1c",
                "1048d68ebcde76b86fcf976eab8aa9790268b7068e017a8b9b749409514f1053",
                "027fd16c3786ea1bac5f15cb79711ee2abe82f5cf8b13ae73030ef5b9e4457e7",
                "5d1304f988d62dd6fc4b94ed38ba831da4b7634971b6cd8ec325d9c61c00f1df",
                "73627ed3745a5e8489f3a95c69639c32cd6e1d537a85f75cc844726e8a72fc00",
                "77ad22000f1d5078f6b866318c668f1ad03d5a5fced5219f2eabbd0aa5c0f460",
                "d183f04404a0d6f469558e81fab24a167905ab4c7878502ad3e38fdbe62a4155",
                "6cec37325759533ce8f25f367c87bb5578d667ae93f9e2fd99bcbc5f2fbba88c",
                "f6516139420fcff3b7361d86322c4bd84c82f335abb152c4a93411373aaa8220",
            ),
        ),
        (
            0xffffffffff,
            concat!(
                "64497e5a831e4a932c09be3e5393376daa599548b816031d224bbf50a818ed23",
                "50eae7e96087c8a0db51ad290bd00c1ac1620857635bf246c176ab463be30b80",
                "8da548081ac847b158e1264be25bb0910bbc92647108089415d45fab1b3d2604",
                "e8a8eff1ae4020cfa39936b66827b23f371b92200be90251e6d73c5f86de5fd4",
                "a950781933d79a28272b782a2ec313efdfcc0628f43d744c2dc2ff3dcb66999b",
                "50c7ca895b0c64791eeaa5f29499fb1c026f84ce5b5c72ba1083cddb5ce45434",
                "631665c333b60b11593fb253c5179a2c8db813782a004856a1653011e93fb6d8",
                "76c18366dd8683f53412c0c180f9c848592d593f8609ca736317d356e13e2bff",
                "3a9f59cd9aeb19cd482593d8c46128bb32423b37a9adfb482b99453fbe25a41b",
                "f6feb4aa0bef5ed24bf73c762978025482c13115e4015aac992e5613a3b5c2f6",
                "85b84795cb6e9b2656d8c88157e52c42f978d8634c43d06fea928f2822e465aa",
                "6576e9bf419384506cc3ce3c54ac1a6f67dc66f3b30191e698380bc999b05abc",
                "e19dc0c6dcc2dd001ec535ba18deb2df1a101023108318c75dc98611a09dc48a",
                "0acdec676fabdf222f07e026f059b672b56e5cbc8e1d21bbd867dd9272120546",
                "81d70ea737134cdfce93b6f82ae22423274e58a0821cc5502e2d0ab4585e94de",
                "6975be5e0b4efce51cd3e70c25a1fbbbd609d273ad5b0d59631c531f6a0a57b9",
            ),
        ),
    ];

    fn ieee_cipher() -> SectorCipher {
        let key = VolumeDataKey::from_slice(&hex::decode(IEEE_KEY).unwrap()).unwrap();
        SectorCipher::new(&key).unwrap()
    }

    #[test]
    fn ieee_1619_vectors_10_to_14() {
        let cipher = ieee_cipher();
        let plain: Vec<u8> = (0..512).map(|i| i as u8).collect();
        for (unit, ct_hex) in IEEE_VECTORS {
            let want = hex::decode(ct_hex).unwrap();
            let mut buf = plain.clone();
            cipher.crypt_unit(*unit, &mut buf, Direction::Encrypt);
            assert_eq!(buf, want, "vector with data unit {unit:#x} encrypts");
            cipher.crypt_unit(*unit, &mut buf, Direction::Decrypt);
            assert_eq!(buf, plain, "vector with data unit {unit:#x} decrypts");
            // The pure-Rust path meets the same vectors.
            let mut buf = plain.clone();
            cipher
                .fallback
                .crypt_unit(*unit, &mut buf, Direction::Encrypt);
            assert_eq!(buf, want, "reference: data unit {unit:#x} encrypts");
            cipher
                .fallback
                .crypt_unit(*unit, &mut buf, Direction::Decrypt);
            assert_eq!(buf, plain, "reference: data unit {unit:#x} decrypts");
        }
    }

    /// The AWS-LC path and the previous pure-Rust one give the same bytes
    /// for random keys, data, sector numbers (up to u64::MAX) and lengths,
    /// both ways.
    #[test]
    fn aws_lc_path_agrees_with_the_reference() {
        let seed: u64 = rand::thread_rng().gen();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for round in 0..200 {
            let mut key = [0u8; 64];
            rng.fill_bytes(&mut key);
            let cipher = SectorCipher::new(&VolumeDataKey::from_slice(&key).unwrap()).unwrap();
            let sectors = rng.gen_range(1..=8);
            let first: u64 = match round % 4 {
                0 => rng.gen(),
                1 => u64::MAX - sectors as u64 + 1,
                2 => rng.gen_range(0..1 << 20),
                _ => rng.gen::<u32>().into(),
            };
            let mut plain = vec![0u8; sectors * SECTOR_SIZE];
            rng.fill_bytes(&mut plain);
            let mut fast = plain.clone();
            cipher.encrypt_sectors(first, &mut fast).unwrap();
            let mut slow = plain.clone();
            for (i, s) in slow.chunks_exact_mut(SECTOR_SIZE).enumerate() {
                let unit = u128::from(first) + i as u128;
                cipher.fallback.crypt_unit(unit, s, Direction::Encrypt);
            }
            assert_eq!(fast, slow, "encrypt, seed {seed}, round {round}");
            // Decrypt random ciphertext too, not only our own output.
            let mut random = vec![0u8; SECTOR_SIZE];
            rng.fill_bytes(&mut random);
            let mut a = random.clone();
            cipher.decrypt_sectors(first, &mut a).unwrap();
            let mut b = random;
            cipher
                .fallback
                .crypt_unit(first.into(), &mut b, Direction::Decrypt);
            assert_eq!(a, b, "decrypt, seed {seed}, round {round}");
            cipher.decrypt_sectors(first, &mut fast).unwrap();
            assert_eq!(fast, plain, "round trip, seed {seed}, round {round}");
        }
    }

    /// Encrypting into a second buffer gives the bytes of encrypting in
    /// place, for random keys, sectors and lengths; mismatched lengths are
    /// refused and leave the output untouched.
    #[test]
    fn encrypting_into_a_buffer_matches_in_place() {
        let seed: u64 = rand::thread_rng().gen();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for round in 0..50 {
            let mut key = [0u8; 64];
            rng.fill_bytes(&mut key);
            let cipher = SectorCipher::new(&VolumeDataKey::from_slice(&key).unwrap()).unwrap();
            let sectors = rng.gen_range(1..=8);
            let first: u64 = rng.gen();
            let mut plain = vec![0u8; sectors * SECTOR_SIZE];
            rng.fill_bytes(&mut plain);
            let mut in_place = plain.clone();
            cipher.encrypt_sectors(first, &mut in_place).unwrap();
            let mut out = vec![0u8; plain.len()];
            cipher
                .encrypt_sectors_into(first, &plain, &mut out)
                .unwrap();
            assert_eq!(out, in_place, "seed {seed}, round {round}");
        }
        let cipher = ieee_cipher();
        let mut short = vec![7u8; SECTOR_SIZE];
        assert!(cipher
            .encrypt_sectors_into(0, &[1u8; 2 * SECTOR_SIZE], &mut short)
            .is_err());
        assert!(cipher
            .encrypt_sectors_into(0, &[1u8; 100], &mut [0u8; 100])
            .is_err());
        assert_eq!(short, vec![7u8; SECTOR_SIZE]);
    }

    /// More concurrent callers than context slots share one cipher and
    /// each still gets exactly the single-threaded result.
    #[test]
    fn concurrent_callers_get_their_own_contexts() {
        let cipher = ieee_cipher();
        let plain: Vec<u8> = (0..4 * SECTOR_SIZE).map(|i| (i * 13 + 1) as u8).collect();
        let expect = |first: u64| {
            let mut b = plain.clone();
            for (i, s) in b.chunks_exact_mut(SECTOR_SIZE).enumerate() {
                let unit = u128::from(first) + i as u128;
                cipher.fallback.crypt_unit(unit, s, Direction::Encrypt);
            }
            b
        };
        std::thread::scope(|scope| {
            for t in 0..(SLOTS as u64 + 8) {
                let (cipher, plain, want) = (&cipher, &plain, expect(t * 1000));
                scope.spawn(move || {
                    for _ in 0..50 {
                        let mut b = plain.clone();
                        cipher.encrypt_sectors(t * 1000, &mut b).unwrap();
                        assert_eq!(b, want, "thread {t}");
                        cipher.decrypt_sectors(t * 1000, &mut b).unwrap();
                        assert_eq!(&b, plain, "thread {t}");
                    }
                });
            }
        });
    }

    #[test]
    fn sector_matches_unit_function_and_round_trips() {
        let cipher = ieee_cipher();
        let plain: Vec<u8> = (0..3 * SECTOR_SIZE).map(|i| (i * 7 + 3) as u8).collect();
        let mut buf = plain.clone();
        cipher.encrypt_sectors(41, &mut buf).unwrap();
        assert_ne!(buf, plain);
        for (i, sector) in buf.chunks(SECTOR_SIZE).enumerate() {
            let mut one = plain[i * SECTOR_SIZE..(i + 1) * SECTOR_SIZE].to_vec();
            cipher.crypt_unit(41 + i as u128, &mut one, Direction::Encrypt);
            assert_eq!(sector, &one[..], "sector {i} uses tweak 41+{i}");
        }
        // Same plaintext in different sectors gives different ciphertext.
        let mut a = vec![0x5au8; SECTOR_SIZE];
        let mut b = a.clone();
        cipher.encrypt_sectors(1, &mut a).unwrap();
        cipher.encrypt_sectors(2, &mut b).unwrap();
        assert_ne!(a, b);
        cipher.decrypt_sectors(41, &mut buf).unwrap();
        assert_eq!(buf, plain);
    }

    #[test]
    fn refuses_equal_halves_and_bad_lengths() {
        let key = VolumeDataKey::from_slice(&[7u8; 64]).unwrap();
        assert!(matches!(
            SectorCipher::new(&key),
            Err(VolumeError::EqualKeyHalves)
        ));
        let cipher = ieee_cipher();
        let mut buf = vec![0u8; SECTOR_SIZE + 512];
        assert!(matches!(
            cipher.encrypt_sectors(0, &mut buf),
            Err(VolumeError::NotSectorMultiple { len, .. }) if len == SECTOR_SIZE + 512
        ));
        assert_eq!(
            buf,
            vec![0u8; SECTOR_SIZE + 512],
            "nothing touched on error"
        );
    }

    #[test]
    fn mul_alpha8_is_eight_doublings() {
        let mut x: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        for _ in 0..1000 {
            let mut y = x;
            for _ in 0..8 {
                y = mul_alpha(y);
            }
            assert_eq!(mul_alpha8(x), y);
            x = x
                .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
                .rotate_left(17)
                ^ 0xff;
        }
        let mut t = [0u128; 40];
        fill_tweaks(5, &mut t);
        let mut v = 5;
        for x in t {
            assert_eq!(x, v);
            v = mul_alpha(v);
        }
    }

    #[test]
    fn mul_alpha_reduces() {
        assert_eq!(mul_alpha(1), 2);
        assert_eq!(mul_alpha(1 << 127), 0x87);
        assert_eq!(mul_alpha((1 << 127) | 1), 0x85);
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", ieee_cipher()), "SectorCipher([REDACTED])");
    }
}
