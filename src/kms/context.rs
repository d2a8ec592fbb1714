//! Who is calling, from where: the request context every KMS operation
//! receives and the authorization point reads.

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
    /// `arn:aws:iam::<account>:root` or `arn:aws:iam::<account>:user/<name>`.
    pub principal_arn: String,
    pub principal_type: PrincipalType,
    pub access_key_id: Option<String>,
}

impl Caller {
    pub fn root(account: AccountId) -> Self {
        Caller {
            principal_arn: account.root_arn(),
            account,
            principal_type: PrincipalType::Root,
            access_key_id: None,
        }
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
