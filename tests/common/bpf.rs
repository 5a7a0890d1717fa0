//! Support for tests of the XDP backend: a bpffs directory per test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A bpffs directory for one test's pinned maps, removed on drop.
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// A fresh directory under /sys/fs/bpf, or `None` (the test skips) when
    /// this process cannot use BPF. Under `CI=true` that is a failure.
    pub fn new(name: &str) -> Option<PinDir> {
        let root = Path::new("/sys/fs/bpf");
        // SAFETY: geteuid has no preconditions.
        let usable = root.is_dir() && unsafe { libc::geteuid() } == 0;
        if !usable {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "XDP tests need root and bpffs at /sys/fs/bpf"
            );
            eprintln!("skipping: XDP tests need root and bpffs at /sys/fs/bpf");
            return None;
        }
        let dir = root.join(format!("dse-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Some(PinDir(dir))
    }
}

impl PinDir {
    /// An XDP datapath pinned here: small limits, program v1, no
    /// interfaces (runs go through `BPF_PROG_TEST_RUN`).
    pub fn config(&self) -> dse_datapath::xdp::XdpConfig {
        dse_datapath::xdp::XdpConfig {
            pin_dir: self.0.clone(),
            interfaces: Default::default(),
            skb_mode: false,
            limits: dse_datapath::xdp::XdpLimits::small(),
            program: dse_datapath::xdp::Program::V1,
        }
    }

    /// The directory another process of this test made (removed on drop).
    pub fn adopt(dir: PathBuf) -> PinDir {
        PinDir(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
