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
}

impl Caller {
    pub fn root(account: AccountId) -> Self {
        Caller {
            principal_arn: account.root_arn(),
            account,
            principal_type: PrincipalType::Root,
            access_key_id: None,
            principal_tags: Vec::new(),
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
}

impl RequestContext {
    pub fn new(caller: Caller, region: Region) -> Self {
        RequestContext {
            caller,
            region,
            via_service: None,
            source_ip: None,
            user_agent: None,
        }
    }

    /// The same caller acting through the EC2 service (volumes, snapshots).
    pub fn via_ec2(&self) -> Self {
        let mut c = self.clone();
        c.via_service = Some(format!("ec2.{}.amazonaws.com", self.region));
        c
    }
}
