//! The peer API (R-CLI-3): `clpstat -h`/`clpgrp -h` reach another node's daemon over TCP on the
//! API port of its interconnect addresses. Every exchange is authenticated with the cluster key
//! and bound to a fresh challenge, so a recorded request cannot be replayed:
//!
//! 1. server → client: `{"challenge": "<32 hex>"}`
//! 2. client → server: `{"node": "fws2", "request": {...}, "tag": HMAC(key, challenge, node, request)}`
//! 3. server → client: `{"response": {...}, "tag": HMAC(key, challenge, "response", response)}`
//!
//! Lines are bounded in size and every read has a timeout, so a slow or hostile client cannot
//! stall the daemon.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::mpsc::{self, Sender},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    control::{MAX_REQUEST, Pending, Request, Response},
    heartbeat::wire::Key,
};

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct Challenge {
    challenge: String,
}

#[derive(Serialize, Deserialize)]
struct SignedRequest {
    node: String,
    request: Request,
    tag: String,
}

#[derive(Serialize, Deserialize)]
struct SignedResponse {
    response: Response,
    tag: String,
}

fn tag(key: &Key, parts: &[&[u8]]) -> String {
    let mut data = Vec::new();
    for part in parts {
        data.extend_from_slice(&(part.len() as u32).to_be_bytes());
        data.extend_from_slice(part);
    }
    hex::encode(key.tag(&data))
}

fn verify(key: &Key, parts: &[&[u8]], tag_hex: &str) -> bool {
    let Ok(tag) = hex::decode(tag_hex) else {
        return false;
    };
    let mut data = Vec::new();
    for part in parts {
        data.extend_from_slice(&(part.len() as u32).to_be_bytes());
        data.extend_from_slice(part);
    }
    key.verify(&data, &tag)
}

fn read_line(stream: &TcpStream) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    let read = BufReader::new(stream.take(MAX_REQUEST as u64 + 1)).read_until(b'\n', &mut line)?;
    if read > MAX_REQUEST {
        bail!("line longer than {MAX_REQUEST} bytes");
    }
    if read == 0 {
        bail!("connection closed");
    }
    Ok(line)
}

fn write_json(mut stream: &TcpStream, value: &impl Serialize) -> Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    Ok(())
}

/// Serves the API on `addresses`; authenticated requests go to `pending` (the daemon's loop).
pub fn serve(addresses: &[SocketAddr], key: Key, pending: Sender<Pending>) -> Result<()> {
    let slots = crate::control::ConnectionSlots::default();
    for address in addresses {
        let slots = slots.clone();
        let listener =
            TcpListener::bind(address).with_context(|| format!("peer API on {address}"))?;
        let key = key.clone();
        let pending = pending.clone();
        std::thread::Builder::new()
            .name("peer-api".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let Some(slot) = slots.take() else {
                        tracing::warn!(
                            id = crate::catalog::PACKET_REJECTED.id,
                            peer = ?stream.peer_addr().ok(),
                            "peer API: {} connections busy, one closed",
                            crate::control::MAX_CONNECTIONS
                        );
                        continue;
                    };
                    let key = key.clone();
                    let pending = pending.clone();
                    std::thread::spawn(move || {
                        let _slot = slot;
                        if let Err(e) = handle(&stream, &key, &pending) {
                            tracing::warn!(
                                id = crate::catalog::PACKET_REJECTED.id,
                                peer = ?stream.peer_addr().ok(),
                                error = format!("{e:#}"),
                                "peer API request refused"
                            );
                            let _ = write_json(
                                &stream,
                                &SignedResponse {
                                    response: Response::Error {
                                        message: format!("{e:#}"),
                                    },
                                    tag: String::new(),
                                },
                            );
                        }
                    });
                }
            })?;
    }
    Ok(())
}

fn handle(stream: &TcpStream, key: &Key, pending: &Sender<Pending>) -> Result<()> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut challenge = [0u8; 16];
    {
        use rand::TryRngCore as _;
        rand::rngs::OsRng.try_fill_bytes(&mut challenge)?;
    }
    let challenge = hex::encode(challenge);
    write_json(
        stream,
        &Challenge {
            challenge: challenge.clone(),
        },
    )?;
    let line = read_line(stream)?;
    let signed: SignedRequest = serde_json::from_slice(&line).context("malformed request")?;
    let request_json = serde_json::to_vec(&signed.request)?;
    if !verify(
        key,
        &[challenge.as_bytes(), signed.node.as_bytes(), &request_json],
        &signed.tag,
    ) {
        bail!("authentication failed (wrong key, or a replayed request)");
    }
    if matches!(signed.request, Request::Remote { .. }) {
        bail!("requests are not forwarded twice");
    }
    if matches!(signed.request, Request::Restart) {
        bail!("a restart is asked for on the server itself (clpcfg restart)");
    }
    let (reply, answer) = mpsc::channel();
    pending
        .send(Pending {
            request: signed.request,
            reply,
        })
        .context("daemon loop gone")?;
    let response = answer
        .recv_timeout(crate::control::ANSWER_TIMEOUT)
        .unwrap_or(Response::Error {
            message: "the daemon did not answer in time".into(),
        });
    let response_json = serde_json::to_vec(&response)?;
    let tag = tag(key, &[challenge.as_bytes(), b"response", &response_json]);
    write_json(stream, &SignedResponse { response, tag })
}

/// Sends `request` to a peer's API, trying its interconnect addresses in order.
pub fn request(
    addresses: &[SocketAddr],
    key: &Key,
    node: &str,
    request: &Request,
) -> Result<Response> {
    let mut errors = Vec::new();
    for address in addresses {
        match request_one(*address, key, node, request) {
            Ok(response) => return Ok(response),
            Err(e) => errors.push(format!("{address}: {e:#}")),
        }
    }
    bail!("no interconnect address answered: {}", errors.join("; "))
}

fn request_one(address: SocketAddr, key: &Key, node: &str, request: &Request) -> Result<Response> {
    let stream = TcpStream::connect_timeout(&address, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let challenge: Challenge = serde_json::from_slice(&read_line(&stream)?)?;
    let request_json = serde_json::to_vec(request)?;
    let signed = SignedRequest {
        node: node.to_owned(),
        request: request.clone(),
        tag: tag(
            key,
            &[
                challenge.challenge.as_bytes(),
                node.as_bytes(),
                &request_json,
            ],
        ),
    };
    write_json(&stream, &signed)?;
    let answer: SignedResponse = serde_json::from_slice(&read_line(&stream)?)?;
    if let Response::Error { message } = &answer.response
        && answer.tag.is_empty()
    {
        bail!("{message}");
    }
    let response_json = serde_json::to_vec(&answer.response)?;
    if !verify(
        key,
        &[challenge.challenge.as_bytes(), b"response", &response_json],
        &answer.tag,
    ) {
        bail!("the answer is not authenticated");
    }
    Ok(answer.response)
}
