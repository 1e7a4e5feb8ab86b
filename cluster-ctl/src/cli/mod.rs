//! The operator commands, one module each; the binaries only call `main`.

pub mod clpcfg;
pub mod clpgrp;
pub mod clpstat;
pub mod daemons;
pub mod docs;
pub mod fwclusterd;

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::control::{self, Request, Response};

/// How a command finds the daemon (R-CLI-3).
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// The server to ask (default: this one); reached over the peer API.
    #[arg(short = 'h', long = "host")]
    pub host: Option<String>,
    /// This node's name (default: $FWCLUSTER_NODE, else the short host name).
    #[arg(long)]
    pub node: Option<String>,
    /// Control socket (default: <run-dir>/<node>.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Directory of the control sockets.
    #[arg(long, default_value = "/run/fwcluster")]
    pub run_dir: PathBuf,
}

impl Target {
    pub fn socket(&self) -> Result<PathBuf> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        let node = crate::config::node_name(self.node.as_deref())?;
        Ok(control::socket_path(&self.run_dir, &node))
    }

    pub fn request(&self, request: &Request) -> Result<Response> {
        let request = match &self.host {
            Some(host) => Request::Remote {
                host: host.clone(),
                inner: Box::new(request.clone()),
            },
            None => request.clone(),
        };
        control::request(&self.socket()?, &request)
    }
}

/// Runs a command's body; prints errors as one line `name: message` and exits non-zero.
pub fn run(name: &str, body: impl FnOnce() -> Result<()>) -> std::process::ExitCode {
    match body() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
