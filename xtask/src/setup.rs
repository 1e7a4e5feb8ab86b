//! `cargo xtask setup`: installs what fwcluster needs on a machine of this kind, idempotently.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Debian packages: LLVM 22 for bpf-linker, the network tools the lab and the daemons use,
/// conntrack-tools for session synchronization, and keepalived for the side-by-side benchmarks.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "bpftool",
    "iproute2",
    "nftables",
    "iputils-ping",
    "arping",
    "ethtool",
    "keepalived",
    // Session synchronization (conntrackd) and the connection-tracking tool ckfwalive and the
    // tests use.
    "conntrackd",
    "conntrack",
    "tcpdump",
    // A real SMTP server for the mail tests.
    "python3-aiosmtpd",
    // eu-stack: the chaos run keeps every daemon thread's stack when an iteration fails.
    "elfutils",
    // lettre's TLS (STARTTLS) links OpenSSL.
    "libssl-dev",
    "pkg-config",
    // cargo xtask package: dpkg-shlibdeps for the package's Depends; its test checks the unit
    // with systemd-analyze and installs man pages (man-db).
    "dpkg-dev",
    "systemd",
    "man-db",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13";
const BPFFS: &str = "/sys/fs/bpf";

/// Rust components: (component, toolchain; `None` is the one this workspace builds with).
/// rust-src builds the eBPF crate with nightly's `build-std`; clippy and rustfmt run in
/// `cargo xtask lint`.
const COMPONENTS: &[(&str, Option<&str>)] = &[
    ("rust-src", Some("nightly")),
    ("clippy", None),
    ("rustfmt", None),
];

/// One missing prerequisite and how to install it.
#[derive(Debug)]
enum Missing {
    Packages(Vec<&'static str>),
    Component(&'static str, Option<&'static str>),
    BpfLinker,
    Bpffs,
}

fn missing() -> Vec<Missing> {
    let mut missing = Vec::new();
    let packages: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if !packages.is_empty() {
        missing.push(Missing::Packages(packages));
    }
    for &(component, toolchain) in COMPONENTS {
        if !component_installed(component, toolchain) {
            missing.push(Missing::Component(component, toolchain));
        }
    }
    if !bpf_linker_installed() {
        missing.push(Missing::BpfLinker);
    }
    if !bpffs_mounted() {
        missing.push(Missing::Bpffs);
    }
    missing
}

/// Installs what is missing, saying what it does; a fast no-op when all is present.
pub fn run() -> Result<()> {
    let missing = missing();
    if missing.is_empty() {
        println!("setup: everything is installed");
        return Ok(());
    }
    for item in missing {
        install(item)?;
    }
    let still = missing_names();
    if !still.is_empty() {
        bail!("setup: still missing after install: {still}");
    }
    println!("setup: done");
    Ok(())
}

/// Runs setup when anything is missing (for `test` and `demo`).
pub fn ensure() -> Result<()> {
    if missing().is_empty() {
        return Ok(());
    }
    println!(
        "setup: prerequisites missing ({}), installing",
        missing_names()
    );
    run()
}

fn missing_names() -> String {
    missing()
        .iter()
        .map(|m| match m {
            Missing::Packages(p) => p.join(" "),
            Missing::Component(component, toolchain) => {
                format!("{component} ({})", toolchain.unwrap_or("default toolchain"))
            }
            Missing::BpfLinker => "bpf-linker".into(),
            Missing::Bpffs => "bpffs mount".into(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn install(item: Missing) -> Result<()> {
    crate::util::require_root("installing prerequisites")?;
    match item {
        Missing::Packages(packages) => {
            println!("setup: apt-get install {}", packages.join(" "));
            run_command(Command::new("apt-get").arg("update").arg("-q"))?;
            run_command(
                Command::new("apt-get")
                    .args(["install", "-y", "-q", "--no-install-recommends"])
                    .args(&packages)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
        }
        Missing::Component(component, toolchain) => {
            let mut args = vec!["component", "add", component];
            args.extend(toolchain.iter().flat_map(|t| ["--toolchain", *t]));
            println!("setup: rustup {}", args.join(" "));
            run_command(
                Command::new("rustup")
                    .args(&args)
                    .current_dir(crate::util::workspace_root()),
            )
        }
        Missing::BpfLinker => {
            println!("setup: cargo install bpf-linker {BPF_LINKER_VERSION} against LLVM 22");
            run_command(
                Command::new(env!("CARGO"))
                    .args([
                        "install",
                        "bpf-linker",
                        "--version",
                        &format!("~{BPF_LINKER_VERSION}"),
                        "--no-default-features",
                        "--features",
                        "llvm-22",
                    ])
                    .env("LLVM_PREFIX", LLVM_PREFIX),
            )
        }
        Missing::Bpffs => {
            println!("setup: mount -t bpf bpf {BPFFS}");
            std::fs::create_dir_all(BPFFS).ok();
            run_command(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
        }
    }
}

fn run_command(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("spawning {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

fn package_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn component_installed(component: &str, toolchain: Option<&str>) -> bool {
    let mut args = vec!["component", "list", "--installed"];
    args.extend(toolchain.iter().flat_map(|t| ["--toolchain", *t]));
    Command::new("rustup")
        .args(&args)
        .current_dir(crate::util::workspace_root())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with(component))
        })
        .unwrap_or(false)
}

fn bpf_linker_installed() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .contains(&format!("bpf-linker {BPF_LINKER_VERSION}."))
        })
        .unwrap_or(false)
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .map(|mounts| {
            mounts.lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(1) == Some(&BPFFS) && fields.get(2) == Some(&"bpf")
            })
        })
        .unwrap_or(false)
}
