//! Opening a node's XDP data path inside a lab host.

use anyhow::{Context as _, Result};
use cluster_ctl::dataplane::{self, Attachment, Dataplane, ModePreference};

use crate::{Lab, in_netns};

/// Opens (or adopts) the data path of `host` with its pins under the lab's bpffs directory and
/// attaches it to `interfaces` inside the host's namespace.
pub fn open_node(
    lab: &Lab,
    host: &str,
    node_id: u32,
    interfaces: &[&str],
) -> Result<(Dataplane, Vec<Attachment>)> {
    let pin_dir = lab.pin_root().join(host);
    let interfaces: Vec<String> = interfaces.iter().map(|i| (*i).to_owned()).collect();
    let host_name = host.to_owned();
    in_netns(
        lab.ns(host),
        move || -> Result<(Dataplane, Vec<Attachment>)> {
            let mut dataplane = Dataplane::open(&pin_dir, node_id, false)
                .with_context(|| format!("data path of {host_name}"))?;
            let attachments = interfaces
                .iter()
                .map(|i| dataplane.attach(i, ModePreference::Auto))
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("attaching on {host_name}"))?;
            Ok((dataplane, attachments))
        },
    )?
}

/// Interface index of `interface` inside `host`.
pub fn ifindex(lab: &Lab, host: &str, interface: &str) -> Result<u32> {
    let interface = interface.to_owned();
    Ok(in_netns(lab.ns(host), move || {
        dataplane::ifindex(&interface)
    })??)
}
