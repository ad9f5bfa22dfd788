//! Idempotent set-up on a Debian-family machine, as root: installs only what is missing and
//! says exactly what to do by hand where it cannot.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Debian packages needed, each with a file that shows it is installed.
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "/usr/lib/llvm-22/bin/llvm-config"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("gcc", "/usr/bin/gcc"),
    ("g++", "/usr/bin/g++"),
    // Other allocators the tests trace targets with.
    ("libjemalloc-dev", "/usr/lib/x86_64-linux-gnu/libjemalloc.so"),
    ("libgoogle-perftools-dev", "/usr/lib/x86_64-linux-gnu/libtcmalloc.so"),
    ("libmimalloc-dev", "/usr/lib/x86_64-linux-gnu/libmimalloc.so"),
    // The leak-kind tests compare memtrace's numbers with valgrind memcheck's.
    ("valgrind", "/usr/bin/valgrind"),
    // The formats tests decode memtrace's pprof output independently: protoc compiles
    // memtrace/proto/profile.proto for the Python protobuf package.
    ("protobuf-compiler", "/usr/bin/protoc"),
    ("python3-protobuf", "/usr/lib/python3/dist-packages/google/protobuf/__init__.py"),
    // Stripped binaries with separate debug files for the symbolization tests (objcopy, strip).
    ("binutils", "/usr/bin/objcopy"),
    // The docs tests validate real JSON reports against docs/report.schema.json (the system
    // Python's jsonschema) and render the generated man pages (groff).
    ("python3-jsonschema", "/usr/lib/python3/dist-packages/jsonschema/__init__.py"),
    ("groff-base", "/usr/bin/groff"),
    // The report tests read pprof output with the real pprof (`go tool pprof -raw`), validate
    // JUnit XML against Jenkins' junit-10.xsd (xmlschema) and read it as CI tools do
    // (junitparser).
    ("golang-go", "/usr/bin/go"),
    ("python3-xmlschema", "/usr/lib/python3/dist-packages/xmlschema/__init__.py"),
    ("python3-junitparser", "/usr/lib/python3/dist-packages/junitparser/__init__.py"),
    // `serve`'s tests: Prometheus scrapes memtrace's /metrics, and promtool evaluates the example
    // alert rules (docs/deploy/alerts.yml).
    ("prometheus", "/usr/bin/promtool"),
    // npm, for xunit-viewer (see `install_xunit_viewer`).
    ("npm", "/usr/bin/npm"),
    // Names for libc's and the loader's frames (their separate debug files, by build-id under
    // /usr/lib/debug): the demo's output in README.md shows them, and the unwinding tests compare
    // libc's frames with valgrind's.
    ("libc6-dbg", "/usr/share/doc/libc6-dbg/copyright"),
    // libstdc++ built with debug info, beside the stripped one (LD_LIBRARY_PATH=its directory):
    // the unwinding tests name libstdc++'s own frames with it (memtrace/tests/unwind_software.rs).
    ("libstdc++6-12-dbg", "/usr/lib/x86_64-linux-gnu/debug/libstdc++.so.6"),
    // Software as Debian ships it, stripped and built without frame pointers, whose stacks the
    // unwinding tests walk (memtrace/tests/unwind_servers.rs runs its own nginx on the loopback
    // with its own configuration; where the package manager may start services, installing the
    // package also starts the system's nginx).
    ("nginx", "/usr/sbin/nginx"),
];

pub fn ensure() -> Result<()> {
    check_kernel()?;
    install_packages()?;
    install_rust_src()?;
    install_bpf_linker()?;
    install_xunit_viewer()?;
    Ok(())
}

/// Where `install_xunit_viewer` puts xunit-viewer, and the tests find it.
pub const XUNIT_VIEWER_DIR: &str = "target/tools/xunit-viewer";

/// xunit-viewer 10.6.1 (npm), a JUnit viewer CI pipelines publish reports with: the JUnit tests
/// read memtrace's files with it as well as with junitparser and the XSD.
fn install_xunit_viewer() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the workspace root")?;
    let dir = root.join(XUNIT_VIEWER_DIR);
    if dir.join("node_modules/.bin/xunit-viewer").exists() {
        return Ok(());
    }
    eprintln!("xtask: installing xunit-viewer with npm into {}", dir.display());
    run(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("xunit-viewer@10.6.1"),
        "npm install xunit-viewer",
    )
}

fn check_kernel() -> Result<()> {
    for (path, what) in [
        ("/sys/kernel/btf/vmlinux", "BTF (CONFIG_DEBUG_INFO_BTF=y)"),
        ("/sys/bus/event_source/devices/uprobe", "uprobes (CONFIG_UPROBE_EVENTS=y)"),
    ] {
        if !Path::new(path).exists() {
            bail!("this kernel lacks {what}: {path} is missing; memtrace needs a kernel 5.17+ built with it");
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version < (5, 17) {
        bail!("kernel {} lacks bpf_loop; memtrace needs Linux 5.17 or newer", release.trim());
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// bpftrace, which `cargo xtask bench` compares memtrace with.
pub fn ensure_bpftrace() -> Result<()> {
    install(&[("bpftrace", "/usr/bin/bpftrace")])
}

fn install_packages() -> Result<()> {
    install(PACKAGES)
}

fn install(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> =
        packages.iter().filter(|(_, marker)| !Path::new(marker).exists()).map(|(package, _)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let by_hand = format!("install them by hand: apt-get install -y {}", missing.join(" "));
    if !Path::new("/etc/debian_version").exists() {
        bail!(
            "missing {}; this is not a Debian-family system, so {by_hand} (or your distribution's equivalents)",
            missing.join(", ")
        );
    }
    if !is_root() {
        bail!("missing {}; not running as root, so {by_hand}", missing.join(", "));
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]), "apt-get update")?;
    run(
        Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}

/// Nightly Rust with its rust-src, installed if missing (the eBPF build and the fuzz targets need
/// nightly).
pub fn ensure_nightly() -> Result<()> {
    install_rust_src()
}

/// Nightly Rust with `rust-src` (the eBPF crate is built with `-Z build-std=core`), and the
/// linters the test task runs: rustfmt from nightly (the house style uses its import grouping,
/// see rustfmt.toml) and clippy for both toolchains (nightly lints the eBPF crate).
fn install_rust_src() -> Result<()> {
    let has_nightly = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running rustup (memtrace builds its eBPF programs with nightly Rust via rustup)")?;
    if !String::from_utf8_lossy(&has_nightly.stdout).lines().any(|line| line.starts_with("nightly")) {
        eprintln!("xtask: installing nightly Rust");
        run(
            Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]),
            "rustup toolchain install nightly",
        )?;
    }
    // Added to the nightly that is there, without updating it.
    install_components(Some("nightly"), &["rust-src", "rustfmt", "clippy"])?;
    install_components(None, &["clippy"])
}

/// Adds the `components` missing from `toolchain` (the active one when `None`).
fn install_components(toolchain: Option<&str>, components: &[&str]) -> Result<()> {
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--installed"]);
    let mut add = Command::new("rustup");
    add.args(["component", "add"]);
    if let Some(toolchain) = toolchain {
        list.args(["--toolchain", toolchain]);
        add.args(["--toolchain", toolchain]);
    }
    let installed = list.stderr(Stdio::null()).output().context("running rustup component list")?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = components
        .iter()
        .copied()
        .filter(|component| !installed.lines().any(|line| line.starts_with(component)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let toolchain = toolchain.unwrap_or("the active toolchain");
    eprintln!("xtask: installing {} for {toolchain}", missing.join(", "));
    run(add.args(&missing), &format!("rustup component add {} ({toolchain})", missing.join(" ")))
}

fn install_bpf_linker() -> Result<()> {
    let works = Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if works {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker against LLVM 22 (takes a few minutes, once)");
    // bpf-linker's build script finds LLVM through LLVM_PREFIX (else the first llvm-config on
    // PATH, which may be another version); llvm-sys through LLVM_SYS_221_PREFIX.
    run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                "0.13.0",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
        "cargo install bpf-linker",
    )
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
