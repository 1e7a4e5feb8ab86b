use clap::Parser as _;
use cluster_ctl::cli::{self, clpcfg};

fn main() -> std::process::ExitCode {
    let args = clpcfg::Args::parse();
    cli::run("clpcfg", || clpcfg::main(args))
}
