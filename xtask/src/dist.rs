//! `cargo xtask dist`: what CI machines install. A self-contained `memtrace` (glibc linked in
//! statically, the eBPF object embedded, so it needs nothing but the kernel) and a Debian package
//! of it with its man pages, in target/dist.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

/// The only target memtrace's kernel side is built for.
const TARGET: &str = "x86_64-unknown-linux-gnu";

pub fn run(root: &Path) -> Result<()> {
    crate::setup::ensure()?;
    let binary = build_static(root)?;
    let dist = root.join("target/dist");
    fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;
    let copied = dist.join("memtrace");
    fs::copy(&binary, &copied).with_context(|| format!("copying {} to {}", binary.display(), copied.display()))?;
    let package = debian_package(root, &copied, &dist)?;
    println!("xtask: {}\nxtask: {}", copied.display(), package.display());
    Ok(())
}

/// Builds memtrace with the C runtime linked in (`crt-static`, only for the host target: the
/// BPF build aya-build starts must not get the flag).
fn build_static(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let flags_variable = format!("CARGO_TARGET_{}_RUSTFLAGS", TARGET.to_uppercase().replace('-', "_"));
    crate::status(
        Command::new(cargo).current_dir(root).env(flags_variable, "-C target-feature=+crt-static").args([
            "build",
            "--release",
            "--package",
            "memtrace",
            "--target",
            TARGET,
        ]),
        "cargo build --release (static)",
    )?;
    Ok(root.join("target").join(TARGET).join("release/memtrace"))
}

/// `memtrace_VERSION_amd64.deb`: the binary in /usr/bin, the man pages, the copyright file.
fn debian_package(root: &Path, binary: &Path, dist: &Path) -> Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let staging = dist.join("deb");
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    let bin = staging.join("usr/bin");
    let man = staging.join("usr/share/man/man1");
    let doc = staging.join("usr/share/doc/memtrace");
    let control_dir = staging.join("DEBIAN");
    for dir in [&bin, &man, &doc, &control_dir] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(binary, bin.join("memtrace")).context("copying the binary into the package")?;
    fs::set_permissions(bin.join("memtrace"), fs::Permissions::from_mode(0o755))?;
    let man_dir = man.to_str().context("the workspace path is not UTF-8")?;
    crate::cargo(root, &["run", "--quiet", "--package", "memtrace", "--example", "man", "--", man_dir])?;
    for page in fs::read_dir(&man).context("reading the man pages")? {
        let page = page?.path();
        crate::status(Command::new("gzip").args(["-9n", "-f"]).arg(&page), "gzip of a man page")?;
    }
    fs::write(doc.join("copyright"), COPYRIGHT).context("writing the copyright file")?;
    let installed_kib = directory_bytes(&staging)?.div_ceil(1024);
    let control = format!(
        "Package: memtrace\nVersion: {version}\nArchitecture: amd64\nMaintainer: memtrace developers \
         <memtrace@users.noreply.github.com>\nInstalled-Size: {installed_kib}\nSection: devel\nPriority: optional\n\
         Description: eBPF memory-allocation tracer and leak detector\n \
         memtrace attaches to running processes, or runs a command, and reports which call stacks\n hold \
         memory that was allocated and never freed, with leak kinds as valgrind names them,\n as text, JSON, \
         folded stacks, SVG flamegraphs, pprof and JUnit. Needs Linux 5.17 or\n newer with BTF, and root or \
         CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE and\n CAP_DAC_READ_SEARCH.\n"
    );
    fs::write(control_dir.join("control"), control).context("writing DEBIAN/control")?;
    let package = dist.join(format!("memtrace_{version}_amd64.deb"));
    crate::status(
        Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(&staging).arg(&package),
        "dpkg-deb --build",
    )?;
    Ok(package)
}

fn directory_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        total += if metadata.is_dir() { directory_bytes(&entry.path())? } else { metadata.len() };
    }
    Ok(total)
}

const COPYRIGHT: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: memtrace

Files: *
Copyright: memtrace developers
License: MIT or Apache-2.0
 memtrace is dual-licensed under the MIT license and the Apache License, Version 2.0; it
 embeds aya 0.14.0 (MIT or Apache-2.0) with one added method, and other crates under their
 own permissive licenses.
";
