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
    pub(crate) fn get_key_policy_body(
        &self,
        op: &mut Op<'_>,
        req: &KeyPolicyRequest,
    ) -> KmsResult<KeyPolicyResponse> {
        let k = op.resolve(req.key_id.as_deref(), false)?;
        check_policy_name(req.policy_name.as_deref())?;
        op.permit("kms:GetKeyPolicy", &k, StateRule::Any, &no_conditions())?;
        Ok(KeyPolicyResponse {
            policy: k.policy.clone(),
            policy_name: "default".into(),
        })
    }

    pub(crate) fn put_key_policy_body(
        &self,
        op: &mut Op<'_>,
        req: &KeyPolicyRequest,
    ) -> KmsResult<Empty> {
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
    }

    pub(crate) fn list_key_policies_body(
        &self,
        op: &mut Op<'_>,
        req: &ListRequest,
    ) -> KmsResult<ListKeyPoliciesResponse> {
        let k = op.resolve(req.key_id.as_deref(), false)?;
        op.permit("kms:ListKeyPolicies", &k, StateRule::Any, &no_conditions())?;
        Ok(ListKeyPoliciesResponse {
            policy_names: vec!["default".into()],
            truncated: false,
        })
    }
}
