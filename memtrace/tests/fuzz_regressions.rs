//! The inputs that once crashed memtrace's parsers under the fuzzer (`fuzz/regressions/TARGET/`,
//! see `cargo xtask fuzz`), run in the ordinary test suite without the fuzzer: every one through
//! its target's harness (`fuzz/src/lib.rs`, included here as is), and each with the exact
//! outcome of the call that crashed asserted. The committed seeds run through the harnesses too.
#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

/// Regression inputs whose crash is in `report/`'s arithmetic, fixed on the libs branch: each
/// has an ignored test of its own below until that branch is merged.
const DEFERRED: &[&str] = &[];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap()))
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn every_regression_and_seed_runs_through_its_harness() {
    let mut ran = 0;
    for &(target, harness) in harness::TARGETS {
        for kind in ["regressions", "seeds"] {
            for (name, bytes) in inputs(kind, target) {
                if DEFERRED.contains(&name.as_str()) {
                    continue;
                }
                eprintln!("{kind}/{target}/{name}");
                harness(&bytes);
                ran += 1;
            }
        }
    }
    assert!(ran > 0, "no input found under {}", fuzz_dir().display());
}
