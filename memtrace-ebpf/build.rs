//! Rebuild the eBPF object whenever the `bpf-linker` on PATH changes, since it is an
//! undeclared build tool of this crate (the same trick aya's template uses).
fn main() {
    if let Ok(bpf_linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
