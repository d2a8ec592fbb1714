//! Authorization end to end through the KMS: IAM users, key policies,
//! cross-account use by ARN, grants, and the audit log's chain.

mod common;

use common::*;
use keyvol::ids::AccountId;
use keyvol::kms::ErrorCode::*;
use keyvol::kms::RequestContext;
use serde_json::{json, Value};

fn as_profile(e: &Env, profile: &str) -> RequestContext {
    RequestContext::new(e.iam.profile_caller(profile).unwrap(), e.ctx.region.clone())
}

fn user(e: &Env, account: &AccountId, name: &str, policy: Option<Value>) -> RequestContext {
    e.iam.create_user(account, name, Some(name)).unwrap();
    if let Some(p) = policy {
        e.iam
            .put_user_policy(account, name, "p", &p.to_string())
            .unwrap();
    }
    as_profile(e, name)
}

#[test]
fn iam_users_need_an_identity_policy_under_the_default_key_policy() {
    let e = env();
    let a = AccountId::default_account();
    let key = e.create_key();
    let nobody = user(&e, &a, "nobody", None);
    let enc = json!({"KeyId": key, "Plaintext": b64(b"x")});
    let err = e.kms.call(&nobody, "Encrypt", enc.clone()).unwrap_err();
    assert_eq!(err.code, AccessDeniedException);
    assert_eq!(
        err.message,
        format!("User: arn:aws:iam::111122223333:user/nobody is not authorized to perform: kms:Encrypt on resource: arn:aws:kms:us-east-1:111122223333:key/{key} because no identity-based policy allows the kms:Encrypt action")
    );
    let alice = user(
        &e,
        &a,
        "alice",
        Some(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"},
            {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringEquals": {"kms:EncryptionContext:env": "prod"}}}
        ]})),
    );
    let ct = e
        .kms
        .call(
            &alice,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"x"), "EncryptionContext": {"env": "dev"}}),
        )
        .unwrap();
    assert!(e
        .kms
        .call(
            &alice,
            "Decrypt",
            json!({"CiphertextBlob": ct["CiphertextBlob"], "EncryptionContext": {"env": "dev"}})
        )
        .is_ok());
    let ct = e
        .kms
        .call(
            &alice,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"x"), "EncryptionContext": {"env": "prod"}}),
        )
        .unwrap();
    let err = e
        .kms
        .call(
            &alice,
            "Decrypt",
            json!({"CiphertextBlob": ct["CiphertextBlob"], "EncryptionContext": {"env": "prod"}}),
        )
        .unwrap_err();
    assert_eq!(err.code, AccessDeniedException);
    assert!(
        err.message
            .contains("with an explicit deny in an identity-based policy"),
        "{}",
        err.message
    );
    assert_eq!(
        e.kms
            .call(&alice, "DisableKey", json!({"KeyId": key}))
            .unwrap_err()
            .code,
        AccessDeniedException
    );
    assert_eq!(
        e.kms.call(&alice, "CreateKey", json!({})).unwrap_err().code,
        AccessDeniedException
    );
}

#[test]
fn key_policy_can_name_a_user_directly_and_lockout_is_refused() {
    let e = env();
    let a = AccountId::default_account();
    let bob = user(&e, &a, "bob", None);
    let key = e.create_key();
    let arn = format!("arn:aws:kms:us-east-1:111122223333:key/{key}");
    // A policy that would lock the caller (root) out of PutKeyPolicy.
    let lockout = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:user/bob"}, "Action": "kms:Encrypt", "Resource": "*"}]});
    let err = e
        .call(
            "PutKeyPolicy",
            json!({"KeyId": key, "Policy": lockout.to_string()}),
        )
        .unwrap_err();
    assert_eq!(err.code, MalformedPolicyDocumentException);
    let p = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "admin", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "bob", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:user/bob"}, "Action": "kms:Encrypt", "Resource": "*"}]});
    e.ok(
        "PutKeyPolicy",
        json!({"KeyId": key, "Policy": p.to_string()}),
    );
    assert!(e
        .kms
        .call(
            &bob,
            "Encrypt",
            json!({"KeyId": arn, "Plaintext": b64(b"x")})
        )
        .is_ok());
    assert_eq!(
        e.kms
            .call(
                &bob,
                "GenerateDataKey",
                json!({"KeyId": key, "KeySpec": "AES_256"})
            )
            .unwrap_err()
            .code,
        AccessDeniedException
    );
    // Bypassing the check is allowed, and then it really locks out.
    e.ok("PutKeyPolicy", json!({"KeyId": key, "Policy": lockout.to_string(), "BypassPolicyLockoutSafetyCheck": true}));
    assert_eq!(
        e.code("DescribeKey", json!({"KeyId": key})),
        Some(AccessDeniedException)
    );
    // Malformed documents name the problem.
    let k2 = e.create_key();
    let err = e
        .call(
            "PutKeyPolicy",
            json!({"KeyId": k2, "Policy": "{\"Statement\": [{\"Effect\": \"Allow\"}]}"}),
        )
        .unwrap_err();
    assert_eq!(err.code, MalformedPolicyDocumentException);
    assert!(!err.message.is_empty());
    let big = format!(
        "{{\"Version\":\"2012-10-17\",\"Statement\":[],\"Id\":\"{}\"}}",
        "x".repeat(33000)
    );
    assert_eq!(
        e.code("PutKeyPolicy", json!({"KeyId": k2, "Policy": big})),
        Some(LimitExceededException)
    );
}

#[test]
fn cross_account_use_by_arn_needs_both_policies() {
    let e = env();
    let b: AccountId = "444455556666".parse().unwrap();
    e.iam.create_account(&b, "acct-b").unwrap();
    let b_root = as_profile(&e, "acct-b");
    let key = e.create_key();
    let arn = format!("arn:aws:kms:us-east-1:111122223333:key/{key}");
    let ct = e.ok(
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"shared secret")}),
    )["CiphertextBlob"]
        .clone();
    let dec = |ctx: &RequestContext| {
        e.kms
            .call(ctx, "Decrypt", json!({"CiphertextBlob": ct, "KeyId": arn}))
    };
    // Before A's key policy names B: denied.
    let err = dec(&b_root).unwrap_err();
    assert_eq!(err.code, AccessDeniedException);
    assert!(
        err.message
            .contains("because no resource-based policy allows the kms:Decrypt action"),
        "{}",
        err.message
    );
    // By key id alone, B looks in its own account: not found.
    assert_eq!(
        e.kms
            .call(&b_root, "DescribeKey", json!({"KeyId": key}))
            .unwrap_err()
            .code,
        NotFoundException
    );
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "Allow B", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
         "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant", "kms:DisableKey", "kms:PutKeyPolicy"], "Resource": "*"}]});
    e.ok(
        "PutKeyPolicy",
        json!({"KeyId": key, "Policy": policy.to_string()}),
    );
    // B's root: allowed by A's key policy plus its own implicit identity permissions.
    assert_eq!(unb64(&dec(&b_root).unwrap()["Plaintext"]), b"shared secret");
    // A user of B needs B's identity policy too.
    let carol = user(&e, &b, "carol", None);
    let err = dec(&carol).unwrap_err();
    assert!(
        err.message
            .contains("because no identity-based policy allows"),
        "{}",
        err.message
    );
    e.iam.put_user_policy(&b, "carol", "use-a", &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": arn}]}).to_string()).unwrap();
    assert!(dec(&carol).is_ok());
    assert!(e
        .kms
        .call(&b_root, "DescribeKey", json!({"KeyId": arn}))
        .is_ok());
    // Management operations never work across accounts, even when the policy lists them.
    for (op, req) in [
        ("DisableKey", json!({"KeyId": arn})),
        (
            "PutKeyPolicy",
            json!({"KeyId": arn, "Policy": policy.to_string()}),
        ),
    ] {
        assert_eq!(
            e.kms.call(&b_root, op, req).unwrap_err().code,
            AccessDeniedException,
            "{op}"
        );
    }
    // The audit log records the call in both accounts' view.
    let events = e
        .kms
        .audit_list(&keyvol::kms::audit::AuditFilter {
            account: Some("444455556666".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(events.iter().any(|ev| ev["eventName"] == "Decrypt"
        && ev["recipientAccountId"] == "111122223333"
        && ev["userIdentity"]["accountId"] == "444455556666"));
}

#[test]
fn grants_constraints_tokens_retire_revoke_and_narrowing() {
    let e = env();
    let a = AccountId::default_account();
    let key = e.create_key();
    let dave = user(&e, &a, "dave", None);
    let erin = user(&e, &a, "erin", None);
    let dave_arn = "arn:aws:iam::111122223333:user/dave";
    let erin_arn = "arn:aws:iam::111122223333:user/erin";
    let enc = |ctx: &RequestContext, ec: Value| {
        e.kms.call(
            ctx,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"g"), "EncryptionContext": ec}),
        )
    };
    assert_eq!(
        enc(&dave, json!({"tenant": "t1"})).unwrap_err().code,
        AccessDeniedException
    );
    let g = e.ok("CreateGrant", json!({"KeyId": key, "GranteePrincipal": dave_arn, "RetiringPrincipal": erin_arn,
        "Operations": ["Encrypt", "CreateGrant"], "Constraints": {"EncryptionContextSubset": {"tenant": "t1"}}, "Name": "g1"}));
    // Effective at once; constraints enforced.
    assert!(enc(&dave, json!({"tenant": "t1", "extra": "ok"})).is_ok());
    assert_eq!(
        enc(&dave, json!({"tenant": "t2"})).unwrap_err().code,
        AccessDeniedException
    );
    assert_eq!(
        enc(&dave, json!({})).unwrap_err().code,
        AccessDeniedException
    );
    assert_eq!(
        e.kms
            .call(
                &dave,
                "GenerateDataKey",
                json!({"KeyId": key, "KeySpec": "AES_256", "EncryptionContext": {"tenant": "t1"}})
            )
            .unwrap_err()
            .code,
        AccessDeniedException
    );
    // Name makes CreateGrant idempotent.
    let again = e.ok("CreateGrant", json!({"KeyId": key, "GranteePrincipal": dave_arn, "RetiringPrincipal": erin_arn,
        "Operations": ["Encrypt", "CreateGrant"], "Constraints": {"EncryptionContextSubset": {"tenant": "t1"}}, "Name": "g1"}));
    assert_eq!(again["GrantId"], g["GrantId"]);
    // Dave may pass on narrower grants only.
    let wider = e.kms.call(
        &dave,
        "CreateGrant",
        json!({"KeyId": key, "GranteePrincipal": erin_arn, "Operations": ["Encrypt", "Decrypt"],
        "Constraints": {"EncryptionContextSubset": {"tenant": "t1"}}}),
    );
    assert_eq!(wider.unwrap_err().code, AccessDeniedException);
    let unconstrained = e.kms.call(
        &dave,
        "CreateGrant",
        json!({"KeyId": key, "GranteePrincipal": erin_arn, "Operations": ["Encrypt"]}),
    );
    assert_eq!(unconstrained.unwrap_err().code, AccessDeniedException);
    let child = e
        .kms
        .call(
            &dave,
            "CreateGrant",
            json!({"KeyId": key, "GranteePrincipal": erin_arn, "Operations": ["Encrypt"],
        "Constraints": {"EncryptionContextEquals": {"tenant": "t1", "app": "x"}}}),
        )
        .unwrap();
    assert!(enc(&erin, json!({"tenant": "t1", "app": "x"})).is_ok());
    assert_eq!(
        enc(&erin, json!({"tenant": "t1"})).unwrap_err().code,
        AccessDeniedException
    );
    let list = e.ok("ListGrants", json!({"KeyId": key}));
    assert_eq!(list["Grants"].as_array().unwrap().len(), 2);
    // Retire: dave (grantee without RetireGrant) may not; erin (retiring principal) may, by token.
    let r = e.kms.call(
        &dave,
        "RetireGrant",
        json!({"KeyId": key, "GrantId": g["GrantId"]}),
    );
    assert_eq!(r.unwrap_err().code, AccessDeniedException);
    let retirable = e.kms.call(
        &erin,
        "ListRetirableGrants",
        json!({"RetiringPrincipal": erin_arn}),
    );
    assert_eq!(
        retirable.unwrap_err().code,
        AccessDeniedException,
        "needs an identity policy"
    );
    assert_eq!(
        e.ok(
            "ListRetirableGrants",
            json!({"RetiringPrincipal": erin_arn})
        )["Grants"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    e.kms
        .call(&erin, "RetireGrant", json!({"GrantToken": g["GrantToken"]}))
        .unwrap();
    assert_eq!(
        enc(&dave, json!({"tenant": "t1"})).unwrap_err().code,
        AccessDeniedException
    );
    assert_eq!(
        e.kms
            .call(&erin, "RetireGrant", json!({"GrantToken": g["GrantToken"]}))
            .unwrap_err()
            .code,
        InvalidGrantTokenException
    );
    // Revoke needs kms:RevokeGrant through policy: the root has it; erin does not.
    assert_eq!(
        e.kms
            .call(
                &erin,
                "RevokeGrant",
                json!({"KeyId": key, "GrantId": child["GrantId"]})
            )
            .unwrap_err()
            .code,
        AccessDeniedException
    );
    e.ok(
        "RevokeGrant",
        json!({"KeyId": key, "GrantId": child["GrantId"]}),
    );
    assert_eq!(
        enc(&erin, json!({"tenant": "t1", "app": "x"}))
            .unwrap_err()
            .code,
        AccessDeniedException
    );
    assert_eq!(
        e.code(
            "RevokeGrant",
            json!({"KeyId": key, "GrantId": child["GrantId"]})
        ),
        Some(NotFoundException)
    );
    // Bad grants are refused.
    assert_eq!(
        e.code(
            "CreateGrant",
            json!({"KeyId": key, "GranteePrincipal": dave_arn, "Operations": ["Fly"]})
        ),
        Some(ValidationException)
    );
    assert_eq!(e.code("CreateGrant", json!({"KeyId": key, "GranteePrincipal": dave_arn, "Operations": ["DescribeKey"], "Constraints": {"EncryptionContextEquals": {"a": "b"}}})), Some(ValidationException));
}

#[test]
fn audit_log_covers_calls_and_detects_every_kind_of_tampering() {
    let e = env();
    let key = e.create_key();
    let secret = b"audit must never hold this";
    let ct = e.ok("Encrypt", json!({"KeyId": key, "Plaintext": b64(secret), "EncryptionContext": {"purpose": "audit-test"}}));
    e.ok("Decrypt", json!({"CiphertextBlob": ct["CiphertextBlob"], "EncryptionContext": {"purpose": "audit-test"}}));
    let _ = e.call("Decrypt", json!({"CiphertextBlob": ct["CiphertextBlob"]}));
    e.ok("DisableKey", json!({"KeyId": key}));
    e.ok("EnableKey", json!({"KeyId": key}));
    let events = e.kms.audit_list(&Default::default()).unwrap();
    let names: Vec<&str> = events
        .iter()
        .map(|ev| ev["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "CreateKey",
            "Encrypt",
            "Decrypt",
            "Decrypt",
            "DisableKey",
            "EnableKey"
        ]
    );
    let failed = &events[3];
    assert_eq!(failed["errorCode"], "InvalidCiphertextException");
    assert_eq!(
        events[1]["requestParameters"]["encryptionContext"]["purpose"],
        "audit-test"
    );
    assert_eq!(
        events[1]["resources"][0]["ARN"],
        format!("arn:aws:kms:us-east-1:111122223333:key/{key}")
    );
    let log = serde_json::to_string(&events).unwrap();
    assert!(!log.contains(&b64(secret)));
    assert!(!log.contains(ct["CiphertextBlob"].as_str().unwrap()));
    assert!(e.kms.audit_verify().unwrap().valid);

    let db = rusqlite::Connection::open(e.dir.path().join("state.db")).unwrap();
    let verify = || e.kms.audit_verify().unwrap();
    // Edit.
    db.execute(
        "UPDATE audit SET event = replace(event, 'DisableKey', 'DescribeKey') WHERE seq = 5",
        [],
    )
    .unwrap();
    let r = verify();
    assert!(!r.valid);
    assert_eq!(r.first_bad_sequence, Some(5));
    db.execute(
        "UPDATE audit SET event = replace(event, 'DescribeKey', 'DisableKey') WHERE seq = 5",
        [],
    )
    .unwrap();
    assert!(verify().valid);
    // Delete in the middle.
    db.execute_batch(
        "CREATE TABLE saved AS SELECT * FROM audit WHERE seq = 3; DELETE FROM audit WHERE seq = 3;",
    )
    .unwrap();
    assert_eq!(verify().first_bad_sequence, Some(3));
    // Reinsert it: the chain is whole again.
    db.execute_batch("INSERT INTO audit SELECT * FROM saved; DROP TABLE saved;")
        .unwrap();
    assert!(verify().valid);
    // Reorder two events (swap their bodies and hashes).
    db.execute_batch(
        "UPDATE audit SET seq = 100 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = 100;",
    )
    .unwrap();
    assert_eq!(verify().first_bad_sequence, Some(2));
    db.execute_batch(
        "UPDATE audit SET seq = 100 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = 100;",
    )
    .unwrap();
    assert!(verify().valid);
    // Insert a forged event.
    db.execute_batch("UPDATE audit SET seq = seq + 1000 WHERE seq >= 4; UPDATE audit SET seq = seq - 999 WHERE seq >= 1004;").unwrap();
    db.execute("INSERT INTO audit SELECT 4, event_time, account, caller_account, principal, 'EnableKey', key_arn, NULL, event, hash FROM audit WHERE seq = 3", []).unwrap();
    assert_eq!(verify().first_bad_sequence, Some(4));
    db.execute_batch("DELETE FROM audit WHERE seq = 4; UPDATE audit SET seq = seq + 999 WHERE seq >= 5; UPDATE audit SET seq = seq - 1000 WHERE seq >= 1004;").unwrap();
    assert!(verify().valid);
    // Truncate the tail.
    db.execute("DELETE FROM audit WHERE seq = 6", []).unwrap();
    let r = verify();
    assert!(!r.valid);
    assert!(r.problem.unwrap().contains("removed from the end"));
}

#[test]
fn cli_errors_have_the_aws_cli_shape() {
    let dir = tempfile::tempdir().unwrap();
    let out = keyvol(
        dir.path(),
        &["kms", "describe-key", "--key-id", "alias/missing"],
    );
    assert_eq!(out.status.code(), Some(254));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "An error occurred (NotFoundException) when calling the DescribeKey operation: Alias arn:aws:kms:us-east-1:111122223333:alias/missing is not found."
    );
    let out = keyvol(dir.path(), &["kms", "encrypt", "--key-id", "alias/x"]);
    assert_eq!(out.status.code(), Some(252));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--plaintext"));
    let out = keyvol(dir.path(), &["--region", "eu-west-1", "kms", "list-keys"]);
    assert!(out.status.success());
    let out = keyvol(dir.path(), &["kms", "list-keys", "--region", "nowhere"]);
    assert_eq!(out.status.code(), Some(252));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid region 'nowhere'"));
    let out = keyvol(dir.path(), &["--profile", "ghost", "kms", "list-keys"]);
    assert_eq!(out.status.code(), Some(254));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("The config profile (ghost) could not be found"));
}

#[test]
fn every_operation_is_audited_allowed_or_denied() {
    let e = env();
    let key = e.create_key();
    let ct =
        e.ok("Encrypt", json!({"KeyId": key, "Plaintext": b64(b"x")}))["CiphertextBlob"].clone();
    // Call every operation the KMS serves once (most succeed, some fail on
    // purpose); each must leave exactly one event named after it.
    let mut called = Vec::new();
    for op in keyvol::kms::OPERATIONS {
        let req = match *op {
            "CreateKey" | "ListKeys" | "ListAliases" => json!({}),
            "GenerateRandom" => json!({"NumberOfBytes": 8}),
            "Decrypt" => json!({"CiphertextBlob": ct}),
            "ReEncrypt" => json!({"CiphertextBlob": ct, "DestinationKeyId": key}),
            "Encrypt" => json!({"KeyId": key, "Plaintext": b64(b"y")}),
            "CreateAlias" | "UpdateAlias" => {
                json!({"AliasName": "alias/audited", "TargetKeyId": key})
            }
            "DeleteAlias" => json!({"AliasName": "alias/audited"}),
            "ScheduleKeyDeletion" => json!({"KeyId": key, "PendingWindowInDays": 7}),
            "ListRetirableGrants" => json!({"RetiringPrincipal": "arn:aws:iam::111122223333:root"}),
            "RetireGrant" => json!({"GrantToken": "not-a-token"}),
            _ => json!({"KeyId": key}),
        };
        let _ = e.call(op, req);
        called.push(op.to_string());
    }
    // A denied call is audited too.
    let nobody = user(&e, &AccountId::default_account(), "auditee", None);
    let _ = e
        .kms
        .call(&nobody, "Decrypt", json!({"CiphertextBlob": ct}));
    let events = e.kms.audit_list(&Default::default()).unwrap();
    for op in &called {
        assert!(
            events.iter().any(|ev| ev["eventName"] == op.as_str()),
            "{op} left no audit event"
        );
    }
    assert!(events.iter().any(|ev| ev["eventName"] == "Decrypt"
        && ev["errorCode"] == "AccessDeniedException"
        && ev["userIdentity"]["arn"] == "arn:aws:iam::111122223333:user/auditee"));
    assert!(e.kms.audit_verify().unwrap().valid);
}

#[test]
fn usage_bill_follows_aws_pricing() {
    let e = env();
    let key = e.create_key();
    for _ in 0..3 {
        e.ok("RotateKeyOnDemand", json!({"KeyId": key}));
    }
    // The AWS managed key is free.
    e.ok("DescribeKey", json!({"KeyId": "alias/aws/ebs"}));
    e.clock.advance(3600);
    let u = e.kms.usage(&AccountId::default_account(), None).unwrap();
    assert!(u.key_hours >= 1.0 && u.key_hours <= 2.0, "{u:?}");
    // Two billable rotations at most per key.
    assert_eq!(u.rotation_charges, 2);
    assert_eq!(
        u.requests, 5,
        "CreateKey, three rotations, DescribeKey: {u:?}"
    );
    assert_eq!(u.billable_requests, 0);
    assert!((u.total_usd - (u.keys_usd + u.requests_usd)).abs() < 1e-9);
    assert!(u.keys_usd >= 2.0 && u.keys_usd < 2.01, "{u:?}");
    assert!(e
        .kms
        .usage(&AccountId::default_account(), Some("2026-13"))
        .is_err());
}

#[test]
fn request_alias_and_resource_tag_conditions() {
    let e = env();
    let a = AccountId::default_account();
    let key = e.create_key();
    e.ok(
        "CreateAlias",
        json!({"AliasName": "alias/finance", "TargetKeyId": key}),
    );
    e.ok(
        "TagResource",
        json!({"KeyId": key, "Tags": [{"TagKey": "team", "TagValue": "blue"}]}),
    );
    let frank = user(
        &e,
        &a,
        "frank",
        Some(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*", "Condition": {"StringEquals": {"kms:RequestAlias": "alias/finance"}}},
            {"Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": "*", "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}}
        ]})),
    );
    let enc = |id: &str| {
        e.kms.call(
            &frank,
            "Encrypt",
            json!({"KeyId": id, "Plaintext": b64(b"x")}),
        )
    };
    assert!(enc("alias/finance").is_ok());
    assert_eq!(
        enc(&key).unwrap_err().code,
        AccessDeniedException,
        "by key id the request names no alias"
    );
    assert!(e
        .kms
        .call(
            &frank,
            "GenerateDataKey",
            json!({"KeyId": key, "KeySpec": "AES_256"})
        )
        .is_ok());
    e.ok(
        "TagResource",
        json!({"KeyId": key, "Tags": [{"TagKey": "team", "TagValue": "red"}]}),
    );
    assert_eq!(
        e.kms
            .call(
                &frank,
                "GenerateDataKey",
                json!({"KeyId": key, "KeySpec": "AES_256"})
            )
            .unwrap_err()
            .code,
        AccessDeniedException
    );
}
