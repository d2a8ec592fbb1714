//! Asymmetric, HMAC and imported keys through the KMS operations: the
//! `keyvol kms` CLI interoperating with the `openssl` command line (OAEP
//! encryption, signatures, data key pairs, ECDH, HMAC, BYOK wrapping), and
//! library-level checks of limits, wrong usage, wrong algorithms, condition
//! keys, expiry with the injected clock, and the key-state table of every
//! new operation. The tests fail (never skip) when openssl is missing.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use keyvol::kms::ErrorCode::{self, *};
use serde_json::{json, Value};
use sha2::Digest;

// ---------------------------------------------------------------- helpers

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("the openssl command line is required (apt-get install openssl): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = p(dir, name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn fileb(path: &str) -> String {
    format!("fileb://{path}")
}

/// Runs a CLI call that must fail; returns its stderr.
fn kv_err(home: &Path, args: &[&str]) -> String {
    let out = keyvol(home, args);
    assert!(!out.status.success(), "keyvol {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn cli_key(home: &Path, spec: &str, usage: &str) -> String {
    keyvol_json(
        home,
        &[
            "kms",
            "create-key",
            "--key-spec",
            spec,
            "--key-usage",
            usage,
        ],
    )["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Downloads a key's public key (DER) with the CLI; returns (der, pem) paths.
fn download_public_key(home: &Path, key: &str, name: &str) -> (String, String) {
    let v = keyvol_json(home, &["kms", "get-public-key", "--key-id", key]);
    let der = write(home, &format!("{name}.der"), &unb64(&v["PublicKey"]));
    let pem = p(home, &format!("{name}.pem"));
    openssl(&[
        "pkey", "-pubin", "-inform", "DER", "-in", &der, "-out", &pem,
    ]);
    (der, pem)
}

fn lib_key(e: &Env, spec: &str, usage: &str) -> String {
    e.ok("CreateKey", json!({"KeySpec": spec, "KeyUsage": usage}))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string()
}

fn err(e: &Env, op: &str, req: Value) -> keyvol::kms::KmsError {
    e.call(op, req)
        .err()
        .unwrap_or_else(|| panic!("{op} succeeded"))
}

const MESSAGE: &[u8] = b"keyvol signs this; openssl checks it.\n";

// ---------------------------------------------------------------- CLI interop

#[test]
fn openssl_encrypts_to_the_downloaded_public_key_and_keyvol_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let key = cli_key(home, "RSA_2048", "ENCRYPT_DECRYPT");
    let md = keyvol_json(home, &["kms", "describe-key", "--key-id", &key]);
    assert_eq!(
        md["KeyMetadata"]["EncryptionAlgorithms"],
        json!(["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
    );
    assert_eq!(md["KeyMetadata"]["KeySpec"], "RSA_2048");
    let pk = keyvol_json(home, &["kms", "get-public-key", "--key-id", &key]);
    assert_eq!(pk["KeyUsage"], "ENCRYPT_DECRYPT");
    assert_eq!(
        pk["EncryptionAlgorithms"],
        json!(["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
    );
    assert!(pk.get("SigningAlgorithms").is_none());
    let (der, _) = download_public_key(home, &key, "pub");
    let secret = write(home, "secret.txt", b"a secret for the key holder only");
    for (alg, hash) in [
        ("RSAES_OAEP_SHA_1", "sha1"),
        ("RSAES_OAEP_SHA_256", "sha256"),
    ] {
        let ct = p(home, &format!("ct-{hash}.bin"));
        openssl(&[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-keyform",
            "DER",
            "-inkey",
            &der,
            "-in",
            &secret,
            "-out",
            &ct,
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            &format!("rsa_oaep_md:{hash}"),
            "-pkeyopt",
            &format!("rsa_mgf1_md:{hash}"),
        ]);
        assert_eq!(std::fs::metadata(&ct).unwrap().len(), 256);
        let v = keyvol_json(
            home,
            &[
                "kms",
                "decrypt",
                "--key-id",
                &key,
                "--ciphertext-blob",
                &fileb(&ct),
                "--encryption-algorithm",
                alg,
            ],
        );
        assert_eq!(unb64(&v["Plaintext"]), b"a secret for the key holder only");
        assert_eq!(v["EncryptionAlgorithm"], alg);
        assert!(v["KeyId"].as_str().unwrap().ends_with(&key));
    }
    // The other hash does not decrypt it; the key id is required.
    let ct = p(home, "ct-sha1.bin");
    let e = kv_err(
        home,
        &[
            "kms",
            "decrypt",
            "--key-id",
            &key,
            "--ciphertext-blob",
            &fileb(&ct),
            "--encryption-algorithm",
            "RSAES_OAEP_SHA_256",
        ],
    );
    assert!(e.contains("(InvalidCiphertextException)"), "{e}");
    let e = kv_err(
        home,
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &fileb(&ct),
            "--encryption-algorithm",
            "RSAES_OAEP_SHA_1",
        ],
    );
    assert!(
        e.contains("(ValidationException)") && e.contains("KeyId is required"),
        "{e}"
    );
    // keyvol's own RSA Encrypt round trips and refuses encryption context.
    let v = keyvol_json(
        home,
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            &fileb(&secret),
            "--encryption-algorithm",
            "RSAES_OAEP_SHA_256",
        ],
    );
    assert_eq!(unb64(&v["CiphertextBlob"]).len(), 256);
    let e = kv_err(
        home,
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            &fileb(&secret),
            "--encryption-algorithm",
            "RSAES_OAEP_SHA_256",
            "--encryption-context",
            "a=b",
        ],
    );
    assert!(
        e.contains("(ValidationException)") && e.contains("EncryptionContext"),
        "{e}"
    );
}

#[test]
fn keyvol_signatures_verify_with_openssl_raw_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let msg = write(home, "msg.bin", MESSAGE);
    let digest = write(home, "digest.bin", &sha2::Sha256::digest(MESSAGE));
    let rsa = cli_key(home, "RSA_2048", "SIGN_VERIFY");
    let ec = cli_key(home, "ECC_NIST_P256", "SIGN_VERIFY");
    let pk = keyvol_json(home, &["kms", "get-public-key", "--key-id", &rsa]);
    assert_eq!(pk["SigningAlgorithms"].as_array().unwrap().len(), 6);
    let (_, rsa_pem) = download_public_key(home, &rsa, "rsa");
    let (_, ec_pem) = download_public_key(home, &ec, "ec");
    let sign = |key: &str, alg: &str, msg_type: &str, input: &str, out: &str| -> String {
        let v = keyvol_json(
            home,
            &[
                "kms",
                "sign",
                "--key-id",
                key,
                "--message",
                &fileb(input),
                "--message-type",
                msg_type,
                "--signing-algorithm",
                alg,
            ],
        );
        assert_eq!(v["SigningAlgorithm"], alg);
        write(home, out, &unb64(&v["Signature"]))
    };
    // RAW messages: openssl dgst hashes the message itself.
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (rsa.as_str(), "RSASSA_PKCS1_V1_5_SHA_256", "-sha256", &[]),
        (rsa.as_str(), "RSASSA_PKCS1_V1_5_SHA_512", "-sha512", &[]),
        (
            rsa.as_str(),
            "RSASSA_PSS_SHA_256",
            "-sha256",
            &[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ],
        ),
        (
            rsa.as_str(),
            "RSASSA_PSS_SHA_384",
            "-sha384",
            &[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:48",
            ],
        ),
        (ec.as_str(), "ECDSA_SHA_256", "-sha256", &[]),
    ];
    for (key, alg, md, extra) in cases {
        let sig = sign(key, alg, "RAW", &msg, "sig.bin");
        let pem = if *key == rsa { &rsa_pem } else { &ec_pem };
        let mut args = vec![
            "dgst",
            *md,
            "-verify",
            pem.as_str(),
            "-signature",
            sig.as_str(),
        ];
        args.extend_from_slice(extra);
        args.push(&msg);
        let out = String::from_utf8(openssl(&args)).unwrap();
        assert!(out.contains("Verified OK"), "{alg}: {out}");
    }
    // DIGEST messages: openssl pkeyutl verifies over the digest.
    for (key, alg, pem, extra) in [
        (
            &rsa,
            "RSASSA_PKCS1_V1_5_SHA_256",
            &rsa_pem,
            vec!["-pkeyopt", "digest:sha256"],
        ),
        (&ec, "ECDSA_SHA_256", &ec_pem, vec![]),
    ] {
        let sig = sign(key, alg, "DIGEST", &digest, "dsig.bin");
        let mut args = vec![
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            pem.as_str(),
            "-sigfile",
            sig.as_str(),
            "-in",
            digest.as_str(),
        ];
        args.extend(extra);
        let out = String::from_utf8(openssl(&args)).unwrap();
        assert!(
            out.contains("Signature Verified Successfully"),
            "{alg}: {out}"
        );
        // A DIGEST signature is a signature of the message (RAW) too.
        let v = keyvol_json(
            home,
            &[
                "kms",
                "verify",
                "--key-id",
                key,
                "--message",
                &fileb(&msg),
                "--signature",
                &fileb(&sig),
                "--signing-algorithm",
                alg,
            ],
        );
        assert_eq!(v["SignatureValid"], true);
    }
    // A tampered signature is refused by keyvol Verify.
    let sig = sign(&ec, "ECDSA_SHA_256", "RAW", &msg, "sig.bin");
    let mut bytes = std::fs::read(&sig).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let bad = write(home, "bad.bin", &bytes);
    let e = kv_err(
        home,
        &[
            "kms",
            "verify",
            "--key-id",
            &ec,
            "--message",
            &fileb(&msg),
            "--signature",
            &fileb(&bad),
            "--signing-algorithm",
            "ECDSA_SHA_256",
        ],
    );
    assert!(
        e.trim_start().starts_with(
            "An error occurred (KMSInvalidSignatureException) when calling the Verify operation"
        ),
        "{e}"
    );
}

#[test]
fn data_key_pair_private_key_works_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let cmk = keyvol_json(home, &["kms", "create-key"])["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let v = keyvol_json(
        home,
        &[
            "kms",
            "generate-data-key-pair",
            "--key-id",
            &cmk,
            "--key-pair-spec",
            "ECC_NIST_P256",
            "--encryption-context",
            "purpose=signing",
        ],
    );
    assert_eq!(v["KeyPairSpec"], "ECC_NIST_P256");
    let private = unb64(&v["PrivateKeyPlaintext"]);
    let priv_der = write(home, "priv.der", &private);
    let pub_der = write(home, "pub.der", &unb64(&v["PublicKey"]));
    let priv_pem = p(home, "priv.pem");
    openssl(&[
        "pkey", "-inform", "DER", "-in", &priv_der, "-out", &priv_pem,
    ]);
    let msg = write(home, "msg.bin", MESSAGE);
    let sig = p(home, "sig.bin");
    openssl(&["dgst", "-sha256", "-sign", &priv_pem, "-out", &sig, &msg]);
    let pub_pem = p(home, "pub.pem");
    openssl(&[
        "pkey", "-pubin", "-inform", "DER", "-in", &pub_der, "-out", &pub_pem,
    ]);
    let out = String::from_utf8(openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &pub_pem,
        "-signature",
        &sig,
        &msg,
    ]))
    .unwrap();
    assert!(out.contains("Verified OK"), "{out}");
    // The wrapped private key is an ordinary ciphertext of the CMK, bound
    // to the encryption context.
    let wrapped = write(home, "wrapped.bin", &unb64(&v["PrivateKeyCiphertextBlob"]));
    let d = keyvol_json(
        home,
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &fileb(&wrapped),
            "--encryption-context",
            "purpose=signing",
        ],
    );
    assert_eq!(unb64(&d["Plaintext"]), private);
    let e = kv_err(
        home,
        &["kms", "decrypt", "--ciphertext-blob", &fileb(&wrapped)],
    );
    assert!(e.contains("(InvalidCiphertextException)"), "{e}");
    let v = keyvol_json(
        home,
        &[
            "kms",
            "generate-data-key-pair-without-plaintext",
            "--key-id",
            &cmk,
            "--key-pair-spec",
            "RSA_2048",
        ],
    );
    assert!(v.get("PrivateKeyPlaintext").is_none());
    let pub_der = write(home, "rsa_pub.der", &unb64(&v["PublicKey"]));
    let text = String::from_utf8(openssl(&[
        "pkey", "-pubin", "-inform", "DER", "-in", &pub_der, "-text", "-noout",
    ]))
    .unwrap();
    assert!(text.contains("2048 bit"), "{text}");
    let wrapped = write(
        home,
        "rsa_wrapped.bin",
        &unb64(&v["PrivateKeyCiphertextBlob"]),
    );
    let d = keyvol_json(
        home,
        &["kms", "decrypt", "--ciphertext-blob", &fileb(&wrapped)],
    );
    let rsa_priv = write(home, "rsa_priv.der", &unb64(&d["Plaintext"]));
    let out = String::from_utf8(openssl(&[
        "pkey", "-inform", "DER", "-in", &rsa_priv, "-check", "-noout",
    ]))
    .unwrap();
    assert!(out.contains("valid"), "{out}");
}

#[test]
fn ecdh_with_openssl_gives_the_same_shared_secret() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    for (spec, curve) in [("ECC_NIST_P256", "P-256"), ("ECC_NIST_P384", "P-384")] {
        let key = cli_key(home, spec, "KEY_AGREEMENT");
        let pk = keyvol_json(home, &["kms", "get-public-key", "--key-id", &key]);
        assert_eq!(pk["KeyAgreementAlgorithms"], json!(["ECDH"]));
        let (_, ours) = download_public_key(home, &key, "ours");
        let peer = p(home, "peer.pem");
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
            "-out",
            &peer,
        ]);
        let peer_pub = p(home, "peer_pub.der");
        openssl(&[
            "pkey", "-in", &peer, "-pubout", "-outform", "DER", "-out", &peer_pub,
        ]);
        let z = p(home, "z.bin");
        openssl(&[
            "pkeyutl", "-derive", "-inkey", &peer, "-peerkey", &ours, "-out", &z,
        ]);
        let v = keyvol_json(
            home,
            &[
                "kms",
                "derive-shared-secret",
                "--key-id",
                &key,
                "--key-agreement-algorithm",
                "ECDH",
                "--public-key",
                &fileb(&peer_pub),
            ],
        );
        assert_eq!(
            unb64(&v["SharedSecret"]),
            std::fs::read(&z).unwrap(),
            "{spec}"
        );
        assert_eq!(v["KeyOrigin"], "AWS_KMS");
    }
}

#[test]
fn hmac_matches_openssl_mac() {
    let e = env();
    let dir = e.dir.path();
    for (spec, alg, digest) in [
        ("HMAC_224", "HMAC_SHA_224", "SHA224"),
        ("HMAC_256", "HMAC_SHA_256", "SHA256"),
        ("HMAC_384", "HMAC_SHA_384", "SHA384"),
        ("HMAC_512", "HMAC_SHA_512", "SHA512"),
    ] {
        let key = lib_key(&e, spec, "GENERATE_VERIFY_MAC");
        let md = e.ok("DescribeKey", json!({"KeyId": key}));
        assert_eq!(md["KeyMetadata"]["MacAlgorithms"], json!([alg]));
        let mac = e.ok(
            "GenerateMac",
            json!({"KeyId": key, "Message": b64(MESSAGE), "MacAlgorithm": alg}),
        );
        let tag = unb64(&mac["Mac"]);
        // The key material, unsealed from the home as only the KMS can,
        // given to openssl.
        let db = rusqlite::Connection::open(dir.join("state.db")).unwrap();
        let sealed: Vec<u8> = db
            .query_row(
                "SELECT sealed FROM key_material WHERE key_id = ?1 AND version = 1",
                [&key],
                |r| r.get(0),
            )
            .unwrap();
        let material = e
            .kms
            .home()
            .unseal(&format!("kms-key-material/{key}/1"), &sealed)
            .unwrap();
        let m = write(dir, "msg.bin", MESSAGE);
        let out = openssl(&[
            "mac",
            "-digest",
            digest,
            "-macopt",
            &format!("hexkey:{}", hex::encode(material.expose())),
            "-in",
            &m,
            "HMAC",
        ]);
        let theirs = String::from_utf8(out).unwrap().trim().to_lowercase();
        assert_eq!(hex::encode(&tag), theirs, "{spec}");
        let ok = e.ok(
            "VerifyMac",
            json!({"KeyId": key, "Message": b64(MESSAGE), "MacAlgorithm": alg, "Mac": b64(&tag)}),
        );
        assert_eq!(ok["MacValid"], true);
        let mut bad = tag.clone();
        bad[0] ^= 1;
        let x = err(
            &e,
            "VerifyMac",
            json!({"KeyId": key, "Message": b64(MESSAGE), "MacAlgorithm": alg, "Mac": b64(&bad)}),
        );
        assert_eq!(x.code, KMSInvalidMacException);
    }
}

/// Wraps `material` for import the way the AWS documentation shows:
/// RSAES_OAEP_SHA_* with `openssl pkeyutl`, RSA_AES_KEY_WRAP_SHA_* with
/// `openssl enc -id-aes256-wrap-pad` plus `pkeyutl` for the AES key.
fn openssl_wrap(dir: &Path, public_der: &str, alg: &str, material: &str) -> String {
    let md = if alg.ends_with("SHA_1") {
        "sha1"
    } else {
        "sha256"
    };
    let oaep = |input: &str, out: &str| {
        openssl(&[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-keyform",
            "DER",
            "-inkey",
            public_der,
            "-in",
            input,
            "-out",
            out,
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            &format!("rsa_oaep_md:{md}"),
            "-pkeyopt",
            &format!("rsa_mgf1_md:{md}"),
        ]);
    };
    let out = p(dir, "EncryptedKeyMaterial.bin");
    if alg.starts_with("RSAES_OAEP") {
        oaep(material, &out);
        return out;
    }
    let aes = p(dir, "aes-key.bin");
    openssl(&["rand", "-out", &aes, "32"]);
    let aes_hex = hex::encode(std::fs::read(&aes).unwrap());
    let wrapped_material = p(dir, "key-material-wrapped.bin");
    openssl(&[
        "enc",
        "-id-aes256-wrap-pad",
        "-K",
        &aes_hex,
        "-iv",
        "A65959A6",
        "-in",
        material,
        "-out",
        &wrapped_material,
    ]);
    let wrapped_aes = p(dir, "aes-key-wrapped.bin");
    oaep(&aes, &wrapped_aes);
    let mut all = std::fs::read(&wrapped_aes).unwrap();
    all.extend(std::fs::read(&wrapped_material).unwrap());
    std::fs::write(&out, all).unwrap();
    out
}

/// GetParametersForImport with the CLI; returns (public key path, token path).
fn cli_import_parameters(home: &Path, key: &str, alg: &str, tag: &str) -> (String, String) {
    let v = keyvol_json(
        home,
        &[
            "kms",
            "get-parameters-for-import",
            "--key-id",
            key,
            "--wrapping-algorithm",
            alg,
            "--wrapping-key-spec",
            "RSA_2048",
        ],
    );
    assert!(v["KeyId"].as_str().unwrap().ends_with(key));
    assert!(v["ParametersValidTo"].is_string() || v["ParametersValidTo"].is_number());
    (
        write(
            home,
            &format!("PublicKey-{tag}.bin"),
            &unb64(&v["PublicKey"]),
        ),
        write(
            home,
            &format!("ImportToken-{tag}.bin"),
            &unb64(&v["ImportToken"]),
        ),
    )
}

fn import_args<'a>(key: &'a str, token: &'a str, wrapped: &'a str) -> Vec<String> {
    vec![
        "kms".into(),
        "import-key-material".into(),
        "--key-id".into(),
        key.into(),
        "--import-token".into(),
        fileb(token),
        "--encrypted-key-material".into(),
        fileb(wrapped),
        "--expiration-model".into(),
        "KEY_MATERIAL_DOES_NOT_EXPIRE".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn import_flow_end_to_end_with_openssl_wrapping() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let md =
        keyvol_json(home, &["kms", "create-key", "--origin", "EXTERNAL"])["KeyMetadata"].clone();
    assert_eq!(md["KeyState"], "PendingImport");
    assert_eq!(md["Origin"], "EXTERNAL");
    let key = md["KeyId"].as_str().unwrap().to_string();
    let other = keyvol_json(home, &["kms", "create-key", "--origin", "EXTERNAL"])["KeyMetadata"]
        ["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let e = kv_err(
        home,
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            "aGVsbG8=",
        ],
    );
    assert!(
        e.contains("(KMSInvalidStateException)") && e.contains("pending import"),
        "{e}"
    );

    let material = p(home, "PlaintextKeyMaterial.bin");
    openssl(&["rand", "-out", &material, "32"]);
    let (public, token) = cli_import_parameters(home, &key, "RSAES_OAEP_SHA_256", "1");
    let wrapped = openssl_wrap(home, &public, "RSAES_OAEP_SHA_256", &material);
    // The token of another key's parameters is refused.
    let (_, other_token) = cli_import_parameters(home, &other, "RSAES_OAEP_SHA_256", "o");
    let e = kv_err(home, &strs(&import_args(&key, &other_token, &wrapped)));
    assert!(e.contains("(InvalidImportTokenException)"), "{e}");
    keyvol_json(home, &strs(&import_args(&key, &token, &wrapped)));
    let md = keyvol_json(home, &["kms", "describe-key", "--key-id", &key])["KeyMetadata"].clone();
    assert_eq!(md["KeyState"], "Enabled");
    assert_eq!(md["ExpirationModel"], "KEY_MATERIAL_DOES_NOT_EXPIRE");
    // A used token cannot be used again.
    let e = kv_err(home, &strs(&import_args(&key, &token, &wrapped)));
    assert!(e.contains("(InvalidImportTokenException)"), "{e}");

    let ct = keyvol_json(
        home,
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            "aGVsbG8=",
            "--encryption-context",
            "app=byok",
        ],
    )["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_string();
    let decrypt = [
        "kms",
        "decrypt",
        "--ciphertext-blob",
        ct.as_str(),
        "--encryption-context",
        "app=byok",
    ];

    keyvol_json(
        home,
        &["kms", "delete-imported-key-material", "--key-id", &key],
    );
    let md = keyvol_json(home, &["kms", "describe-key", "--key-id", &key])["KeyMetadata"].clone();
    assert_eq!(md["KeyState"], "PendingImport");
    let e = kv_err(home, &decrypt);
    assert!(e.contains("(KMSInvalidStateException)"), "{e}");

    // Re-import, this time with RSA_AES_KEY_WRAP_SHA_256: other material
    // is refused, the same material brings the old ciphertext back.
    let (public, token) = cli_import_parameters(home, &key, "RSA_AES_KEY_WRAP_SHA_256", "2");
    let different = p(home, "other-material.bin");
    openssl(&["rand", "-out", &different, "32"]);
    let wrapped = openssl_wrap(home, &public, "RSA_AES_KEY_WRAP_SHA_256", &different);
    let e = kv_err(home, &strs(&import_args(&key, &token, &wrapped)));
    assert!(e.contains("(IncorrectKeyMaterialException)"), "{e}");
    let short = write(home, "short.bin", &[7u8; 16]);
    let wrapped = openssl_wrap(home, &public, "RSA_AES_KEY_WRAP_SHA_256", &short);
    let e = kv_err(home, &strs(&import_args(&key, &token, &wrapped)));
    assert!(
        e.contains("(IncorrectKeyMaterialException)") && e.contains("32 bytes"),
        "{e}"
    );
    let wrapped = openssl_wrap(home, &public, "RSA_AES_KEY_WRAP_SHA_256", &material);
    keyvol_json(home, &strs(&import_args(&key, &token, &wrapped)));
    let v = keyvol_json(home, &decrypt);
    assert_eq!(v["Plaintext"], "aGVsbG8=");

    // An imported key without new material to rotate onto is in the wrong
    // state (AWS: KMSInvalidStateException); AWS_KMS keys take no imported
    // material.
    let e = kv_err(home, &["kms", "rotate-key-on-demand", "--key-id", &key]);
    assert!(e.contains("(KMSInvalidStateException)"), "{e}");
    let normal = keyvol_json(home, &["kms", "create-key"])["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let e = kv_err(
        home,
        &[
            "kms",
            "get-parameters-for-import",
            "--key-id",
            &normal,
            "--wrapping-algorithm",
            "RSAES_OAEP_SHA_1",
            "--wrapping-key-spec",
            "RSA_2048",
        ],
    );
    assert!(
        e.contains("(UnsupportedOperationException)") && e.contains("origin is AWS_KMS"),
        "{e}"
    );
    let v = keyvol_json(home, &["kms", "audit", "verify"]);
    assert_eq!(v["Valid"], true);
}

// ---------------------------------------------------------------- library level

/// GetParametersForImport + wrap + ImportKeyMaterial through the library.
fn import(e: &Env, key: &str, material: &[u8], extra: Value) -> keyvol::kms::KmsResult<Value> {
    let params = e.call(
        "GetParametersForImport",
        json!({"KeyId": key, "WrappingAlgorithm": "RSAES_OAEP_SHA_1", "WrappingKeySpec": "RSA_2048"}),
    )?;
    let wrapped = keyvol::kms::asym::wrap_for_import(
        &unb64(&params["PublicKey"]),
        keyvol::kms::asym::AlgorithmSpec::RsaesOaepSha1,
        material,
    )
    .unwrap();
    let mut req = json!({"KeyId": key, "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": b64(&wrapped)});
    // Material that does not expire unless the case says otherwise.
    if extra.get("ValidTo").is_none() && extra.get("ExpirationModel").is_none() {
        req["ExpirationModel"] = json!("KEY_MATERIAL_DOES_NOT_EXPIRE");
    }
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    e.call("ImportKeyMaterial", req)
}

#[test]
fn imported_material_expires_with_the_injected_clock() {
    let e = env();
    let key = e.ok("CreateKey", json!({"Origin": "EXTERNAL"}))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let material = [0x5au8; 32];
    let now = e.clock.now();
    // ExpirationModel and ValidTo must agree.
    let x = import(
        &e,
        &key,
        &material,
        json!({"ExpirationModel": "KEY_MATERIAL_EXPIRES"}),
    )
    .unwrap_err();
    assert_eq!(x.code, ValidationException);
    assert!(x.message.contains("validTo"), "{}", x.message);
    let x = import(
        &e,
        &key,
        &material,
        json!({"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE", "ValidTo": now + 3600}),
    )
    .unwrap_err();
    assert_eq!(x.code, ValidationException);
    // An import token expires after 24 hours (bounded by the clock read
    // before and after the call, however slow the machine is).
    let before = e.clock.now();
    let params = e.ok(
        "GetParametersForImport",
        json!({"KeyId": key, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"}),
    );
    let after = e.clock.now();
    let valid_to = params["ParametersValidTo"].as_i64().unwrap();
    assert!(
        (before + 86_400..=after + 86_400).contains(&valid_to),
        "{valid_to} vs {before}..{after}"
    );
    e.clock.advance(86_400 + 1);
    let wrapped = keyvol::kms::asym::wrap_for_import(
        &unb64(&params["PublicKey"]),
        keyvol::kms::asym::AlgorithmSpec::RsaesOaepSha256,
        &material,
    )
    .unwrap();
    let x = err(
        &e,
        "ImportKeyMaterial",
        json!({"KeyId": key, "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": b64(&wrapped), "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}),
    );
    assert_eq!(x.code, ExpiredImportTokenException);

    let now = e.clock.now();
    import(
        &e,
        &key,
        &material,
        json!({"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": now + 3600}),
    )
    .unwrap();
    let md = e.ok("DescribeKey", json!({"KeyId": key}))["KeyMetadata"].clone();
    assert_eq!(md["KeyState"], "Enabled");
    assert_eq!(md["ExpirationModel"], "KEY_MATERIAL_EXPIRES");
    assert_eq!(md["ValidTo"], now + 3600);
    let ct = e.ok(
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"until expiry")}),
    )["CiphertextBlob"]
        .clone();
    e.clock.advance(3601);
    let x = err(&e, "Decrypt", json!({"CiphertextBlob": ct}));
    assert_eq!(x.code, KMSInvalidStateException);
    let md = e.ok("DescribeKey", json!({"KeyId": key}))["KeyMetadata"].clone();
    assert_eq!(md["KeyState"], "PendingImport");
    let events = e
        .kms
        .audit_list(&keyvol::kms::audit::AuditFilter {
            event_name: Some("DeleteExpiredKeyMaterial".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(events.len(), 1);
    // The same material again: the old ciphertext decrypts.
    import(&e, &key, &material, json!({})).unwrap();
    let v = e.ok("Decrypt", json!({"CiphertextBlob": ct}));
    assert_eq!(unb64(&v["Plaintext"]), b"until expiry");
}

#[test]
fn create_key_specs_usages_and_algorithm_lists() {
    let e = env();
    let cases: &[(&str, &str, &str, Value)] = &[
        (
            "ECC_NIST_P256",
            "SIGN_VERIFY",
            "SigningAlgorithms",
            json!(["ECDSA_SHA_256"]),
        ),
        (
            "ECC_NIST_P384",
            "SIGN_VERIFY",
            "SigningAlgorithms",
            json!(["ECDSA_SHA_384"]),
        ),
        (
            "ECC_NIST_P521",
            "SIGN_VERIFY",
            "SigningAlgorithms",
            json!(["ECDSA_SHA_512"]),
        ),
        (
            "ECC_SECG_P256K1",
            "SIGN_VERIFY",
            "SigningAlgorithms",
            json!(["ECDSA_SHA_256"]),
        ),
        (
            "ECC_NIST_EDWARDS25519",
            "SIGN_VERIFY",
            "SigningAlgorithms",
            json!(["ED25519_SHA_512"]),
        ),
        (
            "ECC_NIST_P521",
            "KEY_AGREEMENT",
            "KeyAgreementAlgorithms",
            json!(["ECDH"]),
        ),
        (
            "HMAC_256",
            "GENERATE_VERIFY_MAC",
            "MacAlgorithms",
            json!(["HMAC_SHA_256"]),
        ),
    ];
    for (spec, usage, field, algs) in cases {
        let md =
            e.ok("CreateKey", json!({"KeySpec": spec, "KeyUsage": usage}))["KeyMetadata"].clone();
        assert_eq!(md["KeySpec"], *spec);
        assert_eq!(md["KeyUsage"], *usage);
        assert_eq!(md[*field], *algs, "{spec}");
        assert!(md.get("EncryptionAlgorithms").is_none(), "{spec}");
        let key = md["KeyId"].as_str().unwrap();
        let d = e.ok("DescribeKey", json!({"KeyId": key}))["KeyMetadata"].clone();
        assert_eq!(d[*field], *algs);
        if !spec.starts_with("HMAC") {
            let pk = e.ok("GetPublicKey", json!({"KeyId": key}));
            assert_eq!(pk[*field], *algs);
            assert!(!unb64(&pk["PublicKey"]).is_empty());
        }
    }
    // A non-symmetric spec needs an explicit, compatible KeyUsage.
    let x = err(&e, "CreateKey", json!({"KeySpec": "ECC_NIST_P256"}));
    assert_eq!(x.code, ValidationException);
    assert!(x.message.contains("KeyUsage is required"), "{}", x.message);
    let x = err(&e, "CreateKey", json!({"KeySpec": "RSA_2048"}));
    assert_eq!(x.code, ValidationException);
    let x = err(
        &e,
        "CreateKey",
        json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "ENCRYPT_DECRYPT"}),
    );
    assert_eq!(x.code, ValidationException);
    assert_eq!(
        x.message,
        "KeyUsage ENCRYPT_DECRYPT is not compatible with KeySpec ECC_NIST_P256; valid KeyUsage values for ECC_NIST_P256 are [SIGN_VERIFY, KEY_AGREEMENT]"
    );
    let x = err(
        &e,
        "CreateKey",
        json!({"KeySpec": "ECC_SECG_P256K1", "KeyUsage": "KEY_AGREEMENT"}),
    );
    assert_eq!(x.code, ValidationException);
    let x = err(
        &e,
        "CreateKey",
        json!({"KeySpec": "HMAC_256", "KeyUsage": "SIGN_VERIFY"}),
    );
    assert_eq!(x.code, ValidationException);
    let x = err(
        &e,
        "CreateKey",
        json!({"KeySpec": "RSA_1024", "KeyUsage": "SIGN_VERIFY"}),
    );
    assert_eq!(x.code, ValidationException);
    assert!(
        x.message.contains("'RSA_1024' at 'keySpec'"),
        "{}",
        x.message
    );
    let x = err(&e, "CreateKey", json!({"KeyUsage": "SIGN_VERIFY"}));
    assert_eq!(x.code, ValidationException);
    // HMAC keys take imported material: made, waiting for it.
    let hmac = e.ok(
        "CreateKey",
        json!({"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC", "Origin": "EXTERNAL"}),
    );
    assert_eq!(hmac["KeyMetadata"]["KeyState"], "PendingImport");
    // Nothing half-made stays behind.
    let keys = e.ok("ListKeys", json!({}))["Keys"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(keys, cases.len() + 1);
}

#[test]
fn rsa_limits_wrong_usage_wrong_algorithm_and_digest_length() {
    let e = env();
    let enc = lib_key(&e, "RSA_2048", "ENCRYPT_DECRYPT");
    let sig = lib_key(&e, "ECC_NIST_P256", "SIGN_VERIFY");
    let mac = lib_key(&e, "HMAC_384", "GENERATE_VERIFY_MAC");
    let agree = lib_key(&e, "ECC_NIST_P256", "KEY_AGREEMENT");
    let sym = e.create_key();

    // RSA-OAEP plaintext limits: 190 bytes for RSA_2048 with SHA-256, 214 with SHA-1.
    for (alg, max) in [("RSAES_OAEP_SHA_256", 190usize), ("RSAES_OAEP_SHA_1", 214)] {
        let ct = e.ok(
            "Encrypt",
            json!({"KeyId": enc, "Plaintext": b64(&vec![1u8; max]), "EncryptionAlgorithm": alg}),
        );
        assert_eq!(ct["EncryptionAlgorithm"], alg);
        let pt = e.ok(
            "Decrypt",
            json!({"KeyId": enc, "CiphertextBlob": ct["CiphertextBlob"], "EncryptionAlgorithm": alg}),
        );
        assert_eq!(unb64(&pt["Plaintext"]), vec![1u8; max]);
        let x = err(
            &e,
            "Encrypt",
            json!({"KeyId": enc, "Plaintext": b64(&vec![1u8; max + 1]), "EncryptionAlgorithm": alg}),
        );
        assert_eq!(x.code, ValidationException);
        assert!(
            x.message.contains(&format!("at most {max} bytes")),
            "{}",
            x.message
        );
    }
    // An RSA key needs an RSA algorithm; a symmetric key refuses them.
    let x = err(
        &e,
        "Decrypt",
        json!({"KeyId": enc, "CiphertextBlob": b64(&[0u8; 256])}),
    );
    assert_eq!(x.code, InvalidKeyUsageException, "{}", x.message);
    assert!(x.message.contains("RSAES_OAEP_SHA_1"), "{}", x.message);
    let x = err(
        &e,
        "Decrypt",
        json!({"KeyId": sym, "CiphertextBlob": b64(&[0u8; 256])}),
    );
    assert_eq!(x.code, InvalidCiphertextException);
    let x = err(&e, "Encrypt", json!({"KeyId": enc, "Plaintext": b64(b"x")}));
    assert_eq!(x.code, InvalidKeyUsageException);
    let x = err(
        &e,
        "Encrypt",
        json!({"KeyId": sym, "Plaintext": b64(b"x"), "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
    );
    assert_eq!(x.code, InvalidKeyUsageException);
    let x = err(
        &e,
        "Decrypt",
        json!({"KeyId": sym, "CiphertextBlob": b64(&[0u8; 256]), "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
    );
    assert_eq!(x.code, InvalidKeyUsageException);
    let x = err(
        &e,
        "Decrypt",
        json!({"KeyId": enc, "CiphertextBlob": b64(&[0u8; 256]), "EncryptionAlgorithm": "RSAES_OAEP_SHA_1", "EncryptionContext": {"a": "b"}}),
    );
    assert_eq!(x.code, ValidationException);
    let x = err(
        &e,
        "Decrypt",
        json!({"KeyId": enc, "CiphertextBlob": b64(&[0u8; 256]), "EncryptionAlgorithm": "RSAES_OAEP_SHA_1"}),
    );
    assert_eq!(x.code, InvalidCiphertextException);

    // Wrong usage: AWS's message names the key, its usage and the operation.
    let x = err(
        &e,
        "Sign",
        json!({"KeyId": enc, "Message": b64(b"m"), "SigningAlgorithm": "RSASSA_PSS_SHA_256"}),
    );
    assert_eq!(x.code, InvalidKeyUsageException);
    assert_eq!(
        x.message,
        format!("arn:aws:kms:us-east-1:111122223333:key/{enc} key usage is ENCRYPT_DECRYPT which is not valid for Sign.")
    );
    let x = err(
        &e,
        "GenerateMac",
        json!({"KeyId": sig, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_384"}),
    );
    assert_eq!(x.code, InvalidKeyUsageException);
    let x = err(
        &e,
        "Verify",
        json!({"KeyId": mac, "Message": b64(b"m"), "Signature": b64(b"s"), "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    assert_eq!(x.code, InvalidKeyUsageException);
    let x = err(
        &e,
        "DeriveSharedSecret",
        json!({"KeyId": sig, "KeyAgreementAlgorithm": "ECDH", "PublicKey": b64(b"x")}),
    );
    assert_eq!(x.code, InvalidKeyUsageException);
    let x = err(&e, "Encrypt", json!({"KeyId": sig, "Plaintext": b64(b"x")}));
    assert_eq!(x.code, InvalidKeyUsageException);
    for op in ["GenerateDataKey", "GenerateDataKeyWithoutPlaintext"] {
        let x = err(&e, op, json!({"KeyId": enc, "KeySpec": "AES_256"}));
        assert_eq!(x.code, InvalidKeyUsageException, "{op}");
        let x = err(&e, op, json!({"KeyId": agree, "KeySpec": "AES_256"}));
        assert_eq!(x.code, InvalidKeyUsageException, "{op}");
    }
    let x = err(
        &e,
        "GenerateDataKeyPair",
        json!({"KeyId": enc, "KeyPairSpec": "ECC_NIST_P256"}),
    );
    assert_eq!(x.code, InvalidKeyUsageException);
    let x = err(
        &e,
        "GenerateDataKeyPair",
        json!({"KeyId": sym, "KeyPairSpec": "ECC_NIST_P999"}),
    );
    assert_eq!(x.code, ValidationException);

    // Wrong algorithm for the key's spec.
    let x = err(
        &e,
        "Sign",
        json!({"KeyId": sig, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_384"}),
    );
    assert_eq!(x.code, InvalidKeyUsageException);
    assert!(
        x.message.contains("use one of [ECDSA_SHA_256]"),
        "{}",
        x.message
    );
    let x = err(
        &e,
        "GenerateMac",
        json!({"KeyId": mac, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_256"}),
    );
    assert_eq!(x.code, InvalidKeyUsageException);
    let x = err(
        &e,
        "Sign",
        json!({"KeyId": sig, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_1"}),
    );
    assert_eq!(x.code, ValidationException);

    // Message limits and DIGEST length.
    let x = err(
        &e,
        "Sign",
        json!({"KeyId": sig, "Message": b64(&[0u8; 4097]), "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    assert_eq!(x.code, ValidationException);
    e.ok(
        "Sign",
        json!({"KeyId": sig, "Message": b64(&[0u8; 4096]), "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    let x = err(
        &e,
        "Sign",
        json!({"KeyId": sig, "Message": b64(&[0u8; 31]), "MessageType": "DIGEST", "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    assert_eq!(x.code, ValidationException);
    assert!(x.message.contains("exactly 32 bytes"), "{}", x.message);
    let x = err(&e, "Sign", json!({"KeyId": sig, "Message": b64(b"m")}));
    assert_eq!(x.code, ValidationException);
    assert!(x.message.contains("'signingAlgorithm'"), "{}", x.message);
    let x = err(
        &e,
        "GenerateMac",
        json!({"KeyId": mac, "Message": b64(&[0u8; 4097]), "MacAlgorithm": "HMAC_SHA_384"}),
    );
    assert_eq!(x.code, ValidationException);

    // Tampered signature and message.
    let s = e.ok(
        "Sign",
        json!({"KeyId": sig, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    let v = e.ok("Verify", json!({"KeyId": sig, "Message": b64(b"m"), "Signature": s["Signature"], "SigningAlgorithm": "ECDSA_SHA_256"}));
    assert_eq!(v["SignatureValid"], true);
    let x = err(
        &e,
        "Verify",
        json!({"KeyId": sig, "Message": b64(b"n"), "Signature": s["Signature"], "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    assert_eq!(x.code, KMSInvalidSignatureException);

    // Public keys exist only for RSA and ECC keys.
    for k in [&mac, &sym] {
        let x = err(&e, "GetPublicKey", json!({"KeyId": k}));
        assert_eq!(x.code, UnsupportedOperationException);
    }
    // Rotation stays symmetric-only.
    for k in [&enc, &sig, &mac] {
        for op in ["EnableKeyRotation", "RotateKeyOnDemand"] {
            let x = err(&e, op, json!({"KeyId": k}));
            assert_eq!(x.code, UnsupportedOperationException, "{op}");
        }
    }
    // The private key is never in the audit log or stored in the clear.
    let log = serde_json::to_string(&e.kms.audit_list(&Default::default()).unwrap()).unwrap();
    assert!(log.contains("\"eventName\":\"Sign\""));
    assert!(!log.contains(&b64(b"m")));
}

#[test]
fn condition_keys_reach_policies() {
    let e = env();
    let sig = lib_key(&e, "ECC_NIST_P256", "SIGN_VERIFY");
    let mac = lib_key(&e, "HMAC_256", "GENERATE_VERIFY_MAC");
    let sym = e.create_key();
    let ext = e.ok("CreateKey", json!({"Origin": "EXTERNAL"}))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let root = "arn:aws:iam::111122223333:root";
    let deny = |key: &str, action: &str, cond: Value| {
        let policy = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": action, "Resource": "*", "Condition": cond}
        ]});
        e.ok(
            "PutKeyPolicy",
            json!({"KeyId": key, "Policy": policy.to_string()}),
        );
    };
    deny(
        &sig,
        "kms:Sign",
        json!({"StringEquals": {"kms:MessageType": "DIGEST"}}),
    );
    e.ok(
        "Sign",
        json!({"KeyId": sig, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    let x = err(
        &e,
        "Sign",
        json!({"KeyId": sig, "Message": b64(&[0u8; 32]), "MessageType": "DIGEST", "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    assert_eq!(x.code, AccessDeniedException);
    deny(
        &sig,
        "kms:Sign",
        json!({"StringEquals": {"kms:SigningAlgorithm": "ECDSA_SHA_256"}}),
    );
    let x = err(
        &e,
        "Sign",
        json!({"KeyId": sig, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    assert_eq!(x.code, AccessDeniedException);
    deny(
        &mac,
        "kms:GenerateMac",
        json!({"StringEquals": {"kms:MacAlgorithm": "HMAC_SHA_256"}}),
    );
    let x = err(
        &e,
        "GenerateMac",
        json!({"KeyId": mac, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_256"}),
    );
    assert_eq!(x.code, AccessDeniedException);
    deny(
        &sym,
        "kms:GenerateDataKeyPair",
        json!({"StringEquals": {"kms:DataKeyPairSpec": "ECC_NIST_P384"}}),
    );
    e.ok(
        "GenerateDataKeyPair",
        json!({"KeyId": sym, "KeyPairSpec": "ECC_NIST_P256"}),
    );
    let x = err(
        &e,
        "GenerateDataKeyPair",
        json!({"KeyId": sym, "KeyPairSpec": "ECC_NIST_P384"}),
    );
    assert_eq!(x.code, AccessDeniedException);
    deny(
        &ext,
        "kms:GetParametersForImport",
        json!({"StringEquals": {"kms:WrappingAlgorithm": "RSAES_OAEP_SHA_1"}}),
    );
    let x = err(
        &e,
        "GetParametersForImport",
        json!({"KeyId": ext, "WrappingAlgorithm": "RSAES_OAEP_SHA_1", "WrappingKeySpec": "RSA_2048"}),
    );
    assert_eq!(x.code, AccessDeniedException);
    deny(
        &ext,
        "kms:ImportKeyMaterial",
        json!({"StringEquals": {"kms:ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}}),
    );
    let x = import(&e, &ext, &[1u8; 32], json!({})).unwrap_err();
    assert_eq!(x.code, AccessDeniedException);
    deny(
        &ext,
        "kms:ImportKeyMaterial",
        json!({"NumericLessThan": {"kms:ValidTo": e.clock.now() + 7200}}),
    );
    let x = import(
        &e,
        &ext,
        &[1u8; 32],
        json!({"ValidTo": e.clock.now() + 3600}),
    )
    .unwrap_err();
    assert_eq!(x.code, AccessDeniedException);
    import(
        &e,
        &ext,
        &[1u8; 32],
        json!({"ValidTo": e.clock.now() + 3 * 3600}),
    )
    .unwrap();
}

/// A request for `op` on `key` that succeeds on an Enabled key.
fn request(e: &Env, op: &str, key: &str) -> Value {
    let ecc_peer = || {
        let k = lib_key(e, "ECC_NIST_P256", "KEY_AGREEMENT");
        e.ok("GetPublicKey", json!({"KeyId": k}))["PublicKey"].clone()
    };
    match op {
        "GetPublicKey" => json!({"KeyId": key}),
        "Sign" => json!({"KeyId": key, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256"}),
        "Verify" => {
            let s = e.ok(
                "Sign",
                json!({"KeyId": key, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256"}),
            );
            json!({"KeyId": key, "Message": b64(b"m"), "Signature": s["Signature"], "SigningAlgorithm": "ECDSA_SHA_256"})
        }
        "GenerateMac" => {
            json!({"KeyId": key, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_256"})
        }
        "VerifyMac" => {
            let m = e.ok(
                "GenerateMac",
                json!({"KeyId": key, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_256"}),
            );
            json!({"KeyId": key, "Message": b64(b"m"), "Mac": m["Mac"], "MacAlgorithm": "HMAC_SHA_256"})
        }
        "GenerateDataKeyPair" | "GenerateDataKeyPairWithoutPlaintext" => {
            json!({"KeyId": key, "KeyPairSpec": "ECC_NIST_P256"})
        }
        "DeriveSharedSecret" => {
            json!({"KeyId": key, "KeyAgreementAlgorithm": "ECDH", "PublicKey": ecc_peer()})
        }
        other => panic!("no request for {other}"),
    }
}

fn set_state(e: &Env, key: &str, state: &str) {
    match state {
        "Enabled" => {}
        "Disabled" => {
            e.ok("DisableKey", json!({"KeyId": key}));
        }
        "PendingDeletion" => {
            e.ok(
                "ScheduleKeyDeletion",
                json!({"KeyId": key, "PendingWindowInDays": 7}),
            );
        }
        other => panic!("no state {other}"),
    }
}

#[test]
fn key_state_table_for_every_new_operation() {
    let e = env();
    let ops: &[(&str, &str, &str)] = &[
        ("GetPublicKey", "ECC_NIST_P256", "SIGN_VERIFY"),
        ("Sign", "ECC_NIST_P256", "SIGN_VERIFY"),
        ("Verify", "ECC_NIST_P256", "SIGN_VERIFY"),
        ("GenerateMac", "HMAC_256", "GENERATE_VERIFY_MAC"),
        ("VerifyMac", "HMAC_256", "GENERATE_VERIFY_MAC"),
        (
            "GenerateDataKeyPair",
            "SYMMETRIC_DEFAULT",
            "ENCRYPT_DECRYPT",
        ),
        (
            "GenerateDataKeyPairWithoutPlaintext",
            "SYMMETRIC_DEFAULT",
            "ENCRYPT_DECRYPT",
        ),
        ("DeriveSharedSecret", "ECC_NIST_P256", "KEY_AGREEMENT"),
    ];
    let want: &[(&str, Option<ErrorCode>)] = &[
        ("Enabled", None),
        ("Disabled", Some(DisabledException)),
        ("PendingDeletion", Some(KMSInvalidStateException)),
    ];
    for (op, spec, usage) in ops {
        for (state, expected) in want {
            let key = lib_key(&e, spec, usage);
            let req = request(&e, op, &key);
            set_state(&e, &key, state);
            let got = e.code(op, req);
            assert_eq!(got, *expected, "{op} on a {state} key");
        }
        // PendingImport: an imported key without material.
        let ext = e.ok("CreateKey", json!({"Origin": "EXTERNAL"}))["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap()
            .to_string();
        let req = match *op {
            "Verify" => {
                json!({"KeyId": ext, "Message": b64(b"m"), "Signature": b64(b"s"), "SigningAlgorithm": "ECDSA_SHA_256"})
            }
            "VerifyMac" => {
                json!({"KeyId": ext, "Message": b64(b"m"), "Mac": b64(b"s"), "MacAlgorithm": "HMAC_SHA_256"})
            }
            "DeriveSharedSecret" => {
                json!({"KeyId": ext, "KeyAgreementAlgorithm": "ECDH", "PublicKey": b64(b"x")})
            }
            _ => request(&e, op, &ext),
        };
        let x = err(&e, op, req);
        assert_eq!(
            x.code, KMSInvalidStateException,
            "{op} on a PendingImport key"
        );
        assert!(x.message.ends_with("is pending import."), "{}", x.message);
    }

    // The import operations: Enabled / Disabled / PendingImport work,
    // PendingDeletion does not.
    for state in ["Enabled", "Disabled", "PendingDeletion", "PendingImport"] {
        let key = e.ok("CreateKey", json!({"Origin": "EXTERNAL"}))["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap()
            .to_string();
        if state != "PendingImport" {
            import(&e, &key, &[9u8; 32], json!({})).unwrap();
            set_state(&e, &key, state);
        }
        let expect = (state == "PendingDeletion").then_some(KMSInvalidStateException);
        let got = e.code(
            "GetParametersForImport",
            json!({"KeyId": key, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"}),
        );
        assert_eq!(got, expect, "GetParametersForImport on {state}");
        let got = import(&e, &key, &[9u8; 32], json!({}))
            .err()
            .map(|x| x.code);
        assert_eq!(got, expect, "ImportKeyMaterial on {state}");
        let got = e.code("DeleteImportedKeyMaterial", json!({"KeyId": key}));
        assert_eq!(got, expect, "DeleteImportedKeyMaterial on {state}");
        let md = e.ok("DescribeKey", json!({"KeyId": key}))["KeyMetadata"].clone();
        let after = if state == "PendingDeletion" {
            "PendingDeletion"
        } else {
            "PendingImport"
        };
        assert_eq!(md["KeyState"], after, "{state}");
    }
}

#[test]
fn grants_allow_the_new_operations_one_by_one() {
    use keyvol::ids::AccountId;
    use keyvol::kms::RequestContext;
    let e = env();
    let a = AccountId::default_account();
    e.iam.create_user(&a, "bob", Some("bob")).unwrap();
    let bob = RequestContext::new(e.iam.profile_caller("bob").unwrap(), e.ctx.region.clone());
    let bob_arn = "arn:aws:iam::111122223333:user/bob";
    let sig = lib_key(&e, "ECC_NIST_P256", "SIGN_VERIFY");
    let sym = e.create_key();
    let sign = json!({"KeyId": sig, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256"});
    let pair =
        json!({"KeyId": sym, "KeyPairSpec": "ECC_NIST_P256", "EncryptionContext": {"t": "1"}});
    for (op, req) in [("Sign", &sign), ("GenerateDataKeyPair", &pair)] {
        let x = e.kms.call(&bob, op, req.clone()).unwrap_err();
        assert_eq!(x.code, AccessDeniedException, "{op}");
    }
    e.ok(
        "CreateGrant",
        json!({"KeyId": sig, "GranteePrincipal": bob_arn, "Operations": ["Sign", "GetPublicKey"]}),
    );
    e.ok(
        "CreateGrant",
        json!({"KeyId": sym, "GranteePrincipal": bob_arn, "Operations": ["GenerateDataKeyPair"],
            "Constraints": {"EncryptionContextEquals": {"t": "1"}}}),
    );
    let s = e.kms.call(&bob, "Sign", sign.clone()).unwrap();
    e.kms
        .call(&bob, "GetPublicKey", json!({"KeyId": sig}))
        .unwrap();
    let verify = json!({"KeyId": sig, "Message": b64(b"m"), "Signature": s["Signature"], "SigningAlgorithm": "ECDSA_SHA_256"});
    assert_eq!(
        e.kms.call(&bob, "Verify", verify).unwrap_err().code,
        AccessDeniedException
    );
    e.kms.call(&bob, "GenerateDataKeyPair", pair).unwrap();
    let other =
        json!({"KeyId": sym, "KeyPairSpec": "ECC_NIST_P256", "EncryptionContext": {"t": "2"}});
    assert_eq!(
        e.kms
            .call(&bob, "GenerateDataKeyPair", other)
            .unwrap_err()
            .code,
        AccessDeniedException
    );
    // Bob's calls are in the audit log under his ARN, allowed or denied.
    let events = e
        .kms
        .audit_list(&keyvol::kms::audit::AuditFilter {
            principal: Some(bob_arn.into()),
            ..Default::default()
        })
        .unwrap();
    assert!(events.len() >= 6, "{}", events.len());
}

// ---------------------------------------------------------------- ML-DSA

/// The ML-DSA specs: their SubjectPublicKeyInfo OID's last arc
/// (2.16.840.1.101.3.4.3.17/18/19), raw public key and signature sizes
/// (FIPS 204 table 2), and aws-lc-rs's verification algorithm.
const ML_DSA: [(
    &str,
    u8,
    usize,
    usize,
    &aws_lc_rs::signature::PqdsaVerificationAlgorithm,
); 3] = [
    (
        "ML_DSA_44",
        17,
        1312,
        2420,
        &aws_lc_rs::signature::ML_DSA_44,
    ),
    (
        "ML_DSA_65",
        18,
        1952,
        3309,
        &aws_lc_rs::signature::ML_DSA_65,
    ),
    (
        "ML_DSA_87",
        19,
        2592,
        4627,
        &aws_lc_rs::signature::ML_DSA_87,
    ),
];

/// Takes an ML-DSA SubjectPublicKeyInfo apart by hand (RFC 9881: SEQUENCE
/// { SEQUENCE { OID }, BIT STRING }, no parameters): the OID's last arc
/// and the raw public key.
fn split_ml_dsa_spki(spki: &[u8]) -> (u8, &[u8]) {
    // 30 82 LL LL | 30 0b 06 09 60 86 48 01 65 03 04 03 XX | 03 82 LL LL 00 | pk
    assert_eq!(&spki[..2], &[0x30, 0x82], "outer SEQUENCE");
    assert_eq!(
        usize::from(spki[2]) << 8 | usize::from(spki[3]),
        spki.len() - 4
    );
    assert_eq!(
        &spki[4..16],
        &[0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03],
        "AlgorithmIdentifier with the NIST sigAlgs arc and no parameters"
    );
    assert_eq!(&spki[17..19], &[0x03, 0x82], "BIT STRING");
    assert_eq!(
        usize::from(spki[19]) << 8 | usize::from(spki[20]),
        spki.len() - 21
    );
    assert_eq!(spki[21], 0, "no unused bits");
    (spki[16], &spki[22..])
}

/// SHAKE256(parts..., 64), computed with AWS-LC's EVP digest API
/// (independently of keyvol, which never computes μ: AWS-LC does inside
/// pure ML-DSA).
fn shake256_64(parts: &[&[u8]]) -> [u8; 64] {
    use aws_lc_sys as lc;
    let mut out = [0u8; 64];
    // SAFETY: FFI calls on a digest context created, used and freed here;
    // each update reads `p.len()` bytes of `p`; the final call writes 64
    // bytes into `out`.
    unsafe {
        let ctx = lc::EVP_MD_CTX_new();
        assert!(!ctx.is_null());
        assert_eq!(
            lc::EVP_DigestInit_ex(ctx, lc::EVP_shake256(), std::ptr::null_mut()),
            1
        );
        for p in parts {
            assert_eq!(lc::EVP_DigestUpdate(ctx, p.as_ptr().cast(), p.len()), 1);
        }
        assert_eq!(lc::EVP_DigestFinalXOF(ctx, out.as_mut_ptr(), 64), 1);
        lc::EVP_MD_CTX_free(ctx);
    }
    out
}

/// FIPS 204 section 6.2 μ of `message` under raw public key `pk`, with an
/// empty context string: SHAKE256(SHAKE256(pk, 64) || 0 || 0 || M, 64).
fn external_mu(pk: &[u8], message: &[u8]) -> [u8; 64] {
    let tr = shake256_64(&[pk]);
    shake256_64(&[&tr, &[0x00, 0x00], message])
}

#[test]
fn ml_dsa_keys_sign_and_verify_raw_and_external_mu() {
    use aws_lc_rs::signature::UnparsedPublicKey;
    let e = env();
    let algs = json!(["ML_DSA_SHAKE_256"]);
    let alg = "ML_DSA_SHAKE_256";
    for (spec, oid_arc, pk_len, sig_len, verifier) in ML_DSA {
        // CreateKey / DescribeKey.
        let md = e.ok(
            "CreateKey",
            json!({"KeySpec": spec, "KeyUsage": "SIGN_VERIFY"}),
        )["KeyMetadata"]
            .clone();
        assert_eq!(md["KeySpec"], spec);
        assert_eq!(md["KeyUsage"], "SIGN_VERIFY");
        assert_eq!(md["SigningAlgorithms"], algs, "{spec}");
        let key = md["KeyId"].as_str().unwrap().to_string();
        let d = e.ok("DescribeKey", json!({"KeyId": key}))["KeyMetadata"].clone();
        assert_eq!(d["SigningAlgorithms"], algs, "{spec}");
        assert!(d.get("EncryptionAlgorithms").is_none());
        // The deprecated CustomerMasterKeySpec enum has no ML-DSA values.
        assert!(d.get("CustomerMasterKeySpec").is_none(), "{spec}");

        // GetPublicKey: DER SPKI with the spec's OID.
        let pk = e.ok("GetPublicKey", json!({"KeyId": key}));
        assert_eq!(pk["KeySpec"], spec);
        assert_eq!(pk["KeyUsage"], "SIGN_VERIFY");
        assert_eq!(pk["SigningAlgorithms"], algs);
        assert!(pk.get("CustomerMasterKeySpec").is_none(), "{spec}");
        let spki = unb64(&pk["PublicKey"]);
        let (arc, raw_pk) = split_ml_dsa_spki(&spki);
        assert_eq!(arc, oid_arc, "{spec}: OID 2.16.840.1.101.3.4.3.{oid_arc}");
        assert_eq!(raw_pk.len(), pk_len, "{spec}");

        // Sign RAW: verifies offline (SPKI and raw key) and with Verify;
        // hedged, so a second signature differs and verifies too.
        let msg = b"firmware image v1.2.3";
        let sign = |mt: &str, m: &[u8]| -> Vec<u8> {
            let s = e.ok(
                "Sign",
                json!({"KeyId": key, "Message": b64(m), "MessageType": mt, "SigningAlgorithm": alg}),
            );
            assert_eq!(s["SigningAlgorithm"], alg);
            assert!(s["KeyId"].as_str().unwrap().ends_with(&key));
            unb64(&s["Signature"])
        };
        let verify = |mt: &str, m: &[u8], s: &[u8]| {
            e.call(
                "Verify",
                json!({"KeyId": key, "Message": b64(m), "MessageType": mt, "Signature": b64(s), "SigningAlgorithm": alg}),
            )
        };
        let s1 = sign("RAW", msg);
        let s2 = sign("RAW", msg);
        assert_eq!(s1.len(), sig_len, "{spec}");
        assert_ne!(s1, s2, "{spec}: ML-DSA signatures are hedged");
        for s in [&s1, &s2] {
            UnparsedPublicKey::new(verifier, &spki)
                .verify(msg, s)
                .unwrap_or_else(|_| panic!("{spec}: offline verification with the SPKI"));
            UnparsedPublicKey::new(verifier, raw_pk)
                .verify(msg, s)
                .unwrap_or_else(|_| panic!("{spec}: offline verification with the raw key"));
            let v = verify("RAW", msg, s).unwrap();
            assert_eq!(v["SignatureValid"], true);
            assert_eq!(v["SigningAlgorithm"], alg);
        }
        assert!(UnparsedPublicKey::new(verifier, &spki)
            .verify(b"firmware image v1.2.4", &s1)
            .is_err());
        let x = verify("RAW", b"firmware image v1.2.4", &s1).unwrap_err();
        assert_eq!(x.code, KMSInvalidSignatureException, "{spec}");
        let mut flipped = s1.clone();
        flipped[100] ^= 0x40;
        let x = verify("RAW", msg, &flipped).unwrap_err();
        assert_eq!(x.code, KMSInvalidSignatureException, "{spec}");
        // Omitting MessageType means RAW.
        let v = e.ok(
            "Verify",
            json!({"KeyId": key, "Message": b64(msg), "Signature": b64(&s1), "SigningAlgorithm": alg}),
        );
        assert_eq!(v["SignatureValid"], true);

        // EXTERNAL_MU: a signature of μ(M) is a RAW signature of M, and a
        // RAW signature of M verifies as EXTERNAL_MU over μ(M).
        let mu = external_mu(raw_pk, msg);
        let s3 = sign("EXTERNAL_MU", &mu);
        assert_eq!(s3.len(), sig_len);
        UnparsedPublicKey::new(verifier, &spki)
            .verify(msg, &s3)
            .unwrap_or_else(|_| panic!("{spec}: EXTERNAL_MU signature verifies as RAW offline"));
        assert_eq!(verify("RAW", msg, &s3).unwrap()["SignatureValid"], true);
        assert_eq!(
            verify("EXTERNAL_MU", &mu, &s1).unwrap()["SignatureValid"],
            true
        );
        assert_eq!(
            verify("EXTERNAL_MU", &mu, &s3).unwrap()["SignatureValid"],
            true
        );
        // μ of another message, or computed without the public key hash,
        // does not match.
        let other_mu = external_mu(raw_pk, b"firmware image v1.2.4");
        let x = verify("EXTERNAL_MU", &other_mu, &s1).unwrap_err();
        assert_eq!(x.code, KMSInvalidSignatureException);
        let naive = shake256_64(&[&[0x00, 0x00], msg]);
        let x = verify("EXTERNAL_MU", &naive, &s1).unwrap_err();
        assert_eq!(x.code, KMSInvalidSignatureException);
        // A message above the RAW limit is signed through its μ.
        let big = vec![0x42u8; 100_000];
        let s4 = sign("EXTERNAL_MU", &external_mu(raw_pk, &big));
        UnparsedPublicKey::new(verifier, &spki)
            .verify(&big, &s4)
            .unwrap_or_else(|_| panic!("{spec}: large message through EXTERNAL_MU"));

        // Refused inputs.
        for len in [0usize, 32, 63, 65] {
            let m = vec![1u8; len];
            for op in ["Sign", "Verify"] {
                let mut req = json!({"KeyId": key, "Message": b64(&m), "MessageType": "EXTERNAL_MU", "SigningAlgorithm": alg});
                if op == "Verify" {
                    req["Signature"] = json!(b64(&s1));
                }
                let x = err(&e, op, req);
                assert_eq!(x.code, ValidationException, "{spec} {op} mu of {len} bytes");
                if len > 0 {
                    assert!(x.message.contains("exactly 64 bytes"), "{}", x.message);
                }
            }
        }
        let x = err(
            &e,
            "Sign",
            json!({"KeyId": key, "Message": b64(&[0u8; 64]), "MessageType": "DIGEST", "SigningAlgorithm": alg}),
        );
        assert_eq!(x.code, ValidationException);
        assert!(x.message.contains("MessageType DIGEST"), "{}", x.message);
        let x = err(
            &e,
            "Verify",
            json!({"KeyId": key, "Message": b64(&[0u8; 64]), "MessageType": "DIGEST", "Signature": b64(&s1), "SigningAlgorithm": alg}),
        );
        assert_eq!(x.code, ValidationException);
        assert!(x.message.contains("MessageType DIGEST"), "{}", x.message);
        sign("RAW", &[9u8; 4096]);
        let x = err(
            &e,
            "Sign",
            json!({"KeyId": key, "Message": b64(&[9u8; 4097]), "SigningAlgorithm": alg}),
        );
        assert_eq!(x.code, ValidationException);
        let x = err(
            &e,
            "Sign",
            json!({"KeyId": key, "Message": b64(msg), "SigningAlgorithm": "ECDSA_SHA_256"}),
        );
        assert_eq!(x.code, InvalidKeyUsageException);
        assert!(
            x.message.contains("use one of [ML_DSA_SHAKE_256]"),
            "{}",
            x.message
        );

        // KeyUsage must be SIGN_VERIFY (and given), and AWS KMS takes no
        // imported ML-DSA material.
        for usage in ["ENCRYPT_DECRYPT", "KEY_AGREEMENT", "GENERATE_VERIFY_MAC"] {
            let x = err(&e, "CreateKey", json!({"KeySpec": spec, "KeyUsage": usage}));
            assert_eq!(x.code, ValidationException, "{spec} {usage}");
            assert!(
                x.message.contains(&format!(
                    "valid KeyUsage values for {spec} are [SIGN_VERIFY]"
                )),
                "{}",
                x.message
            );
        }
        let x = err(&e, "CreateKey", json!({"KeySpec": spec}));
        assert_eq!(x.code, ValidationException);
        let x = err(
            &e,
            "CreateKey",
            json!({"KeySpec": spec, "KeyUsage": "SIGN_VERIFY", "Origin": "EXTERNAL"}),
        );
        assert_eq!(x.code, UnsupportedOperationException);
        assert!(x.message.contains(spec), "{}", x.message);
        // Not a data key pair spec.
        let sym = e.create_key();
        let x = err(
            &e,
            "GenerateDataKeyPair",
            json!({"KeyId": sym, "KeyPairSpec": spec}),
        );
        assert_eq!(x.code, ValidationException);
    }
}

#[test]
fn external_mu_and_ml_dsa_are_refused_for_other_keys() {
    let e = env();
    let mu = b64(&[7u8; 64]);
    for (spec, alg) in [
        ("ECC_NIST_P256", "ECDSA_SHA_256"),
        ("ECC_NIST_EDWARDS25519", "ED25519_SHA_512"),
        ("RSA_2048", "RSASSA_PSS_SHA_256"),
    ] {
        let key = lib_key(&e, spec, "SIGN_VERIFY");
        // Specs older than the deprecation keep CustomerMasterKeySpec.
        let d = e.ok("DescribeKey", json!({"KeyId": key}))["KeyMetadata"].clone();
        let pk = e.ok("GetPublicKey", json!({"KeyId": key}));
        let cmk = if spec == "ECC_NIST_EDWARDS25519" {
            Value::Null
        } else {
            json!(spec)
        };
        assert_eq!(d["CustomerMasterKeySpec"], cmk, "{spec}");
        assert_eq!(pk["CustomerMasterKeySpec"], cmk, "{spec}");
        let x = err(
            &e,
            "Sign",
            json!({"KeyId": key, "Message": mu, "MessageType": "EXTERNAL_MU", "SigningAlgorithm": alg}),
        );
        assert_eq!(x.code, ValidationException, "{spec}");
        assert!(
            x.message.contains("MessageType EXTERNAL_MU"),
            "{}",
            x.message
        );
        let s = e.ok(
            "Sign",
            json!({"KeyId": key, "Message": b64(b"m"), "SigningAlgorithm": alg}),
        );
        let x = err(
            &e,
            "Verify",
            json!({"KeyId": key, "Message": mu, "MessageType": "EXTERNAL_MU", "Signature": s["Signature"], "SigningAlgorithm": alg}),
        );
        assert_eq!(x.code, ValidationException, "{spec}");
        let x = err(
            &e,
            "Sign",
            json!({"KeyId": key, "Message": b64(b"m"), "SigningAlgorithm": "ML_DSA_SHAKE_256"}),
        );
        assert_eq!(x.code, InvalidKeyUsageException, "{spec}");
    }
    let x = err(
        &e,
        "Sign",
        json!({"KeyId": lib_key(&e, "ML_DSA_44", "SIGN_VERIFY"), "Message": mu, "MessageType": "EXTERNAL", "SigningAlgorithm": "ML_DSA_SHAKE_256"}),
    );
    assert_eq!(x.code, ValidationException);
    assert!(
        x.message.contains("[RAW, DIGEST, EXTERNAL_MU]"),
        "{}",
        x.message
    );
}

/// An independent oracle for ML-DSA: Python's `cryptography` (OpenSSL 4
/// underneath), run from the suite's venv. keyvol signs with aws-lc; the
/// oracle loads KMS's SubjectPublicKeyInfo, verifies RAW signatures over
/// the message, computes μ itself for EXTERNAL_MU, and refuses a changed
/// message or signature.
#[test]
fn ml_dsa_signatures_verify_with_python_cryptography() {
    let e = env();
    let script = r#"
import base64, json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa
from cryptography.exceptions import InvalidSignature
req = json.load(sys.stdin)
pk = serialization.load_der_public_key(base64.b64decode(req["spki"]))
msg = base64.b64decode(req["message"])
if req["op"] == "mu":
    h = mldsa.MLDSAMuHasher(pk)
    h.update(msg)
    print(json.dumps({"mu": base64.b64encode(h.finalize()).decode(), "type": type(pk).__name__}))
    sys.exit(0)
def ok(sig, m):
    try:
        pk.verify(sig, m)
        return True
    except InvalidSignature:
        return False
sig = base64.b64decode(req["signature"])
bad = bytearray(sig); bad[len(bad) // 2] ^= 1
print(json.dumps({"valid": ok(sig, msg), "changed_message": ok(sig, msg + b"!"),
                  "changed_signature": ok(bytes(bad), msg), "type": type(pk).__name__}))
"#;
    let oracle = |req: Value| -> Value {
        let out = common::serve::python_script(script, req.to_string().as_bytes());
        serde_json::from_slice(&out).unwrap()
    };
    for spec in ["ML_DSA_44", "ML_DSA_65", "ML_DSA_87"] {
        let key = e.ok(
            "CreateKey",
            json!({"KeySpec": spec, "KeyUsage": "SIGN_VERIFY"}),
        )["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap()
            .to_string();
        let spki = e.ok("GetPublicKey", json!({"KeyId": key}))["PublicKey"].clone();
        let class = format!("MLDSA{}PublicKey", &spec[7..]);
        let message = b"release manifest 2026-12-02".to_vec();
        let sign = |mt: &str, m: &[u8]| {
            e.ok(
                "Sign",
                json!({"KeyId": key, "Message": b64(m), "MessageType": mt, "SigningAlgorithm": "ML_DSA_SHAKE_256"}),
            )["Signature"]
                .clone()
        };
        let raw = oracle(
            json!({"op": "verify", "spki": spki, "message": b64(&message), "signature": sign("RAW", &message)}),
        );
        assert_eq!(raw["type"], class.as_str(), "{spec}");
        assert_eq!(raw["valid"], true, "{spec}: {raw}");
        assert_eq!(raw["changed_message"], false, "{spec}");
        assert_eq!(raw["changed_signature"], false, "{spec}");
        // EXTERNAL_MU: the oracle computes μ of a long message; KMS signs μ;
        // the signature verifies over the message itself.
        let long: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mu = oracle(json!({"op": "mu", "spki": spki, "message": b64(&long)}))["mu"]
            .as_str()
            .unwrap()
            .to_string();
        let sig = sign("EXTERNAL_MU", &keyvol::kms::api::b64_decode(&mu).unwrap());
        let ext =
            oracle(json!({"op": "verify", "spki": spki, "message": b64(&long), "signature": sig}));
        assert_eq!(ext["valid"], true, "{spec} EXTERNAL_MU: {ext}");
        assert_eq!(ext["changed_message"], false, "{spec}");
    }
}
