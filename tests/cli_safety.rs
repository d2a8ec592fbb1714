//! Safety of the `keyvol` and `keyvol-snap` command lines, through the real
//! binaries: usage errors exit 252 (help and version 0); `--query` is
//! JMESPath, parsed before any request so that a bad one changes nothing;
//! `envelope decrypt` writes through a fresh 0600 temporary file and never
//! follows or reuses what someone planted; `fileb://` and `file://` read at
//! most the field's limit + 1 bytes; `keyvol-snap create --freeze` freezes
//! only the volume's own mountpoint and thaws on every way out. Tests that
//! mount need root and /dev/fuse (under CI=true a missing one is a
//! failure). `keyvol-snap` must be built (`cargo build --workspace --bins`).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

/// A home, cleaning up mounts and attachments when dropped.
struct Home {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
    volumes: Vec<String>,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
            mounts: Vec::new(),
            volumes: Vec::new(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn kv(&self, args: &[&str]) -> Output {
        keyvol(self.path(), args)
    }
    fn kv_json(&self, args: &[&str]) -> Value {
        keyvol_json(self.path(), args)
    }
    fn snap(&self, args: &[&str]) -> Output {
        Command::new(snap_bin())
            .args(args)
            .env("KEYVOL_HOME", self.path())
            .env_remove("KEYVOL_PROFILE")
            .env_remove("KEYVOL_REGION")
            .env_remove("KEYVOL_TIME_OFFSET")
            .env_remove("KEYVOL_SNAPSHOT_STORE")
            .output()
            .unwrap()
    }
    fn snap_json(&self, args: &[&str]) -> Value {
        let out = self.snap(args);
        assert!(
            out.status.success(),
            "keyvol-snap {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
    fn key(&self, extra: &[&str]) -> String {
        let mut args = vec!["kms", "create-key"];
        args.extend(extra);
        self.kv_json(&args)["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap()
            .to_string()
    }
    fn volume(&mut self, size: &str) -> String {
        let v = self.kv_json(&["volume", "create", "--size", size])["VolumeId"]
            .as_str()
            .unwrap()
            .to_string();
        self.volumes.push(v.clone());
        v
    }
    fn mount(&mut self, vol: &str) -> PathBuf {
        let dir = self.path().join(format!("mnt-{vol}"));
        let out = self.kv_json(&["volume", "mount", vol, dir.to_str().unwrap()]);
        assert_eq!(out["State"], "in-use", "{out}");
        self.mounts.push(dir.clone());
        dir
    }
    fn volume_count(&self) -> usize {
        self.kv_json(&["volume", "describe-volumes"])["Volumes"]
            .as_array()
            .unwrap()
            .len()
    }
    fn snapshot_count(&self) -> usize {
        self.snap_json(&["describe-snapshots"])["Snapshots"]
            .as_array()
            .unwrap()
            .len()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        for m in self.mounts.clone() {
            // Never leave a frozen filesystem behind, whatever failed.
            let _ = Command::new("fsfreeze")
                .arg("-u")
                .arg(&m)
                .stderr(Stdio::null())
                .status();
            let _ = self.kv(&["volume", "unmount", m.to_str().unwrap()]);
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&m)
                .stderr(Stdio::null())
                .status();
        }
        for v in self.volumes.clone() {
            let _ = self.kv(&["volume", "detach", &v, "--force"]);
        }
    }
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

// ------------------------------------------------------------ exit codes

#[test]
fn usage_errors_exit_252_help_and_version_exit_0() {
    let h = Home::new();
    for args in [
        &[][..],
        &["--no-such-flag"][..],
        &["kms"][..],
        &["kms", "no-such-operation"][..],
        &["volume", "modify"][..],
        &["kms", "list-keys", "--output", "xml"][..],
        &["kms", "list-keys", "--limit"][..],
    ] {
        let out = h.kv(args);
        assert_eq!(code(&out), Some(252), "keyvol {args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "keyvol {args:?} says nothing");
    }
    for args in [
        &[][..],
        &["--no-such-flag"][..],
        &["create"][..],
        &["no-such-command"][..],
        &["describe-snapshots", "--output", "xml"][..],
        &["wait", "snap-0", "--timeout-seconds", "soon"][..],
    ] {
        let out = h.snap(args);
        assert_eq!(
            code(&out),
            Some(252),
            "keyvol-snap {args:?}: {}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).is_empty(),
            "keyvol-snap {args:?} says nothing"
        );
    }
    // Help and version are answers, not errors.
    for (out, what) in [
        (h.kv(&["--help"]), "keyvol --help"),
        (h.kv(&["volume", "--help"]), "keyvol volume --help"),
        (h.snap(&["--help"]), "keyvol-snap --help"),
        (h.snap(&["create", "--help"]), "keyvol-snap create --help"),
    ] {
        assert_eq!(code(&out), Some(0), "{what}: {}", stderr(&out));
        assert!(stdout(&out).contains("Usage"), "{what}: {}", stdout(&out));
    }
    for (out, name) in [
        (h.kv(&["--version"]), "keyvol"),
        (h.snap(&["--version"]), "keyvol-snap"),
    ] {
        assert_eq!(code(&out), Some(0), "{name} --version");
        assert!(stdout(&out).starts_with(&format!("{name} ")), "{name}");
    }
    // A service error is still 254.
    let out = h.kv(&["kms", "describe-key", "--key-id", "alias/none"]);
    assert_eq!(code(&out), Some(254), "{}", stderr(&out));
}

// ------------------------------------------------------------ --query

#[test]
fn invalid_query_exits_252_and_changes_nothing() {
    let mut h = Home::new();
    let bad = [
        "Volume[",
        "[?Size > `1`",
        "no_such_function(@)",
        "length(@, @)",
    ];
    for q in bad {
        let out = h.kv(&["volume", "create", "--size", "16MiB", "--query", q]);
        assert_eq!(code(&out), Some(252), "--query {q}: {}", stderr(&out));
        assert!(stderr(&out).contains("--query"), "{}", stderr(&out));
    }
    assert_eq!(h.volume_count(), 0, "a refused create made a volume");
    // modify: the size stays.
    let vol = h.volume("16MiB");
    for q in bad {
        let out = h.kv(&["volume", "modify", &vol, "--size", "32MiB", "--query", q]);
        assert_eq!(code(&out), Some(252), "--query {q}: {}", stderr(&out));
    }
    let d = h.kv_json(&["volume", "describe", &vol]);
    assert_eq!(d["SizeInBytes"], 16 << 20, "{d}");
    // keyvol-snap create, waiting or in the background: no snapshot.
    for q in bad {
        for wait in [true, false] {
            let mut args = vec!["create", vol.as_str(), "--query", q];
            if wait {
                args.push("--wait");
            }
            let out = h.snap(&args);
            assert_eq!(code(&out), Some(252), "{args:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(q), "{}", stderr(&out));
        }
    }
    assert_eq!(h.snapshot_count(), 0, "a refused create made a snapshot");
    // A KMS operation with a bad query makes no key.
    let keys = || h.kv_json(&["kms", "list-keys"])["Keys"].clone();
    let before = keys();
    let out = h.kv(&["kms", "create-key", "--query", "KeyMetadata.["]);
    assert_eq!(code(&out), Some(252));
    assert_eq!(keys(), before);
}

#[test]
fn query_is_jmespath_in_both_clis() {
    let mut h = Home::new();
    let k1 = h.key(&["--description", "first"]);
    let k2 = h.key(&["--description", "second"]);
    let k3 = h.key(&["--description", "third"]);
    let q = |args: &[&str], query: &str| -> Value {
        let mut a = args.to_vec();
        a.extend(["--query", query]);
        h.kv_json(&a)
    };
    // Filter, pipe and function.
    assert_eq!(
        q(
            &["kms", "list-keys"],
            &format!("Keys[?KeyId=='{k2}'] | length(@)")
        ),
        1
    );
    assert_eq!(q(&["kms", "list-keys"], "length(Keys)"), 3);
    // Projection.
    let mut ids: Vec<String> =
        serde_json::from_value(q(&["kms", "list-keys"], "Keys[*].KeyId")).unwrap();
    ids.sort();
    let mut want = vec![k1.clone(), k2.clone(), k3.clone()];
    want.sort();
    assert_eq!(ids, want);
    // Functions with expression references.
    assert_eq!(
        q(&["kms", "list-keys"], "sort_by(Keys, &KeyId)[0].KeyId"),
        want[0].as_str()
    );
    assert_eq!(
        q(&["kms", "list-keys"], "max_by(Keys, &KeyId).KeyId"),
        want[2].as_str()
    );
    // Multiselect hash and list.
    let d = q(
        &["kms", "describe-key", "--key-id", &k3],
        "KeyMetadata.{Id: KeyId, What: Description, On: Enabled}",
    );
    assert_eq!(
        d,
        serde_json::json!({"Id": k3, "What": "third", "On": true})
    );
    let d = q(
        &["kms", "describe-key", "--key-id", &k1],
        "KeyMetadata.[Description, starts_with(KeyState, 'En')]",
    );
    assert_eq!(d, serde_json::json!(["first", true]));
    // A filter on a literal, and a query that finds nothing prints null.
    let v = q(&["kms", "list-keys"], "Keys[?KeyId == `\"nope\"`]");
    assert_eq!(v, serde_json::json!([]));
    assert_eq!(q(&["kms", "list-keys"], "NoSuchField"), Value::Null);
    // --output text of a query result, as before.
    let out = h.kv(&[
        "kms",
        "describe-key",
        "--key-id",
        &k2,
        "--query",
        "KeyMetadata.KeyId",
        "--output",
        "text",
    ]);
    assert_eq!(stdout(&out), format!("{k2}\n"));
    let out = h.kv(&[
        "kms",
        "list-keys",
        "--query",
        "sort(Keys[*].KeyId)",
        "--output",
        "text",
    ]);
    assert_eq!(stdout(&out), format!("{}\n", want.join("\t")));
    let out = h.kv(&[
        "kms",
        "describe-key",
        "--key-id",
        &k1,
        "--query",
        "KeyMetadata.[KeyId, Description]",
        "--output",
        "text",
    ]);
    assert_eq!(stdout(&out), format!("{k1}\tfirst\n"));
    // keyvol-snap: the same language.
    let vol = h.volume("16MiB");
    let s1 = h.snap_json(&["create", &vol, "--wait", "--query", "SnapshotId"]);
    let s2 = h.snap_json(&["create", &vol, "--wait", "--description", "two"]);
    let found = h.snap_json(&[
        "describe-snapshots",
        "--query",
        "Snapshots[?Description=='two'].SnapshotId",
    ]);
    assert_eq!(found, serde_json::json!([s2["SnapshotId"]]));
    let n = h.snap_json(&[
        "describe-snapshots",
        "--query",
        "length(Snapshots[?State=='completed'])",
    ]);
    assert_eq!(n, 2);
    let out = h.snap(&[
        "describe",
        s1.as_str().unwrap(),
        "--query",
        "[SnapshotId, State]",
        "--output",
        "text",
    ]);
    assert_eq!(
        stdout(&out),
        format!("{}\tcompleted\n", s1.as_str().unwrap())
    );
}

// ------------------------------------------------------------ envelope

#[test]
fn envelope_decrypt_never_follows_or_reuses_planted_files() {
    let h = Home::new();
    let key = h.key(&[]);
    let work = h.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let plain = work.join("plain");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&plain, &data).unwrap();
    let enc = work.join("plain.enc");
    h.kv_json(&[
        "envelope",
        "encrypt",
        "--key-id",
        &key,
        "--in",
        plain.to_str().unwrap(),
        "--out",
        enc.to_str().unwrap(),
    ]);
    // A file root must not overwrite through a planted link.
    let victims = h.path().join("victims");
    std::fs::create_dir(&victims).unwrap();
    let victim = victims.join("shadow");
    std::fs::write(&victim, b"the victim's own bytes").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let victim_meta = std::fs::metadata(&victim).unwrap();

    let out = work.join("plain.out");
    let name = "plain.out";
    // Links at every name an attacker could guess from the output name.
    let guesses = [
        format!("{name}.keyvol-tmp"),
        format!("{name}.tmp"),
        format!(".{name}.keyvol-tmp"),
        format!(".{name}.tmp"),
        format!("{name}~"),
    ];
    for g in &guesses {
        std::os::unix::fs::symlink(&victim, work.join(g)).unwrap();
    }
    // And the output itself a link to the victim: it is replaced, not
    // written through.
    std::os::unix::fs::symlink(&victim, &out).unwrap();
    let r = h.kv_json(&[
        "envelope",
        "decrypt",
        "--in",
        enc.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r["PlaintextBytes"], data.len());
    assert_eq!(std::fs::read(&victim).unwrap(), b"the victim's own bytes");
    let after = std::fs::metadata(&victim).unwrap();
    assert_eq!(after.mode(), victim_meta.mode());
    assert_eq!(after.mtime(), victim_meta.mtime());
    for g in &guesses {
        let p = work.join(g);
        assert!(
            std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{g} was replaced"
        );
        assert_eq!(std::fs::read_link(&p).unwrap(), victim);
    }
    let m = std::fs::symlink_metadata(&out).unwrap();
    assert!(m.file_type().is_file(), "the output is not a regular file");
    assert_eq!(m.mode() & 0o777, 0o600, "the output is not 0600");
    assert_eq!(std::fs::read(&out).unwrap(), data);

    // A temporary file another user created beforehand (owned by nobody,
    // readable by all) is neither reused nor changed.
    let out2 = work.join("second.out");
    let planted = work.join("second.out.keyvol-tmp");
    std::fs::write(&planted, b"planted by nobody").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
    let planted_meta = std::fs::metadata(&planted).unwrap();
    // A restrictive and a permissive umask both end in 0600.
    for umask in ["000", "077"] {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask}; exec \"$0\" envelope decrypt --in \"$1\" --out \"$2\""
            ))
            .arg(env!("CARGO_BIN_EXE_keyvol"))
            .arg(&enc)
            .arg(&out2)
            .env("KEYVOL_HOME", h.path())
            .env_remove("KEYVOL_PROFILE")
            .env_remove("KEYVOL_REGION")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "decrypt under umask {umask}");
        let m = std::fs::metadata(&out2).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600, "umask {umask}");
        assert_eq!(m.uid(), 0, "umask {umask}");
        assert_eq!(std::fs::read(&out2).unwrap(), data);
    }
    let p = std::fs::metadata(&planted).unwrap();
    assert_eq!(std::fs::read(&planted).unwrap(), b"planted by nobody");
    assert_eq!(
        (p.uid(), p.mode(), p.ino()),
        (65534, planted_meta.mode(), planted_meta.ino())
    );

    // A failed decryption (tampered file) leaves neither output nor
    // temporary file.
    let mut bad = std::fs::read(&enc).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let bad_enc = work.join("bad.enc");
    std::fs::write(&bad_enc, bad).unwrap();
    let before: Vec<PathBuf> = {
        let mut v = all_files(&work);
        v.sort();
        v
    };
    let r = h.kv(&[
        "envelope",
        "decrypt",
        "--in",
        bad_enc.to_str().unwrap(),
        "--out",
        work.join("bad.out").to_str().unwrap(),
    ]);
    assert_eq!(code(&r), Some(254), "{}", stderr(&r));
    assert!(stderr(&r).contains("(InvalidCiphertextException)"));
    let mut after: Vec<PathBuf> = all_files(&work);
    after.sort();
    assert_eq!(before, after, "a failed decrypt left a file behind");
}

// ------------------------------------------------------------ fileb:// limits

#[test]
fn file_arguments_read_at_most_the_limit() {
    let h = Home::new();
    let key = h.key(&[]);
    let sign_key = h.key(&["--key-spec", "ECC_NIST_P256", "--key-usage", "SIGN_VERIFY"]);
    let dir = h.path();
    let refused = |args: &[&str], op: &str, limit: usize| {
        let out = h.kv(args);
        assert_eq!(code(&out), Some(254), "{args:?}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(
            e.contains(&format!(
                "An error occurred (ValidationException) when calling the {op} operation"
            )) && e.contains(&format!("less than or equal to {limit}")),
            "{args:?}: {e}"
        );
    };
    // /dev/zero never ends: each fails at once, naming the limit.
    refused(
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            "fileb:///dev/zero",
        ],
        "Encrypt",
        4096,
    );
    refused(
        &["kms", "decrypt", "--ciphertext-blob", "fileb:///dev/zero"],
        "Decrypt",
        6144,
    );
    refused(
        &[
            "kms",
            "sign",
            "--key-id",
            &sign_key,
            "--signing-algorithm",
            "ECDSA_SHA_256",
            "--message",
            "fileb:///dev/zero",
        ],
        "Sign",
        4096,
    );
    refused(
        &[
            "kms",
            "import-key-material",
            "--key-id",
            &key,
            "--import-token",
            "fileb:///dev/zero",
            "--encrypted-key-material",
            "fileb:///dev/zero",
        ],
        "ImportKeyMaterial",
        6144,
    );
    refused(
        &[
            "kms",
            "put-key-policy",
            "--key-id",
            &key,
            "--policy",
            "file:///dev/zero",
        ],
        "PutKeyPolicy",
        32768,
    );
    refused(
        &["kms", "encrypt", "--cli-input-json", "file:///dev/zero"],
        "Encrypt",
        1024 * 1024,
    );
    // One byte over the limit is refused; the limit itself works.
    let over = dir.join("over");
    std::fs::write(&over, vec![7u8; 4097]).unwrap();
    refused(
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            &format!("fileb://{}", over.display()),
        ],
        "Encrypt",
        4096,
    );
    let at = dir.join("at");
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&at, &data).unwrap();
    let ct = h.kv_json(&[
        "kms",
        "encrypt",
        "--key-id",
        &key,
        "--plaintext",
        &format!("fileb://{}", at.display()),
    ])["CiphertextBlob"]
        .clone();
    let ct_file = dir.join("ct");
    std::fs::write(&ct_file, unb64(&ct)).unwrap();
    let pt = h.kv_json(&[
        "kms",
        "decrypt",
        "--ciphertext-blob",
        &format!("fileb://{}", ct_file.display()),
    ])["Plaintext"]
        .clone();
    assert_eq!(unb64(&pt), data);
    // Envelope files are streamed, not limited.
    let big = dir.join("big");
    std::fs::write(&big, vec![1u8; 300_000]).unwrap();
    let r = h.kv_json(&[
        "envelope",
        "encrypt",
        "--key-id",
        &key,
        "--in",
        big.to_str().unwrap(),
        "--out",
        dir.join("big.enc").to_str().unwrap(),
    ]);
    assert_eq!(r["PlaintextBytes"], 300_000);
}

// ------------------------------------------------------------ --freeze

/// `fsfreeze -u DIR` fails with EINVAL when DIR's filesystem is not
/// frozen: a check that cannot hang on a frozen filesystem, and thaws one
/// (so a failing test leaves nothing frozen).
fn is_frozen(dir: &Path) -> bool {
    let out = Command::new("fsfreeze")
        .arg("-u")
        .arg(dir)
        .output()
        .unwrap();
    if !out.status.success() {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Invalid argument"),
            "fsfreeze -u {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

fn write_and_sync(dir: &Path, name: &str) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join(name)).unwrap();
    f.write_all(b"written after the snapshot").unwrap();
    f.sync_all().unwrap();
}

#[test]
fn freeze_only_the_volumes_own_mountpoint_and_thaw_it() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let v1 = h.volume("64MiB");
    let v2 = h.volume("64MiB");
    let d1 = h.mount(&v1);
    let d2 = h.mount(&v2);
    std::fs::create_dir(d1.join("sub")).unwrap();
    let refused = |path: &Path, why: &str| {
        let out = h.snap(&["create", &v1, "--freeze", path.to_str().unwrap(), "--wait"]);
        assert_eq!(code(&out), Some(254), "--freeze {}", path.display());
        let e = stderr(&out);
        assert!(
            e.contains("(InvalidParameterValue) when calling the CreateSnapshot operation")
                && e.contains(why),
            "--freeze {}: {e}",
            path.display()
        );
    };
    refused(Path::new("/"), &format!("mounted at {}", d1.display()));
    assert!(
        !is_frozen(Path::new("/")),
        "--freeze / froze the root filesystem"
    );
    refused(&d2, &format!("mounted at {}", d1.display()));
    assert!(!is_frozen(&d2), "another volume's filesystem was frozen");
    refused(&d1.join("sub"), "not the mountpoint");
    refused(&h.path().join("no-such-dir"), "No such file");
    assert_eq!(h.snapshot_count(), 0, "a refused create made a snapshot");
    assert!(!is_frozen(&d1));
    // A symlink to the mountpoint names the mountpoint.
    let link = h.path().join("link-to-d1");
    std::os::unix::fs::symlink(&d1, &link).unwrap();
    for dir in [&d1, &link] {
        let s = h.snap_json(&["create", &v1, "--freeze", dir.to_str().unwrap(), "--wait"]);
        assert_eq!(s["State"], "completed", "{s}");
        assert!(!is_frozen(&d1), "left frozen after the snapshot");
        write_and_sync(&d1, "after");
    }
    // A detached volume has no filesystem to freeze.
    let v3 = h.volume("16MiB");
    let out = h.snap(&["create", &v3, "--freeze", d1.to_str().unwrap(), "--wait"]);
    assert_eq!(code(&out), Some(254));
    assert!(stderr(&out).contains("not attached"), "{}", stderr(&out));
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill only sends a signal to a process this test started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Is `pid` blocked reading (read or recv) with a descriptor of `dir` open:
/// past the freeze, waiting for the answer to the cut?
fn waiting_frozen(pid: u32, dir: &Path) -> bool {
    let holds_dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .any(|f| std::fs::read_link(f.path()).ok().as_deref() == Some(dir))
        })
        .unwrap_or(false);
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let nr = syscall.split_whitespace().next().unwrap_or("");
    let in_read = [libc::SYS_read, libc::SYS_recvfrom]
        .iter()
        .any(|n| n.to_string() == nr);
    holds_dir && in_read
}

/// The attach daemon's control socket stood in for by a listener that
/// accepts and never answers (a hung daemon whose device still serves the
/// filesystem, so the freeze itself completes); the real socket comes back
/// on drop.
struct SilentDaemon {
    path: PathBuf,
    aside: PathBuf,
    _listener: std::os::unix::net::UnixListener,
}

impl SilentDaemon {
    fn replace(path: PathBuf) -> SilentDaemon {
        let aside = path.with_extension("sock-real");
        std::fs::rename(&path, &aside).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        SilentDaemon {
            path,
            aside,
            _listener: listener,
        }
    }
}

impl Drop for SilentDaemon {
    fn drop(&mut self) {
        let _ = std::fs::rename(&self.aside, &self.path);
    }
}

#[test]
fn freeze_is_thawed_on_sigterm_and_on_a_cut_timeout() {
    let Some(_g) = fuse_prerequisites() else {
        return;
    };
    let mut h = Home::new();
    let vol = h.volume("64MiB");
    let dir = h.mount(&vol);
    let socket = h
        .path()
        .join("volumes/us-east-1")
        .join(format!("{vol}.sock"));
    assert!(socket.exists(), "no control socket at {}", socket.display());
    let silent = SilentDaemon::replace(socket);
    let mut child = Command::new(snap_bin())
        .args(["create", &vol, "--freeze", dir.to_str().unwrap(), "--wait"])
        .env("KEYVOL_HOME", h.path())
        .env_remove("KEYVOL_PROFILE")
        .env_remove("KEYVOL_REGION")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !waiting_frozen(child.id(), &dir) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "keyvol-snap ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // It is frozen now: a second freeze is refused as busy.
    let busy = Command::new("fsfreeze")
        .arg("-f")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        !busy.status.success()
            && String::from_utf8_lossy(&busy.stderr).contains("Device or resource busy"),
        "the filesystem was not frozen during the cut"
    );
    signal(child.id() as i32, libc::SIGTERM);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(!is_frozen(&dir), "SIGTERM left the filesystem frozen");
    write_and_sync(&dir, "after-sigterm");
    // The cut times out: the filesystem is thawed and the error says so.
    let out = h.snap(&["create", &vol, "--freeze", dir.to_str().unwrap(), "--wait"]);
    assert_eq!(code(&out), Some(254));
    assert!(
        stderr(&out).contains("did not answer CUT within 30 s"),
        "{}",
        stderr(&out)
    );
    assert!(
        !is_frozen(&dir),
        "a timed-out cut left the filesystem frozen"
    );
    write_and_sync(&dir, "after-timeout");
    assert_eq!(h.snapshot_count(), 0, "a failed cut left a snapshot");
    // The daemon answers again: a frozen snapshot works.
    drop(silent);
    let s = h.snap_json(&["create", &vol, "--freeze", dir.to_str().unwrap(), "--wait"]);
    assert_eq!(s["State"], "completed", "{s}");
    assert!(!is_frozen(&dir));
}

#[test]
fn policy_documents_and_volume_descriptions_are_read_bounded() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    keyvol_json(h, &["iam", "create-user", "--user-name", "u"]);
    for args in [
        vec![
            "iam",
            "put-user-policy",
            "--user-name",
            "u",
            "--policy-name",
            "p",
            "--policy-document",
            "file:///dev/zero",
        ],
        vec![
            "volume",
            "import",
            "--volume-json",
            "file:///dev/zero",
            "--backing-file",
            "/nonexistent.img",
        ],
    ] {
        let out = keyvol(h, &args);
        assert_eq!(out.status.code(), Some(254), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("less than or equal to"), "{args:?}: {err}");
    }
    // Nothing was stored: the user has no policy.
    let list = keyvol_json(h, &["iam", "list-user-policies", "--user-name", "u"]);
    assert_eq!(list["PolicyNames"], serde_json::json!([]), "{list}");
}

/// `keyvol iam` answers with IAM's own error names, as `aws iam` prints
/// them, and a refused command changes nothing.
#[test]
fn iam_commands_answer_with_iam_error_names() {
    let h = Home::new();
    let made = h.kv(&["iam", "create-user", "--user-name", "ana"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let again = h.kv(&["iam", "create-user", "--user-name", "ana"]);
    assert_eq!(code(&again), Some(254));
    assert!(
        stderr(&again).contains(
            "An error occurred (EntityAlreadyExists) when calling the CreateUser operation"
        ),
        "{}",
        stderr(&again)
    );
    let missing = h.kv(&["iam", "delete-user", "--user-name", "nobody-here"]);
    assert_eq!(code(&missing), Some(254));
    assert!(
        stderr(&missing).contains("(NoSuchEntity)"),
        "{}",
        stderr(&missing)
    );
    let bad = h.kv(&["iam", "create-user", "--user-name", "no spaces allowed"]);
    assert_eq!(code(&bad), Some(254));
    assert!(
        stderr(&bad).contains("(ValidationError)"),
        "{}",
        stderr(&bad)
    );
    let users = h.kv_json(&["iam", "list-users"]);
    let names: Vec<&str> = users["Users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["UserName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ana"], "{users}");
}
