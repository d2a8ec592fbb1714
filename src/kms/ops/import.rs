//! Imported key material (BYOK) of keys with Origin EXTERNAL:
//! GetParametersForImport, ImportKeyMaterial and DeleteImportedKeyMaterial,
//! and the imported-material side of RotateKeyOnDemand and ListKeyRotations.
//!
//! A GetParametersForImport response's RSA wrapping key is kept sealed under
//! the root key in `import_parameters`, found by the SHA-256 of its random
//! import token, until the token expires (24 hours) or is used.
//!
//! Every material ever imported into a key has a row in
//! `imported_key_material` (`store::ImportedRow`), kept after the material
//! is deleted or expires so that a key takes back only the same material:
//! 1. A material is recognised by its check value: HMAC-SHA256 keyed with
//!    the material over a fixed label (symmetric and HMAC keys), or the
//!    SHA-256 of the public key (RSA and ECC keys, whose PKCS#8 encodings
//!    of one key may differ). Check values are compared in constant time.
//! 2. A symmetric key's KeyMaterialId is, as in AWS, derived from the key
//!    id and the material (an HMAC keyed with the material), so it names the
//!    material without revealing it; asymmetric and HMAC keys have one
//!    material, version 1.
//! 3. Symmetric keys take new material (ImportType NEW_KEY_MATERIAL) that
//!    waits, sealed in its row, as PENDING_ROTATION until RotateKeyOnDemand
//!    makes it the next material version; at most one waits at a time.
//! 4. The key is Enabled only while every material that ever became one of
//!    its versions is imported; deleting or expiring any of them makes it
//!    PendingImport (PendingDeletion stays). Material pending rotation is
//!    not yet part of the key: deleting it changes nothing else.
//! 5. The ExpirationModel and ValidTo of an import stand until the
//!    material is deleted or expires: reimporting material that is still
//!    imported must repeat them (AWS: "to change either value, you must
//!    delete and reimport the key material").

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;

use super::asym::{required_blob, required_enum, spec_of};
use super::no_conditions;
use crate::clock::DAY;
use crate::ids::KeyId;
use crate::kms::api::Blob;
use crate::kms::asym::{self, AlgorithmSpec, KeySpec, Origin, PrivateKeyMaterial, WrappingKeySpec};
use crate::kms::model::{KeyRecord, KeyState, StateRule};
use crate::kms::op::Op;
use crate::kms::store::{self, db, ImportedRow};
use crate::kms::{ErrorCode, Kms, KmsError, KmsResult};
use crate::secret::{ct_eq, SecretBytes};
use crate::validate::{self, Constraint, Violation};

/// How long a GetParametersForImport response can be used.
pub const IMPORT_PARAMETERS_LIFETIME: i64 = DAY;
/// The latest ValidTo ImportKeyMaterial accepts, from now.
pub const MAX_VALID_TO: i64 = 365 * DAY;
const KEY_CHECK_LABEL: &[u8] = b"keyvol key check";
const MATERIAL_ID_LABEL: &[u8] = b"keyvol imported key material id v1\0";
const PUBLIC_CHECK_LABEL: &[u8] = b"keyvol public key check v1\0";
/// The most a KeyMaterialDescription may hold (botocore's model).
const MAX_MATERIAL_DESCRIPTION: usize = 256;

/// The key specs a key with Origin EXTERNAL can have (AWS outside the
/// China Regions, less the specs keyvol does not import).
pub(crate) fn importable(spec: KeySpec) -> bool {
    matches!(
        spec,
        KeySpec::SymmetricDefault
            | KeySpec::Rsa2048
            | KeySpec::Rsa3072
            | KeySpec::Rsa4096
            | KeySpec::EccNistP256
            | KeySpec::EccNistP384
            | KeySpec::EccNistP521
            | KeySpec::EccSecgP256k1
            | KeySpec::Hmac224
            | KeySpec::Hmac256
            | KeySpec::Hmac384
            | KeySpec::Hmac512
    )
}

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
    import_type: String,
    key_material_description: String,
    key_material_id: String,
});
crate::request_struct!(DeleteImportedKeyMaterialRequest {
    key_id: String,
    key_material_id: String
});

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
    if k.origin != Origin::External {
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

/// ImportKeyMaterial's ImportType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImportType {
    NewKeyMaterial,
    ExistingKeyMaterial,
}

impl ImportType {
    fn parse(s: &str) -> KmsResult<ImportType> {
        match s {
            "NEW_KEY_MATERIAL" => Ok(ImportType::NewKeyMaterial),
            "EXISTING_KEY_MATERIAL" => Ok(ImportType::ExistingKeyMaterial),
            other => Err(validate::not_one_of(
                "importType",
                other,
                &["NEW_KEY_MATERIAL", "EXISTING_KEY_MATERIAL"],
            )
            .into()),
        }
    }
}

/// A KeyMaterialId of a request: 64 lowercase hex digits.
pub(crate) fn check_material_id(id: &str) -> KmsResult<()> {
    if id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Ok(());
    }
    Err(Violation::shown(
        "keyMaterialId",
        id,
        Constraint::Other("Member must have length 64 and match pattern ^[a-f0-9]+$".into()),
    )
    .into())
}

fn check_material_description(d: &str) -> KmsResult<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c.is_whitespace() || ":/_.-".contains(c);
    if d.is_empty() || d.chars().count() > MAX_MATERIAL_DESCRIPTION || !d.chars().all(allowed) {
        return Err(Violation::shown(
            "keyMaterialDescription",
            d,
            Constraint::Other(format!(
                "Member must have length between 1 and {MAX_MATERIAL_DESCRIPTION} and match pattern ^[a-zA-Z0-9:/_\\s.-]+$"
            )),
        )
        .into());
    }
    Ok(())
}

/// The KeyMaterialId of symmetric material imported into `key`.
fn imported_material_id(key: &KeyId, material: &SecretBytes) -> KmsResult<String> {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(material.expose())
        .map_err(|e| KmsError::internal(format!("key material id: {e}")))?;
    mac.update(MATERIAL_ID_LABEL);
    mac.update(key.to_string().as_bytes());
    Ok(hex::encode(mac.finalize().into_bytes()))
}

fn pending_label(key: &KeyId, material_id: &str) -> String {
    format!("kms-pending-key-material/{key}/{material_id}")
}

/// The version the key encrypts with: the highest version of a material.
fn current_version(rows: &[ImportedRow]) -> Option<u32> {
    rows.iter().filter_map(|r| r.version).max()
}

/// DescribeKey's ValidTo and ExpirationModel are the current material's.
fn sync_key_expiration(k: &mut KeyRecord, rows: &[ImportedRow]) {
    let current = current_version(rows);
    let row = rows
        .iter()
        .find(|r| r.version.is_some() && r.version == current);
    match row {
        Some(r) if r.imported => {
            k.valid_to = r.valid_to;
            k.expiration_model = r.expiration_model.clone();
        }
        _ => {
            k.valid_to = None;
            k.expiration_model = None;
        }
    }
}

/// Deletes the bytes of imported material `row` of `k` (DeleteImportedKeyMaterial,
/// or expiry): see invariant 4 of this module. The caller writes `k` back.
pub(crate) fn forget_material(
    tx: &rusqlite::Connection,
    k: &mut KeyRecord,
    row: &ImportedRow,
) -> KmsResult<()> {
    let Some(version) = row.version else {
        store::remove_imported(tx, &k.key_id, &row.material_id)?;
        return Ok(());
    };
    store::delete_material(tx, &k.key_id, version)?;
    // The row keeps the expiration of the import that ended, for
    // ListKeyRotations.
    let mut gone = row.clone();
    gone.imported = false;
    store::put_imported(tx, &k.key_id, &gone)?;
    if k.state != KeyState::PendingDeletion {
        k.state = KeyState::PendingImport;
    }
    sync_key_expiration(k, &store::imported_materials(tx, &k.key_id)?);
    Ok(())
}

/// The GetParametersForImport table of the AWS guide: RSA private keys are
/// too long for RSAES_OAEP, and an ECC_NIST_P521 private key too long for
/// RSAES_OAEP under an RSA_2048 wrapping key.
fn check_wrapping(
    k: &KeyRecord,
    spec: KeySpec,
    alg: AlgorithmSpec,
    wrapping: WrappingKeySpec,
) -> KmsResult<()> {
    if alg.is_aes_key_wrap() {
        return Ok(());
    }
    let too_long = spec.rsa_bits().is_some()
        || (spec == KeySpec::EccNistP521 && wrapping == WrappingKeySpec::Rsa2048);
    if too_long {
        return Err(KmsError::validation(format!(
            "{alg} with a {wrapping} wrapping key cannot wrap the {spec} key material of {}: use RSA_AES_KEY_WRAP_SHA_256 or RSA_AES_KEY_WRAP_SHA_1{}.",
            k.arn(),
            if spec.rsa_bits().is_some() { "" } else { ", or an RSA_3072 or RSA_4096 wrapping key" }
        )));
    }
    Ok(())
}

fn incorrect_material(message: String) -> KmsError {
    KmsError::new(ErrorCode::IncorrectKeyMaterialException, message)
}

/// Unwrapped material, checked against the key: its check value, and the
/// parsed key of an asymmetric or HMAC key.
struct Unwrapped {
    material: SecretBytes,
    check: Vec<u8>,
    public_key: Option<Vec<u8>>,
}

fn check_material(spec: KeySpec, material: SecretBytes) -> KmsResult<Unwrapped> {
    asym::validate_import_material(spec, &material)?;
    if spec == KeySpec::SymmetricDefault || spec.is_hmac() {
        let check = key_check_value(&material)?;
        return Ok(Unwrapped {
            material,
            check,
            public_key: None,
        });
    }
    let key = PrivateKeyMaterial::load(spec, &material)?;
    let public = key.public_key_der()?.to_vec();
    let mut h = sha2::Sha256::new();
    h.update(PUBLIC_CHECK_LABEL);
    h.update(&public);
    Ok(Unwrapped {
        material,
        check: h.finalize().to_vec(),
        public_key: Some(public),
    })
}

/// The RSA wrapping key of a GetParametersForImport request, made before
/// its transaction: RSA generation is slow and must not hold the write lock.
pub(crate) fn pregenerate_wrapping_key(
    req: &GetParametersForImportRequest,
) -> Option<PrivateKeyMaterial> {
    req.wrapping_key_spec
        .as_deref()
        .and_then(|s| s.parse::<WrappingKeySpec>().ok())
        .and_then(|s| asym::generate_wrapping_key(s).ok())
}

impl Kms {
    pub(crate) fn get_parameters_for_import_body(
        &self,
        op: &mut Op<'_>,
        req: &GetParametersForImportRequest,
        pregenerated: &mut Option<PrivateKeyMaterial>,
    ) -> KmsResult<GetParametersForImportResponse> {
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
        check_wrapping(&k, spec_of(&k)?, alg, spec)?;
        let wrapping = match pregenerated.take() {
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
                    rusqlite::params![hash, k.key_id, alg.as_str(), spec.as_str(), sealed, valid_to],
                )
                .map_err(db)?;
        Ok(GetParametersForImportResponse {
            key_id: k.arn(),
            import_token: Blob(token.expose().to_vec()),
            public_key: Blob(public),
            parameters_valid_to: valid_to,
        })
    }

    /// The wrapping key of an import token, checked against the key.
    fn import_wrapping(
        &self,
        op: &Op<'_>,
        k: &KeyRecord,
        token: &[u8],
    ) -> KmsResult<(AlgorithmSpec, PrivateKeyMaterial)> {
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
            Some(p) if p.key_id == k.key_id.store_key() => p,
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
        Ok((alg, wrapping))
    }

    pub(crate) fn import_key_material_body(
        &self,
        op: &mut Op<'_>,
        req: &ImportKeyMaterialRequest,
    ) -> KmsResult<ImportKeyMaterialResponse> {
        let mut k = op.resolve(req.key_id.as_deref(), false)?;
        let token = required_blob(req.import_token.as_ref(), "importToken")?;
        let wrapped = required_blob(req.encrypted_key_material.as_ref(), "encryptedKeyMaterial")?;
        let valid_to = parse_valid_to(req.valid_to.as_ref().unwrap_or(&Value::Null))?;
        let model = expiration_model(req.expiration_model.as_deref(), valid_to)?;
        if let Some(v) = valid_to {
            if v <= op.now || v > op.now + MAX_VALID_TO {
                return Err(KmsError::validation(format!(
                        "ValidTo {} is out of range: it must be in the future and at most 365 days from now.",
                        crate::clock::to_rfc3339(v)
                    )));
            }
        }
        let import_type = req
            .import_type
            .as_deref()
            .map(ImportType::parse)
            .transpose()?;
        if let Some(d) = &req.key_material_description {
            check_material_description(d)?;
        }
        if let Some(id) = &req.key_material_id {
            check_material_id(id)?;
        }
        let mut cond = no_conditions();
        cond.insert("kms:ExpirationModel".into(), json!(model));
        if let Some(v) = valid_to {
            cond.insert("kms:ValidTo".into(), json!(v));
        }
        op.permit("kms:ImportKeyMaterial", &k, StateRule::Manage, &cond)?;
        require_external(&k)?;
        let spec = spec_of(&k)?;
        let symmetric = spec == KeySpec::SymmetricDefault;
        if !symmetric && (req.key_material_description.is_some() || req.key_material_id.is_some()) {
            return Err(KmsError::validation(format!(
                    "KeyMaterialDescription and KeyMaterialId apply only to symmetric encryption keys; {} has KeySpec {spec}: omit them.",
                    k.arn()
                )));
        }
        let rows = store::imported_materials(op.tx, &k.key_id)?;
        // A multi-Region replica takes only material its primary key
        // has (AWS does not copy imported material between Regions).
        let primary_rows = if k.is_replica() {
            let primary = super::multi_region::primary_of(op.tx, &k)?;
            Some(store::imported_materials(op.tx, &primary.key_id)?)
        } else {
            None
        };
        if primary_rows.is_some() && import_type == Some(ImportType::NewKeyMaterial) {
            return Err(KmsError::new(
                    ErrorCode::UnsupportedOperationException,
                    format!(
                        "{} is a multi-Region replica key: import new key material into its primary key in {}, then the same material into the replica with ImportType EXISTING_KEY_MATERIAL.",
                        k.arn(),
                        k.primary_region.as_ref().map(|r| r.as_str()).unwrap_or_default()
                    ),
                ));
        }
        let import_type = import_type.unwrap_or(if rows.is_empty() && primary_rows.is_none() {
            ImportType::NewKeyMaterial
        } else {
            ImportType::ExistingKeyMaterial
        });
        if import_type == ImportType::NewKeyMaterial && req.key_material_id.is_some() {
            return Err(KmsError::validation(
                    "You cannot specify a KeyMaterialId with ImportType NEW_KEY_MATERIAL: omit KeyMaterialId, or use EXISTING_KEY_MATERIAL to reimport that material.",
                ));
        }
        if import_type == ImportType::NewKeyMaterial && !symmetric && !rows.is_empty() {
            return Err(KmsError::new(
                    ErrorCode::UnsupportedOperationException,
                    format!(
                        "{} (KeySpec {spec}) already has key material: asymmetric and HMAC keys cannot take new key material after the first import; reimport the same material with EXISTING_KEY_MATERIAL.",
                        k.arn()
                    ),
                ));
        }

        let (alg, wrapping) = self.import_wrapping(op, &k, token)?;
        let material = asym::unwrap_import(&wrapping, alg, wrapped)?;
        let u = check_material(spec, material)?;
        let mut rows = rows;
        if let Some(primary_rows) = &primary_rows {
            let known = rows.iter().any(|r| ct_eq(&r.check_value, &u.check));
            let of_primary = primary_rows
                .iter()
                .find(|r| ct_eq(&r.check_value, &u.check));
            if let (false, Some(p)) = (known, of_primary) {
                // The replica learns of the primary's material; its
                // bytes arrive by this import (reimport below).
                let mut row = p.clone();
                row.imported = false;
                row.valid_to = None;
                row.expiration_model = None;
                row.pending_sealed = row.version.is_none().then(|| {
                    self.home.seal(
                        &pending_label(&k.key_id, &row.material_id),
                        u.material.expose(),
                    )
                });
                store::put_imported(op.tx, &k.key_id, &row)?;
                rows.push(row);
            }
        }
        let matching = rows.iter().find(|r| ct_eq(&r.check_value, &u.check));
        let material_id = match import_type {
            ImportType::ExistingKeyMaterial => {
                let Some(row) = matching else {
                    return Err(incorrect_material(format!(
                            "The key material is not key material that was previously imported into {}: reimport the same material, or import new material with ImportType NEW_KEY_MATERIAL.",
                            k.arn()
                        )));
                };
                if req
                    .key_material_id
                    .as_ref()
                    .is_some_and(|id| *id != row.material_id)
                {
                    return Err(incorrect_material(format!(
                            "The key material is not the key material {} of {}: give the KeyMaterialId of this material (ListKeyRotations) or omit it.",
                            req.key_material_id.as_deref().unwrap_or_default(),
                            k.arn()
                        )));
                }
                self.reimport(
                    op,
                    &k,
                    row,
                    &u,
                    model,
                    valid_to,
                    req.key_material_description.clone(),
                )?;
                row.material_id.clone()
            }
            ImportType::NewKeyMaterial => {
                if matching.is_some() {
                    return Err(incorrect_material(format!(
                            "The key material was already imported into {}: reimport it with ImportType EXISTING_KEY_MATERIAL.",
                            k.arn()
                        )));
                }
                if rows.iter().any(|r| r.version.is_none()) {
                    return Err(KmsError::invalid_state(format!(
                            "{} already has key material pending rotation: rotate to it with RotateKeyOnDemand, or delete it with DeleteImportedKeyMaterial, before importing other new material.",
                            k.arn()
                        )));
                }
                let material_id = if symmetric {
                    imported_material_id(&k.key_id, &u.material)?
                } else {
                    crate::kms::model::key_material_id(&k.key_id, 1)
                };
                let mut row = ImportedRow {
                    material_id: material_id.clone(),
                    check_value: u.check.clone(),
                    version: None,
                    description: req.key_material_description.clone(),
                    expiration_model: Some(model.to_string()),
                    valid_to,
                    imported: true,
                    pending_sealed: None,
                    created: op.now,
                    rotation_date: None,
                    rotation_type: None,
                };
                if rows.is_empty() {
                    // The first material is version 1 at once.
                    row.version = Some(1);
                    let sealed = self.seal_material(&k.key_id, 1, u.material.expose());
                    store::insert_material(op.tx, &k.key_id, 1, &sealed, op.now, None)?;
                    if let Some(public) = &u.public_key {
                        k.public_key = Some(public.clone());
                    }
                } else {
                    row.pending_sealed = Some(
                        self.home
                            .seal(&pending_label(&k.key_id, &material_id), u.material.expose()),
                    );
                }
                store::put_imported(op.tx, &k.key_id, &row)?;
                material_id
            }
        };
        op.tx
            .execute(
                "DELETE FROM import_parameters WHERE key_id = ?1",
                [k.key_id],
            )
            .map_err(db)?;
        let rows = store::imported_materials(op.tx, &k.key_id)?;
        let complete = rows
            .iter()
            .filter(|r| r.version.is_some())
            .all(|r| r.imported);
        if k.state == KeyState::PendingImport && complete {
            k.state = KeyState::Enabled;
        }
        sync_key_expiration(&mut k, &rows);
        store::update_key(op.tx, &k)?;
        Ok(ImportKeyMaterialResponse {
            key_id: k.arn(),
            key_material_id: symmetric.then_some(material_id),
        })
    }

    /// EXISTING_KEY_MATERIAL: the same material again (invariant 5).
    #[allow(clippy::too_many_arguments)]
    fn reimport(
        &self,
        op: &Op<'_>,
        k: &KeyRecord,
        row: &ImportedRow,
        u: &Unwrapped,
        model: &str,
        valid_to: Option<i64>,
        description: Option<String>,
    ) -> KmsResult<()> {
        let mut row = row.clone();
        if row.imported {
            if row.expiration_model.as_deref() != Some(model) || row.valid_to != valid_to {
                return Err(KmsError::validation(format!(
                    "The key material {} of {} is imported with ExpirationModel {}{}: the expiration of a completed import cannot change; delete the key material (DeleteImportedKeyMaterial) and import it again with the new expiration.",
                    row.material_id,
                    k.arn(),
                    row.expiration_model.as_deref().unwrap_or("KEY_MATERIAL_DOES_NOT_EXPIRE"),
                    row.valid_to
                        .map(|v| format!(" and ValidTo {}", crate::clock::to_rfc3339(v)))
                        .unwrap_or_default()
                )));
            }
        } else if let Some(version) = row.version {
            let sealed = self.seal_material(&k.key_id, version, u.material.expose());
            let created = row.rotation_date.unwrap_or(row.created);
            store::insert_material(
                op.tx,
                &k.key_id,
                version,
                &sealed,
                created,
                row.rotation_type.as_deref(),
            )?;
        }
        row.imported = true;
        row.expiration_model = Some(model.to_string());
        row.valid_to = valid_to;
        if description.is_some() {
            row.description = description;
        }
        store::put_imported(op.tx, &k.key_id, &row)
    }

    /// RotateKeyOnDemand of a symmetric key with Origin EXTERNAL (already
    /// authorized and in the Rotate state): the material pending rotation
    /// becomes the next version. Returns its version.
    pub(crate) fn rotate_to_imported(&self, op: &Op<'_>, k: &mut KeyRecord) -> KmsResult<u32> {
        let rows = store::imported_materials(op.tx, &k.key_id)?;
        let Some(mut pending) = rows.iter().find(|r| r.version.is_none()).cloned() else {
            return Err(KmsError::invalid_state(format!(
                "{} has no new key material imported for on-demand rotation: import it with ImportKeyMaterial and ImportType NEW_KEY_MATERIAL first.",
                k.arn()
            )));
        };
        let sealed = pending.pending_sealed.take().ok_or_else(|| {
            KmsError::internal(format!(
                "the pending key material of {} is missing",
                k.arn()
            ))
        })?;
        let material = self
            .home
            .unseal(&pending_label(&k.key_id, &pending.material_id), &sealed)
            .map_err(|e| KmsError::internal(e.to_string()))?;
        let version = current_version(&rows).unwrap_or(0) + 1;
        let sealed = self.seal_material(&k.key_id, version, material.expose());
        store::insert_material(
            op.tx,
            &k.key_id,
            version,
            &sealed,
            op.now,
            Some("ON_DEMAND"),
        )?;
        pending.version = Some(version);
        pending.rotation_date = Some(op.now);
        pending.rotation_type = Some("ON_DEMAND".into());
        store::put_imported(op.tx, &k.key_id, &pending)?;
        sync_key_expiration(k, &store::imported_materials(op.tx, &k.key_id)?);
        Ok(version)
    }

    pub(crate) fn delete_imported_key_material_body(
        &self,
        op: &mut Op<'_>,
        req: &DeleteImportedKeyMaterialRequest,
    ) -> KmsResult<ImportKeyMaterialResponse> {
        let mut k = op.resolve(req.key_id.as_deref(), false)?;
        if let Some(id) = &req.key_material_id {
            check_material_id(id)?;
        }
        op.permit(
            "kms:DeleteImportedKeyMaterial",
            &k,
            StateRule::Manage,
            &no_conditions(),
        )?;
        require_external(&k)?;
        let rows = store::imported_materials(op.tx, &k.key_id)?;
        let target = match &req.key_material_id {
                Some(id) => Some(rows.iter().find(|r| r.material_id == *id).ok_or_else(|| {
                    KmsError::not_found(format!(
                        "Key material {id} is not associated with {}: ListKeyRotations with IncludeKeyMaterial ALL_KEY_MATERIAL lists its key material ids.",
                        k.arn()
                    ))
                })?),
                // The current material.
                None => {
                    let current = current_version(&rows);
                    rows.iter().find(|r| r.version.is_some() && r.version == current)
                }
            };
        let deleted = match target {
            Some(row) => {
                forget_material(op.tx, &mut k, row)?;
                Some(row.material_id.clone())
            }
            None => {
                if k.state != KeyState::PendingDeletion {
                    k.state = KeyState::PendingImport;
                }
                None
            }
        };
        store::update_key(op.tx, &k)?;
        Ok(ImportKeyMaterialResponse {
            key_id: k.arn(),
            key_material_id: deleted,
        })
    }
}

/// ImportKeyMaterial's ExpirationModel with its ValidTo.
fn expiration_model(model: Option<&str>, valid_to: Option<i64>) -> KmsResult<&'static str> {
    match (model, valid_to) {
        (Some("KEY_MATERIAL_EXPIRES"), Some(_)) => Ok("KEY_MATERIAL_EXPIRES"),
        (Some("KEY_MATERIAL_EXPIRES"), None) => Err(KmsError::validation(
            "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES: give --valid-to, or use KEY_MATERIAL_DOES_NOT_EXPIRE.",
        )),
        (Some("KEY_MATERIAL_DOES_NOT_EXPIRE"), None) => Ok("KEY_MATERIAL_DOES_NOT_EXPIRE"),
        (Some("KEY_MATERIAL_DOES_NOT_EXPIRE"), Some(_)) => Err(KmsError::validation(
            "A validTo date must not be set if the ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE: omit --valid-to.",
        )),
        // AWS's default ExpirationModel is KEY_MATERIAL_EXPIRES, which needs
        // a ValidTo.
        (None, Some(_)) => Ok("KEY_MATERIAL_EXPIRES"),
        (None, None) => Err(KmsError::validation(
            "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES (the default): give --valid-to, or --expiration-model KEY_MATERIAL_DOES_NOT_EXPIRE.",
        )),
        (Some(other), _) => Err(validate::not_one_of(
            "expirationModel",
            other,
            &["KEY_MATERIAL_EXPIRES", "KEY_MATERIAL_DOES_NOT_EXPIRE"],
        )
        .into()),
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
    fn request_members_follow_the_model_constraints() {
        assert!(check_material_id(&"ab".repeat(32)).is_ok());
        for bad in ["AB".repeat(32), "ab".repeat(31), "zz".repeat(32)] {
            assert!(check_material_id(&bad).is_err(), "{bad}");
        }
        assert!(check_material_description("2025 rotation: vault/key_1.a-b").is_ok());
        assert!(check_material_description("").is_err());
        assert!(check_material_description("semi;colon").is_err());
        assert!(check_material_description(&"d".repeat(257)).is_err());
        assert_eq!(
            ImportType::parse("NEW_KEY_MATERIAL").unwrap(),
            ImportType::NewKeyMaterial
        );
        assert!(ImportType::parse("new_key_material").is_err());
    }

    #[test]
    fn material_ids_name_the_material_of_one_key() {
        let a: KeyId = "11111111-2222-3333-4444-555555555555".parse().unwrap();
        let b: KeyId = "66666666-2222-3333-4444-555555555555".parse().unwrap();
        let m = SecretBytes::from_slice(&[3; 32]);
        let n = SecretBytes::from_slice(&[4; 32]);
        let id = imported_material_id(&a, &m).unwrap();
        assert_eq!(id.len(), 64);
        assert!(check_material_id(&id).is_ok());
        assert_eq!(id, imported_material_id(&a, &m).unwrap());
        assert_ne!(id, imported_material_id(&b, &m).unwrap());
        assert_ne!(id, imported_material_id(&a, &n).unwrap());
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
