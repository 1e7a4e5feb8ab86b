//! Leases, self-fencing and adoption with a real controller process in the seed network.

use std::{
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use cluster_common::{ADDRESS_BUCKETS, AddressKey, address_buckets};
use fwcluster_lab::{
    Lab,
    seed::{self, FWS1, GROUP0_INET_FIP, INET_CLIENT, INET_IF},
};

struct Keeper {
    child: Child,
    ready: String,
}

fn start_keeper(lab: &Lab, interval_ms: u64, lease_ms: u64) -> Keeper {
    let mut child: Child = lab
        .command(FWS1, env!("CARGO_BIN_EXE_xdp-keeper"))
        .args(["--pin-dir"])
        .arg(lab.pin_root().join(FWS1))
        .args([
            "--ifname",
            INET_IF,
            "--address",
            &GROUP0_INET_FIP.to_string(),
        ])
        .args(["--interval-ms", &interval_ms.to_string()])
        .args(["--lease-ms", &lease_ms.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn xdp-keeper");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("ready"), "keeper said {ready:?}");
    Keeper { child, ready }
}

impl Keeper {
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answered(lab: &Lab, target: Ipv4Addr, wait: Duration) -> bool {
    !lab.arp_request(INET_CLIENT, "eth0", target, wait)
        .unwrap()
        .is_empty()
}

#[test]
fn a_killed_controller_answers_until_its_lease_expires_then_falls_silent() {
    let lab = seed::build().unwrap();
    let mut keeper = start_keeper(&lab, 50, 600);
    assert!(keeper.ready.contains("Loaded"), "{}", keeper.ready);
    assert!(answered(&lab, GROUP0_INET_FIP, Duration::from_millis(100)));

    keeper.kill();
    let killed = Instant::now();
    let mut last_answer = None;
    let mut first_silence = None;
    while killed.elapsed() < Duration::from_millis(1500) {
        let sent = killed.elapsed();
        if answered(&lab, GROUP0_INET_FIP, Duration::from_millis(20)) {
            last_answer = Some(sent);
        } else if first_silence.is_none() {
            first_silence = Some(sent);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let last_answer = last_answer.expect("the pinned program kept answering after the kill");
    let first_silence = first_silence.expect("the program fell silent");
    // The lease was last renewed at most one interval (50 ms) before the kill.
    assert!(
        first_silence >= Duration::from_millis(500),
        "fell silent too early: {first_silence:?}"
    );
    assert!(
        last_answer <= Duration::from_millis(620),
        "answered after the lease expired: {last_answer:?}"
    );
}

#[test]
fn a_restarted_controller_adopts_the_pins_with_no_unanswered_request() {
    let lab = seed::build().unwrap();
    let mut keeper = start_keeper(&lab, 20, 1000);
    let ns = lab.ns(INET_CLIENT).to_owned();
    let prober = std::thread::spawn(move || {
        let mut sent = 0;
        let mut unanswered = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1500) {
            let answers = fwcluster_lab::in_netns(&ns, || {
                fwcluster_lab::arp::request("eth0", GROUP0_INET_FIP, Duration::from_millis(30))
            })
            .unwrap()
            .unwrap();
            sent += 1;
            unanswered += usize::from(answers.is_empty());
            std::thread::sleep(Duration::from_millis(5));
        }
        (sent, unanswered)
    });
    std::thread::sleep(Duration::from_millis(300));
    keeper.kill();
    let keeper2 = start_keeper(&lab, 20, 1000);
    assert!(keeper2.ready.contains("Adopted"), "{}", keeper2.ready);
    assert!(
        keeper2.ready.contains("epoch 1 "),
        "kept the epoch: {}",
        keeper2.ready
    );
    assert!(keeper2.ready.contains("link adopted"), "{}", keeper2.ready);
    let (sent, unanswered) = prober.join().unwrap();
    assert!(sent > 20, "only {sent} probes");
    assert_eq!(unanswered, 0, "{unanswered} of {sent} requests unanswered");
}

/// `bpftool -j map <args…>` on the map pinned at `path`, as JSON.
fn bpftool_map(verb: &str, path: &std::path::Path, args: &[String]) -> serde_json::Value {
    let output = Command::new("bpftool")
        .args(["-j", "map", verb, "pinned"])
        .arg(path)
        .args(args)
        .output()
        .expect("bpftool");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("bpftool JSON")
}

/// `bpftool map lookup` of one array element.
fn bpftool_lookup(path: &std::path::Path, index: u32) -> serde_json::Value {
    let mut key = vec!["key".to_owned()];
    key.extend(index.to_le_bytes().iter().map(u8::to_string));
    bpftool_map("lookup", path, &key)
}

fn bpftool_dump(path: &std::path::Path) -> serde_json::Value {
    bpftool_map("dump", path, &[])
}

#[test]
fn bpftool_shows_named_fields_of_the_pinned_maps() {
    let lab = seed::build().unwrap();
    let _keeper = start_keeper(&lab, 50, 5000);
    let pins = lab.pin_root().join(FWS1);

    let leases = bpftool_dump(&pins.join("FWC_LEASES"));
    let formatted = &leases[0]["formatted"];
    assert_eq!(formatted["key"], 0, "{leases}");
    assert_eq!(formatted["value"]["epoch"], 1, "{leases}");
    assert_eq!(formatted["value"]["owned"], 1, "{leases}");
    assert!(formatted["value"]["expires_ns"].as_u64().unwrap() > 0);

    // The address table: find the FIP's bucket in the half in use, as an operator would.
    let node = bpftool_dump(&pins.join("FWC_NODE"));
    let half = node[0]["formatted"]["value"]["address_half"]
        .as_u64()
        .expect("address_half");
    let key = AddressKey {
        ifindex: lab.ifindex(FWS1, INET_IF).unwrap(),
        addr: u32::from_ne_bytes(GROUP0_INET_FIP.octets()),
    };
    let (first, second) = address_buckets(key.word());
    let slot = [first, second]
        .into_iter()
        .flat_map(|bucket| {
            let index = half as u32 * ADDRESS_BUCKETS + bucket;
            let found = bpftool_lookup(&pins.join("FWC_ADDRESSES"), index);
            found["formatted"]["value"]["slots"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|slot| slot["key"]["addr"].as_u64() == Some(u64::from(key.addr)))
        .expect("the FIP in one of its two buckets");
    assert_eq!(
        slot["key"]["ifindex"].as_u64(),
        Some(u64::from(key.ifindex))
    );
    assert_eq!(slot["entry"]["kind"], 1);
    assert_eq!(slot["entry"]["mac"].as_array().map(Vec::len), Some(6));

    assert!(answered(&lab, GROUP0_INET_FIP, Duration::from_millis(100)));
    // The lease in its own element, with named fields.
    let lease = bpftool_lookup(&pins.join("FWC_LEASES"), 0)["formatted"]["value"].clone();
    assert!(
        lease["owned"].as_u64() == Some(1) && lease["expires_ns"].as_u64() > Some(0),
        "{lease}"
    );
    let counters = bpftool_dump(&pins.join("FWC_COUNTERS"));
    let per_cpu = counters[0]["formatted"]["values"]
        .as_array()
        .expect("per-CPU values");
    let replies: u64 = per_cpu
        .iter()
        .map(|v| v["value"]["arp_replies"].as_u64().unwrap())
        .sum();
    assert_eq!(replies, 1, "{counters}");
}
