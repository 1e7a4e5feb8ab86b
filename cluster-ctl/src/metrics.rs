//! The Prometheus endpoint (off by default; `[metrics] listen = "addr:port"`): group state and
//! holder, takeovers by cause, interconnect state, refused packets by reason and the XDP
//! counters, rendered with prometheus-client from the same view `clpstat` shows.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    sync::mpsc::{self, Sender},
    time::Duration,
};

use anyhow::{Context as _, Result};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    control::{Pending, Request, Response},
    status::StatusView,
};

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The metrics of one status view, in the Prometheus text format.
pub fn render(view: &StatusView) -> String {
    let mut registry = Registry::with_prefix("fwcluster");
    let group_state = Family::<Labels, Gauge>::default();
    let server_online = Family::<Labels, Gauge>::default();
    let link_up = Family::<Labels, Gauge>::default();
    let takeovers = Family::<Labels, Counter>::default();
    let rejected = Family::<Labels, Counter>::default();
    let xdp = Family::<Labels, Counter>::default();
    let buckets = Family::<Labels, Gauge>::default();
    let heartbeats = Family::<Labels, Counter>::default();
    let gaps = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    registry.register(
        "group_online",
        "1 when the group is ONLINE on the server (as this node sees it)",
        group_state.clone(),
    );
    registry.register(
        "server_online",
        "1 when the server is ONLINE",
        server_online.clone(),
    );
    registry.register(
        "interconnect_up",
        "1 when heartbeats of the peer arrive on the interconnect",
        link_up.clone(),
    );
    registry.register(
        "takeovers",
        "groups this node took over after a failure, by cause",
        takeovers.clone(),
    );
    registry.register(
        "heartbeat_rejected",
        "heartbeat packets refused, by reason",
        rejected.clone(),
    );
    registry.register(
        "xdp_packets",
        "XDP data-path counters, by kind",
        xdp.clone(),
    );
    registry.register(
        "heartbeats_received",
        "heartbeats received per peer and interconnect (loss: fewer than elapsed / interval)",
        heartbeats.clone(),
    );
    registry.register(
        "heartbeat_max_gap_seconds",
        "longest gap between two heartbeats per peer and interconnect (delay and loss)",
        gaps.clone(),
    );
    registry.register(
        "flowshare_buckets",
        "flow-share buckets owned by this node",
        buckets.clone(),
    );
    for group in &view.groups {
        for (n, server) in view.servers.iter().enumerate() {
            group_state
                .get_or_create(&labels(&[("group", &group.name), ("server", &server.name)]))
                .set(i64::from(group.states[n] == "ONLINE"));
        }
    }
    for (n, server) in view.servers.iter().enumerate() {
        server_online
            .get_or_create(&labels(&[("server", &server.name)]))
            .set(i64::from(server.status == "ONLINE"));
        if n == view.local {
            continue;
        }
        for (link, up) in server.links.iter().enumerate() {
            link_up
                .get_or_create(&labels(&[
                    ("peer", &server.name),
                    ("link", &link.to_string()),
                ]))
                .set(i64::from(*up));
        }
    }
    for (group, causes) in &view.takeovers {
        for (cause, count) in causes {
            takeovers
                .get_or_create(&labels(&[("group", group), ("cause", cause)]))
                .inc_by(*count);
        }
    }
    for (reason, count) in &view.rejected_packets {
        rejected
            .get_or_create(&labels(&[("reason", reason)]))
            .inc_by(*count);
    }
    for (kind, count) in &view.xdp_counters {
        xdp.get_or_create(&labels(&[("kind", kind)])).inc_by(*count);
    }
    for h in &view.heartbeats {
        let l = labels(&[("peer", &h.peer), ("link", &h.link.to_string())]);
        heartbeats.get_or_create(&l).inc_by(h.received);
        gaps.get_or_create(&l).set(h.max_gap_us as f64 / 1e6);
    }
    for (name, owned) in &view.flow_buckets {
        buckets
            .get_or_create(&labels(&[("flowshare", name)]))
            .set(*owned as i64);
    }
    if let Some(sync) = &view.sync {
        register_sync(&mut registry, view, sync);
    }
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String");
    out
}

/// Session synchronization (R-SYNC-5): per server whether its connections are replicated, and
/// conntrackd's counters on this node.
fn register_sync(registry: &mut Registry, view: &StatusView, sync: &crate::status::SyncView) {
    let ok = Family::<Labels, Gauge>::default();
    registry.register(
        "sync_ok",
        "1 when the server's connections are replicated (SYNC OK in clpstat -s)",
        ok.clone(),
    );
    for (n, server) in view.servers.iter().enumerate() {
        ok.get_or_create(&labels(&[("server", &server.name)]))
            .set(i64::from(sync.states[n] == "OK"));
    }
    let entries = Family::<Labels, Gauge>::default();
    registry.register(
        "sync_entries",
        "connection-tracking entries here: kernel (the whole table, peers' included), \
         replicated (this node's, sent to the peers)",
        entries.clone(),
    );
    if let Some(kernel) = sync.kernel_entries {
        entries
            .get_or_create(&labels(&[("table", "kernel")]))
            .set(kernel as i64);
    }
    let Some(stats) = &sync.stats else {
        return;
    };
    entries
        .get_or_create(&labels(&[("table", "replicated")]))
        .set(stats.replicated as i64);
    let received = Family::<Labels, Counter>::default();
    registry.register(
        "sync_received_entries",
        "peers' entry changes written into the kernel table, by operation (failed: refused)",
        received.clone(),
    );
    for (operation, count) in [
        ("created", stats.injected_created),
        ("updated", stats.injected_updated),
        ("destroyed", stats.injected_destroyed),
        ("failed", stats.injected_failed),
    ] {
        received
            .get_or_create(&labels(&[("operation", operation)]))
            .inc_by(count);
    }
    let unacknowledged = Gauge::<i64>::default();
    registry.register(
        "sync_unacknowledged_messages",
        "sync messages sent and not yet acknowledged by the peer (the lag, in messages)",
        unacknowledged.clone(),
    );
    unacknowledged.set(stats.unacknowledged as i64);
    let lost = Counter::<u64>::default();
    registry.register(
        "sync_lost_messages",
        "sync messages from the peer that were lost and asked for again (resends)",
        lost.clone(),
    );
    lost.inc_by(stats.lost_messages);
    let silence = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    registry.register(
        "sync_peer_silence_seconds",
        "since the peer's sync messages last arrived (it sends at least one a second)",
        silence.clone(),
    );
    if let Some(ms) = sync.silent_ms {
        silence.set(ms as f64 / 1000.0);
    }
    let bulk = Gauge::<i64>::default();
    registry.register(
        "sync_last_bulk_sent_timestamp_seconds",
        "when this node last sent its whole table to the peers (takeover, restart, restored link)",
        bulk.clone(),
    );
    if let Some(at) = sync.last_bulk_sent {
        bulk.set(at as i64);
    }
    let claim = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    registry.register(
        "sync_last_claim_seconds",
        "how long the last takeover's claim of the peers' entries took (in the background: \
         the takeover itself adds no time)",
        claim.clone(),
    );
    if let Some(ms) = sync.last_claim_ms {
        claim.set(ms as f64 / 1000.0);
    }
    let refreshed = Counter::<u64>::default();
    registry.register(
        "sync_refreshed_entries",
        "entries of flows this node passes whose copies on the peers were refreshed (a UDP or \
         echo flow reports no change while it carries packets; its copy would expire)",
        refreshed.clone(),
    );
    refreshed.inc_by(sync.refreshed.unwrap_or(0));
    let helper_copies = Family::<Vec<(String, String)>, Counter<u64>>::default();
    registry.register(
        "sync_helper_copies",
        "helpers' state (FTP, SIP expectations; sequence adjustments) replicated by fwclusterd: \
         sent to the peers, written here from them, refused here",
        helper_copies.clone(),
    );
    for (way, count) in [
        ("sent", sync.helper_copies_sent),
        ("written", sync.helper_copies_written),
        ("refused", sync.helper_copies_refused),
    ] {
        helper_copies
            .get_or_create(&vec![("way".to_owned(), way.to_owned())])
            .inc_by(count);
    }
    let scan = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    registry.register(
        "sync_refresh_scan_seconds",
        "how long the last reading of the table for those refreshes took",
        scan.clone(),
    );
    if let Some(ms) = sync.refresh_took_ms {
        scan.set(ms as f64 / 1000.0);
    }
}

/// Reads a request's head up to its blank line (at most 8 KiB) and returns its first line.
/// Reading all of it matters: closing a socket with unread data sends a reset, and a reset
/// makes the client's kernel discard the answer it has not read yet.
fn read_request(stream: &std::net::TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream.take(8 * 1024));
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line.trim_end().is_empty() => break,
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    Some(first)
}

/// Serves `GET /metrics` on `listen`; each scrape asks the daemon's loop for a status view.
pub fn serve(listen: SocketAddr, pending: Sender<Pending>) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("metrics on {listen}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                let Some(request_line) = read_request(&stream) else {
                    continue;
                };
                let response = if !request_line.starts_with("GET /metrics") {
                    "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
                } else {
                    let (reply, answer) = mpsc::channel();
                    if pending.send(Pending { request: Request::Status, reply }).is_err() {
                        return;
                    }
                    let body = match answer.recv_timeout(Duration::from_secs(5)) {
                        Ok(Response::Status { view }) => render(&view),
                        _ => continue,
                    };
                    format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                // One write, then an orderly close: the whole answer is queued before the FIN.
                let mut writer = &stream;
                let _ = writer.write_all(response.as_bytes());
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
        })?;
    Ok(())
}
