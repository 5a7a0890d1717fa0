//! `dse verify` catches a broken XDP program: the test builds the datapath
//! program from its source with a bug seeded in (a wrong checksum fix-up,
//! priorities in reverse, a mask applied to the wrong field), and `dse
//! verify --object` reports disagreements, each with a reproducer that
//! reproduces it on its own. The same source built unchanged agrees.
//! Needs root, bpffs and clang; under CI=true their absence fails.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/verify.yaml");
const EBPF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ebpf");

/// A bug: in `file` (under `ebpf/`), each `from` replaced by its `to`.
struct Bug {
    name: &'static str,
    file: &'static str,
    edits: &'static [(&'static str, &'static str)],
}

const BUGS: &[Bug] = &[
    // The incremental checksum update takes the new word's low byte from
    // the old word.
    Bug {
        name: "checksum",
        file: "include/dse/csum.h",
        edits: &[(
            "sum += ((__u16)new[2 * i] << 8) | new[2 * i + 1];",
            "sum += ((__u16)new[2 * i] << 8) | old[2 * i + 1];",
        )],
    },
    // The search keeps the lowest-ranked rule, and so visits every mask.
    Bug {
        name: "priority",
        file: "include/dse/classify.h",
        edits: &[
            (
                "if (best != DSE_NO_RULE && m->best_rank <= best_rank)\n\t\t\tbreak;",
                "",
            ),
            ("rule_rank(r) > best_rank", "rule_rank(r) < best_rank"),
        ],
    },
    // Each word of the key is masked with the next word's mask.
    Bug {
        name: "mask",
        file: "include/dse/classify.h",
        edits: &[("sw[w] = kw[w] & mw[w];", "sw[w] = kw[w] & mw[(w + 1) & 7];")],
    },
];

/// The datapath program's source copied under `dir`, `bug` seeded in,
/// built with clang as `ebpf/Makefile` builds it; `None` without clang
/// (under CI=true that is a failure).
fn build(dir: &Path, bug: Option<&Bug>) -> Option<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    copy(&Path::new(EBPF).join("src"), &dir.join("src"));
    copy(&Path::new(EBPF).join("include"), &dir.join("include"));
    if let Some(bug) = bug {
        let path = dir.join(bug.file);
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (from, to) in bug.edits {
            assert_eq!(
                text.matches(from).count(),
                1,
                "{}: `{from}` is in {} once; mend the seeded bug to the source",
                bug.name,
                bug.file
            );
            text = text.replace(from, to);
        }
        std::fs::write(&path, text).unwrap();
    }
    let arch = std::env::consts::ARCH;
    let object = dir.join("dse.bpf.o");
    let out = common::tool_output(
        "clang",
        Command::new("clang")
            .current_dir(dir)
            .args([
                "-O2",
                "-g",
                "-target",
                "bpf",
                "-Wall",
                "-Werror",
                "-Iinclude",
            ])
            .arg(format!("-I/usr/include/{arch}-linux-gnu"))
            .args(["-c", "src/dse.bpf.c", "-o"])
            .arg(&object),
    )?;
    assert!(
        out.status.success(),
        "clang builds {}: {}",
        bug.map_or("the source", |b| b.name),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(object)
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// `dse -o json verify` with `args` on the XDP backend: its exit code and
/// report.
fn verify(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_dse"))
        .args(["-o", "json", "verify", "--backend", "xdp"])
        .args(args)
        .output()
        .expect("dse runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "a report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

#[test]
fn each_seeded_bug_is_reported_with_a_reproducer_and_the_unchanged_source_agrees() {
    let Some(_pins) = common::bpf::PinDir::new("seeded") else {
        return;
    };
    let root = std::env::temp_dir().join(format!("dse-seeded-{}", std::process::id()));
    let Some(clean) = build(&root.join("clean"), None) else {
        return;
    };
    let (code, r) = verify(&["-f", EXAMPLE, "--generate", "3000"]);
    assert_eq!((code, &r["agree"]), (0, &Value::Bool(true)), "{r:#}");
    let clean = clean.display().to_string();
    let (code, r) = verify(&["-f", EXAMPLE, "--generate", "3000", "--object", &clean]);
    assert_eq!(
        (code, &r["agree"]),
        (0, &Value::Bool(true)),
        "the source built here agrees: {r:#}"
    );

    for bug in BUGS {
        let dir = root.join(bug.name);
        let object = build(&dir, Some(bug)).unwrap().display().to_string();
        let out = dir.join("out");
        let out_s = out.display().to_string();
        let (code, r) = verify(&[
            "-f",
            EXAMPLE,
            "--generate",
            "3000",
            "--object",
            &object,
            "--out",
            &out_s,
        ]);
        assert_eq!(code, 1, "{}: {r:#}", bug.name);
        assert_eq!(r["agree"], false, "{}: {r:#}", bug.name);
        let found = r["disagreements"].as_array().unwrap();
        assert!(!found.is_empty(), "{}: frames disagree: {r:#}", bug.name);
        eprintln!(
            "{}: {} frames disagree, {} counters",
            bug.name,
            r["disagreeing"],
            r["counters"].as_array().unwrap().len()
        );
        for d in found.iter().take(100) {
            let rules = Path::new(d["reproducer"].as_str().expect("a reproducer"));
            let text = std::fs::read_to_string(rules).unwrap();
            let set = dse_datapath::RuleSet::from_yaml(&text).unwrap();
            let ids: Vec<u64> = set.rules.iter().map(|r| u64::from(r.id)).collect();
            let mut involved: Vec<u64> = d["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            involved.sort_unstable();
            if !involved.is_empty() {
                assert_eq!(ids, involved, "{}: only the rules involved", bug.name);
            }
            assert!(rules.with_extension("pcapng").is_file());
        }
        match bug.name {
            // The rule is right, and so is the verdict; the bytes are not.
            "checksum" => assert!(
                found.iter().any(|d| {
                    let (want, got) = (d["reference"].as_str(), d["got"].as_str());
                    let verdict =
                        |s: Option<&str>| s.map(|s| s.split(',').next().unwrap_or(s).to_string());
                    verdict(want) == verdict(got) && want != got
                }),
                "{r:#}"
            ),
            // A frame two rules take went to a lower one, and the report
            // says which.
            "priority" => assert!(
                found.iter().any(|d| {
                    let rules = d["rules"].as_array().unwrap();
                    let chose = d["backend_rules"].as_array().unwrap();
                    rules.len() >= 2
                        && !chose.contains(&rules[0])
                        && chose.iter().any(|r| rules[1..].contains(r))
                }),
                "{r:#}"
            ),
            _ => {}
        }
        // The first reproducer, run on its own, disagrees again: its
        // rules, its frame.
        let first = found[0]["reproducer"].as_str().unwrap();
        let pcap = Path::new(first).with_extension("pcapng");
        let (code, again) = verify(&[
            "-f",
            first,
            "--pcap",
            pcap.to_str().unwrap(),
            "--object",
            &object,
        ]);
        assert_eq!(code, 1, "{}: {again:#}", bug.name);
        let from_file = format!("{} #1", pcap.display());
        assert!(
            again["disagreements"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["probe"] == from_file.as_str()),
            "{}: the reproducer's frame disagrees again: {again:#}",
            bug.name
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
