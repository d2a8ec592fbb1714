//! Table-driven tests of the KMS decision on the AWS KMS developer guide's
//! examples: default and console policies, cross-account, conditions, tags,
//! the aws/ebs managed policy.

use serde_json::{json, Value};

use super::*;

const ACCT: &str = "111122223333";
const OTHER: &str = "444455556666";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ROOT: &str = "arn:aws:iam::111122223333:root";
const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const ADMIN: &str = "arn:aws:iam::111122223333:user/KMSAdmin";
const KEY_USER: &str = "arn:aws:iam::111122223333:user/KeyUser";
const EXT_ROOT: &str = "arn:aws:iam::444455556666:root";
const EXT_USER: &str = "arn:aws:iam::444455556666:user/carol";
const THIRD_ROOT: &str = "arn:aws:iam::999988887777:root";

use DenialReason::{
    ExplicitDenyInIdentityPolicy as IdDeny, ExplicitDenyInResourcePolicy as KeyDeny,
    NoIdentityPolicyAllows as NoId, NoResourcePolicyAllows as NoRes,
};

struct Case {
    name: &'static str,
    key_policy: String,
    identity: Vec<String>,
    principal: &'static str,
    action: &'static str,
    context: ConditionContext,
    grant: bool,
    expect: Option<Option<DenialReason>>,
}

fn case(
    name: &'static str,
    key_policy: &str,
    principal: &'static str,
    action: &'static str,
) -> Case {
    Case {
        name,
        key_policy: key_policy.to_string(),
        identity: Vec::new(),
        principal,
        action,
        context: ConditionContext::new(),
        grant: false,
        expect: None,
    }
}

impl Case {
    fn identity(mut self, policy: Value) -> Self {
        self.identity.push(policy.to_string());
        self
    }
    fn ctx(mut self, key: &str, value: impl Into<ConditionValue>) -> Self {
        self.context.insert(key, value);
        self
    }
    fn ec(mut self, pairs: &[(&str, &str)]) -> Self {
        self.context.set_encryption_context(pairs.iter().copied());
        self
    }
    fn via(self, region: &str) -> Self {
        self.ctx(keys::VIA_SERVICE, format!("ec2.{region}.amazonaws.com"))
    }
    fn grant(mut self) -> Self {
        self.grant = true;
        self
    }
    fn allow(mut self) -> Self {
        self.expect = Some(None);
        self
    }
    fn deny(mut self, reason: DenialReason) -> Self {
        self.expect = Some(Some(reason));
        self
    }
}

fn policy(statements: Value) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

fn id_allow(actions: Value, resource: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resource}]})
}

fn id_stmts(statements: Value) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

fn root_stmt() -> Value {
    json!({"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"})
}

/// The console's default policy with key administrators, key users (one of
/// them another account) and the persistent-resource statement.
fn console_policy() -> String {
    policy(json!([
        root_stmt(),
        {"Sid": "Allow access for Key Administrators", "Effect": "Allow", "Principal": {"AWS": ADMIN},
         "Action": ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                    "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource",
                    "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
                    "kms:RotateKeyOnDemand"],
         "Resource": "*"},
        {"Sid": "Allow use of the key", "Effect": "Allow", "Principal": {"AWS": [KEY_USER, EXT_ROOT]},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
         "Resource": "*"},
        {"Sid": "Allow attachment of persistent resources", "Effect": "Allow",
         "Principal": {"AWS": [KEY_USER, EXT_ROOT]},
         "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"], "Resource": "*",
         "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}}
    ]))
}

/// Alice may use the key under `condition` (no account statement).
fn alice_when(action: &str, condition: Value) -> String {
    policy(
        json!([{"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": action, "Resource": "*", "Condition": condition}]),
    )
}

/// The account statement plus a Deny for everyone under `condition`.
fn deny_when(action: &str, condition: Value) -> String {
    policy(
        json!([root_stmt(), {"Effect": "Deny", "Principal": "*", "Action": action, "Resource": "*", "Condition": condition}]),
    )
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let default = default_key_policy(ACCT);
    let console = console_policy();
    let ebs = aws_managed_ebs_policy(ACCT, "us-east-1");
    let kms_all = || id_allow(json!("kms:*"), "*");
    let decrypt_on_key = || id_allow(json!(["kms:Decrypt", "kms:Encrypt"]), KEY);
    let via_ec2 = alice_when("kms:Decrypt", json!({"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}));
    let via_like = alice_when("kms:Decrypt", json!({"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}));
    let deny_not_via = deny_when("kms:Decrypt", json!({"StringNotEquals": {"kms:ViaService": ["ec2.us-east-1.amazonaws.com", "rds.us-east-1.amazonaws.com"]}}));
    let caller_account = policy(json!([{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Encrypt", "Resource": "*", "Condition": {"StringEquals": {"kms:CallerAccount": ACCT}}}]));
    let ec_dept = alice_when("kms:Decrypt", json!({"StringEquals": {"kms:EncryptionContext:Department": "IT"}}));
    let ec_dept_lower = alice_when("kms:Decrypt", json!({"StringEquals": {"kms:EncryptionContext:department": "IT"}}));
    let ec_any = alice_when("kms:Decrypt", json!({"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "Department"}}));
    let ec_all = alice_when("kms:Decrypt", json!({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Department", "Project"]}}));
    let ec_all_required = alice_when("kms:Decrypt", json!({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Department", "Project"]}, "Null": {"kms:EncryptionContextKeys": "false"}}));
    let ec_ebs_like = alice_when("kms:Decrypt", json!({"StringLike": {"kms:EncryptionContext:aws:ebs:id": "vol-*"}}));
    let not_principal = |listed: Value| policy(json!([root_stmt(), {"Effect": "Deny", "NotPrincipal": {"AWS": listed}, "Action": ["kms:ScheduleKeyDeletion", "kms:PutKeyPolicy"], "Resource": "*"}]));
    let admins_only = not_principal(json!([ADMIN, ROOT]));
    let admin_without_root = not_principal(json!(ADMIN));
    let not_action_allow = policy(json!([{"Effect": "Allow", "Principal": {"AWS": ALICE}, "NotAction": ["kms:ScheduleKeyDeletion", "kms:Delete*"], "Resource": "*"}]));
    let not_action_deny = policy(json!([root_stmt(), {"Effect": "Deny", "Principal": {"AWS": ALICE}, "NotAction": ["kms:Encrypt", "kms:Decrypt", "kms:Describe*"], "Resource": "*"}]));
    let key_denies_alice = policy(json!([root_stmt(), {"Effect": "Deny", "Principal": {"AWS": ALICE}, "Action": "kms:Decrypt", "Resource": "*"}]));
    let key_allows_alice = policy(json!([{"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": "kms:*", "Resource": "*"}]));
    let id_deny_decrypt = || id_stmts(json!([{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}, {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": KEY}]));
    let if_exists = alice_when("kms:Decrypt", json!({"StringEqualsIfExists": {"kms:EncryptionContext:Department": "IT"}}));
    let deny_not_via_if_exists = deny_when("kms:Decrypt", json!({"StringNotEqualsIfExists": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}));
    let require_ec = deny_when("kms:Decrypt", json!({"Null": {"kms:EncryptionContextKeys": "true"}}));
    let rotation = policy(json!([{"Effect": "Allow", "Principal": {"AWS": ADMIN}, "Action": "kms:EnableKeyRotation", "Resource": "*", "Condition": {"NumericLessThanEquals": {"kms:RotationPeriodInDays": 180}}}]));
    let rotation_min = policy(json!([{"Effect": "Allow", "Principal": {"AWS": ADMIN}, "Action": "kms:EnableKeyRotation", "Resource": "*", "Condition": {"NumericGreaterThanEquals": {"kms:RotationPeriodInDays": "365"}}}]));
    let until_2030 = alice_when("kms:Decrypt", json!({"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}}));
    let after_epoch = alice_when("kms:Decrypt", json!({"DateGreaterThan": {"aws:CurrentTime": 1704067200}}));
    let secure = policy(json!([{"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": "kms:Decrypt", "Resource": "*"}, {"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]));
    let abac = || id_stmts(json!([{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringEquals": {"aws:ResourceTag/Project": "Alpha"}}}]));
    let abac_lower = || id_stmts(json!([{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringEquals": {"aws:resourcetag/project": "Alpha"}}}]));
    let request_tag = || id_stmts(json!([{"Effect": "Allow", "Action": "kms:TagResource", "Resource": "*", "Condition": {"StringEquals": {"aws:RequestTag/Owner": "alice"}, "ForAllValues:StringEquals": {"aws:TagKeys": ["Owner", "Project"]}}}]));
    let no_aws_tags = || id_stmts(json!([{"Effect": "Allow", "Action": "kms:TagResource", "Resource": "*"}, {"Effect": "Deny", "Action": "kms:TagResource", "Resource": "*", "Condition": {"ForAnyValue:StringLike": {"aws:TagKeys": "aws:*"}}}]));
    let grant_ops = policy(json!([{"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": "kms:CreateGrant", "Resource": "*", "Condition": {"ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt", "Encrypt"]}}}]));
    let aliases = || id_stmts(json!([{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/finance"}}}]));
    let ops_like = policy(json!([{"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:user/ops-*"}}}]));
    let role = policy(json!([{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/Decryptor"}, "Action": "kms:Decrypt", "Resource": "*"}]));
    let ext_decrypt = || id_allow(json!("kms:Decrypt"), KEY);
    let ext_all = || id_allow(json!("kms:*"), "*");

    vec![
        // The default key policy delegates everything to IAM.
        case("default: root decrypts", &default, ROOT, "kms:Decrypt").allow(),
        case("default: root puts the key policy", &default, ROOT, "kms:PutKeyPolicy").allow(),
        case("default: user without IAM policy", &default, ALICE, "kms:Decrypt").deny(NoId),
        case("default: user with IAM allow on the key", &default, ALICE, "kms:Decrypt").identity(decrypt_on_key()).allow(),
        case("default: IAM allows Decrypt, asks GenerateDataKey", &default, ALICE, "kms:GenerateDataKey").identity(decrypt_on_key()).deny(NoId),
        case("default: IAM kms:* on *", &default, ALICE, "kms:ScheduleKeyDeletion").identity(kms_all()).allow(),
        case("default: IAM allow on another key", &default, ALICE, "kms:Decrypt").identity(id_allow(json!("kms:Decrypt"), "arn:aws:kms:us-east-1:111122223333:key/other")).deny(NoId),
        case("default: IAM allow on key/* wildcard", &default, ALICE, "kms:Decrypt").identity(id_allow(json!("kms:Decrypt"), "arn:aws:kms:us-east-1:111122223333:key/*")).allow(),
        case("default: IAM allows kms:* but denies Decrypt", &default, ALICE, "kms:Decrypt").identity(id_deny_decrypt()).deny(IdDeny),
        case("default: one IAM policy allows, another denies", &default, ALICE, "kms:Decrypt").identity(decrypt_on_key()).identity(id_stmts(json!({"Effect": "Deny", "Action": "kms:*", "Resource": "*"}))).deny(IdDeny),
        case("default: other account's root", &default, EXT_ROOT, "kms:Decrypt").deny(NoRes),
        case("default: grant without IAM policy", &default, ALICE, "kms:Decrypt").grant().allow(),
        case("default: cross-account grant", &default, EXT_USER, "kms:Decrypt").grant().allow(),
        case("default: grant does not beat an IAM deny", &default, ALICE, "kms:Decrypt").identity(id_deny_decrypt()).grant().deny(IdDeny),
        case("default: grant cannot give a non cross-account action", &default, EXT_USER, "kms:ScheduleKeyDeletion").grant().deny(NoRes),
        // The console's policy: administrators, users, persistent resources.
        case("console: admin puts the policy", &console, ADMIN, "kms:PutKeyPolicy").allow(),
        case("console: admin schedules deletion", &console, ADMIN, "kms:ScheduleKeyDeletion").allow(),
        case("console: admin cannot decrypt without IAM", &console, ADMIN, "kms:Decrypt").deny(NoId),
        case("console: key user decrypts", &console, KEY_USER, "kms:Decrypt").allow(),
        case("console: key user GenerateDataKeyWithoutPlaintext", &console, KEY_USER, "kms:GenerateDataKeyWithoutPlaintext").allow(),
        case("console: key user ReEncryptFrom", &console, KEY_USER, "kms:ReEncryptFrom").allow(),
        case("console: key user cannot schedule deletion", &console, KEY_USER, "kms:ScheduleKeyDeletion").deny(NoId),
        case("console: key user grant for AWS resource", &console, KEY_USER, "kms:CreateGrant").ctx(keys::GRANT_IS_FOR_AWS_RESOURCE, true).allow(),
        case("console: key user grant, key absent", &console, KEY_USER, "kms:CreateGrant").deny(NoId),
        case("console: key user grant not for AWS resource", &console, KEY_USER, "kms:CreateGrant").ctx(keys::GRANT_IS_FOR_AWS_RESOURCE, false).deny(NoId),
        case("console: external user with IAM allow", &console, EXT_USER, "kms:Decrypt").identity(ext_decrypt()).allow(),
        case("console: external user without IAM", &console, EXT_USER, "kms:Decrypt").deny(NoId),
        case("console: external root decrypts", &console, EXT_ROOT, "kms:Decrypt").allow(),
        case("console: external root cannot schedule deletion", &console, EXT_ROOT, "kms:ScheduleKeyDeletion").deny(NoRes),
        case("console: external user cannot put the policy", &console, EXT_USER, "kms:PutKeyPolicy").identity(ext_all()).deny(NoRes),
        case("console: external user grant for AWS resource", &console, EXT_USER, "kms:CreateGrant").identity(ext_all()).ctx(keys::GRANT_IS_FOR_AWS_RESOURCE, "true").allow(),
        case("console: external user Encrypt not in IAM", &console, EXT_USER, "kms:Encrypt").identity(ext_decrypt()).deny(NoId),
        case("console: a third account", &console, THIRD_ROOT, "kms:Decrypt").deny(NoRes),
        // kms:ViaService and kms:CallerAccount.
        case("via: through ec2 in the region", &via_ec2, ALICE, "kms:Decrypt").via("us-east-1").allow(),
        case("via: direct call", &via_ec2, ALICE, "kms:Decrypt").deny(NoRes),
        case("via: ec2 of another region", &via_ec2, ALICE, "kms:Decrypt").via("eu-west-1").deny(NoRes),
        case("via: StringLike any region", &via_like, ALICE, "kms:Decrypt").via("eu-west-1").allow(),
        case("via: deny unless via listed services, direct", &deny_not_via, ALICE, "kms:Decrypt").identity(kms_all()).deny(KeyDeny),
        case("via: deny unless via listed services, via ec2", &deny_not_via, ALICE, "kms:Decrypt").identity(kms_all()).via("us-east-1").allow(),
        case("via: IfExists deny, direct", &deny_not_via_if_exists, ALICE, "kms:Decrypt").identity(kms_all()).deny(KeyDeny),
        case("via: IfExists deny, via ec2", &deny_not_via_if_exists, ALICE, "kms:Decrypt").identity(kms_all()).via("us-east-1").allow(),
        case("caller account: same account, no IAM needed", &caller_account, ALICE, "kms:Encrypt").allow(),
        case("caller account: other account", &caller_account, EXT_USER, "kms:Encrypt").identity(ext_all()).deny(NoRes),
        // Encryption context.
        case("ec: Department=IT", &ec_dept, ALICE, "kms:Decrypt").ec(&[("Department", "IT")]).allow(),
        case("ec: Department=HR", &ec_dept, ALICE, "kms:Decrypt").ec(&[("Department", "HR")]).deny(NoRes),
        case("ec: context key in the condition key name is case-insensitive", &ec_dept_lower, ALICE, "kms:Decrypt").ec(&[("Department", "IT")]).allow(),
        case("ec: the value stays case-sensitive", &ec_dept_lower, ALICE, "kms:Decrypt").ec(&[("Department", "it")]).deny(NoRes),
        case("ec: ForAnyValue key present", &ec_any, ALICE, "kms:Decrypt").ec(&[("Department", "IT"), ("Other", "x")]).allow(),
        case("ec: ForAnyValue without context", &ec_any, ALICE, "kms:Decrypt").deny(NoRes),
        case("ec: ForAllValues subset", &ec_all, ALICE, "kms:Decrypt").ec(&[("Department", "IT"), ("Project", "Alpha")]).allow(),
        case("ec: ForAllValues extra key", &ec_all, ALICE, "kms:Decrypt").ec(&[("Department", "IT"), ("Secret", "x")]).deny(NoRes),
        case("ec: ForAllValues without context matches", &ec_all, ALICE, "kms:Decrypt").allow(),
        case("ec: ForAllValues + Null false needs a context", &ec_all_required, ALICE, "kms:Decrypt").deny(NoRes),
        case("ec: ForAllValues + Null false with context", &ec_all_required, ALICE, "kms:Decrypt").ec(&[("Project", "Alpha")]).allow(),
        case("ec: StringLike aws:ebs:id vol-*", &ec_ebs_like, ALICE, "kms:Decrypt").ec(&[("aws:ebs:id", "vol-0123456789abcdef0")]).allow(),
        case("ec: StringLike aws:ebs:id snap", &ec_ebs_like, ALICE, "kms:Decrypt").ec(&[("aws:ebs:id", "snap-0123")]).deny(NoRes),
        case("ec: IfExists without context", &if_exists, ALICE, "kms:Decrypt").allow(),
        case("ec: IfExists with a wrong value", &if_exists, ALICE, "kms:Decrypt").ec(&[("Department", "HR")]).deny(NoRes),
        case("ec: Null true denies missing context", &require_ec, ALICE, "kms:Decrypt").identity(kms_all()).deny(KeyDeny),
        case("ec: Null true passes with context", &require_ec, ALICE, "kms:Decrypt").identity(kms_all()).ec(&[("a", "b")]).allow(),
        // NotPrincipal, NotAction.
        case("NotPrincipal: listed admin", &admins_only, ADMIN, "kms:ScheduleKeyDeletion").identity(kms_all()).allow(),
        case("NotPrincipal: other user denied", &admins_only, ALICE, "kms:ScheduleKeyDeletion").identity(kms_all()).deny(KeyDeny),
        case("NotPrincipal: listed root", &admins_only, ROOT, "kms:PutKeyPolicy").allow(),
        case("NotPrincipal: other user, unlisted action", &admins_only, ALICE, "kms:Decrypt").identity(kms_all()).allow(),
        case("NotPrincipal: user listed without its account", &admin_without_root, ADMIN, "kms:ScheduleKeyDeletion").identity(kms_all()).deny(KeyDeny),
        case("NotAction allow: Decrypt", &not_action_allow, ALICE, "kms:Decrypt").allow(),
        case("NotAction allow: ScheduleKeyDeletion", &not_action_allow, ALICE, "kms:ScheduleKeyDeletion").deny(NoRes),
        case("NotAction allow: DeleteAlias", &not_action_allow, ALICE, "kms:DeleteAlias").deny(NoRes),
        case("NotAction deny: Encrypt stays", &not_action_deny, ALICE, "kms:Encrypt").identity(kms_all()).allow(),
        case("NotAction deny: DisableKey", &not_action_deny, ALICE, "kms:DisableKey").identity(kms_all()).deny(KeyDeny),
        // Explicit deny: key policy versus identity policy.
        case("deny: key policy denies, IAM allows", &key_denies_alice, ALICE, "kms:Decrypt").identity(kms_all()).deny(KeyDeny),
        case("deny: key policy allows, IAM denies", &key_allows_alice, ALICE, "kms:Decrypt").identity(id_deny_decrypt()).deny(IdDeny),
        case("deny: both deny, key policy named", &key_denies_alice, ALICE, "kms:Decrypt").identity(id_deny_decrypt()).deny(KeyDeny),
        case("deny: key policy allows directly, no IAM", &key_allows_alice, ALICE, "kms:Decrypt").allow(),
        // Numeric, Date, Bool, ARN.
        case("numeric: rotation 90 <= 180", &rotation, ADMIN, "kms:EnableKeyRotation").ctx(keys::ROTATION_PERIOD_IN_DAYS, 90i64).allow(),
        case("numeric: rotation 365 > 180", &rotation, ADMIN, "kms:EnableKeyRotation").ctx(keys::ROTATION_PERIOD_IN_DAYS, 365i64).deny(NoRes),
        case("numeric: rotation missing", &rotation_min, ADMIN, "kms:EnableKeyRotation").deny(NoRes),
        case("numeric: rotation 400 >= 365", &rotation_min, ADMIN, "kms:EnableKeyRotation").ctx(keys::ROTATION_PERIOD_IN_DAYS, 400u32).allow(),
        case("date: before the deadline", &until_2030, ALICE, "kms:Decrypt").ctx(keys::CURRENT_TIME, "2025-06-01T10:00:00Z").allow(),
        case("date: after the deadline", &until_2030, ALICE, "kms:Decrypt").ctx(keys::CURRENT_TIME, "2031-01-01T00:00:00Z").deny(NoRes),
        case("date: epoch seconds", &after_epoch, ALICE, "kms:Decrypt").ctx(keys::CURRENT_TIME, "2024-03-01T00:00:00Z").allow(),
        case("date: epoch seconds, too early", &after_epoch, ALICE, "kms:Decrypt").ctx(keys::CURRENT_TIME, "2023-12-31T23:59:59Z").deny(NoRes),
        case("bool: insecure transport denied", &secure, ALICE, "kms:Decrypt").ctx("aws:SecureTransport", false).deny(KeyDeny),
        case("bool: secure transport", &secure, ALICE, "kms:Decrypt").ctx("aws:SecureTransport", true).allow(),
        case("arn: ArnLike ops-*", &ops_like, "arn:aws:iam::111122223333:user/ops-bob", "kms:Decrypt").allow(),
        case("arn: ArnLike other user", &ops_like, ALICE, "kms:Decrypt").deny(NoRes),
        case("role: assumed-role session", &role, "arn:aws:sts::111122223333:assumed-role/Decryptor/s1", "kms:Decrypt").allow(),
        case("role: session of another role", &role, "arn:aws:sts::111122223333:assumed-role/Other/s1", "kms:Decrypt").deny(NoRes),
        // Tags, grant operations, aliases.
        case("tag: ResourceTag matches", &default, ALICE, "kms:Decrypt").identity(abac()).ctx("aws:ResourceTag/Project", "Alpha").allow(),
        case("tag: ResourceTag differs", &default, ALICE, "kms:Decrypt").identity(abac()).ctx("aws:ResourceTag/Project", "Beta").deny(NoId),
        case("tag: tag key case-insensitive", &default, ALICE, "kms:Decrypt").identity(abac_lower()).ctx("aws:ResourceTag/Project", "Alpha").allow(),
        case("tag: RequestTag and TagKeys", &default, ALICE, "kms:TagResource").identity(request_tag()).ctx("aws:RequestTag/Owner", "alice").ctx(keys::TAG_KEYS, vec!["Owner"]).allow(),
        case("tag: TagKeys outside the set", &default, ALICE, "kms:TagResource").identity(request_tag()).ctx("aws:RequestTag/Owner", "alice").ctx(keys::TAG_KEYS, vec!["Owner", "Secret"]).deny(NoId),
        case("tag: RequestTag other owner", &default, ALICE, "kms:TagResource").identity(request_tag()).ctx("aws:RequestTag/Owner", "bob").ctx(keys::TAG_KEYS, vec!["Owner"]).deny(NoId),
        case("tag: aws: tag keys denied", &default, ALICE, "kms:TagResource").identity(no_aws_tags()).ctx(keys::TAG_KEYS, vec!["Owner", "aws:x"]).deny(IdDeny),
        case("tag: ordinary tag keys", &default, ALICE, "kms:TagResource").identity(no_aws_tags()).ctx(keys::TAG_KEYS, vec!["Owner"]).allow(),
        case("grant ops: subset", &grant_ops, ALICE, "kms:CreateGrant").ctx(keys::GRANT_OPERATIONS, vec!["Decrypt"]).allow(),
        case("grant ops: RetireGrant too", &grant_ops, ALICE, "kms:CreateGrant").ctx(keys::GRANT_OPERATIONS, vec!["Decrypt", "RetireGrant"]).deny(NoRes),
        case("aliases: key has alias/finance", &default, ALICE, "kms:Decrypt").identity(aliases()).ctx(keys::RESOURCE_ALIASES, vec!["alias/a", "alias/finance"]).allow(),
        case("aliases: key without it", &default, ALICE, "kms:Decrypt").identity(aliases()).ctx(keys::RESOURCE_ALIASES, vec!["alias/a"]).deny(NoId),
        // The AWS managed key alias/aws/ebs.
        case("ebs: data key via ec2 in the account", &ebs, ALICE, "kms:GenerateDataKeyWithoutPlaintext").via("us-east-1").allow(),
        case("ebs: decrypt via ec2", &ebs, ALICE, "kms:Decrypt").via("us-east-1").allow(),
        case("ebs: grant via ec2", &ebs, ALICE, "kms:CreateGrant").via("us-east-1").allow(),
        case("ebs: direct decrypt", &ebs, ALICE, "kms:Decrypt").identity(kms_all()).deny(NoRes),
        case("ebs: direct decrypt by root", &ebs, ROOT, "kms:Decrypt").deny(NoRes),
        case("ebs: via ec2 of another region", &ebs, ALICE, "kms:Decrypt").via("us-west-2").deny(NoRes),
        case("ebs: another account via ec2", &ebs, EXT_USER, "kms:Decrypt").identity(ext_all()).via("us-east-1").deny(NoRes),
        case("ebs: another account's root via ec2", &ebs, EXT_ROOT, "kms:Decrypt").via("us-east-1").deny(NoRes),
        case("ebs: root describes", &ebs, ROOT, "kms:DescribeKey").allow(),
        case("ebs: user describes with IAM", &ebs, ALICE, "kms:DescribeKey").identity(kms_all()).allow(),
        case("ebs: user describes without IAM", &ebs, ALICE, "kms:DescribeKey").deny(NoId),
        case("ebs: root cannot schedule deletion", &ebs, ROOT, "kms:ScheduleKeyDeletion").deny(NoRes),
        case("ebs: root cannot put the policy", &ebs, ROOT, "kms:PutKeyPolicy").deny(NoRes),
    ]
}

fn account_of(arn: &str) -> String {
    arn.split(':').nth(4).unwrap_or_default().to_string()
}

#[test]
fn kms_authorization_table() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let key_policy = PolicyDocument::parse_key_policy(&c.key_policy)
            .unwrap_or_else(|e| panic!("{}: key policy: {e}", c.name));
        let identity: Vec<std::sync::Arc<PolicyDocument>> = c
            .identity
            .iter()
            .map(|p| {
                PolicyDocument::shared_identity_policy(p)
                    .unwrap_or_else(|e| panic!("{}: identity policy: {e}", c.name))
            })
            .collect();
        let account = account_of(c.principal);
        // What the request path always sets.
        let context = c
            .context
            .clone()
            .with(keys::CALLER_ACCOUNT, account.as_str())
            .with(keys::PRINCIPAL_ARN, c.principal)
            .with(keys::PRINCIPAL_ACCOUNT, account.as_str());
        let req = AuthzRequest {
            principal_arn: c.principal.to_string(),
            principal_account: account,
            action: c.action.to_string(),
            resource: KEY.to_string(),
            context,
            session_policy: None,
        };
        let input = AuthzInput::new(&req, ACCT, &key_policy, &identity, c.grant);
        let got = authorize(&input).err().map(|d| d.reason);
        let want = c
            .expect
            .unwrap_or_else(|| panic!("{}: no expectation", c.name));
        if got != want {
            failures.push(format!("{}: expected {want:?}, got {got:?}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn denial(reason: DenialReason, principal: &str) -> String {
    Denial {
        reason,
        principal_arn: principal.into(),
        action: "kms:Decrypt".into(),
        resource: KEY.into(),
    }
    .message()
}

#[test]
fn denial_messages_are_the_aws_ones() {
    let head = format!("User: {ROOT} is not authorized to perform: kms:Decrypt on resource: {KEY}");
    assert_eq!(
        denial(NoRes, ROOT),
        format!("{head} because no resource-based policy allows the kms:Decrypt action")
    );
    assert_eq!(
        denial(NoId, ROOT),
        format!("{head} because no identity-based policy allows the kms:Decrypt action")
    );
    assert_eq!(
        denial(KeyDeny, ROOT),
        format!("{head} with an explicit deny in a resource-based policy")
    );
    assert_eq!(
        denial(IdDeny, ROOT),
        format!("{head} with an explicit deny in an identity-based policy")
    );
    let e: crate::kms::KmsError = Denial {
        reason: NoRes,
        principal_arn: ALICE.into(),
        action: "kms:Decrypt".into(),
        resource: KEY.into(),
    }
    .into();
    assert_eq!(e.code, crate::kms::ErrorCode::AccessDeniedException);
    assert!(e
        .message
        .starts_with("User: arn:aws:iam::111122223333:user/alice is not authorized"));
}

#[test]
fn a_real_denial_names_the_caller_action_and_key() {
    let key_policy = PolicyDocument::parse_key_policy(&default_key_policy(ACCT)).unwrap();
    let req = AuthzRequest {
        principal_arn: EXT_ROOT.into(),
        principal_account: OTHER.into(),
        action: "kms:Decrypt".into(),
        resource: KEY.into(),
        context: ConditionContext::new(),
        session_policy: None,
    };
    let d = authorize(&AuthzInput::new(&req, ACCT, &key_policy, &[], false)).unwrap_err();
    assert_eq!(
        d.to_string(),
        format!("User: {EXT_ROOT} is not authorized to perform: kms:Decrypt on resource: {KEY} because no resource-based policy allows the kms:Decrypt action")
    );
}

#[test]
fn cross_account_actions() {
    for a in [
        "kms:Decrypt",
        "kms:ReEncryptTo",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:DescribeKey",
        "kms:CreateGrant",
        "KMS:GetPublicKey",
        "kms:RevokeGrant",
    ] {
        assert!(cross_account_action(a), "{a}");
    }
    for a in [
        "kms:PutKeyPolicy",
        "kms:ScheduleKeyDeletion",
        "kms:EnableKey",
        "kms:TagResource",
        "kms:ListAliases",
        "kms:CreateKey",
    ] {
        assert!(!cross_account_action(a), "{a}");
    }
}

#[test]
fn evaluate_reports_each_effect() {
    let doc = PolicyDocument::parse_key_policy(&policy(json!([
        {"Effect": "Allow", "Principal": {"AWS": ACCT}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": ALICE}, "Action": "kms:Decrypt", "Resource": "*"}
    ])))
    .unwrap();
    let req = |p: &str, action: &str| AuthzRequest {
        principal_arn: p.into(),
        principal_account: account_of(p),
        action: action.into(),
        resource: KEY.into(),
        context: ConditionContext::new(),
        session_policy: None,
    };
    assert_eq!(
        doc.evaluate(&req(ALICE, "kms:Decrypt")),
        Effect::ExplicitDeny
    );
    assert_eq!(doc.evaluate(&req(ALICE, "kms:Encrypt")), Effect::Allow);
    assert_eq!(doc.evaluate(&req(ADMIN, "kms:Decrypt")), Effect::Allow);
    assert_eq!(
        doc.evaluate(&req(EXT_USER, "kms:Decrypt")),
        Effect::NotApplicable
    );
}

#[test]
fn lockout_check_follows_put_key_policy() {
    let check = |text: &str, caller: &str| {
        let doc = PolicyDocument::parse_key_policy(text).unwrap();
        lockout_check(&doc, caller, &account_of(caller), KEY)
    };
    assert_eq!(check(&default_key_policy(ACCT), ROOT), Ok(()));
    assert_eq!(
        check(&default_key_policy(ACCT), ALICE),
        Ok(()),
        "the account root statement covers the caller"
    );
    assert_eq!(check(&console_policy(), ADMIN), Ok(()));
    let only_bob = policy(
        json!([{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:user/bob"}, "Action": "kms:*", "Resource": "*"}]),
    );
    assert_eq!(check(&only_bob, ALICE), Err(PolicyError::Lockout));
    assert_eq!(
        check(&only_bob, "arn:aws:iam::111122223333:user/bob"),
        Ok(())
    );
    let use_only = policy(
        json!([{"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"}]),
    );
    assert_eq!(check(&use_only, ROOT), Err(PolicyError::Lockout));
    let denies_put = policy(
        json!([root_stmt(), {"Effect": "Deny", "Principal": "*", "Action": "kms:PutKeyPolicy", "Resource": "*"}]),
    );
    assert_eq!(check(&denies_put, ROOT), Err(PolicyError::Lockout));
    let caller_account = policy(
        json!([{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"StringEquals": {"kms:CallerAccount": ACCT}}}]),
    );
    assert_eq!(check(&caller_account, ALICE), Ok(()));
    assert_eq!(
        check(&aws_managed_ebs_policy(ACCT, "us-east-1"), ROOT),
        Err(PolicyError::Lockout)
    );
    assert_eq!(
        PolicyError::Lockout.to_string(),
        "The new key policy will not allow you to update the key policy in the future."
    );
}

#[test]
fn templates_parse_as_key_policies() {
    let d = PolicyDocument::parse_key_policy(&default_key_policy(ACCT)).unwrap();
    assert_eq!(d.id(), Some("key-default-1"));
    assert_eq!(d.statements()[0].sid(), Some("Enable IAM User Permissions"));
    let e = PolicyDocument::parse_key_policy(&aws_managed_ebs_policy(ACCT, "eu-west-1")).unwrap();
    assert_eq!(e.id(), Some("auto-ebs-2"));
    assert_eq!(e.statements().len(), 2);
    let text = aws_managed_ebs_policy(ACCT, "eu-west-1");
    assert!(text.contains("\"kms:ViaService\" : \"ec2.eu-west-1.amazonaws.com\""));
    assert!(text.contains("\"kms:CallerAccount\" : \"111122223333\""));
}
