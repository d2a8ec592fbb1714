//! [`HomeKmsService`]: the HTTP server's view of a home's KMS: SigV4
//! credentials from its identity store, operations through [`Kms::call`]
//! (authorization and audit as for the CLI).

use std::sync::Arc;

use serde_json::Value;

use super::{Credentials, KmsService};
use crate::iam::Iam;
use crate::kms::{Kms, KmsError, KmsResult, RequestContext};
use crate::session::Session;

/// A home's KMS and access keys, served over the AWS KMS API.
pub struct HomeKmsService {
    kms: Arc<Kms>,
    iam: Arc<Iam>,
    /// The home as the control plane runs its EC2 actions in, for the
    /// caller of each request.
    base: Session,
}

impl std::fmt::Debug for HomeKmsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HomeKmsService")
            .field("home", &self.kms.home().dir())
            .finish_non_exhaustive()
    }
}

impl HomeKmsService {
    pub fn new(kms: Arc<Kms>, iam: Iam) -> Self {
        let iam = Arc::new(iam);
        let base = Session {
            home: kms.home_arc(),
            kms: kms.clone(),
            iam: iam.clone(),
            ctx: RequestContext::new(
                crate::kms::Caller::root(crate::ids::AccountId::default_account()),
                crate::ids::Region::default_region(),
            ),
            profile: String::new(),
        };
        HomeKmsService { kms, iam, base }
    }

    /// The service of a session's home: its KMS, and an identity store of
    /// its own on the same home with the KMS's clock.
    pub fn for_session(session: &Session) -> KmsResult<Self> {
        let iam = Iam::open(session.home.clone(), session.kms.clock().clone())?;
        Ok(HomeKmsService::new(session.kms.clone(), iam))
    }

    pub fn kms(&self) -> &Arc<Kms> {
        &self.kms
    }
}

impl KmsService for HomeKmsService {
    fn credentials(&self, access_key_id: &str) -> Option<Credentials> {
        self.iam.credentials(access_key_id).map(|c| Credentials {
            secret_access_key: c.secret,
            caller: c.caller,
            session: c.session,
        })
    }

    fn assume_role(
        &self,
        ctx: &RequestContext,
        input: &crate::iam::roles::AssumeRoleInput,
    ) -> Result<crate::iam::roles::AssumedRole, crate::iam::IamError> {
        let result = self.iam.assume_role(ctx, input);
        // CloudTrail records AssumeRole, allowed or refused, without the
        // secret or the token.
        let mut request = serde_json::json!({
            "roleArn": crate::ec2::capped(&input.role_arn, 256),
            "roleSessionName": crate::ec2::capped(&input.role_session_name, 64),
            "durationSeconds": input.duration_seconds,
        });
        if !input.tags.is_empty() {
            request["tags"] = serde_json::json!(input
                .tags
                .iter()
                .take(50)
                .map(|(k, v)| serde_json::json!({"key": crate::ec2::capped(k, 128), "value": crate::ec2::capped(v, 256)}))
                .collect::<Vec<_>>());
        }
        let response = match &result {
            Ok(r) => serde_json::json!({
                "credentials": {"accessKeyId": r.access_key_id, "expiration": crate::clock::to_rfc3339(r.expiration)},
                "assumedRoleUser": {"assumedRoleId": r.assumed_role_id, "arn": r.arn},
            }),
            Err(_) => Value::Null,
        };
        let code = result.as_ref().err().map(|e| e.code.as_str());
        let s = self.base.for_caller(ctx.clone());
        crate::ec2::record_event(
            &s,
            crate::ec2::Event {
                source: "sts.amazonaws.com",
                name: "AssumeRole",
                request,
                response,
                error: match (&result, &code) {
                    (Err(e), Some(c)) => Some((*c, e.message.as_str())),
                    _ => None,
                },
                read_only: false,
                management: true,
            },
        )
        .map_err(|e| {
            KmsError::internal(format!(
                "the audit record could not be written: {}",
                e.message
            ))
        })?;
        result
    }

    fn call(
        &self,
        ctx: &RequestContext,
        operation: &str,
        request: Value,
    ) -> Result<Value, KmsError> {
        self.kms.call(ctx, operation, request)
    }

    fn batches(&self, operation: &str, request: &Value) -> bool {
        crate::kms::batch::suits(operation, request)
    }

    fn call_batch(&self, calls: Vec<crate::kms::batch::Call>) -> Vec<Result<Value, KmsError>> {
        self.kms.call_batch(calls)
    }

    fn user_id(&self, caller: &crate::kms::Caller) -> Result<String, crate::iam::IamError> {
        self.iam.user_id(caller)
    }

    fn release_volume_key(
        &self,
        ctx: &RequestContext,
        params: Vec<(String, String)>,
        secure: bool,
    ) -> Result<crate::ec2::hosts::ReleasedKey, crate::api_error::ApiError> {
        let s = self.base.for_caller(ctx.clone());
        crate::ec2::hosts::release_volume_key(&s, &crate::ec2::Params::new(params), secure)
    }

    fn ec2(
        &self,
        ctx: &RequestContext,
        params: Vec<(String, String)>,
    ) -> Result<Value, crate::api_error::ApiError> {
        let s = self.base.for_caller(ctx.clone());
        crate::ec2::call(&s, &crate::ec2::Params::new(params))
    }

    fn ebs(&self, ctx: &RequestContext, req: &crate::ebs::Request<'_>) -> crate::ebs::Response {
        let s = self.base.for_caller(ctx.clone());
        crate::ebs::handle(&s, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::home::Home;
    use crate::ids::Region;
    use crate::kms::ErrorCode;
    use serde_json::json;

    fn service() -> (tempfile::TempDir, HomeKmsService) {
        let dir = tempfile::tempdir().unwrap();
        let home = Arc::new(Home::open(dir.path()).unwrap());
        let kms = Arc::new(Kms::open(home.clone(), Clock::system()).unwrap());
        let iam = Iam::open(home, Clock::system()).unwrap();
        (dir, HomeKmsService::new(kms, iam))
    }

    #[test]
    fn credentials_come_from_the_identity_store() {
        let (_dir, svc) = service();
        let (akid, secret) = svc.iam.profile_credentials("default").unwrap();
        let c = svc.credentials(&akid).unwrap();
        assert_eq!(c.secret_access_key.expose(), secret.expose());
        assert_eq!(c.caller.principal_arn, "arn:aws:iam::111122223333:root");
        assert!(svc.credentials("AKIANOSUCHKEY0000000").is_none());
    }

    /// The server caches credentials, and a change made through another
    /// connection (as another process's CLI would) reaches its lookups
    /// within the epoch's 10 ms: new tags, a deleted user's key.
    #[test]
    fn cached_credentials_follow_changes_made_elsewhere() {
        let (dir, svc) = service();
        let account: crate::ids::AccountId = "111122223333".parse().unwrap();
        let other = Iam::open(Arc::new(Home::open(dir.path()).unwrap()), Clock::system()).unwrap();
        let (_, key) = other.create_user(&account, "ann", Some("ann")).unwrap();
        let akid = key.unwrap().access_key_id;
        let first = svc.credentials(&akid).unwrap();
        assert_eq!(
            first.caller.principal_arn,
            "arn:aws:iam::111122223333:user/ann"
        );
        assert!(first.caller.principal_tags.is_empty());
        // Served from the cache: the same answer.
        let again = svc.credentials(&akid).unwrap();
        assert_eq!(
            again.secret_access_key.expose(),
            first.secret_access_key.expose()
        );
        let settle = || std::thread::sleep(std::time::Duration::from_millis(15));
        other
            .tag_principal(&account, "user", "ann", &[("team".into(), "blue".into())])
            .unwrap();
        settle();
        let tagged = svc.credentials(&akid).unwrap();
        assert_eq!(
            tagged.caller.principal_tags,
            vec![("team".to_string(), "blue".to_string())]
        );
        other
            .untag_principal(&account, "user", "ann", &["team".into()])
            .unwrap();
        settle();
        assert!(svc
            .credentials(&akid)
            .unwrap()
            .caller
            .principal_tags
            .is_empty());
        other.delete_user(&account, "ann").unwrap();
        settle();
        assert!(
            svc.credentials(&akid).is_none(),
            "a deleted user's key still verifies"
        );
        // The root's key, cached before, still verifies.
        let (root, _) = svc.iam.profile_credentials("default").unwrap();
        assert!(svc.credentials(&root).is_some());
    }

    #[test]
    fn calls_reach_the_kms_with_authorization() {
        let (_dir, svc) = service();
        let (akid, _) = svc.iam.profile_credentials("default").unwrap();
        let caller = svc.credentials(&akid).unwrap().caller;
        let ctx = RequestContext::new(caller, Region::default_region());
        let key = svc.call(&ctx, "CreateKey", json!({})).unwrap();
        let key_id = key["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
        let ct = svc
            .call(
                &ctx,
                "Encrypt",
                json!({"KeyId": key_id, "Plaintext": "aGk="}),
            )
            .unwrap();
        let pt = svc
            .call(
                &ctx,
                "Decrypt",
                json!({"CiphertextBlob": ct["CiphertextBlob"]}),
            )
            .unwrap();
        assert_eq!(pt["Plaintext"], "aGk=");
        let e = svc.call(&ctx, "NoSuchOp", json!({})).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownOperationException);
    }
}
