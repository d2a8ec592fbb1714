//! Shell completions, man pages and help text of `keyvol` and
//! `keyvol-snap`, checked with the real tools: bash completes through the
//! generated script, groff and man render the pages.

mod common;

use common::snap_bin;

use std::path::Path;
use std::process::Command;

fn run(bin: &Path, args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(bin)
        .args(args)
        .env("KEYVOL_HOME", home.path())
        .output()
        .unwrap()
}

/// What bash offers for the words `line` (the last one being completed),
/// through the completion function `func` of `script`.
fn bash_complete(script: &str, func: &str, words: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("completion.bash");
    std::fs::write(&path, script).unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let program = format!(
        "source /usr/share/bash-completion/bash_completion\n\
         source '{}'\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={cword}\n\
         COMP_LINE='{}'\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         {func} '{}' '{}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        path.display(),
        quoted.join(" "),
        words.join(" "),
        words[0],
        words[cword],
    );
    assert!(
        Path::new("/usr/share/bash-completion/bash_completion").exists(),
        "bash-completion is not installed: run scripts/setup.sh"
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&program)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_keyvol_subcommands() {
    let keyvol = Path::new(env!("CARGO_BIN_EXE_keyvol"));
    let out = run(keyvol, &["completion", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    let mut got = bash_complete(&script, "_keyvol", &["keyvol", "volume", "mo"]);
    got.sort();
    assert_eq!(got, vec!["modify", "mount"]);
    let got = bash_complete(&script, "_keyvol", &["keyvol", "volume", "mount", "--op"]);
    assert_eq!(got, vec!["--options"]);
    let got = bash_complete(&script, "_keyvol", &["keyvol", "kms", "schedule-key-d"]);
    assert_eq!(got, vec!["schedule-key-deletion"]);
    let got = bash_complete(&script, "_keyvol", &["keyvol", "host", "inst"]);
    assert_eq!(got, vec!["install-units"]);
}

#[test]
fn bash_completes_keyvol_snap_subcommands() {
    let snap = snap_bin();
    let out = run(&snap, &["completion", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    let mut got = bash_complete(&script, "_keyvol__snap", &["keyvol-snap", "des"]);
    got.sort();
    assert_eq!(
        got,
        vec!["describe", "describe-attribute", "describe-snapshots"]
    );
}

#[test]
fn zsh_and_fish_scripts_name_the_commands() {
    let keyvol = Path::new(env!("CARGO_BIN_EXE_keyvol"));
    let zsh = String::from_utf8(run(keyvol, &["completion", "zsh"]).stdout).unwrap();
    assert!(
        zsh.starts_with("#compdef keyvol"),
        "{}",
        &zsh[..40.min(zsh.len())]
    );
    assert!(zsh.contains("install-units"));
    let fish = String::from_utf8(run(keyvol, &["completion", "fish"]).stdout).unwrap();
    assert!(fish.contains("complete -c keyvol"));
    assert!(fish.contains("-a \"mount\""));
    let bad = run(keyvol, &["completion", "powershell"]);
    assert_eq!(
        bad.status.code(),
        Some(252),
        "an unknown shell is a usage error"
    );
}

/// Every page of `dir` renders with groff without a warning.
fn assert_pages_render(dir: &Path) {
    for page in common::all_files(dir) {
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&page)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff on {}: {}",
            page.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn man_pages_one_per_subcommand() {
    let keyvol = Path::new(env!("CARGO_BIN_EXE_keyvol"));
    let dir = tempfile::tempdir().unwrap();
    let out = run(keyvol, &["man", "--out", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "keyvol.1",
        "keyvol-volume.1",
        "keyvol-volume-mount.1",
        "keyvol-volume-enable.1",
        "keyvol-host-install-units.1",
        "keyvol-kms-encrypt.1",
        "keyvol-kms-audit-verify.1",
        "keyvol-iam-create-user.1",
    ] {
        assert!(dir.path().join(page).exists(), "{page} missing");
    }
    // One page per command of the tree.
    let pages = common::all_files(dir.path()).len();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["ManPages"].as_array().unwrap().len(), pages);
    assert!(pages > 80, "only {pages} pages");
    assert_pages_render(dir.path());
    let man = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(dir.path().join("keyvol-volume-mount.1"))
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    assert!(
        man.status.success(),
        "{}",
        String::from_utf8_lossy(&man.stderr)
    );
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(text.contains("keyvol-volume-mount"), "{text}");
    assert!(text.contains("--options"), "{text}");
    assert!(
        text.contains("keyvol volume mount --all"),
        "the example is missing: {text}"
    );
}

#[test]
fn keyvol_snap_man_pages() {
    let snap = snap_bin();
    let dir = tempfile::tempdir().unwrap();
    let out = run(&snap, &["man", "--out", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "keyvol-snap.1",
        "keyvol-snap-create.1",
        "keyvol-snap-list-changed-blocks.1",
    ] {
        assert!(dir.path().join(page).exists(), "{page} missing");
    }
    assert_pages_render(dir.path());
}

/// Parsing `--help` of every subcommand: each argument line and each
/// subcommand line has a description (the unit tests walk the clap tree;
/// this checks what users see).
#[test]
fn help_output_describes_every_volume_command() {
    let keyvol = Path::new(env!("CARGO_BIN_EXE_keyvol"));
    let top = String::from_utf8(run(keyvol, &["volume", "--help"]).stdout).unwrap();
    let subs: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let t = l.trim();
            let (name, about) = t.split_once(' ').unwrap_or((t, ""));
            assert!(!about.trim().is_empty(), "volume {name} has no help");
            name.to_string()
        })
        .filter(|n| n != "help")
        .collect();
    assert!(subs.len() >= 14, "{subs:?}");
    for sub in subs {
        let help = String::from_utf8(run(keyvol, &["volume", &sub, "--help"]).stdout).unwrap();
        let lines: Vec<&str> = help.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim();
            if !t.starts_with("--") {
                continue;
            }
            // The help follows on the line, or (long help) on the next one.
            let same = t.split_once("  ").map(|(_, r)| r.trim()).unwrap_or("");
            let next = lines.get(i + 1).map(|n| n.trim()).unwrap_or("");
            let described = !same.is_empty() || (!next.is_empty() && !next.starts_with('-'));
            assert!(described, "volume {sub}: '{t}' has no help");
        }
    }
}
