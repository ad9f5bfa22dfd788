//! Builds the kernel-side programs (`memtrace-ebpf`) for the BPF target with aya-build, so the
//! agent can embed the object with `include_bytes_aligned!`.
//!
//! Opt-out: with `MEMTRACE_NO_EBPF=1` in the environment, nothing is built for the BPF target
//! (no nightly BPF build, no bpf-linker) and an empty file stands in for the object. The fuzz
//! targets (`fuzz/`, `cargo xtask fuzz`) build memtrace that way: they exercise its parsers and
//! never load programs. Such a memtrace refuses to trace: `kernel::Probes::load` fails with an
//! error that names this variable.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=MEMTRACE_NO_EBPF");
    if std::env::var_os("MEMTRACE_NO_EBPF").is_some_and(|value| value == "1") {
        let out_dir = std::env::var_os("OUT_DIR").ok_or_else(|| anyhow!("cargo did not set OUT_DIR"))?;
        let object = std::path::Path::new(&out_dir).join("memtrace");
        std::fs::write(&object, b"").with_context(|| format!("writing the empty {}", object.display()))?;
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("reading the workspace metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|package| package.name.as_str() == "memtrace-ebpf")
        .ok_or_else(|| anyhow!("the memtrace-ebpf package is not in the workspace"))?;
    let root_dir =
        ebpf.manifest_path.parent().ok_or_else(|| anyhow!("{} has no parent directory", ebpf.manifest_path))?;
    let package = aya_build::Package { name: ebpf.name.as_str(), root_dir: root_dir.as_str(), ..Default::default() };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
