//! The few GSSAPI calls a Kerberos (SPNEGO) client needs, from the system's MIT
//! `libgssapi_krb5.so.2`, loaded at run time and only when `--livy-auth kerberos` asks for it.
//!
//! Loaded rather than linked so that one release binary runs on every node: the binary needs
//! nothing beyond glibc, and a cluster without Kerberos never loads the library. Amazon Linux 2
//! and 2023 always ship it (krb5-libs). This is the crate's only `unsafe` code: foreign calls with
//! the argument shapes of RFC 2744 (the GSSAPI C bindings) and MIT's `gss_acquire_cred_from`.
//!
//! Credentials come from a client keytab into a private in-memory credential cache, so MIT's
//! library itself fetches a new ticket from the keytab whenever the cached one is expired or
//! about to be — the worker never runs `kinit` and never touches the user's caches.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_void};
use std::path::Path;
use std::ptr;
use std::sync::Arc;

use libloading::Library;

type OmUint32 = u32;

#[repr(C)]
struct BufferDesc {
    length: usize,
    value: *mut c_void,
}

#[repr(C)]
struct OidDesc {
    length: OmUint32,
    elements: *mut c_void,
}

#[repr(C)]
struct KeyValueElement {
    key: *const c_char,
    value: *const c_char,
}

#[repr(C)]
struct KeyValueSet {
    count: OmUint32,
    elements: *const KeyValueElement,
}

type Name = *mut c_void;
type Ctx = *mut c_void;
type Cred = *mut c_void;

type ImportName =
    unsafe extern "C" fn(*mut OmUint32, *mut BufferDesc, *mut OidDesc, *mut Name) -> OmUint32;
type ReleaseName = unsafe extern "C" fn(*mut OmUint32, *mut Name) -> OmUint32;
type AcquireCredFrom = unsafe extern "C" fn(
    *mut OmUint32,
    Name,
    OmUint32,
    *mut c_void,
    i32,
    *const KeyValueSet,
    *mut Cred,
    *mut *mut c_void,
    *mut OmUint32,
) -> OmUint32;
type ReleaseCred = unsafe extern "C" fn(*mut OmUint32, *mut Cred) -> OmUint32;
type InitSecContext = unsafe extern "C" fn(
    *mut OmUint32,
    Cred,
    *mut Ctx,
    Name,
    *mut OidDesc,
    OmUint32,
    OmUint32,
    *mut c_void,
    *mut BufferDesc,
    *mut *mut OidDesc,
    *mut BufferDesc,
    *mut OmUint32,
    *mut OmUint32,
) -> OmUint32;
type DeleteSecContext = unsafe extern "C" fn(*mut OmUint32, *mut Ctx, *mut BufferDesc) -> OmUint32;
type ReleaseBuffer = unsafe extern "C" fn(*mut OmUint32, *mut BufferDesc) -> OmUint32;
type DisplayStatus = unsafe extern "C" fn(
    *mut OmUint32,
    OmUint32,
    i32,
    *mut OidDesc,
    *mut OmUint32,
    *mut BufferDesc,
) -> OmUint32;

const GSS_S_COMPLETE: OmUint32 = 0;
const GSS_S_CONTINUE_NEEDED: OmUint32 = 1;
/// The routine-error field of a major status (RFC 2744, 3.9.1).
const ROUTINE_ERROR_MASK: OmUint32 = 0xff << 16;
const GSS_C_GSS_CODE: i32 = 1;
const GSS_C_MECH_CODE: i32 = 2;
const GSS_C_INITIATE: i32 = 1;

/// 1.2.840.113554.1.2.1.4: a `service@host` name.
const NT_HOSTBASED_SERVICE: &[u8] = b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x01\x04";
/// 1.2.840.113554.1.2.2.1: a Kerberos principal name, `user@REALM`.
const NT_KRB5_PRINCIPAL: &[u8] = b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02\x01";
/// 1.3.6.1.5.5.2: SPNEGO, what HTTP `Negotiate` carries.
const MECH_SPNEGO: &[u8] = b"\x2b\x06\x01\x05\x05\x02";

/// Where the library is found on Amazon Linux and Debian alike.
const LIBRARY: &str = "libgssapi_krb5.so.2";

/// A GSSAPI failure, in the library's own words (major status, then the Kerberos detail).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct GssError(pub String);

struct Functions {
    import_name: ImportName,
    release_name: ReleaseName,
    acquire_cred_from: AcquireCredFrom,
    release_cred: ReleaseCred,
    init_sec_context: InitSecContext,
    delete_sec_context: DeleteSecContext,
    release_buffer: ReleaseBuffer,
    display_status: DisplayStatus,
}

/// The loaded library. The function pointers stay valid while `_lib` lives, which is as long
/// as this value: they are never handed out.
pub struct Gssapi {
    f: Functions,
    _lib: Library,
}

impl std::fmt::Debug for Gssapi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gssapi")
    }
}

impl Gssapi {
    pub fn load() -> Result<Self, GssError> {
        // SAFETY: loading MIT's GSSAPI library runs only its own initialisers.
        let lib = unsafe { Library::new(LIBRARY) }.map_err(|e| {
            GssError(format!(
                "cannot load {LIBRARY} ({e}); install the Kerberos libraries (krb5-libs)"
            ))
        })?;
        // SAFETY: each symbol is read with the type RFC 2744 (or MIT, for
        // gss_acquire_cred_from) gives its C prototype.
        let f = unsafe {
            Functions {
                import_name: *sym(&lib, b"gss_import_name\0")?,
                release_name: *sym(&lib, b"gss_release_name\0")?,
                acquire_cred_from: *sym(&lib, b"gss_acquire_cred_from\0")?,
                release_cred: *sym(&lib, b"gss_release_cred\0")?,
                init_sec_context: *sym(&lib, b"gss_init_sec_context\0")?,
                delete_sec_context: *sym(&lib, b"gss_delete_sec_context\0")?,
                release_buffer: *sym(&lib, b"gss_release_buffer\0")?,
                display_status: *sym(&lib, b"gss_display_status\0")?,
            }
        };
        Ok(Self { f, _lib: lib })
    }

    /// Initiator credentials of `principal` from `keytab`, cached in the in-memory credential
    /// cache `ccache` (`MEMORY:name`). Gets the first ticket now, so a wrong keytab, principal or
    /// an unreachable KDC shows here.
    pub fn acquire(
        self: &Arc<Self>,
        principal: &str,
        keytab: &Path,
        ccache: &str,
    ) -> Result<Credential, GssError> {
        let name = self.import(principal, NT_KRB5_PRINCIPAL)?;
        let keytab = c_string(&format!("FILE:{}", keytab.display()))?;
        let ccache = c_string(ccache)?;
        let keys = [c"client_keytab", c"ccache"];
        let elements = [
            KeyValueElement {
                key: keys[0].as_ptr(),
                value: keytab.as_ptr(),
            },
            KeyValueElement {
                key: keys[1].as_ptr(),
                value: ccache.as_ptr(),
            },
        ];
        let store = KeyValueSet {
            count: elements.len() as OmUint32,
            elements: elements.as_ptr(),
        };
        let mut minor = 0;
        let mut cred: Cred = ptr::null_mut();
        // SAFETY: `store`, its strings and `name` outlive the call; the outputs we do not want
        // (actual mechanisms, lifetime) are passed as NULL, which the API allows.
        let major = unsafe {
            (self.f.acquire_cred_from)(
                &mut minor,
                name.0,
                0,
                ptr::null_mut(),
                GSS_C_INITIATE,
                &store,
                &mut cred,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if major & ROUTINE_ERROR_MASK != 0 {
            return Err(self.status(major, minor));
        }
        Ok(Credential {
            lib: self.clone(),
            cred,
        })
    }

    /// A first (and, without mutual authentication, only) SPNEGO token for `service@host`.
    pub fn token(&self, cred: &Credential, service: &str, host: &str) -> Result<Vec<u8>, GssError> {
        let target = self.import(&format!("{service}@{host}"), NT_HOSTBASED_SERVICE)?;
        let mut mech = oid(MECH_SPNEGO);
        let mut ctx: Ctx = ptr::null_mut();
        let mut out = BufferDesc {
            length: 0,
            value: ptr::null_mut(),
        };
        let mut minor = 0;
        // SAFETY: `mech` points at a static byte string the library only reads; `target` lives
        // until the end of this function; the context and output token are released below.
        let major = unsafe {
            (self.f.init_sec_context)(
                &mut minor,
                cred.cred,
                &mut ctx,
                target.0,
                &mut mech,
                0,
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                &mut out,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        let token = if out.value.is_null() || out.length == 0 {
            Vec::new()
        } else {
            // SAFETY: the library gave `length` readable bytes at `value`.
            unsafe { std::slice::from_raw_parts(out.value.cast::<u8>(), out.length) }.to_vec()
        };
        let mut ignored = 0;
        // SAFETY: both were produced by the calls above (or are still empty/NULL, which the
        // release functions accept).
        unsafe {
            (self.f.release_buffer)(&mut ignored, &mut out);
            if !ctx.is_null() {
                (self.f.delete_sec_context)(&mut ignored, &mut ctx, ptr::null_mut());
            }
        }
        if major != GSS_S_COMPLETE && major != GSS_S_CONTINUE_NEEDED {
            return Err(self.status(major, minor));
        }
        if token.is_empty() {
            return Err(GssError("GSSAPI produced no token".into()));
        }
        Ok(token)
    }

    fn import(&self, text: &str, name_type: &'static [u8]) -> Result<NameGuard<'_>, GssError> {
        let mut buf = BufferDesc {
            length: text.len(),
            value: text.as_ptr().cast_mut().cast(),
        };
        let mut kind = oid(name_type);
        let mut minor = 0;
        let mut name: Name = ptr::null_mut();
        // SAFETY: the library copies the name out of `buf` and only reads `kind`.
        let major = unsafe { (self.f.import_name)(&mut minor, &mut buf, &mut kind, &mut name) };
        if major != GSS_S_COMPLETE {
            return Err(self.status(major, minor));
        }
        Ok(NameGuard(name, self))
    }

    /// The messages of a major status and its minor (Kerberos) status, joined.
    fn status(&self, major: OmUint32, minor: OmUint32) -> GssError {
        let mut parts = self.messages(major, GSS_C_GSS_CODE);
        if minor != 0 {
            parts.extend(self.messages(minor, GSS_C_MECH_CODE));
        }
        parts.retain(|p| !p.is_empty() && !p.starts_with("Unspecified GSS failure"));
        if parts.is_empty() {
            return GssError(format!("GSSAPI error {major:#x}/{minor}"));
        }
        GssError(parts.join(": "))
    }

    fn messages(&self, code: OmUint32, kind: i32) -> Vec<String> {
        let mut out = Vec::new();
        let mut context: OmUint32 = 0;
        for _ in 0..8 {
            let mut minor = 0;
            let mut buf = BufferDesc {
                length: 0,
                value: ptr::null_mut(),
            };
            // SAFETY: a NULL mechanism means the default one; the buffer is released below.
            let major = unsafe {
                (self.f.display_status)(
                    &mut minor,
                    code,
                    kind,
                    ptr::null_mut(),
                    &mut context,
                    &mut buf,
                )
            };
            if major != GSS_S_COMPLETE {
                break;
            }
            if !buf.value.is_null() {
                // SAFETY: the library gave `length` readable bytes at `value`.
                let bytes =
                    unsafe { std::slice::from_raw_parts(buf.value.cast::<u8>(), buf.length) };
                out.push(String::from_utf8_lossy(bytes).trim().to_owned());
            }
            let mut ignored = 0;
            // SAFETY: released once, as the library asks.
            unsafe { (self.f.release_buffer)(&mut ignored, &mut buf) };
            if context == 0 {
                break;
            }
        }
        out
    }
}

/// Initiator credentials; released when dropped.
pub struct Credential {
    lib: Arc<Gssapi>,
    cred: Cred,
}

// SAFETY: MIT's credential handles are locked internally (one mutex per handle) and may be used
// by several threads at once; the handle is only read here until it is released in `drop`.
unsafe impl Send for Credential {}
// SAFETY: as above.
unsafe impl Sync for Credential {}

impl Drop for Credential {
    fn drop(&mut self) {
        let mut minor = 0;
        // SAFETY: acquired by `Gssapi::acquire`, released once.
        unsafe { (self.lib.f.release_cred)(&mut minor, &mut self.cred) };
    }
}

struct NameGuard<'a>(Name, &'a Gssapi);

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        let mut minor = 0;
        // SAFETY: imported by `Gssapi::import`, released once.
        unsafe { (self.1.f.release_name)(&mut minor, &mut self.0) };
    }
}

/// A GSSAPI OID over a static byte string; the library never writes through it.
fn oid(bytes: &'static [u8]) -> OidDesc {
    OidDesc {
        length: bytes.len() as OmUint32,
        elements: bytes.as_ptr().cast_mut().cast(),
    }
}

fn c_string(s: &str) -> Result<CString, GssError> {
    CString::new(s).map_err(|_| GssError(format!("{s:?} contains a NUL byte")))
}

/// # Safety
/// `T` must be the symbol's real type.
unsafe fn sym<'l, T>(lib: &'l Library, name: &[u8]) -> Result<libloading::Symbol<'l, T>, GssError> {
    // SAFETY: the caller promises the type.
    unsafe { lib.get(name) }.map_err(|e| {
        GssError(format!(
            "{LIBRARY} lacks {} ({e}); MIT Kerberos 1.11 or later is needed",
            String::from_utf8_lossy(&name[..name.len() - 1])
        ))
    })
}
