//! Imported key material as AWS KMS takes it: RSA, ECC and HMAC keys with
//! Origin EXTERNAL (checked against an independent oracle, Python's
//! `cryptography` and `hmac`), and the multi-material model of symmetric
//! keys (ImportType, KeyMaterialId, PENDING_ROTATION, RotateKeyOnDemand,
//! ListKeyRotations, DeleteImportedKeyMaterial by id).

mod common;

use common::*;
use keyvol::kms::asym::{wrap_for_import, AlgorithmSpec};
use keyvol::kms::ErrorCode::{self, *};
use serde_json::{json, Value};

/// Runs a Python script of the venv with `input` on stdin; its stdout.
fn py(script: &str, input: &[u8]) -> Vec<u8> {
    common::serve::python_script(script, input)
}

/// A new private key made by Python's `cryptography`: PKCS#8 DER.
fn python_private_key(spec: &str) -> Vec<u8> {
    let make = match spec {
        "RSA_2048" => "rsa.generate_private_key(65537, 2048)",
        "RSA_3072" => "rsa.generate_private_key(65537, 3072)",
        "ECC_NIST_P256" => "ec.generate_private_key(ec.SECP256R1())",
        "ECC_NIST_P384" => "ec.generate_private_key(ec.SECP384R1())",
        "ECC_NIST_P521" => "ec.generate_private_key(ec.SECP521R1())",
        "ECC_SECG_P256K1" => "ec.generate_private_key(ec.SECP256K1())",
        other => panic!("no generator for {other}"),
    };
    py(
        &format!(
            "import sys\n\
             from cryptography.hazmat.primitives.asymmetric import rsa, ec\n\
             from cryptography.hazmat.primitives import serialization as s\n\
             k = {make}\n\
             sys.stdout.buffer.write(k.private_bytes(s.Encoding.DER, s.PrivateFormat.PKCS8, s.NoEncryption()))"
        ),
        b"",
    )
}

/// The DER SubjectPublicKeyInfo of a PKCS#8 private key, by Python.
fn python_public_key(pkcs8: &[u8]) -> Vec<u8> {
    py(
        "import sys\n\
         from cryptography.hazmat.primitives import serialization as s\n\
         k = s.load_der_private_key(sys.stdin.buffer.read(), None)\n\
         sys.stdout.buffer.write(k.public_key().public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo))",
        pkcs8,
    )
}

/// Verifies `signature` of `message` with the public half of `pkcs8`
/// (ECDSA SHA-256/384/512 by curve, or RSASSA-PSS SHA-256); "ok" or "bad".
fn python_verify(pkcs8: &[u8], alg: &str, message: &[u8], signature: &[u8]) -> bool {
    let input = json!({"key": b64(pkcs8), "msg": b64(message), "sig": b64(signature), "alg": alg});
    let out = py(
        "import sys, json, base64\n\
         from cryptography.hazmat.primitives import serialization as s, hashes\n\
         from cryptography.hazmat.primitives.asymmetric import ec, padding\n\
         d = json.load(sys.stdin); b = lambda f: base64.b64decode(d[f])\n\
         pub = s.load_der_private_key(b('key'), None).public_key()\n\
         h = {'256': hashes.SHA256(), '384': hashes.SHA384(), '512': hashes.SHA512()}[d['alg'][-3:]]\n\
         try:\n\
         \x20   if d['alg'].startswith('ECDSA'): pub.verify(b('sig'), b('msg'), ec.ECDSA(h))\n\
         \x20   else: pub.verify(b('sig'), b('msg'), padding.PSS(padding.MGF1(h), 32), h)\n\
         \x20   print('ok')\n\
         except Exception:\n\
         \x20   print('bad')",
        input.to_string().as_bytes(),
    );
    String::from_utf8(out).unwrap().trim() == "ok"
}

fn key_id(v: &Value) -> String {
    v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string()
}

fn create_external(e: &Env, spec: &str, usage: &str) -> String {
    key_id(&e.ok(
        "CreateKey",
        json!({"Origin": "EXTERNAL", "KeySpec": spec, "KeyUsage": usage}),
    ))
}

/// GetParametersForImport + wrap + ImportKeyMaterial; `extra` members are
/// added to the ImportKeyMaterial request (material that does not expire
/// unless it says otherwise).
fn import_with(
    e: &Env,
    key: &str,
    material: &[u8],
    alg: &str,
    wrapping: &str,
    extra: Value,
) -> keyvol::kms::KmsResult<Value> {
    import_in(e, &e.ctx, key, material, alg, wrapping, extra)
}

/// [`import_with`] as the caller of `ctx` (in its Region).
fn import_in(
    e: &Env,
    ctx: &keyvol::kms::RequestContext,
    key: &str,
    material: &[u8],
    alg: &str,
    wrapping: &str,
    extra: Value,
) -> keyvol::kms::KmsResult<Value> {
    let params = e.kms.call(
        ctx,
        "GetParametersForImport",
        json!({"KeyId": key, "WrappingAlgorithm": alg, "WrappingKeySpec": wrapping}),
    )?;
    let wrapped = wrap_for_import(
        &unb64(&params["PublicKey"]),
        alg.parse::<AlgorithmSpec>().unwrap(),
        material,
    )
    .unwrap();
    let mut req = json!({"KeyId": key, "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": b64(&wrapped)});
    if extra.get("ValidTo").is_none() && extra.get("ExpirationModel").is_none() {
        req["ExpirationModel"] = json!("KEY_MATERIAL_DOES_NOT_EXPIRE");
    }
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    e.kms.call(ctx, "ImportKeyMaterial", req)
}

fn import(e: &Env, key: &str, material: &[u8], extra: Value) -> keyvol::kms::KmsResult<Value> {
    import_with(
        e,
        key,
        material,
        "RSA_AES_KEY_WRAP_SHA_256",
        "RSA_2048",
        extra,
    )
}

fn code(r: keyvol::kms::KmsResult<Value>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e.code,
    }
}

fn describe(e: &Env, key: &str) -> Value {
    e.ok("DescribeKey", json!({"KeyId": key}))["KeyMetadata"].clone()
}

#[test]
fn imported_rsa_and_ecc_keys_sign_as_the_original_key() {
    let e = env();
    let cases = [
        ("ECC_NIST_P256", "ECDSA_SHA_256"),
        ("ECC_NIST_P384", "ECDSA_SHA_384"),
        ("ECC_NIST_P521", "ECDSA_SHA_512"),
        ("ECC_SECG_P256K1", "ECDSA_SHA_256"),
        ("RSA_2048", "RSASSA_PSS_SHA_256"),
    ];
    for (spec, alg) in cases {
        let key = create_external(&e, spec, "SIGN_VERIFY");
        assert_eq!(describe(&e, &key)["KeyState"], "PendingImport", "{spec}");
        let private = python_private_key(spec);
        let out = import(&e, &key, &private, json!({})).unwrap();
        // KeyMaterialId is a symmetric key's.
        assert!(out.get("KeyMaterialId").is_none(), "{spec}: {out}");
        assert_eq!(describe(&e, &key)["KeyState"], "Enabled", "{spec}");
        let public = e.ok("GetPublicKey", json!({"KeyId": key}));
        assert_eq!(
            unb64(&public["PublicKey"]),
            python_public_key(&private),
            "{spec}"
        );
        let message = format!("signed by imported {spec}");
        let sig = e.ok(
            "Sign",
            json!({"KeyId": key, "Message": b64(message.as_bytes()), "SigningAlgorithm": alg}),
        );
        let sig = unb64(&sig["Signature"]);
        assert!(
            python_verify(&private, alg, message.as_bytes(), &sig),
            "{spec}"
        );
        assert!(!python_verify(&private, alg, b"another message", &sig));
        e.ok(
            "Verify",
            json!({"KeyId": key, "Message": b64(message.as_bytes()), "Signature": b64(&sig), "SigningAlgorithm": alg}),
        );
    }
}

#[test]
fn imported_rsa_encryption_key_round_trips_with_the_original_key() {
    let e = env();
    let key = create_external(&e, "RSA_3072", "ENCRYPT_DECRYPT");
    let private = python_private_key("RSA_3072");
    import_with(
        &e,
        &key,
        &private,
        "RSA_AES_KEY_WRAP_SHA_1",
        "RSA_3072",
        json!({}),
    )
    .unwrap();
    // Python encrypts to the original public key; the KMS decrypts.
    let ct = py(
        "import sys\n\
         from cryptography.hazmat.primitives import serialization as s, hashes\n\
         from cryptography.hazmat.primitives.asymmetric import padding\n\
         pub = s.load_der_private_key(sys.stdin.buffer.read(), None).public_key()\n\
         sys.stdout.buffer.write(pub.encrypt(b'from python', padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)))",
        &private,
    );
    let pt = e.ok(
        "Decrypt",
        json!({"KeyId": key, "CiphertextBlob": b64(&ct), "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
    );
    assert_eq!(unb64(&pt["Plaintext"]), b"from python");
    // The KMS encrypts; the original private key decrypts.
    let ct = e.ok(
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"from keyvol"), "EncryptionAlgorithm": "RSAES_OAEP_SHA_1"}),
    );
    let input = json!({"key": b64(&private), "ct": ct["CiphertextBlob"]});
    let pt = py(
        "import sys, json, base64\n\
         from cryptography.hazmat.primitives import serialization as s, hashes\n\
         from cryptography.hazmat.primitives.asymmetric import padding\n\
         d = json.load(sys.stdin)\n\
         k = s.load_der_private_key(base64.b64decode(d['key']), None)\n\
         sys.stdout.buffer.write(k.decrypt(base64.b64decode(d['ct']), padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)))",
        input.to_string().as_bytes(),
    );
    assert_eq!(pt, b"from keyvol");
}

#[test]
fn imported_hmac_keys_mac_as_python_does() {
    let e = env();
    for (spec, alg, hash, len) in [
        ("HMAC_224", "HMAC_SHA_224", "sha224", 28usize),
        ("HMAC_256", "HMAC_SHA_256", "sha256", 32),
        ("HMAC_384", "HMAC_SHA_384", "sha384", 64),
        ("HMAC_512", "HMAC_SHA_512", "sha512", 100),
    ] {
        let key = create_external(&e, spec, "GENERATE_VERIFY_MAC");
        let material: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        import_with(
            &e,
            &key,
            &material,
            "RSAES_OAEP_SHA_256",
            "RSA_2048",
            json!({}),
        )
        .unwrap();
        let mac = e.ok(
            "GenerateMac",
            json!({"KeyId": key, "Message": b64(b"mac me"), "MacAlgorithm": alg}),
        );
        let expected = py(
            &format!(
                "import sys, hmac, hashlib\n\
                 sys.stdout.buffer.write(hmac.new(sys.stdin.buffer.read(), b'mac me', hashlib.{hash}).digest())"
            ),
            &material,
        );
        assert_eq!(unb64(&mac["Mac"]), expected, "{spec}");
        e.ok(
            "VerifyMac",
            json!({"KeyId": key, "Message": b64(b"mac me"), "Mac": b64(&expected), "MacAlgorithm": alg}),
        );
        // GetPublicKey is for asymmetric keys only.
        assert_eq!(
            e.code("GetPublicKey", json!({"KeyId": key})),
            Some(UnsupportedOperationException)
        );
    }
    // An HMAC key shorter than the spec's minimum is refused, and changes
    // nothing.
    let key = create_external(&e, "HMAC_256", "GENERATE_VERIFY_MAC");
    let x = import_with(
        &e,
        &key,
        &[1u8; 16],
        "RSAES_OAEP_SHA_1",
        "RSA_2048",
        json!({}),
    );
    assert_eq!(code(x), IncorrectKeyMaterialException);
    assert_eq!(describe(&e, &key)["KeyState"], "PendingImport");
}

#[test]
fn wrong_asymmetric_material_and_wrapping_are_refused_as_aws_does() {
    let e = env();
    let p256 = create_external(&e, "ECC_NIST_P256", "SIGN_VERIFY");
    // Another curve, an RSA key and raw bytes are not this key's material.
    for wrong in [
        python_private_key("ECC_NIST_P384"),
        python_private_key("RSA_2048"),
        vec![5u8; 32],
    ] {
        let x = import(&e, &p256, &wrong, json!({})).unwrap_err();
        assert_eq!(x.code, IncorrectKeyMaterialException, "{}", x.message);
    }
    let md = describe(&e, &p256);
    assert_eq!(md["KeyState"], "PendingImport");
    assert!(md.get("ExpirationModel").is_none());
    let rsa = create_external(&e, "RSA_2048", "SIGN_VERIFY");
    let x = import(&e, &rsa, &python_private_key("RSA_3072"), json!({})).unwrap_err();
    assert_eq!(x.code, IncorrectKeyMaterialException);
    assert!(x.message.contains("3072"), "{}", x.message);

    // The guide's table: RSA private keys need an RSA_AES wrapping
    // algorithm; RSAES_OAEP under RSA_2048 cannot carry ECC_NIST_P521.
    let params = |key: &str, alg: &str, spec: &str| {
        e.code(
            "GetParametersForImport",
            json!({"KeyId": key, "WrappingAlgorithm": alg, "WrappingKeySpec": spec}),
        )
    };
    assert_eq!(
        params(&rsa, "RSAES_OAEP_SHA_256", "RSA_4096"),
        Some(ValidationException)
    );
    assert_eq!(params(&rsa, "RSA_AES_KEY_WRAP_SHA_1", "RSA_2048"), None);
    let p521 = create_external(&e, "ECC_NIST_P521", "SIGN_VERIFY");
    assert_eq!(
        params(&p521, "RSAES_OAEP_SHA_1", "RSA_2048"),
        Some(ValidationException)
    );
    let private = python_private_key("ECC_NIST_P521");
    import_with(
        &e,
        &p521,
        &private,
        "RSAES_OAEP_SHA_256",
        "RSA_3072",
        json!({}),
    )
    .unwrap();
    assert_eq!(
        params(&p521, "RSAES_PKCS1_V1_5", "RSA_2048"),
        Some(ValidationException)
    );

    // Re-import: the same key again after a delete, never another one, and
    // no new material for an asymmetric key.
    let key = create_external(&e, "ECC_NIST_P384", "SIGN_VERIFY");
    let private = python_private_key("ECC_NIST_P384");
    import(&e, &key, &private, json!({})).unwrap();
    let x = import(&e, &key, &python_private_key("ECC_NIST_P384"), json!({}));
    assert_eq!(code(x), IncorrectKeyMaterialException);
    let x = import(
        &e,
        &key,
        &python_private_key("ECC_NIST_P384"),
        json!({"ImportType": "NEW_KEY_MATERIAL"}),
    );
    assert_eq!(code(x), UnsupportedOperationException);
    let x = import(
        &e,
        &key,
        &private,
        json!({"KeyMaterialDescription": "asymmetric"}),
    );
    assert_eq!(code(x), ValidationException);
    e.ok("DeleteImportedKeyMaterial", json!({"KeyId": key}));
    assert_eq!(describe(&e, &key)["KeyState"], "PendingImport");
    assert_eq!(
        e.code(
            "Sign",
            json!({"KeyId": key, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_384"})
        ),
        Some(KMSInvalidStateException)
    );
    let x = import(&e, &key, &python_private_key("ECC_NIST_P384"), json!({}));
    assert_eq!(code(x), IncorrectKeyMaterialException);
    import(&e, &key, &private, json!({})).unwrap();
    let sig = e.ok(
        "Sign",
        json!({"KeyId": key, "Message": b64(b"back"), "SigningAlgorithm": "ECDSA_SHA_384"}),
    );
    assert!(python_verify(
        &private,
        "ECDSA_SHA_384",
        b"back",
        &unb64(&sig["Signature"])
    ));

    // Key specs AWS does not import here.
    assert_eq!(
        e.code(
            "CreateKey",
            json!({"Origin": "EXTERNAL", "KeySpec": "SM2", "KeyUsage": "SIGN_VERIFY"})
        ),
        Some(ValidationException)
    );
    assert_eq!(
        e.code(
            "CreateKey",
            json!({"Origin": "EXTERNAL", "KeySpec": "ECC_NIST_EDWARDS25519", "KeyUsage": "SIGN_VERIFY"})
        ),
        Some(UnsupportedOperationException)
    );
}

fn rotations(e: &Env, key: &str, all: bool) -> Vec<Value> {
    let mut req = json!({"KeyId": key});
    if all {
        req["IncludeKeyMaterial"] = json!("ALL_KEY_MATERIAL");
    }
    e.ok("ListKeyRotations", req)["Rotations"]
        .as_array()
        .unwrap()
        .clone()
}

fn encrypt(e: &Env, key: &str, pt: &[u8]) -> Value {
    e.ok("Encrypt", json!({"KeyId": key, "Plaintext": b64(pt)}))["CiphertextBlob"].clone()
}

#[test]
fn symmetric_keys_rotate_onto_newly_imported_material() {
    let e = env();
    let key = key_id(&e.ok("CreateKey", json!({"Origin": "EXTERNAL"})));
    let a = [0xa1u8; 32];
    let b = [0xb2u8; 32];
    let first = import(
        &e,
        &key,
        &a,
        json!({"KeyMaterialDescription": "first material"}),
    )
    .unwrap();
    let id_a = first["KeyMaterialId"].as_str().unwrap().to_string();
    assert_eq!(id_a.len(), 64);
    assert_eq!(describe(&e, &key)["CurrentKeyMaterialId"], id_a.as_str());
    assert!(rotations(&e, &key, false).is_empty());
    let list = rotations(&e, &key, true);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["KeyMaterialId"], id_a.as_str());
    assert_eq!(list[0]["KeyMaterialState"], "CURRENT");
    assert_eq!(list[0]["ImportState"], "IMPORTED");
    assert_eq!(list[0]["KeyMaterialDescription"], "first material");
    assert_eq!(list[0]["ExpirationModel"], "KEY_MATERIAL_DOES_NOT_EXPIRE");
    assert!(list[0].get("RotationDate").is_none());
    let ct_a = encrypt(&e, &key, b"under a");

    // Nothing pending: the key is in the wrong state for RotateKeyOnDemand.
    assert_eq!(
        e.code("RotateKeyOnDemand", json!({"KeyId": key})),
        Some(KMSInvalidStateException)
    );
    // Reimporting A as new material, or naming a KeyMaterialId with
    // NEW_KEY_MATERIAL, is refused.
    let x = import(&e, &key, &a, json!({"ImportType": "NEW_KEY_MATERIAL"}));
    assert_eq!(code(x), IncorrectKeyMaterialException);
    let x = import(
        &e,
        &key,
        &b,
        json!({"ImportType": "NEW_KEY_MATERIAL", "KeyMaterialId": id_a}),
    );
    assert_eq!(code(x), ValidationException);
    // B without ImportType is taken for existing material: not A, refused.
    assert_eq!(
        code(import(&e, &key, &b, json!({}))),
        IncorrectKeyMaterialException
    );

    let second = import(
        &e,
        &key,
        &b,
        json!({"ImportType": "NEW_KEY_MATERIAL", "KeyMaterialDescription": "second"}),
    )
    .unwrap();
    let id_b = second["KeyMaterialId"].as_str().unwrap().to_string();
    assert_ne!(id_a, id_b);
    let list = rotations(&e, &key, true);
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["KeyMaterialId"], id_b.as_str());
    assert_eq!(list[1]["KeyMaterialState"], "PENDING_ROTATION");
    assert!(list[1].get("RotationType").is_none());
    // Pending material is not used yet, and only one may wait.
    let d = e.ok(
        "Decrypt",
        json!({"CiphertextBlob": encrypt(&e, &key, b"x")}),
    );
    assert_eq!(d["KeyMaterialId"], id_a.as_str());
    let x = import(
        &e,
        &key,
        &[0xc3u8; 32],
        json!({"ImportType": "NEW_KEY_MATERIAL"}),
    );
    assert_eq!(code(x), KMSInvalidStateException);

    e.ok("RotateKeyOnDemand", json!({"KeyId": key}));
    assert_eq!(describe(&e, &key)["CurrentKeyMaterialId"], id_b.as_str());
    let list = rotations(&e, &key, false);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["KeyMaterialId"], id_b.as_str());
    assert_eq!(list[0]["RotationType"], "ON_DEMAND");
    assert_eq!(list[0]["KeyMaterialState"], "CURRENT");
    assert!(list[0]["RotationDate"].is_number());
    let list = rotations(&e, &key, true);
    assert_eq!(list[0]["KeyMaterialState"], "NON_CURRENT");
    let ct_b = encrypt(&e, &key, b"under b");
    let d = e.ok("Decrypt", json!({"CiphertextBlob": ct_b}));
    assert_eq!(d["KeyMaterialId"], id_b.as_str());
    // Old ciphertexts still decrypt, with their own material.
    let d = e.ok("Decrypt", json!({"CiphertextBlob": ct_a}));
    assert_eq!(unb64(&d["Plaintext"]), b"under a");
    assert_eq!(d["KeyMaterialId"], id_a.as_str());
    // Rotated twice? Not without new material again.
    assert_eq!(
        e.code("RotateKeyOnDemand", json!({"KeyId": key})),
        Some(KMSInvalidStateException)
    );

    // Reimporting A: the KeyMaterialId must be A's; the same expiration is
    // a no-op; another expiration needs a delete first.
    let x = import(
        &e,
        &key,
        &a,
        json!({"ImportType": "EXISTING_KEY_MATERIAL", "KeyMaterialId": id_b}),
    );
    assert_eq!(code(x), IncorrectKeyMaterialException);
    import(
        &e,
        &key,
        &a,
        json!({"ImportType": "EXISTING_KEY_MATERIAL", "KeyMaterialId": id_a}),
    )
    .unwrap();
    let valid_to = e.clock.now() + 3600;
    let x = import(
        &e,
        &key,
        &a,
        json!({"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": valid_to}),
    )
    .unwrap_err();
    assert_eq!(x.code, ValidationException);
    assert!(
        x.message.contains("DeleteImportedKeyMaterial"),
        "{}",
        x.message
    );
    assert_eq!(
        rotations(&e, &key, true)[0]["ExpirationModel"],
        "KEY_MATERIAL_DOES_NOT_EXPIRE"
    );

    // Deleting the non-current material A makes the key wait for it.
    let del = e.ok(
        "DeleteImportedKeyMaterial",
        json!({"KeyId": key, "KeyMaterialId": id_a}),
    );
    assert_eq!(del["KeyMaterialId"], id_a.as_str());
    assert_eq!(describe(&e, &key)["KeyState"], "PendingImport");
    let list = rotations(&e, &key, true);
    assert_eq!(list[0]["ImportState"], "PENDING_IMPORT");
    assert_eq!(list[1]["ImportState"], "IMPORTED");
    assert_eq!(
        e.code("Decrypt", json!({"CiphertextBlob": ct_b})),
        Some(KMSInvalidStateException)
    );
    // A comes back with a new expiration; the key is whole again.
    import(
        &e,
        &key,
        &a,
        json!({"KeyMaterialId": id_a, "ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": valid_to}),
    )
    .unwrap();
    let md = describe(&e, &key);
    assert_eq!(md["KeyState"], "Enabled");
    // DescribeKey's expiration is the current material's (B's).
    assert_eq!(md["ExpirationModel"], "KEY_MATERIAL_DOES_NOT_EXPIRE");
    let list = rotations(&e, &key, true);
    assert_eq!(list[0]["ValidTo"], valid_to);
    assert_eq!(list[0]["KeyMaterialDescription"], "first material");
    let d = e.ok("Decrypt", json!({"CiphertextBlob": ct_a}));
    assert_eq!(unb64(&d["Plaintext"]), b"under a");

    // Pending material can be deleted and replaced, and the key stays as
    // it is.
    let c = import(
        &e,
        &key,
        &[0xc3u8; 32],
        json!({"ImportType": "NEW_KEY_MATERIAL"}),
    )
    .unwrap();
    let id_c = c["KeyMaterialId"].as_str().unwrap();
    e.ok(
        "DeleteImportedKeyMaterial",
        json!({"KeyId": key, "KeyMaterialId": id_c}),
    );
    assert_eq!(describe(&e, &key)["KeyState"], "Enabled");
    assert_eq!(rotations(&e, &key, true).len(), 2);
    import(
        &e,
        &key,
        &[0xd4u8; 32],
        json!({"ImportType": "NEW_KEY_MATERIAL"}),
    )
    .unwrap();

    // Unknown and malformed material ids.
    assert_eq!(
        e.code(
            "DeleteImportedKeyMaterial",
            json!({"KeyId": key, "KeyMaterialId": "0".repeat(64)})
        ),
        Some(NotFoundException)
    );
    assert_eq!(
        e.code(
            "DeleteImportedKeyMaterial",
            json!({"KeyId": key, "KeyMaterialId": "XYZ"})
        ),
        Some(ValidationException)
    );
    assert_eq!(
        e.code(
            "ListKeyRotations",
            json!({"KeyId": key, "IncludeKeyMaterial": "SOME"})
        ),
        Some(ValidationException)
    );
    let x = import(&e, &key, &a, json!({"ImportType": "LATEST"}));
    assert_eq!(code(x), ValidationException);
    let x = import(&e, &key, &a, json!({"KeyMaterialDescription": "no <tags>"}));
    assert_eq!(code(x), ValidationException);
    // Automatic rotation stays for keys with AWS_KMS origin.
    assert_eq!(
        e.code("EnableKeyRotation", json!({"KeyId": key})),
        Some(UnsupportedOperationException)
    );
    let v = e.kms.audit_verify().unwrap();
    assert!(v.valid);
}

#[test]
fn non_current_material_expires_on_its_own() {
    let e = env();
    let key = key_id(&e.ok("CreateKey", json!({"Origin": "EXTERNAL"})));
    let a = [0x11u8; 32];
    let id_a = import(&e, &key, &a, json!({"ValidTo": e.clock.now() + 600})).unwrap()
        ["KeyMaterialId"]
        .as_str()
        .unwrap()
        .to_string();
    import(
        &e,
        &key,
        &[0x22u8; 32],
        json!({"ImportType": "NEW_KEY_MATERIAL"}),
    )
    .unwrap();
    e.ok("RotateKeyOnDemand", json!({"KeyId": key}));
    let ct = encrypt(&e, &key, b"new");
    e.clock.advance(601);
    // A expired: the key waits for it, and says which one.
    let md = describe(&e, &key);
    assert_eq!(md["KeyState"], "PendingImport");
    let list = rotations(&e, &key, true);
    assert_eq!(list[0]["KeyMaterialId"], id_a.as_str());
    assert_eq!(list[0]["ImportState"], "PENDING_IMPORT");
    assert_eq!(list[1]["ImportState"], "IMPORTED");
    assert_eq!(
        e.code("Decrypt", json!({"CiphertextBlob": ct})),
        Some(KMSInvalidStateException)
    );
    import(&e, &key, &a, json!({})).unwrap();
    let d = e.ok("Decrypt", json!({"CiphertextBlob": ct}));
    assert_eq!(unb64(&d["Plaintext"]), b"new");
}

#[test]
fn multi_region_keys_take_the_same_imported_material_in_each_region() {
    let e = env();
    let west = keyvol::kms::RequestContext::new(e.ctx.caller.clone(), "us-west-2".parse().unwrap());
    let in_west = |op: &str, req: Value| e.kms.call(&west, op, req);
    let key = key_id(&e.ok(
        "CreateKey",
        json!({"Origin": "EXTERNAL", "MultiRegion": true}),
    ));
    assert!(key.starts_with("mrk-"), "{key}");
    let a = [0x5au8; 32];
    let b = [0x6bu8; 32];
    let id_a = import(&e, &key, &a, json!({})).unwrap()["KeyMaterialId"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = encrypt(&e, &key, b"imported across regions");
    let rep = e.ok(
        "ReplicateKey",
        json!({"KeyId": key, "ReplicaRegion": "us-west-2"}),
    );
    // AWS copies no imported material: the replica waits for its import.
    assert_eq!(
        rep["ReplicaKeyMetadata"]["KeyState"], "PendingImport",
        "{rep}"
    );
    assert_eq!(
        code(in_west("Decrypt", json!({"CiphertextBlob": blob}))),
        KMSInvalidStateException
    );
    let rsa = ("RSA_AES_KEY_WRAP_SHA_256", "RSA_2048");
    // Other material than the primary's, or new material, is refused.
    let wrong = import_in(&e, &west, &key, &b, rsa.0, rsa.1, json!({}));
    assert_eq!(code(wrong), IncorrectKeyMaterialException);
    let new = import_in(
        &e,
        &west,
        &key,
        &a,
        rsa.0,
        rsa.1,
        json!({"ImportType": "NEW_KEY_MATERIAL"}),
    );
    assert_eq!(code(new), UnsupportedOperationException);
    let out = import_in(&e, &west, &key, &a, rsa.0, rsa.1, json!({})).unwrap();
    assert_eq!(
        out["KeyMaterialId"],
        id_a.as_str(),
        "related keys share material ids"
    );
    let plain = in_west("Decrypt", json!({"CiphertextBlob": blob})).unwrap();
    assert_eq!(unb64(&plain["Plaintext"]), b"imported across regions");

    // New material: into the primary first, then the same into the replica;
    // on-demand rotation waits for the replica to have it.
    import(&e, &key, &b, json!({"ImportType": "NEW_KEY_MATERIAL"})).unwrap();
    assert_eq!(
        e.code("RotateKeyOnDemand", json!({"KeyId": key})),
        Some(KMSInvalidStateException)
    );
    import_in(&e, &west, &key, &b, rsa.0, rsa.1, json!({})).unwrap();
    e.ok("RotateKeyOnDemand", json!({"KeyId": key}));
    let blob_b = encrypt(&e, &key, b"under b");
    let plain = in_west("Decrypt", json!({"CiphertextBlob": blob_b})).unwrap();
    assert_eq!(unb64(&plain["Plaintext"]), b"under b");
    assert_eq!(
        describe(&e, &key)["CurrentKeyMaterialId"],
        in_west("DescribeKey", json!({"KeyId": key})).unwrap()["KeyMetadata"]
            ["CurrentKeyMaterialId"]
    );
}
