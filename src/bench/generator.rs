//! Traffic in, counts out: the generator that offers the workload's flows
//! from the generator namespace, and the sink that counts what arrives.
//!
//! The generator is `dse_gen` under BPF_PROG_TEST_RUN with live frames,
//! which paces itself frame by frame (see `trafgen.bpf.c`); where the
//! kernel refuses live frames, an AF_XDP socket, and where it refuses that
//! too, an AF_PACKET socket (see [`super::sender`]). Either way it runs on
//! CPU 0, and the sink (`dse_sink`, XDP) counts the datagrams that reach
//! the far namespace, then drops them.

use super::sender;
use super::topology::Topology;
use super::workload::{DPORT, DST_IP, SPORT_BASE, SRC_IP};
use crate::lab::{LabError, pin_thread};
use aya::maps::{Array, PerCpuArray, PerCpuValues};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
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
    /// XDP live frames, falling back to AF_XDP and then to AF_PACKET where
    /// the kernel refuses them.
    Auto,
    /// XDP live frames (BPF_PROG_TEST_RUN) only.
    LiveFrames,
    /// An AF_XDP socket only.
    AfXdp,
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
    /// Program runs a second once its window has closed (each drops its
    /// frame), measured at load: how long a test run of n runs takes past
    /// its window, which sizes each timed offer's run.
    drops_per_second: f64,
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
        let socket = |kind| Generator {
            kind,
            ebpf: None,
            config: dse_ebpf::GenConfig::default(),
            drops_per_second: 0.0,
        };
        match kind {
            GeneratorKind::AfPacket | GeneratorKind::AfXdp => return Ok(socket(kind)),
            GeneratorKind::Auto | GeneratorKind::LiveFrames => {}
        }
        let live = Generator::load_live(topo, flows);
        if kind == GeneratorKind::LiveFrames {
            return live;
        }
        let e = match live {
            Ok(generator) => return Ok(generator),
            Err(e) => e,
        };
        match sender::af_xdp_available(topo) {
            Ok(()) => {
                tracing::warn!("XDP live frames refused ({e}); offering over AF_XDP");
                Ok(socket(GeneratorKind::AfXdp))
            }
            Err(x) => {
                tracing::warn!(
                    "XDP live frames refused ({e}), and AF_XDP ({x}); offering over AF_PACKET"
                );
                Ok(socket(GeneratorKind::AfPacket))
            }
        }
    }

    /// Loads the live-frame generator and calibrates it.
    fn load_live(topo: &Topology, flows: u16) -> Result<Generator, TrafficError> {
        let mut ebpf = load_verified(dse_ebpf::GEN_PROGRAM)?;
        let config = dse_ebpf::GenConfig {
            dst_mac: topo.sink_mac,
            src_mac: topo.gen_mac,
            src_ip: SRC_IP,
            dst_ip: DST_IP,
            sport_base: SPORT_BASE,
            dport: DPORT,
            flows: u32::from(flows.max(1)),
            ..Default::default()
        };
        set_first(&mut ebpf, "gen_config", config)?;
        let mut generator = Generator {
            kind: GeneratorKind::LiveFrames,
            ebpf: Some(ebpf),
            config,
            drops_per_second: 0.0,
        };
        generator.calibrate(topo)?;
        Ok(generator)
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
        self.offer_paced(topo, mix, flows, window, None)
    }

    /// Offers `mix` for `window` at `pps` frames a second, or as fast as
    /// the generator goes if `pps` is `None`. Live frames are paced frame by
    /// frame by the generator program, socket senders in user space (see
    /// [`super::sender`]).
    ///
    /// # Errors
    /// [`TrafficError`] if sending fails.
    pub fn offer_paced(
        &mut self,
        topo: &Topology,
        mix: Mix,
        flows: u16,
        window: Duration,
        pps: Option<f64>,
    ) -> Result<Offered, TrafficError> {
        match self.kind {
            GeneratorKind::AfPacket => sender::offer_af_packet(topo, mix, flows, window, pps),
            GeneratorKind::AfXdp => sender::offer_af_xdp(topo, mix, flows, window, pps),
            GeneratorKind::Auto | GeneratorKind::LiveFrames => {
                self.offer_live(topo, mix, window, pps)
            }
        }
    }

    /// Checks that live frames run here and measures how fast the program
    /// runs past its window ([`Generator::drops_per_second`]).
    fn calibrate(&mut self, topo: &Topology) -> Result<(), TrafficError> {
        // A window of 1 ns: the first run sends, every later one drops.
        let ebpf = self.configured(Mix::Small, 1, 0)?;
        let (short, long) = (1u32 << 18, 1u32 << 21);
        let (short_s, long_s) = live_in(topo, ebpf, Mix::Small, |prog, seed, ctx| {
            let took = |repeat| -> Result<f64, TrafficError> {
                let start = Instant::now();
                run_live(prog, seed, ctx, repeat)?;
                Ok(start.elapsed().as_secs_f64())
            };
            Ok((took(short)?, took(long)?))
        })?;
        // The difference cancels each test run's fixed set-up and tear-down.
        self.drops_per_second = f64::from(long - short) / (long_s - short_s).max(1e-6);
        Ok(())
    }

    /// The live-frame program's object, with `gen_config` set for `mix`,
    /// `window_ns` and `interval_ns`, and `gen_state` zeroed on every CPU.
    fn configured(
        &mut self,
        mix: Mix,
        window_ns: u64,
        interval_ns: u64,
    ) -> Result<&aya::Ebpf, TrafficError> {
        let ebpf = self
            .ebpf
            .as_mut()
            .ok_or_else(|| bpf("live frames")("not loaded".into()))?;
        let config = dse_ebpf::GenConfig {
            imix: u32::from(mix == Mix::Imix),
            window_ns,
            interval_ns,
            ..self.config
        };
        if self.config != config {
            set_first(ebpf, "gen_config", config)?;
            self.config = config;
        }
        let cpus =
            aya::util::nr_cpus().map_err(|(what, e)| bpf("gen_state")(format!("{what}: {e}")))?;
        let zeros = PerCpuValues::try_from(vec![dse_ebpf::GenState::default(); cpus])
            .map_err(|e| bpf("gen_state")(e.to_string()))?;
        let map = ebpf
            .map_mut("gen_state")
            .ok_or_else(|| bpf("gen_state")("no such map".into()))?;
        PerCpuArray::<_, dse_ebpf::GenState>::try_from(map)
            .and_then(|mut state| state.set(0, zeros, 0))
            .map_err(|e| bpf("gen_state")(e.to_string()))?;
        Ok(ebpf)
    }

    /// Offers `mix` for `window` from live frames, one frame each `1/pps`
    /// seconds or as fast as the program runs. The program keeps the
    /// window and the pace (see `trafgen.bpf.c`) inside test runs sized to
    /// outlast the window; another test run follows only if one ends early.
    fn offer_live(
        &mut self,
        topo: &Topology,
        mix: Mix,
        window: Duration,
        pps: Option<f64>,
    ) -> Result<Offered, TrafficError> {
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX).max(1);
        let interval_ns = pps.map_or(0, |pps| (1e9 / pps.max(1.0)).round().max(1.0) as u64);
        let drops_per_second = self.drops_per_second;
        let ebpf = self.configured(mix, window_ns, interval_ns)?;
        live_in(topo, ebpf, mix, |prog, seed, ctx| {
            let mut left = window;
            loop {
                // Enough runs to outlast the window even if each dropped
                // its frame: a run that sends takes longer.
                let repeat = (drops_per_second * left.as_secs_f64() * 1.1)
                    .clamp(4096.0, f64::from(u32::MAX));
                run_live(prog, seed, ctx, repeat as u32)?;
                let (start_ns, sent) = gen_state(ebpf)?;
                let ends = start_ns.saturating_add(window_ns);
                let now = monotonic_ns();
                if now >= ends {
                    return Ok(Offered {
                        packets: sent,
                        elapsed: window,
                    });
                }
                left = Duration::from_nanos(ends - now);
            }
        })
    }
}

/// When `gen_state`'s window opened (CLOCK_MONOTONIC nanoseconds; the
/// latest of the CPUs') and the frames sent in it.
fn gen_state(ebpf: &aya::Ebpf) -> Result<(u64, u64), TrafficError> {
    let map = ebpf
        .map("gen_state")
        .ok_or_else(|| bpf("gen_state")("no such map".into()))?;
    let all = PerCpuArray::<_, dse_ebpf::GenState>::try_from(map)
        .and_then(|state| state.get(&0, 0))
        .map_err(|e| bpf("gen_state")(e.to_string()))?;
    let start = all.iter().map(|s| s.start_ns).max().unwrap_or(0);
    Ok((start, all.iter().map(|s| s.sent).sum()))
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `f` with the generator program of `ebpf`, `mix`'s seed frame and
/// its `xdp_md` on a thread in the generator's namespace, pinned to CPU 0.
fn live_in<T: Send>(
    topo: &Topology,
    ebpf: &aya::Ebpf,
    mix: Mix,
    f: impl FnOnce(&Xdp, &[u8], &[u8; 24]) -> Result<T, TrafficError> + Send,
) -> Result<T, TrafficError> {
    let prog: &Xdp = ebpf
        .program(dse_ebpf::GEN_PROGRAM)
        .ok_or_else(|| bpf(dse_ebpf::GEN_PROGRAM)("no such program".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| bpf(dse_ebpf::GEN_PROGRAM)(e.to_string()))?;
    let seed = seed(topo, mix);
    on_generator_cpu(topo, |ifindex| {
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(seed.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        f(prog, &seed, &ctx)
    })
}

/// Runs `f` on a thread in the generator's namespace, pinned to CPU 0,
/// with the index of the generator's veth: where every generator sends.
pub(super) fn on_generator_cpu<T: Send>(
    topo: &Topology,
    f: impl FnOnce(u32) -> Result<T, TrafficError> + Send,
) -> Result<T, TrafficError> {
    let iface = topo.ingress.a.clone();
    topo.gen_ns.run(|| {
        let _ = pin_thread(0);
        let ifindex =
            interface_index(&iface).map_err(|e| bpf("the generator's veth")(e.to_string()))?;
        f(ifindex)
    })?
}

/// The frame the generator program starts from for `mix`.
fn seed(topo: &Topology, mix: Mix) -> Vec<u8> {
    let mut seed = frames(topo, mix, 1).remove(0);
    if mix == Mix::Imix {
        seed.resize(dse_ebpf::IMIX_FRAME, 0);
    }
    seed
}

/// Runs `prog` `repeat` times on live frames from `seed`.
fn run_live(prog: &Xdp, seed: &[u8], ctx: &[u8; 24], repeat: u32) -> Result<(), TrafficError> {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(seed);
    opts.ctx_in = Some(ctx);
    opts.repeat = repeat;
    opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
    prog.test_run(opts).map(drop).map_err(|e| {
        // The syscall's errno is the error's source, not in its text.
        let cause = std::error::Error::source(&e).map(|s| format!(": {s}"));
        bpf("XDP live frames")(format!("{e}{}", cause.unwrap_or_default()))
    })
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
