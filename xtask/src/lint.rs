//! The gates before the tests: formatting (rustfmt.toml, nightly rustfmt for its import
//! grouping) and clippy with warnings as errors, on the agent's crates and on the eBPF crate
//! (nightly, for the BPF target, as memtrace/build.rs builds it).
use std::{path::Path, process::Command};

use anyhow::Result;

pub fn run(root: &Path) -> Result<()> {
    crate::status(
        Command::new("cargo").current_dir(root).args(["+nightly", "fmt", "--all", "--", "--check"]),
        "cargo +nightly fmt --all --check (run `cargo +nightly fmt --all` to fix)",
    )?;
    crate::cargo(
        root,
        &[
            "clippy",
            "--all-targets",
            "--package",
            "memtrace",
            "--package",
            "memtrace-common",
            "--package",
            "xtask",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    crate::status(
        Command::new("cargo")
            .current_dir(root)
            .env("RUSTFLAGS", "--cfg bpf_target_arch=\"x86_64\"")
            .args([
                "+nightly",
                "clippy",
                "--package",
                "memtrace-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
            ])
            .args(["--", "-D", "warnings"]),
        "clippy on the eBPF crate",
    )
}
