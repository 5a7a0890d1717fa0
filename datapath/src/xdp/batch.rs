//! Batched map updates and deletes with the raw `BPF_MAP_UPDATE_BATCH` and
//! `BPF_MAP_DELETE_BATCH` commands: aya 0.14 has no batch API, and one
//! syscall per element is more than twice as slow for a million rules.

use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Elements per syscall: bounds the kernel's temporary copy.
const CHUNK: usize = 64 * 1024;

fn batch(
    cmd: libc::c_long,
    fd: BorrowedFd<'_>,
    keys: *const u8,
    values: *const u8,
    count: usize,
) -> std::io::Result<()> {
    let mut attr = BatchAttr {
        keys: keys as u64,
        values: values as u64,
        count: count as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; `keys`
    // and `values` point to `count` elements of the map's key and value
    // sizes (checked by the callers' types), alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &mut attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `keys[i] -> values[i * per_key..][..per_key]` into the map behind
/// `fd`, whose key and value types must be `K` and `V` (`per_key` is the
/// number of CPUs for a per-CPU map, else 1; `V` must then be a multiple of
/// 8 bytes). Not atomic as a whole: callers write only what no active
/// generation reads.
pub(crate) fn update<K: aya::Pod, V: aya::Pod>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
    per_key: usize,
) -> std::io::Result<()> {
    assert_eq!(keys.len() * per_key, values.len(), "per_key values per key");
    for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK * per_key)) {
        batch(
            BPF_MAP_UPDATE_BATCH,
            fd,
            k.as_ptr().cast(),
            v.as_ptr().cast(),
            k.len(),
        )?;
    }
    Ok(())
}

/// Deletes `keys` from the hash map behind `fd`; every key must be present.
pub(crate) fn delete<K: aya::Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> std::io::Result<()> {
    for k in keys.chunks(CHUNK) {
        batch(
            BPF_MAP_DELETE_BATCH,
            fd,
            k.as_ptr().cast(),
            std::ptr::null(),
            k.len(),
        )?;
    }
    Ok(())
}
