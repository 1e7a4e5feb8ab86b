//! `clpstat -s|-n|-i [--json]`: status, interconnect map, configuration (R-CLI-1).

use anyhow::{Result, bail};
use clap::Parser;

use super::Target;
use crate::{
    control::{Request, Response},
    status::{self, StatusView},
};

#[derive(Parser, Debug)]
#[command(
    name = "clpstat",
    version,
    disable_help_flag = true,
    about = "Show the state of the fwcluster cluster"
)]
pub struct Args {
    /// Status of servers, groups and resources (the default).
    #[arg(short = 's', group = "view")]
    pub status: bool,
    /// Interconnect map.
    #[arg(short = 'n', group = "view")]
    pub interconnects: bool,
    /// Configuration.
    #[arg(short = 'i', group = "view")]
    pub info: bool,
    /// Print JSON instead of the screen.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
    /// Print help (-h names a host, as in the seed).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// Fetches the status view from the daemon.
pub fn fetch(target: &Target) -> Result<StatusView> {
    match target.request(&Request::Status)? {
        Response::Status { view } => Ok(*view),
        Response::Error { message } | Response::Refused { message } => bail!("{message}"),
        Response::Accepted { .. } => bail!("unexpected answer"),
    }
}

pub fn main(args: Args) -> Result<()> {
    let view = fetch(&args.target)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    let screen = if args.interconnects {
        status::render_interconnects(&view)
    } else if args.info {
        status::render_config(&view)
    } else {
        status::render_status(&view)
    };
    print!("{screen}");
    Ok(())
}
