//! `cargo xtask package`: the Debian package `target/debian/fwcluster_<version>_amd64.deb`.
//!
//! Built with `dpkg-deb` from a staging tree rather than with cargo-deb: dpkg-deb is on every
//! Debian machine (nothing more to install, no tool version to pin to this toolchain), and the
//! maintainer scripts, which decide what an upgrade does to running groups, are written here in
//! full rather than generated. The XDP object is embedded in `fwclusterd` as always, so the
//! package needs no compiler or LLVM; its run-time dependencies are the C library (from
//! `dpkg-shlibdeps`), nftables, iproute2 and conntrack-tools. No mount unit for bpffs:
//! systemd mounts `/sys/fs/bpf` at boot as one of its API file systems (and refuses a mount
//! unit for it), so pins outlive the daemon on every systemd machine.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::util::{cargo, workspace_root};

/// The binaries, installed in `/usr/sbin` (every one needs root: XDP, bpffs, the control
/// socket's modes).
const BINARIES: [&str; 4] = ["fwclusterd", "clpstat", "clpgrp", "clpcfg"];

/// What the package needs at run time besides the C library.
const DEPENDS: &str = "nftables, iproute2, conntrack, conntrackd";

/// Builds the package; `version` overrides the workspace's (an upgrade test builds a newer
/// one). Returns the package's path.
pub fn run(version: Option<&str>) -> Result<PathBuf> {
    let version = version.unwrap_or(env!("CARGO_PKG_VERSION"));
    ensure!(
        version.chars().next().is_some_and(|c| c.is_ascii_digit())
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c)),
        "{version:?} is not a Debian version (digits first, then letters, digits and .+~-)"
    );
    let root = workspace_root();
    let mut build = vec!["build", "--release", "-p", "cluster-ctl"];
    for binary in BINARIES.iter().chain(&["fwcluster-docs"]) {
        build.extend(["--bin", binary]);
    }
    cargo(&build)?;
    let release = root.join("target/release");
    let out = root.join("target/debian");
    let name = format!("fwcluster_{version}_amd64");
    let staging = out.join(&name);
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }

    for binary in BINARIES {
        install(
            &release.join(binary),
            &staging.join("usr/sbin").join(binary),
            0o755,
        )?;
    }
    docs(&release.join("fwcluster-docs"), &out.join("docs"), &staging)?;
    install(
        &root.join("config/fwclusterd.service"),
        &staging.join("lib/systemd/system/fwclusterd.service"),
        0o644,
    )?;
    let doc = staging.join("usr/share/doc/fwcluster");
    for example in [
        "hot-standby.toml",
        "load-share.toml",
        "flow-share.toml",
        "firewall.nft",
    ] {
        install(
            &root.join("config").join(example),
            &doc.join("examples").join(example),
            0o644,
        )?;
    }
    for script in ["ckcstat", "ckfwalive"] {
        install(
            &root.join("config/scripts").join(script),
            &doc.join("examples/scripts").join(script),
            0o755,
        )?;
    }
    install(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    write(
        &doc.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: fwcluster\n\n\
         Files: *\nLicense: Apache-2.0\n On Debian systems the full text is in\n \
         /usr/share/common-licenses/Apache-2.0.\n",
        0o644,
    )?;
    install(
        &root.join("config/cluster.toml.template"),
        &staging.join("etc/fwcluster/cluster.toml"),
        0o600,
    )?;
    set_mode(&staging.join("etc/fwcluster"), 0o700)?;

    let debian = staging.join("DEBIAN");
    write(
        &debian.join("control"),
        &control(version, &shared_library_depends(&release)?, &staging)?,
        0o644,
    )?;
    write(
        &debian.join("conffiles"),
        "/etc/fwcluster/cluster.toml\n",
        0o644,
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        install(
            &root.join("config/debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    let deb = out.join(format!("{name}.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&staging)
        .arg(&deb)
        .status()
        .context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb failed ({status})");
    }
    println!("package: {}", deb.display());
    Ok(deb)
}

/// Man pages (gzipped, section 8) and completions for bash, zsh and fish where each shell
/// looks for them.
fn docs(generator: &Path, scratch: &Path, staging: &Path) -> Result<()> {
    if scratch.exists() {
        fs::remove_dir_all(scratch)?;
    }
    let status = Command::new(generator)
        .arg(scratch)
        .status()
        .context("running fwcluster-docs")?;
    ensure!(status.success(), "fwcluster-docs failed ({status})");
    for binary in BINARIES {
        let page = staging.join(format!("usr/share/man/man8/{binary}.8.gz"));
        install(
            &scratch.join(format!("man/{binary}.8")),
            &page.with_extension(""),
            0o644,
        )?;
        let status = Command::new("gzip")
            .args(["-9n"])
            .arg(page.with_extension(""))
            .status()
            .context("running gzip")?;
        ensure!(status.success(), "gzip failed ({status})");
        for (shell, from, to) in [
            (
                "bash",
                format!("{binary}.bash"),
                format!("usr/share/bash-completion/completions/{binary}"),
            ),
            (
                "zsh",
                format!("_{binary}"),
                format!("usr/share/zsh/vendor-completions/_{binary}"),
            ),
            (
                "fish",
                format!("{binary}.fish"),
                format!("usr/share/fish/vendor_completions.d/{binary}.fish"),
            ),
        ] {
            install(
                &scratch.join("completions").join(shell).join(from),
                &staging.join(to),
                0o644,
            )?;
        }
    }
    Ok(())
}

/// The C library and whatever else the binaries link, as `dpkg-shlibdeps` words it (it wants
/// a `debian/control` beside it, so it runs in a scratch directory).
fn shared_library_depends(release: &Path) -> Result<String> {
    let scratch = release.join("shlibdeps");
    fs::create_dir_all(scratch.join("debian"))?;
    fs::write(
        scratch.join("debian/control"),
        "Source: fwcluster\n\nPackage: fwcluster\nArchitecture: amd64\n",
    )?;
    let output = Command::new("dpkg-shlibdeps")
        .arg("-O")
        .args(BINARIES.map(|b| release.join(b)))
        .current_dir(&scratch)
        .output()
        .context("running dpkg-shlibdeps")?;
    ensure!(
        output.status.success(),
        "dpkg-shlibdeps failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    text.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_owned)
        .context("dpkg-shlibdeps named no dependency")
}

fn control(version: &str, shlibs: &str, staging: &Path) -> Result<String> {
    Ok(format!(
        "Package: fwcluster\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: fwcluster developers <fwcluster@localhost>\n\
         Installed-Size: {size}\n\
         Depends: {shlibs}, {DEPENDS}\n\
         Section: net\n\
         Priority: optional\n\
         Description: high-availability cluster for Linux firewalls (XDP data path)\n \
         Two or more firewalls share floating gateway addresses; an XDP program answers ARP\n \
         and Neighbor Discovery for them on the node that owns them and splits traffic by\n \
         flow hash; fwclusterd runs heartbeats, watches, fails over and back, and keeps\n \
         connections through a change of the active firewall (conntrackd).\n",
        size = kibibytes(staging)?,
    ))
}

/// The staging tree's size in KiB, as `Installed-Size` wants it.
fn kibibytes(dir: &Path) -> Result<u64> {
    let mut bytes = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        bytes += if meta.is_dir() {
            kibibytes(&entry.path())? * 1024
        } else {
            meta.len()
        };
    }
    Ok(bytes.div_ceil(1024))
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    set_mode(to, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}
