//! Who is calling, from where: the request context every operation of
//! the control plane (KMS, EC2, EBS, STS, IAM) receives and the policy
//! engine reads.

use serde::Serialize;

use crate::ids::{AccountId, Region};

/// The kind of principal, as CloudTrail's `userIdentity.type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PrincipalType {
    Root,
    IAMUser,
    AssumedRole,
    AWSService,
}

/// The authenticated caller of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: AccountId,
    /// `arn:aws:iam::<account>:root`, `arn:aws:iam::<account>:user/<name>`
    /// or a role session `arn:aws:sts::<account>:assumed-role/<role>/<session>`.
    pub principal_arn: String,
    pub principal_type: PrincipalType,
    pub access_key_id: Option<String>,
    /// The principal's tags (`aws:PrincipalTag/<key>`): a user's tags, or a
    /// role's tags overridden by the session's tags.
    pub principal_tags: Vec<(String, String)>,
    /// The session policy of a role session (AssumeRole `Policy`): the
    /// session may do only what both it and the role's policies allow.
    pub session_policy: Option<String>,
}

impl Caller {
    pub fn root(account: AccountId) -> Self {
        Caller {
            principal_arn: account.root_arn(),
            account,
            principal_type: PrincipalType::Root,
            access_key_id: None,
            principal_tags: Vec::new(),
            session_policy: None,
        }
    }

    /// An IAM user of `account`, without tags.
    pub fn user(account: AccountId, name: &str) -> Self {
        Caller {
            principal_arn: format!("arn:aws:iam::{account}:user/{name}"),
            account,
            principal_type: PrincipalType::IAMUser,
            access_key_id: None,
            principal_tags: Vec::new(),
            session_policy: None,
        }
    }

    /// The role of an assumed-role session (`arn:aws:iam::<account>:role/<role>`)
    /// and the session's name.
    pub fn session_role(&self) -> Option<(String, &str)> {
        let rest = self.principal_arn.strip_prefix("arn:aws:sts::")?;
        let (_, rest) = rest.split_once(":assumed-role/")?;
        let (role, session) = rest.split_once('/')?;
        Some((
            format!("arn:aws:iam::{}:role/{role}", self.account),
            session,
        ))
    }
}

/// One request: the caller, the region it is made in, and how it arrived.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub caller: Caller,
    pub region: Region,
    /// `ec2.<region>.amazonaws.com` when a volume or snapshot operation
    /// calls the KMS on the caller's behalf (the `kms:ViaService` key).
    pub via_service: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// The id the server answered the request with (`x-amzn-RequestId`,
    /// EC2's `requestId`), which its audit events carry as `requestID`, as
    /// CloudTrail's do. None for a call that is no request of the server
    /// (the CLI's own), whose events get an id of their own.
    pub request_id: Option<String>,
}

impl RequestContext {
    pub fn new(caller: Caller, region: Region) -> Self {
        RequestContext {
            caller,
            region,
            via_service: None,
            source_ip: None,
            user_agent: None,
            request_id: None,
        }
    }

    /// The `requestID` of this call's audit events: the server's id, or
    /// a fresh one for a call that is no request of the server.
    pub fn audit_request_id(&self) -> String {
        self.request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    }

    /// The same caller acting through the EC2 service (volumes, snapshots).
    pub fn via_ec2(&self) -> Self {
        let mut c = self.clone();
        c.via_service = Some(format!("ec2.{}.amazonaws.com", self.region));
        // The service's call is a request of its own.
        c.request_id = None;
        c
    }

    /// The request's identity as the control plane hands it to a process
    /// of its own that acts on the caller's behalf (the attach daemon that
    /// an AttachVolume of the server starts): no secret, only who the
    /// caller is and where the request came from.
    pub fn to_handoff(&self) -> String {
        let c = &self.caller;
        serde_json::json!({
            "account": c.account.as_str(),
            "principal": c.principal_arn,
            "type": c.principal_type,
            "accessKeyId": c.access_key_id,
            "tags": c.principal_tags,
            "sessionPolicy": c.session_policy,
            "region": self.region.as_str(),
            "sourceIp": self.source_ip,
            "userAgent": self.user_agent,
        })
        .to_string()
    }

    /// The context [`to_handoff`](Self::to_handoff) wrote; `None` for
    /// anything else.
    pub fn from_handoff(s: &str) -> Option<RequestContext> {
        let v: serde_json::Value = serde_json::from_str(s).ok()?;
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let principal_type = match v.get("type")?.as_str()? {
            "Root" => PrincipalType::Root,
            "IAMUser" => PrincipalType::IAMUser,
            "AssumedRole" => PrincipalType::AssumedRole,
            _ => return None,
        };
        let principal_tags = v
            .get("tags")?
            .as_array()?
            .iter()
            .map(|t| {
                Some((
                    t.get(0)?.as_str()?.to_string(),
                    t.get(1)?.as_str()?.to_string(),
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        let caller = Caller {
            account: text("account")?.parse().ok()?,
            principal_arn: text("principal")?,
            principal_type,
            access_key_id: text("accessKeyId"),
            principal_tags,
            session_policy: text("sessionPolicy"),
        };
        let mut ctx = RequestContext::new(caller, text("region")?.parse().ok()?);
        ctx.source_ip = text("sourceIp");
        ctx.user_agent = text("userAgent");
        Some(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handed_off_context_is_the_same_caller() {
        let mut caller = Caller::user("444455556666".parse().unwrap(), "alice");
        caller.access_key_id = Some("AKIAEXAMPLE".into());
        caller.principal_tags = vec![("team".into(), "db".into())];
        caller.session_policy = Some(r#"{"Statement":[]}"#.into());
        let mut ctx = RequestContext::new(caller, "us-west-2".parse().unwrap());
        ctx.source_ip = Some("10.1.2.3".into());
        let back = RequestContext::from_handoff(&ctx.to_handoff()).unwrap();
        assert_eq!(back.caller, ctx.caller);
        assert_eq!(back.region, ctx.region);
        assert_eq!(back.source_ip.as_deref(), Some("10.1.2.3"));
        assert!(back.via_service.is_none());
        for bad in ["", "{}", r#"{"type":"AWSService"}"#, "[1]"] {
            assert!(RequestContext::from_handoff(bad).is_none(), "{bad}");
        }
    }
}
