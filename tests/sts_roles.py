"""Roles and temporary credentials against `keyvol serve`, driven by boto3
and the aws CLI (tests/sts_roles.rs sets up the home and reads the report).

Each step asserts what AWS answers; the last line of stdout is a JSON
report of the steps that ran, and of the session ARNs seen.
"""

import json
import os
import subprocess
import sys

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KV_ENDPOINT"]
ACCOUNT = os.environ["KV_ACCOUNT"]
PARTNER = os.environ["KV_PARTNER"]
KEY_ID = os.environ["KV_KEY_ID"]
AWS = os.environ["KV_AWS"]
REGION = "us-east-1"
CFG = Config(retries={"max_attempts": 1})

steps = []
seen = {}


def step(name):
    steps.append(name)


def client(service, akid, secret, token=None):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=akid,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=CFG,
    )


def who(name):
    return os.environ[f"KV_{name}_AKID"], os.environ[f"KV_{name}_SECRET"]


def error_code(fn):
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", "")
    raise AssertionError("the call succeeded where an error was expected")


def role(name, account=ACCOUNT):
    return f"arn:aws:iam::{account}:role/{name}"


def session_clients(creds):
    c = creds["Credentials"]
    args = (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    return client("kms", *args), client("sts", *args)


alice_sts = client("sts", *who("ALICE"))
bob_sts = client("sts", *who("BOB"))

# 1. alice, named by the trust policy, assumes the role with a session tag.
out = alice_sts.assume_role(
    RoleArn=role("deployer"),
    RoleSessionName="build-1",
    DurationSeconds=900,
    Tags=[{"Key": "stage", "Value": "ci"}],
)
creds = out["Credentials"]
assert creds["AccessKeyId"].startswith("ASIA"), creds
assert len(creds["SessionToken"]) >= 100, "an opaque session token"
assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/build-1", out
assert out["AssumedRoleUser"]["AssumedRoleId"].startswith("AROA"), out
assert out["AssumedRoleUser"]["AssumedRoleId"].endswith(":build-1"), out
left = (creds["Expiration"] - botocore.compat.datetime.datetime.now(creds["Expiration"].tzinfo)).total_seconds()
assert 800 < left <= 900, f"the session lasts the 900 s asked for, {left} left"
step("assume-role")

kms, sts = session_clients(out)
ident = sts.get_caller_identity()
assert ident["Arn"] == out["AssumedRoleUser"]["Arn"], ident
assert ident["UserId"] == out["AssumedRoleUser"]["AssumedRoleId"], ident
assert ident["Account"] == ACCOUNT, ident
step("session-get-caller-identity")

# 2. The session acts with the role's policies: Encrypt is allowed outright,
# GenerateDataKey only with aws:PrincipalTag/team = blue (the role's tag).
blob = kms.encrypt(KeyId=KEY_ID, Plaintext=b"role data")["CiphertextBlob"]
assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"role data"
dk = kms.generate_data_key(KeyId=KEY_ID, KeySpec="AES_256")
assert len(dk["Plaintext"]) == 32
code, msg = error_code(lambda: kms.schedule_key_deletion(KeyId=KEY_ID, PendingWindowInDays=7))
assert code == "AccessDeniedException", (code, msg)
assert "assumed-role/deployer/build-1" in msg, msg
seen["session"] = out["AssumedRoleUser"]["Arn"]
step("session-uses-role-policy")

# 3. A session tag overrides the role's tag of the same key (case aside).
red = alice_sts.assume_role(
    RoleArn=role("deployer"),
    RoleSessionName="build-red",
    Tags=[{"Key": "Team", "Value": "red"}],
)
red_kms, _ = session_clients(red)
red_kms.encrypt(KeyId=KEY_ID, Plaintext=b"x")
code, _ = error_code(lambda: red_kms.generate_data_key(KeyId=KEY_ID, KeySpec="AES_256"))
assert code == "AccessDeniedException", code
step("principal-tag-from-session-overrides-role")

# 3b. A session policy narrows the session to what both it and the role
# allow, never more; what it denies is denied.
only_encrypt = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:ScheduleKeyDeletion"], "Resource": "*"}]})
narrow = alice_sts.assume_role(RoleArn=role("deployer"), RoleSessionName="narrow", Policy=only_encrypt)
nk, _ = session_clients(narrow)
blob2 = nk.encrypt(KeyId=KEY_ID, Plaintext=b"narrow")["CiphertextBlob"]
code, msg = error_code(lambda: nk.decrypt(CiphertextBlob=blob2))
assert code == "AccessDeniedException" and "no session policy allows the kms:Decrypt action" in msg, (code, msg)
# The session policy names ScheduleKeyDeletion, the role does not: refused.
code, _ = error_code(lambda: nk.schedule_key_deletion(KeyId=KEY_ID, PendingWindowInDays=7))
assert code == "AccessDeniedException", code
deny_encrypt = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
    {"Effect": "Deny", "Action": "kms:Encrypt", "Resource": "*"}]})
denying = alice_sts.assume_role(RoleArn=role("deployer"), RoleSessionName="denying", Policy=deny_encrypt)
dk2, _ = session_clients(denying)
code, msg = error_code(lambda: dk2.encrypt(KeyId=KEY_ID, Plaintext=b"x"))
assert code == "AccessDeniedException" and "explicit deny in a session policy" in msg, (code, msg)
assert dk2.decrypt(CiphertextBlob=blob2)["Plaintext"] == b"narrow"
code, _ = error_code(lambda: alice_sts.assume_role(
    RoleArn=role("deployer"), RoleSessionName="bad-policy", Policy='{"Statement": "nope"'))
assert code == "MalformedPolicyDocument", code
code, _ = error_code(lambda: alice_sts.assume_role(
    RoleArn=role("deployer"), RoleSessionName="long-policy", Policy=" " * 2049))
assert code == "ValidationError", code
step("session-policy")

# 4. Who may assume what.
code, msg = error_code(lambda: bob_sts.assume_role(RoleArn=role("deployer"), RoleSessionName="x1"))
assert code == "AccessDenied", (code, msg)
assert f"arn:aws:iam::{ACCOUNT}:user/bob" in msg and "sts:AssumeRole" in msg, msg
# The account-trusting role needs the caller's own identity policy too.
code, _ = error_code(lambda: bob_sts.assume_role(RoleArn=role("reader"), RoleSessionName="x2"))
assert code == "AccessDenied", code
alice_sts.assume_role(RoleArn=role("reader"), RoleSessionName="x3")
# A role that does not exist is refused as one that does not trust you.
code, msg2 = error_code(lambda: alice_sts.assume_role(RoleArn=role("nosuch"), RoleSessionName="x4"))
assert code == "AccessDenied", code
# The trust policy without sts:TagSession for reader: tags are refused.
code, _ = error_code(
    lambda: alice_sts.assume_role(
        RoleArn=role("reader"), RoleSessionName="x5", Tags=[{"Key": "k", "Value": "v"}]
    )
)
assert code == "AccessDenied", code
# A session of deployer may not chain into reader: its role policy does not allow it.
_, dep_sts = session_clients(out)
code, _ = error_code(lambda: dep_sts.assume_role(RoleArn=role("reader"), RoleSessionName="chain"))
assert code == "AccessDenied", code
step("trust-and-identity-decide")

# 5. Another account's root assumes a role that trusts its account.
partner_sts = client("sts", *who("PARTNER"))
p = partner_sts.assume_role(RoleArn=role("partner-access"), RoleSessionName="from-partner")
assert p["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/partner-access/from-partner", p
pk, _ = session_clients(p)
pk.describe_key(KeyId=KEY_ID)
step("cross-account-assume-role")

# 6. Bad input: STS's error names, nothing issued.
for kwargs, want in [
    (dict(RoleArn=role("deployer"), RoleSessionName="s", DurationSeconds=900), "ValidationError"),
    (dict(RoleArn=role("deployer"), RoleSessionName="ok-name", DurationSeconds=899), "ValidationError"),
    (dict(RoleArn=role("deployer"), RoleSessionName="ok-name", DurationSeconds=7200), "ValidationError"),
    (dict(RoleArn="arn:aws:iam::111122223333:user/alice", RoleSessionName="ok-name"), "ValidationError"),
    (
        dict(
            RoleArn=role("deployer"),
            RoleSessionName="ok-name",
            Tags=[{"Key": "a", "Value": "1"}, {"Key": "A", "Value": "2"}],
        ),
        "ValidationError",
    ),
]:
    try:
        alice_sts.assume_role(**kwargs)
    except ClientError as e:
        assert e.response["Error"]["Code"] == want, (kwargs, e.response)
    except botocore.exceptions.ParamValidationError:
        pass  # boto3 refused it before sending: as strict as STS.
    else:
        raise AssertionError(f"assume_role({kwargs}) succeeded")
step("validation-errors")

# 7. The token is part of the credentials: without it, with another, or
# with a long-term key, the request is refused.
c = creds
no_token = client("kms", c["AccessKeyId"], c["SecretAccessKey"])
code, _ = error_code(lambda: no_token.describe_key(KeyId=KEY_ID))
assert code == "UnrecognizedClientException", code
other_token = red["Credentials"]["SessionToken"]
wrong = client("kms", c["AccessKeyId"], c["SecretAccessKey"], other_token)
code, _ = error_code(lambda: wrong.describe_key(KeyId=KEY_ID))
assert code == "UnrecognizedClientException", code
long_term = client("kms", *who("ALICE"), c["SessionToken"])
code, _ = error_code(lambda: long_term.describe_key(KeyId=KEY_ID))
assert code == "UnrecognizedClientException", code
code, _ = error_code(lambda: client("sts", c["AccessKeyId"], c["SecretAccessKey"]).get_caller_identity())
assert code == "InvalidClientTokenId", code
step("token-required")

# 8. The aws CLI: assume-role, then the session through the standard
# environment variables.
env = dict(os.environ)
for v in ["AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_SESSION_TOKEN"]:
    env.pop(v, None)
akid, secret = who("ALICE")
env.update(
    AWS_ACCESS_KEY_ID=akid,
    AWS_SECRET_ACCESS_KEY=secret,
    AWS_DEFAULT_REGION=REGION,
    AWS_CONFIG_FILE="/dev/null",
    AWS_SHARED_CREDENTIALS_FILE="/dev/null",
)


def aws(*args, env=env):
    r = subprocess.run(
        [AWS, "--endpoint-url", ENDPOINT, "--output", "json", *args],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, f"aws {args}: {r.stderr}"
    return json.loads(r.stdout)


cli = aws("sts", "assume-role", "--role-arn", role("deployer"), "--role-session-name", "cli-session")
senv = dict(env)
senv.update(
    AWS_ACCESS_KEY_ID=cli["Credentials"]["AccessKeyId"],
    AWS_SECRET_ACCESS_KEY=cli["Credentials"]["SecretAccessKey"],
    AWS_SESSION_TOKEN=cli["Credentials"]["SessionToken"],
)
ident = aws("sts", "get-caller-identity", env=senv)
assert ident["Arn"].endswith(":assumed-role/deployer/cli-session"), ident
enc = aws("kms", "encrypt", "--key-id", KEY_ID, "--plaintext", "aGVsbG8=", env=senv)
assert enc["KeyId"].endswith(KEY_ID), enc
seen["cli_session"] = ident["Arn"]
step("aws-cli-session")

print(json.dumps({"steps": steps, "seen": seen}))
sys.stdout.flush()
