use clap::Parser as _;
use cluster_ctl::cli::{self, clpgrp};

fn main() -> std::process::ExitCode {
    let args = clpgrp::Args::parse();
    cli::run("clpgrp", || clpgrp::main(args))
}
