//! `fwlab`: brings the seed network up and keeps it until stdin closes (or the process is
//! killed; the next lab removes the leftovers). For poking at the lab by hand, e.g.
//! `ip netns exec <prefix>-fws1 bash`, and for the cleanup tests.

use std::io::Read as _;

fn main() -> anyhow::Result<()> {
    let lab = fwcluster_lab::seed::build()?;
    println!("ready {}", lab.prefix());
    for ns in lab.namespaces() {
        println!("namespace {ns}");
    }
    // Stays up until stdin reaches EOF.
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    Ok(())
}
