use clap::Parser as _;
use cluster_ctl::cli::{self, clpstat};

fn main() -> std::process::ExitCode {
    let args = clpstat::Args::parse();
    cli::run("clpstat", || clpstat::main(args))
}
