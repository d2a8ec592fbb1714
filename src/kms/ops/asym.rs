//! The KMS operations of asymmetric and HMAC keys: GetPublicKey, Sign,
//! Verify, RSA-OAEP Encrypt/Decrypt, GenerateMac/VerifyMac,
//! GenerateDataKeyPair(WithoutPlaintext) and DeriveSharedSecret. Each one
//! resolves the key, passes the one authorization point (`Op::permit`, which
//! also applies the key-state table), checks the key usage, and only then
//! loads the sealed private key.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{check_symmetric_encrypt, context_conditions, no_conditions, wrong_usage};
use crate::kms::api::SecretBlob;
use crate::kms::api::{Blob, DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse};
use crate::kms::asym::{
    self, AsymError, DataKeyPairSpec, EncryptionAlgorithmSpec, KeyAgreementAlgorithmSpec, KeySpec,
    KeyUsage, MacAlgorithmSpec, MessageType, PrivateKeyMaterial, SigningAlgorithmSpec,
};
use crate::kms::ciphertext::EncryptionContext;
use crate::kms::model::{KeyRecord, StateRule};
use crate::kms::op::Op;
use crate::kms::store;
use crate::kms::{ErrorCode, Kms, KmsError, KmsResult};
use crate::secret::SecretBytes;
use crate::validate::{Constraint, Validator, Violation};

crate::request_struct!(GetPublicKeyRequest {
    key_id: String,
    grant_tokens: Vec<String>
});
crate::request_struct!(SignRequest {
    key_id: String,
    message: Blob,
    message_type: String,
    signing_algorithm: String,
    grant_tokens: Vec<String>,
    dry_run: bool,
});
crate::request_struct!(VerifyRequest {
    key_id: String,
    message: Blob,
    message_type: String,
    signature: Blob,
    signing_algorithm: String,
    grant_tokens: Vec<String>,
    dry_run: bool,
});
crate::request_struct!(GenerateMacRequest {
    key_id: String,
    message: Blob,
    mac_algorithm: String,
    grant_tokens: Vec<String>,
    dry_run: bool,
});
crate::request_struct!(VerifyMacRequest {
    key_id: String,
    message: Blob,
    mac_algorithm: String,
    mac: Blob,
    grant_tokens: Vec<String>,
    dry_run: bool,
});
crate::request_struct!(GenerateDataKeyPairRequest {
    key_id: String,
    encryption_context: EncryptionContext,
    key_pair_spec: String,
    grant_tokens: Vec<String>,
    recipient: Value,
    dry_run: bool,
});
crate::request_struct!(DeriveSharedSecretRequest {
    key_id: String,
    key_agreement_algorithm: String,
    public_key: Blob,
    grant_tokens: Vec<String>,
    recipient: Value,
    dry_run: bool,
});

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKeyResponse {
    pub key_id: String,
    pub public_key: Blob,
    /// Deprecated; left out for the specs its AWS enum does not have
    /// ([`KeySpec::customer_master_key_spec`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_master_key_spec: Option<String>,
    pub key_spec: String,
    pub key_usage: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encryption_algorithms: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_algorithms: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_agreement_algorithms: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignResponse {
    pub key_id: String,
    pub signature: Blob,
    pub signing_algorithm: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyResponse {
    pub key_id: String,
    pub signature_valid: bool,
    pub signing_algorithm: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateMacResponse {
    pub mac: Blob,
    pub mac_algorithm: String,
    pub key_id: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyMacResponse {
    pub key_id: String,
    pub mac_valid: bool,
    pub mac_algorithm: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairResponse {
    pub private_key_ciphertext_blob: Blob,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_plaintext: Option<SecretBlob>,
    pub public_key: Blob,
    pub key_id: String,
    pub key_pair_spec: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeriveSharedSecretResponse {
    pub key_id: String,
    pub shared_secret: SecretBlob,
    pub key_agreement_algorithm: String,
    pub key_origin: String,
}

/// A required AWS enum field.
pub(crate) fn required_enum<T: FromStr<Err = AsymError>>(
    value: Option<&str>,
    field: &str,
) -> KmsResult<T> {
    value
        .ok_or_else(|| Violation::null(field))?
        .parse()
        .map_err(KmsError::from)
}

/// A required blob field.
pub(crate) fn required_blob<'a>(b: Option<&'a Blob>, field: &str) -> KmsResult<&'a [u8]> {
    Ok(&b.ok_or_else(|| Violation::null(field))?.0)
}

/// DryRun: the request was authorized and would have run.
pub(crate) fn dry_run(flag: Option<bool>) -> KmsResult<()> {
    if flag == Some(true) {
        return Err(KmsError::new(
            ErrorCode::DryRunOperationException,
            "The request would have succeeded, but the DryRun option is set.",
        ));
    }
    Ok(())
}

fn no_recipient(recipient: &Option<Value>) -> KmsResult<()> {
    match recipient {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(KmsError::new(
            ErrorCode::UnsupportedOperationException,
            "Recipient (Nitro Enclaves attestation) is not supported: omit the Recipient parameter.",
        )),
    }
}

/// The key's spec, parsed.
pub(crate) fn spec_of(k: &KeyRecord) -> KmsResult<KeySpec> {
    Ok(k.key_spec)
}

/// Refuses a key whose KeyUsage is not `usage`.
fn require_usage(k: &KeyRecord, usage: KeyUsage, operation: &str) -> KmsResult<()> {
    if k.key_usage != usage {
        return Err(wrong_usage(k, operation));
    }
    Ok(())
}

fn with(mut m: Map<String, Value>, key: &str, value: impl ToString) -> Map<String, Value> {
    m.insert(key.into(), json!(value.to_string()));
    m
}

fn refuse_context(context: &Option<EncryptionContext>, k: &KeyRecord) -> KmsResult<()> {
    if context.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(KmsError::validation(format!(
            "EncryptionContext is not supported with asymmetric KMS keys ({} has KeySpec {}): omit the encryption context.",
            k.arn(),
            k.key_spec
        )));
    }
    Ok(())
}

/// The key pair of a GenerateDataKeyPair(WithoutPlaintext) request, made
/// before its transaction: RSA generation is slow and must not hold the
/// write lock.
pub(crate) fn pregenerate_data_key_pair(
    req: &GenerateDataKeyPairRequest,
) -> Option<asym::DataKeyPair> {
    req.key_pair_spec
        .as_deref()
        .and_then(|s| s.parse::<DataKeyPairSpec>().ok())
        .and_then(|s| asym::generate_data_key_pair(s).ok())
}

impl Kms {
    /// Loads and unseals the (newest) private key material of `k`.
    pub(crate) fn private_key(&self, op: &Op<'_>, k: &KeyRecord) -> KmsResult<PrivateKeyMaterial> {
        let spec = spec_of(k)?;
        let m = store::material(op.tx, &k.key_id, None)?
            .ok_or_else(|| KmsError::invalid_state(format!("{} is pending import.", k.arn())))?;
        let slot = (k.key_id, m.version);
        let cache = || self.private_keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = cache().get(&slot) {
            return Ok(key.clone());
        }
        let material = self.unseal_material(&k.key_id, m.version, &m.sealed)?;
        let key = PrivateKeyMaterial::load(spec, &material).map_err(|e| {
            KmsError::internal(format!(
                "the stored key material of {} does not load: {e}",
                k.arn()
            ))
        })?;
        let mut c = cache();
        // Bounded: a process serving many keys keeps at most 256 parsed.
        if c.len() >= 256 {
            c.clear();
        }
        c.insert(slot, key.clone());
        Ok(key)
    }

    pub(crate) fn get_public_key_body(
        &self,
        op: &mut Op<'_>,
        req: &GetPublicKeyRequest,
    ) -> KmsResult<GetPublicKeyResponse> {
        let k = op.resolve(req.key_id.as_deref(), true)?;
        op.permit("kms:GetPublicKey", &k, StateRule::Use, &no_conditions())?;
        let spec = spec_of(&k)?;
        let public = match (&k.public_key, spec.is_asymmetric()) {
                (Some(p), true) => p.clone(),
                _ => {
                    return Err(KmsError::new(
                        ErrorCode::UnsupportedOperationException,
                        format!(
                            "{} is not an asymmetric KMS key (KeySpec {spec}): GetPublicKey applies only to RSA, ECC and ML-DSA keys.",
                            k.arn()
                        ),
                    ))
                }
            };
        let a = self.algorithms_of(&k);
        Ok(GetPublicKeyResponse {
            key_id: k.arn(),
            public_key: Blob(public),
            customer_master_key_spec: spec.customer_master_key_spec().map(str::to_string),
            key_spec: k.key_spec.to_string(),
            key_usage: k.key_usage.to_string(),
            encryption_algorithms: a.encryption,
            signing_algorithms: a.signing,
            key_agreement_algorithms: a.key_agreement,
        })
    }

    pub(crate) fn sign_body(&self, op: &mut Op<'_>, req: &SignRequest) -> KmsResult<SignResponse> {
        let k = op.resolve(req.key_id.as_deref(), true)?;
        let message = required_blob(req.message.as_ref(), "message")?;
        let alg: SigningAlgorithmSpec =
            required_enum(req.signing_algorithm.as_deref(), "signingAlgorithm")?;
        let mt = match req.message_type.as_deref() {
            None => MessageType::Raw,
            Some(s) => s.parse().map_err(KmsError::from)?,
        };
        let cond = with(no_conditions(), "kms:SigningAlgorithm", alg);
        let cond = with(cond, "kms:MessageType", mt);
        op.permit("kms:Sign", &k, StateRule::Use, &cond)?;
        require_usage(&k, KeyUsage::SignVerify, "Sign")?;
        dry_run(req.dry_run)?;
        let key = self.private_key(op, &k)?;
        let signature = asym::sign(&key, alg, mt, message)?;
        Ok(SignResponse {
            key_id: k.arn(),
            signature: Blob(signature),
            signing_algorithm: alg.to_string(),
        })
    }

    pub(crate) fn verify_body(
        &self,
        op: &mut Op<'_>,
        req: &VerifyRequest,
    ) -> KmsResult<VerifyResponse> {
        let k = op.resolve(req.key_id.as_deref(), true)?;
        // Every absent member in one message, as AWS answers.
        let mut v = Validator::new();
        let message = v.required("message", &req.message);
        let signature = v.required("signature", &req.signature);
        let alg = v.required("signingAlgorithm", &req.signing_algorithm);
        let ((message, signature), alg) = v.finish_with(message.zip(signature).zip(alg))?;
        let (message, signature) = (&message.0[..], &signature.0[..]);
        let alg: SigningAlgorithmSpec = alg.parse()?;
        let mt = match req.message_type.as_deref() {
            None => MessageType::Raw,
            Some(s) => s.parse().map_err(KmsError::from)?,
        };
        if signature.is_empty() || signature.len() > 6144 {
            return Err(
                Violation::hidden("signature", Constraint::LengthBetween(1, 6144))
                    .with_suffix(format!(" bytes (got {})", signature.len()))
                    .into(),
            );
        }
        let cond = with(no_conditions(), "kms:SigningAlgorithm", alg);
        let cond = with(cond, "kms:MessageType", mt);
        op.permit("kms:Verify", &k, StateRule::Use, &cond)?;
        require_usage(&k, KeyUsage::SignVerify, "Verify")?;
        dry_run(req.dry_run)?;
        let key = self.private_key(op, &k)?;
        if !asym::verify(&key, alg, mt, message, signature)? {
            return Err(KmsError::new(
                    ErrorCode::KMSInvalidSignatureException,
                    "The signature verification failed: the signature was not produced by signing this message with this KMS key, signing algorithm and message type.",
                ));
        }
        Ok(VerifyResponse {
            key_id: k.arn(),
            signature_valid: true,
            signing_algorithm: alg.to_string(),
        })
    }

    pub(crate) fn generate_mac_body(
        &self,
        op: &mut Op<'_>,
        req: &GenerateMacRequest,
    ) -> KmsResult<GenerateMacResponse> {
        let k = op.resolve(req.key_id.as_deref(), true)?;
        let message = required_blob(req.message.as_ref(), "message")?;
        let alg: MacAlgorithmSpec = required_enum(req.mac_algorithm.as_deref(), "macAlgorithm")?;
        let cond = with(no_conditions(), "kms:MacAlgorithm", alg);
        op.permit("kms:GenerateMac", &k, StateRule::Use, &cond)?;
        require_usage(&k, KeyUsage::GenerateVerifyMac, "GenerateMac")?;
        dry_run(req.dry_run)?;
        let key = self.private_key(op, &k)?;
        let mac = asym::generate_mac(&key, alg, message)?;
        Ok(GenerateMacResponse {
            mac: Blob(mac),
            mac_algorithm: alg.to_string(),
            key_id: k.arn(),
        })
    }

    pub(crate) fn verify_mac_body(
        &self,
        op: &mut Op<'_>,
        req: &VerifyMacRequest,
    ) -> KmsResult<VerifyMacResponse> {
        let k = op.resolve(req.key_id.as_deref(), true)?;
        let message = required_blob(req.message.as_ref(), "message")?;
        let mac = required_blob(req.mac.as_ref(), "mac")?;
        let alg: MacAlgorithmSpec = required_enum(req.mac_algorithm.as_deref(), "macAlgorithm")?;
        let cond = with(no_conditions(), "kms:MacAlgorithm", alg);
        op.permit("kms:VerifyMac", &k, StateRule::Use, &cond)?;
        require_usage(&k, KeyUsage::GenerateVerifyMac, "VerifyMac")?;
        dry_run(req.dry_run)?;
        let key = self.private_key(op, &k)?;
        if !asym::verify_mac(&key, alg, message, mac)? {
            return Err(KmsError::new(
                    ErrorCode::KMSInvalidMacException,
                    "The MAC verification failed: the MAC was not generated for this message with this KMS key and MAC algorithm.",
                ));
        }
        Ok(VerifyMacResponse {
            key_id: k.arn(),
            mac_valid: true,
            mac_algorithm: alg.to_string(),
        })
    }

    pub(crate) fn generate_data_key_pair_body(
        &self,
        op: &mut Op<'_>,
        req: &GenerateDataKeyPairRequest,
        pregenerated: &mut Option<asym::DataKeyPair>,
    ) -> KmsResult<GenerateDataKeyPairResponse> {
        self.generate_data_key_pair_impl(op, req, true, pregenerated)
    }

    pub(crate) fn generate_data_key_pair_without_plaintext_body(
        &self,
        op: &mut Op<'_>,
        req: &GenerateDataKeyPairRequest,
        pregenerated: &mut Option<asym::DataKeyPair>,
    ) -> KmsResult<GenerateDataKeyPairResponse> {
        self.generate_data_key_pair_impl(op, req, false, pregenerated)
    }

    fn generate_data_key_pair_impl(
        &self,
        op: &mut Op<'_>,
        req: &GenerateDataKeyPairRequest,
        with_plaintext: bool,
        pregenerated: &mut Option<asym::DataKeyPair>,
    ) -> KmsResult<GenerateDataKeyPairResponse> {
        let name = if with_plaintext {
            "GenerateDataKeyPair"
        } else {
            "GenerateDataKeyPairWithoutPlaintext"
        };
        // The pair made before the transaction is used only once the
        // request passed authorization.
        let k = op.resolve(req.key_id.as_deref(), true)?;
        let spec: DataKeyPairSpec = required_enum(req.key_pair_spec.as_deref(), "keyPairSpec")?;
        no_recipient(&req.recipient)?;
        let context = req.encryption_context.clone().unwrap_or_default();
        let cond = with(context_conditions(&context), "kms:DataKeyPairSpec", spec);
        op.permit(&format!("kms:{name}"), &k, StateRule::Use, &cond)?;
        check_symmetric_encrypt(&k, name)?;
        dry_run(req.dry_run)?;
        let pair = match pregenerated.take() {
            Some(p) => p,
            None => asym::generate_data_key_pair(spec)?,
        };
        let blob = self.encrypt_with(op, &k, &context, pair.private_key_der.expose())?;
        Ok(GenerateDataKeyPairResponse {
            private_key_ciphertext_blob: Blob(blob),
            private_key_plaintext: with_plaintext.then(|| SecretBlob(pair.private_key_der)),
            public_key: Blob(pair.public_key_der),
            key_id: k.arn(),
            key_pair_spec: spec.to_string(),
        })
    }

    pub(crate) fn derive_shared_secret_body(
        &self,
        op: &mut Op<'_>,
        req: &DeriveSharedSecretRequest,
    ) -> KmsResult<DeriveSharedSecretResponse> {
        let k = op.resolve(req.key_id.as_deref(), true)?;
        let alg: KeyAgreementAlgorithmSpec = required_enum(
            req.key_agreement_algorithm.as_deref(),
            "keyAgreementAlgorithm",
        )?;
        let peer = required_blob(req.public_key.as_ref(), "publicKey")?;
        no_recipient(&req.recipient)?;
        let cond = with(no_conditions(), "kms:KeyAgreementAlgorithm", alg);
        op.permit("kms:DeriveSharedSecret", &k, StateRule::Use, &cond)?;
        require_usage(&k, KeyUsage::KeyAgreement, "DeriveSharedSecret")?;
        dry_run(req.dry_run)?;
        let key = self.private_key(op, &k)?;
        let secret = asym::derive_shared_secret(&key, peer)?;
        Ok(DeriveSharedSecretResponse {
            key_id: k.arn(),
            shared_secret: SecretBlob(secret),
            key_agreement_algorithm: alg.to_string(),
            key_origin: k.origin.to_string(),
        })
    }

    /// May `k` encrypt or decrypt with asymmetric algorithm `alg` (ReEncrypt
    /// sources and destinations)? An RSA ENCRYPT_DECRYPT key, one of its
    /// algorithms, and no encryption context.
    pub(crate) fn check_asymmetric_encrypt(
        &self,
        k: &KeyRecord,
        alg: &str,
        context: &Option<EncryptionContext>,
    ) -> KmsResult<EncryptionAlgorithmSpec> {
        let alg: EncryptionAlgorithmSpec = alg.parse().map_err(KmsError::from)?;
        require_usage(k, KeyUsage::EncryptDecrypt, "ReEncrypt")?;
        let spec = spec_of(k)?;
        if spec.rsa_bits().is_none() || !spec.encryption_algorithms().contains(&alg) {
            return Err(KmsError::new(
                ErrorCode::InvalidKeyUsageException,
                format!(
                    "The encryption algorithm {alg} is not supported by {} (KeySpec {spec}).",
                    k.arn()
                ),
            ));
        }
        refuse_context(context, k)?;
        Ok(alg)
    }

    /// Raw RSA-OAEP decryption with `k` (checked and authorized already).
    pub(crate) fn decrypt_raw_asymmetric(
        &self,
        op: &Op<'_>,
        k: &KeyRecord,
        alg: &str,
        blob: &[u8],
    ) -> KmsResult<SecretBytes> {
        let alg: EncryptionAlgorithmSpec = alg.parse().map_err(KmsError::from)?;
        let key = self.private_key(op, k)?;
        Ok(asym::decrypt(&key, alg, blob)?)
    }

    /// Raw RSA-OAEP encryption with `k` (checked and authorized already).
    pub(crate) fn encrypt_raw_asymmetric(
        &self,
        op: &Op<'_>,
        k: &KeyRecord,
        alg: &str,
        pt: &[u8],
    ) -> KmsResult<Vec<u8>> {
        let alg: EncryptionAlgorithmSpec = alg.parse().map_err(KmsError::from)?;
        let key = self.private_key(op, k)?;
        Ok(asym::encrypt(&key, alg, pt)?)
    }

    /// Encrypt with an RSA ENCRYPT_DECRYPT key (already authorized): raw
    /// RSA-OAEP, no encryption context.
    pub(crate) fn encrypt_asymmetric(
        &self,
        op: &mut Op<'_>,
        k: &KeyRecord,
        req: &EncryptRequest,
    ) -> KmsResult<EncryptResponse> {
        refuse_context(&req.encryption_context, k)?;
        let alg: EncryptionAlgorithmSpec = req
            .encryption_algorithm
            .as_deref()
            .unwrap_or("SYMMETRIC_DEFAULT")
            .parse()
            .map_err(KmsError::from)?;
        dry_run(req.dry_run)?;
        let pt = req
            .plaintext
            .as_ref()
            .ok_or_else(|| Violation::null("plaintext"))?;
        let key = self.private_key(op, k)?;
        let ct = asym::encrypt(&key, alg, pt.0.expose())?;
        Ok(EncryptResponse {
            ciphertext_blob: Blob(ct),
            key_id: k.arn(),
            encryption_algorithm: alg.to_string(),
        })
    }

    /// Decrypt with an RSA-OAEP algorithm: the request must name the key.
    pub(crate) fn decrypt_asymmetric(
        &self,
        op: &mut Op<'_>,
        req: &DecryptRequest,
    ) -> KmsResult<DecryptResponse> {
        let alg: EncryptionAlgorithmSpec = req
            .encryption_algorithm
            .as_deref()
            .unwrap_or("SYMMETRIC_DEFAULT")
            .parse()
            .map_err(KmsError::from)?;
        let blob = required_blob(req.ciphertext_blob.as_ref(), "ciphertextBlob")?;
        let key_id = req.key_id.as_deref().ok_or_else(|| {
            KmsError::validation(format!(
                "KeyId is required to decrypt with EncryptionAlgorithm {alg}: name the asymmetric KMS key that encrypted the ciphertext."
            ))
        })?;
        let k = op.resolve(Some(key_id), true)?;
        let context = req.encryption_context.clone().unwrap_or_default();
        let cond = with(context_conditions(&context), "kms:EncryptionAlgorithm", alg);
        op.permit("kms:Decrypt", &k, StateRule::Use, &cond)?;
        require_usage(&k, KeyUsage::EncryptDecrypt, "Decrypt")?;
        let spec = spec_of(&k)?;
        if spec == KeySpec::SymmetricDefault && alg == EncryptionAlgorithmSpec::SymmetricDefault {
            // Not a keyvol ciphertext (truncated, say), for a symmetric
            // key: whatever context came with it.
            return Err(KmsError::invalid_ciphertext());
        }
        refuse_context(&req.encryption_context, &k)?;
        dry_run(req.dry_run)?;
        if spec.rsa_bits().is_none() {
            return Err(KmsError::from(AsymError::IncompatibleAlgorithm {
                spec,
                kind: "encryption",
                algorithm: alg.to_string(),
                advice: format!(
                    "use {}",
                    spec.encryption_algorithms()
                        .first()
                        .map(|a| a.as_str())
                        .unwrap_or("another key")
                ),
            }));
        }
        let key = self.private_key(op, &k)?;
        let pt = asym::decrypt(&key, alg, blob)?;
        Ok(DecryptResponse {
            key_material_id: None,
            key_id: k.arn(),
            plaintext: SecretBlob(pt),
            encryption_algorithm: alg.to_string(),
        })
    }
}
