//! The volume host side of a control plane on another machine: a home
//! whose `kms-endpoint` setting names a `keyvol serve` keeps its volumes'
//! records there (CreateVolume, DescribeVolumes, AttachVolume,
//! DetachVolume, DeleteVolume over HTTP(S)), and their backing files here.
//!
//! This home keeps a local copy of each volume it holds the data of (id,
//! size, KMS key; never a wrapped key): what the attach daemon serves
//! from. The daemon obtains the plaintext data key with the keyvol
//! extension `KeyvolReleaseVolumeKey` ([`release_data_key`]), which the
//! control plane answers only for a volume attached to this host's own
//! instance. Detaching: `keyvol volume detach` (and `unmount` of a mount
//! that attached) stops the daemon here, then calls DetachVolume; a
//! DetachVolume made elsewhere is seen by the daemon through its long poll
//! of the control plane ([`super::remote_snapshot`]), and it stops when its
//! device is not in use (a forced one undoes the mounts on it first). [`Volumes::attach`] and [`Volumes::detach`] take this
//! path on such a host, so `mount` and `unmount` do too.

use std::path::Path;

use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::ec2::hosts::remote_instance_id;
use crate::ids::VolumeId;
use crate::secret::VolumeDataKey;
use crate::server::control_plane::{ControlPlaneClient, XmlReply};
use crate::session::Session;
use crate::volume::device::HydrationMap;
use crate::volume::remote_restore::list_snapshot_blocks;
use crate::volume::service::{pending_hydration, vol_err, VolumeRecord, Volumes};
use crate::volume::CHUNK_SIZE;

/// The setting that names the control plane (one name for KMS, EC2 and
/// STS, which `keyvol serve` answers at one address).
pub const ENDPOINT_SETTING: &str = "kms-endpoint";

/// The aws CLI's variable naming a CA bundle (PEM) to trust for an
/// `https://` endpoint instead of the system bundle.
pub const CA_BUNDLE_ENV: &str = "AWS_CA_BUNDLE";

const GIB: u64 = 1 << 30;

/// The keyvol extension parameter with which CreateVolume and
/// DescribeVolumes answer each volume's exact size (`sizeInBytes`) and the
/// instance whose machine holds its data (`dataHostInstanceId`).
pub const KEYVOL_DETAILS: &str = "IncludeKeyvolDetails";

const DETAILS: (&str, &str) = (KEYVOL_DETAILS, "true");

/// The control plane this home uses, or `None` when it is its own.
pub fn control_plane(s: &Session) -> ApiResult<Option<ControlPlaneClient>> {
    let Some(url) = crate::config::get(&s.home, ENDPOINT_SETTING)? else {
        return Ok(None);
    };
    let (key_id, secret) = s.iam.profile_credentials(&s.profile)?;
    let ca = match std::env::var_os(CA_BUNDLE_ENV) {
        Some(p) => Some(std::fs::read(&p).map_err(|e| {
            ApiError::invalid_parameter(format!(
                "{CA_BUNDLE_ENV}={}: cannot read the CA bundle: {e}",
                Path::new(&p).display()
            ))
        })?),
        None => None,
    };
    ControlPlaneClient::new(&url, s.ctx.region.clone(), &key_id, secret, ca.as_deref()).map(Some)
}

/// This host's instance id at the control plane: the instance of the
/// principal its access key belongs to.
pub fn own_instance(s: &Session, cp: &ControlPlaneClient) -> ApiResult<String> {
    let arn = cp.caller_arn()?;
    // arn:aws:iam::ACCOUNT:... (or arn:aws:sts::ACCOUNT:...)
    let account = arn
        .split(':')
        .nth(4)
        .filter(|a| !a.is_empty())
        .unwrap_or(s.ctx.caller.account.as_str())
        .to_string();
    Ok(remote_instance_id(&account, s.ctx.region.as_str(), &arn))
}

/// The data key of `r` from the control plane (the attach daemon's one
/// call): released only while `r` is attached to this host's instance.
pub fn release_data_key(s: &Session, r: &VolumeRecord) -> ApiResult<VolumeDataKey> {
    let cp = control_plane(s)?.ok_or_else(|| {
        ApiError::internal("no control plane is configured (kms-endpoint) for a remote data key")
    })?;
    let instance = own_instance(s, &cp)?;
    cp.release_volume_key(r.volume_id.as_str(), &instance)
}

/// One volume of a DescribeVolumes or CreateVolume answer, in the keyvol
/// CLI's shape.
fn volume_of(x: &XmlReply, local: Option<(&VolumeRecord, u64)>) -> Value {
    let attachments: Vec<Value> = x
        .items("attachmentSet")
        .iter()
        .map(|a| {
            let t = |k: &str| a.text(k).unwrap_or_default();
            json!({
                "VolumeId": t("volumeId"), "InstanceId": t("instanceId"), "Device": t("device"),
                "State": t("status"), "AttachTime": t("attachTime"), "DeleteOnTermination": false,
            })
        })
        .collect();
    let base = x.without("attachmentSet").without("tagSet");
    let t = |k: &str| base.text(k).unwrap_or_default();
    let mut v = json!({
        "VolumeId": t("volumeId"),
        "Size": t("size").parse::<u64>().unwrap_or(0),
        "AvailabilityZone": t("availabilityZone"),
        "State": t("status"),
        "CreateTime": t("createTime"),
        "Encrypted": true,
        "KmsKeyId": t("kmsKeyId"),
        "VolumeType": t("volumeType"),
        "OwnerId": t("ownerId"),
        "SnapshotId": t("snapshotId"),
        "Attachments": attachments,
        "HeldOnThisHost": local.is_some(),
    });
    if let Some(n) = exact_size(&base) {
        v["SizeInBytes"] = json!(n);
    }
    if let Some((r, pending)) = local {
        v["SizeInBytes"] = json!(r.size);
        v["HydrationPendingChunks"] = json!(pending);
    }
    v
}

/// The exact size of a volume the control plane describes (its keyvol
/// extension `sizeInBytes`; else its whole GiB).
fn exact_size(x: &XmlReply) -> Option<u64> {
    x.text("sizeInBytes")
        .and_then(|n| n.parse().ok())
        .or_else(|| {
            x.text("size")
                .and_then(|g| g.parse::<u64>().ok())
                .map(|g| g * GIB)
        })
        .filter(|&n| n > 0)
}

/// May a host take up the volume `x` describes without its backing file
/// (`volume import`)? Only a restore whose data no machine holds yet
/// (no `dataHostInstanceId`): its data is its snapshot's.
fn adoptable(x: &XmlReply) -> bool {
    x.text("snapshotId").is_some_and(|s| !s.is_empty())
        && x.text("dataHostInstanceId").is_none_or(|i| i.is_empty())
}

/// Splits a DescribeVolumes answer into its volumes' XML.
fn each_volume(x: &XmlReply) -> Vec<XmlReply> {
    x.items("volumeSet")
}

impl Volumes<'_> {
    fn local(&self, v: &str) -> Option<VolumeRecord> {
        self.get(v).ok()
    }

    /// `x` in the keyvol CLI's shape, with this host's copy `r` if any.
    fn shown(&self, x: &XmlReply, r: Option<&VolumeRecord>) -> Value {
        let pending = r.map(|r| (r, pending_hydration(&self.hydration_path(&r.volume_id))));
        volume_of(x, pending)
    }

    /// DescribeVolumes of one volume at the control plane.
    fn described(&self, cp: &ControlPlaneClient, v: &str) -> ApiResult<XmlReply> {
        let x = cp.ec2("DescribeVolumes", &[("VolumeId.1", v), DETAILS])?;
        each_volume(&x).into_iter().next().ok_or_else(|| {
            ApiError::new(
                "InvalidVolume.NotFound",
                format!("The volume '{v}' does not exist."),
            )
        })
    }

    /// CreateVolume at the control plane, then the sparse backing file
    /// here. A failure here deletes the record again.
    pub fn create_remote(
        &self,
        cp: &ControlPlaneClient,
        size: u64,
        kms_key_id: Option<&str>,
        tags: &[(String, String)],
    ) -> ApiResult<Value> {
        let (x, vol) = create_at(cp, self.s, Some(size), kms_key_id, None, tags)?;
        let arn = x.text("kmsKeyId").unwrap_or_default();
        let made = claim_data(self.s, cp, vol.as_str(), Claim::Hold)
            .and_then(|()| self.insert_with_backing(&vol, size, &arn, &[], None));
        match made {
            Ok(r) => Ok(self.shown(&x, Some(&r))),
            Err(e) => {
                undo_create(cp, &vol);
                Err(e)
            }
        }
    }

    /// CreateVolume with `SnapshotId` at the control plane (which makes
    /// the volume's data key and checks that the caller may restore the
    /// snapshot), then this host's copy ([`Volumes::restore_here`]): a
    /// sparse backing file that hydrates from the snapshot through the
    /// EBS direct APIs, lazily, or now with `hydrate` (attached at the
    /// control plane for as long as that takes, so that the data key is
    /// released to this host). A failure deletes the volume again.
    pub fn restore_remote(
        &self,
        cp: &ControlPlaneClient,
        snapshot: &str,
        size: Option<u64>,
        kms_key_id: Option<&str>,
        tags: &[(String, String)],
        hydrate: bool,
    ) -> ApiResult<Value> {
        let (x, vol) = create_at(cp, self.s, size, kms_key_id, Some(snapshot), tags)?;
        let made = exact_size(&x)
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "the control plane at {} answered CreateVolume of {vol} without a size",
                    cp.endpoint()
                ))
            })
            .and_then(|n| {
                claim_data(self.s, cp, vol.as_str(), Claim::Hold)?;
                let arn = x.text("kmsKeyId").unwrap_or_default();
                self.restore_here(cp, &vol, n, &arn, snapshot)
            });
        let r = match made {
            Ok(r) => r,
            Err(e) => {
                undo_create(cp, &vol);
                return Err(e);
            }
        };
        if hydrate {
            if let Err(e) = self.hydrate_remote(cp, &r) {
                if let Err(d) = self.delete(vol.as_str()) {
                    tracing::warn!(volume = %vol, "removing this host's copy: {}", d.message);
                }
                undo_create(cp, &vol);
                return Err(e);
            }
        }
        let x = self.described(cp, vol.as_str())?;
        Ok(self.shown(&x, self.local(vol.as_str()).as_ref()))
    }

    /// This host's copy of `vol`, restored from `snapshot` at the control
    /// plane: the record, a sparse backing file and the hydration map of
    /// the blocks the snapshot holds (ListSnapshotBlocks, as this host's
    /// principal: a caller who may not read the snapshot is refused here,
    /// before anything is made). Nothing is left when it fails.
    fn restore_here(
        &self,
        cp: &ControlPlaneClient,
        vol: &VolumeId,
        size: u64,
        arn: &str,
        snapshot: &str,
    ) -> ApiResult<VolumeRecord> {
        let listing = list_snapshot_blocks(cp, snapshot).map_err(|e| {
            ApiError::new(
                &e.code,
                format!(
                    "volume {vol} cannot be restored on this host from snapshot {snapshot}: the control plane refused its blocks (ListSnapshotBlocks): {}",
                    e.message
                ),
            )
        })?;
        let r = self.insert_with_backing(vol, size, arn, &[], Some(snapshot))?;
        let to_fetch: Vec<bool> = (0..size.div_ceil(CHUNK_SIZE))
            .map(|i| listing.tokens.contains_key(&i))
            .collect();
        if let Err(e) = HydrationMap::create(&self.hydration_path(vol), &to_fetch) {
            if let Err(d) = self.delete(vol.as_str()) {
                tracing::warn!(volume = %vol, "removing this host's copy: {}", d.message);
            }
            return Err(vol_err(e));
        }
        Ok(r)
    }

    /// Fetches every block of restored volume `r` now: AttachVolume to
    /// this host (the data key is released only to an attached volume),
    /// the device opened here, every pending chunk hydrated, DetachVolume.
    fn hydrate_remote(&self, cp: &ControlPlaneClient, r: &VolumeRecord) -> ApiResult<()> {
        let v = r.volume_id.as_str();
        let (instance, _) = self.claim_remote(cp, v, false)?;
        let hydrated = (|| {
            let _lock = self.lock_detached(r).ok_or_else(|| {
                ApiError::new(
                    "VolumeInUse",
                    format!("Volume {v} is attached on this host"),
                )
            })?;
            let dev = self.open_device(r)?;
            let done = dev
                .hydrate_all(&mut |_, _| {})
                .map_err(|e| ApiError::new("SnapshotIntegrityError", e.to_string()));
            let closed = dev.close().map_err(vol_err);
            done.and(closed)
        })();
        self.unclaim_remote(cp, v, &instance);
        hydrated?;
        self.hydration_done(r);
        Ok(())
    }

    /// Takes up volume `v` on this host when the control plane holds it
    /// and no machine holds its data yet: a restore (CreateVolume
    /// --snapshot-id, made by anyone) never attached anywhere gets its
    /// copy here ([`Volumes::restore_here`]) instead of needing `volume
    /// import`. `true` when this call made the copy.
    pub fn adopt_remote(&self, cp: &ControlPlaneClient, v: &str) -> ApiResult<bool> {
        if self.local(v).is_some() {
            return Ok(false);
        }
        let x = self.described(cp, v)?;
        if !adoptable(&x) {
            return Ok(false);
        }
        let vol: VolumeId = v.parse().map_err(|_| not_on_this_host(v, None))?;
        let size = exact_size(&x).ok_or_else(|| not_on_this_host(v, None))?;
        let snapshot = x.text("snapshotId").unwrap_or_default();
        let arn = x.text("kmsKeyId").unwrap_or_default();
        // Claimed first: of two hosts taking it up at once, one makes a
        // copy, and the other is told where the data is.
        claim_data(self.s, cp, v, Claim::Hold)?;
        if let Err(e) = self.restore_here(cp, &vol, size, &arn, &snapshot) {
            release_claim(self.s, cp, v);
            return Err(e);
        }
        tracing::info!(volume = v, snapshot = %snapshot, "took up a restore no machine holds yet: it hydrates here");
        Ok(true)
    }

    /// Runs `f` on volume `v` after [`Volumes::adopt_remote`]; a copy that
    /// call made goes again when `f` fails, so a failed attach or mount
    /// leaves nothing here.
    pub fn with_adopted<T>(
        &self,
        cp: &ControlPlaneClient,
        v: &str,
        f: impl FnOnce() -> ApiResult<T>,
    ) -> ApiResult<T> {
        let adopted = self.adopt_remote(cp, v)?;
        let out = f();
        if out.is_err() && adopted {
            if let Err(d) = self.delete(v) {
                tracing::warn!(
                    volume = v,
                    "removing the copy taken up for a failed attach: {}",
                    d.message
                );
            }
            release_claim(self.s, cp, v);
        }
        out
    }

    /// DescribeVolumes at the control plane (all, or the ones named).
    pub fn describe_remote(
        &self,
        cp: &ControlPlaneClient,
        ids: &[String],
        filters: &[(String, Vec<String>)],
    ) -> ApiResult<Value> {
        let mut owned: Vec<(String, String)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (format!("VolumeId.{}", i + 1), id.clone()))
            .collect();
        owned.push((DETAILS.0.into(), DETAILS.1.into()));
        for (i, (name, values)) in filters.iter().enumerate() {
            owned.push((format!("Filter.{}.Name", i + 1), name.clone()));
            for (j, v) in values.iter().enumerate() {
                owned.push((format!("Filter.{}.Value.{}", i + 1, j + 1), v.clone()));
            }
        }
        let p: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let x = cp.ec2("DescribeVolumes", &p)?;
        let out: Vec<Value> = each_volume(&x)
            .iter()
            .map(|v| {
                self.shown(
                    v,
                    self.local(&v.text("volumeId").unwrap_or_default()).as_ref(),
                )
            })
            .collect();
        Ok(json!({"Volumes": out}))
    }

    /// ModifyVolume at the control plane. Its Size is whole GiB; the
    /// backing file on this host grows to it at the next attach
    /// ([`Volumes::claim_remote`]), as the control plane refuses the change
    /// while the volume is attached.
    pub fn modify_remote(&self, cp: &ControlPlaneClient, v: &str, size: u64) -> ApiResult<Value> {
        if size == 0 || !size.is_multiple_of(GIB) {
            return Err(ApiError::invalid_parameter(format!(
                "{size} bytes is not a whole number of GiB: at a control plane a volume grows by ModifyVolume's Size, in GiB (for example --size 2GiB)"
            )));
        }
        let gib = (size / GIB).to_string();
        cp.ec2("ModifyVolume", &[("VolumeId", v), ("Size", gib.as_str())])?;
        self.describe_one_remote(cp, v)
    }

    /// One volume as [`Volumes::describe_remote`] shows it.
    pub fn describe_one_remote(&self, cp: &ControlPlaneClient, v: &str) -> ApiResult<Value> {
        let x = self.described(cp, v)?;
        Ok(self.shown(&x, self.local(v).as_ref()))
    }

    /// Puts the backing file of a volume recorded at the control plane on
    /// this host (hard link, else a sparse copy), so that it can attach it
    /// here. The file must be the volume's size, as the control plane
    /// records it (whole GiB) or this home's own copy said.
    pub fn import_remote(
        &self,
        cp: &ControlPlaneClient,
        v: &str,
        backing: &Path,
    ) -> ApiResult<Value> {
        let x = self.described(cp, v)?;
        let gib: u64 = x.text("size").unwrap_or_default().parse().unwrap_or(0);
        let len = std::fs::metadata(backing)
            .map_err(|e| {
                ApiError::invalid_parameter(format!(
                    "backing file {}: {e}: give the volume's own <vol>.img",
                    backing.display()
                ))
            })?
            .len();
        if len.div_ceil(GIB) != gib {
            return Err(ApiError::invalid_parameter(format!(
                "backing file {} has {len} bytes but volume {v} has {gib} GiB at the control plane: give the volume's own <vol>.img",
                backing.display()
            )));
        }
        let described = json!({
            "VolumeId": v,
            "KmsKeyId": x.text("kmsKeyId").unwrap_or_default(),
            "EncryptedDataKey": "",
            "SizeInBytes": len,
            "SnapshotId": x.text("snapshotId").unwrap_or_default(),
            "HydrationPendingChunks": 0,
        });
        let r = self.import(&described, backing)?;
        // The data is here now: the control plane refuses the machine it
        // came from, whose copy is stale from the next write on.
        if let Err(e) = claim_data(self.s, cp, v, Claim::Import) {
            if let Err(d) = self.delete(v) {
                tracing::warn!(volume = v, "removing the imported copy: {}", d.message);
            }
            return Err(e);
        }
        Ok(self.shown(&x, Some(&r)))
    }

    /// Makes sure `v` is attached to this host's instance at the control
    /// plane: AttachVolume, or, with `restart`, nothing when it already is
    /// (a foreground daemon that its supervisor restarted after a crash).
    /// Its backing file must be here; a size grown at the control plane
    /// grows it first. The instance, and whether this call attached it.
    /// (Hosts that sign as one principal are one instance to the control
    /// plane: give each host its own.)
    fn claim_remote(
        &self,
        cp: &ControlPlaneClient,
        v: &str,
        restart: bool,
    ) -> ApiResult<(String, bool)> {
        let x = self.described(cp, v)?;
        let r = self
            .local(v)
            .ok_or_else(|| not_on_this_host(v, x.text("dataHostInstanceId")))?;
        self.check_backing(&r)?;
        let size = exact_size(&x).unwrap_or(0);
        if size > r.size && self.attachment(&r)?.is_none() {
            self.modify(v, size)?;
        }
        let instance = own_instance(self.s, cp)?;
        let mine = x
            .items("attachmentSet")
            .iter()
            .any(|a| a.text("instanceId").as_deref() == Some(instance.as_str()));
        if mine && !restart {
            return Err(ApiError::new(
                "VolumeInUse",
                format!(
                    "{v} is already attached to this host's instance {instance}: if its daemon died, `keyvol volume detach {v}` clears the attachment first"
                ),
            ));
        }
        if !mine {
            let device_name = free_device_name(cp, &instance)?;
            cp.ec2(
                "AttachVolume",
                &[
                    ("VolumeId", v),
                    ("InstanceId", &instance),
                    ("Device", &device_name),
                ],
            )?;
        }
        Ok((instance, !mine))
    }

    /// The volume `v` as this host's boot table names it (`volume
    /// enable`): a volume of the caller at the control plane whose backing
    /// file is on this host.
    pub fn boot_volume_remote(&self, cp: &ControlPlaneClient, v: &str) -> ApiResult<VolumeId> {
        let x = self.described(cp, v)?;
        if let Some(r) = self.local(v) {
            return Ok(r.volume_id);
        }
        if adoptable(&x) {
            // Taken up at its first `mount --all`.
            return v.parse().map_err(|_| not_on_this_host(v, None));
        }
        Err(not_on_this_host(v, x.text("dataHostInstanceId")))
    }

    /// Undoes an AttachVolume this host made when its daemon could not
    /// start (best effort: the error that matters is the daemon's).
    fn unclaim_remote(&self, cp: &ControlPlaneClient, v: &str, instance: &str) {
        if let Err(d) = cp.ec2("DetachVolume", &[("VolumeId", v), ("InstanceId", instance)]) {
            tracing::warn!(volume = v, "undoing AttachVolume: {}", d.message);
        }
    }

    /// AttachVolume of `v` to this host's instance at the control plane,
    /// then the attach daemon here, which obtains the data key with
    /// `KeyvolReleaseVolumeKey`. A daemon that fails to start detaches the
    /// volume at the control plane again.
    pub fn attach_remote(
        &self,
        cp: &ControlPlaneClient,
        v: &str,
        device: Option<&Path>,
    ) -> ApiResult<Value> {
        self.with_adopted(cp, v, || self.attach_claimed(cp, v, device))
    }

    fn attach_claimed(
        &self,
        cp: &ControlPlaneClient,
        v: &str,
        device: Option<&Path>,
    ) -> ApiResult<Value> {
        let (instance, claimed) = self.claim_remote(cp, v, false)?;
        match self.attach_here(v, device) {
            Ok(mut out) => {
                if let Some(a) = out["Attachments"]
                    .as_array_mut()
                    .and_then(|a| a.first_mut())
                {
                    a["InstanceId"] = json!(instance);
                }
                Ok(out)
            }
            Err(e) => {
                if claimed {
                    self.unclaim_remote(cp, v, &instance);
                }
                Err(e)
            }
        }
    }

    /// The attach daemon in this process (`keyvol volume attach VOL
    /// --foreground`, as `keyvol-attach@.service` runs it): AttachVolume
    /// to this host's instance unless already attached, the daemon until
    /// it is stopped, then DetachVolume. A daemon that fails leaves the
    /// attachment for its restart, unless this call made it.
    pub fn run_daemon_remote(
        &self,
        cp: &ControlPlaneClient,
        v: &str,
        device: &Path,
        ready: &mut dyn std::io::Write,
    ) -> ApiResult<()> {
        self.with_adopted(cp, v, || self.serve_claimed(cp, v, device, ready))
    }

    fn serve_claimed(
        &self,
        cp: &ControlPlaneClient,
        v: &str,
        device: &Path,
        ready: &mut dyn std::io::Write,
    ) -> ApiResult<()> {
        let (instance, claimed) = self.claim_remote(cp, v, true)?;
        match self.run_daemon(v, device, ready) {
            Ok(()) => match cp.ec2(
                "DetachVolume",
                &[("VolumeId", v), ("InstanceId", &instance)],
            ) {
                Ok(_) => Ok(()),
                // Detached there already (`keyvol volume detach` asks too).
                Err(e) if e.code == "IncorrectState" => Ok(()),
                Err(e) => Err(e),
            },
            Err(e) => {
                if claimed {
                    self.unclaim_remote(cp, v, &instance);
                }
                Err(e)
            }
        }
    }

    /// Stops the attach daemon here (refused while the device is in use,
    /// unless `force`), then DetachVolume at the control plane, which
    /// forgets this host's right to the key. With the control plane
    /// unreachable the daemon is stopped all the same, and the error says
    /// that the control plane has yet to hear of it.
    pub fn detach_remote(&self, cp: &ControlPlaneClient, v: &str, force: bool) -> ApiResult<Value> {
        // The daemon here, or what a dead one left; nothing attached here
        // is no error (DetachVolume is still to be made).
        let stopped = match self.local(v) {
            Some(_) => match self.detach_here(v, force) {
                Ok(out) => Some(out),
                Err(e) if e.code == "IncorrectState" => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let told = own_instance(self.s, cp).and_then(|instance| {
            cp.ec2(
                "DetachVolume",
                &[("VolumeId", v), ("InstanceId", &instance)],
            )
        });
        match (told, stopped) {
            (Ok(_), Some(out)) => Ok(out),
            (Ok(_), None) => self.describe_one_remote(cp, v),
            // Detached there already (by another caller): done here too.
            (Err(e), Some(out)) if e.code == "IncorrectState" => Ok(out),
            (Err(e), Some(_)) => Err(ApiError::new(
                &e.code,
                format!(
                    "{v} is detached on this host, but DetachVolume at the control plane failed: {}; run `keyvol volume detach {v}` again once it answers",
                    e.message
                ),
            )),
            (Err(e), None) => Err(e),
        }
    }

    /// DeleteVolume at the control plane, then this host's files of it.
    pub fn delete_remote(&self, cp: &ControlPlaneClient, v: &str) -> ApiResult<()> {
        if let Some(r) = self.local(v) {
            if self.attachment(&r)?.is_some() {
                return Err(ApiError::new(
                    "VolumeInUse",
                    format!("Volume {v} is attached on this host: detach it first (keyvol volume detach {v})"),
                ));
            }
        }
        cp.ec2("DeleteVolume", &[("VolumeId", v)])?;
        if self.local(v).is_some() {
            self.delete(v)?;
        }
        Ok(())
    }
}

/// The refusal of a volume whose backing file is not on this host
/// (`data_host`: the instance the control plane says holds its data).
fn not_on_this_host(v: &str, data_host: Option<String>) -> ApiError {
    let there = data_host
        .filter(|i| !i.is_empty())
        .map(|i| format!(" (its data is on instance {i})"))
        .unwrap_or_default();
    ApiError::new(
        "InvalidVolume.DataMissing",
        format!(
            "The backing file of volume {v} is not on this host{there}: bring it with `keyvol volume import --volume-id {v} --backing-file PATH`"
        ),
    )
}

/// CreateVolume at the control plane, in this session's region's first
/// zone: the answer and the new volume's id.
fn create_at(
    cp: &ControlPlaneClient,
    s: &Session,
    size: Option<u64>,
    kms_key_id: Option<&str>,
    snapshot: Option<&str>,
    tags: &[(String, String)],
) -> ApiResult<(XmlReply, VolumeId)> {
    let mut owned = vec![
        ("AvailabilityZone".to_string(), format!("{}a", s.ctx.region)),
        ("Encrypted".to_string(), "true".to_string()),
        (DETAILS.0.to_string(), DETAILS.1.to_string()),
    ];
    if let Some(n) = size {
        owned.push(("SizeInBytes".into(), n.to_string()));
    }
    if let Some(sn) = snapshot {
        owned.push(("SnapshotId".into(), sn.into()));
    }
    if let Some(k) = kms_key_id {
        owned.push(("KmsKeyId".into(), k.into()));
    }
    if !tags.is_empty() {
        owned.push(("TagSpecification.1.ResourceType".into(), "volume".into()));
        for (i, (k, v)) in tags.iter().enumerate() {
            owned.push((format!("TagSpecification.1.Tag.{}.Key", i + 1), k.clone()));
            owned.push((format!("TagSpecification.1.Tag.{}.Value", i + 1), v.clone()));
        }
    }
    let p: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let x = cp.ec2("CreateVolume", &p)?;
    let vol: VolumeId = x
        .text("volumeId")
        .unwrap_or_default()
        .parse()
        .map_err(|_| {
            ApiError::internal(format!(
                "the control plane at {} answered CreateVolume without a volume id",
                cp.endpoint()
            ))
        })?;
    Ok((x, vol))
}

/// What [`claim_data`] tells the control plane about this host's copy of
/// a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This host made the volume's only copy (created, restored or taken
    /// up here): refused when another machine holds its data.
    Hold,
    /// The volume's backing file was moved here (`volume import`): the
    /// data is here now, wherever it was.
    Import,
    /// This host could not make the copy it claimed.
    Release,
}

/// `KeyvolClaimVolumeData` for `v` as this host's instance: the control
/// plane records where the volume's data is, so that no other machine
/// takes up a copy of its own, and a host whose copy is stale cannot
/// attach it.
pub fn claim_data(s: &Session, cp: &ControlPlaneClient, v: &str, claim: Claim) -> ApiResult<()> {
    let instance = own_instance(s, cp)?;
    let mut p = vec![("InstanceId", instance.as_str()), ("VolumeId", v)];
    match claim {
        Claim::Hold => {}
        Claim::Import => p.push(("Import", "true")),
        Claim::Release => p.push(("Release", "true")),
    }
    cp.ec2(crate::ec2::hosts::CLAIM_VOLUME_DATA, &p).map(drop)
}

/// Gives up this host's claim on `v` after its copy failed (best effort:
/// the error that matters is the one that stopped it).
fn release_claim(s: &Session, cp: &ControlPlaneClient, v: &str) {
    if let Err(d) = claim_data(s, cp, v, Claim::Release) {
        tracing::warn!(volume = v, "releasing the claim on its data: {}", d.message);
    }
}

/// Undoes a CreateVolume whose volume this host could not make its own
/// (best effort: the error that matters is the one that stopped it).
fn undo_create(cp: &ControlPlaneClient, vol: &VolumeId) {
    if let Err(d) = cp.ec2("DeleteVolume", &[("VolumeId", vol.as_str())]) {
        tracing::warn!(volume = %vol, "undoing CreateVolume: {}", d.message);
    }
}

/// The first EBS device name (`/dev/sdf` .. `/dev/sdz`, then `xvdf` ..)
/// no volume attached to `instance` uses.
fn free_device_name(cp: &ControlPlaneClient, instance: &str) -> ApiResult<String> {
    let x = cp.ec2("DescribeInstances", &[("InstanceId.1", instance)])?;
    let taken = x.texts("deviceName");
    let candidates = (b'f'..=b'z')
        .map(|c| format!("/dev/sd{}", c as char))
        .chain((b'f'..=b'z').map(|c| format!("/dev/xvd{}", c as char)));
    for name in candidates {
        if !taken.contains(&name) {
            return Ok(name);
        }
    }
    Err(ApiError::new(
        "AttachmentLimitExceeded",
        format!("instance {instance} has no free device name left: detach a volume first"),
    ))
}
