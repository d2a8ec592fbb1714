//! Interoperability of `kms::asym` with the `openssl` command line: keys,
//! signatures, RSA-OAEP, ECDH, HMAC and BYOK wrapping made by one side are
//! used by the other. The tests fail (never skip) when openssl is missing.

use std::process::{Command, Output};
use std::sync::OnceLock;

use keyvol::kms::asym::{
    self, AlgorithmSpec, AsymError, DataKeyPairSpec, EncryptionAlgorithmSpec, KeySpec, KeyUsage,
    MacAlgorithmSpec, MessageType, PrivateKeyMaterial, SigningAlgorithmSpec, WrappingKeySpec,
};
use keyvol::kms::{ErrorCode, KmsError};
use keyvol::secret::SecretBytes;

// ---------------------------------------------------------------- helpers

/// Runs openssl; panics with its stderr when it fails or is missing.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = openssl_output(args);
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn openssl_output(args: &[&str]) -> Output {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let v = Command::new("openssl").arg("version").output();
        match v {
            Ok(o) if o.status.success() => {}
            _ => panic!(
                "the openssl command line is required by these tests: install it \
                 (apt-get install openssl; scripts/setup.sh does)"
            ),
        }
    });
    Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running openssl {}: {e}", args.join(" ")))
}

/// A scratch directory with file helpers.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Scratch(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> String {
        self.0.path().join(name).to_str().unwrap().to_string()
    }
    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.0.path().join(name)).unwrap()
    }
    /// Writes a DER SubjectPublicKeyInfo and converts it to PEM with
    /// openssl (which also checks that openssl parses it).
    fn public_pem(&self, name: &str, spki_der: &[u8]) -> String {
        let der = self.write(&format!("{name}.der"), spki_der);
        let pem = self.path(&format!("{name}.pem"));
        openssl(&[
            "pkey", "-pubin", "-inform", "DER", "-in", &der, "-out", &pem,
        ]);
        pem
    }
    /// Writes a PKCS#8 DER private key and converts it to PEM with openssl.
    fn private_pem(&self, name: &str, pkcs8_der: &SecretBytes) -> String {
        let der = self.write(&format!("{name}.der"), pkcs8_der.expose());
        let pem = self.path(&format!("{name}.pem"));
        openssl(&["pkey", "-inform", "DER", "-in", &der, "-out", &pem]);
        pem
    }
}

/// One RSA key per size for the whole test binary: generation is slow.
fn rsa(spec: KeySpec) -> &'static PrivateKeyMaterial {
    static K2048: OnceLock<PrivateKeyMaterial> = OnceLock::new();
    static K3072: OnceLock<PrivateKeyMaterial> = OnceLock::new();
    static K4096: OnceLock<PrivateKeyMaterial> = OnceLock::new();
    let cell = match spec {
        KeySpec::Rsa2048 => &K2048,
        KeySpec::Rsa3072 => &K3072,
        KeySpec::Rsa4096 => &K4096,
        other => panic!("{other} is not RSA"),
    };
    cell.get_or_init(|| PrivateKeyMaterial::generate(spec).unwrap())
}

fn dgst_name(alg: SigningAlgorithmSpec) -> &'static str {
    match alg.hash().unwrap().output_len() {
        32 => "-sha256",
        48 => "-sha384",
        _ => "-sha512",
    }
}

fn is_pss(alg: SigningAlgorithmSpec) -> bool {
    alg.as_str().starts_with("RSASSA_PSS")
}

/// `openssl dgst -verify` of a signature over a RAW message.
fn openssl_verifies_raw(
    dir: &Scratch,
    pub_pem: &str,
    alg: SigningAlgorithmSpec,
    msg: &[u8],
    sig: &[u8],
) -> bool {
    let m = dir.write("msg.bin", msg);
    let s = dir.write("sig.bin", sig);
    let mut args = vec!["dgst", dgst_name(alg)];
    if is_pss(alg) {
        args.extend([
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ]);
    }
    args.extend(["-verify", pub_pem, "-signature", &s, &m]);
    let out = openssl_output(&args);
    let ok = out.status.success();
    assert_eq!(
        ok,
        String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "openssl exit status and output disagree"
    );
    ok
}

/// `openssl genpkey` with `args`, converted to PKCS#8 DER (genpkey's own
/// DER output is the traditional PKCS#1/SEC1 form) as the AWS import
/// documentation does; returns the DER path.
fn openssl_pkcs8_der(dir: &Scratch, name: &str, args: &[&str]) -> String {
    let pem = dir.path(&format!("{name}.pem"));
    let der = dir.path(&format!("{name}.der"));
    let mut a = vec!["genpkey"];
    a.extend(args);
    a.extend(["-out", &pem]);
    openssl(&a);
    openssl(&[
        "pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER", "-out", &der,
    ]);
    der
}

const MESSAGE: &[u8] = b"keyvol signs this; openssl checks it.\n";

// ---------------------------------------------------------------- RSA-OAEP

fn oaep_md(alg: EncryptionAlgorithmSpec) -> &'static str {
    match alg {
        EncryptionAlgorithmSpec::RsaesOaepSha1 => "sha1",
        _ => "sha256",
    }
}

/// openssl encrypts to keyvol's public key, keyvol decrypts; keyvol
/// encrypts, openssl decrypts with the PKCS#8 private key. Plaintexts are
/// exactly the AWS maximum length.
fn oaep_round_trips_with_openssl(spec: KeySpec) {
    let key = rsa(spec);
    let dir = Scratch::new();
    let pub_der = dir.write("pub.der", key.public_key_der().unwrap());
    let priv_pem = dir.private_pem("priv", key.material());
    for alg in [
        EncryptionAlgorithmSpec::RsaesOaepSha1,
        EncryptionAlgorithmSpec::RsaesOaepSha256,
    ] {
        let max = alg.max_plaintext_len(spec).unwrap();
        let plaintext: Vec<u8> = (0..max).map(|i| (i * 7 + 3) as u8).collect();
        let md = oaep_md(alg);
        let oaep_opts = [
            "-pkeyopt".to_string(),
            "rsa_padding_mode:oaep".to_string(),
            "-pkeyopt".to_string(),
            format!("rsa_oaep_md:{md}"),
            "-pkeyopt".to_string(),
            format!("rsa_mgf1_md:{md}"),
        ];
        let oaep_opts: Vec<&str> = oaep_opts.iter().map(String::as_str).collect();

        let pt = dir.write("pt.bin", &plaintext);
        let ct = dir.path("ct.bin");
        let mut args = vec![
            "pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey", &pub_der, "-in", &pt,
            "-out", &ct,
        ];
        args.extend(&oaep_opts);
        openssl(&args);
        let ciphertext = dir.read("ct.bin");
        assert_eq!(ciphertext.len(), spec.rsa_bits().unwrap() / 8);
        let back = asym::decrypt(key, alg, &ciphertext).unwrap();
        assert_eq!(back.expose(), &plaintext[..], "{spec} {alg}");

        let ours = asym::encrypt(key, alg, &plaintext).unwrap();
        let ct2 = dir.write("ct2.bin", &ours);
        let pt2 = dir.path("pt2.bin");
        let mut args = vec![
            "pkeyutl", "-decrypt", "-inkey", &priv_pem, "-in", &ct2, "-out", &pt2,
        ];
        args.extend(&oaep_opts);
        openssl(&args);
        assert_eq!(dir.read("pt2.bin"), plaintext, "{spec} {alg}");

        // One byte over the AWS limit is refused with a ValidationException.
        let over = vec![1u8; max + 1];
        let err = asym::encrypt(key, alg, &over).unwrap_err();
        assert!(matches!(err, AsymError::PlaintextTooLong { .. }), "{err}");
        let kms = KmsError::from(err);
        assert_eq!(kms.code, ErrorCode::ValidationException);
        assert!(
            kms.message.contains(&format!("at most {max} bytes")),
            "{}",
            kms.message
        );
    }
}

#[test]
fn rsa_2048_oaep_interop() {
    oaep_round_trips_with_openssl(KeySpec::Rsa2048);
}

#[test]
fn rsa_3072_oaep_interop() {
    oaep_round_trips_with_openssl(KeySpec::Rsa3072);
}

#[test]
fn rsa_decrypt_failures_are_opaque() {
    let key = rsa(KeySpec::Rsa2048);
    let alg = EncryptionAlgorithmSpec::RsaesOaepSha256;
    let mut ct = asym::encrypt(key, alg, b"secret").unwrap();
    // Decrypting with the other OAEP hash fails.
    let wrong_hash = asym::decrypt(key, EncryptionAlgorithmSpec::RsaesOaepSha1, &ct).unwrap_err();
    ct[100] ^= 1;
    let tampered = asym::decrypt(key, alg, &ct).unwrap_err();
    let short = asym::decrypt(key, alg, &ct[1..]).unwrap_err();
    for err in [wrong_hash, tampered, short] {
        assert_eq!(err, AsymError::InvalidCiphertext);
        assert_eq!(KmsError::from(err), KmsError::invalid_ciphertext());
    }
    // SYMMETRIC_DEFAULT is not an RSA algorithm.
    let err = asym::encrypt(key, EncryptionAlgorithmSpec::SymmetricDefault, b"x").unwrap_err();
    assert_eq!(
        KmsError::from(err).code,
        ErrorCode::InvalidKeyUsageException
    );
}

// ---------------------------------------------------------------- signing

#[test]
fn rsa_2048_signatures_verify_with_openssl() {
    let key = rsa(KeySpec::Rsa2048);
    let dir = Scratch::new();
    let pub_pem = dir.public_pem("pub", key.public_key_der().unwrap());
    assert_eq!(KeySpec::Rsa2048.signing_algorithms().len(), 6);
    for &alg in KeySpec::Rsa2048.signing_algorithms() {
        let sig = asym::sign(key, alg, MessageType::Raw, MESSAGE).unwrap();
        assert_eq!(sig.len(), 256);
        assert!(
            openssl_verifies_raw(&dir, &pub_pem, alg, MESSAGE, &sig),
            "{alg}"
        );
        assert!(asym::verify(key, alg, MessageType::Raw, MESSAGE, &sig).unwrap());
        // A tampered signature fails on both sides, without an error.
        let mut bad = sig.clone();
        bad[200] ^= 0x80;
        assert!(
            !openssl_verifies_raw(&dir, &pub_pem, alg, MESSAGE, &bad),
            "{alg}"
        );
        assert!(!asym::verify(key, alg, MessageType::Raw, MESSAGE, &bad).unwrap());
        assert!(!asym::verify(key, alg, MessageType::Raw, MESSAGE, &sig[..255]).unwrap());
        assert!(!asym::verify(key, alg, MessageType::Raw, MESSAGE, b"").unwrap());
    }
}

#[test]
fn rsa_3072_signatures_verify_with_openssl() {
    let key = rsa(KeySpec::Rsa3072);
    let dir = Scratch::new();
    let pub_pem = dir.public_pem("pub", key.public_key_der().unwrap());
    for alg in [
        SigningAlgorithmSpec::RsassaPssSha384,
        SigningAlgorithmSpec::RsassaPkcs1V15Sha512,
    ] {
        let sig = asym::sign(key, alg, MessageType::Raw, MESSAGE).unwrap();
        assert_eq!(sig.len(), 384);
        assert!(
            openssl_verifies_raw(&dir, &pub_pem, alg, MESSAGE, &sig),
            "{alg}"
        );
    }
}

/// The one RSA_4096 test: generation dominates its time.
#[test]
fn rsa_4096_signs_and_encrypts_with_openssl() {
    let key = rsa(KeySpec::Rsa4096);
    let dir = Scratch::new();
    let pub_pem = dir.public_pem("pub", key.public_key_der().unwrap());
    let alg = SigningAlgorithmSpec::RsassaPssSha512;
    let sig = asym::sign(key, alg, MessageType::Raw, MESSAGE).unwrap();
    assert_eq!(sig.len(), 512);
    assert!(openssl_verifies_raw(&dir, &pub_pem, alg, MESSAGE, &sig));
    oaep_round_trips_with_openssl(KeySpec::Rsa4096);
}

#[test]
fn ecdsa_signatures_verify_with_openssl_on_each_curve() {
    let dir = Scratch::new();
    for spec in [
        KeySpec::EccNistP256,
        KeySpec::EccNistP384,
        KeySpec::EccNistP521,
        KeySpec::EccSecgP256k1,
    ] {
        let key = PrivateKeyMaterial::generate(spec).unwrap();
        let pub_pem = dir.public_pem("pub", key.public_key_der().unwrap());
        let text =
            String::from_utf8(openssl(&["pkey", "-pubin", "-in", &pub_pem, "-text"])).unwrap();
        let curve = match spec {
            KeySpec::EccNistP256 => "prime256v1",
            KeySpec::EccNistP384 => "secp384r1",
            KeySpec::EccNistP521 => "secp521r1",
            _ => "secp256k1",
        };
        assert!(text.contains(curve), "{spec}: {text}");
        let algs = spec.signing_algorithms();
        assert_eq!(algs.len(), 1);
        let alg = algs[0];
        for i in 0..4u8 {
            let msg = [MESSAGE, &[i]].concat();
            let sig = asym::sign(&key, alg, MessageType::Raw, &msg).unwrap();
            assert!(
                openssl_verifies_raw(&dir, &pub_pem, alg, &msg, &sig),
                "{spec}"
            );
            let mut bad = sig.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 1;
            assert!(!asym::verify(&key, alg, MessageType::Raw, &msg, &bad).unwrap());
            assert!(
                !openssl_verifies_raw(&dir, &pub_pem, alg, &msg, &bad),
                "{spec}"
            );
        }
    }
}

#[test]
fn ed25519_signatures_verify_with_openssl() {
    let dir = Scratch::new();
    let key = PrivateKeyMaterial::generate(KeySpec::EccNistEdwards25519).unwrap();
    let pub_pem = dir.public_pem("pub", key.public_key_der().unwrap());
    let alg = SigningAlgorithmSpec::Ed25519Sha512;
    let sig = asym::sign(&key, alg, MessageType::Raw, MESSAGE).unwrap();
    let m = dir.write("msg.bin", MESSAGE);
    let s = dir.write("sig.bin", &sig);
    let args = [
        "pkeyutl", "-verify", "-pubin", "-inkey", &pub_pem, "-rawin", "-in", &m, "-sigfile", &s,
    ];
    let out = openssl(&args);
    assert!(String::from_utf8_lossy(&out).contains("Signature Verified Successfully"));
    // openssl reads the PKCS#8 private key and signs; keyvol verifies.
    let priv_pem = dir.private_pem("priv", key.material());
    let s2 = dir.path("sig2.bin");
    openssl(&[
        "pkeyutl", "-sign", "-inkey", &priv_pem, "-rawin", "-in", &m, "-out", &s2,
    ]);
    let sig2 = dir.read("sig2.bin");
    // Ed25519 is deterministic: both sides produce the same signature.
    assert_eq!(sig2, sig);
}

/// A DIGEST sign verifies with `openssl pkeyutl -verify` over the digest
/// and with `openssl dgst` over the original message.
#[test]
fn digest_signatures_verify_with_openssl() {
    let dir = Scratch::new();
    let rsa_key = rsa(KeySpec::Rsa2048);
    let p384 = PrivateKeyMaterial::generate(KeySpec::EccNistP384).unwrap();
    let cases = [
        (rsa_key, SigningAlgorithmSpec::RsassaPkcs1V15Sha256),
        (rsa_key, SigningAlgorithmSpec::RsassaPssSha384),
        (&p384, SigningAlgorithmSpec::EcdsaSha384),
    ];
    for (key, alg) in cases {
        let pub_pem = dir.public_pem("pub", key.public_key_der().unwrap());
        let digest = alg.hash().unwrap().digest(MESSAGE);
        let sig = asym::sign(key, alg, MessageType::Digest, &digest).unwrap();
        assert!(
            openssl_verifies_raw(&dir, &pub_pem, alg, MESSAGE, &sig),
            "{alg}"
        );

        let d = dir.write("digest.bin", &digest);
        let s = dir.write("sig.bin", &sig);
        let md = format!("digest:{}", &dgst_name(alg)[1..]);
        let mut args = vec![
            "pkeyutl", "-verify", "-pubin", "-inkey", &pub_pem, "-in", &d, "-sigfile", &s,
        ];
        if key.spec().rsa_bits().is_some() {
            args.extend(["-pkeyopt", &md]);
        }
        if is_pss(alg) {
            args.extend([
                "-pkeyopt",
                "rsa_padding_mode:pss",
                "-pkeyopt",
                "rsa_pss_saltlen:digest",
            ]);
        }
        let out = openssl(&args);
        assert!(String::from_utf8_lossy(&out).contains("Signature Verified Successfully"));
        // And keyvol verifies it as a RAW message too.
        assert!(asym::verify(key, alg, MessageType::Raw, MESSAGE, &sig).unwrap());
    }
}

// ---------------------------------------------------------------- data key pairs

/// openssl loads each data key pair's PKCS#8 private key, derives the same
/// public key, and signs; keyvol verifies the signature.
#[test]
fn data_key_pairs_are_usable_by_openssl() {
    let dir = Scratch::new();
    for spec in [
        DataKeyPairSpec::Rsa2048,
        DataKeyPairSpec::EccNistP256,
        DataKeyPairSpec::EccNistP384,
        DataKeyPairSpec::EccNistP521,
        DataKeyPairSpec::EccSecgP256k1,
    ] {
        let pair = asym::generate_data_key_pair(spec).unwrap();
        let priv_pem = dir.private_pem("dkp", &pair.private_key_der);
        let pub_der = dir.path("dkp_pub.der");
        openssl(&[
            "pkey", "-in", &priv_pem, "-pubout", "-outform", "DER", "-out", &pub_der,
        ]);
        assert_eq!(dir.read("dkp_pub.der"), pair.public_key_der, "{spec}");

        let key =
            PrivateKeyMaterial::from_pkcs8(spec.into(), pair.private_key_der.expose()).unwrap();
        let alg = *KeySpec::from(spec).signing_algorithms().last().unwrap();
        let m = dir.write("msg.bin", MESSAGE);
        // Several signatures so that secp256k1 sees high-S ones from openssl.
        for i in 0..8 {
            let s = dir.path(&format!("sig{i}.bin"));
            let mut args = vec!["dgst", dgst_name(alg), "-sign", &priv_pem];
            if is_pss(alg) {
                args.extend([
                    "-sigopt",
                    "rsa_padding_mode:pss",
                    "-sigopt",
                    "rsa_pss_saltlen:digest",
                ]);
            }
            args.extend(["-out", &s, &m]);
            openssl(&args);
            let sig = dir.read(&format!("sig{i}.bin"));
            assert!(
                asym::verify(&key, alg, MessageType::Raw, MESSAGE, &sig).unwrap(),
                "{spec} {alg} signature {i} from openssl"
            );
            if spec.as_str().starts_with("RSA") {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------- ECDH

#[test]
fn ecdh_matches_openssl_derive() {
    let dir = Scratch::new();
    for (spec, curve) in [
        (KeySpec::EccNistP256, "P-256"),
        (KeySpec::EccNistP384, "P-384"),
        (KeySpec::EccNistP521, "P-521"),
    ] {
        assert!(spec
            .validate_key_usage(Some(KeyUsage::KeyAgreement))
            .is_ok());
        let key = PrivateKeyMaterial::generate(spec).unwrap();
        let peer = dir.path("peer.pem");
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
            "-out",
            &peer,
        ]);
        let peer_pub = dir.path("peer_pub.der");
        openssl(&[
            "pkey", "-in", &peer, "-pubout", "-outform", "DER", "-out", &peer_pub,
        ]);
        let ours = dir.public_pem("ours", key.public_key_der().unwrap());
        let z = dir.path("z.bin");
        openssl(&[
            "pkeyutl", "-derive", "-inkey", &peer, "-peerkey", &ours, "-out", &z,
        ]);
        let secret = asym::derive_shared_secret(&key, &dir.read("peer_pub.der")).unwrap();
        assert_eq!(secret.expose(), &dir.read("z.bin")[..], "{spec}");
    }
}

#[test]
fn ecdh_refuses_a_peer_on_another_curve() {
    let dir = Scratch::new();
    let key = PrivateKeyMaterial::generate(KeySpec::EccNistP256).unwrap();
    let peer = dir.path("peer.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-out",
        &peer,
    ]);
    let peer_pub = dir.path("peer_pub.der");
    openssl(&[
        "pkey", "-in", &peer, "-pubout", "-outform", "DER", "-out", &peer_pub,
    ]);
    let err = asym::derive_shared_secret(&key, &dir.read("peer_pub.der")).unwrap_err();
    let kms = KmsError::from(err);
    assert_eq!(kms.code, ErrorCode::ValidationException);
    assert!(
        kms.message.contains("on curve ECC_NIST_P384"),
        "{}",
        kms.message
    );
    assert!(
        kms.message.contains("KeySpec ECC_NIST_P256"),
        "{}",
        kms.message
    );

    // An RSA public key is not a curve point at all.
    let rsa_pub = rsa(KeySpec::Rsa2048).public_key_der().unwrap();
    let err = asym::derive_shared_secret(&key, rsa_pub).unwrap_err();
    assert!(
        err.to_string().contains("not an elliptic curve key"),
        "{err}"
    );
}

// ---------------------------------------------------------------- HMAC

#[test]
fn hmac_matches_openssl_mac() {
    let dir = Scratch::new();
    let m = dir.write("msg.bin", MESSAGE);
    for (spec, digest) in [
        (KeySpec::Hmac224, "SHA224"),
        (KeySpec::Hmac256, "SHA256"),
        (KeySpec::Hmac384, "SHA384"),
        (KeySpec::Hmac512, "SHA512"),
    ] {
        let key = PrivateKeyMaterial::generate(spec).unwrap();
        let alg = spec.mac_algorithm().unwrap();
        let tag = asym::generate_mac(&key, alg, MESSAGE).unwrap();
        let hexkey = format!("hexkey:{}", hex::encode(key.material().expose()));
        let out = openssl(&[
            "mac", "-digest", digest, "-macopt", &hexkey, "-in", &m, "HMAC",
        ]);
        let theirs = String::from_utf8(out).unwrap().trim().to_lowercase();
        assert_eq!(hex::encode(&tag), theirs, "{spec}");
        assert!(asym::verify_mac(&key, alg, MESSAGE, &tag).unwrap());
        let mut bad = tag.clone();
        bad[0] ^= 1;
        assert!(!asym::verify_mac(&key, alg, MESSAGE, &bad).unwrap());
    }
    // Wrong algorithm for the key's spec.
    let key = PrivateKeyMaterial::generate(KeySpec::Hmac256).unwrap();
    let err = asym::generate_mac(&key, MacAlgorithmSpec::HmacSha384, MESSAGE).unwrap_err();
    assert_eq!(
        KmsError::from(err).code,
        ErrorCode::InvalidKeyUsageException
    );
}

// ---------------------------------------------------------------- import (BYOK)

fn openssl_oaep_wrap(pub_der: &str, md: &str, input: &str, out: &str) {
    openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-keyform",
        "DER",
        "-inkey",
        pub_der,
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
}

/// The AWS documentation's RSA_AES_KEY_WRAP recipe: a random AES-256 key
/// wraps the material with `openssl enc -id-aes256-wrap-pad`, RSA-OAEP
/// wraps the AES key, and the two are concatenated.
fn openssl_rsa_aes_wrap(dir: &Scratch, pub_der: &str, md: &str, material: &str) -> Vec<u8> {
    let aes = dir.path("aes-key.bin");
    openssl(&["rand", "-out", &aes, "32"]);
    let aes_hex = hex::encode(dir.read("aes-key.bin"));
    let wrapped_material = dir.path("key-material-wrapped.bin");
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
    let wrapped_aes = dir.path("aes-key-wrapped.bin");
    openssl_oaep_wrap(pub_der, md, &aes, &wrapped_aes);
    [
        dir.read("aes-key-wrapped.bin"),
        dir.read("key-material-wrapped.bin"),
    ]
    .concat()
}

#[test]
fn import_of_openssl_wrapped_material() {
    let dir = Scratch::new();
    let wrapping = asym::generate_wrapping_key(WrappingKeySpec::Rsa2048).unwrap();
    assert_eq!(wrapping.spec(), KeySpec::Rsa2048);
    let pub_der = dir.write("PublicKey.bin", wrapping.public_key_der().unwrap());

    // 32-byte symmetric material, RSAES_OAEP_SHA_1 and _SHA_256.
    let material = dir.path("PlaintextKeyMaterial.bin");
    openssl(&["rand", "-out", &material, "32"]);
    let plain = dir.read("PlaintextKeyMaterial.bin");
    for (alg, md) in [
        (AlgorithmSpec::RsaesOaepSha1, "sha1"),
        (AlgorithmSpec::RsaesOaepSha256, "sha256"),
    ] {
        let out = dir.path("EncryptedKeyMaterial.bin");
        openssl_oaep_wrap(&pub_der, md, &material, &out);
        let wrapped = dir.read("EncryptedKeyMaterial.bin");
        let got = asym::unwrap_import(&wrapping, alg, &wrapped).unwrap();
        assert_eq!(got.expose(), &plain[..], "{alg}");
        asym::validate_import_material(KeySpec::SymmetricDefault, &got).unwrap();
        // The other hash does not unwrap it.
        let other = if md == "sha1" {
            AlgorithmSpec::RsaesOaepSha256
        } else {
            AlgorithmSpec::RsaesOaepSha1
        };
        assert_eq!(
            asym::unwrap_import(&wrapping, other, &wrapped).unwrap_err(),
            AsymError::InvalidCiphertext
        );
    }

    // RSA_AES_KEY_WRAP_SHA_256 with 32-byte material, and with an
    // openssl-generated P-256 private key (PKCS#8 DER).
    let wrapped = openssl_rsa_aes_wrap(&dir, &pub_der, "sha256", &material);
    let alg = AlgorithmSpec::RsaAesKeyWrapSha256;
    let got = asym::unwrap_import(&wrapping, alg, &wrapped).unwrap();
    assert_eq!(got.expose(), &plain[..]);

    let ec_der = openssl_pkcs8_der(
        &dir,
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let ec_pub = dir.path("ec_pub.der");
    openssl(&[
        "pkey", "-inform", "DER", "-in", &ec_der, "-pubout", "-outform", "DER", "-out", &ec_pub,
    ]);
    let wrapped = openssl_rsa_aes_wrap(&dir, &pub_der, "sha256", &ec_der);
    let got = asym::unwrap_import(&wrapping, alg, &wrapped).unwrap();
    assert_eq!(got.expose(), &dir.read("ec.der")[..]);
    asym::validate_import_material(KeySpec::EccNistP256, &got).unwrap();
    let imported = PrivateKeyMaterial::load(KeySpec::EccNistP256, &got).unwrap();
    assert_eq!(
        imported.public_key_der().unwrap(),
        &dir.read("ec_pub.der")[..]
    );
    // Material of one spec cannot be imported into a key of another.
    let err = asym::validate_import_material(KeySpec::EccNistP384, &got).unwrap_err();
    assert_eq!(
        KmsError::from(err).code,
        ErrorCode::IncorrectKeyMaterialException
    );

    // Tampering with either part, or truncating, is an opaque error.
    let k = 256;
    for (i, what) in [
        (10, "RSA part"),
        (k + 3, "AES-KWP part"),
        (wrapped.len() - 1, "last byte"),
    ] {
        let mut bad = wrapped.clone();
        bad[i] ^= 1;
        let err = asym::unwrap_import(&wrapping, alg, &bad).unwrap_err();
        assert_eq!(err, AsymError::InvalidCiphertext, "{what}");
    }
    for len in [k, k + 8, wrapped.len() - 1] {
        let err = asym::unwrap_import(&wrapping, alg, &wrapped[..len]).unwrap_err();
        assert_eq!(err, AsymError::InvalidCiphertext, "truncated to {len}");
    }
}

/// RSA_AES_KEY_WRAP_SHA_1 carries an RSA private key, which is too large
/// for RSA-OAEP alone; keyvol's own wrap_for_import is read by openssl.
#[test]
fn import_of_an_rsa_private_key_with_key_wrap_sha1() {
    let dir = Scratch::new();
    let wrapping = rsa(KeySpec::Rsa2048);
    let pub_der = dir.write("PublicKey.bin", wrapping.public_key_der().unwrap());
    let rsa_der = openssl_pkcs8_der(
        &dir,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let wrapped = openssl_rsa_aes_wrap(&dir, &pub_der, "sha1", &rsa_der);
    let alg = AlgorithmSpec::RsaAesKeyWrapSha1;
    let got = asym::unwrap_import(wrapping, alg, &wrapped).unwrap();
    assert_eq!(got.expose(), &dir.read("rsa.der")[..]);
    asym::validate_import_material(KeySpec::Rsa2048, &got).unwrap();
    let err = asym::validate_import_material(KeySpec::Rsa3072, &got).unwrap_err();
    assert!(err.to_string().contains("2048 bits"), "{err}");
    // RSA-OAEP alone cannot carry it.
    let err = asym::wrap_for_import(
        wrapping.public_key_der().unwrap(),
        AlgorithmSpec::RsaesOaepSha1,
        got.expose(),
    )
    .unwrap_err();
    assert!(matches!(err, AsymError::PlaintextTooLong { .. }), "{err}");

    // keyvol's wrap, unwrapped by openssl: RSA-OAEP part then AES-KWP part.
    let ours =
        asym::wrap_for_import(wrapping.public_key_der().unwrap(), alg, got.expose()).unwrap();
    let priv_pem = dir.private_pem("wrapping", wrapping.material());
    let aes_wrapped = dir.write("aes_wrapped.bin", &ours[..256]);
    let aes = dir.path("aes.bin");
    openssl(&[
        "pkeyutl",
        "-decrypt",
        "-inkey",
        &priv_pem,
        "-in",
        &aes_wrapped,
        "-out",
        &aes,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha1",
        "-pkeyopt",
        "rsa_mgf1_md:sha1",
    ]);
    let aes_hex = hex::encode(dir.read("aes.bin"));
    let mat_wrapped = dir.write("mat_wrapped.bin", &ours[256..]);
    let mat = dir.path("mat.der");
    openssl(&[
        "enc",
        "-d",
        "-id-aes256-wrap-pad",
        "-K",
        &aes_hex,
        "-iv",
        "A65959A6",
        "-in",
        &mat_wrapped,
        "-out",
        &mat,
    ]);
    assert_eq!(dir.read("mat.der"), dir.read("rsa.der"));
}

// ---------------------------------------------------------------- negatives

#[test]
fn wrong_digest_length_is_a_validation_error() {
    let key = PrivateKeyMaterial::generate(KeySpec::EccNistP521).unwrap();
    let alg = SigningAlgorithmSpec::EcdsaSha512;
    for len in [32, 63, 65] {
        let err = asym::sign(&key, alg, MessageType::Digest, &vec![0; len]).unwrap_err();
        let kms = KmsError::from(err);
        assert_eq!(kms.code, ErrorCode::ValidationException);
        assert!(
            kms.message
                .starts_with("Digest is invalid length for algorithm ECDSA_SHA_512"),
            "{}",
            kms.message
        );
        assert!(kms
            .message
            .contains(&format!("exactly 64 bytes, got {len}")));
        let err = asym::verify(&key, alg, MessageType::Digest, &vec![0; len], &[0x30]).unwrap_err();
        assert!(matches!(err, AsymError::DigestLength { .. }));
    }
    let rsa_key = rsa(KeySpec::Rsa2048);
    let err = asym::sign(
        rsa_key,
        SigningAlgorithmSpec::RsassaPssSha256,
        MessageType::Digest,
        &[0; 48],
    )
    .unwrap_err();
    assert!(matches!(
        err,
        AsymError::DigestLength {
            expected: 32,
            actual: 48,
            ..
        }
    ));
}

#[test]
fn wrong_algorithm_for_spec_is_refused() {
    let rsa_key = rsa(KeySpec::Rsa2048);
    let p256 = PrivateKeyMaterial::generate(KeySpec::EccNistP256).unwrap();
    let k1 = PrivateKeyMaterial::generate(KeySpec::EccSecgP256k1).unwrap();
    let cases: [(&PrivateKeyMaterial, SigningAlgorithmSpec); 4] = [
        (rsa_key, SigningAlgorithmSpec::EcdsaSha256),
        (&p256, SigningAlgorithmSpec::RsassaPssSha256),
        (&p256, SigningAlgorithmSpec::EcdsaSha384),
        (&k1, SigningAlgorithmSpec::Ed25519Sha512),
    ];
    for (key, alg) in cases {
        let err = asym::sign(key, alg, MessageType::Raw, MESSAGE).unwrap_err();
        let kms = KmsError::from(err);
        assert_eq!(kms.code, ErrorCode::InvalidKeyUsageException, "{alg}");
        assert!(kms.message.contains(alg.as_str()), "{}", kms.message);
        assert!(kms.message.contains(key.spec().as_str()), "{}", kms.message);
    }
    let err = asym::encrypt(&p256, EncryptionAlgorithmSpec::RsaesOaepSha256, b"x").unwrap_err();
    assert_eq!(
        KmsError::from(err).code,
        ErrorCode::InvalidKeyUsageException
    );
    let err = asym::generate_mac(rsa_key, MacAlgorithmSpec::HmacSha256, b"x").unwrap_err();
    assert_eq!(
        KmsError::from(err).code,
        ErrorCode::InvalidKeyUsageException
    );
    let err = asym::derive_shared_secret(rsa_key, p256.public_key_der().unwrap()).unwrap_err();
    assert_eq!(
        KmsError::from(err).code,
        ErrorCode::InvalidKeyUsageException
    );

    // CreateKey's KeySpec/KeyUsage pairs.
    let err = KeySpec::Hmac256
        .validate_key_usage(Some(KeyUsage::SignVerify))
        .unwrap_err();
    let kms = KmsError::from(err);
    assert_eq!(kms.code, ErrorCode::ValidationException);
    assert!(
        kms.message.contains("[GENERATE_VERIFY_MAC]"),
        "{}",
        kms.message
    );
    let err = "ECDSA_SHA_999".parse::<SigningAlgorithmSpec>().unwrap_err();
    assert_eq!(KmsError::from(err).code, ErrorCode::ValidationException);
}

/// Keys openssl generates (PKCS#8 DER) load into keyvol with the public key
/// openssl derives; traditional SEC1 DER is refused with a hint.
#[test]
fn openssl_generated_keys_load_into_keyvol() {
    let dir = Scratch::new();
    for (spec, args) in [
        (
            KeySpec::EccNistP384,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"][..],
        ),
        (
            KeySpec::EccSecgP256k1,
            &[
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:secp256k1",
            ],
        ),
        (KeySpec::EccNistEdwards25519, &["-algorithm", "ED25519"]),
    ] {
        let der = openssl_pkcs8_der(&dir, "k", args);
        let pub_der = dir.path("k_pub.der");
        openssl(&[
            "pkey", "-inform", "DER", "-in", &der, "-pubout", "-outform", "DER", "-out", &pub_der,
        ]);
        let key = PrivateKeyMaterial::from_pkcs8(spec, &dir.read("k.der")).unwrap();
        assert_eq!(
            key.public_key_der().unwrap(),
            &dir.read("k_pub.der")[..],
            "{spec}"
        );
    }
    // genpkey's own DER is SEC1, not PKCS#8: refused with the conversion hint.
    let sec1 = dir.path("sec1.der");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-outform",
        "DER",
        "-out",
        &sec1,
    ]);
    let sec1 = SecretBytes::new(dir.read("sec1.der"));
    let err = asym::validate_import_material(KeySpec::EccNistP256, &sec1).unwrap_err();
    assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
}
