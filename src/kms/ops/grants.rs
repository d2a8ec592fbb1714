//! The grant operations: CreateGrant (with the no-broader-than-its-parent
//! rule for grants made through a grant), ListGrants, ListRetirableGrants,
//! RetireGrant and RevokeGrant. What a grant allows is decided in
//! `kms/grants.rs`, below the authorization point.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::kms::api::Empty;
use crate::kms::grants::*;
use crate::kms::model::{KeyRecord, StateRule};
use crate::kms::op::Op;
use crate::kms::store::{self, db};
use crate::kms::{ErrorCode, Kms, KmsError, KmsResult};
use crate::policy::{keys, ConditionContext};
use crate::request_struct;
use crate::validate::{self, Constraint, Violation};

request_struct!(CreateGrantRequest {
    key_id: String,
    grantee_principal: String,
    retiring_principal: String,
    operations: Vec<String>,
    constraints: GrantConstraints,
    grant_tokens: Vec<String>,
    name: String,
    dry_run: bool,
});
request_struct!(ListGrantsRequest {
    key_id: String,
    limit: i64,
    marker: String,
    grant_id: String,
    grantee_principal: String
});
request_struct!(ListRetirableGrantsRequest {
    retiring_principal: String,
    limit: i64,
    marker: String
});
request_struct!(RetireGrantRequest {
    grant_token: String,
    key_id: String,
    grant_id: String,
    dry_run: bool
});
request_struct!(RevokeGrantRequest {
    key_id: String,
    grant_id: String,
    dry_run: bool
});

fn validate_principal(field: &str, p: &str) -> KmsResult<()> {
    let ok = p.starts_with("arn:aws:iam::") || p.ends_with(".amazonaws.com");
    if !ok || p.len() > 256 {
        return Err(Violation::shown(
            field,
            p,
            Constraint::Other(
                "Member must be a principal ARN such as arn:aws:iam::111122223333:user/alice"
                    .into(),
            ),
        )
        .into());
    }
    Ok(())
}

fn new_token(grant_id: &str) -> String {
    let r = crate::secret::SecretBytes::random(32);
    format!("{}{}", hex::encode(r.expose()), grant_id)
}

impl Kms {
    pub(crate) fn create_grant_body(
        &self,
        op: &mut Op<'_>,
        req: &CreateGrantRequest,
    ) -> KmsResult<Value> {
        let k = op.resolve(req.key_id.as_deref(), false)?;
        let grantee = validate::required("granteePrincipal", &req.grantee_principal)?.clone();
        validate_principal("granteePrincipal", &grantee)?;
        if let Some(r) = &req.retiring_principal {
            validate_principal("retiringPrincipal", r)?;
        }
        let operations = req.operations.clone().unwrap_or_default();
        validate::count("operations", operations.len(), 1, usize::MAX)?;
        for o in &operations {
            if !GRANT_OPERATIONS.contains(&o.as_str()) {
                let allowed = GRANT_OPERATIONS.iter().map(|s| s.to_string()).collect();
                return Err(Violation::shown(
                    "operations",
                    &format!("[{o}]"),
                    Constraint::EachEnum(allowed),
                )
                .into());
            }
        }
        let constraints = req.constraints.clone().unwrap_or_default();
        if !constraints.is_empty() {
            if let Some(o) = operations
                .iter()
                .find(|o| !CONTEXT_OPERATIONS.contains(&o.as_str()))
            {
                return Err(KmsError::validation(format!(
                        "Grant constraints are not supported for the {o} operation: constraints apply only to operations that take an encryption context."
                    )));
            }
        }
        if let Some(tokens) = &req.grant_tokens {
            check_tokens(tokens)?;
        }
        let mut cond = Map::new();
        cond.insert(keys::GRANTEE_PRINCIPAL.into(), json!(grantee));
        if let Some(r) = &req.retiring_principal {
            cond.insert("kms:RetiringPrincipal".into(), json!(r));
        }
        cond.insert(keys::GRANT_OPERATIONS.into(), json!(operations));
        cond.insert(
            keys::GRANT_IS_FOR_AWS_RESOURCE.into(),
            json!(op.ctx.via_service.is_some()),
        );
        if let Some(eq) = &constraints.encryption_context_equals {
            for (ck, cv) in eq {
                cond.insert(
                    "kms:GrantConstraintType".into(),
                    json!("EncryptionContextEquals"),
                );
                cond.insert(
                    format!("{}{ck}", keys::ENCRYPTION_CONTEXT_PREFIX),
                    json!(cv),
                );
            }
        }
        if let Some(sub) = &constraints.encryption_context_subset {
            cond.insert(
                "kms:GrantConstraintType".into(),
                json!("EncryptionContextSubset"),
            );
            for (ck, cv) in sub {
                cond.insert(
                    format!("{}{ck}", keys::ENCRYPTION_CONTEXT_PREFIX),
                    json!(cv),
                );
            }
        }
        // The policy decision, or a parent grant that includes CreateGrant
        // and is at least as broad as the grant being made.
        let by_policy = op.authorize("kms:CreateGrant", &k, &cond);
        if let Err(e) = by_policy {
            let parents = grants_of_key(op, &k)?;
            let caller = &op.ctx.caller.principal_arn;
            let narrower = parents.iter().any(|g| {
                &g.grantee_principal == caller
                    && g.operations.iter().any(|o| o == "CreateGrant")
                    && operations.iter().all(|o| g.operations.contains(o))
                    && g.constraints.covers(&constraints)
            });
            if !narrower {
                return Err(e);
            }
        }
        k.check_state(StateRule::Manage)?;
        if req.dry_run == Some(true) {
            return Err(KmsError::new(
                ErrorCode::DryRunOperationException,
                "The request would have succeeded, but the DryRun option is set.",
            ));
        }
        // A Name makes CreateGrant idempotent for the same grant.
        if let Some(name) = &req.name {
            let existing = op
                    .tx
                    .query_row(
                        &format!("SELECT {GRANT_COLUMNS}, token FROM grants WHERE key_id = ?1 AND name = ?2 AND grantee_principal = ?3"),
                        params![k.key_id, name, grantee],
                        |r| Ok((grant_from_row(r)?, r.get::<_, String>(9)?)),
                    )
                    .optional()
                    .map_err(db)?;
            if let Some((g, token)) = existing {
                if g.operations == operations
                    && g.constraints == constraints
                    && g.retiring_principal == req.retiring_principal
                {
                    return Ok(json!({"GrantToken": token, "GrantId": g.grant_id}));
                }
            }
        }
        let grant_id = hex::encode(crate::secret::SecretBytes::random(32).expose());
        let token = new_token(&grant_id);
        op.tx
                .execute(
                    &format!("INSERT INTO grants ({GRANT_COLUMNS}, token) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"),
                    params![
                        grant_id,
                        k.key_id,
                        req.name,
                        grantee,
                        req.retiring_principal,
                        op.ctx.caller.account.as_str(),
                        serde_json::to_string(&operations).unwrap_or_default(),
                        (!constraints.is_empty()).then(|| serde_json::to_string(&constraints).unwrap_or_default()),
                        op.now,
                        token,
                    ],
                )
                .map_err(db)?;
        op.trace.response_elements = Some(json!({"grantId": grant_id}));
        Ok(json!({"GrantToken": token, "GrantId": grant_id}))
    }

    pub(crate) fn list_grants_body(
        &self,
        op: &mut Op<'_>,
        req: &ListGrantsRequest,
    ) -> KmsResult<Value> {
        let k = op.resolve(req.key_id.as_deref(), false)?;
        op.permit("kms:ListGrants", &k, StateRule::Any, &Map::new())?;
        let arn = k.arn();
        let grants: Vec<Value> = grants_of_key(op, &k)?
            .into_iter()
            .filter(|g| req.grant_id.as_ref().is_none_or(|id| &g.grant_id == id))
            .filter(|g| {
                req.grantee_principal
                    .as_ref()
                    .is_none_or(|p| &g.grantee_principal == p)
            })
            .map(|g| g.to_json(&arn))
            .collect();
        Ok(json!({"Grants": grants, "Truncated": false}))
    }

    pub(crate) fn list_retirable_grants_body(
        &self,
        op: &mut Op<'_>,
        req: &ListRetirableGrantsRequest,
    ) -> KmsResult<Value> {
        let principal = validate::required("retiringPrincipal", &req.retiring_principal)?.clone();
        crate::kms::authz::authorize_identity(
            op,
            "kms:ListRetirableGrants",
            "*",
            ConditionContext::new(),
        )?;
        let mut st = op
            .tx
            .prepare(&format!(
                "SELECT {GRANT_COLUMNS} FROM grants WHERE retiring_principal = ?1 ORDER BY created"
            ))
            .map_err(db)?;
        let grants = st
            .query_map([&principal], grant_from_row)
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        let mut out = Vec::new();
        for g in grants {
            if let Some(k) = g
                .key_id
                .parse()
                .ok()
                .and_then(|id| store::get_key(op.tx, &id).ok().flatten())
            {
                out.push(g.to_json(&k.arn()));
            }
        }
        Ok(json!({"Grants": out, "Truncated": false}))
    }

    pub(crate) fn retire_grant_body(
        &self,
        op: &mut Op<'_>,
        req: &RetireGrantRequest,
    ) -> KmsResult<Empty> {
        let g = match (&req.grant_token, &req.key_id, &req.grant_id) {
            (Some(token), _, _) => {
                check_tokens(std::slice::from_ref(token))?;
                op.tx
                        .query_row(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE token = ?1"), [token], grant_from_row)
                        .optional()
                        .map_err(db)?
                        .ok_or_else(|| KmsError::new(ErrorCode::InvalidGrantTokenException, "The grant token is not valid or its grant was already retired or revoked."))?
            }
            (None, Some(key), Some(id)) => {
                let k = op.resolve(Some(key), false)?;
                find_grant(op, &k, id)?
            }
            _ => {
                return Err(KmsError::validation(
                    "Specify either GrantToken, or both KeyId and GrantId.",
                ));
            }
        };
        let key_id = g
            .key_id
            .parse()
            .map_err(|_| KmsError::internal("bad grant key id"))?;
        let k = store::get_key(op.tx, &key_id)?
            .ok_or_else(|| KmsError::not_found("the grant's key no longer exists"))?;
        op.trace.key(&k);
        let caller = &op.ctx.caller;
        // AWS: the retiring principal, the grantee when the grant includes
        // RetireGrant, or the account in which the grant was created.
        let may = g.retiring_principal.as_deref() == Some(caller.principal_arn.as_str())
            || (g.grantee_principal == caller.principal_arn
                && g.operations.iter().any(|o| o == "RetireGrant"))
            || (caller.principal_arn == caller.account.root_arn()
                && g.issuing_account == caller.account.as_str());
        if !may {
            return Err(KmsError::new(ErrorCode::AccessDeniedException, format!(
                    "User: {} is not authorized to perform: kms:RetireGrant on resource: {} because it is neither the grant's retiring principal, its grantee with RetireGrant permission, nor the account that created it",
                    caller.principal_arn, k.arn()
                )));
        }
        // DryRun: the grant was found and the caller may retire it.
        super::asym::dry_run(req.dry_run)?;
        delete_grant(op, &g.grant_id)?;
        Ok(Empty {})
    }

    pub(crate) fn revoke_grant_body(
        &self,
        op: &mut Op<'_>,
        req: &RevokeGrantRequest,
    ) -> KmsResult<Empty> {
        let k = op.resolve(req.key_id.as_deref(), false)?;
        op.permit("kms:RevokeGrant", &k, StateRule::Any, &Map::new())?;
        let id = req.grant_id.clone().unwrap_or_default();
        let g = find_grant(op, &k, &id)?;
        delete_grant(op, &g.grant_id)?;
        Ok(Empty {})
    }
}

fn find_grant(op: &Op<'_>, k: &KeyRecord, id: &str) -> KmsResult<Grant> {
    op.tx
        .query_row(
            &format!("SELECT {GRANT_COLUMNS} FROM grants WHERE key_id = ?1 AND grant_id = ?2"),
            params![k.key_id, id],
            grant_from_row,
        )
        .optional()
        .map_err(db)?
        .ok_or_else(|| KmsError::not_found(format!("Grant ID {id} not found")))
}

fn delete_grant(op: &Op<'_>, id: &str) -> KmsResult<()> {
    op.tx
        .execute("DELETE FROM grants WHERE grant_id = ?1", [id])
        .map_err(db)?;
    Ok(())
}
