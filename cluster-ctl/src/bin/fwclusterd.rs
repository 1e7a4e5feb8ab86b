//! `fwclusterd --config FILE [--node NAME]`: the cluster daemon of one firewall (R-CLI-4).
//! Runs in the foreground and logs to stderr (journald-friendly); `RUST_LOG` filters.

use clap::Parser as _;
use cluster_ctl::{
    cli::fwclusterd::Args,
    daemon::{self, Options},
};

fn main() -> std::process::ExitCode {
    // SIGTERM, SIGINT and SIGHUP are blocked before any thread starts (every thread inherits
    // the mask), so only the thread that waits for them receives them; an unblocked thread
    // would take SIGHUP's default action and end the process.
    let signals = nix::sys::signal::SigSet::from_iter([
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
    ]);
    if let Err(e) = signals.thread_block() {
        eprintln!("fwclusterd: blocking signals: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let args = Args::parse();
    // Log lines are written by a thread of their own: a write to a slow file or a full pipe
    // must never delay heartbeats and lease renewal.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(writer)
        .with_ansi(false)
        .init();
    // Refused before a worker starts: pins that die with the process are no data path.
    if let Err(e) = cluster_ctl::dataplane::check_pin_root(&args.pin_root) {
        eprintln!("fwclusterd: {e}");
        return std::process::ExitCode::FAILURE;
    }
    if !args.worker {
        // A second daemon for the node is refused before it starts a worker.
        if let Err(e) = probe_node_lock(&args) {
            eprintln!("fwclusterd: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
        // The supervisor: the same arguments plus --worker, restarted per cluster.recover.
        let mut worker: Vec<String> = std::env::args().skip(1).collect();
        worker.push("--worker".into());
        return match cluster_ctl::supervisor::run(&args.config, &worker) {
            Ok(code) => std::process::ExitCode::from(code as u8),
            Err(e) => {
                eprintln!("fwclusterd: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let options = Options {
        config: args.config,
        node: args.node,
        pin_root: args.pin_root,
        run_dir: args.run_dir,
        state_dir: args.state_dir,
    };
    match daemon::run(options) {
        Ok(daemon::Exit::Left) => std::process::ExitCode::SUCCESS,
        Ok(daemon::Exit::Restart) => std::process::ExitCode::from(daemon::RESTART_EXIT_CODE as u8),
        Err(e) => {
            tracing::error!(id = cluster_ctl::catalog::DAEMON_FAILED.id, "{e:#}");
            eprintln!("fwclusterd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Takes and releases the node's lock: refused when another daemon holds it.
fn probe_node_lock(args: &Args) -> anyhow::Result<()> {
    let config = cluster_ctl::config::Config::load(&args.config)?;
    let (_, node) = config.resolve_node(args.node.as_deref())?;
    let pin_dir = args.pin_root.join(&config.cluster.name).join(&node);
    cluster_ctl::dataplane::NodeLock::take(&pin_dir, &node)?;
    Ok(())
}
