//! ModifySnapshotAttribute and DescribeSnapshotAttribute of
//! createVolumePermission: which accounts may create volumes from a
//! snapshot, kept in the control plane's records.

use super::records::{access, set_shared_with};
use super::*;

/// ModifySnapshotAttribute createVolumePermission: add/remove accounts.
/// Refused for snapshots under an AWS managed key and for public sharing.
pub fn modify_permission(
    s: &Session,
    id: &str,
    add: &[String],
    remove: &[String],
    group_all: bool,
) -> ApiResult<Value> {
    let sid = parse_snapshot_id(id)?;
    let store = store_for(s, &s.ctx.region)?;
    let (m, _) = peek_visible(&store, s, &sid)?;
    if m.owner_id != s.ctx.caller.account {
        return Err(ApiError::new(
            "UnauthorizedOperation",
            format!(
                "You are not authorized to modify snapshot {id}: it belongs to account {}",
                m.owner_id
            ),
        ));
    }
    if group_all {
        return Err(ApiError::new(
            "OperationNotPermitted",
            format!("Encrypted snapshots cannot be made public: snapshot {id} is encrypted; share it with specific accounts (--account ID) instead"),
        ));
    }
    let md = s
        .kms_client()?
        .describe_key(&ctx_in(s, &s.ctx.region), &m.kms_key_id)?;
    if md.key_manager == "AWS" {
        return Err(ApiError::new(
            "OperationNotPermitted",
            format!("Snapshot {id} is encrypted with an AWS managed key ({}); AWS managed keys cannot be shared. Copy the snapshot under a customer managed key and share the copy.", m.kms_key_id),
        ));
    }
    let (mut m, dek) = open_verified(&store, s, &sid)?;
    if m.state != SnapshotState::Completed {
        return Err(ApiError::incorrect_state(format!(
            "Snapshot {id} is {}; only completed snapshots can be shared",
            m.state
        )));
    }
    for a in add.iter().chain(remove) {
        a.parse::<AccountId>().map_err(|_| {
            ApiError::invalid_parameter(format!("'{a}' is not a 12-digit account id"))
        })?;
    }
    let (owner, mut shared) = access(s, &sid)?.of(&m);
    for a in add {
        if let Ok(acct) = a.parse::<AccountId>() {
            shared.insert(acct);
        }
    }
    for a in remove {
        if let Ok(acct) = a.parse::<AccountId>() {
            shared.remove(&acct);
        }
    }
    // The manifest carries a copy for readers of old homes; the records
    // written last are what decides.
    m.create_volume_permissions = shared.clone();
    put(&store, &m, &manifest_mac_key(&dek))?;
    set_shared_with(s, &m, &owner, &shared)?;
    describe_attribute(s, id)
}

/// DescribeSnapshotAttribute createVolumePermission.
pub fn describe_attribute(s: &Session, id: &str) -> ApiResult<Value> {
    let sid = parse_snapshot_id(id)?;
    let store = store_for(s, &s.ctx.region)?;
    let (m, _) = peek_visible(&store, s, &sid)?;
    if m.owner_id != s.ctx.caller.account {
        return Err(ApiError::new(
            "UnauthorizedOperation",
            format!("Only the owner of snapshot {id} can describe its attributes"),
        ));
    }
    let (_, shared) = access(s, &sid)?.of(&m);
    let perms: Vec<Value> = shared
        .iter()
        .map(|a| json!({"UserId": a.as_str()}))
        .collect();
    Ok(json!({"SnapshotId": sid, "CreateVolumePermissions": perms}))
}
