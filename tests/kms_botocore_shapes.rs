//! Every KMS response against botocore's output shape for its operation,
//! and every error name keyvol uses against the model's error shapes.

mod common;

use common::botocore::Model;
use common::*;
use keyvol::kms::operation::Access;
use keyvol::kms::{ErrorCode, Operation};
use serde_json::{json, Value};

/// Errors AWS sends from every service, outside each model's error shapes.
const COMMON_ERRORS: &[&str] = &[
    "AccessDeniedException",
    "ValidationException",
    "UnrecognizedClientException",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "MissingAuthenticationTokenException",
    "IncompleteSignatureException",
    "UnknownOperationException",
    "SerializationException",
    "RequestEntityTooLargeException",
];

#[test]
fn every_error_name_is_in_the_model() {
    let model = Model::load("kms");
    for code in ErrorCode::ALL {
        let name = code.to_string();
        if COMMON_ERRORS.contains(&name.as_str()) {
            continue;
        }
        let shape = &model.json["shapes"][&name];
        assert_eq!(
            shape["exception"], true,
            "{name} is not an error shape of the KMS model"
        );
    }
}

/// The KMS's operation table is botocore's operation list: no operation
/// missing, none made up, and the read-only ones are those the model
/// documents as changing nothing (List*, Describe*, Get*, the
/// cryptographic operations).
#[test]
fn the_operation_table_is_botocores_operation_list() {
    let model = Model::load("kms");
    let mut botocore = model.operations();
    botocore.sort();
    let mut ours: Vec<String> = Operation::ALL.iter().map(|o| o.name.to_string()).collect();
    ours.sort();
    assert_eq!(
        ours, botocore,
        "keyvol's operation table against botocore's KMS model"
    );
    let by_name = |prefixes: &[&str], op: &str| prefixes.iter().any(|p| op.starts_with(p));
    for op in Operation::ALL {
        let listing = by_name(&["List", "Describe", "Get"], op.name);
        if listing && op.offered() && op.name != "GetParametersForImport" {
            assert_eq!(op.access, Access::ReadOnly, "{} reads only", op.name);
        }
        if by_name(
            &["Create", "Update", "Delete", "Put", "Enable", "Disable"],
            op.name,
        ) {
            assert_eq!(op.access, Access::ReadWrite, "{} changes state", op.name);
        }
    }
    // Every member keyvol honours is a member of the model's input shape,
    // required as there, except where the model makes a member optional
    // for a feature keyvol does not take: `DryRunModifiers`
    // (IGNORE_CIPHERTEXT) and grants to AWS service principals.
    let stricter = [
        "Decrypt.CiphertextBlob",
        "ReEncrypt.CiphertextBlob",
        "CreateGrant.GranteePrincipal",
        "ListRetirableGrants.RetiringPrincipal",
    ];
    let mut off = Vec::new();
    for op in Operation::ALL {
        let shape = model.json["operations"][op.name]["input"]["shape"]
            .as_str()
            .unwrap();
        let members = model.json["shapes"][shape]["members"].as_object().unwrap();
        let required = model.json["shapes"][shape]["required"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for m in op.members.unwrap_or(&[]) {
            assert!(
                members.contains_key(m.name),
                "{}.{} is not in the model",
                op.name,
                m.name
            );
            let name = format!("{}.{}", op.name, m.name);
            if m.required != required.iter().any(|r| r == m.name)
                && !stricter.contains(&name.as_str())
            {
                off.push(name);
            }
        }
    }
    assert!(
        off.is_empty(),
        "required otherwise than in the model: {off:?}"
    );
}

#[test]
fn every_response_matches_its_output_shape() {
    let model = Model::load("kms");
    let e = env();
    let mut seen = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    let mut call = |op: &str, req: Value| -> Value {
        let out = e.ok(op, req);
        problems.extend(model.check_output(op, &out));
        seen.insert(op.to_string());
        out
    };
    let id = |v: &Value| v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();

    let key = id(&call(
        "CreateKey",
        json!({"Description": "shapes", "Tags": [{"TagKey": "t", "TagValue": "v"}]}),
    ));
    let other = id(&call("CreateKey", json!({})));
    call("DescribeKey", json!({"KeyId": key}));
    call("ListKeys", json!({"Limit": 1}));
    call(
        "UpdateKeyDescription",
        json!({"KeyId": key, "Description": "d"}),
    );
    call("DisableKey", json!({"KeyId": key}));
    call("EnableKey", json!({"KeyId": key}));
    let ct = call(
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"hi"), "EncryptionContext": {"a": "b"}}),
    );
    call(
        "Decrypt",
        json!({"CiphertextBlob": ct["CiphertextBlob"], "EncryptionContext": {"a": "b"}}),
    );
    call(
        "ReEncrypt",
        json!({"CiphertextBlob": ct["CiphertextBlob"], "SourceEncryptionContext": {"a": "b"}, "DestinationKeyId": other}),
    );
    call(
        "GenerateDataKey",
        json!({"KeyId": key, "KeySpec": "AES_256"}),
    );
    call(
        "GenerateDataKeyWithoutPlaintext",
        json!({"KeyId": key, "NumberOfBytes": 64}),
    );
    call("GenerateRandom", json!({"NumberOfBytes": 16}));
    call(
        "CreateAlias",
        json!({"AliasName": "alias/shapes", "TargetKeyId": key}),
    );
    call(
        "UpdateAlias",
        json!({"AliasName": "alias/shapes", "TargetKeyId": other}),
    );
    call("ListAliases", json!({}));
    call(
        "EnableKeyRotation",
        json!({"KeyId": key, "RotationPeriodInDays": 90}),
    );
    call("GetKeyRotationStatus", json!({"KeyId": key}));
    call("RotateKeyOnDemand", json!({"KeyId": key}));
    call("ListKeyRotations", json!({"KeyId": key}));
    call("DisableKeyRotation", json!({"KeyId": key}));
    call(
        "TagResource",
        json!({"KeyId": key, "Tags": [{"TagKey": "x", "TagValue": "y"}]}),
    );
    call("ListResourceTags", json!({"KeyId": key}));
    call("UntagResource", json!({"KeyId": key, "TagKeys": ["x"]}));
    let policy = call("GetKeyPolicy", json!({"KeyId": key}));
    call(
        "PutKeyPolicy",
        json!({"KeyId": key, "Policy": policy["Policy"]}),
    );
    call("ListKeyPolicies", json!({"KeyId": key}));
    let grantee = "arn:aws:iam::111122223333:user/app";
    let g = call(
        "CreateGrant",
        json!({"KeyId": key, "GranteePrincipal": grantee, "RetiringPrincipal": grantee,
               "Operations": ["Decrypt"], "Constraints": {"EncryptionContextSubset": {"a": "b"}}}),
    );
    call("ListGrants", json!({"KeyId": key}));
    call("ListRetirableGrants", json!({"RetiringPrincipal": grantee}));
    call("RetireGrant", json!({"GrantToken": g["GrantToken"]}));
    let g = call(
        "CreateGrant",
        json!({"KeyId": key, "GranteePrincipal": grantee, "Operations": ["Encrypt"]}),
    );
    call(
        "RevokeGrant",
        json!({"KeyId": key, "GrantId": g["GrantId"]}),
    );

    // Asymmetric, HMAC and key agreement keys.
    let rsa = id(&call(
        "CreateKey",
        json!({"KeySpec": "RSA_2048", "KeyUsage": "ENCRYPT_DECRYPT"}),
    ));
    call("GetPublicKey", json!({"KeyId": rsa}));
    let rct = call(
        "Encrypt",
        json!({"KeyId": rsa, "Plaintext": b64(b"x"), "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
    );
    let _rpt = call(
        "Decrypt",
        json!({"KeyId": rsa, "CiphertextBlob": rct["CiphertextBlob"], "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
    );
    let ecc = id(&call(
        "CreateKey",
        json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}),
    ));
    let sig = call(
        "Sign",
        json!({"KeyId": ecc, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    call(
        "Verify",
        json!({"KeyId": ecc, "Message": b64(b"m"), "Signature": sig["Signature"], "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    // ML-DSA: the 2025 KeySpec, SigningAlgorithm and MessageType values.
    let ml_dsa = id(&call(
        "CreateKey",
        json!({"KeySpec": "ML_DSA_65", "KeyUsage": "SIGN_VERIFY"}),
    ));
    call("DescribeKey", json!({"KeyId": ml_dsa}));
    let ml_pk = call("GetPublicKey", json!({"KeyId": ml_dsa}));
    let ml_sig = call(
        "Sign",
        json!({"KeyId": ml_dsa, "Message": b64(b"m"), "MessageType": "RAW", "SigningAlgorithm": "ML_DSA_SHAKE_256"}),
    );
    call(
        "Verify",
        json!({"KeyId": ml_dsa, "Message": b64(b"m"), "Signature": ml_sig["Signature"], "SigningAlgorithm": "ML_DSA_SHAKE_256"}),
    );
    assert_eq!(ml_pk["SigningAlgorithms"], json!(["ML_DSA_SHAKE_256"]));
    let mu_sig = call(
        "Sign",
        json!({"KeyId": ml_dsa, "Message": b64(&[5u8; 64]), "MessageType": "EXTERNAL_MU", "SigningAlgorithm": "ML_DSA_SHAKE_256"}),
    );
    call(
        "Verify",
        json!({"KeyId": ml_dsa, "Message": b64(&[5u8; 64]), "MessageType": "EXTERNAL_MU", "Signature": mu_sig["Signature"], "SigningAlgorithm": "ML_DSA_SHAKE_256"}),
    );
    let hmac = id(&call(
        "CreateKey",
        json!({"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}),
    ));
    let mac = call(
        "GenerateMac",
        json!({"KeyId": hmac, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_256"}),
    );
    call(
        "VerifyMac",
        json!({"KeyId": hmac, "Message": b64(b"m"), "Mac": mac["Mac"], "MacAlgorithm": "HMAC_SHA_256"}),
    );
    call(
        "GenerateDataKeyPair",
        json!({"KeyId": key, "KeyPairSpec": "ECC_NIST_P256"}),
    );
    call(
        "GenerateDataKeyPairWithoutPlaintext",
        json!({"KeyId": key, "KeyPairSpec": "RSA_2048"}),
    );
    let ka = id(&call(
        "CreateKey",
        json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "KEY_AGREEMENT"}),
    ));
    let ka2 = id(&call(
        "CreateKey",
        json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "KEY_AGREEMENT"}),
    ));
    let peer = e.ok("GetPublicKey", json!({"KeyId": ka2}));
    call(
        "DeriveSharedSecret",
        json!({"KeyId": ka, "KeyAgreementAlgorithm": "ECDH", "PublicKey": peer["PublicKey"]}),
    );

    // Imported key material.
    let ext = id(&call("CreateKey", json!({"Origin": "EXTERNAL"})));
    let oaep = json!({"KeyId": ext, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"});
    let params = call("GetParametersForImport", oaep.clone());
    call(
        "ImportKeyMaterial",
        import_request(
            &ext,
            &params,
            &[7u8; 32],
            json!({"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}),
        ),
    );
    // The multi-material model: new material pending rotation, the
    // rotation onto it, every material listed, one deleted by id.
    let params = call("GetParametersForImport", oaep);
    let new = call(
        "ImportKeyMaterial",
        import_request(
            &ext,
            &params,
            &[8u8; 32],
            json!({"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": e.clock.now() + 86_400,
                   "ImportType": "NEW_KEY_MATERIAL", "KeyMaterialDescription": "next material"}),
        ),
    );
    call(
        "ListKeyRotations",
        json!({"KeyId": ext, "IncludeKeyMaterial": "ALL_KEY_MATERIAL"}),
    );
    call("RotateKeyOnDemand", json!({"KeyId": ext}));
    call("ListKeyRotations", json!({"KeyId": ext}));
    call(
        "ListKeyRotations",
        json!({"KeyId": ext, "IncludeKeyMaterial": "ALL_KEY_MATERIAL"}),
    );
    call(
        "ListKeyRotations",
        json!({"KeyId": key, "IncludeKeyMaterial": "ALL_KEY_MATERIAL"}),
    );
    call(
        "DeleteImportedKeyMaterial",
        json!({"KeyId": ext, "KeyMaterialId": new["KeyMaterialId"]}),
    );
    call(
        "ListKeyRotations",
        json!({"KeyId": ext, "IncludeKeyMaterial": "ALL_KEY_MATERIAL"}),
    );
    call("DeleteImportedKeyMaterial", json!({"KeyId": ext}));
    call("DescribeKey", json!({"KeyId": ext}));

    // Asymmetric and HMAC keys with imported material.
    let ext_ecc = id(&call(
        "CreateKey",
        json!({"Origin": "EXTERNAL", "KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}),
    ));
    let ext_hmac = id(&call(
        "CreateKey",
        json!({"Origin": "EXTERNAL", "KeySpec": "HMAC_384", "KeyUsage": "GENERATE_VERIFY_MAC"}),
    ));
    let ecc_material =
        keyvol::kms::asym::PrivateKeyMaterial::generate(keyvol::kms::asym::KeySpec::EccNistP256)
            .unwrap();
    for (k, material) in [
        (&ext_ecc, ecc_material.material().expose().to_vec()),
        (&ext_hmac, vec![9u8; 48]),
    ] {
        let params = call(
            "GetParametersForImport",
            json!({"KeyId": k, "WrappingAlgorithm": "RSA_AES_KEY_WRAP_SHA_256", "WrappingKeySpec": "RSA_3072"}),
        );
        let wrapped = keyvol::kms::asym::wrap_for_import(
            &unb64(&params["PublicKey"]),
            keyvol::kms::asym::AlgorithmSpec::RsaAesKeyWrapSha256,
            &material,
        )
        .unwrap();
        call(
            "ImportKeyMaterial",
            json!({"KeyId": k, "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": b64(&wrapped),
                   "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}),
        );
        call("DescribeKey", json!({"KeyId": k}));
    }
    call("GetPublicKey", json!({"KeyId": ext_ecc}));
    call(
        "Sign",
        json!({"KeyId": ext_ecc, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    call(
        "GenerateMac",
        json!({"KeyId": ext_hmac, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_384"}),
    );
    call("DeleteImportedKeyMaterial", json!({"KeyId": ext_ecc}));

    call("GetKeyLastUsage", json!({"KeyId": key}));
    call("DescribeCustomKeyStores", json!({}));
    call("DeleteAlias", json!({"AliasName": "alias/shapes"}));
    call(
        "ScheduleKeyDeletion",
        json!({"KeyId": other, "PendingWindowInDays": 7}),
    );
    call("CancelKeyDeletion", json!({"KeyId": other}));

    // Multi-Region keys: the primary's and the replica's metadata, and a
    // primary waiting for its replica's deletion.
    let mrk = call(
        "CreateKey",
        json!({"MultiRegion": true, "Tags": [{"TagKey": "t", "TagValue": "v"}]}),
    )["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        "ReplicateKey",
        json!({"KeyId": mrk, "ReplicaRegion": "us-west-2", "Tags": [{"TagKey": "t", "TagValue": "w"}]}),
    );
    call("DescribeKey", json!({"KeyId": mrk}));
    call(
        "UpdatePrimaryRegion",
        json!({"KeyId": mrk, "PrimaryRegion": "us-west-2"}),
    );
    call("DescribeKey", json!({"KeyId": mrk}));

    assert!(
        problems.is_empty(),
        "responses off the botocore model:\n{}",
        problems.join("\n")
    );
    // Every operation that can succeed here was checked: all but those of
    // features keyvol does not offer.
    let unchecked: Vec<String> = model
        .operations()
        .into_iter()
        .filter(|op| !seen.contains(op) && Operation::named(op).is_none_or(Operation::offered))
        .collect();
    assert!(
        unchecked.is_empty(),
        "operations without a shape check: {unchecked:?}"
    );
}

#[test]
fn the_shape_check_finds_what_is_off() {
    let model = Model::load("kms");
    let ok = json!({"KeyId": "arn:aws:kms:us-east-1:111122223333:key/k", "CiphertextBlob": "AAAA", "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"});
    assert!(model.check_output("Encrypt", &ok).is_empty());
    let bad = json!({"KeyId": 5, "CiphertextBlob": "not base64!", "EncryptionAlgorithm": "ROT13", "Extra": 1});
    let problems = model.check_output("Encrypt", &bad);
    assert_eq!(problems.len(), 4, "{problems:?}");
    let missing = model.check_output("DescribeKey", &json!({"KeyMetadata": {"Arn": "a"}}));
    assert!(
        missing.iter().any(|p| p.contains("required member KeyId")),
        "{missing:?}"
    );
}

/// An ImportKeyMaterial request of `material` wrapped (RSAES_OAEP_SHA_256)
/// for the GetParametersForImport answer `params`, with `extra` members.
fn import_request(key: &str, params: &Value, material: &[u8], extra: Value) -> Value {
    let wrapped = keyvol::kms::asym::wrap_for_import(
        &unb64(&params["PublicKey"]),
        keyvol::kms::asym::AlgorithmSpec::RsaesOaepSha256,
        material,
    )
    .unwrap();
    let mut req = json!({"KeyId": key, "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": b64(&wrapped)});
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    req
}

/// `keyvol kms <operation>` takes every request member of botocore's model
/// that the KMS honours, as the aws CLI's flag (`--key-material-id`); the
/// members it leaves out are listed here with the reason.
#[test]
fn every_cli_command_takes_the_model_members() {
    let model = Model::load("kms");
    // (operation, member): not taken, and why.
    let left_out: &[(&str, &str)] = &[
        // Attested Nitro Enclave recipients: no enclaves here.
        ("Decrypt", "Recipient"),
        ("GenerateDataKey", "Recipient"),
        ("GenerateDataKeyPair", "Recipient"),
        ("GenerateRandom", "Recipient"),
        ("DeriveSharedSecret", "Recipient"),
        ("Decrypt", "DryRunModifiers"),
        ("ReEncrypt", "DryRunModifiers"),
        // Custom key stores do not exist in this KMS.
        ("CreateKey", "CustomKeyStoreId"),
        ("CreateKey", "XksKeyId"),
        // Grants to AWS service principals.
        ("CreateGrant", "GranteeServicePrincipal"),
        ("CreateGrant", "RetiringServicePrincipal"),
        ("ListGrants", "GranteeServicePrincipal"),
        ("ListRetirableGrants", "RetiringServicePrincipal"),
        // Keys shared through Resource Access Manager: no RAM here.
        ("ListKeys", "ResourceOwners"),
    ];
    let kebab = |s: &str| {
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    };
    let mut missing = Vec::new();
    let mut checked = 0;
    for op in model.operations() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyvol"))
            .args(["kms", &kebab(&op), "--help"])
            .output()
            .unwrap();
        if !out.status.success() {
            continue;
        }
        checked += 1;
        let help = String::from_utf8_lossy(&out.stdout);
        let Some(shape) = model.json["operations"][&op]["input"]["shape"].as_str() else {
            continue;
        };
        let members = model.json["shapes"][shape]["members"].as_object().unwrap();
        for m in members.keys() {
            let flag = format!("--{} ", kebab(m));
            let flag_eol = format!("--{}\n", kebab(m));
            if !help.contains(&flag)
                && !help.contains(&flag_eol)
                && !left_out.contains(&(op.as_str(), m.as_str()))
            {
                missing.push(format!("{op}.{m}"));
            }
        }
    }
    assert!(
        checked >= 40,
        "only {checked} operations have a CLI command"
    );
    assert!(missing.is_empty(), "CLI commands lack members: {missing:?}");
}
