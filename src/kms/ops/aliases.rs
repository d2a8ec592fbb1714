//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases.

use super::*;

/// The aliases of AWS managed keys that AWS lists in every account.
pub(super) const PREDEFINED_ALIASES: &[&str] = &[
    "alias/aws/acm",
    "alias/aws/dynamodb",
    "alias/aws/ebs",
    "alias/aws/elasticfilesystem",
    "alias/aws/es",
    "alias/aws/glue",
    "alias/aws/kinesisvideo",
    "alias/aws/lambda",
    "alias/aws/rds",
    "alias/aws/redshift",
    "alias/aws/s3",
    "alias/aws/secretsmanager",
    "alias/aws/ssm",
    "alias/aws/xray",
];

pub(super) fn validate_alias_name(name: &str) -> KmsResult<()> {
    let rest = name.strip_prefix("alias/").unwrap_or_default();
    if rest.is_empty()
        || name.len() > 256
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
    {
        return Err(validate::pattern("aliasName", name, "^alias/[a-zA-Z0-9/_-]+$").into());
    }
    if name.starts_with("alias/aws/") {
        return Err(KmsError::new(
            ErrorCode::InvalidAliasNameException,
            format!("Alias {name} must not begin with 'alias/aws/': that prefix is reserved for AWS managed keys."),
        ));
    }
    Ok(())
}

/// The alias `name` of the caller's account in its region, or AWS's
/// NotFoundException.
fn existing_alias(op: &Op<'_>, name: &str) -> KmsResult<store::AliasRow> {
    store::alias(op.tx, &op.ctx.caller.account, &op.ctx.region, name)?.ok_or_else(|| {
        KmsError::not_found(format!(
            "Alias arn:aws:kms:{}:{}:{} is not found.",
            op.ctx.region, op.ctx.caller.account, name
        ))
    })
}

impl Kms {
    pub(crate) fn create_alias_body(
        &self,
        op: &mut Op<'_>,
        req: &AliasRequest,
    ) -> KmsResult<Empty> {
        let name = req.alias_name.clone().unwrap_or_default();
        validate_alias_name(&name)?;
        let k = op.resolve(req.target_key_id.as_deref(), false)?;
        if k.account != op.ctx.caller.account {
            return Err(KmsError::not_found(format!(
                "Key '{}' does not exist",
                k.arn()
            )));
        }
        crate::kms::authz::authorize_alias(op, "kms:CreateAlias", &name)?;
        op.permit("kms:CreateAlias", &k, StateRule::Manage, &no_conditions())?;
        if k.is_aws_managed() {
            return Err(access_denied_managed(op, "kms:CreateAlias", &k));
        }
        if store::alias(op.tx, &op.ctx.caller.account, &op.ctx.region, &name)?.is_some() {
            return Err(KmsError::new(
                ErrorCode::AlreadyExistsException,
                format!(
                    "An alias with the name arn:aws:kms:{}:{}:{} already exists",
                    op.ctx.region, op.ctx.caller.account, name
                ),
            ));
        }
        op.tx
                .execute(
                    "INSERT INTO aliases (account, region, name, key_id, created, updated) VALUES (?1,?2,?3,?4,?5,?5)",
                    rusqlite::params![op.ctx.caller.account.as_str(), op.ctx.region.as_str(), name, k.key_id, op.now],
                )
                .map_err(store::db)?;
        Ok(Empty {})
    }

    pub(crate) fn update_alias_body(
        &self,
        op: &mut Op<'_>,
        req: &AliasRequest,
    ) -> KmsResult<Empty> {
        let name = req.alias_name.clone().unwrap_or_default();
        validate_alias_name(&name)?;
        let current = existing_alias(op, &name)?;
        let old = store::get_key(op.tx, &current.key_id)?
            .ok_or_else(|| KmsError::not_found("alias target is gone"))?;
        let new = op.resolve(req.target_key_id.as_deref(), false)?;
        crate::kms::authz::authorize_alias(op, "kms:UpdateAlias", &name)?;
        op.permit("kms:UpdateAlias", &old, StateRule::Any, &no_conditions())?;
        op.permit("kms:UpdateAlias", &new, StateRule::Manage, &no_conditions())?;
        if old.key_spec != new.key_spec || old.key_usage != new.key_usage {
            return Err(KmsError::validation(format!(
                    "Alias {name} can only point to a key of the same key spec and key usage ({} / {}).", old.key_spec, old.key_usage
                )));
        }
        op.tx
                .execute(
                    "UPDATE aliases SET key_id = ?4, updated = ?5 WHERE account = ?1 AND region = ?2 AND name = ?3",
                    rusqlite::params![op.ctx.caller.account.as_str(), op.ctx.region.as_str(), name, new.key_id, op.now],
                )
                .map_err(store::db)?;
        Ok(Empty {})
    }

    pub(crate) fn delete_alias_body(
        &self,
        op: &mut Op<'_>,
        req: &AliasRequest,
    ) -> KmsResult<Empty> {
        let name = req.alias_name.clone().unwrap_or_default();
        if name.starts_with("alias/aws/") {
            return Err(KmsError::new(
                ErrorCode::InvalidAliasNameException,
                format!("Alias {name} is reserved for AWS managed keys and cannot be deleted."),
            ));
        }
        validate_alias_name(&name)?;
        let current = existing_alias(op, &name)?;
        if let Some(k) = store::get_key(op.tx, &current.key_id)? {
            op.trace.key(&k);
            crate::kms::authz::authorize_alias(op, "kms:DeleteAlias", &name)?;
            op.permit("kms:DeleteAlias", &k, StateRule::Any, &no_conditions())?;
        }
        op.tx
            .execute(
                "DELETE FROM aliases WHERE account = ?1 AND region = ?2 AND name = ?3",
                rusqlite::params![op.ctx.caller.account.as_str(), op.ctx.region.as_str(), name],
            )
            .map_err(store::db)?;
        Ok(Empty {})
    }

    pub(crate) fn list_aliases_body(
        &self,
        op: &mut Op<'_>,
        req: &ListRequest,
    ) -> KmsResult<ListAliasesResponse> {
        let key = match req.key_id.as_deref() {
            Some(s) => {
                let k = op.resolve(Some(s), false)?;
                op.permit("kms:ListAliases", &k, StateRule::Any, &no_conditions())?;
                Some(k.key_id)
            }
            None => {
                crate::kms::authz::authorize_account_action(op, "kms:ListAliases")?;
                None
            }
        };
        let rows = store::aliases(op.tx, &op.ctx.caller.account, &op.ctx.region, key.as_ref())?;
        let alias_arn = |name: &str| {
            format!(
                "arn:aws:kms:{}:{}:{name}",
                op.ctx.region, op.ctx.caller.account
            )
        };
        // AWS lists the predefined aliases of its managed keys in every
        // account, without a target until the service first uses one.
        let predefined: Vec<AliasEntry> = if key.is_none() {
            PREDEFINED_ALIASES
                .iter()
                .filter(|name| !rows.iter().any(|a| a.name == **name))
                .map(|name| AliasEntry {
                    alias_arn: alias_arn(name),
                    alias_name: (*name).to_string(),
                    target_key_id: None,
                    creation_date: None,
                    last_updated_date: None,
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut entries: Vec<AliasEntry> = rows
            .into_iter()
            .map(|a| AliasEntry {
                alias_arn: format!(
                    "arn:aws:kms:{}:{}:{}",
                    op.ctx.region, op.ctx.caller.account, a.name
                ),
                alias_name: a.name,
                target_key_id: Some(a.key_id.to_string()),
                creation_date: Some(a.created),
                last_updated_date: Some(a.updated),
            })
            .collect();
        entries.extend(predefined);
        entries.sort_by(|a, b| a.alias_name.cmp(&b.alias_name));
        let (aliases, truncated, next_marker) =
            paginate(entries, req.limit, req.marker.as_deref())?;
        Ok(ListAliasesResponse {
            aliases,
            truncated,
            next_marker,
        })
    }
}
