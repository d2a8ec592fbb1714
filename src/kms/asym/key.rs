//! Private key material of asymmetric and HMAC KMS keys: generation,
//! PKCS#8 loading, the SubjectPublicKeyInfo of the public half, and data
//! key pairs.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::KeySize as RsaKeySize;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rand::rngs::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;

use super::signer::Signer;
use super::{AsymError, DataKeyPairSpec, KeySpec};
use crate::secret::SecretBytes;

// The pkcs8 traits, as re-exported by one of the curve crates (all share
// the same pkcs8 0.10).
use p256::pkcs8;

/// The parsed form of the private key, kept next to its encoding so that
/// each operation does not re-parse. Every variant zeroizes on drop.
#[derive(Clone)]
pub(crate) enum Parsed {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
    K256(k256::ecdsa::SigningKey),
    /// Signed through `Signer::Ed25519` only; no second copy is kept.
    Ed25519,
    /// ML-DSA-44/65/87, signed through `Signer::MlDsa` only.
    MlDsa,
    Hmac,
}

/// The secret half of an asymmetric or HMAC KMS key.
///
/// Holds the PKCS#8 DER of an RSA/ECC/ML-DSA private key (ML-DSA: the
/// 32-byte seed form AWS-LC writes), or the raw bytes of an
/// HMAC key, in a [`SecretBytes`]; [`PrivateKeyMaterial::material`] is what
/// the key store seals and [`PrivateKeyMaterial::load`] reads back.
#[derive(Clone)]
pub struct PrivateKeyMaterial {
    spec: KeySpec,
    material: SecretBytes,
    /// DER SubjectPublicKeyInfo; empty for HMAC keys.
    public_der: Vec<u8>,
    pub(crate) parsed: Parsed,
    /// The same key as AWS-LC objects, for Sign and Verify (shared by
    /// clones; see `signer.rs` for how it is cleansed).
    pub(crate) signer: Arc<Signer>,
}

impl fmt::Debug for PrivateKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKeyMaterial({}, [REDACTED])", self.spec)
    }
}

impl PrivateKeyMaterial {
    /// New random key material for `spec` (not SYMMETRIC_DEFAULT, whose
    /// material the symmetric code path owns).
    pub fn generate(spec: KeySpec) -> Result<Self, AsymError> {
        if let Some(len) = spec.hmac_key_len() {
            return Self::from_hmac_key(spec, SecretBytes::random(len));
        }
        if let Some(bits) = spec.rsa_bits() {
            // AWS-LC generates RSA keys many times faster than the rsa
            // crate; its PKCS#8 v1 buffer zeroizes on drop.
            let size = match bits {
                2048 => RsaKeySize::Rsa2048,
                3072 => RsaKeySize::Rsa3072,
                _ => RsaKeySize::Rsa4096,
            };
            let generation =
                |what: &str| AsymError::Internal(format!("RSA key generation: {what}"));
            let key = aws_lc_rs::rsa::KeyPair::generate(size).map_err(|_| generation("failed"))?;
            let pkcs8: Pkcs8V1Der<'static> = key.as_der().map_err(|_| generation("encoding"))?;
            let der = SecretBytes::from_slice(pkcs8.as_ref());
            return Self::from_pkcs8(spec, der.expose());
        }
        if spec.is_ml_dsa() {
            let alg = match spec {
                KeySpec::MlDsa44 => &aws_lc_rs::signature::ML_DSA_44_SIGNING,
                KeySpec::MlDsa65 => &aws_lc_rs::signature::ML_DSA_65_SIGNING,
                _ => &aws_lc_rs::signature::ML_DSA_87_SIGNING,
            };
            let generation =
                |what: &str| AsymError::Internal(format!("{spec} key generation: {what}"));
            let key = aws_lc_rs::signature::PqdsaKeyPair::generate(alg)
                .map_err(|_| generation("failed"))?;
            // PKCS#8 v1 with the seed (RFC 9881's seed form); the Document
            // zeroizes on drop.
            let pkcs8 = key.to_pkcs8v1().map_err(|_| generation("encoding"))?;
            let der = SecretBytes::from_slice(pkcs8.as_ref());
            return Self::from_pkcs8(spec, der.expose());
        }
        let der = match spec {
            KeySpec::EccNistP256 => secret_der(p256::SecretKey::random(&mut OsRng).to_pkcs8_der())?,
            KeySpec::EccNistP384 => secret_der(p384::SecretKey::random(&mut OsRng).to_pkcs8_der())?,
            KeySpec::EccNistP521 => secret_der(p521::SecretKey::random(&mut OsRng).to_pkcs8_der())?,
            KeySpec::EccSecgP256k1 => {
                secret_der(k256::SecretKey::random(&mut OsRng).to_pkcs8_der())?
            }
            KeySpec::EccNistEdwards25519 => {
                let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
                // PKCS#8 v1 (no public key field): the form OpenSSL writes
                // and every reader accepts.
                let pair = ed25519_dalek::pkcs8::KeypairBytes {
                    secret_key: key.to_bytes(),
                    public_key: None,
                };
                secret_der(pair.to_pkcs8_der())?
            }
            _ => {
                return Err(AsymError::UnsupportedKeySpec {
                    spec,
                    operation: "Asymmetric key generation",
                })
            }
        };
        Self::from_pkcs8(spec, der.expose())
    }

    /// Loads an RSA, ECC or ML-DSA private key from PKCS#8 DER, checking
    /// that it is a key of `spec` (algorithm, curve, RSA modulus size,
    /// ML-DSA parameter set).
    pub fn from_pkcs8(spec: KeySpec, der: &[u8]) -> Result<Self, AsymError> {
        let bad = |reason: String| AsymError::InvalidKeyMaterial { spec, reason };
        if spec.is_ml_dsa() {
            // No RustCrypto loader: AWS-LC parses and checks the key.
            let (signer, public_der) = Signer::load_ml_dsa(spec, der).map_err(bad)?;
            return Ok(PrivateKeyMaterial {
                spec,
                material: SecretBytes::from_slice(der),
                public_der,
                parsed: Parsed::MlDsa,
                signer: Arc::new(signer),
            });
        }
        let not_pkcs8 = |e: pkcs8::Error| {
            bad(format!(
                "expected a DER-encoded PKCS#8 {spec} private key ({e}); convert a \
                 PKCS#1 or SEC1 key with `openssl pkcs8 -topk8 -nocrypt -outform DER`"
            ))
        };
        let (parsed, public) = match spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                let key = RsaPrivateKey::from_pkcs8_der(der).map_err(not_pkcs8)?;
                let bits = key.n().bits();
                if Some(bits) != spec.rsa_bits() {
                    return Err(bad(format!("the RSA modulus has {bits} bits")));
                }
                key.validate()
                    .map_err(|e| bad(format!("inconsistent RSA key: {e}")))?;
                let public = key.as_ref().to_public_key_der();
                (Parsed::Rsa(Box::new(key)), public)
            }
            KeySpec::EccNistP256 => {
                let sk = p256::SecretKey::from_pkcs8_der(der).map_err(not_pkcs8)?;
                let public = sk.public_key().to_public_key_der();
                (Parsed::P256(sk.into()), public)
            }
            KeySpec::EccNistP384 => {
                let sk = p384::SecretKey::from_pkcs8_der(der).map_err(not_pkcs8)?;
                let public = sk.public_key().to_public_key_der();
                (Parsed::P384(sk.into()), public)
            }
            KeySpec::EccNistP521 => {
                let sk = p521::SecretKey::from_pkcs8_der(der).map_err(not_pkcs8)?;
                let public = sk.public_key().to_public_key_der();
                let signing = ecdsa::SigningKey::<p521::NistP521>::from(&sk);
                (Parsed::P521(signing.into()), public)
            }
            KeySpec::EccSecgP256k1 => {
                let sk = k256::SecretKey::from_pkcs8_der(der).map_err(not_pkcs8)?;
                let public = sk.public_key().to_public_key_der();
                (Parsed::K256(sk.into()), public)
            }
            KeySpec::EccNistEdwards25519 => {
                let sk = ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(not_pkcs8)?;
                let public = sk.verifying_key().to_public_key_der();
                (Parsed::Ed25519, public)
            }
            _ => {
                return Err(AsymError::UnsupportedKeySpec {
                    spec,
                    operation: "Loading PKCS#8 key material",
                })
            }
        };
        let public =
            public.map_err(|e| AsymError::Internal(format!("encoding the public key: {e}")))?;
        let signer = Signer::load(spec, der, public.as_bytes()).map_err(bad)?;
        Ok(PrivateKeyMaterial {
            spec,
            material: SecretBytes::from_slice(der),
            public_der: public.as_bytes().to_vec(),
            parsed,
            signer: Arc::new(signer),
        })
    }

    /// An HMAC key from its raw bytes. KMS-generated keys have exactly
    /// [`KeySpec::hmac_key_len`] bytes; imported ones may be longer, within
    /// [`KeySpec::hmac_key_len_range`].
    pub fn from_hmac_key(spec: KeySpec, key: SecretBytes) -> Result<Self, AsymError> {
        let Some(range) = spec.hmac_key_len_range() else {
            return Err(AsymError::UnsupportedKeySpec {
                spec,
                operation: "Loading an HMAC key",
            });
        };
        if !range.contains(&key.len()) {
            return Err(AsymError::InvalidKeyMaterial {
                spec,
                reason: format!(
                    "an {spec} key must be {} to {} bytes long, got {}",
                    range.start(),
                    range.end(),
                    key.len()
                ),
            });
        }
        Ok(PrivateKeyMaterial {
            spec,
            material: key,
            public_der: Vec::new(),
            parsed: Parsed::Hmac,
            signer: Arc::new(Signer::None),
        })
    }

    /// Loads what [`PrivateKeyMaterial::material`] returned: PKCS#8 DER for
    /// RSA/ECC/ML-DSA specs, raw key bytes for HMAC specs.
    pub fn load(spec: KeySpec, material: &SecretBytes) -> Result<Self, AsymError> {
        if spec.is_hmac() {
            Self::from_hmac_key(spec, material.clone())
        } else {
            Self::from_pkcs8(spec, material.expose())
        }
    }

    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// The secret material to seal and persist: PKCS#8 DER (RSA/ECC/ML-DSA) or raw
    /// key bytes (HMAC).
    pub fn material(&self) -> &SecretBytes {
        &self.material
    }

    /// The DER SubjectPublicKeyInfo (what GetPublicKey returns). HMAC keys
    /// have none.
    pub fn public_key_der(&self) -> Result<&[u8], AsymError> {
        if self.public_der.is_empty() {
            return Err(AsymError::UnsupportedKeySpec {
                spec: self.spec,
                operation: "GetPublicKey",
            });
        }
        Ok(&self.public_der)
    }
}

/// A data key pair from GenerateDataKeyPair.
#[derive(Debug, Clone)]
pub struct DataKeyPair {
    /// PKCS#8 DER of the private key.
    pub private_key_der: SecretBytes,
    /// DER SubjectPublicKeyInfo of the public key.
    pub public_key_der: Vec<u8>,
}

/// A new random key pair of `spec`.
pub fn generate_data_key_pair(spec: DataKeyPairSpec) -> Result<DataKeyPair, AsymError> {
    let key = PrivateKeyMaterial::generate(spec.into())?;
    Ok(DataKeyPair {
        public_key_der: key.public_der.clone(),
        private_key_der: key.material,
    })
}

/// Copies a PKCS#8 document (zeroized on drop) into [`SecretBytes`].
fn secret_der(doc: pkcs8::Result<pkcs8::SecretDocument>) -> Result<SecretBytes, AsymError> {
    let doc = doc.map_err(|e| AsymError::Internal(format!("encoding PKCS#8: {e}")))?;
    Ok(SecretBytes::from_slice(doc.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecc_keys_round_trip_through_pkcs8() {
        for spec in [
            KeySpec::EccNistP256,
            KeySpec::EccNistP384,
            KeySpec::EccNistP521,
            KeySpec::EccSecgP256k1,
            KeySpec::EccNistEdwards25519,
        ] {
            let key = PrivateKeyMaterial::generate(spec).unwrap();
            let again = PrivateKeyMaterial::load(spec, key.material()).unwrap();
            assert_eq!(
                again.public_key_der().unwrap(),
                key.public_key_der().unwrap()
            );
            assert_eq!(again.spec(), spec);
        }
    }

    #[test]
    fn ml_dsa_keys_round_trip_through_pkcs8_and_check_the_parameter_set() {
        for (spec, other, pk_len) in [
            (KeySpec::MlDsa44, KeySpec::MlDsa65, 1312),
            (KeySpec::MlDsa65, KeySpec::MlDsa87, 1952),
            (KeySpec::MlDsa87, KeySpec::MlDsa44, 2592),
        ] {
            let key = PrivateKeyMaterial::generate(spec).unwrap();
            let public = key.public_key_der().unwrap().to_vec();
            // SPKI: the raw public key is the BIT STRING at the end.
            assert!(public.len() > pk_len, "{spec}");
            let again = PrivateKeyMaterial::load(spec, key.material()).unwrap();
            assert_eq!(again.public_key_der().unwrap(), &public[..]);
            let err = PrivateKeyMaterial::from_pkcs8(other, key.material().expose()).unwrap_err();
            assert!(
                matches!(err, AsymError::InvalidKeyMaterial { spec: s, .. } if s == other),
                "{err}"
            );
            // Two keys are two keys.
            let second = PrivateKeyMaterial::generate(spec).unwrap();
            assert_ne!(second.public_key_der().unwrap(), &public[..]);
        }
        // Not PKCS#8, and an ECC key for an ML-DSA spec.
        assert!(PrivateKeyMaterial::from_pkcs8(KeySpec::MlDsa65, b"junk").is_err());
        let ec = PrivateKeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        assert!(PrivateKeyMaterial::from_pkcs8(KeySpec::MlDsa44, ec.material().expose()).is_err());
        let ml = PrivateKeyMaterial::generate(KeySpec::MlDsa44).unwrap();
        assert!(
            PrivateKeyMaterial::from_pkcs8(KeySpec::EccNistP256, ml.material().expose()).is_err()
        );
        // Trailing bytes after the PKCS#8 element are refused.
        let mut long = ml.material().expose().to_vec();
        long.push(0);
        assert!(PrivateKeyMaterial::from_pkcs8(KeySpec::MlDsa44, &long).is_err());
    }

    #[test]
    fn pkcs8_of_another_curve_is_refused() {
        let p256 = PrivateKeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        let err = PrivateKeyMaterial::from_pkcs8(KeySpec::EccNistP384, p256.material().expose())
            .unwrap_err();
        assert!(matches!(
            err,
            AsymError::InvalidKeyMaterial {
                spec: KeySpec::EccNistP384,
                ..
            }
        ));
        assert!(PrivateKeyMaterial::from_pkcs8(KeySpec::Rsa2048, b"not der").is_err());
        assert!(PrivateKeyMaterial::from_pkcs8(KeySpec::Hmac256, b"x").is_err());
    }

    #[test]
    fn hmac_keys_have_the_spec_length_and_no_public_key() {
        for (spec, len) in [
            (KeySpec::Hmac224, 28),
            (KeySpec::Hmac256, 32),
            (KeySpec::Hmac384, 48),
            (KeySpec::Hmac512, 64),
        ] {
            let key = PrivateKeyMaterial::generate(spec).unwrap();
            assert_eq!(key.material().len(), len);
            assert!(matches!(
                key.public_key_der(),
                Err(AsymError::UnsupportedKeySpec { .. })
            ));
        }
        let short = SecretBytes::from_slice(&[7; 31]);
        assert!(PrivateKeyMaterial::from_hmac_key(KeySpec::Hmac256, short).is_err());
    }

    #[test]
    fn symmetric_default_is_not_generated_here() {
        assert!(matches!(
            PrivateKeyMaterial::generate(KeySpec::SymmetricDefault),
            Err(AsymError::UnsupportedKeySpec { .. })
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let key = PrivateKeyMaterial::generate(KeySpec::Hmac256).unwrap();
        assert_eq!(
            format!("{key:?}"),
            "PrivateKeyMaterial(HMAC_256, [REDACTED])"
        );
    }
}
