//! Multi-Region keys as AWS KMS has them: `mrk-` ids, ReplicateKey and
//! UpdatePrimaryRegion, ciphertexts that open in every related key's
//! region, shared material and rotation, independent states, policies,
//! tags and aliases, the deletion of a primary after its replicas, and the
//! refusals AWS answers.

mod common;

use common::*;
use keyvol::iam::Iam;
use keyvol::ids::{AccountId, Region};
use keyvol::kms::ErrorCode::{self, *};
use keyvol::kms::{Kms, RequestContext};
use serde_json::{json, Value};

const WEST: &str = "us-west-2";

fn in_region(e: &Env, region: &str) -> RequestContext {
    RequestContext::new(e.ctx.caller.clone(), region.parse::<Region>().unwrap())
}

fn call(e: &Env, ctx: &RequestContext, op: &str, req: Value) -> keyvol::kms::KmsResult<Value> {
    e.kms.call(ctx, op, req)
}

fn ok(e: &Env, ctx: &RequestContext, op: &str, req: Value) -> Value {
    call(e, ctx, op, req).unwrap_or_else(|err| panic!("{op} in {}: {err}", ctx.region))
}

fn code(e: &Env, ctx: &RequestContext, op: &str, req: Value) -> ErrorCode {
    match call(e, ctx, op, req) {
        Ok(v) => panic!("{op} should fail, answered {v}"),
        Err(err) => err.code,
    }
}

fn create_mrk(e: &Env, extra: Value) -> Value {
    let mut req = json!({"MultiRegion": true});
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    e.ok("CreateKey", req)["KeyMetadata"].clone()
}

#[test]
fn a_replica_decrypts_what_its_primary_encrypted_and_back() {
    let e = env();
    let west = in_region(&e, WEST);
    let md = create_mrk(&e, json!({"Description": "primary"}));
    let id = md["KeyId"].as_str().unwrap().to_string();
    assert!(id.starts_with("mrk-") && id.len() == 36, "{id}");
    assert_eq!(md["MultiRegion"], true);
    let cfg = &md["MultiRegionConfiguration"];
    assert_eq!(cfg["MultiRegionKeyType"], "PRIMARY", "{md}");
    assert_eq!(cfg["PrimaryKey"]["Region"], "us-east-1");
    assert_eq!(cfg["PrimaryKey"]["Arn"], md["Arn"]);
    assert_eq!(cfg["ReplicaKeys"], json!([]));

    let blob = e.ok(
        "Encrypt",
        json!({"KeyId": id, "Plaintext": b64(b"across regions"), "EncryptionContext": {"app": "x"}}),
    )["CiphertextBlob"]
        .clone();
    // Before replication the key does not exist in us-west-2.
    assert_eq!(
        code(&e, &west, "DescribeKey", json!({"KeyId": id})),
        NotFoundException
    );
    assert_eq!(
        code(
            &e,
            &west,
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": {"app": "x"}})
        ),
        InvalidCiphertextException
    );

    let rep = e.ok(
        "ReplicateKey",
        json!({"KeyId": md["Arn"], "ReplicaRegion": WEST, "Description": "replica",
               "Tags": [{"TagKey": "team", "TagValue": "west"}]}),
    );
    let rmd = &rep["ReplicaKeyMetadata"];
    assert_eq!(rmd["KeyId"], id.as_str(), "{rep}");
    let west_arn = format!("arn:aws:kms:{WEST}:{}:key/{id}", e.ctx.caller.account);
    assert_eq!(rmd["Arn"], west_arn.as_str());
    assert_eq!(rmd["Description"], "replica");
    assert_eq!(rmd["KeyState"], "Enabled");
    assert_eq!(
        rmd["MultiRegionConfiguration"]["MultiRegionKeyType"],
        "REPLICA"
    );
    assert_eq!(
        rmd["MultiRegionConfiguration"]["PrimaryKey"]["Arn"],
        md["Arn"]
    );
    assert_eq!(
        rep["ReplicaTags"],
        json!([{"TagKey": "team", "TagValue": "west"}])
    );
    let policy: Value = serde_json::from_str(rep["ReplicaPolicy"].as_str().unwrap()).unwrap();
    assert_eq!(
        policy["Statement"][0]["Principal"]["AWS"],
        format!("arn:aws:iam::{}:root", e.ctx.caller.account)
    );

    // The primary lists its replica; ListKeys of each region shows its key.
    let described = e.ok("DescribeKey", json!({"KeyId": id}))["KeyMetadata"].clone();
    assert_eq!(
        described["MultiRegionConfiguration"]["ReplicaKeys"],
        json!([{"Arn": west_arn, "Region": WEST}])
    );
    let listed: Vec<Value> = ok(&e, &west, "ListKeys", json!({}))["Keys"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(listed, vec![json!({"KeyId": id, "KeyArn": west_arn})]);

    // The replica opens the primary's ciphertext, in its own Region.
    let out = ok(
        &e,
        &west,
        "Decrypt",
        json!({"CiphertextBlob": blob, "EncryptionContext": {"app": "x"}}),
    );
    assert_eq!(unb64(&out["Plaintext"]), b"across regions");
    assert_eq!(out["KeyId"], west_arn.as_str());
    assert_eq!(
        out["KeyMaterialId"],
        e.ok(
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": {"app": "x"}})
        )["KeyMaterialId"],
        "related keys share their key material"
    );
    // The context still binds.
    assert_eq!(
        code(
            &e,
            &west,
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": {"app": "y"}})
        ),
        InvalidCiphertextException
    );
    // And the other way round: a data key made in us-west-2 opens in us-east-1.
    let dk = ok(
        &e,
        &west,
        "GenerateDataKey",
        json!({"KeyId": id, "KeySpec": "AES_256"}),
    );
    let back = e.ok(
        "Decrypt",
        json!({"CiphertextBlob": dk["CiphertextBlob"], "KeyId": id}),
    );
    assert_eq!(back["Plaintext"], dk["Plaintext"]);
    // ReEncrypt in the replica's Region from a primary ciphertext.
    let re = ok(
        &e,
        &west,
        "ReEncrypt",
        json!({"CiphertextBlob": blob, "SourceEncryptionContext": {"app": "x"}, "DestinationKeyId": id}),
    );
    assert_eq!(re["SourceKeyId"], west_arn.as_str());

    // Everything survives reopening the store.
    let home = std::sync::Arc::new(keyvol::home::Home::open(e.dir.path()).unwrap());
    let again = Kms::open(home.clone(), e.clock.clone()).unwrap();
    let iam = Iam::open(home, e.clock.clone()).unwrap();
    let ctx = RequestContext::new(
        iam.profile_caller("default").unwrap(),
        WEST.parse().unwrap(),
    );
    let out = again
        .call(
            &ctx,
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": {"app": "x"}}),
        )
        .unwrap();
    assert_eq!(unb64(&out["Plaintext"]), b"across regions");
}

#[test]
fn related_keys_keep_their_own_state_policy_tags_and_aliases() {
    let e = env();
    let west = in_region(&e, WEST);
    let id = create_mrk(&e, json!({}))["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    e.ok("ReplicateKey", json!({"KeyId": id, "ReplicaRegion": WEST}));
    let blob =
        e.ok("Encrypt", json!({"KeyId": id, "Plaintext": b64(b"p")}))["CiphertextBlob"].clone();

    ok(&e, &west, "DisableKey", json!({"KeyId": id}));
    assert_eq!(
        code(&e, &west, "Decrypt", json!({"CiphertextBlob": blob})),
        DisabledException
    );
    // The primary is unaffected.
    e.ok("Decrypt", json!({"CiphertextBlob": blob}));
    ok(&e, &west, "EnableKey", json!({"KeyId": id}));

    ok(
        &e,
        &west,
        "CreateAlias",
        json!({"AliasName": "alias/west-only", "TargetKeyId": id}),
    );
    assert_eq!(
        e.code("DescribeKey", json!({"KeyId": "alias/west-only"})),
        Some(NotFoundException)
    );
    ok(
        &e,
        &west,
        "DescribeKey",
        json!({"KeyId": "alias/west-only"}),
    );
    ok(
        &e,
        &west,
        "TagResource",
        json!({"KeyId": id, "Tags": [{"TagKey": "k", "TagValue": "w"}]}),
    );
    assert_eq!(
        e.ok("ListResourceTags", json!({"KeyId": id}))["Tags"],
        json!([])
    );
    ok(
        &e,
        &west,
        "UpdateKeyDescription",
        json!({"KeyId": id, "Description": "mine"}),
    );
    assert_eq!(
        e.ok("DescribeKey", json!({"KeyId": id}))["KeyMetadata"]["Description"],
        ""
    );

    // The replica's policy is its own: a policy that denies Decrypt there
    // leaves the primary usable.
    let account = e.ctx.caller.account.to_string();
    let deny = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "admin", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{account}:root")}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "no", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}]});
    ok(
        &e,
        &west,
        "PutKeyPolicy",
        json!({"KeyId": id, "PolicyName": "default", "Policy": deny.to_string()}),
    );
    assert_eq!(
        code(&e, &west, "Decrypt", json!({"CiphertextBlob": blob})),
        AccessDeniedException
    );
    e.ok("Decrypt", json!({"CiphertextBlob": blob}));
}

#[test]
fn rotation_is_shared_and_managed_on_the_primary() {
    let e = env();
    let west = in_region(&e, WEST);
    let id = create_mrk(&e, json!({}))["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    e.ok("ReplicateKey", json!({"KeyId": id, "ReplicaRegion": WEST}));
    for op in [
        "EnableKeyRotation",
        "DisableKeyRotation",
        "RotateKeyOnDemand",
    ] {
        let err = call(&e, &west, op, json!({"KeyId": id})).unwrap_err();
        assert_eq!(err.code, UnsupportedOperationException, "{op}: {err}");
        assert!(
            err.message.contains("primary key in us-east-1"),
            "{op}: {}",
            err.message
        );
    }
    e.ok(
        "EnableKeyRotation",
        json!({"KeyId": id, "RotationPeriodInDays": 90}),
    );
    let status = ok(&e, &west, "GetKeyRotationStatus", json!({"KeyId": id}));
    assert_eq!(status["KeyRotationEnabled"], true, "{status}");
    assert_eq!(status["RotationPeriodInDays"], 90);

    e.ok("RotateKeyOnDemand", json!({"KeyId": id}));
    let blob =
        e.ok("Encrypt", json!({"KeyId": id, "Plaintext": b64(b"v2")}))["CiphertextBlob"].clone();
    assert_eq!(
        keyvol::kms::ciphertext::parse_header(&unb64(&blob))
            .unwrap()
            .material_version,
        2
    );
    assert_eq!(
        unb64(&ok(&e, &west, "Decrypt", json!({"CiphertextBlob": blob}))["Plaintext"]),
        b"v2"
    );
    let rotations = ok(&e, &west, "ListKeyRotations", json!({"KeyId": id}))["Rotations"].clone();
    assert_eq!(rotations.as_array().unwrap().len(), 1, "{rotations}");
    assert_eq!(rotations[0]["RotationType"], "ON_DEMAND");

    // Automatic rotation of the primary reaches the replica too.
    e.clock.advance(91 * 86_400);
    e.kms.tick().unwrap();
    let blob =
        e.ok("Encrypt", json!({"KeyId": id, "Plaintext": b64(b"v3")}))["CiphertextBlob"].clone();
    assert_eq!(
        keyvol::kms::ciphertext::parse_header(&unb64(&blob))
            .unwrap()
            .material_version,
        3
    );
    assert_eq!(
        unb64(&ok(&e, &west, "Decrypt", json!({"CiphertextBlob": blob}))["Plaintext"]),
        b"v3"
    );
}

#[test]
fn update_primary_region_swaps_the_roles() {
    let e = env();
    let west = in_region(&e, WEST);
    let id = create_mrk(&e, json!({}))["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    e.ok("ReplicateKey", json!({"KeyId": id, "ReplicaRegion": WEST}));
    e.ok("EnableKeyRotation", json!({"KeyId": id}));
    assert_eq!(
        e.code(
            "UpdatePrimaryRegion",
            json!({"KeyId": id, "PrimaryRegion": "eu-west-1"})
        ),
        Some(NotFoundException)
    );
    assert_eq!(
        e.code(
            "UpdatePrimaryRegion",
            json!({"KeyId": id, "PrimaryRegion": "us-east-1"})
        ),
        Some(ValidationException)
    );
    assert_eq!(
        e.code(
            "UpdatePrimaryRegion",
            json!({"KeyId": id, "PrimaryRegion": "moon-base-1"})
        ),
        Some(ValidationException)
    );
    assert_eq!(
        e.code("UpdatePrimaryRegion", json!({"KeyId": id})),
        Some(ValidationException)
    );
    e.ok(
        "UpdatePrimaryRegion",
        json!({"KeyId": id, "PrimaryRegion": WEST}),
    );
    let east = e.ok("DescribeKey", json!({"KeyId": id}))["KeyMetadata"]["MultiRegionConfiguration"]
        .clone();
    let w = ok(&e, &west, "DescribeKey", json!({"KeyId": id}))["KeyMetadata"]
        ["MultiRegionConfiguration"]
        .clone();
    assert_eq!(east["MultiRegionKeyType"], "REPLICA", "{east}");
    assert_eq!(w["MultiRegionKeyType"], "PRIMARY", "{w}");
    assert_eq!(east["PrimaryKey"]["Region"], WEST);
    assert_eq!(w["ReplicaKeys"][0]["Region"], "us-east-1");
    // The schedule moved with the role.
    assert_eq!(
        ok(&e, &west, "GetKeyRotationStatus", json!({"KeyId": id}))["KeyRotationEnabled"],
        true
    );
    assert_eq!(
        e.ok("GetKeyRotationStatus", json!({"KeyId": id}))["KeyRotationEnabled"],
        true
    );
    assert_eq!(
        e.code("EnableKeyRotation", json!({"KeyId": id})),
        Some(UnsupportedOperationException)
    );
    // Replication now starts from the new primary only.
    assert_eq!(
        e.code(
            "ReplicateKey",
            json!({"KeyId": id, "ReplicaRegion": "eu-west-1"})
        ),
        Some(UnsupportedOperationException)
    );
    ok(
        &e,
        &west,
        "ReplicateKey",
        json!({"KeyId": id, "ReplicaRegion": "eu-west-1"}),
    );
    let all = ok(&e, &west, "DescribeKey", json!({"KeyId": id}))["KeyMetadata"]
        ["MultiRegionConfiguration"]["ReplicaKeys"]
        .clone();
    let regions: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, vec!["eu-west-1", "us-east-1"]);
}

#[test]
fn replicate_key_refusals_are_aws_names() {
    let e = env();
    let west = in_region(&e, WEST);
    let single = e.create_key();
    let id = create_mrk(&e, json!({}))["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let cases = [
        (
            json!({"KeyId": single, "ReplicaRegion": WEST}),
            UnsupportedOperationException,
        ),
        (json!({"KeyId": id}), ValidationException),
        (
            json!({"KeyId": id, "ReplicaRegion": "us-east-1"}),
            ValidationException,
        ),
        (
            json!({"KeyId": id, "ReplicaRegion": "xx-fake-9"}),
            ValidationException,
        ),
        (json!({"KeyId": "mrk-0123"}), NotFoundException),
        (
            json!({"KeyId": "mrk-0123456789abcdef0123456789abcdef", "ReplicaRegion": WEST}),
            NotFoundException,
        ),
        (
            json!({"KeyId": id, "ReplicaRegion": WEST, "Policy": "{not json"}),
            MalformedPolicyDocumentException,
        ),
        (
            json!({"KeyId": id, "ReplicaRegion": WEST, "Tags": [{"TagKey": "a", "TagValue": "1"}, {"TagKey": "a", "TagValue": "2"}]}),
            TagException,
        ),
    ];
    for (req, want) in cases {
        assert_eq!(e.code("ReplicateKey", req.clone()), Some(want), "{req}");
    }
    // None of them made a replica.
    assert_eq!(
        code(&e, &west, "DescribeKey", json!({"KeyId": id})),
        NotFoundException
    );
    e.ok("ReplicateKey", json!({"KeyId": id, "ReplicaRegion": WEST}));
    assert_eq!(
        e.code("ReplicateKey", json!({"KeyId": id, "ReplicaRegion": WEST})),
        Some(AlreadyExistsException)
    );
    // A replica does not replicate.
    assert_eq!(
        code(
            &e,
            &west,
            "ReplicateKey",
            json!({"KeyId": id, "ReplicaRegion": "eu-west-1"})
        ),
        UnsupportedOperationException
    );
    // A pending-deletion primary does not either.
    let other = create_mrk(&e, json!({}))["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    e.ok(
        "ScheduleKeyDeletion",
        json!({"KeyId": other, "PendingWindowInDays": 7}),
    );
    assert_eq!(
        e.code(
            "ReplicateKey",
            json!({"KeyId": other, "ReplicaRegion": WEST})
        ),
        Some(KMSInvalidStateException)
    );
    // Asymmetric and HMAC keys are multi-Region too, and sign the same.
    let hmac = create_mrk(
        &e,
        json!({"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}),
    )["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    e.ok(
        "ReplicateKey",
        json!({"KeyId": hmac, "ReplicaRegion": WEST}),
    );
    let mac = e.ok(
        "GenerateMac",
        json!({"KeyId": hmac, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_256"}),
    )["Mac"]
        .clone();
    let v = ok(
        &e,
        &west,
        "VerifyMac",
        json!({"KeyId": hmac, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_256", "Mac": mac}),
    );
    assert_eq!(v["MacValid"], true);
    let ec = create_mrk(
        &e,
        json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}),
    )["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    e.ok("ReplicateKey", json!({"KeyId": ec, "ReplicaRegion": WEST}));
    assert_eq!(
        e.ok("GetPublicKey", json!({"KeyId": ec}))["PublicKey"],
        ok(&e, &west, "GetPublicKey", json!({"KeyId": ec}))["PublicKey"]
    );
    let sig = e.ok(
        "Sign",
        json!({"KeyId": ec, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256"}),
    )["Signature"]
        .clone();
    let v = ok(
        &e,
        &west,
        "Verify",
        json!({"KeyId": ec, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256", "Signature": sig}),
    );
    assert_eq!(v["SignatureValid"], true);
}

#[test]
fn a_primary_is_deleted_after_its_replicas() {
    let e = env();
    let west = in_region(&e, WEST);
    let id = create_mrk(&e, json!({}))["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    e.ok("ReplicateKey", json!({"KeyId": id, "ReplicaRegion": WEST}));
    let out = e.ok(
        "ScheduleKeyDeletion",
        json!({"KeyId": id, "PendingWindowInDays": 7}),
    );
    assert_eq!(out["KeyState"], "PendingReplicaDeletion", "{out}");
    assert!(out.get("DeletionDate").is_none(), "{out}");
    assert_eq!(out["PendingWindowInDays"], 7);
    assert_eq!(
        e.code("Encrypt", json!({"KeyId": id, "Plaintext": b64(b"x")})),
        Some(KMSInvalidStateException)
    );
    assert_eq!(
        e.code("ScheduleKeyDeletion", json!({"KeyId": id})),
        Some(KMSInvalidStateException)
    );
    // The replica is still usable, and is deleted on its own schedule.
    ok(
        &e,
        &west,
        "Encrypt",
        json!({"KeyId": id, "Plaintext": b64(b"x")}),
    );
    ok(
        &e,
        &west,
        "ScheduleKeyDeletion",
        json!({"KeyId": id, "PendingWindowInDays": 7}),
    );
    e.clock.advance(8 * 86_400);
    e.kms.tick().unwrap();
    assert_eq!(
        code(&e, &west, "DescribeKey", json!({"KeyId": id})),
        NotFoundException
    );
    // Then the primary's own window starts.
    let md = e.ok("DescribeKey", json!({"KeyId": id}))["KeyMetadata"].clone();
    assert_eq!(md["KeyState"], "PendingDeletion", "{md}");
    assert!(md["DeletionDate"].as_i64().unwrap() > e.clock.now() + 6 * 86_400);
    assert_eq!(md["MultiRegionConfiguration"]["ReplicaKeys"], json!([]));
    e.clock.advance(8 * 86_400);
    e.kms.tick().unwrap();
    assert_eq!(
        e.code("DescribeKey", json!({"KeyId": id})),
        Some(NotFoundException)
    );

    // CancelKeyDeletion of a primary waiting for its replicas.
    let other = create_mrk(&e, json!({}))["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    e.ok(
        "ReplicateKey",
        json!({"KeyId": other, "ReplicaRegion": WEST}),
    );
    e.ok("ScheduleKeyDeletion", json!({"KeyId": other}));
    e.ok("CancelKeyDeletion", json!({"KeyId": other}));
    assert_eq!(
        e.ok("DescribeKey", json!({"KeyId": other}))["KeyMetadata"]["KeyState"],
        "Disabled"
    );
}

#[test]
fn replication_needs_create_key_in_the_replica_region_and_honours_conditions() {
    let e = env();
    let account = AccountId::default_account();
    let id = create_mrk(&e, json!({}))["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let user = |name: &str, policy: Value| {
        e.iam.create_user(&account, name, Some(name)).unwrap();
        e.iam
            .put_user_policy(&account, name, "p", &policy.to_string())
            .unwrap();
        RequestContext::new(e.iam.profile_caller(name).unwrap(), e.ctx.region.clone())
    };
    let only_replicate = user(
        "replicator",
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:ReplicateKey", "Resource": "*"}]}),
    );
    let err = e
        .kms
        .call(
            &only_replicate,
            "ReplicateKey",
            json!({"KeyId": id, "ReplicaRegion": WEST}),
        )
        .unwrap_err();
    assert_eq!(err.code, AccessDeniedException);
    assert!(err.message.contains("kms:CreateKey"), "{}", err.message);

    let europe_only = user(
        "europe",
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:ReplicateKey", "Resource": "*",
             "Condition": {"StringEquals": {"kms:ReplicaRegion": "eu-west-1"}}},
            {"Effect": "Allow", "Action": "kms:CreateKey", "Resource": "*"}]}),
    );
    let err = e
        .kms
        .call(
            &europe_only,
            "ReplicateKey",
            json!({"KeyId": id, "ReplicaRegion": WEST}),
        )
        .unwrap_err();
    assert_eq!(err.code, AccessDeniedException, "{err}");
    e.kms
        .call(
            &europe_only,
            "ReplicateKey",
            json!({"KeyId": id, "ReplicaRegion": "eu-west-1"}),
        )
        .unwrap();

    // kms:MultiRegion on CreateKey: a user kept to single-Region keys.
    let single_only = user(
        "single",
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:CreateKey", "Resource": "*",
             "Condition": {"Bool": {"kms:MultiRegion": "false"}}}]}),
    );
    assert_eq!(
        e.kms
            .call(&single_only, "CreateKey", json!({"MultiRegion": true}))
            .unwrap_err()
            .code,
        AccessDeniedException
    );
    e.kms.call(&single_only, "CreateKey", json!({})).unwrap();
}
