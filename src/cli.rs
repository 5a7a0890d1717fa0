//! The command line: what each `dse` command takes.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the daemon's socket is unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/dse/dse.sock";

#[derive(Parser)]
#[command(
    name = "dse",
    version,
    about = "Offload a host's network flows to a DPU datapath",
    after_help = "Exit codes: 0 done; 1 failed; 2 bad command line; 3 generation conflict; \
                  4 invalid input (rules, body, names); 5 dse serve unreachable; \
                  6 not authorized; 7 not found."
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    /// How to print results.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the CLI finds `dse serve`.
#[derive(Args, Clone)]
pub struct Connection {
    /// The daemon's Unix socket.
    #[arg(long, global = true, env = "DSE_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Talk to the daemon over TCP at HOST:PORT instead (needs --token-file).
    #[arg(long, global = true, env = "DSE_SERVER")]
    pub server: Option<String>,
    /// The file holding the bearer token for --server.
    #[arg(long, global = true, env = "DSE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// Output format.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned tables for people.
    Table,
    /// JSON for scripts: the API's answer as is.
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// The whole system: a two-host, three-DPU cluster in namespaces, the control plane,
    /// offloaded rules, traffic, and a remediation under traffic (as root; otherwise, or
    /// with --in-memory, traffic through the emulated datapath on in-memory ports).
    Demo {
        /// Run the in-memory demo even as root.
        #[arg(long, conflicts_with = "fleet")]
        in_memory: bool,
        /// The hosts as a fleet: a 3-member etcd, two controllers and an
        /// agent per host; the leader is killed during the remediation
        /// (needs root and etcd).
        #[arg(long)]
        fleet: bool,
        /// Rule file of the in-memory demo (YAML or JSON).
        #[arg(long, default_value = "examples/demo.yaml")]
        rules: PathBuf,
        /// Packets to send.
        #[arg(long, default_value_t = 2_000_000)]
        packets: u64,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Measure what offload buys: forwarding rate, loss and CPU per packet on
    /// dse's offloaded path, its host path, nftables and Open vSwitch, rule
    /// installation rates, and scaling over rules and masks (needs root).
    Bench(BenchArgs),
    /// Check the backends against the reference pipeline, frame by frame: for
    /// each rule a probe frame it takes and one just outside each field it
    /// matches, and one for each tie of equal-priority rules, with a pcap's
    /// frames and random ones besides, through the reference and each
    /// backend, then each rule's counters; every disagreement with a
    /// reproducer (the rules involved and the frame). Also warns of rules no
    /// packet reaches. Exits 0 only if every frame and counter agrees.
    /// Offline.
    Verify(VerifyArgs),
    /// One frame through the rules, step by step: what the parser saw, each
    /// subtable probed, the rule chosen and why each rule above it did not
    /// match, each action with the frame after it, and the verdict, with the
    /// XDP program's answer beside it. Exits 0 unless the XDP program did
    /// otherwise.
    Trace(TraceArgs),
    /// Run the daemon: hold the desired rules and keep every datapath equal to them
    /// (with --etcd, a fleet controller whose state is in etcd).
    Serve(ServeArgs),
    /// Run a host's agent in a fleet: own the host's datapaths, keep them
    /// equal to what etcd says the host should run, and report it there.
    Agent(AgentArgs),
    /// Rules: apply, get, add, delete, counters; check a file offline.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Datapath instances: attach a backend to interfaces, detach, list.
    Datapath {
        #[command(subcommand)]
        command: DatapathCommand,
    },
    /// The lifecycle inventory's clusters: create, list.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Hosts: list them (liveness, what each runs, its last report), set what
    /// a fleet host runs, add one with its DPUs to a cluster.
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// The lifecycle depot: import a signed depot directory, list what is imported.
    Depot {
        #[command(subcommand)]
        command: DepotCommand,
    },
    /// A cluster's desired image: base image, add-ons and components from the depot.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Lifecycle operations on a cluster: check, precheck, stage, remediate, history.
    Lifecycle {
        #[command(subcommand)]
        command: LifecycleCommand,
    },
    /// The fleet: its controllers, the leader, etcd's members, agents alive.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// The emulated DPUs: boot time and injected faults.
    Dpu {
        #[command(subcommand)]
        command: DpuCommand,
    },
    /// The audit log: who asked for which change, when, and what came of
    /// it (refusals and "no change" included).
    Audit {
        /// The newest entries, this many (the default: 20).
        #[arg(long, conflicts_with = "after")]
        last: Option<usize>,
        /// The entries after this sequence number instead, oldest first.
        #[arg(long)]
        after: Option<u64>,
        /// At most this many entries (up to 10000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Statistics of each datapath (on a fleet, as each agent last
    /// reported them, named host/datapath).
    Stats {
        /// Only this host's datapaths.
        #[arg(long)]
        host: Option<String>,
    },
    /// The daemon's health, the desired generation and each datapath's state.
    Status,
    /// Print a shell completion script: `dse completions bash >
    /// /etc/bash_completion.d/dse`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `dse man > /usr/share/man/man1/dse.1`.
    Man,
}

#[derive(Args)]
pub struct ServeArgs {
    /// The store (created if missing).
    #[arg(long, default_value = "/var/lib/dse/dse.redb")]
    pub db: PathBuf,
    /// The bpffs directory the XDP datapaths pin under (one directory each).
    #[arg(long, default_value = "/sys/fs/bpf/dse")]
    pub bpffs: PathBuf,
    /// Also serve the API on TCP at this address (needs --token-file).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Largest request body, in bytes (checked against Content-Length
    /// before reading; the default holds the largest rule set, 2Mi rules).
    #[arg(long, default_value_t = 512 << 20)]
    pub max_body: usize,
    /// Seconds a client has to send a request's headers (also how long an
    /// idle connection stays open).
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// Connections open at once on each listener (Unix socket, TCP); more
    /// are closed as they arrive.
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// Worker threads of each host-path (emu) datapath.
    #[arg(long, default_value_t = 2)]
    pub emu_workers: usize,
    /// Rule slots of each XDP datapath (kernel memory grows with it).
    #[arg(long, default_value_t = dse_ebpf::limits::MAX_RULES)]
    pub xdp_max_rules: u32,
    /// Attach XDP in generic (skb) mode, for drivers without native XDP.
    #[arg(long)]
    pub xdp_skb: bool,
    /// Public keys the depot's manifests must be signed by: lines of `<key id> <ed25519 public key, hex>`.
    #[arg(long)]
    pub trusted_keys: Option<PathBuf>,
    /// The lowest acceptance level a depot manifest may have.
    #[arg(long, value_enum, default_value_t = AcceptanceArg::PartnerSupported)]
    pub lowest_acceptance: AcceptanceArg,
    /// Run as a fleet controller with its state in etcd at these client
    /// URLs (comma-separated), instead of the single-machine daemon.
    #[arg(long)]
    pub etcd: Option<String>,
    /// This controller's id, unique in the fleet (with --etcd; default:
    /// the host name and process id).
    #[arg(long, requires = "etcd")]
    pub controller_id: Option<String>,
    #[command(flatten)]
    pub etcd_args: EtcdArgs,
}

/// How a fleet process reaches etcd.
#[derive(Args)]
pub struct EtcdArgs {
    /// The etcd user, when etcd has authentication on (`dse-controller`,
    /// or an agent's `dse-agent-<host>`).
    #[arg(long, requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// The file holding the etcd user's password.
    #[arg(long, requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
    /// The key prefix the fleet lives under in etcd.
    #[arg(long, default_value = dse_control::fleet::keys::DEFAULT_PREFIX)]
    pub etcd_prefix: String,
    /// Seconds a lease (an agent's host, a controller's leadership) lives
    /// after its process stops answering.
    #[arg(long, default_value_t = 5)]
    pub lease_ttl: u64,
}

impl EtcdArgs {
    /// The client's configuration for `endpoints`, with the password read
    /// from its file.
    ///
    /// # Errors
    /// The password file does not read.
    pub fn config(&self, endpoints: &str) -> anyhow::Result<dse_control::fleet::EtcdConfig> {
        use anyhow::Context;
        let mut etcd = dse_control::fleet::EtcdConfig::new(endpoints);
        etcd.prefix = self.etcd_prefix.clone();
        if let (Some(user), Some(file)) = (&self.etcd_user, &self.etcd_password_file) {
            let password = std::fs::read_to_string(file)
                .with_context(|| format!("reading the etcd password file {}", file.display()))?;
            etcd = etcd.with_credentials(dse_control::fleet::Credentials {
                user: user.clone(),
                password: password.trim().to_string(),
            });
        }
        Ok(etcd)
    }

    /// The lease TTL.
    pub fn ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_ttl.max(1))
    }
}

#[derive(Args)]
pub struct AgentArgs {
    /// etcd's client URLs, comma-separated.
    #[arg(long)]
    pub etcd: String,
    /// The host this agent runs for (one live agent a host).
    #[arg(long)]
    pub host: String,
    #[command(flatten)]
    pub etcd_args: EtcdArgs,
    /// Seconds between reports of the datapaths' statistics, while they
    /// change (an idle host writes nothing).
    #[arg(long, default_value_t = 10)]
    pub report_every: u64,
    /// The agent's own store: what it applied (created if missing).
    #[arg(long, default_value = "/var/lib/dse/agent.redb")]
    pub db: PathBuf,
    /// The bpffs directory the XDP datapaths pin under (one directory each).
    #[arg(long, default_value = "/sys/fs/bpf/dse")]
    pub bpffs: PathBuf,
    /// Worker threads of each host-path (emu) datapath.
    #[arg(long, default_value_t = 2)]
    pub emu_workers: usize,
    /// Rule slots of each XDP datapath (kernel memory grows with it).
    #[arg(long, default_value_t = dse_ebpf::limits::MAX_RULES)]
    pub xdp_max_rules: u32,
    /// Attach XDP in generic (skb) mode, for drivers without native XDP.
    #[arg(long)]
    pub xdp_skb: bool,
    /// The keys this agent trusts (`dse depot keygen` makes them): the
    /// depot content a remediation brings is checked again with them
    /// before the host's DPUs take it. Without it, the host takes no image.
    #[arg(long)]
    pub trusted_keys: Option<PathBuf>,
    /// The lowest acceptance level a depot manifest may have.
    #[arg(long, value_enum, default_value_t = AcceptanceArg::PartnerSupported)]
    pub lowest_acceptance: AcceptanceArg,
}

/// Acceptance levels, most trusted first.
#[derive(Clone, Copy, ValueEnum)]
pub enum AcceptanceArg {
    Certified,
    Accepted,
    PartnerSupported,
    CommunitySupported,
}

impl AcceptanceArg {
    /// The level itself.
    pub fn level(self) -> dse_control::lifecycle::depot::Acceptance {
        use dse_control::lifecycle::depot::Acceptance;
        match self {
            AcceptanceArg::Certified => Acceptance::Certified,
            AcceptanceArg::Accepted => Acceptance::Accepted,
            AcceptanceArg::PartnerSupported => Acceptance::PartnerSupported,
            AcceptanceArg::CommunitySupported => Acceptance::CommunitySupported,
        }
    }
}

/// Spelled as in manifests and messages (`partner-supported`).
impl std::fmt::Display for AcceptanceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.level().fmt(f)
    }
}

impl DepotCommand {
    /// Whether it runs without the daemon.
    pub fn is_local(&self) -> bool {
        matches!(self, DepotCommand::Keygen { .. } | DepotCommand::Add { .. })
    }
}

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Make a rule file the desired rule set and apply it to every datapath.
    Apply {
        /// Rule file (YAML or JSON).
        #[arg(long, short)]
        file: PathBuf,
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Refuse unless the desired rules are still at this generation.
        #[arg(long)]
        expect_generation: Option<u64>,
        /// The named rule set (a fleet keeps many; one machine runs `default`).
        #[arg(long)]
        rule_set: Option<String>,
    },
    /// Print the desired rules: all of them, a page, or some by id.
    Get {
        /// The named rule set (a fleet keeps many; one machine runs `default`).
        #[arg(long)]
        rule_set: Option<String>,
        /// Only these rule ids (comma-separated).
        #[arg(long, value_delimiter = ',')]
        ids: Vec<u32>,
        /// Only rules with a greater id (the previous page's `next`).
        #[arg(long)]
        after: Option<u32>,
        /// At most this many rules (1 to 100000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Add (or replace, by id) the rules in a file, keeping the others.
    Add {
        /// File of rules: a rule set's `rules:` or a list of rules (YAML or JSON).
        #[arg(long, short)]
        file: PathBuf,
        /// Refuse unless the desired rules are still at this generation.
        #[arg(long)]
        expect_generation: Option<u64>,
        /// The named rule set (a fleet keeps many; one machine runs `default`).
        #[arg(long)]
        rule_set: Option<String>,
    },
    /// Delete rules by id.
    Delete {
        /// Rule ids.
        #[arg(required = true)]
        ids: Vec<u32>,
        /// Refuse unless the desired rules are still at this generation.
        #[arg(long)]
        expect_generation: Option<u64>,
        /// The named rule set (a fleet keeps many; one machine runs `default`).
        #[arg(long)]
        rule_set: Option<String>,
    },
    /// Per-rule packet and byte counters of each datapath.
    Counters {
        /// Only this datapath.
        #[arg(long)]
        datapath: Option<String>,
        /// Only this host's (a single machine is its one host).
        #[arg(long)]
        host: Option<String>,
    },
    /// Validate and compile a rule file offline; print what it compiles to and
    /// warn of rules no packet reaches (covered by rules above them, or
    /// matching fields no packet has together).
    Check {
        /// Rule file (YAML or JSON).
        file: PathBuf,
    },
}

/// `dse verify`'s options.
#[derive(Args)]
pub struct VerifyArgs {
    /// Rule file (YAML or JSON).
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Backends to check (comma-separated); xdp needs root and bpffs.
    #[arg(long, value_delimiter = ',', default_value = "xdp,emu")]
    pub backend: Vec<dse::verify::Backend>,
    /// Write here what each backend sent (`<backend>.pcapng`) and a
    /// reproducer of each disagreement.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run the frames of this pcap or pcapng file too.
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// The port the file's frames arrive on, where a pcapng interface is
    /// not named after a port (default: the first port).
    #[arg(long, requires = "pcap")]
    pub in_port: Option<String>,
    /// Run this many random frames too, each made from a rule picked at
    /// random (one in four just outside one of its fields).
    #[arg(long, default_value_t = 0)]
    pub generate: usize,
    /// The seed of the random frames.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Check this XDP object rather than the one built in: a build of the
    /// datapath program's source, with its maps.
    #[arg(long)]
    pub object: Option<PathBuf>,
    /// The bpffs mount the XDP program pins its maps under (in a directory
    /// of its own, removed afterwards).
    #[arg(long, default_value = "/sys/fs/bpf")]
    pub bpffs: PathBuf,
}

/// `dse trace`'s arguments.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("rules").required(true).args(["file", "datapath"])))]
#[command(group(clap::ArgGroup::new("frame").required(true).args(["flow", "hex", "pcap"])))]
pub struct TraceArgs {
    /// The frame as a flow spec: comma-separated field=value of a rule's
    /// match, and tcp, udp, icmp, icmpv6, ipv4, ipv6, arp; such as
    /// in_port=uplink,udp,ip_dst=192.0.2.10,l4_dst=53.
    pub flow: Option<String>,
    /// The frame's bytes in hex.
    #[arg(long)]
    pub hex: Option<String>,
    /// A pcap or pcapng file holding the frame (see --packet).
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// Which of the file's packets, from 1.
    #[arg(long, default_value_t = 1, requires = "pcap")]
    pub packet: usize,
    /// Rule file (YAML or JSON).
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// The rules a running datapath of the daemon runs, by its name.
    #[arg(long)]
    pub datapath: Option<String>,
    /// The port the frame arrives on, by name (default: the flow spec's,
    /// the pcapng interface's, or the first port).
    #[arg(long)]
    pub in_port: Option<String>,
    /// Do not run the frame through the XDP program beside the reference.
    #[arg(long)]
    pub no_xdp: bool,
    /// The bpffs mount the XDP program pins its maps under (in a directory
    /// of its own, removed afterwards).
    #[arg(long, default_value = "/sys/fs/bpf")]
    pub bpffs: PathBuf,
    /// Write the frame in and the frame out here as pcapng (an interface
    /// per port, and `host`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A backend, as the CLI names it.
#[derive(Clone, Copy, ValueEnum)]
pub enum BackendArg {
    /// The offloaded datapath: the XDP program on the interfaces.
    Xdp,
    /// The host's software path: the emulated datapath over AF_PACKET.
    Emu,
    /// The emulated datapath on in-memory ports, bound to no interface (no
    /// --port): it applies the rules and carries no traffic.
    Memory,
}

#[derive(Subcommand)]
pub enum DatapathCommand {
    /// Run the desired rules on interfaces, offloaded (xdp) or on the host CPU (emu), or on in-memory ports (memory).
    Attach {
        /// A name for the instance.
        name: String,
        /// Which datapath runs the rules.
        #[arg(long, value_enum)]
        backend: BackendArg,
        /// PORT=INTERFACE: the interface of a port the rules define (repeat;
        /// at least one for xdp and emu, none for memory).
        #[arg(long = "port", value_parser = port_binding)]
        ports: Vec<(String, String)>,
    },
    /// Stop an instance (an XDP one leaves its interfaces).
    Detach {
        /// The instance.
        name: String,
    },
    /// The instances and their state.
    List,
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Add a cluster, managed by a single image (unless --baselines).
    Create {
        /// Its name.
        name: String,
        /// The managing server's version (vCenter's equivalent): 8.0 or later.
        #[arg(long)]
        manager_version: String,
        /// Managed by baselines instead (no DPU host may join such a cluster).
        #[arg(long)]
        baselines: bool,
    },
    /// The clusters, their hosts and the hosts' DPUs.
    List,
}

#[derive(Subcommand)]
pub enum DepotCommand {
    /// Import a depot directory (on the daemon's machine): every manifest's signature, payload checksums and acceptance level are checked before anything is copied.
    Import {
        /// The depot directory.
        dir: PathBuf,
    },
    /// The imported manifests.
    List,
    /// Make an ed25519 key pair to sign depot manifests with: the secret
    /// key goes to --out (mode 0600); the public half is printed as the
    /// line `dse serve --trusted-keys` reads. Runs locally.
    Keygen {
        /// The key's id, as signatures and trusted-keys lines name it.
        #[arg(long)]
        id: String,
        /// Where to write the secret key (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Add content to a depot directory: copy the payloads, write the
    /// manifest (`NAME-VERSION.json`) with their SHA-256, and sign it.
    /// Runs locally; import the directory with `dse depot import`.
    Add {
        /// The depot directory (created if missing).
        depot: PathBuf,
        /// base-image, vendor-addon, firmware-addon or component.
        #[arg(long)]
        kind: String,
        /// Its name, such as dse-datapath.
        #[arg(long)]
        name: String,
        /// Its version, such as 2.1.
        #[arg(long)]
        version: String,
        /// How far it is vouched for.
        #[arg(long, value_enum)]
        acceptance: AcceptanceArg,
        /// Where it installs: host, dpu or both (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        targets: Vec<String>,
        /// The solution adding it (components; only nsx may add to a DPU).
        #[arg(long)]
        solution: Option<String>,
        /// The DPU vendor it is made for (firmware and vendor add-ons):
        /// nvidia-bluefield or amd-pensando.
        #[arg(long)]
        vendor: Option<String>,
        /// The DPU models it is made for (comma-separated; none: any).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// A file to ship (repeat for several).
        #[arg(long = "payload", required = true)]
        payloads: Vec<PathBuf>,
        /// The secret key from `dse depot keygen`.
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum HostCommand {
    /// Each host: available or not (its agent's lease), the rule set and
    /// generation it runs, its datapaths and its last report.
    List,
    /// What a fleet host should run: its rule set and datapath instances
    /// (its agent applies them).
    Set {
        /// The host.
        host: String,
        /// The named rule set its datapaths run.
        #[arg(long, default_value = "default")]
        rule_set: String,
        /// Its datapath instances: a YAML or JSON list of {name, backend,
        /// interfaces} (none when not given).
        #[arg(long, short)]
        file: Option<PathBuf>,
    },
    /// Add a host and its DPUs, described in a YAML or JSON file, to a cluster; the cluster rules are checked and each broken one is named.
    Add {
        /// The cluster.
        #[arg(long)]
        cluster: String,
        /// The host: name, version, and dpus (serial, vendor, model, generation, hardware_revision, firmware, os, datapath).
        #[arg(long, short)]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum FleetCommand {
    /// Controllers (and which leads), etcd's members, hosts and agents alive.
    Status,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Set a cluster's desired image; every part must be in the depot and fit the cluster's DPUs.
    Set {
        /// The cluster.
        #[arg(long)]
        cluster: String,
        /// The base image, NAME=VERSION (host and DPU OS).
        #[arg(long, value_parser = pick)]
        base: (String, String),
        /// The vendor add-on, NAME=VERSION.
        #[arg(long, value_parser = pick)]
        vendor_addon: Option<(String, String)>,
        /// The firmware add-on, NAME=VERSION (DPU firmware).
        #[arg(long, value_parser = pick)]
        firmware: Option<(String, String)>,
        /// A component, NAME=VERSION (repeat); dse-datapath=V sets the DPU datapath.
        #[arg(long = "component", value_parser = pick)]
        components: Vec<(String, String)>,
    },
}

#[derive(Subcommand)]
pub enum LifecycleCommand {
    /// Compliance of each host and DPU with the cluster's image, and the impact of remediating it.
    Check {
        /// The cluster.
        #[arg(long)]
        cluster: String,
    },
    /// Check that the cluster can be remediated now; exits 4 if not.
    Precheck {
        /// The cluster.
        #[arg(long)]
        cluster: String,
    },
    /// Copy the image's payloads to the DPUs ahead of remediation.
    Stage {
        /// The cluster.
        #[arg(long)]
        cluster: String,
    },
    /// Bring the cluster to its image, host by host, showing each host's and DPU's progress.
    Remediate {
        /// The cluster.
        #[arg(long)]
        cluster: String,
        /// Hosts remediated at once: 1 to 96, as vCenter allows.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// Upgrade a dual-DPU host's DPUs one at a time (rolling) so one of them offloads throughout.
        #[arg(long)]
        keep_offload: bool,
        /// Further attempts of a host whose failure may pass.
        #[arg(long, default_value_t = 1)]
        retries: u32,
        /// Longest wait for a DPU to come up (on a fleet, also for a
        /// host's agent to come back), in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        boot_timeout_ms: u64,
        /// Print the impact and touch nothing.
        #[arg(long)]
        dry_run: bool,
        /// Start it and return; follow it with `dse lifecycle history`.
        #[arg(long)]
        no_wait: bool,
    },
    /// A fresh install of a host: its DPUs imaged with the cluster image's DPU content, the host with its host content.
    Install {
        /// The cluster.
        #[arg(long)]
        cluster: String,
        /// The host.
        #[arg(long)]
        host: String,
    },
    /// Past and running remediations, or one in full.
    History {
        /// Only this remediation, every step of it.
        #[arg(long)]
        id: Option<u64>,
    },
    /// Recommendation generation: unsupported on a DPU cluster.
    Recommendations {
        /// The cluster.
        #[arg(long)]
        cluster: String,
    },
    /// The hardware compatibility check: unsupported on a DPU cluster.
    Hcl {
        /// The cluster.
        #[arg(long)]
        cluster: String,
    },
}

#[derive(Subcommand)]
pub enum DpuCommand {
    /// Set how an emulated DPU behaves.
    Emulate {
        /// Its serial.
        serial: String,
        /// How long a boot takes, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        boot_ms: u64,
        /// How long a hung boot lasts before the watchdog boots the previous slot.
        #[arg(long, default_value_t = 3000)]
        watchdog_ms: u64,
        /// Fail the next N flashes.
        #[arg(long, default_value_t = 0)]
        flash_failures: u32,
        /// Hang the next N trial boots.
        #[arg(long, default_value_t = 0)]
        boot_hangs: u32,
        /// Fail the health check of the next N trial boots.
        #[arg(long, default_value_t = 0)]
        health_check_failures: u32,
        /// Make it unreachable.
        #[arg(long)]
        unreachable: bool,
    },
}

fn pick(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VERSION, e.g. esxi=8.0.3")),
    }
}

fn port_binding(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((p, i)) if !p.is_empty() && !i.is_empty() => Ok((p.to_string(), i.to_string())),
        _ => Err(format!("{s:?} is not PORT=INTERFACE, e.g. uplink=eth1")),
    }
}

/// `dse bench`'s options; unset ones take the full run's values (or the
/// quick run's with `--quick`).
#[derive(Args)]
pub struct BenchArgs {
    /// A short run: small rule sets, 0.3 s windows, one round.
    #[arg(long)]
    pub quick: bool,
    /// Subjects, comma-separated (default: all; those not installed are skipped).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub subjects: Option<Vec<dse::bench::Subject>>,
    /// Frame mixes of the comparison, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub mix: Option<Vec<dse::bench::Mix>>,
    /// Rule count of the comparison [default: 1000].
    #[arg(long)]
    pub base_rules: Option<usize>,
    /// Rule counts to scale over (one mask), comma-separated [default: 1000,100000,1000000].
    #[arg(long, value_delimiter = ',')]
    pub rules: Option<Vec<usize>>,
    /// Mask counts to scale over, comma-separated [default: 1,4,16].
    #[arg(long, value_delimiter = ',')]
    pub masks: Option<Vec<usize>>,
    /// Rule count of the mask scaling [default: 100000].
    #[arg(long)]
    pub mask_rules: Option<usize>,
    /// Rule counts installed through dse's API too, comma-separated [default: 100000,1000000].
    #[arg(long, value_delimiter = ',')]
    pub api_install: Option<Vec<usize>>,
    /// Flows in the traffic [default: 256].
    #[arg(long)]
    pub flows: Option<u16>,
    /// Seconds each measurement offers traffic [default: 1].
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Rounds of the comparison [default: 3].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Skip the search for each subject's throughput without loss.
    #[arg(long)]
    pub no_lossless: bool,
    /// The traffic generator.
    #[arg(long, value_enum, default_value_t = dse::bench::GeneratorKind::Auto)]
    pub generator: dse::bench::GeneratorKind,
    /// Where bench.json and the SVG plots go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
}
