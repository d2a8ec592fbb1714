//! A session: a home, the profile's principal and the region every command
//! of one CLI invocation (or one daemon) acts as.

use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::Clock;
use crate::home::Home;
use crate::iam::Iam;
use crate::ids::Region;
use crate::kms::{Kms, KmsClient, KmsError, KmsResult, RequestContext};

/// Where and as whom to run.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub home: PathBuf,
    pub profile: String,
    pub region: Region,
}

impl SessionOptions {
    /// `--home`/`KEYVOL_HOME`, `--profile`/`KEYVOL_PROFILE`, `--region`/`KEYVOL_REGION`
    /// with the defaults of a fresh home.
    pub fn from_env() -> Result<Self, KmsError> {
        let region = match std::env::var("KEYVOL_REGION") {
            Ok(r) => r
                .parse()
                .map_err(|e: crate::ids::IdError| KmsError::validation(e.to_string()))?,
            Err(_) => Region::default_region(),
        };
        Ok(SessionOptions {
            home: crate::home::default_home(),
            profile: std::env::var("KEYVOL_PROFILE").unwrap_or_else(|_| "default".into()),
            region,
        })
    }
}

#[derive(Clone)]
pub struct Session {
    pub home: Arc<Home>,
    pub kms: Arc<Kms>,
    pub iam: Arc<Iam>,
    pub ctx: RequestContext,
    pub profile: String,
}

impl Session {
    pub fn open(opts: &SessionOptions) -> KmsResult<Session> {
        let mut s = Self::open_home(opts)?;
        let caller = s.iam.profile_caller(&opts.profile)?;
        s.ctx = RequestContext::new(caller, opts.region.clone());
        s.profile = opts.profile.clone();
        Ok(s)
    }

    /// A session of the home in `opts` for a caller the control plane
    /// already authenticated (see [`RequestContext::to_handoff`]), not for
    /// a profile: what a process the server starts on a caller's behalf
    /// acts as.
    pub fn open_for(opts: &SessionOptions, ctx: RequestContext) -> KmsResult<Session> {
        let mut s = Self::open_home(opts)?;
        s.ctx = ctx;
        Ok(s)
    }

    /// The home, IAM and KMS of `opts`, for the default account's root
    /// until the caller is set.
    fn open_home(opts: &SessionOptions) -> KmsResult<Session> {
        let clock = Clock::from_env().map_err(KmsError::validation)?;
        let home =
            Arc::new(Home::open(&opts.home).map_err(|e| KmsError::validation(e.to_string()))?);
        let iam = Arc::new(Iam::open(home.clone(), clock.clone())?);
        let kms = Arc::new(Kms::open(home.clone(), clock)?);
        let root = crate::request::Caller::root(crate::ids::AccountId::default_account());
        Ok(Session {
            home,
            kms,
            iam,
            ctx: RequestContext::new(root, opts.region.clone()),
            profile: String::new(),
        })
    }

    /// A session of the same home for another caller (a request the
    /// server authenticated).
    pub fn for_caller(&self, ctx: RequestContext) -> Session {
        Session {
            home: self.home.clone(),
            kms: self.kms.clone(),
            iam: self.iam.clone(),
            ctx,
            profile: String::new(),
        }
    }

    /// The KMS volume and snapshot commands use: the embedded one, or the
    /// remote one named by the `kms-endpoint` setting, signing with the
    /// profile's access key.
    pub fn kms_client(&self) -> KmsResult<Arc<dyn KmsClient>> {
        match crate::config::get(&self.home, "kms-endpoint")? {
            None => Ok(self.kms.clone()),
            Some(url) => {
                let (key_id, secret) = self.iam.profile_credentials(&self.profile)?;
                let remote =
                    crate::server::RemoteKms::new(&url, self.ctx.region.clone(), &key_id, secret)?;
                Ok(Arc::new(remote))
            }
        }
    }
}
