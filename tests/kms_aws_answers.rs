//! KMS answers as real AWS gives them: DryRun on every operation that takes
//! it really runs nothing, and malformed grant tokens are refused.

mod common;

use common::*;
use keyvol::kms::ErrorCode::*;
use serde_json::json;

#[test]
fn dry_run_runs_nothing_on_symmetric_operations() {
    let e = env();
    let key = e.create_key();
    let blob = e.ok(
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"secret")}),
    )["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_string();
    let events_before = e.kms.audit_list(&Default::default()).unwrap().len();

    let cases = [
        (
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"x"), "DryRun": true}),
        ),
        ("Decrypt", json!({"CiphertextBlob": blob, "DryRun": true})),
        (
            "ReEncrypt",
            json!({"CiphertextBlob": blob, "DestinationKeyId": key, "DryRun": true}),
        ),
        (
            "GenerateDataKey",
            json!({"KeyId": key, "KeySpec": "AES_256", "DryRun": true}),
        ),
        (
            "GenerateDataKeyWithoutPlaintext",
            json!({"KeyId": key, "NumberOfBytes": 64, "DryRun": true}),
        ),
    ];
    let n = cases.len();
    for (op, req) in cases {
        let err = e.call(op, req).expect_err(op);
        assert_eq!(err.code, DryRunOperationException, "{op}: {err}");
        assert!(
            err.message.contains("DryRun"),
            "{op}: message {:?}",
            err.message
        );
    }
    // Each dry run is audited as the refusal it is.
    let events = e.kms.audit_list(&Default::default()).unwrap();
    assert_eq!(events.len(), events_before + n);
    // DryRun=false runs the operation.
    let out = e.ok("Decrypt", json!({"CiphertextBlob": blob, "DryRun": false}));
    assert_eq!(unb64(&out["Plaintext"]), b"secret");

    // A dry run that would not have succeeded fails with the real reason.
    e.ok("DisableKey", json!({"KeyId": key}));
    assert_eq!(
        e.code(
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"x"), "DryRun": true})
        ),
        Some(DisabledException)
    );
}

#[test]
fn dry_run_retire_grant_keeps_the_grant() {
    let e = env();
    let key = e.create_key();
    let grant = e.ok(
        "CreateGrant",
        json!({"KeyId": key, "GranteePrincipal": "arn:aws:iam::111122223333:user/app",
               "Operations": ["Encrypt"]}),
    );
    let token = grant["GrantToken"].as_str().unwrap().to_string();
    assert_eq!(
        e.code("RetireGrant", json!({"GrantToken": token, "DryRun": true})),
        Some(DryRunOperationException)
    );
    let grants = e.ok("ListGrants", json!({"KeyId": key}));
    assert_eq!(grants["Grants"].as_array().unwrap().len(), 1, "{grants}");
    e.ok("RetireGrant", json!({"GrantToken": token}));
    let grants = e.ok("ListGrants", json!({"KeyId": key}));
    assert!(grants["Grants"].as_array().unwrap().is_empty(), "{grants}");
}

#[test]
fn malformed_grant_tokens_are_refused() {
    let e = env();
    let key = e.create_key();
    let grant = e.ok(
        "CreateGrant",
        json!({"KeyId": key, "GranteePrincipal": "arn:aws:iam::111122223333:user/app",
               "Operations": ["Encrypt"]}),
    );
    let token = grant["GrantToken"].as_str().unwrap().to_string();
    // A real token is accepted wherever GrantTokens is.
    e.ok(
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"x"), "GrantTokens": [token]}),
    );
    for bad in [
        json!(["garbage"]),
        json!([""]),
        json!([format!("{}zz", &token[..126])]),
        json!([format!("{token}0")]),
    ] {
        for (op, mut req) in [
            ("Encrypt", json!({"KeyId": key, "Plaintext": b64(b"x")})),
            (
                "GenerateDataKey",
                json!({"KeyId": key, "KeySpec": "AES_256"}),
            ),
            ("DescribeKey", json!({"KeyId": key})),
        ] {
            req["GrantTokens"] = bad.clone();
            assert_eq!(
                e.code(op, req),
                Some(InvalidGrantTokenException),
                "{op} with {bad}"
            );
        }
    }
    let eleven: Vec<String> = (0..11).map(|_| token.clone()).collect();
    assert_eq!(
        e.code(
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"x"), "GrantTokens": eleven})
        ),
        Some(ValidationException)
    );
}

#[test]
fn rotation_responses_name_the_key_as_aws_does() {
    let e = env();
    let key = e.create_key();
    let arn = format!("arn:aws:kms:us-east-1:111122223333:key/{key}");
    // RotateKeyOnDemand answers with the key ARN, GetKeyRotationStatus with the id.
    let r = e.ok("RotateKeyOnDemand", json!({"KeyId": key}));
    assert_eq!(r["KeyId"], arn);
    let st = e.ok("GetKeyRotationStatus", json!({"KeyId": arn}));
    assert_eq!(st["KeyId"], key);
}

#[test]
fn validation_errors_carry_aws_names() {
    let e = env();
    let key = e.create_key();
    // An alias without the prefix fails the pattern: ValidationException.
    let err = e
        .call(
            "CreateAlias",
            json!({"AliasName": "app", "TargetKeyId": key}),
        )
        .unwrap_err();
    assert_eq!(err.code, ValidationException);
    assert!(err.message.contains("^alias/"), "{}", err.message);
    // Over-long tags are ValidationException naming the member; duplicate
    // keys in one request are TagException, and nothing is created.
    let keys_before = e.ok("ListKeys", json!({}))["Keys"]
        .as_array()
        .unwrap()
        .len();
    let err = e
        .call(
            "CreateKey",
            json!({"Tags": [{"TagKey": "a", "TagValue": "1"}, {"TagKey": "a", "TagValue": "2"}]}),
        )
        .unwrap_err();
    assert_eq!(err.code, TagException);
    let err = e
        .call(
            "CreateKey",
            json!({"Tags": [{"TagKey": "ok", "TagValue": "1"}, {"TagKey": "k".repeat(129), "TagValue": "2"}]}),
        )
        .unwrap_err();
    assert_eq!(err.code, ValidationException);
    assert!(
        err.message.contains("tags.2.member.tagKey"),
        "{}",
        err.message
    );
    let keys_after = e.ok("ListKeys", json!({}))["Keys"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(keys_before, keys_after, "a refused CreateKey created a key");
}

#[test]
fn create_key_refuses_both_spec_members() {
    let e = env();
    let err = e
        .call(
            "CreateKey",
            json!({"KeySpec": "SYMMETRIC_DEFAULT", "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT"}),
        )
        .unwrap_err();
    assert_eq!(err.code, ValidationException);
    assert!(
        err.message.contains("CustomerMasterKeySpec"),
        "{}",
        err.message
    );
    // Either one alone is fine.
    e.ok(
        "CreateKey",
        json!({"CustomerMasterKeySpec": "SYMMETRIC_DEFAULT"}),
    );
    e.ok("CreateKey", json!({"KeySpec": "SYMMETRIC_DEFAULT"}));
}
