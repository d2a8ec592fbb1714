"""The aws CLI and boto3's ebs client against `keyvol serve` (driven by
tests/ebs_clients.rs): a raw ext4 image made with mkfs.ext4 is uploaded
block by block as an encrypted snapshot, restored as a keyvol volume,
mounted and compared file by file; a snapshot of a keyvol volume is
downloaded block by block to a raw image that e2fsck finds clean and whose
files match; incremental children, ListChangedBlocks, and every refusal
the EBS direct APIs owe (checksum, tokens, counts, lineage, accounts,
permissions).

Environment: KV_ENDPOINT, KV_A / KV_B (account ids), KV_A_AKID/KV_A_SECRET,
KV_B_AKID/KV_B_SECRET (account roots), KV_NOBODY_AKID/KV_NOBODY_SECRET (a
user of A with no policy), KV_READER_AKID/KV_READER_SECRET (a user of A
allowed only ebs:ListSnapshotBlocks and ebs:GetSnapshotBlock on snapshots
tagged team=db, and kms:Decrypt), KV_AWS (the aws executable), KV_BIN
(keyvol), KV_HOME, KV_MNT (an empty scratch directory), KV_RESTART (a
file: write the snapshot id into it and wait for it to be removed while
the test restarts the server). Every check raises on failure; the last
line of stdout is a JSON report of the steps run.
"""

import base64
import hashlib
import json
import os
import subprocess
import time

import boto3
import botocore.config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KV_ENDPOINT"]
A, B = os.environ["KV_A"], os.environ["KV_B"]
A_KEY = (os.environ["KV_A_AKID"], os.environ["KV_A_SECRET"])
B_KEY = (os.environ["KV_B_AKID"], os.environ["KV_B_SECRET"])
NOBODY = (os.environ["KV_NOBODY_AKID"], os.environ["KV_NOBODY_SECRET"])
READER = (os.environ["KV_READER_AKID"], os.environ["KV_READER_SECRET"])
AWS, BIN, HOME, MNT = os.environ["KV_AWS"], os.environ["KV_BIN"], os.environ["KV_HOME"], os.environ["KV_MNT"]
RESTART = os.environ["KV_RESTART"]
EAST = "us-east-1"
BLOCK = 512 * 1024

report = {"cli": [], "boto3": []}


def aws(creds, *args, expect=None):
    env = dict(os.environ)
    env.update({
        "AWS_ACCESS_KEY_ID": creds[0], "AWS_SECRET_ACCESS_KEY": creds[1],
        "AWS_DEFAULT_REGION": EAST, "AWS_PAGER": "", "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    })
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    p = subprocess.run([AWS, "--endpoint-url", ENDPOINT, "--output", "json", *args],
                       env=env, capture_output=True, text=True, timeout=300)
    if expect is not None:
        assert p.returncode != 0, f"aws {args} succeeded; expected {expect}"
        assert f"An error occurred ({expect})" in p.stderr, p.stderr
        return p.stderr
    assert p.returncode == 0, f"aws {args} failed: {p.stderr}"
    return json.loads(p.stdout) if p.stdout.strip() else {}


def keyvol(profile, *args):
    p = subprocess.run([BIN, "--home", HOME, "--profile", profile, "--region", EAST, *args],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"keyvol {args} failed: {p.stderr}"
    return p.stdout


def client(service, creds, validate=True):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name=EAST,
                        aws_access_key_id=creds[0], aws_secret_access_key=creds[1],
                        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"},
                                                      parameter_validation=validate))


def error_of(fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response.get("Reason") or e.response["Error"].get("Reason"), \
            e.response["Error"].get("Message", "")
    raise AssertionError(f"{fn.__name__}({kw}) succeeded")


def sha_b64(b):
    return base64.b64encode(hashlib.sha256(b).digest()).decode()


def linear(sums):
    h = hashlib.sha256()
    for s in sums:
        h.update(base64.b64decode(s))
    return base64.b64encode(h.digest()).decode()


def files_of(src):
    """{relative path: sha256} of a directory tree."""
    out = {}
    for d, _, files in os.walk(src):
        for f in files:
            p = os.path.join(d, f)
            if "lost+found" in p:
                continue
            with open(p, "rb") as fh:
                out[os.path.relpath(p, src)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def image_files(img, names):
    """{name: sha256} of files read out of an ext4 image with debugfs."""
    out = {}
    for n in names:
        dst = os.path.join(MNT, "dump.tmp")
        subprocess.run(["debugfs", "-R", f"dump /{n} {dst}", img], check=True, capture_output=True)
        with open(dst, "rb") as fh:
            out[n] = hashlib.sha256(fh.read()).hexdigest()
        os.remove(dst)
    return out


def make_image():
    """A 1 GiB sparse ext4 image populated from a directory (mkfs.ext4 -d)."""
    src = os.path.join(MNT, "src")
    os.makedirs(os.path.join(src, "dir", "deeper"))
    for i in range(12):
        with open(os.path.join(src, "dir", f"f{i}"), "wb") as f:
            f.write(os.urandom(3000 * (i + 1)))
    with open(os.path.join(src, "dir", "deeper", "big"), "wb") as f:
        f.write(os.urandom(5 << 20))
    with open(os.path.join(src, "hello.txt"), "w") as f:
        f.write("hello from a raw image\n")
    img = os.path.join(MNT, "disk.img")
    with open(img, "wb") as f:
        f.truncate(1 << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                    "-d", src, img], check=True, capture_output=True)
    return img, files_of(src)


def nonzero_blocks(img):
    with open(img, "rb") as f:
        i = 0
        while True:
            b = f.read(BLOCK)
            if not b:
                return
            if b.count(0) != len(b):
                yield i, b.ljust(BLOCK, b"\0")
            i += 1


def upload_with_cli(img, key_arn):
    """aws ebs start-snapshot / put-snapshot-block / complete-snapshot of the
    image's non-zero blocks; returns (snapshot id, blocks uploaded)."""
    steps = report["cli"]
    s = aws(A_KEY, "ebs", "start-snapshot", "--volume-size", "1", "--encrypted", "--kms-key-arn", key_arn,
            "--description", "raw ext4 image", "--timeout", "60", "--client-token", "upload-1",
            "--tags", "Key=team,Value=db")
    sid = s["SnapshotId"]
    assert s["Status"] == "pending" and s["BlockSize"] == BLOCK and s["KmsKeyArn"] == key_arn, s
    assert s["Tags"] == [{"Key": "team", "Value": "db"}] and s["OwnerId"] == A, s
    # A retry with the same client token is the same snapshot; another
    # request with it is a conflict.
    again = aws(A_KEY, "ebs", "start-snapshot", "--volume-size", "1", "--encrypted", "--kms-key-arn", key_arn,
                "--description", "raw ext4 image", "--timeout", "60", "--client-token", "upload-1",
                "--tags", "Key=team,Value=db")
    assert again["SnapshotId"] == sid, again
    aws(A_KEY, "ebs", "start-snapshot", "--volume-size", "2", "--client-token", "upload-1",
        expect="ConflictException")
    steps.append("start-snapshot-idempotent")
    sums = []
    path = os.path.join(MNT, "block.bin")
    blocks = list(nonzero_blocks(img))
    total = (1 << 30) // BLOCK
    assert 0 < len(blocks) < total // 4, f"{len(blocks)} of {total} blocks are non-zero"
    for n, (i, b) in enumerate(blocks):
        with open(path, "wb") as f:
            f.write(b)
        r = aws(A_KEY, "ebs", "put-snapshot-block", "--snapshot-id", sid, "--block-index", str(i),
                "--block-data", path, "--data-length", str(BLOCK), "--checksum", sha_b64(b),
                "--checksum-algorithm", "SHA256", "--progress", str(100 * (n + 1) // len(blocks)))
        assert r["Checksum"] == sha_b64(b) and r["ChecksumAlgorithm"] == "SHA256", r
        sums.append(sha_b64(b))
        if n == len(blocks) // 2:
            # The server restarts in the middle of the upload: every
            # acknowledged block must still be there afterwards.
            with open(RESTART, "w") as f:
                f.write(sid)
            deadline = time.time() + 60
            while os.path.exists(RESTART):
                assert time.time() < deadline, "the server did not restart"
                time.sleep(0.1)
            steps.append("server-restart-mid-upload")
        if n == len(blocks) - 1:
            p = aws(A_KEY, "ec2", "describe-snapshots", "--snapshot-ids", sid)["Snapshots"][0]
            assert p["State"] == "pending", p
    # A corrupted block is refused and nothing of it is stored.
    with open(path, "wb") as f:
        f.write(b"\x01" * BLOCK)
    aws(A_KEY, "ebs", "put-snapshot-block", "--snapshot-id", sid, "--block-index", "2000",
        "--block-data", path, "--data-length", str(BLOCK), "--checksum", sha_b64(b"\x02" * BLOCK),
        "--checksum-algorithm", "SHA256", expect="ValidationException")
    steps.append("checksum-mismatch-refused")
    # A wrong count or aggregate checksum changes nothing.
    aws(A_KEY, "ebs", "complete-snapshot", "--snapshot-id", sid, "--changed-blocks-count",
        str(len(blocks) + 1), expect="ValidationException")
    aws(A_KEY, "ebs", "complete-snapshot", "--snapshot-id", sid, "--changed-blocks-count",
        str(len(blocks)), "--checksum", linear(sums[::-1]), "--checksum-algorithm", "SHA256",
        "--checksum-aggregation-method", "LINEAR", expect="ValidationException")
    steps.append("complete-refusals")
    done = aws(A_KEY, "ebs", "complete-snapshot", "--snapshot-id", sid, "--changed-blocks-count",
               str(len(blocks)), "--checksum", linear(sums), "--checksum-algorithm", "SHA256",
               "--checksum-aggregation-method", "LINEAR")
    assert done["Status"] == "completed", done
    aws(A_KEY, "ec2", "wait", "snapshot-completed", "--snapshot-ids", sid)
    d = aws(A_KEY, "ec2", "describe-snapshots", "--snapshot-ids", sid)["Snapshots"][0]
    assert d["Encrypted"] is True and d["KmsKeyId"] == key_arn and d["VolumeSize"] == 1, d
    assert d["Tags"] == [{"Key": "team", "Value": "db"}], d
    steps.append("upload-image")
    # An ordinary snapshot: it copies (re-encrypted) like any other.
    c = aws(A_KEY, "ec2", "copy-snapshot", "--source-region", EAST, "--source-snapshot-id", sid,
            "--description", "copy of an upload")
    aws(A_KEY, "ec2", "wait", "snapshot-completed", "--snapshot-ids", c["SnapshotId"])
    cd = aws(A_KEY, "ec2", "describe-snapshots", "--snapshot-ids", c["SnapshotId"])["Snapshots"][0]
    assert cd["VolumeSize"] == 1 and cd["Encrypted"] is True, cd
    steps.append("copy-uploaded-snapshot")
    return sid, [i for i, _ in blocks]


def restore_and_compare(sid, want):
    steps = report["cli"]
    v = aws(A_KEY, "ec2", "create-volume", "--snapshot-id", sid, "--availability-zone", "us-east-1a")
    vol = v["VolumeId"]
    aws(A_KEY, "ec2", "wait", "volume-available", "--volume-ids", vol)
    mnt = os.path.join(MNT, "restored")
    keyvol("a", "volume", "mount", vol, mnt)
    try:
        got = files_of(mnt)
        assert got == want, f"restored files differ: {sorted(set(got.items()) ^ set(want.items()))[:5]}"
        # A file written on the keyvol volume, for the download below.
        with open(os.path.join(mnt, "written-on-keyvol"), "wb") as f:
            f.write(os.urandom(700_000))
        os.sync()
        want = files_of(mnt)
    finally:
        keyvol("a", "volume", "unmount", mnt)
    steps.append("restore-mount-compare")
    return vol, want


def download_with_cli(vol, want):
    """aws ec2 create-snapshot of the keyvol volume, then every block with
    aws ebs list-snapshot-blocks / get-snapshot-block into a raw image."""
    steps = report["cli"]
    s = aws(A_KEY, "ec2", "create-snapshot", "--volume-id", vol, "--description", "to download",
            "--tag-specifications", "ResourceType=snapshot,Tags=[{Key=team,Value=db}]")
    sid = s["SnapshotId"]
    aws(A_KEY, "ec2", "wait", "snapshot-completed", "--snapshot-ids", sid)
    blocks, token = [], None
    while True:
        args = ["ebs", "list-snapshot-blocks", "--snapshot-id", sid, "--max-results", "100"]
        if token:
            args += ["--next-token", token]
        page = aws(A_KEY, *args)
        assert page["BlockSize"] == BLOCK and page["VolumeSize"] == 1, page
        blocks += page["Blocks"]
        token = page.get("NextToken")
        if not token:
            break
    assert len(blocks) > 0
    img = os.path.join(MNT, "downloaded.img")
    with open(img, "wb") as f:
        f.truncate(1 << 30)
    out = os.path.join(MNT, "got.bin")
    with open(img, "r+b") as f:
        for b in blocks:
            r = aws(A_KEY, "ebs", "get-snapshot-block", "--snapshot-id", sid, "--block-index",
                    str(b["BlockIndex"]), "--block-token", b["BlockToken"], out)
            with open(out, "rb") as g:
                data = g.read()
            assert r["DataLength"] == BLOCK == len(data) and r["Checksum"] == sha_b64(data), r
            f.seek(b["BlockIndex"] * BLOCK)
            f.write(data)
    fsck = subprocess.run(["e2fsck", "-fn", img], capture_output=True, text=True)
    assert fsck.returncode == 0, f"e2fsck -fn of the downloaded image: {fsck.stdout}{fsck.stderr}"
    got = image_files(img, sorted(want))
    assert got == want, f"downloaded files differ: {sorted(set(got.items()) ^ set(want.items()))[:5]}"
    steps.append("download-image-fsck-compare")
    # A token is good for its own block only.
    b0, b1 = blocks[0], blocks[1]
    aws(A_KEY, "ebs", "get-snapshot-block", "--snapshot-id", sid, "--block-index", str(b1["BlockIndex"]),
        "--block-token", b0["BlockToken"], out, expect="ValidationException")
    forged = base64.b64encode(b"\xff" * 8 + base64.b64decode(b0["BlockToken"])[8:]).decode()
    aws(A_KEY, "ebs", "get-snapshot-block", "--snapshot-id", sid, "--block-index", str(b0["BlockIndex"]),
        "--block-token", forged, out, expect="ValidationException")
    steps.append("wrong-token-refused")
    return sid


def with_boto3(image_snap, image_blocks, volume_snap, key_arn):
    steps = report["boto3"]
    ebs = client("ebs", A_KEY)
    # A sparse upload: only the non-zero blocks are sent and listed.
    data = {3: os.urandom(BLOCK), 9: os.urandom(BLOCK), 10: os.urandom(BLOCK)}
    s = ebs.start_snapshot(VolumeSize=2, Description="boto3", Tags=[{"Key": "team", "Value": "db"}])
    sid = s["SnapshotId"]
    for i, b in data.items():
        ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=b, DataLength=BLOCK,
                               Checksum=sha_b64(b), ChecksumAlgorithm="SHA256")
    # Beyond the volume's end.
    code, reason, _ = error_of(ebs.put_snapshot_block, SnapshotId=sid, BlockIndex=4096, BlockData=data[3],
                               DataLength=BLOCK, Checksum=sha_b64(data[3]), ChecksumAlgorithm="SHA256")
    assert code == "ValidationException", code
    # Reading a pending snapshot is refused.
    assert error_of(ebs.list_snapshot_blocks, SnapshotId=sid)[0] == "ValidationException"
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=3, Checksum=linear(sha_b64(data[i]) for i in sorted(data)),
                          ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    listed = ebs.list_snapshot_blocks(SnapshotId=sid)
    assert [b["BlockIndex"] for b in listed["Blocks"]] == sorted(data), listed
    assert listed["VolumeSize"] == 2 and listed["BlockSize"] == BLOCK, listed
    for b in listed["Blocks"]:
        r = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"])
        body = r["BlockData"].read()
        assert body == data[b["BlockIndex"]] and r["Checksum"] == sha_b64(body), b["BlockIndex"]
    steps.append("sparse-upload-download")
    # An incremental child: two blocks change, one is zeroed.
    child = ebs.start_snapshot(VolumeSize=2, ParentSnapshotId=sid, Description="child")
    assert child["ParentSnapshotId"] == sid and child["KmsKeyArn"] == s["KmsKeyArn"], child
    new9, new20 = os.urandom(BLOCK), os.urandom(BLOCK)
    for i, b in [(9, new9), (20, new20), (3, b"\0" * BLOCK)]:
        ebs.put_snapshot_block(SnapshotId=child["SnapshotId"], BlockIndex=i, BlockData=b, DataLength=BLOCK,
                               Checksum=sha_b64(b), ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=child["SnapshotId"], ChangedBlocksCount=3)
    ch = ebs.list_changed_blocks(FirstSnapshotId=sid, SecondSnapshotId=child["SnapshotId"])
    got = {b["BlockIndex"]: ("FirstBlockToken" in b, "SecondBlockToken" in b) for b in ch["ChangedBlocks"]}
    assert got == {3: (True, False), 9: (True, True), 20: (False, True)}, got
    second = [b for b in ch["ChangedBlocks"] if b["BlockIndex"] == 9][0]
    r = ebs.get_snapshot_block(SnapshotId=child["SnapshotId"], BlockIndex=9, BlockToken=second["SecondBlockToken"])
    assert r["BlockData"].read() == new9
    r = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=9, BlockToken=second["FirstBlockToken"])
    assert r["BlockData"].read() == data[9]
    # Unchanged block 10 comes from the parent.
    kids = {b["BlockIndex"]: b["BlockToken"] for b in ebs.list_snapshot_blocks(SnapshotId=child["SnapshotId"])["Blocks"]}
    assert sorted(kids) == [9, 10, 20], kids
    assert ebs.get_snapshot_block(SnapshotId=child["SnapshotId"], BlockIndex=10,
                                  BlockToken=kids[10])["BlockData"].read() == data[10]
    # A token of the parent's block does not read the child's.
    parent_tokens = {b["BlockIndex"]: b["BlockToken"] for b in listed["Blocks"]}
    assert error_of(ebs.get_snapshot_block, SnapshotId=child["SnapshotId"], BlockIndex=10,
                    BlockToken=parent_tokens[10])[0] == "ValidationException"
    steps.append("incremental-child-changed-blocks")
    # Pagination of ListChangedBlocks, and lineages.
    seen, token, pages = [], None, 0
    while True:
        kw = {"NextToken": token} if token else {}
        page = ebs.list_snapshot_blocks(SnapshotId=image_snap, MaxResults=100, **kw)
        seen += [b["BlockIndex"] for b in page["Blocks"]]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert seen == sorted(image_blocks), (len(seen), len(image_blocks))
    assert pages == (len(image_blocks) + 99) // 100, pages
    # From a starting block index on.
    tail = ebs.list_snapshot_blocks(SnapshotId=image_snap, StartingBlockIndex=seen[len(seen) // 2])
    assert [b["BlockIndex"] for b in tail["Blocks"]] == seen[len(seen) // 2:], tail
    code, reason, _ = error_of(ebs.list_changed_blocks, FirstSnapshotId=sid, SecondSnapshotId=volume_snap)
    assert (code, reason) == ("ValidationException", "UNRELATED_SNAPSHOTS"), (code, reason)
    code, reason, _ = error_of(ebs.list_snapshot_blocks, SnapshotId=sid, NextToken="Z2FyYmFnZQ==")
    assert (code, reason) == ("ValidationException", "INVALID_PAGE_TOKEN"), (code, reason)
    steps.append("pagination-lineage")
    # Other accounts and principals.
    bebs = client("ebs", B_KEY)
    code, reason, _ = error_of(bebs.list_snapshot_blocks, SnapshotId=sid)
    assert (code, reason) == ("ResourceNotFoundException", "SNAPSHOT_NOT_FOUND"), (code, reason)
    tok = listed["Blocks"][0]
    assert error_of(bebs.get_snapshot_block, SnapshotId=sid, BlockIndex=tok["BlockIndex"],
                    BlockToken=tok["BlockToken"])[0] == "ResourceNotFoundException"
    pend = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    assert error_of(bebs.put_snapshot_block, SnapshotId=pend, BlockIndex=0, BlockData=data[3], DataLength=BLOCK,
                    Checksum=sha_b64(data[3]), ChecksumAlgorithm="SHA256")[0] == "ResourceNotFoundException"
    assert error_of(bebs.complete_snapshot, SnapshotId=pend, ChangedBlocksCount=0)[0] == "ResourceNotFoundException"
    assert error_of(bebs.start_snapshot, VolumeSize=1, ParentSnapshotId=sid)[0] == "ResourceNotFoundException"
    steps.append("foreign-account-refused")
    nobody = client("ebs", NOBODY)
    code, reason, msg = error_of(nobody.start_snapshot, VolumeSize=1)
    assert (code, reason) == ("AccessDeniedException", "UNAUTHORIZED_ACCOUNT") and "ebs:StartSnapshot" in msg, msg
    assert error_of(nobody.list_snapshot_blocks, SnapshotId=sid)[0] == "AccessDeniedException"
    assert error_of(nobody.put_snapshot_block, SnapshotId=pend, BlockIndex=0, BlockData=data[3], DataLength=BLOCK,
                    Checksum=sha_b64(data[3]), ChecksumAlgorithm="SHA256")[0] == "AccessDeniedException"
    # The reader may read snapshots tagged team=db, nothing else.
    reader = client("ebs", READER)
    lb = reader.list_snapshot_blocks(SnapshotId=sid)["Blocks"]
    assert reader.get_snapshot_block(SnapshotId=sid, BlockIndex=lb[0]["BlockIndex"],
                                     BlockToken=lb[0]["BlockToken"])["BlockData"].read() == data[lb[0]["BlockIndex"]]
    assert error_of(reader.list_snapshot_blocks, SnapshotId=child["SnapshotId"])[0] == "AccessDeniedException"
    assert error_of(reader.start_snapshot, VolumeSize=1)[0] == "AccessDeniedException"
    steps.append("permissions")
    # Parameters EBS refuses (sent past boto3's own validation).
    unchecked = client("ebs", A_KEY, validate=False)
    for kw, reason in [
        ({"VolumeSize": 0}, "INVALID_VOLUME_SIZE"),
        ({"VolumeSize": 1, "Timeout": 5}, "INVALID_PARAMETER_VALUE"),
        ({"VolumeSize": 1, "ParentSnapshotId": sid, "Encrypted": True}, "INVALID_PARAMETER_VALUE"),
        ({"VolumeSize": 1, "KmsKeyArn": "alias/aws/ebs"}, "INVALID_CUSTOMER_KEY"),
        ({"VolumeSize": 1, "Encrypted": False}, "INVALID_PARAMETER_VALUE"),
    ]:
        code, got, _ = error_of(unchecked.start_snapshot, **kw)
        assert (code, got) == ("ValidationException", reason), (kw, code, got)
    steps.append("start-refusals")
    # An abandoned upload can be deleted through EC2.
    client("ec2", A_KEY).delete_snapshot(SnapshotId=pend)
    assert error_of(ebs.put_snapshot_block, SnapshotId=pend, BlockIndex=0, BlockData=data[3], DataLength=BLOCK,
                    Checksum=sha_b64(data[3]), ChecksumAlgorithm="SHA256")[0] == "ResourceNotFoundException"
    steps.append("delete-pending-upload")


def main():
    key_arn = aws(A_KEY, "kms", "create-key", "--description", "direct API uploads")["KeyMetadata"]["Arn"]
    img, want = make_image()
    image_snap, image_blocks = upload_with_cli(img, key_arn)
    vol, want = restore_and_compare(image_snap, want)
    volume_snap = download_with_cli(vol, want)
    with_boto3(image_snap, image_blocks, volume_snap, key_arn)
    print(json.dumps(report))


main()
