//! The keyvol CLIs' volume and snapshot commands go through the control
//! plane too: [`gate`] authorizes the command's EC2 (or EBS) action with
//! the same policy engine and resource condition keys as `keyvol serve`,
//! runs it, and records one audit event, allowed or refused. The commands
//! themselves carry no checks of their own.

use serde_json::Value;

use crate::api_error::ApiResult;
use crate::policy::ConditionContext;
use crate::session::Session;

use super::authz::{snapshot_arn, Resource};
use super::{audit, Call, Params};

/// What a command acts on.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Describe and list commands: `*`.
    Account,
    /// A new volume (create, import): `volume/*` of the caller, and the
    /// snapshot it is restored from if any.
    NewVolume {
        size_bytes: Option<u64>,
        snapshot: Option<&'a str>,
    },
    /// An existing volume of the caller.
    Volume(&'a str),
    /// An existing volume of the caller and this machine's volume host
    /// (the instance of AttachVolume and DetachVolume).
    VolumeOnHost(&'a str),
    /// A snapshot the caller can see.
    Snapshot(&'a str),
    /// A new snapshot of the caller's volume.
    NewSnapshotOf(&'a str),
    /// A copy of a snapshot of `region`.
    CopyOf { region: &'a str, snapshot: &'a str },
}

fn resources(c: &Call<'_>, t: Target<'_>) -> ApiResult<Vec<Resource>> {
    let region = c.region().to_string();
    Ok(match t {
        Target::Account => vec![Resource::new("*".into())],
        Target::NewVolume {
            size_bytes,
            snapshot,
        } => {
            let mut r = Resource::new(super::authz::volume_arn(&region, c.account(), "*"))
                .with("ec2:Encrypted", true);
            if let Some(b) = size_bytes {
                r = r.with("ec2:VolumeSize", b.div_ceil(1 << 30) as i64);
            }
            let mut out = Vec::new();
            if let Some(sn) = snapshot {
                r = r.with("ec2:ParentSnapshot", snapshot_arn(&region, sn));
                out.push(super::snapshots::snapshot_resource(c, sn)?);
            }
            out.insert(0, r);
            out
        }
        Target::Volume(v) => {
            let vols = super::volumes::volumes(c)?;
            let records = super::records::Records::open(c.s)?;
            let r = vols.get(v)?;
            let o = records.volume_options(v)?;
            let tags = records.tags(v)?;
            vec![super::volumes::volume_resource(c, &r, &o, &tags)]
        }
        Target::VolumeOnHost(v) => {
            let mut out = resources(c, Target::Volume(v))?;
            out.push(super::attachments::host_resource(c));
            out
        }
        Target::Snapshot(sn) => vec![super::snapshots::snapshot_resource(c, sn)?],
        Target::NewSnapshotOf(v) => {
            let mut out = resources(c, Target::Volume(v))?;
            out.push(Resource::new(snapshot_arn(&region, "*")));
            out
        }
        Target::CopyOf {
            region: src,
            snapshot,
        } => vec![
            Resource::new(snapshot_arn(src, snapshot)),
            Resource::new(snapshot_arn(&region, "*")),
        ],
    })
}

/// Runs a CLI command as the control plane's action `iam_action`
/// (`ec2:DeleteVolume`, `ebs:ListSnapshotBlocks`): authorized on `target`
/// for the session's caller, then `run`, then one audit event named after
/// the action with `params` and, for a changing command, `response(&T)`.
pub fn gate<T>(
    s: &Session,
    iam_action: &'static str,
    target: Target<'_>,
    params: &[(&str, &str)],
    run: impl FnOnce() -> ApiResult<T>,
    response: impl FnOnce(&T) -> Value,
) -> ApiResult<T> {
    let (service, action) = iam_action.split_once(':').unwrap_or(("ec2", iam_action));
    let mut pairs = vec![("Action".to_string(), action.to_string())];
    pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let p = Params::new(pairs);
    let c = Call {
        s,
        p: &p,
        action,
        dry_run: false,
    };
    let outcome = resources(&c, target)
        .and_then(|res| c.authorize_action(iam_action, &res, &ConditionContext::new()))
        .and_then(|()| match target {
            Target::Volume(v) | Target::VolumeOnHost(v) => {
                super::hosts::guard_local_command(s, iam_action, v)
            }
            _ => Ok(()),
        })
        .and_then(|()| run());
    let read_only = ["Describe", "List", "Get", "Wait"]
        .iter()
        .any(|p| action.starts_with(p));
    let audited = match &outcome {
        Ok(t) if !read_only => Ok(response(t)),
        Ok(_) => Ok(Value::Null),
        Err(e) => Err(e.clone()),
    };
    let source = format!("{service}.amazonaws.com");
    if let Err(e) = audit(s, &source, action, &p, &audited, read_only) {
        // The command ran (or was refused) on this host; an audit record
        // that cannot be written (a full disk) must not turn an unmount or
        // detach that freed the volume into a failure. It is said loudly.
        if outcome.is_ok() {
            tracing::warn!(
                action,
                "the command ran but its audit record could not be written: {}",
                e.message
            );
            eprintln!(
                "keyvol: warning: {action} ran but its audit record could not be written: {}",
                e.message
            );
        }
    }
    outcome
}
