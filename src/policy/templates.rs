//! The policy texts KMS writes itself: the default key policy of CreateKey
//! and the managed policy of the AWS managed key `alias/aws/ebs`, in the
//! layout GetKeyPolicy returns them in.

/// AWS's default key policy ("key-default-1"): the account root may do
/// everything, which delegates access to the account's IAM policies.
pub fn default_key_policy(account: &str) -> String {
    format!(
        r#"{{
  "Version" : "2012-10-17",
  "Id" : "key-default-1",
  "Statement" : [ {{
    "Sid" : "Enable IAM User Permissions",
    "Effect" : "Allow",
    "Principal" : {{
      "AWS" : "arn:aws:iam::{account}:root"
    }},
    "Action" : "kms:*",
    "Resource" : "*"
  }} ]
}}"#
    )
}

/// The policy of the AWS managed key `alias/aws/ebs` ("auto-ebs-2"): use
/// only through EC2 in `region` by principals of `account`, and read-only
/// metadata access (plus RevokeGrant) for the account.
pub fn aws_managed_ebs_policy(account: &str, region: &str) -> String {
    format!(
        r#"{{
  "Version" : "2012-10-17",
  "Id" : "auto-ebs-2",
  "Statement" : [ {{
    "Sid" : "Allow access through EBS for all principals in the account that are authorized to use EBS",
    "Effect" : "Allow",
    "Principal" : {{
      "AWS" : "*"
    }},
    "Action" : [ "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey" ],
    "Resource" : "*",
    "Condition" : {{
      "StringEquals" : {{
        "kms:CallerAccount" : "{account}",
        "kms:ViaService" : "ec2.{region}.amazonaws.com"
      }}
    }}
  }}, {{
    "Sid" : "Allow direct access to key metadata to the account",
    "Effect" : "Allow",
    "Principal" : {{
      "AWS" : "arn:aws:iam::{account}:root"
    }},
    "Action" : [ "kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant" ],
    "Resource" : "*"
  }} ]
}}"#
    )
}
