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

/// The operation names of botocore's KMS model, from the venv that
/// scripts/setup.sh installs (no venv is a failure, not a skip).
fn botocore_kms_operations() -> Vec<String> {
    let venv = std::env::var("KEYVOL_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/keyvol-venv", std::env::var("HOME").unwrap()));
    let out = std::process::Command::new(format!("{venv}/bin/python"))
        .args([
            "-c",
            "import botocore.session,json;print(json.dumps(botocore.session.get_session().get_service_model('kms').operation_names))",
        ])
        .output()
        .expect("the keyvol venv's python (run scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_botocore_operation_is_answered() {
    let e = env();
    let key = e.create_key();
    let ops = botocore_kms_operations();
    assert!(ops.len() >= 50, "{ops:?}");
    for op in &ops {
        if let Err(err) = e.call(op, json!({"KeyId": key})) {
            assert_ne!(err.code, UnknownOperationException, "{op}: {err}");
        }
    }
}

#[test]
fn absent_features_answer_as_for_an_account_without_them() {
    let e = env();
    let key = e.create_key();
    let stores = e.ok("DescribeCustomKeyStores", json!({}));
    assert_eq!(stores, json!({"CustomKeyStores": [], "Truncated": false}));
    assert_eq!(
        e.code(
            "DescribeCustomKeyStores",
            json!({"CustomKeyStoreId": "cks-1234567890abcdef0"})
        ),
        Some(CustomKeyStoreNotFoundException)
    );
    for op in [
        "ConnectCustomKeyStore",
        "DisconnectCustomKeyStore",
        "DeleteCustomKeyStore",
        "UpdateCustomKeyStore",
    ] {
        assert_eq!(
            e.code(op, json!({"CustomKeyStoreId": "cks-1234567890abcdef0"})),
            Some(CustomKeyStoreNotFoundException),
            "{op}"
        );
        assert_eq!(e.code(op, json!({})), Some(ValidationException), "{op}");
    }
    assert_eq!(
        e.code(
            "CreateCustomKeyStore",
            json!({"CustomKeyStoreName": "s", "CloudHsmClusterId": "cluster-1a23b4cdefg"})
        ),
        Some(CloudHsmClusterNotFoundException)
    );
    assert_eq!(
        e.code(
            "ReplicateKey",
            json!({"KeyId": key, "ReplicaRegion": "us-west-2"})
        ),
        Some(UnsupportedOperationException)
    );
    assert_eq!(
        e.code(
            "Encapsulate",
            json!({"KeyId": key, "EncapsulationAlgorithm": "ML_KEM"})
        ),
        Some(InvalidKeyUsageException)
    );
    // A key the caller cannot see is NotFound before anything else.
    assert_eq!(
        e.code(
            "UpdatePrimaryRegion",
            json!({"KeyId": "00000000-0000-0000-0000-000000000000", "PrimaryRegion": "us-west-2"})
        ),
        Some(NotFoundException)
    );
}

#[test]
fn get_key_last_usage_reports_the_last_successful_crypto_call() {
    let e = env();
    let key = e.create_key();
    let fresh = e.ok("GetKeyLastUsage", json!({"KeyId": key}));
    assert!(fresh.get("KeyLastUsage").is_none(), "{fresh}");
    assert_eq!(fresh["TrackingStartDate"], fresh["KeyCreationDate"]);
    e.ok("Encrypt", json!({"KeyId": key, "Plaintext": b64(b"x")}));
    let blob = e.ok(
        "GenerateDataKey",
        json!({"KeyId": key, "KeySpec": "AES_256"}),
    );
    // A failed call does not count.
    e.call(
        "Decrypt",
        json!({"CiphertextBlob": b64(b"garbage-garbage-garbage"), "KeyId": key}),
    )
    .unwrap_err();
    let used = e.ok("GetKeyLastUsage", json!({"KeyId": key}));
    let last = &used["KeyLastUsage"];
    assert_eq!(last["Operation"], "GenerateDataKey", "{used}");
    let events = e.kms.audit_list(&Default::default()).unwrap();
    let gdk = events
        .iter()
        .rfind(|ev| ev["eventName"] == "GenerateDataKey")
        .unwrap();
    assert_eq!(last["CloudTrailEventId"], gdk["eventID"]);
    assert!(blob["CiphertextBlob"].is_string());
}

#[test]
fn truncated_ciphertext_is_invalid_ciphertext_whatever_came_with_it() {
    let e = env();
    let key = e.create_key();
    let ct = e.ok(
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"hello"), "EncryptionContext": {"a": "b"}}),
    );
    let blob = unb64(&ct["CiphertextBlob"]);
    for cut in [1, 10, 20, blob.len() - 1] {
        let truncated = b64(&blob[..cut]);
        for req in [
            json!({"CiphertextBlob": truncated}),
            json!({"CiphertextBlob": truncated, "KeyId": key}),
            json!({"CiphertextBlob": truncated, "KeyId": key, "EncryptionContext": {"a": "b"}}),
        ] {
            let err = e.call("Decrypt", req.clone()).unwrap_err();
            assert_eq!(err.code, InvalidCiphertextException, "{req}: {err}");
            assert!(!err.message.contains("asymmetric"), "{}", err.message);
        }
    }
}

#[test]
fn grant_constraints_match_context_keys_case_insensitively() {
    let e = env();
    let account = keyvol::ids::AccountId::default_account();
    e.iam.create_user(&account, "app", Some("app")).unwrap();
    let app = keyvol::kms::RequestContext::new(
        e.iam.profile_caller("app").unwrap(),
        e.ctx.region.clone(),
    );
    let key = e.create_key();
    e.ok(
        "CreateGrant",
        json!({"KeyId": key, "GranteePrincipal": "arn:aws:iam::111122223333:user/app",
               "Operations": ["Encrypt"],
               "Constraints": {"EncryptionContextSubset": {"Department": "IT"}}}),
    );
    let encrypt = |ctx: serde_json::Value| {
        e.kms
            .call(
                &app,
                "Encrypt",
                json!({"KeyId": key, "Plaintext": b64(b"x"), "EncryptionContext": ctx}),
            )
            .map(|_| ())
            .map_err(|err| err.code)
    };
    // Keys match whatever their case; values only exactly.
    assert_eq!(encrypt(json!({"Department": "IT"})), Ok(()));
    assert_eq!(encrypt(json!({"department": "IT", "x": "y"})), Ok(()));
    assert_eq!(encrypt(json!({"DEPARTMENT": "IT"})), Ok(()));
    assert_eq!(
        encrypt(json!({"Department": "it"})),
        Err(AccessDeniedException)
    );
    assert_eq!(encrypt(json!({"Other": "IT"})), Err(AccessDeniedException));
}

#[test]
fn made_up_regions_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let out = keyvol(
        home.path(),
        &["--region", "moon-base-1", "kms", "list-keys"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("moon-base-1") && err.contains("region"),
        "{err}"
    );
    let out = keyvol(
        home.path(),
        &["--region", "ap-southeast-7", "kms", "list-keys"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn list_aliases_shows_the_predefined_aws_aliases() {
    let e = env();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["Aliases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["AliasName"].as_str().unwrap().to_string())
            .collect()
    };
    let list = e.ok("ListAliases", json!({}));
    let s3 = list["Aliases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["AliasName"] == "alias/aws/s3")
        .expect("alias/aws/s3 listed");
    assert!(s3.get("TargetKeyId").is_none(), "{s3}");
    assert_eq!(
        s3["AliasArn"],
        "arn:aws:kms:us-east-1:111122223333:alias/aws/s3"
    );
    // Once the managed EBS key exists its alias is listed once, with its target.
    e.ok("DescribeKey", json!({"KeyId": "alias/aws/ebs"}));
    let list = e.ok("ListAliases", json!({}));
    let all = names(&list);
    assert_eq!(
        all.iter().filter(|n| *n == "alias/aws/ebs").count(),
        1,
        "{all:?}"
    );
    let ebs = list["Aliases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["AliasName"] == "alias/aws/ebs")
        .unwrap();
    assert!(ebs["TargetKeyId"].is_string(), "{ebs}");
    // Filtered by key: only that key's aliases.
    let key = e.create_key();
    e.ok(
        "CreateAlias",
        json!({"AliasName": "alias/mine", "TargetKeyId": key}),
    );
    assert_eq!(
        names(&e.ok("ListAliases", json!({"KeyId": key}))),
        ["alias/mine"]
    );
}

#[test]
fn re_encrypt_between_rsa_and_symmetric_keys() {
    let e = env();
    let rsa = |e: &Env| {
        e.ok(
            "CreateKey",
            json!({"KeySpec": "RSA_2048", "KeyUsage": "ENCRYPT_DECRYPT"}),
        )["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (r1, r2, sym) = (rsa(&e), rsa(&e), e.create_key());
    let oaep = "RSAES_OAEP_SHA_256";
    let ct1 = e.ok(
        "Encrypt",
        json!({"KeyId": r1, "Plaintext": b64(b"secret"), "EncryptionAlgorithm": oaep}),
    )["CiphertextBlob"]
        .clone();
    // RSA -> RSA.
    let rr = e.ok(
        "ReEncrypt",
        json!({"CiphertextBlob": ct1, "SourceKeyId": r1, "SourceEncryptionAlgorithm": oaep,
               "DestinationKeyId": r2, "DestinationEncryptionAlgorithm": "RSAES_OAEP_SHA_1"}),
    );
    assert_eq!(rr["SourceEncryptionAlgorithm"], oaep);
    assert_eq!(rr["DestinationEncryptionAlgorithm"], "RSAES_OAEP_SHA_1");
    assert!(rr["KeyId"].as_str().unwrap().ends_with(&r2));
    let pt = e.ok(
        "Decrypt",
        json!({"KeyId": r2, "CiphertextBlob": rr["CiphertextBlob"], "EncryptionAlgorithm": "RSAES_OAEP_SHA_1"}),
    );
    assert_eq!(unb64(&pt["Plaintext"]), b"secret");
    // RSA -> symmetric, with a destination context.
    let rs = e.ok(
        "ReEncrypt",
        json!({"CiphertextBlob": ct1, "SourceKeyId": r1, "SourceEncryptionAlgorithm": oaep,
               "DestinationKeyId": sym, "DestinationEncryptionContext": {"k": "v"}}),
    );
    assert_eq!(rs["DestinationEncryptionAlgorithm"], "SYMMETRIC_DEFAULT");
    let pt = e.ok(
        "Decrypt",
        json!({"CiphertextBlob": rs["CiphertextBlob"], "EncryptionContext": {"k": "v"}}),
    );
    assert_eq!(unb64(&pt["Plaintext"]), b"secret");
    // Symmetric -> RSA.
    let sr = e.ok(
        "ReEncrypt",
        json!({"CiphertextBlob": rs["CiphertextBlob"], "SourceEncryptionContext": {"k": "v"},
               "DestinationKeyId": r2, "DestinationEncryptionAlgorithm": oaep}),
    );
    assert_eq!(sr["SourceEncryptionAlgorithm"], "SYMMETRIC_DEFAULT");
    let pt = e.ok(
        "Decrypt",
        json!({"KeyId": r2, "CiphertextBlob": sr["CiphertextBlob"], "EncryptionAlgorithm": oaep}),
    );
    assert_eq!(unb64(&pt["Plaintext"]), b"secret");

    // Refusals, as AWS names them.
    let code = |req| e.code("ReEncrypt", req);
    assert_eq!(
        code(
            json!({"CiphertextBlob": ct1, "SourceEncryptionAlgorithm": oaep, "DestinationKeyId": sym})
        ),
        Some(ValidationException),
        "an RSA source needs SourceKeyId"
    );
    assert_eq!(
        code(
            json!({"CiphertextBlob": ct1, "SourceKeyId": r1, "SourceEncryptionAlgorithm": oaep,
                    "DestinationKeyId": r2})
        ),
        Some(InvalidKeyUsageException),
        "an RSA destination needs an RSA algorithm"
    );
    assert_eq!(
        code(
            json!({"CiphertextBlob": ct1, "SourceKeyId": r1, "SourceEncryptionAlgorithm": oaep,
                    "DestinationKeyId": r2, "DestinationEncryptionAlgorithm": oaep,
                    "DestinationEncryptionContext": {"k": "v"}})
        ),
        Some(ValidationException),
        "no encryption context with an RSA destination"
    );
    assert_eq!(
        code(
            json!({"CiphertextBlob": ct1, "SourceKeyId": sym, "SourceEncryptionAlgorithm": oaep,
                    "DestinationKeyId": r2, "DestinationEncryptionAlgorithm": oaep})
        ),
        Some(InvalidKeyUsageException),
        "a symmetric key is no RSA source"
    );
    assert_eq!(
        code(
            json!({"CiphertextBlob": b64(&[7u8; 256]), "SourceKeyId": r1, "SourceEncryptionAlgorithm": oaep,
                    "DestinationKeyId": sym})
        ),
        Some(InvalidCiphertextException)
    );
}

#[test]
fn key_material_ids_follow_rotations() {
    let e = env();
    let key = e.create_key();
    let current = |e: &Env| {
        e.ok("DescribeKey", json!({"KeyId": key}))["KeyMetadata"]["CurrentKeyMaterialId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = current(&e);
    assert_eq!(first.len(), 64);
    assert!(first
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let old = e.ok("Encrypt", json!({"KeyId": key, "Plaintext": b64(b"old")}));
    e.ok("RotateKeyOnDemand", json!({"KeyId": key}));
    let second = current(&e);
    assert_ne!(first, second, "rotation makes new current material");
    // Decrypt names the material that encrypted, ReEncrypt both.
    let d = e.ok("Decrypt", json!({"CiphertextBlob": old["CiphertextBlob"]}));
    assert_eq!(d["KeyMaterialId"], first.as_str());
    let r = e.ok(
        "ReEncrypt",
        json!({"CiphertextBlob": old["CiphertextBlob"], "DestinationKeyId": key}),
    );
    assert_eq!(r["SourceKeyMaterialId"], first.as_str());
    assert_eq!(r["DestinationKeyMaterialId"], second.as_str());
    // ListKeyRotations lists the rotated-to material.
    let rot = e.ok("ListKeyRotations", json!({"KeyId": key}));
    let ids: Vec<&str> = rot["Rotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["KeyMaterialId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str()], "{rot}");
    // Another key's material ids differ.
    let other = e.create_key();
    let o =
        e.ok("DescribeKey", json!({"KeyId": other}))["KeyMetadata"]["CurrentKeyMaterialId"].clone();
    assert_ne!(o, first.as_str());
}

#[test]
fn policy_variables_resolve_in_2012_policies_only() {
    let e = env();
    let account = keyvol::ids::AccountId::default_account();
    let key = e.create_key();
    let policy = |version: &str| {
        json!({"Version": version, "Statement": [{
            "Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*",
            "Condition": {"StringEquals": {"kms:EncryptionContext:owner": "${aws:username}"}}}]})
        .to_string()
    };
    for (user, version) in [("alice", "2012-10-17"), ("carol", "2008-10-17")] {
        e.iam.create_user(&account, user, Some(user)).unwrap();
        e.iam
            .put_user_policy(&account, user, "own-context", &policy(version))
            .unwrap();
    }
    let as_user = |user: &str| {
        keyvol::kms::RequestContext::new(e.iam.profile_caller(user).unwrap(), e.ctx.region.clone())
    };
    let encrypt = |user: &str, owner: &str| {
        e.kms
            .call(
                &as_user(user),
                "Encrypt",
                json!({"KeyId": key, "Plaintext": b64(b"x"), "EncryptionContext": {"owner": owner}}),
            )
            .map(|_| ())
            .map_err(|err| err.code)
    };
    // ${aws:username} is the caller's own name: alice may encrypt as herself only.
    assert_eq!(encrypt("alice", "alice"), Ok(()));
    assert_eq!(encrypt("alice", "bob"), Err(AccessDeniedException));
    assert_eq!(
        encrypt("alice", "${aws:username}"),
        Err(AccessDeniedException)
    );
    // In a 2008-10-17 policy the variable is literal text.
    assert_eq!(encrypt("carol", "carol"), Err(AccessDeniedException));
    assert_eq!(encrypt("carol", "${aws:username}"), Ok(()));
}

#[test]
fn import_key_material_defaults_to_expiring_material() {
    let e = env();
    let key = e.ok("CreateKey", json!({"Origin": "EXTERNAL"}))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let params = e.ok(
        "GetParametersForImport",
        json!({"KeyId": key, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"}),
    );
    let wrapped = keyvol::kms::asym::wrap_for_import(
        &unb64(&params["PublicKey"]),
        keyvol::kms::asym::AlgorithmSpec::RsaesOaepSha256,
        &[3u8; 32],
    )
    .unwrap();
    let req = json!({"KeyId": key, "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": b64(&wrapped)});
    // No ExpirationModel means KEY_MATERIAL_EXPIRES, which needs ValidTo.
    let err = e.call("ImportKeyMaterial", req.clone()).unwrap_err();
    assert_eq!(err.code, ValidationException);
    assert!(err.message.contains("validTo"), "{}", err.message);
    let md = e.ok("DescribeKey", json!({"KeyId": key}));
    assert_eq!(md["KeyMetadata"]["KeyState"], "PendingImport");
    // With a ValidTo the default applies and the key is enabled.
    let mut with_valid_to = req;
    with_valid_to["ValidTo"] = json!(e.clock.now() + 86_400);
    let out = e.ok("ImportKeyMaterial", with_valid_to);
    assert_eq!(out["KeyMaterialId"].as_str().unwrap().len(), 64);
    let md = e.ok("DescribeKey", json!({"KeyId": key}));
    assert_eq!(md["KeyMetadata"]["ExpirationModel"], "KEY_MATERIAL_EXPIRES");
}

/// Members an operation does not define are ignored, as AWS's JSON
/// services ignore them (a newer SDK's member reaches an older endpoint
/// harmlessly); a defined member of the wrong type is refused with
/// SerializationException and changes nothing.
#[test]
fn unknown_members_are_ignored_and_mistyped_ones_refused() {
    let e = env();
    let key = e.create_key();
    let out = e.ok(
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"x"), "SomeFutureMember": {"a": 1}}),
    );
    assert!(out["CiphertextBlob"].is_string(), "{out}");
    let before = e.ok("ListKeys", json!({}))["Keys"]
        .as_array()
        .unwrap()
        .len();
    for bad in [
        json!({"Description": 5}),
        json!({"Tags": "not a list"}),
        json!({"MultiRegion": "yes"}),
    ] {
        assert_eq!(
            e.code("CreateKey", bad.clone()),
            Some(SerializationException),
            "{bad}"
        );
    }
    assert_eq!(
        e.ok("ListKeys", json!({}))["Keys"]
            .as_array()
            .unwrap()
            .len(),
        before
    );
}
