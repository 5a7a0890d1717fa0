//! Network interfaces by name: what both backends bind their ports to.

use crate::datapath::DatapathError;

/// The index of interface `name`.
///
/// # Errors
/// [`DatapathError::Io`] naming the interface if it does not exist.
pub fn interface_index(name: &str) -> Result<u32, DatapathError> {
    let bad = |source| DatapathError::Io {
        what: format!("interface {name:?}"),
        source,
    };
    let c = std::ffi::CString::new(name)
        .map_err(|_| bad(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(bad(std::io::Error::last_os_error())),
        i => Ok(i),
    }
}
