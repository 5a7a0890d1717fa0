//! Shared test support: packet builders, the fixture table, bpffs directories.

pub mod blackout;
pub mod bpf;
pub mod daemon;
pub mod exchange;
pub mod fabric;
pub mod fixtures;
pub mod fleet;
pub mod forward;
pub mod lab;
pub mod load;
pub mod netns;
pub mod packets;
pub mod random;
pub mod restart;
pub mod stream;
pub mod topology;

/// Whether this test runs as root; under `CI=true` it must.
#[allow(dead_code)]
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root || std::env::var("CI").as_deref() != Ok("true"),
        "CI runs this test as root"
    );
    root
}

/// What `cmd` printed, or `None` (the test skips that part) when `tool`,
/// which `cargo xtask setup` installs for the tests, is not here; under
/// `CI=true` that is a failure.
#[allow(dead_code)]
pub fn tool_output(tool: &str, cmd: &mut std::process::Command) -> Option<std::process::Output> {
    match cmd.output() {
        Ok(o) => Some(o),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI has {tool}: {e}"
            );
            eprintln!("no {tool} here ({e}): that part is skipped");
            None
        }
    }
}
