//! A running operation (`Op`): its transaction, time, caller and audit
//! trace, and how it finds the key a request names (`resolve`: key id,
//! key ARN, alias, alias ARN, in the caller's region). Below the
//! authorization point (`authz.rs` adds `authorize` and `permit`) and the
//! operations; above the records (`store`, `model`).

use rusqlite::Connection;
use serde_json::Value;

use super::model::{KeyRecord, EBS_ALIAS};
use super::store;
use super::{ErrorCode, KmsError, KmsResult, RequestContext};
use crate::ids::{AccountId, Arn, KeyId, Region};
use crate::validate::{self, Violation};

/// What an operation tells the audit point about itself while it runs.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    /// The key the operation acted on (resources, recipientAccountId).
    pub key: Option<(String, AccountId)>,
    pub response_elements: Option<Value>,
    /// The alias the request named the key by (`kms:RequestAlias`).
    pub request_alias: Option<String>,
}

impl Trace {
    pub fn key(&mut self, k: &KeyRecord) {
        self.key = Some((k.arn(), k.account.clone()));
    }
}

/// A running operation: its transaction, the time, the caller and the trace.
pub(crate) struct Op<'a> {
    pub tx: &'a Connection,
    pub now: i64,
    pub ctx: &'a RequestContext,
    pub trace: &'a mut Trace,
    /// `tx` is the write transaction (else a read transaction, where
    /// nothing may be written).
    pub(crate) on_writer: bool,
    /// The body found it must write (on a read transaction): its outcome
    /// is dropped and it runs again on the write path.
    pub(crate) needs_writer: bool,
    /// The body named the account's AWS managed key, which does not exist
    /// yet: the handle makes it and runs the body again.
    pub(crate) needs_managed_key: bool,
}

/// A key reference as a request names it.
pub(crate) enum KeyRef {
    Id(KeyId),
    Arn {
        region: String,
        account: String,
        id: KeyId,
    },
    Alias {
        name: String,
    },
    AliasArn {
        region: String,
        account: String,
        name: String,
    },
}

/// Parses a key reference; a bare multi-Region id (`mrk-...`) names the
/// related key in `region`, an ARN the one in the ARN's region.
pub(crate) fn parse_key_ref(s: &str, region: &Region) -> KmsResult<KeyRef> {
    let invalid = || KmsError::not_found(format!("Invalid keyId '{s}'"));
    if s.is_empty() {
        return Err(Violation::null("keyId").into());
    }
    // Bytes, as the key-id constraint has always been counted here.
    validate::byte_length("keyId", s.as_bytes(), 1, 2048)?;
    if s.starts_with("alias/") {
        return Ok(KeyRef::Alias {
            name: s.to_string(),
        });
    }
    if s.starts_with("arn:") {
        let arn: Arn = s.parse().map_err(|_| invalid())?;
        if arn.service != "kms" {
            return Err(invalid());
        }
        if let Some(id) = arn.resource.strip_prefix("key/") {
            let arn_region: Region = arn.region.parse().map_err(|_| invalid())?;
            let id = KeyId::parse_public(id, &arn_region).map_err(|_| invalid())?;
            return Ok(KeyRef::Arn {
                region: arn.region,
                account: arn.account,
                id,
            });
        }
        if arn.resource.starts_with("alias/") {
            return Ok(KeyRef::AliasArn {
                region: arn.region,
                account: arn.account,
                name: arn.resource,
            });
        }
        return Err(invalid());
    }
    KeyId::parse_public(s, region)
        .map(KeyRef::Id)
        .map_err(|_| invalid())
}

impl Op<'_> {
    /// Finds the key a request names, in the caller's region. Aliases are
    /// accepted only where AWS accepts them (`allow_alias`).
    pub fn resolve(&mut self, key_id: Option<&str>, allow_alias: bool) -> KmsResult<KeyRecord> {
        let s = key_id.unwrap_or("");
        let region = &self.ctx.region;
        let my_account = &self.ctx.caller.account;
        let not_found = |arn: String| KmsError::not_found(format!("Key '{arn}' does not exist"));
        let (account, id) = match parse_key_ref(s, region)? {
            KeyRef::Id(id) => (my_account.clone(), id),
            KeyRef::Arn {
                region: r,
                account,
                id,
            } => {
                if r != region.as_str() {
                    return Err(not_found(s.to_string()));
                }
                (
                    account
                        .parse()
                        .map_err(|_| KmsError::not_found(format!("Invalid arn {s}")))?,
                    id,
                )
            }
            KeyRef::Alias { name } | KeyRef::AliasArn { name, .. } if !allow_alias => {
                return Err(
                    KmsError::not_found(format!("Invalid keyId '{s}'")).with_alias_hint(&name)
                );
            }
            KeyRef::Alias { name } => {
                let id = self.alias_target(my_account, region, &name)?;
                self.trace.request_alias = Some(name);
                (my_account.clone(), id)
            }
            KeyRef::AliasArn {
                region: r,
                account,
                name,
            } => {
                let account: AccountId = account
                    .parse()
                    .map_err(|_| KmsError::not_found(format!("Invalid arn {s}")))?;
                if r != region.as_str() {
                    return Err(KmsError::not_found(format!("Alias {s} is not found.")));
                }
                let id = self.alias_target(&account, region, &name)?;
                self.trace.request_alias = Some(name);
                (account, id)
            }
        };
        let arn = id.arn(region, &account);
        let k = store::get_key(self.tx, &id)?.ok_or_else(|| not_found(arn.clone()))?;
        if &k.region != region || k.account != account {
            return Err(not_found(arn));
        }
        self.trace.key(&k);
        Ok(k)
    }

    fn alias_target(
        &mut self,
        account: &AccountId,
        region: &Region,
        name: &str,
    ) -> KmsResult<KeyId> {
        if let Some(a) = store::alias(self.tx, account, region, name)? {
            return Ok(a.key_id);
        }
        if name == EBS_ALIAS && account == &self.ctx.caller.account {
            // The account's AWS managed key is made on first use. Making it
            // writes, which is the handle's part: the call starts over,
            // on the write path, once the key exists (this error is never
            // seen by the caller).
            self.needs_managed_key = true;
            self.needs_writer = !self.on_writer;
            return Err(KmsError::internal(
                "the AWS managed key is created before the call runs again",
            ));
        }
        Err(KmsError::not_found(format!(
            "Alias arn:aws:kms:{region}:{account}:{name} is not found."
        )))
    }
}

impl KmsError {
    fn with_alias_hint(mut self, _alias: &str) -> Self {
        self.code = ErrorCode::NotFoundException;
        self
    }
}
