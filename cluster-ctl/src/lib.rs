//! fwcluster's controller: the library behind `fwclusterd`, `clpstat`, `clpgrp` and `clpcfg`.
pub mod address_table;
pub mod arp_guard;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod flowshare;
pub mod heartbeat;
pub mod incarnation;
pub mod mail;
pub mod mapped;
pub mod metrics;
pub mod netif;
pub mod nft;
pub mod peer;
pub mod private;
pub mod resources;
pub mod status;
pub mod supervisor;
pub mod sync;

#[cfg(test)]
mod module_graph;
