//! The lifecycle inventory: each cluster rule of DESIGN.md refuses a host
//! (or a cluster) with its own error, and nothing changes; what follows
//! the rules is kept across a reopen.

mod common;

use common::TempDir;
use dse_control::Store;
use dse_control::lifecycle::{
    Bond, BondKind, Cluster, Dpu, Host, InventoryError, Management, RuleBroken, Vendor, add_host,
    create_cluster,
};

fn dpu(serial: &str) -> Dpu {
    Dpu {
        serial: serial.into(),
        vendor: Vendor::NvidiaBluefield,
        model: "BlueField-3".into(),
        generation: 3,
        hardware_revision: "B1".into(),
        firmware: "32.41.1000".parse().unwrap(),
        os: "8.0.3".parse().unwrap(),
        datapath: "1.0".parse().unwrap(),
    }
}

fn host(name: &str, dpus: Vec<Dpu>) -> Host {
    Host {
        name: name.into(),
        version: "8.0.3".parse().unwrap(),
        dpus,
        bond: None,
    }
}

/// Host `name` with DPUs `serials` and bond0 with members `members`
/// (serial, interface).
fn bonded(name: &str, serials: &[&str], members: &[(&str, &str)]) -> Host {
    Host {
        bond: Some(Bond {
            name: "bond0".into(),
            kind: BondKind::Bond,
            netns: None,
            members: members
                .iter()
                .map(|(s, m)| (s.to_string(), m.to_string()))
                .collect(),
        }),
        ..host(name, serials.iter().map(|s| dpu(s)).collect())
    }
}

fn cluster(name: &str, management: Management) -> Cluster {
    Cluster {
        name: name.into(),
        management,
        manager_version: "8.0.3".parse().unwrap(),
        hosts: vec![],
        image: None,
    }
}

/// A store with cluster `c1` (image-managed) holding host `h1` with one
/// BlueField-3, and cluster `old` managed by baselines.
fn inventory(dir: &TempDir) -> Store {
    let store = Store::open(dir.db()).expect("opens");
    let mut c1 = cluster("c1", Management::Image);
    c1.hosts.push(host("h1", vec![dpu("S1")]));
    create_cluster(&store, c1, "t").expect("a cluster that follows the rules");
    create_cluster(&store, cluster("old", Management::Baselines), "t").expect("an empty one");
    store
}

#[test]
fn each_cluster_rule_refuses_a_host_with_its_own_error() {
    let other_vendor = Dpu {
        vendor: Vendor::AmdPensando,
        model: "DSC-200".into(),
        ..dpu("P1")
    };
    let other_model = Dpu {
        model: "BlueField-2".into(),
        ..dpu("B2")
    };
    let newer_generation = Dpu {
        generation: 4,
        ..dpu("G4")
    };
    let other_firmware = Dpu {
        firmware: "32.42.0".parse().unwrap(),
        ..dpu("F2")
    };
    let other_revision = Dpu {
        hardware_revision: "C0".into(),
        ..dpu("R2")
    };
    let old_host = Host {
        version: "7.0.3".parse().unwrap(),
        ..host("h-old", vec![dpu("O1")])
    };
    // (cluster, host, what the error says; None when the host may join)
    let cases: Vec<(&str, Host, Option<&str>)> = vec![
        (
            "old",
            host("h2", vec![dpu("S2")]),
            Some(
                "cluster old is managed by baselines: a DPU cluster is managed by a single image only",
            ),
        ),
        (
            "c1",
            host("h2", vec![]),
            Some("host h2 has no DPU: every host of a DPU cluster has one or two DPUs"),
        ),
        (
            "c1",
            host("h2", vec![dpu("S2"), dpu("S3"), dpu("S4")]),
            Some("host h2 has 3 DPUs: a host has one or two"),
        ),
        (
            "c1",
            host("h2", vec![other_vendor]),
            Some(
                "DPU P1 of host h2 is AMD Pensando DSC DSC-200, but the cluster's DPUs are NVIDIA BlueField BlueField-3",
            ),
        ),
        (
            "c1",
            host("h2", vec![other_model]),
            Some(
                "DPU B2 of host h2 is NVIDIA BlueField BlueField-2, but the cluster's DPUs are NVIDIA BlueField BlueField-3",
            ),
        ),
        (
            "c1",
            host("h2", vec![dpu("S2"), other_firmware]),
            Some("host h2's two DPUs differ in firmware: 32.41.1000 on S2, 32.42.0 on F2"),
        ),
        (
            "c1",
            host("h2", vec![dpu("S2"), other_revision]),
            Some("host h2's two DPUs differ in hardware revision: B1 on S2, C0 on R2"),
        ),
        (
            "c1",
            old_host,
            Some("host h-old is at version 7.0.3, below 8.0: upgrade it to 8.0 or later first"),
        ),
        (
            "c1",
            host("h1", vec![dpu("S9")]),
            Some("host h1 is already in cluster c1"),
        ),
        (
            "c1",
            host("h2", vec![dpu("S1")]),
            Some("DPU S1 is already in cluster c1"),
        ),
        (
            "nope",
            host("h2", vec![dpu("S2")]),
            Some("no cluster named nope"),
        ),
        (
            "c1",
            bonded("h2", &["S2"], &[("S2", "m2")]),
            Some("host h2: bond: it has 1 DPU(s), and a bond fails over between two"),
        ),
        (
            "c1",
            bonded("h2", &["S2", "S3"], &[("S2", "m2"), ("S4", "m3")]),
            Some(
                "host h2: bond: its members are named for DPUs [\"S2\", \"S4\"], but its DPUs are [\"S2\", \"S3\"]",
            ),
        ),
        (
            "c1",
            bonded("h2", &["S2", "S3"], &[("S2", "m2"), ("S3", "m2")]),
            Some("bond bond0 and its members [\"m2\", \"m2\"] must be three different interfaces"),
        ),
        (
            "c1",
            bonded(
                "h2",
                &["S2", "S3"],
                &[("S2", "member-of-s2-dpu"), ("S3", "m3")],
            ),
            Some(
                "host h2: bond.members.S2: interface name \"member-of-s2-dpu\" is 16 bytes long; Linux takes at most 15",
            ),
        ),
        (
            "c1",
            bonded("h2", &["S2", "S3"], &[("S2", "m/2"), ("S3", "m3")]),
            Some("host h2: bond.members.S2: interface name \"m/2\": '/' is not allowed"),
        ),
        (
            "c1",
            bonded("h4", &["E1", "E2"], &[("E1", "m1"), ("E2", "m2")]),
            None,
        ),
        // Generations may differ; two matching DPUs are fine.
        ("c1", host("h2", vec![newer_generation]), None),
        ("c1", host("h3", vec![dpu("D1"), dpu("D2")]), None),
    ];
    let dir = TempDir::new("inventory-rules");
    let store = inventory(&dir);
    for (cluster, h, want) in cases {
        let name = h.name.clone();
        let before = store.clusters().unwrap();
        let got = add_host(&store, cluster, h, "t");
        match want {
            Some(text) => {
                let err = got.expect_err(&format!("{name} into {cluster} is refused"));
                assert!(
                    err.to_string().contains(text),
                    "{name} into {cluster}: {err}"
                );
                assert_eq!(store.clusters().unwrap(), before, "{name}: nothing changed");
                // A bad name is refused before the store is asked.
                if !matches!(err, InventoryError::Invalid(_)) {
                    let last = store.audit(0, usize::MAX).unwrap().pop().unwrap();
                    assert_eq!(last.result, err.to_string(), "the refusal is audited");
                }
            }
            None => {
                got.unwrap_or_else(|e| panic!("{name} joins {cluster}: {e}"));
            }
        }
    }
    let c1 = store
        .clusters()
        .unwrap()
        .into_iter()
        .find(|c| c.name == "c1")
        .unwrap();
    let hosts: Vec<&str> = c1.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(hosts, ["h1", "h4", "h2", "h3"]);
}

#[test]
fn a_cluster_is_checked_whole_and_kept_across_a_reopen() {
    let dir = TempDir::new("inventory-create");
    let store = inventory(&dir);
    let err = create_cluster(&store, cluster("c1", Management::Image), "t").unwrap_err();
    assert!(matches!(err, InventoryError::ClusterExists(_)), "{err}");
    let mut old_manager = cluster("c2", Management::Image);
    old_manager.manager_version = "7.0".parse().unwrap();
    old_manager.hosts.push(host("h9", vec![]));
    let err = create_cluster(&store, old_manager, "t").unwrap_err();
    let InventoryError::Rules(broken) = &err else {
        panic!("{err}")
    };
    assert_eq!(broken.len(), 2, "both broken rules are named: {err}");
    assert!(matches!(broken[0], RuleBroken::TooOld { .. }), "{err}");
    assert!(matches!(broken[1], RuleBroken::NoDpu { .. }), "{err}");
    let before = store.clusters().unwrap();
    drop(store);
    let store = Store::open(dir.db()).expect("reopens");
    assert_eq!(store.clusters().unwrap(), before);
    assert_eq!(before.len(), 2);
}

#[test]
fn a_version_that_is_not_dotted_numbers_is_named() {
    let err = "8.x"
        .parse::<dse_control::lifecycle::Version>()
        .unwrap_err();
    assert!(
        err.to_string().contains("\"8.x\" is not a version"),
        "{err}"
    );
    let v: dse_control::lifecycle::Version = "8.0.3".parse().unwrap();
    assert!(v > "8.0".parse().unwrap() && v < "8.1".parse().unwrap());
    assert_eq!(v.to_string(), "8.0.3");
}
