"""boto3 and the aws CLI against `keyvol kms serve` (driven by tests/server_clients.rs).

Environment: KV_ENDPOINT, KV_ACCOUNT, KV_ROOT_AKID/KV_ROOT_SECRET (the
account root), KV_NOBODY_AKID/KV_NOBODY_SECRET (a user without policy),
KV_SIGN_VERIFY (1 when this build has asymmetric signing keys), KV_AWS (the
aws executable). Every check raises on failure; the last line of stdout is
a JSON report of the steps each client ran.
"""

import base64
import json
import os
import subprocess
import sys
import tempfile

import boto3
import botocore.config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KV_ENDPOINT"]
ACCOUNT = os.environ["KV_ACCOUNT"]
ROOT = (os.environ["KV_ROOT_AKID"], os.environ["KV_ROOT_SECRET"])
NOBODY = (os.environ["KV_NOBODY_AKID"], os.environ["KV_NOBODY_SECRET"])
SIGN_VERIFY = os.environ.get("KV_SIGN_VERIFY") == "1"
AWS = os.environ["KV_AWS"]
REGION = "us-east-1"
NOBODY_ARN = f"arn:aws:iam::{ACCOUNT}:user/nobody"

report = {"boto3": [], "cli": []}


def client(creds, region=REGION):
    return boto3.client(
        "kms",
        endpoint_url=ENDPOINT,
        region_name=region,
        aws_access_key_id=creds[0],
        aws_secret_access_key=creds[1],
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {e}"
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e.response
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


def run_boto3():
    steps = report["boto3"]
    kms = client(ROOT)
    nobody = client(NOBODY)

    k1 = kms.create_key(Description="boto3 key")["KeyMetadata"]
    assert k1["AWSAccountId"] == ACCOUNT and k1["KeyState"] == "Enabled", k1
    # boto3 parses epoch-second timestamps into datetimes.
    assert k1["CreationDate"].year >= 2024, k1
    steps.append("create-key")
    md = kms.describe_key(KeyId=k1["KeyId"])["KeyMetadata"]
    assert md["Arn"] == k1["Arn"] and md["Description"] == "boto3 key", md
    steps.append("describe-key")

    enc = kms.encrypt(KeyId=k1["KeyId"], Plaintext=b"boto3 secret",
                      EncryptionContext={"app": "boto3"})
    assert enc["KeyId"] == k1["Arn"], enc
    dec = kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext={"app": "boto3"})
    assert dec["Plaintext"] == b"boto3 secret" and dec["KeyId"] == k1["Arn"], dec
    steps.append("encrypt-decrypt")

    k2 = kms.create_key()["KeyMetadata"]
    re = kms.re_encrypt(CiphertextBlob=enc["CiphertextBlob"],
                        SourceEncryptionContext={"app": "boto3"},
                        DestinationKeyId=k2["KeyId"])
    assert re["SourceKeyId"] == k1["Arn"] and re["KeyId"] == k2["Arn"], re
    assert kms.decrypt(CiphertextBlob=re["CiphertextBlob"])["Plaintext"] == b"boto3 secret"
    steps.append("re-encrypt")

    r1 = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    r2 = kms.create_key(KeySpec="RSA_3072", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    ct = kms.encrypt(KeyId=r1["KeyId"], Plaintext=b"rsa secret",
                     EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"]
    rr = kms.re_encrypt(CiphertextBlob=ct, SourceKeyId=r1["KeyId"],
                        SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256",
                        DestinationKeyId=r2["KeyId"],
                        DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_1")
    assert rr["KeyId"] == r2["Arn"] and rr["DestinationEncryptionAlgorithm"] == "RSAES_OAEP_SHA_1", rr
    out = kms.decrypt(CiphertextBlob=rr["CiphertextBlob"], KeyId=r2["KeyId"],
                      EncryptionAlgorithm="RSAES_OAEP_SHA_1")
    assert out["Plaintext"] == b"rsa secret", out
    steps.append("re-encrypt-rsa")

    dk = kms.generate_data_key(KeyId=k1["KeyId"], KeySpec="AES_256")
    assert len(dk["Plaintext"]) == 32, dk
    assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
    steps.append("generate-data-key")

    kms.create_alias(AliasName="alias/boto3-app", TargetKeyId=k1["KeyId"])
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    assert aliases.get("alias/boto3-app") == k1["KeyId"], aliases
    assert kms.encrypt(KeyId="alias/boto3-app", Plaintext=b"x")["KeyId"] == k1["Arn"]
    steps.append("aliases")

    kms.enable_key_rotation(KeyId=k1["KeyId"])
    assert kms.get_key_rotation_status(KeyId=k1["KeyId"])["KeyRotationEnabled"] is True
    kms.rotate_key_on_demand(KeyId=k1["KeyId"])
    rots = kms.list_key_rotations(KeyId=k1["KeyId"])["Rotations"]
    assert len(rots) == 1 and rots[0]["RotationType"] == "ON_DEMAND", rots
    assert kms.decrypt(CiphertextBlob=enc["CiphertextBlob"],
                       EncryptionContext={"app": "boto3"})["Plaintext"] == b"boto3 secret"
    steps.append("rotation")

    expect_error("AccessDeniedException", nobody.encrypt, KeyId=k1["KeyId"], Plaintext=b"x")
    steps.append("AccessDeniedException")
    policy = json.loads(kms.get_key_policy(KeyId=k1["KeyId"], PolicyName="default")["Policy"])
    policy["Statement"].append({"Sid": "Boto3Nobody", "Effect": "Allow",
                                "Principal": {"AWS": NOBODY_ARN},
                                "Action": "kms:Encrypt", "Resource": "*"})
    kms.put_key_policy(KeyId=k1["KeyId"], PolicyName="default", Policy=json.dumps(policy))
    assert "Boto3Nobody" in kms.get_key_policy(KeyId=k1["KeyId"])["Policy"]
    by_nobody = nobody.encrypt(KeyId=k1["KeyId"], Plaintext=b"nobody's")["CiphertextBlob"]
    steps.append("key-policy")

    expect_error("AccessDeniedException", nobody.decrypt, CiphertextBlob=by_nobody)
    g = kms.create_grant(KeyId=k1["KeyId"], GranteePrincipal=NOBODY_ARN, Operations=["Decrypt"])
    listed = kms.list_grants(KeyId=k1["KeyId"])["Grants"]
    assert [x["GrantId"] for x in listed] == [g["GrantId"]], listed
    assert nobody.decrypt(CiphertextBlob=by_nobody)["Plaintext"] == b"nobody's"
    kms.retire_grant(KeyId=k1["Arn"], GrantId=g["GrantId"])
    assert kms.list_grants(KeyId=k1["KeyId"])["Grants"] == []
    expect_error("AccessDeniedException", nobody.decrypt, CiphertextBlob=by_nobody)
    steps.append("grants")

    e = expect_error("NotFoundException", kms.describe_key, KeyId="alias/boto3-none")
    assert "alias/boto3-none" in e.response["Error"]["Message"], e.response
    steps.append("NotFoundException")
    expect_error("InvalidCiphertextException", kms.decrypt, CiphertextBlob=b"\x01" * 64)
    steps.append("InvalidCiphertextException")
    kms.disable_key(KeyId=k2["KeyId"])
    expect_error("DisabledException", kms.encrypt, KeyId=k2["KeyId"], Plaintext=b"x")
    steps.append("DisabledException")

    d = kms.schedule_key_deletion(KeyId=k2["KeyId"], PendingWindowInDays=7)
    assert d["KeyState"] == "PendingDeletion" and d["PendingWindowInDays"] == 7, d
    kms.cancel_key_deletion(KeyId=k2["KeyId"])
    assert kms.describe_key(KeyId=k2["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    steps.append("schedule-key-deletion")

    mrk = kms.create_key(MultiRegion=True)["KeyMetadata"]
    rep = kms.replicate_key(KeyId=mrk["KeyId"], ReplicaRegion="us-west-2")
    assert rep["ReplicaKeyMetadata"]["KeyId"] == mrk["KeyId"], rep
    west = client(ROOT, region="us-west-2")
    blob = kms.encrypt(KeyId=mrk["KeyId"], Plaintext=b"boto3 mrk")["CiphertextBlob"]
    out = west.decrypt(CiphertextBlob=blob)
    assert out["Plaintext"] == b"boto3 mrk" and out["KeyId"] == rep["ReplicaKeyMetadata"]["Arn"], out
    expect_error("AlreadyExistsException", kms.replicate_key, KeyId=mrk["KeyId"], ReplicaRegion="us-west-2")
    steps.append("multi-region")

    if SIGN_VERIFY:
        sk = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
        sig = kms.sign(KeyId=sk["KeyId"], Message=b"boto3 msg", MessageType="RAW",
                       SigningAlgorithm="ECDSA_SHA_256")["Signature"]
        ok = kms.verify(KeyId=sk["KeyId"], Message=b"boto3 msg", Signature=sig,
                        SigningAlgorithm="ECDSA_SHA_256")
        assert ok["SignatureValid"] is True, ok
        expect_error("KMSInvalidSignatureException", kms.verify, KeyId=sk["KeyId"],
                     Message=b"other msg", Signature=sig, SigningAlgorithm="ECDSA_SHA_256")
        steps.append("sign-verify")


def aws(creds, *args, expect=None, region=REGION):
    env = dict(os.environ)
    env.update({
        "AWS_ACCESS_KEY_ID": creds[0],
        "AWS_SECRET_ACCESS_KEY": creds[1],
        "AWS_DEFAULT_REGION": region,
        "AWS_PAGER": "",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    })
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    service = "kms"
    if args and args[0] == "sts":
        service, args = "sts", args[1:]
    p = subprocess.run([AWS, "--endpoint-url", ENDPOINT, "--output", "json", service, *args],
                       env=env, capture_output=True, text=True, timeout=120)
    if expect is not None:
        assert p.returncode != 0, f"aws {args} succeeded; expected {expect}"
        assert f"An error occurred ({expect})" in p.stderr, p.stderr
        return None
    assert p.returncode == 0, f"aws {args} failed: {p.stderr}"
    return json.loads(p.stdout) if p.stdout.strip() else {}


def run_cli(tmp):
    steps = report["cli"]
    k = aws(ROOT, "create-key", "--description", "aws cli key")["KeyMetadata"]
    assert k["AWSAccountId"] == ACCOUNT, k
    steps.append("create-key")

    plain = os.path.join(tmp, "plain.bin")
    with open(plain, "wb") as f:
        f.write(b"from the aws cli\x00\xff")
    enc = aws(ROOT, "encrypt", "--key-id", k["KeyId"], "--plaintext", f"fileb://{plain}",
              "--encryption-context", "tool=awscli")
    blob = os.path.join(tmp, "ct.bin")
    with open(blob, "wb") as f:
        f.write(base64.b64decode(enc["CiphertextBlob"]))
    dec = aws(ROOT, "decrypt", "--ciphertext-blob", f"fileb://{blob}",
              "--encryption-context", "tool=awscli")
    assert base64.b64decode(dec["Plaintext"]) == b"from the aws cli\x00\xff", dec
    steps.append("encrypt-decrypt")

    dk = aws(ROOT, "generate-data-key", "--key-id", k["KeyId"], "--number-of-bytes", "64")
    assert len(base64.b64decode(dk["Plaintext"])) == 64, dk
    steps.append("generate-data-key")

    aws(ROOT, "create-alias", "--alias-name", "alias/cli-app", "--target-key-id", k["KeyId"])
    names = [a["AliasName"] for a in aws(ROOT, "list-aliases", "--key-id", k["KeyId"])["Aliases"]]
    assert names == ["alias/cli-app"], names
    steps.append("aliases")

    aws(ROOT, "describe-key", "--key-id", "alias/cli-none", expect="NotFoundException")
    steps.append("NotFoundException")
    aws(NOBODY, "encrypt", "--key-id", k["KeyId"], "--plaintext", f"fileb://{plain}",
        expect="AccessDeniedException")
    steps.append("AccessDeniedException")
    # A wrong secret: the signature check fails with AWS's error name.
    wrong = ("y" if ROOT[1][0] == "x" else "x") + ROOT[1][1:]
    aws((ROOT[0], wrong), "list-keys", expect="InvalidSignatureException")
    aws(("AKIANOSUCHKEY0000000", ROOT[1]), "list-keys", expect="UnrecognizedClientException")
    steps.append("signature-errors")

    # A multi-Region key: replicated to us-west-2, the replica decrypts the
    # primary's ciphertext; the roles swap with update-primary-region.
    mrk = aws(ROOT, "create-key", "--multi-region")["KeyMetadata"]
    assert mrk["KeyId"].startswith("mrk-") and mrk["MultiRegion"] is True, mrk
    rep = aws(ROOT, "replicate-key", "--key-id", mrk["KeyId"], "--replica-region", "us-west-2")
    assert rep["ReplicaKeyMetadata"]["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA", rep
    enc = aws(ROOT, "encrypt", "--key-id", mrk["KeyId"], "--plaintext", f"fileb://{plain}")
    with open(blob, "wb") as f:
        f.write(base64.b64decode(enc["CiphertextBlob"]))
    dec = aws(ROOT, "decrypt", "--ciphertext-blob", f"fileb://{blob}", region="us-west-2")
    assert base64.b64decode(dec["Plaintext"]) == b"from the aws cli\x00\xff", dec
    assert dec["KeyId"] == rep["ReplicaKeyMetadata"]["Arn"], dec
    aws(ROOT, "update-primary-region", "--key-id", mrk["KeyId"], "--primary-region", "us-west-2")
    d = aws(ROOT, "describe-key", "--key-id", mrk["KeyId"], region="us-west-2")["KeyMetadata"]
    assert d["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY", d
    aws(ROOT, "replicate-key", "--key-id", mrk["KeyId"], "--replica-region", "eu-west-1",
        expect="UnsupportedOperationException")
    steps.append("multi-region")

    if SIGN_VERIFY:
        sk = aws(ROOT, "create-key", "--key-spec", "RSA_2048", "--key-usage", "SIGN_VERIFY")["KeyMetadata"]
        sig = aws(ROOT, "sign", "--key-id", sk["KeyId"], "--message", f"fileb://{plain}",
                  "--message-type", "RAW", "--signing-algorithm", "RSASSA_PKCS1_V1_5_SHA_256")
        sigf = os.path.join(tmp, "sig.bin")
        with open(sigf, "wb") as f:
            f.write(base64.b64decode(sig["Signature"]))
        ok = aws(ROOT, "verify", "--key-id", sk["KeyId"], "--message", f"fileb://{plain}",
                 "--signature", f"fileb://{sigf}",
                 "--signing-algorithm", "RSASSA_PKCS1_V1_5_SHA_256")
        assert ok["SignatureValid"] is True, ok
        steps.append("sign-verify")


def run_sts():
    """STS GetCallerIdentity on the same endpoint, boto3 and the aws CLI."""
    def sts(creds):
        return boto3.client(
            "sts", endpoint_url=ENDPOINT, region_name=REGION,
            aws_access_key_id=creds[0], aws_secret_access_key=creds[1],
            config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
    me = sts(ROOT).get_caller_identity()
    assert me["Account"] == ACCOUNT, me
    assert me["Arn"] == f"arn:aws:iam::{ACCOUNT}:root", me
    assert me["UserId"] == ACCOUNT, me
    nb = sts(NOBODY).get_caller_identity()
    assert nb["Arn"] == NOBODY_ARN, nb
    assert nb["UserId"].startswith("AIDA"), nb
    for creds, code in [((ROOT[0], "wrong" + ROOT[1]), "SignatureDoesNotMatch"),
                        (("AKIAIOSFODNN7EXAMPLE", "x"), "InvalidClientTokenId")]:
        try:
            sts(creds).get_caller_identity()
        except ClientError as e:
            assert e.response["Error"]["Code"] == code, e.response
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, e.response
        else:
            raise AssertionError(f"GetCallerIdentity with bad credentials succeeded ({code})")
    report["boto3"].append("sts-get-caller-identity")
    cli = aws(NOBODY, "sts", "get-caller-identity")
    nb.pop("ResponseMetadata", None)
    assert cli == nb, (cli, nb)
    aws((NOBODY[0], "bad"), "sts", "get-caller-identity", expect="SignatureDoesNotMatch")
    report["cli"].append("sts-get-caller-identity")


def main():
    run_boto3()
    run_sts()
    with tempfile.TemporaryDirectory() as tmp:
        run_cli(tmp)
    if not SIGN_VERIFY:
        print("sign/verify: PENDING (asymmetric keys are not in this build)", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
