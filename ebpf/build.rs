//! Rebuilds `dse.bpf.o` from its C source when asked (`DSE_BUILD_EBPF=1`)
//! and clang is present. Otherwise the committed object is used as is, so
//! that `cargo build` works without clang; `.ci/run` checks that the
//! committed object is what the committed source builds to.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DSE_BUILD_EBPF");
    println!("cargo:rerun-if-changed=src/dse.bpf.c");
    println!("cargo:rerun-if-changed=include/dse");
    println!("cargo:rerun-if-changed=dse.bpf.o");
    println!("cargo:rerun-if-changed=dse_v2.bpf.o");
    println!("cargo:rerun-if-changed=baseline.bpf.o");
    println!("cargo:rerun-if-changed=src/baseline.bpf.c");
    println!("cargo:rerun-if-changed=trafgen.bpf.o");
    println!("cargo:rerun-if-changed=src/trafgen.bpf.c");
    println!("cargo:rerun-if-changed=hostpath.bpf.o");
    println!("cargo:rerun-if-changed=src/hostpath.bpf.c");
    println!("cargo:rerun-if-changed=limit.bpf.o");
    println!("cargo:rerun-if-changed=src/limit.bpf.c");
    if std::env::var_os("DSE_BUILD_EBPF").is_none_or(|v| v != "1") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("make")
        .arg("-C")
        .arg(dir)
        .arg("all")
        .status()
        .expect("DSE_BUILD_EBPF=1 needs make and clang");
    assert!(status.success(), "building dse.bpf.o failed");
}
