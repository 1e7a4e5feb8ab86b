//! Adopting what the previous worker left pinned (R-XDP-4): groups whose lease still runs are
//! taken over as they are, without flapping their addresses, and the epochs continue.

use anyhow::Result;

use super::placement::Placements;
use crate::{catalog, config::Config, dataplane::Dataplane, resources::Answering};
use cluster_engine::{Engine, Instant as EngineInstant};

/// Adopts groups whose pinned lease is still valid into `engine`, and continues the pinned
/// epochs; returns which groups were adopted and what the data path answers for.
pub(super) fn adopt_pinned(
    config: &Config,
    dataplane: &Dataplane,
    engine: &mut Engine,
    placements: &Placements,
) -> Result<(Vec<bool>, Answering)> {
    let now = crate::dataplane::monotonic_ns();
    let answering = Answering::new(config.group.len());
    let mut adopted = vec![false; config.group.len()];
    for (g, adopted) in adopted.iter_mut().enumerate() {
        let Some(lease) = dataplane.lease(g as u32)? else {
            continue;
        };
        engine.seed_epoch(g, lease.epoch);
        if lease.owned != 0 && lease.expires_ns > now {
            *adopted = true;
            let name = &config.group[g].name;
            engine.adopt(
                g,
                lease.epoch,
                EngineInstant::from_nanos(lease.expires_ns),
                placements.contains(name),
            );
            answering.set(g, lease.expires_ns);
            tracing::warn!(
                id = catalog::ADOPTED.id,
                group = name,
                epoch = lease.epoch,
                "adopted a group held by the previous process"
            );
        }
    }
    Ok((adopted, answering))
}
