//! The KMS operations (symmetric keys, aliases, rotation, tags, policies),
//! each a typed function with AWS semantics, limits and messages.

use serde_json::{json, Map, Value};

use super::api::*;
use super::asym::{KeySpec, KeyUsage, PrivateKeyMaterial};
use super::ciphertext::{self, EncryptionContext};
use super::model::{key_material_id, AlgorithmLists, KeyRecord, KeyState, StateRule};
use super::ops_asym::dry_run;
use super::service::Op;
use super::store;
use super::{ErrorCode, Kms, KmsError, KmsResult, RequestContext};
use crate::clock::DAY;
use crate::ids::KeyId;
use crate::secret::SecretBytes;
use crate::validate::{self, Constraint, Violation};

pub const EBS_ALIAS: &str = "alias/aws/ebs";
pub const MAX_PLAINTEXT: usize = 4096;
pub const MAX_ON_DEMAND_ROTATIONS: i64 = 10;
const SYMMETRIC: &str = "SYMMETRIC_DEFAULT";

pub(crate) fn to_audit<T: serde::Serialize>(req: &T) -> Value {
    serde_json::to_value(req).unwrap_or(Value::Null)
}

pub(crate) fn no_conditions() -> Map<String, Value> {
    Map::new()
}

pub(crate) fn context_conditions(ctx: &EncryptionContext) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in ctx {
        m.insert(format!("kms:EncryptionContext:{k}"), json!(v));
    }
    m.insert(
        "kms:EncryptionContextKeys".into(),
        json!(ctx.keys().collect::<Vec<_>>()),
    );
    m
}

fn check_algorithm(alg: Option<&str>) -> KmsResult<()> {
    match alg {
        None | Some(SYMMETRIC) => Ok(()),
        Some(other) => Err(KmsError::new(
            ErrorCode::InvalidKeyUsageException,
            format!("The encryption algorithm {other} is not supported for a symmetric key: use SYMMETRIC_DEFAULT."),
        )),
    }
}

/// Refuses keys other than symmetric encryption keys for `operation`
/// (GenerateDataKey*, ReEncrypt destinations, ...).
pub(crate) fn check_symmetric_encrypt(k: &KeyRecord, operation: &str) -> KmsResult<()> {
    if k.key_usage != "ENCRYPT_DECRYPT" {
        return Err(wrong_usage(k, operation));
    }
    if !k.is_symmetric() {
        return Err(KmsError::new(
            ErrorCode::InvalidKeyUsageException,
            format!(
                "{} has KeySpec {} which is not valid for {operation}: use a symmetric encryption key (SYMMETRIC_DEFAULT).",
                k.arn(),
                k.key_spec
            ),
        ));
    }
    Ok(())
}

/// AWS's InvalidKeyUsageException for a key whose KeyUsage does not allow
/// `operation`.
pub(crate) fn wrong_usage(k: &KeyRecord, operation: &str) -> KmsError {
    KmsError::new(
        ErrorCode::InvalidKeyUsageException,
        format!(
            "{} key usage is {} which is not valid for {operation}.",
            k.arn(),
            k.key_usage
        ),
    )
}

fn new_key_record(
    op: &Op<'_>,
    spec: &str,
    usage: &str,
    origin: &str,
    manager: &str,
    policy: String,
) -> KeyRecord {
    KeyRecord {
        key_id: KeyId::generate(),
        account: op.ctx.caller.account.clone(),
        region: op.ctx.region.clone(),
        description: String::new(),
        key_spec: spec.into(),
        key_usage: usage.into(),
        origin: origin.into(),
        key_manager: manager.into(),
        state: KeyState::Enabled,
        created: op.now,
        deletion_date: None,
        pending_window: None,
        state_before_deletion: None,
        rotation_enabled: false,
        rotation_period: None,
        next_rotation: None,
        on_demand_rotations: 0,
        policy,
        valid_to: None,
        expiration_model: None,
        public_key: None,
    }
}

/// The KeyUsage of a new key of `spec`: symmetric keys default to
/// ENCRYPT_DECRYPT; every other spec needs an explicit, compatible usage.
fn validate_create_usage(spec: KeySpec, usage: Option<&str>) -> KmsResult<KeyUsage> {
    let usage = match usage {
        Some(u) => Some(u.parse::<KeyUsage>().map_err(KmsError::from)?),
        None if spec == KeySpec::SymmetricDefault => None,
        None => {
            return Err(KmsError::validation(format!(
                "KeyUsage is required for KeySpec {spec}: specify one of {} with --key-usage.",
                asym_join(spec.key_usages())
            )))
        }
    };
    spec.validate_key_usage(usage).map_err(KmsError::from)
}

fn asym_join(values: &[KeyUsage]) -> String {
    let items: Vec<&str> = values.iter().map(|u| u.as_str()).collect();
    format!("[{}]", items.join(", "))
}

/// Generates the key material of an asymmetric or HMAC CreateKey request
/// ahead of its transaction, when the request looks valid.
fn pregenerate_key(req: &CreateKeyRequest) -> Option<PrivateKeyMaterial> {
    let spec: KeySpec = req
        .key_spec
        .as_deref()
        .or(req.customer_master_key_spec.as_deref())?
        .parse()
        .ok()?;
    if spec == KeySpec::SymmetricDefault || req.origin.as_deref().is_some_and(|o| o != "AWS_KMS") {
        return None;
    }
    validate_create_usage(spec, req.key_usage.as_deref()).ok()?;
    PrivateKeyMaterial::generate(spec).ok()
}

/// Adds a new version of symmetric key material to `k`.
pub(crate) fn add_material(
    kms: &Kms,
    tx: &rusqlite::Connection,
    k: &KeyRecord,
    created: i64,
    rotation_type: &str,
) -> KmsResult<u32> {
    let next = store::material(tx, &k.key_id, None)?
        .map(|m| m.version + 1)
        .unwrap_or(1);
    let material = SecretBytes::random(32);
    let sealed = kms.seal_material(&k.key_id, next, material.expose());
    let rt = if next == 1 { None } else { Some(rotation_type) };
    store::insert_material(tx, &k.key_id, next, &sealed, created, rt)?;
    Ok(next)
}

/// Creates the account's AWS managed key for EBS with its alias.
pub(crate) fn create_aws_managed_ebs_key(op: &mut Op<'_>) -> KmsResult<KeyRecord> {
    let policy = crate::policy::aws_managed_ebs_policy(
        op.ctx.caller.account.as_str(),
        op.ctx.region.as_str(),
    );
    let mut k = new_key_record(op, SYMMETRIC, "ENCRYPT_DECRYPT", "AWS_KMS", "AWS", policy);
    k.description = "Default key that protects my EBS volumes when no other key is defined".into();
    // AWS managed keys rotate every year, always.
    k.rotation_enabled = true;
    k.rotation_period = Some(365);
    k.next_rotation = Some(op.now + 365 * DAY);
    store::insert_key(op.tx, &k)?;
    add_material(op.kms, op.tx, &k, op.now, "AUTOMATIC")?;
    op.tx
        .execute(
            "INSERT INTO aliases (account, region, name, key_id, created, updated) VALUES (?1,?2,?3,?4,?5,?5)",
            rusqlite::params![k.account.as_str(), k.region.as_str(), EBS_ALIAS, k.key_id.to_string(), op.now],
        )
        .map_err(store::db)?;
    Ok(k)
}

/// The aliases of AWS managed keys that AWS lists in every account.
const PREDEFINED_ALIASES: &[&str] = &[
    "alias/aws/acm",
    "alias/aws/dynamodb",
    "alias/aws/ebs",
    "alias/aws/elasticfilesystem",
    "alias/aws/es",
    "alias/aws/glue",
    "alias/aws/kinesisvideo",
    "alias/aws/lambda",
    "alias/aws/rds",
    "alias/aws/redshift",
    "alias/aws/s3",
    "alias/aws/secretsmanager",
    "alias/aws/ssm",
    "alias/aws/xray",
];

fn validate_tags(tags: &[Tag]) -> KmsResult<()> {
    if tags.len() > 50 {
        return Err(KmsError::new(
            ErrorCode::TagException,
            "Too many tags: a key can have at most 50 tags.",
        ));
    }
    for (i, t) in tags.iter().enumerate() {
        let member = i + 1;
        let key_field = format!("tags.{member}.member.tagKey");
        if t.tag_key.is_empty() {
            // AWS echoes the empty key.
            return Err(Violation::shown(key_field, "", Constraint::MinLength(1)).into());
        }
        validate::length(&key_field, &t.tag_key, 1, 128)?;
        validate::length(
            &format!("tags.{member}.member.tagValue"),
            &t.tag_value,
            0,
            256,
        )?;
        if tags[..i].iter().any(|o| o.tag_key == t.tag_key) {
            return Err(KmsError::new(ErrorCode::TagException, "Duplicate tag keys"));
        }
        if t.tag_key.to_ascii_lowercase().starts_with("aws:") {
            return Err(KmsError::new(
                ErrorCode::TagException,
                format!(
                    "Tag key '{}' is invalid: tag keys beginning with 'aws:' are reserved.",
                    t.tag_key
                ),
            ));
        }
    }
    Ok(())
}

fn put_tags(tx: &rusqlite::Connection, id: &KeyId, tags: &[Tag]) -> KmsResult<()> {
    for t in tags {
        tx.execute(
            "INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?1,?2,?3) ON CONFLICT(key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
            rusqlite::params![id.to_string(), t.tag_key, t.tag_value],
        )
        .map_err(store::db)?;
    }
    let n: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM tags WHERE key_id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )
        .map_err(store::db)?;
    if n > 50 {
        return Err(KmsError::new(
            ErrorCode::TagException,
            "Too many tags: a key can have at most 50 tags.",
        ));
    }
    Ok(())
}

fn validate_alias_name(name: &str) -> KmsResult<()> {
    let rest = name.strip_prefix("alias/").unwrap_or_default();
    if rest.is_empty()
        || name.len() > 256
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
    {
        return Err(validate::pattern("aliasName", name, "^alias/[a-zA-Z0-9/_-]+$").into());
    }
    if name.starts_with("alias/aws/") {
        return Err(KmsError::new(
            ErrorCode::InvalidAliasNameException,
            format!("Alias {name} must not begin with 'alias/aws/': that prefix is reserved for AWS managed keys."),
        ));
    }
    Ok(())
}

fn paginate<T>(
    items: Vec<T>,
    limit: Option<i64>,
    marker: Option<&str>,
) -> KmsResult<(Vec<T>, bool, Option<String>)> {
    let limit = limit.unwrap_or(100);
    validate::range("limit", limit, 1, 1000)?;
    let start = match marker {
        None => 0,
        Some(m) => m.parse::<usize>().map_err(|_| {
            KmsError::new(
                ErrorCode::InvalidMarkerException,
                format!("Invalid marker '{m}'"),
            )
        })?,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(limit as usize).collect();
    let end = start + page.len();
    let truncated = end < total;
    Ok((page, truncated, truncated.then(|| end.to_string())))
}

impl Kms {
    /// KeyMetadata, with the CurrentKeyMaterialId of a symmetric key that
    /// has material.
    fn metadata_of(&self, tx: &rusqlite::Connection, k: &KeyRecord) -> KmsResult<Value> {
        let mut md = k.metadata(&self.algorithms_of(k));
        if k.is_symmetric() {
            let current = if k.origin == "EXTERNAL" {
                store::imported_materials(tx, &k.key_id)?
                    .iter()
                    .filter_map(|r| r.version)
                    .max()
            } else {
                store::material(tx, &k.key_id, None)?.map(|m| m.version)
            };
            if let Some(v) = current {
                md["CurrentKeyMaterialId"] = json!(store::material_id_of(tx, k, v)?);
            }
        }
        Ok(md)
    }

    pub(crate) fn algorithms_of(&self, k: &KeyRecord) -> AlgorithmLists {
        if k.is_symmetric() {
            return AlgorithmLists::symmetric();
        }
        let (Ok(spec), Ok(usage)) = (
            k.key_spec.parse::<KeySpec>(),
            k.key_usage.parse::<KeyUsage>(),
        ) else {
            return AlgorithmLists::default();
        };
        let a = spec.algorithms(usage);
        AlgorithmLists {
            encryption: a.encryption.iter().map(ToString::to_string).collect(),
            signing: a.signing.iter().map(ToString::to_string).collect(),
            mac: a.mac.iter().map(ToString::to_string).collect(),
            key_agreement: a.key_agreement.iter().map(ToString::to_string).collect(),
        }
    }

    pub fn create_key(
        &self,
        ctx: &RequestContext,
        req: CreateKeyRequest,
    ) -> KmsResult<KeyMetadataResponse> {
        // Asymmetric and HMAC key material is generated before the
        // transaction: RSA generation is slow and must not hold the write
        // lock. The body validates the request again and uses it only then.
        let pregenerated = pregenerate_key(&req);
        self.run(ctx, "CreateKey", to_audit(&req), |op| {
            if req.key_spec.is_some() && req.customer_master_key_spec.is_some() {
                return Err(KmsError::validation(
                    "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated.",
                ));
            }
            let spec_text = req
                .key_spec
                .clone()
                .or(req.customer_master_key_spec.clone())
                .unwrap_or_else(|| SYMMETRIC.into());
            if spec_text == "SM2" {
                // AWS offers SM2 in the China Regions only.
                return Err(KmsError::validation(format!(
                    "KeySpec SM2 is not supported in {}: SM2 keys are available only in the China Regions.",
                    op.ctx.region.as_str()
                )));
            }
            let spec: KeySpec = spec_text.parse().map_err(KmsError::from)?;
            let usage = validate_create_usage(spec, req.key_usage.as_deref())?;
            let origin = req.origin.clone().unwrap_or_else(|| "AWS_KMS".into());
            match origin.as_str() {
                "AWS_KMS" => {}
                "EXTERNAL" if super::ops_import::importable(spec) => {}
                "EXTERNAL" if spec.is_ml_dsa() => {
                    // AWS KMS generates every ML-DSA key in its HSMs; it
                    // takes no imported ML-DSA key material.
                    return Err(KmsError::new(
                        ErrorCode::UnsupportedOperationException,
                        format!("Origin EXTERNAL is not supported for KeySpec {spec}: AWS KMS generates ML-DSA key material itself; create the key with Origin AWS_KMS."),
                    ))
                }
                "EXTERNAL" => {
                    return Err(KmsError::new(
                        ErrorCode::UnsupportedOperationException,
                        format!("Origin EXTERNAL is not supported for KeySpec {spec}: import symmetric (SYMMETRIC_DEFAULT), RSA, ECC_NIST, ECC_SECG_P256K1 or HMAC key material."),
                    ))
                }
                "AWS_CLOUDHSM" | "EXTERNAL_KEY_STORE" => {
                    return Err(KmsError::new(
                        ErrorCode::UnsupportedOperationException,
                        format!("Origin {origin} is not supported: custom key stores are not available; use AWS_KMS or EXTERNAL."),
                    ))
                }
                other => {
                    return Err(validate::not_one_of(
                        "origin",
                        other,
                        &["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"],
                    )
                    .into())
                }
            }
            if req.multi_region == Some(true) {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperationException,
                    "Multi-Region keys are not supported.",
                ));
            }
            let description = req.description.clone().unwrap_or_default();
            validate::length("description", &description, 0, 8192)?;
            let tags = req.tags.clone().unwrap_or_default();
            validate_tags(&tags)?;
            let mut k = new_key_record(
                op,
                spec.as_str(),
                usage.as_str(),
                &origin,
                "CUSTOMER",
                String::new(),
            );
            k.policy = match &req.policy {
                Some(p) => super::authz::validate_new_policy(
                    op,
                    p,
                    &k.arn(),
                    req.bypass_policy_lockout_safety_check.unwrap_or(false),
                )?,
                None => crate::policy::default_key_policy(op.ctx.caller.account.as_str()),
            };
            k.description = description;
            super::authz::authorize_create_key(op, &k, &tags)?;
            if origin == "EXTERNAL" {
                // No material until ImportKeyMaterial.
                k.state = KeyState::PendingImport;
                store::insert_key(op.tx, &k)?;
            } else if spec == KeySpec::SymmetricDefault {
                store::insert_key(op.tx, &k)?;
                add_material(self, op.tx, &k, op.now, "AUTOMATIC")?;
            } else {
                let material = match pregenerated {
                    Some(m) if m.spec() == spec => m,
                    _ => PrivateKeyMaterial::generate(spec).map_err(KmsError::from)?,
                };
                k.public_key = material.public_key_der().ok().map(<[u8]>::to_vec);
                store::insert_key(op.tx, &k)?;
                let sealed = self.seal_material(&k.key_id, 1, material.material().expose());
                store::insert_material(op.tx, &k.key_id, 1, &sealed, op.now, None)?;
            }
            put_tags(op.tx, &k.key_id, &tags)?;
            op.trace.key(&k);
            let md = self.metadata_of(op.tx, &k)?;
            op.trace.response_elements =
                Some(json!({"keyMetadata": {"keyId": k.key_id.to_string(), "arn": k.arn()}}));
            Ok(KeyMetadataResponse { key_metadata: md })
        })
    }

    pub fn describe_key(
        &self,
        ctx: &RequestContext,
        req: KeyIdRequest,
    ) -> KmsResult<KeyMetadataResponse> {
        self.run(ctx, "DescribeKey", to_audit(&req), |op| {
            let k = op.resolve(req.key_id.as_deref(), true)?;
            op.permit("kms:DescribeKey", &k, StateRule::Any, &no_conditions())?;
            Ok(KeyMetadataResponse {
                key_metadata: self.metadata_of(op.tx, &k)?,
            })
        })
    }

    pub fn list_keys(&self, ctx: &RequestContext, req: ListRequest) -> KmsResult<ListKeysResponse> {
        self.run(ctx, "ListKeys", to_audit(&req), |op| {
            super::authz::authorize_account_action(op, "kms:ListKeys")?;
            let keys = store::list_keys(op.tx, &op.ctx.caller.account, &op.ctx.region)?;
            let entries = keys
                .iter()
                .map(|k| ListKeysEntry {
                    key_id: k.key_id.to_string(),
                    key_arn: k.arn(),
                })
                .collect();
            let (keys, truncated, next_marker) =
                paginate(entries, req.limit, req.marker.as_deref())?;
            Ok(ListKeysResponse {
                keys,
                truncated,
                next_marker,
            })
        })
    }

    pub fn update_key_description(
        &self,
        ctx: &RequestContext,
        req: UpdateKeyDescriptionRequest,
    ) -> KmsResult<Empty> {
        self.run(ctx, "UpdateKeyDescription", to_audit(&req), |op| {
            let mut k = op.resolve(req.key_id.as_deref(), false)?;
            op.permit(
                "kms:UpdateKeyDescription",
                &k,
                StateRule::Manage,
                &no_conditions(),
            )?;
            let d = validate::required("description", &req.description)?.clone();
            validate::length("description", &d, 0, 8192)?;
            k.description = d;
            store::update_key(op.tx, &k)?;
            Ok(Empty {})
        })
    }

    pub fn enable_key(&self, ctx: &RequestContext, req: KeyIdRequest) -> KmsResult<Empty> {
        self.set_enabled(ctx, req, true)
    }

    pub fn disable_key(&self, ctx: &RequestContext, req: KeyIdRequest) -> KmsResult<Empty> {
        self.set_enabled(ctx, req, false)
    }

    fn set_enabled(
        &self,
        ctx: &RequestContext,
        req: KeyIdRequest,
        enable: bool,
    ) -> KmsResult<Empty> {
        let (name, action) = if enable {
            ("EnableKey", "kms:EnableKey")
        } else {
            ("DisableKey", "kms:DisableKey")
        };
        self.run(ctx, name, to_audit(&req), |op| {
            let mut k = op.resolve(req.key_id.as_deref(), false)?;
            op.authorize(action, &k, &no_conditions())?;
            if k.is_aws_managed() {
                return Err(access_denied_managed(op, action, &k));
            }
            k.check_state(StateRule::Manage)?;
            k.state = if enable {
                KeyState::Enabled
            } else {
                KeyState::Disabled
            };
            store::update_key(op.tx, &k)?;
            Ok(Empty {})
        })
    }

    pub fn schedule_key_deletion(
        &self,
        ctx: &RequestContext,
        req: ScheduleKeyDeletionRequest,
    ) -> KmsResult<ScheduleKeyDeletionResponse> {
        self.run(ctx, "ScheduleKeyDeletion", to_audit(&req), |op| {
            let mut k = op.resolve(req.key_id.as_deref(), false)?;
            op.authorize("kms:ScheduleKeyDeletion", &k, &no_conditions())?;
            if k.is_aws_managed() {
                return Err(access_denied_managed(op, "kms:ScheduleKeyDeletion", &k));
            }
            k.check_state(StateRule::Schedule)?;
            let days = req.pending_window_in_days.unwrap_or(30);
            validate::range("pendingWindowInDays", days, 7, 30)?;
            k.state_before_deletion = Some(k.state.as_str().into());
            k.state = KeyState::PendingDeletion;
            k.deletion_date = Some(op.now + days * DAY);
            k.pending_window = Some(days);
            store::update_key(op.tx, &k)?;
            op.trace.response_elements = Some(json!({"keyId": k.arn(), "keyState": "PendingDeletion", "deletionDate": crate::clock::to_rfc3339(op.now + days * DAY), "pendingWindowInDays": days}));
            Ok(ScheduleKeyDeletionResponse { key_id: k.arn(), deletion_date: op.now + days * DAY, key_state: "PendingDeletion".into(), pending_window_in_days: days })
        })
    }

    pub fn cancel_key_deletion(
        &self,
        ctx: &RequestContext,
        req: KeyIdRequest,
    ) -> KmsResult<KeyIdResponse> {
        self.run(ctx, "CancelKeyDeletion", to_audit(&req), |op| {
            let mut k = op.resolve(req.key_id.as_deref(), false)?;
            op.permit(
                "kms:CancelKeyDeletion",
                &k,
                StateRule::Cancel,
                &no_conditions(),
            )?;
            // AWS leaves a key whose deletion was cancelled Disabled (an
            // imported key without material goes back to PendingImport).
            k.state = if k.state_before_deletion.as_deref() == Some("PendingImport") {
                KeyState::PendingImport
            } else {
                KeyState::Disabled
            };
            k.deletion_date = None;
            k.pending_window = None;
            k.state_before_deletion = None;
            store::update_key(op.tx, &k)?;
            Ok(KeyIdResponse { key_id: k.arn() })
        })
    }

    pub fn encrypt(&self, ctx: &RequestContext, req: EncryptRequest) -> KmsResult<EncryptResponse> {
        self.run(ctx, "Encrypt", to_audit(&req), |op| {
            let k = op.resolve(req.key_id.as_deref(), true)?;
            let context = req.encryption_context.clone().unwrap_or_default();
            let pt = validate::required("plaintext", &req.plaintext)?;
            validate::count("plaintext", pt.0.len(), 1, MAX_PLAINTEXT)?;
            let mut cond = context_conditions(&context);
            cond.insert(
                "kms:EncryptionAlgorithm".into(),
                json!(req.encryption_algorithm.as_deref().unwrap_or(SYMMETRIC)),
            );
            op.permit("kms:Encrypt", &k, StateRule::Use, &cond)?;
            if k.key_spec.starts_with("RSA_") && k.key_usage == "ENCRYPT_DECRYPT" {
                return self.encrypt_asymmetric(op, &k, &req);
            }
            check_symmetric_encrypt(&k, "Encrypt")?;
            check_algorithm(req.encryption_algorithm.as_deref())?;
            dry_run(req.dry_run)?;
            let blob = self.encrypt_with(op, &k, &context, pt.0.expose())?;
            Ok(EncryptResponse {
                ciphertext_blob: Blob(blob),
                key_id: k.arn(),
                encryption_algorithm: SYMMETRIC.into(),
            })
        })
    }

    pub(crate) fn encrypt_with(
        &self,
        op: &Op<'_>,
        k: &KeyRecord,
        context: &EncryptionContext,
        pt: &[u8],
    ) -> KmsResult<Vec<u8>> {
        let m = store::material(op.tx, &k.key_id, None)?
            .ok_or_else(|| KmsError::invalid_state(format!("{} is pending import.", k.arn())))?;
        let material = self.unseal_material(&k.key_id, m.version, &m.sealed)?;
        ciphertext::seal(&k.key_id, &k.arn(), m.version, &material, context, pt)
    }

    /// Resolves the key of a ciphertext blob and checks it against the
    /// optional KeyId of the request.
    fn blob_key(&self, op: &mut Op<'_>, blob: &[u8], key_id: Option<&str>) -> KmsResult<KeyRecord> {
        let header = ciphertext::parse_header(blob)?;
        let k = match store::get_key(op.tx, &header.key_id)? {
            Some(k) if k.region == op.ctx.region => k,
            _ => return Err(KmsError::invalid_ciphertext()),
        };
        if let Some(requested) = key_id {
            let want = op.resolve(Some(requested), true)?;
            if want.key_id != k.key_id {
                return Err(KmsError::new(
                    ErrorCode::IncorrectKeyException,
                    "The key ID in the request does not identify a CMK that can perform this operation.",
                ));
            }
        }
        op.trace.key(&k);
        Ok(k)
    }

    fn decrypt_with(
        &self,
        op: &Op<'_>,
        k: &KeyRecord,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> KmsResult<SecretBytes> {
        let header = ciphertext::parse_header(blob)?;
        let m =
            store::material(op.tx, &k.key_id, Some(header.material_version))?.ok_or_else(|| {
                if k.origin == "EXTERNAL" {
                    KmsError::invalid_state(format!("{} is pending import.", k.arn()))
                } else {
                    KmsError::invalid_ciphertext()
                }
            })?;
        let material = self.unseal_material(&k.key_id, m.version, &m.sealed)?;
        ciphertext::open(blob, &k.arn(), &material, context)
    }

    pub fn decrypt(&self, ctx: &RequestContext, req: DecryptRequest) -> KmsResult<DecryptResponse> {
        self.run(ctx, "Decrypt", to_audit(&req), |op| {
            let blob = validate::required("ciphertextBlob", &req.ciphertext_blob)?;
            validate::byte_length("ciphertextBlob", &blob.0, 0, 6144)?;
            // RSA ciphertexts are raw: a request with an RSA algorithm, or
            // naming a key while the blob is not a keyvol ciphertext, is
            // for an asymmetric key.
            let raw = req.key_id.is_some() && ciphertext::parse_header(&blob.0).is_err();
            if raw
                || req
                    .encryption_algorithm
                    .as_deref()
                    .is_some_and(|a| a != SYMMETRIC)
            {
                return self.decrypt_asymmetric(op, &req);
            }
            let k = self.blob_key(op, &blob.0, req.key_id.as_deref())?;
            let context = req.encryption_context.clone().unwrap_or_default();
            let mut cond = context_conditions(&context);
            cond.insert("kms:EncryptionAlgorithm".into(), json!(SYMMETRIC));
            op.permit("kms:Decrypt", &k, StateRule::Use, &cond)?;
            check_symmetric_encrypt(&k, "Decrypt")?;
            dry_run(req.dry_run)?;
            let pt = self.decrypt_with(op, &k, &blob.0, &context)?;
            let version = ciphertext::parse_header(&blob.0)?.material_version;
            Ok(DecryptResponse {
                key_id: k.arn(),
                plaintext: SecretBlob(pt),
                encryption_algorithm: SYMMETRIC.into(),
                key_material_id: Some(store::material_id_of(op.tx, &k, version)?),
            })
        })
    }

    pub fn re_encrypt(
        &self,
        ctx: &RequestContext,
        req: ReEncryptRequest,
    ) -> KmsResult<ReEncryptResponse> {
        self.run(ctx, "ReEncrypt", to_audit(&req), |op| {
            let blob = validate::required("ciphertextBlob", &req.ciphertext_blob)?;
            let src_alg = req.source_encryption_algorithm.as_deref().unwrap_or(SYMMETRIC);
            let dst_alg = req.destination_encryption_algorithm.as_deref().unwrap_or(SYMMETRIC);
            let sctx = req.source_encryption_context.clone().unwrap_or_default();
            let dctx = req.destination_encryption_context.clone().unwrap_or_default();
            // The source: a keyvol ciphertext of a symmetric key, or raw
            // RSA-OAEP of the named asymmetric key.
            let src = if src_alg == SYMMETRIC {
                let src = self.blob_key(op, &blob.0, req.source_key_id.as_deref())?;
                op.permit("kms:ReEncryptFrom", &src, StateRule::Use, &context_conditions(&sctx))?;
                check_symmetric_encrypt(&src, "ReEncrypt")?;
                src
            } else {
                let id = req.source_key_id.as_deref().ok_or_else(|| {
                    KmsError::validation(format!(
                        "SourceKeyId is required to re-encrypt a ciphertext of SourceEncryptionAlgorithm {src_alg}: name the asymmetric KMS key that encrypted it."
                    ))
                })?;
                let src = op.resolve(Some(id), true)?;
                let mut cond = context_conditions(&sctx);
                cond.insert("kms:EncryptionAlgorithm".into(), json!(src_alg));
                op.permit("kms:ReEncryptFrom", &src, StateRule::Use, &cond)?;
                src
            };
            let dst = op.resolve(req.destination_key_id.as_deref(), true)?;
            let mut cond = context_conditions(&dctx);
            cond.insert("kms:EncryptionAlgorithm".into(), json!(dst_alg));
            op.permit("kms:ReEncryptTo", &dst, StateRule::Use, &cond)?;
            if dst.is_symmetric() {
                check_algorithm(Some(dst_alg))?;
                check_symmetric_encrypt(&dst, "ReEncrypt")?;
            } else {
                self.check_asymmetric_encrypt(&dst, dst_alg, &req.destination_encryption_context)?;
            }
            if src_alg != SYMMETRIC {
                self.check_asymmetric_encrypt(&src, src_alg, &req.source_encryption_context)?;
            }
            dry_run(req.dry_run)?;
            let pt = if src_alg == SYMMETRIC {
                self.decrypt_with(op, &src, &blob.0, &sctx)?
            } else {
                self.decrypt_raw_asymmetric(op, &src, src_alg, &blob.0)?
            };
            let out = if dst.is_symmetric() {
                self.encrypt_with(op, &dst, &dctx, pt.expose())?
            } else {
                self.encrypt_raw_asymmetric(op, &dst, dst_alg, pt.expose())?
            };
            op.trace.key(&dst);
            // Material ids exist for symmetric keys only, as in AWS.
            let material_of = |k: &KeyRecord, blob: &[u8]| {
                (k.is_symmetric())
                    .then(|| ciphertext::parse_header(blob).ok())
                    .flatten()
                    .map(|h| store::material_id_of(op.tx, k, h.material_version))
                    .transpose()
            };
            Ok(ReEncryptResponse {
                source_key_material_id: material_of(&src, &blob.0)?,
                destination_key_material_id: material_of(&dst, &out)?,
                ciphertext_blob: Blob(out),
                source_key_id: src.arn(),
                key_id: dst.arn(),
                source_encryption_algorithm: src_alg.into(),
                destination_encryption_algorithm: dst_alg.into(),
            })
        })
    }

    pub fn generate_data_key(
        &self,
        ctx: &RequestContext,
        req: GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyResponse> {
        self.generate_data_key_impl(ctx, req, true)
    }

    pub fn generate_data_key_without_plaintext(
        &self,
        ctx: &RequestContext,
        req: GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyResponse> {
        self.generate_data_key_impl(ctx, req, false)
    }

    fn generate_data_key_impl(
        &self,
        ctx: &RequestContext,
        req: GenerateDataKeyRequest,
        with_plaintext: bool,
    ) -> KmsResult<GenerateDataKeyResponse> {
        let (name, action) = if with_plaintext {
            ("GenerateDataKey", "kms:GenerateDataKey")
        } else {
            (
                "GenerateDataKeyWithoutPlaintext",
                "kms:GenerateDataKeyWithoutPlaintext",
            )
        };
        self.run(ctx, name, to_audit(&req), |op| {
            let len = match (req.number_of_bytes, req.key_spec.as_deref()) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(KmsError::validation(
                        "Please specify either number of bytes or key spec.",
                    ))
                }
                (Some(n), None) => {
                    validate::range("numberOfBytes", n, 1, 1024)?;
                    n as usize
                }
                (None, Some("AES_256")) => 32,
                (None, Some("AES_128")) => 16,
                (None, Some(other)) => {
                    return Err(
                        validate::not_one_of("keySpec", other, &["AES_256", "AES_128"]).into(),
                    )
                }
            };
            let k = op.resolve(req.key_id.as_deref(), true)?;
            let context = req.encryption_context.clone().unwrap_or_default();
            op.permit(action, &k, StateRule::Use, &context_conditions(&context))?;
            check_symmetric_encrypt(&k, name)?;
            dry_run(req.dry_run)?;
            let dk = SecretBytes::random(len);
            let blob = self.encrypt_with(op, &k, &context, dk.expose())?;
            Ok(GenerateDataKeyResponse {
                ciphertext_blob: Blob(blob),
                plaintext: with_plaintext.then_some(SecretBlob(dk)),
                key_id: k.arn(),
            })
        })
    }

    pub fn generate_random(
        &self,
        ctx: &RequestContext,
        req: GenerateRandomRequest,
    ) -> KmsResult<GenerateRandomResponse> {
        self.run(ctx, "GenerateRandom", to_audit(&req), |op| {
            super::authz::authorize_account_action(op, "kms:GenerateRandom")?;
            let n = *validate::required("numberOfBytes", &req.number_of_bytes)?;
            validate::range("numberOfBytes", n, 1, 1024)?;
            if req.custom_key_store_id.is_some() {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperationException,
                    "Custom key stores are not supported.",
                ));
            }
            Ok(GenerateRandomResponse {
                plaintext: SecretBlob(SecretBytes::random(n as usize)),
            })
        })
    }

    pub fn create_alias(&self, ctx: &RequestContext, req: AliasRequest) -> KmsResult<Empty> {
        self.run(ctx, "CreateAlias", to_audit(&req), |op| {
            let name = req.alias_name.clone().unwrap_or_default();
            validate_alias_name(&name)?;
            let k = op.resolve(req.target_key_id.as_deref(), false)?;
            if k.account != op.ctx.caller.account {
                return Err(KmsError::not_found(format!("Key '{}' does not exist", k.arn())));
            }
            super::authz::authorize_alias(op, "kms:CreateAlias", &name)?;
            op.permit("kms:CreateAlias", &k, StateRule::Manage, &no_conditions())?;
            if k.is_aws_managed() {
                return Err(access_denied_managed(op, "kms:CreateAlias", &k));
            }
            if store::alias(op.tx, &op.ctx.caller.account, &op.ctx.region, &name)?.is_some() {
                return Err(KmsError::new(ErrorCode::AlreadyExistsException, format!(
                    "An alias with the name arn:aws:kms:{}:{}:{} already exists", op.ctx.region, op.ctx.caller.account, name
                )));
            }
            op.tx
                .execute(
                    "INSERT INTO aliases (account, region, name, key_id, created, updated) VALUES (?1,?2,?3,?4,?5,?5)",
                    rusqlite::params![op.ctx.caller.account.as_str(), op.ctx.region.as_str(), name, k.key_id.to_string(), op.now],
                )
                .map_err(store::db)?;
            Ok(Empty {})
        })
    }

    pub fn update_alias(&self, ctx: &RequestContext, req: AliasRequest) -> KmsResult<Empty> {
        self.run(ctx, "UpdateAlias", to_audit(&req), |op| {
            let name = req.alias_name.clone().unwrap_or_default();
            validate_alias_name(&name)?;
            let current = store::alias(op.tx, &op.ctx.caller.account, &op.ctx.region, &name)?
                .ok_or_else(|| KmsError::not_found(format!("Alias arn:aws:kms:{}:{}:{} is not found.", op.ctx.region, op.ctx.caller.account, name)))?;
            let old = store::get_key(op.tx, &current.key_id)?.ok_or_else(|| KmsError::not_found("alias target is gone"))?;
            let new = op.resolve(req.target_key_id.as_deref(), false)?;
            super::authz::authorize_alias(op, "kms:UpdateAlias", &name)?;
            op.permit("kms:UpdateAlias", &old, StateRule::Any, &no_conditions())?;
            op.permit("kms:UpdateAlias", &new, StateRule::Manage, &no_conditions())?;
            if old.key_spec != new.key_spec || old.key_usage != new.key_usage {
                return Err(KmsError::validation(format!(
                    "Alias {name} can only point to a key of the same key spec and key usage ({} / {}).", old.key_spec, old.key_usage
                )));
            }
            op.tx
                .execute(
                    "UPDATE aliases SET key_id = ?4, updated = ?5 WHERE account = ?1 AND region = ?2 AND name = ?3",
                    rusqlite::params![op.ctx.caller.account.as_str(), op.ctx.region.as_str(), name, new.key_id.to_string(), op.now],
                )
                .map_err(store::db)?;
            Ok(Empty {})
        })
    }

    pub fn delete_alias(&self, ctx: &RequestContext, req: AliasRequest) -> KmsResult<Empty> {
        self.run(ctx, "DeleteAlias", to_audit(&req), |op| {
            let name = req.alias_name.clone().unwrap_or_default();
            if name.starts_with("alias/aws/") {
                return Err(KmsError::new(
                    ErrorCode::InvalidAliasNameException,
                    format!("Alias {name} is reserved for AWS managed keys and cannot be deleted."),
                ));
            }
            validate_alias_name(&name)?;
            let current = store::alias(op.tx, &op.ctx.caller.account, &op.ctx.region, &name)?
                .ok_or_else(|| {
                    KmsError::not_found(format!(
                        "Alias arn:aws:kms:{}:{}:{} is not found.",
                        op.ctx.region, op.ctx.caller.account, name
                    ))
                })?;
            if let Some(k) = store::get_key(op.tx, &current.key_id)? {
                op.trace.key(&k);
                super::authz::authorize_alias(op, "kms:DeleteAlias", &name)?;
                op.permit("kms:DeleteAlias", &k, StateRule::Any, &no_conditions())?;
            }
            op.tx
                .execute(
                    "DELETE FROM aliases WHERE account = ?1 AND region = ?2 AND name = ?3",
                    rusqlite::params![op.ctx.caller.account.as_str(), op.ctx.region.as_str(), name],
                )
                .map_err(store::db)?;
            Ok(Empty {})
        })
    }

    pub fn list_aliases(
        &self,
        ctx: &RequestContext,
        req: ListRequest,
    ) -> KmsResult<ListAliasesResponse> {
        self.run(ctx, "ListAliases", to_audit(&req), |op| {
            let key = match req.key_id.as_deref() {
                Some(s) => {
                    let k = op.resolve(Some(s), false)?;
                    op.permit("kms:ListAliases", &k, StateRule::Any, &no_conditions())?;
                    Some(k.key_id)
                }
                None => {
                    super::authz::authorize_account_action(op, "kms:ListAliases")?;
                    None
                }
            };
            let rows = store::aliases(op.tx, &op.ctx.caller.account, &op.ctx.region, key.as_ref())?;
            let alias_arn = |name: &str| {
                format!(
                    "arn:aws:kms:{}:{}:{name}",
                    op.ctx.region, op.ctx.caller.account
                )
            };
            // AWS lists the predefined aliases of its managed keys in every
            // account, without a target until the service first uses one.
            let predefined: Vec<AliasEntry> = if key.is_none() {
                PREDEFINED_ALIASES
                    .iter()
                    .filter(|name| !rows.iter().any(|a| a.name == **name))
                    .map(|name| AliasEntry {
                        alias_arn: alias_arn(name),
                        alias_name: (*name).to_string(),
                        target_key_id: None,
                        creation_date: None,
                        last_updated_date: None,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let mut entries: Vec<AliasEntry> = rows
                .into_iter()
                .map(|a| AliasEntry {
                    alias_arn: format!(
                        "arn:aws:kms:{}:{}:{}",
                        op.ctx.region, op.ctx.caller.account, a.name
                    ),
                    alias_name: a.name,
                    target_key_id: Some(a.key_id.to_string()),
                    creation_date: Some(a.created),
                    last_updated_date: Some(a.updated),
                })
                .collect();
            entries.extend(predefined);
            entries.sort_by(|a, b| a.alias_name.cmp(&b.alias_name));
            let (aliases, truncated, next_marker) =
                paginate(entries, req.limit, req.marker.as_deref())?;
            Ok(ListAliasesResponse {
                aliases,
                truncated,
                next_marker,
            })
        })
    }

    pub fn enable_key_rotation(
        &self,
        ctx: &RequestContext,
        req: EnableKeyRotationRequest,
    ) -> KmsResult<Empty> {
        self.run(ctx, "EnableKeyRotation", to_audit(&req), |op| {
            let mut k = op.resolve(req.key_id.as_deref(), false)?;
            let period = req.rotation_period_in_days.unwrap_or(365);
            let mut cond = no_conditions();
            cond.insert("kms:RotationPeriodInDays".into(), json!(period));
            op.authorize("kms:EnableKeyRotation", &k, &cond)?;
            if k.is_aws_managed() {
                return Err(access_denied_managed(op, "kms:EnableKeyRotation", &k));
            }
            k.check_state(StateRule::Rotate)?;
            rotation_supported(&k, false)?;
            validate::range("rotationPeriodInDays", period, 90, 2560)?;
            k.rotation_enabled = true;
            k.rotation_period = Some(period);
            k.next_rotation = Some(op.now + period * DAY);
            store::update_key(op.tx, &k)?;
            Ok(Empty {})
        })
    }

    pub fn disable_key_rotation(
        &self,
        ctx: &RequestContext,
        req: KeyIdRequest,
    ) -> KmsResult<Empty> {
        self.run(ctx, "DisableKeyRotation", to_audit(&req), |op| {
            let mut k = op.resolve(req.key_id.as_deref(), false)?;
            op.authorize("kms:DisableKeyRotation", &k, &no_conditions())?;
            if k.is_aws_managed() {
                return Err(access_denied_managed(op, "kms:DisableKeyRotation", &k));
            }
            k.check_state(StateRule::Rotate)?;
            rotation_supported(&k, false)?;
            k.rotation_enabled = false;
            k.next_rotation = None;
            store::update_key(op.tx, &k)?;
            Ok(Empty {})
        })
    }

    pub fn get_key_rotation_status(
        &self,
        ctx: &RequestContext,
        req: KeyIdRequest,
    ) -> KmsResult<KeyRotationStatusResponse> {
        self.run(ctx, "GetKeyRotationStatus", to_audit(&req), |op| {
            let k = op.resolve(req.key_id.as_deref(), false)?;
            op.permit(
                "kms:GetKeyRotationStatus",
                &k,
                StateRule::Any,
                &no_conditions(),
            )?;
            if k.state == KeyState::PendingDeletion {
                k.check_state(StateRule::Use)?;
            }
            Ok(KeyRotationStatusResponse {
                key_id: k.key_id.to_string(),
                key_rotation_enabled: k.rotation_enabled,
                rotation_period_in_days: k.rotation_enabled.then_some(k.rotation_period).flatten(),
                next_rotation_date: k.rotation_enabled.then_some(k.next_rotation).flatten(),
            })
        })
    }

    pub fn rotate_key_on_demand(
        &self,
        ctx: &RequestContext,
        req: KeyIdRequest,
    ) -> KmsResult<KeyIdResponse> {
        self.run(ctx, "RotateKeyOnDemand", to_audit(&req), |op| {
            let mut k = op.resolve(req.key_id.as_deref(), false)?;
            op.authorize("kms:RotateKeyOnDemand", &k, &no_conditions())?;
            if k.is_aws_managed() {
                return Err(access_denied_managed(op, "kms:RotateKeyOnDemand", &k));
            }
            k.check_state(StateRule::Rotate)?;
            rotation_supported(&k, true)?;
            if k.on_demand_rotations >= MAX_ON_DEMAND_ROTATIONS {
                return Err(KmsError::new(ErrorCode::LimitExceededException, format!(
                    "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: {}", k.arn()
                )));
            }
            if k.origin == "EXTERNAL" {
                // AWS: an imported key rotates on demand only onto new
                // material imported for it (PENDING_ROTATION); without that
                // the key is in the wrong state, not of the wrong kind.
                self.rotate_to_imported(op, &mut k)?;
            } else {
                add_material(self, op.tx, &k, op.now, "ON_DEMAND")?;
            }
            k.on_demand_rotations += 1;
            store::update_key(op.tx, &k)?;
            Ok(KeyIdResponse { key_id: k.arn() })
        })
    }

    pub fn list_key_rotations(
        &self,
        ctx: &RequestContext,
        req: ListKeyRotationsRequest,
    ) -> KmsResult<ListKeyRotationsResponse> {
        self.run(ctx, "ListKeyRotations", to_audit(&req), |op| {
            let k = op.resolve(req.key_id.as_deref(), false)?;
            let all = match req.include_key_material.as_deref() {
                None | Some("ROTATIONS_ONLY") => false,
                Some("ALL_KEY_MATERIAL") => true,
                Some(other) => {
                    return Err(validate::not_one_of(
                        "includeKeyMaterial",
                        other,
                        &["ALL_KEY_MATERIAL", "ROTATIONS_ONLY"],
                    )
                    .into())
                }
            };
            op.permit("kms:ListKeyRotations", &k, StateRule::Any, &no_conditions())?;
            rotation_supported(&k, true)?;
            let entries = if k.origin == "EXTERNAL" {
                imported_rotation_entries(&k, &store::imported_materials(op.tx, &k.key_id)?, all)
            } else {
                let materials = store::materials(op.tx, &k.key_id)?;
                let current = materials.iter().map(|m| m.version).max();
                materials
                    .into_iter()
                    .filter(|m| all || m.rotation_type.is_some())
                    .map(|m| RotationEntry {
                        key_material_id: key_material_id(&k.key_id, m.version),
                        key_id: k.arn(),
                        key_material_state: Some(material_state(Some(m.version), current).into()),
                        rotation_date: m.rotation_type.is_some().then_some(m.created),
                        rotation_type: m.rotation_type,
                        ..RotationEntry::default()
                    })
                    .collect()
            };
            let (rotations, truncated, next_marker) =
                paginate(entries, req.limit, req.marker.as_deref())?;
            Ok(ListKeyRotationsResponse {
                rotations,
                truncated,
                next_marker,
            })
        })
    }

    pub fn tag_resource(&self, ctx: &RequestContext, req: TagResourceRequest) -> KmsResult<Empty> {
        self.run(ctx, "TagResource", to_audit(&req), |op| {
            let k = op.resolve(req.key_id.as_deref(), false)?;
            let tags = req.tags.clone().unwrap_or_default();
            let mut cond = no_conditions();
            for t in &tags {
                cond.insert(format!("aws:RequestTag/{}", t.tag_key), json!(t.tag_value));
            }
            cond.insert(
                "aws:TagKeys".into(),
                json!(tags.iter().map(|t| &t.tag_key).collect::<Vec<_>>()),
            );
            op.authorize("kms:TagResource", &k, &cond)?;
            if k.is_aws_managed() {
                return Err(access_denied_managed(op, "kms:TagResource", &k));
            }
            k.check_state(StateRule::Manage)?;
            validate_tags(&tags)?;
            put_tags(op.tx, &k.key_id, &tags)?;
            Ok(Empty {})
        })
    }

    pub fn untag_resource(
        &self,
        ctx: &RequestContext,
        req: UntagResourceRequest,
    ) -> KmsResult<Empty> {
        self.run(ctx, "UntagResource", to_audit(&req), |op| {
            let k = op.resolve(req.key_id.as_deref(), false)?;
            let keys = req.tag_keys.clone().unwrap_or_default();
            let mut cond = no_conditions();
            cond.insert("aws:TagKeys".into(), json!(keys));
            op.authorize("kms:UntagResource", &k, &cond)?;
            if k.is_aws_managed() {
                return Err(access_denied_managed(op, "kms:UntagResource", &k));
            }
            k.check_state(StateRule::Manage)?;
            for t in keys {
                op.tx
                    .execute(
                        "DELETE FROM tags WHERE key_id = ?1 AND tag_key = ?2",
                        rusqlite::params![k.key_id.to_string(), t],
                    )
                    .map_err(store::db)?;
            }
            Ok(Empty {})
        })
    }

    pub fn list_resource_tags(
        &self,
        ctx: &RequestContext,
        req: ListRequest,
    ) -> KmsResult<ListTagsResponse> {
        self.run(ctx, "ListResourceTags", to_audit(&req), |op| {
            let k = op.resolve(req.key_id.as_deref(), false)?;
            op.permit("kms:ListResourceTags", &k, StateRule::Any, &no_conditions())?;
            let tags = store::tags(op.tx, &k.key_id)?
                .into_iter()
                .map(|(tag_key, tag_value)| Tag { tag_key, tag_value })
                .collect();
            Ok(ListTagsResponse {
                tags,
                truncated: false,
            })
        })
    }

    pub fn get_key_policy(
        &self,
        ctx: &RequestContext,
        req: KeyPolicyRequest,
    ) -> KmsResult<KeyPolicyResponse> {
        self.run(ctx, "GetKeyPolicy", to_audit(&req), |op| {
            let k = op.resolve(req.key_id.as_deref(), false)?;
            check_policy_name(req.policy_name.as_deref())?;
            op.permit("kms:GetKeyPolicy", &k, StateRule::Any, &no_conditions())?;
            Ok(KeyPolicyResponse {
                policy: k.policy.clone(),
                policy_name: "default".into(),
            })
        })
    }

    pub fn put_key_policy(&self, ctx: &RequestContext, req: KeyPolicyRequest) -> KmsResult<Empty> {
        self.run(ctx, "PutKeyPolicy", to_audit(&req), |op| {
            let mut k = op.resolve(req.key_id.as_deref(), false)?;
            check_policy_name(req.policy_name.as_deref())?;
            op.authorize("kms:PutKeyPolicy", &k, &no_conditions())?;
            if k.is_aws_managed() {
                return Err(access_denied_managed(op, "kms:PutKeyPolicy", &k));
            }
            k.check_state(StateRule::Manage)?;
            let text = validate::required("policy", &req.policy)?.clone();
            k.policy = super::authz::validate_policy_for_key(
                op,
                &text,
                &k,
                req.bypass_policy_lockout_safety_check.unwrap_or(false),
            )?;
            store::update_key(op.tx, &k)?;
            Ok(Empty {})
        })
    }

    pub fn list_key_policies(
        &self,
        ctx: &RequestContext,
        req: ListRequest,
    ) -> KmsResult<ListKeyPoliciesResponse> {
        self.run(ctx, "ListKeyPolicies", to_audit(&req), |op| {
            let k = op.resolve(req.key_id.as_deref(), false)?;
            op.permit("kms:ListKeyPolicies", &k, StateRule::Any, &no_conditions())?;
            Ok(ListKeyPoliciesResponse {
                policy_names: vec!["default".into()],
                truncated: false,
            })
        })
    }

    /// When the key behind `key_id` (a key ARN) was destroyed, if it was.
    /// The state of a key named by ARN or id (`Enabled`, `Disabled`, ...),
    /// `None` for a key that does not exist: read from the records, for
    /// volume health, without any caller's authorization.
    pub fn key_state(&self, key_arn: &str) -> KmsResult<Option<String>> {
        let id = match super::service::parse_key_ref(key_arn)? {
            super::service::KeyRef::Arn { id, .. } | super::service::KeyRef::Id(id) => id,
            _ => return Ok(None),
        };
        Ok(store::get_key(&self.conn(), &id)?.map(|k| k.state.as_str().to_string()))
    }

    pub fn key_deleted_at(&self, key_arn: &str) -> KmsResult<Option<i64>> {
        let id = match super::service::parse_key_ref(key_arn)? {
            super::service::KeyRef::Arn { id, .. } | super::service::KeyRef::Id(id) => id,
            _ => return Ok(None),
        };
        store::deleted_at(&self.conn(), &id)
    }
}

fn check_policy_name(name: Option<&str>) -> KmsResult<()> {
    match name {
        None | Some("default") => Ok(()),
        Some(other) => Err(KmsError::not_found(format!(
            "Policy name '{other}' does not exist: the only key policy name is 'default'."
        ))),
    }
}

/// Automatic rotation is for symmetric keys with AWS_KMS origin; on-demand
/// rotation (and ListKeyRotations) also for symmetric keys with imported
/// material.
fn rotation_supported(k: &KeyRecord, on_demand: bool) -> KmsResult<()> {
    let supported =
        k.is_symmetric() && (k.origin == "AWS_KMS" || (on_demand && k.origin == "EXTERNAL"));
    if supported {
        return Ok(());
    }
    let message = if on_demand {
        format!("{} does not support on-demand rotation: only symmetric encryption keys with AWS_KMS or EXTERNAL origin rotate.", k.arn())
    } else {
        format!("{} does not support automatic rotation: only symmetric encryption keys with AWS_KMS origin rotate automatically.", k.arn())
    };
    Err(KmsError::new(
        ErrorCode::UnsupportedOperationException,
        message,
    ))
}

/// RotationsListEntry's KeyMaterialState of material `version` (None:
/// imported and pending rotation) when `current` is the key's version.
fn material_state(version: Option<u32>, current: Option<u32>) -> &'static str {
    match version {
        None => "PENDING_ROTATION",
        v if v == current => "CURRENT",
        _ => "NON_CURRENT",
    }
}

/// ListKeyRotations of a symmetric key with imported material: its rotated
/// materials, and with `all` also the first one and the one pending
/// rotation.
fn imported_rotation_entries(
    k: &KeyRecord,
    rows: &[store::ImportedRow],
    all: bool,
) -> Vec<RotationEntry> {
    let current = rows.iter().filter_map(|r| r.version).max();
    rows.iter()
        .filter(|r| all || r.rotation_type.is_some())
        .map(|r| RotationEntry {
            key_id: k.arn(),
            key_material_id: r.material_id.clone(),
            key_material_description: r.description.clone(),
            import_state: Some(
                if r.imported {
                    "IMPORTED"
                } else {
                    "PENDING_IMPORT"
                }
                .into(),
            ),
            key_material_state: Some(material_state(r.version, current).into()),
            expiration_model: r.expiration_model.clone(),
            valid_to: r.valid_to,
            rotation_date: r.rotation_date,
            rotation_type: r.rotation_type.clone(),
        })
        .collect()
}

/// AWS managed keys cannot be changed by anyone, whatever their policy says.
pub(crate) fn access_denied_managed(op: &Op<'_>, action: &str, k: &KeyRecord) -> KmsError {
    KmsError::new(
        ErrorCode::AccessDeniedException,
        format!(
            "User: {} is not authorized to perform: {} on resource: {} because it is an AWS managed key",
            op.ctx.caller.principal_arn,
            action,
            k.arn()
        ),
    )
}
