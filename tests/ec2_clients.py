"""The aws CLI and boto3's ec2 client against `keyvol serve` (driven by
tests/ec2_clients.rs): volumes and snapshots through the EC2 API, mounted
with the keyvol CLI, shared with account B, copied by B into another region
under B's key, restored and compared file by file.

Environment: KV_ENDPOINT, KV_A / KV_B (account ids), KV_A_AKID/KV_A_SECRET,
KV_B_AKID/KV_B_SECRET (account roots), KV_NOBODY_AKID/KV_NOBODY_SECRET (a
user of A with no policy), KV_OPS_AKID/KV_OPS_SECRET (a user of A allowed
ec2:* and nothing of the KMS), KV_AWS (the aws executable), KV_BIN (keyvol),
KV_HOME, KV_MNT (an empty scratch directory). Every check raises on
failure; the last line of stdout is a JSON report of the steps run.
"""

import base64
import hashlib
import json
import os
import subprocess

import boto3
import botocore.config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KV_ENDPOINT"]
A, B = os.environ["KV_A"], os.environ["KV_B"]
A_KEY = (os.environ["KV_A_AKID"], os.environ["KV_A_SECRET"])
B_KEY = (os.environ["KV_B_AKID"], os.environ["KV_B_SECRET"])
NOBODY = (os.environ["KV_NOBODY_AKID"], os.environ["KV_NOBODY_SECRET"])
OPS = (os.environ["KV_OPS_AKID"], os.environ["KV_OPS_SECRET"])
AWS, BIN, HOME, MNT = os.environ["KV_AWS"], os.environ["KV_BIN"], os.environ["KV_HOME"], os.environ["KV_MNT"]
EAST, WEST = "us-east-1", "us-west-2"

report = {"cli": [], "boto3": []}


def aws(creds, region, *args, expect=None):
    env = dict(os.environ)
    env.update({
        "AWS_ACCESS_KEY_ID": creds[0], "AWS_SECRET_ACCESS_KEY": creds[1],
        "AWS_DEFAULT_REGION": region, "AWS_PAGER": "",
        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    })
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    p = subprocess.run([AWS, "--endpoint-url", ENDPOINT, "--output", "json", *args],
                       env=env, capture_output=True, text=True, timeout=300)
    if expect is not None:
        assert p.returncode != 0, f"aws {args} succeeded; expected {expect}"
        assert f"An error occurred ({expect})" in p.stderr, p.stderr
        return None
    assert p.returncode == 0, f"aws {args} failed: {p.stderr}"
    return json.loads(p.stdout) if p.stdout.strip() else {}


def keyvol(profile, region, *args):
    p = subprocess.run([BIN, "--home", HOME, "--profile", profile, "--region", region, *args],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"keyvol {args} failed: {p.stderr}"
    return p.stdout


def ec2(creds, region):
    return boto3.client("ec2", endpoint_url=ENDPOINT, region_name=region,
                        aws_access_key_id=creds[0], aws_secret_access_key=creds[1],
                        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}))


def code_of(fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{fn.__name__}({kw}) succeeded")


def tree_digest(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if "lost+found" in p:
                continue
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def story():
    """create-volume -> mount, write -> create-snapshot -> share -> B copies
    to us-west-2 under its key -> B restores -> mount -> same files."""
    steps = report["cli"]
    who = aws(A_KEY, EAST, "sts", "get-caller-identity")
    assert who["Account"] == A, who
    steps.append("sts-get-caller-identity")
    v = aws(A_KEY, EAST, "ec2", "create-volume", "--size", "1", "--availability-zone", "us-east-1a",
            "--volume-type", "gp3", "--iops", "4000", "--encrypted",
            "--tag-specifications", "ResourceType=volume,Tags=[{Key=team,Value=db}]")
    vol = v["VolumeId"]
    assert v["Encrypted"] is True and v["Iops"] == 4000 and v["Tags"] == [{"Key": "team", "Value": "db"}], v
    aws(A_KEY, EAST, "ec2", "wait", "volume-available", "--volume-ids", vol)
    steps.append("create-volume")
    mnt = os.path.join(MNT, "a")
    keyvol("a", EAST, "volume", "mount", vol, mnt)
    try:
        os.makedirs(os.path.join(mnt, "dir"))
        for i in range(20):
            with open(os.path.join(mnt, "dir", f"f{i}"), "wb") as f:
                f.write(os.urandom(1000 * (i + 1)))
        with open(os.path.join(mnt, "big"), "wb") as f:
            f.write(os.urandom(3 << 20))
        os.sync()
        want = tree_digest(mnt)
        d = aws(A_KEY, EAST, "ec2", "describe-volumes", "--volume-ids", vol)["Volumes"][0]
        assert d["State"] == "in-use" and d["Attachments"][0]["State"] == "attached", d
        steps.append("mounted-in-use")
        # A CMK that B may use, as sharing needs.
        pol = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{A}:root"}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{B}:root"},
             "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant", "kms:ReEncrypt*", "kms:GenerateDataKey*"],
             "Resource": "*"}]})
        cmk = aws(A_KEY, EAST, "kms", "create-key", "--policy", pol)["KeyMetadata"]["Arn"]
        v2 = aws(A_KEY, EAST, "ec2", "create-volume", "--size", "1", "--availability-zone", "us-east-1b",
                 "--encrypted", "--kms-key-id", cmk)
        assert v2["KmsKeyId"] == cmk, v2
        aws(A_KEY, EAST, "ec2", "delete-volume", "--volume-id", v2["VolumeId"])
        steps.append("create-volume-kms-key-id")
    finally:
        keyvol("a", EAST, "volume", "unmount", mnt)
    # The volume under the shareable key: restore A's data into it? Simpler:
    # snapshot the original volume (aws/ebs cannot be shared), so copy it
    # first under the CMK in A's own region.
    s = aws(A_KEY, EAST, "ec2", "create-snapshot", "--volume-id", vol, "--description", "story",
            "--tag-specifications", "ResourceType=snapshot,Tags=[{Key=stage,Value=one}]")
    assert s["State"] in ("pending", "completed") and s["VolumeId"] == vol, s
    aws(A_KEY, EAST, "ec2", "wait", "snapshot-completed", "--snapshot-ids", s["SnapshotId"])
    steps.append("create-snapshot-wait")
    c = aws(A_KEY, EAST, "ec2", "copy-snapshot", "--source-region", EAST, "--source-snapshot-id",
            s["SnapshotId"], "--encrypted", "--kms-key-id", cmk, "--description", "shareable")
    shareable = c["SnapshotId"]
    ec2(A_KEY, EAST).get_waiter("snapshot_completed").wait(
        SnapshotIds=[shareable], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    aws(A_KEY, EAST, "ec2", "modify-snapshot-attribute", "--snapshot-id", s["SnapshotId"],
        "--attribute", "createVolumePermission", "--operation-type", "add", "--user-ids", B,
        expect="OperationNotPermitted")
    aws(A_KEY, EAST, "ec2", "modify-snapshot-attribute", "--snapshot-id", shareable,
        "--attribute", "createVolumePermission", "--operation-type", "add", "--user-ids", B)
    attr = aws(A_KEY, EAST, "ec2", "describe-snapshot-attribute", "--snapshot-id", shareable,
               "--attribute", "createVolumePermission")
    assert attr["CreateVolumePermissions"] == [{"UserId": B}], attr
    steps.append("share")
    seen = aws(B_KEY, EAST, "ec2", "describe-snapshots", "--restorable-by-user-ids", "self")["Snapshots"]
    assert [x["SnapshotId"] for x in seen] == [shareable], seen
    assert "Tags" not in seen[0], seen
    bkey = aws(B_KEY, WEST, "kms", "create-key", "--description", "B's key in us-west-2")["KeyMetadata"]["Arn"]
    bc = aws(B_KEY, WEST, "ec2", "copy-snapshot", "--source-region", EAST, "--source-snapshot-id",
             shareable, "--encrypted", "--kms-key-id", bkey, "--description", "B's copy")
    aws(B_KEY, WEST, "ec2", "wait", "snapshot-completed", "--snapshot-ids", bc["SnapshotId"])
    copied = aws(B_KEY, WEST, "ec2", "describe-snapshots", "--snapshot-ids", bc["SnapshotId"])["Snapshots"][0]
    assert copied["OwnerId"] == B and copied["KmsKeyId"] == bkey, copied
    steps.append("cross-account-cross-region-copy")
    rv = aws(B_KEY, WEST, "ec2", "create-volume", "--snapshot-id", bc["SnapshotId"],
             "--availability-zone", "us-west-2a")
    assert rv["SnapshotId"] == bc["SnapshotId"] and rv["KmsKeyId"] == bkey, rv
    aws(B_KEY, WEST, "ec2", "wait", "volume-available", "--volume-ids", rv["VolumeId"])
    bm = os.path.join(MNT, "b")
    keyvol("b", WEST, "volume", "mount", rv["VolumeId"], bm)
    try:
        got = tree_digest(bm)
    finally:
        keyvol("b", WEST, "volume", "unmount", bm)
    assert got == want, f"restored files differ: {sorted(set(got.items()) ^ set(want.items()))[:5]}"
    steps.append("restore-mount-compare")
    # Unshared: B no longer sees it.
    aws(A_KEY, EAST, "ec2", "reset-snapshot-attribute", "--snapshot-id", shareable,
        "--attribute", "createVolumePermission")
    seen = aws(B_KEY, EAST, "ec2", "describe-snapshots", "--restorable-by-user-ids", "self")["Snapshots"]
    assert seen == [], seen
    steps.append("unshare")
    # Errors as EC2 names them.
    aws(A_KEY, EAST, "ec2", "describe-volumes", "--volume-ids", "vol-0123456789abcdef0",
        expect="InvalidVolume.NotFound")
    aws(A_KEY, EAST, "ec2", "create-volume", "--size", "1", "--availability-zone", "us-east-1a",
        "--dry-run", expect="DryRunOperation")
    aws(NOBODY, EAST, "ec2", "describe-volumes", expect="UnauthorizedOperation")
    aws(NOBODY, EAST, "ec2", "delete-volume", "--volume-id", vol, expect="UnauthorizedOperation")
    steps.append("cli-errors")
    # The attack: the volume's wrapped data key (aws/ebs) decrypted by a
    # principal directly. The key is usable only through EC2, for anyone.
    wrapped = json.loads(keyvol("a", EAST, "volume", "describe", vol))["EncryptedDataKey"]
    for creds in (A_KEY, NOBODY):
        kms = boto3.client("kms", endpoint_url=ENDPOINT, region_name=EAST,
                           aws_access_key_id=creds[0], aws_secret_access_key=creds[1])
        assert code_of(kms.decrypt, CiphertextBlob=base64.b64decode(wrapped),
                       EncryptionContext={"aws:ebs:id": vol}) == "AccessDeniedException"
    steps.append("data-key-not-for-users")


def with_boto3():
    steps = report["boto3"]
    c = ec2(A_KEY, EAST)
    made = [c.create_volume(Size=1, AvailabilityZone="us-east-1c",
                            TagSpecifications=[{"ResourceType": "volume",
                                                "Tags": [{"Key": "batch", "Value": "p"}, {"Key": "n", "Value": str(i)}]}])["VolumeId"]
            for i in range(7)]
    c.get_waiter("volume_available").wait(VolumeIds=made, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    pages = list(c.get_paginator("describe_volumes").paginate(
        Filters=[{"Name": "tag:batch", "Values": ["p"]}], PaginationConfig={"PageSize": 5}))
    ids = [v["VolumeId"] for p in pages for v in p["Volumes"]]
    assert len(pages) >= 2 and sorted(ids) == sorted(made), (len(pages), ids)
    steps.append("paginate")
    one = c.describe_volumes(Filters=[{"Name": "tag:n", "Values": ["3"]}, {"Name": "status", "Values": ["available"]}])["Volumes"]
    assert [v["VolumeId"] for v in one] == [made[3]], one
    assert one[0]["AvailabilityZone"] == "us-east-1c", one
    zoned = c.describe_volumes(Filters=[{"Name": "availability-zone", "Values": ["us-east-1c"]},
                                        {"Name": "tag:batch", "Values": ["p"]}])["Volumes"]
    assert sorted(v["VolumeId"] for v in zoned) == sorted(made), zoned
    steps.append("filters")
    c.create_tags(Resources=made[:2], Tags=[{"Key": "owner", "Value": "ops"}])
    tags = c.describe_tags(Filters=[{"Name": "key", "Values": ["owner"]}])["Tags"]
    assert sorted(t["ResourceId"] for t in tags) == sorted(made[:2]), tags
    c.delete_tags(Resources=[made[0]], Tags=[{"Key": "owner"}])
    tags = c.describe_tags(Filters=[{"Name": "key", "Values": ["owner"]}])["Tags"]
    assert [t["ResourceId"] for t in tags] == [made[1]], tags
    steps.append("tags")
    m = c.modify_volume(VolumeId=made[0], Size=2, VolumeType="io2", Iops=500)["VolumeModification"]
    assert m["TargetSize"] == 2 and m["OriginalSize"] == 1 and m["TargetVolumeType"] == "io2", m
    mods = c.describe_volumes_modifications(VolumeIds=[made[0]])["VolumesModifications"]
    assert mods[0]["ModificationState"] == "completed", mods
    v = c.describe_volumes(VolumeIds=[made[0]])["Volumes"][0]
    assert v["Size"] == 2 and v["VolumeType"] == "io2" and v["Iops"] == 500, v
    assert code_of(c.modify_volume, VolumeId=made[0], Size=1) == "InvalidParameterValue"
    steps.append("modify-volume")
    st = c.describe_volume_status(VolumeIds=[made[1]])["VolumeStatuses"][0]
    assert st["VolumeStatus"]["Status"] == "ok", st
    steps.append("volume-status")
    assert c.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False
    assert c.enable_ebs_encryption_by_default()["EbsEncryptionByDefault"] is True
    key = ec2_kms_key(A_KEY)
    assert c.modify_ebs_default_kms_key_id(KmsKeyId=key)["KmsKeyId"] == key
    assert c.get_ebs_default_kms_key_id()["KmsKeyId"] == key
    nv = c.create_volume(Size=1, AvailabilityZone="us-east-1a")
    assert nv["KmsKeyId"] == key, nv
    assert c.reset_ebs_default_kms_key_id()["KmsKeyId"].endswith(":alias/aws/ebs")
    assert code_of(c.modify_ebs_default_kms_key_id, KmsKeyId="alias/nope") == "InvalidKMSKey.NotFound"
    c.disable_ebs_encryption_by_default()
    steps.append("ebs-defaults")
    regions = [r["RegionName"] for r in c.describe_regions()["Regions"]]
    assert EAST in regions and WEST in regions, regions
    zones = [z["ZoneName"] for z in c.describe_availability_zones()["AvailabilityZones"]]
    assert zones == ["us-east-1a", "us-east-1b", "us-east-1c"], zones
    steps.append("regions-zones")
    for v in made + [nv["VolumeId"]]:
        c.delete_volume(VolumeId=v)
    assert code_of(c.describe_volumes, VolumeIds=[made[0]]) == "InvalidVolume.NotFound"
    assert code_of(c.delete_volume, VolumeId="vol-zzz") == "InvalidVolumeID.Malformed"
    assert code_of(c.create_volume, Size=1, AvailabilityZone="us-east-1a", DryRun=True) == "DryRunOperation"
    assert code_of(ec2(NOBODY, EAST).create_volume, Size=1, AvailabilityZone="us-east-1a") == "UnauthorizedOperation"
    steps.append("errors")


def attach_detach():
    """aws ec2 attach-volume / detach-volume on the control plane's own
    volume host (describe-instances names it), the waiters, the errors, and
    the attach daemon acting for the caller: its KMS call is the caller's,
    through EC2, from the caller's address."""
    steps = report["cli"]
    hosts = aws(A_KEY, EAST, "ec2", "describe-instances")["Reservations"]
    assert len(hosts) == 1 and len(hosts[0]["Instances"]) == 1, hosts
    host = hosts[0]["Instances"][0]
    iid = host["InstanceId"]
    assert host["State"]["Name"] == "running" and host["Placement"]["AvailabilityZone"] == "us-east-1a", host
    assert "BlockDeviceMappings" not in host or host["BlockDeviceMappings"] == [], host
    # Another account's volume host is another instance.
    other = aws(B_KEY, EAST, "ec2", "describe-instances")["Reservations"][0]["Instances"][0]["InstanceId"]
    assert other != iid
    v = aws(A_KEY, EAST, "ec2", "create-volume", "--size", "1", "--availability-zone", "us-east-1a",
            "--encrypted")["VolumeId"]
    aws(A_KEY, EAST, "ec2", "wait", "volume-available", "--volume-ids", v)
    att = ("--volume-id", v, "--instance-id", iid, "--device", "/dev/sdf")
    # Refusals, each before anything runs.
    aws(NOBODY, EAST, "ec2", "attach-volume", *att, expect="UnauthorizedOperation")
    aws(A_KEY, EAST, "ec2", "attach-volume", *att, "--dry-run", expect="DryRunOperation")
    aws(A_KEY, EAST, "ec2", "attach-volume", "--volume-id", v, "--instance-id", other,
        "--device", "/dev/sdf", expect="InvalidInstanceID.NotFound")
    aws(A_KEY, EAST, "ec2", "attach-volume", "--volume-id", v, "--instance-id", "i-zz",
        "--device", "/dev/sdf", expect="InvalidInstanceID.Malformed")
    aws(A_KEY, EAST, "ec2", "attach-volume", "--volume-id", v, "--instance-id", iid,
        "--device", "/dev/nvme0n1", expect="InvalidParameterValue")
    aws(B_KEY, EAST, "ec2", "attach-volume", *att, expect="InvalidVolume.NotFound")
    # The confused deputy: allowed ec2:AttachVolume, but the daemon acts as
    # this user, whose KMS permissions do not unwrap a CMK's data key.
    cmk = aws(A_KEY, EAST, "kms", "create-key", "--description", "root only")["KeyMetadata"]["Arn"]
    v_cmk = aws(A_KEY, EAST, "ec2", "create-volume", "--size", "1", "--availability-zone", "us-east-1a",
                "--encrypted", "--kms-key-id", cmk)["VolumeId"]
    aws(OPS, EAST, "ec2", "attach-volume", "--volume-id", v_cmk, "--instance-id", iid,
        "--device", "/dev/sdg", expect="AccessDeniedException")
    d = aws(A_KEY, EAST, "ec2", "describe-volumes", "--volume-ids", v, v_cmk)["Volumes"]
    assert [x["State"] for x in d] == ["available", "available"], d
    steps.append("attach-refusals")

    a = aws(OPS, EAST, "ec2", "attach-volume", *att)
    assert (a["State"], a["Device"], a["InstanceId"], a["VolumeId"]) == ("attaching", "/dev/sdf", iid, v), a
    aws(A_KEY, EAST, "ec2", "wait", "volume-in-use", "--volume-ids", v)
    d = aws(A_KEY, EAST, "ec2", "describe-volumes", "--volume-ids", v)["Volumes"][0]
    got = d["Attachments"][0]
    assert (got["Device"], got["InstanceId"], got["State"]) == ("/dev/sdf", iid, "attached"), d
    mine = aws(A_KEY, EAST, "ec2", "describe-volumes", "--filters",
               f"Name=attachment.instance-id,Values={iid}")["Volumes"]
    assert [x["VolumeId"] for x in mine] == [v], mine
    inst = aws(A_KEY, EAST, "ec2", "describe-instances", "--instance-ids", iid,
               "--filters", f"Name=block-device-mapping.volume-id,Values={v}")
    maps = inst["Reservations"][0]["Instances"][0]["BlockDeviceMappings"]
    assert maps == [{"DeviceName": "/dev/sdf", "Ebs": {"AttachTime": got["AttachTime"],
                     "DeleteOnTermination": False, "Status": "attached", "VolumeId": v}}], maps
    aws(A_KEY, EAST, "ec2", "attach-volume", *att, expect="VolumeInUse")
    v2 = aws(A_KEY, EAST, "ec2", "create-volume", "--size", "1", "--availability-zone", "us-east-1a",
             "--encrypted")["VolumeId"]
    aws(A_KEY, EAST, "ec2", "attach-volume", "--volume-id", v2, "--instance-id", iid,
        "--device", "/dev/sdf", expect="InvalidParameterValue")
    aws(A_KEY, EAST, "ec2", "delete-volume", "--volume-id", v, expect="VolumeInUse")
    # The daemon's Decrypt of the data key: the caller's, through EC2, from
    # the caller's address.
    events = json.loads(keyvol("a", EAST, "kms", "audit", "list", "--event-name", "Decrypt"))["Events"]
    ours = [e for e in events if (e.get("requestParameters") or {}).get("encryptionContext", {}).get("aws:ebs:id") == v]
    assert ours, events[-3:]
    for e in ours:
        assert e["userIdentity"]["arn"] == f"arn:aws:iam::{A}:user/ops", e
        assert e.get("invokedBy") == "ec2.amazonaws.com" and e["sourceIPAddress"] == "127.0.0.1", e
    steps.append("attach-volume-wait-in-use")

    # The device serves a file system; then detach, refused first.
    mnt = os.path.join(MNT, "attached")
    keyvol("a", EAST, "volume", "mount", v, mnt)
    try:
        with open(os.path.join(mnt, "f"), "wb") as f:
            f.write(b"attached through aws ec2" * 1000)
        os.sync()
        aws(A_KEY, EAST, "ec2", "detach-volume", "--volume-id", v, expect="VolumeInUse")
    finally:
        keyvol("a", EAST, "volume", "unmount", mnt)
    # Unmount undid the mount, not the attachment AttachVolume made.
    d = aws(A_KEY, EAST, "ec2", "describe-volumes", "--volume-ids", v)["Volumes"][0]
    assert d["State"] == "in-use" and d["Attachments"][0]["Device"] == "/dev/sdf", d
    aws(NOBODY, EAST, "ec2", "detach-volume", "--volume-id", v, expect="UnauthorizedOperation")
    aws(A_KEY, EAST, "ec2", "detach-volume", "--volume-id", v, "--device", "/dev/sdg",
        expect="InvalidAttachment.NotFound")
    dd = aws(A_KEY, EAST, "ec2", "detach-volume", "--volume-id", v, "--instance-id", iid)
    assert (dd["State"], dd["Device"], dd["InstanceId"]) == ("detaching", "/dev/sdf", iid), dd
    aws(A_KEY, EAST, "ec2", "wait", "volume-available", "--volume-ids", v)
    aws(A_KEY, EAST, "ec2", "detach-volume", "--volume-id", v, expect="IncorrectState")
    # What was written is there after the reattach.
    keyvol("a", EAST, "volume", "mount", v, mnt)
    try:
        with open(os.path.join(mnt, "f"), "rb") as f:
            assert f.read() == b"attached through aws ec2" * 1000
    finally:
        keyvol("a", EAST, "volume", "unmount", mnt)
    for x in (v, v2, v_cmk):
        aws(A_KEY, EAST, "ec2", "delete-volume", "--volume-id", x)
    steps.append("detach-volume-wait-available")


def ec2_kms_key(creds):
    kms = boto3.client("kms", endpoint_url=ENDPOINT, region_name=EAST,
                       aws_access_key_id=creds[0], aws_secret_access_key=creds[1])
    return kms.create_key(Description="EBS default")["KeyMetadata"]["Arn"]


story()
attach_detach()
with_boto3()
print(json.dumps(report))
