//! The threads around the loop and how they reach it: signals, the heartbeat and resource
//! callbacks, the control socket and peer API, metrics and the tie-breaker probe. Each feeds
//! the loop's one channel ([`Input`]) and nothing else.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        mpsc::{self, Sender},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};

use super::Input;
use crate::{
    config::Config,
    control::{self, Pending},
    heartbeat::{self, wire::Key},
    resources::{self, Reported},
};

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and in every thread started after it, and
/// has one thread wait for them. Call before any other thread starts.
pub(super) fn spawn_signals(inputs: Sender<Input>) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let signals = SigSet::from_iter([Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]);
    signals
        .thread_block()
        .context("blocking SIGTERM/SIGINT/SIGHUP")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(signal) = signals.wait() {
                let input = match signal {
                    Signal::SIGHUP => Input::Reload,
                    _ => Input::Terminate,
                };
                if inputs.send(input).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// Heartbeat packets into the loop.
pub(super) fn heartbeat_deliver(inputs: &Sender<Input>) -> heartbeat::Deliver {
    let inputs = inputs.clone();
    Arc::new(move |inbound| inputs.send(Input::Heartbeat(inbound)).is_ok())
}

/// Resource steps and IP-watch verdicts into the loop.
pub(super) fn resource_deliver(inputs: &Sender<Input>) -> resources::Deliver {
    let inputs = inputs.clone();
    Arc::new(move |reported| {
        let input = match reported {
            Reported::Step(outcome) => Input::Step(outcome),
            Reported::Ipw { group, entry, ok } => Input::Ipw { group, entry, ok },
        };
        inputs.send(input).is_ok()
    })
}

/// A channel for requests (control socket, peer API, metrics) whose every message reaches
/// the loop as [`Input::Control`].
pub(super) fn forward_control(inputs: &Sender<Input>) -> Sender<Pending> {
    let (pending, requests) = mpsc::channel::<Pending>();
    let inputs = inputs.clone();
    std::thread::spawn(move || {
        for request in requests {
            if inputs.send(Input::Control(request)).is_err() {
                return;
            }
        }
    });
    pending
}

/// The peer API on this node's interconnect addresses, and the control socket, which forwards
/// requests for other servers (`-h`) over the peer API.
pub(super) fn serve_control(
    config: &Config,
    me: usize,
    node: &str,
    key: Key,
    run_dir: &Path,
    pending: Sender<Pending>,
) -> Result<()> {
    let api = |n: usize| -> Vec<SocketAddr> {
        config.server[n]
            .interconnect
            .iter()
            .map(|net| SocketAddr::from((net.addr(), config.cluster.api_port)))
            .collect()
    };
    crate::peer::serve(&api(me), key.clone(), pending.clone())?;
    let servers: Vec<(String, Vec<SocketAddr>)> = (0..config.server.len())
        .map(|n| (config.server[n].name.clone(), api(n)))
        .collect();
    let me_name = node.to_owned();
    let local = pending.clone();
    let remote = move |host: &str, request: &control::Request| {
        let Some((_, addresses)) = servers.iter().find(|(name, _)| name == host) else {
            anyhow::bail!("no server named {host}");
        };
        if host == me_name {
            let (reply, answer) = mpsc::channel();
            local
                .send(Pending {
                    request: request.clone(),
                    reply,
                })
                .context("daemon loop gone")?;
            return Ok(answer.recv_timeout(control::ANSWER_TIMEOUT)?);
        }
        crate::peer::request(addresses, &key, &me_name, request)
    };
    control::serve(
        &control::socket_path(run_dir, node),
        move |request| pending.send(request).is_ok(),
        Box::new(remote),
    )
}

/// Sends helpers' state (expectations, sequence adjustments) to the other server's daemon
/// over the peer API.
pub(super) fn send_helper_copies(
    config: &Config,
    me: usize,
    key: Key,
) -> crate::sync::helpers::SendCopies {
    use crate::sync::helpers::NotDelivered;
    // Session synchronization runs between two servers (see `sync::conntrackd_conf`).
    let addresses: Vec<SocketAddr> = config
        .server
        .iter()
        .enumerate()
        .find(|(n, _)| *n != me)
        .map(|(_, server)| {
            server
                .interconnect
                .iter()
                .map(|net| SocketAddr::from((net.addr(), config.cluster.api_port)))
                .collect()
        })
        .unwrap_or_default();
    let node = config.server[me].name.clone();
    Box::new(move |copies| {
        let request = control::Request::HelperCopies { copies };
        match crate::peer::request(&addresses, &key, &node, &request) {
            Ok(control::Response::Accepted { .. }) => Ok(()),
            // Busy (it did not answer in time): asked again later.
            Ok(control::Response::Error { message }) => Err(NotDelivered::Unreachable(message)),
            Ok(other) => Err(NotDelivered::Refused(format!("{other:?}"))),
            Err(e) => Err(NotDelivered::Unreachable(format!("{e:#}"))),
        }
    })
}

/// Probes the tie-breakers in a thread of its own; the verdict reaches the loop as
/// [`Input::Tiebreaker`].
pub(super) fn probe_tiebreakers(targets: Vec<std::net::IpAddr>, inputs: Sender<Input>) {
    std::thread::spawn(move || {
        let reachable = resources::any_reachable(&targets, Duration::from_millis(500));
        let _ = inputs.send(Input::Tiebreaker { reachable });
    });
}
