//! fwcluster's controller: the library behind `fwclusterd`, `clpstat`, `clpgrp` and `clpcfg`.
pub mod config;
pub mod dataplane;
pub mod engine;
pub mod heartbeat;
