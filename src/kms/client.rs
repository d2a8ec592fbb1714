//! The KMS as volume and snapshot code see it: the embedded KMS of the
//! home, or a remote one over the AWS KMS protocol.
//!
//! Data keys cross this boundary only as [`DataKey`] (secret, zeroized on
//! drop, redacted in `Debug`) and [`WrappedKey`] (the KMS ciphertext blob,
//! public): the typed calls never put a plaintext key into a
//! `serde_json::Value`, whose strings nothing zeroizes. [`KmsClient::call`]
//! remains for operations that carry no secret (grants, DescribeKey as JSON).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use super::api::{
    Blob, DecryptRequest, EncryptRequest, GenerateDataKeyRequest, KeyIdRequest, SecretBlob,
};
use super::ciphertext::EncryptionContext;
use super::{ErrorCode, Kms, KmsError, KmsResult, RequestContext};
use crate::secret::{SecretBytes, VolumeDataKey};

/// A data key wrapped under a KMS key: the `CiphertextBlob` of
/// GenerateDataKey or Encrypt, public and stored beside what it protects.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey(pub Vec<u8>);

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedKey({} bytes)", self.0.len())
    }
}

impl WrappedKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A plaintext data key from the KMS: zeroized on drop, redacted in `Debug`.
#[derive(Debug)]
pub struct DataKey(SecretBytes);

impl DataKey {
    /// A copy of a volume key to wrap anew (a snapshot copy that keeps its
    /// source's data key).
    pub fn from_volume_key(key: &VolumeDataKey) -> Self {
        DataKey(SecretBytes::from_slice(&key.expose()[..]))
    }

    /// The key bytes; see [`SecretBytes::expose`] for the rules.
    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }

    /// The 64-byte XTS key of a volume or snapshot, or an error naming
    /// `what` when the KMS returned another length.
    pub fn volume_key(&self, what: &str) -> KmsResult<VolumeDataKey> {
        VolumeDataKey::from_slice(self.0.expose()).ok_or_else(|| {
            KmsError::internal(format!(
                "the KMS returned a data key of {} bytes for {what}; 64 expected",
                self.0.len()
            ))
        })
    }
}

/// What volume and snapshot code need to know of a KMS key.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub arn: String,
    pub key_spec: String,
    pub key_usage: String,
    /// `AWS` or `CUSTOMER`.
    pub key_manager: String,
}

impl KeyInfo {
    fn from_metadata(m: &Value) -> KmsResult<Self> {
        let field = |name: &str| -> KmsResult<String> {
            m[name].as_str().map(str::to_string).ok_or_else(|| {
                KmsError::internal(format!("the KMS answered DescribeKey without {name}"))
            })
        };
        Ok(KeyInfo {
            arn: field("Arn")?,
            key_spec: field("KeySpec")?,
            key_usage: field("KeyUsage")?,
            key_manager: field("KeyManager")?,
        })
    }

    /// A symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT): the
    /// only kind that can wrap a volume's data key.
    pub fn is_symmetric_encryption(&self) -> bool {
        self.key_spec == "SYMMETRIC_DEFAULT" && self.key_usage == "ENCRYPT_DECRYPT"
    }

    /// A key of the `ARN`'s region (`arn:aws:kms:REGION:...`).
    pub fn region(&self) -> Option<&str> {
        self.arn.split(':').nth(3)
    }
}

pub trait KmsClient: Send + Sync {
    /// Runs `operation` as the caller of `ctx` (for a remote KMS, as the
    /// principal of the profile's access key, in `ctx`'s region). For
    /// operations whose requests and responses hold no secret.
    fn call(&self, ctx: &RequestContext, operation: &str, request: Value) -> KmsResult<Value>;

    /// Where this KMS is, for messages ("embedded" or the endpoint URL).
    fn describe(&self) -> String;

    /// DescribeKey of `key` (id, ARN or alias).
    fn describe_key(&self, ctx: &RequestContext, key: &str) -> KmsResult<KeyInfo> {
        let r = self.call(ctx, "DescribeKey", serde_json::json!({ "KeyId": key }))?;
        KeyInfo::from_metadata(&r["KeyMetadata"])
    }

    /// GenerateDataKey: a new `bytes`-byte data key, in plaintext and
    /// wrapped under `key` with `context`.
    fn generate_data_key(
        &self,
        ctx: &RequestContext,
        key: &str,
        bytes: usize,
        context: &EncryptionContext,
    ) -> KmsResult<(WrappedKey, DataKey)>;

    /// GenerateDataKeyWithoutPlaintext: a new data key, wrapped only.
    fn generate_wrapped_data_key(
        &self,
        ctx: &RequestContext,
        key: &str,
        bytes: usize,
        context: &EncryptionContext,
    ) -> KmsResult<WrappedKey>;

    /// Decrypt of a wrapped data key, which must have been wrapped under
    /// `key` with `context`.
    fn decrypt_data_key(
        &self,
        ctx: &RequestContext,
        key: &str,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> KmsResult<DataKey>;

    /// Encrypt of a data key already held (a copy that keeps the source's
    /// data key) under `key` with `context`.
    fn encrypt_data_key(
        &self,
        ctx: &RequestContext,
        key: &str,
        data_key: &DataKey,
        context: &EncryptionContext,
    ) -> KmsResult<WrappedKey>;
}

fn data_key_request(
    key: &str,
    bytes: usize,
    context: &EncryptionContext,
) -> GenerateDataKeyRequest {
    GenerateDataKeyRequest {
        key_id: Some(key.to_string()),
        number_of_bytes: Some(bytes as i64),
        encryption_context: Some(context.clone()),
        ..Default::default()
    }
}

fn decrypt_request(key: &str, wrapped: &WrappedKey, context: &EncryptionContext) -> DecryptRequest {
    DecryptRequest {
        key_id: Some(key.to_string()),
        ciphertext_blob: Some(Blob(wrapped.0.clone())),
        encryption_context: Some(context.clone()),
        ..Default::default()
    }
}

fn encrypt_request(key: &str, data_key: &DataKey, context: &EncryptionContext) -> EncryptRequest {
    EncryptRequest {
        key_id: Some(key.to_string()),
        plaintext: Some(SecretBlob(data_key.0.clone())),
        encryption_context: Some(context.clone()),
        ..Default::default()
    }
}

fn no_plaintext(operation: &str) -> KmsError {
    KmsError::internal(format!("the KMS answered {operation} without a Plaintext"))
}

impl KmsClient for Kms {
    fn call(&self, ctx: &RequestContext, operation: &str, request: Value) -> KmsResult<Value> {
        Kms::call(self, ctx, operation, request)
    }

    fn describe(&self) -> String {
        format!("embedded KMS of {}", self.home().dir().display())
    }

    fn describe_key(&self, ctx: &RequestContext, key: &str) -> KmsResult<KeyInfo> {
        let r = Kms::describe_key(
            self,
            ctx,
            KeyIdRequest {
                key_id: Some(key.to_string()),
                grant_tokens: None,
            },
        )?;
        KeyInfo::from_metadata(&r.key_metadata)
    }

    fn generate_data_key(
        &self,
        ctx: &RequestContext,
        key: &str,
        bytes: usize,
        context: &EncryptionContext,
    ) -> KmsResult<(WrappedKey, DataKey)> {
        let r = Kms::generate_data_key(self, ctx, data_key_request(key, bytes, context))?;
        let plaintext = r.plaintext.ok_or_else(|| no_plaintext("GenerateDataKey"))?;
        Ok((WrappedKey(r.ciphertext_blob.0), DataKey(plaintext.0)))
    }

    fn generate_wrapped_data_key(
        &self,
        ctx: &RequestContext,
        key: &str,
        bytes: usize,
        context: &EncryptionContext,
    ) -> KmsResult<WrappedKey> {
        let r = Kms::generate_data_key_without_plaintext(
            self,
            ctx,
            data_key_request(key, bytes, context),
        )?;
        Ok(WrappedKey(r.ciphertext_blob.0))
    }

    fn decrypt_data_key(
        &self,
        ctx: &RequestContext,
        key: &str,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> KmsResult<DataKey> {
        let r = Kms::decrypt(self, ctx, decrypt_request(key, wrapped, context))?;
        Ok(DataKey(r.plaintext.0))
    }

    fn encrypt_data_key(
        &self,
        ctx: &RequestContext,
        key: &str,
        data_key: &DataKey,
        context: &EncryptionContext,
    ) -> KmsResult<WrappedKey> {
        let r = Kms::encrypt(self, ctx, encrypt_request(key, data_key, context))?;
        Ok(WrappedKey(r.ciphertext_blob.0))
    }
}

/// The members of the responses the typed calls read, parsed straight from
/// the response bytes (never through a `Value`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DataKeyResponse {
    pub ciphertext_blob: Option<Blob>,
    pub plaintext: Option<SecretBlob>,
}

/// A KMS reached as JSON bytes in and out (the remote client): the typed
/// calls serialize into and parse from zeroizing buffers.
pub(crate) trait JsonKms {
    fn call_json(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> KmsResult<Zeroizing<Vec<u8>>>;
}

pub(crate) fn call_typed<R: Serialize>(
    kms: &dyn JsonKms,
    ctx: &RequestContext,
    operation: &str,
    request: &R,
) -> KmsResult<DataKeyResponse> {
    let body = Zeroizing::new(serde_json::to_vec(request).map_err(|e| {
        KmsError::validation(format!("the {operation} request is not serializable: {e}"))
    })?);
    let out = kms.call_json(ctx, operation, &body)?;
    serde_json::from_slice(&out).map_err(|e| {
        KmsError::new(
            ErrorCode::KMSInternalException,
            format!("the KMS answered {operation} with a body that does not match its shape: {e}"),
        )
    })
}

fn wrapped_of(operation: &str, r: &mut DataKeyResponse) -> KmsResult<WrappedKey> {
    r.ciphertext_blob
        .take()
        .map(|b| WrappedKey(b.0))
        .ok_or_else(|| {
            KmsError::internal(format!(
                "the KMS answered {operation} without a CiphertextBlob"
            ))
        })
}

/// The typed calls over [`JsonKms`], for [`KmsClient`] implementations.
pub(crate) fn generate_data_key_json(
    kms: &dyn JsonKms,
    ctx: &RequestContext,
    key: &str,
    bytes: usize,
    context: &EncryptionContext,
) -> KmsResult<(WrappedKey, DataKey)> {
    let mut r = call_typed(
        kms,
        ctx,
        "GenerateDataKey",
        &data_key_request(key, bytes, context),
    )?;
    let w = wrapped_of("GenerateDataKey", &mut r)?;
    let p = r.plaintext.ok_or_else(|| no_plaintext("GenerateDataKey"))?;
    Ok((w, DataKey(p.0)))
}

pub(crate) fn generate_wrapped_data_key_json(
    kms: &dyn JsonKms,
    ctx: &RequestContext,
    key: &str,
    bytes: usize,
    context: &EncryptionContext,
) -> KmsResult<WrappedKey> {
    let op = "GenerateDataKeyWithoutPlaintext";
    let mut r = call_typed(kms, ctx, op, &data_key_request(key, bytes, context))?;
    wrapped_of(op, &mut r)
}

pub(crate) fn decrypt_data_key_json(
    kms: &dyn JsonKms,
    ctx: &RequestContext,
    key: &str,
    wrapped: &WrappedKey,
    context: &EncryptionContext,
) -> KmsResult<DataKey> {
    let r = call_typed(kms, ctx, "Decrypt", &decrypt_request(key, wrapped, context))?;
    let p = r.plaintext.ok_or_else(|| no_plaintext("Decrypt"))?;
    Ok(DataKey(p.0))
}

pub(crate) fn encrypt_data_key_json(
    kms: &dyn JsonKms,
    ctx: &RequestContext,
    key: &str,
    data_key: &DataKey,
    context: &EncryptionContext,
) -> KmsResult<WrappedKey> {
    let mut r = call_typed(
        kms,
        ctx,
        "Encrypt",
        &encrypt_request(key, data_key, context),
    )?;
    wrapped_of("Encrypt", &mut r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_key_bytes() {
        let k = DataKey(SecretBytes::from_slice(&[0x41; 64]));
        let w = WrappedKey(vec![0x42; 10]);
        let text = format!("{k:?} {w:?}");
        assert!(!text.contains("65") && !text.contains("AAAA") && !text.contains("66"));
        assert!(
            text.contains("REDACTED") && text.contains("10 bytes"),
            "{text}"
        );
    }

    #[test]
    fn a_data_key_of_the_wrong_length_is_an_error() {
        let k = DataKey(SecretBytes::from_slice(&[1; 32]));
        let e = k.volume_key("vol-1").unwrap_err();
        assert!(
            e.message.contains("32 bytes") && e.message.contains("vol-1"),
            "{e:?}"
        );
        assert!(DataKey(SecretBytes::from_slice(&[1; 64]))
            .volume_key("v")
            .is_ok());
    }

    #[test]
    fn a_response_without_plaintext_is_an_error_not_an_empty_key() {
        struct Answer(&'static str);
        impl JsonKms for Answer {
            fn call_json(
                &self,
                _: &RequestContext,
                _: &str,
                _: &[u8],
            ) -> KmsResult<Zeroizing<Vec<u8>>> {
                Ok(Zeroizing::new(self.0.as_bytes().to_vec()))
            }
        }
        let ctx = RequestContext::new(
            crate::kms::Caller::root("111122223333".parse().unwrap()),
            crate::ids::Region::default_region(),
        );
        let none = Answer(r#"{"CiphertextBlob":"AAAA","KeyId":"k"}"#);
        let e = generate_data_key_json(&none, &ctx, "k", 64, &Default::default()).unwrap_err();
        assert!(e.message.contains("without a Plaintext"), "{e:?}");
        let bad = Answer(r#"{"CiphertextBlob":"AAAA","Plaintext":"not base64!"}"#);
        assert!(generate_data_key_json(&bad, &ctx, "k", 64, &Default::default()).is_err());
        let ok = Answer(r#"{"CiphertextBlob":"AAAA","Plaintext":"QUFB"}"#);
        let (w, k) = generate_data_key_json(&ok, &ctx, "k", 3, &Default::default()).unwrap();
        assert_eq!((w.as_bytes(), k.expose()), (&[0u8, 0, 0][..], &b"AAA"[..]));
    }
}
