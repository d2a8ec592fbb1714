//! Multi-Region keys: ReplicateKey, UpdatePrimaryRegion, the
//! MultiRegionConfiguration of DescribeKey, and the shared properties that
//! related keys keep in step (key material, rotation).
//!
//! Related keys share their id (`mrk-...`), key spec, usage, origin, key
//! material and automatic rotation; each has its own policy, grants,
//! aliases, tags, description and key state. All of them live in this one
//! store, one record per region (`KeyId::store_key`). Invariants:
//! 1. Exactly one related key is the primary: every related record's
//!    `primary_region` names the same region, and that region has a record.
//! 2. Material is added to the primary only (rotation, on demand or
//!    automatic) and copied to every replica in the same transaction, so a
//!    blob sealed in one region opens in every other.
//! 3. Only the primary's record carries the rotation schedule; replicas
//!    report the primary's (GetKeyRotationStatus).

use serde::{Deserialize, Serialize};

use super::*;
use crate::ids::Region;

crate::request_struct!(ReplicateKeyRequest {
    key_id: String,
    replica_region: String,
    policy: String,
    bypass_policy_lockout_safety_check: bool,
    description: String,
    tags: Vec<Tag>,
});

crate::request_struct!(UpdatePrimaryRegionRequest {
    key_id: String,
    primary_region: String,
});

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicateKeyResponse {
    pub replica_key_metadata: Value,
    pub replica_policy: String,
    pub replica_tags: Vec<Tag>,
}

/// UnsupportedOperationException for a key that is not what `operation`
/// needs (`what`: "a multi-Region key", "a multi-Region primary key").
fn unsupported(k: &KeyRecord, operation: &str, what: &str) -> KmsError {
    KmsError::new(
        ErrorCode::UnsupportedOperationException,
        format!(
            "{} is not {what}: {operation} works on {what} only.",
            k.arn()
        ),
    )
}

/// Refuses a change of a shared property on a replica key: it is made on
/// the primary key, which keeps its replicas in step.
pub(crate) fn refuse_on_replica(k: &KeyRecord, operation: &str) -> KmsResult<()> {
    if !k.is_replica() {
        return Ok(());
    }
    Err(KmsError::new(
        ErrorCode::UnsupportedOperationException,
        format!(
            "{} is a multi-Region replica key: {operation} changes a property that related multi-Region keys share; call it on the primary key in {}.",
            k.arn(),
            k.primary_region.as_ref().map(Region::as_str).unwrap_or_default()
        ),
    ))
}

/// The primary key of multi-Region key `k` (`k` itself when it is it).
pub(crate) fn primary_of(tx: &rusqlite::Connection, k: &KeyRecord) -> KmsResult<KeyRecord> {
    if !k.is_replica() {
        return Ok(k.clone());
    }
    let region = k
        .primary_region
        .as_ref()
        .ok_or_else(|| KmsError::internal("a replica key without a primary region"))?;
    let id = k
        .key_id
        .in_region(region)
        .ok_or_else(|| KmsError::internal("a primary key in an unknown region"))?;
    store::get_key(tx, &id)?
        .ok_or_else(|| KmsError::internal(format!("the primary key of {} is missing", k.arn())))
}

/// Copies material version `version` of multi-Region key `k` to every
/// related key (invariant 2). The sealed bytes are the same: the sealing
/// label names the public key id, which related keys share.
pub(crate) fn copy_material_to_related(
    tx: &rusqlite::Connection,
    k: &KeyRecord,
    version: u32,
) -> KmsResult<()> {
    if !k.key_id.is_multi_region() {
        return Ok(());
    }
    let Some(m) = store::material(tx, &k.key_id, Some(version))? else {
        return Ok(());
    };
    for other in store::related_keys(tx, &k.key_id)? {
        if other.key_id == k.key_id || store::material(tx, &other.key_id, Some(version))?.is_some()
        {
            continue;
        }
        store::insert_material(
            tx,
            &other.key_id,
            version,
            &m.sealed,
            m.created,
            m.rotation_type.as_deref(),
        )?;
    }
    Ok(())
}

/// DescribeKey's MultiRegionConfiguration of `k`.
pub(crate) fn configuration(tx: &rusqlite::Connection, k: &KeyRecord) -> KmsResult<Option<Value>> {
    let Some(kind) = k.multi_region_key_type() else {
        return Ok(None);
    };
    let related = store::related_keys(tx, &k.key_id)?;
    let entry = |r: &KeyRecord| json!({"Arn": r.arn(), "Region": r.region});
    let primary = related.iter().find(|r| r.is_primary());
    let replicas: Vec<Value> = related
        .iter()
        .filter(|r| !r.is_primary())
        .map(entry)
        .collect();
    let mut v = json!({"MultiRegionKeyType": kind, "ReplicaKeys": replicas});
    if let Some(p) = primary {
        v["PrimaryKey"] = entry(p);
    }
    Ok(Some(v))
}

/// After the record of replica `gone` was destroyed: a primary waiting for
/// its replicas' deletion (PendingReplicaDeletion) whose last replica this
/// was starts its own waiting period.
pub(crate) fn after_replica_destroyed(
    tx: &rusqlite::Connection,
    gone: &KeyRecord,
    now: i64,
) -> KmsResult<()> {
    if !gone.key_id.is_multi_region() {
        return Ok(());
    }
    let related = store::related_keys(tx, &gone.key_id)?;
    if let [only] = related.as_slice() {
        if only.state == KeyState::PendingReplicaDeletion {
            let mut p = only.clone();
            let days = p.pending_window.unwrap_or(30);
            p.state = KeyState::PendingDeletion;
            p.deletion_date = Some(now + days * DAY);
            store::update_key(tx, &p)?;
        }
    }
    Ok(())
}

fn parse_region(member: &str, value: &Option<String>) -> KmsResult<Region> {
    let v = validate::required(member, value)?;
    validate::length(member, v, 1, 32)?;
    v.parse::<Region>().map_err(|_| {
        KmsError::validation(format!(
            "{v} is not a valid AWS Region for {member}: name a Region of the partition, such as us-west-2."
        ))
    })
}

impl Kms {
    pub(crate) fn replicate_key_body(
        &self,
        op: &mut Op<'_>,
        req: &ReplicateKeyRequest,
    ) -> KmsResult<ReplicateKeyResponse> {
        let k = op.resolve(req.key_id.as_deref(), false)?;
        let region = parse_region("replicaRegion", &req.replica_region)?;
        let mut cond = no_conditions();
        cond.insert("kms:ReplicaRegion".into(), json!(region.as_str()));
        op.authorize("kms:ReplicateKey", &k, &cond)?;
        if !k.key_id.is_multi_region() {
            return Err(unsupported(&k, "ReplicateKey", "a multi-Region key"));
        }
        if !k.is_primary() {
            return Err(unsupported(
                &k,
                "ReplicateKey",
                "a multi-Region primary key",
            ));
        }
        k.check_state(StateRule::Manage)?;
        if region == k.region {
            return Err(KmsError::validation(format!(
                    "{} is already in {region}: a replica key is created in another Region than its primary key.",
                    k.arn()
                )));
        }
        let id = k
            .key_id
            .in_region(&region)
            .ok_or_else(|| KmsError::internal("a replica in an unknown region"))?;
        if store::get_key(op.tx, &id)?.is_some() {
            return Err(KmsError::new(
                ErrorCode::AlreadyExistsException,
                format!(
                    "{} already has a replica key in {region}: {}",
                    k.arn(),
                    id.arn(&region, &k.account)
                ),
            ));
        }
        let description = req.description.clone().unwrap_or_default();
        validate::length("description", &description, 0, 8192)?;
        let tags = req.tags.clone().unwrap_or_default();
        validate_tags(&tags)?;
        let mut replica = KeyRecord {
            key_id: id,
            region: region.clone(),
            description,
            state: if k.origin == Origin::External {
                KeyState::PendingImport
            } else {
                KeyState::Enabled
            },
            created: op.now,
            deletion_date: None,
            pending_window: None,
            state_before_deletion: None,
            // Invariant 3: the schedule is the primary's.
            rotation_enabled: false,
            rotation_period: None,
            next_rotation: None,
            on_demand_rotations: 0,
            valid_to: None,
            expiration_model: None,
            policy: String::new(),
            ..k.clone()
        };
        replica.policy = match &req.policy {
            Some(p) => crate::kms::authz::validate_new_policy(
                op,
                p,
                &replica.arn(),
                req.bypass_policy_lockout_safety_check.unwrap_or(false),
            )?,
            None => crate::policy::default_key_policy(k.account.as_str()),
        };
        // The replica is a new key in its Region: CreateKey there (and
        // TagResource for its tags) are the caller's own permissions.
        let mut create =
            crate::policy::ConditionContext::new().with("aws:RequestedRegion", region.as_str());
        create.insert("kms:MultiRegion", true);
        crate::kms::authz::authorize_create_key_with(op, &replica, &tags, create)?;
        store::insert_key(op.tx, &replica)?;
        if k.origin == Origin::External {
            // The replica knows which materials it may take (the
            // primary's); it gets their bytes only by import.
            for mut row in store::imported_materials(op.tx, &k.key_id)? {
                if row.version.is_none() {
                    continue;
                }
                row.imported = false;
                row.pending_sealed = None;
                row.valid_to = None;
                row.expiration_model = None;
                store::put_imported(op.tx, &replica.key_id, &row)?;
            }
        }
        if k.origin != Origin::External {
            for m in store::materials(op.tx, &k.key_id)? {
                store::insert_material(
                    op.tx,
                    &replica.key_id,
                    m.version,
                    &m.sealed,
                    m.created,
                    m.rotation_type.as_deref(),
                )?;
            }
        }
        put_tags(op.tx, &replica.key_id, &tags)?;
        self.record_service_event(
            op.tx,
            &replica,
            "ReplicateKey",
            op.now,
            json!({"primaryKeyArn": k.arn(), "replicaRegion": region.as_str()}),
        )?;
        Ok(ReplicateKeyResponse {
            replica_key_metadata: self.metadata_of(op.tx, &replica)?,
            replica_policy: replica.policy.clone(),
            replica_tags: tags,
        })
    }

    pub(crate) fn update_primary_region_body(
        &self,
        op: &mut Op<'_>,
        req: &UpdatePrimaryRegionRequest,
    ) -> KmsResult<Empty> {
        let k = op.resolve(req.key_id.as_deref(), false)?;
        let region = parse_region("primaryRegion", &req.primary_region)?;
        let mut cond = no_conditions();
        cond.insert("kms:PrimaryRegion".into(), json!(region.as_str()));
        op.authorize("kms:UpdatePrimaryRegion", &k, &cond)?;
        if !k.key_id.is_multi_region() {
            return Err(unsupported(&k, "UpdatePrimaryRegion", "a multi-Region key"));
        }
        if !k.is_primary() {
            return Err(unsupported(
                &k,
                "UpdatePrimaryRegion",
                "a multi-Region primary key",
            ));
        }
        k.check_state(StateRule::Manage)?;
        if region == k.region {
            return Err(KmsError::validation(format!(
                    "{} is already the primary key in {region}: name the Region of one of its replica keys.",
                    k.arn()
                )));
        }
        let replica_id = k
            .key_id
            .in_region(&region)
            .ok_or_else(|| KmsError::internal("a replica in an unknown region"))?;
        let Some(replica) = store::get_key(op.tx, &replica_id)? else {
            return Err(KmsError::not_found(format!(
                "{} has no replica key in {region}: replicate it there first (ReplicateKey).",
                k.arn()
            )));
        };
        // The new primary's permission too, in its own Region.
        op.authorize("kms:UpdatePrimaryRegion", &replica, &cond)?;
        replica.check_state(StateRule::Manage)?;
        for mut r in store::related_keys(op.tx, &k.key_id)? {
            r.primary_region = Some(region.clone());
            if r.key_id == replica.key_id {
                // Invariant 3: the schedule moves to the new primary.
                r.rotation_enabled = k.rotation_enabled;
                r.rotation_period = k.rotation_period;
                r.next_rotation = k.next_rotation;
                r.on_demand_rotations = k.on_demand_rotations;
            } else if r.key_id == k.key_id {
                r.rotation_enabled = false;
                r.rotation_period = None;
                r.next_rotation = None;
            }
            store::update_key(op.tx, &r)?;
        }
        Ok(Empty {})
    }
}
