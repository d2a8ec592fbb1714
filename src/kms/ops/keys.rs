//! Creating, describing, listing, enabling and deleting keys.

use super::*;

pub(super) fn new_key_record(
    op: &Op<'_>,
    spec: KeySpec,
    usage: KeyUsage,
    origin: Origin,
    manager: KeyManager,
    policy: String,
) -> KeyRecord {
    KeyRecord {
        key_id: KeyId::generate(),
        account: op.ctx.caller.account.clone(),
        region: op.ctx.region.clone(),
        description: String::new(),
        key_spec: spec,
        key_usage: usage,
        origin,
        key_manager: manager,
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
        primary_region: None,
    }
}

/// The KeyUsage of a new key of `spec`: symmetric keys default to
/// ENCRYPT_DECRYPT; every other spec needs an explicit, compatible usage.
pub(super) fn validate_create_usage(spec: KeySpec, usage: Option<&str>) -> KmsResult<KeyUsage> {
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

pub(super) fn asym_join(values: &[KeyUsage]) -> String {
    let items: Vec<&str> = values.iter().map(|u| u.as_str()).collect();
    format!("[{}]", items.join(", "))
}

/// Generates the key material of an asymmetric or HMAC CreateKey request
/// ahead of its transaction, when the request looks valid.
pub(crate) fn pregenerate_key(req: &CreateKeyRequest) -> Option<PrivateKeyMaterial> {
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

/// Creates the account's AWS managed key for EBS with its alias.
pub(crate) fn create_aws_managed_ebs_key(kms: &Kms, op: &mut Op<'_>) -> KmsResult<KeyRecord> {
    let policy = crate::policy::aws_managed_ebs_policy(
        op.ctx.caller.account.as_str(),
        op.ctx.region.as_str(),
    );
    let mut k = new_key_record(
        op,
        KeySpec::SymmetricDefault,
        KeyUsage::EncryptDecrypt,
        Origin::AwsKms,
        KeyManager::Aws,
        policy,
    );
    k.description = "Default key that protects my EBS volumes when no other key is defined".into();
    // AWS managed keys rotate every year, always.
    k.rotation_enabled = true;
    k.rotation_period = Some(365);
    k.next_rotation = Some(op.now + 365 * DAY);
    store::insert_key(op.tx, &k)?;
    add_material(kms, op.tx, &k, op.now, "AUTOMATIC")?;
    op.tx
        .execute(
            "INSERT INTO aliases (account, region, name, key_id, created, updated) VALUES (?1,?2,?3,?4,?5,?5)",
            rusqlite::params![k.account.as_str(), k.region.as_str(), EBS_ALIAS, k.key_id, op.now],
        )
        .map_err(store::db)?;
    Ok(k)
}

impl Kms {
    /// KeyMetadata, with the CurrentKeyMaterialId of a symmetric key that
    /// has material.
    pub(super) fn metadata_of(&self, tx: &rusqlite::Connection, k: &KeyRecord) -> KmsResult<Value> {
        let mut md = k.metadata(&self.algorithms_of(k));
        if let Some(c) = super::multi_region::configuration(tx, k)? {
            md["MultiRegionConfiguration"] = c;
        }
        if k.is_symmetric() {
            let current = if k.origin == Origin::External {
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
        let a = k.key_spec.algorithms(k.key_usage);
        AlgorithmLists {
            encryption: a.encryption.iter().map(ToString::to_string).collect(),
            signing: a.signing.iter().map(ToString::to_string).collect(),
            mac: a.mac.iter().map(ToString::to_string).collect(),
            key_agreement: a.key_agreement.iter().map(ToString::to_string).collect(),
        }
    }

    /// CreateKey; asymmetric and HMAC key material comes made before the
    /// transaction (`pregenerate_key`): RSA generation is slow and must not
    /// hold the write lock. The body validates the request again and uses
    /// the material only then.
    pub(crate) fn create_key_body(
        &self,
        op: &mut Op<'_>,
        req: &CreateKeyRequest,
        pregenerated: &mut Option<PrivateKeyMaterial>,
    ) -> KmsResult<KeyMetadataResponse> {
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
        let origin_text = req.origin.clone().unwrap_or_else(|| "AWS_KMS".into());
        let origin = match origin_text.as_str() {
                "AWS_KMS" => Origin::AwsKms,
                "EXTERNAL" if super::import::importable(spec) => Origin::External,
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
                        format!("Origin {origin_text} is not supported: custom key stores are not available; use AWS_KMS or EXTERNAL."),
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
            };
        let description = req.description.clone().unwrap_or_default();
        validate::length("description", &description, 0, 8192)?;
        let tags = req.tags.clone().unwrap_or_default();
        validate_tags(&tags)?;
        let mut k = new_key_record(op, spec, usage, origin, KeyManager::Customer, String::new());
        if req.multi_region == Some(true) {
            k.key_id = KeyId::generate_multi_region(&op.ctx.region)
                .ok_or_else(|| KmsError::internal("a key in an unknown region"))?;
            k.primary_region = Some(op.ctx.region.clone());
        }
        k.policy = match &req.policy {
            Some(p) => crate::kms::authz::validate_new_policy(
                op,
                p,
                &k.arn(),
                req.bypass_policy_lockout_safety_check.unwrap_or(false),
            )?,
            None => crate::policy::default_key_policy(op.ctx.caller.account.as_str()),
        };
        k.description = description;
        crate::kms::authz::authorize_create_key(op, &k, &tags)?;
        if origin == Origin::External {
            // No material until ImportKeyMaterial.
            k.state = KeyState::PendingImport;
            store::insert_key(op.tx, &k)?;
        } else if spec == KeySpec::SymmetricDefault {
            store::insert_key(op.tx, &k)?;
            add_material(self, op.tx, &k, op.now, "AUTOMATIC")?;
        } else {
            let material = match pregenerated.take() {
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
    }

    pub(crate) fn describe_key_body(
        &self,
        op: &mut Op<'_>,
        req: &KeyIdRequest,
    ) -> KmsResult<KeyMetadataResponse> {
        let k = op.resolve(req.key_id.as_deref(), true)?;
        op.permit("kms:DescribeKey", &k, StateRule::Any, &no_conditions())?;
        Ok(KeyMetadataResponse {
            key_metadata: self.metadata_of(op.tx, &k)?,
        })
    }

    pub(crate) fn list_keys_body(
        &self,
        op: &mut Op<'_>,
        req: &ListRequest,
    ) -> KmsResult<ListKeysResponse> {
        crate::kms::authz::authorize_account_action(op, "kms:ListKeys")?;
        let keys = store::list_keys(op.tx, &op.ctx.caller.account, &op.ctx.region)?;
        let entries = keys
            .iter()
            .map(|k| ListKeysEntry {
                key_id: k.key_id.to_string(),
                key_arn: k.arn(),
            })
            .collect();
        let (keys, truncated, next_marker) = paginate(entries, req.limit, req.marker.as_deref())?;
        Ok(ListKeysResponse {
            keys,
            truncated,
            next_marker,
        })
    }

    pub(crate) fn update_key_description_body(
        &self,
        op: &mut Op<'_>,
        req: &UpdateKeyDescriptionRequest,
    ) -> KmsResult<Empty> {
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
    }

    pub(crate) fn enable_key_body(&self, op: &mut Op<'_>, req: &KeyIdRequest) -> KmsResult<Empty> {
        self.set_enabled(op, req, true)
    }

    pub(crate) fn disable_key_body(&self, op: &mut Op<'_>, req: &KeyIdRequest) -> KmsResult<Empty> {
        self.set_enabled(op, req, false)
    }

    pub(super) fn set_enabled(
        &self,
        op: &mut Op<'_>,
        req: &KeyIdRequest,
        enable: bool,
    ) -> KmsResult<Empty> {
        let action = if enable {
            "kms:EnableKey"
        } else {
            "kms:DisableKey"
        };
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
    }

    pub(crate) fn schedule_key_deletion_body(
        &self,
        op: &mut Op<'_>,
        req: &ScheduleKeyDeletionRequest,
    ) -> KmsResult<ScheduleKeyDeletionResponse> {
        let mut k = op.resolve(req.key_id.as_deref(), false)?;
        op.authorize("kms:ScheduleKeyDeletion", &k, &no_conditions())?;
        if k.is_aws_managed() {
            return Err(access_denied_managed(op, "kms:ScheduleKeyDeletion", &k));
        }
        k.check_state(StateRule::Schedule)?;
        let days = req.pending_window_in_days.unwrap_or(30);
        validate::range("pendingWindowInDays", days, 7, 30)?;
        // A multi-Region primary key outlives its replicas: it waits
        // (PendingReplicaDeletion) and its window starts after them.
        let waits_for_replicas = k.is_primary() && store::related_keys(op.tx, &k.key_id)?.len() > 1;
        k.state_before_deletion = Some(k.state.as_str().into());
        let deletion_date = (!waits_for_replicas).then_some(op.now + days * DAY);
        k.state = if waits_for_replicas {
            KeyState::PendingReplicaDeletion
        } else {
            KeyState::PendingDeletion
        };
        k.deletion_date = deletion_date;
        k.pending_window = Some(days);
        store::update_key(op.tx, &k)?;
        let mut elements =
            json!({"keyId": k.arn(), "keyState": k.state.as_str(), "pendingWindowInDays": days});
        if let Some(d) = deletion_date {
            elements["deletionDate"] = json!(crate::clock::to_rfc3339(d));
        }
        op.trace.response_elements = Some(elements);
        Ok(ScheduleKeyDeletionResponse {
            key_id: k.arn(),
            deletion_date,
            key_state: k.state.as_str().into(),
            pending_window_in_days: days,
        })
    }

    pub(crate) fn cancel_key_deletion_body(
        &self,
        op: &mut Op<'_>,
        req: &KeyIdRequest,
    ) -> KmsResult<KeyIdResponse> {
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
    }

    /// When the key behind `key_id` (a key ARN) was destroyed, if it was.
    /// The state of a key named by ARN or id (`Enabled`, `Disabled`, ...),
    /// `None` for a key that does not exist: read from the records, for
    /// volume health, without any caller's authorization.
    pub fn key_state(&self, key_arn: &str) -> KmsResult<Option<String>> {
        let id =
            match crate::kms::op::parse_key_ref(key_arn, &crate::ids::Region::default_region())? {
                crate::kms::op::KeyRef::Arn { id, .. } | crate::kms::op::KeyRef::Id(id) => id,
                _ => return Ok(None),
            };
        Ok(store::get_key(&self.conn(), &id)?.map(|k| k.state.as_str().to_string()))
    }

    pub fn key_deleted_at(&self, key_arn: &str) -> KmsResult<Option<i64>> {
        let id =
            match crate::kms::op::parse_key_ref(key_arn, &crate::ids::Region::default_region())? {
                crate::kms::op::KeyRef::Arn { id, .. } | crate::kms::op::KeyRef::Id(id) => id,
                _ => return Ok(None),
            };
        store::deleted_at(&self.conn(), &id)
    }
}
