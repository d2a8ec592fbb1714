//! `keyvol configure ...`: per-home settings (where the KMS is, where
//! snapshots go) and profiles imported from another home.

use std::io::BufRead;

use clap::{Arg, ArgMatches, Command};
use serde_json::{json, Value};

use keyvol::config::SETTINGS;
use keyvol::ids::AccountId;
use keyvol::kms::KmsError;
use keyvol::secret::SecretBytes;
use keyvol::server::RemoteKms;
use keyvol::session::Session;

use super::CliError;

fn name_arg() -> Arg {
    Arg::new("name")
        .required(true)
        .value_name("NAME")
        .help(format!(
            "The setting: {}",
            SETTINGS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
        ))
}

/// The `configure` command group.
pub fn command() -> Command {
    Command::new("configure")
        .about("Settings of this home (kms-endpoint, snapshot-store) and imported profiles")
        .subcommand_required(true)
        .subcommand(
            Command::new("set")
                .about("Store a setting (an empty value restores the default)")
                .arg(name_arg())
                .arg(
                    Arg::new("value")
                        .required(true)
                        .value_name("VALUE")
                        .help("The new value (an empty string restores the default)"),
                )
                .after_help(
                    "Examples:\n  keyvol configure set kms-endpoint https://kms.example:8090\n  keyvol configure set snapshot-store 's3://bucket/snaps?region=eu-west-1'",
                ),
        )
        .subcommand(
            Command::new("get")
                .about("The effective value of a setting")
                .arg(name_arg()),
        )
        .subcommand(
            Command::new("unset")
                .about("Remove a stored setting")
                .arg(name_arg()),
        )
        .subcommand(Command::new("list").about("Every setting with its effective value"))
        .subcommand(
            Command::new("import-profile")
                .about(
                    "Store a profile that signs with an access key of another home (the KMS host)",
                )
                .after_help(
                    "Example:\n  keyvol configure import-profile --profile-name host1 --account-id 111122223333 \\\n      --access-key-id AKIA... --secret-access-key -",
                )
                .arg(
                    Arg::new("profile-name")
                        .long("profile-name")
                        .required(true)
                        .help("The name of the new local profile"),
                )
                .arg(
                    Arg::new("account-id")
                        .long("account-id")
                        .required(true)
                        .help("The account the access key belongs to"),
                )
                .arg(
                    Arg::new("user-name")
                        .long("user-name")
                        .help("The IAM user the key belongs to (omit for the account root)"),
                )
                .arg(
                    Arg::new("access-key-id")
                        .long("access-key-id")
                        .required(true)
                        .help("The access key id (AKIA...) made on the KMS host"),
                )
                .arg(
                    Arg::new("secret-access-key")
                        .long("secret-access-key")
                        .required(true)
                        .help("The secret; '-' reads it from the first line of standard input"),
                ),
        )
}

fn s<'a>(m: &'a ArgMatches, name: &str) -> &'a str {
    m.get_one::<String>(name).map(String::as_str).unwrap_or("")
}

/// One setting as `get` and `list` show it.
fn describe(session: &Session, name: &str) -> Result<Value, KmsError> {
    let (_, env, help) = SETTINGS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| {
            KmsError::validation(format!(
                "unknown setting '{name}': known settings are {}",
                SETTINGS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
            ))
        })?;
    let value = keyvol::config::get(&session.home, name)?;
    let source = match (&value, std::env::var_os(env).is_some()) {
        (_, true) => "environment",
        (Some(_), false) => "home",
        (None, false) => "default",
    };
    Ok(json!({
        "Name": name,
        "Value": value,
        "Source": source,
        "EnvironmentVariable": env,
        "Description": help,
    }))
}

/// Refuses a value the setting's user would reject later.
fn check_value(session: &Session, name: &str, value: &str) -> Result<(), KmsError> {
    if name == "kms-endpoint" && !value.is_empty() {
        // The client's own endpoint parser, so `set` fails exactly when the
        // volume commands would.
        RemoteKms::new(
            value,
            session.ctx.region.clone(),
            "CHECK",
            SecretBytes::from_slice(b"-"),
        )?;
    }
    Ok(())
}

fn read_secret(arg: &str) -> Result<SecretBytes, CliError> {
    let mut line = String::new();
    let text = if arg == "-" {
        std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            CliError::usage(format!(
                "--secret-access-key -: cannot read standard input: {e}"
            ))
        })?;
        line.trim_end_matches(['\r', '\n'])
    } else {
        arg
    };
    let secret = SecretBytes::from_slice(text.as_bytes());
    line.clear();
    if secret.expose().is_empty() {
        return Err(CliError::usage("--secret-access-key is empty"));
    }
    Ok(secret)
}

/// Runs `keyvol configure <sub>`.
pub fn run(session: &Session, sub: &str, m: &ArgMatches) -> Result<Value, CliError> {
    let op = match sub {
        "set" => "SetSetting",
        "get" => "GetSetting",
        "unset" => "UnsetSetting",
        "list" => "ListSettings",
        "import-profile" => "ImportProfile",
        other => {
            return Err(CliError::usage(format!(
                "unknown configure command {other}"
            )))
        }
    };
    let svc = |e: KmsError| CliError::service(op, e);
    let iam_err = |e: keyvol::iam::IamError| CliError::api(op, e.into());
    match sub {
        "set" => {
            let (name, value) = (s(m, "name"), s(m, "value"));
            check_value(session, name, value).map_err(svc)?;
            keyvol::config::set(&session.home, name, value).map_err(svc)?;
            describe(session, name).map_err(svc)
        }
        "get" => describe(session, s(m, "name")).map_err(svc),
        "unset" => {
            let name = s(m, "name");
            keyvol::config::unset(&session.home, name).map_err(svc)?;
            describe(session, name).map_err(svc)
        }
        "list" => {
            let all = SETTINGS
                .iter()
                .map(|(n, _, _)| describe(session, n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(svc)?;
            Ok(json!({ "Settings": all }))
        }
        _ => {
            let account: AccountId = s(m, "account-id")
                .parse()
                .map_err(|e: keyvol::ids::IdError| CliError::usage(format!("--account-id: {e}")))?;
            let user = m.get_one::<String>("user-name").map(String::as_str);
            let akid = s(m, "access-key-id");
            if akid.is_empty() || !akid.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(CliError::usage(format!(
                    "--access-key-id '{akid}' must be letters and digits, e.g. AKIA..."
                )));
            }
            let secret = read_secret(s(m, "secret-access-key"))?;
            let profile = s(m, "profile-name");
            session
                .iam
                .import_profile(profile, &account, user, akid, &secret)
                .map_err(iam_err)?;
            let arn = match user {
                Some(u) => format!("arn:aws:iam::{account}:user/{u}"),
                None => account.root_arn(),
            };
            Ok(json!({"Profile": {
                "ProfileName": profile,
                "AccountId": account,
                "UserName": user,
                "Arn": arn,
                "AccessKeyId": akid,
            }}))
        }
    }
}
