//! DeriveSharedSecret: ECDH between a KMS key on a NIST curve and a peer's
//! public key (DER SubjectPublicKeyInfo) on the same curve.

use p256::pkcs8::spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};
use p256::pkcs8::{AssociatedOid, DecodePublicKey};

use super::key::Parsed;
use super::{
    incompatible_algorithm, AsymError, KeyAgreementAlgorithmSpec, KeySpec, PrivateKeyMaterial,
};
use crate::secret::SecretBytes;

/// id-ecPublicKey (RFC 5480).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// The ECDH shared secret of `key` and the peer public key: the raw
/// x-coordinate of the shared point (the "Z" of NIST SP 800-56A), as AWS
/// returns it and as `openssl pkeyutl -derive` prints it. Apply a KDF
/// before using it as a key.
pub fn derive_shared_secret(
    key: &PrivateKeyMaterial,
    peer_public_key_der: &[u8],
) -> Result<SecretBytes, AsymError> {
    let curve = match key.parsed {
        Parsed::P256(_) | Parsed::P384(_) | Parsed::P521(_) => key.spec(),
        _ => {
            return Err(incompatible_algorithm(
                key.spec(),
                "key agreement",
                KeyAgreementAlgorithmSpec::Ecdh,
                key.spec().key_agreement_algorithms(),
            ))
        }
    };
    check_curve(curve, peer_public_key_der)?;
    let invalid_point = |e: p256::pkcs8::spki::Error| {
        AsymError::InvalidPublicKey(format!("not a valid {curve} public key ({e})"))
    };
    let shared = match &key.parsed {
        Parsed::P256(k) => {
            let peer =
                p256::PublicKey::from_public_key_der(peer_public_key_der).map_err(invalid_point)?;
            let s = p256::ecdh::diffie_hellman(k.as_nonzero_scalar(), peer.as_affine());
            SecretBytes::from_slice(s.raw_secret_bytes())
        }
        Parsed::P384(k) => {
            let peer =
                p384::PublicKey::from_public_key_der(peer_public_key_der).map_err(invalid_point)?;
            let s = p384::ecdh::diffie_hellman(k.as_nonzero_scalar(), peer.as_affine());
            SecretBytes::from_slice(s.raw_secret_bytes())
        }
        Parsed::P521(k) => {
            let peer =
                p521::PublicKey::from_public_key_der(peer_public_key_der).map_err(invalid_point)?;
            let s = p521::ecdh::diffie_hellman(k.as_nonzero_scalar(), peer.as_affine());
            SecretBytes::from_slice(s.raw_secret_bytes())
        }
        _ => return Err(AsymError::Internal("ECDH on a non-NIST key".into())),
    };
    Ok(shared)
}

/// Checks that the peer key is an EC public key on `curve`, with a message
/// that names the peer's curve when it differs.
fn check_curve(curve: KeySpec, der: &[u8]) -> Result<(), AsymError> {
    let spki = SubjectPublicKeyInfoRef::try_from(der).map_err(|e| {
        AsymError::InvalidPublicKey(format!(
            "expected a DER-encoded X.509 SubjectPublicKeyInfo ({e})"
        ))
    })?;
    if spki.algorithm.oid != EC_PUBLIC_KEY {
        return Err(AsymError::InvalidPublicKey(format!(
            "the peer key has algorithm OID {}, not an elliptic curve key; \
             ECDH needs a {curve} public key",
            spki.algorithm.oid
        )));
    }
    let peer_curve = spki
        .algorithm
        .parameters_oid()
        .map_err(|_| AsymError::InvalidPublicKey("the peer key does not name its curve".into()))?;
    let expected = match curve {
        KeySpec::EccNistP256 => p256::NistP256::OID,
        KeySpec::EccNistP384 => p384::NistP384::OID,
        _ => p521::NistP521::OID,
    };
    if peer_curve != expected {
        return Err(AsymError::InvalidPublicKey(format!(
            "the peer key is on curve {} but the KMS key has KeySpec {curve}; \
             both keys must be on the same curve",
            curve_name(peer_curve)
        )));
    }
    Ok(())
}

fn curve_name(oid: ObjectIdentifier) -> String {
    if oid == p256::NistP256::OID {
        "ECC_NIST_P256".into()
    } else if oid == p384::NistP384::OID {
        "ECC_NIST_P384".into()
    } else if oid == p521::NistP521::OID {
        "ECC_NIST_P521".into()
    } else if oid == k256::Secp256k1::OID {
        "ECC_SECG_P256K1".into()
    } else {
        format!("with OID {oid}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_secret() {
        for spec in [
            KeySpec::EccNistP256,
            KeySpec::EccNistP384,
            KeySpec::EccNistP521,
        ] {
            let a = PrivateKeyMaterial::generate(spec).unwrap();
            let b = PrivateKeyMaterial::generate(spec).unwrap();
            let ab = derive_shared_secret(&a, b.public_key_der().unwrap()).unwrap();
            let ba = derive_shared_secret(&b, a.public_key_der().unwrap()).unwrap();
            assert_eq!(ab, ba);
            let field_len = match spec {
                KeySpec::EccNistP256 => 32,
                KeySpec::EccNistP384 => 48,
                _ => 66,
            };
            assert_eq!(ab.len(), field_len);
        }
    }

    #[test]
    fn peer_on_another_curve_is_named() {
        let a = PrivateKeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        let b = PrivateKeyMaterial::generate(KeySpec::EccSecgP256k1).unwrap();
        let err = derive_shared_secret(&a, b.public_key_der().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("on curve ECC_SECG_P256K1"),
            "{err}"
        );
        assert!(derive_shared_secret(&a, b"junk").is_err());
        // secp256k1 keys cannot do key agreement (AWS allows SIGN_VERIFY only).
        let p = a.public_key_der().unwrap();
        assert!(matches!(
            derive_shared_secret(&b, p),
            Err(AsymError::IncompatibleAlgorithm { .. })
        ));
    }
}
