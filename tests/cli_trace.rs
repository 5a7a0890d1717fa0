//! `dse trace` from the command line, against expected text: a miss, a
//! hit in each subtable, a priority tie broken by id, each action, a decap
//! classified twice, a malformed frame; its JSON form; the frames in and
//! out as a pcap tcpdump reads; and the XDP program's answer beside the
//! reference's (with root and bpffs; without, it says why it did not
//! run).

mod common;

use std::process::Command;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/verify.yaml");

/// A tie (rules 3 and 7, priority 10) and ports whose misses differ.
const TIES: &str = "ports: [{name: uplink, index: 0}, {name: vm, index: 1, default: drop}]
rules:
  - {id: 7, priority: 10, match: {ip_proto: udp}, actions: [{output: vm}]}
  - {id: 3, priority: 10, match: {ip_proto: udp, l4_dst: 53}, actions: [drop]}
";

fn dse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dse"))
        .args(args)
        .output()
        .expect("dse runs")
}

/// The rules of `TIES` in a file of this test's own.
fn ties_file() -> String {
    let path = std::env::temp_dir().join(format!("dse-trace-ties-{}.yaml", std::process::id()));
    std::fs::write(&path, TIES).unwrap();
    path.display().to_string()
}

/// Asserts that `lines` appear in `out`, whole and in this order.
fn assert_lines(case: &str, out: &str, lines: &[&str]) {
    let mut rest = out.lines();
    for want in lines {
        assert!(
            rest.any(|l| l == *want),
            "{case}: the line\n{want}\nis not in its place in\n{out}"
        );
    }
}

#[test]
fn each_case_traces_as_expected() {
    let ties = ties_file();
    // (case, rules, arguments, lines expected in order)
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "a miss on a port that passes",
            &ties,
            &["in_port=uplink,tcp"],
            &[
                "  subtable 0 [ip_proto l4_dst] best rule 3 (priority 10): ruled out by its prefilter",
                "  subtable 1 [ip_proto] best rule 7 (priority 10): ruled out by its prefilter",
                "  chosen: none",
                "  not matching:",
                "    rule 3 (priority 10): ip_proto: the packet's tcp is not udp; l4_dst: the packet's 2000 is not 53",
                "    rule 7 (priority 10): ip_proto: the packet's tcp is not udp",
                "  ended: no rule matched: port uplink's miss action, pass",
                "verdict: pass to the host stack, 62 bytes:",
            ],
        ),
        (
            "a miss on a port that drops",
            &ties,
            &["in_port=vm,tcp"],
            &[
                "  chosen: none",
                "  ended: no rule matched: port vm's miss action, drop",
                "verdict: drop (miss)",
            ],
        ),
        (
            "a tie broken by id",
            &ties,
            &["udp,l4_dst=53"],
            &[
                "  parsed: in_port=uplink eth_src=02:00:00:00:00:01 eth_dst=02:00:00:00:00:02 vlan=untagged eth_type=ipv4 ip_src=10.0.0.1 ip_dst=10.0.0.2 ip_proto=udp l4_src=1000 l4_dst=53",
                "  subtable 0 [ip_proto l4_dst] best rule 3 (priority 10): hit rule 3 (priority 10)",
                "  search stopped before subtable 1: no rule from there on ranks above what was found",
                "  chosen: rule 3 (priority 10)",
                "  tied at its priority, and beaten by its lower id: rule 7",
                "  ended: action 1 drop",
                "verdict: drop (rule)",
            ],
        ),
        (
            "subtable 0: set_eth_src, set_eth_dst, output",
            EXAMPLE,
            &["in_port=p0,eth_src=02:00:00:00:00:33"],
            &[
                "  subtable 0 [in_port eth_src] best rule 1 (priority 100): hit rule 1 (priority 100)",
                "  chosen: rule 1 (priority 100)",
                "  action 1 set_eth_src 02:00:00:00:00:99:",
                "    02000000000202000000009908004500002400004000401126c70a0000010a00000203e807d00010e0130000000000000000",
                "  action 2 set_eth_dst 02:00:00:00:00:98:",
                "    02000000009802000000009908004500002400004000401126c70a0000010a00000203e807d00010e0130000000000000000",
                "  ended: action 3 output p1",
                "verdict: output to p1 (index 1), 50 bytes:",
            ],
        ),
        (
            "subtable 1: pop_vlan",
            EXAMPLE,
            &["eth_dst=02:00:00:00:00:44,vlan=42"],
            &[
                "  subtable 0 [in_port eth_src] best rule 1 (priority 100): ruled out by its prefilter",
                "  subtable 1 [eth_dst vlan] best rule 2 (priority 90): hit rule 2 (priority 90)",
                "    rule 1 (priority 100): eth_src: the packet's 02:00:00:00:00:01 is not 02:00:00:00:00:33",
                "  action 1 pop_vlan:",
                "  ended: action 2 output p1",
                "verdict: output to p1 (index 1), 50 bytes:",
            ],
        ),
        (
            "subtable 2: pass",
            EXAMPLE,
            &["arp"],
            &[
                "  subtable 2 [vlan eth_type] best rule 3 (priority 90): hit rule 3 (priority 90)",
                "    rule 2 (priority 90): eth_dst: the packet's 02:00:00:00:00:02 is not 02:00:00:00:00:44; vlan: the packet's untagged is not 42",
                "  ended: action 1 pass",
                "verdict: pass to the host stack, 60 bytes:",
            ],
        ),
        (
            "subtable 3: set_ip_src, set_ip_dst, set_l4_src, set_l4_dst",
            EXAMPLE,
            &["udp,ip_src=192.0.2.5,ip_dst=198.51.100.7,l4_dst=53"],
            &[
                "  subtable 3 [ip_src/24 ip_dst eth_type ip_proto l4_dst] best rule 4 (priority 80): hit rule 4 (priority 80)",
                "  action 1 set_ip_src 172.16.0.9:",
                "    0200000000020200000000010800450000240000400040116475ac100009c633640703e800350010255d0000000000000000",
                "  action 2 set_ip_dst 192.168.77.1:",
                "    0200000000020200000000010800450000240000400040118106ac100009c0a84d0103e80035001041ee0000000000000000",
                "  action 3 set_l4_src 33000:",
                "    0200000000020200000000010800450000240000400040118106ac100009c0a84d0180e800350010c4ed0000000000000000",
                "  action 4 set_l4_dst 5353:",
                "    0200000000020200000000010800450000240000400040118106ac100009c0a84d0180e814e90010b0390000000000000000",
                "  ended: action 5 output p1",
            ],
        ),
        (
            "subtable 4: an IPv6 set_ip_dst, push_vlan",
            EXAMPLE,
            &["ipv6,tcp,ip_dst=2001:db8::5,l4_src=0x401,tcp_flags=+syn"],
            &[
                "  subtable 4 [ip_dst/48 eth_type ip_proto l4_src/0xfc00 tcp_flags/0x12] best rule 5 (priority 80): hit rule 5 (priority 80)",
                "  action 1 set_ip_dst 2001:db8:ffff::7:",
                "  action 2 push_vlan {\"pcp\":0,\"tpid\":33024,\"vid\":100}:",
                "  ended: action 3 output p2",
                "verdict: output to p2 (index 2), 86 bytes:",
            ],
        ),
        (
            "subtable 5: tx",
            EXAMPLE,
            &["icmp"],
            &[
                "  subtable 5 [ip_proto l4_src] best rule 6 (priority 70): hit rule 6 (priority 70)",
                "  ended: action 1 tx",
                "verdict: tx back out of its port, 50 bytes:",
            ],
        ),
        (
            "subtable 5 again: meter",
            EXAMPLE,
            &["icmpv6"],
            &[
                "  subtable 5 [ip_proto l4_src] best rule 6 (priority 70): hit rule 7 (priority 70)",
                "    rule 6 (priority 70): ip_proto: the packet's icmpv6 is not icmp; l4_src: the packet's 128 is not 8",
                "  action 1 meter slow:",
                "  ended: action 2 output p1",
            ],
        ),
        (
            "subtable 8: encap_vxlan",
            EXAMPLE,
            &["in_port=p2,udp"],
            &[
                "  subtable 8 [in_port ip_proto] best rule 10 (priority 50): hit rule 10 (priority 50)",
                "    rule 9 (priority 60): vni: the packet's none is not 42",
                "  action 1 encap_vxlan {\"eth_dst\":\"02:00:00:00:00:0a\",\"eth_src\":\"02:00:00:00:00:0b\",\"ip_dst\":\"10.1.1.2\",\"ip_src\":\"10.1.1.1\",\"udp_src\":3333,\"vni\":42}:",
                "  ended: action 2 output p1",
                "verdict: output to p1 (index 1), 100 bytes:",
            ],
        ),
        (
            "subtable 8's other entry: encap_geneve",
            EXAMPLE,
            &["in_port=p2,tcp"],
            &[
                "  subtable 8 [in_port ip_proto] best rule 10 (priority 50): hit rule 11 (priority 50)",
                "  action 1 encap_geneve {\"eth_dst\":\"02:00:00:00:00:0a\",\"eth_src\":\"02:00:00:00:00:0b\",\"ip_dst\":\"10.1.1.2\",\"ip_src\":\"10.1.1.1\",\"udp_src\":4444,\"vni\":7}:",
                "  ended: action 2 output p1",
            ],
        ),
        (
            "subtable 9: drop",
            EXAMPLE,
            &["ipv6,udp"],
            &[
                "  subtable 9 [eth_type ip_proto] best rule 12 (priority 40): hit rule 12 (priority 40)",
                "  ended: action 1 drop",
                "verdict: drop (rule)",
            ],
        ),
        (
            "a malformed frame",
            EXAMPLE,
            &["--hex", "02000000000202000000000108004500"],
            &[
                "frame: 16 bytes on p0 (index 0)",
                "pass 1",
                "  parsed: malformed: ipv4 header truncated: need 20 bytes, have 2",
                "  ended: the parser refused it",
                "verdict: drop (malformed)",
            ],
        ),
    ];
    let root = common::root();
    for (case, rules, args, lines) in cases {
        let mut all = vec!["trace", "-f", rules];
        all.extend_from_slice(args);
        let out = dse(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{case}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_lines(case, &stdout, lines);
        let last = stdout.lines().last().unwrap_or_default();
        if root {
            assert_eq!(last, "xdp:     the same", "{case}: {stdout}");
        } else {
            assert!(last.starts_with("xdp:     not run: "), "{case}: {stdout}");
        }
    }
}

#[test]
fn a_decapsulated_frame_is_classified_again_and_the_json_says_so() {
    // Rule 10's VXLAN frame, arriving on p1: rule 8 decapsulates it, rule
    // 9 takes the inner frame by its VNI.
    let out = dse(&["-o", "json", "trace", "-f", EXAMPLE, "in_port=p2,udp"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vxlan = v["output"].as_str().unwrap().to_string();
    let on_p1 = ["trace", "-f", EXAMPLE, "--hex", &vxlan, "--in-port", "p1"];
    let out = dse(&[&["-o", "json"][..], &on_p1].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["in_port"]["name"], "p1");
    let passes = v["passes"].as_array().unwrap();
    assert_eq!(passes.len(), 2, "{v:#}");
    assert_eq!(passes[0]["rule"]["id"], 8);
    assert_eq!(
        passes[0]["ended"],
        "action 1 decap: VNI 42, classified again"
    );
    assert_eq!(passes[1]["vni"], 42);
    assert_eq!(passes[1]["rule"]["id"], 9);
    let parsed = passes[1]["parsed"]["Ok"].as_array().unwrap();
    assert!(
        parsed.contains(&serde_json::json!(["vni", "42"])),
        "{parsed:?}"
    );
    let probed = passes[1]["subtables"].as_array().unwrap();
    let hit = probed
        .iter()
        .find(|s| s["found"]["found"] == "rule")
        .unwrap();
    assert_eq!(hit["mask"], serde_json::json!(["vni"]));
    assert_eq!(hit["found"]["rule"]["id"], 9);
    assert_eq!(v["verdict"]["verdict"], "output");
    assert_eq!(v["verdict"]["port"]["name"], "p2");
    // The inner frame: the original UDP frame from p2, 50 bytes.
    assert_eq!(v["output"].as_str().unwrap().len(), 100);
    if common::root() {
        assert_eq!(v["xdp"]["agrees"], true, "{v:#}");
    } else {
        assert!(v["xdp"]["error"].is_string(), "{v:#}");
    }
    // The same frame, in and out, as a pcap: tcpdump reads both.
    let dir = std::env::temp_dir().join(format!("dse-trace-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("trace.pcapng");
    let out = dse(&[&on_p1[..], &["--no-xdp", "--out", pcap.to_str().unwrap()]].concat());
    assert!(out.status.success());
    if let Some(read) = common::tool_output(
        "tcpdump",
        Command::new("tcpdump").args(["-nn", "-r"]).arg(&pcap),
    ) {
        let text = String::from_utf8_lossy(&read.stdout);
        // The VXLAN frame (tcpdump prints its inner frame on a second
        // line), then the inner frame out of p2.
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].contains("10.1.1.1.3333 > 10.1.1.2.4789: VXLAN, flags [I] (0x08), vni 42"),
            "{text}"
        );
        assert!(
            lines[2].contains("10.0.0.1.1000 > 10.0.0.2.2000: UDP, length 8"),
            "{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_named() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["trace", "-f", EXAMPLE, "udp,l4_dts=53"],
            "unknown field `l4_dts`",
        ),
        (
            &["trace", "-f", EXAMPLE, "udp,l4_dst=53,l4_dst=54"],
            "l4_dst is given twice",
        ),
        (
            &["trace", "-f", EXAMPLE, "sctp"],
            "\"sctp\" is neither field=value nor one of tcp, udp",
        ),
        (&["trace", "-f", EXAMPLE, "--hex", "0xzz"], "is not hex"),
        (
            &["trace", "-f", EXAMPLE, "udp", "--in-port", "eth9"],
            "port eth9 is not in the rules: they have p0, p1, p2",
        ),
    ];
    for (args, says) in cases {
        let out = dse(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn a_running_datapaths_rules_are_traced_through_the_daemon() {
    use common::daemon::{DaemonProcess, failure};
    let (dir, bpffs) = DaemonProcess::paths("trace");
    let d = DaemonProcess::start(dir, bpffs);
    let out = d.cli(&["rules", "apply", "-f", &ties_file()]);
    assert!(out.status.success(), "{}", failure(&out).1);
    let out = d.cli(&["datapath", "attach", "mem0", "--backend", "memory"]);
    assert!(out.status.success(), "{}", failure(&out).1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let traced = loop {
        let out = d.cli(&["trace", "--datapath", "mem0", "udp,l4_dst=53", "--no-xdp"]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        // Until the datapath has applied the rules, it says so.
        let (_, err) = failure(&out);
        assert!(err.contains("datapath mem0 runs generation"), "{err}");
        assert!(std::time::Instant::now() < deadline, "{err}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_lines(
        "through the daemon",
        &traced,
        &[
            "  chosen: rule 3 (priority 10)",
            "  tied at its priority, and beaten by its lower id: rule 7",
            "verdict: drop (rule)",
        ],
    );
    // Each worker's flow cache, read through the daemon: no frame yet.
    let cache = traced
        .lines()
        .find_map(|l| l.strip_prefix("  flow cache: "))
        .unwrap_or_default();
    let workers: Vec<&str> = cache.split("; ").collect();
    let nothing = "the datapath's holds nothing for it: its next frame takes the search below";
    for (i, w) in workers.iter().enumerate() {
        // One cache is said alone; several, each by its worker.
        let want = match workers.len() {
            1 => nothing.to_string(),
            _ => format!("worker {i}: {nothing}"),
        };
        assert_eq!(*w, want, "{traced}");
    }
    // A datapath the daemon does not run is named, with those it runs.
    let out = d.cli(&["trace", "--datapath", "mem9", "udp"]);
    let (code, err) = failure(&out);
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("no datapath mem9: the daemon runs mem0"),
        "{err}"
    );
}

/// What a running XDP datapath's flow cache holds for a key, read from its
/// pins: nothing before its first frame, the rule after, and a stale entry
/// once other tables are installed.
#[test]
fn an_xdp_datapaths_flow_cache_is_read_from_its_pins() {
    use dse_datapath::RuleSet;
    use dse_datapath::compile::Compiler;
    use dse_datapath::pipeline::parse;
    use dse_datapath::xdp::{Cached, XdpInstance, XdpLimits, cached};
    let Some(pins) = common::bpf::PinDir::new("trace-cache") else {
        return;
    };
    let set = RuleSet::from_yaml(TIES).unwrap();
    let mut x = XdpInstance::load(&pins.0, XdpLimits::small()).unwrap();
    let install = |x: &mut XdpInstance, set: &RuleSet| {
        let c = Compiler::new(set).unwrap();
        let slots: Vec<u32> = c.tables().live_rules().map(|(s, _)| s).collect();
        x.install(c.tables(), &slots).unwrap();
    };
    install(&mut x, &set);
    let (_, frame) =
        dse::trace::frame(&set, &dse::trace::Packet::Flow("udp,l4_dst=53"), None).unwrap();
    let (key, _) = parse(&frame, 0, 0).unwrap();
    assert_eq!(cached(&pins.0, &key).unwrap(), Cached::Miss);
    x.run(0, &frame).unwrap();
    let Cached::Hit { rule, .. } = cached(&pins.0, &key).unwrap() else {
        panic!("a hit after the first frame");
    };
    assert_eq!(rule, 3, "the tie's winner");
    let mut other = set.clone();
    other.rules.retain(|r| r.id == 7);
    install(&mut x, &other);
    assert!(
        matches!(cached(&pins.0, &key).unwrap(), Cached::Stale { .. }),
        "an entry of the tables before"
    );
    // The trace says so too (as the daemon reads it for dse trace
    // --datapath); a datapath not there, why not.
    let mut t = dse_datapath::trace::trace(&set, 0, &frame).unwrap();
    let read = |t: &dse_datapath::trace::Trace, pins: &std::path::Path| {
        dse::trace::pass_keys(t)
            .iter()
            .map(|k| cached(pins, k).map(|c| vec![c]).map_err(|e| e.to_string()))
            .collect()
    };
    let caches = read(&t, &pins.0);
    dse::trace::put_caches(&mut t, caches);
    assert!(
        t.passes[0]
            .cache
            .starts_with("the datapath's holds an entry of generation"),
        "{}",
        t.passes[0].cache
    );
    let caches = read(&t, std::path::Path::new("/sys/fs/bpf/dse-no-such-datapath"));
    dse::trace::put_caches(&mut t, caches);
    assert!(
        t.passes[0].cache.contains("was not read"),
        "{}",
        t.passes[0].cache
    );
}
