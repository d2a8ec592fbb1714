//! Volume hosts on other machines, as the control plane sees them: each
//! registered volume host identity is an EC2 instance of its account in
//! every region ([`remote_instance_id`]); the attachments AttachVolume
//! made to those instances, each with the identity of the AttachVolume
//! caller; where a volume's data lives once a remote host attached it;
//! and the keyvol extension `KeyvolReleaseVolumeKey` (see the `server`
//! module docs) that hands a host the data key of a volume attached to
//! it.
//!
//! What must hold: a data key leaves the control plane only for a volume
//! that an authorized AttachVolume attached to the signer's own instance,
//! only over TLS or loopback, and only unwrapped by the control plane
//! itself acting as that AttachVolume caller via EC2. DetachVolume removes
//! the attachment row, and with it that right.

use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::api_error::{ApiError, ApiResult};
use crate::clock::to_rfc3339;
use crate::request::RequestContext;
use crate::secret::VolumeDataKey;
use crate::session::Session;
use crate::volume::service::{host_instance_id, unwrap_data_key};

use super::{Call, Params};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS ec2_remote_attachments (
    volume_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    host_principal TEXT NOT NULL,
    device TEXT NOT NULL,
    state TEXT NOT NULL,
    attached INTEGER NOT NULL,
    attacher TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ec2_volume_data_hosts (
    volume_id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ec2_forced_detaches (
    volume_id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    at INTEGER NOT NULL
);
"#;

/// The instance id of volume host `principal_arn` of `account` in
/// `region`: `i-` and the first 17 hex digits of SHA-256 over the three,
/// stable for as long as the registration lasts.
pub fn remote_instance_id(account: &str, region: &str, principal_arn: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!(
        "keyvol remote volume host\0{account}\0{region}\0{principal_arn}"
    ));
    format!("i-{}", &hex::encode(d)[..17])
}

/// An instance of the caller: the control plane's own machine, or a
/// registered volume host on another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instance {
    Local(String),
    Remote { id: String, host: String },
}

impl Instance {
    pub fn id(&self) -> &str {
        match self {
            Instance::Local(id) | Instance::Remote { id, .. } => id,
        }
    }
}

/// The instances of the caller's account in the call's region: the
/// control plane's own host first, then each registered volume host.
pub(crate) fn instances(c: &Call<'_>) -> ApiResult<Vec<Instance>> {
    let mut out = vec![Instance::Local(host_instance_id(c.account(), c.region()))];
    let hosts =
        c.s.iam
            .list_volume_hosts(&c.s.ctx.caller.account)
            .map_err(|e| ApiError::internal(format!("the volume host registry: {}", e.message)))?;
    for host in hosts {
        out.push(Instance::Remote {
            id: remote_instance_id(c.account(), c.region(), &host),
            host,
        });
    }
    Ok(out)
}

/// `InstanceId` as EC2 checks it: `i-` and 8 or 17 hex digits, naming an
/// instance of the caller in the call's region.
pub(crate) fn resolve_instance(c: &Call<'_>, id: &str) -> ApiResult<Instance> {
    let hex = id.strip_prefix("i-").unwrap_or("");
    let well_formed = matches!(hex.len(), 8 | 17)
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(ApiError::new(
            "InvalidInstanceID.Malformed",
            format!(
                "Invalid id: \"{}\" (expecting \"i-...\")",
                id.chars().take(32).collect::<String>()
            ),
        ));
    }
    let all = instances(c)?;
    all.iter().find(|i| i.id() == id).cloned().ok_or_else(|| {
        ApiError::new(
            "InvalidInstanceID.NotFound",
            format!(
                "The instance ID '{id}' does not exist: the instances of this account in {} are the control plane's host {} and its registered volume hosts (keyvol iam list-volume-hosts)",
                c.region(),
                host_instance_id(c.account(), c.region())
            ),
        )
    })
}

/// An attachment of a volume to a volume host on another machine.
#[derive(Debug, Clone)]
pub struct RemoteAttachment {
    pub volume_id: String,
    pub instance_id: String,
    pub host_principal: String,
    pub device: String,
    /// `attaching` until the host obtained the data key, then `attached`.
    pub state: String,
    pub attached: i64,
    /// [`RequestContext::to_handoff`] of the AttachVolume caller.
    attacher: String,
}

impl RemoteAttachment {
    /// The EC2 `attachmentSet` item.
    pub fn to_json(&self) -> Value {
        json!({
            "volumeId": self.volume_id, "instanceId": self.instance_id, "device": self.device,
            "status": self.state, "attachTime": to_rfc3339(self.attached), "deleteOnTermination": false,
        })
    }
}

fn db_err(e: rusqlite::Error) -> ApiError {
    ApiError::internal(format!("state database: {e}"))
}

/// The remote attachments and data locations of the session's home.
pub struct RemoteAttachments {
    conn: crate::home::PooledConnection,
}

impl RemoteAttachments {
    pub fn open(s: &Session) -> ApiResult<RemoteAttachments> {
        let conn = s
            .home
            .connect_pooled()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        s.home
            .ensure_schema(&conn, "ec2-remote-attachments", SCHEMA)
            .map_err(db_err)?;
        Ok(RemoteAttachments { conn })
    }

    /// The remote attachment of `vol`, if any.
    pub fn get(&self, vol: &str) -> ApiResult<Option<RemoteAttachment>> {
        self.conn
            .query_row(
                "SELECT volume_id, instance_id, host_principal, device, state, attached, attacher \
                 FROM ec2_remote_attachments WHERE volume_id = ?1",
                [vol],
                |r| {
                    Ok(RemoteAttachment {
                        volume_id: r.get(0)?,
                        instance_id: r.get(1)?,
                        host_principal: r.get(2)?,
                        device: r.get(3)?,
                        state: r.get(4)?,
                        attached: r.get(5)?,
                        attacher: r.get(6)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)
    }

    /// The volumes attached to `instance` and their device names.
    pub fn on_instance(&self, instance: &str) -> ApiResult<Vec<(String, String)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT volume_id, device FROM ec2_remote_attachments WHERE instance_id = ?1 ORDER BY attached, volume_id",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map([instance], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(db_err)?;
        Ok(rows)
    }

    /// Records AttachVolume of `vol` to `instance` by the session's caller
    /// (`attaching`), and that the volume's data lives on that host now.
    fn insert(
        &self,
        s: &Session,
        vol: &str,
        instance: &str,
        host: &str,
        device: &str,
        at: i64,
    ) -> ApiResult<()> {
        let tx = self.conn.unchecked_transaction().map_err(db_err)?;
        tx.execute(
            "INSERT INTO ec2_remote_attachments (volume_id, account, region, instance_id, host_principal, device, state, attached, attacher) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'attaching', ?7, ?8)",
            params![vol, s.ctx.caller.account.as_str(), s.ctx.region.as_str(), instance, host, device, at, s.ctx.to_handoff()],
        )
        .map_err(db_err)?;
        tx.execute(
            "INSERT OR REPLACE INTO ec2_volume_data_hosts (volume_id, instance_id) VALUES (?1, ?2)",
            params![vol, instance],
        )
        .map_err(db_err)?;
        // A forced detach is about the attachment before this one.
        tx.execute(
            "DELETE FROM ec2_forced_detaches WHERE volume_id = ?1",
            [vol],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// Records that DetachVolume of `vol` from `instance` was forced: the
    /// host's daemon, told at its next poll, undoes the mounts and loop
    /// devices on the device before it stops.
    fn mark_forced(&self, vol: &str, instance: &str, at: i64) -> ApiResult<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO ec2_forced_detaches (volume_id, instance_id, at) VALUES (?1, ?2, ?3)",
                params![vol, instance, at],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Was the last DetachVolume of `vol` from `instance` forced?
    fn forced(&self, vol: &str, instance: &str) -> ApiResult<bool> {
        self.conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM ec2_forced_detaches WHERE volume_id = ?1 AND instance_id = ?2",
                [vol, instance],
                |r| r.get(0),
            )
            .map_err(db_err)
    }

    fn mark_attached(&self, vol: &str) -> ApiResult<()> {
        self.conn
            .execute(
                "UPDATE ec2_remote_attachments SET state = 'attached' WHERE volume_id = ?1",
                [vol],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Forgets the remote attachment of `vol` (and the right to its key).
    fn forget(&self, vol: &str) -> ApiResult<()> {
        self.conn
            .execute(
                "DELETE FROM ec2_remote_attachments WHERE volume_id = ?1",
                [vol],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// The instance of the volume host whose machine holds the data of
    /// `vol`, when a host on another machine attached it; `None` when
    /// the data is in the control plane's home.
    pub fn data_host(&self, vol: &str) -> ApiResult<Option<String>> {
        self.conn
            .query_row(
                "SELECT instance_id FROM ec2_volume_data_hosts WHERE volume_id = ?1",
                [vol],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)
    }

    /// Records that the data of `vol` is on the machine of `instance`.
    fn set_data_host(&self, vol: &str, instance: &str) -> ApiResult<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO ec2_volume_data_hosts (volume_id, instance_id) VALUES (?1, ?2)",
                params![vol, instance],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Forgets where the data of `vol` is.
    fn forget_data_host(&self, vol: &str) -> ApiResult<()> {
        self.conn
            .execute(
                "DELETE FROM ec2_volume_data_hosts WHERE volume_id = ?1",
                [vol],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Forgets everything about `vol` (DeleteVolume).
    pub fn forget_volume(&self, vol: &str) -> ApiResult<()> {
        for sql in [
            "DELETE FROM ec2_remote_attachments WHERE volume_id = ?1",
            "DELETE FROM ec2_volume_data_hosts WHERE volume_id = ?1",
            "DELETE FROM ec2_forced_detaches WHERE volume_id = ?1",
        ] {
            self.conn.execute(sql, [vol]).map_err(db_err)?;
        }
        Ok(())
    }
}

/// The refusal of an operation that needs the volume's data in the
/// control plane's home when a host on another machine holds it.
pub(crate) fn data_elsewhere(vol: &str, instance: &str, what: &str) -> ApiError {
    ApiError::incorrect_state(format!(
        "The data of volume '{vol}' is on volume host {instance}, which the control plane cannot read: {what}"
    ))
}

/// The instance of the volume host on another machine that holds the data
/// of `vol` (attached there, or last attached there); `None` when the data
/// is in the control plane's home.
pub fn data_instance(s: &Session, vol: &str) -> ApiResult<Option<String>> {
    let remote = RemoteAttachments::open(s)?;
    match remote.get(vol)? {
        Some(a) => Ok(Some(a.instance_id)),
        None => remote.data_host(vol),
    }
}

/// The instance whose machine holds the data of `r`: a volume host on
/// another machine ([`data_instance`]), else the control plane's own once
/// it made the backing file; `None` while no machine used the volume (all
/// zeros, or what its snapshot holds).
pub(crate) fn data_holder(
    s: &Session,
    vols: &crate::volume::service::Volumes<'_>,
    r: &crate::volume::service::VolumeRecord,
) -> ApiResult<Option<String>> {
    match data_instance(s, r.volume_id.as_str())? {
        Some(i) => Ok(Some(i)),
        None => Ok(vols
            .backing_made(r)?
            .then(|| host_instance_id(&r.account, &r.region))),
    }
}

/// Refuses a snapshot of `vol` when its data is on a volume host on
/// another machine (attached there, or last attached there): the control
/// plane would snapshot an empty or stale copy.
pub fn check_data_here(s: &Session, vol: &str) -> ApiResult<()> {
    match data_instance(s, vol)? {
        Some(i) => Err(data_elsewhere(
            vol,
            &i,
            "a snapshot would not capture it while it is detached there; attach it on that host (keyvol volume attach), which then takes the snapshot for the control plane",
        )),
        None => Ok(()),
    }
}

/// The control plane's own keyvol CLI commands on a volume attached to a
/// host on another machine (or whose data is there): what AttachVolume,
/// DetachVolume and DeleteVolume refuse, the CLI refuses
/// alike ([`super::gate`] calls this once the command is authorized).
pub(crate) fn guard_local_command(s: &Session, action: &str, vol: &str) -> ApiResult<()> {
    let remote = RemoteAttachments::open(s)?;
    if let Some(a) = remote.get(vol)? {
        let i = &a.instance_id;
        return match action {
            "ec2:AttachVolume" => Err(ApiError::new(
                "VolumeInUse",
                format!("{vol} is already attached to an instance ({i})"),
            )),
            "ec2:DeleteVolume" => Err(ApiError::new(
                "VolumeInUse",
                format!("Volume {vol} is currently attached to {i}: detach it first"),
            )),
            // `keyvol volume detach` of such a volume is the control
            // plane's DetachVolume (the CLI calls it instead of this
            // gate); an attachment made while the command ran lands here.
            "ec2:DetachVolume" => Err(ApiError::incorrect_state(format!(
                "Volume '{vol}' was attached to volume host {i} while this command ran: run keyvol volume detach {vol} again (DetachVolume)"
            ))),
            _ => Ok(()),
        };
    }
    if action == "ec2:AttachVolume" {
        if let Some(i) = remote.data_host(vol)? {
            return Err(data_elsewhere(
                vol,
                &i,
                "attach it to that host (or to another volume host that has its backing file), not to the control plane's own",
            ));
        }
    }
    Ok(())
}

/// Adds the remote attachment of the volume `v` describes (the keyvol
/// CLI's shape) to it: `State` `in-use` and its `Attachments`.
pub fn show_remote_attachment(s: &Session, v: &mut Value) -> ApiResult<()> {
    let Some(id) = v["VolumeId"].as_str() else {
        return Ok(());
    };
    if let Some(a) = RemoteAttachments::open(s)?.get(id)? {
        v["State"] = json!("in-use");
        v["Attachments"] = json!([{
            "VolumeId": a.volume_id, "InstanceId": a.instance_id, "Device": a.device,
            "State": a.state, "AttachTime": to_rfc3339(a.attached), "DeleteOnTermination": false,
        }]);
    }
    Ok(())
}

/// AttachVolume to a volume host on another machine: recorded as
/// `attaching`, with the caller's identity for the key release; nothing
/// starts here. The host's attach daemon then calls
/// `KeyvolReleaseVolumeKey`.
pub(crate) fn attach_remote(
    c: &Call<'_>,
    vol: &str,
    instance: &str,
    host: &str,
    device: &str,
) -> ApiResult<Value> {
    let remote = RemoteAttachments::open(c.s)?;
    // Held by another host, that host's writes would be missing from this
    // one's copy. (Data in the control plane's own home moves to a host
    // that imports it, as before.)
    if let Some(holder) = data_instance(c.s, vol)? {
        if holder != instance {
            return Err(data_elsewhere(
                vol,
                &holder,
                &format!("attach it there, or move its backing file to the host of {instance} with keyvol volume import there first"),
            ));
        }
    }
    if remote
        .on_instance(instance)?
        .iter()
        .any(|(v, d)| d == device && v != vol)
    {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid value '{device}' for unixDevice. Attachment point {device} is already in use"
        )));
    }
    let now = c.s.kms.clock().now();
    remote.insert(c.s, vol, instance, host, device, now)?;
    Ok(json!({
        "attachTime": to_rfc3339(now), "device": device, "instanceId": instance,
        "status": "attaching", "volumeId": vol, "deleteOnTermination": false,
    }))
}

/// DetachVolume of a volume attached to a host on another machine: the
/// attachment, and the right to the data key, are forgotten. The host's
/// daemon learns it from its long poll ([`DESCRIBE_HOST_REQUESTS`]) and
/// stops, refusing while its device is in use; with `Force=true` it first
/// undoes the mounts and loop devices on the device, as the host's own
/// `volume detach --force` does (`keyvol volume detach` on the host stops
/// the daemon first, then calls this).
pub(crate) fn detach_remote(c: &Call<'_>, a: &RemoteAttachment) -> ApiResult<Value> {
    if let Some(d) = c.p.get("Device") {
        if d != a.device {
            return Err(ApiError::new(
                "InvalidAttachment.NotFound",
                format!(
                    "The volume {} is not attached at {}: its attachment is {}",
                    a.volume_id,
                    d.chars().take(64).collect::<String>(),
                    a.device
                ),
            ));
        }
    }
    let remote = RemoteAttachments::open(c.s)?;
    remote.forget(&a.volume_id)?;
    if c.p.bool("Force")?.unwrap_or(false) {
        remote.mark_forced(&a.volume_id, &a.instance_id, c.s.kms.clock().now())?;
    }
    // The daemon that was sending a snapshot of it stops: that snapshot
    // cannot complete.
    crate::snapshot::ops::host::end_for_volume(
        c.s,
        &a.volume_id,
        &format!(
            "The volume was detached from volume host {} before the host had sent the snapshot",
            a.instance_id
        ),
    )?;
    let mut out = a.to_json();
    out["status"] = json!("detaching");
    Ok(out)
}

/// DetachVolume with `Force=true` of a volume no longer attached whose
/// data is on the host of `instance` (an earlier DetachVolume the host's
/// daemon refused while its device was in use): the daemon is told to
/// force its stop, as EC2 forces a detachment that did not end cleanly.
pub(crate) fn force_detached(c: &Call<'_>, vol: &str, instance: &str) -> ApiResult<Value> {
    RemoteAttachments::open(c.s)?.mark_forced(vol, instance, c.s.kms.clock().now())?;
    Ok(json!({
        "attachTime": to_rfc3339(c.s.kms.clock().now()), "instanceId": instance,
        "status": "detaching", "volumeId": vol, "deleteOnTermination": false,
    }))
}

/// The answer of `KeyvolReleaseVolumeKey`: the volume's plaintext data key.
pub struct ReleasedKey {
    pub volume_id: String,
    pub instance_id: String,
    pub kms_key_id: String,
    pub key: VolumeDataKey,
}

impl std::fmt::Debug for ReleasedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleasedKey")
            .field("volume_id", &self.volume_id)
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

/// The XML response of `KeyvolReleaseVolumeKey`, in a zeroizing buffer:
/// the one place the key is encoded for the wire.
pub fn release_response(k: &ReleasedKey, request_id: &str) -> Zeroizing<String> {
    // Sized once, so that no reallocation leaves a copy of the key behind.
    let size =
        512 + request_id.len() + 8 * (k.volume_id.len() + k.instance_id.len() + k.kms_key_id.len());
    let mut out = Zeroizing::new(String::with_capacity(size));
    let b64 = Zeroizing::new(crate::kms::api::b64_encode(k.key.expose()));
    out.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<KeyvolReleaseVolumeKeyResponse xmlns=\"",
    );
    out.push_str(super::xml::NAMESPACE);
    out.push_str("\"><requestId>");
    super::xml::escape(request_id, &mut out);
    out.push_str("</requestId><volumeId>");
    super::xml::escape(&k.volume_id, &mut out);
    out.push_str("</volumeId><instanceId>");
    super::xml::escape(&k.instance_id, &mut out);
    out.push_str("</instanceId><kmsKeyId>");
    super::xml::escape(&k.kms_key_id, &mut out);
    out.push_str("</kmsKeyId><dataKey>");
    out.push_str(&b64);
    out.push_str("</dataKey></KeyvolReleaseVolumeKeyResponse>");
    out
}

fn unauthorized(message: String) -> ApiError {
    ApiError::new("UnauthorizedOperation", message)
}

/// `KeyvolReleaseVolumeKey` for the session's caller: the checks of the
/// module docs, then the key, unwrapped as the AttachVolume caller. One
/// `ec2.amazonaws.com` event is recorded, allowed or refused, without
/// the key.
pub fn release_volume_key(s: &Session, p: &Params, secure: bool) -> ApiResult<ReleasedKey> {
    let result = release(s, p, secure);
    let response = match &result {
        Ok(k) => {
            json!({"volumeId": k.volume_id, "instanceId": k.instance_id, "status": "attached"})
        }
        Err(_) => Value::Null,
    };
    let audited = result.as_ref().map(|_| response).map_err(Clone::clone);
    if let Err(e) = super::audit(
        s,
        "ec2.amazonaws.com",
        crate::server::control_plane::RELEASE_VOLUME_KEY,
        p,
        &audited,
        false,
    ) {
        return Err(ApiError::internal(format!(
            "the key release was not made: its audit record could not be written: {}",
            e.message
        )));
    }
    result
}

fn release(s: &Session, p: &Params, secure: bool) -> ApiResult<ReleasedKey> {
    let action = crate::server::control_plane::RELEASE_VOLUME_KEY;
    if !secure {
        return Err(unauthorized(format!(
            "{action} is answered only over TLS or from loopback, and this request came over plain HTTP from {}: serve the control plane with keyvol serve --tls-cert CERT --tls-key KEY and point the host at its https:// endpoint",
            s.ctx.source_ip.as_deref().unwrap_or("another machine")
        )));
    }
    let caller = &s.ctx.caller;
    let vol = p.required("VolumeId")?;
    let own = calling_host(s, action, p.required("InstanceId")?)?;
    let vols = crate::volume::service::Volumes::open(s)?;
    let r = vols.get(vol)?;
    let remote = RemoteAttachments::open(s)?;
    let attachment = remote
        .get(r.volume_id.as_str())?
        .filter(|a| a.instance_id == own && a.host_principal == caller.principal_arn)
        .ok_or_else(|| {
            ApiError::incorrect_state(format!(
                "Volume '{}' is not attached to instance {own}: attach it there first (AttachVolume, or keyvol volume attach on the host)",
                r.volume_id
            ))
        })?;
    let attacher = RequestContext::from_handoff(&attachment.attacher).ok_or_else(|| {
        ApiError::internal(format!(
            "the attachment record of {} names no caller: detach and attach the volume again",
            r.volume_id
        ))
    })?;
    // The key is unwrapped as the AttachVolume caller, through EC2: the
    // KMS authorizes that caller and audits it, invoked by EC2.
    let key = unwrap_data_key(
        &s.for_caller(attacher),
        &r.kms_key_arn,
        &r.encrypted_data_key,
        r.volume_id.as_str(),
    )?;
    remote.mark_attached(r.volume_id.as_str())?;
    // A key released again is a new attach daemon (one restarted after a
    // crash): the cuts the last one made went with it. Best effort: the
    // volume's use matters more, and the upload's timeout ends them too.
    if let Err(e) = crate::snapshot::ops::host::end_cut_for_volume(
        s,
        r.volume_id.as_str(),
        &format!(
            "The attach daemon of the volume on volume host {own} restarted before it had sent the snapshot: take a new one"
        ),
    ) {
        tracing::warn!(volume = %r.volume_id, "ending the snapshots the last daemon cut: {}", e.message);
    }
    Ok(ReleasedKey {
        volume_id: r.volume_id.to_string(),
        instance_id: own,
        kms_key_id: r.kms_key_arn.clone(),
        key,
    })
}

/// The keyvol extension with which a volume host asks what it is to do
/// for volumes attached to it: the snapshots to take
/// ([`crate::snapshot::ops::host`]), and the size to grow a device to.
pub const DESCRIBE_HOST_REQUESTS: &str = "KeyvolDescribeHostRequests";
/// The keyvol extension with which a volume host reports a snapshot's cut
/// (`Status=cut`) or its failure (`Status=failed`, `Message`).
pub const REPORT_HOST_SNAPSHOT: &str = "KeyvolReportHostSnapshot";
/// The keyvol extension with which a volume host says that a volume it
/// restored has all its data (`VolumeId`): the control plane's own
/// hydration record of it goes, so its snapshot can be deleted.
pub const REPORT_HOST_HYDRATED: &str = "KeyvolReportHostHydrated";
/// The keyvol extension with which a volume host says that it holds the
/// data of a volume (`VolumeId`): its copy of a volume it created or
/// restored, or took up; with `Import=true` a backing file moved to it
/// from where the data was (`volume import`); with `Release=true` it gives
/// up a claim whose copy it could not make.
pub const CLAIM_VOLUME_DATA: &str = "KeyvolClaimVolumeData";
/// The longest `WaitSeconds` of [`DESCRIBE_HOST_REQUESTS`].
pub const MAX_HOST_WAIT_SECS: u64 = 10;

/// The keyvol extensions answered by [`super::call`] besides EC2's own
/// actions (none carries a secret; the key release has its own path).
pub(crate) fn extension(action: &str) -> Option<fn(&Call<'_>) -> ApiResult<Value>> {
    match action {
        DESCRIBE_HOST_REQUESTS => Some(describe_host_requests),
        REPORT_HOST_SNAPSHOT => Some(report_host_snapshot),
        REPORT_HOST_HYDRATED => Some(report_host_hydrated),
        CLAIM_VOLUME_DATA => Some(claim_volume_data),
        _ => None,
    }
}

/// The instance of the registered volume host calling `action`, which must
/// be the `InstanceId` it names.
fn calling_host(s: &Session, action: &str, instance: &str) -> ApiResult<String> {
    let caller = &s.ctx.caller;
    if !s.iam.is_volume_host(caller) {
        return Err(unauthorized(format!(
            "{} is not a registered volume host: only a volume host (keyvol iam register-volume-host) may call {action}, for a volume attached to it",
            caller.principal_arn
        )));
    }
    let own = remote_instance_id(
        caller.account.as_str(),
        s.ctx.region.as_str(),
        &caller.principal_arn,
    );
    if instance != own {
        return Err(unauthorized(format!(
            "{} is the volume host of instance {own}, not of {}: a host acts only for its own instance",
            caller.principal_arn,
            instance.chars().take(32).collect::<String>()
        )));
    }
    Ok(own)
}

/// `KeyvolDescribeHostRequests` (`InstanceId`, optional `VolumeId`,
/// `SizeInBytes` of that volume on the host, `WaitSeconds`): the snapshots
/// waiting for this host's cut, as `snapshotSet` items (`snapshotId`,
/// `volumeId`, `parentSnapshotId`, `volumeSize` in bytes); for a
/// `VolumeId` attached to this instance its size at the control plane
/// (`volumeSet`: `volumeId`, `sizeInBytes`); for a `VolumeId` whose data
/// is on this host but which is no longer attached to it, `detachSet`
/// (`volumeId`, `force`: whether the DetachVolume was forced). A long poll
/// answers at once when a snapshot waits, that size exceeds
/// `SizeInBytes`, or the volume was detached.
fn describe_host_requests(c: &Call<'_>) -> ApiResult<Value> {
    let own = calling_host(c.s, DESCRIBE_HOST_REQUESTS, c.p.required("InstanceId")?)?;
    let wanted = c.p.get("VolumeId");
    let wait = match c.p.get("WaitSeconds") {
        None => 0,
        Some(w) => w
            .parse::<u64>()
            .ok()
            .filter(|w| *w <= MAX_HOST_WAIT_SECS)
            .ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "WaitSeconds must be a whole number from 0 to {MAX_HOST_WAIT_SECS}"
                ))
            })?,
    };
    // A long poll: answered as soon as a request is waiting, else after
    // WaitSeconds (so an idle host costs one call, and one audit record,
    // per WaitSeconds).
    let host_size = match c.p.get("SizeInBytes") {
        None => None,
        Some(n) => Some(n.parse::<u64>().map_err(|_| {
            ApiError::invalid_parameter("SizeInBytes must be a whole number of bytes")
        })?),
    };
    // The size the control plane records of VolumeId, while it is attached
    // to this instance (ModifyVolume grows it; the host then grows its
    // device online).
    let recorded_size = |v: &str| -> ApiResult<Option<u64>> {
        let attached = RemoteAttachments::open(c.s)?.get(v)?.is_some_and(|a| {
            a.instance_id == own && a.host_principal == c.s.ctx.caller.principal_arn
        });
        if !attached {
            return Ok(None);
        }
        Ok(Some(
            crate::volume::service::Volumes::open(c.s)?.get(v)?.size,
        ))
    };
    // Is VolumeId, whose data is on this host, no longer attached to it
    // (DetachVolume made anywhere)? `Some(forced)` then: the host's daemon
    // is to stop.
    let detached = |v: &str| -> ApiResult<Option<bool>> {
        let remote = RemoteAttachments::open(c.s)?;
        let attached = remote.get(v)?.is_some_and(|a| {
            a.instance_id == own && a.host_principal == c.s.ctx.caller.principal_arn
        });
        if attached || remote.data_host(v)?.as_deref() != Some(own.as_str()) {
            return Ok(None);
        }
        Ok(Some(remote.forced(v, &own)?))
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    let (found, size, gone) = loop {
        let found: Vec<_> =
            crate::snapshot::ops::host::requests_for(c.s, &own, &c.s.ctx.caller.principal_arn)?
                .into_iter()
                .filter(|r| wanted.is_none_or(|v| v == r.volume_id))
                .collect();
        let size = match wanted {
            Some(v) => recorded_size(v)?,
            None => None,
        };
        let grown = matches!((size, host_size), (Some(now), Some(had)) if now > had);
        let gone = match wanted {
            Some(v) => detached(v)?,
            None => None,
        };
        if !found.is_empty() || grown || gone.is_some() || std::time::Instant::now() >= until {
            break (found, size, gone);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let volumes: Vec<Value> = match (wanted, size) {
        (Some(v), Some(n)) => vec![json!({"volumeId": v, "sizeInBytes": n})],
        _ => Vec::new(),
    };
    let items: Vec<Value> = found
        .into_iter()
        .map(|r| {
            json!({
                "snapshotId": r.snapshot_id, "volumeId": r.volume_id,
                "parentSnapshotId": r.parent_snapshot_id, "volumeSize": r.size_bytes,
            })
        })
        .collect();
    let detaches: Vec<Value> = match (wanted, gone) {
        (Some(v), Some(force)) => vec![json!({"volumeId": v, "force": force})],
        _ => Vec::new(),
    };
    Ok(json!({"snapshotSet": items, "volumeSet": volumes, "detachSet": detaches}))
}

/// `KeyvolReportHostHydrated` (`InstanceId`, `VolumeId`): the volume,
/// whose data is on this host, holds all of its snapshot now. Its pending
/// hydration at the control plane (a copy nobody reads) is dropped, and the
/// restore's grant retired (best effort: the grant names the restoring
/// principal as the one to retire it).
fn report_host_hydrated(c: &Call<'_>) -> ApiResult<Value> {
    let own = calling_host(c.s, REPORT_HOST_HYDRATED, c.p.required("InstanceId")?)?;
    let vol = c.p.required("VolumeId")?;
    let vols = crate::volume::service::Volumes::open(c.s)?;
    let r = vols.get(vol)?;
    if data_instance(c.s, r.volume_id.as_str())?.as_deref() != Some(own.as_str()) {
        return Err(ApiError::incorrect_state(format!(
            "The data of volume '{}' is not on instance {own}: only the host that holds it reports its hydration",
            r.volume_id
        )));
    }
    let map = vols.hydration_path(&r.volume_id);
    if let Err(e) = std::fs::remove_file(&map) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(ApiError::internal(format!(
                "removing {}: {e}",
                map.display()
            )));
        }
    }
    if let Err(e) = crate::snapshot::ops::retire_restore_grant(c.s, &r.volume_id) {
        tracing::warn!(volume = %r.volume_id, "retiring the restore's grant: {}", e.message);
    }
    Ok(json!({"return": true}))
}

/// `KeyvolClaimVolumeData` (`InstanceId`, `VolumeId`, optional `Import`
/// or `Release`): records that the data of the volume is on this host's
/// machine, so that no other machine takes up a copy of its own and no
/// host with a stale copy attaches it. Authorized as `ec2:AttachVolume` on
/// the volume and the host's instance (the right that lets the host use
/// the volume at all). Refused while the volume is attached elsewhere
/// (`VolumeInUse`), and while another machine holds its data
/// (`IncorrectState`) unless `Import=true` says the host has that data now
/// (its backing file, moved). `Release=true` undoes this host's claim
/// while the volume is not attached (a copy it could not make).
fn claim_volume_data(c: &Call<'_>) -> ApiResult<Value> {
    let own = calling_host(c.s, CLAIM_VOLUME_DATA, c.p.required("InstanceId")?)?;
    let import = c.p.bool("Import")?.unwrap_or(false);
    let release = c.p.bool("Release")?.unwrap_or(false);
    if import && release {
        return Err(ApiError::invalid_parameter(
            "Import and Release cannot both be true: give one of them",
        ));
    }
    let vols = crate::volume::service::Volumes::open(c.s)?;
    let records = super::records::Records::open(c.s)?;
    let (r, o, tags) = super::volumes::one(c, &vols, &records)?;
    let vol = r.volume_id.as_str();
    c.authorize_action(
        "ec2:AttachVolume",
        &[
            super::volumes::volume_resource(c, &r, &o, &tags),
            super::authz::Resource::new(super::attachments::instance_arn(c, &own)),
        ],
        &crate::policy::ConditionContext::new(),
    )?;
    let remote = RemoteAttachments::open(c.s)?;
    let attached = match remote.get(vol)? {
        Some(a) => Some(a.instance_id),
        None => vols
            .attached_pid(&r)?
            .map(|_| host_instance_id(c.account(), c.region())),
    };
    let holder = data_holder(c.s, &vols, &r)?;
    if release {
        if holder.as_deref() != Some(own.as_str()) {
            return Err(ApiError::incorrect_state(format!(
                "The data of volume '{vol}' is not claimed by instance {own}: there is nothing to release"
            )));
        }
        if let Some(i) = attached {
            return Err(ApiError::new(
                "VolumeInUse",
                format!(
                    "{vol} is attached to an instance ({i}): detach it before releasing its data"
                ),
            ));
        }
        remote.forget_data_host(vol)?;
        return Ok(json!({"volumeId": vol, "return": true}));
    }
    if let Some(i) = attached.filter(|i| *i != own) {
        return Err(ApiError::new(
            "VolumeInUse",
            format!("{vol} is already attached to an instance ({i})"),
        ));
    }
    if let Some(h) = holder.filter(|h| *h != own) {
        if !import {
            return Err(data_elsewhere(
                vol,
                &h,
                "use it there, or move its backing file here with keyvol volume import",
            ));
        }
    }
    remote.set_data_host(vol, &own)?;
    Ok(json!({"volumeId": vol, "dataHostInstanceId": own, "return": true}))
}

/// `KeyvolReportHostSnapshot` (`InstanceId`, `SnapshotId`, `Status` `cut`
/// or `failed`, `Message`).
fn report_host_snapshot(c: &Call<'_>) -> ApiResult<Value> {
    calling_host(c.s, REPORT_HOST_SNAPSHOT, c.p.required("InstanceId")?)?;
    let id = c.p.required("SnapshotId")?;
    let cut = match c.p.required("Status")? {
        "cut" => true,
        "failed" => false,
        other => {
            return Err(ApiError::invalid_parameter(format!(
                "Status '{}' is not valid: give cut or failed",
                other.chars().take(32).collect::<String>()
            )))
        }
    };
    let message = c.p.get("Message").unwrap_or_default();
    crate::snapshot::ops::host::report(c.s, id, &c.s.ctx.caller.principal_arn, cut, message)?;
    Ok(json!({"return": true}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_instance_ids_are_ec2_ids_per_host() {
        let a = remote_instance_id(
            "111122223333",
            "us-east-1",
            "arn:aws:iam::111122223333:root",
        );
        let b = remote_instance_id(
            "111122223333",
            "us-east-1",
            "arn:aws:iam::111122223333:user/h",
        );
        let c = remote_instance_id(
            "111122223333",
            "eu-west-1",
            "arn:aws:iam::111122223333:root",
        );
        assert!(a.starts_with("i-") && a.len() == 19, "{a}");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, host_instance_id("111122223333", "us-east-1"));
        assert_eq!(
            a,
            remote_instance_id(
                "111122223333",
                "us-east-1",
                "arn:aws:iam::111122223333:root"
            )
        );
    }
}
