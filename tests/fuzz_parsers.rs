//! Bounded fuzzing of every parser that reads untrusted bytes: the SigV4
//! Authorization header, the KMS ciphertext header and blob, the policy
//! parser, the snapshot manifest and the KMS JSON dispatcher. Each target
//! mutates valid seeds (bit flips, truncation, splices, byte runs) with a
//! fixed seed, so a failure replays; the property is "an error, never a
//! panic", and for authenticated formats "never accepted when changed".
//! (cargo-fuzz needs a nightly toolchain, which this machine cannot fetch;
//! this is the stable, in-CI equivalent with a fixed budget.)

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const ROUNDS: usize = 4000;

/// One random mutation of `seed`.
fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    match rng.gen_range(0..6) {
        0 if !v.is_empty() => {
            let i = rng.gen_range(0..v.len());
            v[i] ^= 1 << rng.gen_range(0..8);
        }
        1 => v.truncate(rng.gen_range(0..=v.len())),
        2 => {
            let at = rng.gen_range(0..=v.len());
            let run: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
            v.splice(at..at, run);
        }
        3 if !v.is_empty() => {
            let a = rng.gen_range(0..v.len());
            let b = rng.gen_range(a..=v.len());
            let piece = v[a..b].to_vec();
            let at = rng.gen_range(0..=v.len());
            v.splice(at..at, piece);
        }
        4 => {
            let interesting = [0u8, 0xff, b'"', b'{', b'}', b',', b'=', b'/', b'\\', b'*'];
            let at = rng.gen_range(0..=v.len());
            v.insert(at, interesting[rng.gen_range(0..interesting.len())]);
        }
        _ => v = (0..rng.gen_range(0..128)).map(|_| rng.gen()).collect(),
    }
    v
}

#[test]
fn sigv4_authorization_header() {
    let seed = b"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
    assert!(keyvol::server::sigv4::parse_authorization(std::str::from_utf8(seed).unwrap()).is_ok());
    let mut rng = StdRng::seed_from_u64(0x5167_0001);
    for _ in 0..ROUNDS {
        let m = mutate(&mut rng, seed);
        if let Ok(text) = std::str::from_utf8(&m) {
            let _ = keyvol::server::sigv4::parse_authorization(text);
        }
    }
}

#[test]
fn kms_ciphertext_blob_and_json_dispatch() {
    let e = env();
    let key = e.create_key();
    let ct = e.ok(
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"fuzz me"), "EncryptionContext": {"a": "b"}}),
    );
    let blob = unb64(&ct["CiphertextBlob"]);
    let mut rng = StdRng::seed_from_u64(0x5167_0002);
    for round in 0..ROUNDS / 4 {
        let m = mutate(&mut rng, &blob);
        let _ = keyvol::kms::ciphertext::parse_header(&m);
        // A changed blob never decrypts (GCM), whatever was changed.
        if m != blob {
            let r = e.call(
                "Decrypt",
                json!({"CiphertextBlob": b64(&m), "EncryptionContext": {"a": "b"}}),
            );
            assert!(r.is_err(), "round {round}: a mutated ciphertext decrypted");
        }
    }
    // A multi-Region blob (format 0x02), tried in the primary's Region
    // and in its replica's; and mutated key ids of both forms.
    let mrk = e.ok("CreateKey", json!({"MultiRegion": true}))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    e.ok(
        "ReplicateKey",
        json!({"KeyId": mrk, "ReplicaRegion": "us-west-2"}),
    );
    let west = keyvol::kms::RequestContext::new(e.ctx.caller.clone(), "us-west-2".parse().unwrap());
    let mblob = unb64(
        &e.ok(
            "Encrypt",
            json!({"KeyId": mrk, "Plaintext": b64(b"fuzz mrk")}),
        )["CiphertextBlob"],
    );
    for round in 0..ROUNDS / 8 {
        let m = mutate(&mut rng, &mblob);
        if m != mblob {
            let req = json!({"CiphertextBlob": b64(&m)});
            assert!(
                e.call("Decrypt", req.clone()).is_err(),
                "round {round}: east"
            );
            assert!(
                e.kms.call(&west, "Decrypt", req).is_err(),
                "round {round}: west"
            );
        }
        for id in [&mrk, &key] {
            let m = mutate(&mut rng, id.as_bytes());
            let text = String::from_utf8_lossy(&m).to_string();
            let _ = text.parse::<keyvol::ids::KeyId>();
            let _ = keyvol::ids::KeyId::parse_public(&text, &e.ctx.region);
            let _ = e.call("DescribeKey", json!({"KeyId": text}));
        }
    }
    // The JSON dispatcher: mutated request bodies of every shape.
    let seeds = [
        json!({"KeyId": key, "Plaintext": b64(b"x"), "EncryptionContext": {"k": "v"}, "GrantTokens": []}),
        json!({"KeyId": key, "Tags": [{"TagKey": "a", "TagValue": "b"}], "Limit": 5, "Marker": "1"}),
        json!({"Policy": "{}", "KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY", "Constraints": {"EncryptionContextSubset": {}}}),
        json!({"KeyId": mrk, "ReplicaRegion": "eu-west-1", "PrimaryRegion": "us-west-2", "Tags": []}),
    ];
    let ops = [
        "Encrypt",
        "Decrypt",
        "CreateGrant",
        "ListGrants",
        "TagResource",
        "PutKeyPolicy",
        "Sign",
        "GenerateDataKeyPair",
        "ListAliases",
        "RetireGrant",
        "ReplicateKey",
        "UpdatePrimaryRegion",
    ];
    for round in 0..ROUNDS / 4 {
        let seed = serde_json::to_vec(&seeds[round % seeds.len()]).unwrap();
        let m = mutate(&mut rng, &seed);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m) {
            let _ = e.call(ops[round % ops.len()], v);
        }
    }
}

#[test]
fn policy_parser() {
    let seed = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "s", "Effect": "Allow",
            "Principal": {"AWS": ["arn:aws:iam::111122223333:root", "*"]},
            "Action": ["kms:Encrypt", "kms:*"], "NotResource": "arn:aws:kms:*:*:key/${aws:username}",
            "Condition": {
                "StringEqualsIgnoreCase": {"kms:EncryptionContext:Dept": ["IT", "${aws:username, 'x'}"]},
                "ForAnyValue:StringLike": {"kms:EncryptionContextKeys": "a*"},
                "NumericLessThanIfExists": {"kms:NumberOfBytes": "64"},
                "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
                "DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"},
                "Bool": {"aws:SecureTransport": "true"}
            }
        }]
    })
    .to_string();
    assert!(keyvol::policy::PolicyDocument::parse(&seed).is_ok());
    let mut rng = StdRng::seed_from_u64(0x5167_0003);
    for _ in 0..ROUNDS {
        let m = mutate(&mut rng, seed.as_bytes());
        if let Ok(text) = std::str::from_utf8(&m) {
            let _ = keyvol::policy::PolicyDocument::parse(text);
            let _ = keyvol::policy::PolicyDocument::parse_key_policy(text);
        }
    }
}

#[test]
fn snapshot_manifest_parser() {
    let seed = br#"{"Format":"keyvol-snapshot-manifest-v1","Manifest":{"SnapshotId":"snap-0123456789abcdef0","VolumeId":"vol-0123456789abcdef0","VolumeSizeBytes":1048576,"BlockSize":524288,"LineageId":"l","OwnerId":"111122223333","Region":"us-east-1","KmsKeyId":"arn:aws:kms:us-east-1:111122223333:key/k","EncryptedDataKey":"AAAA","EncryptionContext":{"aws:ebs:id":"vol-0123456789abcdef0"},"Description":"","StartTime":"2026-12-01T00:00:00Z","State":"completed","Progress":"100%","CreateVolumePermissions":[],"Blocks":{"0":"00"}},"Mac":"AAAA"}"#;
    let mut rng = StdRng::seed_from_u64(0x5167_0004);
    for _ in 0..ROUNDS {
        let m = mutate(&mut rng, seed);
        let _ = keyvol::snapshot::manifest::Manifest::peek_unauthenticated(&m);
    }
}
