//! fwcluster's controller: the library behind `fwclusterd`, `clpstat`, `clpgrp` and `clpcfg`.
pub mod catalog;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod engine;
pub mod heartbeat;
pub mod resources;
