//! `keyvol kms <operation>`: the aws CLI's operation names and flags, built
//! from the KMS's operation table (`keyvol::kms::Operation::ALL`) and sent
//! through the KMS's JSON entry point.

use std::io::Read;

use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::{json, Map, Value};

use super::CliError;
use keyvol::kms::operation::{Member, Operation};
use keyvol::validate::{member_name, Constraint, Violation};

/// How a request field is given on the command line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    /// `fileb://PATH` or base64.
    Blob,
    /// `k=v,k2=v2`, JSON, or `file://PATH`.
    Map,
    /// `TagKey=k,TagValue=v ...` or JSON.
    Tags,
    /// One or more values.
    List,
    /// `file://PATH` or the text itself.
    Doc,
    /// A JSON value, or `file://PATH`.
    Json,
}

fn kind_of(field: &str) -> Kind {
    match field {
        "Plaintext"
        | "CiphertextBlob"
        | "Message"
        | "Signature"
        | "Mac"
        | "PublicKey"
        | "EncryptedKeyMaterial"
        | "ImportToken" => Kind::Blob,
        "EncryptionContext" | "SourceEncryptionContext" | "DestinationEncryptionContext" => {
            Kind::Map
        }
        "Tags" => Kind::Tags,
        "TagKeys" | "GrantTokens" | "Operations" | "EncryptionContextEquals" => Kind::List,
        "Policy" => Kind::Doc,
        "Constraints" | "Recipient" => Kind::Json,
        "NumberOfBytes" | "PendingWindowInDays" | "Limit" | "RotationPeriodInDays" => Kind::Int,
        "BypassPolicyLockoutSafetyCheck" | "MultiRegion" | "DryRun" => Kind::Bool,
        // Epoch seconds or RFC 3339, as the aws CLI takes timestamps.
        "ValidTo" => Kind::Str,
        _ => Kind::Str,
    }
}

/// The operations with a `keyvol kms` command: every offered operation of
/// the KMS's table, with its members as flags.
fn commands() -> impl Iterator<Item = (&'static Operation, &'static [Member])> {
    Operation::ALL
        .iter()
        .filter_map(|op| op.members.map(|members| (op, members)))
}

/// The help line of a request field (the aws CLI's parameter meaning).
fn field_help(field: &str) -> &'static str {
    match field {
        "KeyId" => "The KMS key: key id, key ARN, alias/NAME or alias ARN",
        "Policy" => "The key policy JSON: file://PATH or the document itself",
        "Description" => "A description of the key",
        "ReplicaRegion" => "The Region of the new replica key, such as us-west-2",
        "PrimaryRegion" => "The Region of the replica key that becomes the primary key",
        "KeyUsage" => "ENCRYPT_DECRYPT, SIGN_VERIFY, GENERATE_VERIFY_MAC or KEY_AGREEMENT",
        "KeySpec" => {
            "The key spec (SYMMETRIC_DEFAULT, RSA_2048, ECC_NIST_P256, HMAC_256, AES_256, ...)"
        }
        "CustomerMasterKeySpec" => "Deprecated alias of --key-spec",
        "Origin" => "AWS_KMS (default) or EXTERNAL (import your own key material)",
        "BypassPolicyLockoutSafetyCheck" => {
            "Skip the check that the policy keeps the caller able to manage the key"
        }
        "Tags" => "TagKey=k,TagValue=v ... or JSON",
        "MultiRegion" => "Create a multi-Region primary key",
        "Limit" => "At most this many items per page",
        "Marker" => "Continue after the NextMarker of the previous page",
        "PendingWindowInDays" => "Days until deletion, 7..30 (default 30)",
        "Plaintext" => "The data: fileb://PATH or base64",
        "CiphertextBlob" => "The ciphertext: fileb://PATH or base64",
        "EncryptionContext" => "k=v,k2=v2 or JSON: bound to the ciphertext",
        "SourceEncryptionContext" => "The encryption context of the ciphertext given",
        "DestinationEncryptionContext" => "The encryption context of the new ciphertext",
        "EncryptionAlgorithm" => "SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256",
        "SourceEncryptionAlgorithm" => "The algorithm the ciphertext was made with",
        "DestinationEncryptionAlgorithm" => "The algorithm of the new ciphertext",
        "SourceKeyId" => "The key the ciphertext was made under (checked when given)",
        "DestinationKeyId" => "The key to re-encrypt under",
        "GrantTokens" => "Grant tokens of grants not yet visible everywhere",
        "DryRun" => "Check permissions only; answers DryRunOperationException on success",
        "NumberOfBytes" => "Length of the data key or random bytes (1..1024)",
        "AliasName" => "alias/NAME",
        "TargetKeyId" => "The key the alias points to",
        "RotationPeriodInDays" => "Days between automatic rotations, 90..2560 (default 365)",
        "TagKeys" => "The tag keys to remove",
        "PolicyName" => "The policy name (only `default` exists)",
        "GranteePrincipal" => "The ARN that the grant lets use the key",
        "RetiringPrincipal" => "The ARN that may retire the grant",
        "Operations" => "The operations the grant allows (Encrypt Decrypt ...)",
        "Constraints" => "Encryption context constraints as JSON",
        "Name" => "A name for the grant (retrying with the same name is idempotent)",
        "GrantId" => "The grant id",
        "GrantToken" => "The grant token",
        "Message" => "The message: fileb://PATH or base64",
        "MessageType" => "RAW (default), DIGEST, or EXTERNAL_MU (ML-DSA keys)",
        "SigningAlgorithm" => {
            "e.g. RSASSA_PSS_SHA_256, ECDSA_SHA_256, ED25519_SHA_512, ML_DSA_SHAKE_256"
        }
        "Signature" => "The signature: fileb://PATH or base64",
        "MacAlgorithm" => "HMAC_SHA_224, HMAC_SHA_256, HMAC_SHA_384 or HMAC_SHA_512",
        "Mac" => "The MAC: fileb://PATH or base64",
        "KeyPairSpec" => "The key pair spec (RSA_2048, ECC_NIST_P256, ...)",
        "KeyAgreementAlgorithm" => "ECDH",
        "PublicKey" => "The other party's public key (DER): fileb://PATH or base64",
        "Recipient" => "An attested recipient as JSON (not supported outside Nitro Enclaves)",
        "WrappingAlgorithm" => {
            "RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, RSA_AES_KEY_WRAP_SHA_256, ..."
        }
        "WrappingKeySpec" => "RSA_2048, RSA_3072 or RSA_4096",
        "ImportToken" => "The import token of get-parameters-for-import: fileb://PATH or base64",
        "EncryptedKeyMaterial" => "The wrapped key material: fileb://PATH or base64",
        "ValidTo" => "When the material expires (epoch seconds or RFC 3339)",
        "ExpirationModel" => "KEY_MATERIAL_EXPIRES or KEY_MATERIAL_DOES_NOT_EXPIRE",
        "ImportType" => {
            "NEW_KEY_MATERIAL (rotate to new material) or EXISTING_KEY_MATERIAL (reimport)"
        }
        "KeyMaterialDescription" => "A description of this key material",
        "KeyMaterialId" => "The key material (its KeyMaterialId)",
        "IncludeKeyMaterial" => "ALL_KEY_MATERIAL or ROTATIONS_ONLY",
        "CustomKeyStoreId" => "A custom key store (not supported)",
        "EncryptionContextEquals" => "Exactly this encryption context",
        _ => "A request field of the operation",
    }
}

/// An example line for the most used operations.
fn example_of(op: &str) -> Option<&'static str> {
    Some(match op {
        "CreateKey" => "keyvol kms create-key --description demo --query KeyMetadata.KeyId --output text",
        "Encrypt" => "keyvol kms encrypt --key-id alias/demo --plaintext fileb://secret.txt --encryption-context app=billing",
        "Decrypt" => "keyvol kms decrypt --ciphertext-blob fileb://secret.enc --encryption-context app=billing",
        "GenerateDataKey" => "keyvol kms generate-data-key --key-id alias/demo --key-spec AES_256",
        "CreateAlias" => "keyvol kms create-alias --alias-name alias/demo --target-key-id KEY_ID",
        "ScheduleKeyDeletion" => "keyvol kms schedule-key-deletion --key-id KEY_ID --pending-window-in-days 7",
        "CreateGrant" => "keyvol kms create-grant --key-id KEY_ID --grantee-principal arn:aws:iam::111122223333:user/alice --operations Encrypt Decrypt",
        "Sign" => "keyvol kms sign --key-id KEY_ID --message fileb://msg --signing-algorithm ECDSA_SHA_256",
        "PutKeyPolicy" => "keyvol kms put-key-policy --key-id KEY_ID --policy-name default --policy file://policy.json",
        _ => return None,
    })
}

/// `CreateKey` -> `create-key`.
pub fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn command() -> Command {
    let mut cmd = Command::new("kms")
        .about("AWS KMS operations on the embedded KMS (aws kms compatible)")
        .subcommand_required(true);
    for (op, members) in commands() {
        let mut sub = Command::new(kebab(op.name)).about(op.summary).arg(
            Arg::new("cli-input-json")
                .long("cli-input-json")
                .help("The request as JSON (or file://PATH)"),
        );
        if let Some(example) = example_of(op.name) {
            sub = sub.after_help(format!("Example:\n  {example}"));
        }
        for &Member { name: f, required } in members {
            let long = kebab(f);
            let mut arg = Arg::new(f).long(long.clone()).help(field_help(f));
            arg = match kind_of(f) {
                Kind::Bool => arg.action(ArgAction::SetTrue),
                Kind::List | Kind::Tags => arg.num_args(1..).action(ArgAction::Append),
                _ => arg.num_args(1),
            };
            if required {
                arg = arg.help(format!("(required) {}", field_help(f)));
            }
            sub = sub.arg(arg);
            if kind_of(f) == Kind::Bool {
                sub = sub.arg(
                    Arg::new(format!("no-{f}"))
                        .long(format!("no-{long}"))
                        .action(ArgAction::SetTrue)
                        .help(format!("The opposite of --{long}"))
                        .hide(true),
                );
            }
        }
        cmd = cmd.subcommand(sub);
    }
    cmd.subcommand(
        Command::new("usage")
            .about("The month's bill of the caller's account by AWS KMS pricing")
            .arg(
                Arg::new("month")
                    .long("month")
                    .help("YYYY-MM (default: this month)"),
            ),
    )
    .subcommand(
        Command::new("audit")
            .about("The audit log: list events or verify the hash chain")
            .subcommand_required(true)
            .subcommand(
                Command::new("list")
                    .about("Audit events of the caller's account, newest last")
                    .after_help(
                        "Example:\n  keyvol kms audit list --event-name Decrypt --errors-only",
                    )
                    .arg(
                        Arg::new("key-id")
                            .long("key-id")
                            .help("Only events of this key (ARN)"),
                    )
                    .arg(
                        Arg::new("event-name")
                            .long("event-name")
                            .help("Only events of this operation (e.g. Decrypt)"),
                    )
                    .arg(
                        Arg::new("principal")
                            .long("principal")
                            .help("Only events of this caller ARN"),
                    )
                    .arg(
                        Arg::new("start-time")
                            .long("start-time")
                            .help("Events at or after (epoch seconds or RFC 3339)"),
                    )
                    .arg(
                        Arg::new("end-time")
                            .long("end-time")
                            .help("Events at or before (epoch seconds or RFC 3339)"),
                    )
                    .arg(
                        Arg::new("errors-only")
                            .long("errors-only")
                            .action(ArgAction::SetTrue)
                            .help("Only calls that failed or were denied"),
                    )
                    .arg(
                        Arg::new("max-items")
                            .long("max-items")
                            .value_parser(clap::value_parser!(i64))
                            .help("At most this many events"),
                    ),
            )
            .subcommand(
                Command::new("verify")
                    .about("Check the hash chain of the audit log (fails when tampered with)"),
            ),
    )
}

/// The largest value of a blob field in bytes (AWS KMS's limits).
fn blob_limit(field: &str) -> usize {
    match field {
        "Plaintext" | "Message" => 4096,
        "PublicKey" => 8192,
        // CiphertextBlob, Signature, Mac, EncryptedKeyMaterial, ImportToken.
        _ => 6144,
    }
}

/// The largest `file://` text of a field in bytes: a key policy's limit
/// (32 KiB), a generous bound for the rest (contexts, constraints, a
/// whole request).
fn text_limit(field: &str) -> usize {
    match field {
        "Policy" => 32 * 1024,
        "cli-input-json" => 1024 * 1024,
        _ => 64 * 1024,
    }
}

/// Reads a `file://` or `fileb://` path, at most `limit` + 1 bytes so that
/// a huge file (or `/dev/zero`) fails at once instead of filling memory.
pub(crate) fn read_path(op: &str, field: &str, p: &str, limit: usize) -> Result<Vec<u8>, CliError> {
    let unreadable = |e: std::io::Error| {
        CliError::usage(format!(
            "Error parsing parameter: unable to read file {p}: {e}"
        ))
    };
    let mut bytes = Vec::new();
    std::fs::File::open(p)
        .map_err(unreadable)?
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > limit {
        let v = Violation::hidden(member_name(field), Constraint::MaxLength(limit))
            .with_suffix(format!(" (file {p} is larger)"));
        return Err(CliError::service(op, keyvol::kms::KmsError::from(v)));
    }
    Ok(bytes)
}

fn text_arg(op: &str, field: &str, v: &str) -> Result<String, CliError> {
    match v.strip_prefix("file://") {
        Some(p) => String::from_utf8(read_path(op, field, p, text_limit(field))?)
            .map_err(|_| CliError::usage(format!("file {p} is not UTF-8 text"))),
        None => Ok(v.to_string()),
    }
}

fn value_of(op: &str, field: &str, kind: Kind, raw: Vec<String>) -> Result<Value, CliError> {
    let one = || raw.first().cloned().unwrap_or_default();
    Ok(match kind {
        Kind::Str => json!(one()),
        Kind::Int => json!(one().parse::<i64>().map_err(|_| CliError::usage(format!(
            "invalid value '{}' for --{}: expected an integer",
            one(),
            kebab(field)
        )))?),
        Kind::Bool => json!(true),
        Kind::Doc => json!(text_arg(op, field, &one())?),
        Kind::Blob => {
            let v = one();
            let bytes = match v.strip_prefix("fileb://") {
                Some(p) => read_path(op, field, p, blob_limit(field))?,
                None => keyvol::kms::api::b64_decode(&v).ok_or_else(|| {
                    CliError::usage(format!(
                        "Invalid base64 for --{}: give base64 or fileb://PATH",
                        kebab(field)
                    ))
                })?,
            };
            json!(keyvol::kms::api::b64_encode(&bytes))
        }
        Kind::Map => parse_map(&text_arg(op, field, &one())?, field)?,
        Kind::Json => serde_json::from_str(&text_arg(op, field, &one())?)
            .map_err(|e| CliError::usage(format!("--{} is not valid JSON: {e}", kebab(field))))?,
        Kind::List => json!(raw),
        Kind::Tags => parse_tags(&raw)?,
    })
}

/// `k=v,k2=v2` or a JSON object.
pub fn parse_map(s: &str, field: &str) -> Result<Value, CliError> {
    let s = s.trim();
    if s.starts_with('{') {
        let v: Value = serde_json::from_str(s)
            .map_err(|e| CliError::usage(format!("--{} is not valid JSON: {e}", kebab(field))))?;
        if !v
            .as_object()
            .is_some_and(|o| o.values().all(Value::is_string))
        {
            return Err(CliError::usage(format!(
                "--{} must map strings to strings",
                kebab(field)
            )));
        }
        return Ok(v);
    }
    let mut m = Map::new();
    for pair in s.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            CliError::usage(format!(
                "--{}: '{pair}' is not key=value (use k=v,k2=v2 or JSON)",
                kebab(field)
            ))
        })?;
        m.insert(k.to_string(), json!(v));
    }
    Ok(Value::Object(m))
}

fn parse_tags(raw: &[String]) -> Result<Value, CliError> {
    Ok(Value::Array(
        tag_pairs(raw, "TagKey", "TagValue")?
            .into_iter()
            .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
            .collect(),
    ))
}

/// `--tags` as the aws CLI takes it: `K=k,V=v ...` (with `key`/`value`
/// the member names, `TagKey`/`TagValue` for the KMS, `Key`/`Value` for
/// IAM) or a JSON list of such objects.
pub(super) fn tag_pairs(
    raw: &[String],
    key: &str,
    value: &str,
) -> Result<Vec<(String, String)>, CliError> {
    if raw.len() == 1 && raw[0].trim_start().starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(&raw[0])
            .map_err(|e| CliError::usage(format!("--tags is not valid JSON: {e}")))?;
        return items
            .iter()
            .map(|t| match (t[key].as_str(), t.get(value)) {
                (Some(k), v) => Ok((
                    k.to_string(),
                    v.and_then(Value::as_str).unwrap_or("").to_string(),
                )),
                _ => Err(CliError::usage(format!("--tags: {t} has no {key}"))),
            })
            .collect();
    }
    let mut out = Vec::new();
    for t in raw {
        let mut k = None;
        let mut v = String::new();
        for part in t.split(',') {
            match part.split_once('=') {
                Some((n, x)) if n == key => k = Some(x.to_string()),
                Some((n, x)) if n == value => v = x.to_string(),
                _ => {
                    return Err(CliError::usage(format!(
                        "--tags: '{t}' is not {key}=k,{value}=v"
                    )))
                }
            }
        }
        let k = k.ok_or_else(|| CliError::usage(format!("--tags: '{t}' has no {key}")))?;
        out.push((k, v));
    }
    Ok(out)
}

/// Builds the AWS request body of `op` from its matches.
pub fn request_of(op: &str, m: &ArgMatches) -> Result<(String, Value), CliError> {
    let (Operation { name, .. }, members) = commands()
        .find(|(o, _)| kebab(o.name) == op)
        .ok_or_else(|| CliError::usage(format!("unknown kms operation {op}")))?;
    let mut req = match m.get_one::<String>("cli-input-json") {
        Some(j) => serde_json::from_str::<Value>(&text_arg(name, "cli-input-json", j)?)
            .map_err(|e| CliError::usage(format!("--cli-input-json is not valid JSON: {e}")))?,
        None => json!({}),
    };
    let obj = req
        .as_object_mut()
        .ok_or_else(|| CliError::usage("--cli-input-json must be a JSON object"))?;
    for &Member { name: f, .. } in members {
        let kind = kind_of(f);
        if kind == Kind::Bool {
            if m.get_flag(f) {
                obj.insert(f.to_string(), json!(true));
            } else if m.get_flag(&format!("no-{f}")) {
                obj.insert(f.to_string(), json!(false));
            }
            continue;
        }
        if let Some(vals) = m.get_many::<String>(f) {
            obj.insert(
                f.to_string(),
                value_of(name, f, kind, vals.cloned().collect())?,
            );
        }
    }
    for Member { name: f, .. } in members.iter().filter(|m| m.required) {
        if !obj.contains_key(*f) {
            return Err(CliError::usage(format!(
                "the following arguments are required: --{}",
                kebab(f)
            )));
        }
    }
    Ok((name.to_string(), req))
}

pub fn run_audit(
    s: &keyvol::session::Session,
    which: &str,
    m: &ArgMatches,
) -> Result<Value, CliError> {
    match which {
        "verify" => {
            let r = s
                .kms
                .audit_verify()
                .map_err(|e| CliError::service("VerifyAuditLog", e))?;
            let valid = r.valid;
            let v = serde_json::to_value(r).unwrap_or_default();
            if !valid {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Err(CliError::usage("the audit log failed verification"));
            }
            Ok(v)
        }
        "list" => {
            let time = |n: &str| -> Result<Option<i64>, CliError> {
                m.get_one::<String>(n)
                    .map(|t| {
                        t.parse::<i64>()
                            .or_else(|_| {
                                time::OffsetDateTime::parse(
                                    t,
                                    &time::format_description::well_known::Rfc3339,
                                )
                                .map(|d| d.unix_timestamp())
                            })
                            .map_err(|_| {
                                CliError::usage(format!(
                                    "--{n} '{t}': give epoch seconds or RFC 3339"
                                ))
                            })
                    })
                    .transpose()
            };
            let f = keyvol::kms::audit::AuditFilter {
                account: Some(s.ctx.caller.account.to_string()),
                key_arn: m.get_one::<String>("key-id").cloned(),
                event_name: m.get_one::<String>("event-name").cloned(),
                principal: m.get_one::<String>("principal").cloned(),
                start_time: time("start-time")?,
                end_time: time("end-time")?,
                errors_only: m.get_flag("errors-only"),
                limit: m.get_one::<i64>("max-items").copied(),
            };
            let events = s
                .kms
                .audit_list(&f)
                .map_err(|e| CliError::service("LookupEvents", e))?;
            Ok(json!({"Events": events}))
        }
        other => Err(CliError::usage(format!("unknown audit command {other}"))),
    }
}
