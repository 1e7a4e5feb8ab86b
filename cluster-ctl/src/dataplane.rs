//! The user side of the XDP data path: load, attach, pin, adopt, and update ownership.
//!
//! Everything lives under one pin directory, `/sys/fs/bpf/<cluster>/<node>/` (R-XDP-3):
//! - one pin per map (named as in [`cluster_common::map_name`]), with BTF so bpftool shows fields;
//! - `prog` — the XDP program, so that a restarted controller can attach more interfaces;
//! - `link_<ifname>_<native|generic>` — one pinned bpf_link per attached interface, which keeps
//!   the program attached while no controller runs (R-XDP-4).
//!
//! A controller that finds the pins adopts them (blixt-style) instead of reloading, so a restart
//! neither detaches the program nor clears ownership. Takeover of a group is one lease update,
//! however many addresses the group has (R-XDP-6).

use std::{
    collections::BTreeMap,
    fs, io,
    os::fd::AsFd,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, MapError, MapInfo, PerCpuArray, PerCpuValues},
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
    },
};
use aya_obj::programs::XdpAttachType;
use cluster_common::{
    ABI_VERSION, ADDRESS_TABLE_BUCKETS, ADDRESS6_TABLE_BUCKETS, Address6Bucket, AddressBucket,
    AddressEntry, AddressHits, AddressKey, AddressKey6, BucketOwner, Counters, FLOW_TABLES_SECTION,
    FLOW_TABLES_SYMBOL, FlowShare, FlowShareTables, Lease, LeaseRefusal, MAX_BUCKETS,
    MAX_FLOWSHARE_INTERFACES, MAX_FLOWSHARES, MAX_LEASES, NodeConfig, PROGRAM_NAME, map_name,
};

use crate::{
    address_table::{self, Ipv4Table, Ipv6Table, LayoutError, Table},
    mapped::MappedArray,
};

/// The eBPF object built by `build.rs` from `cluster-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cluster-ebpf"));

/// Where bpffs is expected.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Errors of the data path, each naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("bpffs is not mounted at {BPFFS} and mounting it failed: {0}")]
    Bpffs(nix::Error),
    #[error("cannot create pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a bpffs mount, so the data path's pins would die with fwclusterd: mount \
         bpffs there in the host's mount namespace (`mount -t bpf bpf {path}`; systemd and `cargo \
         xtask setup` do), and start the daemon in a network namespace with `nsenter \
         --net=/run/netns/NAME fwclusterd …` (`ip netns exec` mounts a fresh /sys without \
         it), or pass --pin-root a bpffs mounted outside /sys"
    )]
    NotBpffs { path: PathBuf },
    #[error("{action} the pin directory {path}: {source}")]
    PinDirLock {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "another fwclusterd already runs node {node} (it holds {path}): stop it first (one \
         daemon per node)"
    )]
    NodeTaken { node: String, path: PathBuf },
    #[error("loading the XDP object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {PROGRAM_NAME}: {0}")]
    Program(#[from] ProgramError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("pinned link {path}: {source}")]
    Link { path: PathBuf, source: LinkError },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("interface {0} does not exist")]
    UnknownInterface(String),
    #[error("interface {ifname}: native XDP failed ({native}) and generic XDP failed ({generic})")]
    Attach {
        ifname: String,
        native: Box<ProgramError>,
        generic: Box<ProgramError>,
    },
    #[error(
        "lease slot {slot}: renewal names epoch {requested} but the slot is at epoch {current}; \
         the group has moved on"
    )]
    StaleEpoch {
        slot: u32,
        requested: u64,
        current: u64,
    },
    #[error("lease slot {slot}: new epoch {requested} is not above the current epoch {current}")]
    EpochNotIncreasing {
        slot: u32,
        requested: u64,
        current: u64,
    },
    #[error("lease slot {slot} is out of range (at most {MAX_LEASES} slots)")]
    LeaseSlot { slot: u32 },
    #[error("lease slot {slot} is not owned here")]
    NotOwned { slot: u32 },
    #[error("lease slot {slot} has expired; it can only be acquired anew under a new epoch")]
    Expired { slot: u32 },
    #[error(
        "flow-share table {table} with {buckets} buckets is out of range (at most {MAX_FLOWSHARES} tables of {MAX_BUCKETS} buckets)"
    )]
    BucketRange { table: u32, buckets: usize },
    #[error(
        "flow share on interface index {ifindex} collides with interface index {other} \
         (slot ifindex % {MAX_FLOWSHARE_INTERFACES}); use another interface or rename"
    )]
    FlowShareSlot { ifindex: u32, other: u32 },
    #[error("address table: {0}")]
    AddressTable(#[from] LayoutError),
    #[error(
        "{path} was pinned by another fwcluster build ({found}; this build expects {expected}); \
         stop fwclusterd and remove the node's pins with `clpcfg uninstall` (the node stops \
         answering for its addresses until fwclusterd starts again)"
    )]
    IncompatiblePin {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("the XDP object cannot be parsed: {0}")]
    Object(aya_obj::ParseError),
    #[error("the XDP object has no map {name}")]
    MissingMap { name: &'static str },
    #[error("mapping {path}: {source}")]
    MapArray { path: PathBuf, source: io::Error },
    #[error("kernel log: {0}")]
    KernelLog(String),
    #[error("removing pins in {path}: {source}")]
    Unpin { path: PathBuf, source: io::Error },
}

impl DataplaneError {
    /// The error for a lease operation the lease model refuses on `slot`.
    pub fn refused(slot: u32, refusal: LeaseRefusal) -> Self {
        match refusal {
            LeaseRefusal::EpochNotIncreasing { requested, current } => Self::EpochNotIncreasing {
                slot,
                requested,
                current,
            },
            LeaseRefusal::StaleEpoch { requested, current } => Self::StaleEpoch {
                slot,
                requested,
                current,
            },
            LeaseRefusal::NotOwned => Self::NotOwned { slot },
            LeaseRefusal::Expired => Self::Expired { slot },
        }
    }
}

type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// How the program runs on an interface (R-XDP-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Driver (native) XDP.
    Native,
    /// Generic (SKB) XDP.
    Generic,
}

impl AttachMode {
    fn pin_suffix(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }

    pub fn as_str(self) -> &'static str {
        self.pin_suffix()
    }
}

/// Which attach mode to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ModePreference {
    /// Native where the driver supports it and delivers `XDP_TX`, generic otherwise.
    #[default]
    Auto,
    Native,
    Generic,
}

/// Whether [`Dataplane::open`] loaded a new object or adopted pinned state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Loaded,
    Adopted,
}

/// One interface the program is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub ifname: String,
    pub mode: AttachMode,
    /// True when the link was found pinned (left by an earlier controller).
    pub adopted: bool,
}

/// Handles on the pinned maps and program of one node.
pub struct Dataplane {
    pin_dir: PathBuf,
    origin: Origin,
    program: Xdp,
    /// `FWC_ADDRESSES`, mapped only while it is read or written: 8 MiB of table would
    /// otherwise count as the daemon's resident memory (all of it under `mlockall`).
    address_table: MapData,
    /// `FWC_ADDR6`, mapped likewise only while it is read or written.
    address6_table: MapData,
    /// What the half in use holds, of each table.
    addresses: BTreeMap<AddressKey, AddressEntry>,
    addresses6: BTreeMap<AddressKey6, AddressEntry>,
    node_config: NodeConfig,
    /// `FWC_LEASES`, mapped: fields are written one store at a time.
    leases: MappedArray<Lease>,
    /// `FWC_FLOW`, mapped (its single value).
    flow: MappedArray<FlowShareTables>,
    node: Array<MapData, NodeConfig>,
    counters: PerCpuArray<MapData, Counters>,
    hits: PerCpuArray<MapData, AddressHits>,
}

/// Mounts bpffs at [`BPFFS`] unless it is mounted already.
pub fn ensure_bpffs() -> Result<()> {
    if is_bpffs(Path::new(BPFFS)) {
        return Ok(());
    }
    let _ = fs::create_dir_all(BPFFS);
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(DataplaneError::Bpffs)
}

/// Checks that `pin_root` can hold pins that outlive the daemon: a bpffs that is already
/// mounted. The daemon never mounts one itself: under `ip netns exec` (a mount namespace of its
/// own, with a fresh /sys) that mount, and with it every pin and the XDP link, would die with
/// the process, and the kernel would answer ARP for the floating addresses beside the node
/// that took over.
pub fn check_pin_root(pin_root: &Path) -> Result<()> {
    if is_bpffs(pin_root) {
        return Ok(());
    }
    Err(DataplaneError::NotBpffs {
        path: pin_root.to_owned(),
    })
}

/// The claim of one daemon on one node's pins, held for the daemon's life: a second
/// `fwclusterd` for the same node would adopt the first one's pins and fight over them.
#[derive(Debug)]
pub struct NodeLock {
    _directory: std::os::fd::OwnedFd,
}

impl NodeLock {
    /// Locks `pin_dir` (created if missing) or says who holds it.
    pub fn take(pin_dir: &Path, node: &str) -> Result<Self> {
        use std::os::fd::{AsRawFd as _, OwnedFd};
        let failed = |action, source| DataplaneError::PinDirLock {
            action,
            path: pin_dir.to_owned(),
            source,
        };
        fs::create_dir_all(pin_dir).map_err(|e| failed("creating", e))?;
        let directory: OwnedFd = fs::File::open(pin_dir)
            .map_err(|e| failed("opening", e))?
            .into();
        // A daemon restarted at once (SIGKILL, then start) can find the lock still held by the
        // previous worker, which the kernel is still tearing down: that is waited out for a
        // moment, as the heartbeat sockets are; a daemon that really runs keeps it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        // SAFETY: flock on a descriptor this function owns.
        while unsafe { libc::flock(directory.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK)
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            }
            return Err(if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                DataplaneError::NodeTaken {
                    node: node.to_owned(),
                    path: pin_dir.to_owned(),
                }
            } else {
                failed("locking", error)
            });
        }
        Ok(Self {
            _directory: directory,
        })
    }
}

fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// The pin directory of one node of one cluster.
pub fn pin_dir(cluster: &str, node: &str) -> PathBuf {
    Path::new(BPFFS).join(cluster).join(node)
}

/// CLOCK_MONOTONIC now, in the time base of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// Maps the pinned mmapable array `name` (open as `map`) of `len` elements.
fn map_array<T: Copy>(
    pin_dir: &Path,
    name: &'static str,
    map: &MapData,
    len: u32,
) -> Result<MappedArray<T>> {
    MappedArray::map(map.fd().as_fd(), len as usize).map_err(|source| DataplaneError::MapArray {
        path: pin_dir.join(name),
        source,
    })
}

/// Opens the pinned mmapable array `name` and maps its `len` elements; the mapping keeps the
/// map alive, so the handle is not kept.
fn map_pinned_array<T: Copy>(
    pin_dir: &Path,
    name: &'static str,
    len: u32,
) -> Result<MappedArray<T>> {
    let map = MapData::from_pin(pin_dir.join(name)).map_err(map_err(name))?;
    map_array(pin_dir, name, &map, len)
}

fn map_table(pin_dir: &Path, table: &MapData) -> Result<MappedArray<AddressBucket>> {
    map_array(pin_dir, map_name::ADDRESSES, table, ADDRESS_TABLE_BUCKETS)
}

fn map_table6(pin_dir: &Path, table: &MapData) -> Result<MappedArray<Address6Bucket>> {
    map_array(pin_dir, map_name::ADDRESSES6, table, ADDRESS6_TABLE_BUCKETS)
}

/// Refuses maps pinned in `pin_dir` by a build with other layouts: a map whose key or value
/// size, number of entries or flags differ from this build's object. Adopting one would let the
/// program and the controller read each other's fields wrongly, and loading over it fails in the
/// verifier with a message that names neither the map nor the remedy.
fn check_pinned_maps(pin_dir: &Path) -> Result<()> {
    let object = aya_obj::Object::parse(OBJECT).map_err(DataplaneError::Object)?;
    if !object.maps.contains_key(FLOW_TABLES_SECTION) {
        return Err(DataplaneError::MissingMap {
            name: FLOW_TABLES_SECTION,
        });
    }
    for name in map_name::ALL {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(map_err(name))?;
        let expected = object
            .maps
            .get(name)
            .ok_or(DataplaneError::MissingMap { name })?;
        let shape = |key: u32, value: u32, entries: u32, flags: u32| {
            format!("key {key} B, value {value} B, {entries} entries, flags {flags:#x}")
        };
        let found = shape(
            info.key_size(),
            info.value_size(),
            info.max_entries(),
            info.map_flags(),
        );
        let expected = shape(
            expected.key_size(),
            expected.value_size(),
            expected.max_entries(),
            expected.map_flags(),
        );
        if found != expected {
            return Err(DataplaneError::IncompatiblePin {
                path,
                found,
                expected,
            });
        }
    }
    // Before anything is loaded: a load would replace the pinned program of the other build.
    if pin_dir.join(map_name::NODE).exists() {
        let node: Array<MapData, NodeConfig> = open_map(pin_dir, map_name::NODE)?
            .try_into()
            .map_err(map_err(map_name::NODE))?;
        let pinned = node.get(&0, 0).map_err(map_err(map_name::NODE))?;
        if pinned.abi_version != 0 && pinned.abi_version != ABI_VERSION {
            return Err(DataplaneError::IncompatiblePin {
                path: pin_dir.join(map_name::NODE),
                found: format!("maps of version {}", pinned.abi_version),
                expected: format!("version {ABI_VERSION}"),
            });
        }
    }
    Ok(())
}

/// Loads the object with every map bound to its pin in `pin_dir` (a pinned map is reused, a
/// missing one created and pinned); `log_level` is aya-log's (2 = warn, 4 = debug).
/// Loads an XDP object (the product's [`OBJECT`], or the benchmark's own) against the maps
/// pinned in `pin_dir`, creating and pinning those that are missing: its programs then read and
/// write this node's maps. `log_level` is the programs' aya-log level.
pub fn load_against_pins(pin_dir: &Path, object: &[u8], log_level: u8) -> Result<Ebpf> {
    let flow_pin = pin_dir.join(map_name::FLOW);
    if !flow_pin.exists() {
        // The program's view of the flow-share tables (a data section) is bound to this pin
        // below, and aya creates maps in no fixed order: had the section's map come first, the
        // pin would be an untyped map that cannot be memory-mapped. So the typed map is created
        // and pinned by a load of its own first; the rest of that load is dropped unused.
        let mut loader = EbpfLoader::new();
        loader.map_pin_path(map_name::FLOW, flow_pin.as_path());
        loader.load(object)?;
    }
    // aya writes a data section's initial contents (zeros, for `.bss`) into its map on every
    // load, a reused pin included. Given the tables as they are instead, it rewrites them
    // unchanged; only the controller writes them, and this is the controller.
    let current = map_pinned_array::<FlowShareTables>(pin_dir, map_name::FLOW, 1)?.to_bytes();
    let mut loader = EbpfLoader::new();
    loader.override_global("AYA_LOG_LEVEL", &log_level, true);
    loader.override_global(FLOW_TABLES_SYMBOL, current.as_slice(), true);
    for name in map_name::ALL {
        loader.map_pin_path(name, pin_dir.join(name));
    }
    loader.map_pin_path(FLOW_TABLES_SECTION, flow_pin);
    Ok(loader.load(object)?)
}

fn open_map(pin_dir: &Path, name: &'static str) -> Result<Map> {
    let data = MapData::from_pin(pin_dir.join(name)).map_err(map_err(name))?;
    Map::from_map_data(data).map_err(map_err(name))
}

impl Dataplane {
    /// Opens the data path of a node: adopts the pins in `pin_dir` when they are all there,
    /// otherwise loads the object and pins maps and program. `kernel_debug_log` enables the
    /// program's debug-level aya-log events (malformed frames); it only applies to a new load.
    pub fn open(pin_dir: &Path, node_id: u32, kernel_debug_log: bool) -> Result<Self> {
        if pin_dir.starts_with(BPFFS) {
            ensure_bpffs()?;
        }
        fs::create_dir_all(pin_dir).map_err(|source| DataplaneError::PinDir {
            path: pin_dir.to_owned(),
            source,
        })?;
        check_pinned_maps(pin_dir)?;
        let prog_pin = pin_dir.join("prog");
        let complete = prog_pin.exists() && map_name::ALL.iter().all(|m| pin_dir.join(m).exists());
        let (program, origin) = if complete {
            (
                Xdp::from_pin(&prog_pin, XdpAttachType::Interface)?,
                Origin::Adopted,
            )
        } else {
            (
                Self::load(pin_dir, &prog_pin, kernel_debug_log)?,
                Origin::Loaded,
            )
        };
        let address_table = MapData::from_pin(pin_dir.join(map_name::ADDRESSES))
            .map_err(map_err(map_name::ADDRESSES))?;
        let address6_table = MapData::from_pin(pin_dir.join(map_name::ADDRESSES6))
            .map_err(map_err(map_name::ADDRESSES6))?;
        let mut node: Array<MapData, NodeConfig> = open_map(pin_dir, map_name::NODE)?
            .try_into()
            .map_err(map_err(map_name::NODE))?;
        let pinned = node.get(&0, 0).map_err(map_err(map_name::NODE))?;
        // An adopted data path keeps the half of the address table in use.
        let node_config = NodeConfig {
            node_id,
            address_half: pinned.address_half & 1,
            abi_version: ABI_VERSION,
        };
        node.set(0, node_config, 0)
            .map_err(map_err(map_name::NODE))?;
        let addresses =
            address_table::entries::<Ipv4Table>(map_table(pin_dir, &address_table)?.slice(
                address_table::half_start::<Ipv4Table>(node_config.address_half),
                Ipv4Table::BUCKETS as usize,
            ));
        let addresses6 =
            address_table::entries::<Ipv6Table>(map_table6(pin_dir, &address6_table)?.slice(
                address_table::half_start::<Ipv6Table>(node_config.address_half),
                Ipv6Table::BUCKETS as usize,
            ));
        Ok(Self {
            pin_dir: pin_dir.to_owned(),
            origin,
            program,
            address_table,
            address6_table,
            addresses,
            addresses6,
            node_config,
            leases: map_pinned_array(pin_dir, map_name::LEASES, MAX_LEASES)?,
            flow: map_pinned_array(pin_dir, map_name::FLOW, 1)?,
            node,
            counters: open_map(pin_dir, map_name::COUNTERS)?
                .try_into()
                .map_err(map_err(map_name::COUNTERS))?,
            hits: open_map(pin_dir, map_name::ADDRESS_HITS)?
                .try_into()
                .map_err(map_err(map_name::ADDRESS_HITS))?,
        })
    }

    fn load(pin_dir: &Path, prog_pin: &Path, kernel_debug_log: bool) -> Result<Xdp> {
        let mut ebpf = load_against_pins(pin_dir, OBJECT, if kernel_debug_log { 4 } else { 2 })?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        program.load()?;
        let _ = fs::remove_file(prog_pin);
        program
            .pin(prog_pin)
            .map_err(|source| DataplaneError::Pin {
                path: prog_pin.to_owned(),
                source,
            })?;
        // The pinned program outlives `ebpf`; reopen it as an owned handle.
        Ok(Xdp::from_pin(prog_pin, XdpAttachType::Interface)?)
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Kernel id of the program (for aya-log's `init_from_id` and for operators).
    pub fn program_id(&self) -> Result<u32> {
        Ok(self.program.info()?.id())
    }

    fn link_pin(&self, ifname: &str, mode: AttachMode) -> PathBuf {
        self.pin_dir
            .join(format!("link_{ifname}_{}", mode.pin_suffix()))
    }

    /// Attaches the program to `ifname` in the calling thread's network namespace, or adopts the
    /// pinned link left there by an earlier controller.
    pub fn attach(&mut self, ifname: &str, preference: ModePreference) -> Result<Attachment> {
        for mode in [AttachMode::Native, AttachMode::Generic] {
            let pin = self.link_pin(ifname, mode);
            if pin.exists() {
                PinnedLink::from_pin(&pin).map_err(|source| DataplaneError::Link {
                    path: pin.clone(),
                    source,
                })?;
                return Ok(Attachment {
                    ifname: ifname.to_owned(),
                    mode,
                    adopted: true,
                });
            }
        }
        let ifindex = ifindex(ifname)?;
        let try_native = match preference {
            ModePreference::Native => true,
            ModePreference::Generic => false,
            // A veth delivers XDP_TX frames in native mode only when its peer runs an XDP program
            // too, which we cannot guarantee: generic mode answers reliably there.
            ModePreference::Auto => driver_name(ifname).as_deref() != Some("veth"),
        };
        let (link_id, mode) = if try_native {
            match self.program.attach_to_if_index(ifindex, XdpMode::Driver) {
                Ok(id) => (id, AttachMode::Native),
                Err(native) if preference == ModePreference::Auto => {
                    match self.program.attach_to_if_index(ifindex, XdpMode::Skb) {
                        Ok(id) => {
                            tracing::warn!(
                                ifname,
                                error = %native,
                                "native XDP unavailable, using generic mode"
                            );
                            (id, AttachMode::Generic)
                        }
                        Err(generic) => {
                            return Err(DataplaneError::Attach {
                                ifname: ifname.to_owned(),
                                native: Box::new(native),
                                generic: Box::new(generic),
                            });
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            (
                self.program.attach_to_if_index(ifindex, XdpMode::Skb)?,
                AttachMode::Generic,
            )
        };
        let link = self.program.take_link(link_id)?;
        let fd_link: FdLink = link.try_into().map_err(|source| DataplaneError::Link {
            path: self.link_pin(ifname, mode),
            source,
        })?;
        let pin = self.link_pin(ifname, mode);
        fd_link.pin(&pin).map_err(|source| DataplaneError::Pin {
            path: pin.clone(),
            source,
        })?;
        Ok(Attachment {
            ifname: ifname.to_owned(),
            mode,
            adopted: false,
        })
    }

    /// Detaches the program from `ifname` (removes the pinned link; the kernel detaches it when
    /// the last reference goes).
    pub fn detach(&mut self, ifname: &str) -> Result<()> {
        for mode in [AttachMode::Native, AttachMode::Generic] {
            let pin = self.link_pin(ifname, mode);
            if pin.exists() {
                fs::remove_file(&pin)
                    .map_err(|source| DataplaneError::Unpin { path: pin, source })?;
            }
        }
        Ok(())
    }

    /// The interfaces with a pinned link, as found in the pin directory.
    pub fn attachments(&self) -> Result<Vec<Attachment>> {
        let mut found = Vec::new();
        let entries = fs::read_dir(&self.pin_dir).map_err(|source| DataplaneError::PinDir {
            path: self.pin_dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("link_") else {
                continue;
            };
            let parsed = rest
                .strip_suffix("_native")
                .map(|i| (i, AttachMode::Native))
                .or_else(|| {
                    rest.strip_suffix("_generic")
                        .map(|i| (i, AttachMode::Generic))
                });
            if let Some((ifname, mode)) = parsed {
                found.push(Attachment {
                    ifname: ifname.to_owned(),
                    mode,
                    adopted: true,
                });
            }
        }
        found.sort_by(|a, b| a.ifname.cmp(&b.ifname));
        Ok(found)
    }

    /// Adds or replaces cluster addresses.
    pub fn set_addresses<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a AddressKey, &'a AddressEntry)>,
    ) -> Result<()> {
        let mut addresses = self.addresses.clone();
        addresses.extend(entries.into_iter().map(|(k, v)| (*k, *v)));
        self.install_addresses(addresses, self.addresses6.clone())
    }

    /// Adds or replaces cluster IPv6 addresses.
    pub fn set_addresses6<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a AddressKey6, &'a AddressEntry)>,
    ) -> Result<()> {
        let mut addresses6 = self.addresses6.clone();
        addresses6.extend(entries.into_iter().map(|(k, v)| (*k, *v)));
        self.install_addresses(self.addresses.clone(), addresses6)
    }

    /// Replaces the whole address set, IPv4 and IPv6 (a configuration's; what a restarted
    /// controller's configuration no longer has is gone at once).
    pub fn replace_addresses(
        &mut self,
        entries: impl IntoIterator<Item = (AddressKey, AddressEntry)>,
        entries6: impl IntoIterator<Item = (AddressKey6, AddressEntry)>,
    ) -> Result<()> {
        self.install_addresses(
            entries.into_iter().collect(),
            entries6.into_iter().collect(),
        )
    }

    /// The addresses in use.
    pub fn addresses(&self) -> &BTreeMap<AddressKey, AddressEntry> {
        &self.addresses
    }

    /// The IPv6 addresses in use.
    pub fn addresses6(&self) -> &BTreeMap<AddressKey6, AddressEntry> {
        &self.addresses6
    }

    /// Lays the set out into the half not in use, then flips to it. Nothing changes when the
    /// set does not fit.
    fn install_addresses(
        &mut self,
        addresses: BTreeMap<AddressKey, AddressEntry>,
        addresses6: BTreeMap<AddressKey6, AddressEntry>,
    ) -> Result<()> {
        if addresses == self.addresses && addresses6 == self.addresses6 {
            return Ok(());
        }
        // Both tables' spare halves, then one flip for both.
        let spare = self.node_config.address_half ^ 1;
        let mut table = map_table(&self.pin_dir, &self.address_table)?;
        address_table::layout_into::<Ipv4Table>(
            &addresses,
            table.slice_mut(
                address_table::half_start::<Ipv4Table>(spare),
                Ipv4Table::BUCKETS as usize,
            ),
        )?;
        let mut table6 = map_table6(&self.pin_dir, &self.address6_table)?;
        address_table::layout_into::<Ipv6Table>(
            &addresses6,
            table6.slice_mut(
                address_table::half_start::<Ipv6Table>(spare),
                Ipv6Table::BUCKETS as usize,
            ),
        )?;
        // The flip below must not become visible before the halves' stores.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        drop(table);
        drop(table6);
        let flipped = NodeConfig {
            address_half: spare,
            ..self.node_config
        };
        self.node
            .set(0, flipped, 0)
            .map_err(map_err(map_name::NODE))?;
        self.node_config = flipped;
        self.addresses = addresses;
        self.addresses6 = addresses6;
        Ok(())
    }

    /// The lease of a slot; `None` when the slot was never granted (epoch 0).
    pub fn lease(&self, slot: u32) -> Result<Option<Lease>> {
        let lease = self.leases.get(self.lease_index(slot)?);
        Ok((lease.epoch != 0).then_some(lease))
    }

    fn lease_index(&self, slot: u32) -> Result<usize> {
        if slot >= MAX_LEASES {
            return Err(DataplaneError::LeaseSlot { slot });
        }
        Ok(slot as usize)
    }

    /// Takes ownership of a slot under a new, higher epoch, valid for `lease_for` from now.
    /// This is the whole takeover in the data path, however many addresses the slot has.
    pub fn acquire(&mut self, slot: u32, epoch: u64, lease_for: Duration) -> Result<()> {
        self.acquire_until(slot, epoch, monotonic_ns() + lease_for.as_nanos() as u64)
    }

    /// Takes ownership of a slot under a new, higher epoch, valid until `until`
    /// ([`monotonic_ns`]): the engine's grant, whose end the peers' acknowledgements bound.
    pub fn acquire_until(&mut self, slot: u32, epoch: u64, until: u64) -> Result<()> {
        let next = Lease::granted(self.lease(slot)?, epoch, until)
            .map_err(|refusal| DataplaneError::refused(slot, refusal))?;
        let lease = self.leases.element(self.lease_index(slot)?);
        // SAFETY: an element of the mapping; single aligned stores, `owned` last (released
        // ordering), so a packet that sees the slot owned sees its new expiry too.
        unsafe {
            std::ptr::write_volatile(&raw mut (*lease).epoch, next.epoch);
            std::ptr::write_volatile(&raw mut (*lease).expires_ns, next.expires_ns);
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            std::ptr::write_volatile(&raw mut (*lease).owned, next.owned);
        }
        Ok(())
    }

    /// Extends an owned lease by `lease_for` from now; refused unless `epoch` is the slot's
    /// current epoch, and for a lease that ran out (see [`Lease::renewed`]).
    pub fn renew(&mut self, slot: u32, epoch: u64, lease_for: Duration) -> Result<()> {
        let now = monotonic_ns();
        let next = Lease::renewed(
            self.lease(slot)?,
            epoch,
            now + lease_for.as_nanos() as u64,
            now,
        )
        .map_err(|refusal| DataplaneError::refused(slot, refusal))?;
        self.write_expiry(slot, next.expires_ns)
    }

    /// Moves the end of an owned lease to `until` ([`monotonic_ns`]); refused unless `epoch`
    /// is the slot's current epoch and the slot is owned (see [`Lease::extended`]).
    pub fn extend_to(&mut self, slot: u32, epoch: u64, until: u64) -> Result<()> {
        let next = Lease::extended(self.lease(slot)?, epoch, until)
            .map_err(|refusal| DataplaneError::refused(slot, refusal))?;
        self.write_expiry(slot, next.expires_ns)
    }

    fn write_expiry(&mut self, slot: u32, expires_ns: u64) -> Result<()> {
        let lease = self.leases.element(self.lease_index(slot)?);
        // SAFETY: an element of the mapping; one aligned store.
        unsafe { std::ptr::write_volatile(&raw mut (*lease).expires_ns, expires_ns) };
        Ok(())
    }

    /// Gives a slot up; the program stops answering at once. Never refused (see
    /// [`Lease::released`]).
    pub fn release(&mut self, slot: u32, epoch: u64) -> Result<()> {
        let next = Lease::released(self.lease(slot)?, epoch);
        let lease = self.leases.element(self.lease_index(slot)?);
        // SAFETY: an element of the mapping; single aligned stores, `owned` first: the program
        // stops answering with that store.
        unsafe {
            std::ptr::write_volatile(&raw mut (*lease).owned, next.owned);
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            std::ptr::write_volatile(&raw mut (*lease).expires_ns, next.expires_ns);
            std::ptr::write_volatile(&raw mut (*lease).epoch, next.epoch);
        }
        Ok(())
    }

    /// Configures flow share on one interface (`share.ifindex`); `share.node_id` is this node's.
    pub fn set_flowshare(&mut self, share: &FlowShare) -> Result<()> {
        if share.table >= MAX_FLOWSHARES || share.buckets == 0 || share.buckets > MAX_BUCKETS {
            return Err(DataplaneError::BucketRange {
                table: share.table,
                buckets: share.buckets as usize,
            });
        }
        let slot = (share.ifindex % MAX_FLOWSHARE_INTERFACES) as usize;
        // SAFETY: an element of the mapping, in bounds; volatile, as the program reads it.
        let entry = unsafe { &raw mut (*self.flow.element(0)).shares[slot] };
        // SAFETY: as above.
        let current = unsafe { std::ptr::read_volatile(entry) };
        if share.ifindex == 0 || (current.ifindex != 0 && current.ifindex != share.ifindex) {
            return Err(DataplaneError::FlowShareSlot {
                ifindex: share.ifindex,
                other: current.ifindex,
            });
        }
        let share = FlowShare {
            node_id: self.node_config.node_id,
            ..*share
        };
        // SAFETY: as above. A new entry is written with its interface left out, which the
        // program matches first, so that it takes effect only once complete. Changing an entry
        // in use may show a few frames a mix of old and new settings, as any update would.
        unsafe {
            std::ptr::write_volatile(
                entry,
                FlowShare {
                    ifindex: current.ifindex,
                    ..share
                },
            );
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            std::ptr::write_volatile(&raw mut (*entry).ifindex, share.ifindex);
        }
        Ok(())
    }

    /// Writes the owners of all buckets of one flow-share table (`owners[i]` owns bucket `i`).
    pub fn set_buckets(&mut self, table: u32, owners: &[u32]) -> Result<()> {
        if table >= MAX_FLOWSHARES || owners.len() > MAX_BUCKETS as usize {
            return Err(DataplaneError::BucketRange {
                table,
                buckets: owners.len(),
            });
        }
        let start = (table * MAX_BUCKETS) as usize;
        for (bucket, node) in owners.iter().enumerate() {
            // SAFETY: in bounds (checked above) of the mapping; one aligned store per bucket.
            unsafe {
                std::ptr::write_volatile(
                    &raw mut (*self.flow.element(0)).buckets[start + bucket],
                    BucketOwner { node: *node },
                );
            }
        }
        Ok(())
    }

    /// Owners of the first `count` buckets of a table.
    pub fn buckets(&self, table: u32, count: u32) -> Result<Vec<u32>> {
        if table >= MAX_FLOWSHARES {
            return Err(DataplaneError::BucketRange {
                table,
                buckets: count as usize,
            });
        }
        let start = (table * MAX_BUCKETS) as usize;
        Ok((0..count.min(MAX_BUCKETS) as usize)
            // SAFETY: in bounds of the mapping.
            .map(|bucket| unsafe {
                std::ptr::read_volatile(&raw const (*self.flow.element(0)).buckets[start + bucket])
                    .node
            })
            .collect())
    }

    /// The data path's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let per_cpu: PerCpuValues<Counters> = self
            .counters
            .get(&0, 0)
            .map_err(map_err(map_name::COUNTERS))?;
        let mut total = Counters::default();
        for c in per_cpu.iter() {
            total.add(c);
        }
        Ok(total)
    }

    /// ARP replies sent for the address with hit slot `slot`, summed over CPUs.
    pub fn address_replies(&self, slot: u32) -> Result<u64> {
        let per_cpu = self
            .hits
            .get(&slot, 0)
            .map_err(map_err(map_name::ADDRESS_HITS))?;
        Ok(per_cpu.iter().map(|h| h.replies).sum())
    }

    /// Starts reading the program's aya-log events (debug-level malformed-frame reports) into
    /// `tracing` under target `xdp`; call [`KernelLog::flush`] from the controller's loop.
    pub fn kernel_log(&self) -> Result<KernelLog> {
        let logger =
            aya_log::EbpfLogger::init_from_id_with_logger(self.program_id()?, TracingBridge)
                .map_err(|e| DataplaneError::KernelLog(e.to_string()))?;
        Ok(KernelLog { logger })
    }

    /// Where this node's maps and program are pinned.
    pub fn pins(&self) -> &Path {
        &self.pin_dir
    }

    /// The program, for BPF_PROG_TEST_RUN.
    pub fn program(&self) -> &Xdp {
        &self.program
    }

    /// Borrowed fd of the program (for tests that run it).
    pub fn program_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        Ok(self.program.fd()?.as_fd())
    }
}

/// Reader of the program's aya-log ring buffer.
pub struct KernelLog {
    logger: aya_log::EbpfLogger<TracingBridge>,
}

impl KernelLog {
    /// Forwards every pending kernel log record to `tracing`.
    pub fn flush(&mut self) {
        self.logger.flush();
    }

    /// The ring buffer's fd, to wait for records with poll/epoll.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.logger.as_fd()
    }
}

/// Bridges aya-log's `log` records into `tracing` (target `xdp`).
pub struct TracingBridge;

impl log::Log for TracingBridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "xdp", "{message}"),
            log::Level::Warn => tracing::warn!(target: "xdp", "{message}"),
            log::Level::Info => tracing::info!(target: "xdp", "{message}"),
            log::Level::Debug => tracing::debug!(target: "xdp", "{message}"),
            log::Level::Trace => tracing::trace!(target: "xdp", "{message}"),
        }
    }

    fn flush(&self) {}
}

/// Removes a pin directory with every pin in it (links detach when their pin goes, maps and the
/// program are freed when no process holds them).
pub fn remove_pins(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DataplaneError::Unpin {
                path: dir.to_owned(),
                source,
            });
        }
    }
    // Remove the cluster directory too once its last node is gone.
    if let Some(parent) = dir.parent()
        && parent != Path::new(BPFFS)
    {
        let _ = fs::remove_dir(parent);
    }
    Ok(())
}

/// Interface index in the calling thread's network namespace.
pub fn ifindex(ifname: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(ifname)
        .map_err(|_| DataplaneError::UnknownInterface(ifname.to_owned()))
}

/// The driver of an interface as ethtool reports it (`ETHTOOL_GDRVINFO`), if it can be read.
pub fn driver_name(ifname: &str) -> Option<String> {
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    // SAFETY: plain C structs, zero is a valid value for all fields.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: a plain C struct, zero is a valid value for all fields.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if ifname.len() >= request.ifr_name.len() {
        return None;
    }
    for (dst, src) in request.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCETHTOOL with a valid ifreq pointing at a live ethtool_drvinfo.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut request) };
    if rc != 0 {
        return None;
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_product_object_holds_the_data_path_program_and_nothing_else() {
        let object = aya_obj::Object::parse(OBJECT).expect("the embedded object parses");
        let programs: Vec<&str> = object.programs.keys().map(String::as_str).collect();
        assert_eq!(
            programs,
            [PROGRAM_NAME],
            "the benchmark's programs belong in its own object"
        );
    }
}
