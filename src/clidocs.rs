//! Documentation generated from the clap definitions of the CLIs: shell
//! completions (`completion bash|zsh|fish`), man pages (`man --out DIR`,
//! one page per subcommand) and the check that every subcommand and
//! argument carries help text.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgMatches, Command};

/// The `completion SHELL` subcommand.
pub fn completion_command() -> Command {
    Command::new("completion")
        .about("Print a shell completion script (bash, zsh or fish)")
        .after_help(
            "Examples:\n  source <(keyvol completion bash)\n  keyvol completion zsh > ~/.zfunc/_keyvol\n  keyvol completion fish > ~/.config/fish/completions/keyvol.fish",
        )
        .arg(
            Arg::new("shell")
                .required(true)
                .value_parser(["bash", "zsh", "fish"])
                .help("The shell"),
        )
}

/// The `man --out DIR` subcommand.
pub fn man_command() -> Command {
    Command::new("man")
        .about("Write man pages, one per subcommand (keyvol.1, keyvol-volume-mount.1, ...)")
        .after_help("Example:\n  keyvol man --out /usr/local/share/man/man1")
        .arg(
            Arg::new("out")
                .long("out")
                .required(true)
                .value_name("DIR")
                .help("The directory to write them to (created when missing)"),
        )
}

/// Writes the completion script of `cmd` for `shell` (bash, zsh, fish).
pub fn write_completion(mut cmd: Command, shell: &str, out: &mut dyn Write) -> Result<(), String> {
    let shell = match shell {
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        "fish" => clap_complete::Shell::Fish,
        other => return Err(format!("unknown shell '{other}': use bash, zsh or fish")),
    };
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

/// Writes one man page per command and subcommand of `cmd` into `dir`
/// (`keyvol.1`, `keyvol-volume.1`, `keyvol-volume-mount.1`, ...) and
/// returns their paths, sorted.
pub fn write_man_pages(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut cmd = cmd;
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, cmd.get_name(), dir, &mut written)?;
    written.sort();
    Ok(written)
}

fn write_pages(
    cmd: &Command,
    page_name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), String> {
    let page_cmd = cmd.clone().name(page_name.to_string());
    let path = dir.join(format!("{page_name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page_cmd)
        .render(&mut buf)
        .map_err(|e| format!("rendering {page_name}.1: {e}"))?;
    std::fs::write(&path, buf).map_err(|e| format!("writing {}: {e}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(
            sub,
            &format!("{page_name}-{}", sub.get_name()),
            dir,
            written,
        )?;
    }
    Ok(())
}

/// Every subcommand and argument of `cmd` (recursively) without help text,
/// as `keyvol volume mount --fs` paths. clap's own `help`/`version` are
/// exempt.
pub fn missing_help(cmd: &Command) -> Vec<String> {
    let mut cmd = cmd.clone();
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, cmd.get_name(), &mut out);
    out
}

fn walk(cmd: &Command, path: &str, out: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        let id = a.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let empty = a.get_help().is_none_or(|h| h.to_string().trim().is_empty());
        if empty {
            let name = a
                .get_long()
                .map(|l| format!("--{l}"))
                .unwrap_or_else(|| format!("<{id}>"));
            out.push(format!("{path} {name}"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        if sub
            .get_about()
            .is_none_or(|h| h.to_string().trim().is_empty())
        {
            out.push(sub_path.clone());
        }
        walk(sub, &sub_path, out);
    }
}

/// Runs `completion` or `man` for the CLI `cmd`; `Ok(text)` to print.
pub fn run(cmd: Command, which: &str, m: &ArgMatches) -> Result<Option<String>, String> {
    match which {
        "completion" => {
            let shell = m
                .get_one::<String>("shell")
                .map(String::as_str)
                .unwrap_or("");
            let mut buf = Vec::new();
            write_completion(cmd, shell, &mut buf)?;
            Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
        }
        "man" => {
            let dir = m.get_one::<String>("out").map(String::as_str).unwrap_or("");
            let pages = write_man_pages(cmd, Path::new(dir))?;
            let list: Vec<String> = pages.iter().map(|p| p.display().to_string()).collect();
            Ok(Some(
                serde_json::to_string_pretty(&serde_json::json!({"ManPages": list}))
                    .unwrap_or_default(),
            ))
        }
        other => Err(format!("unknown documentation command {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_help_finds_bare_args_and_commands() {
        let cmd = Command::new("t")
            .about("top")
            .arg(Arg::new("good").long("good").help("has help"))
            .subcommand(Command::new("bare").arg(Arg::new("x").long("x")))
            .subcommand(
                Command::new("ok")
                    .about("fine")
                    .arg(Arg::new("pos").help("p")),
            );
        assert_eq!(missing_help(&cmd), vec!["t bare", "t bare --x"]);
    }

    #[test]
    fn man_pages_one_per_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = Command::new("t").about("top").subcommand(
            Command::new("a")
                .about("a")
                .subcommand(Command::new("b").about("b")),
        );
        let pages = write_man_pages(cmd, dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["t-a-b.1", "t-a.1", "t.1"]);
    }
}
