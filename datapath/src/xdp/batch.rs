//! Batched map updates and deletes with the raw `BPF_MAP_UPDATE_BATCH` and
//! `BPF_MAP_DELETE_BATCH` commands: aya 0.14 has no batch API, and one
//! syscall per element is more than twice as slow for a million rules.

use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
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

/// Issues one batch command; the kernel sets `attr.count` to the elements
/// it processed.
fn sys_bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; the
    // callers point its keys and values at buffers of `count` elements of
    // the map's key and value sizes (checked by their types), alive for the
    // call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn batch(
    cmd: libc::c_long,
    fd: BorrowedFd<'_>,
    keys: *const u8,
    values: *const u8,
    count: usize,
) -> std::io::Result<()> {
    sys_bpf(
        cmd,
        &mut BatchAttr {
            keys: keys as u64,
            values: values as u64,
            count: count as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        },
    )
}

/// Writes `keys[i] -> values[i * per_key..][..per_key]` into the map behind
/// `fd`, whose key and value types must be `K` and `V` (`per_key` is the
/// number of CPUs for a per-CPU map, else 1; `V` must then be a multiple of
/// 8 bytes). Not atomic as a whole: callers write only what no active
/// generation reads.
pub(crate) fn update<K: aya::Pod + Sync, V: aya::Pod + Sync>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
    per_key: usize,
) -> std::io::Result<()> {
    assert_eq!(keys.len() * per_key, values.len(), "per_key values per key");
    let one = |keys: &[K], values: &[V]| -> std::io::Result<()> {
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
    };
    // Asked once: `available_parallelism` reads cgroup files on each call,
    // which cost a one-rule patch more than its map updates.
    static WORKERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let workers =
        *WORKERS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers < 2 || keys.len() < 2 * CHUNK {
        return one(keys, values);
    }
    let per = keys.len().div_ceil(workers);
    std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .chunks(per)
            .zip(values.chunks(per * per_key))
            .map(|(k, v)| s.spawn(move || one(k, v)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("a batch worker never panics"))
    })
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

/// Reads the values of array indices `start..start + count` from the array
/// map behind `fd` (`per_key` values each: the number of CPUs for a per-CPU
/// array, else 1).
pub(crate) fn lookup_range<V: aya::Pod + Default>(
    fd: BorrowedFd<'_>,
    start: u32,
    count: usize,
    per_key: usize,
) -> std::io::Result<Vec<V>> {
    let mut values = vec![V::default(); count * per_key];
    let mut keys = vec![0u32; CHUNK];
    let mut done = 0usize;
    while done < count {
        let n = (count - done).min(CHUNK);
        // The kernel starts after `in_batch`; nothing given means index 0.
        let prev: u32 = (start as usize + done).wrapping_sub(1) as u32;
        let mut out_batch: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if start as usize + done == 0 {
                0
            } else {
                &prev as *const u32 as u64
            },
            out_batch: &mut out_batch as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values[done * per_key..].as_mut_ptr() as u64,
            count: n as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let r = sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = attr.count as usize;
        if let Err(e) = r {
            // ENOENT: the end of the array came first.
            if e.raw_os_error() != Some(libc::ENOENT) || got == 0 {
                return Err(e);
            }
        }
        if got == 0 {
            break;
        }
        done += got;
    }
    Ok(values)
}

/// Every (key, value) of the hash map behind `fd`, whose key and value
/// types must be `K` and `V`, read with `BPF_MAP_LOOKUP_BATCH`. Entries
/// written meanwhile may or may not be seen; the callers read maps only
/// they write.
pub(crate) fn lookup_all<K: aya::Pod + Default, V: aya::Pod + Default>(
    fd: BorrowedFd<'_>,
) -> std::io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut keys = vec![K::default(); CHUNK];
    let mut values = vec![V::default(); CHUNK];
    // A hash map's batch position is a bucket index (u32); room for 8 bytes.
    let (mut in_batch, mut out_batch) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &in_batch as *const u64 as u64
            },
            out_batch: &mut out_batch as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let r = sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = attr.count as usize;
        out.extend(
            keys[..got]
                .iter()
                .copied()
                .zip(values[..got].iter().copied()),
        );
        match r {
            Ok(()) => {}
            // ENOENT: no bucket is left.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        in_batch = out_batch;
        first = false;
    }
}
