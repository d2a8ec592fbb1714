//! A keyvol home: the directory holding the SQLite state, the root key that
//! seals all key material at rest, volumes and the local snapshot store.
//!
//! Layout: `state.db` (SQLite, WAL), `root.key` (0600, 32 random bytes) or,
//! for a home created with a passphrase (`KEYVOL_PASSPHRASE`),
//! `root.key.sealed` (0600; the root key sealed under an Argon2id key of the
//! passphrase), `volumes/`, `snapshots/`. Nothing in the home holds key
//! material or data keys in plaintext: everything secret is sealed with
//! [`Home::seal`].
//!
//! `root.key.sealed` (96 bytes, integers little-endian):
//!
//! | bytes  | field                                                 |
//! |--------|-------------------------------------------------------|
//! | 0..8   | magic `KVROOTP1`                                      |
//! | 8..12  | Argon2id memory cost in KiB (u32)                     |
//! | 12..16 | Argon2id iterations (u32)                             |
//! | 16..20 | Argon2id parallelism (u32)                            |
//! | 20..36 | salt (random)                                         |
//! | 36..48 | nonce (random)                                        |
//! | 48..96 | AES-256-GCM of the 32-byte root key + 16-byte tag; AAD = bytes 0..36 |

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

use crate::secret::{Key256, SecretBytes};

/// Sealed-blob format version (first byte of every sealed value).
const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot use home directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("root key file {path} is not 32 bytes: the home is damaged or not a keyvol home")]
    BadRootKey { path: PathBuf },
    #[error("root key file {path} has mode {mode:o}; it must be 0600 (chmod 600 {path})")]
    RootKeyPermissions { path: PathBuf, mode: u32 },
    #[error("home {path} is protected by a passphrase: set KEYVOL_PASSPHRASE")]
    PassphraseRequired { path: PathBuf },
    #[error("the passphrase does not open {path}: check KEYVOL_PASSPHRASE")]
    WrongPassphrase { path: PathBuf },
    #[error("sealed value for '{label}' does not authenticate under this home's root key")]
    Unseal { label: String },
    #[error("database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// An opened home directory.
#[derive(Debug)]
pub struct Home {
    dir: PathBuf,
    root: Key256,
}

/// A database file as the connection pool tells them apart.
type DbIdentity = (u64, u64, std::time::SystemTime);

fn db_identity(path: &Path) -> Option<DbIdentity> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.created().ok()?))
}

/// At most this many idle connections are kept per database.
const POOL_IDLE: usize = 16;

fn pool(
) -> &'static std::sync::Mutex<std::collections::HashMap<DbIdentity, Vec<rusqlite::Connection>>> {
    static POOL: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<DbIdentity, Vec<rusqlite::Connection>>>,
    > = std::sync::OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// A connection of [`Home::connect_pooled`]; derefs to the connection.
pub struct PooledConnection {
    conn: Option<rusqlite::Connection>,
    key: Option<DbIdentity>,
}

impl std::ops::Deref for PooledConnection {
    type Target = rusqlite::Connection;
    fn deref(&self) -> &rusqlite::Connection {
        self.conn
            .as_ref()
            .expect("a pooled connection is present until dropped")
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let (Some(conn), Some(key)) = (self.conn.take(), self.key) else {
            return;
        };
        // A connection left inside a transaction is closed, not reused.
        if !conn.is_autocommit() {
            return;
        }
        let mut p = pool().lock().unwrap_or_else(|p| p.into_inner());
        let idle = p.entry(key).or_default();
        if idle.len() < POOL_IDLE {
            idle.push(conn);
        }
    }
}

/// SQLite's busy handler for the home's database: writers here hold the
/// write lock for a commit (well under a millisecond, or one fsync), so a
/// waiter retries after 50 µs, then 200 µs, then 2 ms, for about 30 s in
/// all. SQLite's own busy timeout sleeps 1 to 100 ms between tries, which
/// made concurrent requests wait for each other for milliseconds.
pub(crate) fn busy_wait(attempt: i32) -> bool {
    let micros = match attempt {
        0..=19 => 50,
        20..=199 => 200,
        200..=15_000 => 2_000,
        _ => return false,
    };
    std::thread::sleep(std::time::Duration::from_micros(micros));
    true
}

impl Home {
    /// Opens `dir`, creating it, its root key (0600) and its layout on first
    /// use, with the passphrase of `KEYVOL_PASSPHRASE` if set.
    pub fn open(dir: &Path) -> Result<Home, HomeError> {
        let pass = std::env::var("KEYVOL_PASSPHRASE")
            .ok()
            .map(|p| SecretBytes::new(p.into_bytes()));
        Self::open_with(dir, pass.as_ref())
    }

    /// Opens `dir`. A new home gets a plain root key file, or with a
    /// passphrase a sealed one; an existing sealed home needs its
    /// passphrase. Safe when several processes do this at once: the key
    /// file is created with O_EXCL and re-read if another process won.
    pub fn open_with(dir: &Path, passphrase: Option<&SecretBytes>) -> Result<Home, HomeError> {
        let io = |source| HomeError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        let plain = dir.join("root.key");
        let sealed = dir.join("root.key.sealed");
        let root = if sealed.exists() {
            let pass = passphrase.ok_or_else(|| HomeError::PassphraseRequired {
                path: dir.to_path_buf(),
            })?;
            unseal_root(&sealed, pass)?
        } else {
            match passphrase {
                Some(pass) if !plain.exists() => create_or_read(
                    &sealed,
                    || {
                        let key = Key256::random();
                        let bytes = seal_root(&key, pass)?;
                        Ok((key, bytes))
                    },
                    |p| unseal_root(p, pass),
                )?,
                _ => create_or_read(
                    &plain,
                    || {
                        let key = Key256::random();
                        let bytes = key.expose().to_vec();
                        Ok((key, bytes))
                    },
                    read_root_key,
                )?,
            }
        };
        Ok(Home {
            dir: dir.to_path_buf(),
            root,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    /// Opens a connection to the home's database (WAL, busy timeout), so
    /// that the CLI, volume daemons and the server can share it.
    pub fn connect(&self) -> Result<rusqlite::Connection, HomeError> {
        let path = self.db_path();
        let db_err = |source| HomeError::Db {
            path: path.clone(),
            source,
        };
        let mut conn = rusqlite::Connection::open(&path).map_err(db_err)?;
        conn.busy_handler(Some(busy_wait)).map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err)?;
        // Connections are long-lived (the KMS's, the pool's): the hot
        // statements of every call are prepared once per connection.
        conn.set_prepared_statement_cache_capacity(128);
        // Without the query planner stability guarantee, a statement whose
        // plan looked at a bound value (SQLite's STAT4 and LIKE paths) is
        // marked expired by every new binding and re-prepared on its next
        // step: cached statements parsed again on every call.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(db_err)?;
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
        Ok(conn)
    }

    /// A connection to the database from this process's pool, returned to
    /// it when dropped. Opening a connection parses the whole schema on its
    /// first statement (a third of the CPU of a small control-plane call),
    /// so per-call code takes pooled ones. A connection comes back only
    /// outside a transaction, and only to the pool of the same database
    /// file (device, inode, birth time): a home removed and made again at
    /// the same path never gets the old file's connections.
    pub fn connect_pooled(&self) -> Result<PooledConnection, HomeError> {
        let key = db_identity(&self.db_path());
        if let Some(k) = &key {
            let reused = pool()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(k)
                .and_then(Vec::pop);
            if let Some(conn) = reused {
                return Ok(PooledConnection {
                    conn: Some(conn),
                    key,
                });
            }
        }
        let conn = self.connect()?;
        Ok(PooledConnection {
            conn: Some(conn),
            key: key.or_else(|| db_identity(&self.db_path())),
        })
    }

    /// Runs `schema` (idempotent `CREATE ... IF NOT EXISTS` statements) in
    /// a write transaction, once per database file and `name` in this
    /// process: the control plane opens a connection per call, and a write
    /// transaction (with its fsync) per call for DDL that is already there
    /// serialized concurrent requests. The file is told apart by device,
    /// inode and birth time, so a home removed and made again gets its
    /// schema again (where the filesystem keeps no birth time, the schema
    /// runs every time).
    pub fn ensure_schema(
        &self,
        conn: &rusqlite::Connection,
        name: &'static str,
        schema: &str,
    ) -> rusqlite::Result<()> {
        self.ensure_schema_with(conn, name, |c| c.execute_batch(schema))
    }

    /// A migration step of [`Home::ensure_schema_with`]: adds `column`
    /// (with its declaration `decl`, e.g. `TEXT` or `INTEGER NOT NULL
    /// DEFAULT 1`) to `table` of a home made before it existed.
    pub fn add_column_if_missing(
        conn: &rusqlite::Connection,
        table: &str,
        column: &str,
        decl: &str,
    ) -> rusqlite::Result<()> {
        let has: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
            [table, column],
            |r| r.get(0),
        )?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
        Ok(())
    }

    /// [`Home::ensure_schema`] for a migration step that is code (a column
    /// added when missing): `step` runs in a write transaction, once per
    /// database file and `name` in this process.
    pub fn ensure_schema_with(
        &self,
        conn: &rusqlite::Connection,
        name: &'static str,
        step: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        use std::collections::HashSet;
        use std::os::unix::fs::MetadataExt;
        use std::sync::{Mutex, OnceLock};
        /// (device, inode, birth time, schema name) of the schemas already
        /// run: an inode number is reused by the next file made after one
        /// is removed, its birth time is not.
        type Done = Mutex<HashSet<(u64, u64, std::time::SystemTime, &'static str)>>;
        static DONE: OnceLock<Done> = OnceLock::new();
        let id = fs::metadata(self.db_path())
            .ok()
            .and_then(|m| Some((m.dev(), m.ino(), m.created().ok()?, name)));
        let done = DONE.get_or_init(Default::default);
        if let Some(id) = &id {
            if done.lock().unwrap_or_else(|p| p.into_inner()).contains(id) {
                return Ok(());
            }
        }
        let tx =
            rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        step(&tx)?;
        tx.commit()?;
        if let Some(id) = id {
            done.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        }
        Ok(())
    }

    /// Seals `plaintext` under the root key with AES-256-GCM. `label` names
    /// what is sealed (e.g. the key id and material version) and is bound as
    /// AAD, so a sealed value cannot be swapped into another slot.
    ///
    /// Format: version (1 byte, = 1) | nonce (12 bytes) | ciphertext | tag (16 bytes).
    /// Nonces are random; the root key seals far fewer than 2^32 values.
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new(self.root.expose().into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = seal_aad(label);
        // Encryption with a valid key and nonce cannot fail for inputs below
        // AES-GCM's 64 GiB limit; sealed values are at most a few KiB.
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// A deterministic 32-byte tag of `label` under the root key
    /// (HMAC-SHA256), for keys derived from the root key such as the audit
    /// chain key. The root key itself never leaves `Home`.
    pub fn derive_tag(&self, label: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut out = [0u8; 32];
        if let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.root.expose()) {
            mac.update(label.as_bytes());
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        out
    }

    pub fn unseal(&self, label: &str, sealed: &[u8]) -> Result<SecretBytes, HomeError> {
        let bad = || HomeError::Unseal {
            label: label.to_string(),
        };
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != SEAL_VERSION {
            return Err(bad());
        }
        let cipher = Aes256Gcm::new(self.root.expose().into());
        let aad = seal_aad(label);
        cipher
            .decrypt(
                Nonce::from_slice(&sealed[1..1 + NONCE_LEN]),
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad: &aad,
                },
            )
            .map(SecretBytes::new)
            .map_err(|_| bad())
    }
}

fn seal_aad(label: &str) -> Vec<u8> {
    let mut aad = b"keyvol-seal-v1\0".to_vec();
    aad.extend_from_slice(label.as_bytes());
    aad
}

/// Creates `path` with O_EXCL holding the bytes `make()` gives for a new
/// key, or reads it with `read` if it exists (waiting briefly for a racing
/// creator to finish writing).
fn create_or_read(
    path: &Path,
    make: impl FnOnce() -> Result<(Key256, Vec<u8>), HomeError>,
    read: impl Fn(&Path) -> Result<Key256, HomeError>,
) -> Result<Key256, HomeError> {
    let io = |source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    };
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            let (key, bytes) = make()?;
            let bytes = zeroize::Zeroizing::new(bytes);
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(io(e)),
    }
}

const ROOT_MAGIC: &[u8; 8] = b"KVROOTP1";
/// Argon2id cost: 64 MiB, 3 passes, 1 lane (OWASP's recommended minimum is
/// lower; this takes a fraction of a second per command).
const ARGON_M_KIB: u32 = 64 * 1024;
const ARGON_T: u32 = 3;
const ARGON_P: u32 = 1;

fn passphrase_key(pass: &SecretBytes, m: u32, t: u32, p: u32, salt: &[u8]) -> Option<Key256> {
    let params = argon2::Params::new(m, t, p, Some(32)).ok()?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    a.hash_password_into(pass.expose(), salt, &mut out[..])
        .ok()?;
    Key256::from_slice(&out[..])
}

fn seal_root(root: &Key256, pass: &SecretBytes) -> Result<Vec<u8>, HomeError> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut out = ROOT_MAGIC.to_vec();
    for v in [ARGON_M_KIB, ARGON_T, ARGON_P] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&salt);
    let kek = passphrase_key(pass, ARGON_M_KIB, ARGON_T, ARGON_P, &salt).ok_or_else(|| {
        HomeError::Unseal {
            label: "root key".into(),
        }
    })?;
    let cipher = Aes256Gcm::new(kek.expose().into());
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: root.expose(),
                aad: &out,
            },
        )
        .map_err(|_| HomeError::Unseal {
            label: "root key".into(),
        })?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn unseal_root(path: &Path, pass: &SecretBytes) -> Result<Key256, HomeError> {
    let io = |source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let wrong = || HomeError::WrongPassphrase {
        path: path.to_path_buf(),
    };
    let mut bytes = Vec::new();
    for _ in 0..50 {
        bytes = fs::read(path).map_err(io)?;
        if bytes.len() == 96 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if bytes.len() != 96 || &bytes[..8] != ROOT_MAGIC {
        return Err(HomeError::BadRootKey {
            path: path.to_path_buf(),
        });
    }
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let kek =
        passphrase_key(pass, word(8), word(12), word(16), &bytes[20..36]).ok_or_else(wrong)?;
    let cipher = Aes256Gcm::new(kek.expose().into());
    let pt = zeroize::Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(&bytes[36..48]),
                Payload {
                    msg: &bytes[48..],
                    aad: &bytes[..36],
                },
            )
            .map_err(|_| wrong())?,
    );
    Key256::from_slice(&pt).ok_or_else(wrong)
}

fn read_root_key(path: &Path) -> Result<Key256, HomeError> {
    let io = |source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(HomeError::RootKeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    // A racing creator may not have written the key yet: wait briefly.
    for _ in 0..50 {
        let bytes = SecretBytes::new(fs::read(path).map_err(io)?);
        if let Some(k) = Key256::from_slice(bytes.expose()) {
            return Ok(k);
        }
        if !bytes.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(HomeError::BadRootKey {
        path: path.to_path_buf(),
    })
}

/// The default home: `$KEYVOL_HOME`, else `$XDG_DATA_HOME/keyvol`, else
/// `~/.local/share/keyvol`.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("KEYVOL_HOME") {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("keyvol");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/share/keyvol")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cached statement whose plan looked at a bound value is parsed
    /// again after every new binding unless the connection keeps the query
    /// planner stability guarantee, as the home's connections do.
    #[test]
    fn cached_statements_are_not_reprepared_on_new_bindings() {
        let d = tempfile::tempdir().unwrap();
        let h = Home::open(d.path()).unwrap();
        let conn = h.connect().unwrap();
        conn.execute_batch(
            "CREATE TABLE m (k TEXT NOT NULL, n INTEGER NOT NULL, v BLOB, PRIMARY KEY (k, n));
             INSERT INTO m VALUES ('a', 1, x'00'), ('b', 1, x'01');",
        )
        .unwrap();
        let q = "SELECT v FROM m WHERE k = ?1 ORDER BY n DESC LIMIT 1";
        let reprepares = |conn: &rusqlite::Connection| {
            for k in ["a", "b", "a", "b", "a"] {
                let mut st = conn.prepare_cached(q).unwrap();
                let _: Vec<u8> = st.query_row([k], |r| r.get(0)).unwrap();
            }
            let st = conn.prepare_cached(q).unwrap();
            st.get_status(rusqlite::StatementStatus::RePrepare)
        };
        assert_eq!(reprepares(&conn), 0);
        // Without the guarantee the same loop parses the statement again.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            false,
        )
        .unwrap();
        conn.flush_prepared_statement_cache();
        assert!(
            reprepares(&conn) > 0,
            "SQLite no longer re-prepares: drop the setting"
        );
    }

    #[test]
    fn root_key_is_0600_and_stable() {
        let d = tempfile::tempdir().unwrap();
        let h1 = Home::open(d.path()).unwrap();
        let mode = fs::metadata(d.path().join("root.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = h1.seal("label", b"secret");
        let h2 = Home::open(d.path()).unwrap();
        assert_eq!(h2.unseal("label", &sealed).unwrap().expose(), b"secret");
        assert!(h2.unseal("other", &sealed).is_err());
        let mut t = sealed.clone();
        t[20] ^= 1;
        assert!(h2.unseal("label", &t).is_err());
    }

    #[test]
    fn passphrase_sealed_root_key() {
        let d = tempfile::tempdir().unwrap();
        let pass = SecretBytes::from_slice(b"correct horse battery staple");
        let h1 = Home::open_with(d.path(), Some(&pass)).unwrap();
        assert!(!d.path().join("root.key").exists());
        let sealed_file = fs::read(d.path().join("root.key.sealed")).unwrap();
        assert_eq!(sealed_file.len(), 96);
        let mode = fs::metadata(d.path().join("root.key.sealed"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let v = h1.seal("x", b"value");
        let h2 = Home::open_with(d.path(), Some(&pass)).unwrap();
        assert_eq!(h2.unseal("x", &v).unwrap().expose(), b"value");
        assert!(matches!(
            Home::open_with(d.path(), Some(&SecretBytes::from_slice(b"wrong"))),
            Err(HomeError::WrongPassphrase { .. })
        ));
        assert!(matches!(
            Home::open_with(d.path(), None),
            Err(HomeError::PassphraseRequired { .. })
        ));
    }

    #[test]
    fn loose_root_key_permissions_are_refused() {
        let d = tempfile::tempdir().unwrap();
        Home::open(d.path()).unwrap();
        fs::set_permissions(d.path().join("root.key"), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Home::open(d.path()),
            Err(HomeError::RootKeyPermissions { .. })
        ));
    }
}
