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

/// An `ifreq` for interface `name`, with `data` in its union.
fn ifreq(name: &str, data: libc::__c_anonymous_ifr_ifru) -> Result<libc::ifreq, DatapathError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(DatapathError::Io {
            what: format!("interface {name:?}"),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    let mut ifr = libc::ifreq {
        ifr_name: [0; libc::IFNAMSIZ],
        ifr_ifru: data,
    };
    for (d, &b) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    Ok(ifr)
}

/// `ioctl(request)` on `ifr` through a socket of the calling thread's
/// network namespace (sysfs shows the namespace it was mounted in).
fn ioctl(name: &str, request: libc::Ioctl, ifr: &mut libc::ifreq) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket creation; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifr` is a valid ifreq for the request, alive for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, ifr as *mut libc::ifreq) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(e.kind(), format!("{name}: {e}")));
    }
    Ok(())
}

/// The MTU of interface `name`.
///
/// # Errors
/// [`DatapathError::Io`] naming the interface if it does not exist.
pub fn mtu(name: &str) -> Result<usize, DatapathError> {
    let mut ifr = ifreq(name, libc::__c_anonymous_ifr_ifru { ifru_mtu: 0 })?;
    ioctl(name, libc::SIOCGIFMTU, &mut ifr).map_err(|source| DatapathError::Io {
        what: format!("the MTU of interface {name:?}"),
        source,
    })?;
    // SAFETY: SIOCGIFMTU filled the union's MTU.
    Ok(usize::try_from(unsafe { ifr.ifr_ifru.ifru_mtu }).unwrap_or(0))
}

/// The receive queues interface `name` has in use (ethtool's channels;
/// 1 for a driver that does not tell).
///
/// # Errors
/// [`DatapathError::Io`] naming the interface if it does not exist.
pub fn rx_queues(name: &str) -> Result<u32, DatapathError> {
    /// `struct ethtool_channels`.
    #[repr(C)]
    #[derive(Default)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    let mut channels = Channels {
        cmd: ETHTOOL_GCHANNELS,
        ..Channels::default()
    };
    let data = libc::__c_anonymous_ifr_ifru {
        ifru_data: (&raw mut channels).cast(),
    };
    let mut ifr = ifreq(name, data)?;
    match ioctl(name, libc::SIOCETHTOOL, &mut ifr) {
        Ok(()) => Ok(channels.rx_count.max(channels.combined_count).max(1)),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            interface_index(name)?;
            Ok(1)
        }
        Err(source) => Err(DatapathError::Io {
            what: format!("the receive queues of interface {name:?}"),
            source,
        }),
    }
}
