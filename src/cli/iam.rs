//! `keyvol iam ...`: accounts, users, roles, access keys, inline policies,
//! principal tags, profiles.

use clap::{Arg, ArgMatches, Command};
use serde_json::{json, Value};

use keyvol::iam::{IamError, IamErrorCode};
use keyvol::ids::AccountId;
use keyvol::kms::PrincipalType;
use keyvol::session::Session;

use super::CliError;

fn req(name: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .required(true)
        .help(arg_help(name))
}

fn opt(name: &'static str) -> Arg {
    Arg::new(name).long(name).help(arg_help(name))
}

fn arg_help(name: &str) -> &'static str {
    match name {
        "account-id" => "The 12-digit account id (e.g. 444455556666)",
        "profile-name" => "The local profile that will sign with the new access key",
        "user-name" => "The IAM user name",
        "policy-name" => "The name of the inline policy",
        "policy-document" => "The policy JSON: file://PATH or the document itself",
        "role-name" => "The IAM role name",
        "assume-role-policy-document" => {
            "The trust policy JSON (who may assume the role): file://PATH or the document itself"
        }
        "description" => "A description of the role",
        "max-session-duration" => {
            "The longest session of the role, in seconds (3600 to 43200; default 3600)"
        }
        _ => "",
    }
}

pub fn command() -> Command {
    Command::new("iam")
        .about("Accounts, users, access keys, identity policies and profiles")
        .subcommand_required(true)
        .subcommand(
            Command::new("create-account")
                .about("Create an account with a root principal and a profile for it (prints its key once)")
                .after_help("Example:\n  keyvol iam create-account --account-id 444455556666 --profile-name other")
                .arg(req("account-id"))
                .arg(req("profile-name")),
        )
        .subcommand(Command::new("list-accounts").about("Every account of this home"))
        .subcommand(
            Command::new("create-user")
                .about("CreateUser in the caller's account (only the account root may)")
                .after_help("Example:\n  keyvol iam create-user --user-name alice --profile-name alice")
                .arg(req("user-name"))
                .arg(opt("profile-name")),
        )
        .subcommand(Command::new("list-users").about("ListUsers of the caller's account"))
        .subcommand(
            Command::new("delete-user")
                .about("DeleteUser, with its access keys and policies")
                .arg(req("user-name")),
        )
        .subcommand(
            Command::new("create-access-key")
                .about("CreateAccessKey for a user (the secret is printed once)")
                .after_help("Example:\n  keyvol iam create-access-key --user-name alice")
                .arg(req("user-name"))
                .arg(opt("profile-name")),
        )
        .subcommand(
            Command::new("put-user-policy")
                .about("PutUserPolicy: attach an inline identity policy to a user")
                .after_help(
                    "Example:\n  keyvol iam put-user-policy --user-name alice --policy-name kms-use --policy-document file://policy.json",
                )
                .arg(req("user-name"))
                .arg(req("policy-name"))
                .arg(req("policy-document")),
        )
        .subcommand(
            Command::new("get-user-policy")
                .about("GetUserPolicy: one inline policy of a user")
                .arg(req("user-name"))
                .arg(req("policy-name")),
        )
        .subcommand(
            Command::new("delete-user-policy")
                .about("DeleteUserPolicy: remove an inline policy of a user")
                .arg(req("user-name"))
                .arg(req("policy-name")),
        )
        .subcommand(
            Command::new("list-user-policies")
                .about("ListUserPolicies: the inline policy names of a user")
                .arg(req("user-name")),
        )
        .subcommand(host_command(
            "register-volume-host",
            "Register a user (or the account root) as a volume host: its KMS requests may act through EC2",
        ))
        .subcommand(host_command(
            "deregister-volume-host",
            "Remove a volume host registration: the identity can no longer act through EC2",
        ))
        .subcommand(
            Command::new("list-volume-hosts")
                .about("The registered volume hosts of the caller's account"),
        )
        .subcommand(
            Command::new("create-role")
                .about("CreateRole: a role that the principals of its trust policy may assume (sts assume-role)")
                .after_help(
                    "Example:\n  keyvol iam create-role --role-name ops --assume-role-policy-document file://trust.json --tags Key=team,Value=blue",
                )
                .arg(req("role-name"))
                .arg(req("assume-role-policy-document"))
                .arg(opt("description"))
                .arg(opt("max-session-duration").value_parser(clap::value_parser!(i64)))
                .arg(tags_arg()),
        )
        .subcommand(Command::new("get-role").about("GetRole: one role with its trust policy").arg(req("role-name")))
        .subcommand(Command::new("list-roles").about("ListRoles of the caller's account"))
        .subcommand(
            Command::new("delete-role")
                .about("DeleteRole (refused while it has inline policies); its sessions end")
                .arg(req("role-name")),
        )
        .subcommand(
            Command::new("put-role-policy")
                .about("PutRolePolicy: attach an inline identity policy to a role")
                .arg(req("role-name"))
                .arg(req("policy-name"))
                .arg(req("policy-document")),
        )
        .subcommand(
            Command::new("delete-role-policy")
                .about("DeleteRolePolicy: remove an inline policy of a role")
                .arg(req("role-name"))
                .arg(req("policy-name")),
        )
        .subcommand(
            Command::new("list-role-policies")
                .about("ListRolePolicies: the inline policy names of a role")
                .arg(req("role-name")),
        )
        .subcommand(tag_command("tag-user", "TagUser: add or replace tags of a user (aws:PrincipalTag)", "user-name", true))
        .subcommand(tag_command("untag-user", "UntagUser: remove tags of a user", "user-name", false))
        .subcommand(Command::new("list-user-tags").about("ListUserTags").arg(req("user-name")))
        .subcommand(tag_command("tag-role", "TagRole: add or replace tags of a role (aws:PrincipalTag of its sessions)", "role-name", true))
        .subcommand(tag_command("untag-role", "UntagRole: remove tags of a role", "role-name", false))
        .subcommand(Command::new("list-role-tags").about("ListRoleTags").arg(req("role-name")))
        .subcommand(Command::new("list-profiles").about("The profiles of this home and whom they act as"))
        .subcommand(
            Command::new("get-caller-identity")
                .about("GetCallerIdentity: the account and ARN of the profile in use"),
        )
}

fn tags_arg() -> Arg {
    Arg::new("tags")
        .long("tags")
        .num_args(1..)
        .help("Key=k,Value=v ... or JSON, as the aws CLI")
}

fn tag_command(name: &'static str, about: &'static str, who: &'static str, add: bool) -> Command {
    let c = Command::new(name).about(about).arg(req(who));
    if add {
        c.arg(tags_arg().required(true))
    } else {
        c.arg(
            Arg::new("tag-keys")
                .long("tag-keys")
                .num_args(1..)
                .required(true)
                .help("The tag keys to remove"),
        )
    }
}

/// A policy document argument: `file://PATH` read bounded, or the text.
fn document(op: &str, m: &ArgMatches, name: &str) -> Result<String, CliError> {
    let doc = s(m, name);
    match doc.strip_prefix("file://") {
        Some(p) => {
            let limit = keyvol::policy::MAX_POLICY_BYTES;
            let bytes = super::kms::read_path(op, "PolicyDocument", p, limit)?;
            String::from_utf8(bytes)
                .map_err(|_| CliError::usage(format!("file {p} is not UTF-8 text")))
        }
        None => Ok(doc.to_string()),
    }
}

fn tags_of(m: &ArgMatches) -> Result<Vec<(String, String)>, CliError> {
    let raw: Vec<String> = m
        .get_many::<String>("tags")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    super::kms::tag_pairs(&raw, "Key", "Value")
}

fn host_command(name: &'static str, about: &'static str) -> Command {
    Command::new(name)
        .about(about)
        .long_about(format!(
            "{about}. A registered volume host is an EC2 instance of the account at the \
             control plane (InstanceId in the output, one per region; DescribeInstances): \
             AttachVolume to it records the attachment, and the host's attach daemon then \
             obtains that volume's data key with KeyvolReleaseVolumeKey, over TLS or loopback \
             only. Only the account root may register."
        ))
        .after_help(format!(
            "Examples:\n  keyvol iam {name} --user-name host1\n  keyvol iam {name} --account-root"
        ))
        .arg(
            Arg::new("user-name")
                .long("user-name")
                .required_unless_present("account-root")
                .help("The IAM user the volume host signs as"),
        )
        .arg(
            Arg::new("account-root")
                .long("account-root")
                .action(clap::ArgAction::SetTrue)
                .conflicts_with("user-name")
                .help("The account root signs for the volume host"),
        )
}

fn s<'a>(m: &'a ArgMatches, name: &str) -> &'a str {
    m.get_one::<String>(name).map(String::as_str).unwrap_or("")
}

fn op_name(sub: &str) -> String {
    sub.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

pub fn run(session: &Session, sub: &str, m: &ArgMatches) -> Result<Value, CliError> {
    let op = op_name(sub);
    let svc = |e: IamError| CliError::api(&op, e.into());
    let caller = &session.ctx.caller;
    let account = &caller.account;
    let mutating = !matches!(
        sub,
        "list-accounts"
            | "list-users"
            | "get-user-policy"
            | "list-user-policies"
            | "list-profiles"
            | "list-volume-hosts"
            | "get-caller-identity"
            | "get-role"
            | "list-roles"
            | "list-role-policies"
            | "list-user-tags"
            | "list-role-tags"
    );
    if mutating && caller.principal_type != PrincipalType::Root {
        return Err(svc(IamError::new(IamErrorCode::AccessDenied, format!(
            "User: {} is not authorized to perform: iam:{op}: in keyvol only an account's root manages its identities",
            caller.principal_arn
        ))));
    }
    Ok(match sub {
        "create-account" => {
            let id: AccountId = s(m, "account-id")
                .parse()
                .map_err(|e: keyvol::ids::IdError| CliError::usage(e.to_string()))?;
            let key = session
                .iam
                .create_account(&id, s(m, "profile-name"))
                .map_err(svc)?;
            json!({"Account": {"AccountId": id, "Arn": id.root_arn(), "Profile": s(m, "profile-name")}, "AccessKey": key})
        }
        "list-accounts" => json!({"Accounts": session.iam.list_accounts().map_err(svc)?}),
        "create-user" => {
            let profile = m.get_one::<String>("profile-name").map(String::as_str);
            let (mut user, key) = session
                .iam
                .create_user(account, s(m, "user-name"), profile)
                .map_err(svc)?;
            if let Some(k) = key {
                user["AccessKey"] = json!(k);
            }
            user
        }
        "list-users" => session.iam.list_users(account).map_err(svc)?,
        "delete-user" => {
            session
                .iam
                .delete_user(account, s(m, "user-name"))
                .map_err(svc)?;
            json!({})
        }
        "create-access-key" => {
            let profile = m.get_one::<String>("profile-name").map(String::as_str);
            json!({"AccessKey": session.iam.create_access_key(account, s(m, "user-name"), profile).map_err(svc)?})
        }
        "put-user-policy" => {
            let text = document("PutUserPolicy", m, "policy-document")?;
            session
                .iam
                .put_user_policy(account, s(m, "user-name"), s(m, "policy-name"), &text)
                .map_err(svc)?;
            json!({})
        }
        "get-user-policy" => {
            let doc = session
                .iam
                .get_user_policy(account, s(m, "user-name"), s(m, "policy-name"))
                .map_err(svc)?;
            json!({"UserName": s(m, "user-name"), "PolicyName": s(m, "policy-name"), "PolicyDocument": doc})
        }
        "delete-user-policy" => {
            session
                .iam
                .delete_user_policy(account, s(m, "user-name"), s(m, "policy-name"))
                .map_err(svc)?;
            json!({})
        }
        "list-user-policies" => {
            json!({"PolicyNames": session.iam.list_user_policies(account, s(m, "user-name")).map_err(svc)?})
        }
        "register-volume-host" | "deregister-volume-host" => {
            let user = m.get_one::<String>("user-name").map(String::as_str);
            let arn = if sub == "register-volume-host" {
                session.iam.register_volume_host(account, user)
            } else {
                session.iam.deregister_volume_host(account, user)
            }
            .map_err(svc)?;
            let instance = keyvol::ec2::hosts::remote_instance_id(
                account.as_str(),
                session.ctx.region.as_str(),
                &arn,
            );
            json!({"VolumeHost": arn, "InstanceId": instance, "Registered": sub == "register-volume-host"})
        }
        "list-volume-hosts" => {
            json!({"VolumeHosts": session.iam.list_volume_hosts(account).map_err(svc)?})
        }
        "create-role" => {
            let trust = document("CreateRole", m, "assume-role-policy-document")?;
            session
                .iam
                .create_role(
                    account,
                    s(m, "role-name"),
                    &trust,
                    m.get_one::<String>("description").map(String::as_str),
                    m.get_one::<i64>("max-session-duration").copied(),
                    &tags_of(m)?,
                )
                .map_err(svc)?
        }
        "get-role" => session
            .iam
            .get_role(account, s(m, "role-name"))
            .map_err(svc)?,
        "list-roles" => session.iam.list_roles(account).map_err(svc)?,
        "delete-role" => {
            session
                .iam
                .delete_role(account, s(m, "role-name"))
                .map_err(svc)?;
            json!({})
        }
        "put-role-policy" => {
            let text = document("PutRolePolicy", m, "policy-document")?;
            session
                .iam
                .put_role_policy(account, s(m, "role-name"), s(m, "policy-name"), &text)
                .map_err(svc)?;
            json!({})
        }
        "delete-role-policy" => {
            session
                .iam
                .delete_role_policy(account, s(m, "role-name"), s(m, "policy-name"))
                .map_err(svc)?;
            json!({})
        }
        "list-role-policies" => {
            json!({"PolicyNames": session.iam.list_role_policies(account, s(m, "role-name")).map_err(svc)?})
        }
        "tag-user" | "tag-role" | "untag-user" | "untag-role" | "list-user-tags"
        | "list-role-tags" => {
            let (kind, who) = if sub.ends_with("user") || sub.ends_with("user-tags") {
                ("user", s(m, "user-name"))
            } else {
                ("role", s(m, "role-name"))
            };
            match sub.split('-').next() {
                Some("tag") => {
                    session
                        .iam
                        .tag_principal(account, kind, who, &tags_of(m)?)
                        .map_err(svc)?;
                    json!({})
                }
                Some("untag") => {
                    let keys: Vec<String> = m
                        .get_many::<String>("tag-keys")
                        .map(|v| v.cloned().collect())
                        .unwrap_or_default();
                    session
                        .iam
                        .untag_principal(account, kind, who, &keys)
                        .map_err(svc)?;
                    json!({})
                }
                _ => session
                    .iam
                    .list_principal_tags(account, kind, who)
                    .map_err(svc)?,
            }
        }
        "list-profiles" => {
            let p = session.iam.list_profiles().map_err(svc)?;
            json!({"Profiles": p.into_iter().map(|(n, k)| json!({"ProfileName": n, "AccessKeyId": k})).collect::<Vec<_>>()})
        }
        "get-caller-identity" => {
            json!({"UserId": caller.principal_arn, "Account": caller.account, "Arn": caller.principal_arn})
        }
        other => return Err(CliError::usage(format!("unknown iam command {other}"))),
    })
}
