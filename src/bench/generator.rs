//! Traffic in, counts out: the generator that offers the workload's flows
//! from the generator namespace, and the sink that counts what arrives.
//!
//! The generator is `dse_gen` under BPF_PROG_TEST_RUN with live frames
//! (about 9 Mpps of 64-byte frames from one core here), or an AF_PACKET
//! socket (`sendmmsg`, about 0.25–1 Mpps) where live frames are refused.
//! Either way it runs on CPU 0, and the sink (`dse_sink`, XDP) counts the
//! datagrams that reach the far namespace, then drops them.

use super::topology::Topology;
use super::workload::{DPORT, DST_IP, SPORT_BASE, SRC_IP};
use crate::lab::{LabError, pin_thread};
use aya::maps::{Array, PerCpuArray};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use dse_datapath::emu::PacketSocket;
use dse_datapath::netdev::interface_index;
use std::time::{Duration, Instant};

/// Frame sizes on offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// 64 bytes on the wire (60 without the FCS): the packet-rate limit.
    #[value(name = "64")]
    #[serde(rename = "64B")]
    Small,
    /// Simple IMIX: 7:4:1 of 64, 594 and 1518 bytes on the wire.
    Imix,
}

impl Mix {
    /// How it is written in tables.
    pub fn label(self) -> &'static str {
        match self {
            Mix::Small => "64B",
            Mix::Imix => "IMIX",
        }
    }
}

/// Which generator offers the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorKind {
    /// XDP live frames, falling back to AF_PACKET if they are refused.
    Auto,
    /// XDP live frames (BPF_PROG_TEST_RUN) only.
    LiveFrames,
    /// An AF_PACKET socket only.
    AfPacket,
}

/// What a generator offered in one window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offered {
    /// Frames handed to the generator's veth.
    pub packets: u64,
    /// How long offering took.
    pub elapsed: Duration,
}

/// What went wrong generating or counting traffic.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// The lab failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A BPF step failed.
    #[error("{what}: {detail}")]
    Bpf {
        /// The step.
        what: &'static str,
        /// The error's text.
        detail: String,
    },
}

fn bpf(what: &'static str) -> impl FnOnce(String) -> TrafficError {
    move |detail| TrafficError::Bpf { what, detail }
}

/// The UDP frames of `flows` flows at the mix's sizes, as the generator
/// program writes them (for the AF_PACKET sender and as live-frame seeds).
pub fn frames(topo: &Topology, mix: Mix, flows: u16) -> Vec<Vec<u8>> {
    let sizes: &[usize] = match mix {
        Mix::Small => &[60],
        Mix::Imix => &[60, 60, 60, 60, 60, 60, 60, 590, 590, 590, 590, 1514],
    };
    let mut out = Vec::new();
    for i in 0..flows {
        let size = sizes[usize::from(i) % sizes.len()];
        let b = etherparse::PacketBuilder::ethernet2(topo.gen_mac, topo.sink_mac)
            .ipv4(SRC_IP, DST_IP, 64)
            .udp(SPORT_BASE + i, DPORT);
        let payload = vec![0u8; size - 42];
        let mut f = Vec::with_capacity(size);
        b.write(&mut f, &payload).expect("a UDP frame builds");
        out.push(f);
    }
    out
}

/// The trafgen object, loaded, with program `name` verified.
fn load_verified(name: &'static str) -> Result<aya::Ebpf, TrafficError> {
    let mut ebpf = aya::EbpfLoader::new()
        .load(dse_ebpf::trafgen_object())
        .map_err(|e| bpf("loading the trafgen object")(e.to_string()))?;
    program(&mut ebpf, name)?
        .load()
        .map_err(|e| bpf(name)(format!("verifying: {e}")))?;
    Ok(ebpf)
}

/// Program `name` of `ebpf`.
fn program<'a>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut Xdp, TrafficError> {
    ebpf.program_mut(name)
        .ok_or_else(|| bpf(name)("no such program".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| bpf(name)(e.to_string()))
}

/// Sets entry 0 of array map `name` to `value`.
fn set_first<T: aya::Pod>(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
    value: T,
) -> Result<(), TrafficError> {
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| bpf(name)("no such map".into()))?;
    let mut array: Array<_, T> = Array::try_from(map).map_err(|e| bpf(name)(e.to_string()))?;
    array.set(0, value, 0).map_err(|e| bpf(name)(e.to_string()))
}

/// A loaded generator, ready to offer traffic into a topology.
pub struct Generator {
    kind: GeneratorKind,
    ebpf: Option<aya::Ebpf>,
    /// What `gen_config` holds.
    config: dse_ebpf::GenConfig,
}

impl Generator {
    /// Loads the generator of `kind` for `topo`'s addresses; `Auto` tries
    /// live frames with a short offer and falls back to AF_PACKET.
    ///
    /// # Errors
    /// [`TrafficError`] if the asked-for generator cannot run here.
    pub fn load(
        kind: GeneratorKind,
        topo: &Topology,
        flows: u16,
    ) -> Result<Generator, TrafficError> {
        if kind == GeneratorKind::AfPacket {
            return Ok(Generator {
                kind,
                ebpf: None,
                config: dse_ebpf::GenConfig::default(),
            });
        }
        let mut ebpf = load_verified(dse_ebpf::GEN_PROGRAM)?;
        let config = dse_ebpf::GenConfig {
            dst_mac: topo.sink_mac,
            src_mac: topo.gen_mac,
            src_ip: SRC_IP,
            dst_ip: DST_IP,
            sport_base: SPORT_BASE,
            dport: DPORT,
            flows: u32::from(flows.max(1)),
            imix: 0,
        };
        set_first(&mut ebpf, "gen_config", config)?;
        let mut generator = Generator {
            kind: GeneratorKind::LiveFrames,
            ebpf: Some(ebpf),
            config,
        };
        match generator.offer_live(topo, Mix::Small, 64) {
            Ok(_) => Ok(generator),
            Err(e) if kind == GeneratorKind::Auto => {
                tracing::warn!("XDP live frames refused ({e}); offering over AF_PACKET");
                Ok(Generator {
                    kind: GeneratorKind::AfPacket,
                    ebpf: None,
                    config,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Which generator this is (never `Auto`).
    pub fn kind(&self) -> GeneratorKind {
        self.kind
    }

    /// Offers `mix` for about `window`, as fast as the generator goes.
    ///
    /// # Errors
    /// [`TrafficError`] if sending fails.
    pub fn offer(
        &mut self,
        topo: &Topology,
        mix: Mix,
        flows: u16,
        window: Duration,
    ) -> Result<Offered, TrafficError> {
        match self.kind {
            GeneratorKind::AfPacket => offer_af_packet(topo, mix, flows, window, None),
            _ => {
                let start = Instant::now();
                let mut total = Offered::default();
                // Large repeats: each call sets up and tears down a page pool.
                let chunk: u32 = match mix {
                    Mix::Small => 2_000_000,
                    Mix::Imix => 1_000_000,
                };
                while start.elapsed() < window {
                    let o = self.offer_live(topo, mix, chunk)?;
                    total.packets += o.packets;
                }
                total.elapsed = start.elapsed();
                Ok(total)
            }
        }
    }

    /// Offers `mix` for `window` at `pps` frames a second, paced in small
    /// batches over an AF_PACKET socket (whatever this generator's kind),
    /// or as fast as that socket goes if `pps` is `None`.
    ///
    /// # Errors
    /// [`TrafficError`] if sending fails.
    pub fn offer_paced(
        &self,
        topo: &Topology,
        mix: Mix,
        flows: u16,
        window: Duration,
        pps: Option<f64>,
    ) -> Result<Offered, TrafficError> {
        offer_af_packet(topo, mix, flows, window, pps)
    }

    fn offer_live(
        &mut self,
        topo: &Topology,
        mix: Mix,
        repeat: u32,
    ) -> Result<Offered, TrafficError> {
        let ebpf = self
            .ebpf
            .as_mut()
            .ok_or_else(|| bpf("live frames")("not loaded".into()))?;
        let imix = u32::from(mix == Mix::Imix);
        if self.config.imix != imix {
            self.config.imix = imix;
            set_first(ebpf, "gen_config", self.config)?;
        }
        let prog: &Xdp = program(ebpf, dse_ebpf::GEN_PROGRAM)?;
        let seed = frames(topo, mix, 1).remove(0);
        let seed = match mix {
            Mix::Small => seed,
            Mix::Imix => {
                let mut f = seed;
                f.resize(dse_ebpf::IMIX_FRAME, 0);
                f
            }
        };
        let iface = topo.ingress.a.clone();
        topo.gen_ns.run(|| {
            let _ = pin_thread(0);
            let ifindex =
                interface_index(&iface).map_err(|e| bpf("the generator's veth")(e.to_string()))?;
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&(seed.len() as u32).to_ne_bytes());
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(&seed);
            opts.ctx_in = Some(&ctx);
            opts.repeat = repeat;
            opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
            let start = Instant::now();
            prog.test_run(opts)
                .map_err(|e| bpf("XDP live frames")(e.to_string()))?;
            Ok(Offered {
                packets: u64::from(repeat),
                elapsed: start.elapsed(),
            })
        })?
    }
}

/// Frames per paced send: small, so that a paced offer has no bursts a
/// slow subject's rings cannot take.
const PACED_BATCH: usize = 4;

fn offer_af_packet(
    topo: &Topology,
    mix: Mix,
    flows: u16,
    window: Duration,
    pace: Option<f64>,
) -> Result<Offered, TrafficError> {
    let frames = frames(topo, mix, flows.max(12));
    let iface = topo.ingress.a.clone();
    topo.gen_ns.run(|| {
        let _ = pin_thread(0);
        let ifindex =
            interface_index(&iface).map_err(|e| bpf("the generator's veth")(e.to_string()))?;
        let socket = PacketSocket::open(ifindex, Duration::from_millis(50))
            .map_err(|e| bpf("an AF_PACKET socket")(e.to_string()))?;
        let views: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let start = Instant::now();
        let mut packets = 0u64;
        match pace {
            None => {
                while start.elapsed() < window {
                    for batch in views.chunks(32) {
                        packets += socket.send_batch(batch).unwrap_or(0) as u64;
                    }
                }
            }
            Some(pps) => {
                let mut next = 0usize;
                let mut due = 0u64;
                while start.elapsed() < window {
                    let at = start + Duration::from_secs_f64(due as f64 / pps);
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        // Sleeps are coarse; spin the last stretch.
                        if wait > Duration::from_micros(200) {
                            std::thread::sleep(wait - Duration::from_micros(100));
                        }
                        continue;
                    }
                    let batch: Vec<&[u8]> = (0..PACED_BATCH)
                        .map(|k| views[(next + k) % views.len()])
                        .collect();
                    next = (next + PACED_BATCH) % views.len();
                    due += PACED_BATCH as u64;
                    packets += socket.send_batch(&batch).unwrap_or(0) as u64;
                }
            }
        }
        Ok(Offered {
            packets,
            elapsed: start.elapsed(),
        })
    })?
}

/// The sink: `dse_sink` attached to the sink namespace's veth.
pub struct Sink {
    ebpf: aya::Ebpf,
}

impl Sink {
    /// Attaches the sink to `topo`'s sink end.
    ///
    /// # Errors
    /// [`TrafficError`] if it does not load or attach.
    pub fn attach(topo: &Topology) -> Result<Sink, TrafficError> {
        let mut ebpf = load_verified(dse_ebpf::SINK_PROGRAM)?;
        set_first(&mut ebpf, "sink_port", u32::from(DPORT))?;
        let iface = topo.egress.b.clone();
        let prog = program(&mut ebpf, dse_ebpf::SINK_PROGRAM)?;
        topo.sink_ns
            .run(|| prog.attach(&iface, XdpMode::Driver).map(drop))?
            .map_err(|e| bpf("attaching dse_sink")(e.to_string()))?;
        Ok(Sink { ebpf })
    }

    /// Datagrams and bytes counted so far.
    ///
    /// # Errors
    /// [`TrafficError`] if the counters cannot be read.
    pub fn counts(&self) -> Result<(u64, u64), TrafficError> {
        let counts: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map("sink_counts")
                .ok_or_else(|| bpf("sink_counts")("no such map".into()))?,
        )
        .map_err(|e| bpf("sink_counts")(e.to_string()))?;
        let sum = |i: u32| -> Result<u64, TrafficError> {
            Ok(counts
                .get(&i, 0)
                .map_err(|e| bpf("sink_counts")(e.to_string()))?
                .iter()
                .sum())
        };
        Ok((sum(0)?, sum(1)?))
    }
}
