//! GenerateMac/VerifyMac: HMAC (RFC 2104) with SHA-224/256/384/512, one
//! algorithm per HMAC key spec.

use hmac::{Hmac, Mac};

use super::key::Parsed;
use super::{check_len, incompatible_algorithm, AsymError, MacAlgorithmSpec, PrivateKeyMaterial};
use crate::secret::ct_eq;

/// The largest message GenerateMac and VerifyMac accept (AWS: 4096 bytes).
pub const MAX_MAC_MESSAGE_LEN: usize = 4096;

/// The HMAC tag of `message` (AWS GenerateMac).
pub fn generate_mac(
    key: &PrivateKeyMaterial,
    algorithm: MacAlgorithmSpec,
    message: &[u8],
) -> Result<Vec<u8>, AsymError> {
    if !matches!(key.parsed, Parsed::Hmac) || key.spec().mac_algorithm() != Some(algorithm) {
        let supported: Vec<MacAlgorithmSpec> = key.spec().mac_algorithm().into_iter().collect();
        return Err(incompatible_algorithm(
            key.spec(),
            "MAC",
            algorithm,
            &supported,
        ));
    }
    check_len("message", message.len(), 1, MAX_MAC_MESSAGE_LEN)?;
    let k = key.material().expose();
    // HMAC accepts keys of any length, so new_from_slice cannot fail; the
    // error path is kept rather than an expect.
    let bad_key = |e: hmac::digest::InvalidLength| AsymError::Internal(format!("HMAC key: {e}"));
    macro_rules! hmac {
        ($hash:ty) => {{
            let mut mac = Hmac::<$hash>::new_from_slice(k).map_err(bad_key)?;
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }};
    }
    Ok(match algorithm {
        MacAlgorithmSpec::HmacSha224 => hmac!(sha2::Sha224),
        MacAlgorithmSpec::HmacSha256 => hmac!(sha2::Sha256),
        MacAlgorithmSpec::HmacSha384 => hmac!(sha2::Sha384),
        MacAlgorithmSpec::HmacSha512 => hmac!(sha2::Sha512),
    })
}

/// True when `mac` is the HMAC tag of `message` (AWS VerifyMac; `false`
/// maps to KMSInvalidMacException). The comparison is constant-time.
pub fn verify_mac(
    key: &PrivateKeyMaterial,
    algorithm: MacAlgorithmSpec,
    message: &[u8],
    mac: &[u8],
) -> Result<bool, AsymError> {
    let expected = generate_mac(key, algorithm, message)?;
    Ok(ct_eq(&expected, mac))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::asym::KeySpec;
    use crate::secret::SecretBytes;

    /// Known answer from `openssl mac -digest SHA256 -macopt hexkey:0b..0b
    /// HMAC` (RFC 4231's test case 1 message with a 32-byte key, the
    /// shortest an HMAC_256 key may be).
    #[test]
    fn hmac_sha256_known_answer() {
        let key = SecretBytes::from_slice(&[0x0b; 32]);
        let key = PrivateKeyMaterial::from_hmac_key(KeySpec::Hmac256, key).unwrap();
        let tag = generate_mac(&key, MacAlgorithmSpec::HmacSha256, b"Hi There").unwrap();
        assert_eq!(
            hex::encode(tag),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn verify_checks_tag_and_algorithm() {
        let key = PrivateKeyMaterial::generate(KeySpec::Hmac512).unwrap();
        let alg = MacAlgorithmSpec::HmacSha512;
        let tag = generate_mac(&key, alg, b"msg").unwrap();
        assert_eq!(tag.len(), 64);
        assert!(verify_mac(&key, alg, b"msg", &tag).unwrap());
        assert!(!verify_mac(&key, alg, b"msh", &tag).unwrap());
        assert!(!verify_mac(&key, alg, b"msg", &tag[..63]).unwrap());
        assert!(matches!(
            generate_mac(&key, MacAlgorithmSpec::HmacSha256, b"msg"),
            Err(AsymError::IncompatibleAlgorithm { .. })
        ));
        assert!(generate_mac(&key, alg, &[0; MAX_MAC_MESSAGE_LEN + 1]).is_err());
        let ec = PrivateKeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        assert!(generate_mac(&ec, alg, b"msg").is_err());
    }
}
