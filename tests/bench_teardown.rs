//! The bench harness tears its topology down even when a run fails or
//! panics half-way. Its own binary: it puts a failing `nft` on PATH.
//! Needs root and bpffs.

use dse::bench::Options;
use dse::bench::generator::Mix;
use dse::bench::subject::Subject;
use dse::bench::topology::{Topology, namespace_exists};
use std::time::Duration;

fn tag(name: &str) -> String {
    format!("{name}{}", std::process::id() % 100_000)
}

#[test]
fn a_failed_run_leaves_nothing_behind() {
    // An `nft` that always fails: the run fails at the nftables subject,
    // after the topology is built and the XDP subject measured.
    let fake = std::env::temp_dir().join(format!("dse-test-fake-nft-{}", std::process::id()));
    std::fs::create_dir_all(&fake).unwrap();
    let nft = fake.join("nft");
    std::fs::write(
        &nft,
        "#!/bin/sh\necho 'nft: simulated failure' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&nft, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // SAFETY: this binary's only test; nothing else reads the environment
    // meanwhile.
    unsafe { std::env::set_var("PATH", &path) };
    let mut o = Options::quick();
    o.tag = tag("tf");
    o.subjects = vec![Subject::Xdp, Subject::Nft];
    o.mixes = vec![Mix::Small];
    o.rules = vec![];
    o.masks = vec![];
    o.api_install = vec![];
    o.window = Duration::from_millis(100);
    let names = [
        format!("dseb-{}-gen", o.tag),
        format!("dseb-{}-dut", o.tag),
        format!("dseb-{}-sink", o.tag),
    ];
    let err = dse::bench::run(&o).unwrap_err().to_string();
    assert!(err.contains("simulated failure"), "{err}");
    for n in &names {
        assert!(
            !namespace_exists(n),
            "{n} is left behind after a failed run"
        );
    }
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/dse-bench-{}", o.tag)).exists());
    assert!(
        !std::env::temp_dir()
            .join(format!("dse-bench-{}", o.tag))
            .exists()
    );
    let _ = std::fs::remove_dir_all(&fake);

    // A panic while the topology is up removes it too.
    let t = tag("tp");
    let built = std::panic::catch_unwind(|| {
        let topo = Topology::build(&t).unwrap();
        let names = topo.namespaces();
        assert!(names.iter().all(|n| namespace_exists(n)));
        std::panic::panic_any(names);
    });
    let names = built.unwrap_err().downcast::<[String; 3]>().unwrap();
    for n in names.iter() {
        assert!(!namespace_exists(n), "{n} is left behind after a panic");
    }
}
