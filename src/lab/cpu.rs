//! CPU placement and accounting: the generator on one core, the datapath
//! under test on the other, and how busy that core was, from `/proc/stat`.

use super::{LabError, Netns};
use std::process::Command;
use std::time::Duration;

/// The CPUs online (whatever the calling thread is pinned to).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Pins the calling thread (and the threads it starts afterwards) to `cpu`.
///
/// # Errors
/// [`LabError::Io`] if the kernel refuses (no such CPU).
pub fn pin_thread(cpu: usize) -> Result<(), LabError> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity
    // get a valid set for the calling thread (pid 0).
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        return Err(LabError::Io {
            what: format!("pinning a thread to CPU {cpu}"),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Turns on threaded NAPI for `iface` in `ns` and pins its NAPI threads to
/// `cpu`, so that what the interface's receive path costs lands on `cpu`.
///
/// # Errors
/// [`LabError::Command`] if the interface refuses threaded NAPI.
pub fn pin_napi(ns: &Netns, iface: &str, cpu: usize) -> Result<(), LabError> {
    ns.exec(&[
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{iface}/threaded"),
    ])?;
    pin_napi_threads(iface, cpu)
}

/// Pins the NAPI threads of `iface` (threaded NAPI on) to `cpu`.
///
/// # Errors
/// [`LabError::Io`] if `/proc` cannot be listed.
pub fn pin_napi_threads(iface: &str, cpu: usize) -> Result<(), LabError> {
    // The threads appear once the interface is up and threaded.
    std::thread::sleep(Duration::from_millis(50));
    let prefix = format!("napi/{iface}-");
    let procs = std::fs::read_dir("/proc").map_err(|source| LabError::Io {
        what: "listing /proc".into(),
        source,
    })?;
    for p in procs.flatten() {
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with(&prefix) {
            let _ = Command::new("taskset")
                .args(["-p", "-c", &cpu.to_string()])
                .arg(p.file_name())
                .output();
        }
    }
    Ok(())
}

/// One CPU's time from `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBusy {
    busy: u64,
}

impl CpuBusy {
    /// The busy seconds from `earlier` to `self`.
    pub fn since(&self, earlier: &CpuBusy) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.busy.saturating_sub(earlier.busy) as f64 / hz
    }
}

/// CPU `cpu`'s ticks so far (busy: everything but idle and iowait).
pub fn cpu_busy(cpu: usize) -> CpuBusy {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{cpu} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&name)) else {
        return CpuBusy::default();
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    CpuBusy { busy: total - idle }
}

/// How often a CPU was taken from a thread that wanted it all.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Stalls {
    /// Gaps longer than [`STALL`] between two clock reads.
    pub count: u64,
    /// The longest gap, in seconds.
    pub longest: f64,
    /// How long the thread spun, in seconds.
    pub seconds: f64,
}

/// The shortest gap [`stalls`] counts.
pub const STALL: Duration = Duration::from_micros(100);

/// Spins a thread on `cpu` for `spin` and records the gaps between its
/// clock reads: the time the CPU ran something else (an interrupt, another
/// thread) or, on a virtual machine, nothing at all, because the host ran
/// something else. A receive queue served on `cpu` waits as long.
pub fn stalls(cpu: usize, spin: Duration) -> Stalls {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = pin_thread(cpu);
            let start = std::time::Instant::now();
            let mut last = start;
            let mut out = Stalls::default();
            while last - start < spin {
                let now = std::time::Instant::now();
                let gap = now - last;
                if gap > STALL {
                    out.count += 1;
                    out.longest = out.longest.max(gap.as_secs_f64());
                }
                last = now;
            }
            out.seconds = (last - start).as_secs_f64();
            out
        })
        .join()
        .unwrap_or_default()
    })
}
