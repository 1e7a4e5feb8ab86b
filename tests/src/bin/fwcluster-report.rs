//! `fwcluster-report --input DIR --output DIR`: writes the Markdown report and its SVG plots from
//! what `cargo xtask report` measured in this run (`DIR/*.json` and the benchmarks' own tables in
//! `DIR/*.md`). Nothing here measures; every number comes from the input files.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use clap::Parser;
use plotters::prelude::*;
use serde_json::Value;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    output: PathBuf,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Outage (ms) of every run of one configuration.
fn outages(failover: &Value, key: &str) -> Vec<f64> {
    failover[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|run| run["outage_ms"].as_f64())
        .collect()
}

fn timeline(failover: &Value, key: &str) -> Vec<bool> {
    failover[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_bool)
        .collect()
}

type Plot = Result<(), Box<dyn std::error::Error>>;

/// Outage per run, one series per configuration.
fn plot_outages(path: &Path, series: &[(&str, Vec<f64>, RGBColor)]) -> Plot {
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let runs = series.iter().map(|s| s.1.len()).max().unwrap_or(1).max(1);
    let top = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Client-visible outage per failover run (probes every 1 ms)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0usize..runs, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("run")
        .y_desc("outage (ms)")
        .draw()?;
    for (name, values, color) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(i, v)| (i, *v)),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| Circle::new((i, *v), 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// ns/packet of each program path, as horizontal bars.
fn plot_costs(path: &Path, costs: &[(String, f64)]) -> Plot {
    let root = SVGBackend::new(path, (900, 60 + 34 * costs.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = costs.iter().map(|c| c.1).fold(1.0f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "XDP cost per packet (BPF_PROG_TEST_RUN, ns)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(300)
        .build_cartesian_2d(0f64..top, (0..costs.len()).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(costs.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => costs.get(*i).map(|c| c.0.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("ns/packet")
        .draw()?;
    chart.draw_series(costs.iter().enumerate().map(|(i, (_, ns))| {
        let color = if i == 0 {
            RGBColor(150, 150, 150)
        } else {
            BLUE
        };
        Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (*ns, SegmentValue::Exact(i + 1)),
            ],
            color.mix(0.7).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// Answered (1) / lost (0) probes around the outage of one failover, per system.
fn plot_timeline(path: &Path, series: &[(&str, Vec<bool>, RGBColor)]) -> Plot {
    // A window from 50 ms before the first loss to 50 ms after the last one, over all series.
    let first_loss = series
        .iter()
        .filter_map(|s| s.1.iter().position(|a| !a))
        .min()
        .unwrap_or(0);
    let last_loss = series
        .iter()
        .filter_map(|s| s.1.iter().rposition(|a| !a))
        .max()
        .unwrap_or(0);
    let start = first_loss.saturating_sub(50);
    let end = (last_loss + 50).min(series.iter().map(|s| s.1.len()).max().unwrap_or(0));
    let root = SVGBackend::new(path, (900, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Probes answered during one failover (1 = answered, 1 ms apart)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(40)
        .build_cartesian_2d(
            start..end.max(start + 1),
            -0.2f64..(series.len() as f64 * 1.5),
        )?;
    chart
        .configure_mesh()
        .x_desc("probe (ms since the probes started)")
        .disable_y_mesh()
        .y_labels(0)
        .draw()?;
    for (row, (name, answered, color)) in series.iter().enumerate() {
        let base = row as f64 * 1.5;
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                (start..end.min(answered.len()))
                    .map(|i| (i, base + if answered[i] { 1.0 } else { 0.0 })),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot(result: Plot, what: &str) -> Result<()> {
    result.map_err(|e| anyhow::anyhow!("plotting {what}: {e}"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    fs::create_dir_all(&args.output)?;
    let meta = read_json(&args.input.join("meta.json"))?;
    let failover = read_json(&args.input.join("failover.json"))?;
    let costs = read_json(&args.input.join("xdp.json"))?;
    let chaos = read_json(&args.input.join("chaos.json"))?;

    let keepalived = outages(&failover, "keepalived");
    plot(
        plot_outages(
            &args.output.join("outage-per-run.svg"),
            &[
                (
                    "keepalived 2.2.7, advert_int 0.01, priorities 254/253",
                    keepalived,
                    RED,
                ),
                (
                    "fwcluster group mode, 10 ms / 30 ms",
                    outages(&failover, "fwcluster_group"),
                    BLUE,
                ),
                (
                    "fwcluster flow share, 10 ms / 30 ms",
                    outages(&failover, "fwcluster_flowshare"),
                    GREEN,
                ),
                (
                    "fwcluster group mode, 1 ms / 5 ms, real-time priority",
                    outages(&failover, "moonshot_1ms"),
                    MAGENTA,
                ),
                (
                    "fwcluster group mode, 1 ms / 5 ms, normal scheduling",
                    outages(&failover, "moonshot_1ms_normal"),
                    CYAN,
                ),
                (
                    "keepalived 2.2.7 for IPv6, advert_int 0.01, priorities 254/253",
                    outages(&failover, "keepalived_ipv6"),
                    RGBColor(230, 140, 0),
                ),
                (
                    "fwcluster group mode, IPv6 gateway, 10 ms / 30 ms",
                    outages(&failover, "fwcluster_group_ipv6"),
                    RGBColor(0, 90, 0),
                ),
            ],
        ),
        "outages",
    )?;
    let costs: Vec<(String, f64)> = costs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["path"].as_str()?.to_owned(), c["ns"].as_f64()?)))
        .collect();
    plot(
        plot_costs(&args.output.join("xdp-cost.svg"), &costs),
        "packet costs",
    )?;
    plot(
        plot_timeline(
            &args.output.join("failover-timeline.svg"),
            &[
                (
                    "keepalived",
                    timeline(&failover, "timeline_keepalived"),
                    RED,
                ),
                (
                    "fwcluster group mode",
                    timeline(&failover, "timeline_fwcluster"),
                    BLUE,
                ),
            ],
        ),
        "timeline",
    )?;

    let mut faults = String::new();
    for (kind, count) in chaos["faults"].as_object().into_iter().flatten() {
        faults.push_str(&format!("| {kind} | {count} |\n"));
    }
    let chaos_result = match chaos["failure"].as_str() {
        None => format!(
            "**All {} iterations passed** (seed {}, {:.0} s wall time).",
            chaos["iterations"],
            chaos["seed"],
            chaos["wall_seconds"].as_f64().unwrap_or(0.0)
        ),
        Some(failure) => format!(
            "**FAILED** (seed {}): replay with the command below.\n\n```\n{failure}\n```",
            chaos["seed"]
        ),
    };
    let report = format!(
        r#"# fwcluster measured report

Generated by `cargo xtask report` on {date} (kernel {kernel}, {cpus} CPUs). Every number and plot
below comes from one run of each benchmark, started by that command (a section that was measured
at another time says when); the tables are the benchmarks' own output.

## Failover: client-visible outage, side by side with keepalived

A client probes the gateway address and a host behind it every millisecond on a fixed schedule,
each stream with its own socket and ICMP identifier, a reply counting only from the address
asked; the outage is the longest run of unanswered probes of the worse stream when the active
firewall loses every link. The configurations run interleaved, one run of each per round. The
anchor is keepalived at its fastest (VRRPv3, advert_int 0.01, priorities 254/253, one
gratuitous ARP like fwcluster); the common 150/100 is shown for context (its backup waits 156/256
of an advert longer). At the same detection time both face the same physics, so the 10 ms rows
can at best tie; the part that is an implementation's own is the *takeover overhead*: from the
survivor's decision that its peer is dead (its log line; keepalived: its transition to MASTER,
stamped on arrival) to the first answered probe, on the same clock. keepalived cannot advertise
faster than every 10 ms; fwcluster's 1 ms / 5 ms rows show what shorter heartbeats give, once
with real-time priority (as an operator would run them) and once with normal scheduling. The
IPv6 rows (R-V6-4) run on the dual-stack seed network and probe the IPv6 gateway and a host
behind it: fwcluster answering Neighbor Discovery in XDP, keepalived's VRRPv3 for IPv6 with a
link-local virtual address first, as keepalived asks. Not
shown: loaded machines, networks with real latency, and the variance of other virtual
machines (all numbers come from one two-CPU VM, whose hypervisor steal is reported with the
soaks).

![outage per run](outage-per-run.svg)

![one failover](failover-timeline.svg)

{failover_table}

The soaks run a 1 ms / 5 ms cluster with nothing failing, four times: real-time priority and
normal scheduling, each on an idle machine and with both cores kept busy by two spinning
processes. An OFFLINE declaration or a takeover is false unless the silent daemon itself
reported, in its own log, that it had not been scheduled for a span covering the silence
(FWC013, with how long); those are counted apart, as the machine's: a daemon that does not run
for longer than the heartbeat timeout is, to its peer, indistinguishable from a dead one, for
any heartbeat protocol. The hypervisor's steal during each soak says how much the VM itself
was stopped.

## Session synchronization: connections through a change of the active firewall

`cargo xtask bench sessions` (run {sessions_date}; its own command prints the same tables).
First conntrackd alone, as fwcluster configures
it, in its two ways of holding the peer's entries: the table filled with N NAT'd UDP flows,
then probe flows at a steady rate whose lag (created on the active node, present on the peer)
is read on the peer; what a takeover must wait for; conntrackd's memory. Then, on the seed
network with the example firewall (forward default drop, hide NAT, strict TCP tracking), 1,000
long-lived TCP connections and 100 UDP flows plus probe streams through node loss, a planned
move and the move back, side by side: no synchronization, keepalived 2.2.7 with conntrackd
driven by conntrack-tools' own `primary-backup.sh` (the anchor), and fwcluster. After each
event the server speaks first on every connection. Not shown: bulk throughput during the
event, expectations (FTP, SIP) in the connection table, more than two servers.

{sessions_table}

## Data path cost

![cost per packet](xdp-cost.svg)

{xdp_table}

## Chaos: random faults on real daemons

Real daemons at 10 ms / 30 ms (real-time priority 10, as the daemon's pause warning FWC013
recommends for timeouts this short), one fault per iteration from a catalog of 17 kinds drawn from a
seed. For the whole of every fault, a watch on each client segment asks for every cluster address
every millisecond (in turn) and records every reply and gratuitous ARP: an iteration fails if two
MACs claim one address within 10 ms (except in a partition without tie-breakers, where both sides
running every group is the specification's choice) or if an address goes unanswered longer than
the fault's takeover bound (100 ms for failures that heartbeats detect, 600 ms for IP-watch
failures, 300 ms for a killed monitored process, 1.5 s for a move onto a hung start script; on
the intranet none when the fault impairs the holder's intranet link, the second interconnect,
which the seed configuration does not watch), and after every fault an audit checks holders,
DENY marks, mails, descriptors and memory.

{chaos_result}

| fault | iterations |
| --- | ---: |
{faults}
Takeovers after a failure: {takeovers}; takeover mails received: {mails}. Largest growth of a
daemon process between audits: {fds} file descriptors, {rss} KiB RSS. Machine disturbances:
{machine_moves}. These are a group that moved or a peer declared OFFLINE although nothing
should move, or an address unanswered past its bound (up to 1 s), while a daemon reported in its
own log that it had not been scheduled (FWC013). Liveness is promised to daemons that run. A
move or gap that no such report explains fails the run. The safety watch (two MACs for one
address) applies to every fault without exception.
"#,
        date = meta["date"].as_str().unwrap_or_default(),
        kernel = meta["kernel"].as_str().unwrap_or_default(),
        cpus = meta["cpus"],
        failover_table = read_text(&args.input.join("failover.md"))?.trim(),
        xdp_table = read_text(&args.input.join("xdp.md"))?.trim(),
        sessions_table = read_text(&args.input.join("sessions.md"))?.trim(),
        sessions_date = fs::metadata(args.input.join("sessions.md"))
            .and_then(|m| m.modified())
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default(),
        takeovers = chaos["takeovers"],
        mails = chaos["takeover_mails"],
        fds = chaos["max_fd_growth"],
        rss = chaos["max_rss_growth_kib"],
        machine_moves = chaos["machine_moves"],
    );
    let path = args.output.join("README.md");
    fs::write(&path, report)?;
    println!("report: {}", path.display());
    Ok(())
}
