//! A global allocator that counts the bytes live and their peak: a bench
//! that installs it (`#[global_allocator] static A: Counting = Counting;`)
//! measures what each step holds without sampling RSS.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

/// Defers to the system allocator and counts.
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes as isize, Relaxed) + bytes as isize;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: defers to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as growing or shrinking in place: a large block (glibc
        // maps it) is moved by remapping its pages, never copied, and a
        // small one's copy is small.
        if new_size >= layout.size() {
            grew(new_size - layout.size());
        } else {
            LIVE.fetch_sub((layout.size() - new_size) as isize, Relaxed);
        }
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Bytes live now.
pub fn live() -> isize {
    LIVE.load(Relaxed)
}

/// Starts a new peak from what is live now.
pub fn reset_peak() {
    PEAK.store(live(), Relaxed);
}

/// The most bytes live since [`reset_peak`].
pub fn peak() -> isize {
    PEAK.load(Relaxed)
}

/// Waits until the bytes live stop falling (threads that free a large
/// value in the background are done), up to ten seconds; the bytes live.
pub fn settled() -> isize {
    let mut last = live();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = live();
        if (last - now).abs() < 4096 {
            return now;
        }
        last = now;
    }
    last
}
