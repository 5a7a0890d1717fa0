//! What the host path tests forward through `dse bench`'s topology: UDP
//! from port `pa` out of port `pb`, in frames that carry a marker.

#![allow(dead_code)]

/// UDP in at `pa` leaves by `pb`; anything else is dropped.
pub const PA_TO_PB: &str = r#"
ports:
  - {name: pa, index: 0, default: drop}
  - {name: pb, index: 1, default: drop}
rules:
  - {id: 1, priority: 10, match: {in_port: pa, ip_proto: udp}, actions: [{output: pb}]}
"#;

/// An IPv4/UDP frame whose payload is marker `n`.
pub fn marked(n: u32) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1, 2)
        .write(&mut v, &n.to_be_bytes())
        .unwrap();
    v
}

/// The marker of a frame [`marked`] made.
pub fn marker(frame: &[u8]) -> u32 {
    u32::from_be_bytes(frame[frame.len() - 4..].try_into().unwrap())
}

/// Why this machine cannot run the host path on AF_XDP, if it cannot (see
/// `af_xdp_refusal`: a kernel that refuses XDP live frames), said on
/// stderr: a test of AF_XDP then stops there. The fixture-table test checks
/// that the host path falls back to AF_PACKET with this reason.
pub fn af_xdp_refused() -> Option<String> {
    let why = dse_datapath::emu::af_xdp_refusal()?;
    eprintln!("the host path cannot run on AF_XDP here, not tested: {why}");
    Some(why)
}
