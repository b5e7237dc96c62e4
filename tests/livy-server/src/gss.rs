//! The Kerberos acceptor: GSSAPI (MIT krb5) through `libgssapi`, with acceptor credentials for one
//! principal from one keytab, accepting SPNEGO or raw krb5 tokens.
//!
//! This is the crate's only unsafe code, and only to acquire those credentials: `libgssapi`'s
//! safe `Cred::acquire` reads the process-wide default keytab (`KRB5_KTNAME`), and setting that
//! variable in a running multi-threaded process is itself unsafe. `gss_acquire_cred_from` with a
//! `keytab` credential store (MIT krb5 1.11 and later) names the keytab for these credentials
//! alone. Everything after that goes through `libgssapi`'s safe API.
#![allow(unsafe_code)]

use std::ffi::{CString, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use libgssapi::context::{SecurityContext, ServerCtx};
use libgssapi::credential::Cred;
use libgssapi::error::{Error, MajorFlags};
use libgssapi::oid::GSS_NT_KRB5_PRINCIPAL;
use libgssapi_sys::{
    _GSS_C_INDEFINITE, GSS_C_ACCEPT, OM_uint32, gss_OID_desc, gss_acquire_cred_from,
    gss_buffer_desc, gss_cred_id_t, gss_cred_usage_t, gss_import_name, gss_key_value_element_desc,
    gss_key_value_set_desc, gss_name_t, gss_release_name,
};

/// Acceptor credentials for one service principal.
pub struct Acceptor {
    cred: Cred,
    pub principal: String,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// What one client token led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client is authenticated as `principal`; `token` goes back to it if present.
    Accepted {
        principal: String,
        token: Option<Vec<u8>>,
    },
    /// The mechanism wants another round trip (a SPNEGO mechanism negotiation).
    Continue(Option<Vec<u8>>),
}

impl Acceptor {
    /// Credentials to accept tickets for `principal` with its keys from `keytab`; fails at once
    /// if the keytab is unreadable or holds no key for the principal.
    pub fn new(keytab: &Path, principal: &str) -> Result<Self, String> {
        let cred = acquire(keytab, principal).map_err(|e| {
            format!(
                "cannot acquire acceptor credentials for {principal} from {}: {e}",
                keytab.display()
            )
        })?;
        Ok(Acceptor {
            cred,
            principal: principal.to_string(),
        })
    }
}

impl crate::auth::TokenAcceptor for Acceptor {
    /// Accepts one client token with a fresh context, as Hadoop's handler does per request.
    fn accept(&self, token: &[u8]) -> Result<Outcome, String> {
        let gss = |e: Error| format!("GSSException: {}", e.to_string().trim_end());
        let mut ctx = ServerCtx::new(Some(self.cred.clone()));
        let out = ctx.step(token, None).map_err(gss)?.map(|b| b.to_vec());
        if !ctx.is_complete() {
            return Ok(Outcome::Continue(out));
        }
        let principal = ctx.source_name().map_err(gss)?.to_string();
        Ok(Outcome::Accepted {
            principal,
            token: out,
        })
    }
}

fn check(major: OM_uint32, minor: OM_uint32) -> Result<(), Error> {
    // The calling and routine error fields; the low 16 bits are supplementary information.
    if major & 0xffff_0000 == 0 {
        return Ok(());
    }
    Err(Error {
        major: MajorFlags::from_bits_retain(major),
        minor,
    })
}

/// `gss_acquire_cred_from(principal, GSS_C_ACCEPT, {keytab: path})` for the default mechanisms.
fn acquire(keytab: &Path, principal: &str) -> Result<Cred, String> {
    let keytab = CString::new(keytab.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let name_type: &'static [u8] = &GSS_NT_KRB5_PRINCIPAL;
    let mut name_type = gss_OID_desc {
        length: name_type.len() as OM_uint32,
        elements: name_type.as_ptr() as *mut c_void,
    };
    let mut name_buf = gss_buffer_desc {
        length: principal.len(),
        value: principal.as_ptr() as *mut c_void,
    };
    let mut minor: OM_uint32 = 0;
    let mut name: gss_name_t = ptr::null_mut();
    // SAFETY: the buffer and the OID point at live bytes that outlive the call, which only reads
    // them (the mutable pointers are the C API's lack of const); `name` receives a new name that
    // is released below.
    let major = unsafe { gss_import_name(&mut minor, &mut name_buf, &mut name_type, &mut name) };
    check(major, minor).map_err(|e| format!("bad principal name {principal:?}: {e}"))?;

    let element = gss_key_value_element_desc {
        key: c"keytab".as_ptr(),
        value: keytab.as_ptr(),
    };
    let store = gss_key_value_set_desc {
        count: 1,
        elements: &element as *const gss_key_value_element_desc as *mut _,
    };
    let mut cred: gss_cred_id_t = ptr::null_mut();
    // SAFETY: `name` is the live name imported above; `store` and the strings it points at live
    // across the call, which only reads them; null for the mechanism set asks for the defaults
    // and null out-pointers are allowed for the actual mechanisms and lifetime. `cred` receives
    // a new credential handle owned by no one else.
    let major = unsafe {
        gss_acquire_cred_from(
            &mut minor,
            name,
            _GSS_C_INDEFINITE,
            ptr::null_mut(),
            GSS_C_ACCEPT as gss_cred_usage_t,
            &store,
            &mut cred,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    let acquired = check(major, minor);
    let mut release_minor: OM_uint32 = 0;
    // SAFETY: `name` came from gss_import_name and is released exactly once, here.
    unsafe { gss_release_name(&mut release_minor, &mut name) };
    acquired.map_err(|e| e.to_string().trim_end().to_string())?;
    // SAFETY: `cred` is a fresh handle that nothing else holds; `Cred` releases it when dropped.
    Ok(unsafe { Cred::from_c(cred) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_keytab_fails_at_start() {
        let err = Acceptor::new(
            Path::new("/nonexistent/livy.keytab"),
            "HTTP/localhost@SPARK.TEST",
        )
        .expect_err("no keytab");
        assert!(err.contains("/nonexistent/livy.keytab"), "{err}");
    }
}
