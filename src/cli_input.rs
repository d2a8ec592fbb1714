//! `--cli-input-json` and `--generate-cli-skeleton` for clap commands, as
//! the aws CLI has them: the skeleton is a JSON object with one key per
//! argument of the subcommand (the argument's name in PascalCase:
//! `--kms-key-id` -> `KmsKeyId`, `<volume-id>` -> `VolumeId`); the input
//! JSON gives any of them, and what the command line gives wins.
//!
//! Works on the argument list before clap parses it, so that arguments
//! required by clap may come from the JSON: [`expand`] turns the JSON into
//! ordinary arguments, and clap checks them as if they had been typed.

use std::ffi::OsString;

use clap::{Arg, ArgAction, Command};
use serde_json::{Map, Value};

/// The names of the two options.
pub const INPUT: &str = "cli-input-json";
pub const SKELETON: &str = "generate-cli-skeleton";

/// What to do with a command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Expanded {
    /// Parse these arguments.
    Args(Vec<OsString>),
    /// Print this skeleton and stop.
    Skeleton(String),
}

/// The two options, to add to a subcommand that takes them.
pub fn input_args() -> [Arg; 2] {
    [
        Arg::new(INPUT)
            .long(INPUT)
            .value_name("JSON")
            .help("The arguments as JSON (or file://PATH); see --generate-cli-skeleton"),
        Arg::new(SKELETON)
            .long(SKELETON)
            .action(ArgAction::SetTrue)
            .help(
                "Print a JSON skeleton of the arguments for --cli-input-json, and do nothing else",
            ),
    ]
}

/// `volume-id` / `volume_id` -> `VolumeId`.
pub fn pascal(id: &str) -> String {
    id.split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn takes_value(a: &Arg) -> bool {
    a.get_action().takes_values()
}

fn is_list(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Append)
        || a.get_num_args().is_some_and(|n| n.max_values() > 1)
}

/// The arguments of a subcommand that a JSON input may give.
fn own_args(cmd: &Command) -> Vec<&Arg> {
    cmd.get_arguments()
        .filter(|a| {
            let id = a.get_id().as_str();
            !a.is_global_set()
                && !a.is_hide_set()
                && !matches!(id, "help" | "version")
                && id != INPUT
                && id != SKELETON
                && id.replace('_', "-") != INPUT
                && id.replace('_', "-") != SKELETON
        })
        .collect()
}

/// Finds the subcommand that `args` run: its path of names.
fn locate<'c>(root: &'c Command, args: &[String]) -> (Vec<&'c str>, &'c Command) {
    let mut cur = root;
    let mut path = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let t = &args[i];
        i += 1;
        if t == "--" {
            break;
        }
        if let Some(long) = t.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, _)) => (n, true),
                None => (long, false),
            };
            let arg = cur.get_arguments().find(|a| a.get_long() == Some(name));
            if !inline && arg.is_some_and(takes_value) {
                i += 1;
            }
            continue;
        }
        if t.starts_with('-') && t.len() > 1 {
            continue;
        }
        match cur.find_subcommand(t) {
            Some(sub) => {
                path.push(sub.get_name());
                cur = sub;
            }
            None => break,
        }
    }
    (path, cur)
}

/// Reads `--cli-input-json` and `--generate-cli-skeleton` off `args` for
/// the subcommands where `applies(path)` is true (others are left as they
/// are). `cmd` is the whole command tree.
pub fn expand(
    cmd: &Command,
    args: Vec<OsString>,
    applies: impl Fn(&[&str]) -> bool,
) -> Result<Expanded, String> {
    let wanted = args.iter().any(|a| {
        a.to_str().is_some_and(|s| {
            s == format!("--{INPUT}")
                || s.starts_with(&format!("--{INPUT}="))
                || s == format!("--{SKELETON}")
        })
    });
    if !wanted {
        return Ok(Expanded::Args(args));
    }
    let Some(strings) = args
        .iter()
        .map(|a| a.to_str().map(str::to_string))
        .collect::<Option<Vec<String>>>()
    else {
        return Err(format!("--{INPUT}: the command line is not UTF-8"));
    };
    let mut root = cmd.clone();
    root.build();
    let (path, sub) = locate(&root, &strings);
    if !applies(&path) {
        return Ok(Expanded::Args(args));
    }
    // Take the two options off the command line.
    let mut rest: Vec<String> = Vec::new();
    let mut input: Option<String> = None;
    let mut skeleton = false;
    let mut it = strings.into_iter();
    while let Some(t) = it.next() {
        if t == format!("--{SKELETON}") {
            skeleton = true;
        } else if t == format!("--{INPUT}") {
            input = Some(
                it.next()
                    .ok_or_else(|| format!("--{INPUT} needs a value"))?,
            );
        } else if let Some(v) = t.strip_prefix(&format!("--{INPUT}=")) {
            input = Some(v.to_string());
        } else {
            rest.push(t);
        }
    }
    let own = own_args(sub);
    if skeleton {
        let mut m = Map::new();
        for a in &own {
            let v = if !takes_value(a) {
                Value::Bool(false)
            } else if is_list(a) {
                Value::Array(vec![Value::String(String::new())])
            } else {
                let default = a
                    .get_default_values()
                    .first()
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Value::String(default)
            };
            m.insert(pascal(a.get_id().as_str()), v);
        }
        return Ok(Expanded::Skeleton(
            serde_json::to_string_pretty(&Value::Object(m)).unwrap_or_default(),
        ));
    }
    let Some(input) = input else {
        return Ok(Expanded::Args(
            rest.into_iter().map(OsString::from).collect(),
        ));
    };
    let text = match input.strip_prefix("file://") {
        Some(p) => {
            std::fs::read_to_string(p).map_err(|e| format!("--{INPUT}: cannot read {p}: {e}"))?
        }
        None => input,
    };
    let json: Value =
        serde_json::from_str(&text).map_err(|e| format!("--{INPUT} is not valid JSON: {e}"))?;
    let obj = json
        .as_object()
        .ok_or_else(|| format!("--{INPUT} must be a JSON object"))?;
    let mut options: Vec<String> = Vec::new();
    let mut positionals: Vec<(usize, String)> = Vec::new();
    let mut lists: Vec<String> = Vec::new();
    for (key, val) in obj {
        let arg = own
            .iter()
            .find(|a| pascal(a.get_id().as_str()) == *key)
            .ok_or_else(|| {
                format!(
                    "Unknown parameter in --{INPUT}: \"{key}\", must be one of: {}",
                    own.iter()
                        .map(|a| pascal(a.get_id().as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        if let Some(long) = arg.get_long() {
            let flag = format!("--{long}");
            let on_cli = rest
                .iter()
                .any(|t| *t == flag || t.starts_with(&format!("{flag}=")));
            if on_cli {
                continue;
            }
            if !takes_value(arg) {
                match val {
                    Value::Bool(true) => options.push(flag),
                    Value::Bool(false) | Value::Null => {}
                    _ => return Err(format!("--{INPUT}: \"{key}\" must be true or false")),
                }
                continue;
            }
            let values = scalars(key, val)?;
            if values.is_empty() {
                continue;
            }
            if matches!(arg.get_action(), ArgAction::Append) {
                options.extend(values.into_iter().map(|v| format!("{flag}={v}")));
            } else if is_list(arg) {
                lists.push(flag);
                lists.extend(values);
            } else if values.len() == 1 {
                options.push(format!("{flag}={}", values[0]));
            } else {
                return Err(format!("--{INPUT}: \"{key}\" takes one value, not a list"));
            }
        } else {
            let values = scalars(key, val)?;
            let index = arg.get_index().unwrap_or(usize::MAX);
            positionals.extend(values.into_iter().map(|v| (index, v)));
        }
    }
    positionals.sort_by_key(|(i, _)| *i);
    let mut out = rest;
    out.extend(options);
    out.extend(positionals.into_iter().map(|(_, v)| v));
    out.extend(lists);
    Ok(Expanded::Args(
        out.into_iter().map(OsString::from).collect(),
    ))
}

fn scalars(key: &str, v: &Value) -> Result<Vec<String>, String> {
    let one = |x: &Value| -> Result<String, String> {
        match x {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Object(_) => Ok(x.to_string()),
            _ => Err(format!(
                "--{INPUT}: \"{key}\" has a value of the wrong type"
            )),
        }
    };
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> Command {
        Command::new("t")
            .arg(Arg::new("home").long("home").global(true))
            .subcommand(
                Command::new("mk")
                    .arg(Arg::new("volume-id").required(true))
                    .arg(Arg::new("size").long("size").required(true))
                    .arg(Arg::new("ids").long("ids").num_args(1..))
                    .arg(Arg::new("force").long("force").action(ArgAction::SetTrue))
                    .args(input_args()),
            )
    }

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn input_json_becomes_arguments_and_the_command_line_wins() {
        let json = r#"{"VolumeId": "vol-1", "Size": "2GiB", "Force": true, "Ids": ["a", "b"]}"#;
        let Expanded::Args(out) = expand(
            &cmd(),
            args(&[
                "t",
                "--home",
                "/h",
                "mk",
                "--size",
                "1GiB",
                "--cli-input-json",
                json,
            ]),
            |_| true,
        )
        .unwrap() else {
            panic!("not args")
        };
        let m = cmd().try_get_matches_from(out).unwrap();
        let (_, sm) = m.subcommand().unwrap();
        assert_eq!(sm.get_one::<String>("volume-id").unwrap(), "vol-1");
        assert_eq!(sm.get_one::<String>("size").unwrap(), "1GiB");
        assert!(sm.get_flag("force"));
        let ids: Vec<&String> = sm.get_many::<String>("ids").unwrap().collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn skeleton_lists_the_arguments() {
        let Expanded::Skeleton(s) = expand(
            &cmd(),
            args(&["t", "mk", "--generate-cli-skeleton"]),
            |_| true,
        )
        .unwrap() else {
            panic!("no skeleton")
        };
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"VolumeId": "", "Size": "", "Ids": [""], "Force": false})
        );
    }

    #[test]
    fn unknown_keys_and_bad_json_are_refused() {
        let e = expand(
            &cmd(),
            args(&["t", "mk", "--cli-input-json", r#"{"Sise": 1}"#]),
            |_| true,
        )
        .unwrap_err();
        assert!(e.contains("Unknown parameter") && e.contains("Size"), "{e}");
        assert!(expand(
            &cmd(),
            args(&["t", "mk", "--cli-input-json", "[1]"]),
            |_| true
        )
        .is_err());
        assert!(
            expand(&cmd(), args(&["t", "mk", "--cli-input-json", "{"]), |_| {
                true
            })
            .is_err()
        );
    }

    #[test]
    fn other_commands_are_left_alone() {
        let a = args(&["t", "mk", "--cli-input-json", "{}"]);
        assert_eq!(
            expand(&cmd(), a.clone(), |_| false).unwrap(),
            Expanded::Args(a)
        );
    }
}
