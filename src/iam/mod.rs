//! Identity: accounts, users, access keys, identity policies and the
//! profiles commands run as.
//!
//! Access key secrets are stored sealed under the home's root key; a
//! profile names an access key, and through it a principal.

pub mod roles;

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::home::Home;
use crate::ids::AccountId;
pub mod error;

use crate::kms::{Caller, PrincipalType};
use crate::secret::SecretBytes;
pub use error::{IamError, IamErrorCode, IamResult};

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    account TEXT NOT NULL REFERENCES accounts(account),
    name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (account, name)
);
CREATE TABLE IF NOT EXISTS access_keys (
    access_key_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    user_name TEXT,
    sealed_secret BLOB NOT NULL,
    status TEXT NOT NULL,
    created INTEGER NOT NULL
);
-- Bumped by every change to what an access key's credentials are made of
-- (its row here, its principal's tags; the triggers are `epoch_triggers`):
-- a process that caches credentials rereads only this row.
CREATE TABLE IF NOT EXISTS credentials_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    epoch INTEGER NOT NULL
);
INSERT OR IGNORE INTO credentials_epoch (id, epoch) VALUES (0, 0);
CREATE TABLE IF NOT EXISTS profiles (
    name TEXT PRIMARY KEY,
    access_key_id TEXT NOT NULL REFERENCES access_keys(access_key_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS user_policies (
    account TEXT NOT NULL,
    user_name TEXT NOT NULL,
    policy_name TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (account, user_name, policy_name)
);
CREATE TABLE IF NOT EXISTS volume_hosts (
    principal_arn TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    registered INTEGER NOT NULL
);
"#;

/// Triggers that bump `credentials_epoch` on every insert, update and
/// delete of `table`, whichever connection or process makes it.
fn epoch_triggers(table: &str) -> String {
    ["INSERT", "UPDATE", "DELETE"]
        .iter()
        .map(|event| {
            format!(
                "CREATE TRIGGER IF NOT EXISTS {table}_{}_epoch AFTER {event} ON {table} \
                 BEGIN UPDATE credentials_epoch SET epoch = epoch + 1 WHERE id = 0; END;",
                event.to_lowercase()
            )
        })
        .collect()
}

fn db(e: rusqlite::Error) -> IamError {
    IamError::internal(format!("state database: {e}"))
}

/// An insert that hit a unique constraint is IAM's EntityAlreadyExists
/// (`message` names the entity); any other failure is the database's.
fn exists_or_db(e: rusqlite::Error, message: impl FnOnce() -> String) -> IamError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            iam_error(IamErrorCode::EntityAlreadyExists, message())
        }
        e => db(e),
    }
}

fn iam_error(code: IamErrorCode, message: String) -> IamError {
    IamError::new(code, message)
}

/// An access key as shown once at creation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccessKey {
    pub user_name: Option<String>,
    pub access_key_id: String,
    pub status: String,
    #[serde(serialize_with = "serialize_secret_str")]
    pub secret_access_key: SecretBytes,
    pub create_date: i64,
}

fn serialize_secret_str<S: serde::Serializer>(v: &SecretBytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v.expose()))
}

/// The identity store of a home.
pub struct Iam {
    home: Arc<Home>,
    conn: std::sync::Mutex<Connection>,
    clock: crate::clock::Clock,
    /// Long-term access keys' credentials as last read (SigV4 verifies
    /// one per request), valid while `credentials_epoch` is unchanged.
    cached: std::sync::Mutex<CredentialsCache>,
}

/// Credentials read at one `credentials_epoch`: any change to an access
/// key or a principal's tags, by any process, bumps the epoch (triggers
/// in the schema) and empties the cache once a lookup reads the new epoch.
#[derive(Default)]
struct CredentialsCache {
    epoch: i64,
    /// When `epoch` was last read (the time taken before the read).
    read_at: Option<std::time::Instant>,
    keys: std::collections::HashMap<String, roles::KeyCredentials>,
}

/// How long a read of `credentials_epoch` stands for the next lookups.
/// Reading that one row was 4% of the KMS server's CPU at 20,000 requests
/// a second (every commit of the KMS makes the IAM connection's next read
/// fetch its pages afresh); once per 10 ms it is nothing. A change to an
/// access key or a principal's tags reaches a running server's next
/// request within 10 ms; AWS IAM's changes take seconds to propagate.
const EPOCH_FRESH: std::time::Duration = std::time::Duration::from_millis(10);

/// The most access keys [`CredentialsCache`] holds; past that it starts
/// over.
const CACHED_KEYS: usize = 1024;

impl Iam {
    pub fn open(home: Arc<Home>, clock: crate::clock::Clock) -> IamResult<Iam> {
        let conn = home
            .connect()
            .map_err(|e| IamError::internal(e.to_string()))?;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} {} {} {} COMMIT;",
            roles::SCHEMA,
            epoch_triggers("access_keys"),
            epoch_triggers("principal_tags"),
        ))
        .map_err(db)?;
        home.ensure_schema_with(
            &conn,
            "sts-session-policy",
            roles::add_session_policy_column,
        )
        .map_err(db)?;
        let iam = Iam {
            home,
            conn: std::sync::Mutex::new(conn),
            clock,
            cached: std::sync::Mutex::new(CredentialsCache::default()),
        };
        iam.ensure_default()?;
        Ok(iam)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh home has account 111122223333 and a `default` profile for its root.
    fn ensure_default(&self) -> IamResult<()> {
        let exists: Option<String> = self
            .conn()
            .query_row(
                "SELECT name FROM profiles WHERE name = 'default'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        if exists.is_none() {
            match self.create_account(&AccountId::default_account(), "default") {
                Ok(_) => {}
                // Another process initialised the home at the same time.
                Err(e) if e.code == IamErrorCode::EntityAlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Creates an account with a root access key and a profile for it.
    pub fn create_account(&self, account: &AccountId, profile: &str) -> IamResult<AccessKey> {
        validate_profile_name(profile)?;
        let conn = self.conn();
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
        let now = self.clock.now();
        let n = tx
            .execute(
                "INSERT OR IGNORE INTO accounts (account, created) VALUES (?1, ?2)",
                params![account.as_str(), now],
            )
            .map_err(db)?;
        if n == 0 {
            return Err(iam_error(
                IamErrorCode::EntityAlreadyExists,
                format!("Account {account} already exists."),
            ));
        }
        let key = self.insert_access_key(&tx, account, None, now)?;
        insert_profile(&tx, profile, &key.access_key_id)?;
        tx.commit().map_err(db)?;
        Ok(key)
    }

    pub fn list_accounts(&self) -> IamResult<Vec<String>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT account FROM accounts ORDER BY account")
            .map_err(db)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(db)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(db)
    }

    fn insert_access_key(
        &self,
        tx: &Connection,
        account: &AccountId,
        user: Option<&str>,
        now: i64,
    ) -> IamResult<AccessKey> {
        let id = new_access_key_id();
        let secret = new_secret();
        let sealed = self.home.seal(&format!("access-key/{id}"), secret.expose());
        tx.execute(
            "INSERT INTO access_keys (access_key_id, account, user_name, sealed_secret, status, created) VALUES (?1,?2,?3,?4,'Active',?5)",
            params![id, account.as_str(), user, sealed, now],
        )
        .map_err(db)?;
        Ok(AccessKey {
            user_name: user.map(str::to_string),
            access_key_id: id,
            status: "Active".into(),
            secret_access_key: secret,
            create_date: now,
        })
    }

    pub fn create_user(
        &self,
        account: &AccountId,
        name: &str,
        profile: Option<&str>,
    ) -> IamResult<(serde_json::Value, Option<AccessKey>)> {
        validate_user_name(name)?;
        let conn = self.conn();
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
        let now = self.clock.now();
        let user_id = format!("AIDA{}", &new_access_key_id()[4..]);
        tx.execute(
            "INSERT INTO users (account, name, user_id, created) VALUES (?1,?2,?3,?4)",
            params![account.as_str(), name, user_id, now],
        )
        .map_err(|e| exists_or_db(e, || format!("User with name {name} already exists.")))?;
        let key = match profile {
            Some(p) => {
                validate_profile_name(p)?;
                let k = self.insert_access_key(&tx, account, Some(name), now)?;
                insert_profile(&tx, p, &k.access_key_id)?;
                Some(k)
            }
            None => None,
        };
        tx.commit().map_err(db)?;
        let user = serde_json::json!({"User": {
            "UserName": name, "UserId": user_id, "Arn": format!("arn:aws:iam::{account}:user/{name}"),
            "Path": "/", "CreateDate": crate::clock::to_rfc3339(now)}});
        Ok((user, key))
    }

    pub fn list_users(&self, account: &AccountId) -> IamResult<serde_json::Value> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT name, user_id, created FROM users WHERE account = ?1 ORDER BY name")
            .map_err(db)?;
        let rows = st
            .query_map([account.as_str()], |r| {
                let name: String = r.get(0)?;
                Ok(
                    serde_json::json!({"UserName": name, "UserId": r.get::<_, String>(1)?,
                    "Arn": format!("arn:aws:iam::{account}:user/{name}"), "Path": "/",
                    "CreateDate": crate::clock::to_rfc3339(r.get(2)?)}),
                )
            })
            .map_err(db)?;
        Ok(serde_json::json!({"Users": rows.collect::<Result<Vec<_>, _>>().map_err(db)?}))
    }

    pub fn delete_user(&self, account: &AccountId, name: &str) -> IamResult<()> {
        let conn = self.conn();
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
        let n = tx
            .execute(
                "DELETE FROM users WHERE account = ?1 AND name = ?2",
                params![account.as_str(), name],
            )
            .map_err(db)?;
        if n == 0 {
            return Err(iam_error(
                IamErrorCode::NoSuchEntity,
                format!("The user with name {name} cannot be found."),
            ));
        }
        tx.execute(
            "DELETE FROM access_keys WHERE account = ?1 AND user_name = ?2",
            params![account.as_str(), name],
        )
        .map_err(db)?;
        tx.execute(
            "DELETE FROM user_policies WHERE account = ?1 AND user_name = ?2",
            params![account.as_str(), name],
        )
        .map_err(db)?;
        for table in ["volume_hosts", "principal_tags"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE principal_arn = ?1"),
                [format!("arn:aws:iam::{account}:user/{name}")],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// Registers a principal of `account` (a user, or the account root when
    /// `user` is None) as a volume host: the identity an attach daemon on
    /// another host signs with, an EC2 instance of the account at the
    /// control plane, which may obtain the data keys of volumes attached
    /// to it (`ec2::hosts`). Returns its ARN.
    pub fn register_volume_host(
        &self,
        account: &AccountId,
        user: Option<&str>,
    ) -> IamResult<String> {
        let arn = match user {
            Some(u) => {
                self.require_user(&self.conn(), account, u)?;
                format!("arn:aws:iam::{account}:user/{u}")
            }
            None => account.root_arn(),
        };
        self.conn()
            .execute(
                "INSERT INTO volume_hosts (principal_arn, account, registered) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(principal_arn) DO NOTHING",
                params![arn, account.as_str(), self.clock.now()],
            )
            .map_err(db)?;
        Ok(arn)
    }

    /// Removes a volume host registration (NoSuchEntity if there is none).
    pub fn deregister_volume_host(
        &self,
        account: &AccountId,
        user: Option<&str>,
    ) -> IamResult<String> {
        let arn = match user {
            Some(u) => format!("arn:aws:iam::{account}:user/{u}"),
            None => account.root_arn(),
        };
        let n = self
            .conn()
            .execute(
                "DELETE FROM volume_hosts WHERE principal_arn = ?1 AND account = ?2",
                params![arn, account.as_str()],
            )
            .map_err(db)?;
        if n == 0 {
            return Err(iam_error(
                IamErrorCode::NoSuchEntity,
                format!("{arn} is not a registered volume host."),
            ));
        }
        Ok(arn)
    }

    /// The volume hosts of `account`.
    pub fn list_volume_hosts(&self, account: &AccountId) -> IamResult<Vec<String>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT principal_arn FROM volume_hosts WHERE account = ?1 ORDER BY principal_arn",
            )
            .map_err(db)?;
        let rows = st.query_map([account.as_str()], |r| r.get(0)).map_err(db)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(db)
    }

    /// Is the caller a registered volume host?
    pub fn is_volume_host(&self, caller: &Caller) -> bool {
        self.conn()
            .query_row(
                "SELECT 1 FROM volume_hosts WHERE principal_arn = ?1 AND account = ?2",
                params![caller.principal_arn, caller.account.as_str()],
                |_| Ok(()),
            )
            .optional()
            .ok()
            .flatten()
            .is_some()
    }

    fn require_user(&self, conn: &Connection, account: &AccountId, name: &str) -> IamResult<()> {
        let found: Option<String> = conn
            .query_row(
                "SELECT name FROM users WHERE account = ?1 AND name = ?2",
                params![account.as_str(), name],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        found.map(|_| ()).ok_or_else(|| {
            iam_error(
                IamErrorCode::NoSuchEntity,
                format!("The user with name {name} cannot be found."),
            )
        })
    }

    pub fn create_access_key(
        &self,
        account: &AccountId,
        user: &str,
        profile: Option<&str>,
    ) -> IamResult<AccessKey> {
        let conn = self.conn();
        self.require_user(&conn, account, user)?;
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
        let k = self.insert_access_key(&tx, account, Some(user), self.clock.now())?;
        if let Some(p) = profile {
            validate_profile_name(p)?;
            insert_profile(&tx, p, &k.access_key_id)?;
        }
        tx.commit().map_err(db)?;
        Ok(k)
    }

    pub fn put_user_policy(
        &self,
        account: &AccountId,
        user: &str,
        name: &str,
        document: &str,
    ) -> IamResult<()> {
        let conn = self.conn();
        self.require_user(&conn, account, user)?;
        crate::kms::validate_identity_policy(document)?;
        conn.execute(
            "INSERT INTO user_policies (account, user_name, policy_name, document) VALUES (?1,?2,?3,?4) \
             ON CONFLICT(account, user_name, policy_name) DO UPDATE SET document = excluded.document",
            params![account.as_str(), user, name, document],
        )
        .map_err(db)?;
        Ok(())
    }

    pub fn get_user_policy(
        &self,
        account: &AccountId,
        user: &str,
        name: &str,
    ) -> IamResult<String> {
        self.conn()
            .query_row(
                "SELECT document FROM user_policies WHERE account=?1 AND user_name=?2 AND policy_name=?3",
                params![account.as_str(), user, name],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?
            .ok_or_else(|| iam_error(IamErrorCode::NoSuchEntity, format!("The user policy with name {name} cannot be found.")))
    }

    pub fn delete_user_policy(&self, account: &AccountId, user: &str, name: &str) -> IamResult<()> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM user_policies WHERE account=?1 AND user_name=?2 AND policy_name=?3",
                params![account.as_str(), user, name],
            )
            .map_err(db)?;
        if n == 0 {
            return Err(iam_error(
                IamErrorCode::NoSuchEntity,
                format!("The user policy with name {name} cannot be found."),
            ));
        }
        Ok(())
    }

    pub fn list_user_policies(&self, account: &AccountId, user: &str) -> IamResult<Vec<String>> {
        let conn = self.conn();
        self.require_user(&conn, account, user)?;
        let mut st = conn.prepare("SELECT policy_name FROM user_policies WHERE account=?1 AND user_name=?2 ORDER BY policy_name").map_err(db)?;
        let rows = st
            .query_map(params![account.as_str(), user], |r| r.get(0))
            .map_err(db)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(db)
    }

    /// The identity policies that apply to a principal: a user's, or the
    /// role's of a session; none for a root.
    pub fn policies_of(&self, caller: &Caller) -> IamResult<Vec<String>> {
        roles::identity_policy_texts(&self.conn(), caller)
    }

    /// The caller a profile acts as.
    pub fn profile_caller(&self, profile: &str) -> IamResult<Caller> {
        let key: Option<String> = self
            .conn()
            .query_row(
                "SELECT access_key_id FROM profiles WHERE name = ?1",
                [profile],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        let key = key.ok_or_else(|| {
            IamError::validation(format!(
                "The config profile ({profile}) could not be found: create it with `keyvol iam create-account` or `keyvol iam create-user --profile-name {profile}`"
            ))
        })?;
        self.credentials(&key).map(|c| c.caller).ok_or_else(|| {
            IamError::validation(format!(
                "The access key of profile {profile} no longer exists."
            ))
        })
    }

    /// STS GetCallerIdentity's `UserId`: the account id for the root, the
    /// IAM user's unique id (`AIDA...`) for a user.
    pub fn user_id(&self, caller: &Caller) -> IamResult<String> {
        if let Some((role, session)) = caller.session_role() {
            let name = role.rsplit('/').next().unwrap_or_default();
            let id = self
                .role_id(&caller.account, name)
                .ok_or_else(|| IamError::not_found(format!("The role {name} no longer exists.")))?;
            return Ok(format!("{id}:{session}"));
        }
        let Some(name) = caller.principal_arn.rsplit_once(":user/").map(|(_, n)| n) else {
            return Ok(caller.account.to_string());
        };
        self.conn()
            .query_row(
                "SELECT user_id FROM users WHERE account = ?1 AND name = ?2",
                params![caller.account.as_str(), name],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?
            .ok_or_else(|| IamError::not_found(format!("The user {name} no longer exists.")))
    }

    /// The secret and principal of an access key (SigV4 verification): a
    /// long-term key of a user or root, or a session key (`ASIA...`) with
    /// the token its requests must carry.
    pub fn credentials(&self, access_key_id: &str) -> Option<roles::KeyCredentials> {
        if access_key_id.starts_with("ASIA") {
            return self.session_credentials(access_key_id);
        }
        let epoch = self.credentials_epoch()?;
        {
            let cache = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache
                .keys
                .get(access_key_id)
                .filter(|_| cache.epoch == epoch)
            {
                return Some(c.clone());
            }
        }
        let found = self.read_credentials(access_key_id)?;
        let mut cache = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cache.epoch == epoch {
            if cache.keys.len() >= CACHED_KEYS {
                cache.keys.clear();
            }
            cache.keys.insert(access_key_id.to_string(), found.clone());
        }
        Some(found)
    }

    /// The `credentials_epoch` the cache works at: read from the database
    /// (emptying the cache when it moved) unless it was read less than
    /// [`EPOCH_FRESH`] ago. The time is taken before the read, so a change
    /// committed before it is seen, and one committed after it by the
    /// next read, at most [`EPOCH_FRESH`] later.
    fn credentials_epoch(&self) -> Option<i64> {
        let now = std::time::Instant::now();
        {
            let cache = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            if cache
                .read_at
                .is_some_and(|t| now.duration_since(t) < EPOCH_FRESH)
            {
                return Some(cache.epoch);
            }
        }
        let epoch: i64 = self
            .conn()
            .prepare_cached("SELECT epoch FROM credentials_epoch WHERE id = 0")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .ok()?;
        let mut cache = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cache.epoch != epoch {
            cache.keys.clear();
            cache.epoch = epoch;
        }
        if cache.read_at.is_none_or(|t| t < now) {
            cache.read_at = Some(now);
        }
        Some(epoch)
    }

    /// [`Self::credentials`] of a long-term key, from the database.
    fn read_credentials(&self, access_key_id: &str) -> Option<roles::KeyCredentials> {
        let row: Option<(String, Option<String>, Vec<u8>, String)> = self
            .conn()
            .prepare_cached(
                "SELECT account, user_name, sealed_secret, status FROM access_keys WHERE access_key_id = ?1",
            )
            .and_then(|mut st| {
                st.query_row([access_key_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
            })
            .ok()
            .flatten();
        let (account, user, sealed, status) = row?;
        if status != "Active" {
            return None;
        }
        let secret = self
            .home
            .unseal(&format!("access-key/{access_key_id}"), &sealed)
            .ok()?;
        let account: AccountId = account.parse().ok()?;
        let mut caller = match user {
            Some(u) => Caller::user(account, &u),
            None => Caller::root(account),
        };
        caller.access_key_id = Some(access_key_id.to_string());
        if caller.principal_type == PrincipalType::IAMUser {
            caller.principal_tags =
                roles::principal_tags(&self.conn(), &caller.principal_arn).ok()?;
        }
        Some(roles::KeyCredentials {
            secret,
            caller,
            session: None,
        })
    }

    /// The access key id and secret of a profile, for signing requests to a remote KMS.
    pub fn profile_credentials(&self, profile: &str) -> IamResult<(String, SecretBytes)> {
        let key: String = self
            .conn()
            .query_row(
                "SELECT access_key_id FROM profiles WHERE name = ?1",
                [profile],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?
            .ok_or_else(|| {
                IamError::validation(format!("The config profile ({profile}) could not be found"))
            })?;
        let secret = self.credentials(&key).map(|c| c.secret).ok_or_else(|| {
            IamError::validation(format!(
                "The access key of profile {profile} no longer exists."
            ))
        })?;
        Ok((key, secret))
    }

    /// Stores a profile that uses an existing access key (a remote host's copy).
    pub fn import_profile(
        &self,
        profile: &str,
        account: &AccountId,
        user: Option<&str>,
        access_key_id: &str,
        secret: &SecretBytes,
    ) -> IamResult<()> {
        validate_profile_name(profile)?;
        let conn = self.conn();
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
        tx.execute(
            "INSERT OR IGNORE INTO accounts (account, created) VALUES (?1, ?2)",
            params![account.as_str(), self.clock.now()],
        )
        .map_err(db)?;
        let sealed = self
            .home
            .seal(&format!("access-key/{access_key_id}"), secret.expose());
        tx.execute(
            "INSERT OR REPLACE INTO access_keys (access_key_id, account, user_name, sealed_secret, status, created) VALUES (?1,?2,?3,?4,'Active',?5)",
            params![access_key_id, account.as_str(), user, sealed, self.clock.now()],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT OR REPLACE INTO profiles (name, access_key_id) VALUES (?1, ?2)",
            params![profile, access_key_id],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    pub fn list_profiles(&self) -> IamResult<Vec<(String, String)>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT name, access_key_id FROM profiles ORDER BY name")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }
}

fn insert_profile(tx: &Connection, profile: &str, key: &str) -> IamResult<()> {
    tx.execute(
        "INSERT INTO profiles (name, access_key_id) VALUES (?1, ?2)",
        params![profile, key],
    )
    .map_err(|e| exists_or_db(e, || format!("Profile {profile} already exists.")))?;
    Ok(())
}

/// 1 to 64 ASCII letters, digits or bytes of `extra`.
fn is_name(s: &str, extra: &[u8]) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

fn validate_profile_name(p: &str) -> IamResult<()> {
    if !is_name(p, b"-_.") {
        return Err(IamError::validation(format!(
            "Profile name '{p}' must be 1-64 characters of letters, digits, '-', '_' or '.'."
        )));
    }
    Ok(())
}

fn validate_user_name(n: &str) -> IamResult<()> {
    if !is_name(n, b"+=,.@_-") {
        return Err(IamError::from(crate::validate::pattern(
            "userName",
            n,
            roles::NAME_PATTERN,
        )));
    }
    Ok(())
}

/// `len` random characters of `alphabet` (whose length divides 256, so
/// every character is equally likely), in a zeroizing buffer.
fn random_chars(alphabet: &[u8], len: usize) -> SecretBytes {
    let r = SecretBytes::random(len);
    SecretBytes::new(
        r.expose()
            .iter()
            .map(|b| alphabet[(*b as usize) % alphabet.len()])
            .collect(),
    )
}

fn new_access_key_id() -> String {
    let tail = random_chars(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16);
    format!("AKIA{}", String::from_utf8_lossy(tail.expose()))
}

fn new_secret() -> SecretBytes {
    random_chars(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        40,
    )
}
