//! `clpgrp -s|-t|-m [-g group]`: start, stop and move groups (R-CLI-2); waits until the action
//! completed or failed, and says which.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;

use super::{Target, clpstat::fetch};
use crate::control::{GroupOp, Request, Response};

#[derive(Parser, Debug)]
#[command(
    name = "clpgrp",
    version,
    disable_help_flag = true,
    about = "Start, stop or move fwcluster groups",
    group(clap::ArgGroup::new("op").required(true).args(["start", "stop", "move"]))
)]
pub struct Args {
    /// Start the group here (fails if it runs anywhere); clears STARTING=DENY here.
    #[arg(short = 's')]
    pub start: bool,
    /// Stop the group here (fails if it does not run here).
    #[arg(short = 't')]
    pub stop: bool,
    /// Move the group from here to the next server of its policy (or --to).
    #[arg(short = 'm')]
    pub r#move: bool,
    /// The group (default: every group).
    #[arg(short = 'g')]
    pub group: Option<String>,
    /// Target server of a move.
    #[arg(long)]
    pub to: Option<String>,
    /// How long to wait for the action to complete.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    #[command(flatten)]
    pub target: Target,
    /// Print help (-h names a host, as in the seed).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

pub fn main(args: Args) -> Result<()> {
    let op = if args.start {
        GroupOp::Start
    } else if args.stop {
        GroupOp::Stop
    } else {
        GroupOp::Move
    };
    let view = fetch(&args.target)?;
    let here = view.servers[view.local].name.clone();
    let groups: Vec<String> = match &args.group {
        Some(g) => vec![g.clone()],
        None => view.groups.iter().map(|g| g.name.clone()).collect(),
    };
    let mut failures = Vec::new();
    for group in groups {
        let response = args.target.request(&Request::Group {
            op,
            group: group.clone(),
            to: args.to.clone(),
        })?;
        match response {
            Response::Accepted { .. } => match wait(&args, op, &group, &here) {
                Ok(message) => println!("clpgrp: {message}"),
                Err(e) => failures.push(format!("{e:#}")),
            },
            Response::Refused { message } | Response::Error { message } => failures.push(message),
            Response::Status { .. } => failures.push("unexpected answer".into()),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\nclpgrp: "));
    }
    Ok(())
}

/// Polls the daemon until the group reached the state the command asks for.
fn wait(args: &Args, op: GroupOp, group: &str, here: &str) -> Result<String> {
    let deadline = Instant::now() + args.wait;
    // A move whose activation fails on the target comes back here (FAILOVER recovery).
    let mut left_here = false;
    loop {
        let view = fetch(&args.target)?;
        let Some(g) = view.groups.iter().find(|g| g.name == group) else {
            bail!("{group} disappeared");
        };
        let local = view.local;
        let online_on = |n: usize| g.states[n] == "ONLINE";
        match op {
            GroupOp::Start if online_on(local) => return Ok(format!("{group} started on {here}")),
            GroupOp::Stop if g.states[local] == "OFFLINE" => {
                return Ok(format!("{group} stopped on {here}"));
            }
            GroupOp::Move => {
                if let Some(n) = (0..view.servers.len()).find(|n| *n != local && online_on(*n)) {
                    return Ok(format!(
                        "{group} moved from {here} to {}",
                        view.servers[n].name
                    ));
                }
                if !online_on(local) {
                    left_here = true;
                } else if left_here {
                    bail!(
                        "{group} could not be activated on the target and is back on {here}; see the log (FWC302)"
                    );
                }
            }
            _ => {}
        }
        if g.states[local] == "ERROR" {
            bail!("{group} failed on {here} (ERROR); see the log (FWC203, FWC302)");
        }
        if Instant::now() > deadline {
            bail!(
                "{group} did not complete within {} (now {} here)",
                humantime::format_duration(args.wait),
                g.states[local]
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
