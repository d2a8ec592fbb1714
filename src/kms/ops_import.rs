//! Imported key material (BYOK) of keys with Origin EXTERNAL:
//! GetParametersForImport, ImportKeyMaterial and DeleteImportedKeyMaterial.
//!
//! A GetParametersForImport response's RSA wrapping key is kept sealed under
//! the root key in `import_parameters`, found by the SHA-256 of its random
//! import token, until the token expires (24 hours) or is used. Re-imports
//! must bring the same material: the first import stores a key check value
//! (HMAC-SHA256 keyed with the material over a fixed label) that later
//! imports must reproduce. The tables are in `store::SCHEMA`
//! (`import_parameters`, `imported_material`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;

use super::api::Blob;
use super::asym::{self, AlgorithmSpec, KeySpec, PrivateKeyMaterial, WrappingKeySpec};
use super::model::{KeyRecord, KeyState, StateRule};
use super::ops::{no_conditions, to_audit};
use super::ops_asym::{required_blob, required_enum};
use super::store::{self, db};
use super::{ErrorCode, Kms, KmsError, KmsResult, RequestContext};
use crate::clock::DAY;
use crate::secret::{ct_eq, SecretBytes};

/// How long a GetParametersForImport response can be used.
pub const IMPORT_PARAMETERS_LIFETIME: i64 = DAY;
/// The latest ValidTo ImportKeyMaterial accepts, from now.
pub const MAX_VALID_TO: i64 = 365 * DAY;
const KEY_CHECK_LABEL: &[u8] = b"keyvol key check";

crate::request_struct!(GetParametersForImportRequest {
    key_id: String,
    wrapping_algorithm: String,
    wrapping_key_spec: String,
});
crate::request_struct!(ImportKeyMaterialRequest {
    key_id: String,
    import_token: Blob,
    encrypted_key_material: Blob,
    valid_to: Value,
    expiration_model: String,
});
crate::request_struct!(DeleteImportedKeyMaterialRequest { key_id: String });

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportResponse {
    pub key_id: String,
    pub import_token: Blob,
    pub public_key: Blob,
    pub parameters_valid_to: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportKeyMaterialResponse {
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_material_id: Option<String>,
}

/// One row of `import_parameters`.
struct ImportParameters {
    key_id: String,
    algorithm: String,
    spec: String,
    sealed: Vec<u8>,
    valid_to: i64,
}

fn token_hash(token: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(token))
}

fn wrapping_label(token_hash: &str) -> String {
    format!("kms-import-wrapping-key/{token_hash}")
}

/// The key check value of imported material.
fn key_check_value(material: &SecretBytes) -> KmsResult<Vec<u8>> {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(material.expose())
        .map_err(|e| KmsError::internal(format!("key check value: {e}")))?;
    mac.update(KEY_CHECK_LABEL);
    Ok(mac.finalize().into_bytes().to_vec())
}

fn require_external(k: &KeyRecord) -> KmsResult<()> {
    if k.origin != "EXTERNAL" {
        return Err(KmsError::new(
            ErrorCode::UnsupportedOperationException,
            format!(
                "{} origin is {} which is not valid for this operation: only keys created with Origin EXTERNAL take imported key material.",
                k.arn(),
                k.origin
            ),
        ));
    }
    Ok(())
}

/// ValidTo as AWS clients send it: epoch seconds (number or numeric
/// string) or an RFC 3339 timestamp.
fn parse_valid_to(v: &Value) -> KmsResult<Option<i64>> {
    let bad = || {
        KmsError::validation(format!(
            "ValidTo '{v}' is not a timestamp: give epoch seconds or RFC 3339 (2030-01-01T00:00:00Z)."
        ))
    };
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(bad),
        Value::String(s) => match s.parse::<i64>() {
            Ok(n) => Ok(Some(n)),
            Err(_) => {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map(|d| Some(d.unix_timestamp()))
                    .map_err(|_| bad())
            }
        },
        _ => Err(bad()),
    }
}

impl Kms {
    pub fn get_parameters_for_import(
        &self,
        ctx: &RequestContext,
        req: GetParametersForImportRequest,
    ) -> KmsResult<GetParametersForImportResponse> {
        // The RSA wrapping key is generated before the transaction: RSA
        // generation is slow and must not hold the write lock.
        let pregenerated = req
            .wrapping_key_spec
            .as_deref()
            .and_then(|s| s.parse::<WrappingKeySpec>().ok())
            .and_then(|s| asym::generate_wrapping_key(s).ok());
        self.run(ctx, "GetParametersForImport", to_audit(&req), |op| {
            let k = op.resolve(req.key_id.as_deref(), false)?;
            let alg: AlgorithmSpec =
                required_enum(req.wrapping_algorithm.as_deref(), "wrappingAlgorithm")?;
            let spec: WrappingKeySpec =
                required_enum(req.wrapping_key_spec.as_deref(), "wrappingKeySpec")?;
            let mut cond = no_conditions();
            cond.insert("kms:WrappingAlgorithm".into(), json!(alg.as_str()));
            cond.insert("kms:WrappingKeySpec".into(), json!(spec.as_str()));
            op.permit("kms:GetParametersForImport", &k, StateRule::Manage, &cond)?;
            require_external(&k)?;
            let wrapping = match pregenerated {
                Some(w) if w.spec() == KeySpec::from(spec) => w,
                _ => asym::generate_wrapping_key(spec)?,
            };
            let public = wrapping.public_key_der()?.to_vec();
            let token = SecretBytes::random(64);
            let hash = token_hash(token.expose());
            let sealed = self
                .home
                .seal(&wrapping_label(&hash), wrapping.material().expose());
            let valid_to = op.now + IMPORT_PARAMETERS_LIFETIME;
            // Forget parameters that can no longer be used.
            op.tx
                .execute(
                    "DELETE FROM import_parameters WHERE valid_to <= ?1",
                    [op.now],
                )
                .map_err(db)?;
            op.tx
                .execute(
                    "INSERT INTO import_parameters (token_hash, key_id, wrapping_algorithm, wrapping_key_spec, sealed_wrapping_key, valid_to) VALUES (?1,?2,?3,?4,?5,?6)",
                    rusqlite::params![hash, k.key_id.to_string(), alg.as_str(), spec.as_str(), sealed, valid_to],
                )
                .map_err(db)?;
            Ok(GetParametersForImportResponse {
                key_id: k.arn(),
                import_token: Blob(token.expose().to_vec()),
                public_key: Blob(public),
                parameters_valid_to: valid_to,
            })
        })
    }

    pub fn import_key_material(
        &self,
        ctx: &RequestContext,
        req: ImportKeyMaterialRequest,
    ) -> KmsResult<ImportKeyMaterialResponse> {
        self.run(ctx, "ImportKeyMaterial", to_audit(&req), |op| {
            let mut k = op.resolve(req.key_id.as_deref(), false)?;
            let token = required_blob(req.import_token.as_ref(), "importToken")?;
            let wrapped =
                required_blob(req.encrypted_key_material.as_ref(), "encryptedKeyMaterial")?;
            let valid_to = parse_valid_to(req.valid_to.as_ref().unwrap_or(&Value::Null))?;
            let model = match (req.expiration_model.as_deref(), valid_to) {
                (Some("KEY_MATERIAL_EXPIRES"), Some(_)) => "KEY_MATERIAL_EXPIRES",
                (Some("KEY_MATERIAL_EXPIRES"), None) => {
                    return Err(KmsError::validation(
                        "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES: give --valid-to, or use KEY_MATERIAL_DOES_NOT_EXPIRE.",
                    ))
                }
                (Some("KEY_MATERIAL_DOES_NOT_EXPIRE"), None) => "KEY_MATERIAL_DOES_NOT_EXPIRE",
                (Some("KEY_MATERIAL_DOES_NOT_EXPIRE"), Some(_)) => {
                    return Err(KmsError::validation(
                        "A validTo date must not be set if the ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE: omit --valid-to.",
                    ))
                }
                // AWS's default ExpirationModel is KEY_MATERIAL_EXPIRES, which
                // needs a ValidTo.
                (None, Some(_)) => "KEY_MATERIAL_EXPIRES",
                (None, None) => {
                    return Err(KmsError::validation(
                        "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES (the default): give --valid-to, or --expiration-model KEY_MATERIAL_DOES_NOT_EXPIRE.",
                    ))
                }
                (Some(other), _) => {
                    return Err(KmsError::validation(format!(
                        "1 validation error detected: Value '{other}' at 'expirationModel' failed to satisfy constraint: Member must satisfy enum value set: [KEY_MATERIAL_EXPIRES, KEY_MATERIAL_DOES_NOT_EXPIRE]"
                    )))
                }
            };
            if let Some(v) = valid_to {
                if v <= op.now || v > op.now + MAX_VALID_TO {
                    return Err(KmsError::validation(format!(
                        "ValidTo {} is out of range: it must be in the future and at most 365 days from now.",
                        crate::clock::to_rfc3339(v)
                    )));
                }
            }
            let mut cond = no_conditions();
            cond.insert("kms:ExpirationModel".into(), json!(model));
            if let Some(v) = valid_to {
                cond.insert("kms:ValidTo".into(), json!(v));
            }
            op.permit("kms:ImportKeyMaterial", &k, StateRule::Manage, &cond)?;
            require_external(&k)?;

            let hash = token_hash(token);
            let row: Option<ImportParameters> = op
                .tx
                .query_row(
                    "SELECT key_id, wrapping_algorithm, wrapping_key_spec, sealed_wrapping_key, valid_to FROM import_parameters WHERE token_hash = ?1",
                    [&hash],
                    |r| {
                        Ok(ImportParameters {
                            key_id: r.get(0)?,
                            algorithm: r.get(1)?,
                            spec: r.get(2)?,
                            sealed: r.get(3)?,
                            valid_to: r.get(4)?,
                        })
                    },
                )
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(db(e)),
                })?;
            let params = match row {
                Some(p) if p.key_id == k.key_id.to_string() => p,
                _ => {
                    return Err(KmsError::new(
                        ErrorCode::InvalidImportTokenException,
                        format!(
                            "The import token is not valid for {}: use the ImportToken of a GetParametersForImport response for this key.",
                            k.arn()
                        ),
                    ))
                }
            };
            if params.valid_to <= op.now {
                return Err(KmsError::new(
                    ErrorCode::ExpiredImportTokenException,
                    format!(
                        "The import token expired at {}: call GetParametersForImport again for a new public key and import token.",
                        crate::clock::to_rfc3339(params.valid_to)
                    ),
                ));
            }
            let stored = || KmsError::internal("the stored import parameters do not load");
            let alg: AlgorithmSpec = params.algorithm.parse().map_err(|_| stored())?;
            let wrapping_spec: WrappingKeySpec = params.spec.parse().map_err(|_| stored())?;
            let wrapping_der = self
                .home
                .unseal(&wrapping_label(&hash), &params.sealed)
                .map_err(|e| KmsError::internal(e.to_string()))?;
            let wrapping = PrivateKeyMaterial::from_pkcs8(wrapping_spec.into(), wrapping_der.expose())
                .map_err(|_| stored())?;
            let material = asym::unwrap_import(&wrapping, alg, wrapped)?;
            asym::validate_import_material(KeySpec::SymmetricDefault, &material)?;
            let check = key_check_value(&material)?;
            let previous: Option<Vec<u8>> = op
                .tx
                .query_row(
                    "SELECT check_value FROM imported_material WHERE key_id = ?1",
                    [k.key_id.to_string()],
                    |r| r.get(0),
                )
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(db(e)),
                })?;
            match previous {
                Some(p) if !ct_eq(&p, &check) => {
                    return Err(KmsError::new(
                        ErrorCode::IncorrectKeyMaterialException,
                        format!(
                            "The key material is not the key material that was previously imported into {}: a KMS key takes only the same material again.",
                            k.arn()
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    op.tx
                        .execute(
                            "INSERT INTO imported_material (key_id, check_value) VALUES (?1, ?2)",
                            rusqlite::params![k.key_id.to_string(), check],
                        )
                        .map_err(db)?;
                }
            }
            store::delete_materials(op.tx, &k.key_id)?;
            let sealed = self.seal_material(&k.key_id, 1, material.expose());
            store::insert_material(op.tx, &k.key_id, 1, &sealed, op.now, None)?;
            op.tx
                .execute(
                    "DELETE FROM import_parameters WHERE key_id = ?1",
                    [k.key_id.to_string()],
                )
                .map_err(db)?;
            if k.state == KeyState::PendingImport {
                k.state = KeyState::Enabled;
            }
            k.valid_to = valid_to;
            k.expiration_model = Some(model.to_string());
            store::update_key(op.tx, &k)?;
            Ok(ImportKeyMaterialResponse {
                key_id: k.arn(),
                key_material_id: Some(super::model::key_material_id(&k.key_id, 1)),
            })
        })
    }

    pub fn delete_imported_key_material(
        &self,
        ctx: &RequestContext,
        req: DeleteImportedKeyMaterialRequest,
    ) -> KmsResult<ImportKeyMaterialResponse> {
        self.run(ctx, "DeleteImportedKeyMaterial", to_audit(&req), |op| {
            let mut k = op.resolve(req.key_id.as_deref(), false)?;
            op.permit(
                "kms:DeleteImportedKeyMaterial",
                &k,
                StateRule::Manage,
                &no_conditions(),
            )?;
            require_external(&k)?;
            let deleted = store::material(op.tx, &k.key_id, None)?
                .map(|m| super::model::key_material_id(&k.key_id, m.version));
            store::delete_materials(op.tx, &k.key_id)?;
            k.state = KeyState::PendingImport;
            k.valid_to = None;
            k.expiration_model = None;
            store::update_key(op.tx, &k)?;
            Ok(ImportKeyMaterialResponse {
                key_id: k.arn(),
                key_material_id: deleted,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_to_accepts_epoch_and_rfc3339() {
        assert_eq!(
            parse_valid_to(&json!(1_900_000_000)).unwrap(),
            Some(1_900_000_000)
        );
        assert_eq!(parse_valid_to(&json!(1.9e9)).unwrap(), Some(1_900_000_000));
        assert_eq!(
            parse_valid_to(&json!("1900000000")).unwrap(),
            Some(1_900_000_000)
        );
        assert_eq!(
            parse_valid_to(&json!("2030-01-01T00:00:00Z")).unwrap(),
            Some(1_893_456_000)
        );
        assert_eq!(parse_valid_to(&Value::Null).unwrap(), None);
        assert!(parse_valid_to(&json!("tomorrow")).is_err());
        assert!(parse_valid_to(&json!([1])).is_err());
    }

    #[test]
    fn key_check_value_depends_on_the_material() {
        let a = SecretBytes::from_slice(&[1; 32]);
        let b = SecretBytes::from_slice(&[2; 32]);
        assert_eq!(key_check_value(&a).unwrap(), key_check_value(&a).unwrap());
        assert_ne!(key_check_value(&a).unwrap(), key_check_value(&b).unwrap());
        assert_eq!(key_check_value(&a).unwrap().len(), 32);
    }
}
