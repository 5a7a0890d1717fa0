//! `dse agent`: a host's agent, run until SIGINT or SIGTERM.

use crate::cli::AgentArgs;
use anyhow::Context;
use dse_control::daemon::DaemonConfig;
use dse_control::fleet::agent::{Agent, AgentConfig};
use dse_control::lifecycle::depot::DepotConfig;
use dse_datapath::xdp::XdpLimits;

/// Runs the agent for `args.host` until a signal stops it, releasing the
/// host then. XDP datapaths stay pinned and forwarding.
///
/// # Errors
/// A bad host name or password file, a store that does not open, another
/// live agent on the host, or credentials etcd refuses.
pub fn agent(args: AgentArgs) -> anyhow::Result<()> {
    dse_datapath::name::check("host name", &args.host)?;
    let etcd = args.etcd_args.config(&args.etcd)?;
    if let Some(dir) = args.db.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let config = AgentConfig {
        etcd,
        host: args.host,
        daemon: DaemonConfig {
            db: args.db,
            bpffs: args.bpffs,
            emu_workers: args.emu_workers,
            xdp_limits: XdpLimits {
                rules: args.xdp_max_rules,
                action_records: args.xdp_max_rules,
                ..XdpLimits::default()
            },
            xdp_skb_mode: args.xdp_skb,
            depot: DepotConfig {
                trusted_keys: args.trusted_keys,
                lowest_acceptance: args.lowest_acceptance.level(),
            },
        },
        ttl: args.etcd_args.ttl(),
        report_every: std::time::Duration::from_secs(args.report_every.max(1)),
    };
    let host = config.host.clone();
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    // Its daemon opens on the runtime: backends may start tasks there.
    let agent = rt
        .block_on(async { Agent::open(config) })
        .context("opening the agent's store")?;
    tracing::info!(%host, applied = ?agent.applied(), "agent up");
    rt.block_on(agent.run(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM can be watched");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping; the host is released, XDP datapaths stay pinned and forwarding");
    }))?;
    Ok(())
}
