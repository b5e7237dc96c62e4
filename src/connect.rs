//! Livy and ResourceManager clients from the command line: the certificate authorities and
//! credentials the flags name (checked at start, one line naming the flag when they fail), the
//! ResourceManager addresses, and the first contact with Livy.

use std::sync::Arc;

use tracing::warn;
use url::Url;

use crate::auth::Auth;
use crate::config::{self, BadConfig, LivyArgs, LivyAuth};
use crate::http::{Trust, redacted};
use crate::kerberos::Kerberos;
use crate::livy::{Livy, LivyClient, LivyError};
use crate::yarn::{self, ResourceManager, YarnClient};

/// The systemd credential read when --livy-password-file is not given.
const PASSWORD_CREDENTIAL: &str = "livy-password";
/// The systemd credential read when --kerberos-keytab is not given.
const KEYTAB_CREDENTIAL: &str = "kerberos-keytab";

/// The clients of `--livy-url` and its ResourceManager.
#[derive(Debug, Clone)]
pub struct Clients {
    pub livy: Arc<dyn Livy>,
    pub yarn: Arc<dyn ResourceManager>,
    /// The ResourceManager addresses: `--yarn-url`, else found in `yarn-site.xml`.
    pub yarn_urls: Vec<Url>,
}

impl Clients {
    /// The Livy and the ResourceManager of a task's Livy URL: these for `--livy-url`, else those
    /// of the allowed host it names (EMR runs both on the primary node).
    pub fn for_url(&self, base: &Url) -> (Arc<dyn Livy>, Arc<dyn ResourceManager>) {
        for_url(&self.livy, &self.yarn, base)
    }
}

/// [`Clients::for_url`] from the two clients.
pub fn for_url(
    livy: &Arc<dyn Livy>,
    yarn: &Arc<dyn ResourceManager>,
    base: &Url,
) -> (Arc<dyn Livy>, Arc<dyn ResourceManager>) {
    if base == livy.base() {
        return (livy.clone(), yarn.clone());
    }
    let yarn = if base.host_str() == livy.base().host_str() {
        yarn.clone()
    } else {
        yarn.for_host(base.host_str().unwrap_or_default())
    };
    (livy.at(base.clone()), yarn)
}

/// Builds the clients the flags describe. Nothing is sent yet (see [`first_contact`]). With
/// `listing`, batch states are read from one listing per Livy server and tick (the worker).
pub async fn clients(args: &LivyArgs, listing: bool) -> Result<Clients, BadConfig> {
    let (trust, auth) = security(args).await?;
    let mut livy = LivyClient::new(args.livy_url.clone(), &trust, auth.clone())
        .map_err(|e| BadConfig(format!("--livy-url {}: {e}", redacted(&args.livy_url))))?;
    if listing {
        livy = livy.with_listing();
    }
    let yarn_urls = if args.yarn_urls.is_empty() {
        let host = config::this_host().unwrap_or_else(|| "localhost".to_owned());
        yarn::discover(&yarn::conf_dir(), &host)
    } else {
        args.yarn_urls.clone()
    };
    let yarn = YarnClient::new(yarn_urls.clone(), &trust, auth)
        .map_err(|e| BadConfig(format!("--yarn-url: {e}")))?;
    Ok(Clients {
        livy: Arc::new(livy),
        yarn: Arc::new(yarn),
        yarn_urls,
    })
}

/// The certificate authorities and credentials the configuration names, checked now: an
/// unreadable file, a password file without a password, a keytab the KDC does not take all stop
/// the start with one line naming the flag.
async fn security(args: &LivyArgs) -> Result<(Trust, Auth), BadConfig> {
    let trust = match &args.livy_ca_file {
        Some(path) => {
            Trust::from_pem_file(path).map_err(|e| BadConfig(format!("--livy-ca-file {e}")))?
        }
        None => Trust::default(),
    };
    let auth = match args.livy_auth {
        LivyAuth::None => Auth::none(),
        LivyAuth::Basic => {
            let user = args.livy_user.clone().unwrap_or_default();
            Auth::basic(&args.livy_url, &user, &password(args)?)
        }
        LivyAuth::Kerberos => {
            let host = config::this_host().unwrap_or_else(|| "localhost".to_owned());
            let principal = args
                .kerberos_principal
                .clone()
                .unwrap_or_default()
                .replace("_HOST", &host.to_ascii_lowercase());
            let keytab = credential_file(
                args.kerberos_keytab.as_deref(),
                KEYTAB_CREDENTIAL,
                "--livy-auth kerberos needs --kerberos-keytab (or a kerberos-keytab credential from systemd's LoadCredential=)",
            )?;
            check_secret_file(&keytab, "--kerberos-keytab")?;
            let login = {
                let (principal, keytab) = (principal.clone(), keytab.clone());
                tokio::task::spawn_blocking(move || Kerberos::login(&principal, &keytab))
            };
            let kerberos = login
                .await
                .map_err(|e| BadConfig(format!("--kerberos-keytab: {e}")))?
                .map_err(|e| {
                    BadConfig(format!(
                        "--kerberos-keytab {}: cannot log in as {principal}: {e}",
                        keytab.display()
                    ))
                })?;
            Auth::kerberos(Arc::new(kerberos))
        }
    };
    Ok((trust, auth))
}

/// The password's first line, from --livy-password-file or systemd's `livy-password`
/// credential.
fn password(args: &LivyArgs) -> Result<String, BadConfig> {
    let path = credential_file(
        args.livy_password_file.as_deref(),
        PASSWORD_CREDENTIAL,
        "--livy-auth basic needs --livy-password-file (or a livy-password credential from systemd's LoadCredential=)",
    )?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| BadConfig(format!("--livy-password-file {}: {e}", path.display())))?;
    let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if first.is_empty() {
        return Err(BadConfig(format!(
            "--livy-password-file {}: the first line (the password) is empty",
            path.display()
        )));
    }
    Ok(first.to_owned())
}

/// A secret file must be there, readable and filled in (install.sh creates them empty).
fn check_secret_file(path: &std::path::Path, flag: &str) -> Result<(), BadConfig> {
    match std::fs::metadata(path) {
        Err(e) => Err(BadConfig(format!("{flag} {}: {e}", path.display()))),
        Ok(m) if m.len() == 0 => Err(BadConfig(format!(
            "{flag} {}: the file is empty; put the secret in it",
            path.display()
        ))),
        Ok(_) => Ok(()),
    }
}

/// The file a flag names, else the systemd credential of that name (`$CREDENTIALS_DIRECTORY`).
fn credential_file(
    flag: Option<&std::path::Path>,
    credential: &str,
    missing: &str,
) -> Result<std::path::PathBuf, BadConfig> {
    match (flag, std::env::var_os("CREDENTIALS_DIRECTORY")) {
        (Some(p), _) => Ok(p.to_owned()),
        (None, Some(dir)) => Ok(std::path::Path::new(&dir).join(credential)),
        (None, None) => Err(BadConfig(missing.to_owned())),
    }
}

/// Before polling: a Livy that answers must be trusted (TLS) and must take the credentials. A
/// Livy that does not answer yet is waited for as usual; trust is then checked by the health
/// probe, which stops the worker on an untrusted certificate.
pub async fn first_contact(livy: &dyn Livy, args: &LivyArgs) -> Result<(), BadConfig> {
    match livy.probe().await {
        Err(e @ LivyError::Tls(_)) => Err(BadConfig(untrusted(args, &e))),
        Err(LivyError::Http {
            status: status @ (401 | 403),
            msg,
        }) => Err(BadConfig(format!(
            "--livy-auth {}: Livy at {} refused the worker's credentials ({status}: {msg})",
            args.livy_auth.as_str(),
            redacted(&args.livy_url)
        ))),
        Err(e) => {
            warn!(livy = %redacted(&args.livy_url), error = %e, "livy does not answer yet; waiting for it");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

pub fn untrusted(args: &LivyArgs, e: &LivyError) -> String {
    format!(
        "--livy-url {}: {e}; give the certificate authority that signed it with --livy-ca-file",
        redacted(&args.livy_url)
    )
}
