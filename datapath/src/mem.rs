//! Large tables backed by transparent huge pages where the kernel offers them.
//!
//! A flow cache or counter array of a million entries spans hundreds of
//! 4 KiB pages per MiB; with random access nearly every lookup is a TLB
//! miss. Advising huge pages before the first touch removes most of them.

/// Below this many bytes a table is left on ordinary pages.
const HUGE_THRESHOLD: usize = 4 << 20;

/// A vector of `n` copies of `value`, on huge pages when large.
pub fn filled<T: Clone>(n: usize, value: T) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    advise_huge(v.as_ptr(), n * size_of::<T>());
    v.resize(n, value);
    v
}

/// A vector of `n` values from `make`, on huge pages when large.
pub fn from_fn<T>(n: usize, make: impl FnMut(usize) -> T) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    advise_huge(v.as_ptr(), n * size_of::<T>());
    v.extend((0..n).map(make));
    v
}

/// Advises huge pages for the `bytes` at `buffer` (before their first touch);
/// below [`HUGE_THRESHOLD`] it does nothing.
pub fn advise_huge<T>(buffer: *const T, bytes: usize) {
    if bytes < HUGE_THRESHOLD {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buffer as usize;
        let aligned = start.next_multiple_of(HUGE);
        let end = (start + bytes) & !(HUGE - 1);
        if end > aligned {
            // SAFETY: the range lies inside this vector's allocation; MADV_HUGEPAGE
            // only changes how the kernel backs it. Failure (no THP) is harmless.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
}

/// Hints the CPU to load the cache line at `p`; never faults.
#[inline]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
