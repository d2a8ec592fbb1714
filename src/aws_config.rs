//! AWS credentials for the S3 snapshot store, found the way the aws CLI and
//! SDKs find them (the default credential chain), from the environment and
//! the shared files:
//!
//! 1. `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`);
//! 2. the profile `AWS_PROFILE` (default `default`): `aws_access_key_id`,
//!    `aws_secret_access_key`, `aws_session_token` from the credentials file
//!    (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`, sections
//!    `[NAME]`), then the config file (`AWS_CONFIG_FILE`, default
//!    `~/.aws/config`, sections `[profile NAME]` and `[default]`);
//! 3. web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (or the
//!    profile's `web_identity_token_file` + `role_arn`), exchanged with STS
//!    by object_store (`AssumeRoleWithWebIdentity`);
//! 4. container credentials (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, or
//!    `..._FULL_URI` with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`);
//! 5. the instance metadata service, only when the profile says
//!    `credential_source = Ec2InstanceMetadata` (elsewhere it would only
//!    time out, so a clear error is given instead).
//!
//! Secrets are kept in [`SecretBytes`] and never appear in errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::secret::SecretBytes;

/// Where credentials come from, for object_store's S3 builder.
#[derive(Debug, Clone)]
pub enum AwsCredentials {
    Static {
        access_key_id: String,
        secret_access_key: SecretBytes,
        session_token: Option<SecretBytes>,
        /// Where they were found (`environment`, `profile dev in FILE`).
        source: String,
    },
    WebIdentity {
        token_file: String,
        role_arn: String,
        session_name: Option<String>,
        sts_endpoint: Option<String>,
    },
    Container {
        relative_uri: Option<String>,
        full_uri: Option<String>,
        token_file: Option<String>,
    },
    InstanceMetadata,
}

/// One section of a shared file: lower-case keys to values.
type Section = BTreeMap<String, String>;

/// Parses the INI dialect of `~/.aws/config` and `~/.aws/credentials`:
/// `[section]` headers, `key = value` lines, `#` and `;` comments. Nested
/// (indented) sub-sections such as `s3 =` are skipped.
pub fn parse_shared_file(text: &str) -> BTreeMap<String, Section> {
    let mut out: BTreeMap<String, Section> = BTreeMap::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let nested = raw.starts_with([' ', '\t']);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            out.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        if nested {
            continue;
        }
        let (Some(section), Some((k, v))) = (&current, line.split_once('=')) else {
            continue;
        };
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        out.entry(section.clone())
            .or_default()
            .insert(k.trim().to_ascii_lowercase(), v.to_string());
    }
    out
}

fn home_file(env: &dyn Fn(&str) -> Option<String>, var: &str, default: &str) -> Option<PathBuf> {
    if let Some(p) = env(var).filter(|p| !p.is_empty()) {
        let p = match p.strip_prefix("~/") {
            Some(rest) => PathBuf::from(env("HOME")?).join(rest),
            None => PathBuf::from(p),
        };
        return Some(p);
    }
    env("HOME").map(|h| PathBuf::from(h).join(".aws").join(default))
}

/// The settings of `profile`: the credentials file's over the config file's.
fn profile_settings(
    env: &dyn Fn(&str) -> Option<String>,
    profile: &str,
) -> Result<(Section, String), String> {
    let mut merged = Section::new();
    let mut found_in = Vec::new();
    let config = home_file(env, "AWS_CONFIG_FILE", "config");
    let creds = home_file(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let read = |p: &PathBuf| -> Result<Option<String>, String> {
        match std::fs::read_to_string(p) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", p.display())),
        }
    };
    if let Some(p) = &config {
        if let Some(text) = read(p)? {
            let sections = parse_shared_file(&text);
            let name = if profile == "default" {
                "default".to_string()
            } else {
                format!("profile {profile}")
            };
            if let Some(s) = sections.get(&name) {
                merged.extend(s.clone());
                found_in.push(p.display().to_string());
            }
        }
    }
    if let Some(p) = &creds {
        if let Some(text) = read(p)? {
            if let Some(s) = parse_shared_file(&text).get(profile) {
                merged.extend(s.clone());
                found_in.push(p.display().to_string());
            }
        }
    }
    Ok((merged, found_in.join(" and ")))
}

/// Resolves the chain with the process environment.
pub fn resolve() -> Result<AwsCredentials, String> {
    resolve_with(&|k| std::env::var(k).ok())
}

/// Resolves the chain with `env` as the environment (for tests).
pub fn resolve_with(env: &dyn Fn(&str) -> Option<String>) -> Result<AwsCredentials, String> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        return Ok(AwsCredentials::Static {
            access_key_id: id,
            secret_access_key: SecretBytes::new(secret.into_bytes()),
            session_token: var("AWS_SESSION_TOKEN").map(|t| SecretBytes::new(t.into_bytes())),
            source: "environment".into(),
        });
    }
    if var("AWS_ACCESS_KEY_ID").is_some() {
        return Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into());
    }
    let explicit_profile = var("AWS_PROFILE");
    let profile = explicit_profile.clone().unwrap_or_else(|| "default".into());
    let (settings, found_in) = profile_settings(env, &profile)?;
    if explicit_profile.is_some() && found_in.is_empty() {
        return Err(format!(
            "AWS_PROFILE={profile}: no such profile in the AWS config or credentials file \
             (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, ~/.aws/)"
        ));
    }
    let get = |k: &str| settings.get(k).cloned();
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => {
            return Ok(AwsCredentials::Static {
                access_key_id: id,
                secret_access_key: SecretBytes::new(secret.into_bytes()),
                session_token: get("aws_session_token").map(|t| SecretBytes::new(t.into_bytes())),
                source: format!("profile {profile} in {found_in}"),
            })
        }
        (Some(_), None) => {
            return Err(format!(
                "profile {profile} in {found_in} has aws_access_key_id but no aws_secret_access_key"
            ))
        }
        _ => {}
    }
    let token_file = var("AWS_WEB_IDENTITY_TOKEN_FILE").or_else(|| get("web_identity_token_file"));
    let role_arn = var("AWS_ROLE_ARN").or_else(|| get("role_arn"));
    if let (Some(token_file), Some(role_arn)) = (token_file, role_arn.clone()) {
        return Ok(AwsCredentials::WebIdentity {
            token_file,
            role_arn,
            session_name: var("AWS_ROLE_SESSION_NAME").or_else(|| get("role_session_name")),
            sts_endpoint: var("AWS_ENDPOINT_URL_STS"),
        });
    }
    if role_arn.is_some() && get("source_profile").is_some() {
        return Err(format!(
            "profile {profile} assumes a role through source_profile, which keyvol does not do; \
             run `aws configure export-credentials --profile {profile} --format env` and set \
             those variables instead"
        ));
    }
    let relative = var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    let full = var("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if relative.is_some() || full.is_some() {
        return Ok(AwsCredentials::Container {
            relative_uri: relative,
            full_uri: full,
            token_file: var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
        });
    }
    if get("credential_source").as_deref() == Some("Ec2InstanceMetadata") {
        return Ok(AwsCredentials::InstanceMetadata);
    }
    Err(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
         AWS_SESSION_TOKEN), or AWS_PROFILE with a profile in ~/.aws/credentials or \
         ~/.aws/config, or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn parses_the_shared_file_dialect() {
        let s = parse_shared_file(
            "# c\n[default]\naws_access_key_id = A\n[profile  dev]\nregion=eu-west-1\ns3 =\n  max_concurrent_requests = 20\n; x\nAWS_Session_Token = T=\n",
        );
        assert_eq!(s["default"]["aws_access_key_id"], "A");
        assert_eq!(s["profile dev"]["region"], "eu-west-1");
        assert_eq!(s["profile dev"]["aws_session_token"], "T=");
        assert!(!s["profile dev"].contains_key("max_concurrent_requests"));
    }

    #[test]
    fn environment_then_profile_files() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        let config = dir.path().join("config");
        std::fs::write(&creds, "[dev]\naws_access_key_id = ASIADEV\naws_secret_access_key = s\naws_session_token = tok\n").unwrap();
        std::fs::write(&config, "[profile web]\nrole_arn = arn:aws:iam::1:role/r\nweb_identity_token_file = /t\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key = d\n").unwrap();
        let files = [
            ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
            ("AWS_CONFIG_FILE", config.display().to_string()),
        ];
        let mut with_env = files.to_vec();
        with_env.push(("AWS_ACCESS_KEY_ID", "AKENV".into()));
        with_env.push(("AWS_SECRET_ACCESS_KEY", "e".into()));
        with_env.push(("AWS_PROFILE", "dev".into()));
        let AwsCredentials::Static {
            access_key_id,
            source,
            ..
        } = resolve_with(&env_of(&with_env)).unwrap()
        else {
            panic!("not static")
        };
        assert_eq!(
            (access_key_id.as_str(), source.as_str()),
            ("AKENV", "environment")
        );

        let mut dev = files.to_vec();
        dev.push(("AWS_PROFILE", "dev".into()));
        let AwsCredentials::Static {
            access_key_id,
            session_token,
            ..
        } = resolve_with(&env_of(&dev)).unwrap()
        else {
            panic!("not static")
        };
        assert_eq!(access_key_id, "ASIADEV");
        assert_eq!(session_token.unwrap().expose(), b"tok");

        let AwsCredentials::Static { access_key_id, .. } = resolve_with(&env_of(&files)).unwrap()
        else {
            panic!("not static")
        };
        assert_eq!(access_key_id, "AKDEF");

        let mut web = files.to_vec();
        web.push(("AWS_PROFILE", "web".into()));
        assert!(matches!(
            resolve_with(&env_of(&web)).unwrap(),
            AwsCredentials::WebIdentity { role_arn, .. } if role_arn == "arn:aws:iam::1:role/r"
        ));

        let mut missing = files.to_vec();
        missing.push(("AWS_PROFILE", "nope".into()));
        assert!(resolve_with(&env_of(&missing))
            .unwrap_err()
            .contains("AWS_PROFILE=nope"));
        let none = [("HOME", dir.path().display().to_string())];
        assert!(resolve_with(&env_of(&none))
            .unwrap_err()
            .contains("no AWS credentials"));
    }
}
