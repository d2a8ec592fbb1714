//! The one home of raw key bytes: zeroized on drop, redacted in `Debug`.
//!
//! Plaintext key material leaves these types only through
//! [`SecretBytes::expose`], so every place that touches key bytes is easy to
//! find.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// Secret bytes of any length: data keys, key material, plaintexts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret; the caller stays responsible for
    /// its own copy.
    pub fn from_slice(bytes: &[u8]) -> Self {
        SecretBytes(Zeroizing::new(bytes.to_vec()))
    }

    /// `len` bytes from the operating system's CSPRNG.
    pub fn random(len: usize) -> Self {
        let mut v = Zeroizing::new(vec![0u8; len]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut v);
        SecretBytes(v)
    }

    /// The plaintext bytes. Every caller of this function handles secret
    /// material and must not log, persist unsealed, or copy it outside a
    /// zeroizing type.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn expose_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.0.len())
    }
}

/// A fixed-size secret key (`N` bytes), e.g. a 32-byte AES key or the
/// 64-byte XTS data key of a volume.
#[derive(Clone)]
pub struct SecretKey<const N: usize>(Box<[u8; N]>);

impl<const N: usize> SecretKey<N> {
    pub fn random() -> Self {
        let mut k = Box::new([0u8; N]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k[..]);
        SecretKey(k)
    }

    /// Takes exactly `N` bytes; `None` when the length differs.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != N {
            return None;
        }
        let mut k = Box::new([0u8; N]);
        k.copy_from_slice(bytes);
        Some(SecretKey(k))
    }

    /// The key bytes; see [`SecretBytes::expose`] for the rules.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> Drop for SecretKey<N> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<const N: usize> fmt::Debug for SecretKey<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey<{N}>([REDACTED])")
    }
}

/// The 64-byte AES-256-XTS data key of a volume (two 256-bit halves).
pub type VolumeDataKey = SecretKey<64>;

/// A 256-bit symmetric key (root key, KMS key material, AES-256-GCM keys).
pub type Key256 = SecretKey<32>;

/// Constant-time equality for MACs, tags and other authenticators.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretBytes::from_slice(b"hunter2-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        let k = Key256::from_slice(&[0x41; 32]).unwrap();
        assert!(!format!("{k:?}").contains("65"));
        assert!(!format!("{k:?}").contains("41"));
    }

    #[test]
    fn from_slice_checks_length() {
        assert!(Key256::from_slice(&[0; 31]).is_none());
        assert!(VolumeDataKey::from_slice(&[0; 64]).is_some());
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
