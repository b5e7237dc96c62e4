//! The worker's Kerberos identity: tickets from its keytab, SPNEGO tokens for `HTTP/<host>`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use tracing::{debug, info};

use crate::gssapi::{Credential, GssError, Gssapi};

/// A principal logged in from a keytab. Tickets live in a private in-memory cache; MIT's library
/// gets a new one from the keytab when the cached one expires. Should a token still fail, the
/// credentials are acquired afresh once before the failure is reported.
pub struct Kerberos {
    lib: Arc<Gssapi>,
    principal: String,
    keytab: PathBuf,
    ccache: String,
    cred: RwLock<Arc<Credential>>,
}

impl std::fmt::Debug for Kerberos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kerberos")
            .field("principal", &self.principal)
            .field("keytab", &self.keytab)
            .finish_non_exhaustive()
    }
}

impl Kerberos {
    /// Loads the system's GSSAPI library and gets a first ticket (this talks to the KDC, and
    /// blocks). A missing library, an unreadable or stale keytab, a principal the keytab lacks,
    /// or an unreachable KDC fail here.
    pub fn login(principal: &str, keytab: &Path) -> Result<Self, GssError> {
        let lib = Arc::new(Gssapi::load()?);
        let ccache = format!("MEMORY:spark-activity-worker-{}", std::process::id());
        let cred = lib.acquire(principal, keytab, &ccache)?;
        info!(principal, keytab = %keytab.display(), "kerberos: logged in from the keytab");
        Ok(Self {
            lib,
            principal: principal.to_owned(),
            keytab: keytab.to_owned(),
            ccache,
            cred: RwLock::new(Arc::new(cred)),
        })
    }

    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// A base64 SPNEGO token for `HTTP/<host>`, as sent after `Authorization: Negotiate`.
    /// Blocking (it may talk to the KDC): async callers use [`Kerberos::token`].
    pub fn token_blocking(&self, host: &str) -> Result<String, GssError> {
        let cred = self.current();
        let token = match self.lib.token(&cred, "HTTP", host) {
            Ok(t) => t,
            Err(first) => {
                debug!(host, error = %first, "kerberos: token failed; acquiring credentials again");
                let fresh = Arc::new(self.lib.acquire(
                    &self.principal,
                    &self.keytab,
                    &self.ccache,
                )?);
                *self.cred.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
                self.lib.token(&fresh, "HTTP", host)?
            }
        };
        Ok(base64::engine::general_purpose::STANDARD.encode(token))
    }

    pub async fn token(self: &Arc<Self>, host: &str) -> Result<String, GssError> {
        let me = self.clone();
        let host = host.to_owned();
        tokio::task::spawn_blocking(move || me.token_blocking(&host))
            .await
            .map_err(|e| GssError(format!("token task failed: {e}")))?
    }

    fn current(&self) -> Arc<Credential> {
        self.cred.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
