//! The `dse` command: the daemon (`dse serve`), the CLI that drives it, the
//! demo, and rule tools.

mod cli;
mod remote;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use cli::{Cli, Command, RulesCommand};
use dse_datapath::{RuleSet, compile};
use std::path::Path;
use std::process::ExitCode;

/// Reads and validates a rule file (YAML or JSON).
fn load(path: &Path) -> Result<RuleSet> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    RuleSet::from_text(&text).with_context(|| format!("{} refused", path.display()))
}

fn check(file: &Path) -> Result<()> {
    let set = load(file)?;
    let t = compile(&set)?;
    dse::outln!(
        "{}: {} ports, {} meters, {} rules -> {} subtables (masks), {} action records, {} KiB of tables",
        file.display(),
        set.ports.len(),
        set.meters.len(),
        set.rules.len(),
        t.subtables.len(),
        t.actions.len(),
        t.heap_bytes() / 1024
    );
    for f in dse_datapath::analysis::unreached(&set) {
        dse::outln!("warning: {f}");
    }
    Ok(())
}

/// `dse trace`: the frame through the rules of a file or of a running
/// datapath, the XDP program's answer beside; the exit code of a local
/// command, or of the daemon's answer.
fn trace(args: &cli::TraceArgs, connection: &cli::Connection, output: cli::Output) -> ExitCode {
    let (set, running) = match (&args.file, &args.datapath) {
        (Some(file), _) => match load(file).and_then(|s| {
            compile(&s)
                .map(|_| s)
                .with_context(|| format!("{} refused", file.display()))
        }) {
            Ok(s) => (s, None),
            Err(e) => return local(Err(e)),
        },
        (None, Some(name)) => match remote::datapath_rules(connection, name) {
            Ok(s) => (s, Some(name.as_str())),
            Err(code) => return code,
        },
        (None, None) => unreachable!("clap requires -f or --datapath"),
    };
    local(trace_rules(
        &set,
        args,
        running.map(|n| (connection, n)),
        output,
    ))
}

/// The trace of `set`; with `running`, the daemon and the name of the
/// datapath whose flow caches are read for each pass's key.
fn trace_rules(
    set: &RuleSet,
    args: &cli::TraceArgs,
    running: Option<(&cli::Connection, &str)>,
    output: cli::Output,
) -> Result<()> {
    use dse::trace::Packet;
    let packet = match (&args.flow, &args.hex, &args.pcap) {
        (Some(f), _, _) => Packet::Flow(f),
        (_, Some(h), _) => Packet::Hex(h),
        (_, _, Some(p)) => Packet::Pcap(p, args.packet),
        _ => unreachable!("clap requires a frame"),
    };
    let (in_port, frame) = dse::trace::frame(set, &packet, args.in_port.as_deref())?;
    let mut t = dse_datapath::trace::trace(set, in_port, &frame)?;
    if let Some((connection, name)) = running {
        let keys = dse::trace::pass_keys(&t);
        dse::trace::put_caches(&mut t, remote::datapath_caches(connection, name, &keys));
    }
    let xdp = (!args.no_xdp).then(|| dse::trace::xdp(set, &args.bpffs, in_port, &frame));
    if let Some(path) = &args.out {
        dse::trace::write_pcap(path, set, &t)?;
    }
    match output {
        cli::Output::Json => dse::outln!("{}", dse::trace::json(&t, &xdp)),
        cli::Output::Table => dse::trace::print(&t, &xdp),
    }
    dse::trace::verdict(&t, &xdp)
}

/// `dse verify`: the report, then the exit code (non-zero on a disagreement).
fn verify(args: &cli::VerifyArgs, output: cli::Output) -> Result<()> {
    let set = load(&args.file)?;
    compile(&set).with_context(|| format!("{} refused", args.file.display()))?;
    let r = dse::verify::run(
        &set,
        &dse::verify::Options {
            backends: &args.backend,
            bpffs: &args.bpffs,
            object: args.object.as_deref(),
            pcap: args.pcap.as_deref(),
            in_port: args.in_port.as_deref(),
            generate: args.generate,
            seed: args.seed,
            out: args.out.as_deref(),
        },
    )?;
    match output {
        cli::Output::Json => dse::outln!("{}", dse::verify::json(&r)),
        cli::Output::Table => dse::verify::print(&r),
    }
    dse::verify::verdict(&r)
}

/// `dse bench`: the options from the command line, the run, the tables
/// (or the JSON report), the files written.
fn bench(args: cli::BenchArgs, output: cli::Output) -> Result<()> {
    let mut o = if args.quick {
        dse::bench::Options::quick()
    } else {
        dse::bench::Options::full()
    };
    o.subjects = args.subjects.unwrap_or(o.subjects);
    o.mixes = args.mix.unwrap_or(o.mixes);
    o.base_rules = args.base_rules.unwrap_or(o.base_rules);
    o.rules = args.rules.unwrap_or(o.rules);
    o.masks = args.masks.unwrap_or(o.masks);
    o.mask_rules = args.mask_rules.unwrap_or(o.mask_rules);
    o.api_install = args.api_install.unwrap_or(o.api_install);
    o.flows = args.flows.unwrap_or(o.flows);
    if let Some(s) = args.seconds {
        if !(s.is_finite() && s > 0.0) {
            anyhow::bail!("--seconds must be a positive number, not {s}");
        }
        o.window = std::time::Duration::from_secs_f64(s);
    }
    o.rounds = args.rounds.unwrap_or(o.rounds);
    o.generator = args.generator;
    o.lossless &= !args.no_lossless;
    o.out = args.out;
    let report = dse::bench::run(&o)?;
    let written = report.write(&o.out)?;
    if output == cli::Output::Json {
        dse::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        dse::out!("{}", report.tables());
        let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        dse::outln!("\nwritten: {}", names.join(", "));
    }
    Ok(())
}

fn local(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(remote::exit::FAILED)
        }
    }
}

/// `dse depot keygen` and `dse depot add`, which need no daemon.
fn depot_tool(command: cli::DepotCommand) -> Result<()> {
    match command {
        cli::DepotCommand::Keygen { id, out } => {
            let line = dse::depot::keygen(&id, &out)?;
            eprintln!(
                "wrote the secret key to {}; give dse serve this line in its --trusted-keys file:",
                out.display()
            );
            dse::outln!("{line}");
            Ok(())
        }
        cli::DepotCommand::Add {
            depot,
            kind,
            name,
            version,
            acceptance,
            targets,
            solution,
            vendor,
            models,
            payloads,
            key,
        } => {
            let key = dse::depot::KeyFile::load(&key)?;
            let fields = serde_json::json!({
                "kind": kind, "name": name, "version": version,
                "acceptance": acceptance.to_string(), "targets": targets,
                "solution": solution, "vendor": vendor, "models": models,
                "payloads": [],
            });
            let manifest = serde_path_to_error::deserialize(&fields)
                .map_err(|e| anyhow::anyhow!("--{}: {}", e.path(), e.inner()))?;
            let path = dse::depot::add(&depot, &key, dse::depot::Addition { manifest, payloads })?;
            dse::outln!("added {}, signed by key {}", path.display(), key.id);
            Ok(())
        }
        _ => unreachable!("only the local depot commands"),
    }
}

fn main() -> ExitCode {
    // SIGPIPE stays ignored (Rust's default): a client or reader that goes
    // away is an error to handle, never the end of `dse serve` (see dse::out).
    let code = run();
    if dse::out::closed() {
        eprintln!("dse: standard output was closed before all of it was written");
        return ExitCode::from(remote::exit::FAILED);
    }
    code
}

fn run() -> ExitCode {
    let cli = Cli::parse();
    // The demo and the bench run a daemon in-process: its routine log
    // lines would interleave with their report.
    let quiet = matches!(cli.command, Command::Demo { .. } | Command::Bench(_));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if quiet { "warn" } else { "info" })
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Demo {
            fleet: true,
            in_memory: false,
            ..
        } => local(dse::demo::run_fleet()),
        Command::Demo {
            in_memory,
            rules,
            packets,
            workers,
            ..
        } => local(dse::demo::run(in_memory, &rules, packets, workers)),
        Command::Rules {
            command: RulesCommand::Check { file },
        } => local(check(&file)),
        Command::Verify(args) => local(verify(&args, cli.output)),
        Command::Trace(args) => trace(&args, &cli.connection, cli.output),
        Command::Serve(args) => local(remote::serve(args, &cli.connection)),
        Command::Agent(args) => local(remote::agent(args)),
        Command::Bench(args) => local(bench(args, cli.output)),
        Command::Depot { command } if command.is_local() => local(depot_tool(command)),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "dse", &mut out);
            dse::out!("{}", String::from_utf8_lossy(&out));
            ExitCode::SUCCESS
        }
        Command::Man => local((|| {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .context("rendering the man page")?;
            dse::out!("{}", String::from_utf8_lossy(&out));
            Ok(())
        })()),
        command => remote::run(&cli.connection, cli.output, command),
    }
}
