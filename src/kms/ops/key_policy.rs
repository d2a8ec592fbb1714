//! Key policies: GetKeyPolicy, PutKeyPolicy, ListKeyPolicies.

use super::*;

pub(super) fn check_policy_name(name: Option<&str>) -> KmsResult<()> {
    match name {
        None | Some("default") => Ok(()),
        Some(other) => Err(KmsError::not_found(format!(
            "Policy name '{other}' does not exist: the only key policy name is 'default'."
        ))),
    }
}

impl Kms {
    pub fn get_key_policy(
        &self,
        ctx: &RequestContext,
        req: KeyPolicyRequest,
    ) -> KmsResult<KeyPolicyResponse> {
        self.run(ctx, "GetKeyPolicy", to_audit(&req), |op| {
            let k = op.resolve(req.key_id.as_deref(), false)?;
            check_policy_name(req.policy_name.as_deref())?;
            op.permit("kms:GetKeyPolicy", &k, StateRule::Any, &no_conditions())?;
            Ok(KeyPolicyResponse {
                policy: k.policy.clone(),
                policy_name: "default".into(),
            })
        })
    }

    pub fn put_key_policy(&self, ctx: &RequestContext, req: KeyPolicyRequest) -> KmsResult<Empty> {
        self.run(ctx, "PutKeyPolicy", to_audit(&req), |op| {
            let mut k = op.resolve(req.key_id.as_deref(), false)?;
            check_policy_name(req.policy_name.as_deref())?;
            op.authorize("kms:PutKeyPolicy", &k, &no_conditions())?;
            if k.is_aws_managed() {
                return Err(access_denied_managed(op, "kms:PutKeyPolicy", &k));
            }
            k.check_state(StateRule::Manage)?;
            let text = validate::required("policy", &req.policy)?.clone();
            k.policy = crate::kms::authz::validate_policy_for_key(
                op,
                &text,
                &k,
                req.bypass_policy_lockout_safety_check.unwrap_or(false),
            )?;
            store::update_key(op.tx, &k)?;
            Ok(Empty {})
        })
    }

    pub fn list_key_policies(
        &self,
        ctx: &RequestContext,
        req: ListRequest,
    ) -> KmsResult<ListKeyPoliciesResponse> {
        self.run(ctx, "ListKeyPolicies", to_audit(&req), |op| {
            let k = op.resolve(req.key_id.as_deref(), false)?;
            op.permit("kms:ListKeyPolicies", &k, StateRule::Any, &no_conditions())?;
            Ok(ListKeyPoliciesResponse {
                policy_names: vec!["default".into()],
                truncated: false,
            })
        })
    }
}
