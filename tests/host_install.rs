//! `scripts/install.sh` run twice into a temporary DESTDIR: binaries,
//! completions, man pages and units land where a distribution puts them,
//! and the second run changes nothing.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

fn install(destdir: &Path, prefix: &str) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    Command::new("bash")
        .arg(script)
        .env("DESTDIR", destdir)
        .env("PREFIX", prefix)
        .env("KEYVOL_HOME", "/var/lib/keyvol-install-test")
        // The binaries under test (debug, built by scripts/test.sh), not a
        // release build of its own: CI builds everything once.
        .env(
            "KEYVOL_BIN_DIR",
            Path::new(env!("CARGO_BIN_EXE_keyvol")).parent().unwrap(),
        )
        .output()
        .unwrap()
}

/// Every file under `root`: (mtime, bytes).
fn snapshot(root: &Path) -> BTreeMap<String, (SystemTime, Vec<u8>)> {
    common::all_files(root)
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            (rel, (meta.modified().unwrap(), std::fs::read(&p).unwrap()))
        })
        .collect()
}

#[test]
fn install_twice_into_a_destdir() {
    let dest = tempfile::tempdir().unwrap();
    let out = install(dest.path(), "/usr");
    assert!(
        out.status.success(),
        "install.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let d = dest.path();
    for (bin, mode) in [("usr/bin/keyvol", 0o755), ("usr/bin/keyvol-snap", 0o755)] {
        let meta = std::fs::metadata(d.join(bin)).unwrap_or_else(|e| panic!("{bin}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{bin}");
    }
    for f in [
        "usr/share/bash-completion/completions/keyvol",
        "usr/share/bash-completion/completions/keyvol-snap",
        "usr/share/zsh/site-functions/_keyvol",
        "usr/share/zsh/site-functions/_keyvol-snap",
        "usr/share/fish/vendor_completions.d/keyvol.fish",
        "usr/share/fish/vendor_completions.d/keyvol-snap.fish",
        "usr/share/man/man1/keyvol.1",
        "usr/share/man/man1/keyvol-volume-mount.1",
        "usr/share/man/man1/keyvol-snap-create.1",
        "etc/systemd/system/keyvol-volumes.service",
        "etc/systemd/system/keyvol-attach@.service",
    ] {
        let meta = std::fs::metadata(d.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o644, "{f}");
        assert!(meta.len() > 0, "{f} is empty");
    }
    let bash =
        std::fs::read_to_string(d.join("usr/share/bash-completion/completions/keyvol")).unwrap();
    assert!(bash.contains("complete -F _keyvol"));
    // The units run the installed binary (no DESTDIR) for the home given.
    let unit =
        std::fs::read_to_string(d.join("etc/systemd/system/keyvol-volumes.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/keyvol volume mount --all"),
        "{unit}"
    );
    assert!(
        unit.contains("Environment=KEYVOL_HOME=/var/lib/keyvol-install-test"),
        "{unit}"
    );
    assert!(
        !Path::new("/var/lib/keyvol-install-test").exists(),
        "install created the home"
    );
    // The installed binary is the release build and runs.
    let v = Command::new(d.join("usr/bin/keyvol"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("keyvol {}", env!("CARGO_PKG_VERSION"))
    );

    // Idempotent: the same files, none rewritten.
    let first = snapshot(d);
    let out = install(dest.path(), "/usr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = snapshot(d);
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>()
    );
    for (path, (mtime, bytes)) in &first {
        assert_eq!(&second[path].1, bytes, "{path} changed");
        assert_eq!(second[path].0, *mtime, "{path} was rewritten");
    }
}

#[test]
fn install_refuses_a_relative_prefix() {
    let dest = tempfile::tempdir().unwrap();
    let out = install(dest.path(), "usr/local");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PREFIX must be absolute"));
    assert!(
        common::all_files(dest.path()).is_empty(),
        "installed something anyway"
    );
}
