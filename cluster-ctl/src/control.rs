//! The local control socket (R-CLI-3): `clpstat` and `clpgrp` talk to the daemon of their node
//! over a Unix socket (`/run/fwcluster/<node>.sock`, mode 0600, peer credentials checked: root
//! or the daemon's own user). One JSON request line, one JSON response line; requests are
//! bounded in size and time so a stuck or hostile client cannot stall the daemon.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{
        fs::PermissionsExt as _,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::mpsc::{self, Sender},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::status::StatusView;

/// The largest request accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Connections served at once by one listener (control socket, peer API); more are closed at
/// once, so a flood of connections cannot exhaust the daemon's threads and memory.
pub const MAX_CONNECTIONS: usize = 64;

/// Counts the connections being served.
#[derive(Clone, Debug, Default)]
pub struct ConnectionSlots(std::sync::Arc<std::sync::atomic::AtomicUsize>);

/// One connection being served; frees its slot when dropped.
#[derive(Debug)]
pub struct Slot(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl ConnectionSlots {
    /// A slot, unless [`MAX_CONNECTIONS`] are taken.
    pub fn take(&self) -> Option<Slot> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.0.fetch_add(1, SeqCst) >= MAX_CONNECTIONS {
            self.0.fetch_sub(1, SeqCst);
            return None;
        }
        Some(Slot(self.0.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
/// How long a client may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the daemon's loop may take to answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupOp {
    Start,
    Stop,
    Move,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    Group {
        op: GroupOp,
        group: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// The same request for the daemon of another server (`-h host`), sent over the peer API.
    Remote {
        host: String,
        inner: Box<Request>,
    },
    /// What connection-tracking helpers did on the sending server: expectations made or
    /// removed, sequence adjustments (session synchronization).
    HelperCopies {
        copies: Vec<crate::sync::helpers::HelperCopy>,
    },
    /// `clpcfg restart`: restart the daemon in place (after an upgrade) without moving
    /// anything. Local only: never taken from the peer API.
    Restart,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Status { view: Box<StatusView> },
    Accepted { message: String },
    Refused { message: String },
    Error { message: String },
}

/// A request waiting for the daemon's loop, with where to send the answer.
#[derive(Debug)]
pub struct Pending {
    pub request: Request,
    pub reply: Sender<Response>,
}

/// The default socket of a node.
pub fn socket_path(run_dir: &Path, node: &str) -> PathBuf {
    run_dir.join(format!("{node}.sock"))
}

/// Answers a request for another server (the peer API client).
pub type Remote = dyn Fn(&str, &Request) -> Result<Response> + Send + Sync;

/// Binds the socket (replacing a stale one) and serves it on a thread; local requests go to
/// `pending`, requests for other servers to `remote`.
pub fn serve(
    path: &Path,
    pending: impl Fn(Pending) -> bool + Send + Sync + 'static,
    remote: Box<Remote>,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        crate::private::private_dir(dir, "run directory")?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let pending = std::sync::Arc::new(pending);
    let remote: std::sync::Arc<Remote> = std::sync::Arc::from(remote);
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let slots = ConnectionSlots::default();
            for stream in listener.incoming().flatten() {
                let Some(slot) = slots.take() else {
                    tracing::warn!(
                        "control socket: {MAX_CONNECTIONS} connections busy, one closed"
                    );
                    continue;
                };
                let pending = pending.clone();
                let remote = remote.clone();
                std::thread::spawn(move || {
                    let _slot = slot;
                    if let Err(e) = handle(stream, &*pending, &*remote) {
                        tracing::debug!(error = format!("{e:#}"), "control request failed");
                    }
                });
            }
        })?;
    Ok(())
}

/// Root and the daemon's own user may talk to it.
fn allowed(stream: &UnixStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(stream, PeerCredentials) {
        Ok(creds) => creds.uid() == 0 || creds.uid() == nix::unistd::geteuid().as_raw(),
        Err(_) => false,
    }
}

fn handle(stream: UnixStream, pending: &dyn Fn(Pending) -> bool, remote: &Remote) -> Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let respond = |writer: &mut UnixStream, response: &Response| -> Result<()> {
        let mut line = serde_json::to_vec(response)?;
        line.push(b'\n');
        writer.write_all(&line)?;
        Ok(())
    };
    if !allowed(&stream) {
        return respond(
            &mut writer,
            &Response::Error {
                message: "permission denied: only root may control fwclusterd".into(),
            },
        );
    }
    let mut line = Vec::new();
    let read = BufReader::new(stream.take(MAX_REQUEST as u64 + 1)).read_until(b'\n', &mut line)?;
    if read > MAX_REQUEST {
        return respond(
            &mut writer,
            &Response::Error {
                message: format!("request larger than {MAX_REQUEST} bytes"),
            },
        );
    }
    let request: Request = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => {
            return respond(
                &mut writer,
                &Response::Error {
                    message: format!("malformed request: {e}"),
                },
            );
        }
    };
    if let Request::Remote { host, inner } = &request {
        let response = remote(host, inner).unwrap_or_else(|e| Response::Error {
            message: format!("{host}: {e:#}"),
        });
        return respond(&mut writer, &response);
    }
    let (reply, answer) = mpsc::channel();
    if !pending(Pending { request, reply }) {
        bail!("daemon loop gone");
    }
    let response = answer
        .recv_timeout(ANSWER_TIMEOUT)
        .unwrap_or(Response::Error {
            message: "the daemon did not answer in time".into(),
        });
    respond(&mut writer, &response)
}

/// Sends one request to the daemon at `path` and returns its response.
pub fn request(path: &Path, request: &Request) -> Result<Response> {
    let mut stream = UnixStream::connect(path).with_context(|| {
        format!(
            "cannot reach fwclusterd at {} (is it running on this node?)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    // The daemon may answer (a refusal) before reading: read the answer even if writing failed.
    let written = stream.write_all(&line);
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("reading the answer of fwclusterd")?;
    if answer.is_empty() {
        written.context("sending the request to fwclusterd")?;
        bail!("fwclusterd closed the connection without an answer");
    }
    serde_json::from_str(&answer).context("malformed answer from fwclusterd")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_run_out_and_come_back() {
        let slots = ConnectionSlots::default();
        let taken: Vec<Slot> = (0..MAX_CONNECTIONS)
            .map(|_| slots.take().unwrap())
            .collect();
        assert!(slots.take().is_none(), "one more than the limit");
        drop(taken);
        assert!(slots.take().is_some());
    }
}
