//! The record arrays userspace writes and the program only reads (rule and
//! action records), written through a shared mapping of the map's memory.
//!
//! An array map created with `BPF_F_MMAPABLE` (Linux 5.5) can be mapped
//! into the process: a write is then a store, where `BPF_MAP_UPDATE_BATCH`
//! costs about 300 ns a record in the kernel's per-element copy (a million
//! rule records took 0.3 s). Maps pinned by an older object without the
//! flag cannot be mapped; their records go through batched updates as
//! before, with the same result.

use super::batch;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

/// An array map's records, mapped when the map allows it.
pub(crate) struct Records<V> {
    /// The map (a duplicate of the loader's descriptor), for the syscalls.
    fd: OwnedFd,
    mapped: Option<Mapping<V>>,
    len: u32,
}

/// A shared, writable mapping of an mmapable array map's values.
struct Mapping<V> {
    values: NonNull<V>,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; `V` is
// Pod (no pointers, no interior references).
unsafe impl<V: Send> Send for Mapping<V> {}
// SAFETY: as above; shared access only reads.
unsafe impl<V: Sync> Sync for Mapping<V> {}

impl<V> Drop for Mapping<V> {
    fn drop(&mut self) {
        // SAFETY: `values` and `bytes` are exactly what mmap returned and was given.
        unsafe { libc::munmap(self.values.as_ptr().cast(), self.bytes) };
    }
}

impl<V: aya::Pod + Sync> Records<V> {
    /// The records of the array map behind `fd`, of `len` entries of `V`:
    /// mapped if the map was created mmapable, else reached by syscalls.
    ///
    /// # Errors
    /// The OS error if `fd` cannot be duplicated.
    pub(crate) fn open(fd: BorrowedFd<'_>, len: u32) -> std::io::Result<Records<V>> {
        // The kernel lays an mmapable array's values out at a stride of
        // the value size rounded up to 8 bytes.
        const {
            assert!(
                size_of::<V>().is_multiple_of(8),
                "record stride is its size"
            )
        };
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let bytes = (len as usize * size_of::<V>()).next_multiple_of(page);
        // SAFETY: a fresh shared mapping of the map fd; the kernel refuses
        // it (MAP_FAILED) unless the map is an mmapable array at least
        // `bytes` long. Nothing else aliases the returned memory in Rust.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        let mapped = (p != libc::MAP_FAILED)
            .then(|| NonNull::new(p.cast::<V>()))
            .flatten()
            .map(|values| Mapping { values, bytes });
        Ok(Records {
            fd: fd.try_clone_to_owned()?,
            mapped,
            len,
        })
    }

    /// Whether writes go through a mapping (rather than syscalls).
    pub(crate) fn is_mapped(&self) -> bool {
        self.mapped.is_some()
    }

    /// Writes `values[i]` at index `idx[i]`. Not atomic as a whole: callers
    /// write only records no active generation reads, and publish them with
    /// a later syscall (the generation flip), which orders these stores
    /// before it.
    ///
    /// # Errors
    /// `InvalidInput` if an index is out of range (nothing is written);
    /// the kernel's error for a batched update.
    pub(crate) fn write(&mut self, idx: &[u32], values: &[V]) -> std::io::Result<()> {
        assert_eq!(idx.len(), values.len(), "one value per index");
        if let Some(bad) = idx.iter().find(|&&i| i >= self.len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("record index {bad} beyond the map's {} entries", self.len),
            ));
        }
        let Some(m) = &self.mapped else {
            return batch::update(self.fd.as_fd(), idx, values, 1);
        };
        for (&i, v) in idx.iter().zip(values) {
            // SAFETY: i < len (checked above), and the mapping holds len
            // values of V; volatile, as the memory is shared with the kernel.
            unsafe { m.values.as_ptr().add(i as usize).write_volatile(*v) };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

impl<V: aya::Pod + Default + Sync> Records<V> {
    /// The records at `start..start + count`.
    ///
    /// # Errors
    /// `InvalidInput` if the range is out of bounds; the kernel's error for
    /// a batched lookup.
    pub(crate) fn read(&self, start: u32, count: usize) -> std::io::Result<Vec<V>> {
        if start as usize + count > self.len as usize {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "records {start}..{} beyond the map's {} entries",
                    start as usize + count,
                    self.len
                ),
            ));
        }
        let Some(m) = &self.mapped else {
            return batch::lookup_range(self.fd.as_fd(), start, count, 1);
        };
        Ok((start as usize..start as usize + count)
            // SAFETY: in range (checked above); volatile, as in `write`.
            .map(|i| unsafe { m.values.as_ptr().add(i).read_volatile() })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    const BPF_F_MMAPABLE: u32 = 1 << 10;

    /// A 16-byte Pod record.
    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug, PartialEq)]
    struct Rec {
        a: u64,
        b: u64,
    }
    // SAFETY: two u64, no padding.
    unsafe impl aya::Pod for Rec {}

    /// An array map of `len` Recs, or `None` without root (under CI a failure).
    fn array(len: u32, flags: u32) -> Option<OwnedFd> {
        #[repr(C)]
        struct Create {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
        }
        let mut attr = Create {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: size_of::<Rec>() as u32,
            max_entries: len,
            map_flags: flags,
        };
        // SAFETY: a valid bpf_attr prefix of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_CREATE,
                &mut attr as *mut Create,
                size_of::<Create>() as u32,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "creating a BPF array map needs root: {e}"
            );
            eprintln!("skipping: creating a BPF array map: {e}");
            return None;
        }
        // SAFETY: a fresh fd this process owns.
        Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn round_trip(flags: u32, mapped: bool) {
        let Some(fd) = array(3000, flags) else { return };
        let mut r = Records::<Rec>::open(fd.as_fd(), 3000).expect("opens");
        assert_eq!(r.is_mapped(), mapped);
        let idx = [0u32, 7, 2999];
        let vals = [Rec { a: 1, b: 2 }, Rec { a: 3, b: 4 }, Rec { a: 5, b: 6 }];
        r.write(&idx, &vals).expect("writes");
        let got = r.read(0, 3000).expect("reads");
        assert_eq!((got[0], got[7], got[2999]), (vals[0], vals[1], vals[2]));
        assert_eq!(got[1], Rec::default());
        // What the kernel reads (by syscall) is what was written through the mapping.
        let by_syscall: Vec<Rec> = batch::lookup_range(fd.as_fd(), 7, 1, 1).expect("looks up");
        assert_eq!(by_syscall[0], vals[1]);
        let err = r
            .write(&[3000], &[Rec::default()])
            .expect_err("index past the end");
        assert!(err.to_string().contains("3000"), "{err}");
        assert!(r.read(2990, 11).is_err());
    }

    #[test]
    fn mmapable_arrays_are_written_through_a_mapping() {
        round_trip(BPF_F_MMAPABLE, true);
    }

    #[test]
    fn other_arrays_are_written_with_syscalls() {
        round_trip(0, false);
    }

    #[test]
    fn a_large_batched_write_split_over_threads_lands_whole() {
        // More than two syscall chunks: batch::update spreads them over the CPUs.
        let n = 300_000u32;
        let Some(fd) = array(n, 0) else { return };
        let mut r = Records::<Rec>::open(fd.as_fd(), n).expect("opens");
        assert!(!r.is_mapped());
        let idx: Vec<u32> = (0..n).rev().collect();
        let vals: Vec<Rec> = idx
            .iter()
            .map(|&i| Rec {
                a: u64::from(i),
                b: !u64::from(i),
            })
            .collect();
        r.write(&idx, &vals).expect("writes");
        let got = r.read(0, n as usize).expect("reads");
        for (i, v) in got.iter().enumerate() {
            assert_eq!(
                *v,
                Rec {
                    a: i as u64,
                    b: !(i as u64)
                },
                "record {i}"
            );
        }
    }
}
