//! The KMS core against AWS semantics: the key-state table, limits and
//! error names, encryption context, rotation, deletion, aliases, tamper
//! resistance, secrets at rest, and concurrent processes.

mod common;

use common::*;
use keyvol::kms::ErrorCode::{self, *};
use serde_json::{json, Value};

/// A request for `op` on `key` that succeeds on an Enabled key.
fn request(op: &str, key: &str, blob: &str) -> Value {
    match op {
        "DescribeKey"
        | "EnableKey"
        | "DisableKey"
        | "CancelKeyDeletion"
        | "GetKeyRotationStatus"
        | "RotateKeyOnDemand"
        | "ListKeyRotations"
        | "ListResourceTags"
        | "GetKeyPolicy"
        | "ListKeyPolicies"
        | "DisableKeyRotation" => json!({"KeyId": key}),
        "ScheduleKeyDeletion" => json!({"KeyId": key, "PendingWindowInDays": 7}),
        "UpdateKeyDescription" => json!({"KeyId": key, "Description": "d"}),
        "Encrypt" => json!({"KeyId": key, "Plaintext": b64(b"x")}),
        "Decrypt" => json!({"KeyId": key, "CiphertextBlob": blob}),
        "ReEncrypt" => json!({"CiphertextBlob": blob, "DestinationKeyId": key}),
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
            json!({"KeyId": key, "KeySpec": "AES_256"})
        }
        "CreateAlias" => json!({"AliasName": format!("alias/a{}", &key[..8]), "TargetKeyId": key}),
        "EnableKeyRotation" => json!({"KeyId": key}),
        "TagResource" => json!({"KeyId": key, "Tags": [{"TagKey": "k", "TagValue": "v"}]}),
        "UntagResource" => json!({"KeyId": key, "TagKeys": ["k"]}),
        "PutKeyPolicy" => {
            json!({"KeyId": key, "Policy": keyvol::kms::default_key_policy("111122223333")})
        }
        other => panic!("no request for {other}"),
    }
}

/// (operation, expected error on Enabled, Disabled, PendingDeletion keys)
type StateRow = (
    &'static str,
    Option<ErrorCode>,
    Option<ErrorCode>,
    Option<ErrorCode>,
);

#[test]
fn key_state_table_every_state_every_operation() {
    let e = env();
    // (operation, Enabled, Disabled, PendingDeletion)
    let table: &[StateRow] = &[
        ("DescribeKey", None, None, None),
        ("GetKeyPolicy", None, None, None),
        ("ListKeyPolicies", None, None, None),
        ("ListResourceTags", None, None, None),
        ("ListKeyRotations", None, None, None),
        (
            "GetKeyRotationStatus",
            None,
            None,
            Some(KMSInvalidStateException),
        ),
        (
            "Encrypt",
            None,
            Some(DisabledException),
            Some(KMSInvalidStateException),
        ),
        (
            "Decrypt",
            None,
            Some(DisabledException),
            Some(KMSInvalidStateException),
        ),
        (
            "ReEncrypt",
            None,
            Some(DisabledException),
            Some(KMSInvalidStateException),
        ),
        (
            "GenerateDataKey",
            None,
            Some(DisabledException),
            Some(KMSInvalidStateException),
        ),
        (
            "GenerateDataKeyWithoutPlaintext",
            None,
            Some(DisabledException),
            Some(KMSInvalidStateException),
        ),
        (
            "UpdateKeyDescription",
            None,
            None,
            Some(KMSInvalidStateException),
        ),
        ("CreateAlias", None, None, Some(KMSInvalidStateException)),
        ("TagResource", None, None, Some(KMSInvalidStateException)),
        ("UntagResource", None, None, Some(KMSInvalidStateException)),
        ("PutKeyPolicy", None, None, Some(KMSInvalidStateException)),
        (
            "EnableKeyRotation",
            None,
            Some(DisabledException),
            Some(KMSInvalidStateException),
        ),
        (
            "DisableKeyRotation",
            None,
            Some(DisabledException),
            Some(KMSInvalidStateException),
        ),
        (
            "RotateKeyOnDemand",
            None,
            Some(DisabledException),
            Some(KMSInvalidStateException),
        ),
        ("EnableKey", None, None, Some(KMSInvalidStateException)),
        ("DisableKey", None, None, Some(KMSInvalidStateException)),
        (
            "CancelKeyDeletion",
            Some(KMSInvalidStateException),
            Some(KMSInvalidStateException),
            None,
        ),
        (
            "ScheduleKeyDeletion",
            None,
            None,
            Some(KMSInvalidStateException),
        ),
    ];
    for (op, enabled, disabled, pending) in table {
        for (state, want) in [
            ("Enabled", enabled),
            ("Disabled", disabled),
            ("PendingDeletion", pending),
        ] {
            let key = e.create_key();
            // A ciphertext made while the key was enabled, for Decrypt/ReEncrypt.
            let blob = e.ok("Encrypt", json!({"KeyId": key, "Plaintext": b64(b"p")}))
                ["CiphertextBlob"]
                .as_str()
                .unwrap()
                .to_string();
            match state {
                "Disabled" => {
                    e.ok("DisableKey", json!({"KeyId": key}));
                }
                "PendingDeletion" => {
                    e.ok(
                        "ScheduleKeyDeletion",
                        json!({"KeyId": key, "PendingWindowInDays": 7}),
                    );
                }
                _ => {}
            }
            let got = e.code(op, request(op, &key, &blob));
            assert_eq!(got, *want, "{op} on a {state} key");
        }
    }
}

#[test]
fn state_error_messages_are_aws_shaped() {
    let e = env();
    let key = e.create_key();
    e.ok("DisableKey", json!({"KeyId": key}));
    let err = e
        .call("Encrypt", json!({"KeyId": key, "Plaintext": b64(b"x")}))
        .unwrap_err();
    assert_eq!(
        err.message,
        format!("arn:aws:kms:us-east-1:111122223333:key/{key} is disabled.")
    );
    e.ok(
        "ScheduleKeyDeletion",
        json!({"KeyId": key, "PendingWindowInDays": 7}),
    );
    let err = e
        .call("Encrypt", json!({"KeyId": key, "Plaintext": b64(b"x")}))
        .unwrap_err();
    assert_eq!(
        err.message,
        format!("arn:aws:kms:us-east-1:111122223333:key/{key} is pending deletion.")
    );
    // CancelKeyDeletion leaves the key Disabled.
    e.ok("CancelKeyDeletion", json!({"KeyId": key}));
    let md = e.ok("DescribeKey", json!({"KeyId": key}));
    assert_eq!(md["KeyMetadata"]["KeyState"], "Disabled");
    assert!(md["KeyMetadata"].get("DeletionDate").is_none());
}

#[test]
fn limits_and_error_names() {
    let e = env();
    let key = e.create_key();
    let enc = |n: usize| {
        e.code(
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(&vec![7u8; n])}),
        )
    };
    assert_eq!(enc(4096), None);
    assert_eq!(enc(4097), Some(ValidationException));
    assert_eq!(enc(0), Some(ValidationException));
    let gdk = |v: Value| e.code("GenerateDataKey", v);
    assert_eq!(gdk(json!({"KeyId": key, "NumberOfBytes": 1024})), None);
    assert_eq!(
        gdk(json!({"KeyId": key, "NumberOfBytes": 1025})),
        Some(ValidationException)
    );
    assert_eq!(
        gdk(json!({"KeyId": key, "NumberOfBytes": 0})),
        Some(ValidationException)
    );
    assert_eq!(gdk(json!({"KeyId": key})), Some(ValidationException));
    assert_eq!(
        gdk(json!({"KeyId": key, "KeySpec": "AES_256", "NumberOfBytes": 32})),
        Some(ValidationException)
    );
    assert_eq!(
        gdk(json!({"KeyId": key, "KeySpec": "AES_512"})),
        Some(ValidationException)
    );
    let r = e.ok(
        "GenerateDataKey",
        json!({"KeyId": key, "KeySpec": "AES_128"}),
    );
    assert_eq!(unb64(&r["Plaintext"]).len(), 16);
    let r = e.ok(
        "GenerateDataKeyWithoutPlaintext",
        json!({"KeyId": key, "NumberOfBytes": 64}),
    );
    assert!(r.get("Plaintext").is_none());
    let dk = e.ok("Decrypt", json!({"CiphertextBlob": r["CiphertextBlob"]}));
    assert_eq!(unb64(&dk["Plaintext"]).len(), 64);
    assert_eq!(
        e.code("GenerateRandom", json!({"NumberOfBytes": 1025})),
        Some(ValidationException)
    );
    assert_eq!(
        unb64(&e.ok("GenerateRandom", json!({"NumberOfBytes": 1024}))["Plaintext"]).len(),
        1024
    );
    for days in [6, 31] {
        assert_eq!(
            e.code(
                "ScheduleKeyDeletion",
                json!({"KeyId": key, "PendingWindowInDays": days})
            ),
            Some(ValidationException)
        );
    }
    for days in [89, 2561] {
        assert_eq!(
            e.code(
                "EnableKeyRotation",
                json!({"KeyId": key, "RotationPeriodInDays": days})
            ),
            Some(ValidationException)
        );
    }
    assert_eq!(
        e.code("DescribeKey", json!({"KeyId": "not-a-key"})),
        Some(NotFoundException)
    );
    assert_eq!(
        e.code("DescribeKey", json!({"KeyId": uuid_like()})),
        Some(NotFoundException)
    );
    assert_eq!(
        e.code("DescribeKey", json!({"KeyId": "alias/nope"})),
        Some(NotFoundException)
    );
    assert_eq!(
        e.code("NoSuchOperation", json!({})),
        Some(UnknownOperationException)
    );
    assert_eq!(
        e.code("Encrypt", json!({"KeyId": key, "Plaintext": 5})),
        Some(SerializationException)
    );
    let err = e
        .call("DescribeKey", json!({"KeyId": "not-a-key"}))
        .unwrap_err();
    assert_eq!(err.message, "Invalid keyId 'not-a-key'");
    // Ten on-demand rotations, then LimitExceededException.
    for _ in 0..10 {
        e.ok("RotateKeyOnDemand", json!({"KeyId": key}));
    }
    assert_eq!(
        e.code("RotateKeyOnDemand", json!({"KeyId": key})),
        Some(LimitExceededException)
    );
    // Tags follow AWS's rules.
    let tag = |k: &str, v: &str| {
        e.code(
            "TagResource",
            json!({"KeyId": key, "Tags": [{"TagKey": k, "TagValue": v}]}),
        )
    };
    assert_eq!(tag("aws:owner", "x"), Some(TagException));
    // Over-long keys and values are ValidationException in AWS, not TagException.
    assert_eq!(tag(&"k".repeat(129), "x"), Some(ValidationException));
    assert_eq!(tag("k", &"v".repeat(257)), Some(ValidationException));
    assert_eq!(
        e.code(
            "TagResource",
            json!({"KeyId": key, "Tags": [{"TagKey": "d", "TagValue": "1"}, {"TagKey": "d", "TagValue": "2"}]}),
        ),
        Some(TagException)
    );
    assert_eq!(tag("ok", "fine"), None);
    let tags = e.ok("ListResourceTags", json!({"KeyId": key}));
    assert_eq!(tags["Tags"], json!([{"TagKey": "ok", "TagValue": "fine"}]));
}

fn uuid_like() -> String {
    keyvol::ids::KeyId::generate().to_string()
}

#[test]
fn encryption_context_is_exact_and_order_free() {
    let e = env();
    let key = e.create_key();
    let ct = e.ok("Encrypt", json!({"KeyId": key, "Plaintext": b64(b"secret"), "EncryptionContext": {"a": "1", "b": "2"}}))["CiphertextBlob"].clone();
    let dec = |ctx: Value| {
        e.call(
            "Decrypt",
            json!({"CiphertextBlob": ct, "EncryptionContext": ctx}),
        )
    };
    assert_eq!(
        unb64(&dec(json!({"b": "2", "a": "1"})).unwrap()["Plaintext"]),
        b"secret"
    );
    for bad in [
        json!({}),
        json!({"a": "1"}),
        json!({"a": "1", "b": "3"}),
        json!({"a": "1", "b": "2", "c": "3"}),
        json!({"A": "1", "b": "2"}),
    ] {
        assert_eq!(
            dec(bad.clone()).unwrap_err().code,
            InvalidCiphertextException,
            "{bad}"
        );
    }
    // A KeyId naming another key: IncorrectKeyException.
    let other = e.create_key();
    let r = e.call(
        "Decrypt",
        json!({"CiphertextBlob": ct, "KeyId": other, "EncryptionContext": {"a": "1", "b": "2"}}),
    );
    assert_eq!(r.unwrap_err().code, IncorrectKeyException);
}

#[test]
fn re_encrypt_moves_between_keys_and_contexts() {
    let e = env();
    let (k1, k2) = (e.create_key(), e.create_key());
    let ct = e.ok(
        "Encrypt",
        json!({"KeyId": k1, "Plaintext": b64(b"move me"), "EncryptionContext": {"x": "1"}}),
    )["CiphertextBlob"]
        .clone();
    let r = e.ok("ReEncrypt", json!({"CiphertextBlob": ct, "SourceEncryptionContext": {"x": "1"}, "DestinationKeyId": k2, "DestinationEncryptionContext": {"y": "2"}}));
    assert!(r.get("Plaintext").is_none());
    assert!(r["SourceKeyId"].as_str().unwrap().ends_with(&k1));
    let d = e.ok(
        "Decrypt",
        json!({"CiphertextBlob": r["CiphertextBlob"], "EncryptionContext": {"y": "2"}}),
    );
    assert_eq!(unb64(&d["Plaintext"]), b"move me");
    assert!(d["KeyId"].as_str().unwrap().ends_with(&k2));
}

#[test]
fn rotation_keeps_old_ciphertexts_decryptable() {
    let e = env();
    let key = e.create_key();
    let mut blobs = Vec::new();
    for i in 0..4 {
        let msg = format!("generation {i}");
        blobs.push((
            msg.clone(),
            e.ok(
                "Encrypt",
                json!({"KeyId": key, "Plaintext": b64(msg.as_bytes())}),
            )["CiphertextBlob"]
                .clone(),
        ));
        if i < 3 {
            e.ok("RotateKeyOnDemand", json!({"KeyId": key}));
        }
    }
    // New encryptions use the newest material: the version field differs.
    let versions: Vec<u32> = blobs
        .iter()
        .map(|(_, b)| {
            keyvol::kms::ciphertext::parse_header(&unb64(b))
                .unwrap()
                .material_version
        })
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    for (msg, blob) in &blobs {
        assert_eq!(
            unb64(&e.ok("Decrypt", json!({"CiphertextBlob": blob}))["Plaintext"]),
            msg.as_bytes()
        );
    }
    let rot = e.ok("ListKeyRotations", json!({"KeyId": key}));
    assert_eq!(rot["Rotations"].as_array().unwrap().len(), 3);
    // Automatic rotation happens when due.
    e.ok(
        "EnableKeyRotation",
        json!({"KeyId": key, "RotationPeriodInDays": 90}),
    );
    let st = e.ok("GetKeyRotationStatus", json!({"KeyId": key}));
    assert_eq!(st["KeyRotationEnabled"], true);
    assert_eq!(st["RotationPeriodInDays"], 90);
    e.clock.advance(91 * keyvol::clock::DAY);
    let rot = e.ok("ListKeyRotations", json!({"KeyId": key}));
    let rots = rot["Rotations"].as_array().unwrap();
    assert_eq!(rots.len(), 4);
    assert_eq!(rots[3]["RotationType"], "AUTOMATIC");
    for (msg, blob) in &blobs {
        assert_eq!(
            unb64(&e.ok("Decrypt", json!({"CiphertextBlob": blob}))["Plaintext"]),
            msg.as_bytes()
        );
    }
    let events = e.kms.audit_list(&Default::default()).unwrap();
    assert!(events
        .iter()
        .any(|ev| ev["eventName"] == "RotateKey" && ev["eventType"] == "AwsServiceEvent"));
}

#[test]
fn scheduled_deletion_destroys_the_key_when_due() {
    let e = env();
    let key = e.create_key();
    e.ok(
        "CreateAlias",
        json!({"AliasName": "alias/doomed", "TargetKeyId": key}),
    );
    let ct =
        e.ok("Encrypt", json!({"KeyId": key, "Plaintext": b64(b"x")}))["CiphertextBlob"].clone();
    let r = e.ok(
        "ScheduleKeyDeletion",
        json!({"KeyId": key, "PendingWindowInDays": 7}),
    );
    assert_eq!(r["KeyState"], "PendingDeletion");
    assert_eq!(r["PendingWindowInDays"], 7);
    e.clock.advance(7 * keyvol::clock::DAY - 60);
    assert_eq!(
        e.ok("DescribeKey", json!({"KeyId": key}))["KeyMetadata"]["KeyState"],
        "PendingDeletion"
    );
    e.clock.advance(120);
    assert_eq!(
        e.code("DescribeKey", json!({"KeyId": key})),
        Some(NotFoundException)
    );
    assert_eq!(
        e.code("Decrypt", json!({"CiphertextBlob": ct})),
        Some(InvalidCiphertextException)
    );
    assert_eq!(
        e.code("DescribeKey", json!({"KeyId": "alias/doomed"})),
        Some(NotFoundException)
    );
    let keys = e.ok("ListKeys", json!({}));
    assert!(keys["Keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["KeyId"] != key.as_str()));
    // No material row survives.
    let db = rusqlite::Connection::open(e.dir.path().join("state.db")).unwrap();
    let n: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM key_material WHERE key_id = ?1",
            [&key],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    let events = e.kms.audit_list(&Default::default()).unwrap();
    assert!(events.iter().any(|ev| ev["eventName"] == "DeleteKey"));
}

#[test]
fn aliases_and_reserved_names() {
    let e = env();
    let (k1, k2) = (e.create_key(), e.create_key());
    e.ok(
        "CreateAlias",
        json!({"AliasName": "alias/app", "TargetKeyId": k1}),
    );
    assert_eq!(
        e.code(
            "CreateAlias",
            json!({"AliasName": "alias/app", "TargetKeyId": k2})
        ),
        Some(AlreadyExistsException)
    );
    assert_eq!(
        e.code(
            "CreateAlias",
            json!({"AliasName": "app", "TargetKeyId": k1})
        ),
        Some(ValidationException)
    );
    assert_eq!(
        e.code(
            "CreateAlias",
            json!({"AliasName": "alias/aws/mine", "TargetKeyId": k1})
        ),
        Some(InvalidAliasNameException)
    );
    assert_eq!(
        e.code(
            "CreateAlias",
            json!({"AliasName": "alias/bad name", "TargetKeyId": k1})
        ),
        Some(ValidationException)
    );
    assert_eq!(
        e.code(
            "CreateAlias",
            json!({"AliasName": "alias/x", "TargetKeyId": "alias/app"})
        ),
        Some(NotFoundException)
    );
    let ct = e.ok(
        "Encrypt",
        json!({"KeyId": "alias/app", "Plaintext": b64(b"a")}),
    );
    assert!(ct["KeyId"].as_str().unwrap().ends_with(&k1));
    e.ok(
        "UpdateAlias",
        json!({"AliasName": "alias/app", "TargetKeyId": k2}),
    );
    let ct = e.ok(
        "Encrypt",
        json!({"KeyId": "arn:aws:kms:us-east-1:111122223333:alias/app", "Plaintext": b64(b"a")}),
    );
    assert!(ct["KeyId"].as_str().unwrap().ends_with(&k2));
    let list = e.ok("ListAliases", json!({"KeyId": k2}));
    assert_eq!(list["Aliases"][0]["AliasName"], "alias/app");
    e.ok("DeleteAlias", json!({"AliasName": "alias/app"}));
    assert_eq!(
        e.code("DescribeKey", json!({"KeyId": "alias/app"})),
        Some(NotFoundException)
    );
    assert_eq!(
        e.code("DeleteAlias", json!({"AliasName": "alias/aws/ebs"})),
        Some(InvalidAliasNameException)
    );
    // The AWS managed EBS key appears on first use, managed by AWS.
    let md = e.ok("DescribeKey", json!({"KeyId": "alias/aws/ebs"}));
    assert_eq!(md["KeyMetadata"]["KeyManager"], "AWS");
    let ebs = md["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    assert_eq!(
        e.code("DisableKey", json!({"KeyId": ebs})),
        Some(AccessDeniedException)
    );
    assert_eq!(
        e.code("ScheduleKeyDeletion", json!({"KeyId": ebs})),
        Some(AccessDeniedException)
    );
    assert_eq!(
        e.code("PutKeyPolicy", json!({"KeyId": ebs, "Policy": "{}"})),
        Some(AccessDeniedException)
    );
    // Used directly (not via EBS) it refuses; via the service it works.
    assert_eq!(
        e.code(
            "Encrypt",
            json!({"KeyId": "alias/aws/ebs", "Plaintext": b64(b"a")})
        ),
        Some(AccessDeniedException)
    );
    let via = e.ctx.via_ec2();
    assert!(e
        .kms
        .call(
            &via,
            "Encrypt",
            json!({"KeyId": "alias/aws/ebs", "Plaintext": b64(b"a")})
        )
        .is_ok());
}

#[test]
fn keys_are_regional() {
    let e = env();
    let key = e.create_key();
    let mut eu = e.ctx.clone();
    eu.region = "eu-west-1".parse().unwrap();
    let arn = format!("arn:aws:kms:us-east-1:111122223333:key/{key}");
    for id in [key.as_str(), arn.as_str()] {
        let r = e.kms.call(&eu, "DescribeKey", json!({"KeyId": id}));
        assert_eq!(r.unwrap_err().code, NotFoundException, "{id}");
    }
    let ct =
        e.ok("Encrypt", json!({"KeyId": key, "Plaintext": b64(b"a")}))["CiphertextBlob"].clone();
    assert_eq!(
        e.kms
            .call(&eu, "Decrypt", json!({"CiphertextBlob": ct}))
            .unwrap_err()
            .code,
        InvalidCiphertextException
    );
    assert_eq!(
        e.kms.call(&eu, "ListKeys", json!({})).unwrap()["Keys"],
        json!([])
    );
}

#[test]
fn every_flipped_byte_of_a_ciphertext_is_rejected() {
    let e = env();
    let key = e.create_key();
    let ct = unb64(
        &e.ok(
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"flip me"), "EncryptionContext": {"k": "v"}}),
        )["CiphertextBlob"],
    );
    for i in 0..ct.len() {
        for bit in [0x01u8, 0x80] {
            let mut t = ct.clone();
            t[i] ^= bit;
            let r = e.call(
                "Decrypt",
                json!({"CiphertextBlob": b64(&t), "EncryptionContext": {"k": "v"}}),
            );
            assert_eq!(
                r.unwrap_err().code,
                InvalidCiphertextException,
                "byte {i} bit {bit:#x}"
            );
        }
    }
    // Truncated and extended blobs too.
    for t in [
        &ct[..ct.len() - 1],
        &ct[..10],
        &[ct.as_slice(), &[0]].concat()[..],
    ] {
        assert_eq!(
            e.call(
                "Decrypt",
                json!({"CiphertextBlob": b64(t), "EncryptionContext": {"k": "v"}})
            )
            .unwrap_err()
            .code,
            InvalidCiphertextException
        );
    }
}

#[test]
fn every_flipped_byte_of_an_envelope_file_is_rejected() {
    let e = env();
    let key = e.create_key();
    // Two full chunks and a partial one.
    let data: Vec<u8> = (0..(2 * keyvol::envelope::CHUNK + 1000))
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let mut ctx = std::collections::BTreeMap::new();
    ctx.insert("file".to_string(), "report.pdf".to_string());
    let mut enc = Vec::new();
    keyvol::envelope::encrypt(
        &e.kms,
        &e.ctx,
        &key,
        ctx.clone(),
        &mut data.as_slice(),
        &mut enc,
    )
    .unwrap();
    let mut dec = Vec::new();
    keyvol::envelope::decrypt(&e.kms, &e.ctx, None, None, &mut enc.as_slice(), &mut dec).unwrap();
    assert_eq!(dec, data);
    let header_len = enc.len() - data.len() - 3 * 16;
    // Every header byte, and a sample of payload bytes in each chunk (all
    // 200 KB would take minutes in a debug build): beginning, end and tags.
    let chunk = keyvol::envelope::CHUNK + 16;
    let mut positions: Vec<usize> = (0..header_len).collect();
    for c in 0..3 {
        let start = header_len + c * chunk;
        let end = (start + chunk).min(enc.len());
        positions.extend([start, start + 1, start + 777, end - 17, end - 16, end - 1]);
    }
    for i in positions {
        let mut t = enc.clone();
        t[i] ^= 0x01;
        let mut out = Vec::new();
        let r = keyvol::envelope::decrypt(&e.kms, &e.ctx, None, None, &mut t.as_slice(), &mut out);
        assert_eq!(r.unwrap_err().code, InvalidCiphertextException, "byte {i}");
    }
    // Truncation at a chunk boundary, reordering of chunks, a dropped last chunk.
    let cut = &enc[..header_len + chunk];
    assert!(
        keyvol::envelope::decrypt(&e.kms, &e.ctx, None, None, &mut &cut[..], &mut Vec::new())
            .is_err()
    );
    let mut swapped = enc[..header_len].to_vec();
    swapped.extend_from_slice(&enc[header_len + chunk..header_len + 2 * chunk]);
    swapped.extend_from_slice(&enc[header_len..header_len + chunk]);
    swapped.extend_from_slice(&enc[header_len + 2 * chunk..]);
    assert!(keyvol::envelope::decrypt(
        &e.kms,
        &e.ctx,
        None,
        None,
        &mut swapped.as_slice(),
        &mut Vec::new()
    )
    .is_err());
    // A wrong expected context is refused.
    let mut other = ctx.clone();
    other.insert("file".into(), "other.pdf".into());
    assert!(keyvol::envelope::decrypt(
        &e.kms,
        &e.ctx,
        None,
        Some(&other),
        &mut enc.as_slice(),
        &mut Vec::new()
    )
    .is_err());
}

#[test]
fn no_plaintext_key_material_or_data_key_on_disk() {
    let e = env();
    let key = e.create_key();
    let dk = e.ok(
        "GenerateDataKey",
        json!({"KeyId": key, "NumberOfBytes": 32}),
    );
    let dk_plain = unb64(&dk["Plaintext"]);
    let secret_msg = b"the plaintext that must not be stored anywhere";
    e.ok(
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(secret_msg)}),
    );
    // Recover the key material through the root key, as only keyvol can.
    let home = keyvol::home::Home::open(e.dir.path()).unwrap();
    let db = rusqlite::Connection::open(e.dir.path().join("state.db")).unwrap();
    let sealed: Vec<u8> = db
        .query_row(
            "SELECT sealed FROM key_material WHERE key_id = ?1",
            [&key],
            |r| r.get(0),
        )
        .unwrap();
    let material = home
        .unseal(&format!("kms-key-material/{key}/1"), &sealed)
        .unwrap();
    assert_eq!(material.len(), 32);
    drop(db);
    // Checkpoint nothing: the WAL is scanned too.
    for f in all_files(e.dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, material.expose()),
            "key material in {f:?}"
        );
        assert!(!contains(&bytes, &dk_plain), "data key in {f:?}");
        assert!(!contains(&bytes, secret_msg), "plaintext in {f:?}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(e.dir.path().join("root.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The audit log holds no plaintext either.
    let log = serde_json::to_string(&e.kms.audit_list(&Default::default()).unwrap()).unwrap();
    assert!(!log.contains(&b64(secret_msg)));
    assert!(!log.contains(&b64(&dk_plain)));
}

#[test]
fn two_processes_hammering_one_home() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    keyvol_json(home, &["kms", "list-keys"]);
    let bin = env!("CARGO_BIN_EXE_keyvol");
    let script = format!(
        "set -e; for i in $(seq 1 15); do k=$({bin} kms create-key --query KeyMetadata.KeyId --output text); \
         c=$({bin} kms encrypt --key-id $k --plaintext aGVsbG8= --query CiphertextBlob --output text); \
         p=$({bin} kms decrypt --ciphertext-blob $c --query Plaintext --output text); test \"$p\" = aGVsbG8=; \
         {bin} kms rotate-key-on-demand --key-id $k >/dev/null; done"
    );
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(&script)
                .env("KEYVOL_HOME", home)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let keys = keyvol_json(home, &["kms", "list-keys", "--limit", "1000"]);
    assert_eq!(keys["Keys"].as_array().unwrap().len(), 30);
    let v = keyvol_json(home, &["kms", "audit", "verify"]);
    assert_eq!(v["Valid"], true);
    assert!(v["EventsChecked"].as_u64().unwrap() >= 30 * 4);
    let db = rusqlite::Connection::open(home.join("state.db")).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}
