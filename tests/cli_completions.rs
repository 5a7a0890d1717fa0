//! `dse completions SHELL` prints a completion script that the shell
//! accepts and that offers every subcommand; `dse man` prints a man page.

use std::process::Command;

fn dse(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dse"))
        .args(args)
        .output()
        .expect("dse runs");
    assert!(
        out.status.success(),
        "dse {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn completions_for_each_shell_and_a_man_page() {
    let bash = dse(&["completions", "bash"]);
    assert!(bash.contains("complete -F _dse"), "{bash}");
    for sub in ["rules", "datapath", "lifecycle", "audit", "completions"] {
        assert!(bash.contains(sub), "bash completes {sub}");
    }
    // The script is valid bash.
    let path = std::env::temp_dir().join(format!("dse-completion-{}.bash", std::process::id()));
    std::fs::write(&path, &bash).unwrap();
    let checked = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        checked.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(dse(&["completions", "zsh"]).starts_with("#compdef dse"));
    assert!(dse(&["completions", "fish"]).contains("complete -c dse"));
    let man = dse(&["man"]);
    assert!(man.contains(".TH dse 1"), "{man}");
    assert!(man.contains(".SH NAME") && man.contains("rules"), "{man}");
    let refused = Command::new(env!("CARGO_BIN_EXE_dse"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
