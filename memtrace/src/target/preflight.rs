//! Checks made before touching the kernel, so that a missing privilege or kernel feature gets
//! one clear sentence instead of a verifier or perf_event_open errno.
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PreflightError {
    #[error(
        "memtrace needs root, or the capabilities CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE \
         and CAP_DAC_READ_SEARCH (missing: {0}); run it with sudo (docs/security.md says why each)"
    )]
    NotPrivileged(String),
    #[error("this kernel lacks {what}, which memtrace needs: {hint}")]
    KernelFeature { what: &'static str, hint: &'static str },
}

/// The capabilities memtrace needs, each for a reason (docs/security.md lists the same):
/// checked up front, so that a missing one is named instead of a failure deep in the kernel.
const NEEDED: [(u32, &str); 5] = [
    // Load the programs and create their maps.
    (39, "CAP_BPF"),
    // Attach them to tracepoints and perf events (page faults).
    (38, "CAP_PERFMON"),
    // Create perf-event uprobes through the kernel's uprobe PMU, on kernels without uprobe_multi
    // links (perf_event_open refuses with EACCES otherwise), and BPF run-time stats
    // (--program-stats).
    (21, "CAP_SYS_ADMIN"),
    // Read another user's /proc/PID/root, maps and mem; stop a process for --scan.
    (19, "CAP_SYS_PTRACE"),
    // Read the target's binaries and debug files, whoever owns them.
    (2, "CAP_DAC_READ_SEARCH"),
];

/// Fails unless this process has every capability in [`NEEDED`].
pub fn check_privileges() -> Result<(), PreflightError> {
    let effective = procfs::process::Process::myself().and_then(|me| me.status()).map_or(0, |status| status.capeff);
    let missing: Vec<&str> =
        NEEDED.into_iter().filter(|(bit, _)| effective & (1 << bit) == 0).map(|(_, name)| name).collect();
    if missing.is_empty() { Ok(()) } else { Err(PreflightError::NotPrivileged(missing.join(", "))) }
}

/// Fails when the kernel lacks BTF or the uprobe event source.
pub fn check_kernel() -> Result<(), PreflightError> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(PreflightError::KernelFeature {
            what: "BTF (/sys/kernel/btf/vmlinux)",
            hint: "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (5.17 or newer)",
        });
    }
    // Ring buffers came in 5.8, the task's user registers in 5.15, bpf_loop (the unwind walk's
    // loop) in 5.17: every program that sends a stack calls the walk.
    if !kernel_at_least(5, 17) {
        return Err(PreflightError::KernelFeature {
            what: "bpf_loop (Linux 5.17 or newer)",
            hint: "upgrade the kernel to 5.17 or newer",
        });
    }
    if !Path::new("/sys/bus/event_source/devices/uprobe").exists() {
        return Err(PreflightError::KernelFeature {
            what: "uprobes (/sys/bus/event_source/devices/uprobe)",
            hint: "use a kernel built with CONFIG_UPROBE_EVENTS=y",
        });
    }
    Ok(())
}

/// Whether the running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // A release procfs cannot read is given the benefit of the doubt: loading says the rest.
    procfs::sys::kernel::Version::current()
        .map_or(true, |version| (u32::from(version.major), u32::from(version.minor)) >= (major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_passes_the_kernel_check_as_root() {
        assert!(check_kernel().is_ok());
        assert!(check_privileges().is_ok(), "the tests run as root");
    }
}
