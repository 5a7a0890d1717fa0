//! Standard output that its reader may close early (`dse rules get | head`).
//!
//! SIGPIPE stays ignored, as Rust leaves it, so that a closed pipe or
//! socket is an error to handle rather than a silent death: `dse serve`
//! must outlive every client that hangs up. A failed write here marks the
//! output closed and drops what follows, so the command still finishes
//! (the demo still cleans up); its exit status then says so.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `args` to standard output, unless a write failed before.
pub fn write(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out.write_fmt(args).and_then(|()| out.flush()).is_err() {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Whether a write to standard output failed (its reader went away).
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// `print!` to [`write`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write(format_args!($($arg)*)) };
}

/// `println!` to [`write`].
#[macro_export]
macro_rules! outln {
    () => { $crate::out::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}
