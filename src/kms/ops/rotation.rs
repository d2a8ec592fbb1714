//! Key rotation: automatic and on demand, its status and the list of
//! rotations.

use super::*;

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
    super::multi_region::copy_material_to_related(tx, k, next)?;
    Ok(next)
}

/// Automatic rotation is for symmetric keys with AWS_KMS origin; on-demand
/// rotation (and ListKeyRotations) also for symmetric keys with imported
/// material.
pub(super) fn rotation_supported(k: &KeyRecord, on_demand: bool) -> KmsResult<()> {
    let supported = k.is_symmetric()
        && (k.origin == Origin::AwsKms || (on_demand && k.origin == Origin::External));
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
pub(super) fn material_state(version: Option<u32>, current: Option<u32>) -> &'static str {
    match version {
        None => "PENDING_ROTATION",
        v if v == current => "CURRENT",
        _ => "NON_CURRENT",
    }
}

/// ListKeyRotations of a symmetric key with imported material: its rotated
/// materials, and with `all` also the first one and the one pending
/// rotation.
pub(super) fn imported_rotation_entries(
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

impl Kms {
    pub(crate) fn enable_key_rotation_body(
        &self,
        op: &mut Op<'_>,
        req: &EnableKeyRotationRequest,
    ) -> KmsResult<Empty> {
        let mut k = op.resolve(req.key_id.as_deref(), false)?;
        let period = req.rotation_period_in_days.unwrap_or(365);
        let mut cond = no_conditions();
        cond.insert("kms:RotationPeriodInDays".into(), json!(period));
        op.authorize("kms:EnableKeyRotation", &k, &cond)?;
        if k.is_aws_managed() {
            return Err(access_denied_managed(op, "kms:EnableKeyRotation", &k));
        }
        super::multi_region::refuse_on_replica(&k, "EnableKeyRotation")?;
        k.check_state(StateRule::Rotate)?;
        rotation_supported(&k, false)?;
        validate::range("rotationPeriodInDays", period, 90, 2560)?;
        k.rotation_enabled = true;
        k.rotation_period = Some(period);
        k.next_rotation = Some(op.now + period * DAY);
        store::update_key(op.tx, &k)?;
        Ok(Empty {})
    }

    pub(crate) fn disable_key_rotation_body(
        &self,
        op: &mut Op<'_>,
        req: &KeyIdRequest,
    ) -> KmsResult<Empty> {
        let mut k = op.resolve(req.key_id.as_deref(), false)?;
        op.authorize("kms:DisableKeyRotation", &k, &no_conditions())?;
        if k.is_aws_managed() {
            return Err(access_denied_managed(op, "kms:DisableKeyRotation", &k));
        }
        super::multi_region::refuse_on_replica(&k, "DisableKeyRotation")?;
        k.check_state(StateRule::Rotate)?;
        rotation_supported(&k, false)?;
        k.rotation_enabled = false;
        k.next_rotation = None;
        store::update_key(op.tx, &k)?;
        Ok(Empty {})
    }

    pub(crate) fn get_key_rotation_status_body(
        &self,
        op: &mut Op<'_>,
        req: &KeyIdRequest,
    ) -> KmsResult<KeyRotationStatusResponse> {
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
        // Invariant 3 of multi_region: a replica rotates with its primary.
        let schedule = super::multi_region::primary_of(op.tx, &k)?;
        Ok(KeyRotationStatusResponse {
            key_id: k.key_id.to_string(),
            key_rotation_enabled: schedule.rotation_enabled,
            rotation_period_in_days: schedule
                .rotation_enabled
                .then_some(schedule.rotation_period)
                .flatten(),
            next_rotation_date: schedule
                .rotation_enabled
                .then_some(schedule.next_rotation)
                .flatten(),
        })
    }

    pub(crate) fn rotate_key_on_demand_body(
        &self,
        op: &mut Op<'_>,
        req: &KeyIdRequest,
    ) -> KmsResult<KeyIdResponse> {
        let mut k = op.resolve(req.key_id.as_deref(), false)?;
        op.authorize("kms:RotateKeyOnDemand", &k, &no_conditions())?;
        if k.is_aws_managed() {
            return Err(access_denied_managed(op, "kms:RotateKeyOnDemand", &k));
        }
        super::multi_region::refuse_on_replica(&k, "RotateKeyOnDemand")?;
        k.check_state(StateRule::Rotate)?;
        rotation_supported(&k, true)?;
        if k.on_demand_rotations >= MAX_ON_DEMAND_ROTATIONS {
            return Err(KmsError::new(ErrorCode::LimitExceededException, format!(
                    "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: {}", k.arn()
                )));
        }
        if k.origin == Origin::External {
            // AWS: an imported key rotates on demand only onto new
            // material imported for it (PENDING_ROTATION); without that
            // the key is in the wrong state, not of the wrong kind.
            // Related multi-Region keys rotate together, so each
            // replica must hold that material too.
            let mut replicas: Vec<KeyRecord> = store::related_keys(op.tx, &k.key_id)?
                .into_iter()
                .filter(|r| r.key_id != k.key_id)
                .collect();
            let pending = store::imported_materials(op.tx, &k.key_id)?
                .into_iter()
                .find(|r| r.version.is_none());
            for r in &replicas {
                let ready = pending.as_ref().is_some_and(|p| {
                    store::imported_materials(op.tx, &r.key_id).is_ok_and(|rows| {
                        rows.iter().any(|x| {
                            x.version.is_none()
                                && x.material_id == p.material_id
                                && x.pending_sealed.is_some()
                        })
                    })
                });
                if pending.is_some() && !ready {
                    return Err(KmsError::invalid_state(format!(
                            "The replica key {} has not imported the new key material of {}: import the same material into it with ImportType EXISTING_KEY_MATERIAL before RotateKeyOnDemand.",
                            r.arn(),
                            k.arn()
                        )));
                }
            }
            self.rotate_to_imported(op, &mut k)?;
            for r in &mut replicas {
                self.rotate_to_imported(op, r)?;
                store::update_key(op.tx, r)?;
            }
        } else {
            add_material(self, op.tx, &k, op.now, "ON_DEMAND")?;
        }
        k.on_demand_rotations += 1;
        store::update_key(op.tx, &k)?;
        Ok(KeyIdResponse { key_id: k.arn() })
    }

    pub(crate) fn list_key_rotations_body(
        &self,
        op: &mut Op<'_>,
        req: &ListKeyRotationsRequest,
    ) -> KmsResult<ListKeyRotationsResponse> {
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
        let entries = if k.origin == Origin::External {
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
    }
}
